//! Twilio's callbacks for a phone call: `webhook` (the call was answered),
//! `gather` (the caller said something), `status` (the call ended) and
//! `recording` (its recording is ready). They come without a session: each
//! proves itself by `X-Twilio-Signature`, made with the run owner's auth
//! token. They answer TwiML, or a plain-text 4xx Twilio logs.

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::agent_llm::{self, plan_llm, AgentReply};
use super::phone::{hook_url, run_credentials};
use super::reconcile;
use super::routes::{end_for_quota, quota_spent_during, MAX_TURNS};
use super::store::{self, Disposition, LlmTurn, Outcome, OwnedRun, Turn};
use crate::http::error::ApiError;
use crate::http::openapi::ErrorBody;
use crate::http::AppState;
use crate::providers::twilio;
use crate::service_config;

/// The longest speech result kept for one turn; Twilio's are a sentence
/// or two, and the LLM request must stay bounded.
const MAX_SPEECH_CHARS: usize = 4000;
/// The longest recording URL stored (the column has no bound of its own).
const MAX_RECORDING_URL: usize = 2048;

const APOLOGY: &str = "Sorry, I am having trouble answering right now. Could you say that again?";
const REPROMPT: &str = "Sorry, I did not catch that. Could you say it again?";
const GOODBYE: &str = "This call has gone on for a long time; please call again. Goodbye.";
const SILENT_GOODBYE: &str = "I have not heard anything, so I will hang up now. Goodbye.";
const QUOTA_GOODBYE: &str = "This account has used up its calling time for this month, so I have to end the call now. Goodbye.";
/// Prompts in a row that may go unanswered before the agent hangs up.
const MAX_SILENT_PROMPTS: u32 = 2;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(on_answer))
        .routes(routes!(on_gather))
        .routes(routes!(on_status))
        .routes(routes!(on_recording))
}

/// `s` safe inside XML text and attribute values, read back as it was:
/// line ends and tabs as character references (a parser would turn a CR
/// into a line feed, and both into spaces in an attribute), and characters
/// XML 1.0 cannot carry at all (most control characters) left out, as
/// they would make the whole TwiML unreadable to Twilio.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn twiml(inner: &str) -> Response {
    let body = if inner.is_empty() {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_string()
    } else {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{inner}</Response>")
    };
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// Speaks `text`, then listens for the caller's answer, which Twilio posts
/// to the run's `gather` webhook. When the caller says nothing, Twilio goes
/// on to the `<Redirect>`, which comes back to `gather` without speech and
/// counts the silence (`silence=N`), so a quiet line is prompted again, then
/// hung up, instead of ending the call the moment the gather times out.
pub(crate) fn say_and_gather(public: &str, run_id: &str, text: &str, silences: u32) -> Response {
    let gather = hook_url(public, "gather", run_id);
    twiml(&format!(
        "<Say>{}</Say><Gather input=\"speech\" action=\"{}\" method=\"POST\" speechTimeout=\"auto\"/><Redirect method=\"POST\">{}</Redirect>",
        xml_escape(text),
        xml_escape(&gather),
        xml_escape(&format!("{gather}?silence={}", silences.saturating_add(1))),
    ))
}

pub(crate) fn hang_up(text: Option<&str>) -> Response {
    match text {
        Some(t) => twiml(&format!("<Say>{}</Say><Hangup/>", xml_escape(t))),
        None => twiml("<Hangup/>"),
    }
}

fn refuse(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// A server fault while handling a webhook (the database): logged and
/// answered as one, so Twilio's debugger shows it and Twilio turns to the
/// number's fallback URL, if one is set, instead of obeying a made-up TwiML.
fn fault(err: ApiError) -> Response {
    tracing::warn!(error = %err, "a Twilio webhook failed");
    err.into_response()
}

/// A webhook request whose signature checked out.
struct Hook {
    run_id: String,
    owner: String,
    /// The SID of the run's call as stored, and the account that placed it
    /// (SID, auth token), whose token the signature was checked with.
    call_sid: Option<String>,
    account: (String, String),
    found: OwnedRun,
    params: Vec<(String, String)>,
    public: String,
    /// Prompts in a row the caller left unanswered (`?silence=N` of a
    /// `<Redirect>`); 0 on any other request.
    silences: u32,
}

impl Hook {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn in_progress(&self) -> bool {
        self.found.run.status == "in_progress"
    }
}

impl FromRequest<AppState> for Hook {
    type Rejection = Response;

    /// The run (404 when unknown) and proof that Twilio sent this, under
    /// the run owner's auth token (403 when the signature is missing or
    /// wrong, or cannot be checked for want of a public URL or a token).
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        // The URL as Twilio called it: our public address, the path as it
        // arrived (with /api, which the nested router's Uri lacks) and the
        // query.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0)
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let Path(run_id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let signature = parts
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Form(params) =
            Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), state)
                .await
                .map_err(IntoResponse::into_response)?;

        let not_found = || refuse(StatusCode::NOT_FOUND, "No such run");
        let Ok(run_id) = Uuid::parse_str(&run_id).map(|u| u.to_string()) else {
            return Err(not_found());
        };
        let found = {
            let run_id = run_id.clone();
            state
                .db
                .read(move |c| store::run_with_owner(c, &run_id).map_err(ApiError::from))
                .await
                .map_err(fault)?
        };
        // A web call's run has no Twilio call behind it.
        let Some((owner, found)) = found.filter(|(_, f)| f.run.kind == "PHONE_CALL") else {
            return Err(not_found());
        };
        let forbidden = || refuse(StatusCode::FORBIDDEN, "Invalid Twilio signature");
        let Some(signature) = signature else {
            return Err(forbidden());
        };
        let Some(public) = state.config.public_base().map(str::to_string) else {
            tracing::warn!("a Twilio webhook arrived, but VOXFLOW_PUBLIC_URL is not set");
            return Err(forbidden());
        };
        let facts = {
            let run_id = run_id.clone();
            state
                .db
                .read(move |c| store::twilio_facts(c, &run_id).map_err(ApiError::from))
                .await
                .map_err(fault)?
        };
        let (call_sid, account_sid, key_source) = facts;
        // The credentials that placed the call, not whatever the tenant
        // has saved since.
        let creds =
            run_credentials(state, &owner, account_sid.as_deref(), key_source.as_deref()).await;
        let (account_sid, token) = match creds {
            Ok(Some((sid, token, _))) => (sid, token),
            Ok(None) => return Err(forbidden()),
            Err(err) => {
                tracing::warn!(error = %err, "no Twilio token to check a webhook with");
                return Err(forbidden());
            }
        };
        if !twilio::signature_matches(&token, &format!("{public}{path}"), &params, &signature) {
            return Err(forbidden());
        }
        let silences = path
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("silence=")))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        Ok(Hook {
            run_id,
            owner,
            call_sid,
            account: (account_sid, token),
            found,
            params,
            public,
            silences,
        })
    }
}

/// The database clock, for a transcript turn's time.
async fn db_now(state: &AppState) -> Result<String, Response> {
    state
        .db
        .read(|c| store::now(c).map_err(ApiError::from))
        .await
        .map_err(fault)
}

async fn touch_run(state: &AppState, run_id: &str) -> Result<(), Response> {
    let run_id = run_id.to_string();
    state
        .db
        .write(move |c| store::touch(c, &run_id).map_err(ApiError::from))
        .await
        .map_err(fault)
}

/// Appends `turns` to the run's transcript when it is still in progress
/// (read again under the write lock: a status callback may have ended it),
/// with the usage of the LLM turn that answered, if one did: recorded even
/// when the run has ended meanwhile, because the provider charged for it.
async fn append_turns(
    state: &AppState,
    run_id: &str,
    turns: Vec<Turn>,
    usage: Option<(String, LlmTurn)>,
) -> Result<(), Response> {
    let run_id = run_id.to_string();
    state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let found = store::run_with_owner(&tx, &run_id)?;
            if let (Some(_), Some((owner, usage))) = (&found, &usage) {
                store::record_llm_turn(&tx, &run_id, owner, usage)?;
            }
            match found {
                Some((_, found)) if found.run.status == "in_progress" => {
                    let mut all = found.transcript;
                    all.extend(turns);
                    store::save_transcript(&tx, &run_id, &all)?;
                }
                _ => store::touch(&tx, &run_id)?,
            }
            tx.commit()?;
            Ok::<_, ApiError>(())
        })
        .await
        .map_err(fault)
}

/// The call was answered: the agent greets the caller and listens.
#[utoipa::path(post, path = "/twilio/webhook/{run_id}",
    tag = "twilio", security(()),
    params(
        ("run_id" = Uuid, Path, description = "The phone call's run"),
        ("silence" = Option<u32>, Query, description = "Prompts in a row left unanswered (the agent's own `<Redirect>`)"),
    ),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's form parameters, signed in `X-Twilio-Signature`"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml", body = String),
        (status = 403, description = "`X-Twilio-Signature` missing or wrong", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 409, description = "A callback for another call than the run's", content_type = "text/plain", body = String),
        (status = 400, description = "The form cannot be read", content_type = "text/plain", body = String),
        (status = 415, description = "Not `application/x-www-form-urlencoded`", content_type = "text/plain", body = String),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The database is busy: Twilio retries or falls back", body = ErrorBody),
    ))]
async fn on_answer(State(state): State<AppState>, hook: Hook) -> Result<Response, Response> {
    if !hook.in_progress() {
        return Ok(hang_up(None));
    }
    let greeting = super::read_script(&state, &hook.run_id)
        .await
        .map_err(fault)?
        .first_message;
    // Twilio may ask again (a retry): the greeting is written down once.
    let turns = if hook.found.transcript.is_empty() {
        let at = db_now(&state).await?;
        vec![Turn::new("assistant", greeting.clone(), at)]
    } else {
        Vec::new()
    };
    append_turns(&state, &hook.run_id, turns, None).await?;
    if super::voice::streams(&state, &hook.owner).await {
        // Speech providers are set up: Twilio streams the call's audio to
        // the voice pipeline, which speaks the greeting itself.
        let url = super::voice::stream_url(&hook.public, &hook.run_id);
        return Ok(twiml(&format!(
            "<Connect><Stream url=\"{}\"/></Connect>",
            xml_escape(&url)
        )));
    }
    Ok(say_and_gather(&hook.public, &hook.run_id, &greeting, 0))
}

/// The agent's description, the tenant's LLM and the agent's reply to
/// `speech`; `None` when any of it fails (logged), so the caller hears an
/// apology instead of a dead line.
async fn agent_reply(state: &AppState, hook: &Hook, speech: &str) -> Option<AgentReply> {
    let reply = async {
        let (owner, run_id) = (hook.owner.clone(), hook.run_id.clone());
        let (prompt, config) = state
            .db
            .read(move |c| {
                let prompt = store::script(c, &run_id)?.prompt;
                Ok::<_, ApiError>((prompt, service_config::load(c, &owner)?))
            })
            .await?;
        let plan = plan_llm(state, &hook.owner, &config).await?;
        agent_llm::reply(
            state,
            &hook.owner,
            &hook.run_id,
            &plan,
            prompt,
            &hook.found.transcript,
            speech,
        )
        .await
    };
    reply
        .await
        .map_err(|e| tracing::warn!(run_id = %hook.run_id, error = %e, "no reply for a phone call"))
        .ok()
}

/// The caller spoke: the agent answers and listens again.
#[utoipa::path(post, path = "/twilio/gather/{run_id}",
    tag = "twilio", security(()),
    params(
        ("run_id" = Uuid, Path, description = "The phone call's run"),
        ("silence" = Option<u32>, Query, description = "Prompts in a row left unanswered (the agent's own `<Redirect>`)"),
    ),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's form parameters, signed in `X-Twilio-Signature`"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml", body = String),
        (status = 403, description = "`X-Twilio-Signature` missing or wrong", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 409, description = "A callback for another call than the run's", content_type = "text/plain", body = String),
        (status = 400, description = "The form cannot be read", content_type = "text/plain", body = String),
        (status = 415, description = "Not `application/x-www-form-urlencoded`", content_type = "text/plain", body = String),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The database is busy: Twilio retries or falls back", body = ErrorBody),
    ))]
async fn on_gather(State(state): State<AppState>, hook: Hook) -> Result<Response, Response> {
    if !hook.in_progress() {
        return Ok(hang_up(None));
    }
    if hook.found.transcript.len() + 2 > MAX_TURNS {
        touch_run(&state, &hook.run_id).await?;
        return Ok(hang_up(Some(GOODBYE)));
    }
    let Some(speech) = hook
        .param("SpeechResult")
        .map(|s| s.chars().take(MAX_SPEECH_CHARS).collect::<String>())
    else {
        if hook.silences >= MAX_SILENT_PROMPTS {
            // Recorded now; the status callback that follows the hang-up
            // keeps it when it closes the run.
            let run_id = hook.run_id.clone();
            state
                .db
                .write(move |c| {
                    store::note_disposition(c, &run_id, "user_idle_max_duration_exceeded")
                        .map_err(ApiError::from)
                })
                .await
                .map_err(fault)?;
            return Ok(hang_up(Some(SILENT_GOODBYE)));
        }
        touch_run(&state, &hook.run_id).await?;
        return Ok(say_and_gather(
            &hook.public,
            &hook.run_id,
            REPROMPT,
            hook.silences,
        ));
    };
    if quota_spent(&state, &hook).await? {
        return Ok(hang_up(Some(QUOTA_GOODBYE)));
    }
    let said_at = db_now(&state).await?;
    let Some(reply) = agent_reply(&state, &hook, &speech).await else {
        // Like a failed web message: the run stays as it was, and the
        // caller may say it again.
        touch_run(&state, &hook.run_id).await?;
        return Ok(say_and_gather(&hook.public, &hook.run_id, APOLOGY, 0));
    };
    let replied_at = db_now(&state).await?;
    let turns = vec![
        Turn::new("user", speech, said_at),
        Turn::new("assistant", reply.text.clone(), replied_at),
    ];
    append_turns(
        &state,
        &hook.run_id,
        turns,
        Some((hook.owner.clone(), reply.usage)),
    )
    .await?;
    Ok(say_and_gather(&hook.public, &hook.run_id, &reply.text, 0))
}

/// Checked before every LLM turn, as for a web call: when the month's
/// tokens (this call's time so far included) are spent, the call is ended
/// here (completed, `quota_exceeded`, billed by the server's clock from its
/// start), and the caller hears a goodbye. The status callback that follows
/// the hang-up finds the run ended and changes nothing.
async fn quota_spent(state: &AppState, hook: &Hook) -> Result<bool, Response> {
    let (owner, run_id) = (hook.owner.clone(), hook.run_id.clone());
    let ended = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            if !quota_spent_during(&tx, &owner, &run_id)? {
                return Ok(false);
            }
            if end_for_quota(&tx, &owner, &run_id)?.is_some() {
                tracing::info!(run_id = %run_id, "ended a phone call: the month's tokens are spent");
            }
            store::touch(&tx, &run_id)?;
            tx.commit()?;
            Ok::<_, ApiError>(true)
        })
        .await
        .map_err(fault)?;
    Ok(ended)
}

/// Twilio's final `CallStatus` → the run's status and disposition; `None`
/// for a call still under way (queued, ringing, in-progress).
pub(super) fn outcome(call_status: &str) -> Option<(Outcome, &'static str)> {
    match call_status {
        "completed" => Some((Outcome::Completed, "user_hangup")),
        "busy" => Some((Outcome::Failed, "busy")),
        "no-answer" => Some((Outcome::Failed, "no_answer")),
        "failed" | "canceled" => Some((Outcome::Failed, "failed")),
        _ => None,
    }
}

/// The call ended: the run is closed with the duration and status that
/// Twilio's REST API gives for the call, not the callback's own figures
/// (signed with the tenant's token, so the tenant could write them); those
/// count only when Twilio cannot be asked, and that is logged. A callback
/// for another call than the run's is a 409 and changes nothing. Only a run
/// in progress changes, so a repeated callback (Twilio retries) counts once.
#[utoipa::path(post, path = "/twilio/status/{run_id}",
    tag = "twilio", security(()),
    params(
        ("run_id" = Uuid, Path, description = "The phone call's run"),
    ),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's form parameters, signed in `X-Twilio-Signature`"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml", body = String),
        (status = 403, description = "`X-Twilio-Signature` missing or wrong", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 409, description = "A callback for another call than the run's", content_type = "text/plain", body = String),
        (status = 400, description = "The form cannot be read", content_type = "text/plain", body = String),
        (status = 415, description = "Not `application/x-www-form-urlencoded`", content_type = "text/plain", body = String),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The database is busy: Twilio retries or falls back", body = ErrorBody),
    ))]
async fn on_status(State(state): State<AppState>, hook: Hook) -> Result<Response, Response> {
    let Some(claimed) = hook.param("CallStatus").and_then(outcome) else {
        touch_run(&state, &hook.run_id).await?;
        return Ok(twiml(""));
    };
    let Some(call_sid) = hook.param("CallSid").map(str::to_string) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "CallSid is required"));
    };
    if hook
        .call_sid
        .as_deref()
        .is_some_and(|known| known != call_sid)
        || !twilio::is_call_sid(&call_sid)
    {
        return Err(refuse(
            StatusCode::CONFLICT,
            "CallSid is not this run's call",
        ));
    }
    if !hook.in_progress() {
        return Ok(twiml(""));
    }
    let account = twilio::Account {
        base_url: &state.config.twilio_base_url,
        sid: &hook.account.0,
        token: &hook.account.1,
    };
    let timeout = std::time::Duration::from_secs(state.config.provider_timeout_secs);
    let looked_up = twilio::fetch_call(&state.http_client, &account, &call_sid, timeout).await;
    let run_id = hook.run_id.clone();
    let known = hook.call_sid.is_some();
    let (status, disposition, duration) = match looked_up {
        Ok(call) if call.to.as_deref() != hook.found.run.phone_number.as_deref() => {
            tracing::warn!(run_id = %run_id, "a status callback named a call to another number");
            return Err(refuse(
                StatusCode::CONFLICT,
                "CallSid is not this run's call",
            ));
        }
        Ok(call) => match outcome(&call.status) {
            Some((status, disposition)) => (status, disposition, call.duration),
            None => {
                // Twilio itself says the call goes on: the callback is
                // early or not Twilio's; the periodic look-up ends the run.
                tracing::warn!(run_id = %run_id, "a final status callback for a call Twilio still reports live");
                return Ok(twiml(""));
            }
        },
        Err(err) => {
            let duration = hook
                .param("CallDuration")
                .and_then(|d| d.parse::<u32>().ok());
            tracing::warn!(run_id = %run_id, error = %err, ?duration, "Twilio could not be asked for a call's duration; billing the callback's figure");
            (claimed.0, claimed.1, duration)
        }
    };
    state
        .db
        .write(move |c| {
            if !known {
                // The callback came before Twilio's answer to placing the
                // call was stored: the SID is the call Twilio confirmed.
                store::set_call_sid(c, &run_id, &call_sid)?;
            }
            // A disposition recorded during the call (the silent caller's
            // user_idle_max_duration_exceeded) is kept.
            reconcile::close(
                c,
                &run_id,
                status,
                Disposition::Unless(disposition),
                duration,
            )
            .map_err(ApiError::from)
        })
        .await
        .map_err(fault)?;
    Ok(twiml(""))
}

/// Whether `url` is a recording on Twilio's own host over https: the
/// stored URL is shown to the tenant, so nothing else may be planted there.
fn is_twilio_recording(url: &str, twilio_base: &str) -> bool {
    let (Ok(url), Ok(base)) = (reqwest::Url::parse(url), reqwest::Url::parse(twilio_base)) else {
        return false;
    };
    url.as_str().len() <= MAX_RECORDING_URL
        && url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str().is_some()
        && url.host_str() == base.host_str()
}

/// The recording is ready: its URL is kept with the run.
#[utoipa::path(post, path = "/twilio/recording/{run_id}",
    tag = "twilio", security(()),
    params(
        ("run_id" = Uuid, Path, description = "The phone call's run"),
    ),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's form parameters, signed in `X-Twilio-Signature`"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml", body = String),
        (status = 403, description = "`X-Twilio-Signature` missing or wrong", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 409, description = "A callback for another call than the run's", content_type = "text/plain", body = String),
        (status = 400, description = "The form cannot be read", content_type = "text/plain", body = String),
        (status = 415, description = "Not `application/x-www-form-urlencoded`", content_type = "text/plain", body = String),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The database is busy: Twilio retries or falls back", body = ErrorBody),
    ))]
async fn on_recording(State(state): State<AppState>, hook: Hook) -> Result<Response, Response> {
    let url = hook
        .param("RecordingUrl")
        .filter(|u| is_twilio_recording(u, &state.config.twilio_base_url))
        .map(str::to_string);
    if url.is_none() {
        tracing::warn!(run_id = %hook.run_id, "ignored a recording URL not on Twilio's host");
    }
    let run_id = hook.run_id.clone();
    state
        .db
        .write(move |c| {
            store::set_recording_url(c, &run_id, url.as_deref()).map_err(ApiError::from)
        })
        .await
        .map_err(fault)?;
    Ok(twiml(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_special_characters_are_escaped() {
        assert_eq!(
            xml_escape(r#"<Ann & "Bo's">"#),
            "&lt;Ann &amp; &quot;Bo&apos;s&quot;&gt;"
        );
        assert_eq!(xml_escape("plain ü"), "plain ü");
    }

    #[test]
    fn final_call_statuses_map_to_run_outcomes() {
        assert_eq!(
            outcome("completed"),
            Some((Outcome::Completed, "user_hangup"))
        );
        assert_eq!(outcome("busy"), Some((Outcome::Failed, "busy")));
        assert_eq!(outcome("no-answer"), Some((Outcome::Failed, "no_answer")));
        assert_eq!(outcome("canceled"), Some((Outcome::Failed, "failed")));
        assert_eq!(outcome("ringing"), None);
    }

    #[test]
    fn only_https_recordings_on_twilios_host_are_kept() {
        let base = "https://api.twilio.com";
        assert!(is_twilio_recording(
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            base
        ));
        for bad in [
            "http://api.twilio.com/r",
            "https://evil.example/r",
            "https://api.twilio.com.evil.example/r",
            "https://user:pw@api.twilio.com/r",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(!is_twilio_recording(bad, base), "{bad}");
        }
    }
}
