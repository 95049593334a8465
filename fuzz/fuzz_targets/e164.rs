//! Any text as a phone number: either an error or a valid E.164 number
//! that normalises to itself, with the digits that were typed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{check_e164, normalize_phone};

fuzz_target!(|raw: &str| {
    let digits = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
    match normalize_phone(raw) {
        Ok(number) => {
            assert!(
                check_e164("phone_number", &number).is_ok(),
                "{raw:?} -> {number:?}"
            );
            assert_eq!(
                normalize_phone(&number).as_deref(),
                Ok(number.as_str()),
                "not idempotent"
            );
            // Only separators were dropped; a leading 00 became + and ten
            // bare digits got the North American +1.
            let (typed, out) = (digits(raw), digits(&number));
            assert!(
                typed == out || typed == format!("00{out}") || format!("1{typed}") == out,
                "{raw:?} -> {number:?}"
            );
        }
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                check_e164("phone_number", raw).is_err(),
                "valid E.164 refused: {raw:?}"
            );
        }
    }
});
