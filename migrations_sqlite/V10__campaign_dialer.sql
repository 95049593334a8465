-- Version 10 (this edition): a dialer whose state is the database.
--
-- A campaign gets its dialing settings; a contact moves through
-- pending -> dialing -> reached | retrying -> ... -> failed, with the number
-- of attempts placed, when it may be dialled next, and the last outcome. The
-- contact table is rebuilt because SQLite cannot change a CHECK constraint
-- in place; rows keep their ids and order (rowid), and `called` (the old
-- "Twilio accepted the request") becomes `reached`.

ALTER TABLE campaigns ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 2;
ALTER TABLE campaigns ADD COLUMN retry_delay_seconds INTEGER NOT NULL DEFAULT 300;
ALTER TABLE campaigns ADD COLUMN min_talk_seconds INTEGER NOT NULL DEFAULT 5;
-- Local calling hours, HH:MM in each contact's time zone; NULL: any time.
ALTER TABLE campaigns ADD COLUMN window_start TEXT;
ALTER TABLE campaigns ADD COLUMN window_end TEXT;
-- Why the dialer paused a running campaign (quota spent, no Twilio), for the tenant.
ALTER TABLE campaigns ADD COLUMN paused_reason TEXT;

-- Which Twilio account placed a phone call, and whose credentials those were
-- ('user' or 'system'): callbacks and look-ups of the call use the same.
ALTER TABLE agent_runs ADD COLUMN twilio_account_sid TEXT CHECK (twilio_account_sid IS NULL OR length(twilio_account_sid) <= 64);
ALTER TABLE agent_runs ADD COLUMN twilio_key_source TEXT CHECK (twilio_key_source IS NULL OR twilio_key_source IN ('user', 'system'));
CREATE INDEX idx_agent_runs_call_sid ON agent_runs (call_sid);

CREATE TABLE campaign_contacts_v10 (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    campaign_id TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    phone_number TEXT NOT NULL CHECK (length(phone_number) <= 20),
    first_name TEXT CHECK (length(first_name) <= 100),
    last_name TEXT CHECK (length(last_name) <= 100),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'dialing', 'reached', 'retrying', 'failed')),
    agent_run_id TEXT REFERENCES agent_runs (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Not before this time (RFC 3339 UTC); NULL: as soon as possible.
    next_attempt_at TEXT,
    last_disposition TEXT CHECK (length(last_disposition) <= 100),
    -- An IANA zone from the CSV; NULL: the number's country decides.
    timezone TEXT CHECK (length(timezone) <= 64),
    updated_at TEXT
);

INSERT INTO campaign_contacts_v10 (rowid, id, campaign_id, phone_number, first_name, last_name, status, agent_run_id, created_at, attempts)
SELECT rowid, id, campaign_id, phone_number, first_name, last_name,
       CASE status WHEN 'called' THEN 'reached' ELSE status END,
       agent_run_id, created_at,
       CASE WHEN status = 'pending' THEN 0 ELSE 1 END
FROM campaign_contacts;

DROP TABLE campaign_contacts;
ALTER TABLE campaign_contacts_v10 RENAME TO campaign_contacts;

CREATE INDEX idx_campaign_contacts_campaign_id ON campaign_contacts (campaign_id);
CREATE INDEX idx_campaign_contacts_status ON campaign_contacts (status);
CREATE INDEX idx_campaign_contacts_due ON campaign_contacts (campaign_id, status, next_attempt_at);
CREATE INDEX idx_campaign_contacts_agent_run_id ON campaign_contacts (agent_run_id);

-- A campaign call that ends sets its contact's outcome, whatever ended it
-- (Twilio's callback, a look-up after a restart): a call that was talked
-- through for the campaign's minimum is `reached`; any other end is retried
-- after the campaign's delay while retries are left, then `failed`. A call
-- that was never placed (`not_placed`, found out by asking Twilio after a
-- crash) does not count as an attempt: the contact is dialled again at once.
-- SET expressions read the row as it was, so `attempts` is the attempts
-- placed including the one that just ended.
CREATE TRIGGER campaign_contact_outcome
AFTER UPDATE OF status ON agent_runs
WHEN NEW.campaign_id IS NOT NULL AND OLD.status = 'in_progress' AND NEW.status <> 'in_progress'
BEGIN
    UPDATE campaign_contacts
    SET status = CASE
            WHEN NEW.disposition = 'not_placed' THEN CASE WHEN attempts <= 1 THEN 'pending' ELSE 'retrying' END
            WHEN NEW.status = 'completed'
                 AND NEW.duration_seconds >= (SELECT min_talk_seconds FROM campaigns WHERE id = NEW.campaign_id) THEN 'reached'
            WHEN attempts <= (SELECT max_retries FROM campaigns WHERE id = NEW.campaign_id) THEN 'retrying'
            ELSE 'failed'
        END,
        attempts = CASE WHEN NEW.disposition = 'not_placed' THEN max(0, attempts - 1) ELSE attempts END,
        next_attempt_at = CASE
            WHEN NEW.disposition = 'not_placed' THEN NULL
            ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now',
                 '+' || (SELECT retry_delay_seconds FROM campaigns WHERE id = NEW.campaign_id) || ' seconds')
        END,
        last_disposition = CASE
            WHEN NEW.disposition = 'not_placed' THEN last_disposition
            WHEN NEW.status = 'completed'
                 AND NEW.duration_seconds < (SELECT min_talk_seconds FROM campaigns WHERE id = NEW.campaign_id) THEN 'too_short'
            ELSE coalesce(NEW.disposition, NEW.status)
        END,
        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE agent_run_id = NEW.id AND status = 'dialing';
END;
