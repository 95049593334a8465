//! `/api/agents`: a tenant's own agents and their runs. Another tenant's
//! agent id is a 404 on every route, like a missing one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{params, params_from_iter, types::Value as SqlValue, TransactionBehavior};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{agent_from_row, owned_agent, upgrade_suggestion, Agent, AgentInput, LimitsInfo};
use super::{is_limit_error, AGENT_COLUMNS};
use crate::admin::audit::{self, Entry};
use crate::auth::extract::CurrentUser;
use crate::calls::store::{run_from_row, RUN_COLUMNS};
use crate::db::DbError;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::http::pagination::Page;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_agents).post(create_agent))
        .route(
            "/{id}",
            get(get_agent).put(update_agent).delete(delete_agent),
        )
        .route("/{id}/runs", get(list_runs))
}

/// Fields are optional here so that every missing or bad one is reported at
/// once, not only the first serde meets.
#[derive(Deserialize)]
struct AgentBody {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    use_case: Option<String>,
    description: Option<String>,
}

impl AgentBody {
    fn check(&self, require_all: bool) -> Result<AgentInput, ApiError> {
        AgentInput::check(
            self.name.as_deref(),
            self.kind.as_deref(),
            self.use_case.as_deref(),
            self.description.as_deref(),
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
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The enforce_agent_limit trigger decides; SQLite's single writer
            // means nobody can insert between its count and this insert.
            let inserted = tx.query_row(
                &format!(
                    "INSERT INTO agents (user_id, name, type, use_case, description)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     RETURNING {}",
                    AGENT_COLUMNS.replace("a.", "")
                ),
                params![
                    user_id,
                    input.name,
                    input.kind,
                    input.use_case,
                    input.description
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
    let mut data = serde_json::to_value(agent).map_err(ApiError::internal)?;
    data["limits_info"] = limits.json();
    Ok(ok(StatusCode::CREATED, data))
}

#[derive(Deserialize)]
struct AgentListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    search: Option<String>,
}

/// `%text%` for `LIKE … ESCAPE '\'`, with the client's wildcards taken literally.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

async fn list_agents(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(q): ApiQuery<AgentListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let mut filters = vec!["a.user_id = ?1".to_string()];
    let mut args = vec![SqlValue::Text(current.user.id)];
    if let Some(kind) = q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        let kind = kind.to_ascii_uppercase();
        if kind != "INBOUND" && kind != "OUTBOUND" {
            return Err(ApiError::field("type", "must be INBOUND or OUTBOUND"));
        }
        args.push(SqlValue::Text(kind));
        filters.push(format!("a.type = ?{}", args.len()));
    }
    if let Some(search) = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        if search.chars().count() > 255 {
            return Err(ApiError::field("search", "must be at most 255 characters"));
        }
        args.push(SqlValue::Text(like_pattern(search)));
        filters.push(format!(
            "(a.name LIKE ?{n} ESCAPE '\\' OR a.use_case LIKE ?{n} ESCAPE '\\')",
            n = args.len()
        ));
    }
    let where_sql = filters.join(" AND ");
    let (agents, total) = state
        .db
        .read(move |c| {
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM agents a WHERE {where_sql}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            args.push(SqlValue::Integer(page.limit()));
            args.push(SqlValue::Integer(page.offset()));
            let sql = format!(
                "SELECT {AGENT_COLUMNS} FROM agents a WHERE {where_sql}
                 ORDER BY a.created_at DESC, a.id LIMIT ?{} OFFSET ?{}",
                args.len() - 1,
                args.len()
            );
            let agents = c
                .prepare(&sql)?
                .query_map(params_from_iter(args.iter()), |r| agent_from_row(r, 0))?
                .collect::<Result<Vec<Agent>, _>>()?;
            Ok::<_, ApiError>((agents, total))
        })
        .await?;
    Ok(page.respond(agents, total))
}

async fn find_agent(state: &AppState, user_id: String, id: Uuid) -> ApiResult<Agent> {
    let id = id.to_string();
    state
        .db
        .read(move |c| owned_agent(c, &user_id, &id).map_err(DbError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("Agent"))
}

async fn get_agent(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let agent = find_agent(&state, current.user.id, id).await?;
    Ok(ok(StatusCode::OK, agent))
}

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
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(before) = owned_agent(&tx, &user_id, &id)? else {
                return Err(ApiError::not_found("Agent"));
            };
            tx.execute(
                "UPDATE agents SET name = coalesce(?2, name), type = coalesce(?3, type),
                        use_case = coalesce(?4, use_case), description = coalesce(?5, description)
                 WHERE id = ?1",
                params![
                    id,
                    input.name,
                    input.kind,
                    input.use_case,
                    input.description
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
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        json!({ "id": deleted.id, "name": deleted.name, "deleted": true }),
    ))
}

#[derive(Deserialize)]
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

/// A `YYYY-MM-DD` calendar date (2025-02-30 is not one).
fn check_date(field: &str, raw: &str) -> Result<String, ApiError> {
    let bad = || ApiError::field(field, "must be a date as YYYY-MM-DD");
    let b = raw.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| raw[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(raw.to_string())
}

/// Optional query text, trimmed, with empty meaning absent.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn list_runs(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RunListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let agent = find_agent(&state, current.user.id, id).await?;
    let mut filters = vec!["r.agent_id = ?1".to_string()];
    let mut args = vec![SqlValue::Text(agent.id)];
    if let Some(status) = given(&q.status) {
        if !["in_progress", "completed", "failed"].contains(&status) {
            return Err(ApiError::field(
                "status",
                "must be in_progress, completed or failed",
            ));
        }
        args.push(SqlValue::Text(status.into()));
        filters.push(format!("r.status = ?{}", args.len()));
    }
    if let Some(d) = given(&q.disposition) {
        // Dispositions are an open list (telephony adds its own), so only
        // their shape is checked.
        if d.len() > 100 || !d.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(ApiError::field(
                "disposition",
                "must be a disposition name such as user_hangup",
            ));
        }
        args.push(SqlValue::Text(d.into()));
        filters.push(format!("r.disposition = ?{}", args.len()));
    }
    if let Some(kind) = given(&q.kind) {
        let kind = kind.to_ascii_uppercase();
        if kind != "WEB_CALL" && kind != "PHONE_CALL" {
            return Err(ApiError::field("type", "must be WEB_CALL or PHONE_CALL"));
        }
        args.push(SqlValue::Text(kind));
        filters.push(format!("r.type = ?{}", args.len()));
    }
    let from = given(&q.date_from)
        .map(|d| check_date("date_from", d))
        .transpose()?;
    let to = given(&q.date_to)
        .map(|d| check_date("date_to", d))
        .transpose()?;
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return Err(ApiError::field("date_to", "must not be before date_from"));
        }
    }
    if let Some(f) = from {
        args.push(SqlValue::Text(f));
        filters.push(format!("r.created_at >= ?{}", args.len()));
    }
    if let Some(t) = to {
        // Inclusive: every run of that UTC day.
        args.push(SqlValue::Text(t));
        filters.push(format!("r.created_at < date(?{}, '+1 day')", args.len()));
    }
    let where_sql = filters.join(" AND ");
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
                params_from_iter(args.iter()),
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
            args.push(SqlValue::Integer(page.limit()));
            args.push(SqlValue::Integer(page.offset()));
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM agent_runs r WHERE {where_sql}
                 ORDER BY r.created_at DESC, r.id LIMIT ?{} OFFSET ?{}",
                args.len() - 1,
                args.len()
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
        Json(json!({
            "success": true,
            "data": runs,
            "pagination": page.pagination(total),
            "summary": summary,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_real_calendar_days() {
        assert!(check_date("d", "2024-02-29").is_ok());
        assert!(check_date("d", "2025-12-31").is_ok());
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-04-31",
            "2025-1-01",
            "25-01-01xx",
            "2025/01/01",
            "+025-01-01",
        ] {
            assert!(check_date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_are_taken_literally() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
