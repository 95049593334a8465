//! The first edition's clients keep working: its web app's sequence of
//! calls, replayed against a real server (an LLM stand-in for the web call,
//! the Twilio stand-in for a campaign's dialled calls), with each field it
//! reads checked by name and type; and CORS for its web app on another
//! origin.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::agents::{db, Tenant, PROMPT};
use crate::auth::{admin_token, call, delete, get, login, post, put, PASSWORD};
use crate::calls::LlmStub;
use crate::campaigns::act;
use crate::common::{utc_today, TestApp};
use crate::dialer::{create_campaign, wait_until};
use crate::phone::save_twilio;
use crate::twilio_standin::{Outcome, TwilioStandIn, PUBLIC};

const WEB_APP: &str = "http://localhost:5173";
const DG_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// The value at a dotted `path` of `v` (`data.current_usage.agents`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) if v.is_array() => &v[i],
            _ => &v[key],
        })
}

/// Asserts that each `(path, type)` of `v` is there with that JSON type
/// (`string`, `integer`, `number`, `bool`, `object`, `array`).
#[track_caller]
fn has(v: &Value, fields: &[(&str, &str)]) {
    for (path, kind) in fields {
        let got = at(v, path);
        let ok = match *kind {
            "string" => got.is_string(),
            "integer" => got.is_i64() || got.is_u64(),
            "number" => got.is_number(),
            "bool" => got.is_boolean(),
            "object" => got.is_object(),
            "array" => got.is_array(),
            other => panic!("unknown type {other}"),
        };
        assert!(ok, "{path} should be a {kind}, is {got}: {v}");
    }
}

#[track_caller]
fn okay(status: StatusCode, body: &Value) {
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(body["success"], true, "{body}");
}

/// A server as the first edition's deployment would have it: Groq through
/// the LLM stand-in, Twilio through its stand-in, and the web app's origin
/// allowed.
async fn first_edition_app(llm: &LlmStub, twilio: &TwilioStandIn) -> TestApp {
    let (groq, twilio_base) = (llm.base.clone(), twilio.base.clone());
    let app = TestApp::start_with(move |c| {
        c.groq_base_url = groq;
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.public_url = Some(PUBLIC.into());
        c.twilio_base_url = twilio_base;
        c.provider_timeout_secs = 3;
        c.cors_origins = voxflow::http::cors::OriginList::parse(WEB_APP).unwrap();
    })
    .await;
    twilio.send_callbacks_to(&app.base);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_editions_client_sequence_works_field_by_field() {
    let llm = LlmStub::start().await;
    let twilio = TwilioStandIn::start(Duration::from_millis(200)).await;
    let app = first_edition_app(&llm, &twilio).await;

    // Register as its page does (asking for a paid tier, which is not
    // granted), then log in.
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "Old.Client@Example.com", "password": PASSWORD,
               "organization_name": "Acme Dental", "subscription_tier": "enterprise"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    has(
        &body,
        &[("data.token", "string"), ("data.user.id", "string")],
    );
    assert_eq!(body["data"]["user"]["subscription_tier"], "free");
    let (status, body) = login(&app, "old.client@example.com", PASSWORD).await;
    okay(status, &body);
    let me = Tenant {
        token: body["data"]["token"].as_str().unwrap().to_string(),
        id: body["data"]["user"]["id"].as_str().unwrap().to_string(),
    };
    let tok = Some(me.token.as_str());
    let (status, body) = get(&app, "/api/auth/me", tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.current_usage.tokens_used", "number"),
            ("data.current_usage.agent_count", "integer"),
        ],
    );

    // Agents: create two, list, read, update, delete one.
    let mut agents = Vec::new();
    for name in ["Vera", "Spare"] {
        let (status, body) = post(
            &app,
            "/api/agents",
            tok,
            json!({"name": name, "type": "OUTBOUND", "use_case": "appointments", "description": PROMPT}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        has(
            &body,
            &[
                ("data.id", "string"),
                ("data.limits_info.remaining", "integer"),
            ],
        );
        agents.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let (agent, spare) = (agents[0].clone(), agents[1].clone());
    let (status, body) = get(&app, "/api/agents?page=1&limit=10&type=all&search=", tok).await;
    okay(status, &body);
    assert_eq!(body["pagination"]["total"], 2, "{body}");
    let (status, body) = get(&app, &format!("/api/agents/{agent}"), tok).await;
    okay(status, &body);
    assert_eq!(body["data"]["name"], "Vera");
    let (status, body) = put(
        &app,
        &format!("/api/agents/{agent}"),
        tok,
        json!({"use_case": "reminders"}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["use_case"], "reminders");
    let (status, body) = delete(&app, &format!("/api/agents/{spare}"), tok).await;
    okay(status, &body);

    // A web call: start, one message (the reply at `data.message`), end.
    let (status, body) = post(
        &app,
        "/api/calls/web/start",
        tok,
        json!({"agent_id": agent}),
    )
    .await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.run_id", "string"),
            ("data.run_number", "string"),
            ("data.greeting", "string"),
            ("data.agent.name", "string"),
        ],
    );
    let run = body["data"]["run_id"].as_str().unwrap().to_string();
    let (status, body) = post(
        &app,
        "/api/calls/web/message",
        tok,
        json!({"run_id": run, "message": "Can I come on Tuesday?",
               "conversation_history": [{"role": "user", "content": "ignored"}]}),
    )
    .await;
    okay(status, &body);
    has(
        &body,
        &[("data.message", "string"), ("data.response", "string")],
    );
    assert_eq!(body["data"]["message"], body["data"]["response"]);
    let reply = body["data"]["message"].as_str().unwrap().to_string();
    assert!(reply.contains("Can I come on Tuesday?"), "{reply}");
    let (status, body) = post(
        &app,
        "/api/calls/web/end",
        tok,
        json!({"run_id": run, "duration": 9999, "conversation_history": []}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["status"], "completed");
    assert!(
        body["data"]["duration_seconds"].as_i64().unwrap() < 60,
        "the server's clock, not the client's"
    );

    // The run and its transcript, with the whole conversation as text.
    let (status, body) = get(&app, &format!("/api/calls/run/{run}"), tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.transcript", "array"),
            ("data.transcript_text", "string"),
            ("data.run_number", "string"),
            ("data.duration_seconds", "integer"),
        ],
    );
    let text = body["data"]["transcript_text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("assistant: "), "{text}");
    assert_eq!(lines[1], "user: Can I come on Tuesday?");
    assert_eq!(lines[2], format!("assistant: {reply}"));
    let (status, body) = get(&app, &format!("/api/calls/transcript/{run}"), tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.transcript", "array"),
            ("data.transcript_text", "string"),
        ],
    );
    assert_eq!(body["data"]["transcript_text"], text);

    // The usage dashboard under the first edition's names.
    let (status, body) = get(&app, "/api/usage/dashboard", tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.current_usage.agents", "integer"),
            ("data.current_usage.tokens_this_month", "number"),
            ("data.total_runs", "integer"),
            ("data.total_duration_formatted", "string"),
            ("data.tokens_used", "number"),
        ],
    );
    let d = &body["data"];
    assert_eq!(d["current_usage"]["agents"], 1);
    assert_eq!(d["current_usage"]["tokens_this_month"], d["tokens_used"]);
    assert_eq!(d["total_runs"], 1);
    assert_eq!(d["total_duration_formatted"], "0h 00m");

    // History with the filters its form sends when cleared.
    let (status, body) = get(
        &app,
        "/api/usage/history?page=1&limit=10&agent_id=&phone=&disposition=all&date_from=&date_to=&min_duration=&max_duration=",
        tok,
    )
    .await;
    okay(status, &body);
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    has(
        &body,
        &[
            ("data.0.agents.name", "string"),
            ("data.0.agent_name", "string"),
        ],
    );
    assert_eq!(body["data"][0]["agents"]["name"], "Vera");
    // A number that is not one is still refused.
    let (status, body) = get(&app, "/api/usage/history?min_duration=ten", tok).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "min_duration");

    // The daily report, under both names, and its download.
    let today = utc_today();
    let (status, body) = get(&app, &format!("/api/reports/daily?date={today}"), tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.total_runs", "integer"),
            ("data.transfer_dispositions", "integer"),
            ("data.disposition_distribution", "object"),
            ("data.call_duration_distribution", "object"),
            ("data.call_duration_distribution.0-10", "integer"),
        ],
    );
    let r = &body["data"];
    assert_eq!(r["total_runs"], r["total_calls"]);
    assert_eq!(r["total_runs"], 1);
    assert_eq!(r["transfer_dispositions"], r["transfers"]);
    assert_eq!(r["disposition_distribution"], r["dispositions"]);
    assert_eq!(r["disposition_distribution"]["user_hangup"], 1);
    assert_eq!(r["call_duration_distribution"], r["duration_buckets"]);
    let res = app
        .client
        .get(app.url(&format!("/api/reports/download?date={today}")))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csv = res.text().await.unwrap();
    assert!(
        csv.starts_with("Run ID,Agent Name,Phone,Disposition,Date,Duration,Tokens"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 2, "{csv}");

    // An admin moves the account to pro with the first edition's edit form.
    let admin = admin_token(&app).await;
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{}", me.id),
        Some(&admin),
        json!({"subscription_tier": "pro", "organization_name": "Acme Dental Group"}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["subscription_tier"], "pro");
    assert_eq!(
        body["data"]["max_agents"], 10,
        "the tier's limits came along"
    );
    assert_eq!(body["data"]["organization_name"], "Acme Dental Group");

    // API keys: save, status, validate, delete.
    save_twilio(&app, &me).await;
    let (status, body) = post(
        &app,
        "/api/api-keys/deepgram",
        tok,
        json!({"api_key": DG_KEY}),
    )
    .await;
    okay(status, &body);
    let (status, body) = get(&app, "/api/api-keys/status", tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.deepgram.configured", "bool"),
            ("data.deepgram.masked", "string"),
            ("data.twilio.configured", "bool"),
        ],
    );
    assert_eq!(body["data"]["deepgram"]["source"], "user");
    let (status, body) = get(&app, "/api/api-keys/validate?providers=groq,deepgram", tok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["data"]["valid"], true, "{body}");
    let (status, body) = delete(&app, "/api/api-keys/deepgram", tok).await;
    okay(status, &body);
    let (status, body) = get(&app, "/api/api-keys/validate?providers=groq,deepgram", tok).await;
    // Not usable: `success` says so too, for the page that reads it as
    // "valid", with the usual failure's status, message and code.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], "KEYS_NOT_USABLE");
    has(
        &body,
        &[
            ("message", "string"),
            ("data.valid", "bool"),
            ("data.missing", "array"),
        ],
    );
    assert_eq!(body["data"]["valid"], false);
    assert_eq!(body["data"]["missing"], json!(["deepgram"]));
    assert!(
        body["message"].as_str().unwrap().contains("Deepgram"),
        "{body}"
    );

    // A campaign: one number answers, one is busy and waits an hour for
    // its retry, so the campaign stays running after a dialled call.
    let (reached, busy) = ("+14155550301", "+14155550302");
    twilio.script(
        reached,
        &[Outcome::Completed {
            wall: Duration::from_millis(300),
            secs: 20,
        }],
    );
    twilio.script(busy, &[Outcome::Busy]);
    let campaign = create_campaign(
        &app.client,
        &app.base,
        &me.token,
        &agent,
        &[reached.to_string(), busy.to_string()],
        &[("max_retries", "1"), ("retry_delay_seconds", "3600")],
    )
    .await;
    let (status, body) = get(&app, "/api/campaigns?state=all&agent_id=", tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.0.agent.name", "string"),
            ("data.0.agent.type", "string"),
        ],
    );
    assert_eq!(
        body["data"][0]["agent"],
        json!({"name": "Vera", "type": "OUTBOUND"})
    );
    let (status, body) = act(&app, &me, &campaign, "start").await;
    okay(status, &body);
    assert_eq!(body["data"]["state"], "running");
    let conn = db(&app);
    let contact = |n: &str| -> String {
        conn.query_row(
            "SELECT status FROM campaign_contacts WHERE campaign_id = ?1 AND phone_number = ?2",
            [&campaign, n],
            |r| r.get(0),
        )
        .unwrap()
    };
    wait_until(Duration::from_secs(60), "both numbers dialled", || {
        contact(reached) == "reached" && contact(busy) == "retrying"
    })
    .await;
    let (status, body) = get(&app, &format!("/api/campaigns/{campaign}"), tok).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.agent.name", "string"),
            ("data.agent.type", "string"),
            ("data.progress.success_rate", "number"),
            ("data.runs", "array"),
        ],
    );
    let runs = body["data"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{body}");
    for r in runs {
        has(
            r,
            &[
                ("run_number", "string"),
                ("phone_number", "string"),
                ("status", "string"),
                ("disposition", "string"),
                ("duration_seconds", "integer"),
                ("created_at", "string"),
            ],
        );
    }
    assert!(
        runs[0]["created_at"].as_str() >= runs[1]["created_at"].as_str(),
        "newest first: {body}"
    );
    let by_phone = |n: &str| runs.iter().find(|r| r["phone_number"] == n).unwrap();
    assert_eq!(by_phone(reached)["status"], "completed");
    assert_eq!(by_phone(reached)["duration_seconds"], 20);
    assert_eq!(by_phone(busy)["disposition"], "busy");
    for (action, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("stop", "stopped"),
    ] {
        let (status, body) = act(&app, &me, &campaign, action).await;
        okay(status, &body);
        assert_eq!(body["data"]["state"], state, "{action}");
    }

    // Admin: the users with the first edition's "no filter" values.
    let (_, other) = crate::auth::register(&app, "second@example.com").await;
    let (status, body) = get(
        &app,
        "/api/admin/users?page=1&limit=20&search=&role=all&subscription_tier=all&status=all",
        Some(&admin),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["pagination"]["total"], 3, "{body}");
    let rows = body["data"].as_array().unwrap();
    for row in rows {
        has(
            row,
            &[
                ("current_usage.agents", "integer"),
                ("current_usage.tokens_this_month", "number"),
            ],
        );
    }
    let mine = rows.iter().find(|r| r["id"] == me.id.as_str()).unwrap();
    assert_eq!(mine["current_usage"]["agents"], 1);
    assert_eq!(mine["current_usage"]["agents"], mine["agent_count"]);
    let (_, body) = get(&app, "/api/admin/users?subscription_tier=pro", Some(&admin)).await;
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    let (status, body) = get(&app, "/api/admin/users?status=asleep", Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // One user in full, their limits, the toggle.
    let (status, body) = get(&app, &format!("/api/admin/users/{}", me.id), Some(&admin)).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.user.email", "string"),
            ("data.statistics.total_runs", "integer"),
        ],
    );
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{}/limits", me.id),
        Some(&admin),
        json!({"max_agents": 12}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["max_agents"], 12);
    let (status, body) = post(
        &app,
        &format!("/api/admin/users/{other}/toggle-status"),
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["is_active"], false);
    let (_, body) = get(&app, "/api/admin/users?status=inactive", Some(&admin)).await;
    assert_eq!(body["pagination"]["total"], 1, "{body}");

    // The new admin endpoints: activate, deactivate, edit, dashboard, health.
    let (status, body) = post(
        &app,
        &format!("/api/admin/users/{other}/activate"),
        Some(&admin),
        json!({}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["is_active"], true);
    let (status, body) = post(
        &app,
        &format!("/api/admin/users/{}/deactivate", me.id),
        Some(&admin),
        json!({}),
    )
    .await;
    okay(status, &body);
    assert_eq!(body["data"]["is_active"], false);
    let (status, _) = get(&app, "/api/auth/me", tok).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "deactivation ended the session"
    );
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{other}"),
        Some(&admin),
        json!({"email": "Old.Client@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "EMAIL_TAKEN");
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{other}"),
        Some(&admin),
        json!({"email": "not-an-email", "role": "owner", "max_agents": -1, "password": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut named: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    named.sort();
    assert_eq!(named, ["email", "max_agents", "password", "role"]);
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{other}"),
        Some(&admin),
        json!({"email": " Renamed@Example.com ", "organization_name": "", "role": "enterprise",
               "monthly_token_quota": 5000, "is_active": true}),
    )
    .await;
    okay(status, &body);
    let u = &body["data"];
    assert_eq!(u["email"], "renamed@example.com");
    assert_eq!(u["organization_name"], Value::Null);
    assert_eq!(u["role"], "enterprise");
    assert_eq!(u["monthly_token_quota"], 5000);
    let (status, _) = login(&app, "renamed@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the new email logs in");
    let logged: Vec<String> = conn
        .prepare(
            "SELECT action FROM admin_audit_logs WHERE target_user_id = ?1 AND admin_user_id <> ?1
             ORDER BY rowid",
        )
        .unwrap()
        .query_map([&other], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        logged,
        ["toggle_user_status", "toggle_user_status", "update_user"],
        "the refused edits left no trace"
    );
    let details: Value = conn
        .query_row(
            "SELECT details FROM admin_audit_logs WHERE action = 'update_user' AND target_user_id = ?1",
            [&other],
            |r| r.get::<_, String>(0),
        )
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(details["before"]["email"], "second@example.com");
    assert_eq!(details["changes"]["email"], "renamed@example.com");

    let (status, body) = get(&app, "/api/admin/dashboard", Some(&admin)).await;
    okay(status, &body);
    has(
        &body,
        &[
            ("data.users.by_tier.pro", "integer"),
            ("data.users.by_status.active", "integer"),
            ("data.users.by_status.inactive", "integer"),
            ("data.agents.total", "integer"),
            ("data.total_users", "integer"),
            ("data.runs_this_month", "integer"),
            ("data.tokens_this_month", "number"),
            ("data.system_health.overall_status", "string"),
            ("data.system_health.components", "object"),
        ],
    );
    let d = &body["data"];
    assert_eq!(d["total_users"], 3);
    assert_eq!(d["users"]["by_status"]["inactive"], 1);
    assert_eq!(d["total_agents"], 1);
    assert_eq!(d["runs_this_month"], d["this_month"]["calls"]);
    assert!(
        d["runs_this_month"].as_i64().unwrap() >= 2,
        "the web call and the answered one: {d}"
    );
    for path in [
        "/api/admin/system-health",
        "/api/admin/analytics/system-health",
    ] {
        let (status, body) = get(&app, path, Some(&admin)).await;
        okay(status, &body);
        has(
            &body,
            &[
                ("data.overall_status", "string"),
                ("data.components.database.status", "string"),
                ("data.components.database.message", "string"),
                ("data.components.schema.status", "string"),
                ("data.components.api.status", "string"),
            ],
        );
        assert_eq!(body["data"]["overall_status"], "healthy", "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_admin_cannot_lock_out_themselves_nor_the_last_admin() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, me) = get(&app, "/api/auth/me", Some(&admin)).await;
    let admin_id = me["data"]["id"].as_str().unwrap().to_string();
    for body in [json!({"is_active": false}), json!({"role": "user"})] {
        let (status, answer) = put(
            &app,
            &format!("/api/admin/users/{admin_id}"),
            Some(&admin),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    let (status, _) = post(
        &app,
        &format!("/api/admin/users/{admin_id}/deactivate"),
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An edit form that sends the admin's own unchanged values is fine.
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{admin_id}"),
        Some(&admin),
        json!({"role": "admin", "is_active": true, "organization_name": "Ops"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two admins demoting each other at the same moment: never both.
    let (second, second_id) = crate::auth::register(&app, "second-admin@example.com").await;
    let (status, _) = put(
        &app,
        &format!("/api/admin/users/{second_id}"),
        Some(&admin),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (second_path, first_path) = (
        format!("/api/admin/users/{second_id}"),
        format!("/api/admin/users/{admin_id}"),
    );
    let (a, b) = tokio::join!(
        put(&app, &second_path, Some(&admin), json!({"role": "user"})),
        put(&app, &first_path, Some(&second), json!({"role": "user"})),
    );
    let admins: i64 = db(&app)
        .query_row(
            "SELECT count(*) FROM users WHERE role = 'admin' AND is_active = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(admins, 1, "{a:?} {b:?}");
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes[0], StatusCode::OK, "{a:?} {b:?}");
    assert!(
        [StatusCode::FORBIDDEN, StatusCode::CONFLICT].contains(&codes[1]),
        "{a:?} {b:?}"
    );
    app.stop().await;
}

/// An `OPTIONS` preflight from `origin` for a `POST` with the headers the
/// first edition's web app sends.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url("/api/agents"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

fn cors_headers(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn cors_answers_the_listed_origins_only() {
    let app = TestApp::start_with(|c| {
        c.cors_origins = voxflow::http::cors::OriginList::parse(
            "http://localhost:5173, https://app.example.com",
        )
        .unwrap();
    })
    .await;
    let (token, _) = crate::auth::register(&app, "cors@example.com").await;

    // A listed origin: the preflight allows the method and both headers,
    // with credentials and a max-age.
    let res = preflight(&app, WEB_APP).await;
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(header(&res, "access-control-allow-origin"), WEB_APP);
    assert_eq!(header(&res, "access-control-allow-credentials"), "true");
    let methods = header(&res, "access-control-allow-methods").to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header(&res, "access-control-allow-headers").to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&res, "access-control-max-age"), "3600");
    // Then the request itself, readable by that page.
    let res = app
        .client
        .post(app.url("/api/agents"))
        .header("Origin", WEB_APP)
        .bearer_auth(&token)
        .json(&json!({"name": "Cors", "type": "INBOUND", "use_case": "support", "description": PROMPT}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(header(&res, "access-control-allow-origin"), WEB_APP);
    assert_eq!(header(&res, "access-control-allow-credentials"), "true");
    assert!(header(&res, "access-control-expose-headers").contains("content-disposition"));
    assert!(header(&res, "vary").to_ascii_lowercase().contains("origin"));
    // An error is readable too.
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        "https://app.example.com"
    );

    // An origin not listed gets no Access-Control-* header at all: the
    // preflight meets the usual 405, and the browser refuses the page both
    // the preflight and the answer.
    for origin in ["http://evil.example.com", "http://localhost:5174", "null"] {
        let res = preflight(&app, origin).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{origin}");
        assert!(
            cors_headers(&res).is_empty(),
            "{origin}: {:?}",
            cors_headers(&res)
        );
        let res = app
            .client
            .get(app.url("/api/agents"))
            .header("Origin", origin)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            cors_headers(&res).is_empty(),
            "{origin}: {:?}",
            cors_headers(&res)
        );
        assert!(header(&res, "vary").to_ascii_lowercase().contains("origin"));
    }
    app.stop().await;

    // Closed by default: no origin is listed.
    let app = TestApp::start().await;
    let res = preflight(&app, WEB_APP).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(cors_headers(&res).is_empty(), "{:?}", cors_headers(&res));
    let (status, _) = call(&app, Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}
