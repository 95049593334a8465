//! `GET/POST /api/config/telephony`: the tenant's Twilio account for phone
//! calls. The auth token is sealed by the key vault (bound to the tenant and
//! to `telephony`) and never returned; the answer shows the account SID
//! masked and the number calls come from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::formats;
use super::store::{self, TelephonyRow};
use crate::admin::audit::{self, Entry};
use crate::auth::extract::CurrentUser;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ClientInfo};
use crate::http::openapi::Envelope;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config, save_config))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TelephonyView {
    provider: &'static str,
    configured: bool,
    account_sid_masked: Option<String>,
    from_phone_number: Option<String>,
    /// Whether an auth token is stored (it is never shown).
    auth_token_set: bool,
    created_at: Option<String>,
}

fn view_of(row: Option<TelephonyRow>) -> TelephonyView {
    match row {
        Some(t) => TelephonyView {
            provider: "twilio",
            configured: true,
            account_sid_masked: Some(formats::mask(&t.account_sid)),
            from_phone_number: Some(t.from_phone_number),
            auth_token_set: true,
            created_at: Some(t.created_at),
        },
        None => TelephonyView {
            provider: "twilio",
            configured: false,
            account_sid_masked: None,
            from_phone_number: None,
            auth_token_set: false,
            created_at: None,
        },
    }
}

fn load(conn: &Connection, user_id: &str) -> Result<TelephonyView, ApiError> {
    Ok(view_of(store::telephony_row(conn, user_id)?))
}

/// The Twilio settings (never the token).
#[utoipa::path(get, path = "/config/telephony", tag = "configuration",
    responses((status = 200, body = Envelope<TelephonyView>)))]
async fn get_config(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let user_id = current.user.id;
    let view = state.db.read(move |c| load(c, &user_id)).await?;
    Ok(ok(StatusCode::OK, view))
}

/// A first save needs all three fields; later ones may leave out what stays.
/// A new account SID needs its own auth token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelephonyBody {
    account_sid: Option<String>,
    auth_token: Option<String>,
    from_phone_number: Option<String>,
}

/// Checked fields of a save; `auth_token: None` keeps the stored one.
struct Checked {
    account_sid: String,
    auth_token: Option<String>,
    from_phone_number: String,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn check(body: &TelephonyBody, before: Option<&TelephonyRow>) -> Result<Checked, ApiError> {
    let mut errors = Vec::new();
    let sid = match (given(&body.account_sid), before) {
        (Some(s), _) => formats::check_twilio_sid("account_sid", s)
            .map(|()| s.to_string())
            .map_err(|e| errors.push(e))
            .ok(),
        (None, Some(b)) => Some(b.account_sid.clone()),
        (None, None) => {
            errors.push(formats::field_error("account_sid", "is required"));
            None
        }
    };
    let sid_changed = match (&sid, before) {
        (Some(s), Some(b)) => *s != b.account_sid,
        _ => true,
    };
    let token = match given(&body.auth_token) {
        Some(t) => formats::check_twilio_token("auth_token", t)
            .map(|()| Some(t.to_string()))
            .map_err(|e| errors.push(e))
            .ok()
            .flatten(),
        None if before.is_some() && !sid_changed => None,
        None => {
            errors.push(formats::field_error(
                "auth_token",
                if before.is_some() {
                    "is required when the account SID changes"
                } else {
                    "is required"
                },
            ));
            None
        }
    };
    let from = match (given(&body.from_phone_number), before) {
        (Some(n), _) => formats::check_e164("from_phone_number", n)
            .map(|()| n.to_string())
            .map_err(|e| errors.push(e))
            .ok(),
        (None, Some(b)) => Some(b.from_phone_number.clone()),
        (None, None) => {
            errors.push(formats::field_error("from_phone_number", "is required"));
            None
        }
    };
    match (sid, from) {
        (Some(account_sid), Some(from_phone_number)) if errors.is_empty() => Ok(Checked {
            account_sid,
            auth_token: token,
            from_phone_number,
        }),
        _ => Err(ApiError::fields(errors)),
    }
}

/// Save the Twilio settings: a first save needs all three fields.
#[utoipa::path(post, path = "/config/telephony", tag = "configuration",
    request_body = TelephonyBody,
    responses((status = 200, body = Envelope<TelephonyView>)))]
async fn save_config(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<TelephonyBody>,
) -> ApiResult<Response> {
    let vault = state.vault.clone();
    let user_id = current.user.id;
    let view = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let before = store::telephony_row(&tx, &user_id)?;
            let next = check(&body, before.as_ref())?;
            drop(body);
            let sealed_token = match (&next.auth_token, &before) {
                (Some(token), _) => store::seal_telephony_token(&vault, &user_id, token)
                    .map_err(ApiError::internal)?,
                (None, Some(b)) => b.auth_token.clone(),
                // `check` requires a token when nothing is stored.
                (None, None) => return Err(ApiError::field("auth_token", "is required")),
            };
            store::upsert_telephony(
                &tx,
                &user_id,
                &next.account_sid,
                &sealed_token,
                &next.from_phone_number,
            )?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "update_telephony_config",
                    target_user_id: Some(&user_id),
                    resource_type: Some("telephony_config"),
                    resource_id: None,
                    details: json!({
                        "account_sid_changed": before.as_ref().is_none_or(|b| b.account_sid != next.account_sid),
                        "auth_token_changed": next.auth_token.is_some(),
                        "from_phone_number": next.from_phone_number,
                    }),
                    client: &client,
                },
            )?;
            let view = load(&tx, &user_id)?;
            tx.commit()?;
            Ok::<_, ApiError>(view)
        })
        .await?;
    Ok(ok(StatusCode::OK, view))
}
