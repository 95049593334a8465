//! `/api/campaigns`: create from a CSV upload, list, read, the contacts,
//! the state transitions and delete. Another tenant's campaign is a 404 on
//! every route, like a missing one.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::dialer::settle_limit;
use super::import::{self, FileError, Parsed, MAX_FILE_BYTES};
use super::store::{
    self, campaign_from_row, contact_from_row, owned_campaign, Campaign, ContactRow, Settings,
    CAMPAIGN_COLUMNS, CAMPAIGN_FROM, CONTACT_COLUMNS,
};
use super::window::Clock;
use super::{CONTACT_STATUSES, STATES};
use crate::admin::audit::{self, Entry};
use crate::agents::owned_agent;
use crate::auth::extract::CurrentUser;
use crate::calls::agent_llm::plan_llm;
use crate::calls::phone::{phone_setup, tier_refusal};
use crate::calls::routes::{body_id, startable};
use crate::db::DbError;
use crate::http::error::{ok, ApiError, ApiResult, FieldError};
use crate::http::extract::{ApiPath, ApiQuery, ClientInfo};
use crate::http::filters::{uuid_param, SqlFilter};
use crate::http::openapi::{Envelope, ErrorBody, Paged};
use crate::http::pagination::Page;
use crate::http::{read_body_first, AppState};
use crate::tiers;

/// The upload's whole body: the file and room for the other fields and the
/// multipart framing.
pub const UPLOAD_BODY_LIMIT: usize = MAX_FILE_BYTES + 64 * 1024;

/// Every route but the upload, which has a body limit of its own.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns))
        .routes(routes!(get_campaign, delete_campaign))
        .routes(routes!(list_contacts))
        .routes(routes!(start_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(stop_campaign))
}

/// `POST /campaigns`, reading bodies up to `UPLOAD_BODY_LIMIT` (a CSV file)
/// where every other route stops at the JSON limit.
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign))
        .layer(middleware::from_fn_with_state(
            UPLOAD_BODY_LIMIT,
            read_body_first,
        ))
        .layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!(
            "The CSV file may be at most {} MB",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    ApiError::bad_request(
        "INVALID_MULTIPART",
        format!("The multipart body could not be read: {}", err.body_text()),
    )
}

/// The upload's fields, as sent.
#[derive(Default)]
struct Upload {
    name: Option<String>,
    agent_id: Option<String>,
    file: Option<axum::body::Bytes>,
    /// The dialing settings, as sent (`max_retries`, …).
    settings: Vec<(String, String)>,
}

/// The optional multipart fields that set how the campaign dials.
const SETTING_FIELDS: [&str; 5] = [
    "max_retries",
    "retry_delay_seconds",
    "min_talk_seconds",
    "window_start",
    "window_end",
];

async fn read_upload(
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Upload> {
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the campaign as multipart/form-data with the fields name, agent_id and file",
        ));
    }
    let mut multipart = multipart.map_err(|r| {
        ApiError::bad_request(
            "INVALID_MULTIPART",
            format!("The multipart body could not be read: {}", r.body_text()),
        )
    })?;
    let mut upload = Upload::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("name") => upload.name = Some(field.text().await.map_err(multipart_error)?),
            Some("agent_id") => {
                upload.agent_id = Some(field.text().await.map_err(multipart_error)?)
            }
            Some("file") => upload.file = Some(field.bytes().await.map_err(multipart_error)?),
            Some(name) if SETTING_FIELDS.contains(&name) => {
                let name = name.to_string();
                let value = field.text().await.map_err(multipart_error)?;
                upload.settings.push((name, value));
            }
            // Other fields (a client's extras) are skipped, as JSON bodies' are.
            _ => {}
        }
    }
    Ok(upload)
}

/// A campaign name: 2–100 characters, trimmed, no control characters.
fn check_name(raw: Option<&str>) -> Result<String, FieldError> {
    let bad = |message: &str| FieldError {
        field: "name".into(),
        message: message.into(),
    };
    let name = raw.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(bad("is required"));
    }
    if !(2..=100).contains(&name.chars().count()) {
        return Err(bad("must be 2 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    Ok(name.to_string())
}

/// The dialing settings from the upload's fields, each within its bounds;
/// a field left out (or blank) keeps its default.
fn check_settings(fields: &[(String, String)]) -> Result<Settings, Vec<FieldError>> {
    let mut settings = Settings::default();
    let mut errors = Vec::new();
    let bad = |field: &str, message: String| FieldError {
        field: field.into(),
        message,
    };
    for (name, raw) in fields {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        let number = |lo: i64, hi: i64| {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| bad(name, format!("must be a whole number from {lo} to {hi}")))
        };
        let clock = || {
            Clock::parse(value)
                .map(|_| value.to_string())
                .ok_or_else(|| {
                    bad(
                        name,
                        "must be a time of day as HH:MM (00:00 to 23:59)".into(),
                    )
                })
        };
        let set = match name.as_str() {
            "max_retries" => number(0, 10).map(|n| settings.max_retries = n),
            "retry_delay_seconds" => {
                number(1, 7 * 86_400).map(|n| settings.retry_delay_seconds = n)
            }
            "min_talk_seconds" => number(0, 3_600).map(|n| settings.min_talk_seconds = n),
            "window_start" => clock().map(|t| settings.window_start = Some(t)),
            _ => clock().map(|t| settings.window_end = Some(t)),
        };
        if let Err(e) = set {
            errors.push(e);
        }
    }
    match (&settings.window_start, &settings.window_end) {
        (Some(a), Some(b)) if a == b => errors.push(bad(
            "window_end",
            "must differ from window_start (the window would be empty)".into(),
        )),
        (Some(_), None) | (None, Some(_)) => errors.push(bad(
            "window_end",
            "window_start and window_end go together".into(),
        )),
        _ => {}
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn file_error(err: FileError) -> ApiError {
    match err {
        FileError::NotUtf8 => ApiError::field("file", "must be UTF-8 text").with_code("NOT_UTF8"),
        FileError::NoPhoneColumn => ApiError::field(
            "file",
            "has no phone_number (or phone) column in its header row",
        )
        .with_code("MISSING_PHONE_COLUMN"),
        FileError::Malformed(e) => ApiError::field("file", format!("is not valid CSV: {e}")),
    }
}

fn import_report(p: &Parsed) -> serde_json::Value {
    json!({
        "rows": p.rows,
        "imported": p.contacts.len(),
        "duplicates": p.duplicates,
        "invalid": p.invalid,
        "invalid_count": p.invalid_count,
    })
}

/// The form of a new campaign, for the OpenAPI document: the handler
/// reads the multipart fields one by one (`read_upload`), so this type is
/// never built.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CampaignForm {
    /// 1–100 characters.
    name: String,
    agent_id: Uuid,
    /// The CSV: a `phone_number` column (or `phone`), optional `first_name`,
    /// `last_name`, `timezone`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    max_retries: Option<i64>,
    retry_delay_seconds: Option<i64>,
    min_talk_seconds: Option<i64>,
    /// Local calling hours, `HH:MM`.
    window_start: Option<String>,
    window_end: Option<String>,
}

/// Create a campaign from a CSV file (at most 10 MB): numbers normalised
/// to E.164, duplicates dropped, bad rows reported.
#[utoipa::path(post, path = "/campaigns", tag = "campaigns",
    request_body(content = CampaignForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = Envelope<serde_json::Value>, description = "`data`: the campaign with its `import` report (`imported`, `duplicates`, `invalid`, …)"),
        (status = 404, body = ErrorBody, description = "No such agent, or another tenant's"),
        (status = 415, body = ErrorBody, description = "Not `multipart/form-data`"),
        (status = 422, body = ErrorBody, description = "No valid row in the file"),
    ))]
async fn create_campaign(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let upload = read_upload(&headers, multipart).await?;
    let mut errors = Vec::new();
    let name = check_name(upload.name.as_deref())
        .map_err(|e| errors.push(e))
        .ok();
    let agent_id = body_id("agent_id", upload.agent_id.as_deref())
        .map_err(|e| errors.extend(e.errors))
        .ok();
    let settings = check_settings(&upload.settings)
        .map_err(|e| errors.extend(e))
        .ok();
    let file = match upload.file {
        None => {
            errors.push(FieldError {
                field: "file".into(),
                message: "is required".into(),
            });
            None
        }
        Some(f) if f.len() > MAX_FILE_BYTES => return Err(too_large()),
        Some(f) => Some(f),
    };
    let (Some(name), Some(agent_id), Some(file), Some(settings)) = (name, agent_id, file, settings)
    else {
        return Err(ApiError::fields(errors));
    };
    let user_id = current.user.id;
    {
        let (user_id, agent_id) = (user_id.clone(), agent_id.clone());
        state
            .db
            .read(move |c| owned_agent(c, &user_id, &agent_id).map_err(DbError::from))
            .await?
            .ok_or_else(|| ApiError::not_found("Agent"))?;
    }
    // Parsing ten megabytes is CPU work: kept off the async workers.
    let parsed = tokio::task::spawn_blocking(move || import::parse(&file))
        .await
        .map_err(ApiError::internal)?
        .map_err(file_error)?;
    if parsed.contacts.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "NO_VALID_CONTACTS",
            "The file has no row with a valid phone number",
        )
        .with("import", import_report(&parsed)));
    }

    let tier = tiers::tier(&current.user.subscription_tier).unwrap_or(&tiers::TIERS[0]);
    import::check_size(&parsed, tier)?;
    let parsed = std::sync::Arc::new(parsed);
    let import = import::Import {
        user_id,
        name,
        agent_id,
        settings,
        tier,
        client,
        parsed: parsed.clone(),
    };
    let campaign = import::write(state.db.clone(), import).await?;
    let report = import_report(&parsed);
    let mut data = serde_json::to_value(&campaign).map_err(ApiError::internal)?;
    data["import"] = report;
    Ok(ok(StatusCode::CREATED, data))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    state: Option<String>,
    agent_id: Option<String>,
}

/// The caller's campaigns with their contact counts, newest first.
#[utoipa::path(get, path = "/campaigns", tag = "campaigns", params(ListQuery),
    responses((status = 200, body = Paged<Campaign>)))]
async fn list_campaigns(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let mut filter = SqlFilter::default();
    filter.add("c.user_id = ?", current.user.id);
    filter.one_of("state", &q.state, &STATES, "c.state")?;
    if let Some(agent_id) = uuid_param("agent_id", &q.agent_id)? {
        filter.add("c.agent_id = ?", agent_id);
    }
    let (campaigns, total) = state
        .db
        .read(move |c| {
            Ok::<_, ApiError>(filter.page_of(
                c,
                CAMPAIGN_FROM,
                CAMPAIGN_COLUMNS,
                "c.created_at DESC, c.rowid DESC",
                page,
                campaign_from_row,
            )?)
        })
        .await?;
    Ok(page.respond(campaigns, total))
}

/// The campaign with `progress` beside its fields.
fn with_progress(campaign: &Campaign) -> ApiResult<serde_json::Value> {
    let mut data = serde_json::to_value(campaign).map_err(ApiError::internal)?;
    data["progress"] = campaign.contacts.progress();
    Ok(data)
}

fn find(conn: &Connection, user_id: &str, id: &str) -> ApiResult<Campaign> {
    owned_campaign(conn, user_id, id)?.ok_or_else(|| ApiError::not_found("Campaign"))
}

/// One campaign with its progress and its newest 100 calls.
#[utoipa::path(get, path = "/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses((status = 200, body = Envelope<serde_json::Value>, description = "`data`: the campaign with `progress` and `runs`")))]
async fn get_campaign(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let user_id = current.user.id;
    let (campaign, runs) = state
        .db
        .read(move |c| {
            let campaign = find(c, &user_id, &id.to_string())?;
            let runs = store::campaign_runs(c, &campaign.id)?;
            Ok::<_, ApiError>((campaign, runs))
        })
        .await?;
    let mut data = with_progress(&campaign)?;
    // The first edition's detail page lists the campaign's calls.
    data["runs"] = serde_json::to_value(runs).map_err(ApiError::internal)?;
    Ok(ok(StatusCode::OK, data))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ContactsQuery {
    page: Option<u32>,
    limit: Option<u32>,
    status: Option<String>,
}

/// A campaign's contacts, in the file's order.
#[utoipa::path(get, path = "/campaigns/{id}/contacts", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign"), ContactsQuery),
    responses((status = 200, body = Paged<ContactRow>)))]
async fn list_contacts(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ContactsQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let id = id.to_string();
    let mut filter = SqlFilter::default();
    filter.add("k.campaign_id = ?", id.clone());
    // `called`, the first edition's name, asks for the contacts reached.
    let status = q.status.map(|s| {
        if s.trim() == "called" {
            "reached".to_string()
        } else {
            s
        }
    });
    filter.one_of("status", &status, &CONTACT_STATUSES, "k.status")?;
    let user_id = current.user.id;
    let (contacts, total) = state
        .db
        .read(move |c| {
            find(c, &user_id, &id)?;
            Ok::<_, ApiError>(filter.page_of(
                c,
                "campaign_contacts k",
                CONTACT_COLUMNS,
                // The order of the file.
                "k.rowid",
                page,
                contact_from_row,
            )?)
        })
        .await?;
    Ok(page.respond(contacts, total))
}

/// A state change a tenant asks for.
#[derive(Debug, Clone, Copy)]
enum Transition {
    Start,
    Pause,
    Resume,
    Stop,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Pause => "pause",
            Transition::Resume => "resume",
            Transition::Stop => "stop",
        }
    }

    /// The states it may leave.
    fn from(self) -> &'static [&'static str] {
        match self {
            Transition::Start => &["created"],
            Transition::Pause => &["running"],
            Transition::Resume => &["paused"],
            Transition::Stop => &["running", "paused"],
        }
    }

    /// Whether the campaign will place calls afterwards (so it needs what a
    /// phone call needs).
    fn dials(self) -> bool {
        matches!(self, Transition::Start | Transition::Resume)
    }

    /// The state it leads to: a campaign set running with no contact left
    /// to call has nothing to do and is completed at once.
    fn to(self, open: i64) -> &'static str {
        match self {
            Transition::Start | Transition::Resume if open == 0 => "completed",
            Transition::Start | Transition::Resume => "running",
            Transition::Pause => "paused",
            Transition::Stop => "stopped",
        }
    }

    /// The 409 of a campaign not in a state this transition leaves.
    fn refused(self, campaign: &Campaign) -> Option<ApiError> {
        (!self.from().contains(&campaign.state.as_str())).then(|| {
            ApiError::conflict(
                "INVALID_STATE_TRANSITION",
                format!(
                    "A campaign that is {} cannot {}",
                    campaign.state,
                    self.verb()
                ),
            )
            .with("state", json!(campaign.state))
        })
    }
}

/// created → running (needs what a phone call needs).
#[utoipa::path(post, path = "/campaigns/{id}/start", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: the campaign with `progress`"),
        (status = 409, body = ErrorBody, description = "Not in a state this change starts from (`state` names it)"),
        (status = 422, body = ErrorBody, description = "The LLM or Twilio is not set up"),
    ))]
async fn start_campaign(
    s: State<AppState>,
    u: CurrentUser,
    c: ClientInfo,
    p: ApiPath<Uuid>,
) -> ApiResult<Response> {
    transition(Transition::Start, s, u, c, p).await
}

/// running → paused.
#[utoipa::path(post, path = "/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: the campaign with `progress`"),
        (status = 409, body = ErrorBody, description = "Not running"),
    ))]
async fn pause_campaign(
    s: State<AppState>,
    u: CurrentUser,
    c: ClientInfo,
    p: ApiPath<Uuid>,
) -> ApiResult<Response> {
    transition(Transition::Pause, s, u, c, p).await
}

/// paused → running (needs what a phone call needs).
#[utoipa::path(post, path = "/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: the campaign with `progress`"),
        (status = 409, body = ErrorBody, description = "Not paused"),
        (status = 422, body = ErrorBody, description = "The LLM or Twilio is not set up"),
    ))]
async fn resume_campaign(
    s: State<AppState>,
    u: CurrentUser,
    c: ClientInfo,
    p: ApiPath<Uuid>,
) -> ApiResult<Response> {
    transition(Transition::Resume, s, u, c, p).await
}

/// running or paused → stopped.
#[utoipa::path(post, path = "/campaigns/{id}/stop", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: the campaign with `progress`"),
        (status = 409, body = ErrorBody, description = "Neither running nor paused"),
    ))]
async fn stop_campaign(
    s: State<AppState>,
    u: CurrentUser,
    c: ClientInfo,
    p: ApiPath<Uuid>,
) -> ApiResult<Response> {
    transition(Transition::Stop, s, u, c, p).await
}

async fn transition(
    t: Transition,
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    let user_id = current.user.id;
    let campaign = {
        let (user_id, id) = (user_id.clone(), id.clone());
        state.db.read(move |c| find(c, &user_id, &id)).await?
    };
    if let Some(refusal) = t.refused(&campaign) {
        return Err(refusal);
    }
    if t.dials() {
        // Refused as a phone call would be, before anything changes: a
        // running campaign that cannot place its calls helps nobody.
        let tier = &current.user.subscription_tier;
        if !tiers::tier(tier).is_some_and(|t| t.phone_calls) {
            return Err(tier_refusal(tier));
        }
        let config = startable(&state, &user_id, &campaign.agent_id).await?;
        plan_llm(&state, &user_id, &config).await?;
        phone_setup(&state, &user_id).await?;
    }
    let campaign_id = id.clone();
    let updated = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            // Read again under the write lock: another request may have
            // moved it since.
            let before = find(&tx, &user_id, &id)?;
            if let Some(refusal) = t.refused(&before) {
                return Err(refusal);
            }
            let to = t.to(before.contacts.open());
            store::set_state(&tx, &user_id, &id, to)?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: &format!("{}_campaign", t.verb()),
                    target_user_id: Some(&user_id),
                    resource_type: Some("campaign"),
                    resource_id: Some(&id),
                    details: json!({ "name": before.name, "from": before.state, "to": to }),
                    client: &client,
                },
            )?;
            let after = find(&tx, &user_id, &id)?;
            tx.commit()?;
            Ok::<_, ApiError>(after)
        })
        .await?;
    if !t.dials() {
        // The dialer claims contacts only while the campaign is running, so
        // nothing new starts; a call it claimed just before is waited for,
        // so that once this answers, no call of the campaign reaches Twilio.
        state
            .dialing
            .settle_campaign(&campaign_id, settle_limit(&state))
            .await;
    }
    Ok(ok(StatusCode::OK, with_progress(&updated)?))
}

/// Delete a campaign and its contacts.
#[utoipa::path(delete, path = "/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses(
        (status = 200, body = Envelope<serde_json::Value>, description = "`data`: `{id, name, deleted: true}`"),
        (status = 409, body = ErrorBody, description = "The campaign is running"),
    ))]
async fn delete_campaign(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    let user_id = current.user.id;
    let deleted = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let campaign = find(&tx, &user_id, &id)?;
            if campaign.state == "running" {
                return Err(ApiError::conflict(
                    "CAMPAIGN_RUNNING",
                    "A running campaign cannot be deleted: pause or stop it first",
                )
                .with("state", json!(campaign.state)));
            }
            store::delete_campaign(&tx, &user_id, &id)?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "delete_campaign",
                    target_user_id: Some(&user_id),
                    resource_type: Some("campaign"),
                    resource_id: Some(&id),
                    details: json!({ "name": campaign.name, "state": campaign.state, "contacts": campaign.contacts.total }),
                    client: &client,
                },
            )?;
            tx.commit()?;
            Ok::<_, ApiError>(campaign)
        })
        .await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "id": deleted.id, "name": deleted.name, "deleted": true }),
    ))
}
