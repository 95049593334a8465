//! `/api/openapi.json` describes the API that is really there: every
//! documented operation is routed and guarded as documented, no method of a
//! documented path is routed undocumented, no route is added outside the
//! documenting routers, every operation has the schemas of its answers and,
//! where it reads a JSON body, of that body; and JSON bodies refuse fields
//! they do not know.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::auth::{admin_token, call, get, post, register};
use crate::common::TestApp;

/// One documented operation.
pub struct Op {
    pub method: Method,
    /// The template, as documented (`/api/agents/{id}`).
    pub path: String,
    pub op: Value,
}

impl Op {
    /// `security: [{}]`: callable without a session.
    pub fn public(&self) -> bool {
        self.op["security"] == json!([{}])
    }

    pub fn admin(&self) -> bool {
        self.path.starts_with("/api/admin/")
    }

    /// The JSON body's schema, when the operation reads one.
    pub fn json_body<'a>(&'a self, doc: &'a Value) -> Option<&'a Value> {
        let schema = self
            .op
            .pointer("/requestBody/content/application~1json/schema")?;
        Some(resolve(doc, schema))
    }
}

/// `schema` itself, or what its `$ref` names.
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{r} is not in the document")),
        None => schema,
    }
}

/// The names of a JSON body schema's properties (through `$ref`s).
pub fn body_fields(doc: &Value, schema: &Value) -> Vec<String> {
    resolve(doc, schema)["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

pub async fn document(app: &TestApp) -> Value {
    let (status, doc) = call(app, Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    doc
}

pub fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            ops.push(Op {
                method: m,
                path: path.clone(),
                op: op.clone(),
            });
        }
    }
    ops
}

/// Fills a template's parameters with values of the right form that name
/// nothing (a random UUID, a real provider name, a real export kind).
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{run_id}", "00000000-0000-4000-8000-000000000000")
        .replace("{provider}", "groq")
        .replace("{kind}", "users")
}

/// A server whose rate limits stay out of the way of these walks (they
/// send more requests a minute than a free plan allows).
async fn unlimited() -> TestApp {
    TestApp::start_with(|c| {
        c.rate_limit_free = 1_000_000;
        c.rate_limit_anonymous = 1_000_000;
    })
    .await
}

#[tokio::test]
async fn every_documented_operation_is_a_route_and_is_guarded_as_documented() {
    let app = unlimited().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert!(ops.len() > 70, "{} operations", ops.len());
    for o in &ops {
        let body = o.op.get("requestBody").map(|_| json!({}));
        let (status, answer) = call(&app, o.method.clone(), &concrete(&o.path), None, body).await;
        assert_ne!(
            answer["code"], "ROUTE_NOT_FOUND",
            "{} {} is documented but not routed",
            o.method, o.path
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            o.method,
            o.path
        );
        if !o.public() {
            assert_eq!(
                o.op["security"],
                json!([{"bearer": []}, {"cookie": []}]),
                "{} {}",
                o.method,
                o.path
            );
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {} answers without a session",
                o.method,
                o.path
            );
        }
    }
    // The schemes the requirements name are defined.
    for scheme in ["bearer", "cookie"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn no_method_of_a_documented_path_is_routed_undocumented() {
    let app = unlimited().await;
    let doc = document(&app).await;
    let (token, _) = register(&app, "methods@example.com").await;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in &methods {
            if item.get(m.as_str().to_lowercase()).is_some() {
                continue;
            }
            let (status, answer) = call(&app, m.clone(), &concrete(path), Some(&token), None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {path} is routed but not documented: {answer}"
            );
        }
    }
    app.stop().await;
}

/// Every route is added through `routes!`, which documents it: a plain
/// `.route(…)` (or a service mounted beside the routers) anywhere in the
/// server would serve a path the document does not show.
#[test]
fn routes_are_only_added_through_the_documenting_routers() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // The benchmark's provider stand-ins are their own servers.
            if path.is_dir() && !path.ends_with("bin/voxflow-bench") {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for call in [".route(", ".route_service(", ".nest_service("] {
                        if code.contains(call) {
                            found.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(found.is_empty(), "routes outside `routes!`: {found:#?}");
}

#[tokio::test]
async fn every_operation_has_the_schemas_of_its_answers_and_of_the_body_it_reads() {
    let app = unlimited().await;
    let doc = document(&app).await;
    let (token, _) = register(&app, "schemas@example.com").await;
    let admin = admin_token(&app).await;
    for o in operations(&doc) {
        let what = format!("{} {}", o.method, o.path);
        // A success answer with a schema.
        let responses = o.op["responses"].as_object().expect("responses");
        let success = responses
            .iter()
            .find(|(code, _)| code.starts_with('2') || code.as_str() == "101")
            .unwrap_or_else(|| panic!("{what}: no success answer"));
        if success.0 != "101" {
            let content = success.1["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: {} has no content", success.0));
            assert!(
                content.values().all(|c| c["schema"].is_object()),
                "{what}: an answer without a schema"
            );
        }
        // Every refusal in the envelope names its schema.
        for (code, answer) in responses {
            if code.starts_with('4') || code.starts_with('5') {
                assert!(
                    answer["content"].is_object(),
                    "{what}: {code} has no content"
                );
            }
        }
        if o.public() && o.json_body(&doc).is_none() {
            continue;
        }
        // A field no request type has: the operations that read a JSON body
        // refuse it by name before anything else, and only they do.
        // Signing out ends the session it is sent with: a session of its own.
        let own = if o.path == "/api/auth/logout" {
            register(&app, "logout@example.com").await.0
        } else if o.admin() {
            admin.clone()
        } else {
            token.clone()
        };
        let (status, answer) = call(
            &app,
            o.method.clone(),
            &concrete(&o.path),
            Some(&own),
            Some(json!({"no_such_field_anywhere": 1})),
        )
        .await;
        let refused = status == StatusCode::BAD_REQUEST
            && answer["message"] == "unknown field \"no_such_field_anywhere\"";
        match o.json_body(&doc) {
            Some(schema) => {
                assert!(
                    refused,
                    "{what} documents a JSON body but took the unknown field: {status} {answer}"
                );
                assert_eq!(schema["type"], "object", "{what}: {schema}");
                assert!(!body_fields(&doc, schema).is_empty(), "{what}: {schema}");
            }
            None => assert!(
                !refused,
                "{what} reads a JSON body the document does not describe"
            ),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_misspelt_field_is_refused_by_name_and_changes_nothing() {
    let app = TestApp::start().await;
    let (token, _) = register(&app, "typo@example.com").await;
    let (_, before) = get(&app, "/api/config/service", Some(&token)).await;
    let (status, body) = post(
        &app,
        "/api/config/service",
        Some(&token),
        json!({"llm_modle": "llama-3.1-8b-instant"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert_eq!(body["message"], "unknown field \"llm_modle\"");
    assert_eq!(body["errors"][0]["field"], "llm_modle");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("llm_model"),
        "{body}"
    );
    // With a known field beside it, nothing is saved either.
    let (status, _) = post(
        &app,
        "/api/config/service",
        Some(&token),
        json!({"llm_model": "llama-3.1-8b-instant", "llm_modle": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, after) = get(&app, "/api/config/service", Some(&token)).await;
    assert_eq!(before, after);
    let saved: i64 = rusqlite::Connection::open(app.db_path())
        .unwrap()
        .query_row("SELECT count(*) FROM service_configs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(saved, 0);
    // The first edition's extra fields are still accepted (and ignored).
    let (status, body) = post(
        &app,
        "/api/auth/register",
        None,
        json!({"email": "old@example.com", "password": crate::auth::PASSWORD, "subscription_tier": "enterprise"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["user"]["subscription_tier"], "free");
    app.stop().await;
}

/// What Schemathesis (scripts/schemathesis.sh) found, kept fixed: a run id
/// that names no run was a 500 on the two routes that read a phone run's
/// Twilio facts before looking the run up.
#[tokio::test]
async fn schemathesis_findings_stay_fixed() {
    let app = unlimited().await;
    let (token, _) = register(&app, "findings@example.com").await;
    let nobody = "e3e70682-c209-1cac-a29f-6fbed82c07cd";
    let (status, body) = get(
        &app,
        &format!("/api/calls/run/{nobody}/recording"),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&app, &format!("/api/calls/twilio/stream/{nobody}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    app.stop().await;
}
