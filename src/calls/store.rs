//! SQL over `agent_runs`: the run as the API shows it, run numbers,
//! transcripts, the one way a run ends (`finish_run`), and the LLM usage of
//! its turns (`llm_usage`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// When it was said, RFC 3339 UTC.
    pub at: String,
    /// A voice call's answer: how long each step took after the caller
    /// stopped speaking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<TurnLatency>,
    /// A voice call's answer the caller talked over: `content` is what was
    /// spoken before the agent stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl Turn {
    pub fn new(role: impl Into<String>, content: impl Into<String>, at: impl Into<String>) -> Turn {
        Turn {
            role: role.into(),
            content: content.into(),
            at: at.into(),
            latency: None,
            interrupted: false,
        }
    }
}

/// Milliseconds from the final transcript of the caller's words (the end
/// of their speech, as the speech-to-text service decided it) to the
/// agent's first LLM token and to its first audio sent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TurnLatency {
    pub llm_first_token_ms: u64,
    pub first_audio_ms: u64,
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
        // Cached, as the statements of every call's start.
        let n: i64 = conn
            .prepare_cached(
                "INSERT INTO run_number_counters (kind, last_value) VALUES (?1, 1)
                 ON CONFLICT (kind) DO UPDATE SET last_value = last_value + 1
                 RETURNING last_value",
            )?
            .query_row([kind.code()], |r| r.get(0))?;
        let number = format!("WR-{}-{n:06}", kind.code());
        let inserted = conn
            .prepare_cached(
                "INSERT INTO agent_runs (run_number, agent_id, type, phone_number, last_activity_at)
                 VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                 RETURNING id, created_at",
            )?
            .query_row(
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

/// What a run's agent says and how: its prompt and first message with the
/// call's variables filled in, its voice and language (when it overrides the
/// tenant's), and how long a call may last.
#[derive(Debug, Clone)]
pub struct Script {
    pub prompt: String,
    pub first_message: String,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub max_call_seconds: i64,
    pub record_calls: bool,
}

/// Whole seconds since the run started, by the database clock.
pub fn elapsed_secs(conn: &Connection, run_id: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT CAST((julianday('now') - julianday(created_at)) * 86400 AS INTEGER)
         FROM agent_runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )
}

/// The greeting of an agent without a first message of its own.
pub fn default_greeting(agent_name: &str) -> String {
    format!("Hello! I'm {agent_name}. How can I help you today?")
}

/// The run's script. A campaign call's variables are its contact's
/// `first_name`, `last_name`, `phone` and the other columns of its CSV row;
/// any call's `phone` is the number called.
pub fn script(conn: &Connection, run_id: &str) -> rusqlite::Result<Script> {
    let (name, prompt, first, voice, language, max, record, phone, contact) = conn.query_row(
        "SELECT a.name, a.description, a.first_message, a.voice, a.language, a.max_call_seconds,
                a.record_calls, r.phone_number,
                (SELECT json_object('first_name', k.first_name, 'last_name', k.last_name,
                                    'extra', k.extra_fields)
                 FROM campaign_contacts k WHERE k.agent_run_id = r.id)
         FROM agent_runs r JOIN agents a ON a.id = r.agent_id WHERE r.id = ?1",
        [run_id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        },
    )?;
    let mut vars: Vec<(String, String)> = Vec::new();
    if let Some(contact) = contact.and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
    {
        // The CSV's own columns first, so the named ones win a clash.
        if let Some(extra) = contact["extra"].as_str().and_then(|e| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e).ok()
        }) {
            for (k, v) in extra {
                if let Some(v) = v.as_str() {
                    vars.push((k, v.to_string()));
                }
            }
        }
        for key in ["first_name", "last_name"] {
            if let Some(v) = contact[key].as_str() {
                vars.push((key.to_string(), v.to_string()));
            }
        }
    }
    if let Some(phone) = phone {
        vars.push(("phone".to_string(), phone));
    }
    // Later entries win: apply the named ones last.
    vars.reverse();
    let mut seen = std::collections::HashSet::new();
    vars.retain(|(k, _)| seen.insert(k.clone()));
    let fill = |t: &str| crate::agents::fill(t, &vars);
    Ok(Script {
        prompt: fill(&prompt),
        first_message: first.map_or_else(|| default_greeting(&name), |f| fill(&f)),
        voice,
        language,
        max_call_seconds: max,
        record_calls: record,
    })
}

/// Replaces the stored transcript and marks the run active now.
pub fn save_transcript(conn: &Connection, run_id: &str, turns: &[Turn]) -> rusqlite::Result<()> {
    let text = serde_json::to_string(turns)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "UPDATE agent_runs SET transcript_text = ?2,
                last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1",
    )?
    .execute(params![run_id, text])?;
    Ok(())
}

/// How a run ends: `completed` (billed by the triggers for its duration)
/// or `failed` (costs nothing: no call took place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    fn status(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
        }
    }
}

/// The duration a finished run is billed for, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// From the start to now, by the server's clock (a call ended now).
    UntilNow,
    /// From the start to the last activity (a call nobody ended: the time
    /// after its last message was nobody talking).
    UntilLastActivity,
    /// A figure from elsewhere: Twilio's `CallDuration` (negative counts as 0).
    Seconds(i64),
}

/// The disposition a finished run gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition<'a> {
    /// This one, whatever was recorded before.
    Set(&'a str),
    /// One recorded earlier if any (the gather's
    /// `user_idle_max_duration_exceeded`), else this one.
    Unless(&'a str),
}

/// How `finish_run` ends a run.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub outcome: Outcome,
    pub disposition: Disposition<'a>,
    pub duration: Measure,
}

/// Ends the run `run_id` when it is still in progress, and returns it as
/// it now is (tokens computed); `None` when it was not in progress, so a
/// repeated end (a double click, a Twilio retry, a sweep racing an end)
/// changes and bills nothing.
///
/// This is the only statement that sets `agent_runs.status`: setting it to
/// `completed` in this UPDATE fires the triggers that bill the run
/// (`calculate_tokens`, `increment_agent_runs`,
/// `trigger_update_user_usage_tracking`), so every way a call ends is billed
/// by the same rules.
pub fn finish_run(
    conn: &Connection,
    run_id: &str,
    finish: &Finish<'_>,
) -> rusqlite::Result<Option<Run>> {
    let (measure, seconds) = match finish.duration {
        Measure::UntilNow => ("now", 0),
        Measure::UntilLastActivity => ("last_activity", 0),
        Measure::Seconds(s) => ("given", s.max(0)),
    };
    let (disposition, keep_recorded) = match finish.disposition {
        Disposition::Set(d) => (d, false),
        Disposition::Unless(d) => (d, true),
    };
    // Durations are whole seconds of the millisecond-rounded difference
    // (julianday differences are a hair off, so 1.9999999 s is 2 s). Every
    // SET expression reads the row as it was, so the last activity used for
    // the duration is the one before this statement.
    let changed = conn
        .prepare_cached(
            "UPDATE agent_runs
             SET duration_seconds = CASE ?3
                     WHEN 'now' THEN max(0, CAST(round(
                         (julianday('now') - julianday(created_at)) * 86400000) AS INTEGER) / 1000)
                     WHEN 'last_activity' THEN max(0, CAST(round(
                         (julianday(coalesce(last_activity_at, created_at)) - julianday(created_at)) * 86400000
                         ) AS INTEGER) / 1000)
                     ELSE ?4 END,
                 disposition = CASE WHEN ?6 THEN coalesce(disposition, ?5) ELSE ?5 END,
                 completed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                 last_activity_at = CASE ?3 WHEN 'last_activity' THEN last_activity_at
                     ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END,
                 status = ?2
             WHERE id = ?1 AND status = 'in_progress'",
        )?
        .execute(params![
            run_id,
            finish.outcome.status(),
            measure,
            seconds,
            disposition,
            keep_recorded
        ])?;
    if changed == 0 {
        return Ok(None);
    }
    // Read back rather than RETURNING: RETURNING shows the row before the
    // triggers computed its tokens.
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM agent_runs r WHERE r.id = ?1"),
        [run_id],
        |r| run_from_row(r, 0),
    )
    .optional()
}

/// The tokens, in whole cents, that the run `run_id` would cost if it
/// ended now (the `calculate_tokens` rule on its time so far).
pub fn accrued_cents(conn: &Connection, run_id: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT (max(0, CAST(round((julianday('now') - julianday(created_at)) * 86400000) AS INTEGER) / 1000) * 13 + 5) / 10
         FROM agent_runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )
}

/// What one answered LLM turn used and cost, as `llm_usage` keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct LlmTurn {
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Micro-dollars; 0 for a model without a price.
    pub cost_micros: u64,
    /// Whether the price table knew the model.
    pub priced: bool,
}

/// Records an answered turn of `run_id`; the `trigger_add_llm_costs`
/// trigger adds its cost to the tenant's `api_costs` for today. Call it in
/// the transaction that stores the turn.
pub fn record_llm_turn(
    conn: &Connection,
    run_id: &str,
    user_id: &str,
    turn: &LlmTurn,
) -> rusqlite::Result<()> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO llm_usage (run_id, user_id, model, provider, prompt_tokens,
                                completion_tokens, cost_micros, priced)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        run_id,
        user_id,
        turn.model,
        turn.provider,
        count(turn.prompt_tokens),
        count(turn.completion_tokens),
        count(turn.cost_micros),
        turn.priced
    ])?;
    Ok(())
}

/// One recorded turn, as the run detail shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LlmUsageRow {
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
    /// Dollars, to the micro-dollar.
    pub cost: f64,
    pub priced: bool,
    pub created_at: String,
}

/// A run's LLM turns and their totals.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LlmUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
    pub cost: f64,
    /// False when a turn's model had no price (it cost 0).
    pub priced: bool,
    pub turns: Vec<LlmUsageRow>,
}

/// Micro-dollars as dollars.
pub fn dollars(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// The LLM turns of `run_id`, oldest first.
pub fn llm_usage(conn: &Connection, run_id: &str) -> rusqlite::Result<LlmUsage> {
    let turns: Vec<LlmUsageRow> = conn
        .prepare_cached(
            "SELECT provider, model, prompt_tokens, completion_tokens, cost_micros, priced, created_at
             FROM llm_usage WHERE run_id = ?1 ORDER BY created_at, rowid",
        )?
        .query_map([run_id], |r| {
            let cost_micros: i64 = r.get(4)?;
            Ok(LlmUsageRow {
                provider: r.get(0)?,
                model: r.get(1)?,
                prompt_tokens: r.get(2)?,
                completion_tokens: r.get(3)?,
                cost_micros,
                cost: dollars(cost_micros),
                priced: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let cost_micros = turns.iter().map(|t| t.cost_micros).sum();
    Ok(LlmUsage {
        prompt_tokens: turns.iter().map(|t| t.prompt_tokens).sum(),
        completion_tokens: turns.iter().map(|t| t.completion_tokens).sum(),
        cost_micros,
        cost: dollars(cost_micros),
        priced: turns.iter().all(|t| t.priced),
        turns,
    })
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
///
/// A run that does not exist has no facts (all `None`): its callers look
/// the run up beside this and answer 404 for it, not a server error.
pub fn twilio_facts(
    conn: &Connection,
    run_id: &str,
) -> rusqlite::Result<(Option<String>, Option<String>, Option<String>)> {
    Ok(conn
        .query_row(
            "SELECT call_sid, twilio_account_sid, twilio_key_source FROM agent_runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .unwrap_or((None, None, None)))
}

/// Whether some run already holds `call_sid`.
pub fn call_sid_taken(conn: &Connection, call_sid: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM agent_runs WHERE call_sid = ?1)",
        [call_sid],
        |r| r.get(0),
    )
}

/// The tenant's runs in progress, oldest first: `(id, run_number)`.
pub fn runs_in_progress_of(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare_cached(
        "SELECT r.id, r.run_number FROM agent_runs r JOIN agents a ON a.id = r.agent_id
         WHERE a.user_id = ?1 AND r.status = 'in_progress' ORDER BY r.created_at, r.rowid",
    )?
    .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Records how a call in progress is about to end (the silent caller hung
/// up on); `finish_run` keeps it (`Disposition::Unless`). Marks it active.
pub fn note_disposition(
    conn: &Connection,
    run_id: &str,
    disposition: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET disposition = ?2,
                last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1 AND status = 'in_progress'",
        params![run_id, disposition],
    )?;
    Ok(())
}

/// Keeps a recording's URL with the run (a `None` keeps the one stored)
/// and marks it active.
pub fn set_recording_url(
    conn: &Connection,
    run_id: &str,
    url: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET recording_url = coalesce(?2, recording_url),
                last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1",
        params![run_id, url],
    )?;
    Ok(())
}

/// Marks a run active now (a webhook, or a look-up that found its call
/// still live), so the idle sweep and the periodic look-up leave it alone.
pub fn touch(conn: &Connection, run_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agent_runs SET last_activity_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        [run_id],
    )?;
    Ok(())
}

/// Calls in progress by kind (`web`, `phone`), both always present: the
/// metrics gauge reads it at every scrape.
pub fn active_calls_by_kind(conn: &Connection) -> rusqlite::Result<[(&'static str, i64); 2]> {
    conn.query_row(
        "SELECT coalesce(sum(type = 'WEB_CALL'), 0), coalesce(sum(type = 'PHONE_CALL'), 0)
         FROM agent_runs WHERE status = 'in_progress'",
        [],
        |r| Ok([("web", r.get(0)?), ("phone", r.get(1)?)]),
    )
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
