-- Version 9 (this edition): what each answered LLM turn used and cost, so a
-- tenant's api_costs can be audited turn by turn.
--
-- One row per reply the LLM gave (web message or phone gather), written in
-- the transaction that stores the turn. cost_micros is in micro-dollars
-- (whole numbers, so sums never drift), computed by the server from its
-- price table; priced = 0 marks a model the table does not know, whose
-- turns cost 0.
CREATE TABLE llm_usage (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    run_id TEXT NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model TEXT NOT NULL CHECK (length(model) BETWEEN 1 AND 100),
    provider TEXT NOT NULL CHECK (length(provider) BETWEEN 1 AND 50),
    prompt_tokens INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost_micros INTEGER NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    priced INTEGER NOT NULL DEFAULT 1 CHECK (priced IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX idx_llm_usage_run_id ON llm_usage (run_id);
CREATE INDEX idx_llm_usage_user_created ON llm_usage (user_id, created_at);

-- A recorded turn adds its cost, in dollars to 6 places, to its tenant's
-- row for today (UTC), inserting the row if absent, as
-- trigger_update_user_usage_tracking does for calls. Each addition is
-- rounded to the micro-dollar, so the day's api_costs is exactly the sum of
-- its turns' cost_micros.
CREATE TRIGGER trigger_add_llm_costs
AFTER INSERT ON llm_usage
WHEN NEW.cost_micros > 0
BEGIN
    INSERT INTO user_usage_tracking (user_id, date, api_costs)
    VALUES (NEW.user_id, strftime('%Y-%m-%d', 'now'), round(NEW.cost_micros / 1000000.0, 6))
    ON CONFLICT (user_id, date) DO UPDATE SET
        api_costs = round(api_costs + excluded.api_costs, 6),
        updated_at = (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
