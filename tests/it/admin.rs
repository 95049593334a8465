//! The admin area through the API: the user detail (never key material),
//! all agents, tiers, the audit log, analytics figures against data made
//! here, and the CSV exports.

use reqwest::StatusCode;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use crate::agents::{create_agent, db, tenant, Tenant};
use crate::auth::{admin_token, delete, get, post, put, register};
use crate::common::{civil_date, utc_today, TestApp, ADMIN_EMAIL};

const GROQ_KEY: &str = "gsk_AdminViewNeverSees000000000Zq7w";

/// Puts `user_id` on `tier` through the limits endpoint (the subscription follows).
async fn set_tier(app: &TestApp, admin: &str, user_id: &str, tier: &str) {
    let (status, body) = put(
        app,
        &format!("/api/admin/users/{user_id}/limits"),
        Some(admin),
        json!({ "subscription_tier": tier }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A run of `secs` seconds on `agent_id`, written in progress and then
/// completed with an UPDATE so that the token and usage triggers run.
fn completed_run(conn: &Connection, agent_id: &str, secs: i64) -> String {
    let id: String = conn
        .query_row(
            "INSERT INTO agent_runs (run_number, agent_id, type, status, duration_seconds)
             VALUES (?1, ?2, 'WEB_CALL', 'in_progress', ?3) RETURNING id",
            params![format!("WR-T-{}", uuid::Uuid::new_v4()), agent_id, secs],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE agent_runs SET status = 'completed',
                completed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        [&id],
    )
    .unwrap();
    id
}

/// The UTC date `n` days from today (negative: in the past).
fn day(n: i64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    civil_date(secs.div_euclid(86_400) + n)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const ADMIN_GETS: [&str; 12] = [
    "/api/admin/users",
    "/api/admin/users/{id}",
    "/api/admin/agents",
    "/api/admin/subscription-tiers",
    "/api/admin/audit-logs",
    "/api/admin/analytics/overview",
    "/api/admin/analytics/user-growth?period=7d",
    "/api/admin/analytics/usage",
    "/api/admin/analytics/revenue",
    "/api/admin/analytics/system-health",
    "/api/admin/analytics/export/users",
    "/api/admin/analytics/export/audit",
];

#[tokio::test]
async fn every_admin_view_refuses_non_admins() {
    let app = TestApp::start().await;
    let (user, user_id) = register(&app, "plain@example.com").await;
    for path in ADMIN_GETS {
        let path = path.replace("{id}", &user_id);
        let (status, body) = get(&app, &path, Some(&user)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["success"], false, "{path}");
        let (status, _) = get(&app, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The admin gets every one of them.
    let admin = admin_token(&app).await;
    for path in ADMIN_GETS {
        let path = path.replace("{id}", &user_id);
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn user_detail_shows_the_account_but_never_key_material() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let t = tenant(&app, "detail@example.com").await;
    let (status, body) = post(
        &app,
        "/api/api-keys/groq",
        Some(&t.token),
        json!({ "api_key": GROQ_KEY }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let agent = create_agent(&app, &t, "Vera").await;
    let conn = db(&app);
    for _ in 0..21 {
        completed_run(&conn, &agent, 60);
    }
    completed_run(&conn, &agent, 15);
    set_tier(&app, &admin, &t.id, "pro").await;

    let res = app
        .client
        .get(app.url(&format!("/api/admin/users/{}", t.id)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(GROQ_KEY), "the key leaks: {text}");
    assert!(
        !text.contains(&GROQ_KEY[GROQ_KEY.len() - 4..]),
        "the key's last four leak: {text}"
    );
    assert!(!text.contains("api_key_encrypted") && !text.contains("auth_tag"));
    let d: Value = serde_json::from_str(&text).unwrap();
    let d = &d["data"];
    assert_eq!(d["user"]["email"], "detail@example.com");
    assert_eq!(d["user"]["subscription_tier"], "pro");
    assert!(d["user"].get("password_hash").is_none());
    assert_eq!(d["statistics"]["agent_count"], 1);
    assert_eq!(d["statistics"]["total_runs"], 22);
    assert_eq!(d["statistics"]["total_duration_seconds"], 21 * 60 + 15);
    assert_eq!(f(&d["statistics"]["total_tokens_used"]), 16.58); // 21 × 0.78 + 0.20
    assert_eq!(d["agents"].as_array().unwrap().len(), 1);
    assert_eq!(d["agents"][0]["id"], agent.as_str());
    let runs = d["recent_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 20, "only the last 20 runs");
    assert_eq!(runs[0]["duration_seconds"], 15, "newest first");
    assert_eq!(runs[0]["agent_name"], "Vera");
    let keys = d["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["provider"], "groq");
    assert_eq!(keys[0]["is_active"], true);
    let mut fields: Vec<&str> = keys[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "is_active", "last_used_at", "provider"]
    );
    assert_eq!(d["subscription"]["plan"], "pro");
    assert_eq!(f(&d["subscription"]["monthly_price"]), 29.0);
    assert_eq!(d["usage"]["calls_this_month"], 22);
    assert_eq!(f(&d["usage"]["tokens_used_this_month"]), 16.58);
    // The tier change brought pro's quota.
    assert_eq!(d["usage"]["monthly_token_quota"], 50_000);
    assert_eq!(f(&d["usage"]["tokens_remaining"]), 49_983.42);

    let (status, body) = get(
        &app,
        "/api/admin/users/6f1c2a0e-5b7d-4c3e-9a8b-1d2e3f4a5b6c",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["success"], false);
    let (status, body) = get(&app, "/api/admin/users/not-a-uuid", Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.stop().await;
}

/// The user's `(max_agents, monthly_token_quota, subscription_tier)` as the
/// limits endpoint leaves them.
async fn limits(app: &TestApp, admin: &str, user_id: &str, body: Value) -> (i64, i64, String) {
    let (status, body) = put(
        app,
        &format!("/api/admin/users/{user_id}/limits"),
        Some(admin),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let u = &body["data"];
    (
        u["max_agents"].as_i64().unwrap(),
        u["monthly_token_quota"].as_i64().unwrap(),
        u["subscription_tier"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_tier_change_applies_the_tiers_limits_unless_the_request_sets_them() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, id) = register(&app, "tiered@example.com").await;

    let got = limits(&app, &admin, &id, json!({ "subscription_tier": "pro" })).await;
    assert_eq!(got, (10, 50_000, "pro".into()));
    let got = limits(
        &app,
        &admin,
        &id,
        json!({ "subscription_tier": "enterprise", "max_agents": 3 }),
    )
    .await;
    assert_eq!(got, (3, 1_000_000, "enterprise".into()), "max_agents wins");
    let got = limits(
        &app,
        &admin,
        &id,
        json!({ "subscription_tier": "free", "monthly_token_quota": 777 }),
    )
    .await;
    assert_eq!(got, (2, 777, "free".into()), "the quota wins");
    // Limits set by hand stay when the tier named is the one the user has.
    let got = limits(&app, &admin, &id, json!({ "max_agents": 9 })).await;
    assert_eq!(got, (9, 777, "free".into()));
    let got = limits(&app, &admin, &id, json!({ "subscription_tier": "free" })).await;
    assert_eq!(
        got,
        (9, 777, "free".into()),
        "no change of tier, no new limits"
    );

    let body = audit(
        &app,
        &admin,
        &format!("?target_user_id={id}&action=update_user_limits&limit=100"),
    )
    .await;
    let first_change = body["data"].as_array().unwrap().last().unwrap();
    assert_eq!(
        first_change["details"]["changes"]["max_agents"], 10,
        "the audit row records the limits the tier brought"
    );
    assert_eq!(first_change["details"]["before"]["max_agents"], 2);
    app.stop().await;
}

#[tokio::test]
async fn all_agents_with_their_owners_and_filters() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let ann = tenant(&app, "ann@example.com").await;
    let bob = tenant(&app, "bob@example.com").await;
    let a1 = create_agent(&app, &ann, "Front desk").await;
    create_agent(&app, &ann, "Night line").await;
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&bob.token),
        json!({ "name": "Sales caller", "type": "OUTBOUND", "use_case": "sales 100%",
                "description": "You call leads and book demos, politely." }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = get(&app, "/api/admin/agents?limit=2", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pagination"]["total"], 3);
    assert_eq!(body["pagination"]["pages"], 2);
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][0]["name"], "Sales caller", "newest first");
    assert_eq!(body["data"][0]["owner"]["email"], "bob@example.com");
    assert_eq!(body["data"][0]["owner"]["id"], bob.id.as_str());

    let names = |b: &Value| -> Vec<String> {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = get(
        &app,
        &format!("/api/admin/agents?user_id={}", ann.id),
        Some(&admin),
    )
    .await;
    assert_eq!(names(&body), ["Night line", "Front desk"]);
    let (_, body) = get(&app, "/api/admin/agents?type=outbound", Some(&admin)).await;
    assert_eq!(names(&body), ["Sales caller"]);
    let (_, body) = get(&app, "/api/admin/agents?search=ann%40example", Some(&admin)).await;
    assert_eq!(
        body["pagination"]["total"], 2,
        "search covers the owner's email"
    );
    let (_, body) = get(&app, "/api/admin/agents?search=100%25", Some(&admin)).await;
    assert_eq!(names(&body), ["Sales caller"]);
    let (_, body) = get(&app, "/api/admin/agents?search=night", Some(&admin)).await;
    assert_eq!(names(&body), ["Night line"]);
    assert_ne!(body["data"][0]["id"], a1.as_str());

    for (q, field) in [
        ("type=SIDEWAYS", "type"),
        ("user_id=42", "user_id"),
        ("limit=101", "limit"),
    ] {
        let (status, body) = get(&app, &format!("/api/admin/agents?{q}"), Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{q}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn tiers_revenue_and_overview_add_up() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, free) = register(&app, "free@example.com").await;
    let (_, pro1) = register(&app, "pro1@example.com").await;
    let (_, pro2) = register(&app, "pro2@example.com").await;
    let (_, ent) = register(&app, "ent@example.com").await;
    set_tier(&app, &admin, &pro1, "pro").await;
    set_tier(&app, &admin, &pro2, "pro").await;
    set_tier(&app, &admin, &ent, "enterprise").await;
    let conn = db(&app);
    // A cancelled subscription earns nothing.
    conn.execute(
        "UPDATE subscriptions SET status = 'cancelled' WHERE user_id = ?1",
        [&pro2],
    )
    .unwrap();
    conn.execute("UPDATE users SET is_active = 0 WHERE id = ?1", [&free])
        .unwrap();

    let (status, body) = get(&app, "/api/admin/subscription-tiers", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tiers = body["data"].as_array().unwrap();
    let tier = |name: &str| tiers.iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(tier("free")["user_count"], 1);
    assert_eq!(tier("pro")["user_count"], 2);
    assert_eq!(tier("enterprise")["user_count"], 2, "the admin and ent");
    assert_eq!(tier("pro")["monthly_price"], 29);
    assert_eq!(tier("pro")["max_agents"], 10);
    assert_eq!(tier("enterprise")["monthly_token_quota"], 1_000_000);

    // Active: admin 299 + pro1 29 + ent 299 + free 0.
    let (status, body) = get(&app, "/api/admin/analytics/revenue", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["data"];
    assert_eq!(f(&r["mrr"]), 627.0);
    assert_eq!(f(&r["arr"]), 7524.0);
    assert_eq!(r["active_subscriptions"], 4);
    let plan = |name: &str| {
        r["by_plan"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plan"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(f(&plan("free")["mrr"]), 0.0);
    assert_eq!(plan("free")["active_subscriptions"], 1);
    assert_eq!(f(&plan("pro")["mrr"]), 29.0);
    assert_eq!(plan("pro")["active_subscriptions"], 1);
    assert_eq!(f(&plan("enterprise")["mrr"]), 598.0);

    let t = tenant(&app, "runner@example.com").await;
    let agent = create_agent(&app, &t, "Runner").await;
    completed_run(&conn, &agent, 60);
    completed_run(&conn, &agent, 15);
    conn.execute(
        "INSERT INTO agent_runs (run_number, agent_id, type, status) VALUES ('WR-T-LIVE', ?1, 'WEB_CALL', 'in_progress')",
        [&agent],
    )
    .unwrap();

    let (status, body) = get(&app, "/api/admin/analytics/overview", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let o = &body["data"];
    assert_eq!(o["users"]["total"], 6);
    assert_eq!(o["users"]["active"], 5);
    assert_eq!(
        o["users"]["by_tier"],
        json!({ "free": 2, "pro": 2, "enterprise": 2 })
    );
    assert_eq!(
        o["users"]["by_role"],
        json!({ "admin": 1, "user": 5, "enterprise": 0 })
    );
    assert_eq!(o["agents"]["total"], 1);
    assert_eq!(o["runs"]["total"], 3);
    assert_eq!(o["runs"]["completed"], 2);
    assert_eq!(o["runs"]["in_progress"], 1);
    assert_eq!(f(&o["this_month"]["tokens"]), 0.98);
    assert_eq!(o["this_month"]["calls"], 2);
    assert_eq!(f(&o["mrr"]), 627.0);

    let (status, body) = get(&app, "/api/admin/analytics/system-health", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let h = &body["data"];
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"]["quick_check"], "ok");
    assert_eq!(
        h["database"]["schema_version"],
        h["database"]["expected_schema_version"]
    );
    assert!(h["database"]["schema_version"].as_i64().unwrap() >= 7);
    let size = std::fs::metadata(app.db_path()).unwrap().len();
    assert_eq!(h["database"]["size_bytes"].as_u64().unwrap(), size);
    assert!(h["database"]["wal_size_bytes"].is_u64());
    assert_eq!(h["runs_in_progress"], 1);
    assert!(h["uptime_seconds"].is_u64());
    app.stop().await;
}

#[tokio::test]
async fn user_growth_is_zero_filled_and_checks_the_period() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, a) = register(&app, "a@example.com").await;
    let (_, b) = register(&app, "b@example.com").await;
    register(&app, "c@example.com").await;
    let conn = db(&app);
    let three_days_ago = day(-3);
    conn.execute(
        "UPDATE users SET created_at = ?2 || 'T10:00:00.000Z' WHERE id = ?1",
        params![a, three_days_ago],
    )
    .unwrap();
    conn.execute(
        "UPDATE users SET created_at = ?2 || 'T10:00:00.000Z' WHERE id = ?1",
        params![b, day(-400)],
    )
    .unwrap();

    let (status, body) = get(
        &app,
        "/api/admin/analytics/user-growth?period=7d",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = body["data"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 7);
    let dates: Vec<String> = (0..7).rev().map(|d| day(-d)).collect();
    let got: Vec<&str> = series.iter().map(|s| s["date"].as_str().unwrap()).collect();
    assert_eq!(got, dates);
    assert_eq!(*got.last().unwrap(), utc_today());
    let new: Vec<i64> = series
        .iter()
        .map(|s| s["new_users"].as_i64().unwrap())
        .collect();
    // admin and c today, a three days ago, b before the period.
    assert_eq!(new, [0, 0, 0, 1, 0, 0, 2]);
    assert_eq!(body["data"]["new_users"], 3);
    assert_eq!(series[0]["total_users"], 1, "b counted before the period");
    assert_eq!(series[6]["total_users"], 4);

    for (period, days) in [("30d", 30), ("90d", 90), ("1y", 365)] {
        let (status, body) = get(
            &app,
            &format!("/api/admin/analytics/user-growth?period={period}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["series"].as_array().unwrap().len(), days);
    }
    let (_, body) = get(
        &app,
        "/api/admin/analytics/user-growth?period=1y",
        Some(&admin),
    )
    .await;
    assert_eq!(body["data"]["new_users"], 3, "b is older than a year");
    assert_eq!(body["data"]["series"][0]["total_users"], 1);
    for bad in ["2w", "7", "", "1Y"] {
        let (status, body) = get(
            &app,
            &format!("/api/admin/analytics/user-growth?period={bad}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "period");
    }
    app.stop().await;
}

#[tokio::test]
async fn usage_analytics_sum_the_days_and_rank_users() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let big = tenant(&app, "big@example.com").await;
    let small = tenant(&app, "small@example.com").await;
    tenant(&app, "idle@example.com").await;
    let conn = db(&app);
    let ab = create_agent(&app, &big, "Big").await;
    let asm = create_agent(&app, &small, "Small").await;
    for _ in 0..3 {
        completed_run(&conn, &ab, 60);
    }
    completed_run(&conn, &asm, 15);
    // Older usage: five days ago, inside the 30-day window but not today.
    conn.execute(
        "INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds)
         VALUES (?1, ?2, 1.5, 3, 120)",
        params![small.id, day(-5)],
    )
    .unwrap();

    let (status, body) = get(&app, "/api/admin/analytics/usage", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let daily = body["data"]["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 30);
    assert_eq!(daily[29]["date"], utc_today());
    assert_eq!(f(&daily[29]["tokens"]), 2.54);
    assert_eq!(daily[29]["calls"], 4);
    assert_eq!(daily[29]["duration_seconds"], 195);
    assert_eq!(daily[24]["date"], day(-5));
    assert_eq!(daily[24]["calls"], 3);
    assert_eq!(f(&daily[24]["tokens"]), 1.5);
    assert_eq!(daily[10]["calls"], 0, "zero-filled");

    let top = body["data"]["top_users"].as_array().unwrap();
    let this_month_small = if day(-5)[..7] == utc_today()[..7] {
        1.7
    } else {
        0.2
    };
    let emails: Vec<&str> = top.iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(
        emails,
        ["big@example.com", "small@example.com"],
        "idle users are left out"
    );
    assert_eq!(f(&top[0]["tokens"]), 2.34);
    assert_eq!(top[0]["calls"], 3);
    assert_eq!(f(&top[1]["tokens"]), this_month_small);
    app.stop().await;
}

async fn audit(app: &TestApp, admin: &str, query: &str) -> Value {
    let (status, body) = get(app, &format!("/api/admin/audit-logs{query}"), Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn actions(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn audit_log_is_newest_first_and_filtered() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (_, me) = crate::auth::login(&app, ADMIN_EMAIL, crate::common::ADMIN_PASSWORD).await;
    let admin_id = me["data"]["user"]["id"].as_str().unwrap().to_string();
    let (_, u1) = register(&app, "one@example.com").await;
    let (_, u2) = register(&app, "two@example.com").await;
    put(
        &app,
        &format!("/api/admin/users/{u1}/limits"),
        Some(&admin),
        json!({ "max_agents": 7 }),
    )
    .await;
    set_tier(&app, &admin, &u2, "pro").await;
    let (status, _) = post(
        &app,
        &format!("/api/admin/users/{u1}/toggle-status"),
        Some(&admin),
        json!({ "is_active": false }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = delete(&app, &format!("/api/admin/users/{u2}"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);

    let all = audit(&app, &admin, "").await;
    assert_eq!(
        actions(&all),
        [
            "delete_user",
            "toggle_user_status",
            "update_user_limits",
            "update_user_subscription",
            "update_user_limits"
        ]
    );
    assert_eq!(all["pagination"]["total"], 5);
    let first = &all["data"][0];
    assert_eq!(first["admin_email"], ADMIN_EMAIL);
    assert_eq!(first["admin_user_id"], admin_id.as_str());
    assert!(
        first["target_user_id"].is_null(),
        "the deleted user's id is gone"
    );
    assert!(first["target_email"].is_null());
    assert_eq!(
        first["details"]["email"], "two@example.com",
        "details are JSON"
    );
    let toggle = &all["data"][1];
    assert_eq!(toggle["target_email"], "one@example.com");
    assert_eq!(toggle["details"]["to"], false);

    let body = audit(&app, &admin, "?action=update_user_limits").await;
    assert_eq!(body["pagination"]["total"], 2);
    let body = audit(&app, &admin, &format!("?target_user_id={u1}")).await;
    assert_eq!(actions(&body), ["toggle_user_status", "update_user_limits"]);
    let body = audit(
        &app,
        &admin,
        &format!("?admin_user_id={admin_id}&action=toggle_user_status"),
    )
    .await;
    assert_eq!(body["pagination"]["total"], 1);
    let body = audit(&app, &admin, &format!("?admin_user_id={u1}")).await;
    assert_eq!(body["pagination"]["total"], 0);
    let today = utc_today();
    let body = audit(&app, &admin, &format!("?date_from={today}&date_to={today}")).await;
    assert_eq!(body["pagination"]["total"], 5);
    let body = audit(&app, &admin, &format!("?date_to={}", day(-1))).await;
    assert_eq!(body["pagination"]["total"], 0);
    let body = audit(&app, &admin, &format!("?date_from={}", day(1))).await;
    assert_eq!(body["pagination"]["total"], 0);
    let body = audit(&app, &admin, "?limit=2&page=3").await;
    assert_eq!(actions(&body), ["update_user_limits"]);
    assert_eq!(body["pagination"]["pages"], 3);

    // A tenant's own action is in the log, and left out with actor=admin.
    let three = tenant(&app, "three@example.com").await;
    create_agent(&app, &three, "Own").await;
    assert_eq!(audit(&app, &admin, "").await["pagination"]["total"], 6);
    assert_eq!(
        audit(&app, &admin, "?actor=admin").await["pagination"]["total"],
        5
    );
    assert_eq!(
        audit(&app, &admin, "?actor=any").await["pagination"]["total"],
        6
    );
    let (status, body) = get(&app, "/api/admin/audit-logs?actor=robot", Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "actor");

    for (q, field) in [
        ("action=DROP%20TABLE", "action"),
        ("admin_user_id=nope", "admin_user_id"),
        ("target_user_id=123", "target_user_id"),
        ("date_from=2025-02-30", "date_from"),
        ("date_to=yesterday", "date_to"),
        ("date_from=2025-03-02&date_to=2025-03-01", "date_to"),
        ("page=0", "page"),
        ("limit=abc", "limit"),
    ] {
        let (status, body) = get(&app, &format!("/api/admin/audit-logs?{q}"), Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{q}: {body}");
    }
    app.stop().await;
}

async fn export(app: &TestApp, token: &str, kind: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/admin/analytics/export/{kind}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn csv_exports_are_quoted_neutralised_and_without_secrets() {
    let app = TestApp::start().await;
    let admin = admin_token(&app).await;
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({ "email": "csv@example.com", "password": crate::auth::PASSWORD,
                "organization_name": "=HYPERLINK(\"http://x\",\"go\")" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let t = Tenant {
        token: body["data"]["token"].as_str().unwrap().to_string(),
        id: body["data"]["user"]["id"].as_str().unwrap().to_string(),
    };
    let (_, other) = register(&app, "comma@example.com").await;
    let conn = db(&app);
    conn.execute(
        "UPDATE users SET organization_name = 'Acme, \"Inc\"' WHERE id = ?1",
        [&other],
    )
    .unwrap();
    let (_, tabbed) = register(&app, "tab@example.com").await;
    conn.execute(
        "UPDATE users SET organization_name = char(9) || '+1' WHERE id = ?1",
        [&tabbed],
    )
    .unwrap();
    post(
        &app,
        "/api/api-keys/groq",
        Some(&t.token),
        json!({ "api_key": GROQ_KEY }),
    )
    .await;
    let agent = create_agent(&app, &t, "@risky").await;
    completed_run(&conn, &agent, 60);
    set_tier(&app, &admin, &other, "pro").await;

    let res = export(&app, &admin, "users").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"voxflow-users-{}.csv\"", utc_today())
    );
    assert_eq!(res.headers()["x-export-truncated"], "false");
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(lines[0].starts_with("id,email,role,subscription_tier,organization_name,"));
    assert_eq!(lines.len(), 1 + 4 + 1, "header, four users, the final CRLF");
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"go\"\")\","),
        "formula neutralised and quoted: {csv}"
    );
    assert!(csv.contains(",\"Acme, \"\"Inc\"\"\","), "{csv}");
    assert!(csv.contains(",'\t+1,"), "{csv}");
    for secret in [
        "$argon2",
        "password",
        GROQ_KEY,
        &GROQ_KEY[GROQ_KEY.len() - 4..],
    ] {
        assert!(!csv.contains(secret), "{secret} in {csv}");
    }
    let csv_row = lines
        .iter()
        .find(|l| l.contains("csv@example.com"))
        .unwrap();
    assert!(csv_row.contains(",free,"), "{csv_row}");

    let res = export(&app, &admin, "runs").await;
    assert_eq!(res.status(), StatusCode::OK);
    let csv = res.text().await.unwrap();
    assert!(csv.starts_with("id,run_number,user_id,email,agent_id,agent_name,"));
    assert!(csv.contains(",'@risky,WEB_CALL,"), "{csv}");
    assert!(csv.contains(",completed,,60,0.78,"), "{csv}");

    let res = export(&app, &admin, "usage").await;
    let csv = res.text().await.unwrap();
    assert!(
        csv.contains(&format!(
            "{},{},csv@example.com,0.78,1,60,",
            utc_today(),
            t.id
        )),
        "{csv}"
    );

    let res = export(&app, &admin, "audit").await;
    let csv = res.text().await.unwrap();
    assert!(csv.contains(",update_user_subscription,"), "{csv}");
    assert!(!csv.contains(GROQ_KEY));

    let (status, body) = get(&app, "/api/admin/analytics/export/passwords", Some(&admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["success"], false);
    assert!(body["code"].is_string());
    let (status, _) = get(&app, "/api/admin/analytics/export/users", Some(&t.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
