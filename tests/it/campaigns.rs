//! Campaigns: the CSV import (normalisation, duplicates, bad rows, limits),
//! tenant isolation, every state transition, progress, and delete.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::agents::{create_agent, db, set_tier, tenant, Tenant};
use crate::auth::{call, delete, get, post};
use crate::common::TestApp;
use crate::phone::{ready_tenant, save_twilio, TwilioStub, PUBLIC};

pub const BOUNDARY: &str = "----voxflow-test-boundary";

/// A `multipart/form-data` body of `(field, value)` parts; the part named
/// `file` is sent as a file.
pub fn form_body(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if *name == "file" {
            body.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"contacts.csv\"\r\nContent-Type: text/csv\r\n\r\n",
            );
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn send(
    app: &TestApp,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/campaigns"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn upload(
    app: &TestApp,
    who: &Tenant,
    name: &str,
    agent: &str,
    csv: &[u8],
) -> (StatusCode, Value) {
    let body = form_body(&[
        ("name", name.as_bytes()),
        ("agent_id", agent.as_bytes()),
        ("file", csv),
    ]);
    send(
        app,
        &who.token,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body,
    )
    .await
}

/// Uploads a campaign made of multipart `parts`.
async fn upload_parts(app: &TestApp, who: &Tenant, parts: &[(&str, &[u8])]) -> (StatusCode, Value) {
    send(
        app,
        &who.token,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form_body(parts),
    )
    .await
}

/// Creates a campaign and returns its id.
async fn campaign(app: &TestApp, who: &Tenant, agent: &str, csv: &str) -> String {
    let (status, body) = upload(app, who, "Spring recall", agent, csv.as_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

fn count(app: &TestApp, sql: &str) -> i64 {
    db(app).query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn import_normalises_numbers_drops_duplicates_and_reports_bad_rows() {
    let app = TestApp::start().await;
    let t = tenant(&app, "importer@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    let csv = "PHONE,First,LASTNAME\r\n\
               +1 (415) 555-0101,Ann,Lee\r\n\
               0044 20 7946 0958,Bo,\r\n\
               415.555.0102,,\r\n\
               +14155550101,Ann,Again\r\n\
               12345,Short,Number\r\n\
               ,No,Phone\r\n\
               \r\n\
               \"=HYPERLINK(\"\"http://evil\"\")\",x,y\r\n\
               +33 6 12 34 56 78,\"=cmd|' /C calc'!A0\",\"Zoë \"\"Q\"\", 😀 <b>\"\r\n";
    let (status, body) = upload(&app, &t, "  Spring recall  ", &agent, csv.as_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let data = &body["data"];
    assert_eq!(data["name"], "Spring recall");
    assert_eq!(data["state"], "created");
    assert_eq!(data["agent_id"], agent.as_str());
    let import = &data["import"];
    assert_eq!(import["rows"], 8, "{import}");
    assert_eq!(import["imported"], 4);
    assert_eq!(import["duplicates"], 1);
    assert_eq!(import["invalid_count"], 3);
    let rows: Vec<i64> = import["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_i64().unwrap())
        .collect();
    // The header is row 1, and the blank line 8 still counts.
    assert_eq!(rows, [6, 7, 9], "{import}");
    assert!(import["invalid"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("E.164"));
    assert_eq!(data["contacts"]["total"], 4);
    assert_eq!(data["contacts"]["pending"], 4);

    let id = data["id"].as_str().unwrap();
    let (status, list) = get(
        &app,
        &format!("/api/campaigns/{id}/contacts"),
        Some(&t.token),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let contacts = list["data"].as_array().unwrap();
    let numbers: Vec<&str> = contacts
        .iter()
        .map(|c| c["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [
            "+14155550101",
            "+442079460958",
            "+14155550102",
            "+33612345678"
        ]
    );
    assert_eq!(contacts[0]["first_name"], "Ann");
    assert_eq!(contacts[1]["last_name"], Value::Null);
    // Hostile cells are kept as the text they are.
    assert_eq!(contacts[3]["first_name"], "=cmd|' /C calc'!A0");
    assert_eq!(contacts[3]["last_name"], "Zoë \"Q\", 😀 <b>");
    assert_eq!(contacts[0]["status"], "pending");
    assert_eq!(list["pagination"]["total"], 4);
    let audits = count(
        &app,
        "SELECT count(*) FROM admin_audit_logs WHERE action = 'create_campaign'",
    );
    assert_eq!(audits, 1);
    app.stop().await;
}

#[tokio::test]
async fn header_names_have_aliases_in_any_case() {
    let app = TestApp::start().await;
    let t = tenant(&app, "aliases@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    for header in [
        "Phone_Number,First_Name,Last_Name",
        "phone,first,last",
        "LastName,PHONE,FIRSTNAME",
    ] {
        let cells: Vec<&str> = header.split(',').collect();
        let row: Vec<&str> = cells
            .iter()
            .map(|h| match h.to_lowercase().as_str() {
                h if h.starts_with("phone") => "4155550123",
                h if h.starts_with("first") => "Ann",
                _ => "Lee",
            })
            .collect();
        let csv = format!("{header}\n{}\n", row.join(","));
        let id = campaign(&app, &t, &agent, &csv).await;
        let (_, list) = get(
            &app,
            &format!("/api/campaigns/{id}/contacts"),
            Some(&t.token),
        )
        .await;
        let c = &list["data"][0];
        assert_eq!(c["phone_number"], "+14155550123", "{header}");
        assert_eq!(c["first_name"], "Ann", "{header}");
        assert_eq!(c["last_name"], "Lee", "{header}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_and_write_nothing() {
    let app = TestApp::start().await;
    let t = tenant(&app, "refused@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    let other = tenant(&app, "someone@example.com").await;
    let theirs = create_agent(&app, &other, "Theirs").await;

    let (status, body) = upload(&app, &t, "No valid", &agent, b"phone\nabc\n123\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["import"]["invalid_count"], 2);
    assert_eq!(body["import"]["invalid"][1]["row"], 3);

    let (status, body) = upload(&app, &t, "No phone", &agent, b"name,first\nAnn,Lee\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "file");
    assert!(
        body["message"].as_str().unwrap().contains("phone_number"),
        "{body}"
    );

    let (status, body) = upload(
        &app,
        &t,
        "Latin-1",
        &agent,
        b"phone,first\n+14155550123,Zo\xeb\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "NOT_UTF8");

    let (status, body) = upload(&app, &t, "X", &agent, b"phone\n+14155550123\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "name");

    let (status, body) = upload(&app, &t, "Theirs", &theirs, b"phone\n+14155550123\n").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = send(
        &app,
        &t.token,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form_body(&[("name", b"Only a name")]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["agent_id", "file"]);

    let (status, body) = post(
        &app,
        "/api/campaigns",
        Some(&t.token),
        serde_json::json!({"name": "Json"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body["success"], false);

    let (status, body) = send(
        &app,
        &t.token,
        "multipart/form-data; boundary=x",
        b"garbage".to_vec(),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert_eq!(body["success"], false);

    // Over 10 MB: a 413 in the envelope, and the other routes keep 1 MiB.
    let mut big = b"phone\n".to_vec();
    while big.len() <= 10 * 1024 * 1024 {
        big.extend_from_slice(b"+14155550123\n");
    }
    let (status, body) = upload(&app, &t, "Too big", &agent, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    let res = app
        .client
        .post(app.url("/api/agents"))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(count(&app, "SELECT count(*) FROM campaigns"), 0);
    assert_eq!(count(&app, "SELECT count(*) FROM campaign_contacts"), 0);

    // Just under the limit, a file of many rows (mostly duplicates) imports.
    big.truncate(9 * 1024 * 1024);
    big.truncate(big.iter().rposition(|b| *b == b'\n').unwrap() + 1);
    let (status, body) = upload(&app, &t, "Large", &agent, &big).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["import"]["imported"], 1);
    app.stop().await;
}

/// A server that can start campaigns (a public URL and a server LLM key)
/// and whose Twilio is the stand-in, which places every call asked for.
async fn dialing_app() -> (TestApp, TwilioStub) {
    let twilio = TwilioStub::start().await;
    let base = twilio.base.clone();
    let app = TestApp::start_with(move |c| {
        c.public_url = Some(PUBLIC.into());
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.twilio_base_url = base;
    })
    .await;
    (app, twilio)
}

pub async fn act(app: &TestApp, who: &Tenant, id: &str, action: &str) -> (StatusCode, Value) {
    call(
        app,
        Method::POST,
        &format!("/api/campaigns/{id}/{action}"),
        Some(&who.token),
        None,
    )
    .await
}

async fn state_of(app: &TestApp, who: &Tenant, id: &str) -> String {
    let (_, body) = get(app, &format!("/api/campaigns/{id}"), Some(&who.token)).await;
    body["data"]["state"].as_str().unwrap().to_string()
}

const CSV: &str = "phone,first\n+14155550101,A\n+14155550102,B\n+14155550103,C\n+14155550104,D\n";

#[tokio::test]
async fn every_transition_is_legal_or_a_409_naming_the_state() {
    let (app, _twilio) = dialing_app().await;
    let (t, agent) = ready_tenant(&app, "states@example.com").await;
    let a = campaign(&app, &t, &agent, CSV).await;
    let b = campaign(&app, &t, &agent, CSV).await;

    // From created: only start.
    for action in ["pause", "resume", "stop"] {
        let (status, body) = act(&app, &t, &a, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["state"], "created");
        assert!(
            body["message"].as_str().unwrap().contains("created"),
            "{body}"
        );
    }
    for id in [&a, &b] {
        let (status, body) = act(&app, &t, id, "start").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["state"], "running");
    }
    // From running: pause or stop.
    for action in ["start", "resume"] {
        let (status, body) = act(&app, &t, &a, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["state"], "running");
    }
    let (status, body) = delete(&app, &format!("/api/campaigns/{a}"), Some(&t.token)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = act(&app, &t, &a, "pause").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "paused");
    // Pausing one campaign touches no other.
    assert_eq!(state_of(&app, &t, &b).await, "running");

    // From paused: resume or stop.
    for action in ["start", "pause"] {
        let (status, body) = act(&app, &t, &a, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["state"], "paused");
    }
    let (status, body) = act(&app, &t, &a, "resume").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "running");
    act(&app, &t, &a, "pause").await;
    let (status, body) = act(&app, &t, &a, "stop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "stopped");
    let (status, body) = act(&app, &t, &b, "stop").await;
    assert_eq!(status, 200, "{body}");

    // Stopped is final.
    for action in ["start", "pause", "resume", "stop"] {
        let (status, body) = act(&app, &t, &a, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["state"], "stopped");
    }

    // Running with no contact left to call: completed, which is final too.
    let c = campaign(&app, &t, &agent, CSV).await;
    db(&app)
        .execute(
            "UPDATE campaign_contacts SET status = 'reached' WHERE campaign_id = ?1",
            [&c],
        )
        .unwrap();
    let (status, body) = act(&app, &t, &c, "start").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "completed");
    for action in ["start", "pause", "resume", "stop"] {
        let (status, body) = act(&app, &t, &c, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["state"], "completed");
    }

    let audited = count(
        &app,
        "SELECT count(DISTINCT action) FROM admin_audit_logs WHERE action IN ('start_campaign', 'pause_campaign', 'resume_campaign', 'stop_campaign')",
    );
    assert_eq!(audited, 4);

    // Stopped and completed campaigns may be deleted, with their contacts.
    for id in [&a, &c] {
        let (status, body) = delete(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM campaign_contacts"), 4);
    app.stop().await;
}

#[tokio::test]
async fn starting_needs_what_a_phone_call_needs() {
    let (app, _twilio) = dialing_app().await;
    let t = tenant(&app, "free@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    let id = campaign(&app, &t, &agent, CSV).await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "TIER_FEATURE");
    set_tier(&app, &t, "pro").await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "SETUP_REQUIRED");
    assert_eq!(state_of(&app, &t, &id).await, "created");
    save_twilio(&app, &t).await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;

    // Without a public URL Twilio could not reach the calls.
    let app = TestApp::start_with(|c| {
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
    })
    .await;
    let (t, agent) = ready_tenant(&app, "nourl@example.com").await;
    let id = campaign(&app, &t, &agent, CSV).await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "SETUP_REQUIRED");
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_campaign_is_a_404_on_every_route() {
    let (app, _twilio) = dialing_app().await;
    let (owner, agent) = ready_tenant(&app, "owner@example.com").await;
    let (intruder, _) = ready_tenant(&app, "intruder@example.com").await;
    let id = campaign(&app, &owner, &agent, CSV).await;
    for (method, path) in [
        (Method::GET, format!("/api/campaigns/{id}")),
        (Method::GET, format!("/api/campaigns/{id}/contacts")),
        (Method::POST, format!("/api/campaigns/{id}/start")),
        (Method::POST, format!("/api/campaigns/{id}/pause")),
        (Method::POST, format!("/api/campaigns/{id}/resume")),
        (Method::POST, format!("/api/campaigns/{id}/stop")),
        (Method::DELETE, format!("/api/campaigns/{id}")),
    ] {
        let (status, body) = call(&app, method.clone(), &path, Some(&intruder.token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["success"], false);
    }
    let (_, list) = get(&app, "/api/campaigns", Some(&intruder.token)).await;
    assert_eq!(list["pagination"]["total"], 0);
    let (_, list) = get(
        &app,
        &format!("/api/campaigns?agent_id={agent}"),
        Some(&intruder.token),
    )
    .await;
    assert_eq!(list["pagination"]["total"], 0);
    assert_eq!(state_of(&app, &owner, &id).await, "created");
    let (status, _) = get(&app, "/api/campaigns/not-a-uuid", Some(&owner.token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn progress_counts_and_filters() {
    let (app, _twilio) = dialing_app().await;
    let (t, agent) = ready_tenant(&app, "progress@example.com").await;
    let other_agent = create_agent(&app, &t, "Second").await;
    let id = campaign(&app, &t, &agent, CSV).await;
    let second = campaign(&app, &t, &other_agent, CSV).await;
    let conn = db(&app);
    conn.execute(
        "UPDATE campaign_contacts SET status = 'reached' WHERE campaign_id = ?1 AND phone_number IN ('+14155550101', '+14155550102')",
        [&id],
    )
    .unwrap();
    conn.execute(
        "UPDATE campaign_contacts SET status = 'failed' WHERE campaign_id = ?1 AND phone_number = '+14155550103'",
        [&id],
    )
    .unwrap();
    let (status, body) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
    assert_eq!(status, 200, "{body}");
    let p = &body["data"]["progress"];
    assert_eq!(
        (
            p["pending"].as_i64(),
            p["called"].as_i64(),
            p["failed"].as_i64()
        ),
        (Some(1), Some(2), Some(1)),
        "{p}"
    );
    assert_eq!(p["success_rate"], 66.7);
    let (_, body) = get(&app, &format!("/api/campaigns/{second}"), Some(&t.token)).await;
    assert_eq!(body["data"]["progress"]["success_rate"], 0.0);

    let (_, list) = get(
        &app,
        &format!("/api/campaigns/{id}/contacts?status=called&limit=1"),
        Some(&t.token),
    )
    .await;
    assert_eq!(list["pagination"]["total"], 2);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = get(
        &app,
        &format!("/api/campaigns/{id}/contacts?status=nope"),
        Some(&t.token),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    act(&app, &t, &second, "start").await;
    let (_, list) = get(&app, "/api/campaigns", Some(&t.token)).await;
    assert_eq!(list["pagination"]["total"], 2);
    let mine = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["contacts"]["called"], 2);
    assert_eq!(mine["contacts"]["total"], 4);
    let (_, list) = get(&app, "/api/campaigns?state=running", Some(&t.token)).await;
    assert_eq!(list["pagination"]["total"], 1);
    assert_eq!(list["data"][0]["id"], second.as_str());
    let (_, list) = get(
        &app,
        &format!("/api/campaigns?agent_id={agent}"),
        Some(&t.token),
    )
    .await;
    assert_eq!(list["pagination"]["total"], 1);
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (status, _) = get(&app, "/api/campaigns?state=flying", Some(&t.token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// Waits (up to 10 s) until `sql` counts `want`.
async fn wait_for(app: &TestApp, sql: &str, want: i64) {
    for _ in 0..100 {
        if count(app, sql) == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{sql} never counted {want} (now {})", count(app, sql));
}

#[tokio::test]
async fn running_campaigns_call_their_contacts_and_complete() {
    let (app, twilio) = dialing_app().await;
    let (t, agent) = ready_tenant(&app, "dialer@example.com").await;
    let id = campaign(&app, &t, &agent, "phone\n+14155550101\n+14155550102\n").await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 200, "{body}");
    // The pro plan's five calls at once: both contacts are dialled, one a
    // second, without waiting for the first call to end.
    let dialing = "SELECT count(*) FROM campaign_contacts WHERE status = 'dialing' AND agent_run_id IS NOT NULL AND attempts = 1";
    wait_for(&app, dialing, 2).await;
    let placed = twilio.seen();
    assert_eq!(placed.len(), 2);
    assert_eq!(placed[0].field("To"), Some("+14155550101"));
    assert_eq!(placed[1].field("To"), Some("+14155550102"));
    let run_of_campaign = format!(
        "SELECT count(*) FROM agent_runs WHERE campaign_id = '{id}' AND type = 'PHONE_CALL'"
    );
    assert_eq!(count(&app, &run_of_campaign), 2);

    // The calls end (as Twilio's status callback would end them): the
    // contacts are reached and the campaign is completed.
    let end = "UPDATE agent_runs SET status = 'completed', duration_seconds = 5 WHERE status = 'in_progress'";
    db(&app).execute(end, []).unwrap();
    wait_for(
        &app,
        &format!("SELECT count(*) FROM campaigns WHERE id = '{id}' AND state = 'completed'"),
        1,
    )
    .await;
    let (_, body) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
    assert_eq!(body["data"]["progress"]["reached"], 2, "{body}");
    assert_eq!(body["data"]["progress"]["success_rate"], 100.0);

    // Twilio refusing every number, with no retries: each contact fails,
    // and the campaign ends.
    twilio.refuse_with(400);
    let (status, created) = upload_parts(
        &app,
        &t,
        &[
            ("name", b"Refused"),
            ("agent_id", agent.as_bytes()),
            ("max_retries", b"0"),
            ("file", b"phone\n+14155550103\n+14155550104\n"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["settings"]["max_retries"], 0);
    let id = created["data"]["id"].as_str().unwrap().to_string();
    act(&app, &t, &id, "start").await;
    wait_for(
        &app,
        &format!("SELECT count(*) FROM campaigns WHERE id = '{id}' AND state = 'completed'"),
        1,
    )
    .await;
    let (_, body) = get(&app, &format!("/api/campaigns/{id}"), Some(&t.token)).await;
    assert_eq!(body["data"]["progress"]["failed"], 2, "{body}");
    assert_eq!(body["data"]["progress"]["success_rate"], 0.0);
    app.stop().await;
}

#[tokio::test]
async fn dialing_settings_are_checked_field_by_field() {
    let app = TestApp::start().await;
    let t = tenant(&app, "settings@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    for (field, value) in [
        ("max_retries", "11"),
        ("max_retries", "two"),
        ("retry_delay_seconds", "0"),
        ("min_talk_seconds", "-1"),
        ("window_start", "25:00"),
    ] {
        let (status, body) = upload_parts(
            &app,
            &t,
            &[
                ("name", b"Settings"),
                ("agent_id", agent.as_bytes()),
                (field, value.as_bytes()),
                ("file", b"phone\n+14155550101\n"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let (status, body) = upload_parts(
        &app,
        &t,
        &[
            ("name", b"Window"),
            ("agent_id", agent.as_bytes()),
            ("window_start", b"09:00"),
            ("file", b"phone\n+14155550101\n"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(count(&app, "SELECT count(*) FROM campaigns"), 0);
    let (status, body) = upload_parts(
        &app,
        &t,
        &[
            ("name", b"Window"),
            ("agent_id", agent.as_bytes()),
            ("window_start", b"09:00"),
            ("window_end", b"20:00"),
            ("retry_delay_seconds", b"600"),
            ("file", b"phone,timezone\n+14155550101,Asia/Tokyo\n"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let s = &body["data"]["settings"];
    assert_eq!(
        (
            s["window_start"].as_str(),
            s["window_end"].as_str(),
            s["retry_delay_seconds"].as_i64(),
            s["max_retries"].as_i64()
        ),
        (Some("09:00"), Some("20:00"), Some(600), Some(2))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_campaign_waits_while_the_plan_s_calls_are_all_in_use() {
    let (app, twilio) = dialing_app().await;
    let (t, agent) = ready_tenant(&app, "busy-dialer@example.com").await;
    // Pro allows five calls at once: five web calls take them all.
    let mut web = Vec::new();
    for _ in 0..5 {
        let (status, body) = post(
            &app,
            "/api/calls/web/start",
            Some(&t.token),
            serde_json::json!({ "agent_id": agent }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        web.push(body["data"]["run_id"].as_str().unwrap().to_string());
    }
    let id = campaign(&app, &t, &agent, "phone\n+14155550111\n").await;
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 409, "starting is refused like a call: {body}");
    assert_eq!(body["code"], "CONCURRENT_CALL_LIMIT");

    // One call ends: the campaign starts, and its contact is called, not failed.
    let (status, _) = post(
        &app,
        "/api/calls/web/end",
        Some(&t.token),
        serde_json::json!({ "run_id": web[0] }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = act(&app, &t, &id, "start").await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        &app,
        "SELECT count(*) FROM campaign_contacts WHERE status = 'dialing'",
        1,
    )
    .await;
    assert_eq!(twilio.seen().len(), 1);

    // A campaign already running when every call is in use (here set
    // running directly, as if its start had come just before the calls):
    // its contact stays pending instead of failing, until a call ends.
    let id2 = campaign(&app, &t, &agent, "phone\n+14155550112\n").await;
    db(&app)
        .execute(
            "UPDATE campaigns SET state = 'running' WHERE id = ?1",
            [&id2],
        )
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let pending = format!(
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = '{id2}' AND status = 'pending'"
    );
    assert_eq!(
        count(&app, &pending),
        1,
        "the contact waits for a free call"
    );
    assert_eq!(twilio.seen().len(), 1);
    let (status, _) = post(
        &app,
        "/api/calls/web/end",
        Some(&t.token),
        serde_json::json!({ "run_id": web[1] }),
    )
    .await;
    assert_eq!(status, 200);
    wait_for(&app, &pending, 0).await;
    let called = format!(
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = '{id2}' AND status = 'dialing'"
    );
    assert_eq!(count(&app, &called), 1);
    app.stop().await;
}

/// A database capped at 1 MiB (`VOXFLOW_DB_MAX_SIZE_MB`) stands in for a
/// full disk: SQLite answers both with SQLITE_FULL.
#[tokio::test]
async fn a_full_database_is_a_507_and_the_import_saves_nothing() {
    let app = TestApp::start_with(|c| c.db_max_size_mb = Some(1)).await;
    let t = tenant(&app, "full@example.com").await;
    // A plan whose campaigns hold this many contacts.
    set_tier(&app, &t, "enterprise").await;
    let agent = create_agent(&app, &t, "Vera").await;
    // About 2 MB of contacts: more than the cap holds.
    let mut csv = String::from("phone,first_name,last_name\n");
    for i in 0..40_000u32 {
        csv.push_str(&format!("+1415{i:07},Firstname{i},Lastname{i}\n"));
    }
    let (status, body) = upload(&app, &t, "Too big", &agent, csv.as_bytes()).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "STORAGE_FULL");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("free disk space"),
        "{body}"
    );
    // Nothing half-written: no campaign, no contact, no audit row.
    let (status, body) = get(&app, "/api/campaigns", Some(&t.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 0, "{body}");
    assert_eq!(count(&app, "SELECT count(*) FROM campaign_contacts"), 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM admin_audit_logs WHERE action = 'create_campaign'"
        ),
        0
    );
    // A small write still fits, and reads never stopped.
    campaign(&app, &t, &agent, "phone\n+14155550123\n").await;
    assert_eq!(get(&app, "/health", None).await.0, StatusCode::OK);
    app.stop().await;
}
