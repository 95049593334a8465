//! "Who is calling": extractors a handler names to state its access rule.
//! `CurrentUser` is any signed-in, active user; `AdminUser` only an admin.
//! Both read the session and the user afresh on every request, so a
//! deactivation, a role change or a logout takes effect at once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

use super::rate_limit::Resolved;
use super::store::{self, SessionUser, User};
use crate::db::cache::ReadCache;
use crate::db::{Db, DbError};
use crate::http::error::ApiError;
use crate::http::AppState;

pub const SESSION_COOKIE: &str = "voxflow_session";

pub struct CurrentUser {
    pub user: User,
    pub session_id: String,
}

pub struct AdminUser(pub CurrentUser);

/// The session token from `Authorization: Bearer`, else from the cookie;
/// the flag says whether it came from the cookie.
pub(crate) fn token_of(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim().to_string(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| (v.to_string(), true))
        })
}

/// A cookie rides along on any request the browser makes, including one a
/// hostile page triggers; SameSite=Strict stops most, and this stops the
/// rest: a state-changing request authenticated by cookie must come from a
/// page of this server (Origin, or failing that Referer, names our host).
fn same_origin(parts: &Parts) -> bool {
    let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let source = parts
        .headers
        .get(header::ORIGIN)
        .or_else(|| parts.headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let rest = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"));
    rest.map(|r| r.split('/').next().unwrap_or("")) == Some(host)
}

/// Tokens are 64 hex characters; anything else is refused before any lookup.
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sessions most recently looked up, with their users: a request's
/// session is read from the database only when the session or the user has
/// changed since (a logout, a deactivation, a role change, another
/// process's write: see `db::changes`), when it turns stale and is due a
/// refresh of `last_used_at`, or when it expires.
pub type SessionCache = ReadCache<[u8; 32], SessionUser>;

/// Bounds the cache at a few megabytes.
const CACHED_SESSIONS: usize = 10_000;

pub fn session_cache(db: &Db) -> SessionCache {
    ReadCache::new(db, "sessions", &["sessions", "users"], CACHED_SESSIONS)
}

/// The live session behind a well-formed `token`, if any.
pub(crate) async fn session_of(
    state: &AppState,
    token: &str,
) -> Result<Option<SessionUser>, DbError> {
    // Keyed by the token's hash, as the database keeps it: the cache holds
    // no token in clear either.
    let hash = crate::crypto::sha256(token.as_bytes());
    if let Some(found) = state.sessions.get(&hash) {
        return Ok(Some(found));
    }
    let stamp = state.sessions.stamp();
    let key = hex::encode(hash);
    let found = state
        .db
        .read(move |c| store::session_user(c, &key).map_err(DbError::from))
        .await?;
    if let Some(session) = found.as_ref().filter(|s| !s.stale()) {
        let fresh_for = Some(session.fresh_for);
        state.sessions.put(hash, stamp, session.clone(), fresh_for);
    }
    Ok(found)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some((token, from_cookie)) = token_of(&parts.headers) else {
            return Err(ApiError::unauthorized(
                "Sign in first: no session token was sent",
            ));
        };
        if !well_formed(&token) {
            return Err(ApiError::unauthorized("Invalid or expired session"));
        }
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        // A WebSocket upgrade is a GET, but it opens a two-way channel that
        // acts for the user: another site's page must not open one with the
        // user's cookie (cross-site WebSocket hijacking).
        let upgrade = parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if from_cookie && (unsafe_method || upgrade) && !same_origin(parts) {
            return Err(ApiError::forbidden(
                "CSRF_CHECK_FAILED",
                "Cross-site request refused: send it from the VoxFlow page or with a bearer token",
            ));
        }
        // The rate-limit layer has usually read this session already.
        let found = match parts.extensions.remove::<Resolved>() {
            Some(resolved) if resolved.token == token => resolved.session,
            _ => session_of(state, &token).await?,
        };
        let Some(found) = found else {
            return Err(ApiError::unauthorized("Invalid or expired session"));
        };
        if !found.user.is_active {
            return Err(ApiError::forbidden(
                "ACCOUNT_DEACTIVATED",
                "This account has been deactivated",
            ));
        }
        if found.stale() {
            // Refreshing last_used_at is bookkeeping: the request need not wait for it.
            let db = state.db.clone();
            let id = found.session_id.clone();
            tokio::spawn(async move {
                let _ = db
                    .write(move |c| store::touch_session(c, &id).map_err(DbError::from))
                    .await;
            });
        }
        Ok(CurrentUser {
            user: found.user,
            session_id: found.session_id,
        })
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        if current.user.role != "admin" {
            return Err(ApiError::forbidden(
                "FORBIDDEN",
                "This needs an admin account",
            ));
        }
        Ok(AdminUser(current))
    }
}
