//! Shards leaf: streaming safetensors shard writer (bounded memory), mmap reader, `index.csv`
//! rows and stable bucketing (docs/audio.md "Shard format", docs/architecture.md "Shards").

pub mod index;
pub mod reader;
pub mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use index::{IndexRow, read_index, write_index};
pub use reader::ShardReader;
pub use writer::{ShardSummary, ShardWriter};

/// Element type of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 16-bit PCM: `round(clamp(x, -1, 1) * 32767)`.
    #[default]
    I16,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I16 | Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// The dtype's name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::I16 => "I16",
            Self::F16 => "F16",
            Self::F32 => "F32",
        }
    }

    fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::I16 => Some(Self::I16),
            safetensors::Dtype::F16 => Some(Self::F16),
            safetensors::Dtype::F32 => Some(Self::F32),
            _ => None,
        }
    }

    /// Appends `values` encoded as little-endian bytes of this dtype.
    pub fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.size());
        match self {
            Self::I16 => {
                for &v in values {
                    out.extend_from_slice(&pcm16(v).to_le_bytes());
                }
            }
            Self::F16 => {
                for &v in values {
                    out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
                }
            }
            Self::F32 => {
                for &v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Appends the `f32` values of little-endian `bytes` of this dtype (i16 divided by 32767).
    pub fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Self::I16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32767.0),
            ),
            Self::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Self::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }
}

/// 16-bit PCM value of a sample: scaled by 32767, rounded, clamped to [-32767, 32767] (a NaN
/// becomes 0).
pub fn pcm16(v: f32) -> i16 {
    #[allow(clippy::cast_possible_truncation)]
    let s = (v * 32767.0).round().clamp(-32767.0, 32767.0) as i16;
    s
}

/// Stable bucket of an item: the first 8 bytes of `blake3(relative_path)` (little-endian)
/// modulo `buckets`. Independent of platform, run and discovery order.
///
/// # Panics
/// When `buckets` is 0.
pub fn bucket_of(relative_path: &str, buckets: u32) -> u32 {
    assert!(buckets > 0, "`buckets` must be at least 1");
    let hash = blake3::hash(relative_path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let bucket = u64::from_le_bytes(first) % u64::from(buckets);
    u32::try_from(bucket).expect("a remainder modulo a u32 fits a u32")
}

/// Errors of the shards layer.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A file operation failed.
    #[error("shard I/O failed on `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a shard this layer can read.
    #[error("`{path}` is not a readable shard: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A bad tensor name or row shape.
    #[error("cannot write shard `{path}`: {message}")]
    InvalidShape {
        /// The shard.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A row of the wrong length.
    #[error("row for shard `{path}` has {got} values, expected {expected}")]
    RowLength {
        /// The shard.
        path: PathBuf,
        /// Values per row of the shard.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A row index past the end.
    #[error("row {row} is out of range for shard `{path}` ({rows} rows)")]
    RowOutOfRange {
        /// The shard.
        path: PathBuf,
        /// The index asked for.
        row: usize,
        /// Rows in the shard.
        rows: usize,
    },
    /// `index.csv` could not be read or written.
    #[error("shard index `{path}`: {source}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// The CSV error (with its line when reading).
        #[source]
        source: csv::Error,
    },
}
