//! Router assembly, layers, health checks and the embedded web UI.

pub mod cors;
pub mod csv;
pub mod edge;
pub mod error;
pub mod extract;
pub mod filters;
pub mod openapi;
pub mod ops;
pub mod pagination;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use include_dir::{include_dir, Dir};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::db::{migrate, Db, DbError};
use edge::Edge;
use error::{ok, ApiError};
use openapi::{Envelope, ErrorBody};

static STATIC_UI: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/static");

/// The largest JSON body any endpoint accepts. Agent prompts (5,000
/// characters) and conversation histories fit well below it.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// Shared by every handler. Every layer and extractor that names the
/// state clones it for each request, so it is one `Arc`: a clone is one
/// atomic increment, where cloning the fields cost several (the profile of
/// `read_agents` had 2 % of the server in cloning and dropping them).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub db: Db,
    pub config: Arc<Config>,
    pub started: Instant,
    pub login_throttle: Arc<crate::auth::throttle::LoginThrottle>,
    /// Every password hash and check of the server goes through it.
    pub password_queue: crate::crypto::password::HashQueue,
    /// The tenants' provider keys are sealed and opened with this.
    pub vault: Arc<crate::crypto::vault::Vault>,
    /// For provider requests (key tests): built once, bounded in time.
    pub http_client: reqwest::Client,
    /// The campaign dialer's Twilio requests under way.
    pub dialing: Arc<crate::campaigns::dialer::InFlight>,
    /// The request rate limits' buckets.
    pub rate_limits: Arc<crate::auth::rate_limit::RateLimits>,
    /// What the periodic storage and database check last found.
    pub readiness: Arc<crate::db::health::Readiness>,
    /// Sessions recently looked up (see `auth::extract::session_of`).
    pub sessions: crate::auth::extract::SessionCache,
    /// Agent list pages recently served (see `agents::routes`).
    pub agent_lists: crate::agents::routes::AgentListCache,
}

/// Every documented route, in the three routers that take different layers,
/// and the document the annotations of their handlers make.
pub(crate) struct Routes {
    /// `/api`'s routes whose bodies are at most `JSON_BODY_LIMIT`.
    api: Router<AppState>,
    /// The CSV upload, which reads a larger body than any other route.
    upload: Router<AppState>,
    /// Health, metrics: outside `/api`.
    top: Router<AppState>,
    pub(crate) doc: utoipa::openapi::OpenApi,
}

pub(crate) fn routes() -> Routes {
    let (api, api_doc) = OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .nest("/auth", crate::auth::routes::router())
        .nest("/admin", crate::admin::routes::router())
        .nest("/agents", crate::agents::routes::router())
        .nest("/calls", crate::calls::routes::router())
        .nest("/api-keys", crate::api_keys::routes::router())
        .merge(crate::service_config::router())
        .merge(crate::api_keys::telephony::router())
        .merge(crate::usage::routes::router())
        .merge(crate::campaigns::routes::router())
        .merge(crate::auth::rate_limit::router())
        .split_for_parts();
    let (upload, upload_doc) = crate::campaigns::routes::upload_router().split_for_parts();
    let (top, doc) = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(liveness))
        .routes(routes!(readiness))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    // `merge`, not a second `nest`: nesting replaces a path's item, and
    // `/api/campaigns` has its GET here and its POST in the upload.
    let mut api_doc = api_doc;
    api_doc.merge(upload_doc);
    let doc = doc.nest("/api", api_doc);
    Routes {
        api,
        upload,
        top,
        doc,
    }
}

pub fn router(state: AppState) -> Router {
    let Routes {
        api, upload, top, ..
    } = routes();
    let api = api
        .fallback(api_not_found)
        .layer(middleware::from_fn_with_state(
            JSON_BODY_LIMIT,
            read_body_first,
        ))
        // The CSV upload reads a larger body than any other route; it joins
        // after the layer above so that one does not cut it at 1 MiB.
        .merge(upload);
    top.nest("/api", api)
        .fallback(static_ui)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        // Router layers run after routing, so the metrics and the log know
        // the route template.
        .layer(middleware::from_fn_with_state(
            Edge::new(state.clone()),
            edge::edge,
        ))
        .with_state(state)
}

/// `OriginalUri`: inside the nested `/api` router `Uri` has lost its prefix.
async fn api_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ROUTE_NOT_FOUND",
        format!("No endpoint {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Reads the whole request body before routing and extractors run. A handler
/// that refuses a request on its path or headers alone would otherwise answer
/// before the client has sent its body; the server then closes a connection
/// with unread data, and the client sees a broken pipe or a reset instead of
/// the 4xx it was sent. A body over the limit is read on (and dropped) up to
/// `DRAIN_LIMIT` for the same reason, then refused with a 413. `limit` is
/// the route's largest body.
pub async fn read_body_first(State(limit): State<usize>, req: Request, next: Next) -> Response {
    /// Beyond this a client gets its 413 the hard way (a closed connection).
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    // Most requests (every GET) have no body: nothing to read or to wait for.
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, mut body) = req.into_parts();
    // The rate-limit layer resolved the session already: a stranger's body
    // is cut at ANONYMOUS_BODY_LIMIT, so unauthenticated connections cannot
    // make the server hold large bodies.
    let signed_in = parts
        .extensions
        .get::<crate::auth::rate_limit::Resolved>()
        .is_some_and(|r| r.session.as_ref().is_some_and(|s| s.user.is_active));
    let limit = if signed_in {
        limit
    } else {
        limit.min(ANONYMOUS_BODY_LIMIT)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !signed_in && declared.is_some_and(|n| n > limit as u64) {
        return closing(too_large());
    }
    let timeout = parts
        .extensions
        .get::<BodyTimeout>()
        .map_or(Duration::from_secs(20), |t| t.0);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return closing(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "BODY_TIMEOUT",
                    format!(
                        "The request body did not arrive within {} seconds",
                        timeout.as_secs()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        let Ok(frame) = frame else {
            return ApiError::bad_request("INVALID_BODY", "The request body could not be read")
                .into_response();
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if !signed_in {
                return closing(too_large());
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return too_large().into_response();
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}

/// The most of a body read from a client without a session (login,
/// registration, Twilio's webhooks are all far smaller).
pub const ANONYMOUS_BODY_LIMIT: usize = 64 * 1024;

/// How long the request's body may take to arrive (`--body-timeout-secs`),
/// put on each request by `ops::admit`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "The request body is too large (sign in first for bodies over 64 KiB)",
    )
}

/// An answer after which the connection is closed: the rest of the body
/// is not read.
fn closing(err: ApiError) -> Response {
    let mut res = err.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Asks a reader for `SELECT 1`, bounded so a stuck database reports
/// unhealthy instead of hanging the probe.
async fn database_answers(db: &Db) -> bool {
    let probe = db.read(|c| {
        c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map_err(DbError::from)
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(1))
    )
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `degraded` when the database does not answer.
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    /// `ok` or `unavailable`.
    database: &'static str,
}

/// The server's status, version, uptime and database.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses(
        (status = 200, body = Envelope<Health>),
        (status = 503, body = ErrorBody, description = "The database does not answer; `data` holds the status"),
    ))]
async fn health(State(s): State<AppState>) -> Response {
    let db_ok = database_answers(&s.db).await;
    let body = Health {
        status: if db_ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs(),
        database: if db_ok { "ok" } else { "unavailable" },
    };
    if db_ok {
        ok(StatusCode::OK, body)
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "The database does not answer",
        )
        .with("data", json!(body))
        .into_response()
    }
}

/// This description.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "An OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    axum::Json(openapi::document()).into_response()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Liveness {
    /// `alive`.
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/liveness", tag = "health", security(()),
    responses((status = 200, body = Envelope<Liveness>)))]
async fn liveness() -> Response {
    ok(StatusCode::OK, Liveness { status: "alive" })
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    schema_version: Option<i32>,
    expected_schema_version: i32,
    /// What the last periodic check found wrong, `null` when it passed.
    problem: Option<String>,
}

/// 200 when the database is migrated, answers, and the periodic check
/// passed.
#[utoipa::path(get, path = "/health/readiness", tag = "health", security(()),
    responses(
        (status = 200, body = Envelope<Readiness>),
        (status = 503, body = ErrorBody, description = "Not ready; `data` holds the status"),
    ))]
async fn readiness(State(s): State<AppState>) -> Response {
    let version = s.db.read(|c| migrate::current_version(c)).await.ok();
    let latest = migrate::latest_version();
    // The periodic check's finding (storage full, writer stuck, a damaged
    // file): a load balancer stops sending writes here until it passes.
    let problem = s.readiness.problem();
    let ready = version == Some(latest) && problem.is_none() && database_answers(&s.db).await;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        schema_version: version,
        expected_schema_version: latest,
        problem,
    };
    if ready {
        ok(StatusCode::OK, body)
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", "Not ready")
            .with("data", json!(body))
            .into_response()
    }
}

/// The web UI: files of `static/`, with `index.html` for `/` and for any
/// extensionless path (the UI's own routes).
async fn static_ui(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(method, uri).await.into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let file = match STATIC_UI.get_file(path) {
        Some(f) if !path.is_empty() => Some(f),
        _ if !path.rsplit('/').next().unwrap_or("").contains('.') => {
            STATIC_UI.get_file("index.html")
        }
        _ => None,
    };
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let mime = mime_guess::from_path(file.path()).first_or_octet_stream();
    let mut res = Response::new(Body::from(file.contents()));
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
