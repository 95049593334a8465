ALTER TABLE agent_runs RENAME COLUMN groq_tokens TO dograh_tokens;
