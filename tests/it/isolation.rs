//! Tenant isolation, walked from the OpenAPI document rather than from a
//! hand-kept list: every templated path is filled with another tenant's
//! real objects of the right kind and called with every documented method
//! and a valid body, and must refuse (404 for a tenant's objects, 403 for
//! the admin routes and Twilio's signed webhooks) without changing anything
//! of the other tenant. Every route that needs a session refuses anonymous
//! callers with 401, given the same real ids. A new route cannot be
//! forgotten: a path parameter without a known fill, or a templated
//! operation with a body and no valid one here, fails the walk.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::auth::{call, post, register};
use crate::common::TestApp;
use crate::openapi::{document, operations, Op};

const GROQ_KEY: &str = "gsk_IsolationVictimKey000000000000Zq7w";
const PROMPT: &str = "You answer the phone politely and briefly.";

/// The victim's objects, by kind.
struct Victim {
    user: String,
    agent: String,
    web_run: String,
    phone_run: String,
    campaign: String,
}

/// The value for `{param}` of `template`: the victim's object of the kind
/// the route names. `None`: nobody taught the walk this route.
fn fill(v: &Victim, template: &str, param: &str) -> Option<String> {
    let under = |prefix: &str| template.starts_with(prefix);
    Some(match param {
        "id" if under("/api/agents/") => v.agent.clone(),
        "id" if under("/api/campaigns/") => v.campaign.clone(),
        "id" if under("/api/calls/run/") || under("/api/calls/transcript/") => v.web_run.clone(),
        "id" if under("/api/admin/users/") => v.user.clone(),
        "run_id" if under("/api/calls/web/") => v.web_run.clone(),
        "run_id" if under("/api/calls/twilio/") => v.phone_run.clone(),
        // The provider whose key the victim saved.
        "provider" if under("/api/api-keys/") => "groq".into(),
        "kind" if under("/api/admin/analytics/export/") => "users".into(),
        _ => return None,
    })
}

/// A body each templated operation would accept from the object's owner.
fn valid_body(method: &Method, template: &str) -> Option<Value> {
    Some(match (method.as_str(), template) {
        ("PUT", "/api/agents/{id}") => {
            json!({"name": "Taken", "type": "INBOUND", "use_case": "support", "description": PROMPT})
        }
        ("POST", "/api/api-keys/{provider}") => json!({"api_key": GROQ_KEY}),
        ("PUT", "/api/admin/users/{id}") => json!({"organization_name": "Taken over"}),
        ("PUT", "/api/admin/users/{id}/limits") => json!({"max_agents": 100}),
        ("POST", "/api/admin/users/{id}/toggle-status") => json!({"is_active": false}),
        // Twilio's form, not JSON: sent as a form below.
        (_, t) if t.starts_with("/api/calls/twilio/") => json!({}),
        _ => return None,
    })
}

/// What the attacker's call must answer.
fn refusals(o: &Op) -> &'static [StatusCode] {
    if o.admin() {
        // Admin routes: a tenant is not an admin.
        &[StatusCode::FORBIDDEN]
    } else if o.path.starts_with("/api/calls/twilio/") {
        // Twilio's requests prove themselves by a signature made with the
        // run owner's token: anyone else has none.
        &[StatusCode::FORBIDDEN]
    } else if o.path.starts_with("/api/api-keys/{provider}") {
        // A provider names the caller's own key, never another tenant's:
        // saving one is the caller's own business, deleting or testing one
        // it does not have is a 404 (or a 4xx naming what is missing).
        &[
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
        ]
    } else {
        &[StatusCode::NOT_FOUND]
    }
}

/// Every table's rows, as text, but what the attacker's own actions change
/// by design: its own rows (its account, sessions, keys), and the audit log
/// that records them.
fn dump(app: &TestApp, attacker: &str) -> BTreeMap<String, Vec<String>> {
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        if table == "admin_audit_logs" || table == "sessions" {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let owner = names.iter().position(|c| c == "user_id").or_else(|| {
            (table == "users")
                .then(|| names.iter().position(|c| c == "id"))
                .flatten()
        });
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<rusqlite::types::Value> = (0..names.len())
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<_, _>>()?;
                Ok(cells)
            })
            .unwrap()
            .map(Result::unwrap)
            .filter(|cells| {
                owner.is_none_or(|i| cells[i] != rusqlite::types::Value::Text(attacker.to_string()))
            })
            .map(|cells| format!("{cells:?}"))
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

async fn victim(app: &TestApp) -> (String, Victim) {
    let (token, user) = register(app, "victim@example.com").await;
    let agent =
        json!({"name": "Vic", "type": "OUTBOUND", "use_case": "sales", "description": PROMPT});
    let (status, body) = post(app, "/api/agents", Some(&token), agent).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent = body["data"]["id"].as_str().unwrap().to_string();
    let (status, body) = post(
        app,
        "/api/api-keys/groq",
        Some(&token),
        json!({"api_key": GROQ_KEY}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        app,
        "/api/config/service",
        Some(&token),
        json!({"llm_model": "llama-3.1-8b-instant"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let run = |number: &str, kind: &str, phone: Option<&str>| -> String {
        conn.query_row(
            "INSERT INTO agent_runs (run_number, agent_id, type, phone_number) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            rusqlite::params![number, agent, kind, phone],
            |r| r.get(0),
        )
        .unwrap()
    };
    let web_run = run("WR-WEB-900001", "WEB_CALL", None);
    let phone_run = run("WR-TEL-900002", "PHONE_CALL", Some("+14155550123"));
    let campaign: String = conn
        .query_row(
            "INSERT INTO campaigns (user_id, name, agent_id) VALUES (?1, 'Victim', ?2) RETURNING id",
            [&user, &agent],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, phone_number) VALUES (?1, '+14155550124')",
        [&campaign],
    )
    .unwrap();
    (
        token,
        Victim {
            user,
            agent,
            web_run,
            phone_run,
            campaign,
        },
    )
}

/// Sends `o` on `path` with `body` (JSON, or Twilio's form) as `token`.
async fn send(
    app: &TestApp,
    o: &Op,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = app.client.request(o.method.clone(), app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if o.path.starts_with("/api/calls/twilio/") {
        if o.method == Method::POST {
            req = req.form(&[
                ("CallSid", "CA00000000000000000000000000000000"),
                ("CallStatus", "completed"),
            ]);
        }
    } else if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.text().await.unwrap_or_default())
}

#[tokio::test]
async fn no_templated_route_reaches_another_tenant_s_objects() {
    let app = TestApp::start_with(|c| {
        c.rate_limit_free = 1_000_000;
        c.rate_limit_anonymous = 1_000_000;
    })
    .await;
    let doc = document(&app).await;
    let (_, v) = victim(&app).await;
    let (attacker, attacker_id) = register(&app, "attacker@example.com").await;
    let before = dump(&app, &attacker_id);
    let mut walked = 0;
    for o in operations(&doc) {
        let params: Vec<String> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        if params.is_empty() {
            continue;
        }
        let mut path = o.path.clone();
        for p in &params {
            let value = fill(&v, &o.path, p).unwrap_or_else(|| {
                panic!(
                    "{} {}: no known fill for {{{p}}}; teach the isolation walk its kind",
                    o.method, o.path
                )
            });
            path = path.replace(&format!("{{{p}}}"), &value);
        }
        let body = if o.op.get("requestBody").is_some() {
            Some(valid_body(&o.method, &o.path).unwrap_or_else(|| {
                panic!(
                    "{} {}: no valid body known; teach the isolation walk one",
                    o.method, o.path
                )
            }))
        } else {
            None
        };
        let what = format!("{} {path}", o.method);
        if !o.public() {
            let (status, text) = send(&app, &o, &path, None, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} anonymously: {text}"
            );
        }
        let (status, text) = send(&app, &o, &path, Some(&attacker), body).await;
        assert!(
            refusals(&o).contains(&status),
            "{what} as another tenant answered {status}: {text}"
        );
        assert_eq!(
            dump(&app, &attacker_id),
            before,
            "{what} changed the other tenant's data"
        );
        walked += 1;
    }
    assert!(walked >= 30, "{walked} templated operations walked");
    app.stop().await;
}

#[tokio::test]
async fn every_route_that_needs_a_session_refuses_anonymous_callers() {
    let app = TestApp::start_with(|c| c.rate_limit_anonymous = 1_000_000).await;
    let doc = document(&app).await;
    let (_, v) = victim(&app).await;
    for o in operations(&doc).iter().filter(|o| !o.public()) {
        let mut path = o.path.clone();
        for seg in o.path.split('/') {
            if let Some(p) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                path = path.replace(seg, &fill(&v, &o.path, p).expect("a known fill"));
            }
        }
        let body = o.op.get("requestBody").map(|_| json!({}));
        let (status, answer) = call(&app, o.method.clone(), &path, None, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} {path}: {answer}",
            o.method
        );
        assert_eq!(answer["success"], false, "{} {path}", o.method);
    }
    app.stop().await;
}
