//! The campaign dialer and phone runs against the Twilio stand-in, which
//! speaks Twilio's REST API, lives each call out and sends signed status
//! callbacks: contact outcomes and retries, the plan's concurrent calls and
//! Twilio's one call per second, pause and deactivation, and (with the real
//! binary) kill -9 while Twilio is answering, and live calls across
//! restarts billed with Twilio's duration.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::agents::{create_agent, db, set_tier, tenant, Tenant, PROMPT};
use crate::auth::{get, post};
use crate::campaigns::{act, form_body};
use crate::common::{spawn_serve, Bin, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::phone::save_twilio;
use crate::twilio_standin::{Outcome, TwilioStandIn, PUBLIC};

const BOUNDARY: &str = "----voxflow-test-boundary";

async fn dialing_app(twilio: &TwilioStandIn) -> TestApp {
    let base = twilio.base.clone();
    let app = TestApp::start_with(move |c| {
        c.public_url = Some(PUBLIC.into());
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.twilio_base_url = base;
        c.provider_timeout_secs = 3;
    })
    .await;
    twilio.send_callbacks_to(&app.base);
    app
}

async fn pro_tenant(app: &TestApp, email: &str) -> (Tenant, String) {
    let t = tenant(app, email).await;
    set_tier(app, &t, "pro").await;
    save_twilio(app, &t).await;
    let agent = create_agent(app, &t, "Dialer").await;
    (t, agent)
}

/// Creates a campaign of `numbers` with dialing `settings` (multipart
/// fields) through `base` and returns its id.
pub async fn create_campaign(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    agent: &str,
    numbers: &[String],
    settings: &[(&str, &str)],
) -> String {
    let csv = format!("phone\n{}\n", numbers.join("\n"));
    let mut parts: Vec<(&str, &[u8])> = vec![
        ("name", b"Outbound test"),
        ("agent_id", agent.as_bytes()),
        ("file", csv.as_bytes()),
    ];
    for (k, v) in settings {
        parts.push((k, v.as_bytes()));
    }
    let res = client
        .post(format!("{base}/api/campaigns"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form_body(&parts))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

fn numbers(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// Places a phone call to `to` through the API: `(run_id, call_sid)`.
pub async fn place_call(app: &TestApp, who: &Tenant, agent: &str, to: &str) -> (String, String) {
    let (status, body) = post(
        app,
        "/api/calls/phone/start",
        Some(&who.token),
        json!({"agent_id": agent, "phone_number": to}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    (
        data["run_id"].as_str().unwrap().to_string(),
        data["call_sid"].as_str().unwrap().to_string(),
    )
}

/// One number from `sql` with `id` as its parameter.
fn scalar<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str, id: &str) -> T {
    conn.query_row(sql, [id], |r| r.get(0)).unwrap()
}

/// Posts Twilio's webhook `kind` for `run_id` to the server at `base`,
/// signed as Twilio signs it: the answer's status and body.
pub async fn twilio_hook(
    client: &reqwest::Client,
    base: &str,
    kind: &str,
    run_id: &str,
    params: &[(&str, &str)],
) -> (StatusCode, String) {
    let path = format!("/api/calls/twilio/{kind}/{run_id}");
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let res = client
        .post(format!("{base}{path}"))
        .header(
            "X-Twilio-Signature",
            crate::twilio_standin::sign(&format!("{PUBLIC}{path}"), &params),
        )
        .form(&params)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

/// A signed status callback for `run_id`; the answer's status.
async fn status_callback(
    client: &reqwest::Client,
    base: &str,
    run_id: &str,
    params: &[(&str, &str)],
) -> StatusCode {
    twilio_hook(client, base, "status", run_id, params).await.0
}

/// Waits until `check` holds, polling every 100 ms, or panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn campaign_state(app: &TestApp, id: &str) -> String {
    db(app)
        .query_row("SELECT state FROM campaigns WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_set_contacts_with_retries_within_the_plan_and_one_call_a_second() {
    let twilio = TwilioStandIn::start(Duration::from_millis(300)).await;
    let app = dialing_app(&twilio).await;
    let (t, agent) = pro_tenant(&app, "outcomes@example.com").await;
    let to = numbers("+141555502", 20);
    let talked = Outcome::Completed {
        wall: Duration::from_secs(5),
        secs: 30,
    };
    let short_talk = Outcome::Completed {
        wall: Duration::from_millis(500),
        secs: 20,
    };
    for n in &to[0..9] {
        twilio.script(n, &[talked]);
    }
    for n in &to[9..12] {
        twilio.script(n, &[Outcome::Busy, short_talk]);
    }
    for n in &to[12..15] {
        twilio.script(n, &[Outcome::NoAnswer; 3]);
    }
    for n in &to[15..17] {
        twilio.script(n, &[Outcome::Failed; 3]);
    }
    // Two seconds is below the campaign's minimum talk time: not reached.
    twilio.script(
        &to[17],
        &[
            Outcome::Completed {
                wall: Duration::from_millis(300),
                secs: 2,
            },
            short_talk,
        ],
    );
    for n in &to[18..20] {
        twilio.script(n, &[Outcome::Busy, Outcome::NoAnswer, Outcome::Busy]);
    }
    let id = create_campaign(
        &app.client,
        &app.base,
        &t.token,
        &agent,
        &to,
        &[
            ("max_retries", "2"),
            ("retry_delay_seconds", "1"),
            ("min_talk_seconds", "5"),
        ],
    )
    .await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(150), "the campaign to complete", || {
        campaign_state(&app, &id) == "completed"
    })
    .await;

    let (_, body) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
    let p = &body["data"]["progress"];
    assert_eq!(p["reached"], 13, "{p}");
    assert_eq!(p["failed"], 7, "{p}");
    assert_eq!(p["pending"], 0);
    assert_eq!(p["dialing"], 0);
    assert_eq!(p["retrying"], 0);
    assert_eq!(p["success_rate"], 65.0, "{p}");

    let (_, list) = get(
        &app,
        &format!("/api/campaigns/{id}/contacts?limit=100"),
        Some(&t.token),
    )
    .await;
    let contacts = list["data"].as_array().unwrap();
    let by_number = |n: &str| contacts.iter().find(|c| c["phone_number"] == n).unwrap();
    for (range, status, attempts, last) in [
        (0..9, "reached", 1, "user_hangup"),
        (9..12, "reached", 2, "user_hangup"),
        (12..15, "failed", 3, "no_answer"),
        (15..17, "failed", 3, "failed"),
        (17..18, "reached", 2, "user_hangup"),
        (18..20, "failed", 3, "busy"),
    ] {
        for n in &to[range] {
            let c = by_number(n);
            assert_eq!(c["status"], status, "{c}");
            assert_eq!(c["attempts"], attempts, "{c}");
            assert_eq!(c["last_disposition"], last, "{c}");
        }
    }
    // Every dial is one call at Twilio: 9 + 6 + 9 + 6 + 2 + 6.
    let calls = twilio.calls();
    assert_eq!(calls.len(), 38);
    // Each attempt had its own idempotency token.
    let mut tokens: Vec<_> = calls
        .iter()
        .map(|c| c.idempotency_token.clone().unwrap())
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 38);
    // Never more calls at once than the pro plan's five, and at most one
    // new call a second.
    assert!(twilio.peak_live() <= 5, "peak {}", twilio.peak_live());
    assert!(
        twilio.peak_live() >= 3,
        "the plan's calls were used: peak {}",
        twilio.peak_live()
    );
    let mut arrivals: Vec<Instant> = calls.iter().map(|c| c.arrived).collect();
    arrivals.sort();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(950), "two calls {gap:?} apart");
    }
    // The reached calls were billed with Twilio's durations.
    let billed: f64 = db(&app)
        .query_row(
            "SELECT sum(groq_tokens) FROM agent_runs WHERE campaign_id = ?1 AND status = 'completed'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    // 9 × 30 s + 4 × 20 s + 1 × 2 s: 0.39 × 9 + 0.26 × 4 + 0.03.
    assert!(
        (billed - (0.39 * 9.0 + 0.26 * 4.0 + 0.03)).abs() < 1e-9,
        "{billed}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_outage_retries_the_contacts_without_failing_the_campaign() {
    let twilio = TwilioStandIn::start(Duration::from_millis(100)).await;
    let app = dialing_app(&twilio).await;
    let (t, agent) = pro_tenant(&app, "outage@example.com").await;
    let to = numbers("+141555508", 2);
    let (_, before, _) = crate::ops::scrape(&app, None).await;
    twilio.outage(true);
    let id = create_campaign(
        &app.client,
        &app.base,
        &t.token,
        &agent,
        &to,
        &[("max_retries", "0")],
    )
    .await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), "refused requests", || {
        twilio
            .requests()
            .iter()
            .filter(|(r, _)| r.starts_with("POST"))
            .count()
            >= 2
    })
    .await;
    // Twilio failing on its side may have placed the calls: the contacts
    // wait, dialing, until Twilio can be asked.
    assert_eq!(campaign_state(&app, &id), "running");
    twilio.outage(false);
    wait_until(Duration::from_secs(60), "the campaign to complete", || {
        campaign_state(&app, &id) == "completed"
    })
    .await;
    let (_, body) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
    assert_eq!(body["data"]["progress"]["reached"], 2, "{body}");
    // Each number was placed once, when Twilio was back; the attempts that
    // never reached Twilio did not count against the retries.
    for n in &to {
        assert_eq!(twilio.calls().iter().filter(|c| &c.to == n).count(), 1);
    }
    let not_placed: i64 = db(&app)
        .query_row(
            "SELECT count(*) FROM agent_runs WHERE campaign_id = ?1 AND disposition = 'not_placed' AND groq_tokens = 0",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(not_placed >= 2, "{not_placed}");
    // Counters only grow, and other tests share them: deltas, at least.
    let (_, after, _) = crate::ops::scrape(&app, None).await;
    let delta =
        |series: &str| crate::ops::sample(&after, series) - crate::ops::sample(&before, series);
    for (series, least) in [
        (r#"voxflow_dialer_attempts_total{outcome="unknown"}"#, 2.0),
        (r#"voxflow_dialer_attempts_total{outcome="placed"}"#, 2.0),
        (
            r#"voxflow_provider_requests_total{provider="twilio",outcome="error"}"#,
            2.0,
        ),
        (
            r#"voxflow_provider_requests_total{provider="twilio",outcome="ok"}"#,
            2.0,
        ),
    ] {
        assert!(delta(series) >= least, "{series}: {after}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_outside_their_calling_hours_wait_for_the_window() {
    let twilio = TwilioStandIn::start(Duration::from_millis(100)).await;
    let app = dialing_app(&twilio).await;
    let (t, agent) = pro_tenant(&app, "window@example.com").await;
    // A window that opens two hours from now in Tokyo, and one open now.
    let tokyo = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
    let hhmm = |h: i64| {
        let z = tokyo
            .checked_add(jiff::SignedDuration::from_hours(h))
            .unwrap();
        format!("{:02}:{:02}", z.hour(), z.minute())
    };
    let (start, end) = (hhmm(2), hhmm(3));
    let csv = "phone,timezone\n+14155550901,Asia/Tokyo\n";
    let body = form_body(&[
        ("name", b"Closed window"),
        ("agent_id", agent.as_bytes()),
        ("window_start", start.as_bytes()),
        ("window_end", end.as_bytes()),
        ("file", csv.as_bytes()),
    ]);
    let res = app
        .client
        .post(app.url("/api/campaigns"))
        .bearer_auth(&t.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    act(&app, &t, &id, "start").await;
    let next = || -> Option<String> {
        db(&app)
            .query_row(
                "SELECT next_attempt_at FROM campaign_contacts WHERE campaign_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap()
    };
    wait_until(Duration::from_secs(10), "the contact to be put off", || {
        next().is_some()
    })
    .await;
    let opens: jiff::Timestamp = next().unwrap().parse().unwrap();
    let wait = opens.duration_since(jiff::Timestamp::now());
    assert!(
        wait > jiff::SignedDuration::from_mins(115) && wait <= jiff::SignedDuration::from_mins(121),
        "opens in {wait:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(twilio.calls().is_empty(), "called outside the window");
    assert_eq!(campaign_state(&app, &id), "running");

    // An open window calls at once.
    let (start, end) = (hhmm(-1), hhmm(1));
    let id = create_campaign(
        &app.client,
        &app.base,
        &t.token,
        &agent,
        &["+814155550902".to_string()],
        &[("window_start", &start), ("window_end", &end)],
    )
    .await;
    act(&app, &t, &id, "start").await;
    wait_until(Duration::from_secs(10), "the call", || {
        twilio.calls().len() == 1
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_call_greets_each_contact_with_their_own_fields() {
    let twilio = TwilioStandIn::start(Duration::from_millis(100)).await;
    let app = dialing_app(&twilio).await;
    let t = tenant(&app, "fields@example.com").await;
    set_tier(&app, &t, "pro").await;
    save_twilio(&app, &t).await;
    let (status, body) = post(
        &app,
        "/api/agents",
        Some(&t.token),
        json!({
            "name": "Reminders", "type": "OUTBOUND", "use_case": "reminders",
            "description": "Remind {{first_name}} of the visit on {{appointment}}. Never read out {{phone}}.",
            "first_message": "Hi {{first_name}}, this is Acme about {{appointment}}.",
            "voice": "aura-2-thalia-en", "language": "en-US", "max_call_seconds": 120
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["max_call_seconds"], 120);
    assert_eq!(body["data"]["voice"], "aura-2-thalia-en");
    let agent = body["data"]["id"].as_str().unwrap().to_string();
    twilio.script("+14155550960", &[Outcome::Live]);
    let csv = "phone,first_name,Appointment\n+14155550960,Ann,Tuesday at 10\n";
    let res = app
        .client
        .post(app.url("/api/campaigns"))
        .bearer_auth(&t.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form_body(&[
            ("name", b"Visits"),
            ("agent_id", agent.as_bytes()),
            ("file", csv.as_bytes()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    act(&app, &t, &id, "start").await;
    wait_until(Duration::from_secs(10), "the call", || {
        twilio.calls().len() == 1
    })
    .await;
    let call = twilio.calls()[0].clone();
    // Twilio itself hangs up at the agent's limit.
    assert_eq!(call.time_limit.as_deref(), Some("120"));
    let run_id: String = db(&app)
        .query_row(
            "SELECT id FROM agent_runs WHERE campaign_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let (_, twiml) = twilio_hook(
        &app.client,
        &app.base,
        "webhook",
        &run_id,
        &[("CallSid", call.sid.as_str())],
    )
    .await;
    assert!(
        twiml.contains("<Say>Hi Ann, this is Acme about Tuesday at 10.</Say>"),
        "{twiml}"
    );
    let script = voxflow::calls::store::script(&db(&app), &run_id).unwrap();
    assert_eq!(
        script.prompt,
        "Remind Ann of the visit on Tuesday at 10. Never read out +14155550960."
    );
    assert_eq!(script.language.as_deref(), Some("en-US"));
    app.stop().await;
}

#[tokio::test]
async fn a_call_s_recording_plays_through_the_server_for_its_owner_only() {
    let twilio = TwilioStandIn::start(Duration::from_millis(50)).await;
    let app = dialing_app(&twilio).await;
    let (t, agent) = pro_tenant(&app, "recording@example.com").await;
    let (other, _) = pro_tenant(&app, "eavesdropper@example.com").await;
    twilio.script("+14155550980", &[Outcome::Live]);
    let (run_id, sid) = place_call(&app, &t, &agent, "+14155550980").await;
    let path = format!("/api/calls/run/{run_id}/recording");
    let fetch = |token: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        fetch(t.token.clone()).await.status(),
        404,
        "no recording yet"
    );
    // Twilio says the recording is ready (on its own host, over https).
    let recording = format!(
        "{}/2010-04-01/Accounts/{}/Recordings/RE0123456789abcdef0123456789abcdef",
        twilio.base.replace("http://", "https://"),
        crate::phone::SID
    );
    let (status, _) = twilio_hook(
        &app.client,
        &app.base,
        "recording",
        &run_id,
        &[
            ("CallSid", sid.as_str()),
            ("RecordingUrl", recording.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let res = fetch(t.token.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/mpeg");
    assert_eq!(
        &res.bytes().await.unwrap()[..],
        crate::twilio_standin::RECORDING
    );
    // Fetched from the configured Twilio with the account's credentials.
    assert!(twilio
        .requests()
        .iter()
        .any(|(r, _)| r.ends_with("/Recordings/RE0123456789abcdef0123456789abcdef.mp3")));
    assert_eq!(
        fetch(other.token.clone()).await.status(),
        404,
        "another tenant's call"
    );
    app.stop().await;
}

/// The stand-in's new-call requests for `numbers` that arrived after `t`.
fn calls_after(twilio: &TwilioStandIn, numbers: &[String], t: Instant) -> usize {
    twilio
        .calls()
        .iter()
        .filter(|c| numbers.contains(&c.to) && c.arrived > t)
        .count()
}

async fn admin_token(app: &TestApp) -> String {
    let (status, body) = post(
        app,
        "/api/auth/login",
        None,
        json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_deactivation_stop_the_next_call_and_spare_other_tenants() {
    let twilio = TwilioStandIn::start(Duration::from_millis(100)).await;
    let app = dialing_app(&twilio).await;
    let (a, agent_a) = pro_tenant(&app, "pauser@example.com").await;
    let (b, agent_b) = pro_tenant(&app, "bystander@example.com").await;
    let (to_a, to_b) = (numbers("+141555503", 12), numbers("+141555504", 12));
    let quick = [Outcome::Completed {
        wall: Duration::from_millis(800),
        secs: 10,
    }];
    for n in to_a.iter().chain(&to_b) {
        twilio.script(n, &quick);
    }
    let camp_a = create_campaign(&app.client, &app.base, &a.token, &agent_a, &to_a, &[]).await;
    let camp_b = create_campaign(&app.client, &app.base, &b.token, &agent_b, &to_b, &[]).await;
    act(&app, &a, &camp_a, "start").await;
    wait_until(Duration::from_secs(20), "two calls of A", || {
        calls_after(&twilio, &to_a, Instant::now() - Duration::from_secs(3600)) >= 2
    })
    .await;
    let (status, body) = act(&app, &a, &camp_a, "pause").await;
    let paused_at = Instant::now();
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        calls_after(&twilio, &to_a, paused_at),
        0,
        "a call after the pause"
    );

    // Both campaigns dial; then A's owner is deactivated.
    act(&app, &a, &camp_a, "resume").await;
    act(&app, &b, &camp_b, "start").await;
    let since = Instant::now();
    wait_until(Duration::from_secs(20), "calls of both", || {
        calls_after(&twilio, &to_a, since) >= 1 && calls_after(&twilio, &to_b, since) >= 1
    })
    .await;
    let admin = admin_token(&app).await;
    let (status, body) = post(
        &app,
        &format!("/api/admin/users/{}/toggle-status", a.id),
        Some(&admin),
        json!({"is_active": false}),
    )
    .await;
    let deactivated_at = Instant::now();
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        calls_after(&twilio, &to_a, deactivated_at),
        0,
        "a call after the deactivation"
    );
    assert!(
        calls_after(&twilio, &to_b, deactivated_at) >= 2,
        "the other tenant's campaign kept dialling"
    );
    assert_eq!(campaign_state(&app, &camp_b), "running");
    app.stop().await;
}

// ---- the real binary ----

fn bin_envs(twilio: &TwilioStandIn) -> Vec<(&'static str, String)> {
    vec![
        ("VOXFLOW_TWILIO_BASE_URL", twilio.base.clone()),
        ("VOXFLOW_PUBLIC_URL", PUBLIC.to_string()),
        (
            "GROQ_API_KEY",
            "gsk_server_fallback_key_for_tests".to_string(),
        ),
        ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("VOXFLOW_PROVIDER_TIMEOUT_SECS", "3".to_string()),
    ]
}

fn serve(dir: &Path, twilio: &TwilioStandIn) -> Bin {
    let envs = bin_envs(twilio);
    let pairs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bin = spawn_serve(dir, &pairs);
    twilio.send_callbacks_to(&bin.base);
    bin
}

fn kill9(bin: &mut Bin) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &bin.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    bin.wait_exit(Duration::from_secs(10));
}

fn open_db(dir: &Path) -> rusqlite::Connection {
    voxflow::db::open_connection(&voxflow::config::db_path(dir), false).unwrap()
}

/// A pro tenant with Twilio and an agent on the binary at `base`:
/// `(token, agent_id)`.
async fn bin_tenant(
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    email: &str,
) -> (String, String) {
    let res: Value = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": "Str0ng-Passw0rd"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = res["data"]["token"].as_str().unwrap().to_string();
    let id = res["data"]["user"]["id"].as_str().unwrap().to_string();
    open_db(dir)
        .execute(
            "UPDATE users SET subscription_tier = 'pro' WHERE id = ?1",
            [&id],
        )
        .unwrap();
    let saved = client
        .post(format!("{base}/api/api-keys/twilio"))
        .bearer_auth(&token)
        .json(&json!({"account_sid": crate::phone::SID, "auth_token": crate::phone::TOKEN, "phone_number": crate::phone::FROM}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let agent: Value = client
        .post(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .json(&json!({"name": "Dialer", "type": "OUTBOUND", "use_case": "reminders", "description": PROMPT}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (token, agent["data"]["id"].as_str().unwrap().to_string())
}

/// A number from the clock's nanoseconds, for kill moments nobody picked.
fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(u64::from(nanos) % max_ms.max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_twilio_answers_dials_each_contact_exactly_once() {
    let twilio = TwilioStandIn::start(Duration::from_millis(100)).await;
    // Twilio creates each call at once but answers only after 600 ms:
    // the server is killed in between, before it hears the call's SID.
    twilio.delay_answers(600);
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut bin = serve(dir.path(), &twilio);
    let (token, agent) = bin_tenant(&client, &bin.base, dir.path(), "kill9@example.com").await;
    let to = numbers("+141555505", 6);
    let id = create_campaign(
        &client,
        &bin.base,
        &token,
        &agent,
        &to,
        &[("max_retries", "0")],
    )
    .await;
    let started = client
        .post(format!("{}/api/campaigns/{id}/start", bin.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);

    for round in 0..5 {
        let seen = twilio.calls().len();
        // A restart may dial several contacts before the round looks: once
        // every contact has a call there is none left to be killed during.
        if seen >= to.len() {
            break;
        }
        // Generous: the whole suite may be running beside this test.
        let deadline = Instant::now() + Duration::from_secs(90);
        while twilio.calls().len() <= seen {
            assert!(
                Instant::now() < deadline,
                "round {round}: no new call request; the server's log:\n{}",
                bin.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(jitter(550)).await;
        kill9(&mut bin);
        eprintln!(
            "round {round}: killed with {} calls placed",
            twilio.calls().len()
        );
        bin = serve(dir.path(), &twilio);
    }
    twilio.delay_answers(0);
    let conn = open_db(dir.path());
    wait_until(Duration::from_secs(60), "the campaign to complete", || {
        conn.query_row("SELECT state FROM campaigns WHERE id = ?1", [&id], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
            == "completed"
    })
    .await;
    let calls = twilio.calls();
    for n in &to {
        let placed = calls.iter().filter(|c| &c.to == n).count();
        assert_eq!(placed, 1, "{n} was dialled {placed} times");
    }
    let reached: i64 = scalar(
        &conn,
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = ?1 AND status = 'reached'",
        &id,
    );
    assert_eq!(reached, 6);
    // Each call's run holds its SID, and each was billed once.
    let billed: i64 = scalar(
        &conn,
        "SELECT count(DISTINCT call_sid) FROM agent_runs WHERE campaign_id = ?1 AND status = 'completed' AND groq_tokens > 0",
        &id,
    );
    assert_eq!(billed, 6);
    let usage: i64 = conn
        .query_row(
            "SELECT sum(total_calls) FROM user_usage_tracking",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(usage, 6);
    bin.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_survives_restarts_and_is_billed_with_twilio_s_duration() {
    let twilio = TwilioStandIn::start(Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut bin = serve(dir.path(), &twilio);
    let (token, agent) = bin_tenant(&client, &bin.base, dir.path(), "live@example.com").await;
    twilio.script("+14155550600", &[Outcome::Live]);
    let res: Value = client
        .post(format!("{}/api/calls/phone/start", bin.base))
        .bearer_auth(&token)
        .json(&json!({"agent_id": agent, "phone_number": "+14155550600"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = res["data"]["run_id"].as_str().unwrap().to_string();
    let sid = res["data"]["call_sid"].as_str().unwrap().to_string();
    let run_status = |dir: &Path| -> (String, i64) {
        open_db(dir)
            .query_row(
                "SELECT status, duration_seconds FROM agent_runs WHERE id = ?1",
                [&run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let lookups = |twilio: &TwilioStandIn| {
        twilio
            .requests()
            .iter()
            .filter(|(r, _)| r.ends_with(&format!("/Calls/{sid}.json")))
            .count()
    };

    // A graceful restart, then a kill -9: each start asks Twilio about the
    // call, finds it live and leaves the run open.
    bin.terminate();
    bin = serve(dir.path(), &twilio);
    wait_until(
        Duration::from_secs(20),
        "a look-up after the restart",
        || lookups(&twilio) >= 1,
    )
    .await;
    assert_eq!(run_status(dir.path()).0, "in_progress");
    kill9(&mut bin);
    bin = serve(dir.path(), &twilio);
    wait_until(Duration::from_secs(20), "a look-up after the kill", || {
        lookups(&twilio) >= 2
    })
    .await;
    assert_eq!(run_status(dir.path()).0, "in_progress");

    // The call ends after 95 s; the callback (signed with the tenant's own
    // token) claims 0 s. Twilio's REST figure is what is billed.
    twilio.claim_duration(0);
    twilio.end_call(&sid, 95).await;
    wait_until(Duration::from_secs(20), "the run to complete", || {
        run_status(dir.path()).0 == "completed"
    })
    .await;
    assert_eq!(run_status(dir.path()).1, 95);
    let tokens: f64 = open_db(dir.path())
        .query_row(
            "SELECT groq_tokens FROM agent_runs WHERE id = ?1",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 1.24);

    // A web call's routes refuse a phone run, and a callback for another
    // call changes nothing.
    let status = status_callback(
        &client,
        &bin.base,
        &run_id,
        &[
            ("CallSid", "CA99999999999999999999999999999999"),
            ("CallStatus", "completed"),
        ],
    )
    .await;
    assert_eq!(status, 409);
    bin.terminate();
}

#[tokio::test]
async fn a_status_callback_for_another_call_is_a_409_and_changes_nothing() {
    let twilio = TwilioStandIn::start(Duration::from_millis(50)).await;
    let app = dialing_app(&twilio).await;
    let (t, agent) = pro_tenant(&app, "sid@example.com").await;
    twilio.script("+14155550700", &[Outcome::Live]);
    let (run_id, sid) = place_call(&app, &t, &agent, "+14155550700").await;
    let run_id = run_id.as_str();
    let status = status_callback(
        &app.client,
        &app.base,
        run_id,
        &[
            ("CallSid", "CAffffffffffffffffffffffffffffffff"),
            ("CallStatus", "completed"),
            ("CallDuration", "500"),
        ],
    )
    .await;
    assert_eq!(status, 409);
    let (_, run) = get(&app, &format!("/api/calls/run/{run_id}"), Some(&t.token)).await;
    assert_eq!(run["data"]["status"], "in_progress", "{run}");
    // The right SID, but Twilio says the call goes on: a forged final
    // status ends nothing.
    let status = status_callback(
        &app.client,
        &app.base,
        run_id,
        &[
            ("CallSid", sid.as_str()),
            ("CallStatus", "completed"),
            ("CallDuration", "0"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (_, run) = get(&app, &format!("/api/calls/run/{run_id}"), Some(&t.token)).await;
    assert_eq!(run["data"]["status"], "in_progress", "{run}");
    app.stop().await;
}
