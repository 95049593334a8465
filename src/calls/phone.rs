//! `POST /api/calls/phone/start`: a PHONE_CALL run, and Twilio asked to
//! place the call. Twilio then drives the conversation through the
//! webhooks of `twilio_hooks`, which are given to it here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use rusqlite::{params, TransactionBehavior};
use serde::Deserialize;
use serde_json::json;

use super::agent_llm::{plan_llm, setup_required};
use super::routes::{body_id, startable, startable_agent};
use super::store::{self, RunKind};
use crate::admin::audit::{self, Entry};
use crate::api_keys::{self, formats, KeySource, Provider};
use crate::auth::extract::CurrentUser;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ClientInfo};
use crate::http::AppState;
use crate::providers::twilio;
use crate::tiers;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/phone/start", post(phone_start))
        .merge(super::twilio_hooks::router())
}

/// The URL of one of a run's webhooks (`webhook`, `gather`, `status`,
/// `recording`) under the server's public address.
pub(super) fn hook_url(public: &str, hook: &str, run_id: &str) -> String {
    format!("{public}/api/calls/twilio/{hook}/{run_id}")
}

#[derive(Deserialize)]
struct PhoneStartBody {
    agent_id: Option<String>,
    phone_number: Option<String>,
}

/// What placing a call through Twilio needs.
pub(crate) struct PhoneSetup {
    account_sid: String,
    auth_token: String,
    from_number: String,
    source: KeySource,
    public: String,
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

fn phone_number(raw: Option<&str>) -> Result<String, ApiError> {
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

/// A call Twilio accepted to place.
pub(crate) struct Placed {
    pub run_id: String,
    pub run_number: String,
    pub call_sid: String,
}

/// Inserts a PHONE_CALL run (of `campaign_id` when given), audits it and
/// asks Twilio to place the call. When Twilio refuses, the run is closed as
/// failed and the error carries its `run_id`.
pub(crate) async fn place_call(
    state: &AppState,
    setup: &PhoneSetup,
    user_id: &str,
    agent_id: &str,
    phone_number: &str,
    campaign_id: Option<&str>,
    client: &ClientInfo,
) -> Result<Placed, ApiError> {
    let (run_id, run_number) = {
        let (user_id, agent_id, phone_number, campaign_id, client) = (
            user_id.to_string(),
            agent_id.to_string(),
            phone_number.to_string(),
            campaign_id.map(str::to_string),
            client.clone(),
        );
        state
            .db
            .write(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let agent = startable_agent(&tx, &user_id, &agent_id)?;
                let (run_id, run_number, _) =
                    store::insert_run(&tx, RunKind::Phone, &agent.id, Some(&phone_number))?;
                if let Some(campaign_id) = &campaign_id {
                    tx.execute(
                        "UPDATE agent_runs SET campaign_id = ?2 WHERE id = ?1",
                        params![run_id, campaign_id],
                    )?;
                }
                audit::record(
                    &tx,
                    &Entry {
                        admin_user_id: &user_id,
                        action: "start_phone_call",
                        target_user_id: Some(&user_id),
                        resource_type: Some("agent_run"),
                        resource_id: Some(&run_id),
                        details: json!({
                            "run_number": run_number,
                            "agent_id": agent.id,
                            "agent_name": agent.name,
                            "phone_number": phone_number,
                            "campaign_id": campaign_id,
                        }),
                        client: &client,
                    },
                )?;
                tx.commit()?;
                Ok::<_, ApiError>((run_id, run_number))
            })
            .await?
    };

    let hook = |name| hook_url(&setup.public, name, &run_id);
    let (answer_url, status_url, recording_url) =
        (hook("webhook"), hook("status"), hook("recording"));
    let form = [
        ("To", phone_number),
        ("From", setup.from_number.as_str()),
        ("Url", answer_url.as_str()),
        ("StatusCallback", status_url.as_str()),
        ("StatusCallbackEvent", "completed"),
        ("Record", "true"),
        ("RecordingStatusCallback", recording_url.as_str()),
    ];
    let placed = twilio::place_call(
        &state.http_client,
        &state.config.twilio_base_url,
        &setup.account_sid,
        &setup.auth_token,
        &form,
        std::time::Duration::from_secs(state.config.provider_timeout_secs),
    )
    .await;

    let call_sid = match placed {
        Ok(sid) => sid,
        Err(err) => {
            tracing::warn!(run_id = %run_id, error = %err, "Twilio did not place the call");
            // Closed at once: no call exists, so no webhook will ever end
            // this run, and a failed run costs nothing.
            let failed = run_id.clone();
            state
                .db
                .write(move |c| {
                    let finish = store::Finish {
                        outcome: store::Outcome::Failed,
                        disposition: store::Disposition::Set("failed"),
                        duration: store::Measure::Seconds(0),
                    };
                    store::finish_run(c, &failed, &finish).map_err(ApiError::from)
                })
                .await?;
            return Err(err.into_api_error().with("run_id", json!(run_id)));
        }
    };
    {
        let (run_id, call_sid) = (run_id.clone(), call_sid.clone());
        state
            .db
            .write(move |c| {
                c.execute(
                    "UPDATE agent_runs SET call_sid = ?2 WHERE id = ?1",
                    params![run_id, call_sid],
                )
                .map_err(ApiError::from)
            })
            .await?;
    }
    if matches!(setup.source, KeySource::User) {
        api_keys::mark_used(state, user_id, Provider::Twilio).await?;
    }
    Ok(Placed {
        run_id,
        run_number,
        call_sid,
    })
}

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
    let setup = phone_setup(&state, &user_id).await?;

    let placed = place_call(
        &state,
        &setup,
        &user_id,
        &agent_id,
        &phone_number,
        None,
        &client,
    )
    .await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "run_id": placed.run_id, "run_number": placed.run_number, "call_sid": placed.call_sid }),
    ))
}
