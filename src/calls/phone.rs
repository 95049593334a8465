//! `POST /api/calls/phone/start`: a PHONE_CALL run, and Twilio asked to
//! place the call. Twilio then drives the conversation through the
//! webhooks of `twilio_hooks`, which are given to it here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agent_llm::{plan_llm, setup_required};
use super::routes::{body_id, startable, startable_agent};
use super::store::{self, RunKind};
use crate::admin::audit::{self, Entry};
use crate::api_keys::{self, formats, KeySource, Provider};
use crate::auth::extract::CurrentUser;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ClientInfo};
use crate::http::openapi::{Envelope, ErrorBody};
use crate::http::AppState;
use crate::providers::twilio;
use crate::tiers;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(phone_start))
        .routes(routes!(recording))
        .merge(super::twilio_hooks::router())
}

/// The URL of one of a run's webhooks (`webhook`, `gather`, `status`,
/// `recording`) under the server's public address.
pub(crate) fn hook_url(public: &str, hook: &str, run_id: &str) -> String {
    format!("{public}/api/calls/twilio/{hook}/{run_id}")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhoneStartBody {
    /// The caller's agent (required).
    #[schema(format = Uuid)]
    agent_id: Option<String>,
    /// The number to call (required), normalised to E.164.
    phone_number: Option<String>,
}

/// What placing a call through Twilio needs.
pub struct PhoneSetup {
    pub account_sid: String,
    auth_token: String,
    pub from_number: String,
    pub source: KeySource,
    public: String,
}

impl PhoneSetup {
    pub fn account<'a>(&'a self, state: &'a AppState) -> twilio::Account<'a> {
        twilio::Account {
            base_url: &state.config.twilio_base_url,
            sid: &self.account_sid,
            token: &self.auth_token,
        }
    }
}

/// The stored name of a key's source on a run (`twilio_key_source`).
pub(crate) fn source_name(source: KeySource) -> &'static str {
    match source {
        KeySource::System => "system",
        _ => "user",
    }
}

/// The tenant's Twilio account (its own, else the server's) with a number
/// to call from, and the public address Twilio's webhooks reach us at.
pub(crate) async fn phone_setup(state: &AppState, user_id: &str) -> Result<PhoneSetup, ApiError> {
    let key = api_keys::resolve(state, user_id, Provider::Twilio).await?;
    let Some((key, account_sid)) = key.and_then(|k| k.account_sid.clone().map(|sid| (k, sid)))
    else {
        return Err(setup_required(
            "No Twilio account is configured: save Twilio credentials under API keys (or ask the administrator to set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)",
        ));
    };
    let Some(from_number) = key.from_number.clone() else {
        return Err(setup_required(
            "Twilio has no number to call from: save a phone number with the Twilio credentials",
        ));
    };
    let Some(public) = state.config.public_base() else {
        return Err(setup_required(
            "The server has no public URL for Twilio's webhooks: ask the administrator to set VOXFLOW_PUBLIC_URL",
        ));
    };
    Ok(PhoneSetup {
        account_sid,
        auth_token: key.secret,
        from_number,
        source: key.source,
        public: public.to_string(),
    })
}

/// The Twilio credentials that placed a run's call (its account SID and
/// whose they were, stored with the run), for checking its callbacks and
/// looking it up: never another account's, even if the tenant has saved
/// new credentials since. A run from before they were stored uses the
/// tenant's current ones.
pub(crate) async fn run_credentials(
    state: &AppState,
    owner: &str,
    account_sid: Option<&str>,
    source: Option<&str>,
) -> Result<Option<(String, String, Option<String>)>, ApiError> {
    let key = match source {
        Some("system") => api_keys::system_key(&state.config, Provider::Twilio),
        _ => api_keys::resolve(state, owner, Provider::Twilio)
            .await?
            .filter(|k| source.is_none() || matches!(k.source, KeySource::User)),
    };
    Ok(key.and_then(|k| {
        let sid = k.account_sid.clone()?;
        (account_sid.is_none() || account_sid == Some(sid.as_str())).then_some((
            sid,
            k.secret,
            k.from_number,
        ))
    }))
}

pub(crate) fn phone_number(raw: Option<&str>) -> Result<String, ApiError> {
    let number = formats::required("phone_number", raw)
        .and_then(|n| formats::check_e164("phone_number", n).map(|()| n))
        .map_err(|e| ApiError::fields(vec![e]))?;
    Ok(number.to_string())
}

/// The 403 of a tier without phone calls, naming the first tier with them.
pub(crate) fn tier_refusal(tier: &str) -> ApiError {
    let upgrade = tiers::TIERS.iter().find(|t| t.phone_calls).map(|t| t.name);
    ApiError::forbidden(
        "TIER_FEATURE",
        format!("Phone calls are not part of the {tier} plan; upgrade to place them"),
    )
    .with("feature", json!("phone_calls"))
    .with("upgrade", json!({ "suggested_tier": upgrade }))
}

/// The 502 a tenant sees when Twilio failed, naming Twilio.
pub(crate) fn twilio_error(err: &twilio::CallError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "PROVIDER_ERROR",
        format!("The telephony provider (twilio) {err}"),
    )
    .with("provider", json!("twilio"))
}

/// Inserts a PHONE_CALL run of `agent_id` to `phone_number` (with the
/// Twilio account about to place it) and audits it, inside the caller's
/// write transaction; `(run_id, run_number)`.
pub(crate) fn insert_phone_run(
    tx: &rusqlite::Connection,
    setup: &PhoneSetup,
    user_id: &str,
    agent: &crate::agents::Agent,
    phone_number: &str,
    campaign_id: Option<&str>,
    client: &ClientInfo,
) -> Result<(String, String), ApiError> {
    let (run_id, run_number, _) =
        store::insert_run(tx, RunKind::Phone, &agent.id, Some(phone_number))?;
    store::set_twilio_account(
        tx,
        &run_id,
        campaign_id,
        &setup.account_sid,
        source_name(setup.source),
    )?;
    audit::record(
        tx,
        &Entry {
            admin_user_id: user_id,
            action: "start_phone_call",
            target_user_id: Some(user_id),
            resource_type: Some("agent_run"),
            resource_id: Some(&run_id),
            details: json!({
                "run_number": run_number,
                "agent_id": agent.id,
                "agent_name": agent.name,
                "phone_number": phone_number,
                "campaign_id": campaign_id,
            }),
            client,
        },
    )?;
    Ok((run_id, run_number))
}

/// How asking Twilio to place a run's call ended.
pub(crate) enum Dialed {
    /// Twilio placed it; its SID is stored with the run.
    Placed(String),
    /// Twilio certainly placed nothing (a 4xx, a refused connection); the
    /// run is still in progress for the caller to close.
    NotPlaced(twilio::CallError),
    /// Twilio may have placed it (a time-out, a 5xx): the run stays in
    /// progress without a SID until a look-up by number settles it
    /// (`reconcile`), so nobody is dialled twice.
    Unknown(twilio::CallError),
}

/// Asks Twilio to place the call of a run inserted by `insert_phone_run`,
/// with `attempt_key` as its idempotency token, and stores the SID.
pub(crate) async fn dial(
    state: &AppState,
    setup: &PhoneSetup,
    user_id: &str,
    run_id: &str,
    phone_number: &str,
    attempt_key: &str,
) -> Result<Dialed, ApiError> {
    let hook = |name| hook_url(&setup.public, name, run_id);
    let (answer_url, status_url, recording_url) =
        (hook("webhook"), hook("status"), hook("recording"));
    // Twilio itself hangs up at the agent's time limit, and records only
    // when the agent says so.
    let script = super::read_script(state, run_id).await?;
    let time_limit = script.max_call_seconds.to_string();
    let mut form = vec![
        ("To", phone_number),
        ("From", setup.from_number.as_str()),
        ("Url", answer_url.as_str()),
        ("StatusCallback", status_url.as_str()),
        ("StatusCallbackEvent", "completed"),
        ("TimeLimit", time_limit.as_str()),
    ];
    if script.record_calls {
        form.push(("Record", "true"));
        form.push(("RecordingStatusCallback", recording_url.as_str()));
    }
    let placed = twilio::place_call(
        &state.http_client,
        &setup.account(state),
        &form,
        attempt_key,
        std::time::Duration::from_secs(state.config.provider_timeout_secs),
    )
    .await;
    let call_sid = match placed {
        Ok(sid) => sid,
        Err(err) if err.may_have_acted() => {
            tracing::warn!(run_id = %run_id, error = %err, "Twilio's answer to a new call is unknown; it will be looked up");
            return Ok(Dialed::Unknown(err));
        }
        Err(err) => {
            tracing::warn!(run_id = %run_id, error = %err, "Twilio did not place the call");
            return Ok(Dialed::NotPlaced(err));
        }
    };
    {
        let (run_id, call_sid) = (run_id.to_string(), call_sid.clone());
        state
            .db
            .write(move |c| store::set_call_sid(c, &run_id, &call_sid).map_err(ApiError::from))
            .await?;
    }
    if matches!(setup.source, KeySource::User) {
        api_keys::mark_used(state, user_id, Provider::Twilio).await?;
    }
    Ok(Dialed::Placed(call_sid))
}

/// Place a phone call through Twilio (not on the free tier).
#[utoipa::path(post, path = "/phone/start", tag = "calls",
    request_body = PhoneStartBody,
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: `{run_id, run_number, call_sid}`"),
        (status = 402, body = ErrorBody, description = "This month's tokens are spent"),
        (status = 403, body = ErrorBody, description = "The plan has no phone calls, or another refusal"),
        (status = 404, body = ErrorBody, description = "No such agent, or another tenant's"),
        (status = 422, body = ErrorBody, description = "The LLM or Twilio is not set up"),
        (status = 502, body = ErrorBody, description = "Twilio refused or failed (`run_id` names the failed run)"),
    ))]
async fn phone_start(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<PhoneStartBody>,
) -> ApiResult<Response> {
    let agent_id = body_id("agent_id", body.agent_id.as_deref())?;
    let phone_number = phone_number(body.phone_number.as_deref())?;
    let tier = current.user.subscription_tier;
    if !tiers::tier(&tier).is_some_and(|t| t.phone_calls) {
        return Err(tier_refusal(&tier));
    }
    let user_id = current.user.id;
    let config = startable(&state, &user_id, &agent_id).await?;
    // The call's replies need the LLM: refused now rather than apologised
    // for on every turn of a call that cannot work.
    plan_llm(&state, &user_id, &config).await?;
    let setup = Arc::new(phone_setup(&state, &user_id).await?);

    let (run_id, run_number) = {
        let (setup, user_id, number) = (setup.clone(), user_id.clone(), phone_number.clone());
        state
            .db
            .write(move |c| {
                let tx = c.savepoint()?;
                let agent = startable_agent(&tx, &user_id, &agent_id)?;
                let ids = insert_phone_run(&tx, &setup, &user_id, &agent, &number, None, &client)?;
                tx.commit()?;
                Ok::<_, ApiError>(ids)
            })
            .await?
    };
    // A single call is attempted once: its run id is the idempotency key.
    match dial(&state, &setup, &user_id, &run_id, &phone_number, &run_id).await? {
        Dialed::Placed(call_sid) => Ok(ok(
            StatusCode::OK,
            json!({ "run_id": run_id, "run_number": run_number, "call_sid": call_sid }),
        )),
        Dialed::NotPlaced(err) => {
            // Closed at once: no call exists, so no webhook will ever end
            // this run, and a failed run costs nothing.
            let failed = run_id.clone();
            state
                .db
                .write(move |c| {
                    super::reconcile::close_unplaced(c, &failed, "failed")
                        .map_err(ApiError::from)
                })
                .await?;
            Err(twilio_error(&err).with("run_id", json!(run_id)))
        }
        Dialed::Unknown(err) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "PROVIDER_ERROR",
            format!("The telephony provider (twilio) {err}; the call may still have been placed: the run shows the outcome once Twilio has been asked"),
        )
        .with("provider", json!("twilio"))
        .with("run_id", json!(run_id))),
    }
}

/// The recording SID in a stored recording URL
/// (`…/2010-04-01/Accounts/{account}/Recordings/RE….ext`) of `account`.
fn recording_sid(url: &str, account: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let mut parts = url.path_segments()?;
    let (v, accounts, sid, recordings, file) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let re = file.split('.').next()?;
    (v == "2010-04-01"
        && accounts == "Accounts"
        && sid == account
        && recordings == "Recordings"
        && parts.next().is_none()
        && twilio::is_recording_sid(re))
    .then(|| re.to_string())
}

/// The longest recording passed on: two hours of a phone call's MP3.
const MAX_RECORDING_BYTES: u64 = 64 * 1024 * 1024;

/// `GET /api/calls/run/{id}/recording`: the call's recording as audio,
/// fetched from Twilio with the credentials that placed the call (Twilio's
/// own URL asks the listener for them, and the page may load nothing from
/// outside this server). Only the recording SID is taken from the stored
/// URL; the request goes to the configured Twilio base, never to a host a
/// callback named.
#[utoipa::path(get, path = "/run/{id}/recording", tag = "calls",
    params(("id" = Uuid, Path, description = "The phone call's run")),
    responses(
        (status = 200, description = "The recording", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 404, body = ErrorBody, description = "No such run, another tenant's, or no recording"),
        (status = 502, body = ErrorBody, description = "Twilio failed"),
    ))]
async fn recording(
    State(state): State<AppState>,
    current: CurrentUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    let Ok(id) = uuid::Uuid::parse_str(&id).map(|u| u.to_string()) else {
        return Err(ApiError::field("id", "must be a UUID"));
    };
    let user_id = current.user.id;
    let found = {
        let (user_id, id) = (user_id.clone(), id.clone());
        state
            .db
            .read(move |c| {
                let run = store::owned_run(c, &user_id, &id)?;
                let facts = store::twilio_facts(c, &id)?;
                Ok::<_, ApiError>(run.map(|r| (r, facts)))
            })
            .await?
    };
    let Some((run, (_, account_sid, key_source))) = found else {
        return Err(ApiError::not_found("Run"));
    };
    let no_recording = || ApiError::not_found("Recording");
    let url = run.run.recording_url.ok_or_else(no_recording)?;
    let creds = run_credentials(
        &state,
        &user_id,
        account_sid.as_deref(),
        key_source.as_deref(),
    )
    .await?
    .ok_or_else(no_recording)?;
    let (sid, token, _) = creds;
    let re = recording_sid(&url, &sid).ok_or_else(no_recording)?;
    let account = twilio::Account {
        base_url: &state.config.twilio_base_url,
        sid: &sid,
        token: &token,
    };
    let timeout = std::time::Duration::from_secs(state.config.provider_timeout_secs.max(30));
    let response = twilio::fetch_recording(&state.http_client, &account, &re, timeout)
        .await
        .map_err(|e| match e {
            twilio::CallError::Refused { status: 404, .. } => no_recording(),
            other => twilio_error(&other),
        })?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RECORDING_BYTES)
    {
        return Err(twilio_error(&twilio::CallError::BadReply));
    }
    let ctype = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("audio/"))
        .unwrap_or("audio/mpeg")
        .to_string();
    let body = axum::body::Body::from_stream(response.bytes_stream());
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, ctype),
            (
                axum::http::header::CACHE_CONTROL,
                "private, max-age=300".to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recording_of_the_account_is_fetched() {
        let acct = "AC0123456789abcdef0123456789abcdef";
        let re = "RE0123456789abcdef0123456789abcdef";
        let url = format!("https://api.twilio.com/2010-04-01/Accounts/{acct}/Recordings/{re}");
        assert_eq!(recording_sid(&url, acct).as_deref(), Some(re));
        assert_eq!(
            recording_sid(&format!("{url}.mp3"), acct).as_deref(),
            Some(re)
        );
        assert_eq!(
            recording_sid(&url, "AC99999999999999999999999999999999"),
            None
        );
        assert_eq!(recording_sid(&format!("{url}/x"), acct), None);
        assert_eq!(
            recording_sid(
                "https://api.twilio.com/2010-04-01/Accounts/x/Recordings/../../y",
                acct
            ),
            None
        );
    }
}
