//! Extractors that answer bad input in the API's envelope instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use std::net::IpAddr;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::{ApiError, FieldError};
use crate::config::NetList;

/// A JSON body. Malformed JSON is a 400, wrong types name the field (400), a
/// field the type does not know is a 400 naming it (request types deny
/// unknown fields, so a misspelt `llm_modle` is not silently ignored), a
/// missing `Content-Type: application/json` is a 415, an oversized body a 413.
pub struct ApiJson<T>(pub T);

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected
/// `a`", or "there are no fields") under the path `at` ("" at the top):
/// a 400 naming the field and what is known there.
fn unknown_field(at: &str, message: &str) -> Option<ApiError> {
    let rest = message.strip_prefix("unknown field `")?;
    // The name may hold a backtick itself: it ends where the list begins.
    let (name, expected) = match rest.find("`, ") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => rest.split_once('`')?,
    };
    // A field named by the empty string is shown as JSON writes it, so
    // the error still names something (found by the json_bodies target).
    let name = if name.is_empty() { "\"\"" } else { name };
    // serde_path_to_error's path usually ends with the unknown field.
    let field = if at.is_empty() {
        name.to_string()
    } else if at == name || at.ends_with(&format!(".{name}")) {
        at.to_string()
    } else {
        format!("{at}.{name}")
    };
    let known = expected
        .trim_start_matches(", ")
        .replace('`', "")
        .replace("expected one of ", "")
        .replace("expected ", "");
    let mut err = ApiError::fields(vec![FieldError {
        field: field.clone(),
        message: format!("is not a known field ({known})"),
    }]);
    err.message = format!("unknown field \"{field}\"");
    Some(err)
}

/// Splits serde's "field.path: what went wrong at line 1 column 9" into
/// a field name and a message.
fn data_error(text: &str) -> ApiError {
    let text = text
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("Failed to deserialize"))
        .map_or(text, |(_, rest)| rest);
    let text = text.split(" at line ").next().unwrap_or(text);
    if let Some(err) = unknown_field("", text) {
        return err;
    }
    if let Some(err) = text
        .split_once(": ")
        .and_then(|(at, message)| unknown_field(at, message))
    {
        return err;
    }
    match text.split_once(": ") {
        Some((field, message)) if !field.contains(' ') && !field.is_empty() => {
            ApiError::fields(vec![FieldError {
                field: field.to_string(),
                message: message.to_string(),
            }])
        }
        _ => {
            // serde says "missing field `name`": name it as a field too.
            if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
            {
                return ApiError::field(field, "is required");
            }
            ApiError::bad_request("VALIDATION_ERROR", text.to_string())
        }
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request("INVALID_BODY", r.body_text())
            }
        })?;
        // JSON is UTF-8 throughout: serde_json skips the strings of fields
        // a type ignores without checking them (found by the json_bodies
        // fuzz target), so the whole body is checked first.
        if std::str::from_utf8(&bytes).is_err() {
            return Err(json_rejection_syntax());
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            // serde_json files some refusals of well-formed JSON under
            // syntax (an array longer than the fields it fills, a number
            // past f64's range): JSON of the wrong shape, not broken JSON
            // (found by the json_bodies fuzz target).
            Err(JsonRejection::JsonSyntaxError(e))
                if serde_json::from_slice::<IgnoredAny>(&bytes).is_ok() =>
            {
                let text = e.body_text();
                let text = text.rsplit(": ").next().unwrap_or(&text);
                let text = text.split(" at line ").next().unwrap_or(text);
                Err(ApiError::bad_request(
                    "VALIDATION_ERROR",
                    format!("The body is JSON but does not fit this request: {text}"),
                ))
            }
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or any `application/…+json`, as axum's `Json` takes.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

fn json_rejection_syntax() -> ApiError {
    ApiError::bad_request("INVALID_JSON", "The request body is not valid JSON")
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "The request body is too large",
    )
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => data_error(&e.body_text()),
        JsonRejection::JsonSyntaxError(_) => json_rejection_syntax(),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as JSON with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::bad_request("INVALID_BODY", other.body_text()),
    }
}

/// Path parameters; an id that is not a UUID is a 400.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::bad_request(
                "INVALID_ID",
                "The id in the path is not a valid UUID",
            )),
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}

/// Query-string parameters; a wrong type names the parameter (400).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_string();
                Err(data_error(&text))
            }
            Err(other) => Err(ApiError::bad_request("INVALID_QUERY", other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_become_field_errors() {
        let e = data_error("Failed to deserialize the JSON body into the target type: name: invalid type: integer `5`, expected a string at line 1 column 10");
        assert_eq!(e.errors[0].field, "name");
        assert_eq!(
            e.errors[0].message,
            "invalid type: integer `5`, expected a string"
        );
        let e = data_error("Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2");
        assert_eq!(e.errors[0].field, "email");
    }

    #[test]
    fn an_unknown_field_is_named_with_what_is_known() {
        let e = data_error("Failed to deserialize the JSON body into the target type: unknown field `llm_modle`, expected one of `llm_provider`, `llm_model` at line 1 column 12");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "unknown field \"llm_modle\"");
        assert_eq!(e.errors[0].field, "llm_modle");
        assert_eq!(
            e.errors[0].message,
            "is not a known field (llm_provider, llm_model)"
        );
        let e = data_error("Failed to deserialize the JSON body into the target type: llm_modle: unknown field `llm_modle`, expected `llm_model` at line 1 column 12");
        assert_eq!(e.errors[0].field, "llm_modle");
        let e = data_error("Failed to deserialize the JSON body into the target type: settings.x: unknown field `x`, expected `y` at line 1 column 30");
        assert_eq!(e.errors[0].field, "settings.x");
        assert_eq!(e.errors[0].message, "is not a known field (y)");
    }
}

/// The caller's address, scheme and user agent, for sessions, throttling,
/// rate limits, the audit log and the cookie's `Secure` flag. Resolved once
/// per request (`ClientInfo::resolve`, by `ops::admit`): behind one of
/// `VOXFLOW_TRUSTED_PROXIES` the client is the one `X-Forwarded-For` and
/// `X-Forwarded-Proto` name; from anyone else those headers are ignored.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: String,
    /// Whether the client's request came over HTTPS (this server speaks
    /// plain HTTP: only a trusted proxy's `X-Forwarded-Proto` says so).
    pub https: bool,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// Who sent a request that `peer` delivered with `headers`.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &NetList) -> ClientInfo {
        let behind_proxy = peer.is_some_and(|p| trusted.contains(p));
        let ip = peer.map(|p| {
            if behind_proxy {
                forwarded_client(p, headers, trusted)
            } else {
                p
            }
        });
        // The nearest proxy's word: it saw the scheme its client used.
        let https = behind_proxy
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let user_agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        ClientInfo {
            ip: ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            https,
            user_agent,
        }
    }

    /// The client's address, when known.
    pub fn addr(&self) -> Option<IpAddr> {
        self.ip.parse().ok()
    }
}

/// The client behind trusted proxies: the nearest address in
/// `X-Forwarded-For` that is not one of them (the entries before it could
/// have been written by the client itself).
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &NetList) -> IpAddr {
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(*ip))
        .unwrap_or(peer)
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(client) = parts.extensions.get::<ClientInfo>() {
            return Ok(client.clone());
        }
        // A router used without the layers (never the server's): the peer
        // is the client.
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientInfo::resolve(
            peer,
            &parts.headers,
            &NetList::default(),
        ))
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let trusted = NetList::parse("10.0.0.0/8").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.7, 10.0.0.2"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        let behind = ClientInfo::resolve(Some(proxy), &h, &trusted);
        assert_eq!(behind.ip, "203.0.113.7");
        assert!(behind.https);
        let direct = ClientInfo::resolve(Some(stranger), &h, &trusted);
        assert_eq!(direct.ip, "198.51.100.1");
        assert!(!direct.https);
        let bare = ClientInfo::resolve(Some(proxy), &HeaderMap::new(), &trusted);
        assert_eq!(bare.addr(), Some(proxy));
        assert!(!bare.https);
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(!ClientInfo::resolve(Some(proxy), &h, &trusted).https);
        assert_eq!(ClientInfo::resolve(None, &h, &trusted).ip, "unknown");
    }
}
