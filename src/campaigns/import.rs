//! A campaign's contact list from an uploaded CSV file: header aliases,
//! numbers normalised to E.164, duplicates dropped, bad rows reported with
//! their row number in the file (the header is row 1).
//!
//! `write` stores a parsed file in chunks, each its own writer job, so
//! other tenants' writes wait behind one chunk, never behind a whole 10 MB
//! file; the campaign stays hidden until its last chunk is in (see
//! `store::IMPORTING`), and a failed import removes what it wrote.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::store::{self, Campaign, ImportRefused, Settings};
use crate::admin::audit::{self, Entry};
use crate::agents::owned_agent;
use crate::api_keys::formats;
use crate::db::{Db, DbError};
use crate::http::error::ApiError;
use crate::http::extract::ClientInfo;
use crate::tiers::Tier;

/// The largest CSV file a campaign may be created from.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Bad rows listed in the answer; a file of thousands of bad rows would
/// otherwise make an answer larger than the file. `invalid_count` has them all.
pub const MAX_INVALID_LISTED: usize = 100;
/// The longest first or last name, as the column's CHECK allows.
const MAX_NAME_CHARS: usize = 100;

const PHONE_HEADERS: [&str; 2] = ["phone_number", "phone"];
const FIRST_HEADERS: [&str; 3] = ["first_name", "first", "firstname"];
const LAST_HEADERS: [&str; 3] = ["last_name", "last", "lastname"];
const TIMEZONE_HEADERS: [&str; 3] = ["timezone", "time_zone", "tz"];

/// One contact to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub phone_number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// An IANA zone for the calling window (the CSV's `timezone` column).
    pub timezone: Option<String>,
    /// The row's other columns as a JSON object (header → text), the
    /// agent's prompt variables (`{{appointment}}`); `None` when empty.
    pub extra_fields: Option<String>,
}

/// The most one row's other columns may hold, as the column's CHECK allows.
const MAX_EXTRA_BYTES: usize = 8192;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvalidRow {
    pub row: u64,
    pub reason: String,
}

/// What reading the file found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub contacts: Vec<Contact>,
    /// Data rows (the header not counted).
    pub rows: u64,
    pub duplicates: u64,
    pub invalid: Vec<InvalidRow>,
    pub invalid_count: u64,
}

/// Why a file cannot be imported at all.
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    NotUtf8,
    NoPhoneColumn,
    Malformed(String),
}

/// `raw` as E.164. Spaces, dashes, dots and parentheses are dropped, a
/// leading `00` is the international prefix (`+`), and ten digits without a
/// country code are taken as a North American number (`+1`), the common
/// case of the lists this edition's first users import.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let mut s: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\t'))
        .collect();
    if s.is_empty() {
        return Err("phone number is empty".into());
    }
    if let Some(rest) = s.strip_prefix("00") {
        s = format!("+{rest}");
    } else if !s.starts_with('+') {
        if s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()) {
            s = format!("+1{s}");
        } else {
            return Err(
                "phone number must be E.164: + and the country code, then the number (10 digits alone are taken as +1)"
                    .into(),
            );
        }
    }
    formats::check_e164("phone_number", &s).map_err(|e| format!("phone number {}", e.message))?;
    Ok(s)
}

/// The index of the first header among `names` (compared without case).
fn column(headers: &[String], names: &[&str]) -> Option<usize> {
    headers.iter().position(|h| names.contains(&h.as_str()))
}

/// A name cell: trimmed, empty meaning none, at most `MAX_NAME_CHARS`.
fn name_cell(
    record: &csv::StringRecord,
    at: Option<usize>,
    what: &str,
) -> Result<Option<String>, String> {
    let Some(text) = at.and_then(|i| record.get(i)).map(str::trim) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{what} is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(Some(text.to_string()))
}

/// A time zone cell: empty meaning none (the number's country decides),
/// else a zone this server knows (`Europe/Berlin`).
fn zone_cell(record: &csv::StringRecord, at: Option<usize>) -> Result<Option<String>, String> {
    let Some(text) = at.and_then(|i| record.get(i)).map(str::trim) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 64 || !super::window::is_known_zone(text) {
        return Err("timezone is not a known IANA time zone (e.g. Europe/Berlin)".into());
    }
    Ok(Some(text.to_string()))
}

/// The row's other columns as a JSON object, empty cells left out.
fn extra_cells(
    record: &csv::StringRecord,
    columns: &[(usize, String)],
) -> Result<Option<String>, String> {
    let fields: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .filter_map(|(i, name)| {
            let v = record.get(*i)?.trim();
            (!v.is_empty()).then(|| (name.clone(), serde_json::Value::from(v)))
        })
        .collect();
    if fields.is_empty() {
        return Ok(None);
    }
    let json = serde_json::Value::Object(fields).to_string();
    if json.len() > MAX_EXTRA_BYTES {
        return Err(format!(
            "the other columns hold more than {MAX_EXTRA_BYTES} bytes"
        ));
    }
    Ok(Some(json))
}

/// Reads a whole CSV file. Cells are kept as text, whatever they look like
/// (a leading `=` is a name, not a formula: nothing here evaluates it).
pub fn parse(bytes: &[u8]) -> Result<Parsed, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FileError::NotUtf8)?;
    // Spreadsheets write a byte-order mark before the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(FileError::Malformed(e.to_string())),
        None => return Err(FileError::NoPhoneColumn),
    };
    let headers: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let phone = column(&headers, &PHONE_HEADERS).ok_or(FileError::NoPhoneColumn)?;
    let (first, last, zone) = (
        column(&headers, &FIRST_HEADERS),
        column(&headers, &LAST_HEADERS),
        column(&headers, &TIMEZONE_HEADERS),
    );
    // Every other named column is kept for the prompt's variables.
    let extra: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter(|(i, h)| !h.is_empty() && ![Some(phone), first, last, zone].contains(&Some(*i)))
        .map(|(i, h)| (i, h.replace(' ', "_")))
        .collect();

    let mut parsed = Parsed::default();
    let mut seen = std::collections::HashSet::new();
    // Lines counted so far, up to byte `counted_to` of the file.
    let (bytes, mut counted_to, mut line) = (text.as_bytes(), 0usize, 1u64);
    for record in records {
        parsed.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => return Err(FileError::Malformed(e.to_string())),
        };
        // The line the row starts on, as an editor shows it (the header is
        // row 1; skipped blank lines count, a quoted cell may span lines).
        // Counted here: the reader's own line numbers lag behind after CRLF
        // line ends and blank lines.
        let mut start = record
            .position()
            .map_or(counted_to, |p| {
                usize::try_from(p.byte()).unwrap_or(usize::MAX)
            })
            .clamp(counted_to, bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        // A line ends with LF, CRLF or a lone CR (which the reader takes too).
        let gap = &bytes[counted_to..start];
        line += gap
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && gap.get(i + 1) != Some(&b'\n')))
            .count() as u64;
        counted_to = start;
        let row = line;
        let contact = normalize_phone(record.get(phone).unwrap_or("")).and_then(|phone_number| {
            Ok(Contact {
                phone_number,
                first_name: name_cell(&record, first, "first name")?,
                last_name: name_cell(&record, last, "last name")?,
                timezone: zone_cell(&record, zone)?,
                extra_fields: extra_cells(&record, &extra)?,
            })
        });
        match contact {
            Ok(c) if seen.insert(c.phone_number.clone()) => parsed.contacts.push(c),
            Ok(_) => parsed.duplicates += 1,
            Err(reason) => {
                parsed.invalid_count += 1;
                if parsed.invalid.len() < MAX_INVALID_LISTED {
                    parsed.invalid.push(InvalidRow { row, reason });
                }
            }
        }
    }
    Ok(parsed)
}

/// Contacts per writer job, which bounds what another tenant's write waits
/// behind an import. Measured with a 10 MB file (297,441 contacts) on a
/// busy 2-core machine, release build, another tenant updating its agent
/// meanwhile (3 to 4 ms median when idle; 9.4 s at most when the import
/// was one transaction): 1,000 a chunk gave 44 to 56 ms median, 160 ms at
/// most; 500 gave 20 to 35 ms median, with rare outliers of a few hundred
/// ms from the machine's load. Inserting is CPU work per row (four
/// indexes, a generated id), so a smaller chunk costs only more commits.
pub const CHUNK_CONTACTS: usize = 500;

/// The chunks of an import of `contacts` contacts, one writer job each,
/// in the file's order (between the job that stages the campaign and the
/// one that shows it).
pub fn chunks(contacts: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..contacts)
        .step_by(CHUNK_CONTACTS)
        .map(move |start| start..(start + CHUNK_CONTACTS).min(contacts))
}

/// What an import writes: the campaign's fields, the tenant's plan and the
/// parsed file.
pub struct Import {
    pub user_id: String,
    pub name: String,
    pub agent_id: String,
    pub settings: Settings,
    pub tier: &'static Tier,
    pub client: ClientInfo,
    pub parsed: Arc<Parsed>,
}

/// Refuses a file with more contacts than one campaign of the plan holds.
pub fn check_size(parsed: &Parsed, tier: &Tier) -> Result<(), ApiError> {
    let n = i64::try_from(parsed.contacts.len()).unwrap_or(i64::MAX);
    if n > tier.max_contacts_per_campaign {
        return Err(ApiError::forbidden(
            "CONTACT_LIMIT_REACHED",
            format!(
                "The file has {n} contacts; a campaign on the {} plan holds at most {}",
                tier.name, tier.max_contacts_per_campaign
            ),
        )
        .with(
            "limits_info",
            json!({ "contacts": n, "max_contacts_per_campaign": tier.max_contacts_per_campaign }),
        ));
    }
    Ok(())
}

fn refused(why: ImportRefused, n: i64, tier: &Tier) -> ApiError {
    match why {
        ImportRefused::InProgress => ApiError::new(
            StatusCode::CONFLICT,
            "IMPORT_IN_PROGRESS",
            "Another campaign of yours is still being imported; try again when it is done",
        ),
        ImportRefused::DailyLimit { imported } => ApiError::forbidden(
            "DAILY_IMPORT_LIMIT_REACHED",
            format!(
                "You imported {imported} contacts in the last 24 hours; the {} plan allows {} a day, and this file has {n}",
                tier.name, tier.max_contacts_per_day
            ),
        )
        .with(
            "limits_info",
            json!({
                "imported_last_24h": imported,
                "contacts": n,
                "max_contacts_per_day": tier.max_contacts_per_day,
            }),
        ),
    }
}

/// Stores an import: the hidden campaign, its contacts chunk by chunk,
/// then, with its audit row, the campaign shown. Run in a task of its own,
/// so a client that goes away mid-import cannot leave it half-written;
/// any failure removes what was written (a cleanup that fails too, on a
/// full disk, is finished by the tenant's next import or the next start).
pub async fn write(db: Db, import: Import) -> Result<Campaign, ApiError> {
    let task = tokio::spawn(async move {
        let id = begin(&db, &import).await?;
        match fill_and_show(&db, &import, &id).await {
            Ok(campaign) => Ok(campaign),
            Err(err) => {
                let cleanup = id.clone();
                if let Err(e) = db
                    .write(move |c| store::drop_import(c, &cleanup).map_err(DbError::from))
                    .await
                {
                    tracing::warn!(error = %e, campaign = %id, "cannot remove a failed import");
                }
                Err(err)
            }
        }
    });
    task.await.map_err(ApiError::internal)?
}

async fn begin(db: &Db, import: &Import) -> Result<String, ApiError> {
    let (user_id, agent_id, name) = (
        import.user_id.clone(),
        import.agent_id.clone(),
        import.name.clone(),
    );
    let settings = import.settings.clone();
    let tier = import.tier;
    let n = i64::try_from(import.parsed.contacts.len()).unwrap_or(i64::MAX);
    db.write(move |c| {
        let tx = c.savepoint()?;
        if owned_agent(&tx, &user_id, &agent_id)?.is_none() {
            return Err(ApiError::not_found("Agent"));
        }
        let began = store::begin_import(
            &tx,
            &user_id,
            &name,
            &agent_id,
            &settings,
            (n, tier.max_contacts_per_day),
        )?;
        // Committed in both cases: the removal of abandoned imports stands.
        tx.commit()?;
        began.map_err(|why| refused(why, n, tier))
    })
    .await
}

async fn fill_and_show(db: &Db, import: &Import, id: &str) -> Result<Campaign, ApiError> {
    let total = import.parsed.contacts.len();
    for chunk in chunks(total) {
        let (parsed, id) = (Arc::clone(&import.parsed), id.to_string());
        let staged = db
            .write(move |c| {
                let tx = c.savepoint()?;
                let staged = store::insert_contacts(&tx, &id, &parsed.contacts[chunk])?;
                tx.commit()?;
                Ok::<_, DbError>(staged)
            })
            .await?;
        if !staged {
            return Err(ApiError::not_found("Agent"));
        }
    }
    let (user_id, id) = (import.user_id.clone(), id.to_string());
    let details = json!({
        "name": import.name,
        "agent_id": import.agent_id,
        "rows": import.parsed.rows,
        "imported": total,
        "duplicates": import.parsed.duplicates,
        "invalid": import.parsed.invalid_count,
    });
    let client = import.client.clone();
    db.write(move |c| {
        let tx = c.savepoint()?;
        if !store::finish_import(&tx, &id)? {
            return Err(ApiError::not_found("Agent"));
        }
        audit::record(
            &tx,
            &Entry {
                admin_user_id: &user_id,
                action: "create_campaign",
                target_user_id: Some(&user_id),
                resource_type: Some("campaign"),
                resource_id: Some(&id),
                details,
                client: &client,
            },
        )?;
        let campaign = store::owned_campaign(&tx, &user_id, &id)?
            .ok_or_else(|| ApiError::internal("a campaign just imported is missing"))?;
        tx.commit()?;
        Ok(campaign)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_written_in_bounded_chunks() {
        assert_eq!(chunks(0).count(), 0);
        assert_eq!(
            chunks(1).map(|c| (c.start, c.end)).collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(chunks(CHUNK_CONTACTS).count(), 1);
        assert_eq!(
            chunks(CHUNK_CONTACTS + 1).collect::<Vec<_>>(),
            [0..CHUNK_CONTACTS, CHUNK_CONTACTS..CHUNK_CONTACTS + 1]
        );
        // The largest file, about 700,000 contacts in 10 MB: 1,400 writer
        // jobs, none larger than a chunk, covering every contact once.
        let all: Vec<_> = chunks(700_000).collect();
        assert_eq!(all.len(), 700_000usize.div_ceil(CHUNK_CONTACTS));
        assert!(all.iter().all(|c| c.len() <= CHUNK_CONTACTS));
        assert!(all.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!((all[0].start, all[all.len() - 1].end), (0, 700_000));
    }

    #[test]
    fn plans_bound_a_campaign() {
        let free = crate::tiers::tier("free").unwrap();
        let mut parsed = Parsed {
            contacts: vec![
                Contact {
                    phone_number: "+14155550100".into(),
                    first_name: None,
                    last_name: None,
                    timezone: None,
                    extra_fields: None,
                };
                free.max_contacts_per_campaign as usize
            ],
            ..Parsed::default()
        };
        assert!(check_size(&parsed, free).is_ok());
        parsed.contacts.push(parsed.contacts[0].clone());
        let err = check_size(&parsed, free).unwrap_err();
        assert_eq!(err.code, "CONTACT_LIMIT_REACHED");
        assert!(check_size(&parsed, crate::tiers::tier("pro").unwrap()).is_ok());
    }

    #[test]
    fn numbers_become_e164() {
        for (raw, want) in [
            ("+1 (415) 555-0123", "+14155550123"),
            ("0044 20 7946 0958", "+442079460958"),
            ("415.555.0123", "+14155550123"),
            (" +33 6 12 34 56 78 ", "+33612345678"),
        ] {
            assert_eq!(normalize_phone(raw).unwrap(), want, "{raw}");
        }
        for bad in [
            "",
            "12345",
            "+0123456789",
            "+1234567",
            "+1415555012345678",
            "=1+2",
            "41555501234",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_are_numbered_as_in_the_file() {
        let p = parse(b"Phone,First\r\n+14155550100,Ann\r\nnope,Bo\r\n\r\n+1 415 555 0100,Dup\n\"=HYPERLINK(\"\"x\"\")\",\n").unwrap();
        assert_eq!(p.rows, 4);
        assert_eq!(p.contacts.len(), 1);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.invalid.iter().map(|r| r.row).collect::<Vec<_>>(), [3, 6]);
        assert_eq!(parse(b"name\nx\n").unwrap_err(), FileError::NoPhoneColumn);
        assert_eq!(parse(b"phone\n\xff\n").unwrap_err(), FileError::NotUtf8);
        let p = parse(
            b"phone,timezone\n+14155550100,Asia/Tokyo\n+14155550101,\n+14155550102,Mars/Base\n",
        )
        .unwrap();
        assert_eq!(p.contacts[0].timezone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(p.contacts[1].timezone, None);
        let extra =
            parse(b"phone,First,Appointment Time,Notes\n+14155550100,Ann,Tue 10:00,\n").unwrap();
        assert_eq!(
            extra.contacts[0].extra_fields.as_deref(),
            Some(r#"{"appointment_time":"Tue 10:00"}"#)
        );
        assert_eq!(p.invalid[0].row, 4);
    }
}
