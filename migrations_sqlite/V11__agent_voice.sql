-- Version 11 (this edition): what an agent says first and how it sounds.
-- `first_message` (NULL: the default greeting), `voice` and `language`
-- (NULL: the tenant's service configuration), `max_call_seconds` (a call
-- is ended and billed at the limit). The prompt and first message may hold
-- {{first_name}}, {{last_name}}, {{phone}} and any other column of a
-- campaign's CSV, kept per contact in `campaign_contacts.extra_fields`.
ALTER TABLE agents ADD COLUMN first_message TEXT CHECK (first_message IS NULL OR length(first_message) <= 1000);
ALTER TABLE agents ADD COLUMN voice TEXT CHECK (voice IS NULL OR length(voice) <= 100);
ALTER TABLE agents ADD COLUMN language TEXT CHECK (language IS NULL OR length(language) <= 20);
ALTER TABLE agents ADD COLUMN max_call_seconds INTEGER NOT NULL DEFAULT 600 CHECK (max_call_seconds BETWEEN 10 AND 14400);
-- Whether Twilio records the agent's phone calls (off unless asked for).
ALTER TABLE agents ADD COLUMN record_calls INTEGER NOT NULL DEFAULT 0 CHECK (record_calls IN (0, 1));
-- A JSON object of the contact's other CSV columns (name → text).
ALTER TABLE campaign_contacts ADD COLUMN extra_fields TEXT CHECK (extra_fields IS NULL OR length(extra_fields) <= 8192);
