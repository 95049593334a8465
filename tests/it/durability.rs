//! A crash (kill -9) at any moment loses no acknowledged write and leaves the
//! database consistent, with the writer committing writes in batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{spawn_serve, voxflow_cmd, ADMIN_EMAIL, ADMIN_PASSWORD};

/// Enough concurrent writers that the writer's queue holds several writes
/// whenever it commits, so commits carry batches.
const WRITERS: usize = 32;
/// The kill comes once this many writes were acknowledged: writes are then
/// in flight, some inside a batch not yet committed.
const KILL_AFTER: usize = 300;

/// The sum and count of the writer's batch-size histogram in a scrape.
fn batch_sizes(scrape: &str) -> (f64, f64) {
    let value = |name: &str| {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("voxflow_db_writer_batch_jobs_sum "),
        value("voxflow_db_writer_batch_jobs_count "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("VOXFLOW_RATE_LIMIT", "off"),
    ];
    let mut bin = spawn_serve(dir.path(), &envs);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let login: Value = client
        .post(bin.url("/api/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let admin_id = login["data"]["user"]["id"].as_str().unwrap().to_string();
    let res = client
        .put(bin.url(&format!("/api/admin/users/{admin_id}/limits")))
        .bearer_auth(&token)
        .json(&json!({"max_agents": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Writers keep creating agents until the server dies under them.
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, token) = (client.clone(), token.clone());
        let url = bin.url("/api/agents");
        let count = acknowledged_count.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..30 {
                let name = format!("w{w}-{i}");
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(
                        &json!({"name": name, "type": "INBOUND", "use_case": "durability",
                                  "description": "Answers the phone during the crash test"}),
                    )
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acknowledged.push(name);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    while acknowledged_count.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let scrape = client
        .get(bin.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    bin.child.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint
    bin.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(acknowledged.len() >= KILL_AFTER);
    let (jobs, commits) = batch_sizes(&scrape);
    assert!(
        commits > 0.0 && jobs > commits,
        "the writes were not batched: {jobs} jobs in {commits} commits"
    );

    // The database is consistent as it was left, before anything repairs it.
    let out = voxflow_cmd(dir.path()).arg("verify").output().unwrap();
    assert!(
        out.status.success(),
        "verify after kill -9 ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every acknowledged agent is there, and the server starts on the file.
    let bin = spawn_serve(dir.path(), &envs);
    let conn = rusqlite::Connection::open(voxflow::config::db_path(dir.path())).unwrap();
    for name in &acknowledged {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM agents WHERE name = ?1 AND user_id = ?2",
                [name, &admin_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{name} was acknowledged, then lost");
    }
    let res = client
        .post(bin.url("/api/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
