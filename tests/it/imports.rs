//! Campaign imports within the tenant's plan: contacts per campaign and per
//! day, one import at a time, and the staged campaign no one sees until
//! its last chunk is written.

use reqwest::StatusCode;
use serde_json::Value;

use crate::agents::{create_agent, db, set_tier, tenant, Tenant};
use crate::auth::{delete, get};
use crate::campaigns::upload;
use crate::common::{spawn_serve, TestApp, ADMIN_PASSWORD};

/// `n` distinct contacts, numbered from `first`.
fn csv(first: usize, n: usize) -> Vec<u8> {
    let mut csv = String::from("phone,first_name\n");
    for i in first..first + n {
        csv.push_str(&format!("+1415{i:07},Name{i}\n"));
    }
    csv.into_bytes()
}

async fn import(
    app: &TestApp,
    who: &Tenant,
    agent: &str,
    first: usize,
    n: usize,
) -> (StatusCode, Value) {
    upload(app, who, "List", agent, &csv(first, n)).await
}

fn contacts_of(app: &TestApp, campaign: &str) -> i64 {
    db(app)
        .query_row(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = ?1",
            [campaign],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn plans_cap_contacts_per_campaign_and_per_day() {
    let app = TestApp::start().await;
    let t = tenant(&app, "capped@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    // Free: 1,000 contacts a campaign, 2,000 a day.
    let (status, body) = import(&app, &t, &agent, 0, 1001).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "CONTACT_LIMIT_REACHED");
    assert_eq!(body["limits_info"]["max_contacts_per_campaign"], 1000);
    let (status, body) = import(&app, &t, &agent, 0, 1000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(contacts_of(&app, &first), 1000);
    let (status, body) = import(&app, &t, &agent, 1000, 1000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = import(&app, &t, &agent, 2000, 1).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "DAILY_IMPORT_LIMIT_REACHED");
    assert_eq!(body["limits_info"]["imported_last_24h"], 2000);
    // Deleting a campaign does not give its contacts back to the day.
    let (status, _) = delete(&app, &format!("/api/campaigns/{first}"), Some(&t.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = import(&app, &t, &agent, 2000, 1).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Other tenants and other plans have their own allowance.
    let other = tenant(&app, "other@example.com").await;
    let other_agent = create_agent(&app, &other, "Vera").await;
    let (status, body) = import(&app, &other, &other_agent, 0, 1000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    set_tier(&app, &t, "pro").await;
    let (status, body) = import(&app, &t, &agent, 0, 2500).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Several chunks, shown whole.
    let id = body["data"]["id"].as_str().unwrap();
    assert_eq!(contacts_of(&app, id), 2500);
    assert_eq!(body["data"]["import"]["imported"], 2500);
    app.stop().await;
}

/// Inserts a staged (still importing) campaign of `who`, as an import
/// under way has; `age_secs` old.
fn staged_campaign(conn: &rusqlite::Connection, who: &str, agent: &str, age_secs: i64) -> String {
    let id: String = conn
        .query_row(
            "INSERT INTO campaigns (user_id, name, agent_id, source_type, created_at)
             VALUES (?1, 'Half', ?2, 'csv:importing', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3))
             RETURNING id",
            rusqlite::params![who, agent, format!("-{age_secs} seconds")],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, phone_number) VALUES (?1, '+14155550100')",
        [&id],
    )
    .unwrap();
    id
}

#[tokio::test]
async fn an_import_under_way_is_invisible_and_one_at_a_time() {
    let app = TestApp::start().await;
    let t = tenant(&app, "staged@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;
    let half = staged_campaign(&db(&app), &t.id, &agent, 5);
    let (status, body) = get(&app, "/api/campaigns", Some(&t.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 0, "{body}");
    let (status, _) = get(&app, &format!("/api/campaigns/{half}"), Some(&t.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(
        &app,
        &format!("/api/campaigns/{half}/contacts"),
        Some(&t.token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = import(&app, &t, &agent, 0, 10).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "IMPORT_IN_PROGRESS");
    // Another tenant imports meanwhile.
    let other = tenant(&app, "meanwhile@example.com").await;
    let other_agent = create_agent(&app, &other, "Vera").await;
    assert_eq!(
        import(&app, &other, &other_agent, 0, 10).await.0,
        StatusCode::CREATED
    );

    // Staged for longer than any import takes: abandoned, removed by the
    // tenant's next import, which goes ahead.
    db(&app)
        .execute(
            "UPDATE campaigns SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-11 minutes') WHERE id = ?1",
            [&half],
        )
        .unwrap();
    let (status, body) = import(&app, &t, &agent, 0, 10).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(contacts_of(&app, &half), 0);
    let gone: i64 = db(&app)
        .query_row(
            "SELECT count(*) FROM campaigns WHERE id = ?1",
            [&half],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gone, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_removes_imports_left_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let mut bin = spawn_serve(dir.path(), &envs);
    assert!(bin.terminate().success());
    let conn = rusqlite::Connection::open(voxflow::config::db_path(dir.path())).unwrap();
    let admin: String = conn
        .query_row("SELECT id FROM users LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let agent: String = conn
        .query_row(
            "INSERT INTO agents (user_id, name, type, use_case, description) VALUES (?1, 'Vera', 'INBOUND', 'x', 'y') RETURNING id",
            [&admin],
            |r| r.get(0),
        )
        .unwrap();
    staged_campaign(&conn, &admin, &agent, 1);
    drop(conn);
    let mut bin = spawn_serve(dir.path(), &envs);
    assert!(bin.terminate().success());
    let conn = rusqlite::Connection::open(voxflow::config::db_path(dir.path())).unwrap();
    let (campaigns, contacts): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM campaigns), (SELECT count(*) FROM campaign_contacts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((campaigns, contacts), (0, 0));
}
