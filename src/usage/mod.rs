//! Usage and reports: this month's figures against the quota, the run
//! history, and daily reports over one local day of an IANA time zone (as
//! JSON or CSV).

pub mod csv;
pub mod routes;

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::http::filters::check_date;

/// The warning level of `percent` of the quota used: the highest threshold
/// reached.
pub fn warning(percent: f64) -> &'static str {
    if percent >= 100.0 {
        "100"
    } else if percent >= 90.0 {
        "90"
    } else if percent >= 80.0 {
        "80"
    } else {
        "none"
    }
}

/// `used` as a percentage of `quota`, to 2 places. A quota of 0 allows
/// nothing, so it counts as fully used.
pub fn percent_used(used: f64, quota: i64) -> f64 {
    if quota <= 0 {
        return 100.0;
    }
    (used / quota as f64 * 10_000.0).round() / 100.0
}

/// A duration as the first edition printed it: hours and two-digit
/// minutes (`1h 02m`, `0h 45m`), seconds dropped.
pub fn hours_minutes(seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    format!("{}h {:02}m", minutes / 60, minutes % 60)
}

/// The UTC instants bounding one local day: `[start, end)`.
#[derive(Debug, Clone)]
pub struct DayWindow {
    pub date: String,
    pub tz: TimeZone,
    /// The zone's IANA name as the database spells it.
    pub tz_name: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// How stored timestamps are written (`2025-01-31T09:30:00.000Z`), so a
/// text comparison in SQL orders them as instants.
const DB_TIME: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

impl DayWindow {
    /// The local day `date` (`YYYY-MM-DD`) in the zone `timezone` (an IANA
    /// name, `UTC` when absent). It starts at the day's first local instant
    /// (midnight, or the end of a gap when midnight is skipped) and ends at
    /// the next day's, so a day of a DST change lasts 23 or 25 hours.
    pub fn new(date: &str, timezone: Option<&str>) -> Result<DayWindow, ApiError> {
        let date = check_date("date", date)?;
        let name = timezone.unwrap_or("UTC");
        let tz = (name.len() <= 64)
            .then(|| TimeZone::get(name).ok())
            .flatten()
            .ok_or_else(|| {
                ApiError::field(
                    "timezone",
                    "must be an IANA time zone name such as Europe/Berlin",
                )
            })?;
        let out_of_range = || ApiError::field("date", "is out of the supported range");
        let day: Date = date.parse().map_err(|_| out_of_range())?;
        let start = day.to_zoned(tz.clone()).map_err(|_| out_of_range())?;
        let end = day
            .tomorrow()
            .and_then(|d| d.to_zoned(tz.clone()))
            .map_err(|_| out_of_range())?;
        Ok(DayWindow {
            date,
            tz_name: tz.iana_name().unwrap_or(name).to_string(),
            tz,
            start: start.timestamp(),
            end: end.timestamp(),
        })
    }

    /// The bounds as the database writes timestamps.
    pub fn db_bounds(&self) -> (String, String) {
        (
            self.start.strftime(DB_TIME).to_string(),
            self.end.strftime(DB_TIME).to_string(),
        )
    }

    /// A stored UTC timestamp as local time in this window's zone, RFC 3339
    /// with its offset; a value that does not parse is shown as stored.
    pub fn local_time(&self, stored: &str) -> String {
        stored
            .parse::<Timestamp>()
            .map(|t| {
                t.to_zoned(self.tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            })
            .unwrap_or_else(|_| stored.to_string())
    }

    pub fn json(&self) -> Value {
        json!({
            "start": self.start.to_string(),
            "end": self.end.to_string(),
            "hours": (self.end.as_second() - self.start.as_second()) as f64 / 3600.0,
        })
    }
}

/// A completed run as reports show it.
#[derive(Debug, Clone)]
pub struct ReportRun {
    pub id: String,
    pub agent_name: String,
    pub phone_number: Option<String>,
    pub disposition: Option<String>,
    pub completed_at: String,
    pub duration_seconds: i64,
    pub tokens: f64,
    /// What its LLM turns cost, in micro-dollars.
    pub api_costs_micros: i64,
}

/// Dispositions that count as a transfer to a person: the first edition
/// wrote both spellings.
pub const TRANSFER_DISPOSITIONS: [&str; 2] = ["transfer", "transferred"];

/// What a run without a disposition is counted under.
pub const NO_DISPOSITION: &str = "unknown";

/// The duration buckets, by their lower edge in seconds: a run of `d`
/// seconds falls in the last bucket whose edge is ≤ `d`, so edges are
/// inclusive below and exclusive above (10 s is in `10-30`).
pub const BUCKETS: [(i64, &str); 5] = [
    (0, "0-10"),
    (10, "10-30"),
    (30, "30-60"),
    (60, "60-120"),
    (120, "120+"),
];

/// The bucket of a run lasting `seconds`.
pub fn bucket(seconds: i64) -> &'static str {
    BUCKETS
        .iter()
        .rev()
        .find(|(edge, _)| seconds >= *edge)
        .map_or(BUCKETS[0].1, |(_, name)| name)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailyReport {
    pub date: String,
    pub timezone: String,
    pub agent_id: Option<String>,
    /// The local day's start and end in UTC.
    #[schema(value_type = Object)]
    pub window: Value,
    pub total_calls: usize,
    pub total_duration_seconds: i64,
    pub total_tokens: f64,
    /// What the LLM turns of these runs cost, in dollars (summed in
    /// micro-dollars, so it matches the turns exactly).
    pub total_api_costs: f64,
    pub transfers: usize,
    pub dispositions: BTreeMap<String, usize>,
    pub duration_buckets: BTreeMap<&'static str, usize>,
    /// The first edition's names for `total_calls`, `transfers`,
    /// `dispositions` and `duration_buckets`, with the same values.
    pub total_runs: usize,
    pub transfer_dispositions: usize,
    pub disposition_distribution: BTreeMap<String, usize>,
    pub call_duration_distribution: BTreeMap<&'static str, usize>,
}

impl DailyReport {
    pub fn new(window: &DayWindow, agent_id: Option<String>, runs: &[ReportRun]) -> DailyReport {
        let mut dispositions = BTreeMap::new();
        let mut duration_buckets: BTreeMap<&'static str, usize> =
            BUCKETS.iter().map(|(_, name)| (*name, 0)).collect();
        let mut transfers = 0;
        // Tokens are summed in whole cents, so the total never drifts.
        let mut cents = 0i64;
        for run in runs {
            let disposition = run.disposition.as_deref().unwrap_or(NO_DISPOSITION);
            *dispositions.entry(disposition.to_string()).or_insert(0) += 1;
            if TRANSFER_DISPOSITIONS.contains(&disposition) {
                transfers += 1;
            }
            *duration_buckets
                .entry(bucket(run.duration_seconds))
                .or_insert(0) += 1;
            cents += (run.tokens * 100.0).round() as i64;
        }
        DailyReport {
            date: window.date.clone(),
            timezone: window.tz_name.clone(),
            agent_id,
            window: window.json(),
            total_calls: runs.len(),
            total_duration_seconds: runs.iter().map(|r| r.duration_seconds).sum(),
            total_tokens: cents as f64 / 100.0,
            total_api_costs: runs.iter().map(|r| r.api_costs_micros).sum::<i64>() as f64
                / 1_000_000.0,
            transfers,
            total_runs: runs.len(),
            transfer_dispositions: transfers,
            disposition_distribution: dispositions.clone(),
            call_duration_distribution: duration_buckets.clone(),
            dispositions,
            duration_buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_follow_the_thresholds() {
        assert_eq!(warning(0.0), "none");
        assert_eq!(warning(79.99), "none");
        assert_eq!(warning(80.0), "80");
        assert_eq!(warning(90.0), "90");
        assert_eq!(warning(99.99), "90");
        assert_eq!(warning(100.0), "100");
        assert_eq!(warning(250.0), "100");
        assert_eq!(percent_used(8.0, 10), 80.0);
        assert_eq!(percent_used(1.0, 3), 33.33);
        assert_eq!(percent_used(0.0, 0), 100.0);
    }

    #[test]
    fn durations_print_as_hours_and_minutes() {
        assert_eq!(hours_minutes(0), "0h 00m");
        assert_eq!(hours_minutes(59), "0h 00m");
        assert_eq!(hours_minutes(45 * 60 + 30), "0h 45m");
        assert_eq!(hours_minutes(3720), "1h 02m");
        assert_eq!(hours_minutes(100 * 3600 + 59 * 60), "100h 59m");
    }

    #[test]
    fn bucket_edges_are_inclusive_below() {
        let cases = [
            (0, "0-10"),
            (9, "0-10"),
            (10, "10-30"),
            (29, "10-30"),
            (30, "30-60"),
            (59, "30-60"),
            (60, "60-120"),
            (119, "60-120"),
            (120, "120+"),
            (86_400, "120+"),
        ];
        for (secs, name) in cases {
            assert_eq!(bucket(secs), name, "{secs}");
        }
    }

    #[test]
    fn local_days_follow_the_zone_and_its_dst_changes() {
        let w = DayWindow::new("2025-06-01", None).unwrap();
        assert_eq!(w.tz_name, "UTC");
        assert_eq!(
            w.db_bounds(),
            (
                "2025-06-01T00:00:00.000Z".to_string(),
                "2025-06-02T00:00:00.000Z".to_string()
            )
        );
        let w = DayWindow::new("2025-06-01", Some("Europe/Berlin")).unwrap();
        assert_eq!(w.db_bounds().0, "2025-05-31T22:00:00.000Z");
        // Spring forward: 23 hours; fall back: 25.
        let w = DayWindow::new("2025-03-30", Some("Europe/Berlin")).unwrap();
        assert_eq!(w.json()["hours"], 23.0);
        assert_eq!(
            w.db_bounds(),
            (
                "2025-03-29T23:00:00.000Z".to_string(),
                "2025-03-30T22:00:00.000Z".to_string()
            )
        );
        let w = DayWindow::new("2025-10-26", Some("Europe/Berlin")).unwrap();
        assert_eq!(w.json()["hours"], 25.0);
        assert_eq!(
            w.local_time("2025-10-26T23:30:00.000Z"),
            "2025-10-27T00:30:00+01:00"
        );
        for bad in [
            "Mars/Olympus",
            "",
            "../../etc/passwd",
            "EST5EDT,M3.2.0,M11.1.0",
        ] {
            let e = DayWindow::new("2025-06-01", Some(bad)).unwrap_err();
            assert_eq!(e.errors[0].field, "timezone", "{bad}");
        }
        assert_eq!(
            DayWindow::new("2025-02-30", None).unwrap_err().errors[0].field,
            "date"
        );
    }
}
