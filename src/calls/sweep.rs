//! Closing runs nobody will end: a browser closed mid-call, a server that
//! crashed. Such a run would stay `in_progress` for ever, blocking the
//! deletion of its agent; it is closed as failed, disposition `abandoned`
//! (failed runs cost no tokens).

use std::time::Duration;

use rusqlite::Connection;

use super::ABANDONED;
use crate::db::{Db, DbError};

/// Closes every run whose last activity is at least `idle_secs` old;
/// `0` closes every run in progress (at startup: they belong to the previous
/// process). Returns how many were closed. The duration recorded is the time
/// from the start to the last activity, in whole seconds (rounded to the
/// millisecond first: julianday differences are a hair off).
pub fn close_idle_runs(conn: &Connection, idle_secs: u64) -> rusqlite::Result<usize> {
    let idle = i64::try_from(idle_secs).unwrap_or(i64::MAX);
    conn.execute(
        "UPDATE agent_runs
         SET status = 'failed',
             disposition = ?2,
             completed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
             duration_seconds = max(0, CAST(round(
                 (julianday(coalesce(last_activity_at, created_at)) - julianday(created_at)) * 86400000
                 ) AS INTEGER) / 1000)
         WHERE status = 'in_progress' AND type = 'WEB_CALL'
           AND (julianday('now') - julianday(coalesce(last_activity_at, created_at))) * 86400 >= ?1",
        rusqlite::params![idle, ABANDONED],
    )
}

/// How often to look: often enough that a run closes soon after its idle
/// time is up, at most once a minute for long idle times.
pub fn period(idle_secs: u64) -> Duration {
    Duration::from_secs((idle_secs / 4).clamp(1, 60))
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
        assert_eq!(period(20), Duration::from_secs(5));
        assert_eq!(period(1800), Duration::from_secs(60));
    }
}
