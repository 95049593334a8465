//! Any message a browser or Twilio sends on a voice socket: audio passes
//! through byte for byte when it is well formed, everything else is an
//! error frame or ignored as the protocol says — and the agent's reply is
//! cut into sentences only where one ends.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{read_frame, sentence_end, Frame, Read};

/// The largest frame read (a larger one is an error frame).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Browser audio: 16-bit PCM at 16 kHz, 10 to 200 ms a frame.
const BROWSER_FRAMES: std::ops::RangeInclusive<usize> = 320..=6400;

#[derive(Arbitrary, Debug)]
enum Message {
    Text(String),
    Binary(Vec<u8>),
    /// A binary frame of `len` copies of one byte (sizes past the limit).
    Long {
        byte: u8,
        len: u32,
    },
    Ping(Vec<u8>),
    Close,
    /// A Twilio `media` event carrying these bytes.
    Media {
        track: Option<String>,
        audio: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    twilio: bool,
    message: Message,
}

fn check_sentence_end(text: &str) {
    let bytes = text.as_bytes();
    let first = (1..bytes.len()).find(|&i| {
        matches!(bytes[i - 1], b'.' | b'!' | b'?' | b'\n') && bytes[i].is_ascii_whitespace()
    });
    let cut = sentence_end(text);
    assert_eq!(cut, first, "{text:?}");
    if let Some(i) = cut {
        assert!(text.is_char_boundary(i));
    }
}

fuzz_target!(|input: Input| {
    let twilio = input.twilio;
    match input.message {
        Message::Close => assert_eq!(read_frame(twilio, Frame::Close), Read::End),
        Message::Ping(b) => assert_eq!(read_frame(twilio, Frame::Ping(b)), Read::Nothing),
        Message::Binary(pcm) => check_binary(twilio, pcm),
        Message::Long { byte, len } => check_binary(twilio, vec![byte; len as usize % 200_000]),
        Message::Text(text) => {
            check_sentence_end(&text);
            let read = read_frame(twilio, Frame::Text(text.clone()));
            if text.len() > MAX_FRAME_BYTES {
                assert_eq!(read, Read::Bad("FRAME_TOO_LARGE"));
                return;
            }
            let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
            let field = |name: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(|v| v.as_str())
            };
            match read {
                Read::Text(t) => {
                    assert!(!twilio);
                    assert_eq!(field("type"), Some("text"));
                    assert_eq!(field("text").map(str::trim), Some(t.as_str()));
                    assert!(!t.is_empty() && t.chars().count() <= 4000);
                }
                Read::End if twilio => assert_eq!(field("event"), Some("stop")),
                Read::End => assert_eq!(field("type"), Some("end")),
                Read::Audio(audio) => {
                    assert!(twilio && field("event") == Some("media") && !audio.is_empty());
                    let payload = parsed.as_ref().and_then(|v| v["media"]["payload"].as_str());
                    let decoded = payload
                        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
                    assert_eq!(decoded, Some(audio));
                }
                Read::Nothing => assert!(twilio),
                Read::Bad(code) => {
                    assert!(matches!(code, "INVALID_FRAME" | "INVALID_AUDIO"), "{code}")
                }
            }
        }
        Message::Media { track, audio } => {
            let mut media = serde_json::json!({
                "payload": base64::engine::general_purpose::STANDARD.encode(&audio),
            });
            if let Some(t) = &track {
                media["track"] = serde_json::Value::from(t.as_str());
            }
            let event = serde_json::json!({"event": "media", "streamSid": "MZ0", "media": media});
            let text = event.to_string();
            let read = read_frame(twilio, Frame::Text(text.clone()));
            if text.len() > MAX_FRAME_BYTES {
                assert_eq!(read, Read::Bad("FRAME_TOO_LARGE"));
            } else if !twilio {
                assert_eq!(read, Read::Bad("INVALID_FRAME"));
            } else if track.as_deref().is_some_and(|t| t != "inbound") {
                assert_eq!(read, Read::Nothing);
            } else if audio.is_empty() {
                assert_eq!(read, Read::Bad("INVALID_AUDIO"));
            } else {
                assert_eq!(read, Read::Audio(audio));
            }
        }
    }
});

fn check_binary(twilio: bool, pcm: Vec<u8>) {
    let len = pcm.len();
    let read = read_frame(twilio, Frame::Binary(pcm.clone()));
    if len > MAX_FRAME_BYTES {
        assert_eq!(read, Read::Bad("FRAME_TOO_LARGE"));
    } else if twilio {
        // Twilio's audio comes in `media` events; a binary frame is no event.
        assert_eq!(read, Read::Nothing);
    } else if len % 2 == 0 && BROWSER_FRAMES.contains(&len) {
        assert_eq!(read, Read::Audio(pcm));
    } else {
        assert_eq!(read, Read::Bad("INVALID_AUDIO"));
    }
}
