//! The per-tenant key vault: each tenant's provider keys (Groq, Deepgram,
//! Twilio), sealed under the master key, and which key a tenant's request
//! uses: its own, else the server's from the environment.

pub mod formats;
pub mod master;
pub mod routes;
pub mod store;
pub mod telephony;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Groq,
    Deepgram,
    Twilio,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Groq, Provider::Deepgram, Provider::Twilio];

    /// The name in paths, in the `provider` column and in bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Groq => "groq",
            Provider::Deepgram => "deepgram",
            Provider::Twilio => "twilio",
        }
    }

    /// The name shown to people.
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Groq => "Groq",
            Provider::Deepgram => "Deepgram",
            Provider::Twilio => "Twilio",
        }
    }

    /// Case-insensitive, surrounding spaces ignored; `None` for any other name.
    pub fn parse(name: &str) -> Option<Provider> {
        let name = name.trim();
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }
}

/// Whose key it is: the tenant's own, or the server's from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    User,
    System,
}

/// A key ready to use. For Twilio, `secret` is the auth token and
/// `account_sid` is set; `from_number` when one is known.
pub struct ResolvedKey {
    pub secret: String,
    pub source: KeySource,
    pub account_sid: Option<String>,
    pub from_number: Option<String>,
}

impl fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("secret", &"[redacted]")
            .field("source", &self.source)
            .field("account_sid", &self.account_sid)
            .field("from_number", &self.from_number)
            .finish()
    }
}

/// The server's own key for `provider`, from the environment. Twilio needs
/// both the SID and the token.
pub fn system_key(config: &Config, provider: Provider) -> Option<ResolvedKey> {
    let non_blank = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (secret, account_sid, from_number) = match provider {
        Provider::Groq => (config.groq_api_key.as_ref()?.non_blank()?, None, None),
        Provider::Deepgram => (config.deepgram_api_key.as_ref()?.non_blank()?, None, None),
        Provider::Twilio => (
            config.twilio_auth_token.as_ref()?.non_blank()?,
            Some(non_blank(&config.twilio_account_sid)?),
            non_blank(&config.twilio_from_number),
        ),
    };
    Some(ResolvedKey {
        secret: secret.to_string(),
        source: KeySource::System,
        account_sid,
        from_number,
    })
}

/// The tenant's active key for `provider` (decrypted off the async
/// threads), else the server's environment key, else `None`. A saved key
/// that no longer opens is an error (`KEY_UNREADABLE`), not a silent switch
/// to the server's key.
pub async fn resolve(
    state: &AppState,
    user_id: &str,
    provider: Provider,
) -> Result<Option<ResolvedKey>, ApiError> {
    let vault = state.vault.clone();
    let uid = user_id.to_string();
    let own = state
        .db
        .read(move |c| store::resolve_own(c, &vault, &uid, provider))
        .await?;
    Ok(own.or_else(|| system_key(&state.config, provider)))
}

/// Records that a call used the tenant's key (moves `last_used_at`); a
/// no-op for system keys and for a tenant without a saved key.
pub async fn mark_used(
    state: &AppState,
    user_id: &str,
    provider: Provider,
) -> Result<(), ApiError> {
    let uid = user_id.to_string();
    state
        .db
        .write(move |c| store::touch(c, &uid, provider).map_err(ApiError::from))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::Secret;

    #[test]
    fn provider_names_parse_loosely_and_print_exactly() {
        assert_eq!(Provider::parse(" GROQ "), Some(Provider::Groq));
        assert_eq!(Provider::parse("twilio"), Some(Provider::Twilio));
        assert_eq!(Provider::parse("openai"), None);
        assert_eq!(
            serde_json::to_value(Provider::Deepgram).unwrap(),
            "deepgram"
        );
        assert_eq!(serde_json::to_value(KeySource::System).unwrap(), "system");
    }

    #[test]
    fn resolved_keys_never_print_the_secret() {
        let k = ResolvedKey {
            secret: "gsk_do_not_print_me_0000".into(),
            source: KeySource::User,
            account_sid: None,
            from_number: None,
        };
        let shown = format!("{k:?}");
        assert!(!shown.contains("do_not_print"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn system_keys_come_from_the_config_and_blank_means_none() {
        let mut c = Config::for_data_dir("/tmp/unused");
        assert!(system_key(&c, Provider::Groq).is_none());
        c.groq_api_key = Some(Secret::from("  "));
        assert!(system_key(&c, Provider::Groq).is_none());
        c.groq_api_key = Some(Secret::from(" gsk_server "));
        let k = system_key(&c, Provider::Groq).unwrap();
        assert_eq!(
            (k.secret.as_str(), k.source),
            ("gsk_server", KeySource::System)
        );
        // Twilio needs the SID as well as the token.
        c.twilio_auth_token = Some(Secret::from("tok"));
        assert!(system_key(&c, Provider::Twilio).is_none());
        c.twilio_account_sid = Some("AC123".into());
        c.twilio_from_number = Some("+14155550123".into());
        let k = system_key(&c, Provider::Twilio).unwrap();
        assert_eq!(k.account_sid.as_deref(), Some("AC123"));
        assert_eq!(k.from_number.as_deref(), Some("+14155550123"));
    }
}
