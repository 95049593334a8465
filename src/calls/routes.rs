//! `/api/calls/*` for web calls: start, message, end, and reading a run and
//! its transcript. Every route finds the run through its agent's owner, so
//! another tenant's run is a 404 like a missing one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::agent_llm::{self, plan_llm};
use super::store::{
    self, Disposition, Finish, LlmUsage, Measure, Outcome, OwnedRun, Run, RunKind, Turn,
};
use super::{END_DISPOSITIONS, QUOTA_EXCEEDED};
use crate::admin::audit::{self, Entry};
use crate::agents::{self, Agent};
use crate::auth::extract::CurrentUser;
use crate::db::DbError;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ClientInfo};
use crate::http::openapi::{Envelope, ErrorBody};
use crate::http::AppState;
use crate::service_config::{self, ServiceConfig};

/// The longest message a caller may send in one turn.
const MAX_MESSAGE_CHARS: usize = 4000;
/// Turns one run may hold (greeting, messages and replies); a conversation
/// that long is better ended and started afresh.
pub(super) const MAX_TURNS: usize = 400;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(web_start))
        .routes(routes!(web_message))
        .routes(routes!(web_end))
        .routes(routes!(get_run))
        .routes(routes!(get_transcript))
        .merge(super::phone::router())
        .merge(super::voice::router())
}

/// An id given in a JSON body: required, and a UUID (a 400 otherwise).
pub(crate) fn body_id(field: &str, raw: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::field(field, "is required"))?;
    Uuid::parse_str(raw.trim())
        .map(|u| u.to_string())
        .map_err(|_| ApiError::field(field, "must be a UUID"))
}

fn not_in_progress(run: &Run) -> ApiError {
    ApiError::conflict(
        "RUN_NOT_IN_PROGRESS",
        format!("This run has already ended ({})", run.status),
    )
    .with("status", json!(run.status))
}

/// The 402 of a tenant whose month's tokens are spent.
fn quota_exceeded(used: f64, quota: i64) -> ApiError {
    quota_refusal(
        format!("This month's tokens are used up ({used} of {quota}). Calls are possible again next month, or after an upgrade."),
        used,
        quota,
    )
}

fn quota_refusal(message: String, used: f64, quota: i64) -> ApiError {
    ApiError::new(StatusCode::PAYMENT_REQUIRED, "QUOTA_EXCEEDED", message).with(
        "usage",
        json!({ "tokens_used": used, "monthly_token_quota": quota, "tokens_remaining": 0 }),
    )
}

/// `(tokens used this month, quota)` when nothing is left.
fn spent_quota(conn: &rusqlite::Connection, user_id: &str) -> rusqlite::Result<Option<(f64, i64)>> {
    let month = crate::auth::store::month_usage(conn, user_id)?;
    Ok((month.tokens_remaining <= 0.0).then_some((month.tokens_used, month.quota)))
}

/// Whether the month's tokens are spent once the call `run_id` itself is
/// counted: the quota holds the completed calls only (a call is billed when
/// it ends), so a long call would otherwise talk on past the quota. The
/// call's own time so far is priced as if it ended now; other calls in
/// progress count as each of them ends (and each checks its own time).
pub(super) fn quota_spent_during(
    conn: &rusqlite::Connection,
    user_id: &str,
    run_id: &str,
) -> rusqlite::Result<bool> {
    let month = crate::auth::store::month_usage(conn, user_id)?;
    let call_cents = store::accrued_cents(conn, run_id)?;
    let remaining_cents = (month.tokens_remaining * 100.0).round() as i64;
    Ok(remaining_cents - call_cents <= 0)
}

/// Ends the web or phone call `run_id` because the month's tokens are spent
/// (completed, disposition `quota_exceeded`, billed for its time), and
/// returns the 402 telling so, with the finished run. `None` when the run
/// was no longer in progress.
pub(super) fn end_for_quota(
    conn: &rusqlite::Connection,
    user_id: &str,
    run_id: &str,
) -> Result<Option<(RunDetail, ApiError)>, ApiError> {
    let finish = Finish {
        outcome: Outcome::Completed,
        disposition: Disposition::Set(QUOTA_EXCEEDED),
        duration: Measure::UntilNow,
    };
    if store::finish_run(conn, run_id, &finish)?.is_none() {
        return Ok(None);
    }
    let Some(done) = store::owned_run(conn, user_id, run_id)? else {
        return Ok(None);
    };
    let detail = RunDetail::read(conn, done)?;
    let month = crate::auth::store::month_usage(conn, user_id)?;
    let refusal = quota_refusal(
        format!(
            "This month's tokens are used up ({} of {}), so the call was ended and billed for its time. Calls are possible again next month, or after an upgrade.",
            month.tokens_used, month.quota
        ),
        month.tokens_used,
        month.quota,
    )
    .with("run", json!(detail));
    Ok(Some((detail, refusal)))
}

/// The 409 of a tenant already on as many calls as the plan allows at
/// once (the tier table's concurrent calls), naming the calls in progress so
/// the client can end one. An abandoned call stops counting when the idle
/// sweep closes it.
fn concurrent_limit(conn: &rusqlite::Connection, user_id: &str) -> Result<(), ApiError> {
    let Some(user) = crate::auth::store::user_by_id(conn, user_id)? else {
        return Err(ApiError::not_found("User"));
    };
    let tier = user.subscription_tier;
    let allowed = crate::tiers::tier(&tier).map_or(1, |t| t.concurrent_calls);
    let live = store::runs_in_progress_of(conn, user_id)?;
    if (live.len() as i64) < allowed {
        return Ok(());
    }
    let numbers: Vec<&str> = live.iter().map(|(_, n)| n.as_str()).collect();
    Err(ApiError::conflict(
        "CONCURRENT_CALL_LIMIT",
        format!(
            "The {tier} plan allows {allowed} call(s) at a time; end one first ({})",
            numbers.join(", ")
        ),
    )
    .with(
        "in_progress",
        json!(live
            .iter()
            .map(|(id, n)| json!({ "run_id": id, "run_number": n }))
            .collect::<Vec<_>>()),
    ))
}

/// The tenant's agent (404 otherwise) when the month's tokens are not
/// spent (402) and the plan's concurrent calls are not all in use (409):
/// what starting any call needs.
pub(crate) fn startable_agent(
    conn: &rusqlite::Connection,
    user_id: &str,
    agent_id: &str,
) -> Result<Agent, ApiError> {
    let Some(agent) = agents::owned_agent(conn, user_id, agent_id)? else {
        return Err(ApiError::not_found("Agent"));
    };
    if let Some((used, quota)) = spent_quota(conn, user_id)? {
        return Err(quota_exceeded(used, quota));
    }
    concurrent_limit(conn, user_id)?;
    Ok(agent)
}

/// The refusals before a call starts, in the order a tenant can act on
/// them: the agent, the quota, then the setup (the caller's to check, with
/// the service configuration returned here).
pub(crate) async fn startable(
    state: &AppState,
    user_id: &str,
    agent_id: &str,
) -> Result<ServiceConfig, ApiError> {
    let (user_id, agent_id) = (user_id.to_string(), agent_id.to_string());
    state
        .db
        .read(move |c| {
            startable_agent(c, &user_id, &agent_id)?;
            Ok(service_config::load(c, &user_id)?)
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// The caller's agent (required).
    #[schema(format = Uuid)]
    agent_id: Option<String>,
}

/// A web call just started.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebCallStarted {
    run_id: String,
    run_number: String,
    agent: Agent,
    /// What the agent said first: the transcript's first turn.
    greeting: String,
}

/// Start a web call with one of the caller's agents.
#[utoipa::path(post, path = "/web/start", tag = "calls",
    request_body = StartBody,
    responses(
        (status = 200, body = Envelope<WebCallStarted>),
        (status = 402, body = ErrorBody, description = "This month's tokens are spent (`QUOTA_EXCEEDED`)"),
        (status = 404, body = ErrorBody, description = "No such agent, or another tenant's"),
        (status = 422, body = ErrorBody, description = "The LLM is not set up (no key for the provider)"),
    ))]
async fn web_start(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<StartBody>,
) -> ApiResult<Response> {
    let agent_id = body_id("agent_id", body.agent_id.as_deref())?;
    let user_id = current.user.id;
    let config = startable(&state, &user_id, &agent_id).await?;
    plan_llm(&state, &user_id, &config).await?;

    let (run_id, run_number, agent, greeting) = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            // Checked again: the agent may have gone, or a call ended and
            // spent the quota, since the read above.
            let agent = startable_agent(&tx, &user_id, &agent_id)?;
            let (run_id, run_number, created_at) =
                store::insert_run(&tx, RunKind::Web, &agent.id, None)?;
            let greeting = store::script(&tx, &run_id)?.first_message;
            store::save_transcript(
                &tx,
                &run_id,
                &[Turn::new("assistant", greeting.clone(), created_at)],
            )?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "start_web_call",
                    target_user_id: Some(&user_id),
                    resource_type: Some("agent_run"),
                    resource_id: Some(&run_id),
                    details: json!({ "run_number": run_number, "agent_id": agent.id, "agent_name": agent.name }),
                    client: &client,
                },
            )?;
            tx.commit()?;
            Ok::<_, ApiError>((run_id, run_number, agent, greeting))
        })
        .await?;
    Ok(ok(
        StatusCode::OK,
        WebCallStarted {
            run_id,
            run_number,
            agent,
            greeting,
        },
    ))
}

/// First-edition clients also send `conversation_history`; it is ignored:
/// the server's transcript is what counts, so a client cannot put words in
/// the agent's mouth.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageBody {
    /// The web call (required).
    #[schema(format = Uuid)]
    run_id: Option<String>,
    /// What the caller says (required, at most 4,000 characters).
    message: Option<String>,
    /// Sent by first-edition clients and ignored.
    #[serde(default, rename = "conversation_history")]
    #[schema(value_type = Option<Vec<Object>>, deprecated)]
    _conversation_history: IgnoredAny,
}

/// The agent's reply.
#[derive(Serialize, ToSchema)]
pub(crate) struct Reply {
    response: String,
    /// The same text: the first edition's name for it.
    message: String,
}

/// The run for a message or an end: the caller's (404), a web call (409:
/// a phone call is Twilio's to drive and end) and in progress (409).
pub(super) fn live_run(
    conn: &rusqlite::Connection,
    user_id: &str,
    run_id: &str,
) -> Result<OwnedRun, ApiError> {
    let Some(found) = store::owned_run(conn, user_id, run_id)? else {
        return Err(ApiError::not_found("Run"));
    };
    if found.run.kind != "WEB_CALL" {
        return Err(ApiError::conflict(
            "NOT_A_WEB_CALL",
            format!(
                "This run is a {}: only web calls take messages and ends here",
                found.run.kind
            ),
        )
        .with("type", json!(found.run.kind)));
    }
    if found.run.status != "in_progress" {
        return Err(not_in_progress(&found.run));
    }
    Ok(found)
}

/// Send a message in a web call; the agent's reply.
#[utoipa::path(post, path = "/web/message", tag = "calls",
    request_body = MessageBody,
    responses(
        (status = 200, body = Envelope<Reply>),
        (status = 402, body = ErrorBody, description = "This month's tokens are spent: the call is ended"),
        (status = 404, body = ErrorBody, description = "No such run, or another tenant's"),
        (status = 409, body = ErrorBody, description = "Not a web call, or it has ended, or it holds too many turns"),
        (status = 422, body = ErrorBody, description = "The LLM is not set up"),
        (status = 502, body = ErrorBody, description = "The LLM provider failed"),
    ))]
async fn web_message(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<MessageBody>,
) -> ApiResult<Response> {
    let run_id = body_id("run_id", body.run_id.as_deref())?;
    let message = body.message.as_deref().map(str::trim).unwrap_or_default();
    if message.is_empty() {
        return Err(ApiError::field("message", "is required"));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::field(
            "message",
            format!("must be at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    let message = message.to_string();
    let user_id = current.user.id;

    let (found, prompt, config, said_at, spent) = {
        let (user_id, run_id) = (user_id.clone(), run_id.clone());
        state
            .db
            .read(move |c| {
                let found = live_run(c, &user_id, &run_id)?;
                let spent = quota_spent_during(c, &user_id, &run_id)?;
                if found.transcript.len() + 2 > MAX_TURNS {
                    return Err(ApiError::conflict(
                        "CONVERSATION_TOO_LONG",
                        format!(
                            "This call has reached {MAX_TURNS} turns; end it and start a new one"
                        ),
                    ));
                }
                let prompt = store::script(c, &run_id)?.prompt;
                let config = service_config::load(c, &user_id)?;
                Ok::<_, ApiError>((found, prompt, config, store::now(c)?, spent))
            })
            .await?
    };
    if spent {
        // Checked before every turn, so the LLM is not asked (and paid)
        // for a tenant with nothing left.
        return Err(end_web_call_for_quota(&state, user_id, run_id, client).await);
    }
    let plan = plan_llm(&state, &user_id, &config).await?;

    // A failure leaves the run as it was: in progress, without this
    // message, so the client may simply send it again.
    let reply = agent_llm::reply(
        &state,
        &user_id,
        &run_id,
        &plan,
        prompt,
        &found.transcript,
        &message,
    )
    .await?;

    let response = reply.text.clone();
    state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            // The provider answered, so it charged: the turn's usage is
            // recorded even when the run ended while the LLM was thinking.
            if store::owned_run(&tx, &user_id, &run_id)?.is_some() {
                store::record_llm_turn(&tx, &run_id, &user_id, &reply.usage)?;
            }
            // Read again under the write lock: the run may have ended, or
            // another message landed, while the LLM was thinking.
            let mut turns = match live_run(&tx, &user_id, &run_id) {
                Ok(found) => found.transcript,
                Err(refused) => {
                    // Answered as a success of the write, so that the
                    // recorded usage is kept (a failing write is rolled back).
                    tx.commit()?;
                    return Ok(Err(refused));
                }
            };
            let replied_at = store::now(&tx)?;
            turns.push(Turn::new("user", message, said_at));
            turns.push(Turn::new("assistant", reply.text, replied_at));
            store::save_transcript(&tx, &run_id, &turns)?;
            tx.commit()?;
            Ok::<_, ApiError>(Ok(()))
        })
        .await??;
    // `message` is the first edition's name for the reply (its web page
    // reads `data.message`); `response` is ours.
    Ok(ok(
        StatusCode::OK,
        Reply {
            message: response.clone(),
            response,
        },
    ))
}

/// `conversation_history` is ignored here too: the stored transcript is
/// the record.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndBody {
    /// The web call (required).
    #[schema(format = Uuid)]
    run_id: Option<String>,
    /// How it ended (default `user_hangup`).
    disposition: Option<String>,
    /// Sent by first-edition clients and ignored.
    #[serde(default, rename = "conversation_history")]
    #[schema(value_type = Option<Vec<Object>>, deprecated)]
    _conversation_history: IgnoredAny,
    /// Sent by first-edition clients and ignored: the server measures.
    #[serde(default, rename = "duration")]
    #[schema(value_type = Option<f64>, deprecated)]
    _duration: IgnoredAny,
    /// Ignored likewise.
    #[serde(default, rename = "duration_seconds")]
    #[schema(value_type = Option<f64>, deprecated)]
    _duration_seconds: IgnoredAny,
}

/// A run with its agent's name, its transcript and its LLM turns' tokens
/// and costs.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunDetail {
    #[serde(flatten)]
    run: Run,
    agent_name: String,
    transcript: Vec<Turn>,
    /// The first edition's form of the transcript: one `role: content`
    /// line per turn.
    transcript_text: String,
    llm_usage: LlmUsage,
}

/// The turns as `role: content` lines, as the first edition stored and
/// showed a conversation.
fn transcript_text(turns: &[Turn]) -> String {
    turns
        .iter()
        .map(|t| format!("{}: {}", t.role, t.content))
        .collect::<Vec<_>>()
        .join("\n")
}

impl RunDetail {
    fn read(conn: &rusqlite::Connection, o: OwnedRun) -> rusqlite::Result<RunDetail> {
        Ok(RunDetail {
            llm_usage: store::llm_usage(conn, &o.run.id)?,
            run: o.run,
            agent_name: o.agent_name,
            transcript_text: transcript_text(&o.transcript),
            transcript: o.transcript,
        })
    }
}

/// The audit row of a web call that ended, however it ended.
pub(super) fn audit_end(
    conn: &rusqlite::Connection,
    user_id: &str,
    run: &Run,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    audit::record(
        conn,
        &Entry {
            admin_user_id: user_id,
            action: "end_web_call",
            target_user_id: Some(user_id),
            resource_type: Some("agent_run"),
            resource_id: Some(&run.id),
            details: json!({
                "run_number": run.run_number,
                "duration_seconds": run.duration_seconds,
                "groq_tokens": run.groq_tokens,
                "disposition": run.disposition,
            }),
            client,
        },
    )?;
    Ok(())
}

/// Ends a web call whose tenant has no tokens left, and returns the 402 to
/// answer with (or the run's own refusal when it had ended meanwhile).
async fn end_web_call_for_quota(
    state: &AppState,
    user_id: String,
    run_id: String,
    client: ClientInfo,
) -> ApiError {
    let ended = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            live_run(&tx, &user_id, &run_id)?;
            let Some((detail, refusal)) = end_for_quota(&tx, &user_id, &run_id)? else {
                return Err(ApiError::conflict(
                    "RUN_NOT_IN_PROGRESS",
                    "This run has already ended",
                ));
            };
            audit_end(&tx, &user_id, &detail.run, &client)?;
            tx.commit()?;
            Ok::<_, ApiError>(refusal)
        })
        .await;
    match ended {
        Ok(refusal) | Err(refusal) => refusal,
    }
}

/// End a web call: measured and billed by the server.
#[utoipa::path(post, path = "/web/end", tag = "calls",
    request_body = EndBody,
    responses(
        (status = 200, body = Envelope<RunDetail>),
        (status = 404, body = ErrorBody, description = "No such run, or another tenant's"),
        (status = 409, body = ErrorBody, description = "Not a web call, or it has ended"),
    ))]
async fn web_end(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<EndBody>,
) -> ApiResult<Response> {
    let run_id = body_id("run_id", body.run_id.as_deref())?;
    let disposition = match body.disposition.as_deref().map(str::trim) {
        None | Some("") => "user_hangup".to_string(),
        Some(d) if END_DISPOSITIONS.contains(&d) => d.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                "disposition",
                format!("must be one of: {}", END_DISPOSITIONS.join(", ")),
            ))
        }
    };
    let user_id = current.user.id;
    let ended = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let live = live_run(&tx, &user_id, &run_id)?;
            // The server's clock measures the call; the client's duration
            // is not even read.
            let finish = Finish {
                outcome: Outcome::Completed,
                disposition: Disposition::Set(&disposition),
                duration: Measure::UntilNow,
            };
            if store::finish_run(&tx, &run_id, &finish)?.is_none() {
                return Err(not_in_progress(&live.run));
            }
            let Some(done) = store::owned_run(&tx, &user_id, &run_id)? else {
                return Err(ApiError::not_found("Run"));
            };
            audit_end(&tx, &user_id, &done.run, &client)?;
            let detail = RunDetail::read(&tx, done)?;
            tx.commit()?;
            Ok::<_, ApiError>(detail)
        })
        .await?;
    Ok(ok(StatusCode::OK, ended))
}

async fn read_owned_run(state: &AppState, user_id: String, id: Uuid) -> ApiResult<RunDetail> {
    let id = id.to_string();
    state
        .db
        .read(move |c| {
            store::owned_run(c, &user_id, &id)?
                .map(|o| RunDetail::read(c, o))
                .transpose()
                .map_err(DbError::from)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("Run"))
}

/// A run with its agent's name, transcript and LLM usage.
#[utoipa::path(get, path = "/run/{id}", tag = "calls",
    params(("id" = Uuid, Path, description = "The run")),
    responses((status = 200, body = Envelope<RunDetail>)))]
async fn get_run(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let found = read_owned_run(&state, current.user.id, id).await?;
    Ok(ok(StatusCode::OK, found))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Transcript {
    run_id: String,
    transcript: Vec<Turn>,
    /// The first edition's form: one `role: content` line a turn.
    transcript_text: String,
}

/// A run's transcript.
#[utoipa::path(get, path = "/transcript/{id}", tag = "calls",
    params(("id" = Uuid, Path, description = "The run")),
    responses((status = 200, body = Envelope<Transcript>)))]
async fn get_transcript(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let found = read_owned_run(&state, current.user.id, id).await?;
    Ok(ok(
        StatusCode::OK,
        Transcript {
            run_id: found.run.id,
            transcript: found.transcript,
            transcript_text: found.transcript_text,
        },
    ))
}
