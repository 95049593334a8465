//! `GET/POST /api/config/service`: which LLM, voice and transcription
//! models a tenant's agents use. A tenant with no saved row gets the
//! defaults of `schema.md`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::audit::{self, Entry};
use crate::auth::extract::CurrentUser;
use crate::db::DbError;
use crate::http::error::{ok, ApiError, ApiResult, FieldError};
use crate::http::extract::{ApiJson, ClientInfo};
use crate::http::openapi::Envelope;
use crate::http::AppState;

pub const LLM_GROQ: &str = "groq";
pub const LLM_OPENAI_COMPATIBLE: &str = "openai_compatible";
const LLM_PROVIDERS: [&str; 2] = [LLM_GROQ, LLM_OPENAI_COMPATIBLE];
pub const SPEECH_DEEPGRAM: &str = "deepgram";
/// An OpenAI-compatible speech server the operator runs (VOXFLOW_SPEECH_*).
pub const SPEECH_OPENAI_COMPATIBLE: &str = "openai_compatible";
const SPEECH_PROVIDERS: [&str; 2] = [SPEECH_DEEPGRAM, SPEECH_OPENAI_COMPATIBLE];
const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ServiceConfig {
    pub llm_provider: String,
    pub llm_model: String,
    /// The server of an `openai_compatible` provider; unused for groq.
    pub llm_base_url: Option<String>,
    pub tts_provider: String,
    pub tts_voice: String,
    pub stt_provider: String,
    pub stt_model: String,
    /// `None` while the tenant has saved nothing (the defaults apply).
    pub updated_at: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            llm_provider: LLM_GROQ.into(),
            llm_model: "llama-3.3-70b-versatile".into(),
            llm_base_url: None,
            tts_provider: "deepgram".into(),
            tts_voice: "aura-2-helena-en".into(),
            stt_provider: "deepgram".into(),
            stt_model: "nova-3-general".into(),
            updated_at: None,
        }
    }
}

/// The tenant's saved config, or the defaults. Columns a first-edition row
/// left NULL read as their defaults too.
pub fn load(conn: &Connection, user_id: &str) -> rusqlite::Result<ServiceConfig> {
    let d = ServiceConfig::default();
    let found = conn
        .query_row(
            "SELECT llm_provider, llm_model, llm_base_url, tts_provider, tts_voice, stt_provider, stt_model, updated_at
             FROM service_configs WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok(ServiceConfig {
                    llm_provider: r.get::<_, Option<String>>(0)?.unwrap_or(d.llm_provider.clone()),
                    llm_model: r.get::<_, Option<String>>(1)?.unwrap_or(d.llm_model.clone()),
                    llm_base_url: r.get(2)?,
                    tts_provider: r.get::<_, Option<String>>(3)?.unwrap_or(d.tts_provider.clone()),
                    tts_voice: r.get::<_, Option<String>>(4)?.unwrap_or(d.tts_voice.clone()),
                    stt_provider: r.get::<_, Option<String>>(5)?.unwrap_or(d.stt_provider.clone()),
                    stt_model: r.get::<_, Option<String>>(6)?.unwrap_or(d.stt_model.clone()),
                    updated_at: r.get(7)?,
                })
            },
        )
        .optional()?;
    Ok(found.unwrap_or(d))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config, save_config))
}

/// The LLM, voice and transcription settings (defaults where unsaved).
#[utoipa::path(get, path = "/config/service", tag = "configuration",
    responses((status = 200, body = Envelope<ServiceConfig>)))]
async fn get_config(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let id = current.user.id;
    let config = state
        .db
        .read(move |c| load(c, &id).map_err(DbError::from))
        .await?;
    Ok(ok(StatusCode::OK, config))
}

/// Every field is optional: what is left out keeps its saved (or default) value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigBody {
    llm_provider: Option<String>,
    llm_model: Option<String>,
    /// An empty string clears it.
    llm_base_url: Option<String>,
    tts_provider: Option<String>,
    tts_voice: Option<String>,
    stt_provider: Option<String>,
    stt_model: Option<String>,
}

/// Model and voice names: 1–100 characters of the kinds providers use
/// (`llama-3.3-70b-versatile`, `meta-llama/Llama-3.1-8B-Instruct`, `qwen2:7b`).
fn check_name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let n = value.chars().count();
    let message = if n == 0 || n > 100 {
        Some("must be 1 to 100 characters")
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+".contains(c))
    {
        Some("may contain only letters, digits and - _ . : / @ +")
    } else {
        None
    };
    if let Some(m) = message {
        errors.push(FieldError {
            field: field.into(),
            message: m.into(),
        });
    }
}

fn check_one_of(field: &str, value: &str, allowed: &[&str], errors: &mut Vec<FieldError>) {
    if !allowed.contains(&value) {
        errors.push(FieldError {
            field: field.into(),
            message: format!("must be one of: {}", allowed.join(", ")),
        });
    }
}

/// An http(s) URL with a host and without credentials (those belong in the
/// key vault, not in a setting shown back in clear). Returned without a
/// trailing slash, so `{base}/chat/completions` joins cleanly.
pub fn normalize_base_url(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err("must be at most 2048 characters");
    }
    let url = reqwest::Url::parse(raw).map_err(|_| "must be an http or https URL")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an http or https URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password; save the key under API keys");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query or a fragment");
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Applies `body` over `current` and checks the result as a whole.
fn merge(current: ServiceConfig, body: ConfigBody) -> Result<ServiceConfig, ApiError> {
    let mut errors = Vec::new();
    let trimmed = |v: Option<String>, old: String| v.map(|s| s.trim().to_string()).unwrap_or(old);
    let mut next = ServiceConfig {
        llm_provider: trimmed(body.llm_provider, current.llm_provider),
        llm_model: trimmed(body.llm_model, current.llm_model),
        llm_base_url: current.llm_base_url,
        tts_provider: trimmed(body.tts_provider, current.tts_provider),
        tts_voice: trimmed(body.tts_voice, current.tts_voice),
        stt_provider: trimmed(body.stt_provider, current.stt_provider),
        stt_model: trimmed(body.stt_model, current.stt_model),
        updated_at: current.updated_at,
    };
    match body.llm_base_url.as_deref().map(str::trim) {
        None => {}
        Some("") => next.llm_base_url = None,
        Some(raw) => match normalize_base_url(raw) {
            Ok(url) => next.llm_base_url = Some(url),
            Err(m) => errors.push(FieldError {
                field: "llm_base_url".into(),
                message: m.into(),
            }),
        },
    }
    check_one_of(
        "llm_provider",
        &next.llm_provider,
        &LLM_PROVIDERS,
        &mut errors,
    );
    check_one_of(
        "tts_provider",
        &next.tts_provider,
        &SPEECH_PROVIDERS,
        &mut errors,
    );
    check_one_of(
        "stt_provider",
        &next.stt_provider,
        &SPEECH_PROVIDERS,
        &mut errors,
    );
    check_name("llm_model", &next.llm_model, &mut errors);
    check_name("tts_voice", &next.tts_voice, &mut errors);
    check_name("stt_model", &next.stt_model, &mut errors);
    if next.llm_provider == LLM_OPENAI_COMPATIBLE
        && next.llm_base_url.is_none()
        && !errors.iter().any(|e| e.field == "llm_base_url")
    {
        errors.push(FieldError {
            field: "llm_base_url".into(),
            message: "is required for openai_compatible: the URL of the server's OpenAI-compatible API, e.g. http://10.0.0.5:8000/v1".into(),
        });
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ApiError::fields(errors))
    }
}

/// Save the service settings: what is left out keeps its value.
#[utoipa::path(post, path = "/config/service", tag = "configuration",
    request_body = ConfigBody,
    responses((status = 200, body = Envelope<ServiceConfig>)))]
async fn save_config(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<ConfigBody>,
) -> ApiResult<Response> {
    let user_id = current.user.id;
    let allowed = state.config.clone();
    let saved = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let before = load(&tx, &user_id)?;
            let next = merge(before.clone(), body)?;
            if let Some(url) = next.llm_base_url.as_deref() {
                if next.llm_provider == LLM_OPENAI_COMPATIBLE && !allowed.llm_url_allowed(url) {
                    return Err(ApiError::field(
                        "llm_base_url",
                        "is not among the LLM servers this installation allows (VOXFLOW_LLM_ALLOWED_URLS)",
                    ));
                }
            }
            let speech = [
                ("stt_provider", &next.stt_provider, &allowed.speech_stt_base_url, "VOXFLOW_SPEECH_STT_BASE_URL"),
                ("tts_provider", &next.tts_provider, &allowed.speech_tts_base_url, "VOXFLOW_SPEECH_TTS_BASE_URL"),
            ];
            for (field, provider, base, env) in speech {
                if provider == SPEECH_OPENAI_COMPATIBLE && base.as_deref().is_none_or(|b| b.trim().is_empty()) {
                    return Err(ApiError::field(
                        field,
                        format!("openai_compatible needs the speech server this installation runs, and the administrator has set none ({env})"),
                    ));
                }
            }
            tx.execute(
                "INSERT INTO service_configs (user_id, llm_provider, llm_model, llm_base_url, tts_provider, tts_voice, stt_provider, stt_model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (user_id) DO UPDATE SET
                    llm_provider = excluded.llm_provider, llm_model = excluded.llm_model,
                    llm_base_url = excluded.llm_base_url, tts_provider = excluded.tts_provider,
                    tts_voice = excluded.tts_voice, stt_provider = excluded.stt_provider,
                    stt_model = excluded.stt_model,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                params![
                    user_id,
                    next.llm_provider,
                    next.llm_model,
                    next.llm_base_url,
                    next.tts_provider,
                    next.tts_voice,
                    next.stt_provider,
                    next.stt_model
                ],
            )?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "update_service_config",
                    target_user_id: Some(&user_id),
                    resource_type: Some("service_config"),
                    resource_id: None,
                    details: json!({ "before": before, "after": next }),
                    client: &client,
                },
            )?;
            let saved = load(&tx, &user_id)?;
            tx.commit()?;
            Ok::<_, ApiError>(saved)
        })
        .await?;
    Ok(ok(StatusCode::OK, saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(provider: Option<&str>, url: Option<&str>) -> ConfigBody {
        ConfigBody {
            llm_provider: provider.map(Into::into),
            llm_model: None,
            llm_base_url: url.map(Into::into),
            tts_provider: None,
            tts_voice: None,
            stt_provider: None,
            stt_model: None,
        }
    }

    #[test]
    fn openai_compatible_needs_a_base_url() {
        let e = merge(
            ServiceConfig::default(),
            body(Some("openai_compatible"), None),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "llm_base_url");
        let ok = merge(
            ServiceConfig::default(),
            body(
                Some("openai_compatible"),
                Some(" http://10.0.0.5:8000/v1/ "),
            ),
        )
        .unwrap();
        assert_eq!(ok.llm_base_url.as_deref(), Some("http://10.0.0.5:8000/v1"));
        // Clearing the URL of a saved openai_compatible config is refused.
        let e = merge(ok, body(None, Some(""))).unwrap_err();
        assert_eq!(e.errors[0].field, "llm_base_url");
    }

    #[test]
    fn base_urls_are_plain_http_or_https() {
        assert!(normalize_base_url("https://llm.internal/v1").is_ok());
        assert!(normalize_base_url("ftp://llm.internal/v1").is_err());
        assert!(normalize_base_url("llm.internal/v1").is_err());
        assert!(normalize_base_url("http://user:pw@llm.internal/v1").is_err());
        assert!(normalize_base_url("http://llm.internal/v1?key=x").is_err());
    }

    #[test]
    fn names_use_a_safe_charset() {
        let mut errors = Vec::new();
        check_name("m", "meta-llama/Llama-3.1-8B-Instruct", &mut errors);
        check_name("m", "qwen2:7b", &mut errors);
        assert!(errors.is_empty());
        check_name("m", "", &mut errors);
        check_name("m", "a b", &mut errors);
        check_name("m", &"x".repeat(101), &mut errors);
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn unknown_providers_are_refused() {
        let e = merge(ServiceConfig::default(), body(Some("openai"), None)).unwrap_err();
        assert_eq!(e.errors[0].field, "llm_provider");
    }
}
