//! What a web call and a phone call share when the agent answers: which LLM
//! the tenant's requests go to, with which key, and one reply to a turn.

use super::store::Turn;
use crate::api_keys::{self, KeySource, Provider, ResolvedKey};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::providers::llm::{self, ChatMessage, Target};
use crate::service_config::{ServiceConfig, LLM_GROQ, LLM_OPENAI_COMPATIBLE};

/// The most recent turns sent to the LLM with each message: enough for a
/// phone-length conversation, bounded so a long one does not outgrow the
/// model's context.
const CONTEXT_TURNS: usize = 40;

/// Where the tenant's LLM requests go, and with which key.
pub struct LlmPlan {
    provider: String,
    base_url: String,
    model: String,
    key: Option<ResolvedKey>,
}

pub fn setup_required(message: &str) -> ApiError {
    ApiError::bad_request("SETUP_REQUIRED", message)
}

/// Groq needs a key: the tenant's, else the server's. An openai_compatible
/// server (an air-gapped install's own) may need none; it gets only the
/// tenant's own key, never the server's, which must not travel to a URL a
/// tenant chose.
pub async fn plan_llm(
    state: &AppState,
    user_id: &str,
    config: &ServiceConfig,
) -> Result<LlmPlan, ApiError> {
    let key = api_keys::resolve(state, user_id, Provider::Groq).await?;
    match config.llm_provider.as_str() {
        LLM_GROQ => {
            let Some(key) = key else {
                return Err(setup_required(
                    "No LLM API key is configured: save a Groq key under API keys (or ask the administrator to set GROQ_API_KEY)",
                ));
            };
            Ok(LlmPlan {
                provider: LLM_GROQ.into(),
                base_url: state.config.groq_base_url.clone(),
                model: config.llm_model.clone(),
                key: Some(key),
            })
        }
        LLM_OPENAI_COMPATIBLE => {
            let Some(base_url) = config.llm_base_url.clone() else {
                return Err(setup_required(
                    "The openai_compatible LLM has no base URL: set llm_base_url in the service configuration",
                ));
            };
            // The operator may have narrowed the allowed servers since it was saved.
            if !state.config.llm_url_allowed(&base_url) {
                return Err(setup_required(
                    "The openai_compatible LLM's base URL is no longer allowed on this server (VOXFLOW_LLM_ALLOWED_URLS): choose another in the service configuration",
                ));
            }
            Ok(LlmPlan {
                provider: LLM_OPENAI_COMPATIBLE.into(),
                base_url,
                model: config.llm_model.clone(),
                key: key.filter(|k| matches!(k.source, KeySource::User)),
            })
        }
        other => Err(setup_required(&format!(
            "The configured LLM provider {other:?} is not supported: choose groq or openai_compatible in the service configuration"
        ))),
    }
}

/// The agent's reply to `message`, with the agent's description as the
/// system prompt and the latest turns of `transcript` as context. A provider
/// failure is a 502 naming the provider; the tenant's key is marked used
/// only when it answered.
pub async fn reply(
    state: &AppState,
    user_id: &str,
    run_id: &str,
    plan: &LlmPlan,
    prompt: String,
    transcript: &[Turn],
    message: &str,
) -> Result<String, ApiError> {
    let mut messages = vec![ChatMessage {
        role: "system".into(),
        content: prompt,
    }];
    let recent = transcript.len().saturating_sub(CONTEXT_TURNS);
    messages.extend(transcript[recent..].iter().map(|t| ChatMessage {
        role: t.role.clone(),
        content: t.content.clone(),
    }));
    messages.push(ChatMessage {
        role: "user".into(),
        content: message.to_string(),
    });
    let target = Target {
        provider: &plan.provider,
        base_url: &plan.base_url,
        api_key: plan.key.as_ref().map(|k| k.secret.as_str()),
        model: &plan.model,
    };
    let answer = llm::chat(&state.http_client, &target, &messages, state.config.llm_timeout_secs)
        .await
        .map_err(|e| {
            tracing::warn!(run_id = %run_id, provider = %plan.provider, error = %e, "LLM request failed");
            e.into_api_error(&plan.provider)
        })?;
    if plan
        .key
        .as_ref()
        .is_some_and(|k| matches!(k.source, KeySource::User))
    {
        api_keys::mark_used(state, user_id, Provider::Groq).await?;
    }
    Ok(answer)
}
