//! `page` (from 1) and `limit` (1–100, default 20), and the `pagination`
//! member that lists carry beside `data`.

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::openapi::{Paged, Pagination};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u32,
    pub limit: u32,
}

impl Page {
    /// Checks the query's `page` and `limit`; out of range is a 400 naming it.
    pub fn new(page: Option<u32>, limit: Option<u32>) -> Result<Page, ApiError> {
        let page = page.unwrap_or(1);
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if page == 0 || page > 1_000_000 {
            return Err(ApiError::field("page", "must be between 1 and 1000000"));
        }
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::field("limit", "must be between 1 and 100"));
        }
        Ok(Page { page, limit })
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }

    pub fn limit(&self) -> i64 {
        i64::from(self.limit)
    }

    /// The `pagination` member for `total` items.
    pub fn pagination(&self, total: i64) -> Pagination {
        let pages = if total == 0 {
            0
        } else {
            (total + self.limit() - 1) / self.limit()
        };
        Pagination {
            page: self.page,
            limit: self.limit,
            total,
            pages,
        }
    }

    fn paged<T: Serialize>(&self, items: Vec<T>, total: i64) -> Paged<T> {
        Paged {
            success: true,
            data: items,
            pagination: self.pagination(total),
        }
    }

    /// `{"success": true, "data": items, "pagination": {…}}`.
    pub fn respond<T: Serialize>(&self, items: Vec<T>, total: i64) -> Response {
        (StatusCode::OK, Json(self.paged(items, total))).into_response()
    }

    /// The body `respond` sends, serialized once to be kept and sent again
    /// with [`json_response`].
    pub fn body<T: Serialize>(&self, items: Vec<T>, total: i64) -> Result<Bytes, ApiError> {
        serde_json::to_vec(&self.paged(items, total))
            .map(Bytes::from)
            .map_err(ApiError::internal)
    }
}

/// A 200 with a JSON body serialized beforehand.
pub fn json_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
