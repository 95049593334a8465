//! `DIR/voxflow.lock`: one process at a time changes a data folder's
//! database wholesale. A server holds it for its whole life, and so do
//! `migrate up`, `migrate down`, `restore` and `keys rotate` while they run:
//! two servers on one folder would each believe they own the runs in
//! progress, the dialer and the vault; a migration or a restore under a
//! server changes the schema or the whole file beneath its connections; a
//! rotation under one leaves it sealing with the old key.
//!
//! Read-only commands (`verify`, `migrate status`, `backup`) take no lock,
//! and neither do the `admin` commands: they write one account through
//! SQLite's own locking (busy_timeout), which is safe beside a server, and
//! an operator needs `admin reset-password` to let an admin in while the
//! server runs.
//!
//! The holder writes its pid and what it is into the file *after* taking
//! the exclusive lock, and empties the file before letting go, so whoever
//! finds the lock taken reads the holder's own words, never a previous
//! holder's. The operating system drops the lock when the holder exits,
//! even by a crash; the file itself is never removed (removing a lock file
//! races with a process that just opened it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const LOCK_FILE: &str = "voxflow.lock";

/// Who takes the lock, written on the file's second line (the first is the
/// pid) so that a refused command can say what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Serve,
    Migrate,
    Restore,
    Rotate,
}

impl LockKind {
    const ALL: [LockKind; 4] = [
        LockKind::Serve,
        LockKind::Migrate,
        LockKind::Restore,
        LockKind::Rotate,
    ];

    fn word(self) -> &'static str {
        match self {
            LockKind::Serve => "serve",
            LockKind::Migrate => "migrate",
            LockKind::Restore => "restore",
            LockKind::Rotate => "keys-rotate",
        }
    }

    fn from_word(word: &str) -> Option<LockKind> {
        LockKind::ALL.into_iter().find(|k| k.word() == word)
    }

    /// What the refused command was about to do, for its message.
    fn doing(self) -> &'static str {
        match self {
            LockKind::Serve => "starting a server on this data folder",
            LockKind::Migrate => "migrating",
            LockKind::Restore => "restoring a backup",
            LockKind::Rotate => "rotating the master key",
        }
    }
}

/// The process that holds the lock, as its file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub kind: Option<LockKind>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            Some(LockKind::Serve) => "a VoxFlow server",
            Some(LockKind::Migrate) => "`voxflow migrate`",
            Some(LockKind::Restore) => "`voxflow restore`",
            Some(LockKind::Rotate) => "`voxflow keys rotate`",
            None => "another VoxFlow process",
        };
        match self.pid {
            Some(pid) => write!(f, "{what} (pid {pid})"),
            None => f.write_str(what),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{holder} holds {}; {advice}", path.display())]
    Held {
        path: PathBuf,
        holder: Holder,
        advice: String,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Emptied while still locked: a process that finds the lock taken
        // in the instant between our unlock and the next holder's write
        // reads nothing (and waits for the write), never our stale pid.
        let _ = self.file.set_len(0);
    }
}

pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOCK_FILE)
}

/// Takes the exclusive lock on `DIR/voxflow.lock` (the folder must exist)
/// or says who holds it.
pub fn lock_data_dir(data_dir: &Path, kind: LockKind) -> Result<DataDirLock, LockError> {
    let path = lock_path(data_dir);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    // Opened without truncating: the content belongs to whoever holds the
    // lock, and we do not hold it yet.
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = read_holder(&mut file);
            let advice = match holder.kind {
                Some(LockKind::Serve) => format!("stop it first (before {})", kind.doing()),
                _ => format!("wait for it to finish before {}", kind.doing()),
            };
            return Err(LockError::Held {
                path,
                holder,
                advice,
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    // Ours now: replace whatever a crashed holder left with our own line,
    // in one write so a reader sees all of it or (empty) none of it.
    let line = format!("{}\n{}\n", std::process::id(), kind.word());
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    Ok(DataDirLock { file })
}

/// The holder's pid and kind. The holder writes them just after locking,
/// so an empty file means "just locked": read again for a moment before
/// giving up on naming it.
fn read_holder(file: &mut File) -> Holder {
    const ATTEMPTS: u32 = 50;
    let mut holder = Holder {
        pid: None,
        kind: None,
    };
    for _ in 0..ATTEMPTS {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        if read.is_ok() {
            let mut lines = text.lines();
            holder.pid = lines.next().and_then(|l| l.trim().parse().ok());
            holder.kind = lines.next().and_then(|l| LockKind::from_word(l.trim()));
            if holder.pid.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    holder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_named_by_pid_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let server = lock_data_dir(dir.path(), LockKind::Serve).unwrap();
        let text = std::fs::read_to_string(lock_path(dir.path())).unwrap();
        assert_eq!(text, format!("{}\nserve\n", std::process::id()));
        for kind in LockKind::ALL {
            let err = lock_data_dir(dir.path(), kind).unwrap_err();
            let LockError::Held { holder, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!(holder.pid, Some(std::process::id()));
            assert_eq!(holder.kind, Some(LockKind::Serve));
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "a VoxFlow server (pid {}) holds ",
                    std::process::id()
                )),
                "{message}"
            );
            assert!(message.contains("stop it first"), "{message}");
        }
        drop(server);
        assert_eq!(
            std::fs::read_to_string(lock_path(dir.path())).unwrap(),
            "",
            "emptied on release"
        );

        let rotation = lock_data_dir(dir.path(), LockKind::Rotate).unwrap();
        let err = lock_data_dir(dir.path(), LockKind::Serve).unwrap_err();
        assert!(
            err.to_string().contains("`voxflow keys rotate` (pid")
                && err.to_string().contains("wait for it to finish"),
            "{err}"
        );
        drop(rotation);
        assert!(lock_data_dir(dir.path(), LockKind::Serve).is_ok());
    }

    #[test]
    fn a_crashed_holders_line_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(lock_path(dir.path()), "999999999\nkeys-rotate\nextra\n").unwrap();
        let _lock = lock_data_dir(dir.path(), LockKind::Migrate).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock_path(dir.path())).unwrap(),
            format!("{}\nmigrate\n", std::process::id())
        );
    }
}
