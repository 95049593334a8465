//! Properties of the parsers that read strangers' bytes, checked on
//! generated inputs (proptest; the same properties the fuzz targets in
//! `fuzz/` search for at length). Case counts are bounded so the suite
//! stays fast; a failure prints the smallest input proptest found.

use proptest::prelude::*;
use voxflow::fuzzing::{
    check_e164, hook_url, json_body, normalize_phone, parse_csv, read_frame, sentence_end,
    signature_matches, twilio_form, twilio_signature, twilio_signed_data, twiml_hang_up,
    twiml_say_and_gather, Frame, Read, JSON_BODIES,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        // The failures proptest saves would be files beside the sources.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// A valid E.164 number: + then a country code not starting with 0, 8 to
/// 15 digits in all.
fn e164() -> impl Strategy<Value = String> {
    ("[1-9]", "[0-9]{7,14}").prop_map(|(first, rest)| format!("+{first}{rest}"))
}

/// `number` as people type it: separators between the digits, the + as
/// 00 sometimes.
fn typed(number: String) -> impl Strategy<Value = String> {
    let digits: Vec<char> = number.trim_start_matches('+').chars().collect();
    (
        any::<bool>(),
        proptest::collection::vec(
            prop::sample::select(vec!["", "", " ", "-", ".", "(", ")"]),
            digits.len(),
        ),
    )
        .prop_map(move |(zeros, seps)| {
            let mut out = String::from(if zeros { "00" } else { "+" });
            for (d, sep) in digits.iter().zip(seps) {
                out.push(*d);
                out.push_str(sep);
            }
            format!("  {out} ")
        })
}

/// `text` as XML 1.0 can hold it.
fn xml_text(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        })
        .collect()
}

fn element_texts(twiml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(twiml).unwrap_or_else(|e| panic!("{e}: {twiml:?}"));
    assert_eq!(doc.root_element().tag_name().name(), "Response");
    doc.root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| {
            let text = n.children().filter_map(|t| t.text()).collect();
            (n.tag_name().name().to_string(), text)
        })
        .collect()
}

/// One data row of a generated CSV file, and what the import must make of
/// it.
#[derive(Debug, Clone)]
enum Row {
    /// A valid number no earlier row has, as typed.
    Number(String),
    /// An earlier row's number, typed differently.
    Again(String),
    /// A cell that is no phone number.
    Junk(String),
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec((0..3u8, e164(), "[a-z =+\"]{0,12}", any::<bool>()), 0..40).prop_map(
        |cells| {
            let mut numbers: Vec<String> = Vec::new();
            cells
                .into_iter()
                .map(|(kind, number, junk, spaced)| match kind {
                    0 if !numbers.contains(&number) => {
                        numbers.push(number.clone());
                        let shown = if spaced {
                            number.replacen('+', "00", 1)
                        } else {
                            number
                        };
                        Row::Number(shown)
                    }
                    1 if !numbers.is_empty() => {
                        let n = junk.len() % numbers.len();
                        let again = format!(" {} ", numbers[n]);
                        Row::Again(again)
                    }
                    _ => Row::Junk(format!("x{junk}")),
                })
                .collect()
        },
    )
}

/// A CSV cell holding `text`, quoted as a spreadsheet writes it.
fn cell(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn a_normalised_number_is_e164_and_normalises_to_itself(raw in ".{0,24}") {
        if let Ok(number) = normalize_phone(&raw) {
            prop_assert!(check_e164("phone_number", &number).is_ok());
            prop_assert_eq!(normalize_phone(&number), Ok(number));
        } else {
            prop_assert!(check_e164("phone_number", &raw).is_err());
        }
    }

    #[test]
    fn a_number_typed_with_separators_is_the_number(
        (number, shown) in e164().prop_flat_map(|n| (Just(n.clone()), typed(n)))
    ) {
        prop_assert_eq!(normalize_phone(&shown), Ok(number));
    }

    #[test]
    fn the_import_counts_every_row_once(rows in rows(), crlf in any::<bool>()) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut file = format!("First,Phone{end}");
        for (i, row) in rows.iter().enumerate() {
            let phone = match row {
                Row::Number(s) | Row::Again(s) | Row::Junk(s) => s,
            };
            file.push_str(&format!("{},{}{end}", cell(&format!("n{i}")), cell(phone)));
        }
        let parsed = parse_csv(file.as_bytes()).expect("a well-formed file");
        let distinct = rows.iter().filter(|r| matches!(r, Row::Number(..))).count();
        let again = rows.iter().filter(|r| matches!(r, Row::Again(..))).count();
        prop_assert_eq!(parsed.rows, rows.len() as u64);
        prop_assert_eq!(parsed.contacts.len(), distinct);
        prop_assert_eq!(parsed.duplicates, again as u64);
        prop_assert_eq!(parsed.invalid_count, (rows.len() - distinct - again) as u64);
        // Bad rows are named by their line in the file (the header is 1).
        let junk_lines: Vec<u64> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Row::Junk(_)))
            .map(|(i, _)| i as u64 + 2)
            .collect();
        let listed: Vec<u64> = parsed.invalid.iter().map(|r| r.row).collect();
        prop_assert_eq!(listed, junk_lines);
    }

    #[test]
    fn any_bytes_import_or_fail_with_counts_that_add_up(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = parse_csv(&bytes) {
            prop_assert_eq!(p.contacts.len() as u64 + p.duplicates + p.invalid_count, p.rows);
        }
    }

    #[test]
    fn a_twilio_signature_verifies_for_exactly_what_was_signed(
        token in "[A-Za-z0-9]{32}",
        url in "https://[a-z.]{1,12}/api/calls/twilio/status/[a-f0-9-]{1,8}",
        params in proptest::collection::vec(("[A-Za-z]{1,8}", ".{0,10}"), 0..6),
        changed in ".{0,10}",
        at in any::<prop::sample::Index>(),
    ) {
        let params: Vec<(String, String)> = params;
        let signature = twilio_signature(&token, &url, &params);
        prop_assert!(signature_matches(&token, &url, &params, &signature));
        let reversed: Vec<_> = params.iter().rev().cloned().collect();
        prop_assert!(signature_matches(&token, &url, &reversed, &signature));
        let longer = format!("{url}/");
        prop_assert!(!signature_matches(&token, &longer, &params, &signature));
        let mut other = token.clone().into_bytes();
        other[at.index(32)] = if other[at.index(32)] == b'a' { b'b' } else { b'a' };
        let other = String::from_utf8(other).expect("ASCII");
        prop_assert!(!signature_matches(&other, &url, &params, &signature));
        if !params.is_empty() {
            let mut tampered = params.clone();
            tampered[at.index(params.len())].1 = changed;
            let same = twilio_signed_data(&url, &tampered) == twilio_signed_data(&url, &params);
            prop_assert_eq!(signature_matches(&token, &url, &tampered, &signature), same);
        }
    }

    #[test]
    fn a_webhook_form_reads_back_what_was_encoded(
        params in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..6)
    ) {
        let params: Vec<(String, String)> = params;
        let mut form = String::new();
        for (name, value) in &params {
            if !form.is_empty() {
                form.push('&');
            }
            form.push_str(&format!("{}={}", percent(name), percent(value)));
        }
        prop_assert_eq!(twilio_form(form.as_bytes()), Ok(params));
    }

    #[test]
    fn any_json_body_is_read_or_refused_with_a_4xx_envelope(
        kind in 0..JSON_BODIES.len(),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            json_value().prop_map(|v| v.to_string().into_bytes()),
        ],
    ) {
        if let Err(refused) = json_body(kind, Some("application/json"), body.clone()) {
            prop_assert!(refused.status.is_client_error(), "{} {}", JSON_BODIES[kind], refused.status);
            let envelope: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON");
            prop_assert_eq!(&envelope["success"], false);
            prop_assert_eq!(&envelope["code"], refused.code);
            if std::str::from_utf8(&body).map_or(true, |t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_err()) {
                // serde reads as it goes: a wrong type may come first.
                prop_assert_eq!(refused.status.as_u16(), 400);
                prop_assert!(matches!(refused.code, "INVALID_JSON" | "VALIDATION_ERROR"));
            }
        }
        let refused = json_body(kind, Some("text/plain"), body).expect_err("not JSON");
        prop_assert_eq!(refused.status.as_u16(), 415);
    }

    #[test]
    fn browser_audio_passes_through_only_in_whole_frames(len in 0usize..7000, byte in any::<u8>()) {
        let pcm = vec![byte; len];
        let read = read_frame(false, Frame::Binary(pcm.clone()));
        if len % 2 == 0 && (320..=6400).contains(&len) {
            prop_assert_eq!(read, Read::Audio(pcm));
        } else {
            prop_assert_eq!(read, Read::Bad("INVALID_AUDIO"));
        }
    }

    #[test]
    fn twilio_media_is_the_base64_audio(audio in proptest::collection::vec(any::<u8>(), 1..400)) {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.encode(&audio);
        let event = serde_json::json!({"event": "media", "media": {"track": "inbound", "payload": payload}});
        prop_assert_eq!(read_frame(true, Frame::Text(event.to_string())), Read::Audio(audio));
    }

    #[test]
    fn a_typed_turn_is_its_trimmed_text(text in ".{0,40}") {
        let frame = serde_json::json!({"type": "text", "text": text}).to_string();
        let read = read_frame(false, Frame::Text(frame));
        if text.trim().is_empty() {
            prop_assert_eq!(read, Read::Bad("INVALID_FRAME"));
        } else {
            prop_assert_eq!(read, Read::Text(text.trim().to_string()));
        }
    }

    #[test]
    fn replies_are_cut_only_after_a_sentence_ends(text in "[a-z .!?\n]{0,40}") {
        let bytes = text.as_bytes();
        let first = (1..bytes.len()).find(|&i| {
            matches!(bytes[i - 1], b'.' | b'!' | b'?' | b'\n') && bytes[i].is_ascii_whitespace()
        });
        prop_assert_eq!(sentence_end(&text), first);
    }

    #[test]
    fn twiml_is_well_formed_and_says_the_text(
        text in any::<String>(),
        public in "https://[a-z&<>\"'.]{1,16}",
        silences in any::<u32>(),
    ) {
        let run_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let twiml = twiml_say_and_gather(&public, run_id, &text, silences);
        let gather = hook_url(&public, "gather", run_id);
        let next = silences.saturating_add(1);
        prop_assert_eq!(
            element_texts(&twiml),
            vec![
                ("Say".to_string(), xml_text(&text)),
                ("Gather".to_string(), String::new()),
                ("Redirect".to_string(), format!("{gather}?silence={next}")),
            ]
        );
        let bye = element_texts(&twiml_hang_up(Some(&text)));
        prop_assert_eq!(bye, vec![("Say".to_string(), xml_text(&text)), ("Hangup".to_string(), String::new())]);
    }
}

/// `s` percent-encoded for a form body (every byte but letters and digits).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Small JSON objects with the API's field names and any kind of value.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let names = prop::sample::select(vec![
        "email",
        "password",
        "name",
        "type",
        "agent_id",
        "run_id",
        "message",
        "phone_number",
        "is_active",
        "max_agents",
        "api_key",
        "account_sid",
        "auth_token",
        "llm_provider",
        "disposition",
        "current_password",
        "new_password",
        "role",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(2, 8, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(serde_json::Value::from)
    });
    proptest::collection::btree_map(names, value, 0..5).prop_map(|m| {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    })
}

// What the fuzz runs found, each kept as the input that failed.

/// A file whose lines end in a lone CR (old Mac exports): the reader
/// splits rows there, and bad rows were numbered as if it did not
/// (fuzz/corpus/csv_import/crash-lone-cr-rows).
#[test]
fn rows_after_lone_cr_line_ends_are_numbered_by_their_line() {
    let parsed = parse_csv(b"Phone,First\r+14155550100,Ann\rnope,Bo\r\r+1 415 555 0199,Cy\rbad\n")
        .expect("a file");
    assert_eq!(parsed.rows, 4);
    assert_eq!(parsed.contacts.len(), 2);
    let rows: Vec<u64> = parsed.invalid.iter().map(|r| r.row).collect();
    assert_eq!(rows, [3, 6]);
    let found = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/csv_import/crash-lone-cr-rows"
    ))
    .expect("corpus file");
    let parsed = parse_csv(&found).expect("a file");
    let mut last = 1;
    for bad in &parsed.invalid {
        assert!(bad.row > last, "{:?}", parsed.invalid);
        last = bad.row;
    }
}

/// The agent's words with a CRLF came back from the TwiML with the CR
/// gone, and a control character made the TwiML unreadable to any XML
/// parser, Twilio's included (fuzz/corpus/twiml/crash-cr-lost).
#[test]
fn twiml_keeps_line_ends_and_drops_what_xml_cannot_carry() {
    let run_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let twiml = twiml_say_and_gather(
        "https://h",
        run_id,
        "Line one\r\nline\ttwo\u{1}\u{ffff}.",
        0,
    );
    assert_eq!(
        element_texts(&twiml)[0],
        ("Say".to_string(), "Line one\r\nline\ttwo.".to_string())
    );
    let bye = twiml_hang_up(Some("a\u{0}b\u{1b}[0m"));
    assert_eq!(element_texts(&bye)[0].1, "ab[0m");
}

/// `?silence=4294967295` on a signed URL made the next redirect's count
/// overflow (a panic in a debug build).
#[test]
fn the_silence_count_does_not_overflow() {
    let twiml = twiml_say_and_gather("https://h", "r1", "Hello?", u32::MAX);
    assert_eq!(
        element_texts(&twiml)[2].1,
        format!("https://h/api/calls/twilio/gather/r1?silence={}", u32::MAX)
    );
}

/// A body whose wrong type comes before its broken syntax is a 400 for the
/// type (serde reads as it goes), never anything else
/// (fuzz/corpus/json_bodies/crash-type-before-syntax); a number past f64's
/// range in an unknown field is JSON, skipped
/// (fuzz/corpus/json_bodies/crash-huge-number).
#[test]
fn a_wrong_type_before_broken_syntax_is_a_400() {
    let refused =
        json_body(1, Some("application/json"), br#""satv" }{"#.to_vec()).expect_err("refused");
    assert_eq!(
        (refused.status.as_u16(), refused.code),
        (400, "VALIDATION_ERROR")
    );
    let refused =
        json_body(4, Some("application/json"), b"{\"email\":\xff".to_vec()).expect_err("refused");
    assert_eq!(
        (refused.status.as_u16(), refused.code),
        (400, "INVALID_JSON")
    );
}

/// Well-formed JSON that serde_json refuses under "syntax" is JSON of the
/// wrong shape: a 400 `VALIDATION_ERROR`, not "not valid JSON". A number
/// past f64's range, as a whole body and inside a known field
/// (fuzz/corpus/json_bodies/crash-number-out-of-range), and an array longer
/// than the fields it fills (fuzz/corpus/json_bodies/crash-long-array).
#[test]
fn well_formed_json_of_the_wrong_shape_is_a_validation_error() {
    for body in [
        &b"1e1111"[..],
        br#"{"email": 1e1111, "password": "x"}"#,
        b"[\r\"\"\r,\r\r\"\"\r,\r\r\"\"\r]",
    ] {
        let refused =
            json_body(5, Some("application/problem+json"), body.to_vec()).expect_err("refused");
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (400, "VALIDATION_ERROR"),
            "{}",
            refused.body
        );
    }
}

/// A field named by the empty string is refused like any unknown field,
/// and the error still names it (fuzz/corpus/json_bodies/crash-empty-field-name).
#[test]
fn an_unknown_field_with_an_empty_name_is_named() {
    let refused =
        json_body(2, Some("application/json"), br#"{"": 1}"#.to_vec()).expect_err("refused");
    assert_eq!(
        (refused.status.as_u16(), refused.code),
        (400, "VALIDATION_ERROR")
    );
    let envelope: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(envelope["errors"][0]["field"], "\"\"", "{envelope}");
}

/// A body is refused when it is not UTF-8 anywhere, also inside the value
/// of a field the request ignores, which serde_json skips unchecked
/// (fuzz/corpus/json_bodies/crash-not-utf8-ignored).
#[test]
fn a_body_with_bytes_that_are_no_utf8_is_invalid_json() {
    let body = b"[\r\"\",\"\"\r,\r\r\"\xff\xff\"]".to_vec();
    let refused = json_body(8, Some("application/json; charset=utf-8"), body).expect_err("refused");
    assert_eq!(
        (refused.status.as_u16(), refused.code),
        (400, "INVALID_JSON")
    );
}
