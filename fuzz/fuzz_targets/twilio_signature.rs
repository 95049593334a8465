//! Twilio's webhook forms and their signatures: any body parses into
//! parameters or is a 4xx, the parse round-trips, and a signature verifies
//! exactly when the URL and parameters make the same signed text as the
//! ones signed — never for another token, another URL or other values.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{signature_matches, twilio_form, twilio_signature, twilio_signed_data};

#[derive(Arbitrary, Debug)]
enum Change {
    UrlByte { at: usize, byte: u8 },
    UrlAppend(String),
    Name { index: usize, text: String },
    Value { index: usize, text: String },
    Drop(usize),
    Add(String, String),
    Token { at: usize, to: u8 },
    Signature { at: usize, to: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    token: [u8; 32],
    url: String,
    change: Change,
    form: Vec<u8>,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The pairs as a form body, the way Twilio encodes them.
fn encode(params: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        form.append_pair(name, value);
    }
    form.finish()
}

fuzz_target!(|input: Input| {
    // Auth tokens are 32 letters and digits (as saving one checks).
    let token: String = input
        .token
        .iter()
        .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
        .collect();
    let params = match twilio_form(&input.form) {
        Ok(p) => p,
        Err(status) => {
            assert!(status.is_client_error(), "form refused with {status}");
            return;
        }
    };
    // What the parse read is what an encoder of the same pairs sends.
    assert_eq!(
        twilio_form(encode(&params).as_bytes()).as_ref(),
        Ok(&params)
    );

    let url = input.url;
    let signature = twilio_signature(&token, &url, &params);
    assert!(signature_matches(&token, &url, &params, &signature));
    // The order on the wire is not signed.
    let reversed: Vec<_> = params.iter().rev().cloned().collect();
    assert!(signature_matches(&token, &url, &reversed, &signature));

    let (mut token2, mut url2, mut params2, mut signature2) = (
        token.clone(),
        url.clone(),
        params.clone(),
        signature.clone(),
    );
    match input.change {
        Change::UrlByte { at, byte } => {
            let mut bytes = url2.into_bytes();
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            url2 = String::from_utf8_lossy(&bytes).into_owned();
        }
        Change::UrlAppend(tail) => url2.push_str(&tail),
        Change::Name { index, text } if !params2.is_empty() => {
            let i = index % params2.len();
            params2[i].0 = text;
        }
        Change::Value { index, text } if !params2.is_empty() => {
            let i = index % params2.len();
            params2[i].1 = text;
        }
        Change::Drop(index) if !params2.is_empty() => {
            params2.remove(index % params2.len());
        }
        Change::Add(name, value) => params2.push((name, value)),
        Change::Token { at, to } => {
            let mut bytes = token2.into_bytes();
            bytes[at % 32] = ALNUM[to as usize % ALNUM.len()];
            token2 = String::from_utf8(bytes).expect("letters and digits");
        }
        Change::Signature { at, to } => {
            let mut bytes = signature2.into_bytes();
            let at = at % bytes.len();
            bytes[at] = to;
            signature2 = String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => {}
    }
    let same_text = twilio_signed_data(&url2, &params2) == twilio_signed_data(&url, &params);
    let same_signature = signature2.trim() == signature.trim();
    let expected = token2 == token && same_text && same_signature;
    assert_eq!(
        signature_matches(&token2, &url2, &params2, &signature2),
        expected,
        "token changed: {}, signed text same: {same_text}, signature same: {same_signature}",
        token2 != token
    );
});
