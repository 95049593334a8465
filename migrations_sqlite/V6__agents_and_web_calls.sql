-- Version 6 (this edition): what agents and web calls need beyond the original.

-- openai_compatible LLMs: the base URL of the tenant's own server (an
-- air-gapped install's model server), unused for groq.
ALTER TABLE service_configs ADD COLUMN llm_base_url TEXT CHECK (llm_base_url IS NULL OR length(llm_base_url) <= 2048);

-- The last time a run saw activity (start, a message): a run idle for longer
-- than the configured time is closed as abandoned. NULL on runs from before
-- this version, which count from created_at.
ALTER TABLE agent_runs ADD COLUMN last_activity_at TEXT;

-- One counter per kind of run (WEB, TEL) behind readable run numbers such as
-- WR-WEB-000123: incremented inside the transaction that inserts the run, so
-- two runs never get the same number (the original's could collide).
CREATE TABLE run_number_counters (
    kind TEXT PRIMARY KEY NOT NULL CHECK (kind IN ('WEB', 'TEL')),
    last_value INTEGER NOT NULL DEFAULT 0 CHECK (last_value >= 0)
);
