//! Audio layer on real files: every codec and sample rate, stereo, every kind of bad file,
//! the reference trim against sox's own output, and the chunk path end to end.

mod audio_support;

use std::path::Path;

use audio_support::*;
use brspeech::audio::{
    AudioError, ChannelPolicy, ChunkParams, CropMode, DecodeStream, ProbeParams, RejectReason,
    TrimParams, chunk_file, decode_file, probe_file, repeat_pad, trim_silence,
};

const RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

fn params() -> ChunkParams {
    ChunkParams::default()
}

/// The 16 kHz clip of a 1 s, 440 Hz, 0.5-amplitude tone: a fitted sine over the first second,
/// then the same second again (repeat padding).
fn check_tone_clip(clip: &[f32], what: &str, amp_tol: f64, res_tol: f64) {
    assert_eq!(clip.len(), 64_600, "{what}");
    let (amp, res) = fit_sine(&clip[..16_000], 16_000, 440.0, 400);
    assert!((amp - 0.5).abs() < amp_tol, "{what}: amplitude {amp}");
    assert!(res < res_tol, "{what}: residual {res}");
    assert_eq!(
        clip[16_000..32_000],
        clip[..16_000],
        "{what}: repeat padding"
    );
    assert_eq!(clip[64_000..], clip[..600], "{what}: repeat padding tail");
}

#[test]
fn flac_and_wav_at_every_rate_probe_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    for rate in RATES {
        let tone = sine(rate, 440.0, 0.5, 1.0);
        let flac = dir.path().join(format!("tone{rate}.flac"));
        let wav = dir.path().join(format!("tone{rate}.wav"));
        let fwav = dir.path().join(format!("tone{rate}_f32.wav"));
        write_flac(&flac, rate, 1, &tone);
        write_wav_i16(&wav, rate, 1, &tone);
        write_wav_f32(&fwav, rate, 1, &tone);
        for (path, codec) in [(&flac, "flac"), (&wav, "pcm_s16le"), (&fwav, "pcm_f32le")] {
            let info = probe_file(path, &ProbeParams::default()).unwrap();
            assert_eq!(info.sample_rate, rate, "{}", path.display());
            assert_eq!(info.channels, 1);
            assert_eq!(info.frames, u64::from(rate));
            assert!((info.duration_s - 1.0).abs() < 1e-9);
            assert_eq!(info.codec, codec, "{}", path.display());
            assert_eq!(info.skipped_packets, 0);
            assert!((info.peak - 0.5).abs() < 1e-3);

            let out = chunk_file(path, &params()).unwrap();
            assert_eq!(out.clips.len(), 1);
            assert!(out.complete);
            assert!(!out.trimmed);
            check_tone_clip(
                &out.clips[0].samples,
                &path.display().to_string(),
                0.005,
                2e-3,
            );
        }
        // A float WAV at 16 kHz goes through untouched, bit for bit.
        if rate == 16_000 {
            let decoded = decode_file(&fwav, ChannelPolicy::First).unwrap();
            assert_eq!(decoded.samples, tone);
            let out = chunk_file(&fwav, &params()).unwrap();
            assert_eq!(out.clips[0].samples, repeat_pad(&tone, 64_600));
        }
    }
}

#[test]
fn stereo_channel_policies() {
    let dir = tempfile::tempdir().unwrap();
    let left = sine(44_100, 440.0, 0.5, 1.0);
    let right = sine(44_100, 660.0, 0.3, 1.0);
    let path = dir.path().join("stereo.flac");
    write_flac(
        &path,
        44_100,
        2,
        &interleave(&[left.clone(), right.clone()]),
    );
    let info = probe_file(&path, &ProbeParams::default()).unwrap();
    assert_eq!(info.channels, 2);

    let first = decode_file(&path, ChannelPolicy::First).unwrap();
    assert_eq!(first.summary.channels, 2);
    let (amp, res) = fit_sine(&first.samples, 44_100, 440.0, 0);
    assert!((amp - 0.5).abs() < 1e-3 && res < 1e-3, "first: {amp} {res}");

    let mean = decode_file(&path, ChannelPolicy::Mean).unwrap();
    let (a440, _) = fit_sine(&mean.samples, 44_100, 440.0, 0);
    let (a660, _) = fit_sine(&mean.samples, 44_100, 660.0, 0);
    assert!(
        (a440 - 0.25).abs() < 1e-3 && (a660 - 0.15).abs() < 1e-3,
        "mean: {a440} {a660}"
    );

    let mut p = params();
    p.channels = ChannelPolicy::First;
    check_tone_clip(
        &chunk_file(&path, &p).unwrap().clips[0].samples,
        "stereo first",
        0.005,
        2e-3,
    );

    // Opposite channels average to silence: rejected under `mean`, fine under `first`.
    let inverted: Vec<f32> = left.iter().map(|x| -x).collect();
    let cancel = dir.path().join("cancel.wav");
    write_wav_f32(&cancel, 16_000, 2, &interleave(&[left.clone(), inverted]));
    p.channels = ChannelPolicy::Mean;
    let err = chunk_file(&cancel, &p).unwrap_err();
    assert_eq!(err.reason(), Some(RejectReason::AllSilent), "{err}");
    p.channels = ChannelPolicy::First;
    assert!(chunk_file(&cancel, &p).is_ok());
}

#[test]
fn ogg_vorbis_and_mp3_fixtures_decode() {
    let ogg = fixture("tone_22050_stereo.ogg");
    let info = probe_file(&ogg, &ProbeParams::default()).unwrap();
    assert_eq!(
        (info.sample_rate, info.channels, info.codec.as_str()),
        (22_050, 2, "vorbis")
    );
    assert!((info.duration_s - 0.5).abs() < 0.01, "{}", info.duration_s);
    let d = decode_file(&ogg, ChannelPolicy::First).unwrap();
    let (amp, res) = fit_sine(&d.samples, 22_050, 440.0, 500);
    assert!(
        (amp - 0.5).abs() < 0.02 && res < 0.02,
        "vorbis: {amp} {res}"
    );

    let mp3 = fixture("tone_44100.mp3");
    let info = probe_file(&mp3, &ProbeParams::default()).unwrap();
    assert_eq!(
        (info.sample_rate, info.channels, info.codec.as_str()),
        (44_100, 1, "mp3")
    );
    assert!((info.duration_s - 0.5).abs() < 0.03, "{}", info.duration_s);
    let out = chunk_file(&mp3, &params()).unwrap();
    let clip = &out.clips[0].samples;
    let (amp, res) = fit_sine(&clip[..7_000], 16_000, 440.0, 600);
    // LAME at 64 kb/s lowers this tone to a peak of 0.479 (ffmpeg and sox decode the same).
    assert!((amp - 0.478).abs() < 0.01 && res < 0.01, "mp3: {amp} {res}");
}

fn reason(path: &Path, p: &ProbeParams) -> RejectReason {
    let err = probe_file(path, p).unwrap_err();
    err.reason()
        .unwrap_or_else(|| panic!("{err} has no reason"))
}

#[test]
fn bad_files_of_every_kind_are_categorised() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProbeParams::default();

    let empty = dir.path().join("empty.flac");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(reason(&empty, &p), RejectReason::ZeroByte);

    // A truncated FLAC whose header still claims the full length: it opens fine, and only
    // decoding finds it short.
    let full = flac_bytes(22_050, 1, &sine(22_050, 440.0, 0.5, 2.0));
    let cut = dir.path().join("cut.flac");
    std::fs::write(&cut, &full[..full.len() * 6 / 10]).unwrap();
    let stream = DecodeStream::open(&cut).unwrap();
    assert_eq!(stream.declared_frames(), Some(44_100));
    let err = probe_file(&cut, &p).unwrap_err();
    assert_eq!(err.reason(), Some(RejectReason::Truncated), "{err}");
    assert!(
        err.to_string().contains("of the 44100 its header declares"),
        "{err}"
    );
    // The chunk path (decoding to the end under `crop: all`) sees it too.
    let mut all = params();
    all.crop = CropMode::All;
    assert_eq!(
        chunk_file(&cut, &all).unwrap_err().reason(),
        Some(RejectReason::Truncated)
    );

    // Cut inside the header.
    let stub = dir.path().join("stub.flac");
    std::fs::write(&stub, &full[..20]).unwrap();
    let r = reason(&stub, &p);
    assert!(
        matches!(r, RejectReason::Truncated | RejectReason::Corrupt),
        "{r:?}"
    );

    // A WAV whose data chunk is shorter than its header says.
    let wav_path = dir.path().join("full.wav");
    write_wav_i16(&wav_path, 16_000, 1, &sine(16_000, 440.0, 0.5, 1.0));
    let wav = std::fs::read(&wav_path).unwrap();
    let short_wav = dir.path().join("short.wav");
    std::fs::write(&short_wav, &wav[..wav.len() / 2]).unwrap();
    assert_eq!(reason(&short_wav, &p), RejectReason::Truncated);

    // Noise bytes under audio extensions.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for ext in ["flac", "wav", "mp3", "ogg"] {
        let bad = dir.path().join(format!("noise.{ext}"));
        std::fs::write(&bad, &noise).unwrap();
        assert_eq!(reason(&bad, &p), RejectReason::Corrupt, "{ext}");
    }

    // A codec this build does not decode.
    let opus = fixture("tone_48000.opus");
    let err = probe_file(&opus, &p).unwrap_err();
    assert_eq!(err.reason(), Some(RejectReason::UnsupportedCodec), "{err}");
    assert!(err.to_string().contains("convert it to"), "{err}");
    // An unknown container under an extension this build does not claim to read.
    let m4a = dir.path().join("noise.m4a");
    std::fs::write(&m4a, &noise).unwrap();
    assert_eq!(reason(&m4a, &p), RejectReason::UnsupportedCodec);

    // All silent: digital zeros and a faint hiss below 1 %.
    let zeros = dir.path().join("zeros.flac");
    write_flac(&zeros, 16_000, 1, &vec![0.0; 16_000]);
    assert_eq!(reason(&zeros, &p), RejectReason::AllSilent);
    let hiss = dir.path().join("hiss.wav");
    write_wav_f32(&hiss, 16_000, 1, &sine(16_000, 3_000.0, 0.005, 1.0));
    assert_eq!(reason(&hiss, &p), RejectReason::AllSilent);
    assert_eq!(
        chunk_file(&hiss, &params()).unwrap_err().reason(),
        Some(RejectReason::AllSilent)
    );

    // Too short for `min_duration_s`.
    let short = dir.path().join("short.flac");
    write_flac(&short, 24_000, 1, &sine(24_000, 440.0, 0.5, 0.2));
    let min = ProbeParams {
        min_duration_s: 0.5,
        ..ProbeParams::default()
    };
    let err = probe_file(&short, &min).unwrap_err();
    assert_eq!(err.reason(), Some(RejectReason::TooShort), "{err}");
    assert!(err.to_string().contains("0.200 s"), "{err}");
    let mut p2 = params();
    p2.min_duration_s = 0.5;
    assert_eq!(
        chunk_file(&short, &p2).unwrap_err().reason(),
        Some(RejectReason::TooShort)
    );
    p2.min_duration_s = 0.1;
    assert!(chunk_file(&short, &p2).is_ok());

    // A missing file is unreadable, not a crash.
    assert_eq!(
        reason(&dir.path().join("absent.flac"), &p),
        RejectReason::Unreadable
    );
}

#[test]
fn damaged_flac_frames_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = flac_bytes(16_000, 1, &sine(16_000, 440.0, 0.5, 3.0));
    // Overwrite a stretch in the middle of the audio frames.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let path = dir.path().join("damaged.flac");
    std::fs::write(&path, &bytes).unwrap();
    // Symphonia's FLAC reader drops the damaged frame and resyncs; the gap in the packet
    // timestamps is counted, and the file is not mistaken for a truncated one.
    let info = probe_file(&path, &ProbeParams::default()).unwrap();
    assert!(info.skipped_packets >= 1, "{info:?}");
    assert!(
        info.lost_frames > 0 && info.frames + info.lost_frames == 48_000,
        "{info:?}"
    );
    let decoded = decode_file(&path, ChannelPolicy::First).unwrap();
    assert_eq!(decoded.summary.lost_frames, info.lost_frames);
}

#[test]
fn trim_matches_sox_on_the_reference_pattern() {
    let input = decode_file(&fixture("trim_in.flac"), ChannelPolicy::First).unwrap();
    let sox = decode_file(&fixture("trim_sox.flac"), ChannelPolicy::First).unwrap();
    assert_eq!(input.summary.sample_rate, 16_000);
    let ours = trim_silence(&input.samples, 16_000, &TrimParams::default());
    assert_eq!(
        ours.len(),
        sox.samples.len(),
        "trimmed length differs from sox"
    );
    assert_eq!(ours, sox.samples, "trimmed samples differ from sox");
}

#[test]
fn chunk_with_trim_uses_the_trimmed_signal() {
    let mut p = params();
    p.trim = true;
    let out = chunk_file(&fixture("trim_in.flac"), &p).unwrap();
    assert!(out.trimmed && out.complete);
    let sox = decode_file(&fixture("trim_sox.flac"), ChannelPolicy::First).unwrap();
    assert_eq!(out.clips[0].samples, repeat_pad(&sox.samples, 64_600));

    // A file trimming would empty (a short loud burst only) keeps its untrimmed signal.
    let dir = tempfile::tempdir().unwrap();
    let mut burst = vec![0.0f32; 8_000];
    burst.extend(sine(16_000, 440.0, 0.5, 0.1));
    burst.extend(vec![0.0f32; 8_000]);
    let path = dir.path().join("burst.wav");
    write_wav_f32(&path, 16_000, 1, &burst);
    let out = chunk_file(&path, &p).unwrap();
    assert!(!out.trimmed);
    assert_eq!(out.clips[0].samples, repeat_pad(&burst, 64_600));
}

#[test]
fn crop_all_covers_the_file_and_first_stops_early_with_the_same_clip() {
    let dir = tempfile::tempdir().unwrap();
    // 10 s at 22.05 kHz with a sweep so every window differs.
    let rate = 22_050;
    let n = rate as usize * 10;
    let sweep: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (0.4 * (2.0 * std::f64::consts::PI * (200.0 * t + 40.0 * t * t)).sin()) as f32
        })
        .collect();
    let path = dir.path().join("sweep.flac");
    write_flac(&path, rate, 1, &sweep);

    let mut all = params();
    all.crop = CropMode::All;
    all.hop = Some(32_300);
    let out = chunk_file(&path, &all).unwrap();
    assert!(out.complete);
    // 160,000 samples at 16 kHz: windows start every 32,300 until one reaches the end.
    let starts: Vec<u64> = out.clips.iter().map(|c| c.offset).collect();
    assert_eq!(starts, vec![0, 32_300, 64_600, 96_900]);
    let last = &out.clips[3].samples;
    let tail = 160_000 - 96_900;
    assert_eq!(last[tail..], last[..64_600 - tail]);

    let first = chunk_file(&path, &params()).unwrap();
    assert!(!first.complete, "crop: first stops once the clip is full");
    assert!(first.decode.frames < n as u64);
    assert_eq!(first.clips[0].samples, out.clips[0].samples);

    // With trimming on, the early stop gives the same clip as a full decode.
    let mut trim_first = params();
    trim_first.trim = true;
    let mut trim_all = all.clone();
    trim_all.trim = true;
    let a = chunk_file(&path, &trim_first).unwrap();
    let b = chunk_file(&path, &trim_all).unwrap();
    assert_eq!(a.clips[0].samples, b.clips[0].samples);
}

#[test]
fn parameter_digest_is_stable_and_sensitive() {
    let a = params();
    assert_eq!(a.digest(), params().digest());
    assert_eq!(a.digest().len(), 64);
    let mut b = params();
    b.trim = true;
    assert_ne!(a.digest(), b.digest());
    // Parameters read from YAML with defaults filled in key the same as the defaults.
    let c: ChunkParams = serde_yaml::from_str("{ samples: 64600 }").unwrap();
    assert_eq!(c.digest(), a.digest());
    assert!(serde_yaml::from_str::<ChunkParams>("{ sampels: 1 }").is_err());
}

#[test]
fn invalid_parameters_name_their_key() {
    let mut p = params();
    p.hop = Some(70_000);
    p.silence.threshold = 0.0;
    let problems = p.problems();
    let keys: Vec<&str> = problems
        .iter()
        .map(|e| match e {
            AudioError::InvalidParams { key, .. } => *key,
            _ => "",
        })
        .collect();
    assert_eq!(keys, vec!["hop", "silence.threshold"]);
    let err = chunk_file(&fixture("trim_in.flac"), &p).unwrap_err();
    assert!(err.reason().is_none());
    assert!(err.to_string().contains("`hop`"), "{err}");
}
