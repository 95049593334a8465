ALTER TABLE agent_runs DROP COLUMN call_sid;
