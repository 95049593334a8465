//! The server's edges as an attacker meets them: where a tenant's URL may
//! send this server (SSRF), slow and oversized requests, the client's
//! address behind a proxy, and the security headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agents::{create_agent, tenant, Tenant};
use crate::auth::post;
use crate::calls::{say, start_call, LlmStub};
use crate::common::{spawn_serve, voxflow_cmd, TestApp, ADMIN_PASSWORD};

fn port_of(base: &str) -> u16 {
    let rest = base.trim_start_matches("http://127.0.0.1:");
    rest.split('/').next().unwrap().parse().unwrap()
}

async fn point_llm_at(app: &TestApp, who: &Tenant, url: &str) -> (reqwest::StatusCode, Value) {
    post(
        app,
        "/api/config/service",
        Some(&who.token),
        json!({ "llm_provider": "openai_compatible", "llm_base_url": url }),
    )
    .await
}

/// The 502 a tenant sees when its LLM cannot be used, from a fresh call.
async fn llm_failure(app: &TestApp, who: &Tenant, agent: &str) -> String {
    let (run, _) = start_call(app, who, agent).await;
    let (status, body) = say(app, who, &run, "Hello?").await;
    assert_eq!(status, 502, "{body}");
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tenant_urls_into_this_hosts_networks_are_refused_unless_listed() {
    let stub = LlmStub::start().await;
    let port = port_of(&stub.base);
    let app = TestApp::start_with(|c| c.llm_allowed_urls = None).await;
    let t = tenant(&app, "ssrf@example.com").await;
    let agent = create_agent(&app, &t, "Probe").await;

    // Every literal spelling of this host, the metadata service and the
    // private ranges: refused before any request is sent.
    for url in [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://0x7f000001:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://%31%32%37.0.0.1:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.5:8000/v1".to_string(),
        "http://100.64.0.1/v1".to_string(),
    ] {
        let (status, body) = point_llm_at(&app, &t, &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "llm_base_url", "{url}");
    }

    // A name is judged by what it resolves to, when connecting: `localhost`
    // is this host, so it fails as an unreachable server would.
    let (status, body) = point_llm_at(&app, &t, &format!("http://localhost:{port}/v1")).await;
    assert_eq!(status, 200, "{body}");
    let refused = llm_failure(&app, &t, &agent).await;
    assert!(refused.contains("could not be reached"), "{refused}");
    assert!(stub.seen().is_empty(), "nothing reached the local server");
    app.stop().await;

    // Listed by the operator (the air-gapped case), the same server is
    // allowed in any spelling of the listed prefix, and only under it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let list = format!("http://127.0.0.1:{port}/v1,http://127.0.0.1:{closed}/v1");
    let app = TestApp::start_with(move |c| c.llm_allowed_urls = Some(list)).await;
    let t = tenant(&app, "airgap@example.com").await;
    let agent = create_agent(&app, &t, "Local").await;
    for url in [
        format!("http://127.0.0.1:{port}/v1/../../internal-admin"),
        format!("http://127.0.0.1:{port}/v1/%2e%2e/admin"),
        format!("http://127.0.0.1:{port}/v10"),
        format!("http://localhost:{port}/v1"),
    ] {
        let (status, body) = point_llm_at(&app, &t, &url).await;
        assert_eq!(status, 400, "{url}: {body}");
    }
    let (status, body) = point_llm_at(&app, &t, &format!("http://0x7f000001:{port}/v1/")).await;
    assert_eq!(status, 200, "{body}");
    let (run, _) = start_call(&app, &t, &agent).await;
    assert_eq!(say(&app, &t, &run, "Hi").await.0, 200);
    assert_eq!(stub.seen().len(), 1);

    // A closed port answers with the very words of a refused address.
    let (status, _) = point_llm_at(&app, &t, &format!("http://127.0.0.1:{closed}/v1")).await;
    assert_eq!(status, 200);
    let (status, body) = say(&app, &t, &run, "Hello?").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["message"], refused.as_str());
    app.stop().await;
}

/// Opens a connection and sends a request's head and the first `sent`
/// bytes of a body it says is `declared` bytes long.
fn half_sent(addr: &str, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

/// What the server sends before it closes the connection, waiting at most
/// `limit`; `None` when the connection is still open then.
fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&got).into_owned())
        }
        Err(_) => None,
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test]
async fn strangers_bodies_are_small_and_slow_bodies_time_out() {
    let app = TestApp::start_with(|c| c.body_timeout_secs = 2).await;
    let big = json!({ "email": "a@example.com", "password": "x".repeat(100 * 1024) });
    let (status, body) = post(&app, "/api/auth/login", None, big.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(body["success"], false);
    // Signed in, the route's own limit holds (1 MiB of JSON).
    let t = tenant(&app, "big@example.com").await;
    let (status, body) = post(&app, "/api/agents", Some(&t.token), big).await;
    assert_ne!(status, 413, "{body}");

    // A body that stalls is answered 408 and its connection closed.
    let addr = app.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    // Blocking socket calls, off the test's runtime (the server runs on it).
    let said = tokio::task::spawn_blocking(move || {
        let mut s = half_sent(&addr, 1000, 10);
        until_closed(&mut s, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("closed by the timeout");
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("BODY_TIMEOUT"), "{said}");
    assert!(started.elapsed() >= Duration::from_millis(1900));

    let res = app.client.get(app.url("/")).send().await.unwrap();
    let h = res.headers();
    assert_eq!(
        h["permissions-policy"].to_str().unwrap().split(',').next(),
        Some("microphone=(self)")
    );
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("worker-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    app.stop().await;
}

#[test]
fn two_hundred_slow_anonymous_bodies_stay_small_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = spawn_serve(
        dir.path(),
        &[
            ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("VOXFLOW_BODY_TIMEOUT_SECS", "3"),
            ("VOXFLOW_RATE_LIMIT", "off"),
        ],
    );
    let addr = bin.base.trim_start_matches("http://").to_string();
    // Half of them say 1 MiB is coming (refused at once), half stay under
    // the 64 KiB a stranger may send and stall after 32 KiB.
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                half_sent(&addr, 1 << 20, 16 * 1024)
            } else {
                half_sent(&addr, 60 * 1024, 32 * 1024)
            }
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let rss = rss_mb(bin.pid());
    println!("resident memory with 200 slow bodies: {rss:.1} MB");
    assert!(rss < 150.0, "{rss} MB");
    for (i, s) in conns.iter_mut().enumerate() {
        let said = until_closed(s, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("connection {i} still open"));
        let expected = if i % 2 == 0 { "413" } else { "408" };
        assert!(said.is_empty() || said.contains(expected), "{i}: {said}");
    }
}

fn corrupt_pages(db: &std::path::Path) {
    let mut bytes = std::fs::read(db).unwrap();
    let page = 4096;
    assert!(bytes.len() > page * 6, "a database of several pages");
    for b in &mut bytes[page * 2..page * 5] {
        *b = 0xA5;
    }
    std::fs::write(db, bytes).unwrap();
}

#[tokio::test]
async fn a_stop_leaves_the_whole_database_in_voxflow_db_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = spawn_serve(dir.path(), &[("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let res = reqwest::Client::new()
        .post(bin.url("/api/auth/register"))
        .json(&json!({ "email": "last@example.com", "password": "Last-Passw0rd-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(bin.terminate().success());
    let wal = dir.path().join("voxflow.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the log is empty after a stop"
    );
    // Copied alone, the file holds the last write.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("voxflow.db"),
        copy.path().join("voxflow.db"),
    )
    .unwrap();
    let conn = rusqlite::Connection::open(copy.path().join("voxflow.db")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM users WHERE email = 'last@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);

    // Damaged pages: the server refuses to start and says how to recover;
    // `verify` prints its report and exits 1.
    corrupt_pages(&dir.path().join("voxflow.db"));
    let err = refused_start(dir.path());
    assert!(
        err.contains("damaged") && err.contains("voxflow restore"),
        "{err}"
    );
    let out = voxflow_cmd(dir.path()).arg("verify").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("integrity_check"), "{said}");

    // Emptied beside the key file: refused unless --init.
    std::fs::write(dir.path().join("voxflow.db"), b"").unwrap();
    let err = refused_start(dir.path());
    assert!(
        err.contains("--init") && err.contains("voxflow restore"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("voxflow.db")).unwrap();
    assert!(
        refused_start(dir.path()).contains("--init"),
        "a missing file too"
    );
}

/// Starts `voxflow serve` on `dir`, expects it to refuse with exit 2, and
/// returns what it said.
fn refused_start(dir: &std::path::Path) -> String {
    let out = voxflow_cmd(dir)
        .arg("serve")
        .args(["--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// Sends one whole request on `s` (kept alive) and returns its status line.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: voxflow\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    said.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn eight_hundred_half_sent_headers_are_closed_by_the_header_timeout() {
    let app = TestApp::start_with(|c| c.header_timeout_secs = 2).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut conns: Vec<TcpStream> = (0..800)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).unwrap();
                write!(s, "GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: ").unwrap();
                s
            })
            .collect();
        conns
            .iter_mut()
            .map(|s| until_closed(s, Duration::from_secs(20)).is_some())
            .filter(|closed| *closed)
            .count()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    println!("800 half-sent heads closed in {took:?}");
    assert_eq!(closed, 800, "connections left open past the header timeout");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // The server serves on.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn connections_past_the_bound_wait_for_a_free_slot() {
    let app = TestApp::start_with(|c| c.max_connections = 4).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        // Four kept-alive connections, each answered once: all four slots
        // are taken.
        let mut held: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).unwrap();
                assert_eq!(keep_alive_get(&mut s, "/health/liveness"), "HTTP/1.1 200 OK");
                s
            })
            .collect();
        // A fifth client gets no answer while they stay open...
        let mut fifth = TcpStream::connect(&addr).unwrap();
        write!(fifth, "GET /health HTTP/1.1\r\nHost: voxflow\r\n\r\n").unwrap();
        fifth
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let early = fifth.read(&mut buf);
        assert!(
            matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "answered past the bound: {early:?}"
        );
        // ...and its answer as soon as one of them closes.
        drop(held.pop());
        let said = until_closed_or_answered(&mut fifth);
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
        // The others were never disturbed.
        for s in &mut held {
            assert_eq!(keep_alive_get(s, "/health/liveness"), "HTTP/1.1 200 OK");
        }
    })
    .await
    .unwrap();
    app.stop().await;
}

/// The first bytes of an answer, waiting at most 10 s.
fn until_closed_or_answered(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Logs in as `email` with the given forwarding headers; the status, the
/// answer's headers and its body.
async fn login_via(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "email": email, "password": password }));
    for (name, value) in forwarded {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

/// Twenty wrong passwords (over twenty accounts, so no account locks)
/// from the client `ip` as the proxy forwards it; the status of the 21st.
async fn twenty_one_failures(app: &TestApp, ip: &str) -> Vec<u16> {
    let mut seen = Vec::new();
    for i in 0..21 {
        let email = format!("nobody{i}-{ip}@example.com");
        let headers = [("x-forwarded-for", ip)];
        seen.push(login_via(app, &email, "Wr0ng-Password", &headers).await.0);
    }
    seen
}

fn set_cookie(headers: &reqwest::header::HeaderMap) -> String {
    headers["set-cookie"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_throttled_audited_and_secure() {
    let app = TestApp::start_with(|c| {
        c.trusted_proxies = voxflow::config::NetList::parse("127.0.0.1").unwrap();
    })
    .await;
    // One client's twenty failures throttle that client only.
    let first = twenty_one_failures(&app, "203.0.113.1").await;
    assert!(first[..20].iter().all(|s| *s == 401), "{first:?}");
    assert_eq!(first[20], 429, "{first:?}");
    let (status, _, body) = login_via(
        &app,
        "someone@example.com",
        "Wr0ng-Password",
        &[("x-forwarded-for", "203.0.113.2")],
    )
    .await;
    assert_eq!(status, 401, "another client is not throttled: {body}");

    // The client's address in its session and in the audit log; its
    // HTTPS (as the proxy says) in the cookie and in HSTS.
    let forwarded = [
        ("x-forwarded-for", "198.51.100.9"),
        ("x-forwarded-proto", "https"),
    ];
    let (status, headers, body) =
        login_via(&app, crate::common::ADMIN_EMAIL, ADMIN_PASSWORD, &forwarded).await;
    assert_eq!(status, 200, "{body}");
    let cookie = set_cookie(&headers);
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert_eq!(
        headers["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    let admin = body["data"]["token"].as_str().unwrap().to_string();
    let target = tenant(&app, "audited@example.com").await;
    let res = app
        .client
        .delete(app.url(&format!("/api/admin/users/{}", target.id)))
        .bearer_auth(&admin)
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let audit_ip: String = conn
        .query_row(
            "SELECT ip_address FROM admin_audit_logs WHERE action = 'delete_user' AND target_resource_id = ?1",
            [&target.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audit_ip, "198.51.100.9");
    let session_ips: Vec<String> = conn
        .prepare("SELECT s.ip_address FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = ?1")
        .unwrap()
        .query_map([crate::common::ADMIN_EMAIL], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(session_ips, ["198.51.100.9"]);

    // Plain HTTP at the proxy: no Secure cookie, no HSTS.
    let (status, headers, _) = login_via(
        &app,
        crate::common::ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "http"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!set_cookie(&headers).contains("Secure"));
    assert!(headers.get("strict-transport-security").is_none());
    app.stop().await;
}

#[tokio::test]
async fn from_an_untrusted_peer_forwarding_headers_are_ignored() {
    let app = TestApp::start().await;
    // Each failure claims another client: all are the peer's, which the
    // 21st throttles.
    let mut seen = Vec::new();
    for i in 0..21 {
        let ip = format!("203.0.113.{}", i + 1);
        let email = format!("nobody{i}@example.com");
        seen.push(
            login_via(&app, &email, "Wr0ng-Password", &[("x-forwarded-for", &ip)])
                .await
                .0,
        );
    }
    assert_eq!(seen[20], 429, "{seen:?}");
    assert!(seen[..20].iter().all(|s| *s == 401), "{seen:?}");
    app.stop().await;

    let app = TestApp::start().await;
    let (status, headers, _) = login_via(
        &app,
        crate::common::ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!set_cookie(&headers).contains("Secure"));
    assert!(headers.get("strict-transport-security").is_none());
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let ip: String = conn
        .query_row("SELECT ip_address FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ip, "127.0.0.1");
    app.stop().await;
}
