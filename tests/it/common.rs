//! Shared helpers of the integration tests: an in-process server
//! (`TestApp`), a migrated temporary database, the real binary (`Bin`,
//! `voxflow_cmd`) and a few checks on ids, timestamps and dates.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use voxflow::config::Config;

pub const ADMIN_EMAIL: &str = "admin@voxflow.com";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd-Test";

/// How long the binary may take to print its listening line: migrations and
/// the admin's password hash in a debug build on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The tests' provider stand-ins listen on 127.0.0.1, which a server
/// refuses as a tenant's URL unless the operator lists it: every test
/// server lists it (a test of the refusal sets its own list).
pub const LOCAL_STAND_INS: &str = "http://127.0.0.1:*";

/// A server running inside the test process, on a free port, with its data in
/// a temporary folder that lives as long as the `TestApp`.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    running: Option<voxflow::Running>,
}

impl TestApp {
    /// Starts a server whose first admin is `ADMIN_EMAIL` / `ADMIN_PASSWORD`.
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// Like `start`, letting the test adjust the config first.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_data_dir(dir.path());
        config.http = ([127, 0, 0, 1], 0).into();
        config.admin_email = ADMIN_EMAIL.to_string();
        config.admin_password = Some(ADMIN_PASSWORD.to_string());
        config.llm_allowed_urls = Some(LOCAL_STAND_INS.to_string());
        f(&mut config);
        let running = voxflow::start(config, std::future::pending())
            .await
            .expect("voxflow::start");
        let base = format!("http://{}", running.addr);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        TestApp {
            base,
            client,
            dir,
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The database file of this server.
    pub fn db_path(&self) -> PathBuf {
        voxflow::config::db_path(self.dir.path())
    }

    /// What starting did (migrations applied, admin created).
    pub fn report(&self) -> &voxflow::StartReport {
        &self.running.as_ref().expect("running").report
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("graceful stop");
        }
    }
}

/// A temporary folder holding `voxflow.db` at the latest version, opened with
/// the settings of every VoxFlow connection (foreign keys on).
pub fn migrated_db() -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = voxflow::db::open_connection(&voxflow::config::db_path(dir.path()), false)
        .expect("open database");
    voxflow::db::migrate::up(&mut conn, &voxflow::config::backup_dir(dir.path()))
        .expect("migrate up");
    (dir, conn)
}

/// The binary with no `VOXFLOW_*` variable inherited from the caller's
/// environment, so that tests do not depend on it.
fn clean_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxflow"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VOXFLOW_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// The binary, with its data folder set (through `VOXFLOW_DATA_DIR`, which
/// every subcommand reads); the caller adds the subcommand:
/// `voxflow_cmd(dir).args(["migrate", "status"]).output()`.
pub fn voxflow_cmd(data_dir: &Path) -> Command {
    let mut cmd = clean_command();
    cmd.env("VOXFLOW_DATA_DIR", data_dir);
    cmd
}

/// A running `voxflow serve`. Dropping it kills the process.
pub struct Bin {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Standard output so far, line by line.
    pub stdout_lines: Vec<String>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// While set, standard error is not read (a stuck log collector).
    stderr_held: Arc<AtomicBool>,
}

/// Starts `voxflow serve --data-dir DIR --http 127.0.0.1:0` with `envs`, and
/// returns once it printed `VoxFlow listening on http://ADDR`.
pub fn spawn_serve(data_dir: &Path, envs: &[(&str, &str)]) -> Bin {
    let mut cmd = clean_command();
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http", "127.0.0.1:0"])
        .env("VOXFLOW_LLM_ALLOWED_URLS", LOCAL_STAND_INS)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn voxflow serve");
    let stdout = child.stdout.take().expect("stdout pipe");
    let stderr_pipe = child.stderr.take().expect("stderr pipe");

    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_held = Arc::new(AtomicBool::new(false));
    {
        let (stderr, held) = (stderr.clone(), stderr_held.clone());
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            loop {
                while held.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(10));
                }
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => stderr.lock().unwrap().push_str(&line),
                }
            }
        });
    }

    let mut bin = Bin {
        child,
        base: String::new(),
        stdout_lines: Vec::new(),
        lines,
        stderr,
        stderr_held,
    };
    let found = bin.wait_for_line(
        |l| l.starts_with("VoxFlow listening on http://"),
        START_TIMEOUT,
    );
    match found {
        Some(line) => {
            let addr = line
                .trim_start_matches("VoxFlow listening on http://")
                .trim();
            bin.base = format!("http://{addr}");
            bin
        }
        None => panic!(
            "voxflow serve printed no listening line\n--- stdout\n{}\n--- stderr\n{}",
            bin.stdout(),
            bin.stderr()
        ),
    }
}

impl Bin {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout_lines.join("\n")
    }

    /// Everything printed on standard error so far (the log).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops reading standard error (`true`), as a stuck log collector
    /// would, or reads it again (`false`): once the pipe is full, the
    /// process's writes to it block.
    pub fn hold_stderr(&self, held: bool) {
        self.stderr_held.store(held, Ordering::Release);
    }

    /// Reads standard output until a line satisfies `pred` and returns it;
    /// `None` on timeout or when the process closed its output.
    pub fn wait_for_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.stdout_lines.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit, then collects the
    /// rest of its output. Panics when it does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let status = self.wait_exit(Duration::from_secs(30));
        // The output ends when the process has gone.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout_lines.push(line);
        }
        status
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "voxflow serve did not exit within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An answer read by `http_get`.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A blocking `GET` with nothing but the standard library (HTTP/1.0, so the
/// body ends when the server closes the connection), for tests that drive
/// the real binary without an async runtime.
pub fn http_get(base: &str, path: &str) -> HttpResponse {
    let host = base
        .strip_prefix("http://")
        .expect("base starts with http://")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut head_lines = head.lines();
    let status_line = head_lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {status_line:?}"));
    let headers = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Today's date in UTC, `YYYY-MM-DD`, computed without SQLite.
pub fn utc_today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    civil_date(secs.div_euclid(86_400))
}

/// The proleptic Gregorian date of `days` since 1970-01-01.
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A lowercase RFC 4122 version-4 UUID.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// RFC 3339 in UTC with a `Z`: `YYYY-MM-DDTHH:MM:SS[.fff…]Z`.
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let frac_ok = match b.len() {
        20 => true,
        n => b[19] == b'.' && n > 21 && digits(20..n - 1),
    };
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && frac_ok
}

#[test]
fn helpers_recognise_what_they_should() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(19_782), "2024-02-29");
    assert_eq!(civil_date(20_089), "2025-01-01");
    assert!(is_uuid_v4("3f2b8c1e-9d4a-4b7e-a1c2-0123456789ab"));
    assert!(!is_uuid_v4("3F2B8C1E-9D4A-4B7E-A1C2-0123456789AB"));
    assert!(!is_uuid_v4("3f2b8c1e-9d4a-1b7e-a1c2-0123456789ab"));
    assert!(!is_uuid_v4("3f2b8c1e-9d4a-4b7e-c1c2-0123456789ab"));
    assert!(is_rfc3339_utc("2025-01-31T23:59:59.123Z"));
    assert!(is_rfc3339_utc("2025-01-31T23:59:59Z"));
    assert!(!is_rfc3339_utc("2025-01-31 23:59:59"));
    assert!(!is_rfc3339_utc("2025-01-31T23:59:59+00:00"));
}

/// The in-process server that other tests build on starts, answers and stops.
#[tokio::test]
async fn test_app_starts_answers_and_stops() {
    let app = TestApp::start().await;
    let (email, generated) = app.report().admin_created.clone().expect("admin created");
    assert_eq!(email, ADMIN_EMAIL);
    assert_eq!(generated, None, "the configured password is used");
    assert!(app.db_path().exists());

    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["database"], "ok");
    let base = app.base.clone();
    app.stop().await;

    // Stopped means no longer listening.
    let addr = base.trim_start_matches("http://").to_string();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

/// Waits until the server has noticed a write made behind its back (a
/// test's own connection to the file, as an operator's `sqlite3` would):
/// its caches notice other processes' commits within `EXTERNAL_POLL`.
pub async fn after_external_write() {
    tokio::time::sleep(voxflow::db::changes::EXTERNAL_POLL * 3).await;
}
