//! Audio leaf: Symphonia decode, channel policy, band-limited resampling, silence trimming
//! with the reference semantics, crop / repeat-pad, probing (docs/audio.md,
//! docs/architecture.md). Knows nothing about stages, YAML or the cache.

pub mod chunk;
pub mod crop;
pub mod decode;
pub mod probe;
pub mod resample;
pub mod trim;

/// The signal helpers of the audio test binaries, so unit and integration tests share one copy.
#[cfg(test)]
#[path = "../../tests/audio_support/mod.rs"]
mod test_signals;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use chunk::{CHUNK_IMPL_VERSION, ChunkParams, ChunkedFile, chunk_file};
pub use crop::{Clip, CropMode, crop, repeat_pad, window_starts};
pub use decode::{ChannelPolicy, DecodeStream, DecodeSummary, Decoded, decode_file};
pub use probe::{ProbeInfo, ProbeParams, probe_file};
pub use resample::{StreamResampler, resample};
pub use trim::{SilenceTrimmer, TrimParams, trim_silence};

/// Why a file was rejected, as written in `rejected.csv`'s `reason` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The file has no bytes.
    ZeroByte,
    /// The stream ends before the frames its header declares, or inside a packet or header.
    Truncated,
    /// The bytes do not decode (unrecognisable container, demux or decode failure).
    Corrupt,
    /// A container or codec this build cannot decode.
    UnsupportedCodec,
    /// No sample reaches the silence threshold.
    AllSilent,
    /// Shorter than `min_duration_s`.
    TooShort,
    /// The file could not be opened or read.
    Unreadable,
}

impl RejectReason {
    /// The snake-case name written in `rejected.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZeroByte => "zero_byte",
            Self::Truncated => "truncated",
            Self::Corrupt => "corrupt",
            Self::UnsupportedCodec => "unsupported_codec",
            Self::AllSilent => "all_silent",
            Self::TooShort => "too_short",
            Self::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the audio layer. Every per-file variant names the file and maps to a
/// [`RejectReason`] through [`AudioError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("cannot read `{path}`: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("`{path}` is empty (0 bytes)")]
    ZeroByte {
        /// The file.
        path: PathBuf,
    },
    /// The stream ends early.
    #[error("`{path}` is truncated: {detail} after {decoded} frames{}", declared.map(|d| format!(" of the {d} its header declares")).unwrap_or_default())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Frames decoded before the end.
        decoded: u64,
        /// Frames the header declares, if any.
        declared: Option<u64>,
        /// Where the stream ended.
        detail: String,
    },
    /// The bytes do not decode.
    #[error("`{path}` is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A container or codec this build cannot decode.
    #[error(
        "`{path}` uses a container or codec this build cannot decode ({detail}); convert it to FLAC, WAV, Ogg/Vorbis or MP3"
    )]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// What Symphonia said.
        detail: String,
    },
    /// No sample reaches the silence threshold.
    #[error("`{path}` is silent: no sample reaches {threshold} of full scale")]
    AllSilent {
        /// The file.
        path: PathBuf,
        /// The threshold (fraction of full scale).
        threshold: f32,
    },
    /// Shorter than the minimum duration.
    #[error("`{path}` lasts {duration_s:.3} s, less than `min_duration_s` ({min_duration_s} s)")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its decoded duration.
        duration_s: f64,
        /// The minimum.
        min_duration_s: f64,
    },
    /// The resampler refused a rate pair.
    #[error("cannot resample {from_hz} Hz to {to_hz} Hz: {detail}")]
    Resample {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
        /// What the resampler said.
        detail: String,
    },
    /// A parameter is out of range.
    #[error("invalid audio parameter `{key}`: {message}")]
    InvalidParams {
        /// The parameter's key.
        key: &'static str,
        /// What is wrong and what to write instead.
        message: String,
    },
}

impl AudioError {
    /// The rejection category for a per-file error; `None` for errors that are not the file's
    /// fault (bad parameters, a refused rate pair).
    pub fn reason(&self) -> Option<RejectReason> {
        Some(match self {
            Self::Unreadable { .. } => RejectReason::Unreadable,
            Self::ZeroByte { .. } => RejectReason::ZeroByte,
            Self::Truncated { .. } => RejectReason::Truncated,
            Self::Corrupt { .. } => RejectReason::Corrupt,
            Self::UnsupportedCodec { .. } => RejectReason::UnsupportedCodec,
            Self::AllSilent { .. } => RejectReason::AllSilent,
            Self::TooShort { .. } => RejectReason::TooShort,
            Self::Resample { .. } | Self::InvalidParams { .. } => return None,
        })
    }
}
