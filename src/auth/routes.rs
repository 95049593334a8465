//! `/api/auth/*`: register, login, logout, me, change-password.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{CurrentUser, SESSION_COOKIE};
use super::store::{self, NewUser, User};
use super::throttle::credential_of;
use super::{check_organization, check_password_policy, normalize_email};
use crate::config::Registration;
use crate::db::DbError;
use crate::http::error::{ok, ApiError, ApiResult, FieldError};
use crate::http::extract::{ApiJson, ClientInfo};
use crate::http::openapi::{Envelope, ErrorBody, Notice};
use crate::http::AppState;
use crate::tiers;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// A new session: the token for `Authorization: Bearer`, also set as the
/// web UI's cookie.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionAnswer {
    token: String,
    expires_at: String,
    user: User,
}

/// The cookie the web UI signs in with; API clients use the token in the body.
/// `Secure` when the request came over HTTPS (through a trusted proxy that
/// says so: see `ClientInfo`).
fn session_cookie(token: &str, max_age_secs: u64, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

async fn start_session(
    state: &AppState,
    user: User,
    client: &ClientInfo,
    status: StatusCode,
) -> ApiResult<Response> {
    let ttl = state.config.session_ttl_hours;
    let (user_id, ip, ua) = (
        user.id.clone(),
        client.ip.clone(),
        client.user_agent.clone(),
    );
    let session = state
        .db
        .write(move |c| {
            store::create_session(c, &user_id, ttl, Some(&ip), ua.as_deref()).map_err(DbError::from)
        })
        .await?;
    let fresh = {
        let id = user.id.clone();
        state
            .db
            .read(move |c| store::user_by_id(c, &id).map_err(DbError::from))
            .await?
            .unwrap_or(user)
    };
    let cookie = session_cookie(&session.token, u64::from(ttl) * 3600, client.https);
    let mut res = ok(
        status,
        SessionAnswer {
            token: session.token,
            expires_at: session.expires_at,
            user: fresh,
        },
    );
    if let Some(cookie) = cookie {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(res)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    email: String,
    password: String,
    #[serde(default)]
    organization_name: Option<String>,
    /// Accepted from first-edition clients and ignored: new accounts are
    /// always on the free tier (an admin changes it).
    #[serde(default, rename = "subscription_tier")]
    #[schema(value_type = Option<String>, deprecated)]
    _subscription_tier: IgnoredAny,
}

/// Create an account (free tier) and sign in.
#[utoipa::path(post, path = "/register", tag = "auth", security(()),
    request_body = RegisterBody,
    responses(
        (status = 201, body = Envelope<SessionAnswer>, description = "Registered and signed in"),
        (status = 403, body = ErrorBody, description = "Registration is closed on this server"),
        (status = 409, body = ErrorBody, description = "The email is taken"),
    ))]
async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<Response> {
    if state.config.registration == Registration::Closed {
        return Err(ApiError::forbidden(
            "REGISTRATION_CLOSED",
            "Registration is closed on this server; ask an administrator for an account",
        ));
    }
    let mut errors = Vec::new();
    let email = normalize_email(&body.email).map_err(|m| {
        errors.push(FieldError {
            field: "email".into(),
            message: m.into(),
        })
    });
    if let Err(m) = check_password_policy(&body.password) {
        errors.push(FieldError {
            field: "password".into(),
            message: m.into(),
        });
    }
    let organization = check_organization(body.organization_name.as_deref())
        .map_err(|m| {
            errors.push(FieldError {
                field: "organization_name".into(),
                message: m.into(),
            })
        })
        .unwrap_or_default();
    let Ok(email) = email else {
        return Err(ApiError::fields(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let hash = state.password_queue.hash(body.password).await?;
    let free = tiers::tier("free").unwrap_or(&tiers::TIERS[0]);
    let inserted = {
        let email = email.clone();
        state
            .db
            .write(move |c| {
                let id = store::insert_user(
                    c,
                    &NewUser {
                        email: &email,
                        password_hash: &hash,
                        role: "user",
                        tier: free,
                        organization_name: organization.as_deref(),
                    },
                );
                match id {
                    Ok(id) => Ok(Some(id)),
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(ApiError::from(e)),
                }
            })
            .await?
    };
    let Some(id) = inserted else {
        return Err(ApiError::conflict(
            "EMAIL_TAKEN",
            "An account with this email already exists",
        ));
    };
    let user = state
        .db
        .read(move |c| store::user_by_id(c, &id).map_err(DbError::from))
        .await?
        .ok_or_else(|| ApiError::internal("registered user vanished"))?;
    tracing::info!(user_id = %user.id, "user registered");
    start_session(&state, user, &client, StatusCode::CREATED).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

const BAD_LOGIN: &str = "Invalid email or password";

/// Checks `password` against `stored` (a decoy when `None`) for `account`,
/// under the throttle: 429 before any hashing once the account or the
/// address has used up its attempts, the attempt counted as a failure from
/// before the hash until it proves right, and 503 when too many checks are
/// already waiting for a core.
async fn throttled_verify(
    state: &AppState,
    account: &str,
    ip: &str,
    password: String,
    stored: Option<String>,
) -> ApiResult<bool> {
    let credential = stored.as_deref().map(credential_of);
    let attempt = state
        .login_throttle
        .reserve(account, ip, credential)
        .map_err(ApiError::too_many_requests)?;
    match state.password_queue.verify(password, stored).await {
        Ok(true) => {
            attempt.succeed();
            Ok(true)
        }
        Ok(false) => {
            attempt.fail();
            Ok(false)
        }
        Err(e) => {
            // Never checked: nothing learned, nothing to count.
            attempt.release();
            Err(e.into())
        }
    }
}

/// Sign in: a session token.
#[utoipa::path(post, path = "/login", tag = "auth", security(()),
    request_body = LoginBody,
    responses(
        (status = 200, body = Envelope<SessionAnswer>),
        (status = 401, body = ErrorBody, description = "Wrong email or password"),
        (status = 403, body = ErrorBody, description = "The account is deactivated"),
        (status = 429, body = ErrorBody, description = "Too many failed attempts for the account or the address: see `Retry-After`"),
    ))]
async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let answer = check_login(&state, &client, body).await;
    let outcome = match &answer {
        Ok(_) => "success",
        Err(e) => match e.code {
            "INVALID_CREDENTIALS" => "failure",
            "RATE_LIMITED" => "throttled",
            "ACCOUNT_DEACTIVATED" => "deactivated",
            "SERVER_BUSY" => "busy",
            _ => "error",
        },
    };
    metrics::counter!("voxflow_logins_total", "outcome" => outcome).increment(1);
    answer
}

async fn check_login(
    state: &AppState,
    client: &ClientInfo,
    body: LoginBody,
) -> ApiResult<Response> {
    // An address that cannot be an account still goes through the same
    // throttle and hash, so its answer looks like any other wrong login.
    let email = normalize_email(&body.email).unwrap_or_else(|_| body.email.trim().to_lowercase());
    let email: String = email.chars().take(255).collect();
    let found = {
        let email = email.clone();
        state
            .db
            .read(move |c| store::credentials_by_email(c, &email).map_err(DbError::from))
            .await?
    };
    let (user, stored) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    // Passwords past the policy's length are refused without hashing them
    // in full, but only after the same work as any other attempt.
    let password: String = body.password.chars().take(1024).collect();
    let valid = throttled_verify(state, &email, &client.ip, password, stored).await?;
    let Some(user) = user.filter(|_| valid) else {
        return Err(ApiError::unauthorized(BAD_LOGIN).with_code("INVALID_CREDENTIALS"));
    };
    if !user.is_active {
        return Err(ApiError::forbidden(
            "ACCOUNT_DEACTIVATED",
            "This account has been deactivated",
        ));
    }
    start_session(state, user, client, StatusCode::OK).await
}

/// End this session.
#[utoipa::path(post, path = "/logout", tag = "auth",
    responses((status = 200, body = Envelope<Notice>)))]
async fn logout(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let id = current.session_id;
    state
        .db
        .write(move |c| store::delete_session(c, &id).map_err(DbError::from))
        .await?;
    let mut res = ok(
        StatusCode::OK,
        Notice {
            message: "Signed out".into(),
        },
    );
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("voxflow_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(res)
}

/// The caller with this month's usage.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    #[serde(flatten)]
    user: User,
    current_usage: store::CurrentUsage,
}

/// The caller and this month's usage.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = Envelope<Me>)))]
async fn me(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let user = current.user;
    let (user, usage) = state
        .db
        .read(move |c| {
            let usage = store::current_usage(c, &user)?;
            Ok::<_, ApiError>((user, usage))
        })
        .await?;
    Ok(ok(
        StatusCode::OK,
        Me {
            user,
            current_usage: usage,
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

/// Change the password; the caller's other sessions end.
#[utoipa::path(post, path = "/change-password", tag = "auth",
    request_body = ChangePasswordBody,
    responses((status = 200, body = Envelope<Notice>)))]
async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> ApiResult<Response> {
    if let Err(m) = check_password_policy(&body.new_password) {
        return Err(ApiError::field("new_password", m));
    }
    let user_id = current.user.id.clone();
    let stored = {
        let id = user_id.clone();
        state
            .db
            .read(move |c| store::password_hash_by_id(c, &id).map_err(DbError::from))
            .await?
    };
    let current_password: String = body.current_password.chars().take(1024).collect();
    // The same allowance as logins, on the same account: a stolen session
    // must not become a way around the login throttle.
    let right = throttled_verify(
        &state,
        &current.user.email,
        &client.ip,
        current_password,
        stored,
    )
    .await?;
    if !right {
        return Err(ApiError::field("current_password", "is incorrect"));
    }
    let hash = state.password_queue.hash(body.new_password).await?;
    let keep = current.session_id;
    state
        .db
        .write(move |c| store::set_password(c, &user_id, &hash, Some(&keep)).map_err(DbError::from))
        .await?;
    Ok(ok(
        StatusCode::OK,
        Notice {
            message: "Password changed; other sessions have been signed out".into(),
        },
    ))
}
