//! The master key on disk (`DIR/master.key`, mode 0600) when
//! `VOXFLOW_MASTER_KEY` is not set. A rotation and a running server are
//! kept apart by the data folder's lock (`db::lock`).
//!
//! Every file appears whole or not at all: it is written to a temporary
//! name, flushed to disk, then linked or renamed into place, and the folder
//! is flushed so the new name survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::vault::{MasterKey, MASTER_KEY_HEX_LEN};

pub const KEY_FILE: &str = "master.key";
/// The next key during a rotation: present only between "new key chosen"
/// and "rotation finished".
pub const PENDING_KEY_FILE: &str = "master.key.new";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} does not hold a master key ({MASTER_KEY_HEX_LEN} hexadecimal characters expected)", path.display())]
    Format { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

pub fn pending_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PENDING_KEY_FILE)
}

/// The key in `path`, or `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<MasterKey>, KeyFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    warn_if_readable_by_others(path);
    MasterKey::from_hex(&text)
        .map(Some)
        .map_err(|_| KeyFileError::Format {
            path: path.to_path_buf(),
        })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the master key file can be read by other users: run chmod 600 on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A new file readable by its owner only, that must not exist yet.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes the names in `dir` (a rename, a new link) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `key` to `path`, which must not exist: a second process racing
/// to create the same file gets `Exists` and reads the winner's key.
pub fn create(path: &Path, key: &MasterKey) -> Result<(), KeyFileError> {
    let dir = parent(path);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hex::encode(super::random_bytes::<8>())
    ));
    let written = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(key.to_hex().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    // A hard link, unlike a rename, refuses to replace an existing file.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(dir).map_err(write_error(path)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Renames `from` over `to` in one step and makes it durable.
pub fn replace(from: &Path, to: &Path) -> Result<(), KeyFileError> {
    fs::rename(from, to).map_err(write_error(to))?;
    sync_dir(parent(to)).map_err(write_error(to))
}

/// Removes `path` if present, durably.
pub fn remove(path: &Path) -> Result<(), KeyFileError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)).map_err(write_error(path)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_writes_a_private_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path());
        let key = MasterKey::generate();
        create(&path, &key).unwrap();
        let read_back = read(&path).unwrap().unwrap();
        assert_eq!(read_back.to_hex(), key.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second writer does not clobber the first key.
        let other = MasterKey::generate();
        assert!(matches!(
            create(&path, &other),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(read(&path).unwrap().unwrap().to_hex(), key.to_hex());
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![KEY_FILE.to_string()]);
    }

    #[test]
    fn a_missing_file_is_none_and_a_bad_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path());
        assert!(read(&path).unwrap().is_none());
        fs::write(&path, "not a key").unwrap();
        assert!(matches!(read(&path), Err(KeyFileError::Format { .. })));
    }
}
