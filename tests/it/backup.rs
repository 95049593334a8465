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

/// The second a scheduled backup's name says it started
/// (`voxflow-20260102T030405Z-scheduled.db`), as Unix time.
fn started_at(path: &std::path::Path) -> Option<i64> {
    let name = path.file_name()?.to_str()?;
    let stamp = name.strip_prefix("voxflow-")?.split('-').next()?;
    let t: jiff::Timestamp = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    Some(t.as_second())
}

fn scheduled_backups(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("-scheduled.db"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_beside_four_writers_is_consistent_and_holds_every_earlier_write() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::agents::{create_agent, set_tier, tenant};
    use crate::calls::{end, start_call};
    use crate::common::TestApp;

    let app = Arc::new(
        TestApp::start_with(|c| {
            c.backup_every = Some(Duration::from_secs(1));
            c.backup_keep = 2;
            c.rate_limit = voxflow::config::Switch::Off;
            // Starting a web call wants an LLM key; these calls never
            // ask the LLM anything.
            c.groq_api_key = Some("gsk-never-used".into());
        })
        .await,
    );
    let backups = app.dir.path().join("backups");
    // Each writer completes calls, one after another, and notes when each
    // was acknowledged.
    let acknowledged: Arc<Mutex<Vec<(SystemTime, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let who = tenant(&app, &format!("writer{w}@example.com")).await;
        set_tier(&app, &who, "enterprise").await;
        let agent = create_agent(&app, &who, "Vera").await;
        let (app, acknowledged, stop) = (app.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (run, _) = start_call(&app, &who, &agent).await;
                let (status, body) = end(&app, &who, &run, serde_json::json!({})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                acknowledged.lock().unwrap().push((SystemTime::now(), run));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = SystemTime::now();
    let before: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at <= t0)
        .map(|(_, run)| run.clone())
        .collect();
    assert!(!before.is_empty(), "no call completed in 1.5 s");
    // A backup whose name says it started in a later second than t0
    // started after every call in `before` was acknowledged.
    let t0_second = t0.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let later = loop {
        if let Some(b) = scheduled_backups(&backups)
            .into_iter()
            .find(|b| started_at(b).is_some_and(|s| s > t0_second))
        {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled backup after t0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Copied at once: the scheduler prunes all but the newest two.
    let copy = app.dir.path().join("checked.db");
    std::fs::copy(&later, &copy).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let total = acknowledged.lock().unwrap().len();
    println!(
        "{} calls acknowledged before the backup started, {total} in all",
        before.len()
    );

    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk_problems: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk_problems, 0);
    for run in &before {
        let status: String = conn
            .query_row("SELECT status FROM agent_runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("{run} acknowledged before the backup, missing: {e}"));
        assert_eq!(status, "completed", "{run}");
    }
    drop(conn);
    // `voxflow verify` accepts it as a whole data folder's database.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, restored.path().join("voxflow.db")).unwrap();
    let out = voxflow_cmd(restored.path()).arg("verify").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Old ones are pruned: over four seconds more backups are written
    // than are ever kept (two, and a third between its rename and the
    // pruning that follows).
    let mut seen = std::collections::BTreeSet::new();
    let mut most = 0;
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let now = scheduled_backups(&backups);
        most = most.max(now.len());
        seen.extend(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(most <= 3, "{most} backups kept at once");
    let partial = std::fs::read_dir(&backups)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert!(partial <= 1, "partial copies pile up");
    let (_, text, _) = crate::ops::scrape(&app, None).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("voxflow_backup_last_timestamp_seconds ")),
        "{text}"
    );
    Arc::into_inner(app).expect("writers are done").stop().await;
}
