//! The process's log: lines on standard error, written by a thread of
//! their own.
//!
//! A request's access line used to be written to standard error by the
//! async worker that answered it: one `write(2)` per request on the
//! runtime's threads, and when whatever reads standard error stops (a
//! stuck log collector, a full pipe, a terminal paused with Ctrl-S) every
//! worker blocked in that write and the server stopped answering. Here a
//! line is handed to a bounded queue and written by the `voxflow-log`
//! thread, many lines per write; when the queue is full the line is
//! dropped and counted (`voxflow_log_lines_dropped_total`) instead of
//! stalling a request.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// How log lines are written: `text` for people, `json` (one object a
/// line) for a log collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The lines the log thread may hold while standard error is not read,
/// when `--log-buffer-lines` is not given: about a third of a second of
/// access lines at the load bench's rate, a few megabytes at the most.
pub const DEFAULT_BUFFER_LINES: u32 = 16_384;

/// The write the log thread gathers lines into before writing them out.
const WRITE_BYTES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log thread; dropped at the end of `main`, it writes out what
/// is still queued (waiting about a second at the most for a stuck reader).
#[must_use = "dropping the guard stops the log thread"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Installs the process's log at the level of `VOXFLOW_LOG` (`info`
/// unless set), holding at most `buffer_lines` lines that standard error
/// has not taken yet.
pub fn init(format: LogFormat, buffer_lines: usize) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(buffer_lines.max(1))
        .lossy(true)
        .thread_name("voxflow-log")
        // The thread writes out what it has gathered each time the queue
        // runs empty: one write for many lines.
        .finish(BufWriter::with_capacity(WRITE_BYTES, std::io::stderr()));
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // The event's fields at the top level of each object, beside
        // `timestamp`, `level`, `target` and the request's span.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(ansi).init(),
    }
    LogGuard { _worker: guard }
}

/// Log lines dropped so far because standard error was not taking them.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}
