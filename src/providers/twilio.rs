//! Twilio: checking credentials, placing an outbound call, and checking
//! the signature Twilio puts on its webhooks.

use std::time::Duration;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};

use super::{join, read_capped, run_check, KeyCheck};
use crate::api_keys::formats::check_twilio_sid;
use crate::http::error::ApiError;

/// Twilio's answer to a new call is about a kilobyte of JSON.
const MAX_CALL_RESPONSE_BYTES: usize = 256 * 1024;

/// `GET {base}/2010-04-01/Accounts/{sid}.json` with HTTP basic auth
/// (SID, auth token).
pub async fn check_key(
    client: &reqwest::Client,
    base_url: &str,
    account_sid: &str,
    auth_token: &str,
    timeout: Duration,
) -> KeyCheck {
    // The SID becomes part of the path: a server's SID from the environment
    // has not been through the save-time check, so it is checked here.
    if check_twilio_sid("account_sid", account_sid).is_err() {
        return KeyCheck::Unsendable;
    }
    let request = client
        .get(join(
            base_url,
            &format!("2010-04-01/Accounts/{account_sid}.json"),
        ))
        .basic_auth(account_sid, Some(auth_token))
        .timeout(timeout);
    match run_check(request, timeout).await {
        // Twilio answers 404 when the token is good but belongs to another
        // account than the SID: the pair does not work.
        KeyCheck::Unexpected { status: 404 } => KeyCheck::Invalid { status: 404 },
        other => other,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("did not answer within {0} seconds")]
    Timeout(u64),
    #[error("could not be reached")]
    Unreachable,
    /// Twilio's own error code (21211: an invalid To number, …) helps the
    /// tenant; its message text is not passed on.
    #[error("refused the call (HTTP {status}{})", code.map(|c| format!(", Twilio error {c}")).unwrap_or_default())]
    Refused { status: u16, code: Option<i64> },
    #[error("sent an answer without a call SID")]
    BadReply,
    #[error("cannot be asked with this account SID")]
    BadAccountSid,
}

impl CallError {
    /// The 502 the tenant sees, naming Twilio.
    pub fn into_api_error(self) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "PROVIDER_ERROR",
            format!("The telephony provider (twilio) {self}"),
        )
        .with("provider", json!("twilio"))
    }
}

/// `POST {base}/2010-04-01/Accounts/{sid}/Calls.json` with `form` (To,
/// From, Url, …) and basic auth; Twilio's id of the new call (`CA…`).
pub async fn place_call(
    client: &reqwest::Client,
    base_url: &str,
    account_sid: &str,
    auth_token: &str,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<String, CallError> {
    if check_twilio_sid("account_sid", account_sid).is_err() {
        return Err(CallError::BadAccountSid);
    }
    let send_error = |e: reqwest::Error| {
        if e.is_timeout() {
            CallError::Timeout(timeout.as_secs())
        } else {
            CallError::Unreachable
        }
    };
    let mut response = client
        .post(join(
            base_url,
            &format!("2010-04-01/Accounts/{account_sid}/Calls.json"),
        ))
        .basic_auth(account_sid, Some(auth_token))
        .form(form)
        .timeout(timeout)
        .send()
        .await
        .map_err(send_error)?;
    let status = response.status();
    let body: Option<Value> = read_capped(&mut response, MAX_CALL_RESPONSE_BYTES)
        .await
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok());
    if !status.is_success() {
        return Err(CallError::Refused {
            status: status.as_u16(),
            code: body.as_ref().and_then(|b| b.get("code")?.as_i64()),
        });
    }
    body.as_ref()
        .and_then(|b| b.get("sid")?.as_str())
        .map(str::trim)
        .filter(|sid| !sid.is_empty() && sid.len() <= 64)
        .map(str::to_string)
        .ok_or(CallError::BadReply)
}

/// What Twilio signs: the URL it called, then every POST parameter sorted
/// by name (equal names by value), each name directly followed by its value.
fn signed_data(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

/// Whether `signature` (the `X-Twilio-Signature` header: base64 of an
/// HMAC-SHA1 under the auth token) is Twilio's for this request. The
/// comparison takes the same time wherever the first wrong byte is.
pub fn signature_matches(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(tag) = BASE64.decode(signature.trim()) else {
        return false;
    };
    // Twilio signs with SHA-1; the legacy name is ring's warning, not ours
    // to heed: the scheme is Twilio's.
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    hmac::verify(&key, signed_data(url, params).as_bytes(), &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn sign(token: &str, data: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
        BASE64.encode(hmac::sign(&key, data.as_bytes()).as_ref())
    }

    #[test]
    fn the_signed_data_is_the_url_then_sorted_names_and_values() {
        let p = pairs(&[("To", "+1800"), ("CallSid", "CA1"), ("Digits", "12")]);
        assert_eq!(
            signed_data("https://h/x?a=1", &p),
            "https://h/x?a=1CallSidCA1Digits12To+1800"
        );
    }

    #[test]
    fn only_the_right_token_url_and_params_match() {
        let url = "https://voxflow.example.com/api/calls/twilio/status/r1";
        let p = pairs(&[("CallStatus", "completed"), ("CallDuration", "60")]);
        let good = sign("token-a", &signed_data(url, &p));
        assert!(signature_matches("token-a", url, &p, &good));
        // The parameters' order on the wire does not matter.
        let reversed: Vec<_> = p.iter().rev().cloned().collect();
        assert!(signature_matches("token-a", url, &reversed, &good));
        assert!(!signature_matches("token-b", url, &p, &good));
        assert!(!signature_matches("token-a", &format!("{url}x"), &p, &good));
        let tampered = pairs(&[("CallStatus", "completed"), ("CallDuration", "6000")]);
        assert!(!signature_matches("token-a", url, &tampered, &good));
        assert!(!signature_matches("token-a", url, &p, ""));
        assert!(!signature_matches("token-a", url, &p, "not base64!"));
    }

    #[test]
    fn a_refusal_names_twilio_and_its_code() {
        let e = CallError::Refused {
            status: 400,
            code: Some(21211),
        }
        .into_api_error();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code, "PROVIDER_ERROR");
        assert_eq!(
            e.message,
            "The telephony provider (twilio) refused the call (HTTP 400, Twilio error 21211)"
        );
    }
}
