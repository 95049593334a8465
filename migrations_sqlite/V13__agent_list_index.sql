-- A tenant's agent list (GET /api/agents) pages by creation, newest first:
-- an index on (user_id, created_at) hands its rows over in that order,
-- where the index on user_id alone left every request a sort of the
-- tenant's agents. It serves every lookup the old index did (its first
-- column), so that one goes.
CREATE INDEX idx_agents_user_created ON agents (user_id, created_at);
DROP INDEX idx_agents_user_id;
