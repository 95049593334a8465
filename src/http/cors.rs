//! Cross-origin requests for the origins in `VOXFLOW_CORS_ORIGINS` (the
//! first edition's web app ran on its own origin). Closed by default: with
//! no origin listed, or for a request from an origin not listed, the answer
//! carries no `Access-Control-*` header at all, so the browser keeps the
//! page from reading it. A listed origin gets tower-http's CORS answers,
//! with credentials.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::Response;
use tower::service_fn;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight answer. Browsers cap it
/// themselves (Chromium at two hours), so more would not help.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The origins of `VOXFLOW_CORS_ORIGINS`, each `scheme://host[:port]` as a
/// browser writes it in the `Origin` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginList(pub Vec<HeaderValue>);

impl OriginList {
    /// A comma-separated list of origins. `*` is refused: credentials
    /// cannot go to any origin, and an open API is not what a list is for.
    pub fn parse(raw: &str) -> Result<OriginList, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_origin)
            .collect::<Result<Vec<_>, _>>()
            .map(OriginList)
    }

    fn contains(&self, origin: &HeaderValue) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

fn parse_origin(raw: &str) -> Result<HeaderValue, String> {
    let bad = |why: &str| format!("{raw:?} is not an origin ({why}), e.g. http://localhost:5173");
    if raw == "*" {
        return Err(bad("list each origin; * is not allowed"));
    }
    // Browsers send the scheme and host in lower case, without a path.
    let origin = raw.trim_end_matches('/').to_ascii_lowercase();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| bad("it must start with http:// or https://"))?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_ok {
        return Err(bad(
            "only a host and an optional port may follow the scheme",
        ));
    }
    HeaderValue::from_str(&origin).map_err(|_| bad("it is not a valid header value"))
}

/// The CORS answers for the listed origins; `None` when none is listed.
#[derive(Clone)]
pub struct Cors {
    origins: OriginList,
    layer: CorsLayer,
}

impl Cors {
    pub fn new(origins: &OriginList) -> Option<Cors> {
        if origins.0.is_empty() {
            return None;
        }
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.0.clone()))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            // What a page reads from an answer: the report download's file
            // name, how long to wait after a 429, and the id to quote.
            .expose_headers([
                header::CONTENT_DISPOSITION,
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-request-id"),
            ])
            .allow_credentials(true)
            .max_age(PREFLIGHT_MAX_AGE);
        Some(Cors {
            origins: origins.clone(),
            layer,
        })
    }
}

/// A request from a listed origin goes through tower-http's CORS service
/// (which answers a preflight itself) around `answer`; any other goes on
/// as if no CORS were configured: no `Access-Control-*` headers, and a
/// preflight meets the usual 405. Every answer varies by `Origin`, so a
/// cache never hands one origin's answer to another.
pub async fn apply<F, Fut>(cors: Option<&Cors>, req: Request, answer: F) -> Response
where
    F: Fn(Request) -> Fut + Send + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let Some(cors) = cors else {
        return answer(req).await;
    };
    let listed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| cors.origins.contains(o));
    if listed {
        let service = service_fn(move |req| {
            let answered = answer(req);
            async move { Ok::<_, Infallible>(answered.await) }
        });
        return match cors.layer.layer(service).oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
    }
    let mut res = answer(req).await;
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let list = OriginList::parse(" http://localhost:5173, HTTPS://App.Example.com/ ,").unwrap();
        assert_eq!(
            list.0,
            [
                HeaderValue::from_static("http://localhost:5173"),
                HeaderValue::from_static("https://app.example.com")
            ]
        );
        assert!(OriginList::parse("").unwrap().0.is_empty());
        for bad in [
            "*",
            "localhost:5173",
            "https://",
            "https://app.example.com/path",
            "ftp://x.example.com",
            "https://user@x.example.com",
            "null",
        ] {
            assert!(OriginList::parse(bad).is_err(), "{bad}");
        }
    }
}
