//! Schema migrations: refinery applies the embedded `migrations_sqlite/V*`
//! scripts; rolling back runs the embedded `migrations_sqlite/down/N__*.sql`
//! scripts, which refinery has no notion of.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::DbError;

mod embedded {
    refinery::embed_migrations!("migrations_sqlite");
}

static DOWN_SCRIPTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations_sqlite/down");

const HISTORY_TABLE: &str = "refinery_schema_history";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: i32,
    pub name: String,
    /// When it was applied (RFC 3339), or `None` while pending.
    pub applied_on: Option<String>,
}

/// What `up` did.
#[derive(Debug, Default)]
pub struct UpReport {
    pub applied: Vec<(i32, String)>,
    /// The copy written before migrating a database that held data.
    pub backup: Option<PathBuf>,
}

/// The newest version this binary knows.
pub fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

fn migration_error(err: refinery::Error) -> DbError {
    DbError::Migration(err.to_string())
}

fn history_exists(conn: &Connection) -> Result<bool, DbError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [HISTORY_TABLE],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The highest applied version, 0 for an empty database.
pub fn current_version(conn: &Connection) -> Result<i32, DbError> {
    if !history_exists(conn)? {
        return Ok(0);
    }
    Ok(conn.query_row(
        &format!("SELECT coalesce(max(version), 0) FROM {HISTORY_TABLE}"),
        [],
        |row| row.get(0),
    )?)
}

/// Every version this binary knows, applied or pending, oldest first.
pub fn status(conn: &Connection) -> Result<Vec<MigrationState>, DbError> {
    let mut applied = std::collections::HashMap::new();
    if history_exists(conn)? {
        let mut stmt = conn.prepare(&format!("SELECT version, applied_on FROM {HISTORY_TABLE}"))?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, i32>(0)?, row.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (version, on) = row?;
            applied.insert(version, on);
        }
    }
    let mut out: Vec<MigrationState> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| MigrationState {
            version: m.version(),
            name: m.name().to_string(),
            applied_on: applied.get(&m.version()).cloned(),
        })
        .collect();
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// True when any table other than refinery's own holds a row, i.e. a backup
/// is worth taking before changing the schema.
fn has_data(conn: &Connection) -> Result<bool, DbError> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> ?1",
        )?
        .query_map([HISTORY_TABLE], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for table in tables {
        let quoted = table.replace('"', "\"\"");
        let found: Option<i64> = conn
            .query_row(&format!("SELECT 1 FROM \"{quoted}\" LIMIT 1"), [], |row| {
                row.get(0)
            })
            .optional()?;
        if found.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes a consistent copy of the database into `dir` with `VACUUM INTO`,
/// which reads one snapshot and so never blocks other readers. `label` ends up
/// in the file name.
pub fn backup(conn: &Connection, dir: &Path, label: &str) -> Result<PathBuf, DbError> {
    std::fs::create_dir_all(dir).map_err(|source| DbError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let stamp: String =
        conn.query_row("SELECT strftime('%Y%m%dT%H%M%SZ', 'now')", [], |r| r.get(0))?;
    let mut path = dir.join(format!("voxflow-{stamp}-{label}.db"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("voxflow-{stamp}-{label}-{n}.db"));
    }
    conn.execute("VACUUM INTO ?1", [path.to_string_lossy().as_ref()])?;
    record_backup(&path);
    Ok(path)
}

/// Tells the metrics when a backup was written and how large it is, so an
/// operator can alert on backups that stopped.
pub fn record_backup(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        // u64 → f64 loses nothing below 2^53 bytes.
        metrics::gauge!("voxflow_backup_last_size_bytes").set(meta.len() as f64);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("voxflow_backup_last_timestamp_seconds").set(now);
}

/// Applies every pending migration in one transaction, after a backup into
/// `backup_dir` when the database already holds data. Refinery's default runs
/// each script and its history row in separate transactions, so a crash
/// between the two would leave a schema change it does not know about;
/// grouped, a crash leaves either all or nothing.
pub fn up(conn: &mut Connection, backup_dir: &Path) -> Result<UpReport, DbError> {
    let current = current_version(conn)?;
    let pending = latest_version() > current;
    let mut report = UpReport::default();
    if !pending {
        return Ok(report);
    }
    if has_data(conn)? {
        report.backup = Some(backup(
            conn,
            backup_dir,
            &format!("before-v{current}-to-v{}", latest_version()),
        )?);
    }
    let done = embedded::migrations::runner()
        .set_grouped(true)
        .run(conn)
        .map_err(migration_error)?;
    report.applied = done
        .applied_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_string()))
        .collect();
    Ok(report)
}

fn down_script(version: i32) -> Option<&'static str> {
    DOWN_SCRIPTS.files().find_map(|f| {
        let name = f.path().file_name()?.to_str()?;
        let (v, _) = name.split_once("__")?;
        if v.parse::<i32>().ok()? == version {
            f.contents_utf8()
        } else {
            None
        }
    })
}

/// Rolls back to version `to`, newest first, each version in its own
/// transaction together with the removal of its history row, so a crash
/// leaves the database at a version it can name. Returns the versions undone.
pub fn down(conn: &mut Connection, to: i32) -> Result<Vec<i32>, DbError> {
    let current = current_version(conn)?;
    if to < 0 || to > latest_version() {
        return Err(DbError::Migration(format!(
            "cannot roll back to version {to}: versions run from 0 to {}",
            latest_version()
        )));
    }
    let mut applied: Vec<i32> = status(conn)?
        .into_iter()
        .filter(|m| m.applied_on.is_some() && m.version > to)
        .map(|m| m.version)
        .collect();
    applied.sort_unstable_by(|a, b| b.cmp(a));
    if current > latest_version() {
        return Err(DbError::Migration(format!(
            "the database is at version {current}, newer than this binary ({}); use the newer binary",
            latest_version()
        )));
    }
    let mut undone = Vec::new();
    for version in applied {
        let script = down_script(version)
            .ok_or_else(|| DbError::Migration(format!("no down script for version {version}")))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(script)?;
        tx.execute(
            &format!("DELETE FROM {HISTORY_TABLE} WHERE version = ?1"),
            [version],
        )?;
        tx.commit()?;
        undone.push(version);
    }
    Ok(undone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_a_down_script() {
        for m in embedded::migrations::runner().get_migrations() {
            assert!(
                down_script(m.version()).is_some(),
                "version {}",
                m.version()
            );
        }
    }
}
