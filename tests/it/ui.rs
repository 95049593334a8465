//! The web UI in a real browser: Debian's headless Chromium driven through
//! chromedriver's W3C WebDriver protocol (a few JSON calls, spoken here
//! with reqwest). `.ci/run` installs both; elsewhere the test is skipped
//! with a notice unless `CI` is set. Every page is walked as a tenant and as
//! an admin, asserting what a person sees: visible elements (not merely
//! present ones), no horizontal scroll at 390 px, no `null`/`undefined`
//! printed, and no serious or critical axe-core finding.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::calls::LlmStub;
use crate::common::{after_external_write, TestApp};
use crate::phone::{self, TwilioStub};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Browser {
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
        Browser::start_with(&[]).await
    }

    /// `start` with more Chromium flags (a fake microphone, say).
    pub(crate) async fn start_with(extra: &[String]) -> Option<Browser> {
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
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .map(String::from)
        .into();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
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

    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
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

    pub(crate) async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The element matching `css`, waiting for it to exist.
    pub(crate) async fn find(&self, css: &str) -> String {
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

    pub(crate) async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call("GET", &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `css`'s text contains `want`; returns the text.
    pub(crate) async fn wait_text(&self, css: &str, want: &str) -> String {
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

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
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

    pub(crate) async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    pub(crate) async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Whether `css` matches an element a person can see: laid out (an
    /// offsetParent, or fixed), with a non-empty box.
    pub(crate) async fn visible(&self, css: &str) -> bool {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "const e = document.querySelector(arguments[0]); if (!e) return false; const r = e.getBoundingClientRect(); return (e.offsetParent !== null || getComputedStyle(e).position === 'fixed') && r.width > 0 && r.height > 0;", "args": [css]})),
        )
        .await
            == true
    }

    pub(crate) async fn wait_visible(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.visible(css).await {
            assert!(Instant::now() < deadline, "{css} is never visible");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements matching `css` a person can see.
    pub(crate) async fn count_visible(&self, css: &str) -> u64 {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return [...document.querySelectorAll(arguments[0])].filter(e => { const r = e.getBoundingClientRect(); return e.offsetParent !== null && r.width > 0 && r.height > 0; }).length;", "args": [css]})),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    }

    pub(crate) async fn resize(&self, width: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": 900})),
        )
        .await;
    }

    /// Opens `#/route`, waits for its title and for loading to end, then
    /// checks it as a person would see it at 1280 and 390 px (no horizontal
    /// scroll, no null/undefined printed, no serious accessibility finding)
    /// and keeps screenshots of both.
    pub(crate) async fn check_page(&self, app: &TestApp, route: &str, title: &str, name: &str) {
        self.goto(&app.url(&format!("/#/{route}"))).await;
        self.wait_text("#page-title", title).await;
        self.settle().await;
        self.check_shown(name).await;
    }

    /// Waits until no loading state is shown.
    pub(crate) async fn settle(&self) {
        let deadline = Instant::now() + WAIT;
        while self.count_visible(".state.loading").await > 0 {
            assert!(Instant::now() < deadline, "the page never finished loading");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The checks of `check_page` on the page as it is now.
    pub(crate) async fn check_shown(&self, name: &str) {
        let body = self.text("body").await;
        for bad in ["null", "undefined", "[object Object]", "NaN"] {
            let word = regex_word(&body, bad);
            assert!(!word, "{name} shows {bad:?}: {body}");
        }
        assert_eq!(
            self.count_visible(".state.failure").await,
            0,
            "{name} shows an error: {body}"
        );
        self.screenshot(&format!("{name}-1280")).await;
        self.resize(390).await;
        let widths = self
            .script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            .await;
        assert!(
            widths[0].as_u64() <= widths[1].as_u64(),
            "{name} scrolls sideways at 390 px: {widths}"
        );
        self.screenshot(&format!("{name}-390")).await;
        self.axe(name).await;
        self.resize(1280).await;
    }

    /// axe-core's serious and critical findings on the page must be none.
    /// The pinned axe-core of tests/ui-deps is injected by the test only.
    pub(crate) async fn axe(&self, name: &str) {
        let Some(source) = axe_source() else {
            return;
        };
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": format!("{source}\nreturn true;"), "args": []})),
        )
        .await;
        let found = self
            .call(
                "POST",
                "/execute/async",
                Some(json!({"script": "const done = arguments[arguments.length - 1]; axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')))).catch(e => done(['axe failed: ' + e]));", "args": []})),
            )
            .await;
        assert_eq!(found, json!([]), "{name}: accessibility findings");
    }

    /// Saves a screenshot when `VOXFLOW_UI_SCREENSHOTS` names a folder, for
    /// a person to look at.
    pub(crate) async fn screenshot(&self, name: &str) {
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

/// Whether `word` stands in `text` as a word of its own (so "nullable"
/// or "undefinedness" would not count, but "null" would).
fn regex_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The pinned axe-core (`npm ci --prefix tests/ui-deps`, as `.ci/run` does).
/// Missing outside CI, the check is skipped with a notice.
fn axe_source() -> Option<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ui-deps/node_modules/axe-core/axe.min.js"
    );
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install axe-core (.ci/run runs npm ci --prefix tests/ui-deps)"
            );
            eprintln!(
                "accessibility check skipped: {path} is missing (npm ci --prefix tests/ui-deps)"
            );
            None
        }
    }
}

/// Registers `email` through the page's form; the cookie signs it in.
pub(crate) async fn register(browser: &Browser, app: &TestApp, email: &str) {
    browser.goto(&app.url("/")).await;
    browser.click("#toggle-register").await;
    browser.wait_visible("#register-form").await;
    browser
        .type_into("#register-form input[name=email]", email)
        .await;
    browser
        .type_into("#register-form input[name=password]", "Br0wser-Pass")
        .await;
    browser.click("#register-form button[type=submit]").await;
    browser.wait_text("#page-title", "Dashboard").await;
}

/// Creates an agent through the Agents page's form and waits for it in the list.
pub(crate) async fn create_agent(browser: &Browser, app: &TestApp, name: &str, prompt: &str) {
    browser.goto(&app.url("/#/agents")).await;
    browser.wait_visible("#agent-form").await;
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
    browser.wait_text("#agents-list", name).await;
}

/// Confirms the open confirmation dialog.
async fn confirm(browser: &Browser) {
    browser.wait_visible("dialog[open] #confirm-ok").await;
    browser.click("#confirm-ok").await;
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
async fn a_tenant_walks_every_page_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stub = LlmStub::start().await;
    let base = stub.base.clone();
    let app = TestApp::start_with(move |c| {
        c.groq_base_url = base;
        c.groq_api_key = Some("gsk_server_key_for_the_ui_test".into());
        // The operator runs on-prem speech servers, so tenants may choose them.
        c.speech_stt_base_url = Some("http://127.0.0.1:8000/v1".into());
        c.speech_tts_base_url = Some("http://127.0.0.1:8880/v1".into());
    })
    .await;

    // The sign-in page shows one form, no top bar; "Create one" swaps it
    // for the registration form.
    browser.goto(&app.url("/")).await;
    browser.wait_visible("#login-form").await;
    assert_eq!(browser.count_visible("form").await, 1);
    assert!(!browser.visible("#register-form").await);
    assert!(
        !browser.visible("#logout").await,
        "Sign out shows before sign-in"
    );
    browser.check_shown("sign-in").await;
    browser.click("#toggle-register").await;
    browser.wait_visible("#register-form").await;
    assert_eq!(browser.count_visible("form").await, 1);
    assert!(!browser.visible("#login-form").await);
    // A weak password is refused beside its field, before any request.
    browser
        .type_into("#register-form input[name=email]", "ui@example.com")
        .await;
    browser
        .type_into("#register-form input[name=password]", "short")
        .await;
    browser.click("#register-form button[type=submit]").await;
    browser
        .wait_text(
            "#register-form [name=password] ~ .field-error",
            "8–128 characters",
        )
        .await;
    browser
        .type_into("#register-form input[name=password]", "Br0wser-Pass")
        .await;
    browser.click("#register-form button[type=submit]").await;
    browser.wait_text("#page-title", "Dashboard").await;
    assert_eq!(browser.text("#who").await, "ui@example.com");
    assert!(browser.visible("#logout").await);
    browser
        .check_page(&app, "dashboard", "Dashboard", "dashboard")
        .await;

    // At 390 px the navigation folds behind Menu, and every link is on screen.
    browser.resize(390).await;
    assert!(!browser.visible("#nav a[href='#/keys']").await);
    browser.click("#menu").await;
    for link in ["#/keys", "#/settings", "#/campaigns"] {
        browser
            .wait_visible(&format!("#nav a[href='{link}']"))
            .await;
    }
    let inside = browser
        .script("return [...document.querySelectorAll('#nav a, #logout')].every(e => { const r = e.getBoundingClientRect(); return r.left >= 0 && r.right <= document.documentElement.clientWidth; })")
        .await;
    assert_eq!(inside, true, "a navigation link is off-screen at 390 px");
    browser.resize(1280).await;

    // A hostile name is shown as text, not run as HTML.
    let name = "<img src=x onerror=\"window.pwned=1\">Ava";
    create_agent(
        &browser,
        &app,
        name,
        "You are Ava, a friendly receptionist.",
    )
    .await;
    browser
        .wait_text("#agents-limit", "1 of 2 agents on the free plan")
        .await;
    assert_eq!(
        browser.script("return window.pwned === undefined").await,
        true
    );
    browser.check_page(&app, "agents", "Agents", "agents").await;
    // A prompt too short is refused beside its field.
    browser
        .type_into("#agent-form input[name=name]", "Bo")
        .await;
    browser
        .type_into("#agent-form input[name=use_case]", "Sales")
        .await;
    browser
        .type_into("#agent-form textarea[name=description]", "short")
        .await;
    browser.click("#agent-form button[type=submit]").await;
    browser
        .wait_text("#agent-form [name=description] ~ .field-error", "10–5000")
        .await;

    // Edited on its own page.
    browser.click("#agents-list a[href^='#/agents/']").await;
    browser.wait_visible("#agent-edit-form").await;
    browser
        .type_into("#agent-edit-form input[name=use_case]", "Reception")
        .await;
    browser.click("#agent-edit-form button[type=submit]").await;
    browser.wait_text("#agent-edit-message", "Saved.").await;
    browser.settle().await;
    browser.check_shown("agent").await;

    // A web call; an LLM failure takes the message back out of the chat.
    browser.goto(&app.url("/#/talk")).await;
    browser.wait_text("#page-title", "Talk").await;
    // Without speech providers the microphone button says why, and the
    // call goes on typed.
    browser.click("#call-voice").await;
    browser
        .wait_text(
            "#call-mic-message",
            "Voice is not available, so this call is typed: Voice calls through Deepgram need a Deepgram key",
        )
        .await;
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
    stub.set(crate::calls::Mode::Fail500);
    browser.type_into("#call-input", "And on Monday?").await;
    browser.click("#call-form button[type=submit]").await;
    browser.wait_text("#call-message", "Not sent").await;
    let chat = browser.text("#chat").await;
    assert!(
        !chat.contains("And on Monday?"),
        "the discarded message stays: {chat}"
    );
    let kept = browser
        .script("return document.getElementById('call-input').value")
        .await;
    assert_eq!(kept, "And on Monday?", "the message goes back to the input");
    stub.set(crate::calls::Mode::Answer);
    browser.check_shown("talk").await;
    browser.click("#call-end").await;
    browser.wait_text("#call-message", "ended").await;

    // The call afterwards: in the history, then in full with its transcript.
    browser.check_page(&app, "calls", "Calls", "calls").await;
    browser.wait_text("#page-title", "Calls").await;
    browser.click("a[href^='#/calls/']").await;
    browser.wait_text("#page-title", "Call WR-WEB-").await;
    browser.settle().await;
    let transcript = browser.text("#transcript").await;
    assert!(
        transcript.contains("Caller") && transcript.contains("Is the clinic open on Sunday?"),
        "{transcript}"
    );
    assert!(transcript.contains("Agent"), "{transcript}");
    browser.check_shown("call").await;
    // Filters: a disposition no call has shows the empty state.
    browser
        .check_page(&app, "calls?disposition=busy", "Calls", "calls-filtered")
        .await;
    browser
        .wait_text("#view", "No call matches these filters.")
        .await;

    browser
        .check_page(&app, "reports", "Daily report", "reports")
        .await;
    browser.wait_visible("#report-download").await;
    browser.wait_visible("#report-timezone").await;

    // A key saved in the browser is shown masked, never in clear.
    browser.check_page(&app, "keys", "API keys", "keys").await;
    browser
        .type_into(
            "#groq-form input[name=api_key]",
            "gsk_abcdefghijklmnopqrstuvwxyz0123",
        )
        .await;
    browser.click("#groq-form button[type=submit]").await;
    let table = browser.wait_text("#keys-list", "yes (user)").await;
    assert!(!table.contains("abcdefghijklmnopqrstuvwxyz"), "{table}");
    browser
        .check_page(&app, "settings", "Settings", "settings")
        .await;
    // Speech through the on-prem servers, chosen and saved in the page: the
    // choice is offered beside Deepgram, and the hints follow it.
    for (select, input, value, want) in [
        (
            "#stt-provider",
            "#stt-model",
            "Systran/faster-whisper-small",
            "your speech server loads",
        ),
        (
            "#tts-provider",
            "#tts-voice",
            "af_heart",
            "a voice of your speech server",
        ),
    ] {
        let offered = browser.text(select).await;
        assert!(
            offered.contains("Deepgram") && offered.contains("OpenAI-compatible server (on-prem)"),
            "{offered}"
        );
        browser
            .click(&format!("{select} option[value=openai_compatible]"))
            .await;
        let hint = browser.text(&format!("{input}-hint")).await;
        assert!(hint.to_lowercase().contains(want), "{hint}");
        browser.type_into(input, value).await;
    }
    browser.click("#service-form button[type=submit]").await;
    browser
        .wait_text("#settings-message", "Settings saved.")
        .await;
    let saved: (String, String, String, String) = crate::agents::db(&app)
        .query_row(
            "SELECT stt_provider, stt_model, tts_provider, tts_voice FROM service_configs
             WHERE user_id = (SELECT id FROM users WHERE email = 'ui@example.com')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        saved,
        (
            "openai_compatible".into(),
            "Systran/faster-whisper-small".into(),
            "openai_compatible".into(),
            "af_heart".into()
        )
    );
    // Shown again as saved when the page is opened afresh.
    browser
        .check_page(&app, "settings", "Settings", "settings-onprem")
        .await;
    let chosen = browser
        .script("return [document.querySelector('#stt-provider').value, document.querySelector('#tts-provider').value]")
        .await;
    assert_eq!(chosen, json!(["openai_compatible", "openai_compatible"]));
    browser
        .check_page(&app, "campaigns", "Campaigns", "campaigns")
        .await;

    // A deep link survives a reload.
    browser.goto(&app.url("/#/calls?disposition=busy")).await;
    browser.wait_text("#view", "No call matches").await;
    browser.call("POST", "/refresh", Some(json!({}))).await;
    browser.wait_text("#view", "No call matches").await;

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

    browser.click("#logout").await;
    browser.wait_visible("#login-form").await;
    assert_eq!(browser.count_visible("form").await, 1);
    let (status, _) = crate::auth::get(&app, "/api/auth/me", None).await;
    assert_eq!(status, 401);
    browser.call("DELETE", "", None).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_walks_every_page_and_each_change_reaches_the_audit_log() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::start().await;
    let (_, tenant_id) = crate::auth::register(&app, "tenant@example.com").await;
    let (_, other_id) = crate::auth::register(&app, "other@example.com").await;

    browser.goto(&app.url("/")).await;
    browser
        .type_into("#login-form input[name=email]", crate::common::ADMIN_EMAIL)
        .await;
    browser
        .type_into(
            "#login-form input[name=password]",
            crate::common::ADMIN_PASSWORD,
        )
        .await;
    browser.click("#login-form button[type=submit]").await;
    browser.wait_text("#page-title", "Dashboard").await;

    browser
        .check_page(&app, "admin/users", "Users", "admin-users")
        .await;
    browser.wait_text("#users-list", "tenant@example.com").await;
    browser
        .check_page(
            &app,
            "admin/users?search=other&sort_by=email&order=asc",
            "Users",
            "admin-users-search",
        )
        .await;
    let list = browser.text("#users-list").await;
    assert!(
        list.contains("other@example.com") && !list.contains("tenant@example.com"),
        "{list}"
    );

    // A tier change applies the tier's limits.
    browser
        .check_page(
            &app,
            &format!("admin/users/{tenant_id}"),
            "tenant@example.com",
            "admin-user",
        )
        .await;
    browser.wait_text("#user-agents", "0 / 2").await;
    browser
        .script("const s = document.querySelector('#user-limits-form [name=subscription_tier]'); s.value = 'pro'; s.dispatchEvent(new Event('change')); return true")
        .await;
    browser.wait_text("#tier-hint", "applies its limits").await;
    browser.click("#user-limits-form button[type=submit]").await;
    confirm(&browser).await;
    browser.wait_text("#user-agents", "0 / 10").await;
    browser.wait_text("#user-month-tokens", "/ 50,000").await;

    // Deactivate, then back in the audit log.
    browser.click("#user-toggle").await;
    confirm(&browser).await;
    browser.wait_text("#user-toggle", "Activate").await;
    browser.settle().await;
    browser.check_shown("admin-user-inactive").await;

    // An invalid limit is refused beside its field, before any request.
    browser
        .type_into("#user-limits-form [name=max_agents]", "5000")
        .await;
    browser.click("#user-limits-form button[type=submit]").await;
    browser
        .wait_text(
            "#user-limits-form [name=max_agents] ~ .field-error",
            "0 to 1,000",
        )
        .await;

    // Delete another user.
    browser
        .goto(&app.url(&format!("/#/admin/users/{other_id}")))
        .await;
    browser.wait_text("#page-title", "other@example.com").await;
    browser.click("#user-delete").await;
    confirm(&browser).await;
    browser.wait_text("#page-title", "Users").await;
    browser.settle().await;
    let list = browser.text("#users-list").await;
    assert!(!list.contains("other@example.com"), "{list}");

    // The audit log shows the three changes, with the tier as a diff.
    browser
        .check_page(&app, "admin/audit", "Audit log", "admin-audit")
        .await;
    let log = browser.wait_text("#audit-entries", "delete user").await;
    for want in [
        "toggle user status",
        "update user subscription",
        "update user limits",
        "free",
        "pro",
        "other@example.com",
    ] {
        assert!(log.contains(want), "the audit page lacks {want:?}: {log}");
    }
    assert!(!log.contains("create agent"), "{log}");
    // Tenants' own actions only with the switch.
    let tenant = crate::agents::tenant(&app, "own@example.com").await;
    crate::agents::create_agent(&app, &tenant, "Own").await;
    browser.goto(&app.url("/#/admin/audit")).await;
    browser.wait_text("#audit-entries", "delete user").await;
    assert!(!browser
        .text("#audit-entries")
        .await
        .contains("create agent"));
    browser.click("#audit-tenants").await;
    browser.wait_text("#audit-entries", "create agent").await;
    browser.settle().await;
    browser.check_shown("admin-audit-all").await;

    browser
        .check_page(&app, "admin/analytics", "Analytics", "admin-analytics")
        .await;
    browser.wait_visible("#revenue-mrr").await;
    browser
        .check_page(&app, "admin/system", "System health", "admin-system")
        .await;
    browser.wait_text("#health-status", "ok").await;
    browser
        .check_page(&app, "admin/agents", "All agents", "admin-agents")
        .await;
    browser
        .wait_text("#all-agents-list", "own@example.com")
        .await;
    browser.call("DELETE", "", None).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pro_tenant_places_a_phone_call_and_runs_a_campaign_from_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let llm = LlmStub::start().await;
    let twilio = TwilioStub::start().await;
    let app = phone::app_with(&twilio.base, &llm, Some("https://voxflow.example.com")).await;
    register(&browser, &app, "caller@example.com").await;
    create_agent(
        &browser,
        &app,
        "Max",
        "You are Max and you book appointments.",
    )
    .await;

    // On the free plan the page says why the call is refused.
    browser.goto(&app.url("/#/talk")).await;
    browser.type_into("#phone-number", "+14155550123").await;
    browser.click("#phone-form button[type=submit]").await;
    browser.wait_text("#phone-message", "plan").await;

    // Upgraded and with Twilio saved in the page, it calls.
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    conn.execute(
        "UPDATE users SET subscription_tier = 'pro' WHERE email = 'caller@example.com'",
        [],
    )
    .unwrap();
    after_external_write().await;
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
    browser.wait_text("#keys-list", "yes (user)").await;
    browser.goto(&app.url("/#/talk")).await;
    browser.type_into("#phone-number", "+14155550123").await;
    browser.click("#phone-form button[type=submit]").await;
    browser
        .wait_text("#phone-message", "Calling: WR-TEL-000001")
        .await;
    let placed = twilio.seen();
    assert_eq!(placed.len(), 1, "one call placed (before any campaign)");
    assert_eq!(placed[0].field("To"), Some("+14155550123"));
    assert_eq!(placed[0].field("From"), Some(phone::FROM));

    // A campaign from a CSV file chosen in the page, with advanced settings.
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
    browser.click("#campaign-form details summary").await;
    browser
        .type_into("#campaign-form input[name=max_retries]", "4")
        .await;
    browser.click("#campaign-form button[type=submit]").await;
    browser
        .wait_text(
            "#campaigns-message",
            "Imported 1 of 3 rows, 1 duplicates dropped, skipped row 4",
        )
        .await;
    browser.wait_text("#campaigns-list", "Spring recall").await;
    browser
        .click("#campaigns-list a[href^='#/campaigns/']")
        .await;
    browser.wait_text("#page-title", "Spring recall").await;
    browser
        .wait_text("#campaign-settings", "Up to 4 retries")
        .await;
    browser
        .wait_text("#campaign-contacts", "+14155550131")
        .await;
    browser.settle().await;
    browser.check_shown("campaign").await;
    browser.click("#campaign-start").await;
    // The page refreshes itself: the dialer's progress appears without a reload.
    browser.wait_text("#campaign-progress", "running").await;
    browser.wait_text("#campaign-contacts", "Attempts").await;
    browser.click("#campaign-stop").await;
    confirm(&browser).await;
    browser.wait_text("#campaign-progress", "stopped").await;
    browser.click("#campaign-delete").await;
    confirm(&browser).await;
    browser.wait_text("#page-title", "Campaigns").await;
    browser
        .wait_text("#campaigns-list", "No campaigns yet")
        .await;
    browser.call("DELETE", "", None).await;
    app.stop().await;
}
