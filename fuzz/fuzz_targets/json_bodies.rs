//! Any bytes, with any of the usual content types, as each of the API's
//! JSON request bodies: read, or refused with a 4xx in the API's envelope —
//! never a 5xx, never a panic — and refused for the right reason.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{json_body, JSON_BODIES};

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/problem+json"),
    None,
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
];

#[derive(Arbitrary, Debug)]
struct Input {
    kind: u8,
    content_type: u8,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let kind = input.kind as usize % JSON_BODIES.len();
    let content_type = CONTENT_TYPES[input.content_type as usize % CONTENT_TYPES.len()];
    let is_json =
        content_type.is_some_and(|ct| ct.starts_with("application/") && ct.contains("json"));
    // JSON's grammar bounds no number (`1e999` is JSON): checked without
    // turning numbers into f64, as the extractor skips unknown fields.
    // JSON is UTF-8 (skipping a string does not check it).
    let syntax_ok = std::str::from_utf8(&input.body)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    match json_body(kind, content_type, input.body.clone()) {
        Ok(()) => assert!(
            is_json && syntax_ok,
            "{} read a body that is not JSON",
            JSON_BODIES[kind]
        ),
        Err(refused) => {
            assert!(
                refused.status.is_client_error(),
                "{} answered {}",
                JSON_BODIES[kind],
                refused.status
            );
            let envelope: serde_json::Value =
                serde_json::from_str(&refused.body).expect("the error is a JSON envelope");
            assert_eq!(envelope["success"], false);
            assert_eq!(envelope["code"], refused.code);
            assert!(envelope["message"].as_str().is_some_and(|m| !m.is_empty()));
            if let Some(errors) = envelope.get("errors") {
                for e in errors.as_array().expect("errors is a list") {
                    assert!(
                        e["field"].as_str().is_some_and(|f| !f.is_empty()),
                        "{envelope}"
                    );
                    assert!(
                        e["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{envelope}"
                    );
                }
            }
            if !is_json {
                assert_eq!(refused.code, "UNSUPPORTED_MEDIA_TYPE", "{envelope}");
            } else if syntax_ok {
                assert_eq!(refused.code, "VALIDATION_ERROR", "{envelope}");
            } else {
                // serde reads as it goes: a wrong type met before the
                // broken syntax is reported as the wrong type (both 400).
                assert_eq!(refused.status.as_u16(), 400, "{envelope}");
                assert!(
                    matches!(refused.code, "INVALID_JSON" | "VALIDATION_ERROR"),
                    "{envelope}"
                );
            }
        }
    }
});
