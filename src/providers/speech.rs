//! What every speech provider's client speaks in: what live
//! transcription heard, and why a speech request failed.

/// Why a speech request failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpeechError {
    #[error("could not be reached")]
    Unreachable,
    #[error("did not answer in time")]
    Timeout,
    #[error("refused the request (HTTP {0})")]
    Refused(u16),
    #[error("sent an answer that could not be read")]
    BadReply,
    #[error("cannot be sent this key")]
    Unsendable,
}

impl SpeechError {
    /// A failed `reqwest` request, sorted.
    pub(crate) fn from_request(e: &reqwest::Error) -> SpeechError {
        if e.is_timeout() {
            SpeechError::Timeout
        } else if e.is_builder() {
            SpeechError::Unsendable
        } else if e.is_body() || e.is_decode() {
            SpeechError::BadReply
        } else {
            SpeechError::Unreachable
        }
    }
}

/// What live transcription says.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Someone started speaking (Deepgram's `SpeechStarted`, or the voice
    /// activity detector's).
    SpeechStarted,
    /// A transcript of the audio so far: interim, or final for its part
    /// (`is_final`), and the end of an utterance (`speech_final`).
    Transcript {
        text: String,
        is_final: bool,
        speech_final: bool,
    },
    /// The utterance ended after interim results only (`UtteranceEnd`).
    UtteranceEnd,
    /// One utterance could not be transcribed; the next one may be.
    Failed(SpeechError),
}

/// Live transcription: audio in the call's format goes in through `audio`,
/// what was heard comes out of `heard`. Dropping `audio` ends it.
pub struct Listening {
    pub audio: tokio::sync::mpsc::Sender<Vec<u8>>,
    pub heard: tokio::sync::mpsc::Receiver<Heard>,
}
