//! RFC 4180 CSV for the download endpoints, safe to open in a spreadsheet.
//! A few lines of our own rather than a crate: quoting is all we need.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// A CSV document being written, line by line (CRLF, as RFC 4180 says).
#[derive(Default)]
pub struct Csv {
    out: String,
}

/// Spreadsheets run a cell that starts with one of these as a formula
/// (CSV injection); a leading `'` makes them show it as text instead.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One cell: neutralised, then quoted when it holds a comma, a quote or a
/// line break, with quotes doubled.
fn push_cell(out: &mut String, raw: &str) {
    let neutral;
    let text = if raw.starts_with(FORMULA_STARTS) {
        neutral = format!("'{raw}");
        neutral.as_str()
    } else {
        raw
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

impl Csv {
    /// Appends one record.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_cell(&mut self.out, cell.as_ref());
        }
        self.out.push_str("\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cells: &[&str]) -> String {
        let mut c = Csv::default();
        c.row(cells);
        c.out
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(line(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(
            line(&["x,y", "say \"hi\"", "two\nlines"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
    }

    #[test]
    fn formulas_become_text() {
        assert_eq!(
            line(&["=1+1", "+a", "-b", "@c", "\td", "\re", "a=b"]),
            "'=1+1,'+a,'-b,'@c,'\td,\"'\re\",a=b\r\n"
        );
        assert_eq!(
            line(&["=HYPERLINK(\"x\",\"y\")"]),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\"\r\n"
        );
    }
}
