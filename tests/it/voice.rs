//! Browser voice calls over `GET /api/calls/web/{run_id}/audio`, against
//! stand-ins that speak the real protocols: a Deepgram stand-in (the live
//! `/v1/listen` WebSocket, answering `SpeechStarted` and `Results` with
//! `is_final`/`speech_final` once it has received enough audio, and
//! `/v1/speak` returning PCM) and an OpenAI-compatible LLM that streams its
//! reply as server-sent events. The caller's audio is speech synthesised by
//! espeak-ng and resampled to 16 kHz by sox.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::agents::{create_agent, db, tenant, Tenant};
use crate::auth::post as api_post;
use crate::common::TestApp;

const DEEPGRAM_KEY: &str = "0123456789abcdef0123456789abcdef01234567";
/// 16 kHz, 16-bit mono.
const BYTES_PER_SEC: usize = 32_000;

#[derive(Default)]
pub(crate) struct SpeechState {
    /// What the caller will be heard saying, utterance by utterance.
    script: Mutex<VecDeque<String>>,
    /// Audio bytes that make an utterance.
    utterance_bytes: AtomicUsize,
    /// Seconds of speech `/v1/speak` makes per word.
    ms_per_word: AtomicUsize,
    spoken_texts: Mutex<Vec<String>>,
    listen_queries: Mutex<Vec<String>>,
    pub(crate) audio_received: AtomicUsize,
}

pub(crate) struct SpeechStandIn {
    base: String,
    pub(crate) state: Arc<SpeechState>,
}

async fn listen(
    State(s): State<Arc<SpeechState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    ws: WebSocketUpgrade,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Token {DEEPGRAM_KEY}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s.listen_queries.lock().unwrap().push(query.join("&"));
    ws.on_upgrade(move |socket| transcribe(s, socket))
}

/// Counts the audio; at a fifth of an utterance says speech started, at a
/// whole one sends an interim result, then the final one.
async fn transcribe(s: Arc<SpeechState>, mut socket: WebSocket) {
    let mut got = 0usize;
    let mut started = false;
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            WsMessage::Binary(pcm) => {
                got += pcm.len();
                s.audio_received.fetch_add(pcm.len(), Ordering::SeqCst);
                let need = s.utterance_bytes.load(Ordering::SeqCst);
                if !started && got >= need / 5 {
                    started = true;
                    let m = json!({"type": "SpeechStarted", "channel": [0], "timestamp": 0.2});
                    if socket
                        .send(WsMessage::Text(m.to_string().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if got >= need {
                    got = 0;
                    started = false;
                    let Some(text) = s.script.lock().unwrap().pop_front() else {
                        continue;
                    };
                    let half: String = text
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    for (t, is_final) in [(half, false), (text, true)] {
                        let m = json!({
                            "type": "Results", "is_final": is_final, "speech_final": is_final,
                            "channel": {"alternatives": [{"transcript": t, "confidence": 0.97}]}
                        });
                        if socket
                            .send(WsMessage::Text(m.to_string().into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            WsMessage::Text(t) if t.contains("CloseStream") => {
                let _ = socket.close().await;
                return;
            }
            _ => {}
        }
    }
}

async fn speak(
    State(s): State<Arc<SpeechState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Token {DEEPGRAM_KEY}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let has = |key: &str, want: &str| q.iter().any(|(k, v)| k == key && v == want);
    let bytes_per_sample = if has("encoding", "linear16") && has("sample_rate", "16000") {
        2
    } else if has("encoding", "mulaw") && has("sample_rate", "8000") {
        1
    } else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let words = text.split_whitespace().count().max(1);
    s.spoken_texts.lock().unwrap().push(text);
    let ms = words * s.ms_per_word.load(Ordering::SeqCst);
    if bytes_per_sample == 1 {
        // μ-law at 8 kHz: a square wave stands for the voice.
        let pcm: Vec<u8> = (0..ms * 8)
            .map(|i| if i % 16 < 8 { 0x20 } else { 0xA0 })
            .collect();
        return ([("content-type", "audio/basic")], pcm).into_response();
    }
    let samples = ms * 16;
    // A 440 Hz tone stands for the voice.
    let mut pcm = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let v = ((i as f64 * 440.0 * std::f64::consts::TAU / 16_000.0).sin() * 8000.0) as i16;
        pcm.extend_from_slice(&v.to_le_bytes());
    }
    ([("content-type", "audio/l16")], pcm).into_response()
}

impl SpeechStandIn {
    pub(crate) async fn start(utterance_secs: f64, ms_per_word: usize) -> SpeechStandIn {
        let state = Arc::new(SpeechState::default());
        state.utterance_bytes.store(
            (utterance_secs * BYTES_PER_SEC as f64) as usize,
            Ordering::SeqCst,
        );
        state.ms_per_word.store(ms_per_word, Ordering::SeqCst);
        let app = Router::new()
            .route("/v1/listen", get(listen))
            .route("/v1/speak", post(speak))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        SpeechStandIn {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub(crate) fn script(&self, utterances: &[&str]) {
        *self.state.script.lock().unwrap() = utterances.iter().map(|s| s.to_string()).collect();
    }
}

/// An OpenAI-compatible server that streams each reply in three pieces.
async fn streamed_completions(
    State(reply): State<Arc<String>>,
    Json(body): Json<Value>,
) -> Response {
    assert_eq!(body["stream"], true, "a voice call streams");
    let words: Vec<&str> = reply.split_inclusive(' ').collect();
    let third = words.len().div_ceil(3);
    let mut sse = String::new();
    for piece in words.chunks(third.max(1)) {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece.concat()}}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": 17}});
    sse.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], sse).into_response()
}

pub(crate) async fn streaming_llm(reply: &str) -> String {
    let app = Router::new()
        .route("/v1/chat/completions", post(streamed_completions))
        .with_state(Arc::new(reply.to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

pub(crate) async fn voice_app(speech: &SpeechStandIn, llm_base: &str) -> TestApp {
    let (speech, llm) = (speech.base.clone(), llm_base.to_string());
    TestApp::start_with(move |c| {
        c.deepgram_base_url = speech;
        c.groq_base_url = llm;
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.deepgram_api_key = Some(DEEPGRAM_KEY.into());
    })
    .await
}

/// A tenant with an agent and a web call in progress: `(tenant, run_id)`.
pub(crate) async fn started_call(app: &TestApp, email: &str) -> (Tenant, String) {
    let t = tenant(app, email).await;
    let agent = create_agent(app, &t, "Vera").await;
    let (status, body) = api_post(
        app,
        "/api/calls/web/start",
        Some(&t.token),
        json!({"agent_id": agent}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (t, body["data"]["run_id"].as_str().unwrap().to_string())
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, token: &str, run_id: &str) -> Result<Socket, u16> {
    let url = format!(
        "{}/api/calls/web/{run_id}/audio",
        app.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// Speech for `text`: espeak-ng's voice resampled by sox to 16 kHz mono
/// 16-bit PCM, cut or padded with silence to exactly `secs` (the length the
/// speech stand-in takes for one utterance: more would be heard as the
/// caller speaking again). Without them (outside CI) a tone stands in.
pub(crate) fn utterance(text: &str, secs: f64) -> Vec<u8> {
    let synthesised = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "espeak-ng --stdout '{text}' | sox -t wav - -t raw -r 16000 -e signed -b 16 -c 1 -"
        ))
        .output();
    let mut pcm = match synthesised {
        Ok(out) if out.status.success() && out.stdout.len() > 1000 => out.stdout,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have espeak-ng and sox"
            );
            eprintln!("notice: espeak-ng or sox missing; a tone stands in for speech");
            (0..16_000)
                .flat_map(|i: i32| (((i % 40) * 400 - 8000) as i16).to_le_bytes())
                .collect()
        }
    };
    let want = (secs * BYTES_PER_SEC as f64) as usize & !1;
    pcm.resize(want, 0);
    pcm
}

/// Sends `pcm` as 20 ms frames, paced in real time like a microphone.
pub(crate) async fn send_audio(socket: &mut Socket, pcm: &[u8]) {
    for chunk in pcm.chunks(640) {
        if chunk.len() < 320 {
            break;
        }
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the client has received so far.
#[derive(Default, Debug)]
pub(crate) struct Heard {
    pub(crate) frames: Vec<Value>,
    pub(crate) audio_bytes: usize,
}

impl Heard {
    pub(crate) fn kinds(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map(|f| f["type"].as_str().unwrap_or(""))
            .collect()
    }
}

/// Reads until `until` holds for a text frame (returned), counting audio.
pub(crate) async fn read_until(
    socket: &mut Socket,
    heard: &mut Heard,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; heard {:?}", heard.kinds()))
            .unwrap_or_else(|| panic!("socket closed; heard {:?}", heard.kinds()))
            .unwrap();
        match msg {
            Message::Binary(pcm) => heard.audio_bytes += pcm.len(),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                heard.frames.push(v.clone());
                if until(&v) {
                    return v;
                }
            }
            Message::Close(_) => panic!("closed; heard {:?}", heard.kinds()),
            _ => {}
        }
    }
}

pub(crate) fn transcript_of(app: &TestApp, run_id: &str) -> Vec<Value> {
    let text: String = db(app)
        .query_row(
            "SELECT transcript_text FROM agent_runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_call_hears_the_caller_and_speaks_the_reply() {
    let speech = SpeechStandIn::start(1.0, 60).await;
    speech.script(&["Can I book a cleaning on Tuesday"]);
    let llm = streaming_llm("Of course. Tuesday at ten is free. Shall I book it?").await;
    let app = voice_app(&speech, &llm).await;
    let (t, run_id) = started_call(&app, "voice@example.com").await;
    let mut socket = connect(&app, &t.token, &run_id).await.expect("upgrade");
    let mut heard = Heard::default();

    let ready = read_until(&mut socket, &mut heard, |v| v["type"] == "ready").await;
    assert_eq!(ready["sample_rate"], 16000);
    // The agent's first message is spoken when the call starts.
    let greeting = read_until(&mut socket, &mut heard, |v| v["type"] == "transcript").await;
    assert_eq!(greeting["role"], "assistant");
    assert!(
        greeting["text"].as_str().unwrap().contains("Vera"),
        "{greeting}"
    );
    read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;

    let voice = utterance("Can I book a cleaning on Tuesday", 1.0);
    send_audio(&mut socket, &voice).await;
    let said = read_until(&mut socket, &mut heard, |v| {
        v["type"] == "transcript" && v["role"] == "user" && v["final"] == true
    })
    .await;
    assert_eq!(said["text"], "Can I book a cleaning on Tuesday");
    let before_reply = heard.audio_bytes;
    let reply = read_until(&mut socket, &mut heard, |v| {
        v["type"] == "transcript" && v["role"] == "assistant" && v["final"] == true
    })
    .await;
    assert_eq!(
        reply["text"],
        "Of course. Tuesday at ten is free. Shall I book it?"
    );
    // Each sentence was synthesised on its own, as the reply streamed in.
    let spoken = speech.state.spoken_texts.lock().unwrap().clone();
    assert_eq!(
        &spoken[1..],
        ["Of course.", "Tuesday at ten is free.", "Shall I book it?"]
    );
    let query = speech.state.listen_queries.lock().unwrap()[0].clone();
    for want in [
        "encoding=linear16",
        "sample_rate=16000",
        "interim_results=true",
        "vad_events=true",
        "endpointing=",
    ] {
        assert!(query.contains(want), "{query}");
    }
    assert!(speech.state.audio_received.load(Ordering::SeqCst) >= voice.len() - 640);

    // The reply's audio plays out in real time (11 words at 60 ms) before
    // the caller hangs up.
    tokio::time::sleep(Duration::from_millis(11 * 60 + 300)).await;
    socket
        .send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .unwrap();
    let ended = read_until(&mut socket, &mut heard, |v| v["type"] == "ended").await;
    assert!(
        heard.audio_bytes - before_reply >= 11 * 60 * 32,
        "{}",
        heard.audio_bytes
    );
    assert_eq!(ended["run"]["status"], "completed", "{ended}");
    assert_eq!(ended["run"]["disposition"], "user_hangup");
    assert!(
        ended["run"]["duration_seconds"].as_i64().unwrap() >= 1,
        "{ended}"
    );
    assert!(
        ended["run"]["groq_tokens"].as_f64().unwrap() > 0.0,
        "billed: {ended}"
    );

    let stored = transcript_of(&app, &run_id);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored[1]["role"], "user");
    assert_eq!(stored[1]["content"], "Can I book a cleaning on Tuesday");
    assert_eq!(
        stored[2]["content"],
        "Of course. Tuesday at ten is free. Shall I book it?"
    );
    let latency = &stored[2]["latency"];
    assert!(
        latency["llm_first_token_ms"].as_u64().is_some(),
        "{latency}"
    );
    assert!(
        latency["first_audio_ms"].as_u64().unwrap()
            >= latency["llm_first_token_ms"].as_u64().unwrap()
    );
    // The LLM turn's usage is metered like a typed call's.
    let tokens: i64 = db(&app)
        .query_row(
            "SELECT sum(prompt_tokens) FROM llm_usage WHERE run_id = ?1",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 321);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_over_the_agent_interrupts_it_and_keeps_only_what_was_said() {
    // Long sentences: half a second a word.
    let speech = SpeechStandIn::start(1.0, 500).await;
    speech.script(&["Tell me everything", "Stop please"]);
    let long = "One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen.";
    let llm = streaming_llm(long).await;
    let app = voice_app(&speech, &llm).await;
    let (t, run_id) = started_call(&app, "bargein@example.com").await;
    let mut socket = connect(&app, &t.token, &run_id).await.expect("upgrade");
    let mut heard = Heard::default();
    read_until(&mut socket, &mut heard, |v| v["type"] == "ready").await;

    // The caller talks over the greeting, which is cut off too.
    let voice = utterance("Tell me everything", 1.0);
    send_audio(&mut socket, &voice).await;
    read_until(&mut socket, &mut heard, |v| {
        v["type"] == "transcript" && v["role"] == "user" && v["final"] == true
    })
    .await;
    read_until(&mut socket, &mut heard, |v| v["type"] == "speaking").await;
    let speaking_from = (Instant::now(), heard.audio_bytes);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Speech while the agent speaks: the stand-in says SpeechStarted.
    let interrupt_at = Instant::now();
    let voice = utterance("Stop please", 1.0);
    for piece in voice.chunks(640).take(12) {
        socket
            .send(Message::Binary(piece.to_vec().into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_until(&mut socket, &mut heard, |v| v["type"] == "interrupted").await;
    let played_ms = (heard.audio_bytes - speaking_from.1) / 32;
    let wall_ms = interrupt_at.duration_since(speaking_from.0).as_millis() as usize + 240;
    // What went out is what real time allowed up to the barge-in, plus at
    // most 200 ms.
    assert!(
        played_ms <= wall_ms + 200,
        "{played_ms} ms sent in {wall_ms} ms"
    );
    // After `interrupted`, none of that answer's audio.
    let after = heard.audio_bytes;
    for piece in voice.chunks(640).skip(12) {
        if piece.len() >= 320 {
            socket
                .send(Message::Binary(piece.to_vec().into()))
                .await
                .unwrap();
        }
    }
    read_until(&mut socket, &mut heard, |v| {
        v["type"] == "transcript"
            && v["role"] == "user"
            && v["final"] == true
            && v["text"] == "Stop please"
    })
    .await;
    assert_eq!(
        heard.audio_bytes, after,
        "audio of the interrupted answer after `interrupted`"
    );

    socket
        .send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .unwrap();
    read_until(&mut socket, &mut heard, |v| v["type"] == "ended").await;
    let stored = transcript_of(&app, &run_id);
    let cut = stored
        .iter()
        .find(|t| t["interrupted"] == true && t["role"] == "assistant")
        .unwrap_or_else(|| panic!("{stored:?}"));
    let kept = cut["content"].as_str().unwrap();
    assert!(
        long.starts_with(kept) && kept.len() < long.len(),
        "kept {kept:?}"
    );
    assert!(!kept.is_empty(), "some of it was said: {stored:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_call_goes_on() {
    let speech = SpeechStandIn::start(1.0, 20).await;
    let llm = streaming_llm("Fine. Thanks.").await;
    let app = voice_app(&speech, &llm).await;
    let (t, run_id) = started_call(&app, "frames@example.com").await;

    // Another tenant's run, no session, a missing run: refused before the upgrade.
    let other = tenant(&app, "nosy@example.com").await;
    assert_eq!(connect(&app, &other.token, &run_id).await.err(), Some(404));
    assert_eq!(connect(&app, "not-a-token", &run_id).await.err(), Some(401));
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(connect(&app, &t.token, &missing).await.err(), Some(404));

    // The session cookie opens a call only from a page of this server.
    let url = format!(
        "{}/api/calls/web/{run_id}/audio",
        app.base.replace("http://", "ws://")
    );
    for (origin, want) in [
        ("https://evil.example", Some(403)),
        (app.base.as_str(), None),
    ] {
        let mut req = url.as_str().into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert(
            "cookie",
            format!("voxflow_session={}", t.token).parse().unwrap(),
        );
        h.insert("origin", origin.parse().unwrap());
        let got = match tokio_tungstenite::connect_async(req).await {
            Ok((s, _)) => {
                drop(s);
                None
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Some(r.status().as_u16()),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got, want, "{origin}");
    }
    // (The same-origin socket above was closed without `end`: it ended the
    // call, so this one starts another.)
    let (t, run_id) = started_call(&app, "frames2@example.com").await;
    let mut socket = connect(&app, &t.token, &run_id).await.expect("upgrade");
    let mut heard = Heard::default();
    read_until(&mut socket, &mut heard, |v| v["type"] == "ready").await;
    for bad in [
        Message::Binary(vec![1, 2, 3].into()),
        Message::Binary(vec![0; 641].into()),
        Message::Binary(vec![0; 70_000].into()),
        Message::Text("not json".into()),
        Message::Text(r#"{"type":"shout"}"#.into()),
        Message::Text(r#"{"type":"text","text":""}"#.into()),
    ] {
        socket.send(bad).await.unwrap();
        let err = read_until(&mut socket, &mut heard, |v| v["type"] == "error").await;
        assert!(
            err["code"].as_str().is_some() && err["message"].as_str().is_some(),
            "{err}"
        );
    }
    // A typed turn inside the voice call still works.
    socket
        .send(Message::Text(
            r#"{"type":"text","text":"Are you there?"}"#.into(),
        ))
        .await
        .unwrap();
    let reply = read_until(&mut socket, &mut heard, |v| {
        v["type"] == "transcript"
            && v["role"] == "assistant"
            && v["final"] == true
            && v["text"] == "Fine. Thanks."
    })
    .await;
    assert_eq!(reply["text"], "Fine. Thanks.");
    // Closed without `end`: the run is finished and billed all the same.
    drop(socket);
    let mut status = String::new();
    for _ in 0..100 {
        status = db(&app)
            .query_row(
                "SELECT status FROM agent_runs WHERE id = ?1",
                [&run_id],
                |r| r.get(0),
            )
            .unwrap();
        if status == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "completed");
    let stored = transcript_of(&app, &run_id);
    assert!(
        stored.iter().any(|t| t["content"] == "Are you there?"),
        "{stored:?}"
    );
    app.stop().await;
}

/// Speech for `text` as Twilio sends it: μ-law at 8 kHz, exactly `secs` long.
pub(crate) fn mulaw_utterance(text: &str, secs: f64) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "espeak-ng --stdout '{text}' | sox -t wav - -t raw -r 8000 -e mu-law -b 8 -c 1 -"
        ))
        .output();
    let mut audio = match out {
        Ok(o) if o.status.success() && o.stdout.len() > 500 => o.stdout,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have espeak-ng and sox"
            );
            eprintln!("notice: espeak-ng or sox missing; a tone stands in for speech");
            (0..8000)
                .map(|i| if i % 20 < 10 { 0x30 } else { 0xB0 })
                .collect()
        }
    };
    // 0xFF is μ-law silence.
    audio.resize((secs * 8000.0) as usize, 0xFF);
    audio
}

pub(crate) async fn send_media(socket: &mut Socket, audio: &[u8], frames: std::ops::Range<usize>) {
    use base64::Engine;
    for chunk in audio.chunks(160).skip(frames.start).take(frames.len()) {
        let payload = base64::engine::general_purpose::STANDARD.encode(chunk);
        let m = json!({"event": "media", "streamSid": "MZ0001", "media": {"track": "inbound", "payload": payload}});
        socket
            .send(Message::Text(m.to_string().into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Twilio ends the call after 42 s and stops the stream: the run is billed
/// with Twilio's figures (looked up when the stream stops) and its
/// transcript holds what the caller said.
pub(crate) async fn stop_stream_billed_at_42_seconds(
    app: &TestApp,
    socket: &mut Socket,
    twilio: &crate::twilio_standin::TwilioStandIn,
    call_sid: &str,
    run_id: &str,
) {
    twilio.end_call(call_sid, 42).await;
    socket
        .send(Message::Text(
            json!({"event": "stop", "streamSid": "MZ0001", "stop": {"callSid": call_sid}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut state = (String::new(), 0i64);
    for _ in 0..100 {
        state = db(app)
            .query_row(
                "SELECT status, duration_seconds FROM agent_runs WHERE id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if state.0 == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, ("completed".to_string(), 42));
    let stored = transcript_of(app, run_id);
    assert!(
        stored
            .iter()
            .any(|t| t["content"] == "I would like to reschedule"),
        "{stored:?}"
    );
}

/// Reads Twilio-side events until one of `event` arrives; counts the
/// outbound media bytes.
pub(crate) async fn twilio_until(socket: &mut Socket, media: &mut usize, event: &str) -> Value {
    use base64::Engine;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {event}"))
            .expect("open")
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["streamSid"], "MZ0001", "{v}");
        if v["event"] == "media" {
            *media += base64::engine::general_purpose::STANDARD
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap()
                .len();
        }
        if v["event"] == event {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_call_streams_mulaw_both_ways_and_is_billed_when_the_stream_stops() {
    use crate::twilio_standin::{sign, Outcome, TwilioStandIn, PUBLIC};
    // One second of μ-law is an utterance.
    let speech = SpeechStandIn::start(0.25, 200).await;
    speech.script(&["I would like to reschedule"]);
    let llm = streaming_llm("Sure. Which day works for you?").await;
    let twilio = TwilioStandIn::start(Duration::from_millis(20)).await;
    let (speech_base, llm_base, twilio_base) =
        (speech.base.clone(), llm.clone(), twilio.base.clone());
    let app = TestApp::start_with(move |c| {
        c.deepgram_base_url = speech_base;
        c.groq_base_url = llm_base;
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.deepgram_api_key = Some(DEEPGRAM_KEY.into());
        c.twilio_base_url = twilio_base;
        c.public_url = Some(PUBLIC.into());
    })
    .await;
    let t = tenant(&app, "streamer@example.com").await;
    crate::agents::set_tier(&app, &t, "pro").await;
    crate::phone::save_twilio(&app, &t).await;
    let agent = create_agent(&app, &t, "Vera").await;
    twilio.script("+14155550777", &[Outcome::Live]);
    let (run_id, call_sid) = crate::dialer::place_call(&app, &t, &agent, "+14155550777").await;

    // Answered: with speech set up, Twilio is told to stream.
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
    // Unsigned, or signed for another URL: 403 before any upgrade.
    for signature in [None, Some(sign(&format!("{stream_url}x"), &[]))] {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        if let Some(sig) = signature {
            req.headers_mut()
                .insert("x-twilio-signature", sig.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "x-twilio-signature",
        sign(&stream_url, &[]).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("signed upgrade");
    socket
        .send(Message::Text(
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ0001",
        "start": {"streamSid": "MZ0001", "callSid": call_sid, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    socket
        .send(Message::Text(start.to_string().into()))
        .await
        .unwrap();

    // The greeting goes out as μ-law media.
    let mut media = 0usize;
    twilio_until(&mut socket, &mut media, "media").await;
    let voice = mulaw_utterance("I would like to reschedule", 1.0);
    // The caller speaks over the greeting: Twilio is told to clear.
    send_media(&mut socket, &voice, 0..50).await;
    twilio_until(&mut socket, &mut media, "clear").await;
    let query = speech.state.listen_queries.lock().unwrap()[0].clone();
    assert!(
        query.contains("encoding=mulaw") && query.contains("sample_rate=8000"),
        "{query}"
    );
    // The reply is spoken back as μ-law, its sentence followed by a mark.
    let before = media;
    twilio_until(&mut socket, &mut media, "media").await;
    let mark = twilio_until(&mut socket, &mut media, "mark").await;
    assert!(media > before, "the reply's audio");
    let name = mark["mark"]["name"].as_str().expect("a named mark");
    assert!(name.starts_with(run_id.as_str()), "{mark}");
    assert!(speech
        .state
        .spoken_texts
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "Sure."));

    // Twilio ends the call after 42 s and stops the stream: the run is
    // billed with Twilio's figures, looked up when the stream stops.
    stop_stream_billed_at_42_seconds(&app, &mut socket, &twilio, &call_sid, &run_id).await;
    app.stop().await;
}

/// The `end_web_call` audit entries of `run_id`: their details.
fn end_audits(app: &TestApp, who: &Tenant, run_id: &str) -> Vec<Value> {
    let conn = db(app);
    let mut stmt = conn
        .prepare(
            "SELECT details FROM admin_audit_logs WHERE action = 'end_web_call'
             AND admin_user_id = ?1 AND target_user_id = ?1 AND target_resource_id = ?2",
        )
        .unwrap();
    let rows = stmt
        .query_map([&who.id, run_id], |r| r.get::<_, String>(0))
        .unwrap();
    rows.map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_hang_up_is_audited_like_a_typed_end() {
    let speech = SpeechStandIn::start(1.0, 20).await;
    let llm = streaming_llm("Fine.").await;
    let app = voice_app(&speech, &llm).await;

    // Hung up with `end`.
    let (t, run_id) = started_call(&app, "audit-end@example.com").await;
    let mut socket = connect(&app, &t.token, &run_id).await.expect("upgrade");
    let mut heard = Heard::default();
    read_until(&mut socket, &mut heard, |v| v["type"] == "ready").await;
    socket
        .send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .unwrap();
    let ended = read_until(&mut socket, &mut heard, |v| v["type"] == "ended").await;
    let audits = end_audits(&app, &t, &run_id);
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["disposition"], "user_hangup");
    assert_eq!(audits[0]["run_number"], ended["run"]["run_number"]);
    assert_eq!(
        audits[0]["duration_seconds"],
        ended["run"]["duration_seconds"]
    );

    // Closed without `end`: audited all the same, once.
    let (t2, run_id2) = started_call(&app, "audit-close@example.com").await;
    let mut socket = connect(&app, &t2.token, &run_id2).await.expect("upgrade");
    read_until(&mut socket, &mut Heard::default(), |v| v["type"] == "ready").await;
    drop(socket);
    let mut audits = Vec::new();
    for _ in 0..100 {
        audits = end_audits(&app, &t2, &run_id2);
        if !audits.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["disposition"], "user_hangup");
    // A typed end after that is refused, and writes nothing more.
    let (status, _) = api_post(
        &app,
        "/api/calls/web/end",
        Some(&t2.token),
        json!({"run_id": run_id2}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(end_audits(&app, &t2, &run_id2).len(), 1);
    app.stop().await;
}
