//! Twilio: checking credentials, placing an outbound call, looking calls
//! up (one by its SID, or by number and date after a crash), and checking
//! the signature Twilio puts on its webhooks. Takes validated values from
//! its callers and knows nothing of tenants or of the API's errors.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;
use serde_json::Value;

use super::{join, read_capped, run_check, KeyCheck};

/// Twilio's answer to a new call is about a kilobyte of JSON; a page of
/// fifty calls about fifty.
const MAX_CALL_RESPONSE_BYTES: usize = 256 * 1024;
const MAX_LIST_RESPONSE_BYTES: usize = 1024 * 1024;
/// Calls asked for in one look-up by number: the calls one run can match
/// are the few placed since it was created.
const LIST_PAGE_SIZE: &str = "50";

/// Whether `sid` looks like a Twilio account SID (`AC` + 32 hex digits):
/// it becomes part of a URL path, so nothing else may go there.
pub fn is_account_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `sid` looks like a Twilio call SID (`CA` + 32 hex digits).
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Twilio account to send requests as.
#[derive(Clone, Copy)]
pub struct Account<'a> {
    pub base_url: &'a str,
    pub sid: &'a str,
    pub token: &'a str,
}

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
    if !is_account_sid(account_sid) {
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
    #[error("refused the request (HTTP {status}{})", code.map(|c| format!(", Twilio error {c}")).unwrap_or_default())]
    Refused { status: u16, code: Option<i64> },
    #[error("sent an answer that could not be read")]
    BadReply,
    #[error("cannot be asked with this account SID")]
    BadAccountSid,
}

impl CallError {
    /// Whether Twilio may have acted on a request that failed this way: it
    /// timed out after being sent, Twilio failed on its side, or its answer
    /// was unreadable. A refused connection, a 4xx or a SID we never sent
    /// placed nothing.
    pub fn may_have_acted(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::BadReply => true,
            CallError::Refused { status, .. } => *status >= 500,
            CallError::Unreachable | CallError::BadAccountSid => false,
        }
    }
}

/// A call as Twilio's REST API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub sid: String,
    /// queued, ringing, in-progress, completed, busy, no-answer, failed,
    /// canceled.
    pub status: String,
    /// Seconds, once the call has ended.
    pub duration: Option<u32>,
    pub to: Option<String>,
    pub from: Option<String>,
    /// When Twilio created the call, seconds since the epoch.
    pub created_unix: Option<i64>,
}

impl CallInfo {
    /// Whether the call has ended (any status but queued, ringing and
    /// in-progress).
    pub fn is_final(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "ringing" | "in-progress")
    }
}

/// The fields of Twilio's call resource that we read.
#[derive(Deserialize)]
struct CallResource {
    sid: Option<String>,
    status: Option<String>,
    duration: Option<Value>,
    to: Option<String>,
    from: Option<String>,
    date_created: Option<String>,
}

impl CallResource {
    fn into_info(self) -> Option<CallInfo> {
        let sid = self.sid.filter(|s| is_call_sid(s))?;
        // Twilio sends the duration as a string of seconds ("95"), null
        // while the call lasts.
        let duration = match self.duration {
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        let created_unix = self
            .date_created
            .as_deref()
            .and_then(|d| jiff::fmt::rfc2822::parse(d).ok())
            .map(|z| z.timestamp().as_second());
        Some(CallInfo {
            sid,
            status: self.status.unwrap_or_default(),
            duration,
            to: self.to,
            from: self.from,
            created_unix,
        })
    }
}

fn send_error(timeout: Duration) -> impl Fn(reqwest::Error) -> CallError {
    move |e: reqwest::Error| {
        if e.is_timeout() {
            CallError::Timeout(timeout.as_secs())
        } else {
            CallError::Unreachable
        }
    }
}

/// Sends `request` and reads its JSON answer (at most `max` bytes).
async fn json_answer(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    max: usize,
) -> Result<Value, CallError> {
    let answer = json_answer_uncounted(request, timeout, max).await;
    let outcome = match &answer {
        Ok(_) => "ok",
        Err(CallError::Timeout(_)) => "timeout",
        Err(CallError::Unreachable) => "unreachable",
        Err(CallError::Refused { status, .. }) if *status >= 500 => "error",
        Err(CallError::Refused { .. }) => "refused",
        Err(CallError::BadReply | CallError::BadAccountSid) => "bad_reply",
    };
    super::count_request("twilio", outcome);
    answer
}

/// Every call request goes through `json_answer`, which counts it.
async fn json_answer_uncounted(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    max: usize,
) -> Result<Value, CallError> {
    let mut response = request.send().await.map_err(send_error(timeout))?;
    let status = response.status();
    let body = match read_capped(&mut response, max).await {
        Ok(raw) => serde_json::from_slice::<Value>(&raw).ok(),
        Err(super::CappedRead::Failed(e)) if e.is_timeout() => {
            return Err(CallError::Timeout(timeout.as_secs()))
        }
        Err(_) => None,
    };
    if !status.is_success() {
        return Err(CallError::Refused {
            status: status.as_u16(),
            code: body.as_ref().and_then(|b| b.get("code")?.as_i64()),
        });
    }
    body.ok_or(CallError::BadReply)
}

fn calls_url(account: &Account<'_>, rest: &str) -> String {
    join(
        account.base_url,
        &format!("2010-04-01/Accounts/{}/Calls{rest}", account.sid),
    )
}

/// `POST {base}/2010-04-01/Accounts/{sid}/Calls.json` with `form` (To,
/// From, Url, …) and basic auth; Twilio's id of the new call (`CA…`).
/// `idempotency_key` goes out as `I-Twilio-Idempotency-Token`, the same for
/// every try of one attempt; what makes a retry safe is the look-up by
/// number (`find_calls`) before it.
pub async fn place_call(
    client: &reqwest::Client,
    account: &Account<'_>,
    form: &[(&str, &str)],
    idempotency_key: &str,
    timeout: Duration,
) -> Result<String, CallError> {
    if !is_account_sid(account.sid) {
        return Err(CallError::BadAccountSid);
    }
    let request = client
        .post(calls_url(account, ".json"))
        .basic_auth(account.sid, Some(account.token))
        .header("I-Twilio-Idempotency-Token", idempotency_key)
        .form(form)
        .timeout(timeout);
    let body = json_answer(request, timeout, MAX_CALL_RESPONSE_BYTES).await?;
    body.get("sid")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|sid| is_call_sid(sid))
        .map(str::to_string)
        .ok_or(CallError::BadReply)
}

/// `GET {base}/2010-04-01/Accounts/{sid}/Calls/{call_sid}.json`: the call
/// as Twilio has it now (its status, and its duration once ended).
pub async fn fetch_call(
    client: &reqwest::Client,
    account: &Account<'_>,
    call_sid: &str,
    timeout: Duration,
) -> Result<CallInfo, CallError> {
    if !is_account_sid(account.sid) || !is_call_sid(call_sid) {
        return Err(CallError::BadAccountSid);
    }
    let request = client
        .get(calls_url(account, &format!("/{call_sid}.json")))
        .basic_auth(account.sid, Some(account.token))
        .timeout(timeout);
    let body = json_answer(request, timeout, MAX_CALL_RESPONSE_BYTES).await?;
    serde_json::from_value::<CallResource>(body)
        .ok()
        .and_then(CallResource::into_info)
        .ok_or(CallError::BadReply)
}

/// `GET {base}/2010-04-01/Accounts/{sid}/Calls.json?To=…&From=…&StartTime>=…`:
/// the calls from `from` to `to` since `since_date` (`YYYY-MM-DD`, UTC),
/// newest first, to find out after a crash whether a call was placed.
pub async fn find_calls(
    client: &reqwest::Client,
    account: &Account<'_>,
    to: &str,
    from: &str,
    since_date: &str,
    timeout: Duration,
) -> Result<Vec<CallInfo>, CallError> {
    if !is_account_sid(account.sid) {
        return Err(CallError::BadAccountSid);
    }
    let request = client
        .get(calls_url(account, ".json"))
        .query(&[
            ("To", to),
            ("From", from),
            ("StartTime>", since_date),
            ("PageSize", LIST_PAGE_SIZE),
        ])
        .basic_auth(account.sid, Some(account.token))
        .timeout(timeout);
    let body = json_answer(request, timeout, MAX_LIST_RESPONSE_BYTES).await?;
    let Some(calls) = body.get("calls").and_then(Value::as_array) else {
        return Err(CallError::BadReply);
    };
    Ok(calls
        .iter()
        .filter_map(|c| serde_json::from_value::<CallResource>(c.clone()).ok())
        .filter_map(CallResource::into_info)
        .collect())
}

/// Whether `sid` looks like a Twilio recording SID (`RE` + 32 hex digits).
pub fn is_recording_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("RE") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET {base}/2010-04-01/Accounts/{sid}/Recordings/{recording_sid}.mp3`
/// with basic auth: the recording's audio, to be streamed on (its body is
/// not read here).
pub async fn fetch_recording(
    client: &reqwest::Client,
    account: &Account<'_>,
    recording_sid: &str,
    timeout: Duration,
) -> Result<reqwest::Response, CallError> {
    if !is_account_sid(account.sid) || !is_recording_sid(recording_sid) {
        return Err(CallError::BadAccountSid);
    }
    let url = join(
        account.base_url,
        &format!(
            "2010-04-01/Accounts/{}/Recordings/{recording_sid}.mp3",
            account.sid
        ),
    );
    let response = client
        .get(url)
        .basic_auth(account.sid, Some(account.token))
        .timeout(timeout)
        .send()
        .await
        .map_err(send_error(timeout))?;
    if !response.status().is_success() {
        return Err(CallError::Refused {
            status: response.status().as_u16(),
            code: None,
        });
    }
    Ok(response)
}

/// What Twilio signs: the URL it called, then every POST parameter sorted
/// by name (equal names by value), each name directly followed by its value.
pub(crate) fn signed_data(url: &str, params: &[(String, String)]) -> String {
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
    fn call_resources_read_twilio_s_shapes() {
        let info = serde_json::from_value::<CallResource>(serde_json::json!({
            "sid": "CA0123456789abcdef0123456789abcdef",
            "status": "completed",
            "duration": "95",
            "to": "+14155550101",
            "from": "+14155550100",
            "date_created": "Tue, 31 Aug 2010 20:36:28 +0000",
        }))
        .unwrap()
        .into_info()
        .unwrap();
        assert_eq!(info.duration, Some(95));
        assert!(info.is_final());
        assert_eq!(info.created_unix, Some(1_283_286_988));
        let live = CallInfo {
            status: "in-progress".into(),
            ..info
        };
        assert!(!live.is_final());
        // A SID that is not a call's is not taken.
        assert!(
            serde_json::from_value::<CallResource>(serde_json::json!({"sid": "../x"}))
                .unwrap()
                .into_info()
                .is_none()
        );
    }

    #[test]
    fn only_failures_after_sending_may_have_placed_a_call() {
        assert!(CallError::Timeout(10).may_have_acted());
        assert!(CallError::Refused {
            status: 503,
            code: None
        }
        .may_have_acted());
        assert!(!CallError::Refused {
            status: 400,
            code: Some(21211)
        }
        .may_have_acted());
        assert!(!CallError::Unreachable.may_have_acted());
        assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
        assert!(!is_account_sid("AC0123/../"));
    }
}
