//! CSV downloads: records written by `usage::csv` (RFC 4180, formulas
//! neutralised), served as an attachment.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::usage::csv::record;

/// A CSV document being written, line by line (CRLF, as RFC 4180 says).
#[derive(Default)]
pub struct Csv {
    out: String,
}

impl Csv {
    /// Appends one record.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        self.out.push_str(&record(cells));
    }

    /// A `200 text/csv` download named `filename` (a name we make, never
    /// the client's text).
    pub fn download(self, filename: &str) -> Response {
        let mut res = Response::new(Body::from(self.out));
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        // Exports hold personal data: no cache keeps a copy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}
