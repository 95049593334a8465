//! A client for OpenAI-compatible chat completions (`POST {base}/chat/completions`),
//! the protocol of Groq and of the model servers an air-gapped install runs.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::{read_capped, CappedRead};
use crate::http::error::ApiError;

/// The most of a provider's answer read into memory: a reply is a few
/// kilobytes, and a misbehaving server must not exhaust ours.
const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

/// Replies are spoken to a caller, so a few sentences; this also bounds what
/// one message costs the tenant.
const MAX_REPLY_TOKENS: u32 = 512;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Where a chat request goes and how it authenticates.
pub struct Target<'a> {
    /// The name shown to the tenant when the provider fails (`groq`, `openai_compatible`).
    pub provider: &'a str,
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
    pub model: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LlmError {
    #[error("did not answer within {0} seconds")]
    Timeout(u64),
    #[error("could not be reached")]
    Unreachable,
    #[error("refused the API key (HTTP {0})")]
    Unauthorized(u16),
    #[error("is rate limiting requests (HTTP 429)")]
    RateLimited,
    #[error("failed (HTTP {0})")]
    Status(u16),
    #[error("sent an answer that is not a chat completion")]
    BadReply,
}

impl LlmError {
    /// The 502 the tenant sees, naming the provider. Never the provider's own
    /// error text: it may quote part of the key.
    pub fn into_api_error(self, provider: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "PROVIDER_ERROR",
            format!("The LLM provider ({provider}) {self}"),
        )
        .with("provider", json!(provider))
    }
}

/// The `/chat/completions` URL under `base`.
pub fn completions_url(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

/// Sends `messages` and returns the assistant's reply text.
pub async fn chat(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<String, LlmError> {
    let body = json!({
        "model": target.model,
        "messages": messages,
        "max_tokens": MAX_REPLY_TOKENS,
        "stream": false,
    });
    // Replies may take longer than the client's default for provider calls.
    let mut request = client
        .post(completions_url(target.base_url))
        .timeout(Duration::from_secs(timeout_secs))
        .json(&body);
    if let Some(key) = target.api_key {
        request = request.bearer_auth(key);
    }
    let send_error = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout(timeout_secs)
        } else {
            LlmError::Unreachable
        }
    };
    let mut response = request.send().await.map_err(send_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(match status.as_u16() {
            401 | 403 => LlmError::Unauthorized(status.as_u16()),
            429 => LlmError::RateLimited,
            code => LlmError::Status(code),
        });
    }
    let raw = read_capped(&mut response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            CappedRead::TooLarge => LlmError::BadReply,
            CappedRead::Failed(e) => send_error(e),
        })?;
    reply_text(&raw).ok_or(LlmError::BadReply)
}

/// `choices[0].message.content`, trimmed, when it says something.
fn reply_text(raw: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    let text = value
        .get("choices")?
        .get(0)?
        .get("message")?
        .get("content")?
        .as_str()?
        .trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_joins_without_doubling_slashes() {
        assert_eq!(
            completions_url("https://api.groq.com/openai/v1/"),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert_eq!(
            completions_url("http://10.0.0.5:8000/v1"),
            "http://10.0.0.5:8000/v1/chat/completions"
        );
    }

    #[test]
    fn the_reply_is_the_first_choice_and_must_say_something() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"  Hi there \n"}}]}"#;
        assert_eq!(reply_text(ok).as_deref(), Some("Hi there"));
        assert_eq!(reply_text(br#"{"choices":[]}"#), None);
        assert_eq!(
            reply_text(br#"{"choices":[{"message":{"content":"  "}}]}"#),
            None
        );
        assert_eq!(reply_text(b"<html>busy</html>"), None);
    }

    #[test]
    fn the_tenant_sees_the_provider_named_and_never_its_text() {
        let e = LlmError::Status(500).into_api_error("groq");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code, "PROVIDER_ERROR");
        assert_eq!(e.message, "The LLM provider (groq) failed (HTTP 500)");
        assert_eq!(e.extra["provider"], "groq");
    }
}
