//! VoxFlow: a multi-tenant platform for AI voice agents, in one binary.
//!
//! `start` opens the database, applies migrations, creates the first admin
//! and serves the API and the web UI; tests call it in-process.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agents;
pub mod api_keys;
pub mod auth;
pub mod calls;
pub mod campaigns;
pub mod config;
pub mod crypto;
pub mod db;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod service_config;
pub mod tiers;
pub mod usage;

/// The allocator of every program built on this crate: the server, the
/// benchmarks, the tests (see Cargo.toml for why). Not under `cargo fuzz`,
/// whose sanitizer watches the system allocator.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// For the fuzz targets in fuzz/ and the property tests only.
#[doc(hidden)]
pub mod fuzzing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use api_keys::master::{self, MasterKeySource};
use config::Config;
use db::lock::{self, LockKind};
use db::{migrate, Db, DbError};
use http::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Admin(String),
    #[error(transparent)]
    Vault(#[from] api_keys::master::VaultSetupError),
    #[error(transparent)]
    DataDirLock(#[from] db::lock::LockError),
    #[error("{0}")]
    Refused(String),
}

/// What starting did, for the operator to read once.
#[derive(Debug, Default)]
pub struct StartReport {
    pub migrated: migrate::UpReport,
    /// Set when the first admin was created: its email, and its password when
    /// generated here (to be printed once, never logged).
    pub admin_created: Option<(String, Option<String>)>,
    /// Runs the previous process left in progress, closed as abandoned.
    pub abandoned_runs: usize,
    /// What opening the key vault did (a key file created, an interrupted
    /// rotation finished), for the operator.
    pub vault_notes: Vec<String>,
}

/// Opens the key vault with the configured master key, off the async
/// threads (it reads files and runs the key check on the writer thread).
async fn open_vault(db: &Db, config: &Config) -> Result<master::Unlocked, StartError> {
    let master_key = config.master_key.clone();
    let data_dir = config.data.data_dir.clone();
    Ok(db
        .write_alone(move |c| {
            master::unlock(c, &MasterKeySource::new(master_key.as_ref(), &data_dir))
        })
        .await?)
}

/// Opens the database in `config`'s data folder and brings it to the latest
/// schema.
pub async fn open_and_migrate(config: &Config) -> Result<(Db, migrate::UpReport), DbError> {
    // Opening runs pragmas on every connection: off the async workers too.
    let (path, readers) = (config.data.db_path(), usize::from(config.db_readers));
    let max_bytes = config.db_max_size_mb.map(|mb| u64::from(mb) << 20);
    let db = tokio::task::spawn_blocking(move || Db::open(&path, readers, max_bytes))
        .await
        .map_err(|_| DbError::WorkerGone)??;
    let problems = db
        .read(|c| Ok::<_, DbError>(db::health::quick_check(c)))
        .await?;
    if !problems.is_empty() {
        return Err(DbError::Damaged(problems));
    }
    let backups: PathBuf = config::backup_dir(&config.data.data_dir);
    let report = db.write_alone(move |c| migrate::up(c, &backups)).await?;
    Ok((db, report))
}

/// A missing or empty `voxflow.db` beside the key file of an existing
/// install was lost (a failed copy, a wrong mount): starting would make a
/// fresh database with a new admin and hide the loss.
fn refuse_a_lost_database(config: &Config) -> Result<(), StartError> {
    let data_dir = &config.data.data_dir;
    let key = crypto::keyfile::key_path(data_dir);
    if !config.init && key.exists() && db::health::is_missing_or_empty(&config.data.db_path()) {
        return Err(StartError::Refused(format!(
            "{} is missing or empty, but {} exists: this folder held a database. Restore it with `voxflow restore FILE` (backups are in {}), or start with --init to begin a new, empty one",
            config.data.db_path().display(),
            key.display(),
            config::backup_dir(data_dir).display()
        )));
    }
    Ok(())
}

/// A start that failed on a damaged file says how to recover.
fn damaged(config: &Config, err: DbError) -> StartError {
    let problems = match &err {
        DbError::Damaged(problems) => problems.clone(),
        DbError::Sqlite(e) if db::health::is_damage(e) => vec![e.to_string()],
        _ => return err.into(),
    };
    StartError::Refused(format!(
        "{} is damaged (PRAGMA quick_check: {}); it is not served. Stop here and restore the latest good backup: `voxflow restore FILE` (backups are in {}; `voxflow verify` prints the full report)",
        config.data.db_path().display(),
        problems.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
        config::backup_dir(&config.data.data_dir).display()
    ))
}

/// Creates the first admin when the database has none: from
/// `VOXFLOW_ADMIN_EMAIL`/`VOXFLOW_ADMIN_PASSWORD`, else with a random password
/// that the caller prints once. Never a fixed password.
async fn ensure_first_admin(
    db: &Db,
    config: &Config,
    queue: &crypto::password::HashQueue,
) -> Result<Option<(String, Option<String>)>, StartError> {
    if db
        .read(|c| auth::store::any_admin(c).map_err(DbError::from))
        .await?
    {
        return Ok(None);
    }
    let email = auth::normalize_email(&config.admin_email)
        .map_err(|e| StartError::Admin(format!("VOXFLOW_ADMIN_EMAIL: {e}")))?;
    let (password, generated) = match &config.admin_password {
        Some(p) => {
            auth::check_password_policy(p)
                .map_err(|e| StartError::Admin(format!("VOXFLOW_ADMIN_PASSWORD: {e}")))?;
            (p.clone(), false)
        }
        None => (crypto::password::generate(), true),
    };
    let hash = queue
        .hash(password.clone())
        .await
        .map_err(|e| StartError::Admin(e.to_string()))?;
    let exists_as_user = {
        let email = email.clone();
        db.read(move |c| auth::store::user_id_by_email(c, &email).map_err(DbError::from))
            .await?
            .is_some()
    };
    if exists_as_user {
        // Promoting an existing self-registered account would hand admin
        // rights to whoever registered that address.
        return Err(StartError::Admin(format!(
            "no admin exists and {email} is an ordinary account; create an admin with `voxflow admin create --email ADDRESS`"
        )));
    }
    {
        let email = email.clone();
        db.write(move |c| auth::store::upsert_admin(c, &email, &hash).map_err(DbError::from))
            .await?;
    }
    Ok(Some((email, generated.then_some(password))))
}

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub report: StartReport,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }

    /// Resolves when the server has stopped on its own (after a signal).
    pub async fn wait(self) -> std::io::Result<()> {
        let Running { task, shutdown, .. } = self;
        let result = task.await.unwrap_or(Ok(()));
        drop(shutdown);
        result
    }
}

/// Everything `voxflow serve` does before and while listening. `stop_signal`
/// ends the server gracefully when it resolves (the binary passes SIGINT or
/// SIGTERM).
pub async fn start(
    config: Config,
    stop_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let started = Instant::now();
    // Installed before anything is measured (the migrations' backup, the
    // first writes).
    metrics::handle();
    // Held until the server stops: one server per data folder, and no
    // migration, restore or key rotation beneath it (see `db::lock`).
    let data_dir = &config.data.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| DbError::Io {
        path: data_dir.clone(),
        source,
    })?;
    let lock = lock::lock_data_dir(data_dir, LockKind::Serve)?;
    refuse_a_lost_database(&config)?;
    let (db, migrated) = open_and_migrate(&config)
        .await
        .map_err(|e| damaged(&config, e))?;
    let master::Unlocked {
        vault,
        notes: vault_notes,
    } = open_vault(&db, &config).await?;
    for note in &vault_notes {
        tracing::info!("key vault: {note}");
    }
    let password_queue = crypto::password::HashQueue::new(
        crypto::password::default_workers(),
        usize::from(config.password_queue),
    );
    let admin_created = ensure_first_admin(&db, &config, &password_queue).await?;
    // Web calls in progress belong to the process that ran before this one:
    // no browser will end them now, so they are closed as abandoned (billed
    // up to their last activity). Phone calls are left in progress: they are
    // looked up at Twilio (calls::reconcile) once the server runs.
    let abandoned_runs = db
        .write(|c| calls::sweep::close_idle_runs(c, 0).map_err(DbError::from))
        .await?;
    if abandoned_runs > 0 {
        tracing::info!(
            runs = abandoned_runs,
            "closed runs left in progress before the restart"
        );
    }
    // An import cut short by the stop (or a crash) is hidden and half
    // written: no request is writing it any more.
    let unfinished_imports = db
        .write(|c| campaigns::store::drop_unfinished_imports(c).map_err(DbError::from))
        .await?;
    if unfinished_imports > 0 {
        tracing::info!(
            imports = unfinished_imports,
            "removed campaign imports left unfinished before the restart"
        );
    }
    let listener = TcpListener::bind(config.http)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.http,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.http,
        source,
    })?;
    let http_client = providers::http_client(
        Duration::from_secs(config.provider_timeout_secs),
        config.outbound_resolver(),
    );
    let (config_header_timeout, max_connections) =
        (config.header_timeout_secs, config.max_connections);
    let state = AppState::new(http::Shared {
        sessions: auth::extract::session_cache(&db),
        agent_lists: agents::routes::agent_list_cache(&db),
        db,
        rate_limits: Arc::new(auth::rate_limit::RateLimits::new(&config)),
        config: Arc::new(config),
        started,
        login_throttle: Arc::default(),
        password_queue,
        vault: Arc::new(vault),
        http_client,
        dialing: Arc::default(),
        readiness: Arc::default(),
    });
    // Phone runs left in progress are checked with Twilio in the
    // background (a slow Twilio must not delay the start): a live call
    // stays open, an ended one is billed, and a call whose placing was
    // interrupted is found, or found never placed. Meanwhile their contacts
    // stay `dialing`, so the dialer cannot call them again.
    let reconciler = tokio::spawn(calls::reconcile::run_periodically(state.clone()));
    let sweeper = tokio::spawn(calls::sweep::run_periodically(
        state.db.clone(),
        state.config.run_idle_timeout_secs,
    ));
    let dialer = tokio::spawn(campaigns::dialer::run_periodically(state.clone()));
    let pruner = tokio::spawn(auth::rate_limit::prune_periodically(state.clone()));
    let backups = state.config.backup_every.map(|every| {
        tokio::spawn(db::backup::run_periodically(
            state.config.data.db_path(),
            config::backup_dir(&state.config.data.data_dir),
            every,
            state.config.backup_keep as usize,
        ))
    });
    let health = tokio::spawn(db::health::watch(
        state.db.clone(),
        state.config.data.data_dir.clone(),
        Duration::from_secs(state.config.readiness_check_secs),
        Arc::clone(&state.readiness),
    ));
    let db = state.db.clone();
    let app = http::router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(config_header_timeout),
        max_connections: max_connections as usize,
    };
    let task = tokio::spawn(async move {
        let served = serve(listener, app, limits, async move {
            tokio::select! {
                _ = rx => {}
                _ = stop_signal => {}
            }
        })
        .await;
        sweeper.abort();
        dialer.abort();
        reconciler.abort();
        pruner.abort();
        health.abort();
        if let Some(backups) = backups {
            backups.abort();
        }
        // Every request has finished: the log is folded into voxflow.db,
        // which alone is then the whole database (an operator may copy it).
        if let Err(err) = db
            .write_alone(|c| db::health::checkpoint(c).map_err(DbError::from))
            .await
        {
            tracing::warn!(%err, "cannot checkpoint the database at stop");
        }
        drop(lock);
        served
    });
    Ok(Running {
        addr,
        report: StartReport {
            migrated,
            admin_created,
            abandoned_runs,
            vault_notes,
        },
        shutdown: Some(tx),
        task,
    })
}

/// What `serve` bounds, from `--header-timeout-secs` and `--max-connections`.
struct ConnectionLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// The accept loop (axum's `serve` offers neither a header read timeout
/// nor a bound on connections). Each connection is served by hyper's
/// HTTP/1 (the only version this server speaks) with upgrades, so
/// WebSocket calls work; a connection slot is taken before `accept`, so
/// past the bound new connections wait in the kernel's listen queue
/// instead of costing memory here; a WebSocket call keeps its slot until
/// it ends. On `stop` no connection is accepted any more, idle ones are
/// closed, requests in flight finish, and the function returns once every
/// HTTP exchange has ended (WebSocket calls end on their own, as before).
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = async {
            let slot = Arc::clone(&slots).acquire_owned().await;
            (slot, listener.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            () = &mut stop => break,
            got = next => got,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors, say: wait instead of spinning
                // on the error (the slot is given back meanwhile).
                tracing::warn!(%err, "cannot accept a connection");
                drop(slot);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, stopping) = (app.clone(), stopping_rx.clone());
        let header_timeout = limits.header_timeout;
        let draining = drained_tx.clone();
        let stream = Counted::new(stream, slot);
        tokio::spawn(async move {
            serve_connection(stream, peer, app, header_timeout, stopping).await;
            drop(draining);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    // Every connection task holds a sender until its HTTP exchange ends
    // (an upgraded WebSocket call lives on by itself, as under axum's
    // `serve`): none left means none in flight.
    drop(drained_tx);
    let _ = drained_rx.recv().await;
    Ok(())
}

/// A client connection that holds its slot of `--max-connections` and is
/// counted in `voxflow_http_connections_open` for as long as it is open:
/// through an upgrade too, since the WebSocket then owns it.
struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Counted {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Counted {
        ::metrics::gauge!("voxflow_http_connections_open").increment(1.0);
        Counted {
            stream,
            _slot: slot,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        ::metrics::gauge!("voxflow_http_connections_open").decrement(1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, or until `stopping` turns true
/// and its requests in flight have been answered.
async fn serve_connection(
    stream: Counted,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        // What `into_make_service_with_connect_info` gave handlers.
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, %peer, "connection ended with an error");
                }
                break;
            }
            changed = stopping.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
