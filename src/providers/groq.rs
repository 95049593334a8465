//! Groq's OpenAI-compatible API: a key works when it may list the models.

use std::time::Duration;

use super::{join, run_check, KeyCheck};

/// `GET {base}/models` with `Authorization: Bearer <key>`.
pub async fn check_key(
    client: &reqwest::Client,
    base_url: &str,
    key: &str,
    timeout: Duration,
) -> KeyCheck {
    let request = client
        .get(join(base_url, "models"))
        .bearer_auth(key)
        .timeout(timeout);
    run_check(request, timeout).await
}
