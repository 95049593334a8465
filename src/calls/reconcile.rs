//! Phone runs checked against Twilio's own records: at start (a restart
//! must neither drop a call Twilio still holds nor leave one open that
//! ended meanwhile) and now and then while serving (a status callback that
//! never came). A run whose call SID is unknown (the server died, or Twilio
//! did not answer, between inserting the run and hearing the SID) is looked
//! up by number before anything dials that number again.

use std::time::Duration;

use rusqlite::Connection;

use super::store::{self, Disposition, Finish, LivePhoneRun, Measure, Outcome};
use super::twilio_hooks::outcome;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::providers::twilio::{self, CallInfo};

/// A run's call was never placed (found out by asking Twilio): the run is
/// closed as failed at no cost, and a campaign's contact is dialled again
/// without counting the attempt (the trigger `campaign_contact_outcome`).
pub const NOT_PLACED: &str = "not_placed";

/// How often the periodic pass runs, and how long a live call may be quiet
/// before it is looked up.
const PERIOD: Duration = Duration::from_secs(30);
const QUIET_SECS: u64 = 60;
/// Twilio's clock and ours may differ by this much when matching a call
/// found by number to the run that asked for it.
const CLOCK_SKEW_SECS: i64 = 120;

/// Ends a phone run with the outcome Twilio reports, and Twilio's
/// duration in seconds when given (0 otherwise), through `finish_run`:
/// only a run in progress changes, and the triggers bill it.
pub fn close(
    conn: &Connection,
    run_id: &str,
    outcome: Outcome,
    disposition: Disposition<'_>,
    duration: Option<u32>,
) -> rusqlite::Result<bool> {
    let finish = Finish {
        outcome,
        disposition,
        duration: Measure::Seconds(i64::from(duration.unwrap_or(0))),
    };
    Ok(store::finish_run(conn, run_id, &finish)?.is_some())
}

/// A run whose call never existed: failed, at no cost.
pub fn close_unplaced(
    conn: &Connection,
    run_id: &str,
    disposition: &str,
) -> rusqlite::Result<bool> {
    close(
        conn,
        run_id,
        Outcome::Failed,
        Disposition::Set(disposition),
        None,
    )
}

/// Closes `run_id` with what Twilio says of its ended call; `false` when the
/// call is still live (nothing changes then).
pub fn close_with(conn: &Connection, run_id: &str, call: &CallInfo) -> rusqlite::Result<bool> {
    match outcome(&call.status) {
        // A disposition recorded during the call is kept.
        Some((o, disposition)) => close(
            conn,
            run_id,
            o,
            Disposition::Unless(disposition),
            call.duration,
        ),
        None => Ok(false),
    }
}

/// What one look-up did to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The call is still live: the run stays open.
    Live,
    /// The call has ended: the run was closed with Twilio's figures.
    Ended,
    /// Twilio has no such call: the run was closed as not placed.
    NotPlaced,
    /// Twilio could not be asked (out of reach, no credentials): the run is
    /// left as it was, for the next pass.
    Unknown,
}

async fn write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    state.db.write(move |c| f(c).map_err(ApiError::from)).await
}

/// Looks one phone run up at Twilio and settles it.
pub async fn reconcile_run(state: &AppState, run: &LivePhoneRun) -> Result<Reconciled, ApiError> {
    let creds = super::phone::run_credentials(
        state,
        &run.owner,
        run.account_sid.as_deref(),
        run.key_source.as_deref(),
    )
    .await?;
    let Some((sid, token, from)) = creds else {
        tracing::warn!(run_id = %run.id, "no Twilio credentials to look a phone run up with");
        return Ok(Reconciled::Unknown);
    };
    let account = twilio::Account {
        base_url: &state.config.twilio_base_url,
        sid: &sid,
        token: &token,
    };
    let timeout = Duration::from_secs(state.config.provider_timeout_secs);
    let run_id = run.id.clone();
    if let Some(call_sid) = &run.call_sid {
        return match twilio::fetch_call(&state.http_client, &account, call_sid, timeout).await {
            Ok(call) if call.is_final() => {
                write(state, move |c| close_with(c, &run_id, &call)).await?;
                Ok(Reconciled::Ended)
            }
            Ok(_) => {
                write(state, move |c| store::touch(c, &run_id)).await?;
                Ok(Reconciled::Live)
            }
            Err(twilio::CallError::Refused { status: 404, .. }) => {
                write(state, move |c| close_unplaced(c, &run_id, "failed")).await?;
                Ok(Reconciled::NotPlaced)
            }
            Err(err) => {
                tracing::warn!(run_id = %run.id, error = %err, "cannot look a phone call up at Twilio");
                Ok(Reconciled::Unknown)
            }
        };
    }
    // No SID: was the call placed? Twilio is asked for the calls to this
    // number from this account's number since the run was created.
    let (Some(to), Some(from)) = (run.phone_number.clone(), from) else {
        return Ok(Reconciled::Unknown);
    };
    let Ok(created) = run.created_at.parse::<jiff::Timestamp>() else {
        return Ok(Reconciled::Unknown);
    };
    let since_date = created
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap_or(created)
        .strftime("%Y-%m-%d")
        .to_string();
    let found = match twilio::find_calls(
        &state.http_client,
        &account,
        &to,
        &from,
        &since_date,
        timeout,
    )
    .await
    {
        Ok(calls) => calls,
        Err(err) => {
            tracing::warn!(run_id = %run.id, error = %err, "cannot ask Twilio whether a call was placed");
            return Ok(Reconciled::Unknown);
        }
    };
    let earliest = created.as_second() - CLOCK_SKEW_SECS;
    let candidates: Vec<CallInfo> = found
        .into_iter()
        .filter(|c| c.to.as_deref() == Some(to.as_str()))
        .filter(|c| c.created_unix.is_some_and(|t| t >= earliest))
        .collect();
    write(state, move |c| {
        // The oldest call not already another run's is this run's: calls
        // are placed in the order their runs were created.
        let mut mine = None;
        for call in candidates.into_iter().rev() {
            if !store::call_sid_taken(c, &call.sid)? {
                mine = Some(call);
                break;
            }
        }
        match mine {
            Some(call) => {
                store::set_call_sid(c, &run_id, &call.sid)?;
                Ok(if close_with(c, &run_id, &call)? {
                    Reconciled::Ended
                } else {
                    Reconciled::Live
                })
            }
            None => {
                close_unplaced(c, &run_id, NOT_PLACED)?;
                Ok(Reconciled::NotPlaced)
            }
        }
    })
    .await
}

/// Reconciles the phone runs in progress: all of them (`stale` None, at
/// start) or the stale ones (see `store::live_phone_runs`). Returns how many were settled
/// each way, for the log.
pub async fn reconcile(
    state: &AppState,
    stale: Option<(u64, u64)>,
) -> Result<Vec<Reconciled>, ApiError> {
    let runs = state
        .db
        .read(move |c| store::live_phone_runs(c, stale).map_err(ApiError::from))
        .await?;
    let mut done = Vec::with_capacity(runs.len());
    for run in &runs {
        done.push(reconcile_run(state, run).await?);
    }
    Ok(done)
}

/// The look-ups at start: every phone run left in progress.
pub async fn at_start(state: &AppState) -> Result<usize, ApiError> {
    let done = reconcile(state, None).await?;
    let count = |k| done.iter().filter(|d| **d == k).count();
    if !done.is_empty() {
        tracing::info!(
            live = count(Reconciled::Live),
            ended = count(Reconciled::Ended),
            not_placed = count(Reconciled::NotPlaced),
            unknown = count(Reconciled::Unknown),
            "phone runs left in progress, checked with Twilio"
        );
    }
    Ok(done.len())
}

/// The look-ups at start, then the periodic pass, for as long as the
/// server runs (the caller aborts it). A run whose SID is unknown waits until its Twilio request has
/// certainly ended (the provider time-out) before it is looked up.
pub async fn run_periodically(state: AppState) {
    if let Err(err) = at_start(&state).await {
        tracing::warn!(%err, "cannot reconcile phone runs with Twilio at start");
    }
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let stale = (state.config.provider_timeout_secs + 5, QUIET_SECS);
    loop {
        ticks.tick().await;
        if let Err(err) = reconcile(&state, Some(stale)).await {
            tracing::warn!(%err, "cannot reconcile phone runs with Twilio");
        }
    }
}
