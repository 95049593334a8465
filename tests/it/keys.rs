//! The key vault from the outside: saving, masking, testing against local
//! stand-ins for Groq, Deepgram and Twilio, tenant isolation, tampering,
//! and (with the real binary) wrong master keys, rotation and the log.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get as route_get, post as route_post};
use axum::{Json, Router};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::agents::{create_agent, db, tenant, Tenant};
use crate::auth::{call, get, post};
use crate::common::{is_rfc3339_utc, spawn_serve, voxflow_cmd, Bin, TestApp};

const GROQ_A: &str = "gsk_TenantAlphaKey0000000000000000aQ2x";
const GROQ_A2: &str = "gsk_TenantAlphaNewKey000000000000eW5v";
const GROQ_B: &str = "gsk_TenantBravoKey1111111111111111bR7y";
const GROQ_REVOKED: &str = "gsk_RevokedKey2222222222222222222cS9z";
const GROQ_SERVER: &str = "gsk_ServerFallbackKey33333333333dT4w";
const DG_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const DG_B: &str = "b2c3d4e5f60718293a4b5c6d7e8f901234567890";
const SID_A: &str = "AC0123456789abcdef0123456789abcdef";
const SID_B: &str = "ACfedcba9876543210fedcba9876543210";
const TOKEN_A: &str = "TwilioTokenAlpha0000000000000001";
const TOKEN_B: &str = "TwilioTokenBravo0000000000000003";
const TEL_TOKEN: &str = "TelephonyTokenAlpha0000000000002";
const NUMBER: &str = "+14155550123";

/// Every secret the tests store: none may appear in a response, a log
/// line or the database file.
const SECRETS: [&str; 11] = [
    GROQ_A,
    GROQ_A2,
    GROQ_B,
    GROQ_REVOKED,
    GROQ_SERVER,
    DG_A,
    DG_B,
    TOKEN_A,
    TOKEN_B,
    TEL_TOKEN,
    // A malformed key is refused without being echoed.
    "gsk_Malformed Key With Spaces 0000",
];

/// `gsk_…aQ2x`: the masked form the API shows.
fn masked(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    format!(
        "{}…{}",
        chars[..4].iter().collect::<String>(),
        chars[chars.len() - 4..].iter().collect::<String>()
    )
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn deepgram_token(key: &str) -> String {
    format!("Token {key}")
}

/// The Basic header reqwest sends for (sid, token).
fn basic(sid: &str, token: &str) -> String {
    let req = reqwest::Client::new()
        .get("http://127.0.0.1/")
        .basic_auth(sid, Some(token))
        .build()
        .unwrap();
    req.headers()["authorization"].to_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// A stand-in for the three providers, on 127.0.0.1:0.

#[derive(Default)]
struct StandInState {
    /// Authorization values it accepts; for Twilio, with the account's SID.
    accepted: Mutex<HashMap<String, Option<String>>>,
    /// (path, Authorization) of every request.
    seen: Mutex<Vec<(String, Option<String>)>>,
    /// Answer only after 3 s.
    slow: AtomicBool,
}

struct StandIn {
    base: String,
    state: Arc<StandInState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Records the request; `Some(sid)` when its Authorization is accepted
/// with the expected scheme.
async fn admit(
    s: &StandInState,
    uri: &Uri,
    headers: &HeaderMap,
    scheme: &str,
) -> Option<Option<String>> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.seen
        .lock()
        .unwrap()
        .push((uri.path().to_string(), auth.clone()));
    if s.slow.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let auth = auth.filter(|a| a.starts_with(scheme))?;
    s.accepted.lock().unwrap().get(&auth).cloned()
}

fn refused() -> Response {
    (
        AxumStatus::UNAUTHORIZED,
        Json(json!({ "error": { "message": "Invalid API Key" } })),
    )
        .into_response()
}

async fn groq_models(State(s): State<Arc<StandInState>>, uri: Uri, headers: HeaderMap) -> Response {
    match admit(&s, &uri, &headers, "Bearer ").await {
        Some(_) => Json(json!({ "object": "list", "data": [{ "id": "llama-3.3-70b-versatile" }] }))
            .into_response(),
        None => refused(),
    }
}

async fn groq_chat(State(s): State<Arc<StandInState>>, uri: Uri, headers: HeaderMap) -> Response {
    match admit(&s, &uri, &headers, "Bearer ").await {
        Some(_) => Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": "Hello from the stand-in" } }],
        }))
        .into_response(),
        None => refused(),
    }
}

async fn deepgram_projects(
    State(s): State<Arc<StandInState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match admit(&s, &uri, &headers, "Token ").await {
        Some(_) => Json(json!({ "projects": [] })).into_response(),
        None => refused(),
    }
}

async fn twilio_account(
    State(s): State<Arc<StandInState>>,
    UrlPath(file): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match admit(&s, &uri, &headers, "Basic ").await {
        Some(Some(sid)) if file == format!("{sid}.json") => {
            Json(json!({ "sid": sid, "status": "active" })).into_response()
        }
        Some(_) => (AxumStatus::NOT_FOUND, Json(json!({ "code": 20404 }))).into_response(),
        None => refused(),
    }
}

impl StandIn {
    async fn start() -> StandIn {
        let state = Arc::new(StandInState::default());
        let app = Router::new()
            .route("/openai/v1/models", route_get(groq_models))
            .route("/openai/v1/chat/completions", route_post(groq_chat))
            .route("/v1/projects", route_get(deepgram_projects))
            .route("/2010-04-01/Accounts/{file}", route_get(twilio_account))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        StandIn {
            base: format!("http://{addr}"),
            state,
            stop: Some(tx),
            task,
        }
    }

    fn accept(&self, authorization: String) {
        self.state
            .accepted
            .lock()
            .unwrap()
            .insert(authorization, None);
    }

    fn accept_twilio(&self, sid: &str, token: &str) {
        self.state
            .accepted
            .lock()
            .unwrap()
            .insert(basic(sid, token), Some(sid.to_string()));
    }

    fn last_authorization(&self) -> Option<String> {
        self.state
            .seen
            .lock()
            .unwrap()
            .last()
            .and_then(|(_, a)| a.clone())
    }

    fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    fn set_slow(&self, slow: bool) {
        self.state.slow.store(slow, Ordering::SeqCst);
    }

    /// Stops listening: the port is closed afterwards.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
    }

    /// The environment that points a real binary at this stand-in.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VOXFLOW_GROQ_BASE_URL", format!("{}/openai/v1", self.base)),
            ("VOXFLOW_DEEPGRAM_BASE_URL", self.base.clone()),
            ("VOXFLOW_TWILIO_BASE_URL", self.base.clone()),
        ]
    }
}

// ---------------------------------------------------------------------------
// Requests.

async fn save(app: &TestApp, who: &Tenant, provider: &str, body: Value) -> (StatusCode, Value) {
    post(
        app,
        &format!("/api/api-keys/{provider}"),
        Some(&who.token),
        body,
    )
    .await
}

async fn status(app: &TestApp, who: &Tenant) -> Value {
    let (code, body) = get(app, "/api/api-keys/status", Some(&who.token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn test_key(app: &TestApp, who: &Tenant, provider: &str) -> (StatusCode, Value) {
    post(
        app,
        &format!("/api/api-keys/{provider}/test"),
        Some(&who.token),
        json!({}),
    )
    .await
}

async fn remove(app: &TestApp, who: &Tenant, provider: &str) -> (StatusCode, Value) {
    call(
        app,
        Method::DELETE,
        &format!("/api/api-keys/{provider}"),
        Some(&who.token),
        None,
    )
    .await
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} carries the secret {s}:\n{text}");
    }
}

/// Whether `needle` occurs in the file at `path` (absent files hold nothing).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_are_saved_masked_and_never_stored_in_clear() {
    let app = TestApp::start().await;
    let a = tenant(&app, "alpha@example.com").await;
    let mut responses = String::new();

    let (code, body) = get(&app, "/api/api-keys/providers", Some(&a.token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["groq", "deepgram", "twilio"]);
    let twilio_fields: Vec<&str> = body["data"][2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(twilio_fields, ["account_sid", "auth_token", "phone_number"]);

    let before = status(&app, &a).await;
    for p in ["groq", "deepgram", "twilio"] {
        assert_eq!(before[p]["configured"], false, "{before}");
        assert_eq!(before[p]["source"], "none", "{before}");
    }

    // Malformed keys: 400 naming the field, the value never echoed.
    let (code, body) = save(
        &app,
        &a,
        "groq",
        json!({ "api_key": "sk-notgroq0000000000000000000" }),
    )
    .await;
    assert_eq!(
        (code, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["api_key".to_string()]),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("gsk_"), "{body}");
    let (code, body) = save(&app, &a, "groq", json!({ "api_key": SECRETS[10] })).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    responses.push_str(&body.to_string());
    let (code, body) = save(&app, &a, "deepgram", json!({ "api_key": &DG_A[..39] })).await;
    assert_eq!(
        (code, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["api_key".to_string()]),
        "{body}"
    );
    let (code, body) = save(
        &app,
        &a,
        "twilio",
        json!({ "account_sid": "AB12", "auth_token": TOKEN_A, "phone_number": "415-555-0123" }),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["account_sid", "phone_number"], "{body}");
    responses.push_str(&body.to_string());
    // An unknown provider is a 404 in the envelope, never a 500.
    for (method, path) in [
        (Method::POST, "/api/api-keys/openai"),
        (Method::DELETE, "/api/api-keys/openai"),
        (Method::POST, "/api/api-keys/openai/test"),
    ] {
        let (code, body) = call(
            &app,
            method,
            path,
            Some(&a.token),
            Some(json!({ "api_key": GROQ_A })),
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(
            (body["success"].clone(), body["code"].clone()),
            (json!(false), json!("UNKNOWN_PROVIDER"))
        );
    }

    // Saving.
    let (code, body) = save(
        &app,
        &a,
        "groq",
        json!({ "api_key": format!("  {GROQ_A}\n") }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    responses.push_str(&body.to_string());
    let g = &body["data"];
    assert_eq!(
        (g["configured"].clone(), g["source"].clone()),
        (json!(true), json!("user"))
    );
    assert_eq!(g["masked"], masked(GROQ_A));
    assert_eq!(g["masked"], "gsk_…aQ2x");
    assert_eq!(g["is_active"], true);
    assert!(is_rfc3339_utc(g["created_at"].as_str().unwrap()), "{g}");
    assert_eq!(g["last_used_at"], Value::Null);
    let (code, body) = save(&app, &a, "deepgram", json!({ "api_key": DG_A })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    responses.push_str(&body.to_string());
    let (code, body) = save(
        &app,
        &a,
        "twilio",
        json!({ "account_sid": SID_A, "auth_token": TOKEN_A, "phone_number": NUMBER }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["masked"], masked(SID_A));
    assert_eq!(body["data"]["phone_number"], NUMBER);
    responses.push_str(&body.to_string());

    // The telephony configuration seals its token the same way.
    let (code, body) = post(
        &app,
        "/api/config/telephony",
        Some(&a.token),
        json!({ "account_sid": SID_A, "auth_token": TEL_TOKEN, "from_phone_number": NUMBER }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    responses.push_str(&body.to_string());
    let (code, body) = get(&app, "/api/config/telephony", Some(&a.token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let t = &body["data"];
    assert_eq!(
        (t["configured"].clone(), t["auth_token_set"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(t["account_sid_masked"], masked(SID_A));
    assert_eq!(t["from_phone_number"], NUMBER);
    assert!(t.get("auth_token").is_none(), "{t}");
    responses.push_str(&body.to_string());
    // Another account needs its own token; the same account keeps its token.
    let (code, body) = post(
        &app,
        "/api/config/telephony",
        Some(&a.token),
        json!({ "account_sid": SID_B }),
    )
    .await;
    assert_eq!(
        (code, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["auth_token".to_string()]),
        "{body}"
    );
    let (code, body) = post(
        &app,
        "/api/config/telephony",
        Some(&a.token),
        json!({ "from_phone_number": "+442071838750" }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["from_phone_number"], "+442071838750");

    let all = status(&app, &a).await;
    assert_eq!(all["groq"]["masked"], masked(GROQ_A));
    assert_eq!(all["deepgram"]["masked"], masked(DG_A));
    assert_eq!(all["twilio"]["masked"], masked(SID_A));
    responses.push_str(&all.to_string());
    assert_no_secret("a response", &responses);

    // Nothing in the database or its WAL is a key in clear (or in plain
    // hex); the sealed form is there, so these are the right files.
    let db_file = app.db_path();
    let wal = db_file.with_file_name("voxflow.db-wal");
    assert!(
        file_contains(&db_file, b"vault:v1:") || file_contains(&wal, b"vault:v1:"),
        "the sealed telephony token is in neither file"
    );
    for secret in SECRETS {
        for file in [&db_file, &wal] {
            assert!(
                !file_contains(file, secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
            assert!(
                !file_contains(file, hex::encode(secret).as_bytes()),
                "hex of {secret} in {}",
                file.display()
            );
        }
    }

    // The audit log records each change, with no key, not even masked.
    let conn = db(&app);
    let mut stmt = conn
        .prepare(
            "SELECT action, details FROM admin_audit_logs WHERE target_user_id = ?1 ORDER BY rowid",
        )
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([&a.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let actions: Vec<&str> = rows.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "save_api_key",
            "save_api_key",
            "save_api_key",
            "update_telephony_config",
            "update_telephony_config"
        ]
    );
    for (_, details) in &rows {
        assert_no_secret("the audit log", details);
        for s in [GROQ_A, DG_A, TOKEN_A, TEL_TOKEN] {
            assert!(!details.contains(&masked(s)), "{details}");
        }
    }

    // Replacing a key starts it afresh; deleting falls back to nothing.
    let (code, body) = save(&app, &a, "groq", json!({ "api_key": GROQ_A2 })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["masked"], masked(GROQ_A2));
    let (code, body) = remove(&app, &a, "groq").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["deleted"], true);
    assert_eq!(body["data"]["status"]["source"], "none");
    let (code, body) = remove(&app, &a, "groq").await;
    assert_eq!(
        (code, body["success"].clone()),
        (StatusCode::NOT_FOUND, json!(false)),
        "{body}"
    );
    let audit: i64 = conn
        .query_row(
            "SELECT count(*) FROM admin_audit_logs WHERE action = 'delete_api_key' AND target_user_id = ?1 AND admin_user_id = ?1",
            [&a.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audit, 1);

    // Which providers are usable now.
    let (code, body) = get(
        &app,
        "/api/api-keys/validate?providers=groq,deepgram",
        Some(&a.token),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["data"]["valid"], false);
    assert_eq!(body["data"]["providers"]["groq"]["usable"], false);
    assert_eq!(body["data"]["providers"]["deepgram"]["usable"], true);
    assert_eq!(body["data"]["missing"], json!(["groq"]));
    assert!(body["data"]["providers"].get("twilio").is_none());
    let (code, body) = get(
        &app,
        "/api/api-keys/validate?providers=groq,nope",
        Some(&a.token),
    )
    .await;
    assert_eq!(
        (code, fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["providers".to_string()]),
        "{body}"
    );
    // A deactivated key is shown as such and not used.
    conn.execute(
        "UPDATE user_api_keys SET is_active = 0 WHERE user_id = ?1 AND provider = 'deepgram'",
        [&a.id],
    )
    .unwrap();
    let s = status(&app, &a).await;
    let d = &s["deepgram"];
    assert_eq!(
        (
            d["configured"].clone(),
            d["source"].clone(),
            d["is_active"].clone()
        ),
        (json!(false), json!("none"), json!(false)),
        "{s}"
    );
    assert_eq!(d["masked"], masked(DG_A));
    let (_, body) = get(
        &app,
        "/api/api-keys/validate?providers=deepgram",
        Some(&a.token),
    )
    .await;
    assert_eq!(
        body["data"]["providers"]["deepgram"]["usable"], false,
        "{body}"
    );
    // Signed out: nothing.
    let (code, _) = get(&app, "/api/api-keys/status", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn tampered_swapped_and_moved_secrets_fail_clearly() {
    let app = TestApp::start().await;
    let a = tenant(&app, "alpha@example.com").await;
    let b = tenant(&app, "bravo@example.com").await;
    for (who, key) in [(&a, GROQ_A), (&b, GROQ_B)] {
        let (code, body) = save(&app, who, "groq", json!({ "api_key": key })).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    for (who, token) in [(&a, TEL_TOKEN), (&b, TOKEN_B)] {
        let (code, body) = post(
            &app,
            "/api/config/telephony",
            Some(&who.token),
            json!({ "account_sid": SID_A, "auth_token": token, "from_phone_number": NUMBER }),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    let conn = db(&app);
    let unreadable = |body: &Value| {
        assert_eq!(body["code"], "KEY_UNREADABLE", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("cannot be decrypted"),
            "{body}"
        );
    };
    let b_groq = status(&app, &b).await["groq"].clone();

    // One bit of A's ciphertext flipped.
    let ct: String = conn
        .query_row(
            "SELECT api_key_encrypted FROM user_api_keys WHERE user_id = ?1",
            [&a.id],
            |r| r.get(0),
        )
        .unwrap();
    let flipped = format!(
        "{}{}",
        if ct.starts_with('0') { '1' } else { '0' },
        &ct[1..]
    );
    conn.execute(
        "UPDATE user_api_keys SET api_key_encrypted = ?1 WHERE user_id = ?2",
        [&flipped, &a.id],
    )
    .unwrap();
    let s = status(&app, &a).await;
    assert_eq!(s["groq"]["masked"], Value::Null, "{s}");
    assert!(
        s["groq"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{s}"
    );
    let (code, body) = test_key(&app, &a, "groq").await;
    assert_eq!(code, StatusCode::CONFLICT);
    unreadable(&body);
    let (_, body) = get(
        &app,
        "/api/api-keys/validate?providers=groq",
        Some(&a.token),
    )
    .await;
    assert_eq!(body["data"]["providers"]["groq"]["usable"], false, "{body}");
    assert!(body["data"]["providers"]["groq"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot be decrypted"));

    // B's row copied whole into A's: it does not open as A's, and A never
    // sees B's key.
    conn.execute(
        "UPDATE user_api_keys SET (api_key_encrypted, iv, auth_tag) =
           (SELECT api_key_encrypted, iv, auth_tag FROM user_api_keys WHERE user_id = ?2)
         WHERE user_id = ?1",
        [&a.id, &b.id],
    )
    .unwrap();
    let s = status(&app, &a).await;
    assert_eq!(s["groq"]["masked"], Value::Null, "{s}");
    assert!(!s.to_string().contains(&masked(GROQ_B)));
    let (code, body) = test_key(&app, &a, "groq").await;
    assert_eq!(code, StatusCode::CONFLICT);
    unreadable(&body);

    // B's Groq row copied to B's Deepgram: the provider is bound in too.
    conn.execute(
        "INSERT INTO user_api_keys (user_id, provider, api_key_encrypted, iv, auth_tag)
         SELECT user_id, 'deepgram', api_key_encrypted, iv, auth_tag FROM user_api_keys WHERE user_id = ?1 AND provider = 'groq'",
        [&b.id],
    )
    .unwrap();
    let s = status(&app, &b).await;
    assert!(s["deepgram"]["error"].is_string(), "{s}");
    assert_eq!(s["groq"], b_groq, "B's own Groq key is untouched");

    // Telephony tokens swapped between the tenants.
    conn.execute(
        "UPDATE telephony_configs SET auth_token = (SELECT auth_token FROM telephony_configs WHERE user_id = ?2) WHERE user_id = ?1",
        [&a.id, &b.id],
    )
    .unwrap();
    let s = status(&app, &a).await;
    assert_eq!(s["twilio"]["source"], "user", "{s}");
    assert!(s["twilio"]["error"].is_string(), "{s}");
    let (code, body) = test_key(&app, &a, "twilio").await;
    assert_eq!(code, StatusCode::CONFLICT);
    unreadable(&body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_tests_ask_the_provider_and_tenants_stay_apart() {
    let stand_in = StandIn::start().await;
    for key in [GROQ_SERVER, GROQ_A, GROQ_B] {
        stand_in.accept(bearer(key));
    }
    stand_in.accept(deepgram_token(DG_A));
    stand_in.accept_twilio(SID_A, TOKEN_A);
    let base = stand_in.base.clone();
    let app = TestApp::start_with(move |c| {
        c.groq_base_url = format!("{base}/openai/v1");
        c.deepgram_base_url = base.clone();
        c.twilio_base_url = base;
        c.groq_api_key = Some(GROQ_SERVER.into());
        c.provider_timeout_secs = 1;
    })
    .await;
    let a = tenant(&app, "alpha@example.com").await;
    let b = tenant(&app, "bravo@example.com").await;
    let mut responses = String::new();

    // With no key of its own, a tenant uses the server's.
    let s = status(&app, &a).await;
    assert_eq!(
        (s["groq"]["configured"].clone(), s["groq"]["source"].clone()),
        (json!(true), json!("system")),
        "{s}"
    );
    assert_eq!(
        s["groq"]["masked"],
        Value::Null,
        "the server's key is not shown, even masked"
    );
    assert_eq!(s["deepgram"]["source"], "none");
    let (code, body) = test_key(&app, &a, "groq").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["data"]["valid"].clone(),
            body["data"]["source"].clone()
        ),
        (json!(true), json!("system")),
        "{body}"
    );
    assert_eq!(stand_in.last_authorization(), Some(bearer(GROQ_SERVER)));
    let (_, body) = test_key(&app, &a, "deepgram").await;
    assert_eq!(
        (
            body["data"]["valid"].clone(),
            body["data"]["status"].clone()
        ),
        (json!(false), json!("not_configured"))
    );
    responses.push_str(&body.to_string());

    // Each tenant's test sends that tenant's key, in each provider's scheme.
    let cases = [
        ("groq", json!({ "api_key": GROQ_A }), bearer(GROQ_A), true),
        (
            "groq",
            json!({ "api_key": GROQ_REVOKED }),
            bearer(GROQ_REVOKED),
            false,
        ),
        (
            "deepgram",
            json!({ "api_key": DG_A }),
            deepgram_token(DG_A),
            true,
        ),
        (
            "deepgram",
            json!({ "api_key": DG_B }),
            deepgram_token(DG_B),
            false,
        ),
        (
            "twilio",
            json!({ "account_sid": SID_A, "auth_token": TOKEN_A }),
            basic(SID_A, TOKEN_A),
            true,
        ),
        (
            "twilio",
            json!({ "account_sid": SID_B, "auth_token": TOKEN_B }),
            basic(SID_B, TOKEN_B),
            false,
        ),
    ];
    for (provider, body, sent, valid) in cases {
        let (code, saved) = save(&app, &a, provider, body).await;
        assert_eq!(code, StatusCode::OK, "{saved}");
        let (code, body) = test_key(&app, &a, provider).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let d = &body["data"];
        assert_eq!(d["valid"], valid, "{provider}: {body}");
        assert_eq!(
            d["status"],
            if valid { "valid" } else { "invalid" },
            "{body}"
        );
        assert_eq!(d["source"], "user");
        if !valid {
            assert!(
                d["message"].as_str().unwrap().contains("rejected"),
                "{body}"
            );
        }
        assert_eq!(stand_in.last_authorization(), Some(sent), "{provider}");
        responses.push_str(&body.to_string());
    }
    for (provider, body) in [
        ("groq", json!({ "api_key": GROQ_A })),
        ("deepgram", json!({ "api_key": DG_A })),
    ] {
        assert_eq!(save(&app, &a, provider, body).await.0, StatusCode::OK);
    }
    for (provider, body) in [
        ("groq", json!({ "api_key": GROQ_B })),
        ("deepgram", json!({ "api_key": DG_B })),
    ] {
        assert_eq!(save(&app, &b, provider, body).await.0, StatusCode::OK);
    }
    let (_, body) = test_key(&app, &b, "groq").await;
    assert_eq!(body["data"]["valid"], true);
    assert_eq!(stand_in.last_authorization(), Some(bearer(GROQ_B)));

    // A deletes its keys: B's stay, and A never sees or uses B's.
    let b_before = status(&app, &b).await;
    assert_eq!(remove(&app, &a, "groq").await.0, StatusCode::OK);
    assert_eq!(remove(&app, &a, "deepgram").await.0, StatusCode::OK);
    assert_eq!(remove(&app, &a, "deepgram").await.0, StatusCode::NOT_FOUND);
    let b_row: String = db(&app)
        .query_row(
            "SELECT id FROM user_api_keys WHERE user_id = ?1 AND provider = 'groq'",
            [&b.id],
            |r| r.get(0),
        )
        .unwrap();
    let (code, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/api-keys/{b_row}"),
        Some(&a.token),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "a row id names no key");
    let b_after = status(&app, &b).await;
    assert_eq!(b_after, b_before);
    assert_eq!(b_after["groq"]["masked"], masked(GROQ_B));
    assert_eq!(b_after["deepgram"]["masked"], masked(DG_B));
    let a_now = status(&app, &a).await;
    assert_eq!(a_now["groq"]["source"], "system", "{a_now}");
    assert_eq!(a_now["deepgram"]["source"], "none", "{a_now}");
    assert!(!a_now.to_string().contains(&masked(GROQ_B)));
    assert!(!a_now.to_string().contains(&masked(DG_B)));
    let seen = stand_in.requests();
    let (_, body) = test_key(&app, &a, "deepgram").await;
    assert_eq!(body["data"]["status"], "not_configured", "{body}");
    assert_eq!(stand_in.requests(), seen, "nothing was sent with B's key");
    let (_, body) = test_key(&app, &a, "groq").await;
    assert_eq!(body["data"]["source"], "system");
    assert_eq!(stand_in.last_authorization(), Some(bearer(GROQ_SERVER)));

    // A call with the tenant's key moves its last_used_at.
    assert_eq!(
        save(&app, &a, "groq", json!({ "api_key": GROQ_A })).await.0,
        StatusCode::OK
    );
    assert_eq!(status(&app, &a).await["groq"]["last_used_at"], Value::Null);
    let agent = create_agent(&app, &a, "Vera").await;
    let (code, started) = post(
        &app,
        "/api/calls/web/start",
        Some(&a.token),
        json!({ "agent_id": agent }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{started}");
    let run = started["data"]["run_id"].as_str().unwrap();
    let (code, body) = post(
        &app,
        "/api/calls/web/message",
        Some(&a.token),
        json!({ "run_id": run, "message": "Hello" }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(stand_in.last_authorization(), Some(bearer(GROQ_A)));
    let used = status(&app, &a).await["groq"]["last_used_at"].clone();
    assert!(is_rfc3339_utc(used.as_str().unwrap_or_default()), "{used}");
    assert_eq!(status(&app, &b).await["groq"]["last_used_at"], Value::Null);

    // A provider too slow to answer is out of reach, not a bad key.
    stand_in.set_slow(true);
    let (_, body) = test_key(&app, &a, "groq").await;
    let d = &body["data"];
    assert_eq!(
        (d["valid"].clone(), d["status"].clone()),
        (json!(false), json!("unreachable")),
        "{body}"
    );
    let m = d["message"].as_str().unwrap();
    assert!(
        m.contains("could not be reached") && m.contains("1 seconds") && !m.contains("rejected"),
        "{m}"
    );
    stand_in.set_slow(false);

    // A closed port: every provider is reported unreachable.
    assert_eq!(
        save(&app, &a, "deepgram", json!({ "api_key": DG_A }))
            .await
            .0,
        StatusCode::OK
    );
    stand_in.stop().await;
    for provider in ["groq", "deepgram", "twilio"] {
        let (code, body) = test_key(&app, &a, provider).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let d = &body["data"];
        assert_eq!(
            (d["valid"].clone(), d["status"].clone()),
            (json!(false), json!("unreachable")),
            "{provider}: {body}"
        );
        let m = d["message"].as_str().unwrap();
        assert!(
            m.contains("could not be reached") && !m.contains("rejected"),
            "{m}"
        );
        responses.push_str(&body.to_string());
    }
    assert_no_secret("a response", &responses);
    app.stop().await;
}

// ---------------------------------------------------------------------------
// The real binary.

/// Runs a command to its end (killing it after a minute, so a server that
/// wrongly starts fails the test instead of hanging it).
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voxflow");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "voxflow did not exit\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `voxflow serve` on `dir` must refuse to start, saying `expected`.
fn assert_refuses_to_start(dir: &Path, envs: &[(&str, &str)], expected: &str) {
    let mut cmd = voxflow_cmd(dir);
    cmd.args(["serve", "--http", "127.0.0.1:0"])
        .envs(envs.iter().copied());
    let out = run_to_exit(cmd);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "started:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

fn rotate(dir: &Path, envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = voxflow_cmd(dir);
    cmd.args(["keys", "rotate"]).envs(envs.iter().copied());
    if let Some(input) = stdin {
        cmd.arg("--new-key-stdin").stdin(Stdio::piped());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn voxflow");
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
        return child.wait_with_output().unwrap();
    }
    run_to_exit(cmd)
}

/// A client for the binary; requests and their answers go into `log`.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    log: String,
}

impl Client {
    async fn register(bin: &Bin, email: &str) -> Client {
        let http = reqwest::Client::new();
        let res = http
            .post(bin.url("/api/auth/register"))
            .json(&json!({ "email": email, "password": crate::auth::PASSWORD }))
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        Client {
            http,
            base: bin.base.clone(),
            token: body["data"]["token"].as_str().expect("token").to_string(),
            log: String::new(),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let code = res.status();
        let text = res.text().await.unwrap();
        self.log.push_str(&text);
        self.log.push('\n');
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn status(&mut self) -> Value {
        let (code, body) = self.send(Method::GET, "/api/api-keys/status", None).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body["data"].clone()
    }
}

fn master_key_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("master.key")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_keys_out_of_its_log_rotates_and_refuses_a_wrong_key() {
    let stand_in = StandIn::start().await;
    stand_in.accept(bearer(GROQ_A));
    stand_in.accept(deepgram_token(DG_A));
    stand_in.accept_twilio(SID_A, TOKEN_A);
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, String)> = stand_in.env();
    env.push(("VOXFLOW_LOG", "trace".into()));
    env.push(("GROQ_API_KEY", GROQ_SERVER.into()));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut bin = spawn_serve(dir.path(), &envs);
    assert!(
        bin.stdout().contains("created the master key file"),
        "{}",
        bin.stdout()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut c = Client::register(&bin, "alpha@example.com").await;
    for (provider, body) in [
        ("groq", json!({ "api_key": GROQ_A })),
        ("deepgram", json!({ "api_key": DG_A })),
        (
            "twilio",
            json!({ "account_sid": SID_A, "auth_token": TOKEN_A, "phone_number": NUMBER }),
        ),
    ] {
        let (code, body) = c
            .send(
                Method::POST,
                &format!("/api/api-keys/{provider}"),
                Some(body),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (code, body) = c
            .send(
                Method::POST,
                &format!("/api/api-keys/{provider}/test"),
                None,
            )
            .await;
        assert_eq!(
            (code, body["data"]["valid"].clone()),
            (StatusCode::OK, json!(true)),
            "{body}"
        );
    }
    let (code, _) = c
        .send(
            Method::POST,
            "/api/api-keys/groq",
            Some(json!({ "api_key": SECRETS[10] })),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = c
        .send(
            Method::POST,
            "/api/config/telephony",
            Some(json!({ "account_sid": SID_A, "auth_token": TEL_TOKEN, "from_phone_number": NUMBER })),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    c.send(Method::GET, "/api/config/telephony", None).await;
    c.send(Method::GET, "/api/api-keys/validate", None).await;
    let before = c.status().await;
    assert_eq!(before["groq"]["masked"], masked(GROQ_A));

    // No rotation while a server runs on the folder.
    let out = rotate(dir.path(), &[], None);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("a VoxFlow server (pid"),
        "{:?}",
        text(&out)
    );

    bin.terminate();
    let master = master_key_file(dir.path());
    for (what, output) in [
        ("stdout", bin.stdout()),
        ("the log", bin.stderr()),
        ("a response", c.log.clone()),
    ] {
        assert_no_secret(what, &output);
        assert!(
            !output.contains(master.trim()),
            "{what} carries the master key"
        );
    }
    assert!(
        bin.stderr().contains("API key tested"),
        "the debug log was captured:\n{}",
        bin.stderr()
    );

    // Rotation: every key stays readable, under a new key file.
    let out = rotate(dir.path(), &[], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Re-encrypted 3 API key(s) and 1 telephony auth token(s)"),
        "{stdout}"
    );
    let rotated = master_key_file(dir.path());
    assert_ne!(rotated, master);
    assert_no_secret("rotate's output", &format!("{stdout}{stderr}"));
    assert!(
        !stdout.contains(rotated.trim()),
        "the key file's key is not printed"
    );

    // Crash after the commit, before the rename: the new key is still in
    // master.key.new and the old one in master.key.
    std::fs::rename(
        dir.path().join("master.key"),
        dir.path().join("master.key.new"),
    )
    .unwrap();
    std::fs::write(dir.path().join("master.key"), &master).unwrap();
    let mut bin = spawn_serve(dir.path(), &envs);
    assert!(
        bin.stdout()
            .contains("finished an interrupted key rotation"),
        "{}",
        bin.stdout()
    );
    assert_eq!(master_key_file(dir.path()), rotated);
    assert!(!dir.path().join("master.key.new").exists());
    c.base = bin.base.clone();
    assert_eq!(c.status().await, before);
    let (_, body) = c
        .send(Method::POST, "/api/api-keys/twilio/test", None)
        .await;
    assert_eq!(
        body["data"]["valid"], true,
        "the token decrypts to the right value: {body}"
    );
    bin.terminate();

    // A wrong, a damaged or a missing master key stops the server with a
    // clear message, even though the data folder is otherwise fine.
    let stranger = "ab".repeat(32);
    assert_refuses_to_start(
        dir.path(),
        &[("VOXFLOW_MASTER_KEY", &stranger)],
        "does not open this database's key vault",
    );
    assert_refuses_to_start(
        dir.path(),
        &[("VOXFLOW_MASTER_KEY", "short")],
        "VOXFLOW_MASTER_KEY is not a master key",
    );
    std::fs::write(dir.path().join("master.key"), "garbage").unwrap();
    assert_refuses_to_start(dir.path(), &[], "does not hold a master key");
    std::fs::write(dir.path().join("master.key"), format!("{stranger}\n")).unwrap();
    assert_refuses_to_start(dir.path(), &[], "does not open this database's key vault");
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    assert_refuses_to_start(dir.path(), &[], "master key is missing");
    assert!(
        !dir.path().join("master.key").exists(),
        "no new key was made up"
    );
    stand_in.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_master_key_in_the_environment_rotation_hands_over_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = "0f".repeat(32);
    let mut bin = spawn_serve(dir.path(), &[("VOXFLOW_MASTER_KEY", &first)]);
    let mut c = Client::register(&bin, "alpha@example.com").await;
    let (code, body) = c
        .send(
            Method::POST,
            "/api/api-keys/groq",
            Some(json!({ "api_key": GROQ_A })),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    bin.terminate();
    assert!(
        !dir.path().join("master.key").exists(),
        "no key file with VOXFLOW_MASTER_KEY"
    );

    // A generated key is printed for the operator.
    let out = rotate(dir.path(), &[("VOXFLOW_MASTER_KEY", &first)], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let second = stdout
        .lines()
        .find_map(|l| l.strip_prefix("New master key (set VOXFLOW_MASTER_KEY to it before the next start; shown only this once): "))
        .expect("the new key is printed")
        .trim()
        .to_string();
    assert_eq!(second.len(), 64);
    assert!(!dir.path().join("master.key").exists());
    assert!(!dir.path().join("master.key.new").exists());
    assert_refuses_to_start(
        dir.path(),
        &[("VOXFLOW_MASTER_KEY", &first)],
        "does not open",
    );

    // Or the operator supplies one.
    let third = "7a".repeat(32);
    let out = rotate(dir.path(), &[("VOXFLOW_MASTER_KEY", &second)], Some(&third));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(&third), "a supplied key is not echoed");
    let mut bin = spawn_serve(dir.path(), &[("VOXFLOW_MASTER_KEY", &third)]);
    c.base = bin.base.clone();
    let s = c.status().await;
    assert_eq!(s["groq"]["masked"], masked(GROQ_A));
    assert!(s["groq"].get("error").is_none(), "{s}");
    bin.terminate();
}
