-- Version 2: the multi-tenant enhancement (the seed document).

ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user', 'enterprise'));
ALTER TABLE users ADD COLUMN subscription_tier TEXT NOT NULL DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro', 'enterprise'));
ALTER TABLE users ADD COLUMN organization_name TEXT CHECK (length(organization_name) <= 255);
ALTER TABLE users ADD COLUMN max_agents INTEGER NOT NULL DEFAULT 2 CHECK (max_agents >= 0);
ALTER TABLE users ADD COLUMN monthly_token_quota INTEGER NOT NULL DEFAULT 1000 CHECK (monthly_token_quota >= 0);
ALTER TABLE users ADD COLUMN is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1));
ALTER TABLE users ADD COLUMN last_login TEXT;

UPDATE users
SET role = 'admin',
    subscription_tier = 'enterprise',
    organization_name = 'VoxFlow Admin',
    max_agents = 100,
    monthly_token_quota = 1000000
WHERE email = 'admin@voxflow.com';

CREATE TABLE user_api_keys (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL CHECK (provider IN ('groq', 'deepgram', 'twilio')),
    api_key_encrypted TEXT NOT NULL,
    iv TEXT NOT NULL CHECK (length(iv) <= 32),
    auth_tag TEXT NOT NULL CHECK (length(auth_tag) <= 32),
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used_at TEXT,
    UNIQUE (user_id, provider)
);

CREATE TABLE user_usage_tracking (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    date TEXT NOT NULL CHECK (date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    -- Tokens are rounded to the cent at every write; costs to the micro-dollar,
    -- because one LLM reply costs far less than a cent.
    total_tokens REAL NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    total_calls INTEGER NOT NULL DEFAULT 0 CHECK (total_calls >= 0),
    total_duration_seconds INTEGER NOT NULL DEFAULT 0 CHECK (total_duration_seconds >= 0),
    api_costs REAL NOT NULL DEFAULT 0 CHECK (api_costs >= 0),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (user_id, date)
);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    user_id TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    plan TEXT NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cancelled', 'expired', 'past_due')),
    started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at TEXT,
    stripe_subscription_id TEXT CHECK (length(stripe_subscription_id) <= 255),
    monthly_price REAL CHECK (monthly_price >= 0),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE admin_audit_logs (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    admin_user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target_user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    target_resource_type TEXT CHECK (length(target_resource_type) <= 50),
    target_resource_id TEXT CHECK (length(target_resource_id) <= 36),
    details TEXT CHECK (details IS NULL OR json_valid(details)),
    ip_address TEXT CHECK (length(ip_address) <= 45),
    user_agent TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX idx_user_api_keys_user_id ON user_api_keys (user_id);
CREATE INDEX idx_user_api_keys_provider ON user_api_keys (provider);
CREATE INDEX idx_user_api_keys_is_active ON user_api_keys (is_active);
CREATE INDEX idx_user_usage_tracking_user_id ON user_usage_tracking (user_id);
CREATE INDEX idx_user_usage_tracking_date ON user_usage_tracking (date DESC);
CREATE INDEX idx_user_usage_tracking_user_date ON user_usage_tracking (user_id, date);
CREATE INDEX idx_subscriptions_user_id ON subscriptions (user_id);
CREATE INDEX idx_subscriptions_status ON subscriptions (status);
CREATE INDEX idx_subscriptions_expires_at ON subscriptions (expires_at);
CREATE INDEX idx_admin_audit_logs_admin_user_id ON admin_audit_logs (admin_user_id);
CREATE INDEX idx_admin_audit_logs_target_user_id ON admin_audit_logs (target_user_id);
CREATE INDEX idx_admin_audit_logs_created_at ON admin_audit_logs (created_at DESC);
CREATE INDEX idx_admin_audit_logs_action ON admin_audit_logs (action);
CREATE INDEX idx_users_role ON users (role);
CREATE INDEX idx_users_subscription_tier ON users (subscription_tier);
CREATE INDEX idx_users_is_active ON users (is_active);
CREATE INDEX idx_users_last_login ON users (last_login DESC);

-- The agent limit. SQLite serialises writers, so count-then-insert cannot race.
-- RAISE takes a literal here: a computed message makes the whole schema
-- unreadable to SQLite 3.40. The API adds the counts, read in the same transaction.
CREATE TRIGGER enforce_agent_limit
BEFORE INSERT ON agents
WHEN (SELECT count(*) FROM agents WHERE user_id = NEW.user_id)
     >= (SELECT max_agents FROM users WHERE id = NEW.user_id)
BEGIN
    SELECT RAISE(ABORT, 'Agent limit reached. Please upgrade your plan to create more agents.');
END;

-- A run that becomes completed adds to its owner's row for today (UTC).
-- The tokens are computed from the duration here rather than read back from
-- the row: the order in which SQLite fires triggers on the same event is not
-- defined, so calculate_tokens may not have run yet. Same cent arithmetic as
-- calculate_tokens (see version 1).
CREATE TRIGGER trigger_update_user_usage_tracking
AFTER UPDATE OF status ON agent_runs
WHEN NEW.status = 'completed' AND OLD.status IS NOT 'completed'
BEGIN
    INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds)
    SELECT a.user_id,
           strftime('%Y-%m-%d', 'now'),
           CASE WHEN NEW.duration_seconds > 0 THEN (CAST(NEW.duration_seconds AS INTEGER) * 13 + 5) / 10 / 100.0
                ELSE round(NEW.dograh_tokens, 2) END,
           1,
           NEW.duration_seconds
    FROM agents a
    WHERE a.id = NEW.agent_id
    ON CONFLICT (user_id, date) DO UPDATE SET
        total_tokens = round(total_tokens + excluded.total_tokens, 2),
        total_calls = total_calls + 1,
        total_duration_seconds = total_duration_seconds + excluded.total_duration_seconds,
        updated_at = (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER trigger_create_default_subscription
AFTER INSERT ON users
BEGIN
    INSERT INTO subscriptions (user_id, plan, status, monthly_price)
    VALUES (NEW.id, NEW.subscription_tier, 'active',
            CASE NEW.subscription_tier WHEN 'pro' THEN 29 WHEN 'enterprise' THEN 299 ELSE 0 END)
    ON CONFLICT (user_id) DO NOTHING;
END;

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
       (SELECT round(coalesce(sum(r.dograh_tokens), 0), 2) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
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
