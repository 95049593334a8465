//! Any bytes as an uploaded campaign CSV: the report adds up, and every
//! imported contact is one a campaign may call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxflow::campaigns::import::MAX_INVALID_LISTED;
use voxflow::fuzzing::{check_e164, parse_csv, FileError};

fuzz_target!(|data: &[u8]| {
    let parsed = match parse_csv(data) {
        Ok(p) => p,
        Err(FileError::NotUtf8) => {
            assert!(std::str::from_utf8(data).is_err(), "valid UTF-8 refused");
            return;
        }
        Err(_) => return,
    };
    // Every data row is counted exactly once.
    assert_eq!(
        parsed.contacts.len() as u64 + parsed.duplicates + parsed.invalid_count,
        parsed.rows,
        "imported + duplicates + invalid != rows"
    );
    let listed = parsed.invalid.len() as u64;
    assert_eq!(listed, parsed.invalid_count.min(MAX_INVALID_LISTED as u64));
    // Bad rows are named by their line in the file, after the header, in order.
    // Lines end with LF, CRLF or a lone CR.
    let breaks = data
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && data.get(i + 1) != Some(&b'\n')))
        .count();
    let lines = breaks as u64 + 1;
    let mut last = 1;
    for bad in &parsed.invalid {
        assert!(
            bad.row > last,
            "row numbers not increasing: {:?}",
            parsed.invalid
        );
        assert!(
            bad.row <= lines,
            "row {} past the file's {lines} lines",
            bad.row
        );
        assert!(!bad.reason.is_empty());
        last = bad.row;
    }
    let mut seen = std::collections::HashSet::new();
    for c in &parsed.contacts {
        assert!(check_e164("phone_number", &c.phone_number).is_ok(), "{c:?}");
        assert!(seen.insert(&c.phone_number), "duplicate imported: {c:?}");
        for name in [&c.first_name, &c.last_name].into_iter().flatten() {
            assert!(!name.is_empty() && name.trim() == name && name.chars().count() <= 100);
        }
        if let Some(extra) = &c.extra_fields {
            let v: serde_json::Value = serde_json::from_str(extra).expect("extra fields are JSON");
            let object = v.as_object().expect("extra fields are an object");
            assert!(!object.is_empty() && extra.len() <= 8192);
            assert!(object
                .values()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty())));
        }
    }
});
