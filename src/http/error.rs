//! The one error type of the API. It renders the envelope of `api.md`:
//! `{"success": false, "message", "code", "errors"?}`. Internal details go to
//! the log, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::openapi::{Envelope, ErrorBody};
use crate::crypto::password::HashQueueError;
use crate::db::DbError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub errors: Vec<FieldError>,
    /// Extra top-level members of the envelope (an upgrade suggestion, say).
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// 400 naming one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::fields(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }

    /// 400 naming every field that failed.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        let message = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "Validation failed".to_string(),
        };
        ApiError {
            errors,
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 for a missing resource and equally for another tenant's.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "Too many attempts; try again in {} seconds",
                    retry_after.max(1)
                ),
            )
        }
    }

    /// A failure that is ours, not the client's: logged in full, reported
    /// to the client without details.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Something went wrong on the server",
        )
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Sqlite(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<HashQueueError> for ApiError {
    fn from(err: HashQueueError) -> Self {
        match err {
            HashQueueError::Full => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER_BUSY",
                    "The server is busy checking other passwords; try again in a moment",
                )
            },
            HashQueueError::Failed => ApiError::internal(err),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        // A busy database after busy_timeout is load, not a bug: tell the
        // client to retry instead of reporting a server fault.
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            match e.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "BUSY",
                        "The database is busy; try again",
                    );
                }
                // SQLITE_FULL: what SQLite reports when a write meets a full
                // disk (ENOSPC) or the database's size cap. The statement and
                // its transaction are rolled back, so nothing is half
                // written; the operator, not the client, has to act.
                rusqlite::ErrorCode::DiskFull => {
                    tracing::error!(error = %err, "the database cannot grow: free disk space");
                    return ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "STORAGE_FULL",
                        "The server has run out of storage and saved nothing; the operator must free disk space, then try again",
                    );
                }
                _ => {}
            }
        }
        ApiError::internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = ErrorBody {
            success: false,
            message: self.message,
            code: self.code.to_string(),
            errors: self.errors,
        };
        let mut body = match serde_json::to_value(envelope) {
            Ok(Value::Object(body)) => body,
            // Strings and a list of them always serialise to an object.
            _ => Map::new(),
        };
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// `{"success": true, "data": …}` with the given status.
pub fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (
        status,
        Json(Envelope {
            success: true,
            data,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_full_disk_is_507_storage_full_and_busy_is_503() {
        let full = ApiError::from(sqlite_error(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.code, "STORAGE_FULL");
        assert!(full.message.contains("free disk space"), "{}", full.message);
        let through_db = ApiError::from(DbError::Sqlite(sqlite_error(rusqlite::ffi::SQLITE_FULL)));
        assert_eq!(through_db.code, "STORAGE_FULL");
        let busy = ApiError::from(sqlite_error(rusqlite::ffi::SQLITE_BUSY));
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        let other = ApiError::from(sqlite_error(rusqlite::ffi::SQLITE_CORRUPT));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
