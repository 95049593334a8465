//! `voxflow-bench voice`: what VoxFlow adds to a voice call's latency, and
//! how evenly it paces the agent's speech.
//!
//! VoxFlow runs in-process on 127.0.0.1 with a temporary data folder, its
//! providers are stand-ins on loopback that speak the real protocols with
//! fixed delays (Deepgram's live `/v1/listen` answers an utterance's final
//! transcript 100 ms after its last audio; the LLM streams its first token
//! 150 ms after the request; text to speech sends its first byte 80 ms
//! after the request, as Deepgram's `/v1/speak` or an on-prem
//! `/v1/audio/speech` at 24 kHz), and 20 browser voice calls talk at once
//! over the real WebSocket protocol, a few turns each. Per turn, the client
//! notes when it sent the last frame of the caller's speech and when the
//! first frame of the answer's audio arrived: that span less the providers'
//! fixed delays is the time VoxFlow added. Every frame of an answer is
//! timed against the audio it carries: the peak-to-peak spread of
//! (arrival − audio time) is the answer's jitter.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{send, BenchError, ADMIN_PASSWORD};

const CALLS: usize = 20;
const TURNS: usize = 3;
const STT_DELAY: Duration = Duration::from_millis(100);
const LLM_FIRST_TOKEN: Duration = Duration::from_millis(150);
const TTS_FIRST_BYTE: Duration = Duration::from_millis(80);
/// The caller's speech per turn: 1 s of 16 kHz 16-bit PCM in 20 ms frames.
const UTTERANCE_BYTES: usize = 32_000;
const FRAME_BYTES: usize = 640;
/// The speech each sentence is made into.
const SENTENCE_AUDIO: Duration = Duration::from_millis(600);
/// The answer: its first sentence in the first token, the rest after.
const REPLY: [&str; 3] = ["Sure thing. ", "I can help with that. ", "Anything else?"];
/// Jitter is timed once the client's playback has this much audio.
const JITTER_AFTER_MS: f64 = 100.0;
/// How long the whole benchmark may take, and one wait for a frame.
const TIME_CAP: Duration = Duration::from_secs(180);
const FRAME_WAIT: Duration = Duration::from_secs(10);

const ADDED_P50: f64 = 20.0;
const ADDED_P99: f64 = 60.0;
const JITTER_MAX: f64 = 20.0;

fn stand_in_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Deepgram's live transcription: a final transcript `STT_DELAY` after
/// each utterance's last byte.
async fn listen(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(transcribe)
}

async fn transcribe(mut socket: WebSocket) {
    let mut got = 0usize;
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            WsMessage::Binary(pcm) => {
                got += pcm.len();
                if got >= UTTERANCE_BYTES {
                    got = 0;
                    tokio::time::sleep(STT_DELAY).await;
                    let m = json!({"type": "Results", "is_final": true, "speech_final": true,
                        "channel": {"alternatives": [{"transcript": "Can you help me", "confidence": 0.98}]}});
                    if socket
                        .send(WsMessage::Text(m.to_string().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            WsMessage::Text(t) if t.contains("CloseStream") => return,
            _ => {}
        }
    }
}

/// A body that waits `first`, then sends `pieces` one by one.
fn delayed_stream(first: Duration, pieces: Vec<Bytes>, gap: Duration) -> Body {
    let stream = futures_util::stream::unfold((0usize, pieces), move |(i, pieces)| async move {
        let piece = pieces.get(i)?.clone();
        tokio::time::sleep(if i == 0 { first } else { gap }).await;
        Some((Ok::<_, std::io::Error>(piece), (i + 1, pieces)))
    });
    Body::from_stream(stream)
}

/// The LLM: the first sentence `LLM_FIRST_TOKEN` after the request, the
/// rest 5 ms apart, then the usage.
async fn completions() -> Response {
    let mut pieces: Vec<Bytes> = REPLY
        .iter()
        .map(|t| {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": t}}]});
            Bytes::from(format!("data: {chunk}\n\n"))
        })
        .collect();
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 12}});
    pieces.push(Bytes::from(format!("data: {usage}\n\ndata: [DONE]\n\n")));
    (
        [("content-type", "text/event-stream")],
        delayed_stream(LLM_FIRST_TOKEN, pieces, Duration::from_millis(5)),
    )
        .into_response()
}

/// `SENTENCE_AUDIO` of a tone at `rate`, in 100 ms pieces, the first one
/// `TTS_FIRST_BYTE` after the request and the rest as fast as a speech
/// server makes them (ten times real time).
fn speech(rate: u32) -> Body {
    let samples = rate as usize * SENTENCE_AUDIO.as_millis() as usize / 1000;
    let pcm: Vec<u8> = (0..samples)
        .flat_map(|i| {
            let v = ((i as f64 * 440.0 * std::f64::consts::TAU / f64::from(rate)).sin() * 6000.0)
                as i16;
            v.to_le_bytes()
        })
        .collect();
    let pieces = pcm
        .chunks(rate as usize / 10 * 2)
        .map(Bytes::copy_from_slice)
        .collect();
    delayed_stream(TTS_FIRST_BYTE, pieces, Duration::from_millis(10))
}

/// Deepgram's `/v1/speak`, in the browser call's 16 kHz linear16.
async fn speak(Query(q): Query<Vec<(String, String)>>) -> Response {
    let has = |k: &str, v: &str| q.iter().any(|(a, b)| a == k && b == v);
    if !(has("encoding", "linear16") && has("sample_rate", "16000")) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    ([("content-type", "audio/l16")], speech(16_000)).into_response()
}

/// An on-prem server's `/v1/audio/speech`, `pcm` at 24 kHz (resampled by
/// VoxFlow to the call's 16 kHz).
async fn audio_speech(axum::Json(body): axum::Json<Value>) -> Response {
    if body["response_format"] != "pcm" {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    ([("content-type", "audio/pcm")], speech(24_000)).into_response()
}

async fn stand_ins() -> Result<String, BenchError> {
    let app = Router::new()
        .route("/v1/listen", get(listen))
        .route("/v1/speak", post(speak))
        .route("/v1/chat/completions", post(completions))
        .route("/v1/audio/speech", post(audio_speech));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// What one turn measured.
struct Turn {
    /// Last frame of speech sent → first frame of the answer's audio, less
    /// the providers' delays, in ms.
    added_ms: f64,
    /// Peak-to-peak deviation of frame arrivals from the audio's clock, ms.
    jitter_ms: f64,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_message(socket: &mut Socket, wait: Duration) -> Result<Option<Message>, String> {
    match tokio::time::timeout(wait, socket.next()).await {
        Err(_) => Ok(None),
        Ok(Some(Ok(m))) => Ok(Some(m)),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Err("the socket closed".into()),
    }
}

/// Reads the agent's speech until it has been quiet for `quiet`: the
/// arrival of each audio frame with its bytes; text frames are checked for
/// errors.
async fn read_speech(
    socket: &mut Socket,
    first_wait: Duration,
    quiet: Duration,
) -> Result<Vec<(Instant, usize)>, String> {
    let mut frames = Vec::new();
    loop {
        let wait = if frames.is_empty() { first_wait } else { quiet };
        let Some(msg) = next_message(socket, wait).await? else {
            if frames.is_empty() {
                return Err("no audio came".into());
            }
            return Ok(frames);
        };
        match msg {
            Message::Binary(pcm) => frames.push((Instant::now(), pcm.len())),
            Message::Text(t) if t.contains("\"error\"") => return Err(t.to_string()),
            _ => {}
        }
    }
}

/// One voice call: the greeting heard out, then `TURNS` turns.
async fn call(
    client: Client,
    base: String,
    token: String,
    agent_id: String,
) -> Result<Vec<Turn>, String> {
    let started = send(
        &client,
        Method::POST,
        format!("{base}/api/calls/web/start"),
        &token,
        Some(json!({"agent_id": agent_id})),
    )
    .await?;
    let run_id = started["data"]["run_id"].as_str().unwrap_or_default();
    let url = format!(
        "{}/api/calls/web/{run_id}/audio",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| "a token that is no header".to_string())?;
    req.headers_mut().insert("authorization", auth);
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    // The greeting, heard out so that the caller does not talk over it.
    read_speech(&mut socket, FRAME_WAIT, Duration::from_millis(300)).await?;
    let voice: Vec<u8> = (0..UTTERANCE_BYTES / 2)
        .flat_map(|i| (((i % 40) as i16 - 20) * 300).to_le_bytes())
        .collect();
    let mut turns = Vec::with_capacity(TURNS);
    for _ in 0..TURNS {
        // Speech as a microphone sends it: a 20 ms frame every 20 ms.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in voice.chunks(FRAME_BYTES) {
            tick.tick().await;
            socket
                .send(Message::Binary(frame.to_vec().into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        let spoke = Instant::now();
        let frames = read_speech(&mut socket, FRAME_WAIT, Duration::from_millis(300)).await?;
        let first = frames[0].0;
        let delays = STT_DELAY + LLM_FIRST_TOKEN + TTS_FIRST_BYTE;
        let added_ms = (first.duration_since(spoke).as_secs_f64() - delays.as_secs_f64()) * 1e3;
        let mut audio_ms = 0.0;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for (at, bytes) in &frames {
            if audio_ms >= JITTER_AFTER_MS {
                let offset = at.duration_since(first).as_secs_f64() * 1e3 - audio_ms;
                lo = lo.min(offset);
                hi = hi.max(offset);
            }
            audio_ms += *bytes as f64 / 32.0;
        }
        let expected_ms = (SENTENCE_AUDIO.as_millis() as usize * REPLY.len()) as f64;
        if audio_ms < expected_ms - 20.0 {
            return Err(format!(
                "an answer of {audio_ms:.0} ms of audio, not {expected_ms:.0}"
            ));
        }
        turns.push(Turn {
            added_ms,
            jitter_ms: (hi - lo).max(0.0),
        });
    }
    socket
        .send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match next_message(&mut socket, FRAME_WAIT).await? {
            Some(Message::Text(t)) if t.contains("\"ended\"") => break,
            Some(_) => {}
            None => return Err("the call never ended".into()),
        }
    }
    Ok(turns)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Runs `CALLS` calls at once with the tenant's speech set to `tts`.
async fn workload(
    client: &Client,
    base: &str,
    token: &str,
    agent_id: &str,
    tts: &str,
) -> Result<Vec<Turn>, BenchError> {
    send(
        client,
        Method::POST,
        format!("{base}/api/config/service"),
        token,
        Some(json!({"stt_provider": "deepgram", "tts_provider": tts, "tts_voice": "bench-voice"})),
    )
    .await
    .map_err(BenchError::Setup)?;
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let (client, base, token, agent) = (
            client.clone(),
            base.to_string(),
            token.to_string(),
            agent_id.to_string(),
        );
        calls.push(tokio::spawn(call(client, base, token, agent)));
    }
    let (mut turns, mut failed) = (Vec::new(), 0);
    for c in calls {
        match c.await.map_err(stand_in_error)? {
            Ok(t) => turns.extend(t),
            Err(e) => {
                failed += 1;
                eprintln!("a call failed: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(BenchError::Setup(format!(
            "{failed} of {CALLS} calls failed"
        )));
    }
    Ok(turns)
}

/// `voxflow-bench voice`: true when every target is met.
pub async fn bench(dir: &std::path::Path) -> Result<bool, BenchError> {
    match tokio::time::timeout(TIME_CAP, bench_in(dir)).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Setup(format!(
            "the voice benchmark took more than {} s",
            TIME_CAP.as_secs()
        ))),
    }
}

async fn bench_in(dir: &std::path::Path) -> Result<bool, BenchError> {
    let providers = stand_ins().await?;
    let mut config = voxflow::config::Config::for_data_dir(dir);
    config.http = ([127, 0, 0, 1], 0).into();
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.rate_limit_free = u32::MAX;
    config.rate_limit_pro = u32::MAX;
    config.rate_limit_enterprise = u32::MAX;
    config.rate_limit_anonymous = u32::MAX;
    config.deepgram_base_url = providers.clone();
    config.deepgram_api_key = Some("bench-deepgram-key".into());
    config.groq_base_url = format!("{providers}/v1");
    config.groq_api_key = Some("bench-groq-key".into());
    config.speech_tts_base_url = Some(format!("{providers}/v1"));
    config.llm_allowed_urls = Some(format!("{providers}/v1"));
    let running = voxflow::start(config, std::future::pending()).await?;
    let base = format!("http://{}", running.addr);
    let client = Client::builder().pool_max_idle_per_host(CALLS).build()?;

    // Enterprise: 25 calls at once, room for the 20.
    let token = super::enterprise_tenant(&client, &base, "voice-bench@example.com").await?;
    let agent = send(
        &client,
        Method::POST,
        format!("{base}/api/agents"),
        &token,
        Some(json!({"name": "Bench", "type": "INBOUND", "use_case": "support", "description": "You answer questions politely."})),
    )
    .await
    .map_err(BenchError::Setup)?;
    let agent_id = agent["data"]["id"].as_str().unwrap_or_default().to_string();

    println!(
        "VoxFlow {} on {} cores: {CALLS} concurrent browser voice calls, {TURNS} turns each, over loopback",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    println!(
        "stand-in delays: STT final {} ms, LLM first token {} ms, TTS first byte {} ms\n",
        STT_DELAY.as_millis(),
        LLM_FIRST_TOKEN.as_millis(),
        TTS_FIRST_BYTE.as_millis()
    );
    println!(
        "{:<34} {:>6} {:>9} {:>9} {:>9} {:>11} {:>11}  result",
        "workload (STT + TTS)",
        "turns",
        "added p50",
        "added p99",
        "added max",
        "jitter p99",
        "jitter max"
    );
    let mut all_met = true;
    for (name, tts) in [
        ("deepgram + deepgram (16 kHz)", "deepgram"),
        ("deepgram + on-prem pcm (24 kHz)", "openai_compatible"),
    ] {
        let turns = workload(&client, &base, &token, &agent_id, tts).await?;
        let mut added: Vec<f64> = turns.iter().map(|t| t.added_ms).collect();
        let mut jitter: Vec<f64> = turns.iter().map(|t| t.jitter_ms).collect();
        added.sort_by(f64::total_cmp);
        jitter.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&added, 0.5), percentile(&added, 0.99));
        let j99 = percentile(&jitter, 0.99);
        let met = p50 <= ADDED_P50 && p99 <= ADDED_P99 && j99 <= JITTER_MAX;
        all_met &= met;
        println!(
            "{:<34} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>11.1}  {}",
            name,
            turns.len(),
            p50,
            p99,
            percentile(&added, 1.0),
            j99,
            percentile(&jitter, 1.0),
            if met { "met" } else { "NOT MET" }
        );
    }
    println!(
        "\ntargets: added p50 <= {ADDED_P50} ms, p99 <= {ADDED_P99} ms; jitter p99 <= {JITTER_MAX} ms (ms, all figures)"
    );
    running.stop().await?;
    Ok(all_met)
}
