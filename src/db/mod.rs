//! The SQLite connection layer.
//!
//! One writer connection lives on its own thread and takes every write; a few
//! read-only connections live on reader threads. Callers hand either side a
//! closure over a channel and await its answer, so no async worker thread ever
//! runs a SQLite call, and SQLite's single-writer rule becomes a queue instead
//! of `SQLITE_BUSY` errors.

pub mod backup;
pub mod cache;
pub mod changes;
pub mod health;
pub mod lock;
pub mod migrate;
pub mod verify;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use rusqlite::hooks::Action;
use rusqlite::{Connection, OpenFlags};

use changes::Changes;
use tokio::sync::oneshot;

/// How long a connection waits on a lock held by another process (an
/// operator's `sqlite3`, a `voxflow migrate` run) before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database worker stopped")]
    WorkerGone,
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the database is damaged: {}", .0.join("; "))]
    Damaged(Vec<String>),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A job that runs alone on the writer returns its answer unsent: the
/// writer sends it once it has marked the tables as changed (`changes`).
type AloneJob = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce() + Send>;

/// The most writes one commit carries, and the longest a batch keeps
/// taking more: enough to share one fsync among many concurrent requests,
/// small enough that the first write of a batch never waits long for it.
/// At 2 ms, 64 agent creates at once filled batches of about 18 before the
/// clock cut them; at 5 ms the commits are fewer and larger (`cargo bench
/// --bench load`, `create_agent` against `raw_sql_commit`: 0.84–1.03 in
/// six runs before, 1.01–1.03 after).
const MAX_BATCH_JOBS: usize = 64;
const MAX_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(5);

/// What the writer thread takes from its queue.
enum WriterJob {
    /// A write that runs inside the writer's batch transaction, in its own
    /// savepoint.
    Batched(Box<dyn BatchedWrite>),
    /// A job that manages its own transaction (or runs outside any: VACUUM
    /// INTO, checkpoints, migrations); it runs between batches.
    Alone(AloneJob),
}

/// Why a batch's writes were not made durable: kept as a code and a
/// message, so that each job of the batch gets its own copy of the error
/// (a `rusqlite::Error` cannot be cloned).
#[derive(Debug)]
struct BatchFailure {
    code: rusqlite::ffi::Error,
    message: String,
}

impl BatchFailure {
    fn from_sqlite(err: &rusqlite::Error) -> BatchFailure {
        match err {
            rusqlite::Error::SqliteFailure(code, message) => BatchFailure {
                code: *code,
                message: message.clone().unwrap_or_else(|| code.to_string()),
            },
            other => BatchFailure {
                code: rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> DbError {
        DbError::Sqlite(rusqlite::Error::SqliteFailure(
            self.code,
            Some(self.message.clone()),
        ))
    }
}

/// A write waiting in, or running inside, a batch. `run` runs it and keeps
/// its result; `answer` hands that result to its caller once the batch's
/// commit is decided, so that nobody hears "done" before the disk has it.
trait BatchedWrite: Send {
    /// Runs the write; true when it succeeded (its savepoint is kept).
    fn run(&mut self, conn: &mut Connection) -> bool;
    /// Answers the caller: its own error if it failed, else the batch's
    /// failure if the commit failed, else its result.
    fn answer(self: Box<Self>, commit: Result<(), &BatchFailure>);
}

struct Pending<T, E, F> {
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
    queued: Option<Queued>,
}

impl<T, E, F> BatchedWrite for Pending<T, E, F>
where
    F: FnOnce(&mut Connection) -> Result<T, E> + Send,
    T: Send,
    E: From<DbError> + Send,
{
    fn run(&mut self, conn: &mut Connection) -> bool {
        if let Some(queued) = self.queued.take() {
            queued.leave();
        }
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = f(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), &BatchFailure>) {
        let answer = match (self.result, commit) {
            (Some(Err(own)), _) => Err(own),
            (_, Err(failure)) => Err(E::from(failure.to_error())),
            (Some(Ok(value)), Ok(())) => Ok(value),
            // Not run, and yet no failure: cannot happen, as a batch only
            // answers jobs it ran or failed; said as an error all the same.
            (None, Ok(())) => Err(E::from(DbError::WorkerGone)),
        };
        let _ = self.reply.send(answer);
    }
}

/// Runs jobs on the writer connection: each batched write in its own
/// savepoint inside one transaction per batch, each lone job by itself.
/// Between jobs, and when idle, it looks for commits by other processes.
fn writer_loop(mut conn: Connection, jobs: mpsc::Receiver<WriterJob>, changes: Arc<Changes>) {
    let mut seen = data_version(&conn);
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv_timeout(changes::EXTERNAL_POLL) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    notice_other_writers(&conn, &mut seen, &changes);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        notice_other_writers(&conn, &mut seen, &changes);
        match job {
            WriterJob::Alone(job) => {
                let reply = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                // What it changed is unknown (a migration, a restore of
                // the vault): everything has.
                changes.publish_all();
                match reply {
                    Ok(reply) => reply(),
                    Err(_) => tracing::error!("a database job on the writer panicked"),
                }
            }
            WriterJob::Batched(first) => next = run_batch(&mut conn, first, &jobs, &changes),
        }
    }
}

/// The connection's `data_version`: it moves when another connection (in
/// this process only readers, which never write) commits.
fn data_version(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .ok()
}

fn notice_other_writers(conn: &Connection, seen: &mut Option<i64>, changes: &Changes) {
    let now = data_version(conn);
    if now != *seen {
        *seen = now;
        changes.publish_all();
    }
}

/// One group commit: takes `first` and whatever writes are already waiting
/// (up to the bounds), runs each in its own savepoint, commits once, then
/// answers all of them. Returns a lone job met in the queue, to run next.
fn run_batch(
    conn: &mut Connection,
    first: Box<dyn BatchedWrite>,
    jobs: &mpsc::Receiver<WriterJob>,
    changes: &Changes,
) -> Option<WriterJob> {
    let started = std::time::Instant::now();
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        first.answer(Err(&BatchFailure::from_sqlite(&err)));
        return None;
    }
    let mut ran: Vec<Box<dyn BatchedWrite>> = Vec::new();
    let mut job = first;
    let leftover = loop {
        if let Some(done) = run_in_savepoint(conn, job) {
            ran.push(done);
        }
        if conn.is_autocommit() {
            // The transaction ended under a job: SQLite rolls a whole
            // transaction back on some errors (SQLITE_FULL, IOERR, NOMEM),
            // taking the batch's earlier writes with it. They are answered
            // as failed, never as done.
            let failure = lost_batch(conn);
            changes.publish();
            for job in ran {
                job.answer(Err(&failure));
            }
            return None;
        }
        if ran.len() >= MAX_BATCH_JOBS || started.elapsed() >= MAX_BATCH_TIME {
            break None;
        }
        match jobs.try_recv() {
            Ok(WriterJob::Batched(more)) => job = more,
            Ok(alone) => break Some(alone),
            Err(_) => break None,
        }
    };
    let committed = conn.execute_batch("COMMIT").map_err(|err| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        BatchFailure::from_sqlite(&err)
    });
    metrics::histogram!("voxflow_db_writer_batch_jobs").record(ran.len() as f64);
    // Before anyone hears "done": a reader that has heard it must not be
    // served a cached value from before the write.
    changes.publish();
    for job in ran {
        job.answer(committed.as_ref().map(|_| ()));
    }
    leftover
}

/// Runs one write in its own savepoint: a failing write rolls back its own
/// changes and nothing else. Returns the job to answer after the commit, or
/// None when it was answered already or panicked (its caller then sees the
/// writer's answer dropped, as before batching).
fn run_in_savepoint(
    conn: &mut Connection,
    mut job: Box<dyn BatchedWrite>,
) -> Option<Box<dyn BatchedWrite>> {
    if let Err(err) = conn
        .prepare_cached("SAVEPOINT voxflow_job")
        .and_then(|mut s| s.execute([]))
    {
        job.answer(Err(&BatchFailure::from_sqlite(&err)));
        return None;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| job.run(conn)));
    if conn.is_autocommit() {
        // The savepoint went with the transaction (see run_batch).
        return outcome.is_ok().then_some(job);
    }
    let ended = match outcome {
        Ok(true) => conn
            .prepare_cached("RELEASE voxflow_job")
            .and_then(|mut s| s.execute([])),
        Ok(false) | Err(_) => conn
            .prepare_cached("ROLLBACK TO voxflow_job")
            .and_then(|mut s| s.execute([]))
            .and_then(|_| {
                conn.prepare_cached("RELEASE voxflow_job")
                    .and_then(|mut s| s.execute([]))
            }),
    };
    if let Err(err) = ended {
        tracing::error!(%err, "cannot close a write's savepoint");
    }
    match outcome {
        Ok(_) => Some(job),
        Err(_) => {
            tracing::error!("a database write panicked; its changes were rolled back");
            None
        }
    }
}

/// The error for writes whose batch transaction SQLite rolled back under
/// them. When the file has reached its size cap, it is the cap (SQLITE_FULL,
/// which callers report as full storage); otherwise an abort to retry.
fn lost_batch(conn: &Connection) -> BatchFailure {
    let at_cap = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) >= (SELECT max_page_count FROM pragma_max_page_count())",
            [],
            |r| r.get::<_, bool>(0),
        )
        .unwrap_or(false);
    let code = if at_cap {
        rusqlite::ffi::SQLITE_FULL
    } else {
        rusqlite::ffi::SQLITE_ABORT
    };
    BatchFailure {
        code: rusqlite::ffi::Error::new(code),
        message: "rolled back with its batch: a write beside it ended the transaction".into(),
    }
}

/// A cloneable handle to the writer and reader threads.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<WriterJob>,
    changes: Arc<Changes>,
    readers: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
}

/// A write waiting for the writer: counted in the queue-depth gauge from
/// its enqueueing until it starts, or until it is dropped unrun (the
/// writer gone), so the gauge never drifts.
struct Queued {
    since: std::time::Instant,
}

impl Queued {
    fn enter() -> Queued {
        metrics::gauge!("voxflow_db_writer_queue_depth").increment(1.0);
        Queued {
            since: std::time::Instant::now(),
        }
    }

    fn leave(self) {
        metrics::histogram!("voxflow_db_writer_wait_seconds")
            .record(self.since.elapsed().as_secs_f64());
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        metrics::gauge!("voxflow_db_writer_queue_depth").decrement(1.0);
    }
}

/// Opens a connection with the settings every VoxFlow connection shares.
/// `busy_timeout` comes first so that the pragmas below wait instead of failing
/// while another process holds the database.
pub fn open_connection(path: &Path, read_only: bool) -> Result<Connection, DbError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))?;
    if !read_only {
        // WAL is a property of the file: set once by a writer, readers inherit it.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before the client hears "done", so a crash
        // or power cut loses no acknowledged write.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The query planner stability guarantee: a statement keeps the plan it
    // was compiled with. Without it SQLite recompiles a statement at its
    // next step whenever a parameter the planner looked at (a LIMIT, an
    // indexed equality) gets a new value, which every cached statement of
    // the hot paths (a session lookup, a page of a list) does on each use:
    // the profile of `cargo bench --bench load` showed 17 % of the readers'
    // time in that recompilation.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// How many pages the WAL may hold before it is copied back into the
/// database: SQLite's own auto-checkpoint threshold.
const CHECKPOINT_PAGES: std::ffi::c_int = 1000;

/// Moves the WAL's checkpoints off the writer. SQLite's auto-checkpoint
/// runs inside the commit that crosses the threshold, on the writer's
/// thread, with an fsync of the database file: every write queued behind
/// that commit waits for it (7 % of the writer's time in the profile of
/// `create_agent`). Here the commit only signals a checkpointer thread,
/// which runs a PASSIVE checkpoint on its own connection: it copies what no
/// reader still needs and never blocks the writer. Registering the hook
/// turns SQLite's auto-checkpoint off on this connection.
fn checkpoint_beside(writer: &mut Connection, path: &Path) -> Result<(), DbError> {
    let checkpointer = open_connection(path, false)?;
    // One pending signal is enough: a checkpoint copies all there is.
    let (kick, kicked) = mpsc::sync_channel::<()>(1);
    writer.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            if pages >= CHECKPOINT_PAGES {
                let _ = kick.try_send(());
            }
            Ok(())
        },
    ))?;
    thread::Builder::new()
        .name("voxflow-db-checkpoint".into())
        .spawn(move || {
            // Ends when the writer's connection, and with it the hook, goes.
            while kicked.recv().is_ok() {
                if let Err(err) =
                    checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%err, "cannot checkpoint the WAL");
                }
            }
        })
        .map_err(|source| DbError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// Runs one job, surviving its panic: its caller sees a dropped answer,
/// everyone else carries on.
fn run_guarded(worker: &str, conn: &mut Connection, job: Job) {
    if catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
        tracing::error!(%worker, "a database job panicked");
    }
}

fn spawn_worker(name: String, mut conn: Connection, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let spawned = thread::Builder::new()
        .name(name.clone())
        .spawn(move || loop {
            let job = {
                let Ok(rx) = jobs.lock() else { return };
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            run_guarded(&name, &mut conn, job);
        });
    if let Err(err) = spawned {
        tracing::error!(%err, "cannot start a database thread");
    }
}

impl Db {
    /// Opens the database (creating its folder), with one writer thread and
    /// `readers` reader threads. Migrations are not applied here. With
    /// `max_bytes`, the writer refuses to grow the file beyond it
    /// (SQLITE_FULL, as on a full disk; never below its current size).
    pub fn open(path: &Path, readers: usize, max_bytes: Option<u64>) -> Result<Db, DbError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| DbError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        let mut writer_conn = open_connection(path, false)?;
        let changes = Arc::new(Changes::default());
        let seen = changes.clone();
        writer_conn.update_hook(Some(move |_: Action, _: &str, table: &str, _: i64| {
            seen.saw(table)
        }))?;
        if let Some(max) = max_bytes {
            // A per-connection setting: only the writer grows the file.
            let page_size: i64 = writer_conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = i64::try_from(max).unwrap_or(i64::MAX) / page_size.max(1);
            writer_conn.pragma_update(None, "max_page_count", pages)?;
        }
        checkpoint_beside(&mut writer_conn, path)?;
        let (writer, writer_rx) = mpsc::channel::<WriterJob>();
        thread::Builder::new()
            .name("voxflow-db-writer".into())
            .spawn({
                let changes = changes.clone();
                move || writer_loop(writer_conn, writer_rx, changes)
            })
            .map_err(|source| DbError::Io {
                path: path.to_path_buf(),
                source,
            })?;

        let (readers_tx, readers_rx) = mpsc::channel::<Job>();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for i in 0..readers.max(1) {
            let conn = open_connection(path, true)?;
            spawn_worker(format!("voxflow-db-reader-{i}"), conn, readers_rx.clone());
        }
        Ok(Db {
            writer,
            changes,
            readers: readers_tx,
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn run<T, E, F>(queue: &mpsc::Sender<Job>, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        queue.send(job).map_err(|_| E::from(DbError::WorkerGone))?;
        rx.await.map_err(|_| E::from(DbError::WorkerGone))?
    }

    /// Runs `f` on the writer connection, inside the writer's current batch
    /// transaction and in a savepoint of its own: an error from `f` rolls
    /// back what `f` wrote and nothing else; the answer comes once the
    /// commit holding the write is on disk. `f` must not BEGIN or COMMIT
    /// (it may nest savepoints, `Connection::savepoint`); what needs its
    /// own transaction goes through [`Db::write_alone`]. The writer is the
    /// one queue every write waits in, so its depth and each write's wait
    /// are measured.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            f: Some(f),
            result: None,
            reply,
            queued: Some(Queued::enter()),
        };
        self.writer
            .send(WriterJob::Batched(Box::new(pending)))
            .map_err(|_| E::from(DbError::WorkerGone))?;
        rx.await.map_err(|_| E::from(DbError::WorkerGone))?
    }

    /// Runs `f` on the writer connection by itself, between batches and
    /// outside any transaction: for migrations, `VACUUM INTO`, checkpoints
    /// and whatever opens its own transaction.
    pub async fn write_alone<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let queued = Queued::enter();
        let (tx, rx) = oneshot::channel();
        let job: AloneJob = Box::new(move |conn| {
            queued.leave();
            let result = f(conn);
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        self.writer
            .send(WriterJob::Alone(job))
            .map_err(|_| E::from(DbError::WorkerGone))?;
        rx.await.map_err(|_| E::from(DbError::WorkerGone))?
    }

    /// Runs `f` on one of the read-only connections.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        Self::run(&self.readers, f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending<T, F>(f: F) -> (Box<dyn BatchedWrite>, oneshot::Receiver<Result<T, DbError>>)
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Pending {
            f: Some(f),
            result: None,
            reply,
            queued: None,
        };
        (Box::new(job), rx)
    }

    fn insert(name: &'static str) -> impl FnOnce(&mut Connection) -> Result<i64, DbError> {
        move |c| {
            c.execute("INSERT INTO t (name) VALUES (?1)", [name])?;
            Ok(c.last_insert_rowid())
        }
    }

    fn fixture() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), false).unwrap();
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                             parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        (dir, conn)
    }

    fn names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT name FROM t ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_failing_write_rolls_back_only_itself_and_gets_its_own_error() {
        let (_dir, mut conn) = fixture();
        let (tx, rx) = mpsc::channel();
        let (first, a) = pending(insert("a"));
        // Writes one row, then fails on a duplicate: both must be undone.
        let (failing, b) = pending(|c| {
            c.execute("INSERT INTO t (name) VALUES ('half')", [])?;
            c.execute("INSERT INTO t (name) VALUES ('a')", [])?;
            Ok(0)
        });
        let (third, c) = pending(insert("c"));
        tx.send(WriterJob::Batched(failing)).unwrap();
        tx.send(WriterJob::Batched(third)).unwrap();

        assert!(run_batch(&mut conn, first, &rx, &Changes::default()).is_none());

        // One batch took all three (the queue is empty) and answered each.
        assert!(rx.try_recv().is_err());
        assert_eq!(a.blocking_recv().unwrap().unwrap(), 1);
        match b.blocking_recv().unwrap() {
            Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))) => {
                assert_eq!(e.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
            }
            other => panic!("the failing write got {other:?}"),
        }
        assert!(c.blocking_recv().unwrap().is_ok());
        assert!(conn.is_autocommit(), "the batch was committed");
        assert_eq!(names(&conn), ["a", "c"]);
    }

    #[test]
    fn a_failed_commit_fails_every_write_of_the_batch() {
        let (_dir, mut conn) = fixture();
        let (tx, rx) = mpsc::channel();
        let (first, a) = pending(insert("a"));
        // A deferred foreign key is checked at COMMIT only: the commit fails.
        let (dangling, b) = pending(|c| {
            c.execute("INSERT INTO t (name, parent) VALUES ('b', 42)", [])?;
            Ok(0)
        });
        tx.send(WriterJob::Batched(dangling)).unwrap();

        assert!(run_batch(&mut conn, first, &rx, &Changes::default()).is_none());

        for answer in [a.blocking_recv().unwrap(), b.blocking_recv().unwrap()] {
            match answer {
                Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))) => {
                    assert_eq!(e.code, rusqlite::ErrorCode::ConstraintViolation)
                }
                other => panic!("a write of the failed batch got {other:?}"),
            }
        }
        assert!(conn.is_autocommit(), "the failed batch was rolled back");
        assert!(names(&conn).is_empty());
    }

    #[test]
    fn a_lone_job_in_the_queue_ends_the_batch_and_runs_after_its_commit() {
        let (_dir, mut conn) = fixture();
        let (tx, rx) = mpsc::channel();
        let (first, a) = pending(insert("a"));
        let (later, b) = pending(insert("b"));
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        tx.send(WriterJob::Alone(Box::new(move |c: &mut Connection| {
            // Alone: outside any transaction, where BEGIN is allowed.
            let _ = seen_tx.send((c.is_autocommit(), names(c)));
            Box::new(|| ()) as Reply
        })))
        .unwrap();
        tx.send(WriterJob::Batched(later)).unwrap();

        let Some(WriterJob::Alone(job)) = run_batch(&mut conn, first, &rx, &Changes::default())
        else {
            panic!("the lone job was not handed back");
        };
        assert!(a.blocking_recv().unwrap().is_ok());
        job(&mut conn)();
        assert_eq!(seen_rx.recv().unwrap(), (true, vec!["a".to_string()]));
        let Ok(WriterJob::Batched(later)) = rx.try_recv() else {
            panic!("the write after the lone job was lost");
        };
        assert!(run_batch(&mut conn, later, &rx, &Changes::default()).is_none());
        assert!(b.blocking_recv().unwrap().is_ok());
    }

    #[test]
    fn a_panicking_write_rolls_back_and_its_neighbours_commit() {
        let (_dir, mut conn) = fixture();
        let (tx, rx) = mpsc::channel();
        let (first, a) = pending(insert("a"));
        let (panics, b) = pending(|c| -> Result<i64, DbError> {
            c.execute("INSERT INTO t (name) VALUES ('p')", [])?;
            panic!("a bug in a write");
        });
        tx.send(WriterJob::Batched(panics)).unwrap();
        assert!(run_batch(&mut conn, first, &rx, &Changes::default()).is_none());
        assert!(a.blocking_recv().unwrap().is_ok());
        assert!(b.blocking_recv().is_err(), "its answer was dropped");
        assert_eq!(names(&conn), ["a"]);
    }

    #[tokio::test]
    async fn a_write_marks_its_tables_changed_before_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1, None).unwrap();
        db.write_alone(|c| {
            c.execute_batch("CREATE TABLE t (name TEXT); CREATE TABLE u (name TEXT);")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        let (t, u) = (db.changes.watch("t"), db.changes.watch("u"));
        let (t0, u0) = (t.get(), u.get());
        db.write(|c| {
            c.execute("INSERT INTO t VALUES ('a')", [])
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        assert_eq!((t.get(), u.get()), (t0 + 1, u0), "only t, and already");

        // Another process's commit: noticed by the idle writer's poll.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        other.execute("INSERT INTO u VALUES ('b')", []).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while u.get() == u0 {
            assert!(std::time::Instant::now() < deadline, "never noticed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_into_the_database_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, 1, None).unwrap();
        db.write_alone(|c| {
            c.execute_batch("CREATE TABLE t (v BLOB)")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        // About 3,000 pages of 4 KiB, written in 300 commits.
        for _ in 0..300 {
            db.write(|c| {
                for _ in 0..10 {
                    c.execute("INSERT INTO t VALUES (zeroblob(4000))", [])?;
                }
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
        }
        // Only a checkpoint moves pages from the WAL into the file itself.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < 4_000_000 {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
