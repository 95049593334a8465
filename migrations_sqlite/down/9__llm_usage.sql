-- The costs already added to user_usage_tracking.api_costs stay: they were
-- spent, and version 2's table keeps them.
DROP TRIGGER IF EXISTS trigger_add_llm_costs;
DROP TABLE IF EXISTS llm_usage;
