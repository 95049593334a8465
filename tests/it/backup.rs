//! `voxflow backup` beside a running server, `voxflow restore` with it
//! stopped: the data comes back as it was, and nothing is lost on the way.

use std::process::Output;

use reqwest::StatusCode;
use serde_json::json;

use crate::auth::PASSWORD;
use crate::common::{spawn_serve, voxflow_cmd, Bin, ADMIN_PASSWORD};

fn envs() -> [(&'static str, &'static str); 1] {
    [("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)]
}

async fn register(bin: &Bin, email: &str) {
    let res = reqwest::Client::new()
        .post(bin.url("/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

async fn login_status(bin: &Bin, email: &str) -> StatusCode {
    reqwest::Client::new()
        .post(bin.url("/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn written(out: &Output) -> std::path::PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup written: "))
        .unwrap_or_else(|| panic!("no backup path in: {stdout}"));
    std::path::PathBuf::from(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = spawn_serve(dir.path(), &envs());
    register(&bin, "before@example.com").await;

    // Beside the running server.
    let out = voxflow_cmd(dir.path()).arg("backup").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let snapshot = written(&out);
    assert!(
        snapshot.starts_with(dir.path().join("backups")),
        "{}",
        snapshot.display()
    );
    let named = dir.path().join("named.db");
    let out = voxflow_cmd(dir.path())
        .args(["backup", "--to"])
        .arg(&named)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = voxflow_cmd(dir.path())
        .args(["backup", "--to"])
        .arg(&named)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an existing file is never overwritten"
    );

    register(&bin, "after@example.com").await;
    let out = voxflow_cmd(dir.path())
        .arg("restore")
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "restore must refuse while a server runs"
    );
    assert!(
        text(&out).contains("a VoxFlow server (pid") && text(&out).contains("stop it first"),
        "{}",
        text(&out)
    );
    bin.terminate();

    let out = voxflow_cmd(dir.path())
        .arg("restore")
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let kept = said
        .lines()
        .find_map(|l| l.strip_prefix("The database it replaced is kept as "))
        .expect("the replaced database is kept");
    let conn = rusqlite::Connection::open(kept).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM users WHERE email = 'after@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1, "the replaced database still holds the later account");

    let out = voxflow_cmd(dir.path()).arg("verify").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let bin = spawn_serve(dir.path(), &envs());
    assert_eq!(
        login_status(&bin, "before@example.com").await,
        StatusCode::OK
    );
    assert_eq!(
        login_status(&bin, "after@example.com").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn restore_refuses_what_is_not_a_voxflow_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = spawn_serve(dir.path(), &envs());
    register(&bin, "keep@example.com").await;
    bin.terminate();

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let empty = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    for (file, why) in [(&junk, "SQLite"), (&empty, "no VoxFlow schema")] {
        let out = voxflow_cmd(dir.path())
            .arg("restore")
            .arg(file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out).contains(why), "{}", text(&out));
    }
    // Nothing was touched.
    let bin = spawn_serve(dir.path(), &envs());
    assert_eq!(login_status(&bin, "keep@example.com").await, StatusCode::OK);
}
