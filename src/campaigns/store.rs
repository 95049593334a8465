//! SQL over `campaigns` and `campaign_contacts`: campaigns as the API shows
//! them, their import, state changes and deletion, and the dialer's claim
//! of the next contact, made in one writer transaction with every check
//! that decides whether anyone may be called now.

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use super::import::Contact;
use super::window::{self, Window};
use crate::calls::phone::{insert_phone_run, PhoneSetup};
use crate::calls::routes::startable_agent;
use crate::http::error::ApiError;
use crate::http::extract::ClientInfo;
use crate::tiers;

/// How a campaign dials: retries, their delay, the talk time that counts
/// as reached, and the local calling hours.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Settings {
    pub max_retries: i64,
    pub retry_delay_seconds: i64,
    pub min_talk_seconds: i64,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_retries: 2,
            retry_delay_seconds: 300,
            min_talk_seconds: 5,
            window_start: None,
            window_end: None,
        }
    }
}

/// A campaign with its agent's name and how its contacts stand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub agent_name: String,
    /// The agent as the first edition's join gave it: `{name, type}`.
    pub agent: CampaignAgent,
    pub source_type: String,
    pub state: String,
    pub created_at: String,
    pub settings: Settings,
    /// Why the dialer paused it, while it is paused for that reason.
    pub paused_reason: Option<String>,
    pub contacts: Counts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignAgent {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize, Clone, Copy, Default, utoipa::ToSchema)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub dialing: i64,
    pub reached: i64,
    pub retrying: i64,
    pub failed: i64,
    /// The first edition's name for `reached`.
    pub called: i64,
}

impl Counts {
    /// The counts with `success_rate`: the share of the finished contacts
    /// (reached or failed for good) that were reached, in percent with one
    /// decimal (0 while none has finished).
    pub fn progress(&self) -> Value {
        let done = self.reached + self.failed;
        let rate = if done == 0 {
            0.0
        } else {
            (self.reached as f64 * 1000.0 / done as f64).round() / 10.0
        };
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["success_rate"] = json!(rate);
        v
    }

    /// Contacts the dialer still has to deal with.
    pub fn open(&self) -> i64 {
        self.pending + self.dialing + self.retrying
    }
}

/// The columns `campaign_from_row` reads, from `campaigns c JOIN agents a`.
pub const CAMPAIGN_COLUMNS: &str =
    "c.id, c.name, c.agent_id, a.name, c.source_type, c.state, c.created_at,
    c.max_retries, c.retry_delay_seconds, c.min_talk_seconds, c.window_start, c.window_end,
    c.paused_reason,
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'pending'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'dialing'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'reached'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'retrying'),
    (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id AND k.status = 'failed'),
    a.type";

/// The tables `CAMPAIGN_COLUMNS` reads.
/// Staged imports (`IMPORTING`) are left out here, once for every query.
pub const CAMPAIGN_FROM: &str =
    "campaigns c JOIN agents a ON a.id = c.agent_id AND c.source_type <> 'csv:importing'";

pub fn campaign_from_row(r: &Row<'_>) -> rusqlite::Result<Campaign> {
    let reached = r.get(16)?;
    let agent_name: String = r.get(3)?;
    Ok(Campaign {
        id: r.get(0)?,
        name: r.get(1)?,
        agent_id: r.get(2)?,
        agent: CampaignAgent {
            name: agent_name.clone(),
            kind: r.get(19)?,
        },
        agent_name,
        source_type: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        settings: Settings {
            max_retries: r.get(7)?,
            retry_delay_seconds: r.get(8)?,
            min_talk_seconds: r.get(9)?,
            window_start: r.get(10)?,
            window_end: r.get(11)?,
        },
        paused_reason: r.get(12)?,
        contacts: Counts {
            total: r.get(13)?,
            pending: r.get(14)?,
            dialing: r.get(15)?,
            reached,
            retrying: r.get(17)?,
            failed: r.get(18)?,
            called: reached,
        },
    })
}

/// The tenant's campaign, or none (missing and another tenant's alike).
pub fn owned_campaign(
    conn: &Connection,
    user_id: &str,
    id: &str,
) -> rusqlite::Result<Option<Campaign>> {
    conn.query_row(
        &format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM {CAMPAIGN_FROM} WHERE c.id = ?1 AND c.user_id = ?2"
        ),
        [id, user_id],
        campaign_from_row,
    )
    .optional()
}

/// How many of a campaign's calls its detail lists, newest first.
pub const DETAIL_RUNS: i64 = 100;

/// One call of a campaign, as its detail lists it.
#[derive(Debug, Serialize)]
pub struct CampaignRun {
    pub id: String,
    pub run_number: String,
    pub phone_number: Option<String>,
    pub status: String,
    pub disposition: Option<String>,
    pub duration_seconds: i64,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// The newest `DETAIL_RUNS` calls of campaign `id` (the caller has checked
/// it is the tenant's). Calls made in the same millisecond keep the order
/// they were placed in (by rowid).
pub fn campaign_runs(conn: &Connection, id: &str) -> rusqlite::Result<Vec<CampaignRun>> {
    conn.prepare_cached(
        "SELECT id, run_number, phone_number, status, disposition, duration_seconds,
                created_at, completed_at
         FROM agent_runs WHERE campaign_id = ?1
         ORDER BY created_at DESC, rowid DESC LIMIT ?2",
    )?
    .query_map(params![id, DETAIL_RUNS], |r| {
        Ok(CampaignRun {
            id: r.get(0)?,
            run_number: r.get(1)?,
            phone_number: r.get(2)?,
            status: r.get(3)?,
            disposition: r.get(4)?,
            duration_seconds: r.get(5)?,
            created_at: r.get(6)?,
            completed_at: r.get(7)?,
        })
    })?
    .collect()
}

/// The `source_type` of a campaign whose contacts are still being written
/// (`begin_import` to `finish_import`). `CAMPAIGN_FROM` leaves such
/// campaigns out, so no tenant sees, starts or counts half an import.
pub const IMPORTING: &str = "csv:importing";

/// An import whose staging campaign is older than this was abandoned (its
/// cleanup failed along with it: a full disk): the next import of the
/// tenant removes it. The largest file imports in well under a minute.
pub const ABANDONED_AFTER_SECS: i64 = 600;

/// Why an import cannot begin.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportRefused {
    /// Another import of the tenant is still being written.
    InProgress,
    /// This many contacts were imported in the last 24 hours already.
    DailyLimit { imported: i64 },
}

/// Contacts the tenant imported in the last 24 hours: read from the
/// audit rows `create_campaign` writes with each import, which outlive the
/// campaign (deleting one does not give its contacts back to the day).
pub fn contacts_imported_last_day(conn: &Connection, user_id: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(sum(json_extract(details, '$.imported')), 0) FROM admin_audit_logs
         WHERE admin_user_id = ?1 AND action = 'create_campaign'
           AND created_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')",
        [user_id],
        |r| r.get(0),
    )
}

/// Starts an import (in the caller's transaction): removes the tenant's
/// abandoned ones, refuses a second one at once and one past the day's
/// limit, and inserts the campaign, hidden (`IMPORTING`) until
/// `finish_import`. Its id.
pub fn begin_import(
    tx: &Connection,
    user_id: &str,
    name: &str,
    agent_id: &str,
    settings: &Settings,
    (contacts, per_day): (i64, i64),
) -> rusqlite::Result<Result<String, ImportRefused>> {
    tx.execute(
        "DELETE FROM campaigns WHERE user_id = ?1 AND source_type = ?2
           AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)",
        params![
            user_id,
            IMPORTING,
            format!("-{ABANDONED_AFTER_SECS} seconds")
        ],
    )?;
    let busy: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM campaigns WHERE user_id = ?1 AND source_type = ?2)",
        params![user_id, IMPORTING],
        |r| r.get(0),
    )?;
    if busy {
        return Ok(Err(ImportRefused::InProgress));
    }
    let imported = contacts_imported_last_day(tx, user_id)?;
    if imported + contacts > per_day {
        return Ok(Err(ImportRefused::DailyLimit { imported }));
    }
    let id: String = tx.query_row(
        "INSERT INTO campaigns (user_id, name, agent_id, source_type, max_retries,
                                retry_delay_seconds, min_talk_seconds, window_start, window_end)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
        params![
            user_id,
            name,
            agent_id,
            IMPORTING,
            settings.max_retries,
            settings.retry_delay_seconds,
            settings.min_talk_seconds,
            settings.window_start,
            settings.window_end
        ],
        |r| r.get(0),
    )?;
    Ok(Ok(id))
}

/// Adds one chunk of an import's contacts (in the caller's transaction);
/// false, adding nothing, when the staging campaign is gone (its agent was
/// deleted meanwhile, and the campaign with it).
pub fn insert_contacts(
    tx: &Connection,
    campaign_id: &str,
    contacts: &[Contact],
) -> rusqlite::Result<bool> {
    let staged: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = ?1 AND source_type = ?2)",
        params![campaign_id, IMPORTING],
        |r| r.get(0),
    )?;
    if !staged {
        return Ok(false);
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO campaign_contacts (campaign_id, phone_number, first_name, last_name, timezone,
                                        extra_fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for k in contacts {
        insert.execute(params![
            campaign_id,
            k.phone_number,
            k.first_name,
            k.last_name,
            k.timezone,
            k.extra_fields
        ])?;
    }
    Ok(true)
}

/// Makes a staged import the tenant's campaign (in the caller's
/// transaction); false when it is gone.
pub fn finish_import(tx: &Connection, campaign_id: &str) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE campaigns SET source_type = 'csv' WHERE id = ?1 AND source_type = ?2",
        params![campaign_id, IMPORTING],
    )?;
    Ok(n == 1)
}

/// Removes a staged import and the contacts written so far.
pub fn drop_import(conn: &Connection, campaign_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM campaigns WHERE id = ?1 AND source_type = ?2",
        params![campaign_id, IMPORTING],
    )?;
    Ok(())
}

/// Removes every staged import: at start, none can still be under way.
pub fn drop_unfinished_imports(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM campaigns WHERE source_type = ?1", [IMPORTING])
}

/// Moves the tenant's campaign to `to` (this campaign only, by id and
/// owner: no other campaign moves); a tenant's own move clears the
/// dialer's pause reason.
pub fn set_state(conn: &Connection, user_id: &str, id: &str, to: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE campaigns SET state = ?3, paused_reason = NULL WHERE id = ?1 AND user_id = ?2",
        params![id, user_id, to],
    )?;
    Ok(())
}

/// Deletes the tenant's campaign; its contacts go with it (ON DELETE
/// CASCADE) and its runs stay, unlinked (ON DELETE SET NULL), as the calls
/// did happen.
pub fn delete_campaign(conn: &Connection, user_id: &str, id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM campaigns WHERE id = ?1 AND user_id = ?2",
        params![id, user_id],
    )?;
    Ok(())
}

/// A contact as the contacts list shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactRow {
    pub id: String,
    pub phone_number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_disposition: Option<String>,
    pub timezone: Option<String>,
    pub agent_run_id: Option<String>,
    pub created_at: String,
}

pub const CONTACT_COLUMNS: &str = "k.id, k.phone_number, k.first_name, k.last_name, k.status, \
     k.attempts, k.next_attempt_at, k.last_disposition, k.timezone, k.agent_run_id, k.created_at";

pub fn contact_from_row(r: &Row<'_>) -> rusqlite::Result<ContactRow> {
    Ok(ContactRow {
        id: r.get(0)?,
        phone_number: r.get(1)?,
        first_name: r.get(2)?,
        last_name: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_disposition: r.get(7)?,
        timezone: r.get(8)?,
        agent_run_id: r.get(9)?,
        created_at: r.get(10)?,
    })
}

/// A running campaign the dialer looks at, with its owner.
#[derive(Debug, Clone)]
pub struct Running {
    pub campaign_id: String,
    pub user_id: String,
}

/// Running campaigns of active owners, oldest first.
pub fn running_campaigns(conn: &Connection) -> rusqlite::Result<Vec<Running>> {
    conn.prepare_cached(
        "SELECT c.id, c.user_id FROM campaigns c JOIN users u ON u.id = c.user_id
         WHERE c.state = 'running' AND u.is_active = 1
         ORDER BY c.created_at, c.rowid",
    )?
    .query_map([], |r| {
        Ok(Running {
            campaign_id: r.get(0)?,
            user_id: r.get(1)?,
        })
    })?
    .collect()
}

/// The dialer pauses a running campaign that can no longer call, saying
/// why; a campaign the tenant moved meanwhile is left alone.
pub fn pause_running(conn: &Connection, id: &str, reason: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE campaigns SET state = 'paused', paused_reason = ?2 WHERE id = ?1 AND state = 'running'",
        params![id, reason],
    )? > 0)
}

/// A contact claimed for a call: its run is inserted, the contact is
/// `dialing`, and this is its `attempt`-th call.
#[derive(Debug, Clone)]
pub struct Claim {
    pub contact_id: String,
    pub campaign_id: String,
    pub user_id: String,
    pub phone_number: String,
    pub attempt: i64,
    pub run_id: String,
}

impl Claim {
    /// Twilio's idempotency token for this attempt: the same for every try
    /// of it, another for the next attempt.
    pub fn attempt_key(&self) -> String {
        format!("{}-{}", self.contact_id, self.attempt)
    }
}

/// What the dialer's claim found.
#[derive(Debug)]
pub enum Claimed {
    Call(Claim),
    /// Nobody to call now: all in use, retries not yet due, outside the
    /// window, or the campaign or its owner is no longer dialing.
    Nothing,
    /// Every contact is done: the campaign was completed.
    Completed,
    /// The campaign can no longer call and was paused, for this reason.
    Paused(String),
}

/// Contacts looked at per claim before giving up for this round; those
/// outside their calling hours are moved to their next opening.
const CANDIDATES_PER_CLAIM: i64 = 50;

/// One writer transaction: checks the campaign is running and its owner
/// active, on a plan with phone calls, within quota and concurrent calls;
/// picks the first due contact inside its calling hours; marks it `dialing`
/// with its attempt number and inserts the run. Whatever changed since the
/// caller looked (a pause, a deactivation, a spent quota) decides here, so
/// it takes effect before the next dial.
pub fn claim_next(
    tx: &Connection,
    campaign_id: &str,
    setup: &PhoneSetup,
    client: &ClientInfo,
    now: Timestamp,
) -> Result<Claimed, ApiError> {
    let row = tx
        .query_row(
            "SELECT c.state, c.user_id, c.agent_id, c.window_start, c.window_end,
                    u.is_active, u.subscription_tier
             FROM campaigns c JOIN users u ON u.id = c.user_id WHERE c.id = ?1",
            [campaign_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((state, user_id, agent_id, w_start, w_end, active, tier)) = row else {
        return Ok(Claimed::Nothing);
    };
    if state != "running" || !active {
        return Ok(Claimed::Nothing);
    }
    if !tiers::tier(&tier).is_some_and(|t| t.phone_calls) {
        let reason = format!("Phone calls are not part of the {tier} plan");
        pause_running(tx, campaign_id, &reason)?;
        return Ok(Claimed::Paused(reason));
    }
    let agent = match startable_agent(tx, &user_id, &agent_id) {
        Ok(agent) => agent,
        Err(e) if e.code == "CONCURRENT_CALL_LIMIT" => return Ok(Claimed::Nothing),
        Err(e) if e.code == "QUOTA_EXCEEDED" => {
            let reason = "This month's tokens are used up".to_string();
            pause_running(tx, campaign_id, &reason)?;
            return Ok(Claimed::Paused(reason));
        }
        Err(e) => return Err(e),
    };
    let window = Window::from_columns(w_start.as_deref(), w_end.as_deref());
    let mut due = tx.prepare_cached(
        "SELECT id, phone_number, attempts, timezone FROM campaign_contacts
         WHERE campaign_id = ?1 AND status IN ('pending', 'retrying')
           AND (next_attempt_at IS NULL OR next_attempt_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         ORDER BY next_attempt_at IS NOT NULL, next_attempt_at, rowid
         LIMIT ?2",
    )?;
    let candidates: Vec<(String, String, i64, Option<String>)> = due
        .query_map(params![campaign_id, CANDIDATES_PER_CLAIM], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for (contact_id, phone_number, attempts, timezone) in candidates {
        if let Some(w) = window {
            let zones = window::zones_for(&phone_number, timezone.as_deref());
            if let Some(opens) = w.next_open(now, &zones) {
                tx.execute(
                    "UPDATE campaign_contacts SET next_attempt_at = ?2 WHERE id = ?1",
                    params![contact_id, stamp(opens)],
                )?;
                continue;
            }
        }
        let (run_id, _) = insert_phone_run(
            tx,
            setup,
            &user_id,
            &agent,
            &phone_number,
            Some(campaign_id),
            client,
        )?;
        tx.execute(
            "UPDATE campaign_contacts
             SET status = 'dialing', attempts = attempts + 1, agent_run_id = ?2,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?1",
            params![contact_id, run_id],
        )?;
        return Ok(Claimed::Call(Claim {
            contact_id,
            campaign_id: campaign_id.to_string(),
            user_id,
            phone_number,
            attempt: attempts + 1,
            run_id,
        }));
    }
    let open: i64 = tx.query_row(
        "SELECT count(*) FROM campaign_contacts
         WHERE campaign_id = ?1 AND status IN ('pending', 'dialing', 'retrying')",
        [campaign_id],
        |r| r.get(0),
    )?;
    if open == 0 {
        tx.execute(
            "UPDATE campaigns SET state = 'completed' WHERE id = ?1 AND state = 'running'",
            [campaign_id],
        )?;
        return Ok(Claimed::Completed);
    }
    Ok(Claimed::Nothing)
}

/// A timestamp as every stored one: RFC 3339 UTC with milliseconds, so
/// that text comparison is time order.
fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// How many campaigns are running, for the metrics gauge.
pub fn running_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM campaigns WHERE state = 'running'",
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn staged_imports_are_left_out_of_every_campaign_query() {
        assert!(super::CAMPAIGN_FROM.contains(&format!("c.source_type <> '{}'", super::IMPORTING)));
    }
}
