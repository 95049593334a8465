//! A Twilio stand-in that speaks Twilio's REST API as VoxFlow uses it:
//! `POST …/Calls.json` places a call (recording every request, with an
//! optional delay before answering), `GET …/Calls/{sid}.json` and
//! `GET …/Calls.json?To=…&From=…&StartTime>=…` look calls up, and each call
//! lives its scripted life (rings, then is answered and talked through, or
//! ends busy, no-answer or failed) and reports its end with a status
//! callback signed with the account's auth token, as Twilio does. It counts
//! the calls live at once and keeps the time each request arrived.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};

pub use crate::phone::{PUBLIC, SID, TOKEN};

/// How a scripted call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered after ringing, talked for `wall` in real time, reported as
    /// `secs` seconds long.
    Completed {
        wall: Duration,
        secs: u32,
    },
    Busy,
    NoAnswer,
    Failed,
    /// Answered, and lasts until the test ends it (`end_call`).
    Live,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub status: String,
    pub duration: Option<u32>,
    pub status_callback: Option<String>,
    pub idempotency_token: Option<String>,
    /// The `TimeLimit` asked for, in seconds.
    pub time_limit: Option<String>,
    pub created_unix: i64,
    /// When the request that placed it arrived.
    pub arrived: Instant,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    scripts: HashMap<String, VecDeque<Outcome>>,
    /// Requests seen, as `METHOD path`.
    requests: Vec<(String, Instant)>,
    live: usize,
    peak: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Milliseconds between recording a new call and answering its request.
    answer_delay_ms: AtomicU64,
    ring: Duration,
    /// Where status callbacks go (the server's real address).
    server: Mutex<Option<String>>,
    /// The duration a status callback claims instead of the real one.
    claimed_duration: Mutex<Option<u32>>,
    http: reqwest::Client,
    seq: AtomicU64,
    /// While set, every request is a 503 and nothing is created.
    outage: AtomicBool,
}

#[derive(Clone)]
pub struct TwilioStandIn {
    pub base: String,
    shared: Arc<Shared>,
}

fn fmt_rfc2822(unix: i64) -> String {
    let ts = jiff::Timestamp::from_second(unix).unwrap();
    ts.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn resource(c: &Call) -> Value {
    json!({
        "sid": c.sid,
        "account_sid": SID,
        "to": c.to,
        "from": c.from,
        "status": c.status,
        "duration": c.duration.map(|d| d.to_string()),
        "date_created": fmt_rfc2822(c.created_unix),
        "start_time": fmt_rfc2822(c.created_unix),
    })
}

fn authorized(headers: &HeaderMap, account: &str) -> bool {
    let expected = format!("Basic {}", BASE64.encode(format!("{SID}:{TOKEN}")));
    account == SID
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": 20500, "message": "Service Unavailable"})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": 20003, "message": "Authenticate"})),
    )
        .into_response()
}

/// Twilio's signature of a POST to `url` with `params`.
pub fn sign(url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(&name);
        data.push_str(&value);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TOKEN.as_bytes());
    BASE64.encode(hmac::sign(&key, data.as_bytes()).as_ref())
}

impl Shared {
    fn log(&self, what: String) {
        self.inner
            .lock()
            .unwrap()
            .requests
            .push((what, Instant::now()));
    }

    /// Sets the call's final status and sends its status callback, retried
    /// while the server is not there (it may be restarting).
    async fn finish(self: &Arc<Self>, sid: &str, status: &str, duration: Option<u32>) {
        let callback = {
            let mut inner = self.inner.lock().unwrap();
            let Some(call) = inner.calls.iter_mut().find(|c| c.sid == sid) else {
                return;
            };
            if !matches!(call.status.as_str(), "queued" | "ringing" | "in-progress") {
                return;
            }
            call.status = status.to_string();
            call.duration = duration;
            let cb = call.status_callback.clone().map(|url| (url, call.clone()));
            inner.live -= 1;
            cb
        };
        let Some((url, call)) = callback else { return };
        let claimed = self
            .claimed_duration
            .lock()
            .unwrap()
            .or(duration)
            .unwrap_or(0);
        let params: Vec<(String, String)> = [
            ("AccountSid", SID.to_string()),
            ("CallSid", call.sid.clone()),
            ("CallStatus", status.to_string()),
            ("CallDuration", claimed.to_string()),
            ("To", call.to.clone()),
            ("From", call.from.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let signature = sign(&url, &params);
        let path = url.trim_start_matches(PUBLIC).to_string();
        for _ in 0..150 {
            let server = self.server.lock().unwrap().clone();
            if let Some(server) = server {
                let sent = self
                    .http
                    .post(format!("{server}{path}"))
                    .header("X-Twilio-Signature", &signature)
                    .form(&params)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The call's life after it was placed.
    async fn live_out(self: Arc<Self>, sid: String, outcome: Outcome) {
        tokio::time::sleep(self.ring).await;
        let set = |status: &str| {
            if let Some(c) = self
                .inner
                .lock()
                .unwrap()
                .calls
                .iter_mut()
                .find(|c| c.sid == sid)
            {
                c.status = status.to_string();
            }
        };
        match outcome {
            Outcome::Busy => self.finish(&sid, "busy", Some(0)).await,
            Outcome::NoAnswer => self.finish(&sid, "no-answer", Some(0)).await,
            Outcome::Failed => self.finish(&sid, "failed", Some(0)).await,
            Outcome::Live => set("in-progress"),
            Outcome::Completed { wall, secs } => {
                set("in-progress");
                tokio::time::sleep(wall).await;
                self.finish(&sid, "completed", Some(secs)).await;
            }
        }
    }
}

async fn create_call(
    State(s): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    s.log(format!("POST /Accounts/{account}/Calls.json"));
    if s.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(&headers, &account) {
        return unauthorized();
    }
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let (Some(to), Some(from)) = (field("To"), field("From")) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": 21201}))).into_response();
    };
    let n = s.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let sid = format!("CA{n:032x}");
    let call = Call {
        sid: sid.clone(),
        to: to.clone(),
        from,
        status: "queued".into(),
        duration: None,
        status_callback: field("StatusCallback"),
        idempotency_token: headers
            .get("i-twilio-idempotency-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        time_limit: field("TimeLimit"),
        created_unix: jiff::Timestamp::now().as_second(),
        arrived: Instant::now(),
    };
    let outcome = {
        let mut inner = s.inner.lock().unwrap();
        inner.calls.push(call.clone());
        inner.live += 1;
        inner.peak = inner.peak.max(inner.live);
        inner
            .scripts
            .get_mut(&to)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Outcome::Completed {
                wall: Duration::from_millis(300),
                secs: 12,
            })
    };
    tokio::spawn(s.clone().live_out(sid, outcome));
    // The call exists at Twilio from here on, whether or not the answer
    // reaches the caller.
    let delay = s.answer_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    (StatusCode::CREATED, Json(resource(&call))).into_response()
}

async fn list_calls(
    State(s): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.log(format!("GET /Accounts/{account}/Calls.json"));
    if s.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(&headers, &account) {
        return unauthorized();
    }
    let since = q
        .get("StartTime>")
        .and_then(|d| d.parse::<jiff::civil::Date>().ok())
        .map(|d| {
            d.to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap()
                .timestamp()
                .as_second()
        });
    let inner = s.inner.lock().unwrap();
    let calls: Vec<Value> = inner
        .calls
        .iter()
        .rev()
        .filter(|c| q.get("To").is_none_or(|t| *t == c.to))
        .filter(|c| q.get("From").is_none_or(|f| *f == c.from))
        .filter(|c| since.is_none_or(|t| c.created_unix >= t))
        .map(resource)
        .collect();
    Json(json!({ "calls": calls, "page": 0, "page_size": 50 })).into_response()
}

async fn fetch_call(
    State(s): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    s.log(format!("GET /Accounts/{account}/Calls/{file}"));
    if s.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(&headers, &account) {
        return unauthorized();
    }
    let sid = file.trim_end_matches(".json");
    let inner = s.inner.lock().unwrap();
    match inner.calls.iter().find(|c| c.sid == sid) {
        Some(c) => Json(resource(c)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"code": 20404}))).into_response(),
    }
}

/// The bytes every recording's MP3 holds here.
pub const RECORDING: &[u8] = b"ID3\x04\x00stand-in mp3 audio";

async fn fetch_recording(
    State(s): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    s.log(format!("GET /Accounts/{account}/Recordings/{file}"));
    if !authorized(&headers, &account) {
        return unauthorized();
    }
    if !file.starts_with("RE") || !file.ends_with(".mp3") {
        return (StatusCode::NOT_FOUND, Json(json!({"code": 20404}))).into_response();
    }
    ([("content-type", "audio/mpeg")], RECORDING).into_response()
}

impl TwilioStandIn {
    /// Starts the stand-in; calls ring for `ring` before their outcome.
    pub async fn start(ring: Duration) -> TwilioStandIn {
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            answer_delay_ms: AtomicU64::new(0),
            ring,
            server: Mutex::new(None),
            claimed_duration: Mutex::new(None),
            http: reqwest::Client::new(),
            seq: AtomicU64::new(0),
            outage: AtomicBool::new(false),
        });
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Calls.json",
                get(list_calls).post(create_call),
            )
            .route("/2010-04-01/Accounts/{sid}/Calls/{call}", get(fetch_call))
            .route(
                "/2010-04-01/Accounts/{sid}/Recordings/{file}",
                get(fetch_recording),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TwilioStandIn {
            base: format!("http://{addr}"),
            shared,
        }
    }

    /// Where status callbacks go from now on.
    pub fn send_callbacks_to(&self, server_base: &str) {
        *self.shared.server.lock().unwrap() = Some(server_base.to_string());
    }

    /// The outcomes of the next calls to `to`, in order.
    pub fn script(&self, to: &str, outcomes: &[Outcome]) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .scripts
            .insert(to.to_string(), outcomes.iter().copied().collect());
    }

    /// Twilio answers every request with a 503 (and creates nothing) while on.
    pub fn outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    pub fn delay_answers(&self, ms: u64) {
        self.shared.answer_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Status callbacks claim this duration, whatever the call lasted.
    pub fn claim_duration(&self, secs: u32) {
        *self.shared.claimed_duration.lock().unwrap() = Some(secs);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.inner.lock().unwrap().calls.clone()
    }

    pub fn requests(&self) -> Vec<(String, Instant)> {
        self.shared.inner.lock().unwrap().requests.clone()
    }

    pub fn peak_live(&self) -> usize {
        self.shared.inner.lock().unwrap().peak
    }

    /// Ends a live call as completed after `secs` seconds.
    pub async fn end_call(&self, sid: &str, secs: u32) {
        self.shared.finish(sid, "completed", Some(secs)).await;
    }
}
