//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the API, derived
//! from the code. Each handler carries `#[utoipa::path]` (its parameters,
//! body and answers, their schemas from the Rust types' `ToSchema`), and the
//! routers are `OpenApiRouter`s fed with `routes!`, so a route is documented
//! by being routed: the document and the router cannot drift apart.
//!
//! What every operation of a kind can answer (a 401 without a session, a
//! 413 for a body over the limit, a 429 past the rate limit, …) is added
//! here once, from the operation's shape, instead of on each handler.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::FieldError;

/// `{"success": true, "data": …}`: every JSON answer that succeeds.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` here.
    pub success: bool,
    pub data: T,
}

/// A confirmation in words (`Signed out`, …).
#[derive(Serialize, ToSchema)]
pub struct Notice {
    pub message: String,
}

/// A page of a list: `data` is the page's items.
#[derive(Serialize, ToSchema)]
pub struct Paged<T> {
    /// Always `true` here.
    pub success: bool,
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Pagination {
    /// From 1.
    pub page: u32,
    /// Items a page, 1–100.
    pub limit: u32,
    pub total: i64,
    pub pages: i64,
}

/// The API's error envelope (api.md). Some refusals add members beside
/// these (`limits_info` and `upgrade` at an agent limit, `data` on a
/// failed health check, …).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Always `false` here.
    pub success: bool,
    pub message: String,
    /// A stable, machine-readable name of the refusal (`VALIDATION_ERROR`,
    /// `NOT_FOUND`, `RATE_LIMITED`, …).
    pub code: String,
    /// One entry a field that failed validation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "VoxFlow API",
        description = "AI voice agents for many tenants. Every JSON answer is an envelope: `{success, data}` or `{success: false, message, code, errors?}`. Operations without a security requirement of their own need a session: the bearer token from register or login, or the web UI's cookie.",
    ),
    components(schemas(ErrorBody, FieldError, Pagination)),
    tags(
        (name = "health", description = "Probes, metrics and this document"),
        (name = "auth", description = "Accounts and sessions"),
        (name = "agents", description = "A tenant's agents and their runs"),
        (name = "calls", description = "Web and phone calls"),
        (name = "twilio", description = "Twilio's webhooks and media stream: signed by Twilio, answered in TwiML"),
        (name = "campaigns", description = "Outbound campaigns from a CSV of contacts"),
        (name = "configuration", description = "LLM, voice, transcription and telephony settings"),
        (name = "api-keys", description = "A tenant's provider keys"),
        (name = "usage", description = "Usage and reports"),
        (name = "admin", description = "Admins only: anyone else gets 403"),
    ),
)]
struct ApiDoc;

/// The security schemes, and the answers each kind of operation can give.
struct Guards;

/// The bearer token and the cookie, either of which is a session.
fn session() -> Vec<SecurityRequirement> {
    vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::new("cookie", Vec::<String>::new()),
    ]
}

/// `security: [{}]` on an operation: callable without a session.
fn is_public(op: &Operation) -> bool {
    op.security
        .as_ref()
        .is_some_and(|s| s.len() == 1 && s[0] == SecurityRequirement::default())
}

fn error_answer(what: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(what)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

fn add(op: &mut Operation, status: u16, what: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_answer(what));
}

/// The refusals of the layers and extractors every route goes through,
/// by what the operation takes.
fn guard(path: &str, method: &str, op: &mut Operation) {
    let public = is_public(op);
    let params: Vec<&Parameter> = op
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p),
            RefOr::Ref(_) => None,
        })
        .collect();
    let in_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let in_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let json_body =
        matches!(&op.request_body, Some(RefOr::T(b)) if b.content.contains_key("application/json"));
    let twilio = op
        .tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "twilio"));
    // OpenAPI requires a description on every answer.
    for (status, answer) in op.responses.responses.iter_mut() {
        if let RefOr::T(answer) = answer {
            if answer.description.is_empty() {
                answer.description = match status.as_str() {
                    "200" => "Done",
                    "201" => "Created",
                    _ => "The answer",
                }
                .to_string();
            }
        }
    }
    if twilio {
        // Twilio's requests are answered in plain text or TwiML, never the
        // envelope, and are not rate limited; their refusals are on the
        // handlers.
        return;
    }
    if !public {
        op.security = Some(session());
        add(op, 401, "No session, or an invalid or expired one");
        add(
            op,
            403,
            "Not allowed: a deactivated account, a write with the cookie from another origin, or (admin routes) not an admin",
        );
    }
    if path.starts_with("/api/admin/") {
        let note = "Admins only: anyone else gets 403.";
        op.description = Some(match op.description.take() {
            Some(d) => format!("{note}\n\n{d}"),
            None => note.to_string(),
        });
    }
    if in_path || in_query || op.request_body.is_some() {
        add(
            op,
            400,
            "Invalid input: the fields or parameters named in `errors`",
        );
    }
    if in_path && !public {
        add(op, 404, "No such object, or another tenant's");
    }
    if op.request_body.is_some() {
        add(op, 408, "The body did not arrive in time");
        add(op, 413, "The body is too large");
    }
    if json_body {
        add(op, 415, "The body is not `application/json`");
    }
    if path.starts_with("/api/") {
        add(op, 429, "Past the rate limit: see `Retry-After`");
        add(op, 503, "The database is busy; try again");
        if method != "get" {
            add(op, 507, "The server's storage is full; nothing was saved");
        }
    }
}

impl Modify for Guards {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The token from register or login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::extract::SESSION_COOKIE,
                "The web UI's session; writes need a same-origin Origin",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                guard(path, method, op);
            }
        }
    }
}

/// Each method's operation of a path.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
        ("query", item.query.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

/// The whole document: the routers' paths under the base above.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.merge(super::routes().doc);
        Guards.modify(&mut doc);
        doc
    })
}
