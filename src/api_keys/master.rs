//! The master key's life: found (or created) and proven when the server
//! starts, replaced by `voxflow keys rotate`.
//!
//! `vault_meta.key_check` holds a known marker sealed under the master key.
//! A key that does not open it is the wrong key, whether or not any tenant
//! has saved a secret yet, and the server refuses to start with it rather
//! than sealing new secrets that the right key could not open.
//!
//! A rotation writes the new key to `master.key.new` first, then re-seals
//! every secret and the marker in one transaction, then renames the new
//! file over `master.key`. Interrupted anywhere, one of the two files opens
//! the marker, and the next start keeps that one.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::store;
use super::Provider;
use crate::crypto::keyfile::{self, KeyFileError};
use crate::crypto::secret::Secret;
use crate::crypto::vault::{MasterKey, Sealed, Vault, VaultError, MASTER_KEY_HEX_LEN};

const KEY_CHECK: &str = "key_check";

/// Where the master key comes from.
#[derive(Debug, Clone, Copy)]
pub enum MasterKeySource<'a> {
    /// `VOXFLOW_MASTER_KEY`: the operator keeps the key; no file is written.
    Env(&'a Secret),
    /// `DIR/master.key`, created on first start.
    File(&'a Path),
}

impl<'a> MasterKeySource<'a> {
    pub fn new(env_key: Option<&'a Secret>, data_dir: &'a Path) -> MasterKeySource<'a> {
        match env_key {
            Some(key) => MasterKeySource::Env(key),
            None => MasterKeySource::File(data_dir),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultSetupError {
    #[error("key vault: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("key vault: {0}")]
    DbWorker(#[from] crate::db::DbError),
    #[error("key vault: {0}")]
    KeyFile(#[from] KeyFileError),
    #[error("key vault: {0}")]
    Crypto(#[from] VaultError),
    #[error("VOXFLOW_MASTER_KEY is not a master key: {MASTER_KEY_HEX_LEN} hexadecimal characters expected (make one with `openssl rand -hex 32`)")]
    EnvFormat,
    #[error("{0}")]
    WrongKey(String),
    #[error("{0}")]
    MissingKey(String),
    #[error("the new master key is the one in use; nothing to rotate")]
    SameKey,
}

/// An opened vault, and what opening it did (for the operator to read).
pub struct Unlocked {
    pub vault: Vault,
    pub notes: Vec<String>,
}

fn read_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM vault_meta WHERE name = ?1",
        [KEY_CHECK],
        |r| r.get(0),
    )
    .optional()
}

fn write_check(conn: &Connection, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO vault_meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value,
            updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        params![KEY_CHECK, value],
    )?;
    Ok(())
}

fn opens(key: &MasterKey, check: &str) -> Result<bool, VaultError> {
    Ok(Vault::new(key)?.opens_key_check(check))
}

fn wrong_key_message(source: &MasterKeySource<'_>) -> String {
    let which = match source {
        MasterKeySource::Env(_) => "VOXFLOW_MASTER_KEY".to_string(),
        MasterKeySource::File(dir) => keyfile::key_path(dir).display().to_string(),
    };
    format!(
        "the master key in {which} does not open this database's key vault: its secrets were sealed under another key. \
         Start with the key they were sealed with (VOXFLOW_MASTER_KEY, or the master.key that belongs to this database); \
         a new key cannot read them"
    )
}

/// Finds the master key, proves it against the key check (creating both on
/// a first start), and finishes or undoes an interrupted rotation.
pub fn unlock(
    conn: &mut Connection,
    source: &MasterKeySource<'_>,
) -> Result<Unlocked, VaultSetupError> {
    // Immediate: two processes starting on one fresh folder take turns, so
    // only one creates the key file and the key check.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let check = read_check(&tx)?;
    let mut notes = Vec::new();
    let (key, new_file) = match (source, &check) {
        (MasterKeySource::Env(secret), _) => {
            let key =
                MasterKey::from_hex(secret.expose()).map_err(|_| VaultSetupError::EnvFormat)?;
            if let Some(check) = &check {
                if !opens(&key, check)? {
                    return Err(VaultSetupError::WrongKey(wrong_key_message(source)));
                }
            }
            (key, None)
        }
        (MasterKeySource::File(dir), Some(check)) => {
            (choose_file_key(dir, check, &mut notes, source)?, None)
        }
        (MasterKeySource::File(dir), None) => {
            // No key check yet, so no rotation ever committed: a leftover
            // next key is not the vault's.
            let pending = keyfile::pending_key_path(dir);
            if pending.exists() {
                keyfile::remove(&pending)?;
                notes.push(format!(
                    "removed {} (no rotation had finished)",
                    pending.display()
                ));
            }
            let path = keyfile::key_path(dir);
            match keyfile::read(&path)? {
                Some(key) => (key, None),
                None => (MasterKey::generate(), Some(path)),
            }
        }
    };
    let vault = Vault::new(&key)?;
    if check.is_none() {
        initialize(&tx, &vault, &mut notes, source)?;
    }
    // The file is written only once the key has been proven against any
    // secrets already stored, so a failed start leaves no wrong key behind.
    if let Some(path) = new_file {
        keyfile::create(&path, &key)?;
        notes.push(format!(
            "created the master key file {} (mode 0600): back it up, without it the stored API keys cannot be read",
            path.display()
        ));
    }
    tx.commit()?;
    Ok(Unlocked { vault, notes })
}

/// With a key check in place: `master.key` when it opens the check (and any
/// `master.key.new` is an unfinished rotation's), else `master.key.new`
/// when it does (a rotation committed but was interrupted before the
/// rename, which is finished now).
fn choose_file_key(
    dir: &Path,
    check: &str,
    notes: &mut Vec<String>,
    source: &MasterKeySource<'_>,
) -> Result<MasterKey, VaultSetupError> {
    let path = keyfile::key_path(dir);
    let pending_path = keyfile::pending_key_path(dir);
    let current = keyfile::read(&path)?;
    // Written whole by a rename, so never half a key; a damaged one is
    // reported below only if nothing else opens the vault.
    let pending = keyfile::read(&pending_path).ok().flatten();
    if let Some(key) = current {
        if opens(&key, check)? {
            if pending_path.exists() {
                keyfile::remove(&pending_path)?;
                notes.push(format!(
                    "an interrupted key rotation had not changed the database: removed {}",
                    pending_path.display()
                ));
            }
            return Ok(key);
        }
        if let Some(next) = pending.filter(|k| opens(k, check).unwrap_or(false)) {
            keyfile::replace(&pending_path, &path)?;
            notes.push(format!(
                "finished an interrupted key rotation: {} now holds the new key",
                path.display()
            ));
            return Ok(next);
        }
        return Err(VaultSetupError::WrongKey(wrong_key_message(source)));
    }
    if let Some(next) = pending.filter(|k| opens(k, check).unwrap_or(false)) {
        keyfile::replace(&pending_path, &path)?;
        notes.push(format!(
            "finished an interrupted key rotation: {} now holds the new key",
            path.display()
        ));
        return Ok(next);
    }
    Err(VaultSetupError::MissingKey(format!(
        "this database's key vault holds secrets but its master key is missing: {} does not exist and VOXFLOW_MASTER_KEY is not set. \
         Restore master.key from your backup or set VOXFLOW_MASTER_KEY; a new key would not read the stored secrets, so none is created",
        path.display()
    )))
}

/// A secret of the vault, as stored.
enum Stored {
    ApiKey {
        id: String,
        user_id: String,
        provider: Provider,
        sealed: Sealed,
    },
    Telephony {
        user_id: String,
        token: String,
    },
}

fn all_secrets(conn: &Connection) -> rusqlite::Result<Vec<Stored>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT id, user_id, provider, api_key_encrypted, iv, auth_tag FROM user_api_keys",
    )?;
    let rows = stmt.query_map([], |r| {
        let name: String = r.get(2)?;
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            name,
            Sealed {
                ciphertext: r.get(3)?,
                iv: r.get(4)?,
                tag: r.get(5)?,
            },
        ))
    })?;
    for row in rows {
        let (id, user_id, name, sealed) = row?;
        // The column's CHECK admits only known providers.
        if let Some(provider) = Provider::parse(&name) {
            out.push(Stored::ApiKey {
                id,
                user_id,
                provider,
                sealed,
            });
        }
    }
    let mut stmt = conn.prepare("SELECT user_id, auth_token FROM telephony_configs")?;
    let rows = stmt.query_map([], |r| {
        Ok(Stored::Telephony {
            user_id: r.get(0)?,
            token: r.get(1)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// This edition's nonces are 12 bytes; the first edition's rows (16-byte
/// IVs under its own key) can never be opened here.
fn sealed_by_this_edition(sealed: &Sealed) -> bool {
    sealed.iv.len() == 24
}

/// First start of a vault: secrets already present must open under the key
/// in hand (they exist without a key check only when the database was
/// rolled back below version 7 and migrated again), telephony tokens the
/// first edition kept in clear are sealed, and the key check is written.
fn initialize(
    tx: &Connection,
    vault: &Vault,
    notes: &mut Vec<String>,
    source: &MasterKeySource<'_>,
) -> Result<(), VaultSetupError> {
    let (mut sealed_seen, mut opened, mut legacy_keys, mut clear_tokens) = (0, 0, 0, 0);
    for secret in all_secrets(tx)? {
        match secret {
            Stored::ApiKey {
                user_id,
                provider,
                sealed,
                ..
            } => {
                if !sealed_by_this_edition(&sealed) {
                    legacy_keys += 1;
                    continue;
                }
                sealed_seen += 1;
                opened += usize::from(store::open(vault, &user_id, provider, &sealed).is_ok());
            }
            Stored::Telephony { user_id, token } => {
                if Sealed::from_compact(&token).is_some() {
                    sealed_seen += 1;
                    opened +=
                        usize::from(store::open_telephony_token(vault, &user_id, &token).is_ok());
                } else {
                    let sealed = store::seal_telephony_token(vault, &user_id, &token)?;
                    tx.execute(
                        "UPDATE telephony_configs SET auth_token = ?1 WHERE user_id = ?2",
                        params![sealed, user_id],
                    )?;
                    clear_tokens += 1;
                }
            }
        }
    }
    if sealed_seen > 0 && opened == 0 {
        return Err(VaultSetupError::WrongKey(wrong_key_message(source)));
    }
    if clear_tokens > 0 {
        notes.push(format!(
            "sealed {clear_tokens} telephony auth token(s) that were stored in clear"
        ));
    }
    if legacy_keys > 0 {
        notes.push(format!(
            "{legacy_keys} API key(s) saved by the first edition cannot be read by this one; their owners must save them again"
        ));
    }
    write_check(tx, &vault.seal_key_check()?)?;
    Ok(())
}

/// What a rotation re-sealed.
#[derive(Debug, Default)]
pub struct RotateReport {
    pub api_keys: usize,
    pub telephony_tokens: usize,
    /// Secrets that did not open under the old key either (damaged, or the
    /// first edition's): left as they were, as unreadable as before.
    pub skipped: usize,
    pub notes: Vec<String>,
}

/// Re-seals every secret and the key check under `new_key`. The caller
/// holds the data folder's rotation lock, so no server seals with the old
/// key meanwhile.
pub fn rotate(
    conn: &mut Connection,
    source: &MasterKeySource<'_>,
    new_key: &MasterKey,
) -> Result<RotateReport, VaultSetupError> {
    let Unlocked { vault: old, notes } = unlock(conn, source)?;
    let new = Vault::new(new_key)?;
    let check = read_check(conn)?.unwrap_or_default();
    if new.opens_key_check(&check) {
        return Err(VaultSetupError::SameKey);
    }
    let pending = match source {
        MasterKeySource::File(dir) => {
            let pending = keyfile::pending_key_path(dir);
            keyfile::create(&pending, new_key)?;
            Some((pending, keyfile::key_path(dir)))
        }
        MasterKeySource::Env(_) => None,
    };
    // On failure `master.key.new` stays: should the commit have reached the
    // disk after all, it is the key that opens the vault, and the next
    // start picks whichever of the two does.
    let mut report = reseal_all(conn, &old, &new)?;
    report.notes.splice(0..0, notes);
    if let Some((pending, path)) = pending {
        keyfile::replace(&pending, &path)?;
    }
    Ok(report)
}

fn reseal_all(
    conn: &mut Connection,
    old: &Vault,
    new: &Vault,
) -> Result<RotateReport, VaultSetupError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = RotateReport::default();
    for secret in all_secrets(&tx)? {
        match secret {
            Stored::ApiKey {
                id,
                user_id,
                provider,
                sealed,
            } => match store::open(old, &user_id, provider, &sealed) {
                Ok(plain) => {
                    let resealed = store::seal(new, &user_id, provider, &plain)?;
                    tx.execute(
                        "UPDATE user_api_keys SET api_key_encrypted = ?1, iv = ?2, auth_tag = ?3 WHERE id = ?4",
                        params![resealed.ciphertext, resealed.iv, resealed.tag, id],
                    )?;
                    report.api_keys += 1;
                }
                Err(e) => {
                    report.skipped += 1;
                    report.notes.push(format!(
                        "left user_api_keys row {id} ({}) as it was: {e}",
                        provider.as_str()
                    ));
                }
            },
            Stored::Telephony { user_id, token } => {
                match store::open_telephony_token(old, &user_id, &token) {
                    Ok(plain) => {
                        let resealed = store::seal_telephony_token(new, &user_id, &plain)?;
                        tx.execute(
                            "UPDATE telephony_configs SET auth_token = ?1 WHERE user_id = ?2",
                            params![resealed, user_id],
                        )?;
                        report.telephony_tokens += 1;
                    }
                    Err(e) => {
                        report.skipped += 1;
                        report.notes.push(format!(
                            "left the telephony auth token of user {user_id} as it was: {e}"
                        ));
                    }
                }
            }
        }
    }
    write_check(&tx, &new.seal_key_check()?)?;
    tx.commit()?;
    Ok(report)
}
