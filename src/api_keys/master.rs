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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::store::TenantSecret;
    use crate::db::{migrate, open_connection};
    use zeroize::Zeroizing;

    const GROQ_KEY: &str = "gsk_UnitTestKey0123456789abcdefXYZ1";
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    struct Fixture {
        dir: tempfile::TempDir,
        conn: Connection,
        user: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("voxflow.db"), false).unwrap();
        migrate::up(&mut conn, &dir.path().join("backups")).unwrap();
        let user: String = conn
            .query_row(
                "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id",
                [],
                |r| r.get(0),
            )
            .unwrap();
        Fixture { dir, conn, user }
    }

    impl Fixture {
        /// Saves a Groq key and a telephony token the way the API does.
        fn store_secrets(&self, vault: &Vault) {
            let sealed = store::seal(
                vault,
                &self.user,
                Provider::Groq,
                &TenantSecret::ApiKey(Zeroizing::new(GROQ_KEY.into())),
            )
            .unwrap();
            store::upsert(&self.conn, &self.user, Provider::Groq, &sealed).unwrap();
            let token = store::seal_telephony_token(vault, &self.user, TOKEN).unwrap();
            store::upsert_telephony(
                &self.conn,
                &self.user,
                "AC0123456789abcdef0123456789abcdef",
                &token,
                "+14155550123",
            )
            .unwrap();
        }

        /// Both secrets open under `vault`.
        fn assert_readable(&self, vault: &Vault) {
            let row = store::key_row(&self.conn, &self.user, Provider::Groq)
                .unwrap()
                .unwrap();
            match store::open(vault, &self.user, Provider::Groq, &row.sealed).unwrap() {
                TenantSecret::ApiKey(k) => assert_eq!(k.as_str(), GROQ_KEY),
                TenantSecret::Twilio(_) => panic!("a Groq row opened as Twilio"),
            }
            let t = store::telephony_row(&self.conn, &self.user)
                .unwrap()
                .unwrap();
            assert_eq!(
                store::open_telephony_token(vault, &self.user, &t.auth_token)
                    .unwrap()
                    .as_str(),
                TOKEN
            );
        }

        fn key_file(&self) -> String {
            std::fs::read_to_string(keyfile::key_path(self.dir.path())).unwrap()
        }
    }

    #[test]
    fn a_first_start_creates_the_key_file_and_the_check() {
        let mut f = fixture();
        let first = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        assert!(first
            .notes
            .iter()
            .any(|n| n.contains("created the master key file")));
        assert!(read_check(&f.conn).unwrap().is_some());
        f.store_secrets(&first.vault);
        let again = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        assert!(again.notes.is_empty());
        f.assert_readable(&again.vault);
    }

    #[test]
    fn a_wrong_or_missing_key_stops_the_start_even_with_no_secret_stored() {
        let mut f = fixture();
        unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        let path = keyfile::key_path(f.dir.path());
        // Another key in the file.
        std::fs::remove_file(&path).unwrap();
        keyfile::create(&path, &MasterKey::generate()).unwrap();
        let e = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .err()
            .unwrap();
        assert!(matches!(e, VaultSetupError::WrongKey(_)), "{e}");
        assert!(e.to_string().contains("does not open"), "{e}");
        // No key at all: nothing is generated in its place.
        std::fs::remove_file(&path).unwrap();
        let e = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .err()
            .unwrap();
        assert!(matches!(e, VaultSetupError::MissingKey(_)), "{e}");
        assert!(!path.exists());
        // The environment's key is checked the same way.
        let other = Secret::new(MasterKey::generate().to_hex().as_str());
        let e = unlock(&mut f.conn, &MasterKeySource::Env(&other))
            .err()
            .unwrap();
        assert!(e.to_string().contains("VOXFLOW_MASTER_KEY"), "{e}");
        let bad = Secret::from("not-hex");
        let e = unlock(&mut f.conn, &MasterKeySource::Env(&bad))
            .err()
            .unwrap();
        assert!(matches!(e, VaultSetupError::EnvFormat));
    }

    #[test]
    fn rotation_keeps_every_secret_readable_under_the_new_key_only() {
        let mut f = fixture();
        let old = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.store_secrets(&old);
        let old_text = f.key_file();
        let new_key = MasterKey::generate();
        let report = rotate(&mut f.conn, &MasterKeySource::File(f.dir.path()), &new_key).unwrap();
        assert_eq!(
            (report.api_keys, report.telephony_tokens, report.skipped),
            (1, 1, 0)
        );
        assert_eq!(f.key_file().trim(), new_key.to_hex().as_str());
        assert!(!keyfile::pending_key_path(f.dir.path()).exists());
        let opened = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.assert_readable(&opened);
        // The old key opens nothing any more.
        let old_key = MasterKey::from_hex(&old_text).unwrap();
        assert!(!opens(&old_key, &read_check(&f.conn).unwrap().unwrap()).unwrap());
        let row = store::key_row(&f.conn, &f.user, Provider::Groq)
            .unwrap()
            .unwrap();
        assert!(store::open(&old, &f.user, Provider::Groq, &row.sealed).is_err());
        // Rotating to the key in use is refused.
        let e = rotate(&mut f.conn, &MasterKeySource::File(f.dir.path()), &new_key)
            .err()
            .unwrap();
        assert!(matches!(e, VaultSetupError::SameKey));
    }

    #[test]
    fn a_crash_before_the_commit_keeps_the_old_key() {
        let mut f = fixture();
        let old = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.store_secrets(&old);
        let old_text = f.key_file();
        // The new key was written, then the process died: the database
        // still holds secrets sealed under the old key.
        let pending = keyfile::pending_key_path(f.dir.path());
        keyfile::create(&pending, &MasterKey::generate()).unwrap();
        let unlocked = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        assert!(unlocked.notes.iter().any(|n| n.contains("had not changed")));
        f.assert_readable(&unlocked.vault);
        assert_eq!(f.key_file(), old_text);
        assert!(!pending.exists());
    }

    #[test]
    fn a_crash_after_the_commit_finishes_the_rotation() {
        let mut f = fixture();
        let old = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.store_secrets(&old);
        let old_text = f.key_file();
        let new_key = MasterKey::generate();
        rotate(&mut f.conn, &MasterKeySource::File(f.dir.path()), &new_key).unwrap();
        // Put the files back as they were between the commit and the
        // rename: the new key still in master.key.new, the old in master.key.
        let path = keyfile::key_path(f.dir.path());
        let pending = keyfile::pending_key_path(f.dir.path());
        std::fs::rename(&path, &pending).unwrap();
        std::fs::write(&path, &old_text).unwrap();
        let unlocked = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        assert!(unlocked
            .notes
            .iter()
            .any(|n| n.contains("finished an interrupted")));
        f.assert_readable(&unlocked.vault);
        assert_eq!(f.key_file().trim(), new_key.to_hex().as_str());
        assert!(!pending.exists());
        // Also when master.key itself was lost on the way.
        rotate(
            &mut f.conn,
            &MasterKeySource::File(f.dir.path()),
            &MasterKey::generate(),
        )
        .unwrap();
        std::fs::rename(&path, &pending).unwrap();
        let unlocked = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        f.assert_readable(&unlocked.vault);
    }

    #[test]
    fn with_the_key_in_the_environment_no_file_is_written() {
        let mut f = fixture();
        let old = Secret::new(MasterKey::generate().to_hex().as_str());
        let vault = unlock(&mut f.conn, &MasterKeySource::Env(&old))
            .unwrap()
            .vault;
        f.store_secrets(&vault);
        let new_key = MasterKey::generate();
        rotate(&mut f.conn, &MasterKeySource::Env(&old), &new_key).unwrap();
        assert!(!keyfile::key_path(f.dir.path()).exists());
        assert!(!keyfile::pending_key_path(f.dir.path()).exists());
        let new = Secret::new(new_key.to_hex().as_str());
        let opened = unlock(&mut f.conn, &MasterKeySource::Env(&new))
            .unwrap()
            .vault;
        f.assert_readable(&opened);
        assert!(unlock(&mut f.conn, &MasterKeySource::Env(&old)).is_err());
    }

    #[test]
    fn a_vault_without_its_check_still_refuses_a_key_that_opens_nothing() {
        let mut f = fixture();
        let vault = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.store_secrets(&vault);
        // Rolled back below version 7 and migrated again: the check is gone.
        f.conn.execute("DELETE FROM vault_meta", []).unwrap();
        let stranger = Secret::new(MasterKey::generate().to_hex().as_str());
        let e = unlock(&mut f.conn, &MasterKeySource::Env(&stranger))
            .err()
            .unwrap();
        assert!(matches!(e, VaultSetupError::WrongKey(_)), "{e}");
        // The right key opens them and writes a new check.
        let again = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        f.assert_readable(&again.vault);
        assert!(read_check(&f.conn).unwrap().is_some());
    }

    #[test]
    fn tokens_the_first_edition_kept_in_clear_are_sealed_on_first_start() {
        let mut f = fixture();
        f.conn
            .execute(
                "INSERT INTO telephony_configs (user_id, account_sid, auth_token, from_phone_number)
                 VALUES (?1, 'AC0123456789abcdef0123456789abcdef', ?2, '+14155550123')",
                params![f.user, TOKEN],
            )
            .unwrap();
        let unlocked = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path())).unwrap();
        assert!(unlocked.notes.iter().any(|n| n.contains("stored in clear")));
        let t = store::telephony_row(&f.conn, &f.user).unwrap().unwrap();
        assert!(!t.auth_token.contains(TOKEN));
        assert_eq!(
            store::open_telephony_token(&unlocked.vault, &f.user, &t.auth_token)
                .unwrap()
                .as_str(),
            TOKEN
        );
    }

    #[test]
    fn rotation_leaves_a_damaged_secret_as_it_was() {
        let mut f = fixture();
        let vault = unlock(&mut f.conn, &MasterKeySource::File(f.dir.path()))
            .unwrap()
            .vault;
        f.store_secrets(&vault);
        f.conn
            .execute("UPDATE user_api_keys SET auth_tag = ?1", [&"0".repeat(32)])
            .unwrap();
        let report = rotate(
            &mut f.conn,
            &MasterKeySource::File(f.dir.path()),
            &MasterKey::generate(),
        )
        .unwrap();
        assert_eq!(
            (report.api_keys, report.telephony_tokens, report.skipped),
            (0, 1, 1)
        );
        assert!(report.notes.iter().any(|n| n.contains("user_api_keys row")));
    }
}
