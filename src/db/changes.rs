//! Which tables have changed, for caches of what readers read.
//!
//! Every table someone watches has a counter. SQLite's update hook tells
//! the writer connection which tables each of its writes touched (triggers'
//! writes included); once the commit holding them is decided, and before
//! any of its writers hears "done", the writer bumps those tables'
//! counters. A value read while a table's counter stood at `n` is therefore
//! current for as long as the counter still reads `n`, and a client that
//! has seen its write acknowledged never reads the value from before it.
//!
//! Writes the hook cannot see bump every counter: a job that runs alone
//! (migrations, restores of the vault, its own transactions), and commits
//! by another process (`voxflow admin reset-password`, an operator's
//! `sqlite3`), which the writer notices through `PRAGMA data_version`
//! before each job and at least every [`EXTERNAL_POLL`] when idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How soon an idle writer notices another process's commit.
pub const EXTERNAL_POLL: Duration = Duration::from_millis(250);

/// A watched table's change counter.
#[derive(Clone)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Default)]
pub struct Changes {
    watched: Mutex<HashMap<String, Epoch>>,
    /// The watched tables the writes since the last commit touched.
    touched: Mutex<Vec<Epoch>>,
}

impl Changes {
    /// The counter of `table` (registered on first use).
    pub fn watch(&self, table: &str) -> Epoch {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched
            .entry(table.to_ascii_lowercase())
            .or_insert_with(|| Epoch(Arc::default()))
            .clone()
    }

    /// From the update hook: a row of `table` changed.
    pub(super) fn saw(&self, table: &str) {
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = if table.bytes().any(|b| b.is_ascii_uppercase()) {
            watched.get(&table.to_ascii_lowercase())
        } else {
            watched.get(table)
        };
        if let Some(epoch) = epoch {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            if !touched.iter().any(|t| Arc::ptr_eq(&t.0, &epoch.0)) {
                touched.push(epoch.clone());
            }
        }
    }

    /// After a commit (or a rollback: a needless bump costs a cache miss,
    /// a missed one a stale answer): the touched tables have changed.
    pub(super) fn publish(&self) {
        let touched =
            std::mem::take(&mut *self.touched.lock().unwrap_or_else(PoisonError::into_inner));
        for epoch in touched {
            epoch.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// After a change the hook may not have seen: every table has changed.
    pub(super) fn publish_all(&self) {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for epoch in self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            epoch.0.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_touched_tables_change_and_only_when_published() {
        let changes = Changes::default();
        let (agents, users) = (changes.watch("agents"), changes.watch("Users"));
        changes.saw("agents");
        changes.saw("agents");
        changes.saw("agent_runs");
        assert_eq!((agents.get(), users.get()), (0, 0), "not before the commit");
        changes.publish();
        assert_eq!((agents.get(), users.get()), (1, 0));
        changes.saw("USERS");
        changes.publish();
        assert_eq!((agents.get(), users.get()), (1, 1));
        changes.publish_all();
        assert_eq!((agents.get(), users.get()), (2, 2));
    }
}
