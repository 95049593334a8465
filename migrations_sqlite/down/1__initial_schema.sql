-- Undo version 1: everything it created, children before parents.
DROP TRIGGER IF EXISTS calculate_tokens;
DROP TRIGGER IF EXISTS increment_agent_runs;
DROP TABLE IF EXISTS campaign_contacts;
DROP TABLE IF EXISTS agent_runs;
DROP TABLE IF EXISTS campaigns;
DROP TABLE IF EXISTS agents;
DROP TABLE IF EXISTS telephony_configs;
DROP TABLE IF EXISTS service_configs;
DROP TABLE IF EXISTS users;
