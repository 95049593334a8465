//! `cargo bench --bench load`: VoxFlow under load on this machine, each
//! figure beside a baseline measured in the same run, so that a target is
//! a ratio that carries across machines.
//!
//! It starts the real server (this bench is built with the release
//! profile) on a temporary folder under the target directory, seeds it
//! with direct SQL, and drives it over loopback HTTP/1.1 keep-alive
//! connections from this process, each workload in turns with its
//! baseline (`in_turns`). For the startup and memory figures it
//! runs the release binary Cargo built beside it. Every workload is
//! bounded in time. It prints a table and writes `bench/load.json` in the
//! target directory; it exits 1 when a target is missed.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voxflow::config::{Config, Switch};

const CONNECTIONS: usize = 64;
const READ_TIME: Duration = Duration::from_secs(10);
const WRITE_TIME: Duration = Duration::from_secs(5);
/// A workload and its baseline take turns, each `ROUNDS` slices of its
/// time (see `in_turns`).
const ROUNDS: u32 = 6;
const TENANTS: usize = 100;
const AGENTS_PER_TENANT: usize = 10;
const ADMIN_PASSWORD: &str = "Bench-Admin-Passw0rd";
/// The admin views' scale: users (with the tenants), two agents each, and
/// the runs at the first and the second measurement.
const USERS: usize = 10_000;
const RUNS_FIRST: usize = 100_000;
const RUNS_SECOND: usize = 1_000_000;
/// How long each admin view is asked for at each scale, one request after
/// the other (latency), and how long it is asked for before, unmeasured.
/// 60 requests (the first rounds) took 60 ms in all at 1 ms a page: a
/// passing stall of the machine was then the median.
const ADMIN_TIME: Duration = Duration::from_secs(2);
const ADMIN_WARMUP: Duration = Duration::from_millis(300);

type BenchResult<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// A lean HTTP/1.1 client: one keep-alive connection, one request at a time.
// Lean so that the load generator, which shares the machine's cores with
// the server, takes as little of them as it can.

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> BenchResult<Value> {
        serde_json::from_slice(&self.body).map_err(err)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    async fn open(addr: SocketAddr) -> BenchResult<Conn> {
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Reads what has arrived straight into the buffer's spare room (a
    /// zeroed 16 KiB chunk copied over cost a memset and a copy per read).
    async fn fill(&mut self) -> BenchResult<()> {
        self.buf.reserve(16 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await.map_err(err)?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        Ok(())
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> BenchResult<Reply> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = token {
            let _ = write!(req, "Authorization: Bearer {t}\r\n");
        }
        let body = body.unwrap_or("");
        if method != "GET" {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.stream.write_all(req.as_bytes()).await.map_err(err)?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("a response without a status")?;
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        self.buf.drain(..head_end + 4);
        let body = match (length, chunked) {
            (Some(n), _) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                self.buf.drain(..n).collect()
            }
            (None, true) => self.chunked().await?,
            (None, false) => Vec::new(),
        };
        Ok(Reply { status, body })
    }

    async fn chunked(&mut self) -> BenchResult<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&self.buf[..line_end]).trim(), 16)
                    .map_err(err)?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

async fn expect(
    conn: &mut Conn,
    status: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> BenchResult<Reply> {
    let reply = conn.send(method, path, token, body).await?;
    if reply.status == status {
        Ok(reply)
    } else {
        Err(format!(
            "{method} {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ))
    }
}

// ---------------------------------------------------------------------------
// Measurements.

#[derive(Clone)]
struct Measured {
    name: String,
    ops: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Measured {
    fn new(name: &str, mut latencies: Vec<Duration>, secs: f64) -> Measured {
        latencies.sort();
        Measured {
            name: name.into(),
            ops: latencies.len(),
            secs,
            latencies,
        }
    }

    /// One measurement of slices taken at different times: their
    /// operations over their summed time.
    fn merge(parts: Vec<Measured>) -> Option<Measured> {
        let name = parts.first()?.name.clone();
        let secs = parts.iter().map(|m| m.secs).sum();
        let latencies = parts.into_iter().flat_map(|m| m.latencies).collect();
        Some(Measured::new(&name, latencies, secs))
    }

    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1].as_secs_f64() * 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "ops": self.ops,
            "seconds": round3(self.secs),
            "requests_per_sec": round3(self.per_sec()),
            "p50_ms": round3(self.quantile_ms(0.5)),
            "p99_ms": round3(self.quantile_ms(0.99)),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Target {
    what: String,
    value: f64,
    limit: f64,
    /// true: the value must be at least the limit; false: at most.
    at_least: bool,
}

impl Target {
    fn min(what: &str, value: f64, limit: f64) -> Target {
        Target {
            what: what.into(),
            value,
            limit,
            at_least: true,
        }
    }

    fn max(what: &str, value: f64, limit: f64) -> Target {
        Target {
            what: what.into(),
            value,
            limit,
            at_least: false,
        }
    }

    fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.limit
        } else {
            self.value <= self.limit
        }
    }

    fn json(&self) -> Value {
        json!({
            "target": format!("{} {} {}", self.what, if self.at_least { ">=" } else { "<=" }, self.limit),
            "value": round3(self.value),
            "met": self.met(),
        })
    }
}

struct Workload {
    name: String,
    measured: Vec<Measured>,
    baseline: Option<Measured>,
    targets: Vec<Target>,
}

impl Workload {
    /// A workload whose target is a least ratio of its first measurement
    /// to `baseline`.
    fn against(name: &str, measured: Vec<Measured>, baseline: Measured, min: f64) -> Workload {
        let mut w = Workload {
            name: name.into(),
            measured,
            baseline: Some(baseline),
            targets: Vec::new(),
        };
        let ratio = w.ratio().unwrap_or(0.0);
        w.targets.push(Target::min("ratio", ratio, min));
        w
    }

    fn ratio(&self) -> Option<f64> {
        let base = self.baseline.as_ref()?;
        Some(self.measured.first()?.per_sec() / base.per_sec())
    }
}

/// What one connection does per operation.
#[derive(Clone)]
enum Work {
    Hello,
    ReadAgents { token: String },
    CreateAgent { token: String },
    WebCall { token: String, agent_id: String },
}

impl Work {
    async fn once(&self, conn: &mut Conn, n: u64) -> BenchResult<()> {
        match self {
            Work::Hello => {
                expect(conn, 200, "GET", "/hello", None, None).await?;
            }
            Work::ReadAgents { token } => {
                expect(conn, 200, "GET", "/api/agents", Some(token), None).await?;
            }
            Work::CreateAgent { token } => {
                let body =
                    json!({"name": format!("Load {n}"), "type": "INBOUND", "use_case": "bench",
                                  "description": "Answers the phone for the load benchmark."})
                    .to_string();
                expect(conn, 201, "POST", "/api/agents", Some(token), Some(&body)).await?;
            }
            Work::WebCall { token, agent_id } => {
                let body = json!({ "agent_id": agent_id }).to_string();
                let started = expect(
                    conn,
                    200,
                    "POST",
                    "/api/calls/web/start",
                    Some(token),
                    Some(&body),
                )
                .await?
                .json()?;
                let run_id = started["data"]["run_id"]
                    .as_str()
                    .ok_or("web/start gave no run_id")?;
                let body = json!({ "run_id": run_id }).to_string();
                expect(
                    conn,
                    200,
                    "POST",
                    "/api/calls/web/end",
                    Some(token),
                    Some(&body),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// `works.len()` connections each doing their work in a loop for `time`.
async fn drive(
    name: &str,
    addr: SocketAddr,
    works: Vec<Work>,
    time: Duration,
) -> BenchResult<Measured> {
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = Vec::new();
    for work in works {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                work.once(&mut conn, n).await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(err)??);
    }
    Ok(Measured::new(name, all, start.elapsed().as_secs_f64()))
}

/// One slice of a measurement, made again for each turn.
type Slice<'a> = Pin<Box<dyn Future<Output = BenchResult<Measured>> + Send + 'a>>;

/// Measures a baseline and a workload in turns, `ROUNDS` slices each, the
/// order swapped every round (baseline first, then workload first): the
/// machine's speed drifts during a run (the VM's host, the disk's
/// flushing), and the baseline measured a minute before or after its
/// workload showed ratios from 0.44 to 0.61 for the same build. In turns,
/// a drift weighs on both alike.
async fn in_turns<'a>(
    mut baseline: impl FnMut() -> Slice<'a>,
    mut workload: impl FnMut() -> Slice<'a>,
) -> BenchResult<(Measured, Measured)> {
    let (mut base, mut work) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            base.push(baseline().await?);
            work.push(workload().await?);
        } else {
            work.push(workload().await?);
            base.push(baseline().await?);
        }
    }
    let merged = |parts| Measured::merge(parts).ok_or_else(|| "no turns".to_string());
    Ok((merged(base)?, merged(work)?))
}

/// A write workload, `WRITE_TIME` in all, in turns with its baseline,
/// which writes to its own copy of the database on a blocking thread.
async fn writes_in_turns(
    name: &str,
    addr: SocketAddr,
    works: Vec<Work>,
    copy: Connection,
    baseline: impl Fn(&mut Connection, Duration) -> BenchResult<Measured> + Clone + Send + 'static,
) -> BenchResult<(Measured, Measured)> {
    eprintln!(
        "{name} and its baseline, {} s each, in turns",
        WRITE_TIME.as_secs()
    );
    let copy = Arc::new(Mutex::new(copy));
    let slice = WRITE_TIME / ROUNDS;
    in_turns(
        || {
            let (copy, baseline) = (Arc::clone(&copy), baseline.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let mut conn = copy.lock().map_err(err)?;
                    baseline(&mut conn, slice)
                })
                .await
                .map_err(err)?
            })
        },
        || Box::pin(drive(name, addr, works.clone(), slice)),
    )
    .await
}

/// `requests` of `path`, one after the other on one connection.
async fn sequential(
    name: &str,
    addr: SocketAddr,
    token: &str,
    paths: &[String],
) -> BenchResult<Measured> {
    let mut conn = Conn::open(addr).await?;
    // Unmeasured first: the first read of a page from disk, by each of the
    // server's reader connections, is not what a busy admin page costs.
    let mut paths = paths.iter().cycle();
    let warm = Instant::now();
    while warm.elapsed() < ADMIN_WARMUP {
        let p = paths.next().ok_or("no paths")?;
        expect(&mut conn, 200, "GET", p, Some(token), None).await?;
    }
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < ADMIN_TIME {
        let p = paths.next().ok_or("no paths")?;
        let t = Instant::now();
        expect(&mut conn, 200, "GET", p, Some(token), None).await?;
        latencies.push(t.elapsed());
    }
    Ok(Measured::new(
        name,
        latencies,
        start.elapsed().as_secs_f64(),
    ))
}

// ---------------------------------------------------------------------------
// Seeding, with direct SQL.

struct Tenant {
    token: String,
    agent_id: String,
}

fn open(path: &Path) -> BenchResult<Connection> {
    voxflow::db::open_connection(path, false).map_err(err)
}

/// `TENANTS` users with `AGENTS_PER_TENANT` agents and a session each, and
/// a session for the admin.
fn seed_tenants(db: &Path) -> BenchResult<(Vec<Tenant>, String)> {
    let mut conn = open(db)?;
    let mut tenants = Vec::new();
    let mut users = Vec::new();
    {
        let tx = conn.transaction().map_err(err)?;
        for t in 0..TENANTS {
            let user: String = tx
                .query_row(
                    "INSERT INTO users (email, password_hash, subscription_tier, max_agents, monthly_token_quota)
                     VALUES (?1, 'not-a-hash', 'enterprise', 1000000, 1000000000) RETURNING id",
                    [format!("tenant{t}@bench.example")],
                    |r| r.get(0),
                )
                .map_err(err)?;
            let mut first = None;
            for a in 0..AGENTS_PER_TENANT {
                let agent: String = tx
                    .query_row(
                        "INSERT INTO agents (user_id, name, type, use_case, description)
                         VALUES (?1, ?2, 'INBOUND', 'support', 'You answer the phone for the benchmark.')
                         RETURNING id",
                        params![user, format!("Desk {a}")],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                first.get_or_insert(agent);
            }
            users.push((user, first.ok_or("no agent")?));
        }
        tx.commit().map_err(err)?;
    }
    for (user, agent_id) in users {
        let session =
            voxflow::auth::store::create_session(&mut conn, &user, 24, None, None).map_err(err)?;
        tenants.push(Tenant {
            token: session.token,
            agent_id,
        });
    }
    let admin: String = conn
        .query_row("SELECT id FROM users WHERE role = 'admin'", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    let admin =
        voxflow::auth::store::create_session(&mut conn, &admin, 24, None, None).map_err(err)?;
    Ok((tenants, admin.token))
}

/// Users up to `USERS` with two agents each (in one transaction), and a
/// usage row of today for each.
fn seed_users(db: &Path) -> BenchResult<()> {
    let mut conn = open(db)?;
    let tx = conn.transaction().map_err(err)?;
    let have: i64 = tx
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .map_err(err)?;
    let have = usize::try_from(have).map_err(err)?;
    {
        let mut user = tx
            .prepare(
                "INSERT INTO users (email, password_hash, subscription_tier, created_at)
                 VALUES (?1, 'not-a-hash', ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)) RETURNING id",
            )
            .map_err(err)?;
        let mut agent = tx
            .prepare(
                "INSERT INTO agents (user_id, name, type, use_case, description)
                 VALUES (?1, ?2, 'OUTBOUND', 'sales', 'You call people back for the benchmark.')",
            )
            .map_err(err)?;
        let mut usage = tx
            .prepare(
                "INSERT INTO user_usage_tracking (user_id, date, total_tokens, total_calls, total_duration_seconds)
                 VALUES (?1, strftime('%Y-%m-%d', 'now'), ?2, ?3, ?4)",
            )
            .map_err(err)?;
        for u in have..USERS {
            let tier = ["free", "pro", "enterprise"][u % 3];
            let id: String = user
                .query_row(
                    params![
                        format!("user{u}@bench.example"),
                        tier,
                        format!("-{} minutes", u * 7)
                    ],
                    |r| r.get(0),
                )
                .map_err(err)?;
            for a in 0..2 {
                agent
                    .execute(params![id, format!("Caller {a}")])
                    .map_err(err)?;
            }
            usage
                .execute(params![
                    id,
                    (u % 97) as f64 * 0.13,
                    (u % 7) as i64,
                    (u % 7) as i64 * 60
                ])
                .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

/// Completed (and some failed) runs up to `total`, spread over
/// every agent, in one transaction.
fn seed_runs(db: &Path, total: usize) -> BenchResult<()> {
    let mut conn = open(db)?;
    let agents: Vec<String> = conn
        .prepare("SELECT id FROM agents ORDER BY rowid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let have: i64 = tx
        .query_row("SELECT count(*) FROM agent_runs", [], |r| r.get(0))
        .map_err(err)?;
    let have = usize::try_from(have).map_err(err)?;
    {
        let mut run = tx
            .prepare(
                "INSERT INTO agent_runs (run_number, agent_id, type, status, duration_seconds, groq_tokens,
                                         disposition, created_at, completed_at)
                 VALUES (?1, ?2, 'WEB_CALL', ?3, ?4, ?5, 'user_hangup',
                         strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?6), strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?6))",
            )
            .map_err(err)?;
        // A fixed pseudo-random sequence: the same database every run.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ have as u64;
        for n in have..total {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let agent = &agents[(x % agents.len() as u64) as usize];
            // No run is left in progress: a server starting on the file
            // would close them all as abandoned, which no real database
            // asks of it.
            let (status, seconds) = match x % 20 {
                0 => ("failed", 0),
                _ => ("completed", ((x >> 8) % 900) as i64),
            };
            let cents = if status == "completed" {
                (seconds * 13 + 5) / 10
            } else {
                0
            };
            run.execute(params![
                format!("WR-BENCH-{n:07}"),
                agent,
                status,
                seconds,
                cents as f64 / 100.0,
                format!("-{} seconds", (x >> 20) % (86_400 * 60)),
            ])
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

/// A copy of the database, for the baselines (they write next to the
/// server, not into its file).
fn copy_of(db: &Path, to: &Path) -> BenchResult<Connection> {
    let conn = open(db)?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
        .map_err(err)?;
    open(to)
}

/// `raw_sql_commit`: the agent INSERT of `POST /api/agents`, one
/// transaction per row, on one connection (synchronous = FULL, WAL).
/// What `read_agents` asks of SQLite and serde, without HTTP: on one
/// thread, a tenant's session, the count and page of their agents, and the
/// page as JSON, as the server does them. Not a target's baseline: it
/// shows how much of a request's cost is this work, which no change to the
/// HTTP side can remove.
fn read_statements(db: &Path, tokens: &[String], time: Duration) -> BenchResult<Measured> {
    let conn = voxflow::db::open_connection(db, true).map_err(err)?;
    let page_sql = format!(
        "SELECT {} FROM agents a WHERE a.user_id = ?1 ORDER BY a.created_at DESC, a.rowid DESC LIMIT 20 OFFSET 0",
        voxflow::agents::AGENT_COLUMNS
    );
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0usize;
    while start.elapsed() < time {
        let t = Instant::now();
        let hash = voxflow::crypto::sha256_hex(tokens[n % tokens.len()].as_bytes());
        let session = voxflow::auth::store::session_user(&conn, &hash)
            .map_err(err)?
            .ok_or("a bench session was not found")?;
        let user = session.user.id;
        conn.execute_batch("BEGIN").map_err(err)?;
        let total: i64 = conn
            .prepare_cached("SELECT count(*) FROM agents a WHERE a.user_id = ?1")
            .and_then(|mut s| s.query_row([&user], |r| r.get(0)))
            .map_err(err)?;
        let agents = conn
            .prepare_cached(&page_sql)
            .and_then(|mut s| {
                s.query_map([&user], |r| voxflow::agents::agent_from_row(r, 0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(err)?;
        conn.execute_batch("COMMIT").map_err(err)?;
        let body = serde_json::to_vec(&json!({ "success": true, "data": agents, "total": total }))
            .map_err(err)?;
        std::hint::black_box(body);
        latencies.push(t.elapsed());
        n += 1;
    }
    Ok(Measured::new(
        "read_agents_statements (1 thread)",
        latencies,
        start.elapsed().as_secs_f64(),
    ))
}

fn raw_sql_commit(
    conn: &mut Connection,
    users: &[String],
    time: Duration,
) -> BenchResult<Measured> {
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0usize;
    while start.elapsed() < time {
        let t = Instant::now();
        let tx = conn.transaction().map_err(err)?;
        tx.prepare_cached(
            "INSERT INTO agents (user_id, name, type, use_case, description)
             VALUES (?1, ?2, 'INBOUND', 'bench', 'Answers the phone for the load benchmark.') RETURNING id",
        )
        .and_then(|mut s| s.query_row(params![users[n % users.len()], format!("Raw {n}")], |r| r.get::<_, String>(0)))
        .map_err(err)?;
        tx.commit().map_err(err)?;
        latencies.push(t.elapsed());
        n += 1;
    }
    Ok(Measured::new(
        "raw_sql_commit",
        latencies,
        start.elapsed().as_secs_f64(),
    ))
}

/// The web call's statements run directly, one transaction for the start
/// and one for the end, as the handlers run them (without HTTP, session or
/// JSON).
fn direct_web_call(
    conn: &mut Connection,
    tenants: &[(String, String)],
    time: Duration,
) -> BenchResult<Measured> {
    use voxflow::admin::audit::{record, Entry};
    use voxflow::calls::store::{self, Disposition, Finish, Measure, Outcome, RunKind, Turn};
    let client = voxflow::http::extract::ClientInfo {
        ip: "127.0.0.1".into(),
        https: false,
        user_agent: None,
    };
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0usize;
    while start.elapsed() < time {
        let (user, agent) = &tenants[n % tenants.len()];
        let t = Instant::now();
        let tx = conn.transaction().map_err(err)?;
        let (run_id, run_number, created_at) =
            store::insert_run(&tx, RunKind::Web, agent, None).map_err(err)?;
        let greeting = store::script(&tx, &run_id).map_err(err)?.first_message;
        store::save_transcript(
            &tx,
            &run_id,
            &[Turn::new("assistant", greeting, created_at)],
        )
        .map_err(err)?;
        let entry = |action, details| Entry {
            admin_user_id: user,
            action,
            target_user_id: Some(user),
            resource_type: Some("agent_run"),
            resource_id: Some(&run_id),
            details,
            client: &client,
        };
        record(
            &tx,
            &entry(
                "start_web_call",
                json!({ "run_number": run_number, "agent_id": agent }),
            ),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        let tx = conn.transaction().map_err(err)?;
        let finish = Finish {
            outcome: Outcome::Completed,
            disposition: Disposition::Set("user_hangup"),
            duration: Measure::UntilNow,
        };
        store::finish_run(&tx, &run_id, &finish)
            .map_err(err)?
            .ok_or("the run was not in progress")?;
        record(
            &tx,
            &entry("end_web_call", json!({ "run_number": run_number })),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        latencies.push(t.elapsed());
        n += 1;
    }
    Ok(Measured::new(
        "direct_statements",
        latencies,
        start.elapsed().as_secs_f64(),
    ))
}

// ---------------------------------------------------------------------------
// The release binary: startup and memory.

struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> BenchResult<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    l.local_addr().map_err(err)
}

/// Starts `voxflow serve` on `dir` and returns it with the time to its
/// first 200 from `/health`.
async fn serve_binary(dir: &Path) -> BenchResult<(Served, Duration)> {
    let addr = free_port()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxflow"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VOXFLOW_") {
            cmd.env_remove(key);
        }
    }
    let start = Instant::now();
    let child = cmd
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--http", &addr.to_string()])
        .env("VOXFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("VOXFLOW_RATE_LIMIT", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(err)?;
    let mut served = Served { child, addr };
    loop {
        if let Ok(mut conn) = Conn::open(addr).await {
            if let Ok(r) = conn.send("GET", "/health", None, None).await {
                if r.status == 200 {
                    return Ok((served, start.elapsed()));
                }
            }
        }
        if let Ok(Some(status)) = served.child.try_wait() {
            return Err(format!("voxflow serve exited: {status}"));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("voxflow serve did not answer /health within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn rss_mb(pid: u32) -> BenchResult<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kb / 1024.0)
}

fn stripped_size_mb(scratch: &Path) -> BenchResult<f64> {
    let copy = scratch.join("voxflow-stripped");
    std::fs::copy(env!("CARGO_BIN_EXE_voxflow"), &copy).map_err(err)?;
    let out = Command::new("strip").arg(&copy).output().map_err(err)?;
    if !out.status.success() {
        return Err(format!(
            "strip failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(std::fs::metadata(&copy).map_err(err)?.len() as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------------------

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

async fn hello() -> Json<Value> {
    Json(json!({ "success": true, "data": { "hello": "world" } }))
}

/// A bare axum JSON handler on this runtime, for `axum_hello`.
async fn serve_hello() -> BenchResult<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/hello", get(hello))).await;
    });
    Ok(addr)
}

/// Lets the disk settle after a seeding: the log folded into the file and
/// the file written out. A million runs leave some 400 MB for the kernel
/// to write back over the next half minute, which it did while the
/// million-run views were measured and not the others.
fn settle(db: &Path) -> BenchResult<()> {
    open(db)?
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(err)?;
    std::fs::File::open(db)
        .and_then(|f| f.sync_all())
        .map_err(err)
}

fn admin_paths(pages: usize, sort: Option<&str>) -> Vec<String> {
    (1..=pages)
        .map(|p| match sort {
            Some(s) => format!("/api/admin/users?limit=50&page={p}&sort_by={s}&order=desc"),
            None => format!("/api/admin/users?limit=50&page={p}"),
        })
        .collect()
}

async fn admin_views(
    addr: SocketAddr,
    token: &str,
    db: &Path,
    scale: &str,
) -> BenchResult<Vec<Measured>> {
    settle(db)?;
    let conn = open(db)?;
    let users: Vec<String> = conn
        .prepare("SELECT id FROM users ORDER BY rowid DESC LIMIT 20")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    let detail: Vec<String> = users
        .iter()
        .map(|u| format!("/api/admin/users/{u}"))
        .collect();
    Ok(vec![
        sequential(
            &format!("admin_users@{scale}"),
            addr,
            token,
            &admin_paths(10, None),
        )
        .await?,
        sequential(
            &format!("admin_users_by_runs@{scale}"),
            addr,
            token,
            &admin_paths(10, Some("total_runs")),
        )
        .await?,
        sequential(&format!("admin_user_detail@{scale}"), addr, token, &detail).await?,
        sequential(
            &format!("admin_overview@{scale}"),
            addr,
            token,
            &["/api/admin/analytics/overview".to_string()],
        )
        .await?,
    ])
}

/// The workloads, in the order they run; `cargo bench --bench load --
/// read_agents web_call` runs only those named (for profiling one).
const WORKLOADS: [&str; 5] = [
    "read_agents",
    "create_agent",
    "web_call",
    "admin_users",
    "startup",
];

async fn run(only: &[String]) -> BenchResult<Vec<Workload>> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if want("startup") && !want("admin_users") {
        return Err("startup needs admin_users: it starts on the database that one seeds".into());
    }
    let bench_dir = target_dir().join("bench");
    std::fs::create_dir_all(&bench_dir).map_err(err)?;
    let scratch = tempfile::tempdir_in(&bench_dir).map_err(err)?;
    let data = scratch.path().join("data");
    let mut config = Config::for_data_dir(&data);
    config.http = ([127, 0, 0, 1], 0).into();
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.rate_limit = Switch::Off;
    // Web calls need an LLM key to start; none is called by start and end.
    config.groq_api_key = Some(voxflow::crypto::secret::Secret::new(
        "gsk_bench_not_a_real_key",
    ));
    let running = voxflow::start(config, std::future::pending())
        .await
        .map_err(err)?;
    let addr = running.addr;
    let db = voxflow::config::db_path(&data);
    let mut out = Vec::new();

    eprintln!("seeding {TENANTS} tenants × {AGENTS_PER_TENANT} agents");
    let (tenants, admin_token) = seed_tenants(&db)?;
    let per_conn = |f: &dyn Fn(&Tenant) -> Work| -> Vec<Work> {
        (0..CONNECTIONS)
            .map(|i| f(&tenants[i % tenants.len()]))
            .collect()
    };

    if want("read_agents") {
        eprintln!(
            "axum_hello and read_agents, {} s each, in turns",
            READ_TIME.as_secs()
        );
        let hello_addr = serve_hello().await?;
        let reads = per_conn(&|t| Work::ReadAgents {
            token: t.token.clone(),
        });
        let slice = READ_TIME / ROUNDS;
        let (hello, read) = in_turns(
            || {
                Box::pin(drive(
                    "axum_hello",
                    hello_addr,
                    vec![Work::Hello; CONNECTIONS],
                    slice,
                ))
            },
            || Box::pin(drive("read_agents", addr, reads.clone(), slice)),
        )
        .await?;
        let tokens: Vec<String> = tenants.iter().map(|t| t.token.clone()).collect();
        let statements = tokio::task::spawn_blocking({
            let db = db.clone();
            move || read_statements(&db, &tokens, Duration::from_secs(3))
        })
        .await
        .map_err(err)??;
        let mut w = Workload::against("read_agents", vec![read, statements], hello, 0.5);
        w.targets
            .push(Target::max("p99_ms", w.measured[0].quantile_ms(0.99), 10.0));
        out.push(w);
    }

    let users: Vec<String> = open(&db)?
        .prepare("SELECT id FROM users WHERE email LIKE 'tenant%' ORDER BY rowid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    if want("create_agent") {
        let users = users.clone();
        let (raw, create) = writes_in_turns(
            "create_agent",
            addr,
            per_conn(&|t| Work::CreateAgent {
                token: t.token.clone(),
            }),
            copy_of(&db, &scratch.path().join("raw.db"))?,
            move |c, time| raw_sql_commit(c, &users, time),
        )
        .await?;
        out.push(Workload::against("create_agent", vec![create], raw, 1.0));
    }

    if want("web_call") {
        let pairs: Vec<(String, String)> = users
            .iter()
            .cloned()
            .zip(tenants.iter().map(|t| t.agent_id.clone()))
            .collect();
        let (direct, web) = writes_in_turns(
            "web_call",
            addr,
            per_conn(&|t| Work::WebCall {
                token: t.token.clone(),
                agent_id: t.agent_id.clone(),
            }),
            copy_of(&db, &scratch.path().join("web.db"))?,
            move |c, time| direct_web_call(c, &pairs, time),
        )
        .await?;
        out.push(Workload::against("web_call", vec![web], direct, 0.7));
    }

    if want("admin_users") {
        eprintln!("admin views: seeding {USERS} users and {RUNS_FIRST} runs");
        let t = Instant::now();
        seed_users(&db)?;
        seed_runs(&db, RUNS_FIRST)?;
        eprintln!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
        let first = admin_views(addr, &admin_token, &db, "100k").await?;
        eprintln!("admin views: seeding up to {RUNS_SECOND} runs");
        let t = Instant::now();
        seed_runs(&db, RUNS_SECOND)?;
        eprintln!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
        let second = admin_views(addr, &admin_token, &db, "1M").await?;
        let p50 = |m: &Measured| m.quantile_ms(0.5);
        let mut targets = vec![
            Target::max("admin_users@1M p50_ms", p50(&second[0]), 50.0),
            Target::max("admin_users_by_runs@1M p50_ms", p50(&second[1]), 50.0),
            Target::max(
                "admin_users p50 1M/100k",
                p50(&second[0]) / p50(&first[0]),
                1.5,
            ),
            Target::max(
                "admin_users_by_runs p50 1M/100k",
                p50(&second[1]) / p50(&first[1]),
                1.5,
            ),
            Target::max("admin_user_detail@1M p50_ms", p50(&second[2]), 50.0),
            Target::max("admin_overview@1M p50_ms", p50(&second[3]), 50.0),
        ];
        let mut measured = second;
        measured.extend(first);
        out.push(Workload {
            name: "admin_users".into(),
            measured,
            baseline: None,
            targets: std::mem::take(&mut targets),
        });
    }

    if want("startup") {
        eprintln!("startup and memory of the release binary");
        running.stop().await.map_err(err)?;
        let empty = scratch.path().join("empty");
        let (served, empty_start) = serve_binary(&empty).await?;
        drop(served);
        let (served, big_start) = serve_binary(&data).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_mb(served.child.id())?;
        let reads = drive(
            "read_agents (binary, 1M runs)",
            served.addr,
            per_conn(&|t| Work::ReadAgents {
                token: t.token.clone(),
            }),
            Duration::from_secs(3),
        )
        .await?;
        let after = rss_mb(served.child.id())?;
        drop(served);
        let size = stripped_size_mb(scratch.path())?;
        out.push(Workload {
            name: "startup".into(),
            measured: vec![reads],
            baseline: None,
            targets: vec![
                Target::max(
                    "to /health 200, empty folder, s",
                    empty_start.as_secs_f64(),
                    0.5,
                ),
                Target::max("to /health 200, 1M runs, s", big_start.as_secs_f64(), 1.0),
                Target::max("RSS idle, MB", idle, 40.0),
                Target::max("RSS after reads, MB", after, 80.0),
                Target::max("stripped binary, MB", size, 30.0),
            ],
        });
    }
    if std::env::var_os("LOAD_BENCH_KEEP").is_some() {
        // For looking into the seeded database after the run.
        eprintln!("kept {}", scratch.keep().display());
    }
    Ok(out)
}

fn report(workloads: &[Workload]) -> (String, Value) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<34} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "workload", "ops", "ops/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut rows = Vec::new();
    for w in workloads {
        let mut lines = w.measured.clone();
        if let Some(b) = &w.baseline {
            lines.push(b.clone());
        }
        for (i, m) in lines.iter().enumerate() {
            let ratio = match (i, w.ratio()) {
                (0, Some(r)) => format!("{r:.2}"),
                _ => String::new(),
            };
            let label =
                if w.baseline.as_ref().is_some_and(|b| b.name == m.name) && i == lines.len() - 1 {
                    format!("  baseline {}", m.name)
                } else {
                    m.name.clone()
                };
            let _ = writeln!(
                table,
                "{:<34} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>8}",
                label,
                m.ops,
                m.per_sec(),
                m.quantile_ms(0.5),
                m.quantile_ms(0.99),
                ratio
            );
        }
        for t in &w.targets {
            let _ = writeln!(
                table,
                "  {} {:<48} {:>10.3} (limit {})",
                if t.met() { "met    " } else { "NOT MET" },
                t.what,
                t.value,
                t.limit
            );
        }
        rows.push(json!({
            "workload": w.name,
            "measured": w.measured.iter().map(Measured::json).collect::<Vec<_>>(),
            "baseline": w.baseline.as_ref().map(Measured::json),
            "ratio": w.ratio().map(round3),
            "targets": w.targets.iter().map(Target::json).collect::<Vec<_>>(),
        }));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let doc = json!({
        "machine": { "cpus": cpus, "cpu": model, "os": std::env::consts::OS },
        "connections": CONNECTIONS,
        "workloads": rows,
        "all_met": workloads.iter().all(|w| w.targets.iter().all(Target::met)),
    });
    (table, doc)
}

fn main() -> ExitCode {
    // Cargo passes `--bench` to every bench target; the other arguments
    // name workloads.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(unknown) = only.iter().find(|o| !WORKLOADS.contains(&o.as_str())) {
        eprintln!(
            "unknown workload {unknown}: choose from {}",
            WORKLOADS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workloads = match runtime.block_on(run(&only)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("load bench failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (table, doc) = report(&workloads);
    println!("{table}");
    if !only.is_empty() {
        // A partial run is for looking at one workload; load.json keeps
        // the last whole run.
        println!("partial run: bench/load.json not written");
        return ExitCode::SUCCESS;
    }
    let path = target_dir().join("bench").join("load.json");
    let written = serde_json::to_string_pretty(&doc)
        .map_err(err)
        .and_then(|s| std::fs::write(&path, s + "\n").map_err(err));
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    if doc["all_met"] == json!(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
