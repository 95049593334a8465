//! SQL over `agent_runs`: the run as the API shows it, run numbers and
//! transcripts.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub run_number: String,
    pub agent_id: String,
    pub campaign_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub phone_number: Option<String>,
    pub status: String,
    pub disposition: Option<String>,
    pub duration_seconds: i64,
    pub groq_tokens: f64,
    pub recording_url: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub last_activity_at: Option<String>,
}

/// The columns `run_from_row` reads, in order, from `agent_runs r`.
pub const RUN_COLUMNS: &str =
    "r.id, r.run_number, r.agent_id, r.campaign_id, r.type, r.phone_number, \
     r.status, r.disposition, r.duration_seconds, r.groq_tokens, r.recording_url, r.created_at, \
     r.completed_at, r.last_activity_at";

pub fn run_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(at)?,
        run_number: r.get(at + 1)?,
        agent_id: r.get(at + 2)?,
        campaign_id: r.get(at + 3)?,
        kind: r.get(at + 4)?,
        phone_number: r.get(at + 5)?,
        status: r.get(at + 6)?,
        disposition: r.get(at + 7)?,
        duration_seconds: r.get(at + 8)?,
        groq_tokens: r.get(at + 9)?,
        recording_url: r.get(at + 10)?,
        created_at: r.get(at + 11)?,
        completed_at: r.get(at + 12)?,
        last_activity_at: r.get(at + 13)?,
    })
}

/// One turn of a conversation as stored in `transcript_text` (a JSON array).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// When it was said, RFC 3339 UTC.
    pub at: String,
}

/// The stored transcript. A run that has none, or a first-edition run whose
/// `transcript_text` is free text, reads as no turns rather than an error.
pub fn parse_transcript(text: Option<&str>) -> Vec<Turn> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// A run with the facts every run route needs: its owner, its agent's name
/// and its transcript.
pub struct OwnedRun {
    pub run: Run,
    pub agent_name: String,
    pub transcript: Vec<Turn>,
}

/// The run when its agent belongs to `user_id`; another tenant's is `None`.
pub fn owned_run(
    conn: &Connection,
    user_id: &str,
    run_id: &str,
) -> rusqlite::Result<Option<OwnedRun>> {
    Ok(run_with_owner(conn, run_id)?
        .filter(|(owner, _)| owner == user_id)
        .map(|(_, found)| found))
}

/// The run and its owner's user id, whoever that is: for Twilio's
/// webhooks, which come without a session and prove themselves by a
/// signature made with the owner's token.
pub fn run_with_owner(
    conn: &Connection,
    run_id: &str,
) -> rusqlite::Result<Option<(String, OwnedRun)>> {
    conn.query_row(
        &format!(
            "SELECT {RUN_COLUMNS}, a.name, r.transcript_text, a.user_id
             FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE r.id = ?1"
        ),
        [run_id],
        |r| {
            Ok((
                r.get(16)?,
                OwnedRun {
                    run: run_from_row(r, 0)?,
                    agent_name: r.get(14)?,
                    transcript: parse_transcript(r.get::<_, Option<String>>(15)?.as_deref()),
                },
            ))
        },
    )
    .optional()
}

/// Kinds of run, each with its own run-number series (`WR-WEB-000123`,
/// `WR-TEL-000123`).
#[derive(Debug, Clone, Copy)]
pub enum RunKind {
    Web,
    Phone,
}

impl RunKind {
    fn code(self) -> &'static str {
        match self {
            RunKind::Web => "WEB",
            RunKind::Phone => "TEL",
        }
    }

    /// The `agent_runs.type` of this kind.
    fn run_type(self) -> &'static str {
        match self {
            RunKind::Web => "WEB_CALL",
            RunKind::Phone => "PHONE_CALL",
        }
    }
}

/// Inserts a run of `agent_id` (calling `phone_number`, for a phone call)
/// with the next free run number of its kind and returns `(id, run_number, created_at)`. Call it inside the write
/// transaction: the counter and the insert commit together, and a number
/// taken by a run imported from elsewhere is skipped.
pub fn insert_run(
    conn: &Connection,
    kind: RunKind,
    agent_id: &str,
    phone_number: Option<&str>,
) -> rusqlite::Result<(String, String, String)> {
    // Every attempt consumes a number, so this ends; the bound only guards
    // against a counter and a table out of step by more than anyone imports.
    const ATTEMPTS: usize = 10_000;
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let n: i64 = conn.query_row(
            "INSERT INTO run_number_counters (kind, last_value) VALUES (?1, 1)
             ON CONFLICT (kind) DO UPDATE SET last_value = last_value + 1
             RETURNING last_value",
            [kind.code()],
            |r| r.get(0),
        )?;
        let number = format!("WR-{}-{n:06}", kind.code());
        let inserted = conn.query_row(
            "INSERT INTO agent_runs (run_number, agent_id, type, phone_number, last_activity_at)
             VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             RETURNING id, created_at",
            params![number, agent_id, kind.run_type(), phone_number],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        );
        match inserted {
            Ok((id, created_at)) => return Ok((id, number, created_at)),
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    && msg.as_deref().is_some_and(|m| m.contains("run_number")) =>
            {
                last_err = Some(rusqlite::Error::SqliteFailure(e, msg));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or(rusqlite::Error::QueryReturnedNoRows))
}

/// The agent's description: the system prompt of its calls.
pub fn agent_prompt(conn: &Connection, agent_id: &str) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT description FROM agents WHERE id = ?1",
        [agent_id],
        |r| r.get(0),
    )
}

/// Replaces the stored transcript and marks the run active now.
pub fn save_transcript(conn: &Connection, run_id: &str, turns: &[Turn]) -> rusqlite::Result<()> {
    let text = serde_json::to_string(turns)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "UPDATE agent_runs SET transcript_text = ?2,
                last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1",
        params![run_id, text],
    )?;
    Ok(())
}

/// The database clock, RFC 3339 UTC with milliseconds, as every stored
/// timestamp.
pub fn now(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
        r.get(0)
    })
}

/// Records which Twilio account places a phone run's call (and the
/// campaign it belongs to), in the transaction that inserts the run.
pub fn set_twilio_account(
    conn: &Connection,
    run_id: &str,
    campaign_id: Option<&str>,
    account_sid: &str,
    source: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET twilio_account_sid = ?2, twilio_key_source = ?3,
                campaign_id = coalesce(?4, campaign_id)
         WHERE id = ?1",
        params![run_id, account_sid, source, campaign_id],
    )?;
    Ok(())
}

/// Stores Twilio's id of a run's call, once known.
pub fn set_call_sid(conn: &Connection, run_id: &str, call_sid: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET call_sid = ?2,
                last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1 AND call_sid IS NULL",
        params![run_id, call_sid],
    )?;
    Ok(())
}

/// A phone run in progress, as reconciling it with Twilio needs it.
#[derive(Debug, Clone)]
pub struct LivePhoneRun {
    pub id: String,
    pub owner: String,
    pub call_sid: Option<String>,
    pub phone_number: Option<String>,
    pub created_at: String,
    pub account_sid: Option<String>,
    pub key_source: Option<String>,
}

/// The phone runs in progress, with what `live_phone_run_from_row` reads.
const LIVE_PHONE_RUNS: &str = "SELECT r.id, a.user_id, r.call_sid, r.phone_number, r.created_at,
            r.twilio_account_sid, r.twilio_key_source
     FROM agent_runs r JOIN agents a ON a.id = r.agent_id
     WHERE r.status = 'in_progress' AND r.type = 'PHONE_CALL'";

/// Phone runs in progress. With `stale` = `(unplaced_secs, quiet_secs)`,
/// only those whose call SID is still unknown `unplaced_secs` after they
/// were created, and those with a SID quiet for `quiet_secs`; `None`: all
/// of them (at start, when no request of this process can be under way).
pub fn live_phone_runs(
    conn: &Connection,
    stale: Option<(u64, u64)>,
) -> rusqlite::Result<Vec<LivePhoneRun>> {
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let (unplaced, quiet) = match stale {
        Some((u, q)) => (Some(secs(u)), Some(secs(q))),
        None => (None, None),
    };
    conn.prepare_cached(&format!(
        "{LIVE_PHONE_RUNS}
           AND (?1 IS NULL
                OR (r.call_sid IS NULL
                    AND (julianday('now') - julianday(r.created_at)) * 86400 >= ?1)
                OR (r.call_sid IS NOT NULL
                    AND (julianday('now') - julianday(coalesce(r.last_activity_at, r.created_at))) * 86400 >= ?2))
         ORDER BY r.created_at, r.rowid"
    ))?
    .query_map(params![unplaced, quiet], live_phone_run_from_row)?
    .collect()
}

fn live_phone_run_from_row(r: &Row<'_>) -> rusqlite::Result<LivePhoneRun> {
    Ok(LivePhoneRun {
        id: r.get(0)?,
        owner: r.get(1)?,
        call_sid: r.get(2)?,
        phone_number: r.get(3)?,
        created_at: r.get(4)?,
        account_sid: r.get(5)?,
        key_source: r.get(6)?,
    })
}

/// One phone run, when it is still in progress.
pub fn live_phone_run(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<LivePhoneRun>> {
    conn.query_row(
        &format!("{LIVE_PHONE_RUNS} AND r.id = ?1"),
        [run_id],
        live_phone_run_from_row,
    )
    .optional()
}

/// A phone run's call SID and the Twilio account that placed it (SID and
/// whose credentials).
pub fn twilio_facts(
    conn: &Connection,
    run_id: &str,
) -> rusqlite::Result<(Option<String>, Option<String>, Option<String>)> {
    conn.query_row(
        "SELECT call_sid, twilio_account_sid, twilio_key_source FROM agent_runs WHERE id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// Whether some run already holds `call_sid`.
pub fn call_sid_taken(conn: &Connection, call_sid: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM agent_runs WHERE call_sid = ?1)",
        [call_sid],
        |r| r.get(0),
    )
}

/// Marks a run active now (the periodic look-up found its call still live).
pub fn touch(conn: &Connection, run_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        [run_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_that_are_not_ours_read_as_empty() {
        assert!(parse_transcript(None).is_empty());
        assert!(parse_transcript(Some("Agent: hello\nUser: hi")).is_empty());
        let t = parse_transcript(Some(
            r#"[{"role":"user","content":"hi","at":"2025-01-01T00:00:00.000Z"}]"#,
        ));
        assert_eq!(t[0].content, "hi");
    }
}
