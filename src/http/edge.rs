//! The one layer every request passes through, in this order from the
//! outside in: the request id and the client (`ops::admit`), the access
//! log's span and line, the request metrics, CORS, the panic guard, the
//! security headers and the rate limit (`auth::rate_limit`).
//!
//! They were eight layers (`from_fn` middleware and tower-http's trace,
//! catch-panic and CORS layers). axum applies a router's layers to every
//! route one by one, each in a boxed service that is cloned, and whose
//! future is boxed, on every request: in the profile of `GET /api/agents`
//! under `cargo bench --bench load` the layers took seven times the time
//! of the handler they wrapped. As one function they cost one clone and
//! one boxed future.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tracing::Instrument;

use super::cors::{self, Cors};
use super::error::ApiError;
use super::{ops, AppState};

/// What the layer needs: the server's state and its CORS answers.
#[derive(Clone)]
pub struct Edge {
    state: AppState,
    cors: Option<Arc<Cors>>,
}

impl Edge {
    pub fn new(state: AppState) -> Edge {
        let cors = Cors::new(&state.config.cors_origins).map(Arc::new);
        Edge { state, cors }
    }
}

/// The layer's function, for `axum::middleware::from_fn_with_state`.
pub async fn edge(State(edge): State<Edge>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let Edge { state, cors } = edge;
    let admitted = ops::admit(&state, &mut req);
    let method = ops::method_label(req.method());
    let route = ops::route_label(&req);
    // Every log line written while the request runs carries its id.
    let span = tracing::info_span!("request", request_id = %admitted.id_text());
    let https = admitted.https;
    let answer = move |req: Request| {
        let (state, next) = (state.clone(), next.clone());
        async move {
            let res = guard(crate::auth::rate_limit::limit_requests(&state, req, next)).await;
            security_headers(https, res)
        }
    };
    // CORS outside the panic guard, so that a 500 is readable
    // cross-origin too.
    let mut res = cors::apply(cors.as_deref(), req, answer)
        .instrument(span.clone())
        .await;
    let latency = started.elapsed();
    ops::count(method, &route, res.status(), latency);
    span.in_scope(|| ops::log_response(&res, method, &route, admitted.id_text(), latency));
    res.headers_mut().insert(ops::REQUEST_ID, admitted.id);
    res
}

/// A panic in a handler is answered with a 500 in the envelope, counted
/// and logged like any other answer, instead of a dropped connection.
async fn guard(handling: impl Future<Output = Response>) -> Response {
    AssertUnwindSafe(handling)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| ApiError::internal("a request handler panicked").into_response())
}

/// Headers every answer carries: the UI loads nothing from elsewhere (its
/// AudioWorklet module included: worklets follow `script-src`), no page of
/// ours may be framed, and only our pages may ask for the microphone. Over
/// HTTPS (a trusted proxy's word, see `ClientInfo`), browsers are told to
/// come back over HTTPS only; over plain HTTP the header would be ignored
/// and, on a server reached both ways, wrong.
fn security_headers(https: bool, mut res: Response) -> Response {
    let h = res.headers_mut();
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; worker-src 'self'; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    // The web call's microphone, for this origin's pages only; nothing else.
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=(), payment=()"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_a_500_in_the_envelope() {
        let res = guard(async {
            if StatusCode::OK.is_success() {
                panic!("a handler's bug");
            }
            StatusCode::OK.into_response()
        })
        .await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "INTERNAL_ERROR");

        let fine = guard(async { StatusCode::NO_CONTENT.into_response() }).await;
        assert_eq!(fine.status(), StatusCode::NO_CONTENT);
    }
}
