//! Authentication, sessions and roles, seen from a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{spawn_serve, voxflow_cmd, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};

pub const PASSWORD: &str = "Corr3ct-Horse";

/// Sends a request (JSON body when given, bearer token when given) and
/// returns the status and the parsed body (`null` when not JSON).
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    call(app, reqwest::Method::POST, path, token, Some(body)).await
}

pub async fn put(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    call(app, reqwest::Method::PUT, path, token, Some(body)).await
}

pub async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    call(app, reqwest::Method::GET, path, token, None).await
}

pub async fn delete(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    call(app, reqwest::Method::DELETE, path, token, None).await
}

/// Registers `email` with `PASSWORD`; returns (token, user id).
pub async fn register(app: &TestApp, email: &str) -> (String, String) {
    let (status, body) = post(
        app,
        "/api/auth/register",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["data"]["token"].as_str().expect("token").to_string(),
        body["data"]["user"]["id"].as_str().expect("id").to_string(),
    )
}

async fn change_password(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    post(app, "/api/auth/change-password", Some(token), body).await
}

pub async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    post(
        app,
        "/api/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
}

pub async fn admin_token(app: &TestApp) -> String {
    let (status, body) = login(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn register_login_me() {
    let app = TestApp::start().await;
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "  Ann.Lee@Example.COM ", "password": PASSWORD, "organization_name": "Acme"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["success"], true);
    let user = &body["data"]["user"];
    assert_eq!(
        user["email"], "ann.lee@example.com",
        "trimmed, lower-cased, dots kept"
    );
    assert_eq!(user["role"], "user");
    assert_eq!(user["subscription_tier"], "free");
    assert_eq!(user["organization_name"], "Acme");
    assert!(user.get("password_hash").is_none());

    let (status, body) = login(&app, "ANN.LEE@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    assert!(
        body["data"]["user"]["last_login"].is_string(),
        "login sets last_login"
    );

    let (status, me) = get(&app, "/api/auth/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["data"]["email"], "ann.lee@example.com");
    let usage = &me["data"]["current_usage"];
    assert_eq!(usage["tokens_used"], 0.0);
    assert_eq!(usage["tokens_remaining"], 1000.0);
    assert_eq!(usage["calls"], 0);
    assert_eq!(usage["agent_count"], 0);
    assert_eq!(usage["agents_remaining"], 2);
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = TestApp::start().await;
    register(&app, "bo@example.com").await;
    let (s1, wrong) = login(&app, "bo@example.com", "Wrong-Passw0rd").await;
    let (s2, unknown) = login(&app, "nobody@example.com", "Wrong-Passw0rd").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown, "an unknown email must be indistinguishable");
    assert_eq!(wrong["message"], "Invalid email or password");
    app.stop().await;
}

#[tokio::test]
async fn registration_validates_and_refuses_duplicates_and_paid_tiers() {
    let app = TestApp::start().await;
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "w@example.com", "password": "alllowercase1"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert_eq!(body["errors"][0]["field"], "password");
    assert_eq!(
        body["errors"][0]["message"],
        "must contain an uppercase letter"
    );

    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "not-an-email", "password": "short"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["email", "password"],
        "every bad field is named: {body}"
    );

    // Fields a registration does not take are refused by name (no account
    // is made); the first edition's `subscription_tier` is taken and
    // ignored.
    for (field, value) in [("role", json!("admin")), ("max_agents", json!(500))] {
        let mut asked = json!({"email": "rich@example.com", "password": PASSWORD});
        asked[field] = value;
        let (status, body) = post(&app, "/api/auth/register", None, asked).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "rich@example.com", "password": PASSWORD, "subscription_tier": "enterprise"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["user"]["subscription_tier"], "free");
    assert_eq!(body["data"]["user"]["role"], "user");
    assert_eq!(body["data"]["user"]["max_agents"], 2);

    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "RICH@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "EMAIL_TAKEN");

    // Wrong types, over-long fields and hostile strings are 4xx in the envelope.
    let long = "a".repeat(300);
    for bad in [
        json!({"email": 5, "password": PASSWORD}),
        json!({"password": PASSWORD}),
        json!({"email": format!("{long}@example.com"), "password": PASSWORD}),
        json!({"email": "x@example.com", "password": "A1".repeat(100)}),
        json!({"email": "x@example.com", "password": PASSWORD, "organization_name": long}),
        json!({"email": "x@example.com", "password": PASSWORD, "organization_name": "bad\u{0}name"}),
        json!([1, 2, 3]),
    ] {
        let (status, body) = post(&app, "/api/auth/register", None, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert_eq!(body["success"], false);
    }
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .body("email=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, users) = get(&app, "/api/admin/users", Some(&admin_token(&app).await)).await;
    assert_eq!(
        users["pagination"]["total"], 2,
        "only the admin and rich@ exist: {users}"
    );
    app.stop().await;
}

#[tokio::test]
async fn registration_can_be_closed() {
    let app = TestApp::start_with(|c| c.registration = voxflow::config::Registration::Closed).await;
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "c@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "REGISTRATION_CLOSED");
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let app = TestApp::start().await;
    let (token, _) = register(&app, "out@example.com").await;
    let (status, _) = post(&app, "/api/auth/logout", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&app, "/api/auth/me", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // No token, a malformed one, a well-formed unknown one: all 401 in the envelope.
    for t in [None, Some("nonsense"), Some(&"ab".repeat(32)[..])] {
        let (status, body) = get(&app, "/api/auth/me", t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["success"], false);
    }
    app.stop().await;
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions() {
    let app = TestApp::start().await;
    let (first, _) = register(&app, "cp@example.com").await;
    let (_, body) = login(&app, "cp@example.com", PASSWORD).await;
    let second = body["data"]["token"].as_str().unwrap().to_string();

    let (status, body) = change_password(
        &app,
        &second,
        json!({"current_password": "Not-The-0ne", "new_password": "N3w-Password"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "current_password");
    let (status, body) = change_password(
        &app,
        &second,
        json!({"current_password": PASSWORD, "new_password": "weak"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "new_password");

    let (status, body) = change_password(
        &app,
        &second,
        json!({"current_password": PASSWORD, "new_password": "N3w-Password"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(&app, "/api/auth/me", Some(&first)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/api/auth/me", Some(&second)).await.0,
        StatusCode::OK,
        "the asking session stays"
    );
    assert_eq!(
        login(&app, "cp@example.com", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "cp@example.com", "N3w-Password").await.0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn sixth_wrong_password_in_a_minute_is_throttled() {
    let app = TestApp::start().await;
    register(&app, "th@example.com").await;
    for i in 0..5 {
        let (status, _) = login(&app, "th@example.com", "Wrong-Passw0rd").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
    }
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "th@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Another account from the same address is not locked by this one.
    register(&app, "other@example.com").await;
    assert_eq!(
        login(&app, "other@example.com", PASSWORD).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn roles_and_deactivation_act_on_the_next_request() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (user, user_id) = register(&app, "role@example.com").await;

    let (status, body) = get(&app, "/api/admin/users", Some(&user)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, _) = put(
        &app,
        &format!("/api/admin/users/{user_id}/limits"),
        Some(&admin),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&app, "/api/admin/users", Some(&user)).await.0,
        StatusCode::OK,
        "promotion acts at once"
    );
    put(
        &app,
        &format!("/api/admin/users/{user_id}/limits"),
        Some(&admin),
        json!({"role": "user"}),
    )
    .await;
    assert_eq!(
        get(&app, "/api/admin/users", Some(&user)).await.0,
        StatusCode::FORBIDDEN,
        "demotion acts at once"
    );

    let (status, body) = post(
        &app,
        &format!("/api/admin/users/{user_id}/toggle-status"),
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["is_active"], false);
    let (status, _) = get(&app, "/api/auth/me", Some(&user)).await;
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        "{status}"
    );
    let (status, body) = login(&app, "role@example.com", PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "told only after a correct password: {body}"
    );
    assert_eq!(
        login(&app, "role@example.com", "Wrong-Passw0rd").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Every change is in the audit log, attributed.
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let actions: Vec<String> = conn
        .prepare(
            "SELECT action FROM admin_audit_logs WHERE target_user_id = ?1 ORDER BY created_at",
        )
        .unwrap()
        .query_map([&user_id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        actions,
        [
            "update_user_limits",
            "update_user_limits",
            "toggle_user_status"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn admins_cannot_lock_themselves_out() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, me) = get(&app, "/api/auth/me", Some(&admin)).await;
    let id = me["data"]["id"].as_str().unwrap();
    let (status, _) = post(
        &app,
        &format!("/api/admin/users/{id}/toggle-status"),
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = put(
        &app,
        &format!("/api/admin/users/{id}/limits"),
        Some(&admin),
        json!({"role": "user"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = post(
        &app,
        "/api/admin/users/not-a-uuid/toggle-status",
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = post(
        &app,
        "/api/admin/users/00000000-0000-4000-8000-000000000000/toggle-status",
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_database_holds_no_password_or_token_in_clear() {
    let app = TestApp::start().await;
    let (token, user_id) = register(&app, "clear@example.com").await;
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let hash: String = conn
        .query_row(
            "SELECT password_hash FROM users WHERE id = ?1",
            [&user_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(hash.starts_with("pbkdf2-sha256$600000$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    let sessions: Vec<(String, String)> = conn
        .prepare("SELECT token_hash, coalesce(user_agent, '') FROM sessions WHERE user_id = ?1")
        .unwrap()
        .query_map([&user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].0, token);
    assert_eq!(sessions[0].0, voxflow::crypto::sha256_hex(token.as_bytes()));
    drop(conn);
    // Nor does the raw file, WAL included.
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", app.db_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(PASSWORD), "{path} holds the password");
            assert!(!text.contains(&token), "{path} holds the token");
        }
    }
    app.stop().await;
}

/// Sends `request` from `from` (any 127.x address: the throttle counts per
/// address) over a fresh connection and returns once it is written.
async fn send_raw(from: IpAddr, to: SocketAddr, request: String) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let bytes = request.into_bytes();
    let mut written = 0;
    while written < bytes.len() {
        stream.writable().await.unwrap();
        match stream.try_write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    stream
}

/// Reads the whole answer (the request said `Connection: close`).
async fn read_raw(stream: tokio::net::TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.readable().await.unwrap();
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn raw_request(method: &str, path: &str, body: Option<Value>) -> String {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Runs against the real binary: its runtime has as many async workers as
/// cores, as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_200_logins_queue_for_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    // A short queue keeps the test short; the default is 64.
    let bin = spawn_serve(
        dir.path(),
        &[
            ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("VOXFLOW_PASSWORD_QUEUE", "8"),
        ],
    );
    let server: SocketAddr = bin.base.trim_start_matches("http://").parse().unwrap();
    let order = Arc::new(AtomicUsize::new(0));
    let mut logins = Vec::new();
    // Ten addresses with twenty accounts each: no login is throttled, each
    // one wants a hash.
    for i in 0..200u8 {
        let from = IpAddr::from([127, 0, 0, 10 + i / 20]);
        let body = json!({"email": format!("nobody{i}@example.com"), "password": "Wr0ng-Password"});
        let stream = send_raw(
            from,
            server,
            raw_request("POST", "/api/auth/login", Some(body)),
        )
        .await;
        let order = order.clone();
        logins.push(tokio::spawn(async move {
            let answer = read_raw(stream).await;
            (order.fetch_add(1, Ordering::SeqCst), answer)
        }));
    }
    // Sent after every login was sent.
    let stream = send_raw(
        IpAddr::from([127, 0, 0, 1]),
        server,
        raw_request("GET", "/health", None),
    )
    .await;
    let health = read_raw(stream).await;
    let health_at = order.fetch_add(1, Ordering::SeqCst);
    assert_eq!(raw_status(&health), 200, "{health}");

    let (mut hashed_before, mut hashed, mut busy) = (0, 0, 0);
    for login in logins {
        let (at, answer) = login.await.unwrap();
        match raw_status(&answer) {
            401 => {
                hashed += 1;
                hashed_before += usize::from(at < health_at);
            }
            503 => {
                busy += 1;
                let lower = answer.to_ascii_lowercase();
                assert!(lower.contains("retry-after: "), "{answer}");
                assert!(answer.contains("\"SERVER_BUSY\""), "{answer}");
            }
            other => panic!("login answered {other}: {answer}"),
        }
    }
    assert!(busy > 0, "no login was turned away by the full queue");
    assert!(hashed > 0);
    // Ordering, not time: /health did not wait its turn behind the hashes
    // (hashing on the async workers puts it behind nearly all of them). The
    // hashes take both cores, so the other tests running beside this one
    // slow the request path itself: a quarter of the hashes is its margin.
    assert!(
        hashed_before * 4 < hashed * 3,
        "/health answered after {hashed_before} of the {hashed} hashed logins"
    );
}

/// Sends `n` logins for `email` at once; the `right` ones (by index) carry
/// the right password. Returns the statuses in index order.
async fn parallel_logins(
    app: &TestApp,
    email: &str,
    n: usize,
    right: impl Fn(usize) -> bool,
) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let req = app.client.post(app.url("/api/auth/login")).json(&json!({
            "email": email,
            "password": if right(i) { PASSWORD } else { "Wr0ng-Password" },
        }));
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_parallel_wrong_passwords_are_five_guesses() {
    let app = TestApp::start().await;
    register(&app, "par@example.com").await;
    let statuses = parallel_logins(&app, "par@example.com", 40, |_| false).await;
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        unauthorized <= 5,
        "{unauthorized} guesses were checked: {statuses:?}"
    );
    assert_eq!(unauthorized + limited, 40, "{statuses:?}");
    assert_eq!(
        login(&app, "par@example.com", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the account is locked after them"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_password_among_150_parallel_guesses_does_not_get_in() {
    // 150 logins from one address at once: past the per-address request
    // limit (120 a minute), which would refuse some of them before the
    // login throttle, the subject here, saw them.
    let app = TestApp::start_with(|c| c.rate_limit_anonymous = 1_000).await;
    register(&app, "race@example.com").await;
    let statuses = parallel_logins(&app, "race@example.com", 150, |i| i >= 142).await;
    assert!(
        !statuses.contains(&StatusCode::OK),
        "a guess got in: {statuses:?}"
    );
    assert!(
        statuses[142..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{:?}",
        &statuses[142..]
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_like_logins() {
    let app = TestApp::start().await;
    let (token, _) = register(&app, "cpt@example.com").await;
    let wrong = json!({"current_password": "Not-The-0ne", "new_password": "N3w-Password"});
    for i in 0..5 {
        let (status, body) = change_password(&app, &token, wrong.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "attempt {}: {body}", i + 1);
    }
    let res = app
        .client
        .post(app.url("/api/auth/change-password"))
        .bearer_auth(&token)
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    let (status, _) = change_password(
        &app,
        &token,
        json!({"current_password": PASSWORD, "new_password": "N3w-Password"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right one waits"
    );
    assert_eq!(
        login(&app, "cpt@example.com", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "one allowance for the account, whichever door"
    );
    app.stop().await;
}

/// `voxflow admin ACTION --email EMAIL --password-stdin` on `dir`, with
/// `password` and a line break on standard input.
fn admin_with_password(
    dir: &std::path::Path,
    action: &str,
    email: &str,
    password: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = voxflow_cmd(dir)
        .args(["admin", action, "--email", email, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The real binary, and `voxflow admin reset-password` beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_lets_a_locked_out_admin_in_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = spawn_serve(dir.path(), &[("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let client = reqwest::Client::new();
    let login = |password: &str| {
        let req = client
            .post(bin.url("/api/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": password}));
        async move { req.send().await.unwrap().status() }
    };
    for _ in 0..5 {
        assert_eq!(login("Str4nger-Guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(ADMIN_PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);

    let out = admin_with_password(
        dir.path(),
        "reset-password",
        ADMIN_EMAIL,
        "Res3t-Admin-Password",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(login("Res3t-Admin-Password").await, StatusCode::OK);
}

#[tokio::test]
async fn cookie_sessions_need_a_same_origin_for_writes() {
    let app = TestApp::start().await;
    register(&app, "ck@example.com").await;
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "ck@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    let me = app
        .client
        .get(app.url("/api/auth/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "a cookie signs in reads");

    let host = app.base.trim_start_matches("http://").to_string();
    // A logout signed in by the cookie alone, with the given Origin header.
    let logout = |origin: Option<String>| {
        let mut req = app
            .client
            .post(app.url("/api/auth/logout"))
            .header("cookie", &pair);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        logout(Some("http://evil.example".into())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        logout(None).await,
        StatusCode::FORBIDDEN,
        "no Origin and no Referer"
    );
    assert_eq!(logout(Some(format!("http://{host}"))).await, StatusCode::OK);
    let me = app
        .client
        .get(app.url("/api/auth/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn admin_commands_create_and_reset_accounts() {
    let app = TestApp::start().await;
    let (user_token, _) = register(&app, "ops@example.com").await;
    let dir = app.dir.path().to_path_buf();

    // reset-password with a generated password, printed once
    let out = voxflow_cmd(&dir)
        .args(["admin", "reset-password", "--email", "OPS@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Password, shown only this once: "))
        .expect("generated password printed")
        .to_string();
    assert_eq!(
        get(&app, "/api/auth/me", Some(&user_token)).await.0,
        StatusCode::UNAUTHORIZED,
        "sessions ended"
    );
    assert_eq!(
        login(&app, "ops@example.com", &password).await.0,
        StatusCode::OK
    );

    // create with the password on stdin; a weak one is refused
    let out = admin_with_password(&dir, "create", "boss@example.com", "weak");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));

    let out = admin_with_password(&dir, "create", "boss@example.com", "B0ss-Password");
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("B0ss-Password"),
        "a given password is not echoed"
    );
    let (status, body) = login(&app, "boss@example.com", "B0ss-Password").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["user"]["role"], "admin");
    assert_eq!(body["data"]["user"]["subscription_tier"], "enterprise");
    let token = body["data"]["token"].as_str().unwrap();
    assert_eq!(
        get(&app, "/api/admin/users", Some(token)).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_ends_its_sessions_and_is_audited() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (user, user_id) = register(&app, "gone@example.com").await;
    let (_, other_admin) = register(&app, "second-admin@example.com").await;
    let (status, _) = put(
        &app,
        &format!("/api/admin/users/{other_admin}/limits"),
        Some(&admin),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let path = |id: &str| format!("/api/admin/users/{id}");
    let (status, _) = delete(&app, &path(&other_admin), Some(&admin)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not another admin");
    let (_, me) = get(&app, "/api/auth/me", Some(&admin)).await;
    let (status, _) = delete(
        &app,
        &path(me["data"]["id"].as_str().unwrap()),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not yourself");
    let (status, _) = delete(&app, &path(&user_id), Some(&user)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "users cannot delete");

    assert_eq!(
        delete(&app, &path(&user_id), Some(&admin)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/api/auth/me", Some(&user)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        delete(&app, &path(&user_id), Some(&admin)).await.0,
        StatusCode::NOT_FOUND
    );
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let (sessions, audit): (i64, String) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM sessions WHERE user_id = ?1),
                    (SELECT details FROM admin_audit_logs WHERE action = 'delete_user' AND target_resource_id = ?1)",
            [&user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sessions, 0);
    assert!(audit.contains("gone@example.com"), "{audit}");
    app.stop().await;
}
