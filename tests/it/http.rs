//! Behaviour every endpoint shares: unknown routes, wrong methods, headers.

use reqwest::StatusCode;

use crate::auth::{call, get};
use crate::common::TestApp;

#[tokio::test]
async fn unknown_api_routes_and_wrong_methods_answer_in_the_envelope() {
    let app = TestApp::start().await;
    let (status, body) = get(&app, "/api/calls/unknown", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "ROUTE_NOT_FOUND");
    assert_eq!(
        body["message"], "No endpoint GET /api/calls/unknown",
        "the full path is named"
    );

    let (status, body) = call(&app, reqwest::Method::DELETE, "/api/auth/login", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::start().await;
    for path in ["/", "/health", "/api/nothing"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    }
    app.stop().await;
}
