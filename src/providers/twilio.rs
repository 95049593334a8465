//! Twilio: credentials work when they may fetch their own account.

use std::time::Duration;

use super::{join, run_check, KeyCheck};
use crate::api_keys::formats::check_twilio_sid;

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
