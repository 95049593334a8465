-- Undo version 2: exactly what the seed's rollback list removes (the seven
-- users columns, the four tables, the three triggers and the two views).
-- SQLite refuses to drop a column that a view, trigger or index uses, so those
-- go first; SQLite has no functions to drop (their bodies live in the triggers).
DROP VIEW IF EXISTS user_statistics;
DROP VIEW IF EXISTS current_month_usage;
DROP TRIGGER IF EXISTS enforce_agent_limit;
DROP TRIGGER IF EXISTS trigger_update_user_usage_tracking;
DROP TRIGGER IF EXISTS trigger_create_default_subscription;
DROP TABLE IF EXISTS admin_audit_logs;
DROP TABLE IF EXISTS subscriptions;
DROP TABLE IF EXISTS user_usage_tracking;
DROP TABLE IF EXISTS user_api_keys;
DROP INDEX IF EXISTS idx_users_role;
DROP INDEX IF EXISTS idx_users_subscription_tier;
DROP INDEX IF EXISTS idx_users_is_active;
DROP INDEX IF EXISTS idx_users_last_login;
ALTER TABLE users DROP COLUMN role;
ALTER TABLE users DROP COLUMN subscription_tier;
ALTER TABLE users DROP COLUMN organization_name;
ALTER TABLE users DROP COLUMN max_agents;
ALTER TABLE users DROP COLUMN monthly_token_quota;
ALTER TABLE users DROP COLUMN is_active;
ALTER TABLE users DROP COLUMN last_login;
