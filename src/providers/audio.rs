//! Audio conversions of speech: G.711 μ-law (Twilio's phone audio), 16-bit
//! PCM bytes, sample-rate conversion, and WAV files (what an
//! OpenAI-compatible speech server takes and may answer).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// One μ-law byte as a 16-bit sample (ITU-T G.711).
pub fn mulaw_decode(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let sample = if u & 0x80 != 0 { -magnitude } else { magnitude };
    sample as i16
}

/// One 16-bit sample as μ-law (ITU-T G.711, with the usual clip).
pub fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = s.abs().min(CLIP) + BIAS;
    // The segment: the position of the highest set bit above bit 7.
    let exponent = (0..8)
        .rev()
        .find(|e| magnitude & (0x80 << e) != 0)
        .unwrap_or(0);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Little-endian 16-bit PCM bytes as samples (an odd last byte is ignored).
pub fn pcm_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Samples as little-endian 16-bit PCM bytes.
pub fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A mono 16-bit PCM WAV file of `samples` at `rate`.
pub fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    // The byte rate field cannot say more than u32 holds.
    out.extend_from_slice(&rate.saturating_mul(2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    out.extend(pcm_bytes(samples));
    out
}

/// What a WAV file's header says, read as its bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    pub rate: u32,
    pub channels: u16,
}

/// Why a WAV header cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavError {
    NotWav,
    /// Not 16-bit integer PCM.
    Unsupported,
}

/// Reads a WAV header from the start of `bytes`: the format and where the
/// samples start, `Ok(None)` while more bytes are needed. A streamed WAV's
/// sizes are often placeholders, so they are not trusted: the samples run
/// to the end of the stream.
pub fn wav_header(bytes: &[u8]) -> Result<Option<(WavFormat, usize)>, WavError> {
    if bytes.len() < 12 {
        return Ok(None);
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut at = 12;
    let mut format = None;
    loop {
        let Some(head) = bytes.get(at..at + 8) else {
            return Ok(None);
        };
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        match &head[0..4] {
            b"fmt " => {
                let Some(f) = bytes.get(at + 8..at + 24) else {
                    return Ok(None);
                };
                let tag = u16::from_le_bytes([f[0], f[1]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                // 0xFFFE (extensible) carries plain PCM too.
                if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
                    return Err(WavError::Unsupported);
                }
                let channels = u16::from_le_bytes([f[2], f[3]]).max(1);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                if rate == 0 {
                    return Err(WavError::Unsupported);
                }
                format = Some(WavFormat { rate, channels });
            }
            b"data" => {
                return match format {
                    Some(f) => Ok(Some((f, at + 8))),
                    None => Err(WavError::Unsupported),
                };
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at += 8 + size + (size & 1);
        if at > 64 * 1024 {
            // Nobody sends that much metadata before the audio.
            return Err(WavError::NotWav);
        }
    }
}

/// The first channel of interleaved samples.
pub fn first_channel(samples: Vec<i16>, channels: u16) -> Vec<i16> {
    if channels <= 1 {
        samples
    } else {
        samples.into_iter().step_by(usize::from(channels)).collect()
    }
}

/// A stream of mono samples converted from one rate to another as they
/// come: FFT resampling, which filters out what the lower rate cannot
/// carry, delayed by its filter, which `finish` flushes.
pub struct Resampler {
    /// `None` when both rates are the same.
    fft: Option<Box<Fft<f32>>>,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output samples still to drop: the filter's delay.
    skip: usize,
    /// Input and output samples so far, to end with exactly as many
    /// samples as the input makes at the other rate.
    taken: usize,
    given: usize,
    from: u32,
    to: u32,
}

impl Resampler {
    /// Chunks of 10 ms: a small delay, and little padding at the end.
    pub fn new(from: u32, to: u32) -> Resampler {
        let chunk = (from / 100).max(1) as usize;
        let fft = (from != to)
            .then(|| Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input).ok())
            .flatten()
            .map(Box::new);
        let skip = fft.as_ref().map_or(0, |f| f.output_delay());
        let out = vec![0.0; fft.as_ref().map_or(0, |f| f.output_frames_max())];
        Resampler {
            fft,
            pending: Vec::new(),
            out,
            skip,
            taken: 0,
            given: 0,
            from,
            to,
        }
    }

    /// The converted samples that `input` completes.
    pub fn push(&mut self, input: &[i16]) -> Vec<i16> {
        self.taken += input.len();
        if self.fft.is_none() {
            self.given += input.len();
            return input.to_vec();
        }
        self.pending
            .extend(input.iter().map(|&s| f32::from(s) / 32_768.0));
        self.run(None)
    }

    /// The rest, once the input has ended: exactly as many samples in all
    /// as the input makes at the output's rate.
    pub fn finish(&mut self) -> Vec<i16> {
        let want = (self.taken as u64 * u64::from(self.to) / u64::from(self.from)) as usize;
        let mut tail = self.run(Some(want));
        tail.truncate(want.saturating_sub(self.given - tail.len()));
        self.given = want.min(self.given);
        tail
    }

    /// Converts the whole chunks pending; with `until`, then feeds silence
    /// until that many samples have come out in all (the filter's delay
    /// and the resampler's own buffering hold back the input's end).
    fn run(&mut self, until: Option<usize>) -> Vec<i16> {
        let Some(fft) = self.fft.as_mut() else {
            return Vec::new();
        };
        let mut made = Vec::new();
        // A bound on the silence fed, in chunks: twice the filter's delay
        // (as input frames), the pending rest and a few FFT blocks more
        // than enough output ever needs.
        let delay = fft.output_delay() as u64 * u64::from(self.from) / u64::from(self.to);
        let fed = 2 * delay as usize + self.pending.len() + 4 * fft.input_frames_max();
        let mut silent_rounds = fed / fft.input_frames_next().max(1) + 2;
        loop {
            let need = fft.input_frames_next();
            if self.pending.len() < need {
                let short = until.is_some_and(|want| self.given + made.len() < want);
                if !short || silent_rounds == 0 {
                    break;
                }
                // Whole chunks of silence, not rubato's partial chunks: a
                // partial chunk of nothing (the input already taken) is
                // refused, which cut the end of short speech.
                silent_rounds -= 1;
                self.pending.resize(need, 0.0);
            }
            let input = InterleavedSlice::new(&self.pending[..], 1, self.pending.len());
            let frames_out = self.out.len();
            let output = InterleavedSlice::new_mut(&mut self.out[..], 1, frames_out);
            let (Ok(input), Ok(mut output)) = (input, output) else {
                break;
            };
            let Ok((_, written)) = fft.process_into_buffer(&input, &mut output, None) else {
                break;
            };
            self.pending.drain(..need);
            let start = self.skip.min(written);
            self.skip -= start;
            made.extend(
                self.out[start..written]
                    .iter()
                    .map(|&v| (v * 32_768.0).clamp(-32_768.0, 32_767.0) as i16),
            );
        }
        self.given += made.len();
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_round_trips_within_its_step() {
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_decode(0xFF), 0);
        for s in [-32_000i16, -1000, -100, -1, 1, 50, 1000, 8000, 32_000] {
            let back = mulaw_decode(mulaw_encode(s));
            let step = (i32::from(s).abs() / 16).max(8);
            assert!(
                (i32::from(back) - i32::from(s)).abs() <= step,
                "{s} → {back}"
            );
        }
        // Every code decodes to a value that encodes to itself.
        for b in 0..=255u8 {
            let s = mulaw_decode(b);
            assert_eq!(mulaw_decode(mulaw_encode(s)), s, "{b:#x}");
        }
    }

    #[test]
    fn wav_files_are_written_and_read_back() {
        let file = wav(&[1, -2, 3], 16_000);
        assert_eq!(file.len(), 44 + 6);
        let (format, at) = wav_header(&file).unwrap().unwrap();
        assert_eq!(
            format,
            WavFormat {
                rate: 16_000,
                channels: 1
            }
        );
        assert_eq!(pcm_samples(&file[at..]), vec![1, -2, 3]);
        assert_eq!(wav_header(&file[..20]), Ok(None), "more bytes needed");
        assert_eq!(
            wav_header(b"ID3\x03 not a wave file"),
            Err(WavError::NotWav)
        );
        let mut float = file.clone();
        float[34] = 32; // 32 bits a sample
        assert_eq!(wav_header(&float), Err(WavError::Unsupported));
    }

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                ((i as f64 * hz * std::f64::consts::TAU / f64::from(rate)).sin() * 10_000.0) as i16
            })
            .collect()
    }

    /// How much of a tone is in `samples` (at `rate`): its correlation.
    fn strength(samples: &[i16], rate: u32, hz: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in samples.iter().enumerate() {
            let p = i as f64 * hz * std::f64::consts::TAU / f64::from(rate);
            re += f64::from(s) * p.cos();
            im += f64::from(s) * p.sin();
        }
        (re * re + im * im).sqrt() / samples.len() as f64
    }

    /// Speech shorter than the filter's delay still comes out whole
    /// (found by the `resample` fuzz target: 32 samples at 22,050 Hz gave
    /// nothing at 8 kHz).
    #[test]
    fn short_speech_is_resampled_to_its_full_length() {
        for (from, to, n) in [
            (22_050, 8_000, 32),
            (22_050, 8_000, 320),
            (24_000, 16_000, 100),
            (8_000, 48_000, 1),
        ] {
            let mut r = Resampler::new(from, to);
            let mut out = r.push(&vec![1000; n]);
            out.extend(r.finish());
            assert_eq!(out.len(), n * to as usize / from as usize, "{from} -> {to}");
        }
    }

    #[test]
    fn resampling_keeps_the_voice_band_and_the_length() {
        let input = tone(24_000, 440.0, 24_000);
        let mut r = Resampler::new(24_000, 8_000);
        let mut out = Vec::new();
        // Pieces of odd sizes, as a stream brings them.
        for piece in input.chunks(777) {
            out.extend(r.push(piece));
        }
        out.extend(r.finish());
        assert_eq!(out.len(), 8_000);
        let kept = strength(&out, 8_000, 440.0);
        assert!(kept > 4000.0, "440 Hz kept: {kept}");
        // A tone above 4 kHz cannot be carried at 8 kHz: filtered out, not
        // folded back as a false tone.
        let high = tone(24_000, 6_000.0, 24_000);
        let mut r = Resampler::new(24_000, 8_000);
        let mut out = r.push(&high);
        out.extend(r.finish());
        assert!(strength(&out, 8_000, 2_000.0) < 200.0, "aliased");
        // The same rate passes through.
        let mut same = Resampler::new(16_000, 16_000);
        assert_eq!(same.push(&[1, 2, 3]), vec![1, 2, 3]);
        assert!(same.finish().is_empty());
    }
}
