//! `voxflow backup` and `voxflow restore`: whole-database copies an operator
//! can trust. A backup is one consistent snapshot taken with `VACUUM INTO`
//! from a read-only connection, so it runs beside a live server without
//! blocking its writers. A restore checks the file first, keeps the current
//! database as a backup, and swaps the file in with a rename.
//!
//! `serve --backup-every` takes the same backups on a schedule
//! (`run_periodically`), keeping the newest `--backup-keep`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

use super::{migrate, open_connection, DbError};

/// Copies the database at `db` to `to`, or into `backup_dir` under a
/// timestamped name, and returns the path written.
pub fn backup(db: &Path, backup_dir: &Path, to: Option<&Path>) -> Result<PathBuf, DbError> {
    let conn = open_connection(db, true)?;
    match to {
        Some(path) => {
            if path.exists() {
                return Err(DbError::Migration(format!(
                    "{} exists already; name a new file",
                    path.display()
                )));
            }
            conn.execute("VACUUM INTO ?1", [path.to_string_lossy().as_ref()])?;
            migrate::record_backup(path);
            Ok(path.to_path_buf())
        }
        None => migrate::backup(&conn, backup_dir, "manual"),
    }
}

/// Why a file is not a VoxFlow database this binary can restore, if it is not.
fn check_restorable(file: &Path) -> Result<i32, String> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open it as SQLite: {e}"))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("not a readable SQLite database: {e}"))?;
    if integrity != "ok" {
        return Err(format!("integrity check failed: {integrity}"));
    }
    let version = migrate::current_version(&conn).map_err(|e| e.to_string())?;
    if version == 0 {
        return Err("it holds no VoxFlow schema (no migration history)".into());
    }
    if version > migrate::latest_version() {
        return Err(format!(
            "it is at schema version {version}, newer than this binary ({})",
            migrate::latest_version()
        ));
    }
    Ok(version)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub version: i32,
    /// The database that was replaced, kept as a backup.
    pub previous: Option<PathBuf>,
}

/// Replaces the database at `db` with `file`. The caller holds the data
/// folder's exclusive lock (no server runs). The current database is first
/// copied into `backup_dir`; the new file is copied beside `db`, flushed,
/// and renamed over it, so a crash leaves either the old or the new database.
pub fn restore(db: &Path, backup_dir: &Path, file: &Path) -> Result<Restored, DbError> {
    let version = check_restorable(file).map_err(|why| {
        DbError::Migration(format!("{} cannot be restored: {why}", file.display()))
    })?;
    let previous = if db.exists() {
        let conn = open_connection(db, false)?;
        let kept = migrate::backup(&conn, backup_dir, "before-restore")?;
        // Folds the WAL into the file and empties it, so no stale WAL frames
        // can be replayed over the restored database.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        drop(conn);
        Some(kept)
    } else {
        None
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DbError::Io { path, source }
    };
    let staged = db.with_extension("db.restoring");
    fs::copy(file, &staged).map_err(io(&staged))?;
    fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io(&staged))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            fs::remove_file(&side).map_err(io(&side))?;
        }
    }
    fs::rename(&staged, db).map_err(io(db))?;
    if let Some(dir) = db.parent() {
        // The rename is durable once the folder's entry is on disk.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(Restored { version, previous })
}

/// The label in the names of scheduled backups
/// (`voxflow-20260102T030405Z-scheduled.db`); only these are pruned, never
/// a manual or pre-migration backup.
const SCHEDULED: &str = "scheduled";

fn is_scheduled(name: &str) -> bool {
    name.starts_with("voxflow-")
        && (name.ends_with(&format!("-{SCHEDULED}.db"))
            || name
                .strip_suffix(".db")
                .and_then(|n| n.rsplit_once(&format!("-{SCHEDULED}-")))
                .is_some_and(|(_, n)| n.parse::<u32>().is_ok()))
}

/// The scheduled backups in `dir`, oldest first (their names sort by time).
fn scheduled_backups(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_scheduled)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Takes one scheduled backup of `db` into `dir` and removes the oldest
/// scheduled ones beyond `keep`. The copy is written under a `.partial`
/// name and renamed when complete, so a backup cut short (a full disk, a
/// crash) never looks like a good one. Runs on a read-only connection of
/// its own (`VACUUM INTO` reads one snapshot): the server's writer goes on
/// meanwhile.
pub fn scheduled(db: &Path, dir: &Path, keep: usize) -> Result<PathBuf, DbError> {
    fs::create_dir_all(dir).map_err(|source| DbError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let conn = open_connection(db, true)?;
    let stamp: String =
        conn.query_row("SELECT strftime('%Y%m%dT%H%M%SZ', 'now')", [], |r| r.get(0))?;
    let mut path = dir.join(format!("voxflow-{stamp}-{SCHEDULED}.db"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("voxflow-{stamp}-{SCHEDULED}-{n}.db"));
    }
    let partial = path.with_extension("db.partial");
    let _ = fs::remove_file(&partial);
    let copied = conn
        .execute("VACUUM INTO ?1", [partial.to_string_lossy().as_ref()])
        .map_err(DbError::from)
        .and_then(|_| {
            fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .and_then(|()| fs::rename(&partial, &path))
                .map_err(|source| DbError::Io {
                    path: path.clone(),
                    source,
                })
        });
    if let Err(err) = copied {
        let _ = fs::remove_file(&partial);
        return Err(err);
    }
    migrate::record_backup(&path);
    let all = scheduled_backups(dir);
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        if let Err(err) = fs::remove_file(old) {
            tracing::warn!(%err, file = %old.display(), "cannot remove an old backup");
        }
    }
    Ok(path)
}

/// How long after a failed scheduled backup the next one is tried, at
/// most (a full disk freed, say).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(600);

/// Takes a backup every `every` while the server runs. The first is due
/// `every` after the newest scheduled backup already in `dir` (at once when
/// there is none), so restarts do not postpone backups forever.
pub async fn run_periodically(db: PathBuf, dir: PathBuf, every: Duration, keep: usize) {
    let newest = scheduled_backups(&dir)
        .last()
        .and_then(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    let mut wait = newest
        .and_then(|t| (t + every).duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    loop {
        tokio::time::sleep(wait).await;
        let (db, dir) = (db.clone(), dir.clone());
        let taken = tokio::task::spawn_blocking(move || scheduled(&db, &dir, keep)).await;
        wait = every;
        match taken {
            Ok(Ok(path)) => tracing::info!(file = %path.display(), "scheduled backup written"),
            Ok(Err(err)) => {
                metrics::counter!("voxflow_backup_failures_total").increment(1);
                tracing::error!(%err, "scheduled backup failed");
                wait = every.min(RETRY_AFTER_FAILURE);
            }
            Err(err) => tracing::error!(%err, "scheduled backup did not finish"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_scheduled;

    #[test]
    fn only_scheduled_backups_are_pruned() {
        assert!(is_scheduled("voxflow-20260102T030405Z-scheduled.db"));
        assert!(is_scheduled("voxflow-20260102T030405Z-scheduled-2.db"));
        for kept in [
            "voxflow-20260102T030405Z-manual.db",
            "voxflow-20260102T030405Z-before-v3-to-v4.db",
            "voxflow-20260102T030405Z-scheduled.db.partial",
            "voxflow-20260102T030405Z-scheduled-x.db",
            "notes.txt",
        ] {
            assert!(!is_scheduled(kept), "{kept}");
        }
    }
}
