//! Every endpoint, fed malformed JSON, wrong types, over-long fields, bad
//! ids, oversized bodies and hostile strings, answers a 4xx (or a success)
//! in the API's envelope: never a 500, never a body that is not the envelope,
//! and the database stays consistent. The fields each body is filled with
//! are the ones the OpenAPI document gives its schema, so every variant
//! reaches validation (an unknown field would be refused before it).

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::auth::{admin_token, post, register};
use crate::common::TestApp;
use crate::openapi::{body_fields, document, operations, Op};

const HOSTILE: [&str; 8] = [
    "'; DROP TABLE users; --",
    "<script>alert(1)</script>",
    "\u{0}\u{1}\u{7f}",
    "\u{202e}gnp.exe",
    "%s%n%x{}{{}}",
    "../../../../etc/passwd",
    "😀🙈 ünïcödé",
    "Robert'); DELETE FROM agents WHERE ('1'='1",
];

/// Every field of `fields` set to `value`.
fn every_field(fields: &[String], value: Value) -> Value {
    let mut m = Map::new();
    for f in fields {
        m.insert(f.clone(), value.clone());
    }
    Value::Object(m)
}

/// Bodies to throw at a JSON endpoint whose body has `fields`: raw bytes
/// and JSON values.
fn bodies(fields: &[String]) -> Vec<(String, Vec<u8>)> {
    let every_field = |v: Value| every_field(fields, v);
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("malformed".into(), b"{\"name\": ".to_vec()),
        ("not json".into(), b"hello".to_vec()),
        ("empty".into(), Vec::new()),
        (
            "deep nesting".into(),
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ),
        ("huge number".into(), br#"{"max_agents": 1e400}"#.to_vec()),
        (
            "oversized".into(),
            format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)).into_bytes(),
        ),
    ];
    let values = [
        json!({}),
        json!([]),
        json!(null),
        json!("a string"),
        json!(42),
        every_field(json!(null)),
        every_field(json!(-1)),
        every_field(json!(i64::MAX)),
        every_field(json!(true)),
        every_field(json!({"nested": [1, 2]})),
        every_field(json!(["a", "b"])),
        every_field(json!("x".repeat(10_000))),
    ];
    for v in values {
        out.push((
            v.to_string().chars().take(60).collect(),
            v.to_string().into_bytes(),
        ));
    }
    for h in HOSTILE {
        let v = every_field(json!(h));
        out.push((format!("hostile {h:?}"), v.to_string().into_bytes()));
    }
    out
}

const BAD_IDS: [&str; 6] = [
    "not-a-uuid",
    "00000000-0000-4000-8000-000000000000",
    "1%20OR%201=1",
    "%2e%2e%2f%2e%2e%2fetc",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8-extra",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
];

/// Sends one request and checks the answer is not a 5xx and is the envelope.
async fn probe(
    app: &TestApp,
    token: &str,
    method: &Method,
    path: &str,
    body: Option<&[u8]>,
    what: &str,
) {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_vec());
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} ({what}): {e:?}"));
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert!(
        !status.is_server_error(),
        "{method} {path} ({what}) answered {status}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!("{method} {path} ({what}) answered {status} with a non-JSON body: {text}")
    });
    if status.is_success() {
        assert_eq!(body["success"], true, "{method} {path} ({what}): {body}");
    } else {
        assert_eq!(body["success"], false, "{method} {path} ({what}): {body}");
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{method} {path} ({what}): {body}"
        );
    }
}

/// The documented operation `method path` stands for (a `{…}` segment
/// there stands for any value here).
fn documented<'a>(ops: &'a [Op], method: &Method, path: &str) -> Option<&'a Op> {
    ops.iter().find(|o| {
        let (a, b): (Vec<&str>, Vec<&str>) =
            (o.path.split('/').collect(), path.split('/').collect());
        o.method == method
            && a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| x == y || x.starts_with('{'))
    })
}

/// Hits `routes` with every body (for writes), every bad id and the given
/// real ids (for `{id}` routes), and hostile query strings (for reads).
async fn sweep(app: &TestApp, token: &str, routes: &[(Method, &str)], ids: &[String]) {
    let doc = document(app).await;
    let ops = operations(&doc);
    // Every route swept is one the OpenAPI document describes.
    for (method, template) in routes {
        assert!(
            documented(&ops, method, template).is_some(),
            "{method} {template} is missing from the OpenAPI document"
        );
    }
    let mut all_ids: Vec<String> = BAD_IDS.iter().map(|s| s.to_string()).collect();
    all_ids.extend(ids.iter().cloned());
    let queries = [
        "?page=0&limit=1000",
        "?page=abc&limit=-5",
        "?search=%27%3B%20DROP%20TABLE%20users%3B%20--&type=%3Cscript%3E",
        "?status=nope&disposition=%00&date_from=2024-13-45&date_to=yesterday",
        "?sort_by=email;DROP&order=sideways&is_active=maybe",
        "?page=99999999999999999999",
        // Never a valid date with a valid zone: the download would answer
        // CSV, not the envelope this sweep checks.
        "?date=9999-12-31&timezone=Pacific%2FKiritimati",
        "?date=2025-06-01&timezone=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd&agent_id=1%20OR%201=1",
        "?date=2025-13-01&timezone=UTC&agent_id=00000000-0000-4000-8000-000000000000",
        "?min_duration=-1&max_duration=1e99&phone=%27%20OR%201%3D1",
        "?agent_id=00000000-0000-4000-8000-000000000000&min_duration=9&max_duration=3",
    ];
    for (method, template) in routes {
        let fields = documented(&ops, method, template)
            .and_then(|o| o.json_body(&doc))
            .map(|schema| body_fields(&doc, schema))
            .unwrap_or_default();
        let bodies = bodies(&fields);
        let paths: Vec<String> = if template.contains("{id}") {
            all_ids
                .iter()
                .map(|id| template.replace("{id}", id))
                .collect()
        } else {
            vec![template.to_string()]
        };
        for path in &paths {
            if *method == Method::GET {
                probe(app, token, method, path, None, "no query").await;
                for q in queries {
                    probe(app, token, method, &format!("{path}{q}"), None, q).await;
                }
            } else {
                for (what, body) in &bodies {
                    probe(app, token, method, path, Some(body), what).await;
                }
            }
        }
    }
}

/// Twilio's webhooks answer TwiML or plain text, not the envelope: fed
/// anything without a valid signature they answer a 4xx, never a 5xx.
async fn sweep_webhooks(app: &TestApp, ids: &[String]) {
    let mut all_ids: Vec<String> = BAD_IDS.iter().map(|s| s.to_string()).collect();
    all_ids.extend(ids.iter().cloned());
    let doc = document(app).await;
    let ops = operations(&doc);
    let mut bodies: Vec<(String, &str, Vec<u8>)> = bodies(&[])
        .into_iter()
        .map(|(what, b)| (what, "application/json", b))
        .collect();
    for (what, form) in [
        ("empty form", ""),
        (
            "speech",
            "SpeechResult=%3Cscript%3E&CallStatus=completed&CallDuration=60",
        ),
        ("bad duration", "CallStatus=completed&CallDuration=-1e99"),
        ("recording", "RecordingUrl=javascript%3Aalert(1)"),
        ("broken encoding", "a=%ZZ&&=&b"),
    ] {
        bodies.push((
            what.into(),
            "application/x-www-form-urlencoded",
            form.as_bytes().to_vec(),
        ));
    }
    let signatures = [
        None,
        Some(""),
        Some("AAAA"),
        Some("not base64 ✗"),
        Some("%00"),
    ];
    for kind in ["webhook", "gather", "status", "recording"] {
        let template = format!("/api/calls/twilio/{kind}/{{run_id}}");
        assert!(
            ops.iter()
                .any(|o| o.method == Method::POST && o.path == template),
            "{template} is missing from the OpenAPI document"
        );
        for id in &all_ids {
            let path = format!("/api/calls/twilio/{kind}/{id}");
            for (what, ctype, body) in &bodies {
                for sig in signatures {
                    let mut req = app
                        .client
                        .post(app.url(&path))
                        .header("content-type", *ctype)
                        .body(body.clone());
                    if let Some(sig) = sig {
                        req = req.header("x-twilio-signature", sig.as_bytes());
                    }
                    let res = match req.send().await {
                        Ok(res) => res,
                        // A stranger's oversized body is refused before it is
                        // read: the server answers 413 and closes, which a
                        // client still writing sees as a broken pipe.
                        Err(e) if what == "oversized" && e.is_request() => continue,
                        Err(e) => panic!("{path} ({what}, {sig:?}): {e:?}"),
                    };
                    let status = res.status();
                    assert!(
                        status.is_client_error(),
                        "{path} ({what}, {sig:?}) answered {status}: {}",
                        res.text().await.unwrap_or_default()
                    );
                }
            }
        }
    }
}

fn integrity(app: &TestApp) {
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let orphans: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_bad_input_with_a_4xx_envelope() {
    // Thousands of requests as one free user and one address within a
    // minute: far past the default request limits, which are not what
    // this sweep is about (the 429s would hide the answers it checks).
    let app = TestApp::start_with(|c| {
        c.rate_limit_free = 1_000_000;
        c.rate_limit_anonymous = 1_000_000;
    })
    .await;
    let (token, _) = register(&app, "fuzz@example.com").await;
    let (other, _) = register(&app, "other@example.com").await;
    let agent = json!({"name": "Ann", "type": "INBOUND", "use_case": "support", "description": "You answer questions politely."});
    let (status, own) = post(&app, "/api/agents", Some(&token), agent.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let (_, theirs) = post(&app, "/api/agents", Some(&other), agent).await;
    let own_agent = own["data"]["id"].as_str().unwrap().to_string();
    // A real campaign, so its routes get past the lookup.
    let campaign: String = rusqlite::Connection::open(app.db_path())
        .unwrap()
        .query_row(
            "INSERT INTO campaigns (user_id, name, agent_id) SELECT user_id, 'Fuzz', id FROM agents WHERE id = ?1 RETURNING id",
            [&own_agent],
            |r| r.get(0),
        )
        .unwrap();
    let ids = vec![
        own_agent,
        theirs["data"]["id"].as_str().unwrap().to_string(),
        campaign,
    ];

    let user_routes = [
        (Method::POST, "/api/auth/register"),
        (Method::POST, "/api/auth/login"),
        (Method::GET, "/api/auth/me"),
        (Method::POST, "/api/auth/change-password"),
        (Method::GET, "/api/agents"),
        (Method::POST, "/api/agents"),
        (Method::GET, "/api/agents/{id}"),
        (Method::PUT, "/api/agents/{id}"),
        (Method::GET, "/api/agents/{id}/runs"),
        (Method::GET, "/api/config/service"),
        (Method::POST, "/api/config/service"),
        (Method::POST, "/api/calls/web/start"),
        (Method::POST, "/api/calls/web/message"),
        (Method::POST, "/api/calls/web/end"),
        (Method::POST, "/api/calls/phone/start"),
        (Method::GET, "/api/calls/run/{id}"),
        (Method::GET, "/api/calls/transcript/{id}"),
        (Method::GET, "/api/api-keys/providers"),
        (Method::GET, "/api/api-keys/status"),
        (Method::GET, "/api/api-keys/validate"),
        (Method::POST, "/api/api-keys/groq"),
        (Method::POST, "/api/api-keys/deepgram"),
        (Method::POST, "/api/api-keys/twilio"),
        (Method::POST, "/api/api-keys/{id}"),
        (Method::POST, "/api/api-keys/groq/test"),
        (Method::POST, "/api/api-keys/{id}/test"),
        (Method::DELETE, "/api/api-keys/{id}"),
        (Method::DELETE, "/api/api-keys/twilio"),
        (Method::GET, "/api/config/telephony"),
        (Method::POST, "/api/config/telephony"),
        (Method::GET, "/api/usage/dashboard"),
        (Method::GET, "/api/usage/history"),
        (Method::GET, "/api/reports/daily"),
        (Method::GET, "/api/reports/download"),
        (Method::POST, "/api/campaigns"),
        (Method::GET, "/api/campaigns"),
        (Method::GET, "/api/campaigns/{id}"),
        (Method::GET, "/api/campaigns/{id}/contacts"),
        (Method::POST, "/api/campaigns/{id}/start"),
        (Method::POST, "/api/campaigns/{id}/pause"),
        (Method::POST, "/api/campaigns/{id}/resume"),
        (Method::POST, "/api/campaigns/{id}/stop"),
        (Method::DELETE, "/api/campaigns/{id}"),
        (Method::DELETE, "/api/agents/{id}"),
    ];
    sweep(&app, &token, &user_routes, &ids).await;

    // A real phone-call run (of an agent the sweep did not delete), so the
    // webhooks get as far as the signature.
    let (_, agent) = post(
        &app,
        "/api/agents",
        Some(&token),
        json!({"name": "Bo", "type": "OUTBOUND", "use_case": "sales", "description": "You call people back politely."}),
    )
    .await;
    let run: String = rusqlite::Connection::open(app.db_path())
        .unwrap()
        .query_row(
            "INSERT INTO agent_runs (run_number, agent_id, type, phone_number) VALUES ('WR-TEL-999999', ?1, 'PHONE_CALL', '+14155550199') RETURNING id",
            [agent["data"]["id"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    sweep_webhooks(&app, &[run, ids[0].clone()]).await;

    let admin = admin_token(&app).await;
    let (_, victim) = register(&app, "victim@example.com").await;
    let admin_routes = [
        (Method::GET, "/api/admin/users"),
        (Method::PUT, "/api/admin/users/{id}/limits"),
        (Method::POST, "/api/admin/users/{id}/toggle-status"),
        (Method::GET, "/api/admin/users/{id}"),
        (Method::GET, "/api/admin/agents"),
        (Method::GET, "/api/admin/subscription-tiers"),
        (Method::GET, "/api/admin/audit-logs"),
        (Method::GET, "/api/admin/analytics/overview"),
        (Method::GET, "/api/admin/analytics/user-growth"),
        (Method::GET, "/api/admin/analytics/usage"),
        (Method::GET, "/api/admin/analytics/revenue"),
        (Method::GET, "/api/admin/analytics/system-health"),
        (Method::GET, "/api/admin/analytics/export/{id}"),
        (Method::PUT, "/api/admin/users/{id}"),
        (Method::POST, "/api/admin/users/{id}/activate"),
        (Method::POST, "/api/admin/users/{id}/deactivate"),
        (Method::GET, "/api/admin/dashboard"),
        (Method::GET, "/api/admin/system-health"),
        (Method::DELETE, "/api/admin/users/{id}"),
    ];
    sweep(&app, &admin, &admin_routes, &[victim]).await;
    integrity(&app);
    app.stop().await;
}
