//! The server's edges as an attacker meets them: where a tenant's URL may
//! send this server (SSRF), slow and oversized requests, the client's
//! address behind a proxy, and the security headers.

use serde_json::{json, Value};

use crate::agents::{create_agent, tenant, Tenant};
use crate::auth::post;
use crate::calls::{say, start_call, LlmStub};
use crate::common::TestApp;

fn port_of(base: &str) -> u16 {
    let rest = base.trim_start_matches("http://127.0.0.1:");
    rest.split('/').next().unwrap().parse().unwrap()
}

async fn point_llm_at(app: &TestApp, who: &Tenant, url: &str) -> (reqwest::StatusCode, Value) {
    post(
        app,
        "/api/config/service",
        Some(&who.token),
        json!({ "llm_provider": "openai_compatible", "llm_base_url": url }),
    )
    .await
}

/// The 502 a tenant sees when its LLM cannot be used, from a fresh call.
async fn llm_failure(app: &TestApp, who: &Tenant, agent: &str) -> String {
    let (run, _) = start_call(app, who, agent).await;
    let (status, body) = say(app, who, &run, "Hello?").await;
    assert_eq!(status, 502, "{body}");
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tenant_urls_into_this_hosts_networks_are_refused_unless_listed() {
    let stub = LlmStub::start().await;
    let port = port_of(&stub.base);
    let app = TestApp::start_with(|c| c.llm_allowed_urls = None).await;
    let t = tenant(&app, "ssrf@example.com").await;
    let agent = create_agent(&app, &t, "Probe").await;

    // Every literal spelling of this host, the metadata service and the
    // private ranges: refused before any request is sent.
    for url in [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://0x7f000001:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://%31%32%37.0.0.1:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.5:8000/v1".to_string(),
        "http://100.64.0.1/v1".to_string(),
    ] {
        let (status, body) = point_llm_at(&app, &t, &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "llm_base_url", "{url}");
    }

    // A name is judged by what it resolves to, when connecting: `localhost`
    // is this host, so it fails as an unreachable server would.
    let (status, body) = point_llm_at(&app, &t, &format!("http://localhost:{port}/v1")).await;
    assert_eq!(status, 200, "{body}");
    let refused = llm_failure(&app, &t, &agent).await;
    assert!(refused.contains("could not be reached"), "{refused}");
    assert!(stub.seen().is_empty(), "nothing reached the local server");
    app.stop().await;

    // Listed by the operator (the air-gapped case), the same server is
    // allowed in any spelling of the listed prefix, and only under it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let list = format!("http://127.0.0.1:{port}/v1,http://127.0.0.1:{closed}/v1");
    let app = TestApp::start_with(move |c| c.llm_allowed_urls = Some(list)).await;
    let t = tenant(&app, "airgap@example.com").await;
    let agent = create_agent(&app, &t, "Local").await;
    for url in [
        format!("http://127.0.0.1:{port}/v1/../../internal-admin"),
        format!("http://127.0.0.1:{port}/v1/%2e%2e/admin"),
        format!("http://127.0.0.1:{port}/v10"),
        format!("http://localhost:{port}/v1"),
    ] {
        let (status, body) = point_llm_at(&app, &t, &url).await;
        assert_eq!(status, 400, "{url}: {body}");
    }
    let (status, body) = point_llm_at(&app, &t, &format!("http://0x7f000001:{port}/v1/")).await;
    assert_eq!(status, 200, "{body}");
    let (run, _) = start_call(&app, &t, &agent).await;
    assert_eq!(say(&app, &t, &run, "Hi").await.0, 200);
    assert_eq!(stub.seen().len(), 1);

    // A closed port answers with the very words of a refused address.
    let (status, _) = point_llm_at(&app, &t, &format!("http://127.0.0.1:{closed}/v1")).await;
    assert_eq!(status, 200);
    let (status, body) = say(&app, &t, &run, "Hello?").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["message"], refused.as_str());
    app.stop().await;
}
