//! Calling windows: a campaign may call only between two local times
//! (e.g. 09:00–20:00) in each contact's time zone, taken from the CSV's
//! `timezone` column or else from the number's country. A country that
//! spans several zones must be inside the window in all of its main zones,
//! so 09:00 in New York is not 06:00 in Los Angeles.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A time of day, minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock(u16);

impl Clock {
    /// `HH:MM`, 00:00 to 23:59.
    pub fn parse(s: &str) -> Option<Clock> {
        let (h, m) = s.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(Clock(h * 60 + m))
    }
}

/// Local calling hours; `start > end` wraps past midnight (20:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Clock,
    pub end: Clock,
}

impl Window {
    /// The campaign's stored window, when it has both ends.
    pub fn from_columns(start: Option<&str>, end: Option<&str>) -> Option<Window> {
        Some(Window {
            start: Clock::parse(start?)?,
            end: Clock::parse(end?)?,
        })
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start.0 <= self.end.0 {
            (self.start.0..self.end.0).contains(&minute)
        } else {
            minute >= self.start.0 || minute < self.end.0
        }
    }

    fn open_in(&self, at: Timestamp, zones: &[TimeZone]) -> bool {
        zones.iter().all(|tz| {
            let local = at.to_zoned(tz.clone());
            let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
                .unwrap_or(0);
            self.contains(minute)
        })
    }

    /// `None` when calling is allowed at `now` in every zone; else the first
    /// minute it will be (within two days; `None` too if never, as for an
    /// empty window, which the API refuses anyway).
    pub fn next_open(&self, now: Timestamp, zones: &[TimeZone]) -> Option<Timestamp> {
        if self.open_in(now, zones) {
            return None;
        }
        // Stepping by minutes is plain and exact across DST changes, and
        // cheap: at most 2,880 checks, once per contact outside its window.
        let start = now.as_second() - now.as_second().rem_euclid(60);
        (1..=2 * 24 * 60).find_map(|i| {
            let t = Timestamp::from_second(start + i * 60).ok()?;
            self.open_in(t, zones).then_some(t)
        })
    }
}

/// Country calling codes and the zones their numbers may be in (the
/// eastern- and western-most main zones of a country that spans several).
const COUNTRY_ZONES: &[(&str, &[&str])] = &[
    ("1", &["America/New_York", "America/Los_Angeles"]),
    ("7", &["Europe/Moscow"]),
    ("20", &["Africa/Cairo"]),
    ("27", &["Africa/Johannesburg"]),
    ("30", &["Europe/Athens"]),
    ("31", &["Europe/Amsterdam"]),
    ("32", &["Europe/Brussels"]),
    ("33", &["Europe/Paris"]),
    ("34", &["Europe/Madrid"]),
    ("36", &["Europe/Budapest"]),
    ("39", &["Europe/Rome"]),
    ("40", &["Europe/Bucharest"]),
    ("41", &["Europe/Zurich"]),
    ("43", &["Europe/Vienna"]),
    ("44", &["Europe/London"]),
    ("45", &["Europe/Copenhagen"]),
    ("46", &["Europe/Stockholm"]),
    ("47", &["Europe/Oslo"]),
    ("48", &["Europe/Warsaw"]),
    ("49", &["Europe/Berlin"]),
    ("51", &["America/Lima"]),
    ("52", &["America/Mexico_City", "America/Tijuana"]),
    ("54", &["America/Argentina/Buenos_Aires"]),
    ("55", &["America/Sao_Paulo", "America/Manaus"]),
    ("56", &["America/Santiago"]),
    ("57", &["America/Bogota"]),
    ("60", &["Asia/Kuala_Lumpur"]),
    ("61", &["Australia/Sydney", "Australia/Perth"]),
    ("62", &["Asia/Jakarta", "Asia/Jayapura"]),
    ("63", &["Asia/Manila"]),
    ("64", &["Pacific/Auckland"]),
    ("65", &["Asia/Singapore"]),
    ("66", &["Asia/Bangkok"]),
    ("81", &["Asia/Tokyo"]),
    ("82", &["Asia/Seoul"]),
    ("84", &["Asia/Ho_Chi_Minh"]),
    ("86", &["Asia/Shanghai"]),
    ("90", &["Europe/Istanbul"]),
    ("91", &["Asia/Kolkata"]),
    ("92", &["Asia/Karachi"]),
    ("234", &["Africa/Lagos"]),
    ("254", &["Africa/Nairobi"]),
    ("351", &["Europe/Lisbon"]),
    ("353", &["Europe/Dublin"]),
    ("358", &["Europe/Helsinki"]),
    ("380", &["Europe/Kyiv"]),
    ("420", &["Europe/Prague"]),
    ("852", &["Asia/Hong_Kong"]),
    ("886", &["Asia/Taipei"]),
    ("966", &["Asia/Riyadh"]),
    ("971", &["Asia/Dubai"]),
    ("972", &["Asia/Jerusalem"]),
];

/// Whether `name` is a time zone this server knows (for the CSV column).
pub fn is_known_zone(name: &str) -> bool {
    TimeZone::get(name).is_ok()
}

/// The zones a contact's window is checked in: its own `timezone` when
/// known, else its number's country's (longest calling-code match), else
/// UTC.
pub fn zones_for(phone_e164: &str, timezone: Option<&str>) -> Vec<TimeZone> {
    if let Some(tz) = timezone.and_then(|t| TimeZone::get(t).ok()) {
        return vec![tz];
    }
    let digits = phone_e164.trim_start_matches('+');
    let best = COUNTRY_ZONES
        .iter()
        .filter(|(code, _)| digits.starts_with(code))
        .max_by_key(|(code, _)| code.len());
    let zones: Vec<TimeZone> = best
        .map(|(_, names)| names.iter().filter_map(|n| TimeZone::get(n).ok()).collect())
        .unwrap_or_default();
    if zones.is_empty() {
        vec![TimeZone::UTC]
    } else {
        zones
    }
}

/// `now` plus `secs` seconds.
pub fn later(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_secs(secs))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn clocks_parse_strictly() {
        assert_eq!(Clock::parse("09:00"), Some(Clock(540)));
        assert_eq!(Clock::parse("23:59"), Some(Clock(1439)));
        for bad in ["24:00", "9:00", "09:60", "0900", "", "ab:cd"] {
            assert_eq!(Clock::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_window_opens_at_its_start_in_the_contact_s_zone() {
        let w = Window::from_columns(Some("09:00"), Some("20:00")).unwrap();
        let berlin = zones_for("+4930123456", None);
        // 07:30 UTC in winter is 08:30 in Berlin: opens at 08:00 UTC.
        assert_eq!(
            w.next_open(at("2026-01-15T07:30:00Z"), &berlin),
            Some(at("2026-01-15T08:00:00Z"))
        );
        assert_eq!(w.next_open(at("2026-01-15T12:00:00Z"), &berlin), None);
        // A CSV zone wins over the country.
        let tokyo = zones_for("+4930123456", Some("Asia/Tokyo"));
        assert_eq!(
            w.next_open(at("2026-01-15T12:00:00Z"), &tokyo),
            Some(at("2026-01-16T00:00:00Z"))
        );
    }

    #[test]
    fn a_country_of_several_zones_must_be_inside_in_all() {
        let w = Window::from_columns(Some("09:00"), Some("20:00")).unwrap();
        let us = zones_for("+14155550100", None);
        // 14:00 UTC: 09:00 in New York but 06:00 in Los Angeles.
        assert_eq!(
            w.next_open(at("2026-01-15T14:00:00Z"), &us),
            Some(at("2026-01-15T17:00:00Z"))
        );
        // Past 01:00 UTC New York is past 20:00: tomorrow.
        assert_eq!(
            w.next_open(at("2026-01-16T01:30:00Z"), &us),
            Some(at("2026-01-16T17:00:00Z"))
        );
    }

    #[test]
    fn windows_may_wrap_midnight_and_unknown_countries_are_utc() {
        let w = Window::from_columns(Some("22:00"), Some("02:00")).unwrap();
        let utc = zones_for("+999123", None);
        assert_eq!(w.next_open(at("2026-01-15T23:00:00Z"), &utc), None);
        assert_eq!(
            w.next_open(at("2026-01-15T03:00:00Z"), &utc),
            Some(at("2026-01-15T22:00:00Z"))
        );
        assert!(!is_known_zone("Mars/Olympus"));
        assert!(is_known_zone("Europe/Berlin"));
    }
}
