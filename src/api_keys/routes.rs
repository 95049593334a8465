//! `/api/api-keys`: a tenant saves, inspects, tests and removes its own
//! provider keys. Every query is scoped by the caller's user id, so one
//! tenant cannot name, let alone read, another tenant's key. No answer and
//! no log line carries a key; the status shows a masked form only.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::formats::{self, fields_of};
use super::store::{self, TenantSecret, TwilioCredentials};
use super::{resolve, system_key, KeySource, Provider};
use crate::admin::audit::{self, Entry};
use crate::auth::extract::CurrentUser;
use crate::config::Config;
use crate::crypto::vault::Vault;
use crate::http::error::{ok, ApiError, ApiResult, FieldError};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::http::openapi::{Envelope, ErrorBody};
use crate::http::AppState;
use crate::providers::{self, CheckStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers))
        .routes(routes!(status))
        .routes(routes!(validate))
        .routes(routes!(save, remove))
        .routes(routes!(test_key))
}

fn provider_names() -> String {
    Provider::ALL.map(Provider::as_str).join(", ")
}

/// The provider named in the path; any other name is a 404 (there is no
/// such resource), without echoing the name back.
fn provider_of(name: &str) -> Result<Provider, ApiError> {
    Provider::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_PROVIDER",
            format!("Unknown provider: use one of {}", provider_names()),
        )
    })
}

/// Where a status's key comes from; `none` when no key is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Source {
    User,
    System,
    None,
}

impl From<KeySource> for Source {
    fn from(s: KeySource) -> Source {
        match s {
            KeySource::User => Source::User,
            KeySource::System => Source::System,
        }
    }
}

/// One provider's line of `GET /status`. `configured` and `source` say
/// which key a call would use; `masked`, `is_active`, `created_at` and
/// `last_used_at` describe the tenant's own saved key when there is one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ProviderStatus {
    provider: Provider,
    configured: bool,
    source: Source,
    masked: Option<String>,
    is_active: bool,
    created_at: Option<String>,
    last_used_at: Option<String>,
    /// Twilio only: the number calls are made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<String>,
    /// Set when the saved key no longer decrypts.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

const UNREADABLE: &str =
    "The saved key cannot be decrypted (it was altered or damaged); save it again";

fn status_of(
    conn: &Connection,
    vault: &Vault,
    config: &Config,
    user_id: &str,
    provider: Provider,
) -> Result<ProviderStatus, ApiError> {
    let system = system_key(config, provider).is_some();
    // For Twilio the telephony configuration stands in for a missing (or
    // deactivated) API key, as in `resolve`.
    let telephony = match provider {
        Provider::Twilio => store::telephony_row(conn, user_id)?,
        Provider::Groq | Provider::Deepgram => None,
    };
    let fallback = if telephony.is_some() {
        Source::User
    } else if system {
        Source::System
    } else {
        Source::None
    };
    if let Some(row) = store::key_row(conn, user_id, provider)? {
        let opened = store::open(vault, user_id, provider, &row.sealed);
        let source = if row.is_active {
            Source::User
        } else {
            fallback
        };
        let phone_number = match &opened {
            Ok(TenantSecret::Twilio(t)) => t.phone_number.clone(),
            _ => None,
        };
        return Ok(ProviderStatus {
            provider,
            configured: source != Source::None,
            source,
            masked: opened.as_ref().ok().map(TenantSecret::masked),
            is_active: row.is_active,
            created_at: Some(row.created_at),
            last_used_at: row.last_used_at,
            phone_number,
            error: opened.is_err().then(|| UNREADABLE.to_string()),
        });
    }
    if let Some(t) = telephony {
        let readable = store::open_telephony_token(vault, user_id, &t.auth_token).is_ok();
        return Ok(ProviderStatus {
            provider,
            configured: true,
            source: Source::User,
            masked: Some(formats::mask(&t.account_sid)),
            is_active: true,
            created_at: Some(t.created_at),
            last_used_at: None,
            phone_number: Some(t.from_phone_number),
            error: (!readable).then(|| UNREADABLE.to_string()),
        });
    }
    Ok(ProviderStatus {
        provider,
        configured: system,
        source: fallback,
        masked: None,
        is_active: system,
        created_at: None,
        last_used_at: None,
        phone_number: None,
        error: None,
    })
}

/// The providers, the fields each key takes and their formats.
#[utoipa::path(get, path = "/providers", tag = "api-keys",
    responses((status = 200, body = Envelope<Vec<ProviderInfo>>)))]
async fn list_providers(State(state): State<AppState>, _user: CurrentUser) -> Response {
    let list: Vec<_> = Provider::ALL
        .into_iter()
        .map(|p| ProviderInfo {
            provider: p,
            name: p.display_name(),
            fields: fields_of(p),
            server_key_available: system_key(&state.config, p).is_some(),
        })
        .collect();
    ok(StatusCode::OK, list)
}

/// A provider, the fields its key takes, and whether the server has a key
/// of its own for tenants without one.
#[derive(Serialize, utoipa::ToSchema)]
struct ProviderInfo {
    provider: Provider,
    name: &'static str,
    fields: Vec<formats::FieldFormat>,
    server_key_available: bool,
}

/// Which key each provider would use, the tenant's own masked.
#[utoipa::path(get, path = "/status", tag = "api-keys",
    responses((status = 200, body = Envelope<BTreeMap<String, ProviderStatus>>)))]
async fn status(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let vault = state.vault.clone();
    let config = state.config.clone();
    let user_id = current.user.id;
    let all = state
        .db
        .read(move |c| {
            Provider::ALL
                .into_iter()
                .map(|p| Ok((p.as_str(), status_of(c, &vault, &config, &user_id, p)?)))
                .collect::<Result<BTreeMap<_, _>, ApiError>>()
        })
        .await?;
    Ok(ok(StatusCode::OK, all))
}

/// `{api_key}`, or for Twilio `{account_sid, auth_token, phone_number?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SaveBody {
    api_key: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<String>,
    phone_number: Option<String>,
}

/// The body's key, checked against the provider's format; every bad field
/// is named.
fn secret_from(provider: Provider, body: &SaveBody) -> Result<TenantSecret, ApiError> {
    let one = |e: FieldError| ApiError::fields(vec![e]);
    match provider {
        Provider::Groq | Provider::Deepgram => {
            let key = formats::required("api_key", body.api_key.as_deref()).map_err(one)?;
            if provider == Provider::Groq {
                formats::check_groq_key("api_key", key).map_err(one)?;
            } else {
                formats::check_deepgram_key("api_key", key).map_err(one)?;
            }
            Ok(TenantSecret::ApiKey(Zeroizing::new(key.to_string())))
        }
        Provider::Twilio => {
            let mut errors = Vec::new();
            let sid = formats::required("account_sid", body.account_sid.as_deref())
                .and_then(|s| formats::check_twilio_sid("account_sid", s).map(|()| s));
            let token = formats::required("auth_token", body.auth_token.as_deref())
                .and_then(|t| formats::check_twilio_token("auth_token", t).map(|()| t));
            let number = match body.phone_number.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(n) => formats::check_e164("phone_number", n).map(|()| Some(n)),
            };
            let (sid, token, number) = match (sid, token, number) {
                (Ok(s), Ok(t), Ok(n)) => (s, t, n),
                (s, t, n) => {
                    errors.extend(s.err());
                    errors.extend(t.err());
                    errors.extend(n.err());
                    return Err(ApiError::fields(errors));
                }
            };
            Ok(TenantSecret::Twilio(TwilioCredentials {
                account_sid: sid.to_string(),
                auth_token: Zeroizing::new(token.to_string()),
                phone_number: number.map(str::to_string),
            }))
        }
    }
}

/// Save the tenant's key for a provider (Twilio: SID, token, number),
/// checked against the provider's format.
#[utoipa::path(post, path = "/{provider}", tag = "api-keys",
    params(("provider" = Provider, Path)),
    request_body = SaveBody,
    responses((status = 200, body = Envelope<ProviderStatus>)))]
async fn save(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SaveBody>,
) -> ApiResult<Response> {
    let provider = provider_of(&name)?;
    let secret = secret_from(provider, &body)?;
    drop(body);
    let vault = state.vault.clone();
    let config = state.config.clone();
    let user_id = current.user.id;
    let saved = state
        .db
        .write(move |c| {
            let sealed =
                store::seal(&vault, &user_id, provider, &secret).map_err(ApiError::internal)?;
            drop(secret);
            let tx = c.savepoint()?;
            let replaced = store::upsert(&tx, &user_id, provider, &sealed)?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "save_api_key",
                    target_user_id: Some(&user_id),
                    resource_type: Some("api_key"),
                    resource_id: None,
                    details: json!({ "provider": provider, "replaced": replaced }),
                    client: &client,
                },
            )?;
            let status = status_of(&tx, &vault, &config, &user_id, provider)?;
            tx.commit()?;
            Ok::<_, ApiError>(status)
        })
        .await?;
    tracing::info!(provider = provider.as_str(), "API key saved");
    Ok(ok(StatusCode::OK, saved))
}

/// Delete the tenant's saved key.
#[utoipa::path(delete, path = "/{provider}", tag = "api-keys",
    params(("provider" = Provider, Path)),
    responses((status = 200, body = Envelope<KeyRemoved>)))]
async fn remove(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let provider = provider_of(&name)?;
    let vault = state.vault.clone();
    let config = state.config.clone();
    let user_id = current.user.id;
    let status = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            if !store::delete(&tx, &user_id, provider)? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("You have no saved {} key", provider.display_name()),
                ));
            }
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "delete_api_key",
                    target_user_id: Some(&user_id),
                    resource_type: Some("api_key"),
                    resource_id: None,
                    details: json!({ "provider": provider }),
                    client: &client,
                },
            )?;
            let status = status_of(&tx, &vault, &config, &user_id, provider)?;
            tx.commit()?;
            Ok(status)
        })
        .await?;
    Ok(ok(
        StatusCode::OK,
        KeyRemoved {
            deleted: true,
            status,
        },
    ))
}

/// A key deleted, and which key the provider would use now.
#[derive(Serialize, utoipa::ToSchema)]
struct KeyRemoved {
    /// Always `true`.
    deleted: bool,
    status: ProviderStatus,
}

/// Asks the provider whether the key a call would use (the tenant's, else
/// the server's) works. Only the provider's status code is read.
/// Ask the provider whether the key works.
#[utoipa::path(post, path = "/{provider}/test", tag = "api-keys",
    params(("provider" = Provider, Path)),
    responses((status = 200, body = Envelope<serde_json::Value>, description = "`data`: the provider's verdict")))]
async fn test_key(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let provider = provider_of(&name)?;
    let Some(key) = resolve(&state, &current.user.id, provider).await? else {
        return Ok(ok(
            StatusCode::OK,
            json!({
                "provider": provider,
                "valid": false,
                "status": "not_configured",
                "source": Source::None,
                "message": format!("No {} key is configured: save one first", provider.display_name()),
            }),
        ));
    };
    let config = &state.config;
    let timeout = Duration::from_secs(config.provider_timeout_secs);
    let client = &state.http_client;
    let check = match provider {
        Provider::Groq => {
            providers::groq::check_key(client, &config.groq_base_url, &key.secret, timeout).await
        }
        Provider::Deepgram => {
            providers::deepgram::check_key(client, &config.deepgram_base_url, &key.secret, timeout)
                .await
        }
        Provider::Twilio => {
            providers::twilio::check_key(
                client,
                &config.twilio_base_url,
                key.account_sid.as_deref().unwrap_or_default(),
                &key.secret,
                timeout,
            )
            .await
        }
    };
    tracing::info!(
        user_id = %current.user.id,
        provider = provider.as_str(),
        outcome = ?check.status(),
        "API key tested"
    );
    Ok(ok(
        StatusCode::OK,
        json!({
            "provider": provider,
            "valid": check.status() == CheckStatus::Valid,
            "status": check.status(),
            "source": Source::from(key.source),
            "message": check.message(provider.display_name()),
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ValidateQuery {
    /// Comma-separated providers (all when absent).
    providers: Option<String>,
}

/// `providers=groq,deepgram` (all when absent), each once, in the order given.
fn parse_provider_list(raw: Option<&str>) -> Result<Vec<Provider>, ApiError> {
    let raw = raw.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(Provider::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let p = Provider::parse(name).ok_or_else(|| {
            ApiError::field(
                "providers",
                format!("names an unknown provider; use {}", provider_names()),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Whether each provider has a key a call could use now (the tenant's that
/// decrypts, or the server's). It does not ask the providers: that is
/// what `/test` is for.
/// Whether each provider is usable now.
#[utoipa::path(get, path = "/validate", tag = "api-keys", params(ValidateQuery),
    responses(
        (status = 200, body = Envelope<Validity>),
        (status = 422, body = ErrorBody, description = "A provider is not usable (`KEYS_NOT_USABLE`, with `data {valid: false, providers, missing}`)"),
    ))]
async fn validate(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<ValidateQuery>,
) -> ApiResult<Response> {
    let wanted = parse_provider_list(q.providers.as_deref())?;
    let mut each = BTreeMap::new();
    let mut missing = Vec::new();
    for p in wanted {
        let (usable, source, message) = match resolve(&state, &current.user.id, p).await {
            Ok(Some(k)) => (true, Source::from(k.source), None),
            Ok(None) => (
                false,
                Source::None,
                Some(format!("No {} key is configured", p.display_name())),
            ),
            Err(e) if e.code == "KEY_UNREADABLE" => (false, Source::User, Some(e.message)),
            Err(e) => return Err(e),
        };
        if !usable {
            missing.push(p);
        }
        each.insert(
            p.as_str().to_string(),
            Usability {
                usable,
                source,
                message,
            },
        );
    }
    let data = Validity {
        valid: missing.is_empty(),
        providers: each,
        missing,
    };
    if data.missing.is_empty() {
        return Ok(ok(StatusCode::OK, data));
    }
    // A 422 with the usual failure's envelope, not a 200: the first
    // edition's page takes `success: true` for "the keys are valid", and
    // every answer of this API is a 2xx exactly when `success` is true. A
    // client that shows `message` names what is missing; `data` is the
    // same as on success, for clients that read `data.valid`.
    let names: Vec<&str> = data.missing.iter().map(|p| p.display_name()).collect();
    let message = format!("Not usable now: {}", names.join(", "));
    Err(
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "KEYS_NOT_USABLE", message)
            .with("data", json!(data)),
    )
}

/// Whether each provider asked about is usable now.
#[derive(Serialize, utoipa::ToSchema)]
struct Validity {
    /// Every provider asked about is usable.
    valid: bool,
    providers: BTreeMap<String, Usability>,
    missing: Vec<Provider>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Usability {
    usable: bool,
    source: Source,
    /// Why not, when not.
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(api_key: Option<&str>) -> SaveBody {
        SaveBody {
            api_key: api_key.map(Into::into),
            account_sid: None,
            auth_token: None,
            phone_number: None,
        }
    }

    #[test]
    fn malformed_keys_name_the_field() {
        let e = secret_from(Provider::Groq, &body(Some("sk-wrong")))
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.errors[0].field.as_str()),
            (StatusCode::BAD_REQUEST, "api_key")
        );
        let e = secret_from(Provider::Deepgram, &body(None)).err().unwrap();
        assert_eq!(e.errors[0].message, "is required");
        let twilio = SaveBody {
            api_key: None,
            account_sid: Some("XX".into()),
            auth_token: None,
            phone_number: Some("555-0100".into()),
        };
        let e = secret_from(Provider::Twilio, &twilio).err().unwrap();
        let fields: Vec<&str> = e.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["account_sid", "auth_token", "phone_number"]);
    }

    #[test]
    fn unknown_providers_are_404_without_an_echo() {
        let e = provider_of("<script>").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(!e.message.contains("<script>"));
    }

    #[test]
    fn provider_lists_parse_dedupe_and_refuse_unknown_names() {
        assert_eq!(parse_provider_list(None).unwrap(), Provider::ALL.to_vec());
        assert_eq!(
            parse_provider_list(Some("deepgram, groq,deepgram,")).unwrap(),
            vec![Provider::Deepgram, Provider::Groq]
        );
        let e = parse_provider_list(Some("groq,openai")).unwrap_err();
        assert_eq!(e.errors[0].field, "providers");
    }
}
