//! `/api/admin/*`: admin only (the `AdminUser` extractor of every handler
//! refuses anyone else with a 403). Viewing is not audited; changing is.

use utoipa_axum::router::OpenApiRouter;

use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(super::users::router())
        .merge(super::agents::router())
        .merge(super::audit::router())
        .merge(super::analytics::router())
        .merge(super::export::router())
}
