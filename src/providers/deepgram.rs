//! Deepgram: a key works when it may list its projects.

use std::time::Duration;

use axum::http::{header, HeaderValue};

use super::{join, run_check, KeyCheck};

/// `GET {base}/v1/projects` with `Authorization: Token <key>`.
pub async fn check_key(
    client: &reqwest::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) -> KeyCheck {
    let Ok(mut auth) = HeaderValue::from_str(&format!("Token {key}")) else {
        return KeyCheck::Unsendable;
    };
    // Kept out of any debug output of the request.
    auth.set_sensitive(true);
    let request = client
        .get(join(base_url, "v1/projects"))
        .header(header::AUTHORIZATION, auth)
        .timeout(timeout);
    run_check(request, timeout).await
}
