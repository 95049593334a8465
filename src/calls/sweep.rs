//! Closing web calls nobody will end: a browser closed mid-call, a server
//! that stopped. Such a run would stay `in_progress` for ever, blocking the
//! deletion of its agent and a concurrent-call slot. The call took place, so
//! it is closed as `completed` (disposition `abandoned`) and billed for the
//! time from its start to its last activity: the silence after the last
//! message is nobody's call. Phone calls are not swept here: Twilio's status
//! callback ends them, and the restart reconciliation asks Twilio about the
//! ones a stopped server left behind.

use std::time::Duration;

use rusqlite::Connection;

use super::store::{self, Disposition, Finish, Measure, Outcome};
use super::{ABANDONED, MAX_DURATION};
use crate::db::{Db, DbError};

/// Closes every web call whose last activity is at least `idle_secs` old;
/// `0` closes every web call in progress (at startup: they belong to the
/// previous process). Each goes through `store::finish_run`, so each is
/// billed like any completed call. Returns how many were closed.
pub fn close_idle_runs(conn: &mut Connection, idle_secs: u64) -> rusqlite::Result<usize> {
    let idle = i64::try_from(idle_secs).unwrap_or(i64::MAX);
    // One transaction: a message landing between the look and the close
    // cannot have its run closed under it.
    let tx = conn.savepoint()?;
    let idle_runs: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM agent_runs
             WHERE status = 'in_progress' AND type = 'WEB_CALL'
               AND (julianday('now') - julianday(coalesce(last_activity_at, created_at))) * 86400 >= ?1",
        )?
        .query_map([idle], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let finish = Finish {
        outcome: Outcome::Completed,
        disposition: Disposition::Set(ABANDONED),
        duration: Measure::UntilLastActivity,
    };
    let mut closed = 0;
    for run_id in &idle_runs {
        if store::finish_run(&tx, run_id, &finish)?.is_some() {
            closed += 1;
        }
    }
    // Web calls that reached their agent's time limit are ended there and
    // billed for exactly the limit (phone calls: Twilio's TimeLimit).
    let over: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT r.id, a.max_call_seconds FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE r.status = 'in_progress' AND r.type = 'WEB_CALL'
               AND (julianday('now') - julianday(r.created_at)) * 86400 >= a.max_call_seconds",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (run_id, limit) in &over {
        let finish = Finish {
            outcome: Outcome::Completed,
            disposition: Disposition::Set(MAX_DURATION),
            duration: Measure::Seconds(*limit),
        };
        if store::finish_run(&tx, run_id, &finish)?.is_some() {
            closed += 1;
        }
    }
    tx.commit()?;
    Ok(closed)
}

/// How often to look: often enough that a run closes soon after its idle
/// time or its agent's time limit is up (every 5 s at most: one indexed
/// query over the calls in progress).
pub fn period(idle_secs: u64) -> Duration {
    Duration::from_secs((idle_secs / 4).clamp(1, 5))
}

/// Runs `close_idle_runs` every `period(idle_secs)`, for as long as the
/// server runs (the caller aborts the task).
pub async fn run_periodically(db: Db, idle_secs: u64) {
    let mut ticks = tokio::time::interval(period(idle_secs));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and startup has just swept.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let closed = db
            .write(move |c| close_idle_runs(c, idle_secs).map_err(DbError::from))
            .await;
        match closed {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, idle_secs, "closed abandoned runs"),
            Err(err) => tracing::warn!(%err, "cannot close abandoned runs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_follows_the_idle_time_within_bounds() {
        assert_eq!(period(1), Duration::from_secs(1));
        assert_eq!(period(12), Duration::from_secs(3));
        assert_eq!(period(1800), Duration::from_secs(5));
    }
}
