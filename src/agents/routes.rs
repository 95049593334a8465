//! `/api/agents`: a tenant's own agents and their runs. Another tenant's
//! agent id is a 404 on every route, like a missing one.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    agent_from_row, owned_agent, upgrade_suggestion, Agent, AgentInput, LimitsInfo, VoiceInput,
};
use super::{is_limit_error, type_filter, AGENT_COLUMNS};
use crate::admin::audit::{self, Entry};
use crate::auth::extract::CurrentUser;
use crate::calls::store::{run_from_row, Run, RUN_COLUMNS};
use crate::db::cache::ReadCache;
use crate::db::{Db, DbError};
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::http::filters::{check_disposition, given, unless_all, SqlFilter};
use crate::http::openapi::{Envelope, ErrorBody, Paged, Pagination};
use crate::http::pagination::{json_response, Page};
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(list_runs))
}

/// Fields are optional here so that every missing or bad one is reported at
/// once, not only the first serde meets.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentBody {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    use_case: Option<String>,
    description: Option<String>,
    first_message: Option<String>,
    voice: Option<String>,
    language: Option<String>,
    max_call_seconds: Option<i64>,
    record_calls: Option<bool>,
}

impl AgentBody {
    fn check(&self, require_all: bool) -> Result<AgentInput, ApiError> {
        let mut errors = Vec::new();
        let voice = VoiceInput::check(
            self.first_message.as_deref(),
            self.voice.as_deref(),
            self.language.as_deref(),
            self.max_call_seconds,
            self.record_calls,
            &mut errors,
        );
        AgentInput::check_with(
            self.name.as_deref(),
            self.kind.as_deref(),
            self.use_case.as_deref(),
            self.description.as_deref(),
            voice,
            errors,
            require_all,
        )
        .map_err(ApiError::fields)
    }
}

/// The 403 of a refused creation: the original's message with the counts
/// read in the refusing transaction, and the plan that would lift the limit.
fn limit_reached(limits: &LimitsInfo, tier: &str) -> ApiError {
    ApiError::forbidden(
        "AGENT_LIMIT_REACHED",
        format!(
            "Agent limit reached. Current: {}, Max: {}. Please upgrade your plan to create more agents.",
            limits.current, limits.max
        ),
    )
    .with("limits_info", limits.json())
    .with("upgrade", upgrade_suggestion(tier, limits.max))
}

/// An agent just created, with the tenant's agent count and limit.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedAgent {
    #[serde(flatten)]
    agent: Agent,
    /// `{current, max, remaining}`.
    #[schema(value_type = Object)]
    limits_info: serde_json::Value,
}

/// Create an agent (within the plan's limit): `name`, `type`, `use_case`
/// and `description` are required.
#[utoipa::path(post, path = "/", tag = "agents",
    request_body = AgentBody,
    responses(
        (status = 201, body = Envelope<CreatedAgent>),
        (status = 403, body = ErrorBody, description = "The plan's agent limit is reached (`AGENT_LIMIT_REACHED`, with `limits_info` and `upgrade`)"),
    ))]
async fn create_agent(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<AgentBody>,
) -> ApiResult<Response> {
    let input = body.check(true)?;
    let user_id = current.user.id;
    let tier = current.user.subscription_tier;
    let (agent, limits) = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            // The enforce_agent_limit trigger decides; SQLite's single writer
            // means nobody can insert between its count and this insert.
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO agents (user_id, name, type, use_case, description,
                                         first_message, voice, language, max_call_seconds,
                                         record_calls)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, coalesce(?9, 600), coalesce(?10, 0))
                     RETURNING {}",
                    AGENT_COLUMNS.replace("a.", "")
                ))?
                .query_row(
                params![
                    user_id,
                    input.name,
                    input.kind,
                    input.use_case,
                    input.description,
                    input.voice.first_message.clone().flatten(),
                    input.voice.voice.clone().flatten(),
                    input.voice.language.clone().flatten(),
                    input.voice.max_call_seconds,
                    input.voice.record_calls,
                ],
                |r| agent_from_row(r, 0),
            );
            let agent = match inserted {
                Ok(agent) => agent,
                Err(e) if is_limit_error(&e) => {
                    return Err(limit_reached(&LimitsInfo::read(&tx, &user_id)?, &tier));
                }
                Err(e) => return Err(e.into()),
            };
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "create_agent",
                    target_user_id: Some(&user_id),
                    resource_type: Some("agent"),
                    resource_id: Some(&agent.id),
                    details: json!({ "name": agent.name, "type": agent.kind, "use_case": agent.use_case }),
                    client: &client,
                },
            )?;
            let limits = LimitsInfo::read(&tx, &user_id)?;
            tx.commit()?;
            Ok::<_, ApiError>((agent, limits))
        })
        .await?;
    Ok(ok(
        StatusCode::CREATED,
        CreatedAgent {
            agent,
            limits_info: limits.json(),
        },
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AgentListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    search: Option<String>,
}

/// A page of a tenant's agent list, as asked for.
#[derive(PartialEq, Eq, Hash)]
pub struct AgentListKey {
    user_id: String,
    kind: Option<String>,
    search: Option<String>,
    page: u32,
    limit: u32,
}

/// Agent list pages recently served, as sent: the UI and API clients ask
/// for the same page again and again, and an agent changes far less often
/// (any write to `agents`, the run counters' triggers included, retires
/// every page).
pub type AgentListCache = ReadCache<AgentListKey, Bytes>;

/// Pages are at most a few tens of kilobytes; larger ones are not kept.
const CACHED_AGENT_LISTS: usize = 512;
const CACHED_AGENT_LIST_BYTES: usize = 64 * 1024;

pub fn agent_list_cache(db: &Db) -> AgentListCache {
    ReadCache::new(db, "agent_lists", &["agents"], CACHED_AGENT_LISTS)
}

/// The caller's agents, newest first.
#[utoipa::path(get, path = "/", tag = "agents", params(AgentListQuery),
    responses((status = 200, body = Paged<Agent>)))]
async fn list_agents(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<AgentListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let kind = type_filter(unless_all(&q.kind))?;
    let key = AgentListKey {
        user_id: current.user.id,
        kind,
        search: given(&q.search).map(str::to_string),
        page: page.page,
        limit: page.limit,
    };
    if let Some(body) = state.agent_lists.get(&key) {
        return Ok(json_response(body));
    }
    let stamp = state.agent_lists.stamp();
    let mut filter = SqlFilter::default();
    filter.add("a.user_id = ?", key.user_id.clone());
    if let Some(kind) = &key.kind {
        filter.add("a.type = ?", kind.clone());
    }
    filter.search(key.search.as_deref(), &["a.name", "a.use_case"])?;
    let (agents, total) = state
        .db
        .read(move |c| {
            filter
                .page_of(
                    c,
                    "agents a",
                    AGENT_COLUMNS,
                    "a.created_at DESC, a.rowid DESC",
                    page,
                    |r| agent_from_row(r, 0),
                )
                .map_err(ApiError::from)
        })
        .await?;
    let body = page.body(agents, total)?;
    if body.len() <= CACHED_AGENT_LIST_BYTES {
        state.agent_lists.put(key, stamp, body.clone(), None);
    }
    Ok(json_response(body))
}

pub async fn find_agent(state: &AppState, user_id: String, id: Uuid) -> ApiResult<Agent> {
    let id = id.to_string();
    state
        .db
        .read(move |c| owned_agent(c, &user_id, &id).map_err(DbError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("Agent"))
}

/// One agent.
#[utoipa::path(get, path = "/{id}", tag = "agents", params(("id" = Uuid, Path, description = "The agent")),
    responses((status = 200, body = Envelope<Agent>)))]
async fn get_agent(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let agent = find_agent(&state, current.user.id, id).await?;
    Ok(ok(StatusCode::OK, agent))
}

/// Change an agent: the fields sent, the others kept.
#[utoipa::path(put, path = "/{id}", tag = "agents", params(("id" = Uuid, Path, description = "The agent")),
    request_body = AgentBody,
    responses((status = 200, body = Envelope<Agent>)))]
async fn update_agent(
    State(state): State<AppState>,
    current: CurrentUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AgentBody>,
) -> ApiResult<Response> {
    let input = body.check(false)?;
    let id = id.to_string();
    let user_id = current.user.id;
    let agent = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let Some(before) = owned_agent(&tx, &user_id, &id)? else {
                return Err(ApiError::not_found("Agent"));
            };
            tx.execute(
                "UPDATE agents SET name = coalesce(?2, name), type = coalesce(?3, type),
                        use_case = coalesce(?4, use_case), description = coalesce(?5, description),
                        first_message = CASE WHEN ?6 THEN ?7 ELSE first_message END,
                        voice = CASE WHEN ?8 THEN ?9 ELSE voice END,
                        language = CASE WHEN ?10 THEN ?11 ELSE language END,
                        max_call_seconds = coalesce(?12, max_call_seconds),
                        record_calls = coalesce(?13, record_calls)
                 WHERE id = ?1",
                params![
                    id,
                    input.name,
                    input.kind,
                    input.use_case,
                    input.description,
                    input.voice.first_message.is_some(),
                    input.voice.first_message.clone().flatten(),
                    input.voice.voice.is_some(),
                    input.voice.voice.clone().flatten(),
                    input.voice.language.is_some(),
                    input.voice.language.clone().flatten(),
                    input.voice.max_call_seconds,
                    input.voice.record_calls,
                ],
            )?;
            let Some(after) = owned_agent(&tx, &user_id, &id)? else {
                return Err(ApiError::not_found("Agent"));
            };
            // Names of what changed; the prompt itself may be long, so it
            // is only flagged.
            let mut changed = Vec::new();
            if before.name != after.name {
                changed.push("name");
            }
            if before.kind != after.kind {
                changed.push("type");
            }
            if before.use_case != after.use_case {
                changed.push("use_case");
            }
            if before.description != after.description {
                changed.push("description");
            }
            if before.first_message != after.first_message {
                changed.push("first_message");
            }
            if before.voice != after.voice {
                changed.push("voice");
            }
            if before.language != after.language {
                changed.push("language");
            }
            if before.max_call_seconds != after.max_call_seconds {
                changed.push("max_call_seconds");
            }
            if before.record_calls != after.record_calls {
                changed.push("record_calls");
            }
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "update_agent",
                    target_user_id: Some(&user_id),
                    resource_type: Some("agent"),
                    resource_id: Some(&id),
                    details: json!({ "changed": changed, "name": after.name }),
                    client: &client,
                },
            )?;
            tx.commit()?;
            Ok::<_, ApiError>(after)
        })
        .await?;
    Ok(ok(StatusCode::OK, agent))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeletedAgent {
    id: String,
    name: String,
    /// Always `true`.
    deleted: bool,
}

/// Delete an agent and its runs.
#[utoipa::path(delete, path = "/{id}", tag = "agents", params(("id" = Uuid, Path, description = "The agent")),
    responses(
        (status = 200, body = Envelope<DeletedAgent>),
        (status = 409, body = ErrorBody, description = "A call of the agent is in progress"),
    ))]
async fn delete_agent(
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
            let Some(agent) = owned_agent(&tx, &user_id, &id)? else {
                return Err(ApiError::not_found("Agent"));
            };
            let live: i64 = tx.query_row(
                "SELECT count(*) FROM agent_runs WHERE agent_id = ?1 AND status = 'in_progress'",
                [&id],
                |r| r.get(0),
            )?;
            if live > 0 {
                return Err(ApiError::conflict(
                    "AGENT_BUSY",
                    "This agent has a call in progress; end it before deleting the agent",
                ));
            }
            // Its runs go with it (ON DELETE CASCADE); the usage they
            // counted stays in user_usage_tracking.
            tx.execute("DELETE FROM agents WHERE id = ?1", [&id])?;
            audit::record(
                &tx,
                &Entry {
                    admin_user_id: &user_id,
                    action: "delete_agent",
                    target_user_id: Some(&user_id),
                    resource_type: Some("agent"),
                    resource_id: Some(&id),
                    details: json!({ "name": agent.name, "total_runs": agent.total_runs }),
                    client: &client,
                },
            )?;
            tx.commit()?;
            Ok::<_, ApiError>(agent)
        })
        .await?;
    Ok(ok(
        StatusCode::OK,
        DeletedAgent {
            id: deleted.id,
            name: deleted.name,
            deleted: true,
        },
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    status: Option<String>,
    disposition: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    date_from: Option<String>,
    date_to: Option<String>,
}

/// A page of an agent's runs, with a summary of all its runs that match.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunsPage {
    /// Always `true`.
    success: bool,
    data: Vec<Run>,
    pagination: Pagination,
    /// `{total_runs, by_status {in_progress, completed, failed}, total_duration_seconds, total_tokens}`.
    #[schema(value_type = Object)]
    summary: serde_json::Value,
}

/// An agent's runs, newest first, with a summary.
#[utoipa::path(get, path = "/{id}/runs", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent"), RunListQuery),
    responses((status = 200, body = RunsPage)))]
async fn list_runs(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RunListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let agent = find_agent(&state, current.user.id, id).await?;
    let mut filter = SqlFilter::default();
    filter.add("r.agent_id = ?", agent.id);
    filter.one_of(
        "status",
        &q.status,
        &["in_progress", "completed", "failed"],
        "r.status",
    )?;
    if let Some(d) = unless_all(&q.disposition) {
        filter.add("r.disposition = ?", check_disposition(d)?);
    }
    if let Some(kind) = unless_all(&q.kind) {
        let kind = kind.to_ascii_uppercase();
        if kind != "WEB_CALL" && kind != "PHONE_CALL" {
            return Err(ApiError::field("type", "must be WEB_CALL or PHONE_CALL"));
        }
        filter.add("r.type = ?", kind);
    }
    filter.dates("r.created_at", &q.date_from, &q.date_to)?;
    let where_sql = filter.where_sql();
    let (runs, summary) = state
        .db
        .read(move |c| {
            let summary = c.query_row(
                &format!(
                    "SELECT count(*),
                            coalesce(sum(r.status = 'in_progress'), 0),
                            coalesce(sum(r.status = 'completed'), 0),
                            coalesce(sum(r.status = 'failed'), 0),
                            coalesce(sum(r.duration_seconds), 0),
                            round(coalesce(sum(r.groq_tokens), 0), 2)
                     FROM agent_runs r WHERE {where_sql}"
                ),
                params_from_iter(filter.args.iter()),
                |r| {
                    Ok(json!({
                        "total_runs": r.get::<_, i64>(0)?,
                        "by_status": {
                            "in_progress": r.get::<_, i64>(1)?,
                            "completed": r.get::<_, i64>(2)?,
                            "failed": r.get::<_, i64>(3)?,
                        },
                        "total_duration_seconds": r.get::<_, i64>(4)?,
                        "total_tokens": r.get::<_, f64>(5)?,
                    }))
                },
            )?;
            let (args, paging) = filter.paged(page.limit(), page.offset());
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM agent_runs r WHERE {where_sql}
                 ORDER BY r.created_at DESC, r.rowid DESC {paging}"
            );
            let runs = c
                .prepare(&sql)?
                .query_map(params_from_iter(args.iter()), |r| run_from_row(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, ApiError>((runs, summary))
        })
        .await?;
    let total = summary["total_runs"].as_i64().unwrap_or(0);
    Ok((
        StatusCode::OK,
        Json(RunsPage {
            success: true,
            data: runs,
            pagination: page.pagination(total),
            summary,
        }),
    )
        .into_response())
}
