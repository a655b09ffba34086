//! Fixture writers and signal checks shared by the `audio_*` and `corpus_*` test binaries and
//! the unit tests of `src/audio` (included there with `#[path]`).
#![allow(dead_code)]

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use flacenc::component::BitRepr;
use flacenc::error::Verify;

/// Folder of the committed audio fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

/// `seconds` of a sine at `freq` Hz and amplitude `amp`, sampled at `rate`.
pub fn sine(rate: u32, freq: f64, amp: f64, seconds: f64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Interleaves equal-length channels.
pub fn interleave(channels: &[Vec<f32>]) -> Vec<f32> {
    let n = channels[0].len();
    let mut out = Vec::with_capacity(n * channels.len());
    for i in 0..n {
        for c in channels {
            out.push(c[i]);
        }
    }
    out
}

fn to_i16(x: f32) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// 16-bit PCM WAV from interleaved samples.
pub fn write_wav_i16(path: &Path, rate: u32, channels: u16, interleaved: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in interleaved {
        w.write_sample(to_i16(s)).unwrap();
    }
    w.finalize().unwrap();
}

/// 32-bit float WAV from interleaved samples.
pub fn write_wav_f32(path: &Path, rate: u32, channels: u16, interleaved: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in interleaved {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// FLAC bytes (16-bit) of interleaved samples.
pub fn flac_bytes(rate: u32, channels: u16, interleaved: &[f32]) -> Vec<u8> {
    let samples: Vec<i32> = interleaved.iter().map(|&s| i32::from(to_i16(s))).collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .expect("default encoder config is valid");
    let source =
        flacenc::source::MemSource::from_samples(&samples, channels as usize, 16, rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .expect("flac encode");
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream.write(&mut sink).expect("flac write");
    let mut bytes = sink.as_slice().to_vec();
    // flacenc puts the (shorter) last block's size in STREAMINFO's minimum block size; RFC 9639
    // excludes the last block there, and decoders (Symphonia's among them) rely on it. Make
    // the header say what libFLAC would: min = max for a fixed block size.
    assert_eq!(&bytes[..4], b"fLaC");
    let max = [bytes[10], bytes[11]];
    if samples.len() / channels as usize > usize::from(u16::from_be_bytes(max)) {
        bytes[8] = max[0];
        bytes[9] = max[1];
    }
    bytes
}

/// Writes a 16-bit FLAC file.
pub fn write_flac(path: &Path, rate: u32, channels: u16, interleaved: &[f32]) {
    std::fs::write(path, flac_bytes(rate, channels, interleaved)).unwrap();
}

/// Least-squares fit of `a·sin + b·cos` at `freq` over `signal[skip..len-skip]`: returns the
/// amplitude and the RMS of what the fit leaves.
pub fn fit_sine(signal: &[f32], rate: u32, freq: f64, skip: usize) -> (f64, f64) {
    let part = &signal[skip..signal.len() - skip];
    let w = 2.0 * PI * freq / f64::from(rate);
    let (mut ss, mut cc, mut sc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (k, &y) in part.iter().enumerate() {
        let t = (k + skip) as f64 * w;
        let (s, c) = t.sin_cos();
        let y = f64::from(y);
        ss += s * s;
        cc += c * c;
        sc += s * c;
        ys += y * s;
        yc += y * c;
    }
    let det = ss * cc - sc * sc;
    let a = (ys * cc - yc * sc) / det;
    let b = (yc * ss - ys * sc) / det;
    let mut res = 0.0;
    for (k, &y) in part.iter().enumerate() {
        let t = (k + skip) as f64 * w;
        let e = f64::from(y) - (a * t.sin() + b * t.cos());
        res += e * e;
    }
    ((a * a + b * b).sqrt(), (res / part.len() as f64).sqrt())
}

/// RMS of a signal.
pub fn rms(signal: &[f32]) -> f64 {
    (signal
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        / signal.len() as f64)
        .sqrt()
}
