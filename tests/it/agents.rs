//! Agents: validation, listing, the agent limit and the service
//! configuration, through the HTTP API of an in-process server. Also the
//! small helpers the call tests share.

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{call, get, post, register};
use crate::common::{after_external_write, TestApp, LOCAL_STAND_INS};

/// A tenant: its session token and user id.
pub struct Tenant {
    pub token: String,
    pub id: String,
}

/// Puts `who` on `tier`, as an admin's change of plan would.
pub async fn set_tier(app: &TestApp, who: &Tenant, tier: &str) {
    db(app)
        .execute(
            "UPDATE users SET subscription_tier = ?2 WHERE id = ?1",
            [&who.id, tier],
        )
        .unwrap();
    after_external_write().await;
}

/// Registers `email` (a free account) and returns its session.
pub async fn tenant(app: &TestApp, email: &str) -> Tenant {
    let (token, id) = register(app, email).await;
    Tenant { token, id }
}

pub const PROMPT: &str = "You are Vera, the front desk of Acme Dental. Book, move and cancel appointments; be brief and friendly.";

/// Creates an agent and returns its id.
pub async fn create_agent(app: &TestApp, who: &Tenant, name: &str) -> String {
    let (status, body) = post(
        app,
        "/api/agents",
        Some(&who.token),
        json!({ "name": name, "type": "INBOUND", "use_case": "appointments", "description": PROMPT }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

/// A connection to the server's database, for what no endpoint does
/// (changing a tenant's limits without an admin login, reading tables).
pub fn db(app: &TestApp) -> rusqlite::Connection {
    voxflow::db::open_connection(&app.db_path(), false).expect("open database")
}

fn field_names(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn agents_are_validated_created_listed_updated_and_deleted() {
    let app = TestApp::start().await;
    let t = tenant(&app, "owner@example.com").await;

    // Every bad field is named at once.
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({ "name": "   ", "type": "SIDEWAYS", "description": "too short" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert_eq!(
        field_names(&body),
        ["name", "type", "use_case", "description"]
    );
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({ "name": "Bell\u{7}", "type": "INBOUND", "use_case": "x", "description": "Ten chars and a NUL \u{0}" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(field_names(&body), ["name", "description"]);
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({ "name": "x".repeat(256), "type": "INBOUND", "use_case": "x", "description": "d".repeat(5001) }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(field_names(&body), ["name", "description"]);

    // Created trimmed, the type in capitals, line breaks kept.
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({ "name": "  Front desk ", "type": "inbound", "use_case": " appointments ",
                "description": "  Book visits.\r\n\tBe brief and kind.  " }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let a = &body["data"];
    assert!(crate::common::is_uuid_v4(a["id"].as_str().unwrap()));
    assert_eq!(a["name"], "Front desk");
    assert_eq!(a["type"], "INBOUND");
    assert_eq!(a["use_case"], "appointments");
    assert_eq!(a["description"], "Book visits.\n\tBe brief and kind.");
    assert_eq!(a["user_id"], t.id.as_str());
    assert_eq!(a["total_runs"], 0);
    assert!(crate::common::is_rfc3339_utc(
        a["created_at"].as_str().unwrap()
    ));
    assert_eq!(
        a["limits_info"],
        json!({ "current": 1, "max": 2, "remaining": 1 })
    );
    let first = a["id"].as_str().unwrap().to_string();

    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({ "name": "Reminder 100%", "type": "OUTBOUND", "use_case": "Payment_reminders",
                "description": "Remind customers of unpaid invoices." }),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        body["data"]["limits_info"],
        json!({ "current": 2, "max": 2, "remaining": 0 })
    );
    let second = body["data"]["id"].as_str().unwrap().to_string();

    // Listing: newest first, paginated, filtered, searched.
    let (status, body) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], second.as_str());
    assert_eq!(body["data"][1]["id"], first.as_str());
    assert_eq!(
        body["pagination"],
        json!({ "page": 1, "limit": 20, "total": 2, "pages": 1 })
    );
    let (_, body) = get(&app, "/api/agents?limit=1&page=2", Some(&t.token)).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["id"], first.as_str());
    assert_eq!(body["pagination"]["pages"], 2);
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = get(&app, "/api/agents?type=OUTBOUND", Some(&t.token)).await;
    assert_eq!(ids(&body), [second.as_str()]);
    let (_, body) = get(&app, "/api/agents?search=APPOINT", Some(&t.token)).await;
    assert_eq!(ids(&body), [first.as_str()]);
    let (_, body) = get(&app, "/api/agents?search=desk", Some(&t.token)).await;
    assert_eq!(ids(&body), [first.as_str()]);
    // Wildcards are literal: % matches only the name holding a %, _ only
    // the use case holding an _.
    let (_, body) = get(&app, "/api/agents?search=%25", Some(&t.token)).await;
    assert_eq!(ids(&body), [second.as_str()]);
    let (_, body) = get(&app, "/api/agents?search=_", Some(&t.token)).await;
    assert_eq!(ids(&body), [second.as_str()]);
    let (status, _) = get(&app, "/api/agents?type=SIDEWAYS", Some(&t.token)).await;
    assert_eq!(status, 400);
    let (status, _) = get(&app, "/api/agents?limit=101", Some(&t.token)).await;
    assert_eq!(status, 400);

    // One agent; a partial update; a bad update changes nothing.
    let (status, body) = get(&app, &format!("/api/agents/{first}"), Some(&t.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["name"], "Front desk");
    let (status, body) = call(
        &app,
        Method::PUT,
        &format!("/api/agents/{first}"),
        Some(&t.token),
        Some(json!({ "name": "Reception", "type": "OUTBOUND" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Reception");
    assert_eq!(body["data"]["type"], "OUTBOUND");
    assert_eq!(body["data"]["use_case"], "appointments");
    let (status, body) = call(
        &app,
        Method::PUT,
        &format!("/api/agents/{first}"),
        Some(&t.token),
        Some(json!({ "name": "Fine", "description": "short" })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(field_names(&body), ["description"]);
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/agents/{first}"),
        Some(&t.token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, body) = get(&app, &format!("/api/agents/{first}"), Some(&t.token)).await;
    assert_eq!(body["data"]["name"], "Reception");

    // Deleted: gone, and its slot free again.
    let (status, body) = call(
        &app,
        Method::DELETE,
        &format!("/api/agents/{first}"),
        Some(&t.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&app, &format!("/api/agents/{first}"), Some(&t.token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    let (_, body) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(ids(&body), [second.as_str()]);

    // Each change is in the audit log, by and about the tenant.
    let actions: Vec<String> = db(&app)
        .prepare("SELECT action FROM admin_audit_logs WHERE admin_user_id = ?1 AND target_user_id = ?1 ORDER BY created_at, rowid")
        .unwrap()
        .query_map([&t.id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        actions,
        [
            "create_agent",
            "create_agent",
            "update_agent",
            "delete_agent"
        ]
    );

    // Without a session: 401.
    let (status, _) = call(&app, Method::GET, "/api/agents", None, None).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_agent_limit_answers_403_with_the_counts_and_an_upgrade() {
    let app = TestApp::start().await;
    let t = tenant(&app, "free@example.com").await;
    create_agent(&app, &t, "One").await;
    create_agent(&app, &t, "Two").await;

    let third =
        json!({ "name": "Three", "type": "OUTBOUND", "use_case": "sales", "description": PROMPT });
    let (status, body) = post(&app, "/api/agents", Some(&t.token), third.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "AGENT_LIMIT_REACHED");
    assert_eq!(
        body["message"],
        "Agent limit reached. Current: 2, Max: 2. Please upgrade your plan to create more agents."
    );
    assert_eq!(
        body["limits_info"],
        json!({ "current": 2, "max": 2, "remaining": 0 })
    );
    assert_eq!(body["upgrade"]["current_tier"], "free");
    assert_eq!(body["upgrade"]["suggested_tier"], "pro");
    assert_eq!(body["upgrade"]["max_agents"], 10);
    assert_eq!(body["upgrade"]["monthly_price"], 29);
    let (_, list) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(list["pagination"]["total"], 2, "nothing was inserted");

    // The counts are the real ones: an admin lowered the limit below what
    // the tenant already has.
    db(&app)
        .execute(
            "UPDATE users SET subscription_tier = 'pro', max_agents = 1 WHERE id = ?1",
            [&t.id],
        )
        .unwrap();
    after_external_write().await;
    let (status, body) = post(&app, "/api/agents", Some(&t.token), third.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "Agent limit reached. Current: 2, Max: 1. Please upgrade your plan to create more agents."
    );
    assert_eq!(body["upgrade"]["suggested_tier"], "enterprise");
    assert_eq!(body["upgrade"]["max_agents"], 100);
    assert_eq!(body["upgrade"]["monthly_price"], 299);

    // Enterprise is told it is on the top tier.
    db(&app)
        .execute(
            "UPDATE users SET subscription_tier = 'enterprise', max_agents = 2 WHERE id = ?1",
            [&t.id],
        )
        .unwrap();
    after_external_write().await;
    let (status, body) = post(&app, "/api/agents", Some(&t.token), third.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(body["upgrade"]["suggested_tier"], Value::Null);
    assert!(
        body["upgrade"]["message"]
            .as_str()
            .unwrap()
            .contains("top tier"),
        "{body}"
    );

    // Raised limit: allowed again, with the new counts.
    db(&app)
        .execute("UPDATE users SET max_agents = 3 WHERE id = ?1", [&t.id])
        .unwrap();
    after_external_write().await;
    let (status, body) = post(&app, "/api/agents", Some(&t.token), third).await;
    assert_eq!(status, 201);
    assert_eq!(
        body["data"]["limits_info"],
        json!({ "current": 3, "max": 3, "remaining": 0 })
    );
    app.stop().await;
}

#[tokio::test]
async fn the_service_configuration_has_defaults_and_validates_providers() {
    // The operator lists the air-gapped install's own LLM server: private
    // addresses are refused unless listed.
    let app = TestApp::start_with(|c| {
        c.llm_allowed_urls = Some(format!("{LOCAL_STAND_INS},http://10.0.0.5:8000/v1"));
    })
    .await;
    let t = tenant(&app, "config@example.com").await;
    let other = tenant(&app, "other@example.com").await;

    let (status, body) = get(&app, "/api/config/service", Some(&t.token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({
            "llm_provider": "groq", "llm_model": "llama-3.3-70b-versatile", "llm_base_url": null,
            "tts_provider": "deepgram", "tts_voice": "aura-2-helena-en",
            "stt_provider": "deepgram", "stt_model": "nova-3-general", "updated_at": null,
        })
    );

    // A partial save keeps the rest.
    let (status, body) = post(
        &app,
        "/api/config/service",
        Some(&t.token),
        json!({ "llm_model": "llama-3.1-8b-instant" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["llm_model"], "llama-3.1-8b-instant");
    assert_eq!(body["data"]["tts_voice"], "aura-2-helena-en");
    assert!(crate::common::is_rfc3339_utc(
        body["data"]["updated_at"].as_str().unwrap()
    ));
    let (_, body) = get(&app, "/api/config/service", Some(&t.token)).await;
    assert_eq!(body["data"]["llm_model"], "llama-3.1-8b-instant");

    // Refusals, each naming its field; nothing is saved.
    for (bad, field) in [
        (json!({ "llm_provider": "openai" }), "llm_provider"),
        (
            json!({ "llm_provider": "openai_compatible" }),
            "llm_base_url",
        ),
        (
            json!({ "llm_provider": "openai_compatible", "llm_base_url": "file:///etc/passwd" }),
            "llm_base_url",
        ),
        (json!({ "llm_model": "" }), "llm_model"),
        (json!({ "llm_model": "llama 3; DROP" }), "llm_model"),
        (json!({ "tts_provider": "elevenlabs" }), "tts_provider"),
        (json!({ "stt_model": "m".repeat(101) }), "stt_model"),
    ] {
        let (status, body) = post(&app, "/api/config/service", Some(&t.token), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(field_names(&body), [field], "{bad}");
    }
    let (_, body) = get(&app, "/api/config/service", Some(&t.token)).await;
    assert_eq!(body["data"]["llm_provider"], "groq");

    // An air-gapped install's own server.
    let (status, body) = post(
        &app,
        "/api/config/service",
        Some(&t.token),
        json!({ "llm_provider": "openai_compatible", "llm_base_url": "http://10.0.0.5:8000/v1/", "llm_model": "qwen2.5:7b" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["llm_provider"], "openai_compatible");
    assert_eq!(body["data"]["llm_base_url"], "http://10.0.0.5:8000/v1");
    assert_eq!(body["data"]["llm_model"], "qwen2.5:7b");

    // Per tenant: the other one still has the defaults.
    let (_, body) = get(&app, "/api/config/service", Some(&other.token)).await;
    assert_eq!(body["data"]["llm_provider"], "groq");
    assert_eq!(body["data"]["updated_at"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn voice_fields_are_checked_saved_and_cleared() {
    let app = TestApp::start().await;
    let t = tenant(&app, "voicefields@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    let (status, body) = get(&app, &format!("/api/agents/{agent}"), Some(&t.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["max_call_seconds"], 600, "the default");
    assert_eq!(body["data"]["first_message"], Value::Null);
    for (field, value) in [
        ("max_call_seconds", json!(5)),
        ("max_call_seconds", json!(20000)),
        ("first_message", json!("x".repeat(1001))),
        ("voice", json!("a\u{7}b")),
        ("language", json!("x".repeat(21))),
    ] {
        let (status, body) = call(
            &app,
            reqwest::Method::PUT,
            &format!("/api/agents/{agent}"),
            Some(&t.token),
            Some(json!({ field: value })),
        )
        .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let path = format!("/api/agents/{agent}");
    let put = |v: Value| call(&app, reqwest::Method::PUT, &path, Some(&t.token), Some(v));
    let (status, body) =
        put(json!({"first_message": " Hi {{first_name}}! ", "max_call_seconds": 90})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["first_message"], "Hi {{first_name}}!");
    assert_eq!(body["data"]["max_call_seconds"], 90);
    // An empty text clears it: the default greeting again.
    let (status, body) = put(json!({"first_message": ""})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["first_message"], Value::Null);
    assert_eq!(body["data"]["max_call_seconds"], 90, "untouched");
    app.stop().await;
}

#[tokio::test]
async fn a_web_call_is_ended_and_billed_at_its_agent_s_time_limit() {
    let app = TestApp::start_with(|c| {
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.run_idle_timeout_secs = 120;
    })
    .await;
    let t = tenant(&app, "limit@example.com").await;
    let agent = create_agent(&app, &t, "Brief").await;
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/agents/{agent}"),
        Some(&t.token),
        Some(json!({"max_call_seconds": 10})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(
        &app,
        "/api/calls/web/start",
        Some(&t.token),
        json!({"agent_id": agent}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let run = body["data"]["run_id"].as_str().unwrap().to_string();
    let mut row = (String::new(), None, 0, 0.0);
    for _ in 0..300 {
        row = db(&app)
            .query_row(
                "SELECT status, disposition, duration_seconds, groq_tokens FROM agent_runs WHERE id = ?1",
                [&run],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?, r.get::<_, f64>(3)?)),
            )
            .unwrap();
        if row.0 != "in_progress" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        row,
        (
            "completed".to_string(),
            Some("max_duration_exceeded".to_string()),
            10,
            0.13
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn the_agent_list_follows_every_change_at_once_though_it_is_cached() {
    let app = TestApp::start().await;
    let t = tenant(&app, "cached@example.com").await;
    let other = tenant(&app, "neighbour@example.com").await;
    let names = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let vera = create_agent(&app, &t, "Vera").await;
    // Asked twice: the second answer may come from the cache.
    for _ in 0..2 {
        let (status, list) = get(&app, "/api/agents", Some(&t.token)).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(names(&list), ["Vera"]);
    }
    // Each acknowledged write is in the very next list.
    create_agent(&app, &t, "Otto").await;
    let (_, list) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(names(&list), ["Otto", "Vera"]);
    assert_eq!(list["pagination"]["total"], 2);
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/agents/{vera}"),
        Some(&t.token),
        Some(json!({ "name": "Vera II" })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(names(&list), ["Otto", "Vera II"]);
    let (_, page) = get(&app, "/api/agents?limit=1&page=2", Some(&t.token)).await;
    assert_eq!(names(&page), ["Vera II"]);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/agents/{vera}"),
        Some(&t.token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(names(&list), ["Otto"]);
    // Nobody is served another tenant's cached page.
    let (_, theirs) = get(&app, "/api/agents", Some(&other.token)).await;
    assert!(names(&theirs).is_empty(), "{theirs}");

    // A change made behind the server's back (an operator's sqlite3) shows
    // once the server has noticed the other process's commit.
    db(&app)
        .execute(
            "UPDATE agents SET name = 'Otto (renamed)' WHERE user_id = ?1",
            [&t.id],
        )
        .unwrap();
    after_external_write().await;
    let (_, list) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(names(&list), ["Otto (renamed)"]);
    app.stop().await;
}

#[tokio::test]
async fn a_cached_session_ends_with_a_deactivation_made_in_the_file() {
    let app = TestApp::start().await;
    let t = tenant(&app, "leaving@example.com").await;
    for _ in 0..2 {
        let (status, _) = get(&app, "/api/agents", Some(&t.token)).await;
        assert_eq!(status, 200);
    }
    db(&app)
        .execute("UPDATE users SET is_active = 0 WHERE id = ?1", [&t.id])
        .unwrap();
    after_external_write().await;
    let (status, body) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "ACCOUNT_DEACTIVATED");
    app.stop().await;
}

#[tokio::test]
async fn a_session_unused_for_over_a_minute_is_refreshed_by_its_next_request() {
    let app = TestApp::start().await;
    let t = tenant(&app, "returning@example.com").await;
    let last_used = || -> f64 {
        db(&app)
            .query_row(
                "SELECT (julianday('now') - julianday(last_used_at)) * 86400 FROM sessions WHERE user_id = ?1",
                [&t.id],
                |r| r.get(0),
            )
            .unwrap()
    };
    db(&app)
        .execute(
            "UPDATE sessions SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-120 seconds') WHERE user_id = ?1",
            [&t.id],
        )
        .unwrap();
    after_external_write().await;
    assert!(last_used() > 100.0);
    let (status, _) = get(&app, "/api/agents", Some(&t.token)).await;
    assert_eq!(status, 200);
    // The refresh is written beside the request, not before its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while last_used() > 100.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never refreshed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}
