-- Version 3: the original's data migration, in plain SQL. Rows whose owner is
-- missing (possible only in data brought over from the first edition, or
-- written with foreign keys off) go to the admin user; the admin's
-- multi-tenant fields are filled; users from version 1 get their subscription.
-- On a fresh database every statement matches no row.

UPDATE agents
SET user_id = (SELECT id FROM users WHERE email = 'admin@voxflow.com')
WHERE user_id NOT IN (SELECT id FROM users)
  AND EXISTS (SELECT 1 FROM users WHERE email = 'admin@voxflow.com');

UPDATE campaigns
SET user_id = (SELECT id FROM users WHERE email = 'admin@voxflow.com')
WHERE user_id NOT IN (SELECT id FROM users)
  AND EXISTS (SELECT 1 FROM users WHERE email = 'admin@voxflow.com');

UPDATE users
SET role = 'admin',
    subscription_tier = 'enterprise',
    organization_name = coalesce(organization_name, 'VoxFlow Admin'),
    max_agents = 100,
    monthly_token_quota = 1000000
WHERE email = 'admin@voxflow.com';

INSERT INTO subscriptions (user_id, plan, status, monthly_price)
SELECT u.id, u.subscription_tier, 'active',
       CASE u.subscription_tier WHEN 'pro' THEN 29 WHEN 'enterprise' THEN 299 ELSE 0 END
FROM users u
WHERE NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = u.id);
