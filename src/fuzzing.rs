//! Entry points for the fuzz targets in `fuzz/` and the property tests:
//! thin wrappers that hand the parsers which read strangers' bytes to a
//! caller outside the crate, without making those parsers part of the API.
//! Each wrapper calls the code the server runs, never a copy of it.

use std::sync::OnceLock;

use axum::extract::ws::Message;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Form;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

pub use crate::api_keys::formats::check_e164;
pub use crate::campaigns::import::{normalize_phone, parse as parse_csv, FileError, Parsed};
pub use crate::http::error::ApiError;
pub use crate::providers::audio::{
    first_channel, mulaw_decode, mulaw_encode, pcm_bytes, pcm_samples, wav, wav_header, Resampler,
    WavError, WavFormat,
};
pub use crate::providers::twilio::signature_matches;

use crate::calls::voice::{Input, Transport};
use crate::http::extract::ApiJson;

/// The extractors are async but never wait on anything but the in-memory
/// body; one small runtime, made once, runs them.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
        })
        .block_on(f)
}

/// The text a response carries (TwiML, an error envelope).
fn body_text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let bytes = block_on(response.into_body().collect())
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// What Twilio signs for a webhook: the URL, then the sorted parameters.
pub fn twilio_signed_data(url: &str, params: &[(String, String)]) -> String {
    crate::providers::twilio::signed_data(url, params)
}

/// The `X-Twilio-Signature` Twilio sends: base64 of the HMAC-SHA1 of the
/// signed data under the auth token (Twilio's side, for the properties).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    let tag = ring::hmac::sign(&key, twilio_signed_data(url, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// A webhook's form body as the Twilio webhooks read it (axum's `Form`
/// into name/value pairs, in the order sent), or the rejection's status.
pub fn twilio_form(body: &[u8]) -> Result<Vec<(String, String)>, StatusCode> {
    let request = Request::builder()
        .method("POST")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body.to_vec()))
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    block_on(Form::<Vec<(String, String)>>::from_request(request, &()))
        .map(|Form(params)| params)
        .map_err(|rejection| axum::response::IntoResponse::into_response(rejection).status())
}

/// TwiML that speaks `text` and listens for the answer, as a call's
/// webhooks send it.
pub fn twiml_say_and_gather(public: &str, run_id: &str, text: &str, silences: u32) -> String {
    body_text(crate::calls::twilio_hooks::say_and_gather(
        public, run_id, text, silences,
    ))
    .1
}

/// TwiML that says `text` (if any) and hangs up.
pub fn twiml_hang_up(text: Option<&str>) -> String {
    body_text(crate::calls::twilio_hooks::hang_up(text)).1
}

/// The URL of a run's webhook, as the TwiML names it.
pub fn hook_url(public: &str, hook: &str, run_id: &str) -> String {
    crate::calls::phone::hook_url(public, hook, run_id)
}

/// The JSON request bodies of the API, by name: `json_body` takes an
/// index into this list.
pub const JSON_BODIES: [&str; 13] = [
    "admin.limits",
    "admin.toggle",
    "agents.agent",
    "auth.register",
    "auth.login",
    "auth.change_password",
    "calls.phone_start",
    "calls.start",
    "calls.message",
    "calls.end",
    "service_config.config",
    "api_keys.telephony",
    "api_keys.save",
];

fn extract<T: DeserializeOwned>(request: Request) -> Result<(), ApiError> {
    block_on(ApiJson::<T>::from_request(request, &())).map(|_| ())
}

/// A JSON body the extractor refused: the error's code and the response
/// the client gets.
#[derive(Debug)]
pub struct Rejected {
    pub code: &'static str,
    pub status: StatusCode,
    pub body: String,
}

/// Reads `body` (sent with `content_type`) as the `kind`th of
/// `JSON_BODIES` through the API's JSON extractor: `Ok` when it is one,
/// else what the client is answered.
pub fn json_body(kind: usize, content_type: Option<&str>, body: Vec<u8>) -> Result<(), Rejected> {
    let mut request = Request::builder().method("POST");
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let Ok(request) = request.body(axum::body::Body::from(body)) else {
        // A content type that is no header value never reaches a handler.
        return Ok(());
    };
    use crate::{admin, agents, api_keys, auth, calls, service_config};
    let result = match kind % JSON_BODIES.len() {
        0 => extract::<admin::users::LimitsBody>(request),
        1 => extract::<admin::users::ToggleBody>(request),
        2 => extract::<agents::routes::AgentBody>(request),
        3 => extract::<auth::routes::RegisterBody>(request),
        4 => extract::<auth::routes::LoginBody>(request),
        5 => extract::<auth::routes::ChangePasswordBody>(request),
        6 => extract::<calls::phone::PhoneStartBody>(request),
        7 => extract::<calls::routes::StartBody>(request),
        8 => extract::<calls::routes::MessageBody>(request),
        9 => extract::<calls::routes::EndBody>(request),
        10 => extract::<service_config::ConfigBody>(request),
        11 => extract::<api_keys::telephony::TelephonyBody>(request),
        _ => extract::<api_keys::routes::SaveBody>(request),
    };
    result.map_err(|e| {
        let code = e.code;
        let (status, body) = body_text(axum::response::IntoResponse::into_response(e));
        Rejected { code, status, body }
    })
}

/// One message a voice socket's client sends.
#[derive(Debug, Clone)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Close,
}

/// What the voice session makes of one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Audio for speech-to-text, as it goes to the provider.
    Audio(Vec<u8>),
    /// A typed turn.
    Text(String),
    End,
    /// An `error` frame with this code; the call goes on.
    Bad(&'static str),
    Nothing,
}

/// `frame` as a browser's (`twilio == false`) or Twilio's Media Streams
/// socket reads it.
pub fn read_frame(twilio: bool, frame: Frame) -> Read {
    let transport = if twilio {
        Transport::Twilio {
            stream_sid: "MZ0".into(),
        }
    } else {
        Transport::Browser
    };
    let message = match frame {
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Binary(b) => Message::Binary(b.into()),
        Frame::Ping(b) => Message::Ping(b.into()),
        Frame::Close => Message::Close(None),
    };
    match transport.read(message) {
        Input::Audio(a) => Read::Audio(a),
        Input::Text(t) => Read::Text(t),
        Input::End => Read::End,
        Input::Bad(code, _) => Read::Bad(code),
        Input::Nothing => Read::Nothing,
    }
}

/// Where an agent's streamed reply is cut into a sentence to speak.
pub fn sentence_end(text: &str) -> Option<usize> {
    crate::calls::voice::sentence_end(text)
}
