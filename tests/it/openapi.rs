//! `/api/openapi.json` describes the API that is really there.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::auth::call;
use crate::common::TestApp;

#[tokio::test]
async fn every_documented_operation_is_a_route_and_is_guarded_as_documented() {
    let app = TestApp::start().await;
    let (status, doc) = call(&app, Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        voxflow::http::openapi::ENDPOINTS.len()
    );
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "00000000-0000-4000-8000-000000000000")
                .replace("{provider}", "groq")
                .replace("{kind}", "users");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = op.get("requestBody").map(|_| serde_json::json!({}));
            let (status, answer) = call(&app, m, &concrete, None, body).await;
            assert_ne!(
                answer["code"], "ROUTE_NOT_FOUND",
                "{method} {path} is documented but not routed"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let public = op["security"] == Value::Array(vec![]);
            if !public {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} answers without a session"
                );
            }
        }
    }
    app.stop().await;
}
