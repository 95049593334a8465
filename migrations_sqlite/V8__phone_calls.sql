-- Version 8 (this edition): phone calls. Twilio's id of the call a
-- PHONE_CALL run placed (CA + 32 hex), so a run can be matched with
-- Twilio's own records; NULL on web calls and on calls Twilio refused.
ALTER TABLE agent_runs ADD COLUMN call_sid TEXT CHECK (call_sid IS NULL OR length(call_sid) <= 64);
