//! The SQLite connection layer.
//!
//! One writer connection lives on its own thread and takes every write; a few
//! read-only connections live on reader threads. Callers hand either side a
//! closure over a channel and await its answer, so no async worker thread ever
//! runs a SQLite call, and SQLite's single-writer rule becomes a queue instead
//! of `SQLITE_BUSY` errors.

pub mod backup;
pub mod health;
pub mod lock;
pub mod migrate;
pub mod verify;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};
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

/// A cloneable handle to the writer and reader threads.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
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
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
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
            // A panicking job must not take the connection down with it: its
            // caller sees a dropped answer, everyone else carries on.
            if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                tracing::error!(worker = %name, "a database job panicked");
            }
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
        let writer_conn = open_connection(path, false)?;
        if let Some(max) = max_bytes {
            // A per-connection setting: only the writer grows the file.
            let page_size: i64 = writer_conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = i64::try_from(max).unwrap_or(i64::MAX) / page_size.max(1);
            writer_conn.pragma_update(None, "max_page_count", pages)?;
        }
        let (writer, writer_rx) = mpsc::channel::<Job>();
        spawn_worker(
            "voxflow-db-writer".into(),
            writer_conn,
            Arc::new(Mutex::new(writer_rx)),
        );

        let (readers_tx, readers_rx) = mpsc::channel::<Job>();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for i in 0..readers.max(1) {
            let conn = open_connection(path, true)?;
            spawn_worker(format!("voxflow-db-reader-{i}"), conn, readers_rx.clone());
        }
        Ok(Db {
            writer,
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

    /// Runs `f` on the writer connection. Use a transaction inside `f` when it
    /// writes more than one statement. The writer is the one queue every
    /// write waits in, so its depth and each write's wait are measured.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let queued = Queued::enter();
        Self::run(&self.writer, move |conn| {
            queued.leave();
            f(conn)
        })
        .await
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
