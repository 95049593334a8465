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

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

/// The error of an answer that is not a success.
fn refused(status: reqwest::StatusCode) -> Result<(), LlmError> {
    if status.is_success() {
        return Ok(());
    }
    Err(match status.as_u16() {
        401 | 403 => LlmError::Unauthorized(status.as_u16()),
        429 => LlmError::RateLimited,
        code => LlmError::Status(code),
    })
}

/// A `POST /chat/completions` of `body`, with the key when there is one.
/// Replies may take longer than the client's default for provider calls.
fn completion_request(
    client: &reqwest::Client,
    target: &Target<'_>,
    body: Value,
    timeout_secs: u64,
) -> reqwest::RequestBuilder {
    let request = client
        .post(completions_url(target.base_url))
        .timeout(Duration::from_secs(timeout_secs))
        .json(&body);
    match target.api_key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// Sends `messages` and returns the assistant's reply and what it used.
pub async fn chat(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<Reply, LlmError> {
    let reply = chat_uncounted(client, target, messages, timeout_secs).await;
    count(&reply);
    reply
}

/// Counts a request by how it ended (`providers::count_request`).
fn count<T>(result: &Result<T, LlmError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(LlmError::Timeout(_)) => "timeout",
        Err(LlmError::Unreachable) => "unreachable",
        Err(LlmError::Unauthorized(_) | LlmError::RateLimited) => "refused",
        Err(LlmError::Status(_)) => "error",
        Err(LlmError::BadReply) => "bad_reply",
    };
    super::count_request("llm", outcome);
}

async fn chat_uncounted(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<Reply, LlmError> {
    let request = completion_request(
        client,
        target,
        json!({
            "model": target.model,
            "messages": messages,
            "max_tokens": MAX_REPLY_TOKENS,
            "stream": false,
        }),
        timeout_secs,
    );
    let send_error = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout(timeout_secs)
        } else {
            LlmError::Unreachable
        }
    };
    let mut response = request.send().await.map_err(send_error)?;
    refused(response.status())?;
    let raw = read_capped(&mut response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            CappedRead::TooLarge => LlmError::BadReply,
            CappedRead::Failed(e) => send_error(e),
        })?;
    parse_reply(&raw).ok_or(LlmError::BadReply)
}

/// What a streamed chat completion sends, piece by piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    /// More of the reply's text (`choices[0].delta.content`).
    Text(String),
    /// The end, with what it used (the last chunk's `usage`, asked for with
    /// `stream_options.include_usage`; 0 when the server sends none).
    Done(Usage),
    /// The stream broke off or sent something unreadable.
    Failed(LlmError),
}

/// Sends `messages` with `"stream": true` and returns the reply as it comes
/// (server-sent events, `data: {…}` lines ending with `data: [DONE]`), so a
/// voice call can speak its first sentence before the last is written.
pub async fn chat_stream(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<tokio::sync::mpsc::Receiver<Streamed>, LlmError> {
    // Counted by how the stream opened; a break mid-stream reaches the
    // caller as `Streamed::Failed`.
    let opened = chat_stream_uncounted(client, target, messages, timeout_secs).await;
    count(&opened);
    opened
}

async fn chat_stream_uncounted(
    client: &reqwest::Client,
    target: &Target<'_>,
    messages: &[ChatMessage],
    timeout_secs: u64,
) -> Result<tokio::sync::mpsc::Receiver<Streamed>, LlmError> {
    use futures_util::StreamExt;
    let request = completion_request(
        client,
        target,
        json!({
            "model": target.model,
            "messages": messages,
            "max_tokens": MAX_REPLY_TOKENS,
            "stream": true,
            "stream_options": { "include_usage": true },
        }),
        timeout_secs,
    );
    let failed = move |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout(timeout_secs)
        } else {
            LlmError::Unreachable
        }
    };
    let response = request.send().await.map_err(failed)?;
    refused(response.status())?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut body = response.bytes_stream();
    tokio::spawn(async move {
        let mut pending = Vec::<u8>::new();
        let mut usage = Usage::default();
        let mut read = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Streamed::Failed(failed(e))).await;
                    return;
                }
            };
            read += chunk.len();
            if read > MAX_RESPONSE_BYTES {
                let _ = tx.send(Streamed::Failed(LlmError::BadReply)).await;
                return;
            }
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    let _ = tx.send(Streamed::Done(usage)).await;
                    return;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    let _ = tx.send(Streamed::Failed(LlmError::BadReply)).await;
                    return;
                };
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    let count = |n: &str| u.get(n).and_then(Value::as_u64).unwrap_or(0);
                    usage = Usage {
                        prompt_tokens: count("prompt_tokens"),
                        completion_tokens: count("completion_tokens"),
                    };
                }
                let delta = v
                    .get("choices")
                    .and_then(|c| c.get(0))
                    .and_then(|c| c.get("delta"))
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str);
                if let Some(text) = delta.filter(|t| !t.is_empty()) {
                    if tx.send(Streamed::Text(text.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The connection ended without [DONE]: what came counts.
        let _ = tx.send(Streamed::Done(usage)).await;
    });
    Ok(rx)
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
