//! Probing for `build_metadata`: decode the whole file (a header can lie about the length),
//! report duration, native rate and channels, or a categorised rejection.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AudioError;
use super::decode::{ChannelPolicy, DecodeStream};

/// What a probe checks besides decodability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeParams {
    /// Files shorter than this many seconds are rejected as `too_short`.
    pub min_duration_s: f64,
    /// Files where no sample of any channel reaches this fraction of full scale are rejected as
    /// `all_silent`.
    pub silence_threshold: f32,
}

impl Default for ProbeParams {
    fn default() -> Self {
        Self {
            min_duration_s: 0.0,
            silence_threshold: 0.01,
        }
    }
}

/// A file that decoded completely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Decoded frames divided by the native rate.
    pub duration_s: f64,
    /// Native sample rate in Hz.
    pub sample_rate: u32,
    /// Channels in the file.
    pub channels: u16,
    /// Frames decoded.
    pub frames: u64,
    /// Packets skipped because they failed to decode or went missing (0 for a clean file).
    pub skipped_packets: u64,
    /// Frames lost inside the stream to damaged packets.
    pub lost_frames: u64,
    /// Codec short name (`flac`, `vorbis`, `mp3`, `pcm_s16le`, ...).
    pub codec: String,
    /// Largest absolute sample value over all channels.
    pub peak: f32,
}

/// Decodes the whole of `path` and reports what it holds.
///
/// # Errors
/// A categorised [`AudioError`]: `ZeroByte`, `Unreadable`, `Truncated`, `Corrupt`,
/// `UnsupportedCodec`, `TooShort`, `AllSilent`.
pub fn probe_file(path: &Path, params: &ProbeParams) -> Result<ProbeInfo, AudioError> {
    let mut stream = DecodeStream::open(path)?;
    let mut block = Vec::new();
    let mut peak = 0.0f32;
    while stream.next_block(ChannelPolicy::First, &mut block)? {
        peak = peak.max(stream.block_peak());
    }
    let summary = stream.summary();
    #[allow(clippy::cast_precision_loss)]
    let duration_s = if summary.sample_rate == 0 {
        0.0
    } else {
        summary.frames as f64 / f64::from(summary.sample_rate)
    };
    if duration_s < params.min_duration_s {
        return Err(AudioError::TooShort {
            path: path.to_path_buf(),
            duration_s,
            min_duration_s: params.min_duration_s,
        });
    }
    if peak < params.silence_threshold {
        return Err(AudioError::AllSilent {
            path: path.to_path_buf(),
            threshold: params.silence_threshold,
        });
    }
    Ok(ProbeInfo {
        duration_s,
        sample_rate: summary.sample_rate,
        channels: summary.channels,
        frames: summary.frames,
        skipped_packets: summary.skipped_packets,
        lost_frames: summary.lost_frames,
        codec: summary.codec,
        peak,
    })
}
