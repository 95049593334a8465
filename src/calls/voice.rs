//! Browser voice calls: `GET /api/calls/web/{run_id}/audio`, a WebSocket
//! that carries the caller's microphone (16-bit little-endian mono PCM at
//! 16 kHz) to streaming speech-to-text, the final transcript to the agent's
//! LLM (streamed), and the reply sentence by sentence through text-to-speech
//! back to the caller, paced in real time. When the caller speaks while the
//! agent is speaking (barge-in), the rest of that answer is dropped, the
//! client is told to flush what it buffered (`interrupted`), and only what
//! was spoken goes into the transcript.
//!
//! Protocol. Client → server: binary frames of PCM (10–200 ms each), text
//! frames `{"type":"text","text":…}` (a typed turn) and `{"type":"end"}`.
//! Server → client: `{"type":"ready","sample_rate":16000}`,
//! `{"type":"transcript","role":…,"text":…,"final":bool}`, `{"type":"speaking"}`,
//! `{"type":"interrupted"}`, `{"type":"error","code":…,"message":…}`,
//! `{"type":"ended","run":{…}}`, and binary frames of the agent's speech.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::agent_llm::{self, plan_llm, setup_required, LlmPlan};
use super::store::{self, Disposition, Finish, LlmTurn, Measure, Outcome, Turn, TurnLatency};
use crate::api_keys::{self, Provider};
use crate::auth::extract::CurrentUser;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiPath, ClientInfo};
use crate::http::openapi::ErrorBody;
use crate::http::AppState;
use crate::providers::deepgram::{self, ListenParams};
use crate::providers::llm::Streamed;
use crate::providers::openai_speech::{self, CallAudio};
use crate::providers::speech::{Heard, Listening, SpeechError};
use crate::service_config::{self, SPEECH_DEEPGRAM, SPEECH_OPENAI_COMPATIBLE};

/// The sample rate of a browser call's audio both ways.
pub const SAMPLE_RATE: u32 = 16_000;
/// A browser call's 16-bit mono PCM: bytes per millisecond of audio.
const BROWSER_BYTES_PER_MS: usize = (SAMPLE_RATE as usize / 1000) * 2;
/// What one browser frame may hold: 10 to 200 ms of audio.
const MIN_FRAME: usize = 10 * BROWSER_BYTES_PER_MS;
const MAX_FRAME: usize = 200 * BROWSER_BYTES_PER_MS;

/// How a call's audio is encoded, both ways: the browser's 16-bit PCM at
/// 16 kHz, or Twilio's 8-bit μ-law at 8 kHz (which Deepgram takes and makes
/// as it is, so nothing is converted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Deepgram's name for it: `linear16` or `mulaw`.
    pub encoding: &'static str,
    pub sample_rate: u32,
}

impl AudioFormat {
    pub const BROWSER: AudioFormat = AudioFormat {
        encoding: "linear16",
        sample_rate: SAMPLE_RATE,
    };
    pub const TWILIO: AudioFormat = AudioFormat {
        encoding: "mulaw",
        sample_rate: 8_000,
    };

    fn bytes_per_sample(self) -> usize {
        if self.encoding == "mulaw" {
            1
        } else {
            2
        }
    }

    fn bytes_per_ms(self) -> usize {
        self.sample_rate as usize / 1000 * self.bytes_per_sample()
    }

    fn call_audio(self) -> CallAudio {
        if self.encoding == "mulaw" {
            CallAudio::Mulaw {
                rate: self.sample_rate,
            }
        } else {
            CallAudio::Linear16 {
                rate: self.sample_rate,
            }
        }
    }
}

/// Where a call's audio comes from and goes to.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// This server's protocol (see the module's documentation).
    Browser,
    /// Twilio Media Streams: JSON events, audio in base64 `media` payloads.
    Twilio { stream_sid: String },
}

/// What one incoming message means.
pub(crate) enum Input {
    Audio(Vec<u8>),
    Text(String),
    End,
    Bad(&'static str, &'static str),
    Nothing,
}

impl Transport {
    fn format(&self) -> AudioFormat {
        match self {
            Transport::Browser => AudioFormat::BROWSER,
            Transport::Twilio { .. } => AudioFormat::TWILIO,
        }
    }

    pub(crate) fn read(&self, msg: Message) -> Input {
        match (self, msg) {
            (_, Message::Close(_)) => Input::End,
            (_, Message::Ping(_) | Message::Pong(_)) => Input::Nothing,
            (_, Message::Binary(b)) if b.len() > MAX_FRAME_BYTES => {
                Input::Bad("FRAME_TOO_LARGE", "Frames may be at most 64 KiB")
            }
            (_, Message::Text(t)) if t.len() > MAX_FRAME_BYTES => {
                Input::Bad("FRAME_TOO_LARGE", "Frames may be at most 64 KiB")
            }
            (Transport::Browser, Message::Binary(pcm)) => {
                if pcm.len() % 2 == 1 || !(MIN_FRAME..=MAX_FRAME).contains(&pcm.len()) {
                    Input::Bad(
                        "INVALID_AUDIO",
                        "Audio frames are 16-bit mono PCM at 16 kHz, 10 to 200 ms each",
                    )
                } else {
                    Input::Audio(pcm.to_vec())
                }
            }
            (Transport::Browser, Message::Text(text)) => match client_frame(&text) {
                Ok(ClientFrame::End) => Input::End,
                Ok(ClientFrame::Text(t)) => Input::Text(t),
                Err(message) => Input::Bad("INVALID_FRAME", message),
            },
            (Transport::Twilio { .. }, Message::Binary(_)) => Input::Nothing,
            (Transport::Twilio { .. }, Message::Text(text)) => twilio_event(&text),
        }
    }

    /// The message that carries `out`, if this transport has one for it.
    fn write_json(&self, v: Value) -> Option<Message> {
        match self {
            Transport::Browser => Some(Message::Text(v.to_string().into())),
            // Twilio knows only its own events: a barge-in flushes its
            // buffer (`clear`); the rest is this server's business.
            Transport::Twilio { stream_sid } => (v["type"] == "interrupted").then(|| {
                Message::Text(
                    json!({"event": "clear", "streamSid": stream_sid})
                        .to_string()
                        .into(),
                )
            }),
        }
    }

    /// Twilio's `mark` after a sentence's media; nothing for a browser.
    fn write_mark(&self, name: &str) -> Option<Message> {
        match self {
            Transport::Browser => None,
            Transport::Twilio { stream_sid } => Some(Message::Text(
                json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})
                    .to_string()
                    .into(),
            )),
        }
    }

    fn write_audio(&self, pcm: Vec<u8>) -> Message {
        match self {
            Transport::Browser => Message::Binary(pcm.into()),
            Transport::Twilio { stream_sid } => {
                use base64::Engine;
                let payload = base64::engine::general_purpose::STANDARD.encode(pcm);
                Message::Text(
                    json!({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
                        .to_string()
                        .into(),
                )
            }
        }
    }
}

/// One of Twilio's Media Streams events: `media` (inbound μ-law audio in
/// base64), `stop` (the call is over); `connected`, `start` and `mark` (the
/// echo of a sentence's mark, played) say nothing the session needs once it
/// runs: what the caller heard is counted from the audio sent.
fn twilio_event(text: &str) -> Input {
    use base64::Engine;
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Input::Bad("INVALID_FRAME", "Twilio events are JSON");
    };
    match v["event"].as_str() {
        Some("media") => {
            if v["media"]["track"].as_str().is_some_and(|t| t != "inbound") {
                return Input::Nothing;
            }
            match v["media"]["payload"]
                .as_str()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
            {
                Some(audio) if !audio.is_empty() => Input::Audio(audio),
                _ => Input::Bad(
                    "INVALID_AUDIO",
                    "A media event's payload is base64 μ-law audio",
                ),
            }
        }
        Some("stop") => Input::End,
        Some("connected" | "start" | "mark" | "dtmf") => Input::Nothing,
        _ => Input::Bad("INVALID_FRAME", "Unknown Twilio event"),
    }
}
/// A larger frame is answered with an error frame (the call goes on)...
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// ...and one larger than this ends the connection unread.
const MAX_MESSAGE: usize = 1024 * 1024;
/// The agent's speech goes out in frames of this much audio...
const OUT_FRAME_MS: u64 = 20;
/// ...at most this far ahead of real time, so that a barge-in leaves the
/// client little to flush.
const LEAD: Duration = Duration::from_millis(60);
/// Silence after which Deepgram ends an utterance.
const ENDPOINTING_MS: u32 = 300;
/// How often a live call marks its run active (the idle sweep).
const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// The longest text turn typed inside a voice call.
const MAX_TEXT_CHARS: usize = 4000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audio_socket))
        .routes(routes!(twilio_stream))
}

/// Whether the tenant's phone calls can stream audio (speech providers set
/// up): then Twilio is answered with `<Connect><Stream>` instead of
/// `<Say>`/`<Gather>`.
pub(super) async fn streams(state: &AppState, user_id: &str) -> bool {
    voice_setup(state, user_id).await.is_ok()
}

/// The Media Streams URL of a run: `VOXFLOW_PUBLIC_URL` with `wss`.
pub(super) fn stream_url(public: &str, run_id: &str) -> String {
    let base = public
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| public.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| public.to_string());
    format!("{base}/api/calls/twilio/stream/{run_id}")
}

/// How long Twilio has to say which stream this is after connecting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Twilio's Media Streams socket of a phone run: the upgrade request must
/// carry Twilio's signature of the stream URL, made with the credentials
/// that placed the call (403 otherwise); the run must be a phone call in
/// progress (404, 409). Then the same pipeline as a browser call runs, with
/// μ-law at 8 kHz both ways.
#[utoipa::path(get, path = "/twilio/stream/{run_id}", tag = "twilio", security(()),
    params(("run_id" = Uuid, Path, description = "The phone call's run")),
    responses(
        (status = 101, description = "Switched to Twilio's Media Streams WebSocket"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade, or a bad id"),
        (status = 403, body = ErrorBody, description = "`X-Twilio-Signature` missing or wrong"),
        (status = 404, body = ErrorBody, description = "No such run"),
        (status = 409, body = ErrorBody, description = "Not a phone call in progress"),
        (status = 503, body = ErrorBody, description = "The database is busy"),
    ))]
async fn twilio_stream(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<Uuid>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let run_id = run_id.to_string();
    let found = {
        let run_id = run_id.clone();
        state
            .db
            .read(move |c| {
                let owned = store::run_with_owner(c, &run_id)?;
                let facts = store::twilio_facts(c, &run_id)?;
                Ok::<_, ApiError>(owned.map(|o| (o, facts)))
            })
            .await?
    };
    let Some(((owner, run), (_, account_sid, key_source))) =
        found.filter(|((_, r), _)| r.run.kind == "PHONE_CALL")
    else {
        return Err(ApiError::not_found("Run"));
    };
    let forbidden = || ApiError::forbidden("INVALID_SIGNATURE", "Invalid Twilio signature");
    let Some(public) = state.config.public_base().map(str::to_string) else {
        return Err(forbidden());
    };
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(forbidden)?;
    let creds = super::phone::run_credentials(
        &state,
        &owner,
        account_sid.as_deref(),
        key_source.as_deref(),
    )
    .await?;
    let Some((_, token, _)) = creds else {
        return Err(forbidden());
    };
    let url = stream_url(&public, &run_id);
    if !crate::providers::twilio::signature_matches(&token, &url, &[], signature) {
        return Err(forbidden());
    }
    if run.run.status != "in_progress" {
        return Err(ApiError::conflict(
            "RUN_NOT_IN_PROGRESS",
            format!("This run has already ended ({})", run.run.status),
        ));
    }
    let setup = voice_setup(&state, &owner).await?;
    let (upgrade, greeting, script) = opening(&state, &run_id, &run.transcript, upgrade).await?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            // `connected`, then `start` with the stream's SID.
            let started = tokio::time::timeout(START_TIMEOUT, async {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let Message::Text(t) = msg {
                        let v: Value = serde_json::from_str(&t).unwrap_or_default();
                        if v["event"] == "start" {
                            return v["start"]["streamSid"]
                                .as_str()
                                .or_else(|| v["streamSid"].as_str())
                                .map(str::to_string);
                        }
                    }
                }
                None
            })
            .await;
            let Ok(Some(stream_sid)) = started else {
                tracing::warn!(run_id = %run_id, "a Twilio media stream never started");
                return;
            };
            let call = Arc::new(Call {
                state,
                user_id: owner,
                run_id,
                script,
                setup,
                transport: Transport::Twilio { stream_sid },
                web_client: None,
            });
            run_session(call, socket, greeting).await;
        })
        .into_response())
}

/// What a voice call needs from the tenant's setup.
struct Setup {
    plan: LlmPlan,
    stt: SpeechServer,
    tts: SpeechServer,
    stt_model: String,
    tts_voice: String,
}

/// Where the caller's speech becomes text, or the agent's text speech.
#[derive(Clone)]
enum SpeechServer {
    Deepgram {
        key: String,
    },
    /// The operator's OpenAI-compatible speech server.
    OpenAi(openai_speech::Server),
}

impl SpeechServer {
    /// The provider's name, as the service configuration has it.
    fn name(&self) -> &'static str {
        match self {
            SpeechServer::Deepgram { .. } => SPEECH_DEEPGRAM,
            SpeechServer::OpenAi(_) => SPEECH_OPENAI_COMPATIBLE,
        }
    }
}

/// One side's speech server: Deepgram with the tenant's key (or the
/// server's), or the operator's OpenAI-compatible server, whose URL must
/// pass the same allow-list as a tenant's LLM server.
fn speech_server(
    state: &AppState,
    provider: &str,
    deepgram_key: Option<&str>,
    base_url: Option<&str>,
    env: &str,
) -> Result<SpeechServer, ApiError> {
    match provider {
        SPEECH_DEEPGRAM => match deepgram_key {
            Some(key) => Ok(SpeechServer::Deepgram { key: key.to_string() }),
            None => Err(setup_required(
                "Voice calls through Deepgram need a Deepgram key: save one under API keys (or ask the administrator to set DEEPGRAM_API_KEY)",
            )),
        },
        SPEECH_OPENAI_COMPATIBLE => {
            let Some(base_url) = base_url
                .map(|b| b.trim().trim_end_matches('/'))
                .filter(|b| !b.is_empty())
            else {
                return Err(setup_required(&format!(
                    "The openai_compatible speech provider needs the administrator to set {env}"
                )));
            };
            if !state.config.llm_url_allowed(base_url) {
                return Err(setup_required(&format!(
                    "The speech server {env} is not among the servers this installation allows (VOXFLOW_LLM_ALLOWED_URLS)"
                )));
            }
            Ok(SpeechServer::OpenAi(openai_speech::Server {
                base_url: base_url.to_string(),
                key: state
                    .config
                    .speech_api_key
                    .as_ref()
                    .and_then(|k| k.non_blank())
                    .map(str::to_string),
                timeout: Duration::from_secs(state.config.provider_timeout_secs),
            }))
        }
        other => Err(setup_required(&format!(
            "The speech provider {other:?} is not supported: choose deepgram or openai_compatible in the service configuration"
        ))),
    }
}

async fn voice_setup(state: &AppState, user_id: &str) -> Result<Setup, ApiError> {
    let config = {
        let user_id = user_id.to_string();
        state
            .db
            .read(move |c| service_config::load(c, &user_id).map_err(ApiError::from))
            .await?
    };
    let plan = plan_llm(state, user_id, &config).await?;
    let deepgram_key =
        if config.stt_provider == SPEECH_DEEPGRAM || config.tts_provider == SPEECH_DEEPGRAM {
            api_keys::resolve(state, user_id, Provider::Deepgram)
                .await?
                .map(|k| k.secret)
        } else {
            None
        };
    let speech = &state.config;
    let stt = speech_server(
        state,
        &config.stt_provider,
        deepgram_key.as_deref(),
        speech.speech_stt_base_url.as_deref(),
        "VOXFLOW_SPEECH_STT_BASE_URL",
    )?;
    let tts = speech_server(
        state,
        &config.tts_provider,
        deepgram_key.as_deref(),
        speech.speech_tts_base_url.as_deref(),
        "VOXFLOW_SPEECH_TTS_BASE_URL",
    )?;
    Ok(Setup {
        plan,
        stt,
        tts,
        stt_model: config.stt_model,
        tts_voice: config.tts_voice,
    })
}

/// What both sockets need once the run is checked: the upgrade itself (a
/// 400 for a plain GET), the greeting to speak when nothing has been said
/// yet, and the run's script.
async fn opening(
    state: &AppState,
    run_id: &str,
    transcript: &[Turn],
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, Option<String>, store::Script), ApiError> {
    let upgrade = upgrade.map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "WEBSOCKET_REQUIRED",
            format!("Open this URL as a WebSocket: {}", r.body_text()),
        )
    })?;
    let greeting = transcript
        .first()
        .filter(|t| t.role == "assistant" && transcript.len() == 1)
        .map(|t| t.content.clone());
    let script = super::read_script(state, run_id).await?;
    Ok((upgrade, greeting, script))
}

/// The upgrade: the caller's own web call in progress (404 for another
/// tenant's or a missing run, 409 for a phone run or one that ended), with
/// speech set up (400), before anything is upgraded.
#[utoipa::path(get, path = "/web/{run_id}/audio", tag = "calls",
    params(("run_id" = Uuid, Path, description = "The caller's web call")),
    responses(
        (status = 101, description = "Switched to the call's WebSocket: PCM audio both ways, transcripts, barge-in"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade, or speech is not set up"),
        (status = 409, body = ErrorBody, description = "A phone run, or one that ended"),
    ))]
async fn audio_socket(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(run_id): ApiPath<Uuid>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let run_id = run_id.to_string();
    let user_id = current.user.id;
    let found = {
        let (user_id, run_id) = (user_id.clone(), run_id.clone());
        state
            .db
            .read(move |c| super::routes::live_run(c, &user_id, &run_id))
            .await?
    };
    let setup = voice_setup(&state, &user_id).await?;
    let (upgrade, greeting, script) = opening(&state, &run_id, &found.transcript, upgrade).await?;
    let call = Arc::new(Call {
        state,
        user_id,
        run_id,
        script,
        setup,
        transport: Transport::Browser,
        web_client: Some(client),
    });
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run_session(call, socket, greeting))
        .into_response())
}

/// One voice call's fixed facts.
struct Call {
    state: AppState,
    user_id: String,
    run_id: String,
    /// The agent's prompt, voice, language and time limit for this call.
    script: store::Script,
    setup: Setup,
    transport: Transport,
    /// A web call's caller as the upgrade request showed it: its end is
    /// audited as a typed web call's end is (`end_web_call`). `None` for a
    /// phone call, which Twilio ends.
    web_client: Option<ClientInfo>,
}

impl Call {
    fn tts_voice(&self) -> &str {
        self.script
            .voice
            .as_deref()
            .unwrap_or(&self.setup.tts_voice)
    }
}

/// What goes out on the socket. Audio carries the answer it belongs to
/// (its generation): after a barge-in the writer drops the rest of the
/// interrupted answer's audio unsent, and counts what it did send.
enum Out {
    Json(Value),
    Audio {
        pcm: Vec<u8>,
        generation: u64,
        spoken: Arc<Mutex<Spoken>>,
    },
    /// The end of one sentence's audio: Twilio is sent a `mark`, which it
    /// echoes once the caller has heard everything before it (the browser
    /// protocol has no such event).
    Mark {
        name: String,
        generation: u64,
    },
    Close,
}

fn frame(kind: &str, extra: Value) -> Out {
    let mut v = json!({ "type": kind });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    Out::Json(v)
}

/// The socket's sending side as answers see it: frames to send, and the
/// generation of the answer whose audio may still go out.
#[derive(Clone)]
struct Voice {
    out: mpsc::Sender<Out>,
    current: Arc<std::sync::atomic::AtomicU64>,
}

impl Voice {
    /// Makes a new answer the one whose audio goes out; any other answer's
    /// audio still queued is dropped.
    fn next_generation(&self) -> u64 {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    async fn send(&self, out: Out) {
        let _ = self.out.send(out).await;
    }
}

fn error_frame(code: &str, message: &str) -> Out {
    frame("error", json!({ "code": code, "message": message }))
}

/// What the agent has said of its current answer: the sentences queued for
/// speech with their audio so far, and how much audio has gone out.
#[derive(Default)]
struct Spoken {
    /// (sentence, its audio bytes so far, whether all its audio has come)
    sentences: Vec<(String, usize, bool)>,
    queued: usize,
    sent: usize,
    /// Whether the whole answer was stored already (its LLM reply is done).
    saved: bool,
    /// Whether making its speech failed.
    speech_failed: bool,
}

/// Speech runs at about 15 characters a second: the audio a sentence whose
/// speech is still being made will probably have.
const MS_PER_CHAR: usize = 66;

impl Spoken {
    /// The text the caller heard: whole sentences whose audio went out, and
    /// of the one cut off, its words in proportion to the audio sent.
    /// `bytes_per_ms` is the call's audio (32 for the browser's PCM, 8 for
    /// a phone's μ-law).
    fn heard(&self, bytes_per_ms: usize) -> String {
        let mut left = self.sent;
        let mut out: Vec<String> = Vec::new();
        for (text, bytes, complete) in &self.sentences {
            let total = if *complete {
                *bytes
            } else {
                (*bytes).max(text.chars().count() * MS_PER_CHAR * bytes_per_ms)
            };
            if left >= total {
                out.push(text.clone());
                left -= total;
                continue;
            }
            if left > 0 && total > 0 {
                let words: Vec<&str> = text.split_whitespace().collect();
                let n = words.len() * left / total;
                if n > 0 {
                    out.push(words[..n].join(" "));
                }
            }
            break;
        }
        out.join(" ")
    }
}

/// An answer being spoken: its task, and what of it was said.
struct Answer {
    task: JoinHandle<()>,
    spoken: Arc<Mutex<Spoken>>,
    /// The caller's words it answers (empty for the greeting).
    said: Turn,
}

impl Answer {
    /// Still being written or spoken: its audio has not all gone out.
    fn speaking(&self) -> bool {
        !self.task.is_finished()
            || self
                .spoken
                .lock()
                .map(|s| s.sent < s.queued)
                .unwrap_or(false)
    }
}

/// The session: reads the socket and the speech-to-text events, and runs one
/// answer at a time.
async fn run_session(call: Arc<Call>, socket: WebSocket, greeting: Option<String>) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
    // The writer: frames in order; audio paced in real time, a little
    // ahead; audio of an interrupted answer dropped.
    let current = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (transport, bytes_per_ms) = (
        call.transport.clone(),
        call.transport.format().bytes_per_ms(),
    );
    let writer = {
        let current = current.clone();
        tokio::spawn(async move {
            let mut next_due: Option<Instant> = None;
            while let Some(out) = out_rx.recv().await {
                let (msg, counted) = match out {
                    Out::Json(v) => match transport.write_json(v) {
                        Some(m) => (m, None),
                        None => continue,
                    },
                    Out::Audio {
                        pcm,
                        generation,
                        spoken,
                    } => {
                        if generation != current.load(std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        let now = Instant::now();
                        let due = next_due.filter(|d| *d + LEAD >= now).unwrap_or(now);
                        if let Some(wait) = due.checked_duration_since(now + LEAD) {
                            tokio::time::sleep(wait).await;
                        }
                        next_due =
                            Some(due + Duration::from_millis((pcm.len() / bytes_per_ms) as u64));
                        let n = pcm.len();
                        (transport.write_audio(pcm), Some((spoken, n)))
                    }
                    Out::Mark { name, generation } => {
                        if generation != current.load(std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        match transport.write_mark(&name) {
                            Some(m) => (m, None),
                            None => continue,
                        }
                    }
                    Out::Close => {
                        let _ = sink.close().await;
                        break;
                    }
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
                if let Some((spoken, n)) = counted {
                    if let Ok(mut s) = spoken.lock() {
                        s.sent += n;
                    }
                }
            }
        })
    };
    let voice = Voice {
        out: out_tx.clone(),
        current,
    };
    let format = call.transport.format();
    let _ = out_tx
        .send(frame("ready", json!({ "sample_rate": format.sample_rate })))
        .await;

    let stt_name = call.setup.stt.name();
    let (stt_audio, mut heard) = match listen(&call, format).await {
        Ok(l) => (Some(l.audio), Some(l.heard)),
        Err(e) => {
            tracing::warn!(run_id = %call.run_id, provider = stt_name, error = %e, "live transcription failed");
            let _ = out_tx
                .send(error_frame(
                    "PROVIDER_ERROR",
                    &format!(
                        "The speech-to-text provider ({stt_name}) {e}; typed turns still work"
                    ),
                ))
                .await;
            (None, None)
        }
    };

    let mut answer: Option<Answer> = None;
    if let Some(g) = greeting {
        answer = Some(speak_only(&call, &voice, g));
    }
    let mut utterance = String::new();
    let idle = Duration::from_secs(call.state.config.run_idle_timeout_secs);
    // The agent's time limit, from when the run started.
    let limit_at = {
        let run_id = call.run_id.clone();
        let elapsed = call
            .state
            .db
            .read(move |c| store::elapsed_secs(c, &run_id).map_err(ApiError::from))
            .await
            .unwrap_or(0);
        let left = (call.script.max_call_seconds - elapsed).max(0);
        Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
    };
    let mut last_heard = Instant::now();
    let mut last_touch = Instant::now();
    let ending: (Disposition<'static>, Measure) = loop {
        let heard_next = async {
            match heard.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else {
                    // Closed without `end`: the call is over all the same.
                    break (Disposition::Set("user_hangup"), Measure::UntilNow);
                };
                last_heard = Instant::now();
                if last_touch.elapsed() >= TOUCH_EVERY {
                    last_touch = Instant::now();
                    let run_id = call.run_id.clone();
                    let _ = call.state.db.write(move |c| store::touch(c, &run_id).map_err(ApiError::from)).await;
                }
                match call.transport.read(msg) {
                    Input::Audio(pcm) => {
                        if let Some(stt) = &stt_audio {
                            let _ = stt.send(pcm).await;
                        }
                    }
                    Input::Text(t) => {
                        let _ = out_tx.send(frame("transcript", json!({"role": "user", "text": t, "final": true}))).await;
                        interrupt(&call, &voice, answer.take()).await;
                        answer = Some(start_answer(&call, &voice, t, Instant::now()));
                    }
                    Input::End => break (Disposition::Set("user_hangup"), Measure::UntilNow),
                    Input::Bad(code, message) => {
                        let _ = out_tx.send(error_frame(code, message)).await;
                    }
                    Input::Nothing => {}
                }
            }
            h = heard_next => {
                let Some(h) = h else {
                    heard = None;
                    let _ = out_tx.send(error_frame("PROVIDER_ERROR", &format!("The speech-to-text provider ({stt_name}) closed the stream; typed turns still work"))).await;
                    continue;
                };
                let speaking = answer.as_ref().is_some_and(Answer::speaking);
                match h {
                    Heard::SpeechStarted if speaking => {
                        interrupt(&call, &voice, answer.take()).await;
                    }
                    Heard::SpeechStarted => {}
                    Heard::Transcript { text, is_final, speech_final } => {
                        if !text.is_empty() && speaking {
                            interrupt(&call, &voice, answer.take()).await;
                        }
                        if is_final && !text.is_empty() {
                            if !utterance.is_empty() { utterance.push(' '); }
                            utterance.push_str(&text);
                        }
                        if !text.is_empty() || speech_final {
                            let shown = if is_final { utterance.clone() } else { format!("{utterance} {text}").trim().to_string() };
                            if !shown.is_empty() {
                                let _ = out_tx.send(frame("transcript", json!({"role": "user", "text": shown, "final": speech_final}))).await;
                            }
                        }
                        if speech_final && !utterance.is_empty() {
                            let said = std::mem::take(&mut utterance);
                            interrupt(&call, &voice, answer.take()).await;
                            answer = Some(start_answer(&call, &voice, said, Instant::now()));
                        }
                    }
                    Heard::Failed(e) => {
                        // That utterance is lost; the agent says nothing and listens on.
                        tracing::warn!(run_id = %call.run_id, provider = stt_name, error = %e, "an utterance could not be transcribed");
                        let _ = out_tx.send(error_frame("PROVIDER_ERROR", &format!("The speech-to-text provider ({stt_name}) {e}; say it again, or type it"))).await;
                    }
                    Heard::UtteranceEnd => {
                        if !utterance.is_empty() {
                            let said = std::mem::take(&mut utterance);
                            interrupt(&call, &voice, answer.take()).await;
                            answer = Some(start_answer(&call, &voice, said, Instant::now()));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until((last_heard + idle).into()) => {
                break (Disposition::Set(super::ABANDONED), Measure::UntilLastActivity);
            }
            _ = tokio::time::sleep_until(limit_at.into()) => {
                break (Disposition::Set(super::MAX_DURATION), Measure::UntilNow);
            }
        }
    };
    // An answer still being spoken when the call ends is kept as far as it
    // was said.
    interrupt(&call, &voice, answer.take()).await;
    drop(stt_audio);
    let finished = match call.transport {
        Transport::Browser => finish(&call, ending.0, ending.1).await,
        // A phone call is billed with Twilio's own figures: looked up now
        // (or, while Twilio still has it live, by its status callback).
        Transport::Twilio { .. } => end_phone(&call).await,
    };
    match finished {
        Ok(Some(run)) => {
            let _ = out_tx.send(frame("ended", json!({ "run": run }))).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(run_id = %call.run_id, error = %e, "cannot end a voice call"),
    }
    let _ = out_tx.send(Out::Close).await;
    drop(out_tx);
    let _ = writer.await;
}

/// Opens live transcription of the call's audio with the tenant's provider.
async fn listen(call: &Call, format: AudioFormat) -> Result<Listening, SpeechError> {
    let timeout = Duration::from_secs(call.state.config.provider_timeout_secs);
    match &call.setup.stt {
        SpeechServer::Deepgram { key } => {
            let params = ListenParams {
                model: &call.setup.stt_model,
                language: call.script.language.as_deref(),
                encoding: format.encoding,
                sample_rate: format.sample_rate,
                endpointing_ms: ENDPOINTING_MS,
            };
            deepgram::listen(&call.state.config.deepgram_base_url, key, &params, timeout).await
        }
        SpeechServer::OpenAi(server) => Ok(openai_speech::listen(
            call.state.http_client.clone(),
            openai_speech::ListenTarget {
                server: server.clone(),
                model: call.setup.stt_model.clone(),
                language: call.script.language.clone(),
                input: format.call_audio(),
                endpointing: Duration::from_millis(u64::from(ENDPOINTING_MS)),
            },
        )),
    }
}

/// Makes the speech of `text` in the call's audio with the tenant's
/// provider, handed to `out` as it arrives.
async fn synthesise(
    state: AppState,
    tts: SpeechServer,
    voice: String,
    format: AudioFormat,
    text: String,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<usize, SpeechError> {
    let client = &state.http_client;
    match tts {
        SpeechServer::Deepgram { key } => {
            let to = deepgram::SpeakTarget {
                base_url: &state.config.deepgram_base_url,
                key: &key,
                voice: &voice,
                encoding: format.encoding,
                sample_rate: format.sample_rate,
                timeout: Duration::from_secs(state.config.provider_timeout_secs),
            };
            deepgram::speak(client, &to, &text, &out).await
        }
        SpeechServer::OpenAi(server) => {
            let to = openai_speech::SpeakTarget {
                server,
                model: state.config.speech_tts_model.clone(),
                voice,
                format: state.config.speech_tts_format,
                output: format.call_audio(),
            };
            openai_speech::speak(client, &to, &text, &out).await
        }
    }
}

enum ClientFrame {
    Text(String),
    End,
}

/// A client's text frame, or why it is not one.
fn client_frame(raw: &str) -> Result<ClientFrame, &'static str> {
    let v: Value =
        serde_json::from_str(raw).map_err(|_| "Text frames are JSON objects with a type")?;
    match v.get("type").and_then(Value::as_str) {
        Some("end") => Ok(ClientFrame::End),
        Some("text") => {
            let text = v
                .get("text")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default();
            if text.is_empty() {
                Err("A text frame needs a non-empty text")
            } else if text.chars().count() > MAX_TEXT_CHARS {
                Err("A text frame may hold at most 4000 characters")
            } else {
                Ok(ClientFrame::Text(text.to_string()))
            }
        }
        _ => Err("Unknown frame type: send text or end"),
    }
}

/// Ends the run through `finish_run` (the triggers bill it) and, for a
/// web call, writes the same `end_web_call` audit entry as a typed end, in
/// the same transaction; the run as the API shows it, or `None` when it
/// had already ended.
async fn finish(
    call: &Call,
    disposition: Disposition<'static>,
    duration: Measure,
) -> Result<Option<Value>, ApiError> {
    let (user_id, run_id) = (call.user_id.clone(), call.run_id.clone());
    let client = call.web_client.clone();
    call.state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let finish = Finish {
                outcome: Outcome::Completed,
                disposition,
                duration,
            };
            let Some(run) = store::finish_run(&tx, &run_id, &finish)? else {
                return Ok(None);
            };
            if let Some(client) = &client {
                super::routes::audit_end(&tx, &user_id, &run, client)?;
            }
            tx.commit()?;
            Ok(Some(serde_json::to_value(run).map_err(ApiError::internal)?))
        })
        .await
}

/// The stream of a phone call stopped: the call is looked up at Twilio and
/// closed with Twilio's status and duration when it has ended.
async fn end_phone(call: &Call) -> Result<Option<Value>, ApiError> {
    let run_id = call.run_id.clone();
    let live = call
        .state
        .db
        .read(move |c| store::live_phone_run(c, &run_id).map_err(ApiError::from))
        .await?;
    if let Some(run) = live {
        super::reconcile::reconcile_run(&call.state, &run).await?;
    }
    Ok(None)
}

/// Stops the answer being spoken, if any: its remaining audio is dropped,
/// the client is told to flush what it buffered, and the transcript keeps
/// the caller's words with what the agent got to say.
async fn interrupt(call: &Call, voice: &Voice, answer: Option<Answer>) {
    let Some(answer) = answer else { return };
    if !answer.speaking() {
        return;
    }
    answer.task.abort();
    voice.next_generation();
    voice.send(frame("interrupted", json!({}))).await;
    let (heard, saved) = answer
        .spoken
        .lock()
        .map(|s| (s.heard(call.transport.format().bytes_per_ms()), s.saved))
        .unwrap_or_default();
    if answer.said.content.is_empty() && !saved {
        // The greeting: stored when the call started.
        return;
    }
    let stored = if saved {
        amend_last_answer(call, heard).await
    } else {
        let mut reply = Turn::new("assistant", heard, String::new());
        reply.interrupted = true;
        save_turns(call, vec![answer.said, reply], None).await
    };
    if let Err(e) = stored {
        tracing::warn!(run_id = %call.run_id, error = %e, "cannot store an interrupted voice turn");
    }
}

/// The stored answer was cut off while it was being spoken: it keeps only
/// what was heard.
async fn amend_last_answer(call: &Call, heard: String) -> Result<(), ApiError> {
    let (user_id, run_id) = (call.user_id.clone(), call.run_id.clone());
    call.state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            if let Some(found) = store::owned_run(&tx, &user_id, &run_id)? {
                let mut all = found.transcript;
                if let Some(last) = all.last_mut().filter(|t| t.role == "assistant") {
                    last.content = heard;
                    last.interrupted = true;
                }
                store::save_transcript(&tx, &run_id, &all)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
}

/// Appends `turns` (an empty `at` is now) and an LLM turn's usage to the
/// run, while it is in progress.
async fn save_turns(
    call: &Call,
    mut turns: Vec<Turn>,
    usage: Option<LlmTurn>,
) -> Result<(), ApiError> {
    let (user_id, run_id) = (call.user_id.clone(), call.run_id.clone());
    call.state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            if let Some(usage) = &usage {
                // The provider answered, so it charged.
                store::record_llm_turn(&tx, &run_id, &user_id, usage)?;
            }
            if let Some(found) =
                store::owned_run(&tx, &user_id, &run_id)?.filter(|f| f.run.status == "in_progress")
            {
                let now = store::now(&tx)?;
                for t in &mut turns {
                    if t.at.is_empty() {
                        t.at = now.clone();
                    }
                }
                let mut all = found.transcript;
                all.extend(turns);
                store::save_transcript(&tx, &run_id, &all)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
}

/// Speaks `text` (the greeting), storing nothing: it is in the transcript
/// already.
fn speak_only(call: &Arc<Call>, voice: &Voice, text: String) -> Answer {
    let spoken = Arc::new(Mutex::new(Spoken::default()));
    let generation = voice.next_generation();
    let (call2, voice2, spoken2) = (call.clone(), voice.clone(), spoken.clone());
    let task = tokio::spawn(async move {
        voice2
            .send(frame(
                "transcript",
                json!({"role": "assistant", "text": text, "final": true}),
            ))
            .await;
        say(&call2, &voice2, generation, &spoken2, &text).await;
    });
    Answer {
        task,
        spoken,
        said: Turn::new("user", String::new(), String::new()),
    }
}

/// Synthesises one sentence and queues its audio in 20 ms frames;
/// `Some(Instant)` of its first audio queued. Once the speech of an answer
/// failed, the rest of it is not spoken: one error, not one a sentence.
async fn say(
    call: &Call,
    voice: &Voice,
    generation: u64,
    spoken: &Arc<Mutex<Spoken>>,
    sentence: &str,
) -> Option<Instant> {
    let (pcm_tx, mut pcm_rx) = mpsc::channel::<Vec<u8>>(32);
    let format = call.transport.format();
    let index = {
        let mut s = spoken.lock().ok()?;
        if s.speech_failed {
            return None;
        }
        s.sentences.push((sentence.to_string(), 0, false));
        s.sentences.len() - 1
    };
    let synth = tokio::spawn(synthesise(
        call.state.clone(),
        call.setup.tts.clone(),
        call.tts_voice().to_string(),
        format,
        sentence.to_string(),
        pcm_tx,
    ));
    let mut first = None;
    let mut pending = Vec::new();
    let frame_bytes = OUT_FRAME_MS as usize * format.bytes_per_ms();
    let queue = |pcm: Vec<u8>| {
        if let Ok(mut s) = spoken.lock() {
            s.queued += pcm.len();
            if let Some(entry) = s.sentences.get_mut(index) {
                entry.1 += pcm.len();
            }
        }
        Out::Audio {
            pcm,
            generation,
            spoken: spoken.clone(),
        }
    };
    loop {
        let chunk = pcm_rx.recv().await;
        let done = chunk.is_none();
        pending.extend(chunk.unwrap_or_default());
        while pending.len() >= frame_bytes || (done && !pending.is_empty()) {
            let rest = pending.split_off(frame_bytes.min(pending.len()));
            let pcm = std::mem::replace(&mut pending, rest);
            if first.is_none() {
                first = Some(Instant::now());
                let opening = spoken.lock().map(|s| s.queued == 0).unwrap_or(false);
                if opening {
                    voice.send(frame("speaking", json!({}))).await;
                }
            }
            voice.send(queue(pcm)).await;
        }
        if done {
            break;
        }
    }
    if first.is_some() {
        voice
            .send(Out::Mark {
                name: format!("{}-{generation}-{index}", call.run_id),
                generation,
            })
            .await;
    }
    if let Ok(mut s) = spoken.lock() {
        if let Some(entry) = s.sentences.get_mut(index) {
            entry.2 = true;
        }
    }
    if let Ok(Err(e)) = synth.await {
        let name = call.setup.tts.name();
        tracing::warn!(run_id = %call.run_id, provider = name, error = %e, "text to speech failed");
        voice
            .send(error_frame(
                "PROVIDER_ERROR",
                &format!("The text-to-speech provider ({name}) {e}"),
            ))
            .await;
        if let Ok(mut s) = spoken.lock() {
            s.speech_failed = true;
        }
    }
    first
}

/// Where a reply's text can be cut into a sentence to speak: after `.`,
/// `!`, `?` or a line break followed by white space.
pub(crate) fn sentence_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1)).find_map(|i| {
        (matches!(bytes[i], b'.' | b'!' | b'?' | b'\n') && bytes[i + 1].is_ascii_whitespace())
            .then_some(i + 1)
    })
}

/// Starts the agent's answer to `said`: the LLM's reply streamed, spoken
/// sentence by sentence as it arrives, stored with its latencies when done.
fn start_answer(call: &Arc<Call>, voice: &Voice, said: String, final_at: Instant) -> Answer {
    let spoken = Arc::new(Mutex::new(Spoken::default()));
    let said_turn = Turn::new("user", said, String::new());
    let generation = voice.next_generation();
    let (call2, voice2, spoken2, said_turn2) = (
        call.clone(),
        voice.clone(),
        spoken.clone(),
        said_turn.clone(),
    );
    let task = tokio::spawn(async move {
        let answered = answer(&call2, &voice2, generation, &spoken2, said_turn2, final_at).await;
        if let Err(e) = answered {
            voice2.send(error_frame(e.code, &e.message)).await;
        }
    });
    Answer {
        task,
        spoken,
        said: said_turn,
    }
}

async fn answer(
    call: &Call,
    voice: &Voice,
    generation: u64,
    spoken: &Arc<Mutex<Spoken>>,
    said: Turn,
    final_at: Instant,
) -> Result<(), ApiError> {
    let (transcript, spent) = {
        let (user_id, run_id) = (call.user_id.clone(), call.run_id.clone());
        call.state
            .db
            .read(move |c| {
                let found = store::owned_run(c, &user_id, &run_id)?;
                let spent = super::routes::quota_spent_during(c, &user_id, &run_id)?;
                Ok::<_, ApiError>((found.map(|f| f.transcript).unwrap_or_default(), spent))
            })
            .await?
    };
    if spent {
        voice
            .send(error_frame(
                "QUOTA_EXCEEDED",
                "This month's tokens are used up: the call ends",
            ))
            .await;
        let _ = finish(
            call,
            Disposition::Set(super::QUOTA_EXCEEDED),
            Measure::UntilNow,
        )
        .await;
        return Ok(());
    }
    let mut stream = agent_llm::reply_stream(
        &call.state,
        &call.run_id,
        &call.setup.plan,
        call.script.prompt.clone(),
        &transcript,
        &said.content,
    )
    .await?;
    let mut text = String::new();
    let mut pending = String::new();
    let mut first_token: Option<Instant> = None;
    let mut first_audio: Option<Instant> = None;
    let usage = loop {
        let Some(piece) = stream.recv().await else {
            break crate::providers::llm::Usage::default();
        };
        match piece {
            Streamed::Text(t) => {
                first_token.get_or_insert_with(Instant::now);
                text.push_str(&t);
                pending.push_str(&t);
                while let Some(end) = sentence_end(&pending) {
                    let sentence: String = pending.drain(..end).collect();
                    let sentence = sentence.trim().to_string();
                    if !sentence.is_empty() {
                        let started = say(call, voice, generation, spoken, &sentence).await;
                        if first_audio.is_none() {
                            first_audio = started;
                        }
                    }
                }
            }
            Streamed::Done(u) => break u,
            Streamed::Failed(e) => return Err(call.setup.plan.failed(&call.run_id, &e)),
        }
    };
    let rest = pending.trim().to_string();
    if !rest.is_empty() {
        let started = say(call, voice, generation, spoken, &rest).await;
        if first_audio.is_none() {
            first_audio = started;
        }
    }
    let text = text.trim().to_string();
    voice
        .send(frame(
            "transcript",
            json!({"role": "assistant", "text": text, "final": true}),
        ))
        .await;
    let ms = |t: Option<Instant>| t.map_or(0, |t| t.duration_since(final_at).as_millis() as u64);
    let usage = call
        .setup
        .plan
        .answered(&call.state, &call.user_id, &call.run_id, usage)
        .await?;
    let mut reply = Turn::new("assistant", text, String::new());
    reply.latency = Some(TurnLatency {
        llm_first_token_ms: ms(first_token),
        first_audio_ms: ms(first_audio),
    });
    save_turns(call, vec![said, reply], Some(usage)).await?;
    if let Ok(mut s) = spoken.lock() {
        s.saved = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_cut_at_sentence_ends() {
        assert_eq!(sentence_end("Hello there. How"), Some(12));
        assert_eq!(sentence_end("Dr.Smith is in"), None);
        assert_eq!(sentence_end("Done!"), None, "the end of the text may grow");
        assert_eq!(sentence_end("Yes?\nOk"), Some(4));
    }

    #[test]
    fn what_was_heard_is_the_audio_that_went_out() {
        let mut s = Spoken::default();
        s.sentences.push(("One two three four.".into(), 400, true));
        s.sentences
            .push(("Five six seven eight.".into(), 400, true));
        s.sent = 400 + 200;
        assert_eq!(s.heard(32), "One two three four. Five six");
        s.sent = 100;
        assert_eq!(s.heard(32), "One");
        s.sent = 0;
        assert_eq!(s.heard(32), "");
    }

    #[test]
    fn a_sentence_still_being_made_is_judged_at_the_call_s_rate() {
        // 20 characters: about 1.3 s of speech, of which 0.66 s went out.
        let mut s = Spoken::default();
        s.sentences.push(("One two three four..".into(), 0, false));
        s.sent = 660 * 8;
        assert_eq!(s.heard(8), "One two", "μ-law at 8 kHz");
        s.sent = 660 * 32;
        assert_eq!(s.heard(32), "One two", "PCM at 16 kHz");
    }

    #[test]
    fn client_frames_are_checked() {
        assert!(matches!(
            client_frame(r#"{"type":"end"}"#),
            Ok(ClientFrame::End)
        ));
        assert!(
            matches!(client_frame(r#"{"type":"text","text":" hi "}"#), Ok(ClientFrame::Text(t)) if t == "hi")
        );
        assert!(client_frame("nope").is_err());
        assert!(client_frame(r#"{"type":"text","text":""}"#).is_err());
        assert!(client_frame(r#"{"type":"shout"}"#).is_err());
    }
}
