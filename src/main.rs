//! The `voxflow` command line.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rusqlite::Connection;

use voxflow::api_keys::master::{self, MasterKeySource, VaultSetupError};
use voxflow::config::{self, Config, DataArgs};
use voxflow::crypto::keyfile::{self, KeyFileError};
use voxflow::crypto::secret::Secret;
use voxflow::crypto::vault::MasterKey;
use voxflow::db::lock::{self, LockError, LockKind};
use voxflow::db::{backup, migrate, open_connection, verify, DbError};
use voxflow::logging::{self, LogFormat};
use voxflow::{auth, crypto};

#[derive(Parser)]
#[command(
    name = "voxflow",
    version,
    about = "VoxFlow: AI voice agents for many tenants, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// How log lines on standard error are written: `text` for people,
    /// `json` (one object a line) for a log collector.
    #[arg(
        long,
        env = "VOXFLOW_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    /// The log lines held while standard error is not read (a stuck log
    /// collector, a full pipe); past them lines are dropped and counted in
    /// `voxflow_log_lines_dropped_total`, so that requests never wait for
    /// the log.
    #[arg(
        long,
        env = "VOXFLOW_LOG_BUFFER_LINES",
        default_value_t = logging::DEFAULT_BUFFER_LINES,
        value_parser = clap::value_parser!(u32).range(1..=10_000_000),
        global = true
    )]
    log_buffer_lines: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, create the first admin if none exists, and serve the API and web UI.
    Serve(Box<Config>),
    /// Show, apply or roll back schema migrations.
    Migrate {
        #[command(flatten)]
        data: DataArgs,
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Check the schema, the admin user, integrity and foreign keys; exit 0 only when all hold.
    Verify(DataArgs),
    /// Write a consistent copy of the database (safe while the server runs).
    Backup {
        #[command(flatten)]
        data: DataArgs,
        /// The file to write; by default DIR/backups/voxflow-<time>-manual.db.
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Replace the database with a backup (stop the server first); the
    /// current database is kept in DIR/backups.
    Restore {
        #[command(flatten)]
        data: DataArgs,
        /// The backup file to restore.
        file: PathBuf,
    },
    /// Manage admin accounts.
    Admin {
        #[command(flatten)]
        data: DataArgs,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Manage the key vault's master key.
    Keys {
        #[command(flatten)]
        data: DataArgs,
        /// The current master key (64 hex characters); when unset it is read
        /// from DIR/master.key.
        #[arg(
            long,
            env = "VOXFLOW_MASTER_KEY",
            hide_env_values = true,
            global = true
        )]
        master_key: Option<Secret>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Re-encrypt every stored secret under a new master key, in one
    /// transaction. Stop the server first.
    Rotate {
        /// Read the new key (64 hex characters) from standard input instead
        /// of generating one.
        #[arg(long)]
        new_key_stdin: bool,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// List applied and pending versions.
    Status,
    /// Apply pending versions (after a backup when the database holds data).
    Up,
    /// Roll back to version N, newest first, keeping lower versions' data.
    Down {
        #[arg(long)]
        to: i32,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create an admin, or make an existing account an admin, with a new password.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password for an existing account and end its sessions.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Start(#[from] voxflow::StartError),
    #[error(transparent)]
    Vault(#[from] VaultSetupError),
    #[error("key vault: {0}")]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: dropping it writes out the queued lines.
    let _log = logging::init(cli.log_format, cli.log_buffer_lines as usize);
    let result = match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Migrate { data, action } => run_migrate(&data, action),
        Command::Verify(data) => run_verify(&data),
        Command::Backup { data, to } => run_backup(&data, to.as_deref()),
        Command::Restore { data, file } => run_restore(&data, &file),
        Command::Admin { data, action } => run_admin(&data, action),
        Command::Keys {
            data,
            master_key,
            action,
        } => run_keys(&data, master_key.as_ref(), action),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// Opens the existing database for a command-line action; refuses to create
/// an empty one by accident.
fn open_existing(data: &DataArgs) -> Result<Connection, CliError> {
    let path = data.db_path();
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no database at {}; start `voxflow serve` or run `voxflow migrate up` first",
            path.display()
        )));
    }
    Ok(open_connection(&path, false)?)
}

fn serve(config: Config) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let data_dir = config.data.data_dir.clone();
        let running = voxflow::start(config, shutdown_signal()?).await?;
        let report = &running.report;
        if let Some(path) = &report.migrated.backup {
            println!("Backup written before migrating: {}", path.display());
        }
        for (version, name) in &report.migrated.applied {
            println!("Applied migration V{version} {name}");
        }
        if let Some((email, password)) = &report.admin_created {
            println!("First admin created: {email}");
            match password {
                Some(p) => println!("Its password, shown only this once: {p}"),
                None => println!("Its password is the one in VOXFLOW_ADMIN_PASSWORD."),
            }
        }
        for note in &report.vault_notes {
            println!("Key vault: {note}");
        }
        println!("Data folder: {}", data_dir.display());
        println!("VoxFlow listening on http://{}", running.addr);
        let _ = std::io::stdout().flush();
        running.wait().await?;
        println!("VoxFlow stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before the
/// server starts listening: a signal that arrives between "listening" and the
/// first poll of a lazily installed handler would otherwise kill the process
/// without a graceful stop.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down: finishing requests in flight");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: finishing requests in flight");
        })
    }
}

fn run_migrate(data: &DataArgs, action: MigrateAction) -> Result<ExitCode, CliError> {
    match action {
        MigrateAction::Status => {
            let conn = open_existing(data)?;
            for m in migrate::status(&conn)? {
                match m.applied_on {
                    Some(on) => println!("V{} {:<28} applied {on}", m.version, m.name),
                    None => println!("V{} {:<28} pending", m.version, m.name),
                }
            }
        }
        MigrateAction::Up => {
            std::fs::create_dir_all(&data.data_dir)?;
            // Held to the end: a server must not run on a schema changing
            // beneath it.
            let _lock = lock::lock_data_dir(&data.data_dir, LockKind::Migrate)?;
            let mut conn = open_connection(&data.db_path(), false)?;
            let report = migrate::up(&mut conn, &config::backup_dir(&data.data_dir))?;
            if let Some(path) = report.backup {
                println!("Backup written: {}", path.display());
            }
            if report.applied.is_empty() {
                println!(
                    "Nothing to apply: at version {}",
                    migrate::current_version(&conn)?
                );
            }
            for (version, name) in report.applied {
                println!("Applied V{version} {name}");
            }
        }
        MigrateAction::Down { to } => {
            let mut conn = open_existing(data)?;
            let _lock = lock::lock_data_dir(&data.data_dir, LockKind::Migrate)?;
            let before = migrate::current_version(&conn)?;
            if to < before {
                let path = migrate::backup(
                    &conn,
                    &config::backup_dir(&data.data_dir),
                    &format!("before-down-v{before}-to-v{to}"),
                )?;
                println!("Backup written: {}", path.display());
            }
            let undone = migrate::down(&mut conn, to)?;
            if undone.is_empty() {
                println!("Nothing to roll back: at version {before}");
            }
            for v in undone {
                println!("Rolled back V{v}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_backup(data: &DataArgs, to: Option<&Path>) -> Result<ExitCode, CliError> {
    open_existing(data)?;
    let path = backup::backup(&data.db_path(), &config::backup_dir(&data.data_dir), to)?;
    println!("Backup written: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn run_restore(data: &DataArgs, file: &Path) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&data.data_dir)?;
    // Held to the end: no server may run on the database being replaced.
    let _lock = lock::lock_data_dir(&data.data_dir, LockKind::Restore)?;
    let restored = backup::restore(&data.db_path(), &config::backup_dir(&data.data_dir), file)?;
    if let Some(previous) = &restored.previous {
        println!("The database it replaced is kept as {}", previous.display());
    }
    println!(
        "Restored {} (schema version {}); the next start applies any newer migrations. Its API keys open only with the master key that sealed them.",
        file.display(),
        restored.version
    );
    Ok(ExitCode::SUCCESS)
}

fn run_verify(data: &DataArgs) -> Result<ExitCode, CliError> {
    let conn = open_existing(data)?;
    let report = match verify::verify(&conn) {
        Ok(report) => report,
        // Too damaged to walk through: that is the report.
        Err(DbError::Sqlite(e)) if voxflow::db::health::is_damage(&e) => {
            println!("integrity_check  FAILED  {e}");
            println!("The database is damaged: restore a backup with `voxflow restore FILE`.");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    print!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The password from standard input (first line), checked against the
/// policy, or a generated one that is printed.
fn read_or_generate_password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((crypto::password::generate(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    auth::check_password_policy(&password).map_err(|e| CliError::Usage(format!("password {e}")))?;
    Ok((password, false))
}

fn run_admin(data: &DataArgs, action: AdminAction) -> Result<ExitCode, CliError> {
    let mut conn = open_existing(data)?;
    if migrate::current_version(&conn)? != migrate::latest_version() {
        return Err(CliError::Usage(
            "the database is not at the latest version: run `voxflow migrate up`".into(),
        ));
    }
    match action {
        AdminAction::Create {
            email,
            password_stdin,
        } => {
            let email =
                auth::normalize_email(&email).map_err(|e| CliError::Usage(format!("email {e}")))?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = crypto::password::hash(&password);
            let created = auth::store::upsert_admin(&mut conn, &email, &hash)?;
            println!(
                "{} admin {email}",
                if created { "Created" } else { "Promoted to" }
            );
            if generated {
                println!("Password, shown only this once: {password}");
            }
        }
        AdminAction::ResetPassword {
            email,
            password_stdin,
        } => {
            let email =
                auth::normalize_email(&email).map_err(|e| CliError::Usage(format!("email {e}")))?;
            let Some(id) = auth::store::user_id_by_email(&conn, &email)? else {
                return Err(CliError::Usage(format!("no account {email}")));
            };
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = crypto::password::hash(&password);
            auth::store::set_password(&mut conn, &id, &hash, None)?;
            println!("Password reset for {email}; its sessions have ended");
            if generated {
                println!("Password, shown only this once: {password}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The new master key: from standard input (first line), or generated.
fn read_or_generate_master_key(from_stdin: bool) -> Result<(MasterKey, bool), CliError> {
    if !from_stdin {
        return Ok((MasterKey::generate(), true));
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let key = MasterKey::from_hex(&line).map_err(|e| CliError::Usage(format!("new key: {e}")))?;
    Ok((key, false))
}

fn run_keys(
    data: &DataArgs,
    master_key: Option<&Secret>,
    action: KeysAction,
) -> Result<ExitCode, CliError> {
    let KeysAction::Rotate { new_key_stdin } = action;
    let mut conn = open_existing(data)?;
    if migrate::current_version(&conn)? != migrate::latest_version() {
        return Err(CliError::Usage(
            "the database is not at the latest version: run `voxflow migrate up`".into(),
        ));
    }
    // Held to the end: no server may start (and seal with the old key)
    // while the vault changes keys.
    let _lock = lock::lock_data_dir(&data.data_dir, LockKind::Rotate)?;
    let source = MasterKeySource::new(master_key, &data.data_dir);
    let (new_key, generated) = read_or_generate_master_key(new_key_stdin)?;
    if let (MasterKeySource::Env(_), true) = (&source, generated) {
        // Shown before anything changes: should the output be lost after
        // the commit, the operator would hold no key that opens the vault.
        println!(
            "New master key (set VOXFLOW_MASTER_KEY to it before the next start; shown only this once): {}",
            new_key.to_hex().as_str()
        );
        let _ = std::io::stdout().flush();
    }
    let report = master::rotate(&mut conn, &source, &new_key)?;
    for note in &report.notes {
        println!("{note}");
    }
    println!(
        "Re-encrypted {} API key(s) and {} telephony auth token(s) under the new master key",
        report.api_keys, report.telephony_tokens
    );
    if report.skipped > 0 {
        println!(
            "{} secret(s) did not open under the old key either and were left as they were",
            report.skipped
        );
    }
    match source {
        MasterKeySource::File(dir) => println!(
            "{} now holds the new key; the old key no longer opens this database (backups taken before now still need it)",
            keyfile::key_path(dir).display()
        ),
        MasterKeySource::Env(_) => println!(
            "Set VOXFLOW_MASTER_KEY to the new key before starting the server; the old key no longer opens this database"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
