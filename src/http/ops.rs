//! What an operator watches: request ids, the access log, request metrics
//! and `GET /metrics`.

use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::SharedString;

use super::error::ApiError;
use super::extract::ClientInfo;
use super::AppState;
use crate::auth::extract::AdminUser;
use crate::auth::rate_limit::{client_ip, LoggedUser};
use crate::db::DbError;

pub const REQUEST_ID: &str = "x-request-id";

/// A client's own id is kept only from a trusted proxy (which had it from
/// its client, or made it), and only when it is short printable ASCII: it
/// goes into every log line of the request.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// What `admit` decided of a request, for the layer to use on its way out.
pub struct Admitted {
    /// The request's `X-Request-Id`, echoed on the response.
    pub id: HeaderValue,
    /// Whether the client came over HTTPS (see `ClientInfo`).
    pub https: bool,
}

impl Admitted {
    pub fn id_text(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }
}

/// Resolves the request's client (`ClientInfo`), for every layer and
/// handler after, and gives the request an `X-Request-Id`: the trusted
/// proxy's, else a new UUID v4. tower-http's `SetRequestId` keeps whatever
/// id a request arrives with; an untrusted client's must be replaced, or
/// it could forge the ids in our log.
pub fn admit(state: &AppState, req: &mut Request) -> Admitted {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = peer.is_some_and(|ip| state.config.trusted_proxies.contains(ip));
    let client = ClientInfo::resolve(peer, req.headers(), &state.config.trusted_proxies);
    let https = client.https;
    req.extensions_mut().insert(client);
    let id = match req.headers().get(REQUEST_ID) {
        Some(v) if trusted && acceptable_id(v) => v.clone(),
        _ => {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
        }
    };
    req.headers_mut().insert(REQUEST_ID, id.clone());
    req.extensions_mut()
        .insert(super::BodyTimeout(Duration::from_secs(
            state.config.body_timeout_secs,
        )));
    Admitted { id, https }
}

/// Methods as metric labels: a bounded set, so that made-up methods cannot
/// grow the number of series.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The route template (`/api/agents/{id}`), never the raw path: ids would
/// make a series per resource. Fallbacks (unknown routes, the web UI's
/// files) are `unmatched`.
pub fn route_label(req: &Request) -> SharedString {
    match req.extensions().get::<MatchedPath>() {
        Some(p) if !p.as_str().contains("{*") => SharedString::from(p.as_str().to_string()),
        _ => SharedString::const_str("unmatched"),
    }
}

/// Counts and times a request by method, route and status.
pub fn count(method: &'static str, route: &SharedString, status: StatusCode, latency: Duration) {
    metrics::counter!("voxflow_http_requests_total",
        "method" => method, "route" => route.clone(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("voxflow_http_request_duration_seconds",
        "method" => method, "route" => route.clone())
    .record(latency.as_secs_f64());
}

/// The access log: one line per request at `info` (target
/// `voxflow::access`) with method, route template, status, latency in ms,
/// the signed-in user's id and the request id. Never headers, bodies or
/// query strings: they carry tokens, passwords and keys.
pub fn log_response(
    res: &Response,
    method: &'static str,
    route: &str,
    request_id: &str,
    latency: Duration,
) {
    let user_id = res.extensions().get::<LoggedUser>().map(|u| u.0.as_str());
    tracing::info!(
        target: "voxflow::access",
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        // Microseconds are as fine as a log line needs.
        latency_ms = latency.as_micros() as f64 / 1000.0,
        user_id,
        request_id = %request_id,
        "request"
    );
}

/// `GET /metrics`: the Prometheus text format, for the addresses in
/// `VOXFLOW_METRICS_ALLOW` or an admin session; 403 for anyone else.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 403, description = "Neither an allowed address nor an admin session", body = crate::http::openapi::ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let allowed = client_ip(&req).is_some_and(|ip| state.config.metrics_allow.contains(ip));
    if !allowed {
        let (mut parts, _) = req.into_parts();
        if AdminUser::from_request_parts(&mut parts, &state)
            .await
            .is_err()
        {
            return ApiError::forbidden(
                "FORBIDDEN",
                "Metrics are for the addresses in VOXFLOW_METRICS_ALLOW or an admin session",
            )
            .into_response();
        }
    }
    // Gauges read from the database at scrape time: they cannot drift from
    // what the tables say, whichever process changed them.
    let counts = state
        .db
        .read(|c| {
            let calls = crate::calls::store::active_calls_by_kind(c)?;
            let campaigns = crate::campaigns::store::running_count(c)?;
            Ok::<_, DbError>((calls, campaigns))
        })
        .await;
    match counts {
        Ok((calls, campaigns)) => {
            for (kind, n) in calls {
                metrics::gauge!("voxflow_calls_active", "kind" => kind).set(n as f64);
            }
            metrics::gauge!("voxflow_campaigns_running").set(campaigns as f64);
        }
        Err(err) => tracing::warn!(%err, "metrics: cannot read the call and campaign counts"),
    }
    // Counted by the log's thread (see `logging`), read at scrape time.
    metrics::counter!("voxflow_log_lines_dropped_total").absolute(crate::logging::dropped_lines());
    let body = crate::metrics::handle().render();
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
