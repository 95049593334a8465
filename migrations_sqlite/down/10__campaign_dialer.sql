DROP TRIGGER campaign_contact_outcome;

CREATE TABLE campaign_contacts_v9 (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    campaign_id TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    phone_number TEXT NOT NULL CHECK (length(phone_number) <= 20),
    first_name TEXT CHECK (length(first_name) <= 100),
    last_name TEXT CHECK (length(last_name) <= 100),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'called', 'failed')),
    agent_run_id TEXT REFERENCES agent_runs (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO campaign_contacts_v9 (rowid, id, campaign_id, phone_number, first_name, last_name, status, agent_run_id, created_at)
SELECT rowid, id, campaign_id, phone_number, first_name, last_name,
       CASE status WHEN 'reached' THEN 'called' WHEN 'failed' THEN 'failed' ELSE 'pending' END,
       agent_run_id, created_at
FROM campaign_contacts;
DROP TABLE campaign_contacts;
ALTER TABLE campaign_contacts_v9 RENAME TO campaign_contacts;
CREATE INDEX idx_campaign_contacts_campaign_id ON campaign_contacts (campaign_id);
CREATE INDEX idx_campaign_contacts_status ON campaign_contacts (status);

DROP INDEX idx_agent_runs_call_sid;
ALTER TABLE agent_runs DROP COLUMN twilio_key_source;
ALTER TABLE agent_runs DROP COLUMN twilio_account_sid;
ALTER TABLE campaigns DROP COLUMN paused_reason;
ALTER TABLE campaigns DROP COLUMN window_end;
ALTER TABLE campaigns DROP COLUMN window_start;
ALTER TABLE campaigns DROP COLUMN min_talk_seconds;
ALTER TABLE campaigns DROP COLUMN retry_delay_seconds;
ALTER TABLE campaigns DROP COLUMN max_retries;
