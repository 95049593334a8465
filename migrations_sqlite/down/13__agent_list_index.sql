CREATE INDEX idx_agents_user_id ON agents (user_id);
DROP INDEX idx_agents_user_created;
