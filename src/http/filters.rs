//! Query-string filters shared by the list endpoints: optional text, dates,
//! dispositions, `LIKE` patterns, and the `WHERE` clause they build.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Row};

use super::error::ApiError;
use super::pagination::Page;

/// Optional query text, trimmed, with empty meaning absent.
pub fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// For `#[serde(default, deserialize_with = "optional_filter")]` on a
/// query filter that is not text (a number, a flag): an empty value, as a
/// cleared form input sends it, or the first edition's `all`, is no filter
/// rather than a 400; anything else must parse.
pub fn optional_filter<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = serde::Deserialize::deserialize(de)?;
    match unless_all(&raw) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// A first-edition filter value meaning "no filter": the pages send
/// `all` (or nothing) for a select left at its first choice.
pub fn unless_all(v: &Option<String>) -> Option<&str> {
    given(v).filter(|s| !s.eq_ignore_ascii_case("all"))
}

/// A `YYYY-MM-DD` calendar date (2025-02-30 is not one).
pub fn check_date(field: &str, raw: &str) -> Result<String, ApiError> {
    let bad = || ApiError::field(field, "must be a date as YYYY-MM-DD");
    let b = raw.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| raw[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(raw.to_string())
}

/// A disposition to filter on. Dispositions are an open list (telephony adds
/// its own), so only their shape is checked.
pub fn check_disposition(raw: &str) -> Result<String, ApiError> {
    if raw.len() > 100 || !raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(ApiError::field(
            "disposition",
            "must be a disposition name such as user_hangup",
        ));
    }
    Ok(raw.to_string())
}

/// A query parameter holding an id; anything but a UUID names the parameter.
pub fn uuid_param(field: &str, raw: &Option<String>) -> Result<Option<String>, ApiError> {
    unless_all(raw)
        .map(|s| {
            uuid::Uuid::parse_str(s)
                .map(|u| u.to_string())
                .map_err(|_| ApiError::field(field, "must be a UUID"))
        })
        .transpose()
}

/// `%text%` for `LIKE … ESCAPE '\'`, with the client's wildcards taken literally.
pub fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The conditions of a `WHERE` clause and their numbered parameters.
#[derive(Debug, Default)]
pub struct SqlFilter {
    clauses: Vec<String>,
    pub args: Vec<SqlValue>,
}

impl SqlFilter {
    /// Adds `clause`, each `?` in it standing for `value` (so one value can
    /// appear twice, as in `a LIKE ? OR b LIKE ?`).
    pub fn add(&mut self, clause: &str, value: impl Into<SqlValue>) {
        self.args.push(value.into());
        let n = format!("?{}", self.args.len());
        self.clauses.push(clause.replace('?', &n));
    }

    /// `date_from` and `date_to` (`YYYY-MM-DD`, UTC, both inclusive) on the
    /// timestamp `column`; a range that ends before it starts is a 400.
    pub fn dates(
        &mut self,
        column: &str,
        date_from: &Option<String>,
        date_to: &Option<String>,
    ) -> Result<(), ApiError> {
        let from = unless_all(date_from)
            .map(|d| check_date("date_from", d))
            .transpose()?;
        let to = unless_all(date_to)
            .map(|d| check_date("date_to", d))
            .transpose()?;
        if let (Some(f), Some(t)) = (&from, &to) {
            if f > t {
                return Err(ApiError::field("date_to", "must not be before date_from"));
            }
        }
        if let Some(f) = from {
            self.add(&format!("{column} >= ?"), f);
        }
        if let Some(t) = to {
            // Inclusive: every instant of that UTC day.
            self.add(&format!("{column} < date(?, '+1 day')"), t);
        }
        Ok(())
    }

    /// A search for `text` (at most 255 characters) in any of `columns`.
    /// `column = value` when the query gave `field` (`all` is no filter); a value outside
    /// `allowed` is a 400 naming the field and the values it takes.
    pub fn one_of(
        &mut self,
        field: &str,
        raw: &Option<String>,
        allowed: &[&str],
        column: &str,
    ) -> Result<(), ApiError> {
        let Some(value) = unless_all(raw) else {
            return Ok(());
        };
        if !allowed.contains(&value) {
            return Err(ApiError::field(
                field,
                format!("must be one of: {}", allowed.join(", ")),
            ));
        }
        self.add(&format!("{column} = ?"), value.to_string());
        Ok(())
    }

    pub fn search(&mut self, text: Option<&str>, columns: &[&str]) -> Result<(), ApiError> {
        let Some(text) = text else { return Ok(()) };
        if text.chars().count() > 255 {
            return Err(ApiError::field("search", "must be at most 255 characters"));
        }
        let any = columns
            .iter()
            .map(|c| format!("{c} LIKE ? ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        self.add(&format!("({any})"), like_pattern(text));
        Ok(())
    }

    /// How many rows of `from` match, and one page of them in `order`,
    /// reading `columns` of each with `map`.
    pub fn page_of<T>(
        &self,
        c: &Connection,
        from: &str,
        columns: &str,
        order: &str,
        page: Page,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<(Vec<T>, i64)> {
        self.page_counted_in(c, from, from, columns, order, page, map)
    }

    /// `page_of`, counting the matches in `counted` instead of `from`: a
    /// join that adds columns to each row but never adds or drops one (a
    /// one-to-one table kept by triggers) need not be joined to be
    /// counted, and the count is most of a page's cost. The conditions
    /// must name only `counted`'s columns.
    #[allow(clippy::too_many_arguments)]
    pub fn page_counted_in<T>(
        &self,
        c: &Connection,
        counted: &str,
        from: &str,
        columns: &str,
        order: &str,
        page: Page,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<(Vec<T>, i64)> {
        let where_sql = match self.where_sql() {
            w if w.is_empty() => "1 = 1".to_string(),
            w => w,
        };
        // One read transaction for both statements: the total and the page
        // come from the same snapshot (a write between them cannot make
        // them disagree), and the snapshot is taken once. A caller already
        // in a transaction (a write's savepoint) has its own.
        let own = c.is_autocommit();
        if own {
            c.prepare_cached("BEGIN")?.execute([])?;
        }
        let read = (|| {
            // Cached: a list's statements repeat with each page and request.
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM {counted} WHERE {where_sql}"))?
                .query_row(params_from_iter(self.args.iter()), |r| r.get(0))?;
            let (args, paged) = self.paged(page.limit(), page.offset());
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {columns} FROM {from} WHERE {where_sql} ORDER BY {order} {paged}"
                ))?
                .query_map(params_from_iter(args.iter()), map)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, total))
        })();
        if own {
            // Ends the read whether or not it succeeded; it wrote nothing.
            c.prepare_cached("COMMIT")?.execute([])?;
        }
        read
    }

    /// The conditions joined with `AND`.
    pub fn where_sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    /// The parameters followed by `LIMIT` and `OFFSET`, and the placeholders
    /// naming those two.
    pub fn paged(&self, limit: i64, offset: i64) -> (Vec<SqlValue>, String) {
        let mut args = self.args.clone();
        args.push(SqlValue::Integer(limit));
        args.push(SqlValue::Integer(offset));
        let n = args.len();
        (args, format!("LIMIT ?{} OFFSET ?{n}", n - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_real_calendar_days() {
        assert!(check_date("d", "2024-02-29").is_ok());
        assert!(check_date("d", "2025-12-31").is_ok());
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-04-31",
            "2025-1-01",
            "25-01-01xx",
            "2025/01/01",
            "+025-01-01",
        ] {
            assert!(check_date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_are_taken_literally() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut f = SqlFilter::default();
        f.add("a = ?", "x".to_string());
        f.add("(b LIKE ? OR c LIKE ?)", "y".to_string());
        assert_eq!(f.where_sql(), "a = ?1 AND (b LIKE ?2 OR c LIKE ?2)");
        let (args, tail) = f.paged(20, 40);
        assert_eq!(args.len(), 4);
        assert_eq!(tail, "LIMIT ?3 OFFSET ?4");
        let mut f = SqlFilter::default();
        let err = f
            .dates("t", &Some("2025-02-02".into()), &Some("2025-02-01".into()))
            .unwrap_err();
        assert_eq!(err.errors[0].field, "date_to");
    }
}
