//! Deepgram: a key works when it may list its projects.

use std::time::Duration;

use axum::http::{header, HeaderValue};

use super::speech::{Heard, Listening, SpeechError};
use super::{join, run_check, KeyCheck};

/// `GET {base}/v1/projects` with `Authorization: Token <key>`.
pub async fn check_key(
    client: &reqwest::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) -> KeyCheck {
    let Ok(mut auth) = HeaderValue::from_str(&format!("Token {key}")) else {
        return KeyCheck::Unsendable;
    };
    // Kept out of any debug output of the request.
    auth.set_sensitive(true);
    let request = client
        .get(join(base_url, "v1/projects"))
        .header(header::AUTHORIZATION, auth)
        .timeout(timeout);
    run_check(request, timeout).await
}

/// How live transcription is asked for (`/v1/listen`'s query).
#[derive(Debug, Clone)]
pub struct ListenParams<'a> {
    pub model: &'a str,
    pub language: Option<&'a str>,
    /// `linear16` (16-bit little-endian PCM) or `mulaw`.
    pub encoding: &'a str,
    pub sample_rate: u32,
    /// Milliseconds of silence that end an utterance (`speech_final`).
    pub endpointing_ms: u32,
}

/// Reads one of Deepgram's live messages; `None` for the ones we do not
/// use (`Metadata`) or cannot read.
pub fn parse_heard(text: &str) -> Option<Heard> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match v.get("type")?.as_str()? {
        "SpeechStarted" => Some(Heard::SpeechStarted),
        "UtteranceEnd" => Some(Heard::UtteranceEnd),
        "Results" => {
            let text = v
                .get("channel")?
                .get("alternatives")?
                .get(0)?
                .get("transcript")?
                .as_str()?
                .trim()
                .to_string();
            let flag = |name: &str| {
                v.get(name)
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            };
            Some(Heard::Transcript {
                text,
                is_final: flag("is_final"),
                speech_final: flag("speech_final"),
            })
        }
        _ => None,
    }
}

/// Deepgram wants a keep-alive within 10 s of silence on the socket.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// `base` as the WebSocket URL of `path` (`https` → `wss`, `http` → `ws`).
pub(crate) fn ws_url(base: &str, path: &str) -> String {
    let joined = join(base, path);
    if let Some(rest) = joined.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = joined.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        joined
    }
}

/// Opens Deepgram's live transcription, `GET {base}/v1/listen` upgraded to a
/// WebSocket with `Authorization: Token <key>`, for mono audio in
/// `params.encoding` at `params.sample_rate`, with interim results, endpointing and voice
/// activity events.
pub async fn listen(
    base_url: &str,
    key: &str,
    params: &ListenParams<'_>,
    timeout: Duration,
) -> Result<Listening, SpeechError> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let mut query = vec![
        ("encoding", params.encoding.to_string()),
        ("sample_rate", params.sample_rate.to_string()),
        ("channels", "1".to_string()),
        ("model", params.model.to_string()),
        ("interim_results", "true".to_string()),
        ("endpointing", params.endpointing_ms.to_string()),
        ("vad_events", "true".to_string()),
        ("utterance_end_ms", "1000".to_string()),
        ("smart_format", "true".to_string()),
    ];
    if let Some(lang) = params.language {
        query.push(("language", lang.to_string()));
    }
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect();
    let url = format!("{}?{}", ws_url(base_url, "v1/listen"), query.join("&"));
    let mut request = url
        .into_client_request()
        .map_err(|_| SpeechError::Unreachable)?;
    let Ok(mut auth) = HeaderValue::from_str(&format!("Token {key}")) else {
        return Err(SpeechError::Unsendable);
    };
    auth.set_sensitive(true);
    request.headers_mut().insert(header::AUTHORIZATION, auth);
    let connected = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await;
    let (socket, _) = match connected {
        Err(_) => return Err(SpeechError::Timeout),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            return Err(SpeechError::Refused(r.status().as_u16()))
        }
        Ok(Err(_)) => return Err(SpeechError::Unreachable),
        Ok(Ok(s)) => s,
    };
    let (mut sink, mut stream) = socket.split();
    let (audio_tx, mut audio_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let (heard_tx, heard_rx) = tokio::sync::mpsc::channel::<Heard>(64);
    tokio::spawn(async move {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        loop {
            tokio::select! {
                chunk = audio_rx.recv() => match chunk {
                    Some(pcm) => {
                        if sink.send(Message::Binary(pcm.into())).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let _ = sink.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await;
                        let _ = sink.close().await;
                        break;
                    }
                },
                _ = keep_alive.tick() => {
                    if sink.send(Message::Text(r#"{"type":"KeepAlive"}"#.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                if let Some(h) = parse_heard(&text) {
                    if heard_tx.send(h).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(Listening {
        audio: audio_tx,
        heard: heard_rx,
    })
}

/// Percent-encodes a query value (model names and languages are plain,
/// but a tenant types them).
fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The largest piece of speech read for one sentence: a minute of 16 kHz
/// audio is under 2 MB.
const MAX_SPEECH_BYTES: usize = 8 * 1024 * 1024;

/// Where and how speech is made.
#[derive(Clone, Copy)]
pub struct SpeakTarget<'a> {
    pub base_url: &'a str,
    pub key: &'a str,
    /// Deepgram's model name for the voice (`aura-2-helena-en`).
    pub voice: &'a str,
    /// `linear16` or `mulaw`.
    pub encoding: &'a str,
    pub sample_rate: u32,
    pub timeout: Duration,
}

/// Deepgram's text to speech, `POST {base}/v1/speak?model=…&encoding=…&sample_rate=…`
/// with `{"text": …}`: the speech as mono audio in that encoding, handed
/// to `out` chunk by chunk as it arrives (so the first audio goes out
/// before the last is made). Returns the bytes sent.
pub async fn speak(
    client: &reqwest::Client,
    to: &SpeakTarget<'_>,
    text: &str,
    out: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<usize, SpeechError> {
    use futures_util::StreamExt;
    let SpeakTarget {
        base_url,
        key,
        voice,
        encoding,
        sample_rate,
        timeout,
    } = *to;
    // μ-law samples are one byte; PCM samples two, never split.
    let sample_bytes = if encoding == "mulaw" { 1 } else { 2 };
    let Ok(mut auth) = HeaderValue::from_str(&format!("Token {key}")) else {
        return Err(SpeechError::Unsendable);
    };
    auth.set_sensitive(true);
    let url = format!(
        "{}?model={}&encoding={}&sample_rate={sample_rate}&container=none",
        join(base_url, "v1/speak"),
        url_escape(voice),
        url_escape(encoding)
    );
    let response = client
        .post(url)
        .header(header::AUTHORIZATION, auth)
        .json(&serde_json::json!({ "text": text }))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| SpeechError::from_request(&e))?;
    if !response.status().is_success() {
        return Err(SpeechError::Refused(response.status().as_u16()));
    }
    let mut body = response.bytes_stream();
    let mut sent = 0usize;
    // An odd byte left over from one chunk starts the next: samples are
    // two bytes and must not be split between frames.
    let mut carry: Option<u8> = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            if e.is_timeout() {
                SpeechError::Timeout
            } else {
                SpeechError::BadReply
            }
        })?;
        let mut bytes = Vec::with_capacity(chunk.len() + 1);
        bytes.extend(carry.take());
        bytes.extend_from_slice(&chunk);
        if bytes.len() % sample_bytes == 1 {
            carry = bytes.pop();
        }
        sent += bytes.len();
        if sent > MAX_SPEECH_BYTES {
            return Err(SpeechError::BadReply);
        }
        if !bytes.is_empty() && out.send(bytes).await.is_err() {
            break;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_messages_read_as_deepgram_sends_them() {
        let results = r#"{"type":"Results","channel_index":[0,1],"duration":1.2,"start":0.0,
            "is_final":true,"speech_final":true,
            "channel":{"alternatives":[{"transcript":" Book me for Tuesday ","confidence":0.98}]}}"#;
        assert_eq!(
            parse_heard(results),
            Some(Heard::Transcript {
                text: "Book me for Tuesday".into(),
                is_final: true,
                speech_final: true
            })
        );
        assert_eq!(
            parse_heard(r#"{"type":"SpeechStarted","channel":[0],"timestamp":1.5}"#),
            Some(Heard::SpeechStarted)
        );
        assert_eq!(parse_heard(r#"{"type":"Metadata"}"#), None);
        assert_eq!(parse_heard("not json"), None);
    }

    #[test]
    fn websocket_urls_follow_the_base() {
        assert_eq!(
            ws_url("https://api.deepgram.com", "v1/listen"),
            "wss://api.deepgram.com/v1/listen"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:9/", "/v1/listen"),
            "ws://127.0.0.1:9/v1/listen"
        );
        assert_eq!(url_escape("nova-3 x&y"), "nova-3%20x%26y");
    }
}
