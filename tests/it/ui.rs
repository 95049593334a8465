//! The web UI in a real browser: Debian's headless Chromium driven through
//! chromedriver's W3C WebDriver protocol (a few JSON calls, spoken here
//! with reqwest). `.ci/run` installs both; elsewhere the test is skipped
//! with a notice unless `CI` is set.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::calls::LlmStub;
use crate::common::TestApp;
use crate::phone::{self, TwilioStub};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(20);

struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// `None` when Chromium or chromedriver is not installed (outside CI).
    async fn start() -> Option<Browser> {
        if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install chromium and chromium-driver (.ci/run does)"
            );
            eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed");
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            http,
            base,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Some(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if self.session.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The element matching `css`, waiting for it to exist.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self
                .call(
                    "POST",
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call("GET", &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `css`'s text contains `want`; returns the text.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}; it shows {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a screenshot when `VOXFLOW_UI_SCREENSHOTS` names a folder, for
    /// a person to look at.
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("VOXFLOW_UI_SCREENSHOTS") {
            let b64 = self.call("GET", "/screenshot", None).await;
            let bytes = decode_base64(b64.as_str().unwrap_or_default());
            std::fs::write(
                std::path::Path::new(&dir).join(format!("{name}.png")),
                bytes,
            )
            .unwrap();
        }
    }
}

/// Registers `email` through the page's form; the cookie signs it in.
async fn register(browser: &Browser, app: &TestApp, email: &str) {
    browser.goto(&app.url("/")).await;
    browser.click("#toggle-register").await;
    browser
        .type_into("#register-form input[name=email]", email)
        .await;
    browser
        .type_into("#register-form input[name=password]", "Br0wser-Pass")
        .await;
    browser.click("#register-form button[type=submit]").await;
    browser.find("#agents-limit").await;
}

/// Creates an agent through the page's form and waits for it in the list.
async fn create_agent(browser: &Browser, name: &str, prompt: &str) {
    browser
        .type_into("#agent-form input[name=name]", name)
        .await;
    browser
        .type_into("#agent-form input[name=use_case]", "Front desk")
        .await;
    browser
        .type_into("#agent-form textarea[name=description]", prompt)
        .await;
    browser.click("#agent-form button[type=submit]").await;
    browser.wait_text("#agents-body", name).await;
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_registers_creates_an_agent_and_talks_to_it_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stub = LlmStub::start().await;
    let base = stub.base.clone();
    let app = TestApp::start_with(move |c| {
        c.groq_base_url = base;
        c.groq_api_key = Some("gsk_server_key_for_the_ui_test".into());
    })
    .await;

    // Register through the form; the session cookie signs the page in.
    browser.goto(&app.url("/")).await;
    browser.click("#toggle-register").await;
    browser
        .type_into("#register-form input[name=email]", "ui@example.com")
        .await;
    browser
        .type_into("#register-form input[name=password]", "Br0wser-Pass")
        .await;
    browser.click("#register-form button[type=submit]").await;
    browser
        .wait_text("#agents-limit", "0 of 2 agents on the free plan")
        .await;
    assert_eq!(browser.text("#who").await, "ui@example.com");

    // A hostile name is shown as text, not run as HTML.
    let name = "<img src=x onerror=\"window.pwned=1\">Ava";
    create_agent(&browser, name, "You are Ava, a friendly receptionist.").await;
    browser.wait_text("#agents-limit", "1 of 2").await;
    assert_eq!(
        browser.script("return window.pwned === undefined").await,
        true
    );
    browser.screenshot("agents").await;

    // A web call: greeting, one exchange with the (stand-in) LLM, the end.
    browser.click("a[href^='#/call/']").await;
    browser.click("#call-start").await;
    browser
        .wait_text("#chat", "How can I help you today?")
        .await;
    browser
        .type_into("#call-input", "Is the clinic open on Sunday?")
        .await;
    browser.click("#call-form button[type=submit]").await;
    browser
        .wait_text("#chat", "Reply 1 to: Is the clinic open on Sunday?")
        .await;
    browser.screenshot("call").await;
    // Leaving the page leaves the call open; on the free plan the next
    // start is refused, and the page offers to end the open call.
    browser.goto(&app.url("/#/agents")).await;
    browser.find("#agents-body").await;
    browser.click("a[href^='#/call/']").await;
    browser.click("#call-start").await;
    browser
        .wait_text("#call-message", "allows 1 call(s) at a time")
        .await;
    browser.click("#call-message button").await;
    browser
        .wait_text("#call-message", "WR-WEB-000001 ended")
        .await;
    browser.click("#call-start").await;
    browser
        .wait_text("#call-message", "WR-WEB-000002 in progress")
        .await;
    browser.click("#call-end").await;
    browser
        .wait_text("#call-message", "WR-WEB-000002 ended: 0 s, 0 tokens")
        .await;
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body["messages"][0]["content"],
        "You are Ava, a friendly receptionist."
    );

    // A key saved in the browser is shown masked, never in clear.
    browser.goto(&app.url("/#/keys")).await;
    browser
        .type_into(
            "#groq-form input[name=api_key]",
            "gsk_abcdefghijklmnopqrstuvwxyz0123",
        )
        .await;
    browser.click("#groq-form button[type=submit]").await;
    let row = browser.wait_text("#key-groq", "yes (user)").await;
    assert!(!row.contains("abcdefghijklmnopqrstuvwxyz"), "{row}");
    browser.screenshot("keys").await;

    // Nothing was loaded from anywhere but this server.
    let origins = browser
        .script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        .await;
    for origin in origins.as_array().unwrap() {
        assert_eq!(
            origin.as_str().unwrap(),
            app.base,
            "the page loaded something from elsewhere"
        );
    }

    // Usage shows the call; signing out returns to the login form.
    browser.goto(&app.url("/#/usage")).await;
    browser.wait_text("#usage-calls", "2").await;
    browser.wait_text("#usage-costs", "LLM costs (USD)").await;
    browser.click("#logout").await;
    browser.find("#login-form").await;
    let (status, _) = crate::auth::get(&app, "/api/auth/me", None).await;
    assert_eq!(status, 401);
    browser.call("DELETE", "", None).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pro_tenant_places_a_phone_call_from_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let llm = LlmStub::start().await;
    let twilio = TwilioStub::start().await;
    let app = phone::app_with(&twilio.base, &llm, Some("https://voxflow.example.com")).await;
    register(&browser, &app, "caller@example.com").await;
    create_agent(&browser, "Max", "You are Max and you book appointments.").await;

    // On the free plan the page says why the call is refused.
    browser.goto(&app.url("/#/call")).await;
    browser.type_into("#phone-number", "+14155550123").await;
    browser.click("#phone-form button[type=submit]").await;
    browser.wait_text("#phone-message", "plan").await;

    // Upgraded by an admin and with Twilio saved in the page, it calls.
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    conn.execute(
        "UPDATE users SET subscription_tier = 'pro' WHERE email = 'caller@example.com'",
        [],
    )
    .unwrap();
    browser.goto(&app.url("/#/keys")).await;
    browser
        .type_into("#twilio-form input[name=account_sid]", phone::SID)
        .await;
    browser
        .type_into("#twilio-form input[name=auth_token]", phone::TOKEN)
        .await;
    browser
        .type_into("#twilio-form input[name=phone_number]", phone::FROM)
        .await;
    browser.click("#twilio-form button[type=submit]").await;
    browser.wait_text("#key-twilio", "yes (user)").await;
    browser.goto(&app.url("/#/call")).await;
    browser.type_into("#phone-number", "+14155550123").await;
    browser.click("#phone-form button[type=submit]").await;
    browser
        .wait_text("#phone-message", "Calling: WR-TEL-000001")
        .await;
    browser.screenshot("phone").await;
    let placed = twilio.seen();
    assert_eq!(placed.len(), 1, "one call placed (before any campaign)");
    assert_eq!(placed[0].field("To"), Some("+14155550123"));
    assert_eq!(placed[0].field("From"), Some(phone::FROM));

    // A campaign from a CSV file chosen in the page, started and paused.
    let csv = app.dir.path().join("contacts.csv");
    std::fs::write(
        &csv,
        "Phone,First_Name\n+14155550131,Ann\n+1 415 555 0131,Dup\nnot-a-number,Bad\n",
    )
    .unwrap();
    browser.goto(&app.url("/#/campaigns")).await;
    browser
        .type_into("#campaign-form input[name=name]", "Spring recall")
        .await;
    let file = browser.find("#campaign-form input[name=file]").await;
    browser
        .call(
            "POST",
            &format!("/element/{file}/value"),
            Some(json!({"text": csv.display().to_string()})),
        )
        .await;
    browser.click("#campaign-form button[type=submit]").await;
    browser
        .wait_text(
            "#campaigns-message",
            "Imported 1 of 3 rows, 1 duplicates dropped, skipped row 4",
        )
        .await;
    browser.wait_text("#campaigns-body", "Spring recall").await;
    browser.click("#campaigns-body button").await;
    browser.wait_text("#campaigns-body .state", "running").await;
    browser.screenshot("campaigns").await;
    browser.call("DELETE", "", None).await;
    app.stop().await;
}
