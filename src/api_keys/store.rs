//! The vault's rows: `user_api_keys` (one sealed secret per tenant and
//! provider, in `api_key_encrypted`, `iv`, `auth_tag`) and the sealed auth
//! token of `telephony_configs`. Everything here runs on a database thread,
//! so sealing and opening never happen on an async worker.

use axum::http::StatusCode;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::formats::mask;
use super::{KeySource, Provider, ResolvedKey};
use crate::crypto::vault::{Binding, Sealed, Vault, VaultError};
use crate::http::error::ApiError;

/// The binding purpose of the telephony configuration's auth token: not
/// `twilio`, so neither secret can stand in for the other.
pub const TELEPHONY_PURPOSE: &str = "telephony";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// One `user_api_keys` row, still sealed.
pub struct KeyRow {
    pub provider: Provider,
    pub sealed: Sealed,
    pub is_active: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

fn provider_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Provider> {
    let name: String = row.get(idx)?;
    Provider::parse(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown provider {name:?}").into(),
        )
    })
}

const KEY_COLUMNS: &str =
    "provider, api_key_encrypted, iv, auth_tag, is_active, created_at, last_used_at";

fn key_row_of(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        provider: provider_column(r, 0)?,
        sealed: Sealed {
            ciphertext: r.get(1)?,
            iv: r.get(2)?,
            tag: r.get(3)?,
        },
        is_active: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}

pub fn key_row(
    conn: &Connection,
    user_id: &str,
    provider: Provider,
) -> rusqlite::Result<Option<KeyRow>> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM user_api_keys WHERE user_id = ?1 AND provider = ?2"),
        params![user_id, provider.as_str()],
        key_row_of,
    )
    .optional()
}

/// What a tenant saved, in clear: in memory only, wiped when dropped.
pub enum TenantSecret {
    ApiKey(Zeroizing<String>),
    Twilio(TwilioCredentials),
}

pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: Zeroizing<String>,
    pub phone_number: Option<String>,
}

/// The plaintext sealed for Twilio: the three fields travel together, so
/// the SID and the number cannot be swapped apart from the token.
#[derive(Serialize, Deserialize)]
struct TwilioPayload {
    account_sid: String,
    auth_token: String,
    phone_number: Option<String>,
}

impl TenantSecret {
    /// `gsk_…9xQ2`; for Twilio, the account SID masked the same way.
    pub fn masked(&self) -> String {
        match self {
            TenantSecret::ApiKey(key) => mask(key),
            TenantSecret::Twilio(t) => mask(&t.account_sid),
        }
    }

    fn into_resolved(self) -> ResolvedKey {
        match self {
            TenantSecret::ApiKey(key) => ResolvedKey {
                secret: key.to_string(),
                source: KeySource::User,
                account_sid: None,
                from_number: None,
            },
            TenantSecret::Twilio(t) => ResolvedKey {
                secret: t.auth_token.to_string(),
                source: KeySource::User,
                account_sid: Some(t.account_sid),
                from_number: t.phone_number,
            },
        }
    }
}

fn binding(user_id: &str, provider: Provider) -> Binding<'_> {
    Binding::Tenant {
        user_id,
        purpose: provider.as_str(),
    }
}

pub fn seal(
    vault: &Vault,
    user_id: &str,
    provider: Provider,
    secret: &TenantSecret,
) -> Result<Sealed, VaultError> {
    let plaintext = match secret {
        TenantSecret::ApiKey(key) => Zeroizing::new(key.as_bytes().to_vec()),
        TenantSecret::Twilio(t) => Zeroizing::new(
            serde_json::to_vec(&TwilioPayload {
                account_sid: t.account_sid.clone(),
                auth_token: t.auth_token.to_string(),
                phone_number: t.phone_number.clone(),
            })
            .map_err(|_| VaultError::Seal)?,
        ),
    };
    vault.seal(&binding(user_id, provider), &plaintext)
}

pub fn open(
    vault: &Vault,
    user_id: &str,
    provider: Provider,
    sealed: &Sealed,
) -> Result<TenantSecret, VaultError> {
    let text = vault.open_text(&binding(user_id, provider), sealed)?;
    match provider {
        Provider::Groq | Provider::Deepgram => Ok(TenantSecret::ApiKey(text)),
        Provider::Twilio => {
            let p: TwilioPayload = serde_json::from_str(&text)
                .map_err(|_| VaultError::Malformed("not Twilio credentials"))?;
            Ok(TenantSecret::Twilio(TwilioCredentials {
                account_sid: p.account_sid,
                auth_token: Zeroizing::new(p.auth_token),
                phone_number: p.phone_number,
            }))
        }
    }
}

/// Saves (or replaces) the tenant's key; a replaced key starts afresh
/// (active, new `created_at`, never used). Returns whether one was replaced.
pub fn upsert(
    conn: &Connection,
    user_id: &str,
    provider: Provider,
    sealed: &Sealed,
) -> rusqlite::Result<bool> {
    let existed = key_row(conn, user_id, provider)?.is_some();
    conn.execute(
        &format!(
            "INSERT INTO user_api_keys (user_id, provider, api_key_encrypted, iv, auth_tag)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_id, provider) DO UPDATE SET
                api_key_encrypted = excluded.api_key_encrypted, iv = excluded.iv,
                auth_tag = excluded.auth_tag, is_active = 1, created_at = {NOW},
                last_used_at = NULL"
        ),
        params![
            user_id,
            provider.as_str(),
            sealed.ciphertext,
            sealed.iv,
            sealed.tag
        ],
    )?;
    Ok(existed)
}

pub fn delete(conn: &Connection, user_id: &str, provider: Provider) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM user_api_keys WHERE user_id = ?1 AND provider = ?2",
        params![user_id, provider.as_str()],
    )? > 0)
}

pub fn touch(conn: &Connection, user_id: &str, provider: Provider) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "UPDATE user_api_keys SET last_used_at = {NOW}
             WHERE user_id = ?1 AND provider = ?2 AND is_active = 1"
        ),
        params![user_id, provider.as_str()],
    )?;
    Ok(())
}

/// A `telephony_configs` row; `auth_token` as stored (sealed).
pub struct TelephonyRow {
    pub account_sid: String,
    pub auth_token: String,
    pub from_phone_number: String,
    pub created_at: String,
}

pub fn telephony_row(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<TelephonyRow>> {
    conn.query_row(
        "SELECT account_sid, auth_token, from_phone_number, created_at
         FROM telephony_configs WHERE user_id = ?1",
        [user_id],
        |r| {
            Ok(TelephonyRow {
                account_sid: r.get(0)?,
                auth_token: r.get(1)?,
                from_phone_number: r.get(2)?,
                created_at: r.get(3)?,
            })
        },
    )
    .optional()
}

fn telephony_binding(user_id: &str) -> Binding<'_> {
    Binding::Tenant {
        user_id,
        purpose: TELEPHONY_PURPOSE,
    }
}

/// The auth token sealed into one self-describing column value.
pub fn seal_telephony_token(
    vault: &Vault,
    user_id: &str,
    token: &str,
) -> Result<String, VaultError> {
    Ok(vault
        .seal(&telephony_binding(user_id), token.as_bytes())?
        .to_compact())
}

pub fn open_telephony_token(
    vault: &Vault,
    user_id: &str,
    stored: &str,
) -> Result<Zeroizing<String>, VaultError> {
    let sealed = Sealed::from_compact(stored)
        .ok_or(VaultError::Malformed("the auth token is not sealed"))?;
    vault.open_text(&telephony_binding(user_id), &sealed)
}

pub fn upsert_telephony(
    conn: &Connection,
    user_id: &str,
    account_sid: &str,
    sealed_token: &str,
    from_phone_number: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO telephony_configs (user_id, provider, account_sid, auth_token, from_phone_number)
         VALUES (?1, 'twilio', ?2, ?3, ?4)
         ON CONFLICT (user_id) DO UPDATE SET
            account_sid = excluded.account_sid, auth_token = excluded.auth_token,
            from_phone_number = excluded.from_phone_number",
        params![user_id, account_sid, sealed_token, from_phone_number],
    )?;
    Ok(())
}

/// The answer when a saved secret no longer opens. The details (which row,
/// why) go to the log; the tenant learns what to do.
pub fn unreadable(user_id: &str, what: &str, err: &VaultError) -> ApiError {
    tracing::error!(user_id, secret = what, error = %err, "a stored secret does not open");
    ApiError::new(
        StatusCode::CONFLICT,
        "KEY_UNREADABLE",
        format!("The saved {what} cannot be decrypted (it was altered or damaged); save it again"),
    )
}

/// The tenant's own usable key for `provider`, opened. For Twilio, a saved
/// API key comes first, then the telephony configuration's credentials.
pub fn resolve_own(
    conn: &Connection,
    vault: &Vault,
    user_id: &str,
    provider: Provider,
) -> Result<Option<ResolvedKey>, ApiError> {
    let what = format!("{} key", provider.display_name());
    if let Some(row) = key_row(conn, user_id, provider)?.filter(|r| r.is_active) {
        let secret = open(vault, user_id, provider, &row.sealed)
            .map_err(|e| unreadable(user_id, &what, &e))?;
        let mut key = secret.into_resolved();
        if provider == Provider::Twilio && key.from_number.is_none() {
            // The telephony configuration's number, when it is the same account.
            key.from_number = telephony_row(conn, user_id)?
                .filter(|t| Some(&t.account_sid) == key.account_sid.as_ref())
                .map(|t| t.from_phone_number);
        }
        return Ok(Some(key));
    }
    if provider != Provider::Twilio {
        return Ok(None);
    }
    let Some(t) = telephony_row(conn, user_id)? else {
        return Ok(None);
    };
    let token = open_telephony_token(vault, user_id, &t.auth_token).map_err(|e| {
        unreadable(
            user_id,
            "Twilio auth token of the telephony configuration",
            &e,
        )
    })?;
    Ok(Some(ResolvedKey {
        secret: token.to_string(),
        source: KeySource::User,
        account_sid: Some(t.account_sid),
        from_number: Some(t.from_phone_number),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::MasterKey;

    const ALICE: &str = "11111111-1111-4111-8111-111111111111";
    const BOB: &str = "22222222-2222-4222-8222-222222222222";

    fn vault() -> Vault {
        Vault::new(&MasterKey::generate()).unwrap()
    }

    #[test]
    fn twilio_credentials_round_trip_as_one_secret() {
        let v = vault();
        let secret = TenantSecret::Twilio(TwilioCredentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: Zeroizing::new("f".repeat(32)),
            phone_number: Some("+14155550123".into()),
        });
        let sealed = seal(&v, ALICE, Provider::Twilio, &secret).unwrap();
        let back = open(&v, ALICE, Provider::Twilio, &sealed).unwrap();
        assert_eq!(back.masked(), "AC01…cdef");
        let k = back.into_resolved();
        assert_eq!(k.secret, "f".repeat(32));
        assert_eq!(k.from_number.as_deref(), Some("+14155550123"));
        // Bound to the tenant and to the purpose.
        assert!(open(&v, BOB, Provider::Twilio, &sealed).is_err());
        assert!(open(&v, ALICE, Provider::Groq, &sealed).is_err());
    }

    #[test]
    fn telephony_tokens_are_sealed_and_bound() {
        let v = vault();
        let stored = seal_telephony_token(&v, ALICE, "tok-secret").unwrap();
        assert!(!stored.contains("tok-secret"));
        assert_eq!(
            open_telephony_token(&v, ALICE, &stored).unwrap().as_str(),
            "tok-secret"
        );
        assert_eq!(
            open_telephony_token(&v, BOB, &stored).err(),
            Some(VaultError::Rejected)
        );
        // A token kept in clear (the first edition's way) is not accepted as sealed.
        assert!(matches!(
            open_telephony_token(&v, ALICE, "tok-secret"),
            Err(VaultError::Malformed(_))
        ));
    }
}
