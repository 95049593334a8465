//! What an operator watches: request ids, the access log, request metrics
//! and `GET /metrics`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::error::ApiError;
use super::extract::ClientInfo;
use super::AppState;
use crate::auth::extract::AdminUser;
use crate::auth::rate_limit::{client_ip, LoggedUser};
use crate::db::DbError;

pub const REQUEST_ID: &str = "x-request-id";

/// What the access log says of a request, gathered inside the layers
/// (where the route is known) and read where the response leaves.
#[derive(Debug, Clone)]
struct Facts {
    method: &'static str,
    route: String,
    request_id: String,
}

/// A client's own id is kept only from a trusted proxy (which had it from
/// its client, or made it), and only when it is short printable ASCII: it
/// goes into every log line of the request.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Resolves the request's client (`ClientInfo`) and gives every request an `X-Request-Id` (the trusted proxy's, else a new
/// UUID v4) and echoes it on the response. tower-http's `SetRequestId`
/// keeps whatever id a request arrives with; an untrusted client's must be
/// replaced, or it could forge the ids in our log.
pub async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = peer.is_some_and(|ip| state.config.trusted_proxies.contains(ip));
    // Who the client is, decided once for every layer and handler after.
    let client = ClientInfo::resolve(peer, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(client);
    let id = match req.headers().get(REQUEST_ID) {
        Some(v) if trusted && acceptable_id(v) => v.clone(),
        _ => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or(HeaderValue::from_static("-")),
    };
    req.headers_mut().insert(REQUEST_ID, id.clone());
    req.extensions_mut()
        .insert(super::BodyTimeout(Duration::from_secs(
            state.config.body_timeout_secs,
        )));
    let mut res = next.run(req).await;
    res.headers_mut().insert(REQUEST_ID, id);
    res
}

/// Methods as metric labels: a bounded set, so that made-up methods cannot
/// grow the number of series.
fn method_label(m: &Method) -> &'static str {
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
fn route_label(req: &Request) -> String {
    match req.extensions().get::<MatchedPath>() {
        Some(p) if !p.as_str().contains("{*") => p.as_str().to_string(),
        _ => "unmatched".to_string(),
    }
}

/// Counts and times each request by method, route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = route_label(&req);
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let started = Instant::now();
    let mut res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("voxflow_http_requests_total",
        "method" => method, "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("voxflow_http_request_duration_seconds",
        "method" => method, "route" => route.clone())
    .record(started.elapsed().as_secs_f64());
    res.extensions_mut().insert(Facts {
        method,
        route,
        request_id,
    });
    res
}

/// The access log: one line per request at `info` (target
/// `voxflow::access`) with method, route template, status, latency in ms,
/// the signed-in user's id and the request id. Never headers, bodies or
/// query strings: they carry tokens, passwords and keys.
#[allow(clippy::type_complexity)]
pub fn access_log() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    (),
    fn(&Response, Duration, &Span),
    (),
    (),
    (),
> {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request<Body>) -> Span)
        .on_request(())
        .on_response(log_response as fn(&Response, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Every log line written while a request runs carries its id.
fn request_span(req: &Request<Body>) -> Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", request_id = %id)
}

fn log_response(res: &Response, latency: Duration, _span: &Span) {
    let Some(facts) = res.extensions().get::<Facts>() else {
        return;
    };
    let user_id = res.extensions().get::<LoggedUser>().map(|u| u.0.as_str());
    tracing::info!(
        target: "voxflow::access",
        method = %facts.method,
        route = %facts.route,
        status = res.status().as_u16(),
        // Microseconds are as fine as a log line needs.
        latency_ms = latency.as_micros() as f64 / 1000.0,
        user_id,
        request_id = %facts.request_id,
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
    let body = crate::metrics::handle().render();
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
