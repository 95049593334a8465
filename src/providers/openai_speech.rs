//! OpenAI-compatible speech servers, as on-prem installs run them
//! (faster-whisper-server/speaches for speech to text, Kokoro-FastAPI for
//! text to speech): `POST {base}/audio/transcriptions` takes one utterance
//! as a WAV file, so utterances are cut here by a voice-activity detector;
//! `POST {base}/audio/speech` makes speech, read as it streams in and
//! converted to the call's audio.

use std::time::Duration;

use axum::http::{header, HeaderValue};
use tokio::sync::mpsc;

use super::audio::{self, Resampler};
use super::speech::{Heard, Listening, SpeechError};
use super::{join, read_capped, CappedRead};

/// The rate the voice-activity detector and the transcription take.
const VAD_RATE: u32 = 16_000;
/// The detector's frame: 16 ms at 16 kHz.
const VAD_FRAME: usize = 256;
/// A frame scoring this or more is speech.
const VOICED: f32 = 0.5;
/// Speech starts after this many voiced frames in a row (48 ms): a click
/// or a cough does not interrupt the agent.
const START_FRAMES: usize = 3;
/// Audio kept from before the start, whose first sounds score low.
const PRE_ROLL_FRAMES: usize = 20;
/// An utterance shorter than this much speech is noise, not sent.
const MIN_VOICED_FRAMES: usize = 6;
/// An utterance is cut at 30 s even without a pause: one request stays small.
const MAX_UTTERANCE_FRAMES: usize = 30 * 1000 / 16;
/// The most a transcription's answer may hold.
const MAX_TRANSCRIPT_BYTES: usize = 256 * 1024;
/// The most speech one sentence may make, as it arrives.
const MAX_SPEECH_BYTES: usize = 16 * 1024 * 1024;
/// OpenAI's `pcm` speech: 24 kHz 16-bit little-endian mono.
pub const PCM_RATE: u32 = 24_000;

/// A call's audio, as it comes in and must go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAudio {
    /// 16-bit little-endian PCM (a browser call).
    Linear16 { rate: u32 },
    /// G.711 μ-law (a phone call).
    Mulaw { rate: u32 },
}

impl CallAudio {
    fn rate(self) -> u32 {
        match self {
            CallAudio::Linear16 { rate } | CallAudio::Mulaw { rate } => rate,
        }
    }

    fn decode(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            CallAudio::Linear16 { .. } => audio::pcm_samples(bytes),
            CallAudio::Mulaw { .. } => bytes.iter().map(|&b| audio::mulaw_decode(b)).collect(),
        }
    }

    fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            CallAudio::Linear16 { .. } => audio::pcm_bytes(samples),
            CallAudio::Mulaw { .. } => samples.iter().map(|&s| audio::mulaw_encode(s)).collect(),
        }
    }
}

/// One OpenAI-compatible speech server.
#[derive(Debug, Clone)]
pub struct Server {
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub key: Option<String>,
    pub timeout: Duration,
}

impl Server {
    fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, SpeechError> {
        let mut request = client
            .post(join(&self.base_url, path))
            .timeout(self.timeout);
        if let Some(key) = &self.key {
            let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| SpeechError::Unsendable)?;
            auth.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, auth);
        }
        Ok(request)
    }
}

/// `POST {base}/audio/transcriptions`, multipart: `file` (a WAV),
/// `model`, `language` when known, `response_format=json`; the `text` of
/// the answer.
pub async fn transcribe(
    client: &reqwest::Client,
    server: &Server,
    model: &str,
    language: Option<&str>,
    wav: Vec<u8>,
) -> Result<String, SpeechError> {
    let file = reqwest::multipart::Part::bytes(wav)
        .file_name("utterance.wav")
        .mime_str("audio/wav")
        .map_err(|_| SpeechError::Unsendable)?;
    let mut form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", model.to_string())
        .text("response_format", "json");
    if let Some(lang) = language {
        form = form.text("language", lang.to_string());
    }
    let mut response = server
        .post(client, "audio/transcriptions")?
        .multipart(form)
        .send()
        .await
        .map_err(|e| SpeechError::from_request(&e))?;
    if !response.status().is_success() {
        return Err(SpeechError::Refused(response.status().as_u16()));
    }
    let body = read_capped(&mut response, MAX_TRANSCRIPT_BYTES)
        .await
        .map_err(|e| match e {
            CappedRead::TooLarge => SpeechError::BadReply,
            CappedRead::Failed(e) => SpeechError::from_request(&e),
        })?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| SpeechError::BadReply)?;
    v.get("text")
        .and_then(serde_json::Value::as_str)
        .map(|t| t.trim().to_string())
        .ok_or(SpeechError::BadReply)
}

/// What the voice-activity detector makes of a call's audio.
#[derive(Debug, PartialEq)]
enum Cut {
    Started,
    /// A whole utterance at 16 kHz.
    Utterance(Vec<i16>),
}

/// Cuts a stream of 16 kHz samples into utterances: speech starts after
/// a few voiced frames and ends after `endpointing` of silence.
struct Segmenter {
    detector: Box<earshot::Detector>,
    pending: Vec<i16>,
    /// The current utterance (with its pre-roll), or the recent audio
    /// while nobody speaks.
    audio: std::collections::VecDeque<i16>,
    speaking: bool,
    voiced_run: usize,
    voiced: usize,
    silent_run: usize,
    frames: usize,
    end_frames: usize,
}

impl Segmenter {
    fn new(endpointing: Duration) -> Segmenter {
        Segmenter {
            detector: earshot::Detector::default_boxed(),
            pending: Vec::new(),
            audio: std::collections::VecDeque::new(),
            speaking: false,
            voiced_run: 0,
            voiced: 0,
            silent_run: 0,
            frames: 0,
            end_frames: (endpointing.as_millis() as usize / 16).max(1),
        }
    }

    fn push(&mut self, samples: &[i16], cuts: &mut Vec<Cut>) {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / VAD_FRAME * VAD_FRAME;
        let ready: Vec<i16> = self.pending.drain(..whole).collect();
        for frame in ready.chunks_exact(VAD_FRAME) {
            self.frame(frame, cuts);
        }
    }

    fn frame(&mut self, frame: &[i16], cuts: &mut Vec<Cut>) {
        let voiced = self.detector.predict_i16(frame) >= VOICED;
        self.audio.extend(frame);
        if !self.speaking {
            self.voiced_run = if voiced { self.voiced_run + 1 } else { 0 };
            if self.voiced_run >= START_FRAMES {
                self.speaking = true;
                self.voiced = self.voiced_run;
                self.silent_run = 0;
                self.frames = self.audio.len() / VAD_FRAME;
                cuts.push(Cut::Started);
            } else {
                let keep = (PRE_ROLL_FRAMES + START_FRAMES) * VAD_FRAME;
                let drop = self.audio.len().saturating_sub(keep);
                self.audio.drain(..drop);
            }
            return;
        }
        self.frames += 1;
        if voiced {
            self.voiced += 1;
            self.silent_run = 0;
        } else {
            self.silent_run += 1;
        }
        if self.silent_run >= self.end_frames || self.frames >= MAX_UTTERANCE_FRAMES {
            let utterance: Vec<i16> = self.audio.drain(..).collect();
            if self.voiced >= MIN_VOICED_FRAMES {
                cuts.push(Cut::Utterance(utterance));
            }
            self.speaking = false;
            self.voiced_run = 0;
        }
    }
}

/// How live transcription through an OpenAI-compatible server runs.
#[derive(Debug, Clone)]
pub struct ListenTarget {
    pub server: Server,
    pub model: String,
    /// ISO 639-1 (`en`); a longer tag (`en-US`) is cut to it.
    pub language: Option<String>,
    pub input: CallAudio,
    /// Silence that ends an utterance.
    pub endpointing: Duration,
}

/// Live transcription: the call's audio is converted to 16 kHz and cut
/// into utterances by the voice-activity detector on a blocking thread
/// (audio work stays off the async workers); each speech start is heard
/// at once (barge-in), each utterance is transcribed in order and heard
/// as a final transcript, or as `Failed` (the call goes on).
pub fn listen(client: reqwest::Client, target: ListenTarget) -> Listening {
    let (audio_tx, mut audio_rx) = mpsc::channel::<Vec<u8>>(64);
    let (heard_tx, heard_rx) = mpsc::channel::<Heard>(64);
    let (cut_tx, mut cut_rx) = mpsc::channel::<Cut>(16);
    let input = target.input;
    let endpointing = target.endpointing;
    tokio::task::spawn_blocking(move || {
        let mut to_vad = Resampler::new(input.rate(), VAD_RATE);
        let mut segmenter = Segmenter::new(endpointing);
        let mut cuts = Vec::new();
        while let Some(bytes) = audio_rx.blocking_recv() {
            let samples = to_vad.push(&input.decode(&bytes));
            segmenter.push(&samples, &mut cuts);
            for cut in cuts.drain(..) {
                if cut_tx.blocking_send(cut).is_err() {
                    return;
                }
            }
        }
    });
    let (utterance_tx, mut utterance_rx) = mpsc::channel::<Vec<i16>>(8);
    let started_tx = heard_tx.clone();
    tokio::spawn(async move {
        while let Some(cut) = cut_rx.recv().await {
            let sent = match cut {
                Cut::Started => started_tx.send(Heard::SpeechStarted).await.is_ok(),
                Cut::Utterance(u) => utterance_tx.send(u).await.is_ok(),
            };
            if !sent {
                break;
            }
        }
    });
    let language = target
        .language
        .as_deref()
        .and_then(|l| l.split(['-', '_']).next())
        .filter(|l| !l.is_empty())
        .map(str::to_lowercase);
    tokio::spawn(async move {
        while let Some(utterance) = utterance_rx.recv().await {
            let wav = audio::wav(&utterance, VAD_RATE);
            let heard = match transcribe(
                &client,
                &target.server,
                &target.model,
                language.as_deref(),
                wav,
            )
            .await
            {
                Ok(text) => Heard::Transcript {
                    text,
                    is_final: true,
                    speech_final: true,
                },
                Err(e) => Heard::Failed(e),
            };
            if heard_tx.send(heard).await.is_err() {
                break;
            }
        }
    });
    Listening {
        audio: audio_tx,
        heard: heard_rx,
    }
}

/// The `response_format` asked of `/audio/speech`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeechFormat {
    /// Raw 16-bit PCM at 24 kHz, as OpenAI defines it.
    Pcm,
    /// A WAV file, whose header gives the rate (for servers whose voices
    /// are not at 24 kHz).
    Wav,
}

impl SpeechFormat {
    fn name(self) -> &'static str {
        match self {
            SpeechFormat::Pcm => "pcm",
            SpeechFormat::Wav => "wav",
        }
    }
}

/// What speech is asked for.
#[derive(Debug, Clone)]
pub struct SpeakTarget {
    pub server: Server,
    pub model: String,
    pub voice: String,
    pub format: SpeechFormat,
    pub output: CallAudio,
}

/// Turns the body of `/audio/speech` into the call's audio as it arrives.
struct Converter {
    output: CallAudio,
    /// Bytes not yet made into samples: a header still incomplete, or an
    /// odd byte.
    raw: Vec<u8>,
    /// Known once the header (or, for `pcm`, nothing) has been read.
    format: Option<audio::WavFormat>,
    resampler: Option<Resampler>,
}

impl Converter {
    fn new(format: SpeechFormat, output: CallAudio) -> Converter {
        let known = (format == SpeechFormat::Pcm).then_some(audio::WavFormat {
            rate: PCM_RATE,
            channels: 1,
        });
        Converter {
            output,
            raw: Vec::new(),
            format: known,
            resampler: None,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SpeechError> {
        self.raw.extend_from_slice(bytes);
        if self.format.is_none() || self.raw.starts_with(b"RIFF") && self.resampler.is_none() {
            // A server may send a WAV whatever was asked: its header says.
            match audio::wav_header(&self.raw) {
                Ok(Some((f, at))) => {
                    self.format = Some(f);
                    self.raw.drain(..at);
                }
                Ok(None) => return Ok(Vec::new()),
                Err(_) if self.format.is_some() => {}
                Err(_) => return Err(SpeechError::BadReply),
            }
        }
        let Some(format) = self.format else {
            return Ok(Vec::new());
        };
        let frame = 2 * usize::from(format.channels);
        let whole = self.raw.len() / frame * frame;
        let samples = audio::first_channel(audio::pcm_samples(&self.raw[..whole]), format.channels);
        self.raw.drain(..whole);
        let resampler = self
            .resampler
            .get_or_insert_with(|| Resampler::new(format.rate, self.output.rate()));
        Ok(self.output.encode(&resampler.push(&samples)))
    }

    fn finish(&mut self) -> Vec<u8> {
        match self.resampler.as_mut() {
            Some(r) => self.output.encode(&r.finish()),
            None => Vec::new(),
        }
    }
}

/// `POST {base}/audio/speech` with `{model, input, voice, response_format}`:
/// the speech in the call's audio, handed to `out` piece by piece as it
/// streams in (resampled and encoded on a blocking thread). Returns the
/// bytes sent.
pub async fn speak(
    client: &reqwest::Client,
    to: &SpeakTarget,
    text: &str,
    out: &mpsc::Sender<Vec<u8>>,
) -> Result<usize, SpeechError> {
    use futures_util::StreamExt;
    let body = serde_json::json!({
        "model": to.model,
        "input": text,
        "voice": to.voice,
        "response_format": to.format.name(),
    });
    let response = to
        .server
        .post(client, "audio/speech")?
        .json(&body)
        .send()
        .await
        .map_err(|e| SpeechError::from_request(&e))?;
    if !response.status().is_success() {
        return Err(SpeechError::Refused(response.status().as_u16()));
    }
    let (raw_tx, mut raw_rx) = mpsc::channel::<axum::body::Bytes>(32);
    let (format, output, out2) = (to.format, to.output, out.clone());
    let converting = tokio::task::spawn_blocking(move || {
        let mut converter = Converter::new(format, output);
        let mut sent = 0usize;
        while let Some(chunk) = raw_rx.blocking_recv() {
            let pcm = converter.push(&chunk)?;
            sent += pcm.len();
            if !pcm.is_empty() && out2.blocking_send(pcm).is_err() {
                return Ok(sent);
            }
        }
        let tail = converter.finish();
        sent += tail.len();
        if !tail.is_empty() {
            let _ = out2.blocking_send(tail);
        }
        Ok::<_, SpeechError>(sent)
    });
    let mut stream = response.bytes_stream();
    let mut read = 0usize;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                read += chunk.len();
                if read > MAX_SPEECH_BYTES {
                    failed = Some(SpeechError::BadReply);
                    break;
                }
                if raw_tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(SpeechError::from_request(&e));
                break;
            }
        }
    }
    drop(raw_tx);
    let converted = converting.await.map_err(|_| SpeechError::BadReply)?;
    match failed {
        Some(e) => Err(e),
        None => converted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_never_an_utterance() {
        let mut s = Segmenter::new(Duration::from_millis(300));
        let mut cuts = Vec::new();
        s.push(&vec![0i16; 16_000 * 3], &mut cuts);
        assert!(cuts.is_empty(), "{cuts:?}");
    }

    #[test]
    fn pcm_speech_is_resampled_and_a_wav_read_by_its_header() {
        // 24 kHz PCM to 16 kHz PCM: two samples out for three in.
        let mut c = Converter::new(SpeechFormat::Pcm, CallAudio::Linear16 { rate: 16_000 });
        let mut out = c.push(&vec![0u8; 4801]).unwrap();
        out.extend(c.push(&[0u8; 4799]).unwrap());
        out.extend(c.finish());
        assert_eq!(out.len(), 3200 * 2);
        // A WAV at 8 kHz to μ-law at 8 kHz, its header split across pieces.
        let file = audio::wav(&vec![0i16; 800], 8_000);
        let mut c = Converter::new(SpeechFormat::Wav, CallAudio::Mulaw { rate: 8_000 });
        let mut out = c.push(&file[..30]).unwrap();
        assert!(out.is_empty());
        out.extend(c.push(&file[30..]).unwrap());
        out.extend(c.finish());
        assert_eq!(out, vec![0xFF; 800]);
        let mut c = Converter::new(SpeechFormat::Wav, CallAudio::Mulaw { rate: 8_000 });
        assert_eq!(
            c.push(b"<html>an error page</html>"),
            Err(SpeechError::BadReply)
        );
    }
}
