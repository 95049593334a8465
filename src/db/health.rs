//! The database's own health, at start and at stop: `PRAGMA quick_check`
//! before serving a file, and a full checkpoint on a graceful stop so that
//! `voxflow.db` alone is the whole database afterwards.

use std::path::Path;

use rusqlite::{Connection, ErrorCode};

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
