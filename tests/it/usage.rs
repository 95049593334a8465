//! Usage and reports, through the HTTP API: the month's dashboard against
//! the quota, the run history with its filters, and daily reports (JSON and
//! CSV) over local days of IANA time zones. Runs come from the real web-call
//! flow, or, where a test needs exact past times, are written to the
//! database and completed with an `UPDATE` so the real triggers count them.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::agents::{create_agent, db, tenant, Tenant};
use crate::auth::{admin_token, get, post, put};
use crate::calls::{backdate_start, end, start_call, tokens_for};
use crate::common::{utc_today, TestApp};

/// A server that can start web calls (the server's own Groq key; no test
/// here sends a message, so nothing is asked of an LLM).
async fn app() -> TestApp {
    TestApp::start_with(|c| c.groq_api_key = Some("gsk_usage_tests_server_key".into())).await
}

/// A run as the tests want it; `completed_at: None` leaves it in progress.
struct NewRun<'a> {
    agent: &'a str,
    phone: Option<&'a str>,
    disposition: Option<&'a str>,
    created_at: &'a str,
    completed_at: Option<&'a str>,
    secs: i64,
}

impl Default for NewRun<'_> {
    fn default() -> Self {
        NewRun {
            agent: "",
            phone: None,
            disposition: Some("user_hangup"),
            created_at: "2025-06-01T00:00:00.000Z",
            completed_at: None,
            secs: 0,
        }
    }
}

/// Writes the run in progress, then completes it with an `UPDATE` of its
/// status, so `calculate_tokens` and the usage trigger run as in real life.
fn insert_run(app: &TestApp, run: NewRun<'_>) -> String {
    let conn = db(app);
    let number = format!("WR-TST-{}", uuid::Uuid::new_v4().simple());
    let id: String = conn
        .query_row(
            "INSERT INTO agent_runs (run_number, agent_id, type, phone_number, created_at,
                                     duration_seconds, disposition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            rusqlite::params![
                number,
                run.agent,
                if run.phone.is_some() {
                    "PHONE_CALL"
                } else {
                    "WEB_CALL"
                },
                run.phone,
                run.created_at,
                run.secs,
                run.disposition
            ],
            |r| r.get(0),
        )
        .unwrap();
    if let Some(done) = run.completed_at {
        conn.execute(
            "UPDATE agent_runs SET status = 'completed', completed_at = ?2 WHERE id = ?1",
            [&id, done],
        )
        .unwrap();
    }
    id
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {body}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn first_field(body: &Value) -> &str {
    body["errors"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_dashboard_counts_this_month_and_warns_at_80_90_and_100_percent() {
    let app = app().await;
    let t = tenant(&app, "dash@example.com").await;
    let admin = admin_token(&app).await;
    let (status, body) = put(
        &app,
        &format!("/api/admin/users/{}/limits", t.id),
        Some(&admin),
        json!({ "monthly_token_quota": 10 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let dashboard = |t: &Tenant| {
        let token = t.token.clone();
        let app = &app;
        async move {
            let (status, body) = get(app, "/api/usage/dashboard", Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            body["data"].clone()
        }
    };
    let today = utc_today();
    let day_of_month: usize = today[8..].parse().unwrap();

    let d = dashboard(&t).await;
    assert_eq!(d["tokens_used"], 0.0);
    assert_eq!(d["quota"], 10);
    assert_eq!(d["remaining"], 10.0);
    assert_eq!(d["percent"], 0.0);
    assert_eq!(d["warning"], "none");
    assert_eq!(d["calls"], 0);
    assert_eq!(d["duration"], 0);
    assert_eq!(
        d["agents"],
        json!({ "current": 0, "max": 2, "remaining": 2 })
    );
    // Every day of the month so far, from the 1st to today, zero-filled.
    let daily = d["daily"].as_array().unwrap();
    assert_eq!(daily.len(), day_of_month, "{daily:?}");
    for (i, day) in daily.iter().enumerate() {
        assert_eq!(day["date"], format!("{}-{:02}", &today[..7], i + 1));
        assert_eq!(day["calls"], 0);
        assert_eq!(day["tokens"], 0.0);
    }
    assert_eq!(d["period"]["start"], format!("{}-01", &today[..7]));
    assert_eq!(d["period"]["end"], today.as_str());

    // A real web call of about 616 s: 8.01 tokens, 80 % of 10.
    let agent = create_agent(&app, &t, "Dash").await;
    let (run, _) = start_call(&app, &t, &agent).await;
    backdate_start(&app, &run, 616);
    let (status, body) = end(&app, &t, &run, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let secs = body["data"]["duration_seconds"].as_i64().unwrap();
    let used = tokens_for(secs);
    let d = dashboard(&t).await;
    assert_eq!(d["tokens_used"].as_f64().unwrap(), used);
    assert_eq!(d["calls"], 1);
    assert_eq!(d["duration"], secs);
    assert_eq!(d["warning"], "80", "{d}");
    assert_eq!(
        d["percent"].as_f64().unwrap(),
        (used * 1000.0).round() / 100.0
    );
    assert_eq!(
        d["agents"],
        json!({ "current": 1, "max": 2, "remaining": 1 })
    );
    let last = d["daily"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["date"], today.as_str());
    assert_eq!(last["calls"], 1);
    assert_eq!(last["tokens"].as_f64().unwrap(), used);
    assert_eq!(last["duration_seconds"], secs);

    // +80 s (1.04 tokens): past 90 %.
    insert_run(
        &app,
        NewRun {
            agent: &agent,
            completed_at: Some("2025-06-01T00:01:20.000Z"),
            secs: 80,
            ..NewRun::default()
        },
    );
    let d = dashboard(&t).await;
    assert_eq!(d["warning"], "90", "{d}");
    assert_eq!(d["calls"], 2);
    // +100 s (1.30 tokens): the quota is spent; nothing remains, not less.
    insert_run(
        &app,
        NewRun {
            agent: &agent,
            completed_at: Some("2025-06-01T00:01:40.000Z"),
            secs: 100,
            ..NewRun::default()
        },
    );
    let d = dashboard(&t).await;
    assert_eq!(d["warning"], "100", "{d}");
    assert!(d["percent"].as_f64().unwrap() > 100.0, "{d}");
    assert_eq!(d["remaining"], 0.0);
    let expected = ((used + 1.04 + 1.30) * 100.0).round() / 100.0;
    assert_eq!(d["tokens_used"].as_f64().unwrap(), expected);

    // Another tenant sees none of it.
    let other = tenant(&app, "dash-other@example.com").await;
    let d = dashboard(&other).await;
    assert_eq!(d["calls"], 0);
    assert_eq!(d["quota"], 1000);
    assert_eq!(d["warning"], "none");

    let (status, body) = get(&app, "/api/usage/dashboard", None).await;
    assert_eq!(status, 401, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn history_filters_paginates_and_shows_only_the_callers_runs() {
    let app = app().await;
    let a = tenant(&app, "hist-a@example.com").await;
    let b = tenant(&app, "hist-b@example.com").await;
    let a1 = create_agent(&app, &a, "First").await;
    let a2 = create_agent(&app, &a, "Second").await;
    let b1 = create_agent(&app, &b, "Theirs").await;
    let r1 = insert_run(
        &app,
        NewRun {
            agent: &a1,
            phone: Some("+14155550100"),
            created_at: "2025-01-10T08:00:00.000Z",
            completed_at: Some("2025-01-10T08:00:30.000Z"),
            secs: 30,
            ..NewRun::default()
        },
    );
    let r2 = insert_run(
        &app,
        NewRun {
            agent: &a1,
            phone: Some("+442071234567"),
            disposition: Some("voicemail"),
            created_at: "2025-01-20T23:59:59.000Z",
            completed_at: Some("2025-01-21T00:01:29.000Z"),
            secs: 90,
        },
    );
    let r3 = insert_run(
        &app,
        NewRun {
            agent: &a2,
            disposition: Some("transfer"),
            created_at: "2025-02-01T00:00:00.000Z",
            completed_at: Some("2025-02-01T00:00:05.000Z"),
            secs: 5,
            ..NewRun::default()
        },
    );
    let r4 = insert_run(
        &app,
        NewRun {
            agent: &b1,
            phone: Some("+14155550100"),
            created_at: "2025-01-10T08:00:00.000Z",
            completed_at: Some("2025-01-10T08:00:30.000Z"),
            secs: 30,
            ..NewRun::default()
        },
    );

    let (status, body) = get(&app, "/api/usage/history", Some(&a.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        [&r3, &r2, &r1].map(String::as_str),
        "newest first, only A's"
    );
    assert_eq!(
        body["pagination"],
        json!({ "page": 1, "limit": 20, "total": 3, "pages": 1 })
    );
    assert_eq!(body["data"][0]["agent_name"], "Second");
    assert_eq!(body["data"][1]["agent_name"], "First");
    assert_eq!(body["data"][1]["duration_seconds"], 90);
    assert_eq!(body["data"][1]["groq_tokens"], 1.17);
    assert_eq!(body["data"][1]["phone_number"], "+442071234567");

    let cases: Vec<(String, Vec<&String>)> = vec![
        (format!("agent_id={a1}"), vec![&r2, &r1]),
        (format!("agent_id={a2}"), vec![&r3]),
        ("phone=4155".into(), vec![&r1]),
        ("phone=%2B44".into(), vec![&r2]),
        ("phone=999".into(), vec![]),
        ("disposition=voicemail".into(), vec![&r2]),
        ("disposition=transfer".into(), vec![&r3]),
        ("date_from=2025-01-15".into(), vec![&r3, &r2]),
        ("date_to=2025-01-20".into(), vec![&r2, &r1]),
        ("date_from=2025-01-10&date_to=2025-01-10".into(), vec![&r1]),
        ("date_from=2025-01-21&date_to=2025-01-31".into(), vec![]),
        ("min_duration=30".into(), vec![&r2, &r1]),
        ("max_duration=29".into(), vec![&r3]),
        ("min_duration=30&max_duration=30".into(), vec![&r1]),
        (format!("agent_id={a1}&min_duration=31"), vec![&r2]),
        ("limit=2".into(), vec![&r3, &r2]),
        ("limit=2&page=2".into(), vec![&r1]),
        ("page=3".into(), vec![]),
    ];
    for (query, expected) in cases {
        let (status, body) =
            get(&app, &format!("/api/usage/history?{query}"), Some(&a.token)).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body).iter().collect::<Vec<_>>(), expected, "{query}");
    }
    let (_, body) = get(&app, "/api/usage/history?limit=2&page=2", Some(&a.token)).await;
    assert_eq!(
        body["pagination"],
        json!({ "page": 2, "limit": 2, "total": 3, "pages": 2 })
    );

    // B sees their own run only, even filtering on A's number.
    let (_, body) = get(&app, "/api/usage/history?phone=4155", Some(&b.token)).await;
    assert_eq!(ids(&body), [r4.as_str()]);
    // Another tenant's agent is a 404, as a missing one: never their runs.
    for agent in [b1.as_str(), "00000000-0000-4000-8000-000000000000"] {
        let (status, body) = get(
            &app,
            &format!("/api/usage/history?agent_id={agent}"),
            Some(&a.token),
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["success"], false);
    }

    for (query, field) in [
        ("agent_id=42", "agent_id"),
        ("phone=abc", "phone"),
        ("disposition=DROP%20TABLE", "disposition"),
        ("date_from=2025-02-30", "date_from"),
        ("date_to=yesterday", "date_to"),
        ("date_from=2025-02-02&date_to=2025-02-01", "date_to"),
        ("min_duration=-1", "min_duration"),
        ("max_duration=ten", "max_duration"),
        ("min_duration=10&max_duration=5", "max_duration"),
        ("page=0", "page"),
        ("limit=101", "limit"),
    ] {
        let (status, body) =
            get(&app, &format!("/api/usage/history?{query}"), Some(&a.token)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(first_field(&body), field, "{query}: {body}");
    }
    app.stop().await;
}

/// The `data` of a daily report, which must answer 200.
async fn report(app: &TestApp, who: &Tenant, query: &str) -> Value {
    let (status, body) = get(
        app,
        &format!("/api/reports/daily?{query}"),
        Some(&who.token),
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].clone()
}

fn buckets(b: [u64; 5]) -> Value {
    json!({ "0-10": b[0], "10-30": b[1], "30-60": b[2], "60-120": b[3], "120+": b[4] })
}

#[tokio::test]
async fn daily_reports_count_the_local_day_of_the_time_zone() {
    let app = app().await;
    let t = tenant(&app, "report@example.com").await;
    let other = tenant(&app, "report-other@example.com").await;
    let agent = create_agent(&app, &t, "Desk").await;
    let second = create_agent(&app, &t, "Night").await;
    let theirs = create_agent(&app, &other, "Theirs").await;
    let run = |agent: &str, done: &str, secs: i64, disposition: Option<&str>| {
        insert_run(
            &app,
            NewRun {
                agent,
                disposition,
                created_at: "2025-05-31T00:00:00.000Z",
                completed_at: Some(done),
                secs,
                ..NewRun::default()
            },
        )
    };
    // UTC 1 June: the first three. Berlin (UTC+2) 1 June: 22:00Z on
    // 31 May to 22:00Z on 1 June: a, b and d; c (23:30Z) is 01:30 on
    // 2 June there.
    run(&agent, "2025-06-01T00:00:00.000Z", 5, Some("user_hangup")); // a
    run(&agent, "2025-06-01T21:59:59.000Z", 10, Some("transfer")); // b
    run(&agent, "2025-06-01T23:30:00.000Z", 45, Some("transferred")); // c
    run(&second, "2025-05-31T22:30:00.000Z", 120, Some("voicemail")); // d
    run(&agent, "2025-06-02T00:00:00.000Z", 60, None); // e
                                                       // Never counted: a run still in progress, a failed one, another tenant's.
    insert_run(
        &app,
        NewRun {
            agent: &agent,
            ..NewRun::default()
        },
    );
    let failed = run(&agent, "2025-06-01T12:00:00.000Z", 30, Some("abandoned"));
    db(&app)
        .execute(
            "UPDATE agent_runs SET status = 'failed' WHERE id = ?1",
            [&failed],
        )
        .unwrap();
    run(&theirs, "2025-06-01T12:00:00.000Z", 30, Some("user_hangup"));

    let r = report(&app, &t, "date=2025-06-01").await;
    assert_eq!(r["date"], "2025-06-01");
    assert_eq!(r["timezone"], "UTC");
    assert_eq!(r["total_calls"], 3, "{r}");
    assert_eq!(r["total_duration_seconds"], 60);
    assert_eq!(r["total_tokens"], 0.79, "0.07 + 0.13 + 0.59");
    assert_eq!(r["transfers"], 2, "transfer and transferred");
    assert_eq!(
        r["dispositions"],
        json!({ "user_hangup": 1, "transfer": 1, "transferred": 1 })
    );
    assert_eq!(r["duration_buckets"], buckets([1, 1, 1, 0, 0]));
    assert_eq!(r["window"]["hours"], 24.0);

    let r = report(&app, &t, "date=2025-06-01&timezone=Europe/Berlin").await;
    assert_eq!(r["timezone"], "Europe/Berlin");
    assert_eq!(r["total_calls"], 3, "{r}");
    assert_eq!(r["total_duration_seconds"], 135);
    assert_eq!(r["transfers"], 1);
    assert_eq!(
        r["dispositions"],
        json!({ "user_hangup": 1, "transfer": 1, "voicemail": 1 })
    );
    assert_eq!(r["duration_buckets"], buckets([1, 1, 0, 0, 1]));
    assert_eq!(r["window"]["start"], "2025-05-31T22:00:00Z");
    // The run completed at 23:30 UTC counts on the next local day, with the
    // one of midnight UTC (02:00 there); a run without a disposition is
    // counted as unknown.
    let r = report(&app, &t, "date=2025-06-02&timezone=Europe%2FBerlin").await;
    assert_eq!(r["total_calls"], 2, "{r}");
    assert_eq!(r["dispositions"], json!({ "transferred": 1, "unknown": 1 }));
    assert_eq!(r["duration_buckets"], buckets([0, 0, 1, 1, 0]));
    // Tokyo (UTC+9): 1 June runs from 15:00Z on 31 May to 15:00Z, so only
    // a (00:00Z) and d (31 May 22:30Z) fall in it.
    let r = report(&app, &t, "date=2025-06-01&timezone=Asia/Tokyo").await;
    assert_eq!(r["total_calls"], 2, "{r}");

    // One agent only.
    let r = report(
        &app,
        &t,
        &format!("date=2025-06-01&timezone=Europe/Berlin&agent_id={agent}"),
    )
    .await;
    assert_eq!(r["total_calls"], 2, "{r}");
    assert_eq!(r["agent_id"], agent.as_str());
    let r = report(
        &app,
        &t,
        &format!("date=2025-06-01&timezone=Europe/Berlin&agent_id={second}"),
    )
    .await;
    assert_eq!(r["dispositions"], json!({ "voicemail": 1 }));

    // The other tenant's report holds their run only.
    let r = report(&app, &other, "date=2025-06-01").await;
    assert_eq!(r["total_calls"], 1);

    for (query, status, field) in [
        (format!("date=2025-06-01&agent_id={theirs}"), 404, ""),
        ("date=2025-06-01&agent_id=nope".to_string(), 400, "agent_id"),
        (
            "date=2025-06-01&timezone=Mars/Olympus".to_string(),
            400,
            "timezone",
        ),
        (
            "date=2025-06-01&timezone=%2E%2E%2Fetc%2Fpasswd".to_string(),
            400,
            "timezone",
        ),
        ("timezone=UTC".to_string(), 400, "date"),
        ("date=2025-02-30".to_string(), 400, "date"),
        ("date=20250601".to_string(), 400, "date"),
        ("date=9999-12-31".to_string(), 400, "date"),
    ] {
        for path in ["/api/reports/daily", "/api/reports/download"] {
            let (got, body) = get(&app, &format!("{path}?{query}"), Some(&t.token)).await;
            assert_eq!(got, status, "{path}?{query}: {body}");
            assert_eq!(body["success"], false, "{path}?{query}: {body}");
            assert_eq!(first_field(&body), field, "{path}?{query}: {body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_dst_day_lasts_23_or_25_hours() {
    let app = app().await;
    let t = tenant(&app, "dst@example.com").await;
    let agent = create_agent(&app, &t, "Clock").await;
    let run = |done: &str| {
        insert_run(
            &app,
            NewRun {
                agent: &agent,
                created_at: "2025-03-01T00:00:00.000Z",
                completed_at: Some(done),
                secs: 20,
                ..NewRun::default()
            },
        )
    };
    // Spring forward in Berlin, 30 March 2025: 23:00Z on the 29th to 22:00Z
    // on the 30th. A fixed 24-hour day would take the last one in too.
    run("2025-03-29T22:59:59.999Z"); // 23:59:59 on the 29th there
    run("2025-03-29T23:00:00.000Z"); // 00:00 on the 30th
    run("2025-03-30T21:59:59.000Z"); // 23:59:59 (summer time)
    run("2025-03-30T22:00:00.000Z"); // 00:00 on the 31st
    let r = report(&app, &t, "date=2025-03-30&timezone=Europe/Berlin").await;
    assert_eq!(r["window"]["hours"], 23.0, "{r}");
    assert_eq!(r["total_calls"], 2, "{r}");
    let r = report(&app, &t, "date=2025-03-31&timezone=Europe/Berlin").await;
    assert_eq!(r["total_calls"], 1, "{r}");

    // Fall back, 26 October 2025: 22:00Z on the 25th to 23:00Z on the 26th.
    // A fixed 24-hour day would leave the last one out.
    run("2025-10-25T22:00:00.000Z"); // 00:00 on the 26th (summer time)
    run("2025-10-26T22:30:00.000Z"); // 23:30 on the 26th (winter time)
    run("2025-10-26T23:00:00.000Z"); // 00:00 on the 27th
    let r = report(&app, &t, "date=2025-10-26&timezone=Europe/Berlin").await;
    assert_eq!(r["window"]["hours"], 25.0, "{r}");
    assert_eq!(r["total_calls"], 2, "{r}");
    // New York changes on other days: 9 March 2025 lasts 23 hours there.
    let r = report(&app, &t, "date=2025-03-09&timezone=America/New_York").await;
    assert_eq!(r["window"]["hours"], 23.0, "{r}");
    app.stop().await;
}

#[tokio::test]
async fn the_csv_download_quotes_fields_and_neutralises_formulas() {
    let app = app().await;
    let t = tenant(&app, "csv@example.com").await;
    let other = tenant(&app, "csv-other@example.com").await;
    let quoted = create_agent(&app, &t, "Sales, \"East\"").await;
    let formula = create_agent(&app, &t, "=HYPERLINK(\"http://x\")").await;
    let theirs = create_agent(&app, &other, "Theirs").await;
    let first = insert_run(
        &app,
        NewRun {
            agent: &quoted,
            phone: Some("+14155550100"),
            disposition: Some("transfer"),
            completed_at: Some("2025-06-01T00:00:00.000Z"),
            secs: 60,
            ..NewRun::default()
        },
    );
    let second = insert_run(
        &app,
        NewRun {
            agent: &formula,
            disposition: Some("@evil"),
            completed_at: Some("2025-06-01T10:15:00.000Z"),
            secs: 15,
            ..NewRun::default()
        },
    );
    insert_run(
        &app,
        NewRun {
            agent: &theirs,
            completed_at: Some("2025-06-01T10:00:00.000Z"),
            secs: 15,
            ..NewRun::default()
        },
    );

    let res = app
        .client
        .get(app.url("/api/reports/download?date=2025-06-01&timezone=Europe/Berlin"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        header("content-disposition").as_deref(),
        Some("attachment; filename=\"voxflow-report-2025-06-01.csv\"")
    );
    let body = res.text().await.unwrap();
    let expected = format!(
        "Run ID,Agent Name,Phone,Disposition,Date,Duration,Tokens\r\n\
         {first},\"Sales, \"\"East\"\"\",'+14155550100,transfer,2025-06-01T02:00:00+02:00,60,0.78\r\n\
         {second},\"'=HYPERLINK(\"\"http://x\"\")\",,'@evil,2025-06-01T12:15:00+02:00,15,0.20\r\n"
    );
    assert_eq!(body, expected);

    // The same runs as the JSON report.
    let r = report(&app, &t, "date=2025-06-01&timezone=Europe/Berlin").await;
    assert_eq!(r["total_calls"], 2);

    // A day without runs is the header alone.
    let res = app
        .client
        .get(app.url("/api/reports/download?date=2024-02-29"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.text().await.unwrap(),
        "Run ID,Agent Name,Phone,Disposition,Date,Duration,Tokens\r\n"
    );
    // Errors stay JSON envelopes.
    let res = app
        .client
        .get(app.url("/api/reports/download?date=2025-06-01&timezone=Nowhere"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let (status, _) = get(&app, "/api/reports/download?date=2025-06-01", None).await;
    assert_eq!(status, 401);
    app.stop().await;
}

async fn dashboard_of(app: &TestApp, who: &Tenant) -> Value {
    let (status, body) = get(app, "/api/usage/dashboard", Some(&who.token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Sets the tenant's LLM model, starts a web call and has one answered
/// turn; the run's id.
async fn one_turn_with(app: &TestApp, who: &Tenant, agent: &str, model: &str) -> String {
    let (status, body) = post(
        app,
        "/api/config/service",
        Some(&who.token),
        json!({ "llm_model": model }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (run, _) = start_call(app, who, agent).await;
    let (status, body) = crate::calls::say(app, who, &run, "One question").await;
    assert_eq!(status, 200, "{body}");
    run
}

/// Micro-dollars as a figure the API shows in dollars, back to micro-dollars.
fn micros(dollars: &Value) -> i64 {
    (dollars
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {dollars}"))
        * 1e6)
        .round() as i64
}

/// What the stand-in's turn cost at `input`/`output` dollars per million
/// tokens, in micro-dollars rounded half up, computed here from the figures
/// the stand-in sent.
fn turn_micros(seen: &crate::calls::Seen, input: f64, output: f64) -> i64 {
    let (i, o) = ((input * 1e6).round() as i64, (output * 1e6).round() as i64);
    (seen.prompt_tokens as i64 * i + seen.completion_tokens as i64 * o + 500_000) / 1_000_000
}

#[tokio::test]
async fn api_costs_are_the_sum_of_the_recorded_llm_turns() {
    let stub = crate::calls::LlmStub::start().await;
    let base = stub.base.clone();
    let app = TestApp::start_with(move |c| {
        c.groq_base_url = base;
        c.groq_api_key = Some("gsk_usage_tests_server_key".into());
        // The operator prices one model differently from the built-in list.
        c.llm_prices = Some(
            voxflow::providers::llm_prices::PriceTable::parse(
                r#"{"llama-3.1-8b-instant": {"input": 2.5, "output": 7.25}}"#,
            )
            .unwrap(),
        );
    })
    .await;
    let t = tenant(&app, "costs@example.com").await;
    let agent = create_agent(&app, &t, "Costly").await;

    // Three turns on the default model, Groq's llama-3.3-70b-versatile at
    // its list price ($0.59 in, $0.79 out per million tokens).
    let (run, _) = start_call(&app, &t, &agent).await;
    for n in 1..=3 {
        let (status, body) =
            crate::calls::say(&app, &t, &run, &format!("Question number {n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    backdate_start(&app, &run, 60);
    let (status, ended) = end(&app, &t, &run, json!({})).await;
    assert_eq!(status, 200, "{ended}");
    let seen = stub.seen();
    let expected: Vec<i64> = seen.iter().map(|s| turn_micros(s, 0.59, 0.79)).collect();
    let first_call: i64 = expected.iter().sum();
    assert!(first_call > 0);

    // The run shows each turn's tokens and cost, as the stand-in counted them.
    let usage = &ended["data"]["llm_usage"];
    let turns = usage["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    for (turn, (s, cost)) in turns.iter().zip(seen.iter().zip(&expected)) {
        assert_eq!(turn["model"], "llama-3.3-70b-versatile");
        assert_eq!(turn["provider"], "groq");
        assert_eq!(turn["prompt_tokens"], s.prompt_tokens);
        assert_eq!(turn["completion_tokens"], s.completion_tokens);
        assert_eq!(turn["cost_micros"], *cost);
        assert_eq!(micros(&turn["cost"]), *cost);
        assert_eq!(turn["priced"], true);
    }
    assert_eq!(usage["cost_micros"], first_call);
    assert_eq!(
        usage["prompt_tokens"],
        seen.iter().map(|s| s.prompt_tokens).sum::<u64>()
    );
    assert_eq!(usage["priced"], true);

    // The dashboard, its day, the history and the report all say the same.
    let d = dashboard_of(&app, &t).await;
    assert_eq!(micros(&d["costs"]), first_call, "{d}");
    let today = d["daily"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(micros(&today["costs"]), first_call, "{today}");
    let (_, h) = get(&app, "/api/usage/history", Some(&t.token)).await;
    assert_eq!(micros(&h["data"][0]["api_costs"]), first_call, "{h}");
    let r = report(&app, &t, &format!("date={}", utc_today())).await;
    assert_eq!(micros(&r["total_api_costs"]), first_call, "{r}");

    // The operator's price for llama-3.1-8b-instant, not the built-in one.
    let run2 = one_turn_with(&app, &t, &agent, "llama-3.1-8b-instant").await;
    let s = stub.seen().last().unwrap().clone();
    let second_call = turn_micros(&s, 2.5, 7.25);
    assert_eq!(end(&app, &t, &run2, json!({})).await.0, 200);

    // A model no table knows costs 0 and says so.
    let run3 = one_turn_with(&app, &t, &agent, "acme-private-13b").await;
    let (_, r3) = get(&app, &format!("/api/calls/run/{run3}"), Some(&t.token)).await;
    let unpriced = &r3["data"]["llm_usage"];
    assert_eq!(unpriced["turns"][0]["model"], "acme-private-13b");
    assert_eq!(unpriced["turns"][0]["priced"], false);
    assert_eq!(unpriced["turns"][0]["cost_micros"], 0);
    assert!(unpriced["turns"][0]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(unpriced["priced"], false);
    assert_eq!(end(&app, &t, &run3, json!({})).await.0, 200);

    let total = first_call + second_call;
    let d = dashboard_of(&app, &t).await;
    assert_eq!(micros(&d["costs"]), total, "{d}");
    let r = report(&app, &t, &format!("date={}", utc_today())).await;
    assert_eq!(micros(&r["total_api_costs"]), total, "{r}");
    let (_, h) = get(&app, "/api/usage/history", Some(&t.token)).await;
    let by_run: Vec<i64> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| micros(&r["api_costs"]))
        .collect();
    assert_eq!(by_run, vec![0, second_call, first_call], "newest first");
    // The ledger itself, as an auditor would sum it.
    let ledger: i64 = db(&app)
        .query_row(
            "SELECT sum(cost_micros) FROM llm_usage WHERE user_id = ?1",
            [&t.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ledger, total);
    app.stop().await;
}
