//! A full disk, for real: a small tmpfs holds the data folder of the real
//! binary. Writes answer 507 STORAGE_FULL (never 500), readiness turns 503,
//! and once space returns both recover with no acknowledged write lost.
//! Mounting needs root; without it the test says so and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::PASSWORD;
use crate::campaigns::{form_body, BOUNDARY};
use crate::common::{after_external_write, spawn_serve, voxflow_cmd, Bin, ADMIN_PASSWORD};

/// A tmpfs mounted for the test's lifetime, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m")])
            .arg("voxflow-full-disk-test")
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs(dir)),
            Ok(out) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs here ({}); the full-disk test needs root",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(err) => {
                println!("SKIPPED: cannot run mount ({err}); the full-disk test needs root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the file system holding `dir` to the last byte; the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0xA5u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    path
}

fn contacts_csv(campaign: usize, rows: usize) -> Vec<u8> {
    let mut csv = String::from("phone,first_name,last_name\n");
    for i in 0..rows {
        csv.push_str(&format!("+1415{campaign:03}{i:04},First{i},Last{i}\n"));
    }
    csv.into_bytes()
}

async fn upload(
    client: &reqwest::Client,
    bin: &Bin,
    token: &str,
    agent: &str,
    n: usize,
) -> (StatusCode, Value) {
    let name = format!("List {n}");
    let csv = contacts_csv(n, 2000);
    let body = form_body(&[
        ("name", name.as_bytes()),
        ("agent_id", agent.as_bytes()),
        ("file", &csv),
    ]);
    let res = client
        .post(bin.url("/api/campaigns"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn readiness(client: &reqwest::Client, bin: &Bin) -> (StatusCode, Value) {
    let res = client
        .get(bin.url("/health/readiness"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls readiness until it answers `want`, for at most 15 s.
async fn wait_readiness(client: &reqwest::Client, bin: &Bin, want: StatusCode) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = readiness(client, bin).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < until, "readiness stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_and_not_ready_until_space_returns_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount(40) else { return };
    let data = disk.path().join("data");
    let mut bin = spawn_serve(
        &data,
        &[
            ("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("VOXFLOW_READINESS_CHECK_SECS", "1"),
            ("VOXFLOW_RATE_LIMIT", "off"),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let res = client
        .post(bin.url("/api/auth/register"))
        .json(&json!({"email": "full@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let user = body["data"]["user"]["id"].as_str().unwrap().to_string();
    // Room for many lists (an admin's change of plan, done in the file).
    rusqlite::Connection::open(voxflow::config::db_path(&data))
        .unwrap()
        .execute(
            "UPDATE users SET subscription_tier = 'enterprise' WHERE id = ?1",
            [&user],
        )
        .unwrap();
    after_external_write().await;
    let res = client
        .post(bin.url("/api/agents"))
        .bearer_auth(&token)
        .json(&json!({"name": "Vera", "type": "INBOUND", "use_case": "appointments", "description": crate::agents::PROMPT}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let agent = res.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(readiness(&client, &bin).await.0, StatusCode::OK);

    let mut acknowledged = Vec::new();
    for n in [100, 101] {
        let (status, body) = upload(&client, &bin, &token, &agent, n).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        acknowledged.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let filler = fill(disk.path());
    // Lists of 2,000 contacts until the disk refuses one: each answer is a
    // 201 or a 507, never a 500.
    let mut refused = None;
    for n in 0..40 {
        let (status, body) = upload(&client, &bin, &token, &agent, n).await;
        match status {
            StatusCode::CREATED => {
                acknowledged.push(body["data"]["id"].as_str().unwrap().to_string())
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                refused = Some(body);
                break;
            }
            other => panic!("list {n}: {other} {body}"),
        }
    }
    let refused = refused.expect("the full disk never refused a write");
    assert_eq!(refused["code"], "STORAGE_FULL", "{refused}");
    println!(
        "{} lists stored before the disk was full",
        acknowledged.len() - 2
    );
    let body = wait_readiness(&client, &bin, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["code"], "NOT_READY", "{body}");
    assert!(
        body["data"]["problem"]
            .as_str()
            .unwrap()
            .contains("data folder"),
        "{body}"
    );
    // Reads go on.
    let res = client
        .get(bin.url("/api/campaigns"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    std::fs::remove_file(&filler).unwrap();
    wait_readiness(&client, &bin, StatusCode::OK).await;
    let (status, body) = upload(&client, &bin, &token, &agent, 99).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    acknowledged.push(body["data"]["id"].as_str().unwrap().to_string());

    assert!(bin.terminate().success(), "{}", bin.stderr());
    let stderr = bin.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Every acknowledged list is whole; the refused one left nothing.
    let conn = rusqlite::Connection::open(voxflow::config::db_path(&data)).unwrap();
    let lists: Vec<(String, i64)> = conn
        .prepare(
            "SELECT c.id, (SELECT count(*) FROM campaign_contacts k WHERE k.campaign_id = c.id)
             FROM campaigns c ORDER BY c.created_at",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: Vec<&String> = lists.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, acknowledged.iter().collect::<Vec<_>>());
    assert!(lists.iter().all(|(_, n)| *n == 2000), "{lists:?}");
    drop(conn);
    let out = voxflow_cmd(&data).arg("verify").output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
