//! The audio codecs a call's speech goes through: G.711 μ-law (Twilio's
//! phone audio), 16-bit PCM bytes, and WAV headers read from a speech
//! server's answer, which are a stranger's bytes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{
    mulaw_decode, mulaw_encode, pcm_bytes, pcm_samples, wav, wav_header, WavFormat,
};

#[derive(Arbitrary, Debug)]
struct Input {
    samples: Vec<i16>,
    rate: u32,
    /// A speech server's answer, as it arrives.
    answer: Vec<u8>,
    cut: u16,
}

/// G.711's quantisation step around `s`, plus the clip above 32,635.
fn step(s: i16) -> i32 {
    let m = i32::from(s).abs();
    (m / 16).max(8) + (m - 32_635).max(0)
}

fuzz_target!(|input: Input| {
    let mut last: Option<(i16, i16)> = None;
    for &s in &input.samples {
        let code = mulaw_encode(s);
        let back = mulaw_decode(code);
        assert!(
            (i32::from(back) - i32::from(s)).abs() <= step(s),
            "{s} -> {back}"
        );
        // The code of what was decoded is the code (but the two zeros).
        assert_eq!(
            mulaw_encode(back),
            code | if back == 0 { 0x80 } else { 0 },
            "{s}"
        );
        // Louder in, never quieter out: the codec is monotonic.
        if let Some((p, pb)) = last {
            assert!(p >= s || pb <= back, "{p} < {s} but {pb} > {back}");
            assert!(p <= s || pb >= back, "{p} > {s} but {pb} < {back}");
        }
        last = Some((s, back));
    }
    // PCM bytes and back are the same samples; an odd byte is dropped.
    let bytes = pcm_bytes(&input.samples);
    assert_eq!(bytes.len(), input.samples.len() * 2);
    assert_eq!(pcm_samples(&bytes), input.samples);
    let mut odd = bytes.clone();
    odd.push(0x7F);
    assert_eq!(pcm_samples(&odd), input.samples);

    // A WAV file we write reads back as the same format and samples, and
    // any of its prefixes is "more bytes needed", never an error.
    let rate = input.rate.max(1);
    let file = wav(&input.samples, rate);
    let (format, at) = wav_header(&file)
        .expect("our own WAV")
        .expect("whole header");
    assert_eq!(format, WavFormat { rate, channels: 1 });
    assert_eq!(pcm_samples(&file[at..]), input.samples);
    let cut = usize::from(input.cut) % (at + 1);
    if cut < at {
        assert_eq!(wav_header(&file[..cut]), Ok(None), "prefix of {cut} bytes");
    }

    // Any answer: a header read points inside what arrived, at a usable
    // format; reading more of the same stream never changes an answer
    // already given (a format or a refusal).
    let read = wav_header(&input.answer);
    if let Ok(Some((format, at))) = read {
        assert!(at <= input.answer.len() && at >= 20, "{at}");
        assert!(format.rate > 0 && format.channels > 0);
    }
    if read != Ok(None) {
        let mut more = input.answer.clone();
        more.extend_from_slice(&file);
        assert_eq!(wav_header(&more), read);
    }
});
