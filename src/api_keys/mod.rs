//! Which provider key a tenant's request uses.
// Replaced by the key vault (issue 4) at merge.

use serde::{Deserialize, Serialize};

use crate::http::error::ApiError;
use crate::http::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Groq,
    Deepgram,
    Twilio,
}

/// Whose key it is: the tenant's own, or the server's from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    User,
    System,
}

pub struct ResolvedKey {
    pub secret: String,
    pub source: KeySource,
    pub account_sid: Option<String>,
    pub from_number: Option<String>,
}

/// The tenant's key, else the server's, else `None`. Until the vault lands
/// only the server's Groq key exists.
pub async fn resolve(
    state: &AppState,
    _user_id: &str,
    provider: Provider,
) -> Result<Option<ResolvedKey>, ApiError> {
    let system = match provider {
        Provider::Groq => state.config.groq_api_key.as_deref(),
        Provider::Deepgram | Provider::Twilio => None,
    };
    Ok(system
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|secret| ResolvedKey {
            secret: secret.to_string(),
            source: KeySource::System,
            account_sid: None,
            from_number: None,
        }))
}

/// Records that the tenant's key was used; nothing to record without the vault.
pub async fn mark_used(
    _state: &AppState,
    _user_id: &str,
    _provider: Provider,
) -> Result<(), ApiError> {
    Ok(())
}
