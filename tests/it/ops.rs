//! Operating one server: `/metrics`, request ids, the access log (and what
//! it must never contain), and the request rate limits.
//!
//! The metrics recorder is global to the test process, shared by every
//! server the tests start, so these tests look at deltas and presence,
//! never at absolute values.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::agents::create_agent;
use crate::agents::{set_tier, tenant, Tenant};
use crate::auth::{admin_token, call, get, post};
use crate::calls::{app_with, say, start_call, LlmStub, Mode};
use crate::common::{http_get, is_uuid_v4, spawn_serve, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};
use voxflow::config::{NetList, Switch};

/// `GET /metrics`: the status, the text and its content type.
pub async fn scrape(app: &TestApp, token: Option<&str>) -> (StatusCode, String, Option<String>) {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (status, res.text().await.unwrap(), ctype)
}

/// The value of the sample `series` (name and labels exactly as rendered),
/// or 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_read_gauges() {
    let app = TestApp::start().await;
    let who = tenant(&app, "metrics@example.com").await;
    let (_, before, ctype) = scrape(&app, None).await;
    assert_eq!(
        ctype.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let health = r#"voxflow_http_requests_total{method="GET",route="/health",status="200"}"#;
    let agent =
        r#"voxflow_http_requests_total{method="GET",route="/api/agents/{id}",status="404"}"#;
    let unmatched = r#"voxflow_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    for _ in 0..3 {
        get(&app, "/health", None).await;
    }
    let missing = "/api/agents/00000000-0000-4000-8000-000000000000";
    get(&app, missing, Some(&who.token)).await;
    get(&app, "/api/no-such-route", None).await;
    let (status, _) = post(
        &app,
        "/api/auth/login",
        None,
        json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, after, _) = scrape(&app, None).await;
    assert_eq!(status, StatusCode::OK, "loopback may read the metrics");
    assert!(
        sample(&after, health) >= sample(&before, health) + 3.0,
        "{after}"
    );
    assert!(
        sample(&after, agent) >= sample(&before, agent) + 1.0,
        "{after}"
    );
    assert!(
        sample(&after, unmatched) >= sample(&before, unmatched) + 1.0,
        "{after}"
    );
    let success = r#"voxflow_logins_total{outcome="success"}"#;
    assert!(
        sample(&after, success) >= sample(&before, success) + 1.0,
        "{after}"
    );
    // No raw ids as labels: a series per resource would never end.
    assert!(!after.contains("00000000-0000-4000"), "{after}");
    for present in [
        r#"voxflow_http_request_duration_seconds_bucket{method="GET",route="/health",le="0.005"}"#,
        "voxflow_db_writer_wait_seconds_bucket{le=",
        "voxflow_db_writer_wait_seconds_count",
        "voxflow_db_writer_queue_depth ",
        r#"voxflow_calls_active{kind="web"}"#,
        r#"voxflow_calls_active{kind="phone"}"#,
        "voxflow_campaigns_running ",
        "# HELP voxflow_http_requests_total",
    ] {
        assert!(after.contains(present), "{present} missing from\n{after}");
    }
    app.stop().await;
}

#[tokio::test]
async fn provider_requests_and_logins_are_counted_by_outcome() {
    let stub = LlmStub::start().await;
    let app = app_with(&stub).await;
    let who = tenant(&app, "counted@example.com").await;
    let agent = create_agent(&app, &who, "Counted").await;
    let (run, _) = start_call(&app, &who, &agent).await;
    let (_, before, _) = scrape(&app, None).await;
    assert_eq!(say(&app, &who, &run, "Hello").await.0, StatusCode::OK);
    stub.set(Mode::Fail500);
    assert_eq!(
        say(&app, &who, &run, "Again").await.0,
        StatusCode::BAD_GATEWAY
    );
    for _ in 0..6 {
        post(
            &app,
            "/api/auth/login",
            None,
            json!({"email": "counted@example.com", "password": "Wr0ng-Password"}),
        )
        .await;
    }
    let (_, after, _) = scrape(&app, None).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    let llm_ok = r#"voxflow_provider_requests_total{provider="llm",outcome="ok"}"#;
    let llm_error = r#"voxflow_provider_requests_total{provider="llm",outcome="error"}"#;
    assert!(delta(llm_ok) >= 1.0, "{after}");
    assert!(delta(llm_error) >= 1.0, "{after}");
    assert!(
        delta(r#"voxflow_logins_total{outcome="failure"}"#) >= 5.0,
        "{after}"
    );
    assert!(
        delta(r#"voxflow_logins_total{outcome="throttled"}"#) >= 1.0,
        "{after}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_outside_the_allow_list_need_an_admin() {
    let app = TestApp::start_with(|c| {
        c.metrics_allow = NetList::parse("10.0.0.0/8").unwrap();
    })
    .await;
    let (status, body, _) = scrape(&app, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "FORBIDDEN");
    let who = tenant(&app, "curious@example.com").await;
    let (status, _, _) = scrape(&app, Some(&who.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user is not an admin");
    let admin = admin_token(&app).await;
    let (status, text, _) = scrape(&app, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("voxflow_http_requests_total"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_backup_written_in_process_is_reported() {
    // A database one version behind that holds data: starting migrates it,
    // after a backup.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn =
            voxflow::db::open_connection(&voxflow::config::db_path(dir.path()), false).unwrap();
        voxflow::db::migrate::up(&mut conn, &voxflow::config::backup_dir(dir.path())).unwrap();
        voxflow::db::migrate::down(&mut conn, voxflow::db::migrate::latest_version() - 1).unwrap();
        conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x')",
            [],
        )
        .unwrap();
    }
    let path = dir.path().to_path_buf();
    let app =
        TestApp::start_with(move |c| c.data = voxflow::config::DataArgs { data_dir: path }).await;
    let backup = app
        .report()
        .migrated
        .backup
        .clone()
        .expect("a backup was written");
    let size = std::fs::metadata(&backup).unwrap().len() as f64;
    let (_, text, _) = scrape(&app, None).await;
    let stamp = sample(&text, "voxflow_backup_last_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(stamp > 0.0 && stamp <= now, "{text}");
    // Another test's backup may have been the last one: this one's size is
    // then not the one shown, but a size is.
    assert!(
        sample(&text, "voxflow_backup_last_size_bytes") > 0.0,
        "{size} {text}"
    );
    app.stop().await;
    drop(dir);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_only_a_trusted_proxy_sets_it() {
    let app = TestApp::start().await;
    let mut seen = Vec::new();
    for path in ["/health", "/api/openapi.json", "/api/nothing", "/"] {
        let res = app
            .client
            .get(app.url(path))
            .header("x-request-id", "forged-by-client")
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(is_uuid_v4(&id), "{path}: {id}");
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "a new id for every request");
    app.stop().await;

    let app =
        TestApp::start_with(|c| c.trusted_proxies = NetList::parse("127.0.0.1").unwrap()).await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "edge-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "edge-42");
    app.stop().await;
}

fn header_u64(res: &reqwest::Response, name: &str) -> Option<u64> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Sends `/api/auth/me` as `who` until the first 429, at most `max`
/// times; the number of answers before it and the refusal.
async fn until_refused(
    app: &TestApp,
    token: &str,
    max: usize,
) -> (usize, Option<reqwest::Response>) {
    for n in 0..max {
        let res = me(app, token).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            return (n, Some(res));
        }
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header_u64(&res, "x-ratelimit-limit"), Some(60));
        assert!(header_u64(&res, "x-ratelimit-remaining").is_some());
        assert!(header_u64(&res, "x-ratelimit-reset").unwrap() <= 60);
    }
    (max, None)
}

#[tokio::test]
async fn a_free_user_gets_60_requests_a_minute_then_429() {
    let app = TestApp::start().await;
    let free = tenant(&app, "free@example.com").await;
    // The limit refills continuously (one request a second on free), so
    // more than 60 may pass on a slow machine, never fewer.
    let (passed, refused) = until_refused(&app, &free.token, 300).await;
    assert!(passed >= 60, "only {passed} passed");
    let refused = refused.expect("refused within 300 requests");
    let retry = header_u64(&refused, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), Some(60));
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), Some(0));
    assert!(header_u64(&refused, "x-ratelimit-reset").unwrap() >= retry);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "RATE_LIMITED");
    assert!(body["message"].as_str().unwrap().contains("60"), "{body}");

    // Another user is not affected, nor are the health checks.
    let other = tenant(&app, "other@example.com").await;
    assert_eq!(me(&app, &other.token).await.status(), StatusCode::OK);
    let (status, body) = get(&app, "/api/rate-limits/status", Some(&other.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["limited"], true);
    assert_eq!(body["data"]["limit"], 60);
    assert_eq!(body["data"]["plan"], "free");
    assert!(body["data"]["remaining"].as_u64().unwrap() < 60, "{body}");
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-ratelimit-limit").is_none());
    app.stop().await;
}

#[tokio::test]
async fn pro_users_get_more_admins_are_exempt_and_off_turns_limits_off() {
    let app = TestApp::start().await;
    let pro = tenant(&app, "pro@example.com").await;
    set_tier(&app, &pro, "pro").await;
    for _ in 0..61 {
        let res = me(&app, &pro.token).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header_u64(&res, "x-ratelimit-limit"), Some(300));
    }
    let admin = admin_token(&app).await;
    for _ in 0..100 {
        let res = me(&app, &admin).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
    let (_, body) = get(&app, "/api/rate-limits/status", Some(&admin)).await;
    assert_eq!(body["data"], json!({"limited": false, "reason": "admin"}));
    app.stop().await;

    let app = TestApp::start_with(|c| c.rate_limit = Switch::Off).await;
    let free: Tenant = tenant(&app, "unlimited@example.com").await;
    for _ in 0..100 {
        let res = me(&app, &free.token).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
    let (_, body) = get(&app, "/api/rate-limits/status", Some(&free.token)).await;
    assert_eq!(
        body["data"],
        json!({"limited": false, "reason": "disabled"})
    );
    app.stop().await;
}

#[tokio::test]
async fn requests_without_a_session_are_limited_per_address_but_webhooks_are_not() {
    let app = TestApp::start_with(|c| c.rate_limit_anonymous = 10).await;
    let mut refused = None;
    for _ in 0..100 {
        let res = app
            .client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(res);
            break;
        }
        assert_eq!(header_u64(&res, "x-ratelimit-limit"), Some(10));
    }
    let refused = refused.expect("the address is limited");
    assert!(refused.headers().get("retry-after").is_some());
    // A bad token is no way around it.
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/openapi.json",
        Some(&"ab".repeat(32)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Twilio's webhooks, the health checks and the metrics answer as ever.
    for _ in 0..20 {
        let res = app
            .client
            .post(app.url("/api/calls/twilio/status/00000000-0000-4000-8000-000000000000"))
            .form(&[("CallStatus", "completed")])
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
        assert_eq!(get(&app, "/health", None).await.0, StatusCode::OK);
        assert_eq!(scrape(&app, None).await.0, StatusCode::OK);
    }
    app.stop().await;
}

/// The real binary, logging everything (`VOXFLOW_LOG=trace`) as JSON: every
/// line parses, the login has its access line, and no password, session
/// token or saved key appears anywhere in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_names_requests_and_never_a_secret() {
    const PASSWORD: &str = "Log-Passw0rd-Secret";
    const KEY: &str = "gsk_LogTestTenantKey0000000000000zZ9q";
    let stub = LlmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let llm = stub.base.clone();
    let mut bin = tokio::task::spawn_blocking(move || {
        let envs = [
            ("VOXFLOW_LOG", "trace"),
            ("VOXFLOW_LOG_FORMAT", "json"),
            ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("VOXFLOW_GROQ_BASE_URL", llm.as_str()),
        ];
        spawn_serve(&data, &envs)
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // POSTs `body` to `path` and expects `status`; the answer.
    let post_ok = |path: &str, token: Option<&str>, body: Value, expect: StatusCode| {
        let mut req = client.post(bin.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let path = path.to_string();
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let body = res.json::<Value>().await.unwrap_or(Value::Null);
            assert_eq!(status, expect, "{path}: {body}");
            body
        }
    };
    let creds = json!({"email": "logged@example.com", "password": PASSWORD});
    let body = post_ok(
        "/api/auth/register",
        None,
        creds.clone(),
        StatusCode::CREATED,
    )
    .await;
    let user_id = body["data"]["user"]["id"].as_str().unwrap().to_string();
    let body = post_ok("/api/auth/login", None, creds, StatusCode::OK).await;
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    post_ok(
        "/api/api-keys/groq",
        t,
        json!({"api_key": KEY}),
        StatusCode::OK,
    )
    .await;
    let agent = json!({"name": "Log", "type": "INBOUND", "use_case": "support", "description": "You answer questions politely."});
    let body = post_ok("/api/agents", t, agent, StatusCode::CREATED).await;
    let agent_id = body["data"]["id"].clone();
    let start = json!({"agent_id": agent_id});
    let body = post_ok("/api/calls/web/start", t, start, StatusCode::OK).await;
    let run_id = body["data"]["run_id"].clone();
    let msg = json!({"run_id": run_id, "message": "Hello there"});
    post_ok("/api/calls/web/message", t, msg, StatusCode::OK).await;
    post_ok(
        "/api/calls/web/end",
        t,
        json!({"run_id": run_id}),
        StatusCode::OK,
    )
    .await;
    assert!(
        stub.seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {KEY}"))),
        "the saved key was used"
    );
    let exit = tokio::task::spawn_blocking(move || {
        let exit = bin.terminate();
        (exit, bin)
    })
    .await
    .unwrap();
    let (status, bin) = exit;
    assert!(status.success());
    let log = bin.stderr();

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "TRACE" || l["level"] == "DEBUG"),
        "the log was not at trace level:\n{log}"
    );
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "voxflow::access")
        .collect();
    let access_line = |route: &str| {
        *access
            .iter()
            .find(|l| l["route"] == route)
            .unwrap_or_else(|| panic!("no access line for {route} in\n{log}"))
    };
    let login = access_line("/api/auth/login");
    assert_eq!(login["level"], "INFO");
    assert_eq!(login["method"], "POST");
    assert_eq!(login["status"], 200);
    assert!(login["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(is_uuid_v4(login["request_id"].as_str().unwrap()), "{login}");
    let saved = access_line("/api/api-keys/{provider}");
    assert_eq!(saved["user_id"], user_id.as_str(), "{saved}");
    for secret in [PASSWORD, ADMIN_PASSWORD, token.as_str(), KEY, &KEY[4..20]] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}

/// A log reader that stops reading (a stuck collector, a full pipe) does
/// not stop the server: the log holds what it may, drops the rest and
/// counts it, and writes again once it is read. Before the log had its own
/// thread, the workers blocked in their writes to standard error once the
/// pipe's 64 KiB were full, and these requests were never answered.
#[test]
fn a_stuck_log_reader_costs_dropped_lines_not_a_stalled_server() {
    let dir = tempfile::tempdir().unwrap();
    let bin = spawn_serve(
        dir.path(),
        &[
            ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("VOXFLOW_LOG_BUFFER_LINES", "50"),
        ],
    );
    bin.hold_stderr(true);
    // An access line each: several times what a pipe holds.
    for _ in 0..1500 {
        assert_eq!(http_get(&bin.base, "/health/liveness").status, 200);
    }
    let dropped = |bin: &crate::common::Bin| -> u64 {
        let scrape = http_get(&bin.base, "/metrics");
        assert_eq!(scrape.status, 200, "{}", scrape.body);
        scrape
            .body
            .lines()
            .find_map(|l| l.strip_prefix("voxflow_log_lines_dropped_total "))
            .unwrap_or_else(|| panic!("no dropped-lines counter in\n{}", scrape.body))
            .trim()
            .parse()
            .unwrap()
    };
    let held = dropped(&bin);
    assert!(held >= 1000, "{held} lines dropped while nobody read");

    bin.hold_stderr(false);
    // Read again, the log goes on: a request's line arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(http_get(&bin.base, "/health/readiness").status, 200);
        if bin.stderr().contains("/health/readiness") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line once standard error was read again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = dropped(&bin);
    for _ in 0..200 {
        assert_eq!(http_get(&bin.base, "/health/liveness").status, 200);
    }
    assert_eq!(dropped(&bin), before, "nothing dropped while it is read");
}
