//! `/api/admin/analytics/*` and `/api/admin/subscription-tiers`: platform
//! figures, read from the views where the schema has one. Money is summed in
//! whole cents so that totals never drift.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::AdminUser;
use crate::db::migrate;
use crate::http::error::{ok, ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::openapi::Envelope;
use crate::http::AppState;
use crate::tiers::TIERS;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subscription_tiers))
        .routes(routes!(overview))
        .routes(routes!(user_growth))
        .routes(routes!(usage))
        .routes(routes!(revenue))
        .routes(routes!(system_health))
        .routes(routes!(system_health_alias))
        .routes(routes!(dashboard))
}

const ROLES: [&str; 3] = ["admin", "user", "enterprise"];

/// `{key: count}` for every one of `keys`, zero when `sql` (rows of key and
/// count) has no row for it.
fn counts(c: &Connection, sql: &str, keys: &[&str]) -> rusqlite::Result<Map<String, Value>> {
    let mut map: Map<String, Value> = keys.iter().map(|k| (k.to_string(), json!(0))).collect();
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (key, n) = row?;
        map.insert(key, json!(n));
    }
    Ok(map)
}

fn tier_names() -> Vec<&'static str> {
    TIERS.iter().map(|t| t.name).collect()
}

/// Dollars from whole cents, for the JSON answer.
fn dollars(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Active subscriptions per plan: (plan, how many, monthly cents).
fn active_by_plan(c: &Connection) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    c.prepare(
        "SELECT plan, count(*), coalesce(sum(CAST(round(coalesce(monthly_price, 0) * 100) AS INTEGER)), 0)
         FROM subscriptions WHERE status = 'active' GROUP BY plan ORDER BY plan",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
    .collect()
}

fn mrr_cents(c: &Connection) -> rusqlite::Result<i64> {
    Ok(active_by_plan(c)?.iter().map(|(_, _, cents)| cents).sum())
}

/// The tier table of `tiers.rs` and how many users are on each tier.
/// The tiers, their limits and how many users are on each.
#[utoipa::path(get, path = "/subscription-tiers", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn subscription_tiers(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> ApiResult<Response> {
    let on_tier = state
        .db
        .read(|c| {
            counts(
                c,
                "SELECT subscription_tier, count(*) FROM users GROUP BY subscription_tier",
                &tier_names(),
            )
            .map_err(ApiError::from)
        })
        .await?;
    let data: Vec<Value> = TIERS
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["user_count"] = on_tier.get(t.name).cloned().unwrap_or(json!(0));
            v
        })
        .collect();
    Ok(ok(StatusCode::OK, data))
}

/// Users, agents, runs, this month's usage and MRR.
#[utoipa::path(get, path = "/analytics/overview", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn overview(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let data = state.db.read(|c| overview_of(c)).await?;
    Ok(ok(StatusCode::OK, data))
}

/// The platform's figures: users by status, tier and role, agents, runs,
/// this month's usage and MRR.
fn overview_of(c: &Connection) -> ApiResult<Value> {
    let users = c.query_row(
        "SELECT count(*), coalesce(sum(is_active), 0) FROM users",
        [],
        |r| {
            Ok(
                json!({ "total": r.get::<_, i64>(0)?, "active": r.get::<_, i64>(1)?,
                               "inactive": r.get::<_, i64>(0)? - r.get::<_, i64>(1)? }),
            )
        },
    )?;
    let by_tier = counts(
        c,
        "SELECT subscription_tier, count(*) FROM users GROUP BY subscription_tier",
        &tier_names(),
    )?;
    let by_role = counts(c, "SELECT role, count(*) FROM users GROUP BY role", &ROLES)?;
    let agents: i64 = c.query_row("SELECT count(*) FROM agents", [], |r| r.get(0))?;
    // The runs by status from the per-user totals kept by triggers (version
    // 12): one row per user rather than a pass over every run.
    let runs = c.query_row(
        "SELECT coalesce(sum(total_runs + runs_in_progress + runs_failed), 0),
                        coalesce(sum(total_runs), 0), coalesce(sum(runs_in_progress), 0),
                        coalesce(sum(runs_failed), 0)
                 FROM user_totals",
        [],
        |r| {
            Ok(json!({
                "total": r.get::<_, i64>(0)?,
                "completed": r.get::<_, i64>(1)?,
                "in_progress": r.get::<_, i64>(2)?,
                "failed": r.get::<_, i64>(3)?,
            }))
        },
    )?;
    // What `current_month_usage` sums, from the totals alone: the view
    // joins every user to their row (9.6 ms at 10,000 users), where the
    // rows of this month are all there is to add (3.6 ms). Each user's
    // tokens are rounded as the view rounds them.
    let this_month = c.query_row(
        "SELECT round(coalesce(sum(round(month_tokens, 2)), 0), 2),
                        coalesce(sum(month_calls), 0), coalesce(sum(month_duration_seconds), 0)
                 FROM user_totals WHERE month = strftime('%Y-%m', 'now')",
        [],
        |r| {
            Ok(json!({
                "tokens": r.get::<_, f64>(0)?,
                "calls": r.get::<_, i64>(1)?,
                "duration_seconds": r.get::<_, i64>(2)?,
            }))
        },
    )?;
    let mut users = users;
    users["by_tier"] = Value::Object(by_tier);
    users["by_role"] = Value::Object(by_role);
    Ok::<_, ApiError>(json!({
        "users": users,
        "agents": { "total": agents },
        "runs": runs,
        "this_month": this_month,
        "mrr": dollars(mrr_cents(c)?),
    }))
}

/// The last `days` UTC days, oldest first, as a `days(day)` table to join on.
fn days_cte(days: i64) -> String {
    format!(
        "WITH RECURSIVE days(day) AS (
           SELECT date('now', '-{} days')
           UNION ALL SELECT date(day, '+1 day') FROM days WHERE day < date('now'))",
        days - 1
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GrowthQuery {
    /// `7d`, `30d` (default) or `90d`.
    period: Option<String>,
}

/// New users per UTC day over the period (days without one count 0), and
/// the running total of accounts at the end of each day.
#[utoipa::path(get, path = "/analytics/user-growth", tag = "admin", params(GrowthQuery),
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn user_growth(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<GrowthQuery>,
) -> ApiResult<Response> {
    let period = q.period.unwrap_or_else(|| "30d".to_string());
    let days: i64 = match period.as_str() {
        "7d" => 7,
        "30d" => 30,
        "90d" => 90,
        "1y" => 365,
        _ => return Err(ApiError::field("period", "must be 7d, 30d, 90d or 1y")),
    };
    let data = state
        .db
        .read(move |c| {
            let before: i64 = c.query_row(
                "SELECT count(*) FROM users WHERE created_at < date('now', ?1)",
                [format!("-{} days", days - 1)],
                |r| r.get(0),
            )?;
            let mut total = before;
            let series = c
                .prepare(&format!(
                    "{} SELECT day, (SELECT count(*) FROM users
                                     WHERE created_at >= day AND created_at < date(day, '+1 day'))
                        FROM days ORDER BY day",
                    days_cte(days)
                ))?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(day, new)| {
                    total += new;
                    json!({ "date": day, "new_users": new, "total_users": total })
                })
                .collect::<Vec<_>>();
            Ok::<_, ApiError>(json!({
                "period": period,
                "days": days,
                "new_users": total - before,
                "series": series,
            }))
        })
        .await?;
    Ok(ok(StatusCode::OK, data))
}

/// How many users the usage page ranks.
const TOP_USERS: i64 = 10;

/// Daily usage over 30 days and this month's top users.
#[utoipa::path(get, path = "/analytics/usage", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn usage(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let data = state
        .db
        .read(|c| {
            let daily = c
                .prepare(&format!(
                    "{} SELECT d.day, round(coalesce(sum(t.total_tokens), 0), 2),
                               coalesce(sum(t.total_calls), 0), coalesce(sum(t.total_duration_seconds), 0)
                        FROM days d LEFT JOIN user_usage_tracking t ON t.date = d.day
                        GROUP BY d.day ORDER BY d.day",
                    days_cte(30)
                ))?
                .query_map([], |r| {
                    Ok(json!({
                        "date": r.get::<_, String>(0)?,
                        "tokens": r.get::<_, f64>(1)?,
                        "calls": r.get::<_, i64>(2)?,
                        "duration_seconds": r.get::<_, i64>(3)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let top_users = c
                .prepare(
                    "SELECT user_id, email, tokens_used_this_month, calls_this_month, duration_this_month
                     FROM current_month_usage
                     WHERE tokens_used_this_month > 0 OR calls_this_month > 0
                     ORDER BY tokens_used_this_month DESC, calls_this_month DESC, email
                     LIMIT ?1",
                )?
                .query_map([TOP_USERS], |r| {
                    Ok(json!({
                        "user_id": r.get::<_, String>(0)?,
                        "email": r.get::<_, String>(1)?,
                        "tokens": r.get::<_, f64>(2)?,
                        "calls": r.get::<_, i64>(3)?,
                        "duration_seconds": r.get::<_, i64>(4)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, ApiError>(json!({ "days": 30, "daily": daily, "top_users": top_users }))
        })
        .await?;
    Ok(ok(StatusCode::OK, data))
}

/// MRR is the sum of the active subscriptions' monthly prices; ARR is 12 × MRR.
/// MRR, ARR and revenue by plan.
#[utoipa::path(get, path = "/analytics/revenue", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn revenue(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let plans = state
        .db
        .read(|c| active_by_plan(c).map_err(ApiError::from))
        .await?;
    let mrr: i64 = plans.iter().map(|(_, _, cents)| cents).sum();
    let by_plan: Vec<Value> = TIERS
        .iter()
        .map(|t| {
            let (n, cents) = plans
                .iter()
                .find(|(plan, _, _)| plan == t.name)
                .map_or((0, 0), |(_, n, cents)| (*n, *cents));
            json!({ "plan": t.name, "active_subscriptions": n, "mrr": dollars(cents) })
        })
        .collect();
    Ok(ok(
        StatusCode::OK,
        json!({
            "currency": "USD",
            "mrr": dollars(mrr),
            "arr": dollars(mrr * 12),
            "active_subscriptions": plans.iter().map(|(_, n, _)| n).sum::<i64>(),
            "by_plan": by_plan,
        }),
    ))
}

/// The size of a file, 0 when it is not there (no WAL between checkpoints).
fn file_size(path: PathBuf) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// At most this many problems are listed by `quick_check`.
const QUICK_CHECK_MAX: i64 = 10;

/// Database size, schema version, quick_check and uptime, with the first
/// edition's `overall_status` and `components`.
#[utoipa::path(get, path = "/analytics/system-health", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn system_health(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let db_path = state.db.path().to_path_buf();
    let uptime = state.started.elapsed().as_secs();
    let data = state
        .db
        .read(move |c| health_of(c, db_path, uptime))
        .await?;
    Ok(ok(StatusCode::OK, data))
}

/// The same as `/analytics/system-health`, where the first edition's admin
/// pages ask for it.
#[utoipa::path(get, path = "/system-health", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn system_health_alias(state: State<AppState>, admin: AdminUser) -> ApiResult<Response> {
    system_health(state, admin).await
}

/// `GET /api/admin/dashboard`, the first edition's admin home: the
/// overview's figures and the system's health in one answer, with the
/// headline numbers also flat.
#[utoipa::path(get, path = "/dashboard", tag = "admin",
    responses((status = 200, body = Envelope<serde_json::Value>)))]
async fn dashboard(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let db_path = state.db.path().to_path_buf();
    let uptime = state.started.elapsed().as_secs();
    let data = state
        .db
        .read(move |c| {
            let mut data = overview_of(c)?;
            let health = health_of(c, db_path, uptime)?;
            let users = &data["users"];
            let flat = json!({
                "total_users": users["total"],
                "active_users": users["active"],
                "total_agents": data["agents"]["total"],
                "runs_this_month": data["this_month"]["calls"],
                "tokens_this_month": data["this_month"]["tokens"],
            });
            data["users"]["by_status"] = json!({
                "active": users["active"],
                "inactive": users["inactive"],
            });
            if let (Value::Object(d), Value::Object(f)) = (&mut data, flat) {
                d.extend(f);
            }
            data["system_health"] = health;
            Ok::<_, ApiError>(data)
        })
        .await?;
    Ok(ok(StatusCode::OK, data))
}

/// The database's state, the runs in progress and the server's uptime,
/// with the first edition's `overall_status` (`healthy` or `degraded`) and
/// `components` (each `{status, message}`).
fn health_of(c: &Connection, db_path: PathBuf, uptime: u64) -> ApiResult<Value> {
    let mut wal = db_path.clone().into_os_string();
    wal.push("-wal");
    let problems = c
        .prepare(&format!("PRAGMA quick_check({QUICK_CHECK_MAX})"))?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let quick_ok = problems == ["ok"];
    let runs_in_progress: i64 = c.query_row(
        "SELECT count(*) FROM agent_runs WHERE status = 'in_progress'",
        [],
        |r| r.get(0),
    )?;
    let (pages, page_size, free): (i64, i64, i64) = c.query_row(
        "SELECT (SELECT page_count FROM pragma_page_count()),
                        (SELECT page_size FROM pragma_page_size()),
                        (SELECT freelist_count FROM pragma_freelist_count())",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let schema = migrate::current_version(c)?;
    let schema_ok = schema == migrate::latest_version();
    let component = |healthy: bool, message: String| json!({ "status": if healthy { "healthy" } else { "degraded" }, "message": message });
    let components = json!({
        "database": component(
            quick_ok,
            if quick_ok { "The integrity check passed".into() } else { format!("The integrity check found: {}", problems.join("; ")) },
        ),
        "schema": component(
            schema_ok,
            format!("Schema version {schema} of {}", migrate::latest_version()),
        ),
        "api": component(true, format!("Up for {uptime} s, {runs_in_progress} call(s) in progress")),
    });
    let healthy = quick_ok && schema_ok;
    Ok(json!({
        "status": if quick_ok { "ok" } else { "degraded" },
        "overall_status": if healthy { "healthy" } else { "degraded" },
        "components": components,
        "uptime_seconds": uptime,
        "version": env!("CARGO_PKG_VERSION"),
        "database": {
            "size_bytes": file_size(db_path),
            "wal_size_bytes": file_size(PathBuf::from(wal)),
            "pages": pages,
            "page_size": page_size,
            "free_pages": free,
            "schema_version": schema,
            "expected_schema_version": migrate::latest_version(),
            "quick_check": if quick_ok { json!("ok") } else { json!(problems) },
            "sqlite_version": rusqlite::version(),
        },
        "runs_in_progress": runs_in_progress,
    }))
}
