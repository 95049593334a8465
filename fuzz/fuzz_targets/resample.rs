//! Sample-rate conversion of a call's speech (a TTS server's 24 kHz to the
//! call's 16 or 8 kHz, phone audio to the VAD's 16 kHz), fed in pieces of
//! any size as a stream brings them.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::Resampler;

/// The rates speech servers and calls use.
const RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

#[derive(Arbitrary, Debug)]
struct Input {
    from: u8,
    to: u8,
    /// At most a second of audio at the highest rate.
    samples: Vec<i16>,
    /// Where the stream is cut into pieces, as sizes.
    pieces: Vec<u16>,
}

fn convert(from: u32, to: u32, samples: &[i16], pieces: &[u16]) -> Vec<i16> {
    let mut r = Resampler::new(from, to);
    let mut out = Vec::new();
    let mut rest = samples;
    for &p in pieces {
        let n = usize::from(p).min(rest.len());
        let (piece, after) = rest.split_at(n);
        out.extend(r.push(piece));
        rest = after;
    }
    out.extend(r.push(rest));
    out.extend(r.finish());
    out
}

fuzz_target!(|input: Input| {
    let from = RATES[usize::from(input.from) % RATES.len()];
    let to = RATES[usize::from(input.to) % RATES.len()];
    let samples = &input.samples[..input.samples.len().min(48_000)];
    let out = convert(from, to, samples, &input.pieces);
    // Exactly as many samples as the input makes at the other rate.
    let want = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    assert_eq!(out.len(), want, "{from} -> {to}, {} samples", samples.len());
    // How the stream was cut changes nothing.
    assert_eq!(
        out,
        convert(from, to, samples, &[]),
        "pieces {:?}",
        input.pieces
    );
    if from == to {
        assert_eq!(out, samples);
    }
    // Silence stays silence: the filter adds nothing of its own.
    if samples.iter().all(|&s| s == 0) {
        assert!(out.iter().all(|&s| s == 0), "noise from silence");
    }
});
