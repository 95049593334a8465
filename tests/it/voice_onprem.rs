//! Voice calls through on-prem speech servers (`openai_compatible`), against
//! a stand-in that speaks the real OpenAI audio API over HTTP:
//! `POST /v1/audio/transcriptions` takes a multipart form whose `file` is a
//! WAV (the stand-in parses the form and the WAV header, and refuses
//! anything but 16 kHz 16-bit mono PCM) and answers `{"text": …}`;
//! `POST /v1/audio/speech` answers `pcm` (24 kHz) or a streamed `wav`
//! (22.05 kHz, as Piper-style voices are) as asked. The caller's audio is
//! espeak-ng speech followed by silence, so VoxFlow's own voice-activity
//! detector has to find where each utterance starts and ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::agents::{create_agent, db, set_tier, Tenant};
use crate::auth::post as api_post;
use crate::common::TestApp;
use crate::voice::{
    connect, mulaw_utterance, read_until, send_audio, send_media, started_call,
    stop_stream_billed_at_42_seconds, streaming_llm, transcript_of, twilio_until, utterance, Heard,
    Socket,
};
use voxflow::providers::openai_speech::SpeechFormat;

const SPEECH_KEY: &str = "onprem-speech-key-0123456789";
const STT_MODEL: &str = "Systran/faster-whisper-small";
const TTS_VOICE: &str = "af_heart";
const TTS_MODEL: &str = "kokoro";
/// The rate of the stand-in's `wav` voice: not the call's, so it must be
/// read from the header and resampled.
const WAV_RATE: u32 = 22_050;

/// One transcription request as the stand-in read it.
#[derive(Debug, Clone)]
pub(crate) struct Transcription {
    pub(crate) seconds: f64,
    pub(crate) model: String,
    pub(crate) response_format: Option<String>,
    /// The loudest sample: silence sent as an utterance would be 0.
    pub(crate) peak: i16,
}

#[derive(Default)]
pub(crate) struct OnPremState {
    /// What each utterance will be heard as, in order.
    script: Mutex<VecDeque<String>>,
    pub(crate) transcriptions: Mutex<Vec<Transcription>>,
    /// The JSON bodies of `/audio/speech`.
    pub(crate) speech_requests: Mutex<Vec<Value>>,
    ms_per_word: AtomicUsize,
    /// A status to answer transcriptions (or speech) with instead: 0 = none.
    fail_stt: AtomicU16,
    fail_tts: AtomicU16,
    /// Every request that reached the stand-in.
    pub(crate) requests: AtomicUsize,
}

pub(crate) struct OnPremStandIn {
    pub(crate) base: String,
    pub(crate) state: Arc<OnPremState>,
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {SPEECH_KEY}"))
}

/// The format and audio of a WAV file, or why it is not one this stand-in
/// (like faster-whisper's loader fed raw PCM) accepts.
fn read_wav(file: &[u8]) -> Result<(u32, u16, u16, &[u8]), String> {
    if file.len() < 12 || &file[0..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let riff_size = u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
    if riff_size + 8 != file.len() {
        return Err(format!(
            "RIFF size {riff_size} for a {}-byte file",
            file.len()
        ));
    }
    let mut at = 12;
    let mut fmt = None;
    while at + 8 <= file.len() {
        let id = &file[at..at + 4];
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = file
            .get(at + 8..at + 8 + size)
            .ok_or_else(|| format!("chunk {:?} runs past the end", String::from_utf8_lossy(id)))?;
        match id {
            b"fmt " => {
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                let byte_rate = u32::from_le_bytes(body[8..12].try_into().unwrap());
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if tag != 1 {
                    return Err(format!("format tag {tag}, not PCM"));
                }
                if byte_rate != rate * u32::from(channels) * u32::from(bits) / 8 {
                    return Err("inconsistent byte rate".into());
                }
                fmt = Some((rate, channels, bits));
            }
            b"data" => {
                let (rate, channels, bits) = fmt.ok_or("data before fmt")?;
                return Ok((rate, channels, bits, body));
            }
            _ => {}
        }
        at += 8 + size + (size & 1);
    }
    Err("no data chunk".into())
}

async fn transcriptions(
    State(s): State<Arc<OnPremState>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut file = None;
    let mut fields = std::collections::HashMap::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let named = field.file_name().is_some_and(|f| f.ends_with(".wav"));
            let typed = field.content_type() == Some("audio/wav");
            let bytes = field.bytes().await.unwrap();
            if !named || !typed {
                return (StatusCode::BAD_REQUEST, "file must be a .wav, audio/wav").into_response();
            }
            file = Some(bytes);
        } else {
            fields.insert(name, field.text().await.unwrap());
        }
    }
    let Some(file) = file else {
        return (StatusCode::BAD_REQUEST, "no file").into_response();
    };
    let (rate, channels, bits, data) = match read_wav(&file) {
        Ok(w) => w,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    if (rate, channels, bits) != (16_000, 1, 16) {
        return (
            StatusCode::BAD_REQUEST,
            format!("want 16 kHz 16-bit mono, got {rate} Hz {bits}-bit x{channels}"),
        )
            .into_response();
    }
    let peak = data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]).saturating_abs())
        .max()
        .unwrap_or(0);
    s.transcriptions.lock().unwrap().push(Transcription {
        seconds: data.len() as f64 / 32_000.0,
        model: fields.get("model").cloned().unwrap_or_default(),
        response_format: fields.get("response_format").cloned(),
        peak,
    });
    // What was said is used up even when the server then fails.
    let text = s.script.lock().unwrap().pop_front().unwrap_or_default();
    let failing = s.fail_stt.load(Ordering::SeqCst);
    if failing != 0 {
        return (
            StatusCode::from_u16(failing).unwrap(),
            Json(json!({"error": {"message": "model not loaded"}})),
        )
            .into_response();
    }
    Json(json!({ "text": format!(" {text}") })).into_response()
}

/// A tone at `rate` standing for `ms` of voice.
fn tone(ms: usize, rate: u32) -> Vec<u8> {
    let n = ms * rate as usize / 1000;
    (0..n)
        .flat_map(|i| {
            let v = ((i as f64 * 440.0 * std::f64::consts::TAU / f64::from(rate)).sin() * 8000.0)
                as i16;
            v.to_le_bytes()
        })
        .collect()
}

/// The speech, in pieces of about 100 ms, as a streaming server sends it.
fn streamed(bytes: Vec<u8>, piece: usize) -> Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(piece.max(2))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(pieces))
}

async fn speech(
    State(s): State<Arc<OnPremState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.speech_requests.lock().unwrap().push(body.clone());
    let failing = s.fail_tts.load(Ordering::SeqCst);
    if failing != 0 {
        return (StatusCode::from_u16(failing).unwrap(), "voice not found").into_response();
    }
    let (Some(text), Some(_), Some(_)) = (
        body["input"].as_str(),
        body["model"].as_str(),
        body["voice"].as_str(),
    ) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let ms = text.split_whitespace().count().max(1) * s.ms_per_word.load(Ordering::SeqCst);
    match body["response_format"].as_str() {
        Some("pcm") => {
            let pcm = tone(ms, 24_000);
            ([("content-type", "audio/pcm")], streamed(pcm, 4_800)).into_response()
        }
        Some("wav") => {
            // A streamed WAV: its sizes unknown when the header goes out.
            let mut wav = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
            wav.extend_from_slice(&16u32.to_le_bytes());
            wav.extend_from_slice(&1u16.to_le_bytes());
            wav.extend_from_slice(&1u16.to_le_bytes());
            wav.extend_from_slice(&WAV_RATE.to_le_bytes());
            wav.extend_from_slice(&(WAV_RATE * 2).to_le_bytes());
            wav.extend_from_slice(&2u16.to_le_bytes());
            wav.extend_from_slice(&16u16.to_le_bytes());
            wav.extend_from_slice(b"data\xff\xff\xff\xff");
            wav.extend(tone(ms, WAV_RATE));
            ([("content-type", "audio/wav")], streamed(wav, 4_411)).into_response()
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY.into_response(),
    }
}

impl OnPremStandIn {
    pub(crate) async fn start(ms_per_word: usize) -> OnPremStandIn {
        let state = Arc::new(OnPremState::default());
        state.ms_per_word.store(ms_per_word, Ordering::SeqCst);
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/speech", post(speech))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OnPremStandIn {
            base: format!("http://{addr}/v1"),
            state,
        }
    }

    pub(crate) fn script(&self, utterances: &[&str]) {
        *self.state.script.lock().unwrap() = utterances.iter().map(|s| s.to_string()).collect();
    }

    fn fail(&self, stt: u16, tts: u16) {
        self.state.fail_stt.store(stt, Ordering::SeqCst);
        self.state.fail_tts.store(tts, Ordering::SeqCst);
    }

    fn transcriptions(&self) -> Vec<Transcription> {
        self.state.transcriptions.lock().unwrap().clone()
    }
}

/// A loopback address where nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

/// A server whose speech servers are `stt` and `tts` (with the stand-in's
/// key) and whose LLM is the streaming stand-in at `llm`.
pub(crate) async fn onprem_app(
    stt: &str,
    tts: &str,
    llm: &str,
    format: SpeechFormat,
    more: impl FnOnce(&mut voxflow::config::Config),
) -> TestApp {
    let (stt, tts, llm) = (stt.to_string(), tts.to_string(), llm.to_string());
    TestApp::start_with(move |c| {
        c.speech_stt_base_url = Some(stt);
        c.speech_tts_base_url = Some(tts);
        c.speech_api_key = Some(SPEECH_KEY.into());
        c.speech_tts_model = TTS_MODEL.into();
        c.speech_tts_format = format;
        c.groq_base_url = llm;
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        more(c);
    })
    .await
}

/// The tenant's speech both ways through the on-prem servers.
pub(crate) async fn use_onprem_speech(app: &TestApp, t: &Tenant) {
    let (status, body) = api_post(
        app,
        "/api/config/service",
        Some(&t.token),
        json!({"stt_provider": "openai_compatible", "stt_model": STT_MODEL,
               "tts_provider": "openai_compatible", "tts_voice": TTS_VOICE}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A web call of a tenant using the on-prem speech servers, connected.
async fn onprem_call(app: &TestApp, email: &str) -> (Tenant, String, Socket) {
    let (t, run_id) = started_call(app, email).await;
    use_onprem_speech(app, &t).await;
    let socket = connect(app, &t.token, &run_id).await.expect("upgrade");
    (t, run_id, socket)
}

/// `secs` of espeak-ng speech followed by enough silence for the
/// voice-activity detector to end the utterance.
fn spoken(text: &str, secs: f64) -> Vec<u8> {
    utterance(text, secs + 0.8)
}

/// Reads until the final transcript of `role`, returning its text.
async fn final_of(socket: &mut Socket, heard: &mut Heard, role: &str) -> String {
    let v = read_until(socket, heard, |v| {
        v["type"] == "transcript" && v["role"] == role && v["final"] == true
    })
    .await;
    v["text"].as_str().unwrap().to_string()
}

/// When a frame arrived, and how much audio had arrived before it.
struct Mark {
    at: Instant,
    audio_before: usize,
}

/// Sends `pcm` as 20 ms frames in real time, reading what comes back
/// between them (into `heard`), like a browser that plays while it
/// records; notes the first text frame `mark` matches, and stops there when
/// `stop` is set. Returns the mark and the bytes sent.
async fn talk(
    socket: &mut Socket,
    heard: &mut Heard,
    pcm: &[u8],
    stop: bool,
    mark: impl Fn(&Value) -> bool,
) -> (Option<Mark>, usize) {
    let mut found = None;
    let mut sent = 0;
    for frame in pcm.chunks(640).filter(|f| f.len() >= 320) {
        socket
            .send(Message::Binary(frame.to_vec().into()))
            .await
            .unwrap();
        sent += frame.len();
        let next = Instant::now() + Duration::from_millis(20);
        while let Ok(msg) = tokio::time::timeout_at(next.into(), socket.next()).await {
            match msg.expect("open").unwrap() {
                Message::Binary(b) => heard.audio_bytes += b.len(),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if found.is_none() && mark(&v) {
                        found = Some(Mark {
                            at: Instant::now(),
                            audio_before: heard.audio_bytes,
                        });
                    }
                    heard.frames.push(v);
                }
                _ => {}
            }
        }
        if stop && found.is_some() {
            break;
        }
    }
    (found, sent)
}

async fn hang_up(socket: &mut Socket, heard: &mut Heard) -> Value {
    socket
        .send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .unwrap();
    read_until(socket, heard, |v| v["type"] == "ended").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onprem_voice_call_transcribes_wav_utterances_and_speaks_pcm() {
    let speech = OnPremStandIn::start(60).await;
    speech.script(&["Can I book a cleaning on Tuesday"]);
    let llm = streaming_llm("Of course. Tuesday at ten is free. Shall I book it?").await;
    let app = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Pcm, |_| {}).await;
    let (_t, run_id, mut socket) = onprem_call(&app, "onprem@example.com").await;
    let mut heard = Heard::default();

    let ready = read_until(&mut socket, &mut heard, |v| v["type"] == "ready").await;
    assert_eq!(ready["sample_rate"], 16000);
    // The greeting is spoken first, through the on-prem voice.
    let greeting = final_of(&mut socket, &mut heard, "assistant").await;
    assert!(greeting.contains("Vera"), "{greeting}");
    read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;
    // Let the greeting play out, so the caller does not talk over it.
    tokio::time::sleep(Duration::from_millis(
        greeting.split_whitespace().count() as u64 * 60 + 300,
    ))
    .await;

    let voice = spoken("Can I book a cleaning on Tuesday", 2.0);
    let spoke_at = Instant::now();
    send_audio(&mut socket, &voice).await;
    assert_eq!(
        final_of(&mut socket, &mut heard, "user").await,
        "Can I book a cleaning on Tuesday"
    );
    // One utterance, cut by the detector: the speech, not the silence
    // around it, and not a fragment of it.
    let sent = speech.transcriptions();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let t = &sent[0];
    assert!(
        (1.6..=2.9).contains(&t.seconds),
        "an utterance of {} s",
        t.seconds
    );
    assert!(t.peak > 1000, "speech, not silence: {t:?}");
    assert_eq!(t.model, STT_MODEL);
    assert_eq!(t.response_format.as_deref(), Some("json"));
    assert!(spoke_at.elapsed() < Duration::from_secs(6));

    let before_reply = heard.audio_bytes;
    assert_eq!(
        final_of(&mut socket, &mut heard, "assistant").await,
        "Of course. Tuesday at ten is free. Shall I book it?"
    );
    let asked = speech.state.speech_requests.lock().unwrap().clone();
    let inputs: Vec<&str> = asked.iter().filter_map(|b| b["input"].as_str()).collect();
    assert_eq!(
        &inputs[1..],
        ["Of course.", "Tuesday at ten is free.", "Shall I book it?"],
        "one request a sentence"
    );
    for b in &asked {
        assert_eq!(b["response_format"], "pcm", "{b}");
        assert_eq!(b["voice"], TTS_VOICE, "{b}");
        assert_eq!(b["model"], TTS_MODEL, "{b}");
    }
    // 11 words at 60 ms, made at 24 kHz, go out at 16 kHz in real time.
    tokio::time::sleep(Duration::from_millis(11 * 60 + 300)).await;
    let ended = hang_up(&mut socket, &mut heard).await;
    let reply_bytes = heard.audio_bytes - before_reply;
    assert!(
        (11 * 60 * 32 - 640..=11 * 60 * 32 + 640).contains(&reply_bytes),
        "{reply_bytes} bytes of reply"
    );
    assert_eq!(ended["run"]["status"], "completed", "{ended}");
    assert!(
        ended["run"]["groq_tokens"].as_f64().unwrap() > 0.0,
        "billed"
    );
    let stored = transcript_of(&app, &run_id);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored[1]["content"], "Can I book a cleaning on Tuesday");
    assert!(stored[2]["latency"]["first_audio_ms"].as_u64().is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_over_onprem_wav_speech_stops_the_answer_and_keeps_what_was_said() {
    // Half a second a word: the answer takes seconds to speak.
    let speech = OnPremStandIn::start(500).await;
    speech.script(&["Tell me everything", "Stop please"]);
    let long = "One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen.";
    let llm = streaming_llm(long).await;
    let app = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Wav, |_| {}).await;
    let (_t, run_id, mut socket) = onprem_call(&app, "onprem-barge@example.com").await;
    let mut heard = Heard::default();
    read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;

    // The caller talks over the greeting, which is cut off too; the
    // answer may start while the silence after the words is still sent.
    let (answer_started, _) = talk(
        &mut socket,
        &mut heard,
        &spoken("Tell me everything", 1.3),
        false,
        |v| v["type"] == "speaking",
    )
    .await;
    let speaking = match answer_started {
        Some(m) => m,
        None => {
            read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;
            Mark {
                at: Instant::now(),
                audio_before: heard.audio_bytes,
            }
        }
    };
    assert!(heard.frames.iter().any(|f| f["type"] == "transcript"
        && f["role"] == "user"
        && f["text"] == "Tell me everything"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Speech while the agent speaks: the detector hears it start.
    let voice = spoken("Stop please", 1.1);
    let (interrupted, sent) = talk(&mut socket, &mut heard, &voice, true, |v| {
        v["type"] == "interrupted"
    })
    .await;
    let interrupted = interrupted.expect("interrupted");
    assert!(
        sent <= 400 * 32,
        "interrupted after {} ms of speech",
        sent / 32
    );
    // What went out is what real time allowed up to the barge-in, plus at
    // most 200 ms.
    let played_ms = (interrupted.audio_before - speaking.audio_before) / 32;
    let wall_ms = interrupted.at.duration_since(speaking.at).as_millis() as usize;
    assert!(
        played_ms <= wall_ms + 200,
        "{played_ms} ms sent in {wall_ms} ms"
    );
    // Nothing more of that answer: no audio until the caller's words are
    // transcribed and the next answer starts.
    let after = heard.audio_bytes;
    let (said, _) = talk(&mut socket, &mut heard, &voice[sent..], false, |v| {
        v["type"] == "transcript" && v["role"] == "user" && v["final"] == true
    })
    .await;
    let said = match said {
        Some(m) => m.audio_before,
        None => {
            read_until(&mut socket, &mut heard, |v| {
                v["type"] == "transcript" && v["role"] == "user" && v["final"] == true
            })
            .await;
            heard.audio_bytes
        }
    };
    assert_eq!(
        said, after,
        "audio of the interrupted answer after `interrupted`"
    );
    let last_said = heard
        .frames
        .iter()
        .rfind(|f| f["type"] == "transcript" && f["role"] == "user" && f["final"] == true)
        .unwrap();
    assert_eq!(last_said["text"], "Stop please");
    // The speech was asked for as WAV.
    assert!(speech
        .state
        .speech_requests
        .lock()
        .unwrap()
        .iter()
        .all(|b| b["response_format"] == "wav"));

    hang_up(&mut socket, &mut heard).await;
    let stored = transcript_of(&app, &run_id);
    let cut = stored
        .iter()
        .find(|t| t["interrupted"] == true && t["role"] == "assistant" && t["content"] != "")
        .unwrap_or_else(|| panic!("{stored:?}"));
    let kept = cut["content"].as_str().unwrap();
    assert!(
        long.starts_with(kept) && kept.len() < long.len(),
        "kept {kept:?}"
    );
    // About 1.5 s of a half-second-a-word answer was heard.
    let words = kept.split_whitespace().count();
    assert!((1..=5).contains(&words), "kept {kept:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_speech_server_gets_provider_error_and_the_call_goes_on() {
    let speech = OnPremStandIn::start(40).await;
    speech.script(&["Hello there", "Hello again"]);
    let llm = streaming_llm("Hi. How can I help?").await;
    let app = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Pcm, |_| {}).await;
    speech.fail(0, 500);
    let (_t, _run_id, mut socket) = onprem_call(&app, "onprem-fail@example.com").await;
    let mut heard = Heard::default();

    // Text to speech answers 500: the greeting is not spoken, an error says why.
    let err = read_until(&mut socket, &mut heard, |v| v["type"] == "error").await;
    assert_eq!(err["code"], "PROVIDER_ERROR", "{err}");
    assert!(err["message"].as_str().unwrap().contains("500"), "{err}");
    assert_eq!(heard.audio_bytes, 0, "the agent says nothing");

    // Speech to text answers 500: that utterance is lost, and said so.
    speech.fail(500, 0);
    send_audio(&mut socket, &spoken("Hello there", 1.0)).await;
    let err = read_until(&mut socket, &mut heard, |v| v["type"] == "error").await;
    assert_eq!(err["code"], "PROVIDER_ERROR", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("speech-to-text"),
        "{err}"
    );
    assert!(
        !heard
            .frames
            .iter()
            .any(|f| f["type"] == "transcript" && f["role"] == "user"),
        "{:?}",
        heard.frames
    );

    // The servers are back: the same call hears and answers.
    speech.fail(0, 0);
    send_audio(&mut socket, &spoken("Hello again", 1.0)).await;
    assert_eq!(
        final_of(&mut socket, &mut heard, "user").await,
        "Hello again"
    );
    assert_eq!(
        final_of(&mut socket, &mut heard, "assistant").await,
        "Hi. How can I help?"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(heard.audio_bytes > 0, "the answer was spoken");
    let ended = hang_up(&mut socket, &mut heard).await;
    assert_eq!(ended["run"]["status"], "completed", "{ended}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_speech_servers_get_provider_errors_and_typed_turns_still_work() {
    let llm = streaming_llm("Still here. Ask away.").await;
    let nowhere = closed_port().await;
    let app = onprem_app(&nowhere, &nowhere, &llm, SpeechFormat::Pcm, |_| {}).await;
    let (_t, run_id, mut socket) = onprem_call(&app, "onprem-down@example.com").await;
    let mut heard = Heard::default();
    let err = read_until(&mut socket, &mut heard, |v| v["type"] == "error").await;
    assert_eq!(err["code"], "PROVIDER_ERROR", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{err}"
    );
    send_audio(&mut socket, &spoken("Is anyone there", 1.2)).await;
    let err = read_until(&mut socket, &mut heard, |v| v["type"] == "error").await;
    assert!(
        err["message"].as_str().unwrap().contains("speech-to-text"),
        "{err}"
    );
    socket
        .send(Message::Text(
            r#"{"type":"text","text":"Are you there?"}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        final_of(&mut socket, &mut heard, "assistant").await,
        "Still here. Ask away."
    );
    let ended = hang_up(&mut socket, &mut heard).await;
    assert_eq!(ended["run"]["status"], "completed", "{ended}");
    assert_eq!(heard.audio_bytes, 0);
    let stored = transcript_of(&app, &run_id);
    assert!(
        stored
            .iter()
            .any(|t| t["content"] == "Still here. Ask away."),
        "{stored:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speech_server_outside_the_allow_list_is_never_called() {
    let speech = OnPremStandIn::start(40).await;
    let llm = streaming_llm("Hi.").await;
    // The operator allows only another server.
    let app = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Pcm, |c| {
        c.llm_allowed_urls = Some("http://10.0.0.5:8000/v1".into());
    })
    .await;
    let (t, run_id) = started_call(&app, "onprem-listed@example.com").await;
    use_onprem_speech(&app, &t).await;
    let url = format!(
        "{}/api/calls/web/{run_id}/audio",
        app.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", t.token).parse().unwrap(),
    );
    let refused = match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r,
        other => panic!("upgraded: {:?}", other.map(|_| ())),
    };
    assert_eq!(refused.status(), 400);
    let body: Value = serde_json::from_slice(refused.body().as_deref().unwrap_or_default())
        .expect("a JSON error");
    assert_eq!(body["code"], "SETUP_REQUIRED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("VOXFLOW_LLM_ALLOWED_URLS"),
        "{body}"
    );
    assert_eq!(speech.state.requests.load(Ordering::SeqCst), 0);
    // The same servers, once allowed, are used (the refusal was the list's).
    let allowed = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Pcm, |_| {}).await;
    let (_t, _run, mut socket) = onprem_call(&allowed, "onprem-listed@example.com").await;
    let mut heard = Heard::default();
    read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;
    assert!(speech.state.requests.load(Ordering::SeqCst) > 0);
    hang_up(&mut socket, &mut heard).await;
    allowed.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onprem_phone_call_streams_mulaw_both_ways_and_is_billed_when_the_stream_stops() {
    use crate::twilio_standin::{sign, Outcome, TwilioStandIn, PUBLIC};
    let speech = OnPremStandIn::start(200).await;
    speech.script(&["I would like to reschedule"]);
    let llm = streaming_llm("Sure. Which day works for you?").await;
    let twilio = TwilioStandIn::start(Duration::from_millis(20)).await;
    let twilio_base = twilio.base.clone();
    let app = onprem_app(&speech.base, &speech.base, &llm, SpeechFormat::Pcm, |c| {
        c.twilio_base_url = twilio_base;
        c.public_url = Some(PUBLIC.into());
    })
    .await;
    let t = crate::agents::tenant(&app, "onprem-phone@example.com").await;
    set_tier(&app, &t, "pro").await;
    crate::phone::save_twilio(&app, &t).await;
    use_onprem_speech(&app, &t).await;
    let agent = create_agent(&app, &t, "Vera").await;
    twilio.script("+14155550777", &[Outcome::Live]);
    let (run_id, call_sid) = crate::dialer::place_call(&app, &t, &agent, "+14155550777").await;

    // With on-prem speech set up, Twilio is told to stream too.
    let (_, twiml) = crate::dialer::twilio_hook(
        &app.client,
        &app.base,
        "webhook",
        &run_id,
        &[("CallSid", call_sid.as_str())],
    )
    .await;
    let stream_url = format!("wss://voxflow.example.com/api/calls/twilio/stream/{run_id}");
    assert!(
        twiml.contains(&format!(
            "<Connect><Stream url=\"{stream_url}\"/></Connect>"
        )),
        "{twiml}"
    );
    let ws_url = format!(
        "{}/api/calls/twilio/stream/{run_id}",
        app.base.replace("http://", "ws://")
    );
    let unsigned = ws_url.as_str().into_client_request().unwrap();
    match tokio_tungstenite::connect_async(unsigned).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "x-twilio-signature",
        sign(&stream_url, &[]).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("signed upgrade");
    for event in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ0001",
            "start": {"streamSid": "MZ0001", "callSid": call_sid, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    ] {
        socket
            .send(Message::Text(event.to_string().into()))
            .await
            .unwrap();
    }

    // The greeting, made at 24 kHz, goes out as μ-law at 8 kHz: a tone,
    // not silence (0xFF) or PCM bytes.
    let mut media = 0usize;
    let first = twilio_until(&mut socket, &mut media, "media").await;
    let payload = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(first["media"]["payload"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(payload.len(), 160, "20 ms of μ-law at 8 kHz");
    let peak = payload
        .iter()
        .map(|&b| mulaw_to_linear(b).saturating_abs())
        .max()
        .unwrap();
    assert!(
        (4000..=9000).contains(&peak),
        "a tone of amplitude 8000: {peak}"
    );

    // The caller speaks over the greeting: Twilio is told to clear.
    let voice = mulaw_utterance("I would like to reschedule", 2.4);
    send_media(&mut socket, &voice, 0..30).await;
    twilio_until(&mut socket, &mut media, "clear").await;
    send_media(&mut socket, &voice, 30..voice.len() / 160).await;
    // The detector's utterance, sent to the server as 16 kHz WAV.
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = speech.transcriptions();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        (1.2..=2.4).contains(&sent[0].seconds) && sent[0].peak > 1000,
        "{sent:?}"
    );
    // The reply is spoken back as μ-law, in real time.
    let before = media;
    twilio_until(&mut socket, &mut media, "media").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(media > before, "the reply's audio");
    let inputs: Vec<String> = speech
        .state
        .speech_requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|b| b["input"].as_str().map(str::to_string))
        .collect();
    assert!(inputs.iter().any(|t| t == "Sure."), "{inputs:?}");

    stop_stream_billed_at_42_seconds(&app, &mut socket, &twilio, &call_sid, &run_id).await;
    let tokens: i64 = db(&app)
        .query_row(
            "SELECT coalesce(sum(prompt_tokens), 0) FROM llm_usage WHERE run_id = ?1",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 321, "the LLM turn is metered");
    app.stop().await;
}

/// G.711 μ-law to linear, as the telephone network decodes it.
fn mulaw_to_linear(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}
