//! One file in, fixed-length clips out: decode, channel policy, resample, optional silence
//! trim, crop. A pure function of (parameters, file bytes); resamplers are reused per thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AudioError;
use super::crop::{Clip, CropMode, crop};
use super::decode::{ChannelPolicy, DecodeStream, DecodeSummary};
use super::resample::StreamResampler;
use super::trim::{SilenceTrimmer, TrimParams};

/// Parameters of the chunk path (the `chunk_audio` stage's audio settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkParams {
    /// Output sample rate in Hz.
    pub sample_rate: u32,
    /// How channels become one.
    pub channels: ChannelPolicy,
    /// Remove silence with the reference semantics (see [`TrimParams`]).
    pub trim: bool,
    /// Silence detector settings; `silence.threshold` is also the all-silent threshold.
    pub silence: TrimParams,
    /// `first` (one clip) or `all` (hop windows).
    pub crop: CropMode,
    /// Samples per clip.
    pub samples: usize,
    /// Hop between windows for `crop: all` (default: `samples`, no overlap).
    pub hop: Option<usize>,
    /// Files shorter than this (native duration, before trimming) are rejected.
    pub min_duration_s: f64,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            channels: ChannelPolicy::First,
            trim: false,
            silence: TrimParams::default(),
            crop: CropMode::First,
            samples: 64_600,
            hop: None,
            min_duration_s: 0.0,
        }
    }
}

/// Version of the chunk path's output for given parameters and input bytes: bump it when the
/// same input and parameters would give other samples (a new resampler setting, a trim fix).
pub const CHUNK_IMPL_VERSION: u32 = 1;

impl ChunkParams {
    /// Stable digest (blake3 hex) of these parameters and [`CHUNK_IMPL_VERSION`]; with the
    /// input file's digest it keys a chunked item.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"brspeech-chunk\0");
        h.update(&CHUNK_IMPL_VERSION.to_le_bytes());
        h.update(
            serde_json::to_string(self)
                .expect("chunk parameters serialise")
                .as_bytes(),
        );
        h.finalize().to_hex().to_string()
    }

    /// The hop actually used by `crop: all`.
    pub fn hop(&self) -> usize {
        self.hop.unwrap_or(self.samples)
    }

    /// Checks every parameter; returns each problem with the key it concerns.
    pub fn problems(&self) -> Vec<AudioError> {
        let mut out = Vec::new();
        let mut bad = |key: &'static str, message: String| {
            out.push(AudioError::InvalidParams { key, message });
        };
        if self.sample_rate == 0 {
            bad("sample_rate", "must be a positive number of Hz".into());
        }
        if self.samples == 0 {
            bad("samples", "must be at least 1".into());
        }
        if let Some(hop) = self.hop
            && (hop == 0 || hop > self.samples)
        {
            bad(
                "hop",
                format!(
                    "must be between 1 and `samples` ({}) so that windows cover every sample",
                    self.samples
                ),
            );
        }
        if !(self.silence.threshold > 0.0 && self.silence.threshold < 1.0) {
            bad(
                "silence.threshold",
                "must be a fraction of full scale strictly between 0 and 1 (0.01 = 1 %)".into(),
            );
        }
        for (key, v) in [
            ("silence.above_s", self.silence.above_s),
            ("silence.below_s", self.silence.below_s),
            ("silence.window_s", self.silence.window_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bad(key, "must be a positive number of seconds".into());
            }
        }
        if !(self.min_duration_s.is_finite() && self.min_duration_s >= 0.0) {
            bad(
                "min_duration_s",
                "must be zero or a positive number of seconds".into(),
            );
        }
        out
    }
}

/// The clips of one file and what its decode saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkedFile {
    /// Clips in offset order, each `samples` long.
    pub clips: Vec<Clip>,
    /// Native rate, channels, decoded frames, skipped packets.
    pub decode: DecodeSummary,
    /// Whether the clips come from the trimmed signal (false when trimming is off or removed
    /// everything, in which case the untrimmed signal is used).
    pub trimmed: bool,
    /// Whether the file was decoded to its end. `crop: first` stops decoding once the clip is
    /// full; file integrity is then the probe's business.
    pub complete: bool,
}

thread_local! {
    static RESAMPLERS: RefCell<HashMap<(u32, u32), StreamResampler>> = RefCell::new(HashMap::new());
}

fn take_resampler(from: u32, to: u32) -> Result<StreamResampler, AudioError> {
    let cached = RESAMPLERS.with(|m| m.borrow_mut().remove(&(from, to)));
    match cached {
        Some(mut r) => {
            r.reset();
            Ok(r)
        }
        None => StreamResampler::new(from, to).map_err(|e| AudioError::Resample {
            from_hz: from,
            to_hz: to,
            detail: e.detail,
        }),
    }
}

fn give_back(r: StreamResampler) {
    RESAMPLERS.with(|m| {
        m.borrow_mut().insert((r.from_hz(), r.to_hz()), r);
    });
}

/// Collects the processed signal: the trimmed stream and, until the trimmer keeps anything,
/// the untrimmed one (used when trimming removes everything or is off).
struct Collector {
    keep_all: bool,
    n: usize,
    trim: Option<SilenceTrimmer>,
    trimmed: Vec<f32>,
    untrimmed: Vec<f32>,
    untrimmed_done: bool,
}

impl Collector {
    fn feed(&mut self, block: &[f32]) {
        if !self.untrimmed_done {
            if self.keep_all {
                self.untrimmed.extend_from_slice(block);
            } else {
                let room = self.n.saturating_sub(self.untrimmed.len());
                self.untrimmed
                    .extend_from_slice(&block[..room.min(block.len())]);
            }
        }
        if let Some(trim) = &mut self.trim {
            trim.push(block, &mut self.trimmed);
            self.after_trim();
        }
    }

    fn after_trim(&mut self) {
        if !self.trimmed.is_empty() && !self.untrimmed_done {
            self.untrimmed_done = true;
            self.untrimmed = Vec::new();
        }
        if !self.keep_all && self.trimmed.len() > self.n {
            self.trimmed.truncate(self.n);
        }
    }

    fn finish(&mut self) {
        if let Some(trim) = &mut self.trim {
            trim.finish(&mut self.trimmed);
            self.after_trim();
        }
    }

    /// Whether `crop: first` has everything it needs from the signal.
    fn full(&self) -> bool {
        if self.trim.is_some() {
            self.trimmed.len() >= self.n
        } else {
            self.untrimmed.len() >= self.n
        }
    }

    fn into_signal(self) -> (Vec<f32>, bool) {
        if self.trim.is_some() && !self.trimmed.is_empty() {
            (self.trimmed, true)
        } else {
            (self.untrimmed, false)
        }
    }
}

fn peak(block: &[f32]) -> f32 {
    block.iter().fold(0.0f32, |m, s| m.max(s.abs()))
}

/// Decodes `path` and cuts it into clips under `params`.
///
/// # Errors
/// A categorised [`AudioError`]: the decode errors of [`DecodeStream`], `TooShort`
/// (native duration below `min_duration_s`), `AllSilent` (no sample of the mono signal reaches
/// `silence.threshold`), `InvalidParams`.
pub fn chunk_file(path: &Path, params: &ChunkParams) -> Result<ChunkedFile, AudioError> {
    if let Some(problem) = params.problems().into_iter().next() {
        return Err(problem);
    }
    let mut stream = DecodeStream::open(path)?;
    let result = run_chunk(&mut stream, path, params);
    result.map(|(clips, trimmed, complete)| ChunkedFile {
        clips,
        decode: stream.summary(),
        trimmed,
        complete,
    })
}

fn run_chunk(
    stream: &mut DecodeStream,
    path: &Path,
    params: &ChunkParams,
) -> Result<(Vec<Clip>, bool, bool), AudioError> {
    let out_rate = params.sample_rate;
    let mut collector = Collector {
        keep_all: params.crop == CropMode::All,
        n: params.samples,
        trim: params
            .trim
            .then(|| SilenceTrimmer::new(&params.silence, out_rate)),
        trimmed: Vec::new(),
        untrimmed: Vec::new(),
        untrimmed_done: false,
    };
    let mut block = Vec::new();
    let mut resampled = Vec::new();
    let mut resampler: Option<StreamResampler> = None;
    let mut max_abs = 0.0f32;
    let mut complete = true;
    let mut rate = 0;
    let outcome: Result<(), AudioError> = (|| {
        while stream.next_block(params.channels, &mut block)? {
            if rate == 0 {
                rate = stream.sample_rate();
                if rate != out_rate {
                    resampler = Some(take_resampler(rate, out_rate)?);
                }
            }
            max_abs = max_abs.max(peak(&block));
            if let Some(r) = &mut resampler {
                resampled.clear();
                r.push(&block, &mut resampled);
                collector.feed(&resampled);
            } else {
                collector.feed(&block);
            }
            if params.crop == CropMode::First
                && collector.full()
                && max_abs >= params.silence.threshold
                && duration_s(stream.frames(), rate) >= params.min_duration_s
            {
                complete = false;
                return Ok(());
            }
        }
        if let Some(r) = &mut resampler {
            resampled.clear();
            r.finish(&mut resampled);
            collector.feed(&resampled);
        }
        collector.finish();
        Ok(())
    })();
    if let Some(r) = resampler {
        give_back(r);
    }
    outcome?;
    let duration = duration_s(stream.frames(), rate);
    if duration < params.min_duration_s {
        return Err(AudioError::TooShort {
            path: path.to_path_buf(),
            duration_s: duration,
            min_duration_s: params.min_duration_s,
        });
    }
    if max_abs < params.silence.threshold {
        return Err(AudioError::AllSilent {
            path: path.to_path_buf(),
            threshold: params.silence.threshold,
        });
    }
    let (signal, trimmed) = collector.into_signal();
    let clips = crop(&signal, params.crop, params.samples, params.hop());
    Ok((clips, trimmed, complete))
}

#[allow(clippy::cast_precision_loss)]
fn duration_s(frames: u64, rate: u32) -> f64 {
    if rate == 0 {
        0.0
    } else {
        frames as f64 / f64::from(rate)
    }
}
