//! `/api/admin/agents`: every tenant's agents with their owner.

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde::Deserialize;
use serde_json::json;

use crate::agents::{agent_from_row, type_filter, AGENT_COLUMNS, AGENT_COLUMN_COUNT};
use crate::auth::extract::AdminUser;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::filters::{given, unless_all, uuid_param, SqlFilter};
use crate::http::openapi::Paged;
use crate::http::pagination::Page;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_agents))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AdminAgentQuery {
    page: Option<u32>,
    limit: Option<u32>,
    search: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    user_id: Option<String>,
}

/// Every tenant's agents with their owners, newest first.
#[utoipa::path(get, path = "/agents", tag = "admin", params(AdminAgentQuery),
    responses((status = 200, body = Paged<serde_json::Value>, description = "Agents with `owner_email` and `organization_name`")))]
async fn list_agents(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<AdminAgentQuery>,
) -> ApiResult<Response> {
    let page = Page::new(q.page, q.limit)?;
    let mut filters = SqlFilter::default();
    if let Some(kind) = type_filter(unless_all(&q.kind))? {
        filters.add("a.type = ?", kind);
    }
    if let Some(user_id) = uuid_param("user_id", &q.user_id)? {
        filters.add("a.user_id = ?", user_id);
    }
    filters.search(given(&q.search), &["a.name", "a.use_case", "u.email"])?;
    let (rows, total) = state
        .db
        .read(move |c| {
            filters
                .page_of(
                    c,
                    "agents a JOIN users u ON u.id = a.user_id",
                    &format!("{AGENT_COLUMNS}, u.email"),
                    "a.created_at DESC, a.rowid DESC",
                    page,
                    |r| {
                        let agent = agent_from_row(r, 0)?;
                        let mut v = serde_json::to_value(&agent).unwrap_or_default();
                        v["owner"] =
                            json!({ "id": agent.user_id, "email": r.get::<_, String>(AGENT_COLUMN_COUNT)? });
                        Ok(v)
                    },
                )
                .map_err(ApiError::from)
        })
        .await?;
    Ok(page.respond(rows, total))
}
