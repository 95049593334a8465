//! A client for OpenAI-compatible chat completions (`POST {base}/chat/completions`),
//! the protocol of Groq and of the model servers an air-gapped install runs.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::{read_capped, CappedRead};

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

/// The tokens one request used, as the provider counted them (its
/// `usage` object); a provider that sends none counts as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The assistant's answer to a chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub usage: Usage,
}

/// The `/chat/completions` URL under `base`.
pub fn completions_url(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

/// Sends `messages` and returns the assistant's reply and what it used.
pub async fn chat(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<Reply, LlmError> {
    let reply = chat_uncounted(client, target, messages, timeout_secs).await;
    let outcome = match &reply {
        Ok(_) => "ok",
        Err(LlmError::Timeout(_)) => "timeout",
        Err(LlmError::Unreachable) => "unreachable",
        Err(LlmError::Unauthorized(_) | LlmError::RateLimited) => "refused",
        Err(LlmError::Status(_)) => "error",
        Err(LlmError::BadReply) => "bad_reply",
    };
    super::count_request("llm", outcome);
    reply
}

async fn chat_uncounted(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<Reply, LlmError> {
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
    parse_reply(&raw).ok_or(LlmError::BadReply)
}

/// `choices[0].message.content`, trimmed, when it says something, with
/// `usage.prompt_tokens` and `usage.completion_tokens` (0 when absent or
/// not a count).
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    let text = reply_text(&value)?;
    let count = |name: &str| {
        value
            .get("usage")
            .and_then(|u| u.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some(Reply {
        text,
        usage: Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
        },
    })
}

fn reply_text(value: &Value) -> Option<String> {
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
        let text = |raw: &[u8]| parse_reply(raw).map(|r| r.text);
        assert_eq!(text(ok).as_deref(), Some("Hi there"));
        assert_eq!(text(br#"{"choices":[]}"#), None);
        assert_eq!(text(br#"{"choices":[{"message":{"content":"  "}}]}"#), None);
        assert_eq!(text(b"<html>busy</html>"), None);
    }

    #[test]
    fn usage_is_read_when_given_and_zero_when_not() {
        let with = br#"{"choices":[{"message":{"content":"Hi"}}],
                        "usage":{"prompt_tokens":120,"completion_tokens":7,"total_tokens":127}}"#;
        assert_eq!(
            parse_reply(with).unwrap().usage,
            Usage {
                prompt_tokens: 120,
                completion_tokens: 7
            }
        );
        let without = br#"{"choices":[{"message":{"content":"Hi"}}]}"#;
        assert_eq!(parse_reply(without).unwrap().usage, Usage::default());
        let odd = br#"{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":-3,"completion_tokens":"9"}}"#;
        assert_eq!(parse_reply(odd).unwrap().usage, Usage::default());
    }
}
