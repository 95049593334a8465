ALTER TABLE campaign_contacts DROP COLUMN extra_fields;
ALTER TABLE agents DROP COLUMN record_calls;
ALTER TABLE agents DROP COLUMN max_call_seconds;
ALTER TABLE agents DROP COLUMN language;
ALTER TABLE agents DROP COLUMN voice;
ALTER TABLE agents DROP COLUMN first_message;
