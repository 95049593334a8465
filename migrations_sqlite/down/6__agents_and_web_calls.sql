DROP TABLE IF EXISTS run_number_counters;
ALTER TABLE agent_runs DROP COLUMN last_activity_at;
ALTER TABLE service_configs DROP COLUMN llm_base_url;
