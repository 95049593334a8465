-- Version 4: dograh_tokens becomes groq_tokens. SQLite's RENAME COLUMN rewrites
-- every trigger and view that names the column, so calculate_tokens,
-- trigger_update_user_usage_tracking and user_statistics read the new name
-- (the original's token trigger broke at this rename).
ALTER TABLE agent_runs RENAME COLUMN dograh_tokens TO groq_tokens;
