//! Phone calls against a stand-in Twilio (a local server speaking
//! `Calls.json`, checking basic auth and recording each form) and the
//! stand-in LLM; the webhooks are called as Twilio would, signed with the
//! tenant's auth token.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};

use crate::agents::{create_agent, db, set_tier, tenant, Tenant, PROMPT};
use crate::auth::post;
use crate::calls::{
    backdate_start, run_state, set_quota, start_call, tokens_for, usage_today, LlmStub, Mode,
};
use crate::common::TestApp;

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const FROM: &str = "+14155550100";
const TO: &str = "+14155550199";
pub const PUBLIC: &str = "https://voxflow.example.com";
/// Every character XML must escape.
const NAME: &str = r#"Ann <&> "Bo's""#;

/// One `Calls.json` request the stand-in received.
#[derive(Debug, Clone)]
pub struct Placed {
    account: String,
    authorization: Option<String>,
    form: Vec<(String, String)>,
}

impl Placed {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct TwilioState {
    /// 0: place the call; otherwise the HTTP status to refuse it with.
    refuse_with: AtomicU16,
    seen: Mutex<Vec<Placed>>,
}

pub struct TwilioStub {
    pub base: String,
    state: Arc<TwilioState>,
}

async fn calls_json(
    State(s): State<Arc<TwilioState>>,
    Path(file): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let authorization = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    s.seen.lock().unwrap().push(Placed {
        account: file.clone(),
        authorization: authorization.clone(),
        form,
    });
    let expected = format!("Basic {}", BASE64.encode(format!("{SID}:{TOKEN}")));
    if authorization.as_deref() != Some(expected.as_str()) || file != SID {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 20003, "message": "Authenticate"})),
        )
            .into_response();
    }
    match s.refuse_with.load(Ordering::SeqCst) {
        0 => (
            StatusCode::CREATED,
            Json(json!({"sid": CALL_SID, "status": "queued"})),
        )
            .into_response(),
        code => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"code": 21211, "message": "The 'To' number is not valid"})),
        )
            .into_response(),
    }
}

impl TwilioStub {
    pub async fn start() -> TwilioStub {
        let state = Arc::new(TwilioState::default());
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Calls.json",
                routing::post(calls_json),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TwilioStub {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn refuse_with(&self, status: u16) {
        self.state.refuse_with.store(status, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Placed> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// A server whose Twilio and Groq traffic goes to the stand-ins.
pub async fn app_with(twilio_base: &str, llm: &LlmStub, public: Option<&str>) -> TestApp {
    let (twilio, groq, public) = (
        twilio_base.to_string(),
        llm.base.clone(),
        public.map(str::to_string),
    );
    TestApp::start_with(move |c| {
        c.twilio_base_url = twilio;
        c.groq_base_url = groq;
        c.groq_api_key = Some("gsk_server_fallback_key_for_tests".into());
        c.llm_timeout_secs = 1;
        c.public_url = public;
    })
    .await
}

pub async fn save_twilio(app: &TestApp, who: &Tenant) {
    let (status, body) = post(
        app,
        "/api/api-keys/twilio",
        Some(&who.token),
        json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": FROM}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A pro tenant with Twilio credentials and an agent named `NAME`.
pub async fn ready_tenant(app: &TestApp, email: &str) -> (Tenant, String) {
    let t = tenant(app, email).await;
    set_tier(app, &t, "pro").await;
    save_twilio(app, &t).await;
    let agent = create_agent(app, &t, NAME).await;
    (t, agent)
}

async fn start_phone(app: &TestApp, who: &Tenant, agent: &str, to: &str) -> (StatusCode, Value) {
    post(
        app,
        "/api/calls/phone/start",
        Some(&who.token),
        json!({"agent_id": agent, "phone_number": to}),
    )
    .await
}

/// Twilio's signature of a POST to `url` with `params`, under `token`.
fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    BASE64.encode(hmac::sign(&key, data.as_bytes()).as_ref())
}

/// Posts `params` to a run's webhook `kind` with `signature` (when given);
/// the status, the Content-Type and the body.
async fn hook_with(
    app: &TestApp,
    kind: &str,
    run: &str,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> (StatusCode, String, String) {
    let path = format!("/api/calls/twilio/{kind}/{run}");
    let mut req = app.client.post(app.url(&path)).form(params);
    if let Some(sig) = signature {
        req = req.header("X-Twilio-Signature", sig);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, res.text().await.unwrap())
}

/// The SID the stand-in gives every call it places.
const CALL_SID: &str = "CA00000000000000000000000000000001";

/// A webhook call as Twilio makes it: signed for the public URL, with the
/// call's SID (as every Twilio webhook carries it).
async fn hook(
    app: &TestApp,
    kind: &str,
    run: &str,
    params: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let url = format!("{PUBLIC}/api/calls/twilio/{kind}/{run}");
    let mut params = params.to_vec();
    if !params.iter().any(|(n, _)| *n == "CallSid") {
        params.push(("CallSid", CALL_SID));
    }
    hook_with(app, kind, run, &params, Some(sign(TOKEN, &url, &params))).await
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn transcript(app: &TestApp, run: &str) -> Vec<Value> {
    let text: Option<String> = db(app)
        .query_row(
            "SELECT transcript_text FROM agent_runs WHERE id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    text.map(|t| serde_json::from_str::<Vec<Value>>(&t).unwrap())
        .unwrap_or_default()
}

fn gather_tag(run: &str) -> String {
    format!(
        r#"<Gather input="speech" action="{PUBLIC}/api/calls/twilio/gather/{run}" method="POST" speechTimeout="auto"/>"#
    )
}

#[tokio::test]
async fn phone_calls_are_refused_until_the_tenant_and_server_are_set_up() {
    let twilio = TwilioStub::start().await;
    let llm = LlmStub::start().await;
    let app = app_with(&twilio.base, &llm, Some(PUBLIC)).await;
    let t = tenant(&app, "setup@example.com").await;
    let agent = create_agent(&app, &t, "Vera").await;

    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "TIER_FEATURE");
    assert_eq!(body["upgrade"]["suggested_tier"], "pro");

    set_tier(&app, &t, "pro").await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "SETUP_REQUIRED");
    assert!(body["message"].as_str().unwrap().contains("Twilio"));

    save_twilio(&app, &t).await;
    for bad in ["", "14155550199", "+1 415 555 0199", "+0123"] {
        let (status, body) = start_phone(&app, &t, &agent, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "phone_number", "{body}");
    }

    let other = tenant(&app, "other@example.com").await;
    set_tier(&app, &other, "pro").await;
    save_twilio(&app, &other).await;
    let (status, body) = start_phone(&app, &other, &agent, TO).await;
    assert_eq!(status, 404, "{body}");

    set_quota(&app, &t, 0).await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["code"], "QUOTA_EXCEEDED");

    assert!(twilio.seen().is_empty(), "no call was to be placed");
    let runs: i64 = db(&app)
        .query_row("SELECT count(*) FROM agent_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 0);
    app.stop().await;

    // Without a public URL, Twilio's webhooks could not reach the server.
    let app = app_with(&twilio.base, &llm, None).await;
    let (t, agent) = ready_tenant(&app, "nourl@example.com").await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "SETUP_REQUIRED");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("VOXFLOW_PUBLIC_URL"));
    assert!(twilio.seen().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_phone_call_runs_through_twilio_and_its_webhooks() {
    let twilio = TwilioStub::start().await;
    let llm = LlmStub::start().await;
    let app = app_with(&twilio.base, &llm, Some(&format!("{PUBLIC}/"))).await;
    let (t, agent) = ready_tenant(&app, "caller@example.com").await;
    // Recording is the agent's choice, off unless asked for.
    let (status, body) = crate::auth::call(
        &app,
        reqwest::Method::PUT,
        &format!("/api/agents/{agent}"),
        Some(&t.token),
        Some(json!({"record_calls": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["record_calls"], true);

    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 200, "{body}");
    let run = body["data"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["run_number"], "WR-TEL-000001");
    assert_eq!(
        body["data"]["call_sid"],
        "CA00000000000000000000000000000001"
    );

    let placed = twilio.seen();
    assert_eq!(placed.len(), 1);
    let p = &placed[0];
    assert_eq!(p.account, SID);
    assert!(p.authorization.as_deref().unwrap().starts_with("Basic "));
    let hook_url = |kind: &str| format!("{PUBLIC}/api/calls/twilio/{kind}/{run}");
    assert_eq!(p.field("To"), Some(TO));
    assert_eq!(p.field("From"), Some(FROM));
    assert_eq!(p.field("Url"), Some(hook_url("webhook").as_str()));
    assert_eq!(p.field("StatusCallback"), Some(hook_url("status").as_str()));
    assert_eq!(p.field("StatusCallbackEvent"), Some("completed"));
    assert_eq!(p.field("Record"), Some("true"));
    assert_eq!(
        p.field("RecordingStatusCallback"),
        Some(hook_url("recording").as_str())
    );

    let (kind, phone, sid, status): (String, String, String, String) = db(&app)
        .query_row(
            "SELECT type, phone_number, call_sid, status FROM agent_runs WHERE id = ?1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (kind.as_str(), phone.as_str(), sid.as_str(), status.as_str()),
        (
            "PHONE_CALL",
            TO,
            "CA00000000000000000000000000000001",
            "in_progress"
        )
    );
    let audited: i64 = db(&app)
        .query_row(
            "SELECT count(*) FROM admin_audit_logs WHERE action = 'start_phone_call' AND target_resource_id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 1);
    let used: Option<String> = db(&app)
        .query_row(
            "SELECT last_used_at FROM user_api_keys WHERE user_id = ?1 AND provider = 'twilio'",
            [&t.id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(used.is_some(), "the Twilio key is marked used");

    // Unsigned, wrongly signed, or signed for another URL: 403.
    let params = [("CallSid", "CA00000000000000000000000000000001")];
    let (status, _, _) = hook_with(&app, "webhook", &run, &params, None).await;
    assert_eq!(status, 403);
    let wrong = sign(
        "ffffffffffffffffffffffffffffffff",
        &hook_url("webhook"),
        &params,
    );
    let (status, _, _) = hook_with(&app, "webhook", &run, &params, Some(wrong)).await;
    assert_eq!(status, 403);
    let elsewhere = sign(TOKEN, &hook_url("gather"), &params);
    let (status, _, _) = hook_with(&app, "webhook", &run, &params, Some(elsewhere)).await;
    assert_eq!(status, 403);
    assert!(transcript(&app, &run).is_empty());
    let (status, _, _) = hook(
        &app,
        "webhook",
        "00000000-0000-4000-8000-000000000000",
        &params,
    )
    .await;
    assert_eq!(status, 404);
    let (web_run, _) = start_call(&app, &t, &agent).await;
    let (status, _, _) = hook(&app, "webhook", &web_run, &params).await;
    assert_eq!(status, 404, "a web call has no webhooks");

    // Answered: the greeting, escaped, and a Gather pointing back here.
    db(&app)
        .execute(
            "UPDATE agent_runs SET last_activity_at = '2000-01-01T00:00:00.000Z' WHERE id = ?1",
            [&run],
        )
        .unwrap();
    let (status, ctype, xml) = hook(&app, "webhook", &run, &params).await;
    assert_eq!(status, 200, "{xml}");
    assert!(ctype.starts_with("text/xml"), "{ctype}");
    let greeting = format!("Hello! I'm {NAME}. How can I help you today?");
    assert!(
        xml.contains(&format!("<Response><Say>{}</Say>", xml_escape(&greeting))),
        "{xml}"
    );
    assert!(xml.contains(&gather_tag(&run)), "{xml}");
    assert!(!xml.contains(NAME), "the name is escaped: {xml}");
    let turns = transcript(&app, &run);
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["content"], greeting.as_str());
    let activity: String = db(&app)
        .query_row(
            "SELECT last_activity_at FROM agent_runs WHERE id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert!(activity.as_str() > "2020", "webhooks mark the run active");

    // The caller speaks: the LLM's reply comes back as TwiML.
    let speech = "Can I book Tuesday at 3 & bring my dog?";
    let (status, ctype, xml) = hook(&app, "gather", &run, &[("SpeechResult", speech)]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(ctype.starts_with("text/xml"));
    let reply = format!("Reply 1 to: {speech}");
    assert!(
        xml.contains(&format!("<Say>{}</Say>", xml_escape(&reply))),
        "{xml}"
    );
    assert!(xml.contains(&gather_tag(&run)), "{xml}");
    let sent = &llm.seen()[0].body["messages"];
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(sent[0]["content"], PROMPT);
    assert_eq!(sent[1]["content"], greeting.as_str());
    assert_eq!(sent[2]["content"], speech);
    let turns = transcript(&app, &run);
    assert_eq!(turns.len(), 3);
    assert_eq!(
        (turns[1]["role"].as_str(), turns[1]["content"].as_str()),
        (Some("user"), Some(speech))
    );
    assert_eq!(turns[2]["content"], reply.as_str());

    // Silence: asked again.
    let (status, _, xml) = hook(&app, "gather", &run, &[("SpeechResult", " ")]).await;
    assert_eq!(status, 200);
    assert!(xml.contains("<Say>Sorry, I did not catch that"), "{xml}");
    assert!(xml.contains(&gather_tag(&run)), "{xml}");

    // The LLM fails: an apology, the call goes on, nothing is recorded.
    llm.set(Mode::Fail500);
    let (status, _, xml) = hook(&app, "gather", &run, &[("SpeechResult", "Hello?")]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<Say>Sorry, I am having trouble"), "{xml}");
    assert!(xml.contains(&gather_tag(&run)), "{xml}");
    assert_eq!(transcript(&app, &run).len(), 3);
    llm.set(Mode::Answer);

    // A recording on Twilio's host (over https) is kept; others are not.
    let recording = format!(
        "{}/2010-04-01/Accounts/{SID}/Recordings/RE1",
        twilio.base.replace("http://", "https://")
    );
    let (status, _, xml) = hook(
        &app,
        "recording",
        &run,
        &[("RecordingUrl", "https://evil.example/r.mp3")],
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    let (status, _, _) = hook(&app, "recording", &run, &[("RecordingUrl", &recording)]).await;
    assert_eq!(status, 200);
    let (status, _, xml) = hook(
        &app,
        "recording",
        &run,
        &[("RecordingUrl", "http://evil.example/r.mp3")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(xml.contains("<Response/>"), "{xml}");
    let stored: Option<String> = db(&app)
        .query_row(
            "SELECT recording_url FROM agent_runs WHERE id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored.as_deref(), Some(recording.as_str()));

    // A status that is not final leaves the run in progress.
    let (status, _, _) = hook(&app, "status", &run, &[("CallStatus", "in-progress")]).await;
    assert_eq!(status, 200);
    assert_eq!(run_state(&db(&app), &run), ("in_progress".into(), None));

    // The call ends: completed with Twilio's duration, tokens and usage by
    // the triggers; a second callback changes nothing.
    let (status, _, xml) = hook(
        &app,
        "status",
        &run,
        &[("CallStatus", "completed"), ("CallDuration", "60")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(xml.contains("<Response/>"), "{xml}");
    let row = |app: &TestApp| -> (String, Option<String>, i64, f64) {
        db(app)
            .query_row(
                "SELECT status, disposition, duration_seconds, groq_tokens FROM agent_runs WHERE id = ?1",
                [&run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    assert_eq!(
        row(&app),
        ("completed".into(), Some("user_hangup".into()), 60, 0.78)
    );
    assert_eq!(usage_today(&app, &t.id), Some((1, 60, 0.78)));
    let (status, _, _) = hook(
        &app,
        "status",
        &run,
        &[("CallStatus", "busy"), ("CallDuration", "600")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        row(&app),
        ("completed".into(), Some("user_hangup".into()), 60, 0.78)
    );
    assert_eq!(usage_today(&app, &t.id), Some((1, 60, 0.78)));

    // A call nobody answered fails, at no cost.
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 200, "{body}");
    let second = body["data"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["run_number"], "WR-TEL-000002");
    let (status, _, _) = hook(
        &app,
        "status",
        &second,
        &[("CallStatus", "no-answer"), ("CallDuration", "0")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        run_state(&db(&app), &second),
        ("failed".into(), Some("no_answer".into()))
    );
    assert_eq!(usage_today(&app, &t.id), Some((1, 60, 0.78)));

    // An agent left at the default is not recorded.
    let quiet = create_agent(&app, &t, "Quiet").await;
    let (status, body) = start_phone(&app, &t, &quiet, TO).await;
    assert_eq!(status, 200, "{body}");
    let last = twilio.seen().pop().unwrap();
    assert_eq!(last.field("Record"), None);
    assert_eq!(last.field("RecordingStatusCallback"), None);
    assert_eq!(last.field("TimeLimit"), Some("600"));
    app.stop().await;
}

#[tokio::test]
async fn twilio_refusing_or_out_of_reach_is_a_502_and_the_run_fails() {
    let twilio = TwilioStub::start().await;
    let llm = LlmStub::start().await;
    let app = app_with(&twilio.base, &llm, Some(PUBLIC)).await;
    let (t, agent) = ready_tenant(&app, "refused@example.com").await;
    let last_run = |app: &TestApp| -> String {
        db(app)
            .query_row(
                "SELECT id FROM agent_runs ORDER BY run_number DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    for code in [400, 500] {
        twilio.refuse_with(code);
        let (status, body) = start_phone(&app, &t, &agent, TO).await;
        assert_eq!(status, 502, "{code}: {body}");
        assert_eq!(body["code"], "PROVIDER_ERROR");
        assert_eq!(body["provider"], "twilio");
        assert!(
            body["message"].as_str().unwrap().contains("twilio"),
            "{body}"
        );
        let run = last_run(&app);
        assert_eq!(body["run_id"], run.as_str());
        if code == 400 {
            // A refusal placed nothing: closed at once, at no cost.
            assert_eq!(
                run_state(&db(&app), &run),
                ("failed".into(), Some("failed".into()))
            );
        } else {
            // Twilio failing on its side may still have placed the call:
            // the run waits for a look-up at Twilio instead of being
            // closed (and the number dialled again) on a guess.
            assert_eq!(run_state(&db(&app), &run), ("in_progress".into(), None));
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("may still have been placed"),
                "{body}"
            );
            db(&app)
                .execute(
                    "UPDATE agent_runs SET status = 'failed' WHERE id = ?1",
                    [&run],
                )
                .unwrap();
        }
    }
    app.stop().await;

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = app_with(&format!("http://127.0.0.1:{closed}"), &llm, Some(PUBLIC)).await;
    let (t, agent) = ready_tenant(&app, "unreachable@example.com").await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["provider"], "twilio");
    assert_eq!(
        run_state(&db(&app), &last_run(&app)),
        ("failed".into(), Some("failed".into()))
    );
    app.stop().await;
}

/// A webhook call to `path` (which may carry a query), signed as Twilio
/// signs it: for the public URL with that query.
async fn signed_post(app: &TestApp, path: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
    let url = format!("{PUBLIC}{path}");
    let res = app
        .client
        .post(app.url(path))
        .form(params)
        .header("X-Twilio-Signature", sign(TOKEN, &url, params))
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_silent_caller_is_prompted_again_then_hung_up_on() {
    let twilio = TwilioStub::start().await;
    let llm = LlmStub::start().await;
    let app = app_with(&twilio.base, &llm, Some(PUBLIC)).await;
    let (t, agent) = ready_tenant(&app, "quiet@example.com").await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 200, "{body}");
    let run = body["data"]["run_id"].as_str().unwrap().to_string();
    let gather = format!("/api/calls/twilio/gather/{run}");
    let redirect =
        |n: u32| format!(r#"<Redirect method="POST">{PUBLIC}{gather}?silence={n}</Redirect>"#);

    // The greeting listens, and without an answer comes back counting.
    let (status, _, xml) = hook(&app, "webhook", &run, &[("CallStatus", "in-progress")]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains(&gather_tag(&run)) && xml.contains(&redirect(1)),
        "{xml}"
    );
    // A forged count (signed for another URL) is refused like any forgery.
    let forged = app
        .client
        .post(app.url(&format!("{gather}?silence=5")))
        .form(&[("CallStatus", "in-progress")])
        .header(
            "X-Twilio-Signature",
            sign(
                TOKEN,
                &format!("{PUBLIC}{gather}?silence=1"),
                &[("CallStatus", "in-progress")],
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let (status, xml) = signed_post(
        &app,
        &format!("{gather}?silence=1"),
        &[("CallStatus", "in-progress")],
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains("Could you say it again?") && xml.contains(&redirect(2)),
        "{xml}"
    );
    let (status, xml) = signed_post(
        &app,
        &format!("{gather}?silence=2"),
        &[("CallStatus", "in-progress")],
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains("I will hang up now") && xml.ends_with("<Hangup/></Response>"),
        "{xml}"
    );
    assert!(!xml.contains("<Gather"), "{xml}");

    // Twilio's status callback closes the run and keeps why it ended.
    let (status, _, _) = hook(
        &app,
        "status",
        &run,
        &[("CallStatus", "completed"), ("CallDuration", "30")],
    )
    .await;
    assert_eq!(status, 200);
    let (state, disposition, tokens): (String, String, f64) = db(&app)
        .query_row(
            "SELECT status, disposition, groq_tokens FROM agent_runs WHERE id = ?1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(state, "completed");
    assert_eq!(disposition, "user_idle_max_duration_exceeded");
    assert_eq!(tokens, 0.39);
    app.stop().await;
}

#[tokio::test]
async fn a_phone_call_is_metered_per_turn_and_ended_when_the_quota_runs_out() {
    let twilio = TwilioStub::start().await;
    let llm = LlmStub::start().await;
    let app = app_with(&twilio.base, &llm, Some(PUBLIC)).await;
    let (t, agent) = ready_tenant(&app, "metered@example.com").await;
    let (status, body) = start_phone(&app, &t, &agent, TO).await;
    assert_eq!(status, 200, "{body}");
    let run = body["data"]["run_id"].as_str().unwrap().to_string();
    let (status, _, _) = hook(&app, "webhook", &run, &[("CallStatus", "in-progress")]).await;
    assert_eq!(status, 200);

    // An answered turn is recorded with the stand-in's usage and its price.
    let (status, _, xml) = hook(&app, "gather", &run, &[("SpeechResult", "Hello there")]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("Reply 1 to: Hello there"), "{xml}");
    let seen = llm.seen();
    let expected = (seen[0].prompt_tokens as i64 * 590_000
        + seen[0].completion_tokens as i64 * 790_000
        + 500_000)
        / 1_000_000;
    let (turns, prompt, cost): (i64, i64, i64) = db(&app)
        .query_row(
            "SELECT count(*), sum(prompt_tokens), sum(cost_micros) FROM llm_usage WHERE run_id = ?1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (turns, prompt, cost),
        (1, seen[0].prompt_tokens as i64, expected)
    );

    // The quota is 1 token and the call has run 100 s (1.30 tokens): the
    // next turn says goodbye and hangs up, and the run is ended and billed.
    set_quota(&app, &t, 1).await;
    backdate_start(&app, &run, 100);
    let (status, _, xml) = hook(&app, "gather", &run, &[("SpeechResult", "And then?")]).await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains("used up") && xml.ends_with("<Hangup/></Response>"),
        "{xml}"
    );
    assert!(!xml.contains("<Gather"), "{xml}");
    assert_eq!(llm.seen().len(), 1, "the LLM was not asked");
    let row = || -> (String, Option<String>, i64, f64) {
        db(&app)
            .query_row(
                "SELECT status, disposition, duration_seconds, groq_tokens FROM agent_runs WHERE id = ?1",
                [&run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    let (state, disposition, secs, tokens) = row();
    assert_eq!(
        (state.as_str(), disposition.as_deref()),
        ("completed", Some("quota_exceeded"))
    );
    assert!((100..=102).contains(&secs), "{secs}");
    assert_eq!(tokens, tokens_for(secs));
    assert_eq!(usage_today(&app, &t.id), Some((1, secs, tokens_for(secs))));

    // Twilio's status callback after the hang-up changes nothing.
    let (status, _, _) = hook(
        &app,
        "status",
        &run,
        &[("CallStatus", "completed"), ("CallDuration", "97")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(row(), (state, disposition, secs, tokens));
    assert_eq!(usage_today(&app, &t.id), Some((1, secs, tokens_for(secs))));
    app.stop().await;
}
