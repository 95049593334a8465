//! `/api/admin/analytics/export/{kind}`: users, usage, runs or the audit log
//! as RFC 4180 CSV. Never a secret: no password hashes, keys or sessions are
//! selected. An export stops at `EXPORT_MAX_ROWS` rows (newest first) and
//! says so in `X-Export-Truncated`, so one request cannot hold a reader and
//! the server's memory for an unbounded time.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use rusqlite::types::ValueRef;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{LOG_COLUMNS, LOG_FROM, LOG_ORDER};
use crate::auth::extract::AdminUser;
use crate::http::csv::Csv;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiPath;
use crate::http::openapi::ErrorBody;
use crate::http::AppState;

pub const EXPORT_MAX_ROWS: i64 = 50_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// The header row and the query (newest first, without `LIMIT`) of a kind.
fn export_query(kind: &str) -> Option<(&'static [&'static str], String)> {
    Some(match kind {
        "users" => (
            &[
                "id",
                "email",
                "role",
                "subscription_tier",
                "organization_name",
                "max_agents",
                "monthly_token_quota",
                "is_active",
                "created_at",
                "last_login",
                "agent_count",
                "total_runs",
                "total_tokens_used",
                "tokens_this_month",
                "plan",
                "subscription_status",
            ],
            "SELECT s.id, s.email, s.role, s.subscription_tier, s.organization_name, s.max_agents,
                    s.monthly_token_quota, CASE WHEN s.is_active THEN 'true' ELSE 'false' END,
                    s.created_at, s.last_login, s.agent_count, s.total_runs, s.total_tokens_used,
                    m.tokens_used_this_month, s.current_plan, s.subscription_status
             FROM user_statistics s JOIN current_month_usage m ON m.user_id = s.id
             ORDER BY s.created_at DESC, s.id"
                .to_string(),
        ),
        "usage" => (
            &[
                "date",
                "user_id",
                "email",
                "total_tokens",
                "total_calls",
                "total_duration_seconds",
                "api_costs",
            ],
            "SELECT t.date, t.user_id, u.email, round(t.total_tokens, 2), t.total_calls,
                    t.total_duration_seconds, t.api_costs
             FROM user_usage_tracking t JOIN users u ON u.id = t.user_id
             ORDER BY t.date DESC, u.email"
                .to_string(),
        ),
        "runs" => (
            &[
                "id",
                "run_number",
                "user_id",
                "email",
                "agent_id",
                "agent_name",
                "type",
                "phone_number",
                "status",
                "disposition",
                "duration_seconds",
                "groq_tokens",
                "created_at",
                "completed_at",
            ],
            "SELECT r.id, r.run_number, a.user_id, u.email, r.agent_id, a.name, r.type,
                    r.phone_number, r.status, r.disposition, r.duration_seconds,
                    round(r.groq_tokens, 2), r.created_at, r.completed_at
             FROM agent_runs r JOIN agents a ON a.id = r.agent_id JOIN users u ON u.id = a.user_id
             ORDER BY r.created_at DESC, r.rowid DESC"
                .to_string(),
        ),
        "audit" => (
            &[
                "id",
                "created_at",
                "action",
                "admin_user_id",
                "admin_email",
                "target_user_id",
                "target_email",
                "target_resource_type",
                "target_resource_id",
                "details",
                "ip_address",
                "user_agent",
            ],
            format!("SELECT {LOG_COLUMNS} FROM {LOG_FROM} ORDER BY {LOG_ORDER}"),
        ),
        _ => return None,
    })
}

/// A cell's text: empty for NULL, numbers as SQLite prints them.
fn cell_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

/// One table as CSV (newest first, at most 50,000 rows).
#[utoipa::path(get, path = "/analytics/export/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "`users`, `usage`, `runs` or `audit`")),
    responses(
        (status = 200, description = "The rows as CSV", content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody, description = "No such kind"),
    ))]
async fn export(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(kind): ApiPath<String>,
) -> ApiResult<Response> {
    let Some((header, sql)) = export_query(&kind) else {
        return Err(ApiError::not_found("Export").with_code("EXPORT_NOT_FOUND"));
    };
    let (csv, truncated, day) = state
        .db
        .read(move |c| {
            let mut csv = Csv::default();
            csv.row(header);
            let mut stmt = c.prepare(&format!("{sql} LIMIT ?1"))?;
            let mut rows = stmt.query([EXPORT_MAX_ROWS + 1])?;
            let mut n = 0;
            let mut truncated = false;
            while let Some(row) = rows.next()? {
                n += 1;
                if n > EXPORT_MAX_ROWS {
                    truncated = true;
                    break;
                }
                let cells = (0..header.len())
                    .map(|i| row.get_ref(i).map(cell_text))
                    .collect::<Result<Vec<_>, _>>()?;
                csv.row(&cells);
            }
            let day: String = c.query_row("SELECT date('now')", [], |r| r.get(0))?;
            Ok::<_, ApiError>((csv, truncated, day))
        })
        .await?;
    let mut res = csv.download(&format!("voxflow-{kind}-{day}.csv"));
    res.headers_mut().insert(
        "x-export-truncated",
        HeaderValue::from_static(if truncated { "true" } else { "false" }),
    );
    Ok(res)
}
