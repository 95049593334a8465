//! `admin_audit_logs`: who did what to whom, from where. Details are JSON
//! and never carry a secret. Admins read it at `/api/admin/audit-logs`.

use axum::extract::State;
use axum::response::Response;
use rusqlite::{params, Connection, Row};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::AdminUser;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiQuery, ClientInfo};
use crate::http::filters::{given, unless_all, uuid_param, SqlFilter};
use crate::http::openapi::Paged;
use crate::http::pagination::Page;
use crate::http::AppState;

pub struct Entry<'a> {
    pub admin_user_id: &'a str,
    pub action: &'a str,
    pub target_user_id: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub details: Value,
    pub client: &'a ClientInfo,
}

pub fn record(conn: &Connection, e: &Entry<'_>) -> rusqlite::Result<()> {
    // Cached: most writes of the API record one.
    conn.prepare_cached(
        "INSERT INTO admin_audit_logs
           (admin_user_id, action, target_user_id, target_resource_type, target_resource_id, details, ip_address, user_agent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
            e.admin_user_id,
            e.action,
            e.target_user_id,
            e.resource_type,
            e.resource_id,
            e.details.to_string(),
            e.client.ip.chars().take(45).collect::<String>(),
            e.client.user_agent
        ],
    )?;
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    page: Option<u32>,
    limit: Option<u32>,
    action: Option<String>,
    admin_user_id: Option<String>,
    target_user_id: Option<String>,
    date_from: Option<String>,
    date_to: Option<String>,
    /// `admin`: only entries whose actor is an admin; tenants' own actions
    /// (their agents, calls, keys) are in the same table and would bury
    /// the admins' changes on the audit page.
    actor: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The audit log's columns with both users' emails (null once an account is
/// gone), joined from `admin_audit_logs l`; `entry_from_row` reads them.
pub const LOG_FROM: &str = "admin_audit_logs l
     LEFT JOIN users au ON au.id = l.admin_user_id
     LEFT JOIN users tu ON tu.id = l.target_user_id";

pub const LOG_COLUMNS: &str = "l.id, l.created_at, l.action, l.admin_user_id, au.email, \
     l.target_user_id, tu.email, l.target_resource_type, l.target_resource_id, l.details, \
     l.ip_address, l.user_agent";

/// Newest first; rows of the same millisecond in the order written, reversed.
pub const LOG_ORDER: &str = "l.created_at DESC, l.rowid DESC";

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    let details: Option<String> = r.get(9)?;
    Ok(json!({
        "id": r.get::<_, String>(0)?,
        "created_at": r.get::<_, String>(1)?,
        "action": r.get::<_, String>(2)?,
        "admin_user_id": r.get::<_, Option<String>>(3)?,
        "admin_email": r.get::<_, Option<String>>(4)?,
        "target_user_id": r.get::<_, Option<String>>(5)?,
        "target_email": r.get::<_, Option<String>>(6)?,
        "target_resource_type": r.get::<_, Option<String>>(7)?,
        "target_resource_id": r.get::<_, Option<String>>(8)?,
        // Stored as checked JSON text; handed back as JSON, not a string.
        "details": details.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
        "ip_address": r.get::<_, Option<String>>(10)?,
        "user_agent": r.get::<_, Option<String>>(11)?,
    }))
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/audit-logs", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Paged<serde_json::Value>, description = "Entries: actor, action, target, resource, details, address")))]
async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let mut filters = SqlFilter::default();
    if let Some(action) = unless_all(&q.action) {
        // Action names are verb_noun identifiers.
        if action.len() > 100 || !action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(ApiError::field(
                "action",
                "must be an action name such as update_user_limits",
            ));
        }
        filters.add("l.action = ?", action.to_string());
    }
    if let Some(id) = uuid_param("admin_user_id", &q.admin_user_id)? {
        filters.add("l.admin_user_id = ?", id);
    }
    if let Some(id) = uuid_param("target_user_id", &q.target_user_id)? {
        filters.add("l.target_user_id = ?", id);
    }
    filters.dates("l.created_at", &q.date_from, &q.date_to)?;
    match given(&q.actor) {
        None | Some("any") => {}
        Some("admin") => filters.add("au.role = ?", "admin".to_string()),
        Some(_) => return Err(ApiError::field("actor", "must be admin or any")),
    }
    let (rows, total) = state
        .db
        .read(move |c| {
            filters
                .page_of(c, LOG_FROM, LOG_COLUMNS, LOG_ORDER, page, entry_from_row)
                .map_err(ApiError::from)
        })
        .await?;
    Ok(page.respond(rows, total))
}
