-- The views recount from agent_runs and user_usage_tracking again, as
-- version 2 defined them (with version 4's groq_tokens).
DROP VIEW IF EXISTS user_statistics;
DROP VIEW IF EXISTS current_month_usage;
CREATE VIEW user_statistics AS
SELECT u.id,
       u.email,
       u.role,
       u.subscription_tier,
       u.organization_name,
       u.max_agents,
       u.monthly_token_quota,
       u.is_active,
       u.created_at,
       u.last_login,
       (SELECT count(*) FROM agents a WHERE a.user_id = u.id) AS agent_count,
       (SELECT count(*) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
         WHERE a.user_id = u.id AND r.status = 'completed') AS total_runs,
       (SELECT coalesce(sum(r.duration_seconds), 0) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
         WHERE a.user_id = u.id AND r.status = 'completed') AS total_duration_seconds,
       (SELECT round(coalesce(sum(r.groq_tokens), 0), 2) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
         WHERE a.user_id = u.id AND r.status = 'completed') AS total_tokens_used,
       s.plan AS current_plan,
       s.status AS subscription_status
FROM users u
LEFT JOIN subscriptions s ON s.user_id = u.id;
CREATE VIEW current_month_usage AS
SELECT u.id AS user_id,
       u.email,
       u.monthly_token_quota,
       round(coalesce(sum(t.total_tokens), 0), 2) AS tokens_used_this_month,
       coalesce(sum(t.total_calls), 0) AS calls_this_month,
       coalesce(sum(t.total_duration_seconds), 0) AS duration_this_month,
       round(coalesce(sum(t.api_costs), 0), 6) AS costs_this_month,
       round(u.monthly_token_quota - coalesce(sum(t.total_tokens), 0), 2) AS tokens_remaining
FROM users u
LEFT JOIN user_usage_tracking t
       ON t.user_id = u.id
      AND t.date >= strftime('%Y-%m-01', 'now')
      AND t.date < date('now', 'start of month', '+1 month')
GROUP BY u.id, u.email, u.monthly_token_quota;
DROP TRIGGER IF EXISTS user_totals_usage_removed;
DROP TRIGGER IF EXISTS user_totals_usage_changed;
DROP TRIGGER IF EXISTS user_totals_usage_added;
DROP TRIGGER IF EXISTS user_totals_run_moved;
DROP TRIGGER IF EXISTS user_totals_run_changed;
DROP TRIGGER IF EXISTS user_totals_run_removed;
DROP TRIGGER IF EXISTS user_totals_run_added;
DROP TRIGGER IF EXISTS user_totals_agent_moved;
DROP TRIGGER IF EXISTS user_totals_agent_removed;
DROP TRIGGER IF EXISTS user_totals_agent_added;
DROP TRIGGER IF EXISTS user_totals_new_user;
DROP INDEX IF EXISTS idx_users_created_at;
DROP TABLE IF EXISTS user_totals;
