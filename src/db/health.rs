//! The database's own health, at start, while serving and at stop: `PRAGMA
//! quick_check` before serving a file, a periodic check behind
//! `/health/readiness` (`watch`), and a full checkpoint on a graceful stop
//! so that `voxflow.db` alone is the whole database afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::{Db, DbError};

/// What `PRAGMA quick_check` found wrong: empty when the file is sound.
/// A file too damaged to be read at all is one problem, its error.
pub fn quick_check(conn: &Connection) -> Vec<String> {
    let found = conn.prepare("PRAGMA quick_check").and_then(|mut s| {
        s.query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    });
    match found {
        Ok(rows) if rows == ["ok"] => Vec::new(),
        Ok(rows) => rows,
        Err(err) => vec![err.to_string()],
    }
}

/// Whether an error says the file is damaged or not a database at all.
pub fn is_damage(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Folds the write-ahead log into the database file and empties it.
pub fn checkpoint(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// A database that is missing or empty (zero bytes).
pub fn is_missing_or_empty(db: &Path) -> bool {
    std::fs::metadata(db).map_or(true, |m| m.len() == 0)
}

/// What the last periodic check found: `None` while it passes.
#[derive(Debug, Default)]
pub struct Readiness {
    problem: Mutex<Option<String>>,
}

impl Readiness {
    /// Why the server is not ready, when it is not.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().map_or_else(
            |_| Some("the readiness state is unreadable".into()),
            |p| p.clone(),
        )
    }

    fn set(&self, problem: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }
}

/// The probe file's size: a write that fits in this much is the least the
/// server must be able to store. A full disk, a read-only remount or a
/// quota fails it.
const PROBE_BYTES: usize = 256 * 1024;

/// How long the writer and the readers may take to answer a probe before
/// the check fails (a stuck writer is as unready as a full disk).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA quick_check` reads the whole file: it runs on every
/// `QUICK_CHECK_EVERY`th check only (the start ran one already), the cheap
/// probes on every one.
const QUICK_CHECK_EVERY: u64 = 10;

/// Writes, flushes and removes a small file in the data folder.
fn probe_storage(dir: &Path) -> Result<(), String> {
    let path: PathBuf = dir.join(".voxflow-readiness-probe");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    // Removed whether or not the write went through: a partial probe file
    // must not keep the space it got.
    let _ = std::fs::remove_file(&path);
    // No path in the text: `/health/readiness` shows it to anyone.
    written.map_err(|e| format!("cannot write to the data folder: {e}"))
}

/// One check: storage, the writer (a write transaction begun and rolled
/// back) and, when `thorough`, `PRAGMA quick_check` on a reader.
async fn check(db: &Db, dir: &Path, thorough: bool) -> Option<String> {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || probe_storage(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => return Some(problem),
        Err(_) => return Some("the storage probe did not finish".into()),
    }
    // Alone, not batched: a batch is already inside a transaction, and the
    // probe must show that the writer can take the write lock itself.
    let writer = db.write_alone(|c| {
        c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(DbError::from)
    });
    match tokio::time::timeout(PROBE_TIMEOUT, writer).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Some(format!("the database refuses a write: {err}")),
        Err(_) => return Some("the database writer does not answer".into()),
    }
    if thorough {
        let problems = db.read(|c| Ok::<_, DbError>(quick_check(c)));
        match tokio::time::timeout(PROBE_TIMEOUT * 12, problems).await {
            Ok(Ok(p)) if p.is_empty() => {}
            Ok(Ok(p)) => {
                return Some(format!(
                    "PRAGMA quick_check: {}",
                    p.into_iter().take(5).collect::<Vec<_>>().join("; ")
                ))
            }
            Ok(Err(err)) => return Some(format!("the database cannot be read: {err}")),
            Err(_) => return Some("PRAGMA quick_check does not finish".into()),
        }
    }
    None
}

/// Checks the database every `every` while the server runs, and keeps
/// `readiness` up to date: `/health/readiness` answers 503 while a check
/// fails and 200 again once one passes. A damaged file found here stays
/// unready until a later quick check passes (after a restore).
pub async fn watch(db: Db, dir: PathBuf, every: Duration, readiness: Arc<Readiness>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut damaged = false;
    for n in 0u64.. {
        tick.tick().await;
        let thorough = damaged || n % QUICK_CHECK_EVERY == QUICK_CHECK_EVERY - 1;
        let problem = check(&db, &dir, thorough).await;
        if thorough {
            damaged = problem
                .as_deref()
                .is_some_and(|p| p.starts_with("PRAGMA quick_check"));
        }
        match (&problem, readiness.problem()) {
            (Some(p), None) => tracing::warn!(problem = %p, "not ready"),
            (None, Some(_)) => tracing::info!("ready again"),
            _ => {}
        }
        readiness.set(problem);
    }
}
