//! Clients for the outside services a call talks to.

pub mod audio;
pub mod deepgram;
pub mod groq;
pub mod llm;
pub mod llm_prices;
pub mod openai_speech;
pub mod outbound;
pub mod speech;
pub mod twilio;

use std::time::Duration;

use serde::Serialize;

/// Connecting is quick or not happening at all: a closed port or a dead host
/// should fail fast even when the reply itself may take longer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts one request to a provider (`twilio`, `llm`) by how it ended:
/// `ok`, `timeout`, `unreachable`, `refused` (a 4xx: a key, a number, a
/// rate limit), `error` (a 5xx) or `bad_reply`.
pub fn count_request(provider: &'static str, outcome: &'static str) {
    metrics::counter!("voxflow_provider_requests_total", "provider" => provider, "outcome" => outcome)
        .increment(1);
}

/// The one client for every provider call: bounded in time (a request may
/// set a longer timeout of its own), never following redirects (a redirect
/// would carry the key to wherever it points), resolving names through
/// `resolver` (which keeps tenants' URLs off this host's networks).
pub fn http_client(timeout: Duration, resolver: outbound::GuardedResolver) -> reqwest::Client {
    let built = reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(resolver))
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("voxflow/", env!("CARGO_PKG_VERSION")))
        .build();
    match built {
        Ok(client) => client,
        Err(err) => {
            // Only a TLS backend that cannot start fails here; the default
            // client reports the same problem on first use.
            tracing::error!(%err, "cannot build the provider HTTP client");
            reqwest::Client::new()
        }
    }
}

/// What a provider said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Valid,
    /// The provider refused the key (401 or 403), or, for Twilio, does not
    /// know the account.
    Invalid {
        status: u16,
    },
    /// The provider could not be asked: it proves nothing about the key.
    Unreachable {
        reason: String,
    },
    /// An answer that is neither yes nor no (a 404 from a wrong base URL, a
    /// 429): the key is not known to be bad.
    Unexpected {
        status: u16,
    },
    /// The key holds characters no HTTP header may carry: it cannot work.
    Unsendable,
}

/// The outcome's name in a response: `valid`, `invalid`, `unreachable`,
/// `unexpected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Valid,
    Invalid,
    Unreachable,
    Unexpected,
}

impl KeyCheck {
    pub fn status(&self) -> CheckStatus {
        match self {
            KeyCheck::Valid => CheckStatus::Valid,
            KeyCheck::Invalid { .. } | KeyCheck::Unsendable => CheckStatus::Invalid,
            KeyCheck::Unreachable { .. } => CheckStatus::Unreachable,
            KeyCheck::Unexpected { .. } => CheckStatus::Unexpected,
        }
    }

    /// A sentence for the tenant, naming the provider. It never quotes the
    /// provider's own error text, which may echo part of the key.
    pub fn message(&self, provider: &str) -> String {
        match self {
            KeyCheck::Valid => format!("{provider} accepted the key"),
            KeyCheck::Invalid { status } => {
                format!("{provider} rejected the key (HTTP {status}): check it, or save a new one")
            }
            KeyCheck::Unreachable { reason } => format!(
                "{provider} could not be reached ({reason}); the key was not checked, try again later"
            ),
            KeyCheck::Unexpected { status } => format!(
                "{provider} answered HTTP {status}, which says nothing about the key; try again later"
            ),
            KeyCheck::Unsendable => {
                format!("the {provider} key holds characters that cannot be sent in a request")
            }
        }
    }
}

/// Sends a key check and sorts the answer. Only the status is read: the
/// body is not needed, and a hostile server cannot make us buffer it.
pub(crate) async fn run_check(request: reqwest::RequestBuilder, timeout: Duration) -> KeyCheck {
    match request.send().await {
        Ok(response) => classify(response.status().as_u16()),
        Err(e) if e.is_builder() => KeyCheck::Unsendable,
        Err(e) => KeyCheck::Unreachable {
            reason: if e.is_timeout() {
                format!("no answer within {} seconds", timeout.as_secs())
            } else if e.is_connect() {
                "the connection failed".to_string()
            } else {
                "the request failed".to_string()
            },
        },
    }
}

fn classify(status: u16) -> KeyCheck {
    match status {
        200..=299 => KeyCheck::Valid,
        401 | 403 => KeyCheck::Invalid { status },
        500..=599 => KeyCheck::Unreachable {
            reason: format!("it answered HTTP {status}"),
        },
        _ => KeyCheck::Unexpected { status },
    }
}

/// Why a provider's answer could not be read whole.
pub(crate) enum CappedRead {
    /// Longer than the caller allows.
    TooLarge,
    /// The connection failed or timed out mid-answer.
    Failed(reqwest::Error),
}

/// The body of `response`, up to `max` bytes: a reply is small, and a
/// misbehaving server must not exhaust our memory.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, CappedRead> {
    let mut raw = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedRead::Failed)? {
        if raw.len() + chunk.len() > max {
            return Err(CappedRead::TooLarge);
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// `base` and `path` joined with exactly one slash.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sort_into_valid_invalid_unreachable() {
        assert_eq!(classify(200), KeyCheck::Valid);
        assert_eq!(classify(401), KeyCheck::Invalid { status: 401 });
        assert_eq!(classify(403), KeyCheck::Invalid { status: 403 });
        assert!(matches!(classify(503), KeyCheck::Unreachable { .. }));
        assert_eq!(classify(404), KeyCheck::Unexpected { status: 404 });
        assert_eq!(classify(429), KeyCheck::Unexpected { status: 429 });
    }

    #[test]
    fn an_unreachable_provider_is_not_called_a_bad_key() {
        let m = KeyCheck::Unreachable {
            reason: "the connection failed".into(),
        }
        .message("Groq");
        assert!(m.contains("could not be reached"));
        assert!(!m.contains("rejected"));
        assert!(KeyCheck::Invalid { status: 401 }
            .message("Groq")
            .contains("rejected"));
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join("http://h/v1/", "/models"), "http://h/v1/models");
        assert_eq!(join("http://h", "v1/projects"), "http://h/v1/projects");
    }
}
