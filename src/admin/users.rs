//! `/api/admin/users*`: the accounts, one account in full, and the changes
//! an admin makes to them (each audited in the same transaction).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use rusqlite::{types::Value as SqlValue, OptionalExtension, Transaction, TransactionBehavior};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::audit::{self, Entry};
use crate::agents::{agent_from_row, AGENT_COLUMNS};
use crate::auth::extract::{AdminUser, CurrentUser};
use crate::auth::store::{self, User, USER_COLUMNS};
use crate::calls::store::{run_from_row, RUN_COLUMNS};
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::http::filters::{given, SqlFilter};
use crate::http::pagination::Page;
use crate::http::AppState;
use crate::tiers;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(user_detail).delete(delete_user))
        .route("/users/{id}/limits", put(update_limits))
        .route("/users/{id}/toggle-status", post(toggle_status))
}

/// One of the roles of `users.role`.
fn check_role<'a>(field: &str, role: &'a str) -> Result<&'a str, ApiError> {
    if ["admin", "user", "enterprise"].contains(&role) {
        Ok(role)
    } else {
        Err(ApiError::field(field, "must be admin, user or enterprise"))
    }
}

#[derive(Deserialize)]
struct UserListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    search: Option<String>,
    role: Option<String>,
    tier: Option<String>,
    is_active: Option<bool>,
    sort_by: Option<String>,
    order: Option<String>,
}

async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let mut filters = SqlFilter::default();
    filters.search(given(&q.search), &["u.email", "u.organization_name"])?;
    if let Some(role) = given(&q.role) {
        filters.add(
            "u.role = ?",
            SqlValue::Text(check_role("role", role)?.into()),
        );
    }
    if let Some(tier) = given(&q.tier) {
        let tier = tiers::tier(tier)
            .ok_or_else(|| ApiError::field("tier", "must be free, pro or enterprise"))?;
        filters.add("u.subscription_tier = ?", tier.name.to_string());
    }
    if let Some(active) = q.is_active {
        filters.add("u.is_active = ?", i64::from(active));
    }
    // Sorting by name through a fixed list: never interpolate the client's text.
    let sort = match q.sort_by.as_deref().unwrap_or("created_at") {
        "created_at" => "u.created_at",
        "email" => "u.email",
        "last_login" => "u.last_login",
        "subscription_tier" => "u.subscription_tier",
        "role" => "u.role",
        _ => {
            return Err(ApiError::field(
                "sort_by",
                "must be created_at, email, last_login, subscription_tier or role",
            ))
        }
    };
    let order = match q.order.as_deref().unwrap_or("desc") {
        "asc" | "ASC" => "ASC",
        "desc" | "DESC" => "DESC",
        _ => return Err(ApiError::field("order", "must be asc or desc")),
    };
    let (rows, total) = state
        .db
        .read(move |c| {
            filters
                .page_of(
                    c,
                    "users u JOIN user_statistics s ON s.id = u.id
                 JOIN current_month_usage m ON m.user_id = u.id",
                    &format!(
                        "{USER_COLUMNS}, s.agent_count, s.total_runs, m.tokens_used_this_month"
                    ),
                    &format!("{sort} {order}, u.rowid {order}"),
                    page,
                    |r| {
                        let user = store::user_from_row(r, 0)?;
                        let mut v = serde_json::to_value(&user).unwrap_or_default();
                        v["agent_count"] = json!(r.get::<_, i64>(10)?);
                        v["total_runs"] = json!(r.get::<_, i64>(11)?);
                        v["tokens_this_month"] = json!(r.get::<_, f64>(12)?);
                        Ok(v)
                    },
                )
                .map_err(ApiError::from)
        })
        .await?;
    Ok(page.respond(rows, total))
}

#[derive(Deserialize)]
pub(crate) struct LimitsBody {
    max_agents: Option<i64>,
    monthly_token_quota: Option<i64>,
    subscription_tier: Option<String>,
    role: Option<String>,
}

async fn update_limits(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<LimitsBody>,
) -> ApiResult<Response> {
    let id = id.to_string();
    if let Some(m) = body.max_agents {
        if !(0..=1000).contains(&m) {
            return Err(ApiError::field("max_agents", "must be between 0 and 1000"));
        }
    }
    if let Some(q) = body.monthly_token_quota {
        if !(0..=10_000_000).contains(&q) {
            return Err(ApiError::field(
                "monthly_token_quota",
                "must be between 0 and 10000000",
            ));
        }
    }
    let tier = match body.subscription_tier.as_deref() {
        Some(t) => Some(tiers::tier(t).ok_or_else(|| {
            ApiError::field("subscription_tier", "must be free, pro or enterprise")
        })?),
        None => None,
    };
    if let Some(r) = body.role.as_deref() {
        check_role("role", r)?;
        if id == admin.user.id && r != "admin" {
            return Err(ApiError::bad_request(
                "SELF_DEMOTION",
                "You cannot remove your own admin role",
            ));
        }
    }
    if body.max_agents.is_none()
        && body.monthly_token_quota.is_none()
        && tier.is_none()
        && body.role.is_none()
    {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "Give at least one of max_agents, monthly_token_quota, subscription_tier, role",
        ));
    }
    let user = change_user(&state, &admin, client, id, move |tx, before, audit| {
        // A tier change brings that tier's limits (api.md), else an admin who
        // moves a user to pro leaves them at the free plan's two agents; a
        // limit given in the same request is the admin's choice and wins.
        let new_tier = tier.filter(|t| t.name != before.subscription_tier);
        let max_agents = body.max_agents.or(new_tier.map(|t| t.max_agents));
        let quota = body
            .monthly_token_quota
            .or(new_tier.map(|t| t.monthly_token_quota));
        tx.execute(
            "UPDATE users SET max_agents = coalesce(?2, max_agents),
                    monthly_token_quota = coalesce(?3, monthly_token_quota),
                    subscription_tier = coalesce(?4, subscription_tier),
                    role = coalesce(?5, role)
             WHERE id = ?1",
            rusqlite::params![before.id, max_agents, quota, tier.map(|t| t.name), body.role],
        )?;
        if let Some(t) = new_tier {
            tx.execute(
                "UPDATE subscriptions SET plan = ?2, monthly_price = ?3, status = 'active',
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE user_id = ?1",
                rusqlite::params![before.id, t.name, t.monthly_price],
            )?;
            audit(
                "update_user_subscription",
                json!({ "from": before.subscription_tier, "to": t.name }),
            )?;
        }
        audit(
            "update_user_limits",
            json!({
                "before": { "max_agents": before.max_agents, "monthly_token_quota": before.monthly_token_quota,
                            "subscription_tier": before.subscription_tier, "role": before.role },
                "changes": { "max_agents": max_agents, "monthly_token_quota": quota,
                             "subscription_tier": tier.map(|t| t.name), "role": body.role },
            }),
        )?;
        Ok(())
    })
    .await?;
    Ok(ok(StatusCode::OK, user))
}

/// Runs `change` on user `id` in one write transaction, with the audit rows
/// it records through `audit(action, details)` (the acting admin, the target,
/// the client), and returns the user as it is afterwards. A missing user is
/// a 404 and changes nothing.
async fn change_user<F>(
    state: &AppState,
    admin: &CurrentUser,
    client: ClientInfo,
    id: String,
    change: F,
) -> ApiResult<Option<User>>
where
    F: FnOnce(
            &Transaction<'_>,
            &User,
            &dyn Fn(&str, Value) -> rusqlite::Result<()>,
        ) -> ApiResult<()>
        + Send
        + 'static,
{
    let admin_id = admin.user.id.clone();
    state
        .db
        .write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(before) = store::user_by_id(&tx, &id)? else {
                return Err(ApiError::not_found("User"));
            };
            let audit = |action: &str, details: Value| {
                audit::record(
                    &tx,
                    &Entry {
                        admin_user_id: &admin_id,
                        action,
                        target_user_id: Some(&id),
                        resource_type: Some("user"),
                        resource_id: Some(&id),
                        details,
                        client: &client,
                    },
                )
            };
            change(&tx, &before, &audit)?;
            let after = store::user_by_id(&tx, &id)?;
            tx.commit()?;
            Ok(after)
        })
        .await
}

#[derive(Deserialize)]
pub(crate) struct ToggleBody {
    is_active: bool,
}

async fn toggle_status(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ToggleBody>,
) -> ApiResult<Response> {
    let id = id.to_string();
    if id == admin.user.id {
        return Err(ApiError::bad_request(
            "SELF_ACTION",
            "You cannot change your own account's status",
        ));
    }
    let target = id.clone();
    let user = change_user(&state, &admin, client, id, move |tx, before, audit| {
        tx.execute(
            "UPDATE users SET is_active = ?2 WHERE id = ?1",
            rusqlite::params![before.id, body.is_active],
        )?;
        let ended = if body.is_active {
            0
        } else {
            store::delete_sessions_of(tx, &before.id)?
        };
        audit(
            "toggle_user_status",
            json!({ "from": before.is_active, "to": body.is_active, "sessions_ended": ended }),
        )?;
        Ok(())
    })
    .await?;
    if !body.is_active {
        // The dialer claims no contact of an inactive tenant; a call it
        // claimed just before is waited for, so that once this answers, no
        // call of theirs reaches Twilio.
        state
            .dialing
            .settle_user(&target, crate::campaigns::dialer::settle_limit(&state))
            .await;
    }
    Ok(ok(StatusCode::OK, user))
}

/// Deletes an account and, through the foreign keys, everything it owns
/// (agents, runs, keys, sessions). Not yourself, not another admin: an admin
/// is demoted first, which leaves a trail in the audit log.
async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    if id == admin.user.id {
        return Err(ApiError::bad_request(
            "SELF_ACTION",
            "You cannot delete your own account",
        ));
    }
    change_user(&state, &admin, client, id, move |tx, user, audit| {
        if user.role == "admin" {
            return Err(ApiError::forbidden(
                "CANNOT_DELETE_ADMIN",
                "Admins cannot be deleted; change the role first",
            ));
        }
        // The audit row names the user before the row goes: the foreign
        // key then sets target_user_id to NULL, the details keep who it was.
        audit(
            "delete_user",
            json!({ "email": user.email, "subscription_tier": user.subscription_tier }),
        )?;
        tx.execute("DELETE FROM users WHERE id = ?1", [&user.id])?;
        Ok(())
    })
    .await?;
    Ok(ok(StatusCode::OK, json!({ "message": "User deleted" })))
}

/// How many of a user's runs the detail page shows, newest first.
/// Rows written in the same millisecond keep the order they were written
/// in (by rowid), so "newest first" holds for quick successions too.
const RECENT_RUNS: i64 = 20;

/// One account in full: the user, their statistics, agents, recent runs, API
/// key metadata (never key material: only columns beside the sealed secret
/// are read), subscription and this month's usage.
async fn user_detail(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let id = id.to_string();
    let data = state
        .db
        .read(move |c| {
            let Some(user) = store::user_by_id(c, &id)? else {
                return Err(ApiError::not_found("User"));
            };
            let statistics = c.query_row(
                "SELECT agent_count, total_runs, total_duration_seconds, total_tokens_used,
                        current_plan, subscription_status
                 FROM user_statistics WHERE id = ?1",
                [&id],
                |r| {
                    Ok(json!({
                        "agent_count": r.get::<_, i64>(0)?,
                        "total_runs": r.get::<_, i64>(1)?,
                        "total_duration_seconds": r.get::<_, i64>(2)?,
                        "total_tokens_used": r.get::<_, f64>(3)?,
                        "current_plan": r.get::<_, Option<String>>(4)?,
                        "subscription_status": r.get::<_, Option<String>>(5)?,
                    }))
                },
            )?;
            let agents = c
                .prepare(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents a WHERE a.user_id = ?1
                     ORDER BY a.created_at DESC, a.rowid DESC"
                ))?
                .query_map([&id], |r| agent_from_row(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            let recent_runs = c
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS}, a.name FROM agent_runs r JOIN agents a ON a.id = r.agent_id
                     WHERE a.user_id = ?1 ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?2"
                ))?
                .query_map(rusqlite::params![id, RECENT_RUNS], |r| {
                    let mut run = serde_json::to_value(run_from_row(r, 0)?).unwrap_or_default();
                    run["agent_name"] = json!(r.get::<_, String>(14)?);
                    Ok(run)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            // The sealed columns (api_key_encrypted, iv, auth_tag) are never
            // selected, so nothing of a key can reach the answer.
            let api_keys = c
                .prepare(
                    "SELECT provider, is_active, created_at, last_used_at FROM user_api_keys
                     WHERE user_id = ?1 ORDER BY provider",
                )?
                .query_map([&id], |r| {
                    Ok(json!({
                        "provider": r.get::<_, String>(0)?,
                        "is_active": r.get::<_, bool>(1)?,
                        "created_at": r.get::<_, String>(2)?,
                        "last_used_at": r.get::<_, Option<String>>(3)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let subscription = c
                .query_row(
                    "SELECT id, plan, status, started_at, expires_at, monthly_price, created_at, updated_at
                     FROM subscriptions WHERE user_id = ?1",
                    [&id],
                    |r| {
                        Ok(json!({
                            "id": r.get::<_, String>(0)?,
                            "plan": r.get::<_, String>(1)?,
                            "status": r.get::<_, String>(2)?,
                            "started_at": r.get::<_, Option<String>>(3)?,
                            "expires_at": r.get::<_, Option<String>>(4)?,
                            "monthly_price": r.get::<_, Option<f64>>(5)?,
                            "created_at": r.get::<_, Option<String>>(6)?,
                            "updated_at": r.get::<_, Option<String>>(7)?,
                        }))
                    },
                )
                .optional()?;
            let usage = c.query_row(
                "SELECT monthly_token_quota, tokens_used_this_month, tokens_remaining,
                        calls_this_month, duration_this_month, costs_this_month
                 FROM current_month_usage WHERE user_id = ?1",
                [&id],
                |r| {
                    Ok(json!({
                        "monthly_token_quota": r.get::<_, i64>(0)?,
                        "tokens_used_this_month": r.get::<_, f64>(1)?,
                        "tokens_remaining": r.get::<_, f64>(2)?,
                        "calls_this_month": r.get::<_, i64>(3)?,
                        "duration_this_month": r.get::<_, i64>(4)?,
                        "costs_this_month": r.get::<_, f64>(5)?,
                    }))
                },
            )?;
            Ok::<_, ApiError>(json!({
                "user": user,
                "statistics": statistics,
                "agents": agents,
                "recent_runs": recent_runs,
                "api_keys": api_keys,
                "subscription": subscription,
                "usage": usage,
            }))
        })
        .await?;
    Ok(ok(StatusCode::OK, data))
}
