//! A bounded cache of values read from a few tables, each entry good while
//! none of those tables has changed since it was read (see `changes`),
//! and, when the value says so, until a deadline of its own.
//!
//! Hot reads (a request's session, a tenant's agent list) otherwise cost a
//! hop to a reader thread and a few SQLite statements on every request:
//! the profile of `cargo bench --bench load` put that at most of a
//! request's time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::changes::Epoch;
use super::Db;

/// The watched tables' counters summed when a read began. Counters only
/// grow, so an equal sum later means none of them moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

struct Entry<V> {
    stamp: Stamp,
    until: Option<Instant>,
    value: V,
}

pub struct ReadCache<K, V> {
    /// `voxflow_cache_lookups_total` of this cache, by outcome: the
    /// handles are kept rather than looked up by label on every request.
    hits: metrics::Counter,
    misses: metrics::Counter,
    tables: Vec<Epoch>,
    capacity: usize,
    entries: RwLock<HashMap<K, Entry<V>>>,
}

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// A cache named `name` (in the metrics) of values read from `tables`,
    /// holding at most `capacity` of them. Made after the metrics recorder
    /// is installed (`voxflow::start` installs it first), or its lookups
    /// are not counted.
    pub fn new(db: &Db, name: &'static str, tables: &[&str], capacity: usize) -> Self {
        let lookups = |outcome: &'static str| metrics::counter!("voxflow_cache_lookups_total", "cache" => name, "outcome" => outcome);
        ReadCache {
            hits: lookups("hit"),
            misses: lookups("miss"),
            tables: tables.iter().map(|t| db.changes.watch(t)).collect(),
            capacity,
            entries: RwLock::default(),
        }
    }

    /// Taken before reading the value to cache: a change committed while
    /// the read runs then leaves the entry already stale, never current.
    pub fn stamp(&self) -> Stamp {
        Stamp(
            self.tables
                .iter()
                .map(Epoch::get)
                .fold(0, u64::wrapping_add),
        )
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let stamp = self.stamp();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let hit = entries
            .get(key)
            .filter(|e| e.stamp == stamp && e.until.is_none_or(|u| Instant::now() < u))
            .map(|e| e.value.clone());
        if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .increment(1);
        hit
    }

    /// Keeps `value`, read after `stamp` was taken, for at most `fresh_for`
    /// when given. When full, stale entries go first, then all of them.
    pub fn put(&self, key: K, stamp: Stamp, value: V, fresh_for: Option<Duration>) {
        let now = self.stamp();
        if stamp != now {
            return;
        }
        let until = fresh_for.map(|d| Instant::now() + d);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let at = Instant::now();
            entries.retain(|_, e| e.stamp == now && e.until.is_none_or(|u| at < u));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                stamp,
                until,
                value,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbError;

    #[tokio::test]
    async fn an_entry_lasts_until_its_tables_change_or_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1, None).unwrap();
        db.write_alone(|c| {
            c.execute_batch("CREATE TABLE t (v TEXT); CREATE TABLE other (v TEXT);")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        let cache: ReadCache<&str, i32> = ReadCache::new(&db, "test", &["t"], 2);
        let insert = |table: &'static str| {
            let db = db.clone();
            async move {
                db.write(move |c| {
                    c.execute(&format!("INSERT INTO {table} VALUES ('x')"), [])
                        .map_err(DbError::from)
                })
                .await
                .unwrap();
            }
        };

        let stamp = cache.stamp();
        cache.put("a", stamp, 1, None);
        assert_eq!(cache.get(&"a"), Some(1));
        insert("other").await;
        assert_eq!(cache.get(&"a"), Some(1), "another table's write keeps it");
        insert("t").await;
        assert_eq!(cache.get(&"a"), None, "its table's write retires it");

        // A value read across a change is never kept as current.
        let before = cache.stamp();
        insert("t").await;
        cache.put("b", before, 2, None);
        assert_eq!(cache.get(&"b"), None);

        let stamp = cache.stamp();
        cache.put("c", stamp, 3, Some(Duration::from_millis(30)));
        assert_eq!(cache.get(&"c"), Some(3));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"c"), None, "past its deadline");

        // Bounded: a full cache drops what is stale, then everything.
        let stamp = cache.stamp();
        for (k, v) in [("d", 4), ("e", 5), ("f", 6)] {
            cache.put(k, stamp, v, None);
        }
        let entries = cache.entries.read().unwrap();
        assert!(entries.len() <= 2, "{} entries", entries.len());
    }
}
