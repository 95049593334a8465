-- Version 12 (this edition): per-user totals kept current by triggers, so the
-- admin user list, a user's detail and the analytics overview read one row
-- per user instead of recounting agent_runs on every request (a page of the
-- list took ~80 s at 100,000 runs). The views user_statistics and
-- current_month_usage keep their columns and read this table.
CREATE TABLE user_totals (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_count INTEGER NOT NULL DEFAULT 0,
    -- The user's runs by status; total_runs counts the completed ones.
    runs_in_progress INTEGER NOT NULL DEFAULT 0,
    runs_failed INTEGER NOT NULL DEFAULT 0,
    total_runs INTEGER NOT NULL DEFAULT 0,
    total_duration_seconds INTEGER NOT NULL DEFAULT 0,
    -- Completed runs' groq_tokens in cents: they are kept to the cent, and
    -- whole numbers add and subtract without drift.
    total_token_cents INTEGER NOT NULL DEFAULT 0,
    -- user_usage_tracking's sums over the month `month` (YYYY-MM, UTC),
    -- recounted from its (at most 31) rows at each change; the view shows
    -- zeros once the month is over.
    month TEXT NOT NULL DEFAULT '',
    month_tokens REAL NOT NULL DEFAULT 0,
    month_calls INTEGER NOT NULL DEFAULT 0,
    month_duration_seconds INTEGER NOT NULL DEFAULT 0,
    month_costs REAL NOT NULL DEFAULT 0
);

-- The admin list sorts and pages by these with an index; users.created_at
-- (the default order) gets one too.
CREATE INDEX idx_user_totals_total_runs ON user_totals (total_runs);
CREATE INDEX idx_user_totals_agent_count ON user_totals (agent_count);
CREATE INDEX idx_users_created_at ON users (created_at);

-- Back-fill, one pass over each table.
WITH agent_counts AS (
    SELECT user_id, count(*) AS n FROM agents GROUP BY user_id
), run_sums AS (
    SELECT a.user_id,
           sum(r.status = 'in_progress') AS in_progress,
           sum(r.status = 'failed') AS failed,
           sum(r.status = 'completed') AS completed,
           sum(CASE WHEN r.status = 'completed' THEN r.duration_seconds ELSE 0 END) AS duration,
           sum(CASE WHEN r.status = 'completed' THEN CAST(round(r.groq_tokens * 100) AS INTEGER) ELSE 0 END) AS cents
    FROM agent_runs r JOIN agents a ON a.id = r.agent_id
    GROUP BY a.user_id
), month_sums AS (
    SELECT user_id, sum(total_tokens) AS tokens, sum(total_calls) AS calls,
           sum(total_duration_seconds) AS duration, sum(api_costs) AS costs
    FROM user_usage_tracking
    WHERE date >= strftime('%Y-%m-01', 'now') AND date < date('now', 'start of month', '+1 month')
    GROUP BY user_id
)
INSERT INTO user_totals (user_id, agent_count, runs_in_progress, runs_failed, total_runs,
                         total_duration_seconds, total_token_cents, month, month_tokens,
                         month_calls, month_duration_seconds, month_costs)
SELECT u.id, coalesce(a.n, 0), coalesce(r.in_progress, 0), coalesce(r.failed, 0),
       coalesce(r.completed, 0), coalesce(r.duration, 0), coalesce(r.cents, 0),
       strftime('%Y-%m', 'now'), coalesce(m.tokens, 0), coalesce(m.calls, 0),
       coalesce(m.duration, 0), coalesce(m.costs, 0)
FROM users u
LEFT JOIN agent_counts a ON a.user_id = u.id
LEFT JOIN run_sums r ON r.user_id = u.id
LEFT JOIN month_sums m ON m.user_id = u.id;

CREATE TRIGGER user_totals_new_user
AFTER INSERT ON users
BEGIN
    INSERT INTO user_totals (user_id, month) VALUES (NEW.id, strftime('%Y-%m', 'now'))
    ON CONFLICT (user_id) DO NOTHING;
END;

CREATE TRIGGER user_totals_agent_added
AFTER INSERT ON agents
BEGIN
    UPDATE user_totals SET agent_count = agent_count + 1 WHERE user_id = NEW.user_id;
END;

-- Before: the agent's runs are still there to subtract. Its runs' own
-- delete triggers (ON DELETE CASCADE) then find no agent, hence no owner,
-- and change nothing: each run is subtracted once.
CREATE TRIGGER user_totals_agent_removed
BEFORE DELETE ON agents
BEGIN
    UPDATE user_totals
    SET agent_count = agent_count - 1,
        runs_in_progress = runs_in_progress - r.in_progress,
        runs_failed = runs_failed - r.failed,
        total_runs = total_runs - r.completed,
        total_duration_seconds = total_duration_seconds - r.duration,
        total_token_cents = total_token_cents - r.cents
    FROM (SELECT coalesce(sum(status = 'in_progress'), 0) AS in_progress,
                 coalesce(sum(status = 'failed'), 0) AS failed,
                 coalesce(sum(status = 'completed'), 0) AS completed,
                 coalesce(sum(CASE WHEN status = 'completed' THEN duration_seconds ELSE 0 END), 0) AS duration,
                 coalesce(sum(CASE WHEN status = 'completed' THEN CAST(round(groq_tokens * 100) AS INTEGER) ELSE 0 END), 0) AS cents
          FROM agent_runs WHERE agent_id = OLD.id) AS r
    WHERE user_id = OLD.user_id;
END;

-- An agent given to another user takes its runs along.
CREATE TRIGGER user_totals_agent_moved
AFTER UPDATE OF user_id ON agents
WHEN OLD.user_id IS NOT NEW.user_id
BEGIN
    UPDATE user_totals
    SET agent_count = agent_count + CASE user_id WHEN NEW.user_id THEN 1 ELSE -1 END,
        runs_in_progress = runs_in_progress + CASE user_id WHEN NEW.user_id THEN r.in_progress ELSE -r.in_progress END,
        runs_failed = runs_failed + CASE user_id WHEN NEW.user_id THEN r.failed ELSE -r.failed END,
        total_runs = total_runs + CASE user_id WHEN NEW.user_id THEN r.completed ELSE -r.completed END,
        total_duration_seconds = total_duration_seconds + CASE user_id WHEN NEW.user_id THEN r.duration ELSE -r.duration END,
        total_token_cents = total_token_cents + CASE user_id WHEN NEW.user_id THEN r.cents ELSE -r.cents END
    FROM (SELECT coalesce(sum(status = 'in_progress'), 0) AS in_progress,
                 coalesce(sum(status = 'failed'), 0) AS failed,
                 coalesce(sum(status = 'completed'), 0) AS completed,
                 coalesce(sum(CASE WHEN status = 'completed' THEN duration_seconds ELSE 0 END), 0) AS duration,
                 coalesce(sum(CASE WHEN status = 'completed' THEN CAST(round(groq_tokens * 100) AS INTEGER) ELSE 0 END), 0) AS cents
          FROM agent_runs WHERE agent_id = NEW.id) AS r
    WHERE user_id IN (OLD.user_id, NEW.user_id);
END;

CREATE TRIGGER user_totals_run_added
AFTER INSERT ON agent_runs
BEGIN
    UPDATE user_totals
    SET runs_in_progress = runs_in_progress + (NEW.status = 'in_progress'),
        runs_failed = runs_failed + (NEW.status = 'failed'),
        total_runs = total_runs + (NEW.status = 'completed'),
        total_duration_seconds = total_duration_seconds
            + CASE WHEN NEW.status = 'completed' THEN NEW.duration_seconds ELSE 0 END,
        total_token_cents = total_token_cents
            + CASE WHEN NEW.status = 'completed' THEN CAST(round(NEW.groq_tokens * 100) AS INTEGER) ELSE 0 END
    WHERE user_id = (SELECT user_id FROM agents WHERE id = NEW.agent_id);
END;

CREATE TRIGGER user_totals_run_removed
AFTER DELETE ON agent_runs
BEGIN
    UPDATE user_totals
    SET runs_in_progress = runs_in_progress - (OLD.status = 'in_progress'),
        runs_failed = runs_failed - (OLD.status = 'failed'),
        total_runs = total_runs - (OLD.status = 'completed'),
        total_duration_seconds = total_duration_seconds
            - CASE WHEN OLD.status = 'completed' THEN OLD.duration_seconds ELSE 0 END,
        total_token_cents = total_token_cents
            - CASE WHEN OLD.status = 'completed' THEN CAST(round(OLD.groq_tokens * 100) AS INTEGER) ELSE 0 END
    WHERE user_id = (SELECT user_id FROM agents WHERE id = OLD.agent_id);
END;

-- Every change that moves a run's figures applies the difference, whatever
-- the order SQLite fires this beside calculate_tokens (whose own UPDATE of
-- groq_tokens comes through here as a change of its own).
CREATE TRIGGER user_totals_run_changed
AFTER UPDATE OF status, duration_seconds, groq_tokens ON agent_runs
WHEN OLD.agent_id IS NEW.agent_id
 AND (OLD.status IS NOT NEW.status
      OR (NEW.status = 'completed'
          AND (OLD.duration_seconds IS NOT NEW.duration_seconds OR OLD.groq_tokens IS NOT NEW.groq_tokens)))
BEGIN
    UPDATE user_totals
    SET runs_in_progress = runs_in_progress + (NEW.status = 'in_progress') - (OLD.status = 'in_progress'),
        runs_failed = runs_failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        total_runs = total_runs + (NEW.status = 'completed') - (OLD.status = 'completed'),
        total_duration_seconds = total_duration_seconds
            + CASE WHEN NEW.status = 'completed' THEN NEW.duration_seconds ELSE 0 END
            - CASE WHEN OLD.status = 'completed' THEN OLD.duration_seconds ELSE 0 END,
        total_token_cents = total_token_cents
            + CASE WHEN NEW.status = 'completed' THEN CAST(round(NEW.groq_tokens * 100) AS INTEGER) ELSE 0 END
            - CASE WHEN OLD.status = 'completed' THEN CAST(round(OLD.groq_tokens * 100) AS INTEGER) ELSE 0 END
    WHERE user_id = (SELECT user_id FROM agents WHERE id = NEW.agent_id);
END;

-- A run moved to another agent: out of the old owner's totals, into the new.
CREATE TRIGGER user_totals_run_moved
AFTER UPDATE OF agent_id ON agent_runs
WHEN OLD.agent_id IS NOT NEW.agent_id
BEGIN
    UPDATE user_totals
    SET runs_in_progress = runs_in_progress - (OLD.status = 'in_progress'),
        runs_failed = runs_failed - (OLD.status = 'failed'),
        total_runs = total_runs - (OLD.status = 'completed'),
        total_duration_seconds = total_duration_seconds
            - CASE WHEN OLD.status = 'completed' THEN OLD.duration_seconds ELSE 0 END,
        total_token_cents = total_token_cents
            - CASE WHEN OLD.status = 'completed' THEN CAST(round(OLD.groq_tokens * 100) AS INTEGER) ELSE 0 END
    WHERE user_id = (SELECT user_id FROM agents WHERE id = OLD.agent_id);
    UPDATE user_totals
    SET runs_in_progress = runs_in_progress + (NEW.status = 'in_progress'),
        runs_failed = runs_failed + (NEW.status = 'failed'),
        total_runs = total_runs + (NEW.status = 'completed'),
        total_duration_seconds = total_duration_seconds
            + CASE WHEN NEW.status = 'completed' THEN NEW.duration_seconds ELSE 0 END,
        total_token_cents = total_token_cents
            + CASE WHEN NEW.status = 'completed' THEN CAST(round(NEW.groq_tokens * 100) AS INTEGER) ELSE 0 END
    WHERE user_id = (SELECT user_id FROM agents WHERE id = NEW.agent_id);
END;

-- This month's usage: recounted for the user at each change of their
-- user_usage_tracking (a completed run, LLM costs), over at most 31 rows.
CREATE TRIGGER user_totals_usage_added
AFTER INSERT ON user_usage_tracking
BEGIN
    UPDATE user_totals
    SET month = strftime('%Y-%m', 'now'),
        (month_tokens, month_calls, month_duration_seconds, month_costs) =
            (SELECT coalesce(sum(total_tokens), 0), coalesce(sum(total_calls), 0),
                    coalesce(sum(total_duration_seconds), 0), coalesce(sum(api_costs), 0)
             FROM user_usage_tracking
             WHERE user_id = NEW.user_id
               AND date >= strftime('%Y-%m-01', 'now') AND date < date('now', 'start of month', '+1 month'))
    WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER user_totals_usage_changed
AFTER UPDATE ON user_usage_tracking
BEGIN
    UPDATE user_totals
    SET month = strftime('%Y-%m', 'now'),
        (month_tokens, month_calls, month_duration_seconds, month_costs) =
            (SELECT coalesce(sum(total_tokens), 0), coalesce(sum(total_calls), 0),
                    coalesce(sum(total_duration_seconds), 0), coalesce(sum(api_costs), 0)
             FROM user_usage_tracking
             WHERE user_id = user_totals.user_id
               AND date >= strftime('%Y-%m-01', 'now') AND date < date('now', 'start of month', '+1 month'))
    WHERE user_id IN (OLD.user_id, NEW.user_id);
END;

CREATE TRIGGER user_totals_usage_removed
AFTER DELETE ON user_usage_tracking
BEGIN
    UPDATE user_totals
    SET month = strftime('%Y-%m', 'now'),
        (month_tokens, month_calls, month_duration_seconds, month_costs) =
            (SELECT coalesce(sum(total_tokens), 0), coalesce(sum(total_calls), 0),
                    coalesce(sum(total_duration_seconds), 0), coalesce(sum(api_costs), 0)
             FROM user_usage_tracking
             WHERE user_id = OLD.user_id
               AND date >= strftime('%Y-%m-01', 'now') AND date < date('now', 'start of month', '+1 month'))
    WHERE user_id = OLD.user_id;
END;

-- The views read as before (same columns, same figures) from the totals.
DROP VIEW user_statistics;
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
       coalesce(t.agent_count, 0) AS agent_count,
       coalesce(t.total_runs, 0) AS total_runs,
       coalesce(t.total_duration_seconds, 0) AS total_duration_seconds,
       round(coalesce(t.total_token_cents, 0) / 100.0, 2) AS total_tokens_used,
       s.plan AS current_plan,
       s.status AS subscription_status
FROM users u
LEFT JOIN subscriptions s ON s.user_id = u.id
LEFT JOIN user_totals t ON t.user_id = u.id;

DROP VIEW current_month_usage;
CREATE VIEW current_month_usage AS
SELECT u.id AS user_id,
       u.email,
       u.monthly_token_quota,
       round(coalesce(t.month_tokens, 0), 2) AS tokens_used_this_month,
       coalesce(t.month_calls, 0) AS calls_this_month,
       coalesce(t.month_duration_seconds, 0) AS duration_this_month,
       round(coalesce(t.month_costs, 0), 6) AS costs_this_month,
       round(u.monthly_token_quota - coalesce(t.month_tokens, 0), 2) AS tokens_remaining
FROM users u
LEFT JOIN user_totals t ON t.user_id = u.id AND t.month = strftime('%Y-%m', 'now');
