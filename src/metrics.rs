//! The process's one metrics recorder (the `metrics` crate's facade, kept
//! by `metrics-exporter-prometheus`), rendered by `GET /metrics`.
//!
//! A recorder is global to the process, so it is installed once, whatever
//! the number of servers started in it (tests start many): every server
//! then reports into the same counters, which is why metric names never
//! carry anything per server.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the histograms' buckets, in seconds: from a fast read
/// (1 ms) to the slowest request a client still waits for (an LLM turn).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the buckets of the writer's batch sizes (writes per
/// commit; the writer takes at most 64).
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle that renders the metrics, installing the recorder on first
/// use. When another recorder was installed first (an embedding program),
/// the handle renders a recorder of its own that nothing reports into:
/// `/metrics` then answers, empty, instead of failing.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Buckets, not the exporter's default summaries: histograms can be
        // summed across scrapes and servers, quantiles cannot.
        // The writer's batch sizes are counts of writes, up to its bound.
        let builder = match builder.set_buckets(&BUCKETS).and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("voxflow_db_writer_batch_jobs".into()),
                &BATCH_BUCKETS,
            )
        }) {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(%err, "metrics: histogram buckets refused; using summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(err) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%err, "metrics: another recorder is installed; /metrics reports nothing");
        }
        describe();
        // The exporter keeps histogram samples until they are folded into
        // buckets; without upkeep between scrapes they would pile up.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("voxflow-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "metrics: cannot start the upkeep thread");
        }
        handle
    })
}

/// The `# HELP` lines of the scrape.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "voxflow_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "voxflow_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template"
    );
    describe_gauge!(
        "voxflow_http_connections_open",
        "Client connections being served (bounded by --max-connections)"
    );
    describe_gauge!(
        "voxflow_db_writer_queue_depth",
        "Database writes waiting for the writer connection"
    );
    describe_histogram!(
        "voxflow_db_writer_wait_seconds",
        Unit::Seconds,
        "Time a database write waited in the writer's queue before it started"
    );
    describe_histogram!(
        "voxflow_db_writer_batch_jobs",
        "Writes carried by one commit of the writer (group commit)"
    );
    describe_gauge!(
        "voxflow_calls_active",
        "Calls in progress, by kind (web, phone)"
    );
    describe_gauge!(
        "voxflow_campaigns_running",
        "Campaigns in the running state"
    );
    describe_counter!(
        "voxflow_dialer_attempts_total",
        "Campaign calls the dialer tried to place, by outcome (placed, not_placed, unknown, refused)"
    );
    describe_counter!(
        "voxflow_provider_requests_total",
        "Requests to providers (twilio, llm), by outcome"
    );
    describe_counter!(
        "voxflow_logins_total",
        "Login attempts, by outcome (success, failure, throttled, deactivated, busy, error)"
    );
    describe_counter!(
        "voxflow_log_lines_dropped_total",
        "Log lines dropped because standard error was not read fast enough (see --log-buffer-lines)"
    );
    describe_counter!(
        "voxflow_rate_limited_total",
        "Requests refused by the request rate limits, by scope (user, anonymous)"
    );
    describe_gauge!(
        "voxflow_backup_last_timestamp_seconds",
        Unit::Seconds,
        "When this process last wrote a backup (Unix time)"
    );
    describe_counter!(
        "voxflow_backup_failures_total",
        "Scheduled backups (--backup-every) that failed"
    );
    describe_gauge!(
        "voxflow_backup_last_size_bytes",
        Unit::Bytes,
        "The size of the last backup this process wrote"
    );
}
