//! Request rate limits: per signed-in user by plan, per client address for
//! requests without a session. GCRA through `governor`: a plan's N requests
//! per minute are a burst of N that refills continuously, one request every
//! 60/N seconds, so a client is never locked out for a whole minute and
//! never gets more than N in any minute.
//!
//! The layer (`limit_requests`) resolves the session itself, before the
//! handler: the limit depends on the user's plan. What it read is handed to
//! the `CurrentUser` extractor through the request's extensions, so a
//! request still reads its session once.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http_body_util::BodyExt;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{session_of, token_of, well_formed, CurrentUser};
use super::store::SessionUser;
use crate::config::{Config, Switch};
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::ClientInfo;
use crate::http::AppState;

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One limiter per plan (a plan change moves the user to the other's
/// bucket), one for addresses.
pub struct RateLimits {
    enabled: bool,
    clock: DefaultClock,
    free: (u32, Keyed<String>),
    pro: (u32, Keyed<String>),
    enterprise: (u32, Keyed<String>),
    anonymous: (u32, Keyed<IpAddr>),
}

/// Where a request stands with its limit, sent back as the
/// `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
    /// Set when refused: seconds until one more request fits.
    pub retry_after: Option<u64>,
}

/// What the layer decided for a request, for `GET /api/rate-limits/status`.
#[derive(Debug, Clone, Copy)]
pub enum Standing {
    Disabled,
    /// Admins are not limited.
    Exempt,
    Limited(Verdict),
}

/// The session the layer resolved for the request's token (`None`: no
/// such session), taken by `CurrentUser` instead of reading it again.
#[derive(Clone)]
pub struct Resolved {
    pub token: String,
    pub session: Option<SessionUser>,
}

/// The signed-in user of a request, put on the response for the access log.
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> (u32, Keyed<K>) {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    (
        n.get(),
        RateLimiter::dashmap(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>(),
    )
}

impl RateLimits {
    pub fn new(config: &Config) -> RateLimits {
        RateLimits {
            enabled: config.rate_limit == Switch::On,
            clock: DefaultClock::default(),
            free: limiter(config.rate_limit_free),
            pro: limiter(config.rate_limit_pro),
            enterprise: limiter(config.rate_limit_enterprise),
            anonymous: limiter(config.rate_limit_anonymous),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        (limit, limiter): &(u32, Keyed<K>),
        key: &K,
    ) -> Verdict {
        let limit = *limit;
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let per_cell = snapshot.quota().replenish_interval();
                Verdict {
                    limit,
                    remaining,
                    reset: ceil_secs(per_cell * limit.saturating_sub(remaining)),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let per_cell = not_until.quota().replenish_interval();
                Verdict {
                    limit,
                    remaining: 0,
                    reset: ceil_secs(wait + per_cell * limit.saturating_sub(1)),
                    retry_after: Some(ceil_secs(wait).max(1)),
                }
            }
        }
    }

    /// Counts one request of a signed-in user on `tier`.
    pub fn check_user(&self, user_id: &str, tier: &str) -> Option<Verdict> {
        if !self.enabled {
            return None;
        }
        let bucket = match tier {
            "pro" => &self.pro,
            "enterprise" => &self.enterprise,
            _ => &self.free,
        };
        Some(self.check(bucket, &user_id.to_string()))
    }

    /// Counts one request without a session from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Option<Verdict> {
        self.enabled.then(|| self.check(&self.anonymous, &ip))
    }

    /// Forgets buckets that are full again, so that one-off addresses do
    /// not pile up in memory.
    pub fn forget_idle(&self) {
        self.free.1.retain_recent();
        self.pro.1.retain_recent();
        self.enterprise.1.retain_recent();
        self.anonymous.1.retain_recent();
    }
}

/// Prunes idle buckets every minute while the server runs.
pub async fn prune_periodically(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.rate_limits.forget_idle();
    }
}

/// The client's address, as `ops::admit` resolved it (see
/// `ClientInfo`): behind a trusted proxy, the one it forwarded for.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientInfo>()?.addr()
}

fn set_headers(headers: &mut HeaderMap, v: &Verdict) {
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(v.limit)),
        ("x-ratelimit-remaining", u64::from(v.remaining)),
        ("x-ratelimit-reset", v.reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// Paths never limited: Twilio's webhooks (signed, from Twilio's addresses:
/// limiting them would cut live calls off). Health, `/metrics` and the web
/// UI's files are outside `/api` and never reach this layer's limits.
fn exempt(path: &str) -> bool {
    !path.starts_with("/api/") || path.starts_with("/api/calls/twilio/")
}

/// Reads the body of a refused request before answering, for the reason
/// `http::read_body_first` gives: an unread body turns the client's 429
/// into a reset connection.
async fn drain(body: Body) {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut body = body;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
}

/// The limit, run by the server's one layer (`http::edge`): resolves the
/// session, counts the request against the user's plan (admins exempt)
/// or, without a session, the client's address; refuses with 429
/// `RATE_LIMITED` and `Retry-After` past the limit, and puts the
/// `X-RateLimit-*` headers on every limited answer.
pub async fn limit_requests(state: &AppState, mut req: Request, next: Next) -> Response {
    // Inside `/api`'s nested routers the URI has lost its prefix.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
    if exempt(&path) {
        return next.run(req).await;
    }
    let mut session_user = None;
    if let Some((token, _)) = token_of(req.headers()) {
        if well_formed(&token) {
            let found = session_of(state, &token).await;
            let session = match found {
                Ok(s) => s,
                Err(e) => return ApiError::from(e).into_response(),
            };
            session_user = session.as_ref().filter(|s| s.user.is_active).map(|s| {
                (
                    s.user.id.clone(),
                    s.user.role.clone(),
                    s.user.subscription_tier.clone(),
                )
            });
            req.extensions_mut().insert(Resolved { token, session });
        }
    }
    let verdict = match &session_user {
        Some((_, role, _)) if role == "admin" => None,
        Some((id, _, tier)) => state.rate_limits.check_user(id, tier),
        None => client_ip(&req).and_then(|ip| state.rate_limits.check_ip(ip)),
    };
    let standing = match (verdict, &session_user) {
        (Some(v), _) => Standing::Limited(v),
        (None, Some((_, role, _))) if role == "admin" && state.rate_limits.enabled => {
            Standing::Exempt
        }
        (None, _) => Standing::Disabled,
    };
    req.extensions_mut().insert(standing);
    let mut res = match verdict.and_then(|v| v.retry_after.map(|r| (v, r))) {
        Some((v, retry_after)) => {
            let scope = if session_user.is_some() {
                "user"
            } else {
                "anonymous"
            };
            metrics::counter!("voxflow_rate_limited_total", "scope" => scope).increment(1);
            drain(req.into_body()).await;
            let mut refused = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "Too many requests: the limit is {} a minute; try again in {retry_after} seconds",
                    v.limit
                ),
            );
            refused.retry_after = Some(retry_after);
            refused.into_response()
        }
        None => next.run(req).await,
    };
    if let Some(v) = &verdict {
        set_headers(res.headers_mut(), v);
    }
    if let Some((id, _, _)) = session_user {
        res.extensions_mut().insert(LoggedUser(id));
    }
    res
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

/// `GET /api/rate-limits/status`: the caller's limit as this very request
/// left it.
#[utoipa::path(get, path = "/rate-limits/status", tag = "auth",
    responses((status = 200, body = crate::http::openapi::Envelope<serde_json::Value>,
        description = "`data`: `{limited: true, scope, plan, limit, remaining, reset}`, or `{limited: false, reason}`")))]
async fn status(current: CurrentUser, req: Request) -> ApiResult<Response> {
    let standing = req.extensions().get::<Standing>().copied();
    let body = match standing {
        Some(Standing::Limited(v)) => json!({
            "limited": true,
            "scope": "user",
            "plan": current.user.subscription_tier,
            "limit": v.limit,
            "remaining": v.remaining,
            "reset": v.reset,
            "window_seconds": 60,
        }),
        Some(Standing::Exempt) => json!({ "limited": false, "reason": "admin" }),
        Some(Standing::Disabled) | None => json!({ "limited": false, "reason": "disabled" }),
    };
    Ok(ok(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_passes_and_the_next_is_refused() {
        let mut config = Config::for_data_dir("x");
        config.rate_limit_free = 3;
        let limits = RateLimits::new(&config);
        let seen: Vec<Verdict> = (0..4)
            .filter_map(|_| limits.check_user("u", "free"))
            .collect();
        assert_eq!(seen[0].remaining, 2);
        assert_eq!(seen[2].remaining, 0);
        assert!(seen[2].retry_after.is_none());
        let refused = seen[3];
        assert!(refused.retry_after.unwrap() >= 1);
        assert!(refused.reset >= refused.retry_after.unwrap());
        assert!(limits
            .check_user("other", "free")
            .unwrap()
            .retry_after
            .is_none());
        config.rate_limit = Switch::Off;
        assert!(RateLimits::new(&config).check_user("u", "free").is_none());
    }
}
