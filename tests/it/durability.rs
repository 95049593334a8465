//! A crash (kill -9) at any moment loses no acknowledged write and leaves the
//! database consistent.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::auth::PASSWORD;
use crate::common::{spawn_serve, voxflow_cmd, ADMIN_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let mut bin = spawn_serve(dir.path(), &envs);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Writers keep registering accounts until the server dies under them.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        let url = bin.url("/api/auth/register");
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..200 {
                let email = format!("w{w}-{i}@example.com");
                let res = client
                    .post(&url)
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == StatusCode::CREATED => acknowledged.push(email),
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bin.child.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint
    bin.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged before the kill"
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

    // Every acknowledged account is there and can sign in.
    let bin = spawn_serve(dir.path(), &envs);
    let conn = rusqlite::Connection::open(voxflow::config::db_path(dir.path())).unwrap();
    for email in &acknowledged {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM users u JOIN subscriptions s ON s.user_id = u.id WHERE u.email = ?1",
                [email],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            n, 1,
            "{email} was acknowledged, then lost (or lost its subscription)"
        );
    }
    let last = acknowledged.last().unwrap();
    let res = client
        .post(bin.url("/api/auth/login"))
        .json(&json!({"email": last, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
