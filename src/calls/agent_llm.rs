//! What a web call and a phone call share when the agent answers: which LLM
//! the tenant's requests go to, with which key, and one reply to a turn.

use axum::http::StatusCode;
use serde_json::json;

use super::store::{LlmTurn, Turn};
use crate::api_keys::{self, KeySource, Provider, ResolvedKey};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::providers::llm::{self, ChatMessage, LlmError, Target};
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

/// The 502 the tenant sees when the LLM failed, naming the provider. Never
/// the provider's own error text: it may quote part of the key.
pub fn provider_error(err: &LlmError, provider: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "PROVIDER_ERROR",
        format!("The LLM provider ({provider}) {err}"),
    )
    .with("provider", json!(provider))
}

/// The agent's answer to a turn, and what it used and cost (to be recorded
/// with `store::record_llm_turn` in the transaction that stores the turn).
pub struct AgentReply {
    pub text: String,
    pub usage: LlmTurn,
}

/// The messages of a turn: the agent's description as the system prompt,
/// the latest turns of `transcript` as context, then `message`.
fn context(prompt: String, transcript: &[Turn], message: &str) -> Vec<ChatMessage> {
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
    messages
}

impl LlmPlan {
    fn target(&self) -> Target<'_> {
        Target {
            provider: &self.provider,
            base_url: &self.base_url,
            api_key: self.key.as_ref().map(|k| k.secret.as_str()),
            model: &self.model,
        }
    }

    /// The 502 of a failed request (or a stream that broke off), logged.
    pub fn failed(&self, run_id: &str, e: &LlmError) -> ApiError {
        tracing::warn!(run_id = %run_id, provider = %self.provider, error = %e, "LLM request failed");
        provider_error(e, &self.provider)
    }

    /// What an answered turn used and cost; the tenant's key is marked used.
    pub async fn answered(
        &self,
        state: &AppState,
        user_id: &str,
        run_id: &str,
        usage: llm::Usage,
    ) -> Result<LlmTurn, ApiError> {
        let cost = state.config.llm_prices().cost(
            &self.provider,
            &self.model,
            usage.prompt_tokens,
            usage.completion_tokens,
        );
        if !cost.priced {
            // Said once per turn, so an operator sees which model to price.
            tracing::info!(run_id = %run_id, provider = %self.provider, model = %self.model,
                "no price for this LLM model: its turns cost 0 (add it to VOXFLOW_LLM_PRICES)");
        }
        if self
            .key
            .as_ref()
            .is_some_and(|k| matches!(k.source, KeySource::User))
        {
            api_keys::mark_used(state, user_id, Provider::Groq).await?;
        }
        Ok(LlmTurn {
            provider: self.provider.clone(),
            model: self.model.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_micros: cost.micros,
            priced: cost.priced,
        })
    }
}

/// The agent's reply to `message` (see `context`). A provider failure is a
/// 502 naming the provider; the tenant's key is marked used only when it
/// answered.
pub async fn reply(
    state: &AppState,
    user_id: &str,
    run_id: &str,
    plan: &LlmPlan,
    prompt: String,
    transcript: &[Turn],
    message: &str,
) -> Result<AgentReply, ApiError> {
    let messages = context(prompt, transcript, message);
    let answer = llm::chat(
        &state.http_client,
        &plan.target(),
        &messages,
        state.config.llm_timeout_secs,
    )
    .await
    .map_err(|e| plan.failed(run_id, &e))?;
    let usage = plan.answered(state, user_id, run_id, answer.usage).await?;
    Ok(AgentReply {
        text: answer.text,
        usage,
    })
}

/// The agent's reply to `message` as it is written (a voice call speaks
/// its first sentence before the last is written); record what it used
/// with `LlmPlan::answered` once it is `Done`.
pub async fn reply_stream(
    state: &AppState,
    run_id: &str,
    plan: &LlmPlan,
    prompt: String,
    transcript: &[Turn],
    message: &str,
) -> Result<tokio::sync::mpsc::Receiver<llm::Streamed>, ApiError> {
    let messages = context(prompt, transcript, message);
    llm::chat_stream(
        &state.http_client,
        &plan.target(),
        &messages,
        state.config.llm_timeout_secs,
    )
    .await
    .map_err(|e| plan.failed(run_id, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_sees_the_provider_named_and_never_its_text() {
        let e = provider_error(&LlmError::Status(500), "groq");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code, "PROVIDER_ERROR");
        assert_eq!(e.message, "The LLM provider (groq) failed (HTTP 500)");
        assert_eq!(e.extra["provider"], "groq");
    }
}
