//! `voxflow backup` and `voxflow restore`: whole-database copies an operator
//! can trust. A backup is one consistent snapshot taken with `VACUUM INTO`
//! from a read-only connection, so it runs beside a live server without
//! blocking its writers. A restore checks the file first, keeps the current
//! database as a backup, and swaps the file in with a rename.

use std::fs;
use std::path::{Path, PathBuf};

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
