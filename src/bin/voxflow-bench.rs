//! `cargo run --release --bin voxflow-bench`: measures the API on this
//! machine and prints each scenario's throughput as a ratio of a baseline
//! measured in the same run (`GET /health/liveness`, which touches neither
//! the database nor a session), so the figures compare across machines and
//! a regression shows as a falling ratio rather than a guess.
//!
//! It starts VoxFlow in-process on 127.0.0.1 with a temporary data folder;
//! every scenario is bounded in requests and in time and stops by itself.
//!
//! `voxflow-bench voice` measures voice calls instead (see `voice.rs`).
#![forbid(unsafe_code)]

// Beside this file rather than in src/bin/, where Cargo would take it for a binary.
#[path = "voxflow-bench/voice.rs"]
mod voice;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio::sync::Mutex;

const CONCURRENCY: usize = 8;
const ADMIN_PASSWORD: &str = "Bench-Admin-Passw0rd";
const REQUESTS: usize = 2_000;
const TIME_CAP: Duration = Duration::from_secs(15);
/// The tenant's LLM server: never called (no message is sent), only saved.
const BENCH_LLM_URL: &str = "http://127.0.0.1:9/v1";

/// Targets as minimum ratios of the baseline's throughput. A scenario
/// below its target is reported, and the command exits 1.
const TARGETS: [(&str, f64); 5] = [
    ("GET /health (database read)", 0.5),
    ("GET /api/auth/me (session + usage view)", 0.25),
    ("GET /api/agents (list, 20 rows)", 0.2),
    ("PUT /api/agents/{id} (one write)", 0.05),
    ("web call start + end (writes, triggers)", 0.02),
];

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error(transparent)]
    Start(#[from] voxflow::StartError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

struct Outcome {
    name: &'static str,
    done: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

type StepFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// One unit of work: a request (or a short sequence) that must succeed.
type Step = Arc<dyn Fn(Client, String) -> StepFuture + Send + Sync>;

async fn send(
    client: &Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// Registers a tenant as `email` and makes it enterprise (25 calls at once,
/// room for the benchmark's clients) as the admin; its session token.
async fn enterprise_tenant(client: &Client, base: &str, email: &str) -> Result<String, BenchError> {
    let reg = send(
        client,
        Method::POST,
        format!("{base}/api/auth/register"),
        "",
        Some(json!({"email": email, "password": "Bench-Passw0rd1"})),
    )
    .await
    .map_err(BenchError::Setup)?;
    let admin = send(
        client,
        Method::POST,
        format!("{base}/api/auth/login"),
        "",
        Some(json!({"email": "admin@voxflow.com", "password": ADMIN_PASSWORD})),
    )
    .await
    .map_err(BenchError::Setup)?;
    let user_id = reg["data"]["user"]["id"].as_str().unwrap_or_default();
    send(
        client,
        Method::PUT,
        format!("{base}/api/admin/users/{user_id}/limits"),
        admin["data"]["token"].as_str().unwrap_or_default(),
        Some(json!({"subscription_tier": "enterprise"})),
    )
    .await
    .map_err(BenchError::Setup)?;
    Ok(reg["data"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn run(
    name: &'static str,
    client: &Client,
    base: &str,
    step: Step,
) -> Result<Outcome, BenchError> {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(REQUESTS)));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, step, latencies, next) = (
            client.clone(),
            base.to_string(),
            step.clone(),
            latencies.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS
                && started.elapsed() < TIME_CAP
            {
                let t = Instant::now();
                step(client.clone(), base.clone()).await?;
                latencies.lock().await.push(t.elapsed());
            }
            Ok::<_, String>(())
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| BenchError::Setup(e.to_string()))?
            .map_err(|e| BenchError::Setup(format!("{name}: {e}")))?;
    }
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Outcome {
        name,
        done: lat.len(),
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
    })
}

fn main() -> ExitCode {
    let voice = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("voice") => true,
        Some(other) => {
            eprintln!("error: unknown mode {other:?}; usage: voxflow-bench [voice]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(bench(voice)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn bench(voice: bool) -> Result<bool, BenchError> {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "voxflow-bench-{}",
        hex::encode(voxflow::crypto::random_bytes::<8>())
    ));
    let result = if voice {
        voice::bench(&dir).await
    } else {
        bench_in(&dir).await
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench_in(dir: &std::path::Path) -> Result<bool, BenchError> {
    let mut config = voxflow::config::Config::for_data_dir(dir);
    config.admin_password = Some(ADMIN_PASSWORD.into());
    // Thousands of requests a second as one tenant: the limits stay on (their
    // cost is part of every request measured) but far above the load.
    config.rate_limit_free = u32::MAX;
    config.rate_limit_pro = u32::MAX;
    config.rate_limit_enterprise = u32::MAX;
    config.rate_limit_anonymous = u32::MAX;
    // The tenant's LLM URL below is on loopback, which only a listed URL may be.
    config.llm_allowed_urls = Some(BENCH_LLM_URL.into());
    let running = voxflow::start(config, std::future::pending()).await?;
    let base = format!("http://{}", running.addr);
    let client = Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;

    // One tenant with a stand-in-free setup: web calls need an LLM only for
    // messages, which are not measured here.
    let token = enterprise_tenant(&client, &base, "bench@example.com").await?;
    let mut agent_id = String::new();
    for i in 0..2 {
        let a = send(
            &client,
            Method::POST,
            format!("{base}/api/agents"),
            &token,
            Some(json!({"name": format!("Agent {i}"), "type": "INBOUND", "use_case": "support", "description": "You answer questions politely."})),
        )
        .await
        .map_err(BenchError::Setup)?;
        agent_id = a["data"]["id"].as_str().unwrap_or_default().to_string();
    }
    let llm_config = json!({"llm_provider": "openai_compatible", "llm_base_url": BENCH_LLM_URL});
    send(
        &client,
        Method::POST,
        format!("{base}/api/config/service"),
        &token,
        Some(llm_config),
    )
    .await
    .map_err(BenchError::Setup)?;

    let t = Arc::new(token);
    let get = |path: &'static str| -> Step {
        let t = t.clone();
        Arc::new(move |c: Client, base: String| {
            let t = t.clone();
            Box::pin(async move {
                send(&c, Method::GET, format!("{base}{path}"), &t, None)
                    .await
                    .map(drop)
            })
        })
    };
    let baseline = run(
        "GET /health/liveness (baseline)",
        &client,
        &base,
        get("/health/liveness"),
    )
    .await?;
    let mut outcomes = vec![
        run(TARGETS[0].0, &client, &base, get("/health")).await?,
        run(TARGETS[1].0, &client, &base, get("/api/auth/me")).await?,
        run(TARGETS[2].0, &client, &base, get("/api/agents")).await?,
    ];
    let (tk, id) = (t.clone(), agent_id.clone());
    let update: Step = Arc::new(move |c: Client, base: String| {
        let (tk, id) = (tk.clone(), id.clone());
        Box::pin(async move {
            let body = json!({"name": "Renamed", "use_case": "support", "description": "You answer questions politely.", "type": "INBOUND"});
            send(
                &c,
                Method::PUT,
                format!("{base}/api/agents/{id}"),
                &tk,
                Some(body),
            )
            .await
            .map(drop)
        })
    });
    outcomes.push(run(TARGETS[3].0, &client, &base, update).await?);
    let (tk, id) = (t.clone(), agent_id.clone());
    let call: Step = Arc::new(move |c: Client, base: String| {
        let (tk, id) = (tk.clone(), id.clone());
        Box::pin(async move {
            let started = send(
                &c,
                Method::POST,
                format!("{base}/api/calls/web/start"),
                &tk,
                Some(json!({"agent_id": id})),
            )
            .await?;
            let run_id = started["data"]["run_id"].clone();
            send(
                &c,
                Method::POST,
                format!("{base}/api/calls/web/end"),
                &tk,
                Some(json!({"run_id": run_id})),
            )
            .await
            .map(drop)
        })
    });
    outcomes.push(run(TARGETS[4].0, &client, &base, call).await?);

    println!(
        "VoxFlow {} on {} cores, {CONCURRENCY} concurrent clients, up to {REQUESTS} requests or {}s per scenario\n",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        TIME_CAP.as_secs()
    );
    println!(
        "{:<44} {:>7} {:>10} {:>9} {:>9} {:>7} {:>7}",
        "scenario", "done", "req/s", "p50 ms", "p99 ms", "ratio", "target"
    );
    let line = |o: &Outcome, ratio: f64, target: Option<f64>| {
        println!(
            "{:<44} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>7.3} {:>7}",
            o.name,
            o.done,
            o.per_sec,
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            ratio,
            target.map_or("-".to_string(), |t| format!("{t:.3}"))
        )
    };
    line(&baseline, 1.0, None);
    let mut all_met = true;
    for (o, (_, target)) in outcomes.iter().zip(TARGETS) {
        let ratio = o.per_sec / baseline.per_sec;
        line(o, ratio, Some(target));
        if ratio < target {
            all_met = false;
            println!(
                "  below target: {} at {ratio:.3} of the baseline (target {target})",
                o.name
            );
        }
    }
    running.stop().await?;
    Ok(all_met)
}
