//! A voice call in a real browser: Chromium with a fake microphone that
//! plays espeak-ng's speech from a WAV file, against the real server with
//! the Deepgram stand-in and the streaming LLM stand-in of `voice`. The
//! page's microphone button opens the audio socket, its worklet sends
//! 16 kHz PCM, and what the person sees is checked: their words and the
//! agent's reply in the live transcript, the agent's audio played, the call
//! ended and billed on the call's page.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::ui::{create_agent, register, Browser};
use crate::voice::{streaming_llm, utterance, voice_app, SpeechStandIn};

const SAID: &str = "Can I book a cleaning on Tuesday";
const REPLY: &str = "Of course. Tuesday at ten is free.";
/// How much audio the speech stand-in takes for one utterance: long enough
/// that the short reply has been spoken before the looping microphone's
/// next utterance starts (which would be a barge-in).
const UTTERANCE_SECS: f64 = 2.0;

/// A WAV file (16-bit mono PCM at 16 kHz) of `pcm`, for Chromium's fake
/// microphone.
fn wav(pcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + pcm.len());
    let len = pcm.len() as u32;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// A browser whose microphone says `SAID` (looping), or `None` without
/// Chromium (outside CI).
async fn browser_with_microphone(dir: &std::path::Path) -> Option<Browser> {
    let file = dir.join("utterance.wav");
    std::fs::write(&file, wav(&utterance(SAID, UTTERANCE_SECS))).unwrap();
    Browser::start_with(&[
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", file.display()),
    ])
    .await
}

/// The agent audio the page has played, in samples.
async fn played(browser: &Browser) -> u64 {
    browser
        .script("return Number(document.getElementById('call-audio').dataset.playedSamples)")
        .await
        .as_u64()
        .unwrap_or(0)
}

async fn wait_played(browser: &Browser, more_than: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = played(browser).await;
        if n > more_than {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the page played no agent audio past {more_than} samples"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a turn of `role` saying `text` is in the live transcript and a
/// person can see it.
async fn turn_shown(browser: &Browser, role: &str, text: &str) -> bool {
    browser
        .call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return [...document.querySelectorAll('#chat .turn.' + arguments[0])].some(e => { const r = e.getBoundingClientRect(); return e.offsetParent !== null && r.width > 0 && r.height > 0 && !e.classList.contains('interim') && e.querySelector('.turn-text').textContent === arguments[1]; })", "args": [role, text]})),
        )
        .await
        == true
}

async fn wait_turn(browser: &Browser, role: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !turn_shown(browser, role, text).await {
        let chat = browser.text("#view").await;
        assert!(
            Instant::now() < deadline,
            "the live transcript never showed the {role}'s {text:?}: {chat}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microphone_button_speaks_with_the_agent_in_the_browser() {
    let speech = SpeechStandIn::start(UTTERANCE_SECS, 20).await;
    speech.script(&[SAID]);
    let llm = streaming_llm(REPLY).await;
    let app = voice_app(&speech, &llm).await;
    let Some(browser) = browser_with_microphone(app.dir.path()).await else {
        return;
    };
    register(&browser, &app, "speaker@example.com").await;
    create_agent(
        &browser,
        &app,
        "Vera",
        "You are Vera, the clinic's receptionist.",
    )
    .await;
    browser.goto(&app.url("/#/talk")).await;
    browser.wait_text("#page-title", "Talk").await;
    browser.click("#call-voice").await;

    // The agent's first message is shown and spoken when the call starts.
    wait_turn(
        &browser,
        "assistant",
        "Hello! I'm Vera. How can I help you today?",
    )
    .await;
    let greeting = wait_played(&browser, 0).await;
    browser.wait_visible("#call-audio").await;
    // The microphone's words, then the agent's reply, in the live transcript.
    wait_turn(&browser, "user", SAID).await;
    wait_turn(&browser, "assistant", REPLY).await;
    let after_reply = wait_played(&browser, greeting).await;
    // 20 ms a word at 16 kHz: the reply's seven words were played too.
    assert!(
        after_reply >= greeting + 7 * 20 * 16 / 2,
        "{greeting} then {after_reply} samples"
    );
    browser
        .wait_text("#call-audio", "Agent audio played:")
        .await;
    assert_eq!(browser.text("#call-mic-message").await, "");

    // The microphone's audio reaches the server at 16 kHz in real time,
    // whatever rate the browser's device runs at.
    let (from, at) = (
        speech.state.audio_received.load(Ordering::SeqCst),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes = speech.state.audio_received.load(Ordering::SeqCst) - from;
    let rate = bytes as f64 / 2.0 / at.elapsed().as_secs_f64();
    assert!(
        (14_000.0..18_000.0).contains(&rate),
        "the microphone reached the server at {rate:.0} samples a second"
    );

    // Mute is a toggle a screen reader hears as pressed.
    browser.click("#call-mute").await;
    browser.wait_text("#call-mute", "Unmute").await;
    assert_eq!(
        browser
            .script("return document.getElementById('call-mute').getAttribute('aria-pressed')")
            .await,
        "true"
    );
    browser.wait_text("#call-status", "Muted").await;
    browser.check_shown("talk-voice").await;
    browser.click("#call-mute").await;
    browser.wait_text("#call-mute", "Mute").await;

    // Hanging up ends the call; its page shows it completed and billed.
    browser.click("#call-end").await;
    browser.wait_text("#call-message", "ended").await;
    browser.click("#call-message a").await;
    browser.wait_text("#page-title", "Call WR-WEB-").await;
    browser.settle().await;
    let summary = browser.text("#view").await;
    for want in ["completed", "user hangup", "LLM tokens"] {
        assert!(
            summary.contains(want),
            "the call page lacks {want:?}: {summary}"
        );
    }
    let transcript = browser.text("#transcript").await;
    assert!(
        transcript.contains(SAID) && transcript.contains(REPLY),
        "{transcript}"
    );
    browser.check_shown("call-voice").await;
    browser.call("DELETE", "", None).await;
    app.stop().await;
}
