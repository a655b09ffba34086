//! Shards leaf: streaming safetensors shard writer (bounded memory), mmap reader, `index.csv`
//! rows and stable bucketing (docs/audio.md "Shard format", docs/architecture.md "Shards").

pub mod index;
pub mod reader;
pub mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use index::{
    IndexRow, RejectedItem, read_index, read_rejected_items, write_index, write_rejected_items,
};
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use safetensors::SafeTensors;

    use super::*;

    fn rows(n: usize, len: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|r| {
                (0..len)
                    .map(|i| {
                        #[allow(clippy::cast_precision_loss)]
                        let v = ((r * 31 + i * 7) % 200) as f32 / 100.0 - 1.0;
                        v
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn round_trip_through_the_safetensors_crate_for_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [Dtype::I16, Dtype::F16, Dtype::F32] {
            let path = dir
                .path()
                .join(format!("audio-{}.safetensors", dtype.safetensors_name()));
            let meta = BTreeMap::from([("sample_rate".to_string(), "16000".to_string())]);
            let mut w = ShardWriter::create(&path, "audio", dtype, &[100], meta.clone()).unwrap();
            let data = rows(5, 100);
            for r in &data {
                w.write_row(r).unwrap();
            }
            let summary = w.finish().unwrap();
            assert_eq!(summary.rows, 5);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(summary.bytes, bytes.len() as u64);
            // The data section starts 8-byte aligned.
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            assert_eq!((8 + n) % 8, 0);

            let st = SafeTensors::deserialize(&bytes).unwrap();
            let view = st.tensor("audio").unwrap();
            assert_eq!(view.shape(), &[5, 100]);
            assert_eq!(view.dtype().to_string(), dtype.safetensors_name());
            let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
            let got_meta = header.metadata().clone().unwrap();
            assert_eq!(
                got_meta.get("sample_rate").map(String::as_str),
                Some("16000")
            );
            let mut expected = Vec::new();
            for r in &data {
                dtype.encode(r, &mut expected);
            }
            assert_eq!(view.data(), expected.as_slice());

            let reader = ShardReader::open(&path, None).unwrap();
            assert_eq!(reader.shape(), &[5, 100]);
            assert_eq!(reader.dtype(), dtype);
            assert_eq!(reader.metadata(), &meta);
            let tol = match dtype {
                Dtype::I16 => 1.0 / 32767.0,
                Dtype::F16 => 1e-3,
                Dtype::F32 => 0.0,
            };
            for (i, r) in data.iter().enumerate() {
                let got = reader.row_f32(i).unwrap();
                for (a, b) in got.iter().zip(r) {
                    assert!((a - b).abs() <= tol, "{dtype:?} row {i}: {a} vs {b}");
                }
            }
            let batch = reader.batch_f32(&[4, 0]).unwrap();
            assert_eq!(batch.len(), 200);
            assert_eq!(batch[100..], reader.row_f32(0).unwrap()[..]);
            assert!(matches!(
                reader.row_f32(5),
                Err(ShardError::RowOutOfRange { row: 5, .. })
            ));
        }
    }

    /// Writes shards for a manual check with Python's `safetensors` (see docs/audio.md).
    #[test]
    #[ignore = "writes to BRSPEECH_SHARD_DUMP for an external reader"]
    fn dump_shards_for_python() {
        let dir = std::path::PathBuf::from(std::env::var("BRSPEECH_SHARD_DUMP").unwrap());
        for dtype in [Dtype::I16, Dtype::F16, Dtype::F32] {
            let path = dir.join(format!("{}.safetensors", dtype.safetensors_name()));
            let meta = BTreeMap::from([("sample_rate".to_string(), "16000".to_string())]);
            let mut w = ShardWriter::create(&path, "audio", dtype, &[6], meta).unwrap();
            w.write_row(&[0.0, 0.5, -0.5, 1.0, -1.0, 0.25]).unwrap();
            w.write_row(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap();
            w.finish().unwrap();
        }
    }

    #[test]
    fn pcm16_scales_rounds_and_clamps() {
        assert_eq!(pcm16(0.0), 0);
        assert_eq!(pcm16(1.0), 32767);
        assert_eq!(pcm16(-1.0), -32767);
        assert_eq!(pcm16(2.5), 32767);
        assert_eq!(pcm16(-7.0), -32767);
        assert_eq!(pcm16(0.5), 16384);
        assert_eq!(pcm16(f32::NAN), 0);
    }

    #[test]
    fn three_dimensional_features_and_zero_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.safetensors");
        let mut w =
            ShardWriter::create(&path, "features", Dtype::F16, &[201, 8], BTreeMap::new()).unwrap();
        let row = vec![0.25f32; 201 * 8];
        w.write_row(&row).unwrap();
        w.write_row(&row).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("features").unwrap().shape(), &[2, 201, 8]);
        let reader = ShardReader::open(&path, Some("features")).unwrap();
        assert_eq!(reader.row_len(), 201 * 8);
        assert_eq!(reader.row_f32(1).unwrap(), row);

        let empty = dir.path().join("empty.safetensors");
        ShardWriter::create(&empty, "audio", Dtype::I16, &[10], BTreeMap::new())
            .unwrap()
            .finish()
            .unwrap();
        let bytes = std::fs::read(&empty).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("audio").unwrap().shape(), &[0, 10]);
        assert_eq!(ShardReader::open(&empty, None).unwrap().rows(), 0);
    }

    #[test]
    fn rows_copy_as_bytes_and_wrong_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        let mut w = ShardWriter::create(&a, "audio", Dtype::I16, &[4], BTreeMap::new()).unwrap();
        w.write_row(&[0.1, 0.2, 0.3, 0.4]).unwrap();
        assert!(matches!(
            w.write_row(&[0.1, 0.2]),
            Err(ShardError::RowLength {
                expected: 4,
                got: 2,
                ..
            })
        ));
        w.finish().unwrap();
        let ra = ShardReader::open(&a, None).unwrap();
        let b = dir.path().join("b.safetensors");
        let mut w = ShardWriter::create(&b, "audio", Dtype::I16, &[4], BTreeMap::new()).unwrap();
        w.write_row_bytes(ra.row_bytes(0).unwrap()).unwrap();
        assert!(w.write_row_bytes(&[0u8; 3]).is_err());
        w.finish().unwrap();
        let rb = ShardReader::open(&b, None).unwrap();
        assert_eq!(rb.row_bytes(0).unwrap(), ra.row_bytes(0).unwrap());
    }

    #[test]
    fn unfinished_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        {
            let mut w =
                ShardWriter::create(&path, "audio", Dtype::F32, &[3], BTreeMap::new()).unwrap();
            w.write_row(&[1.0, 2.0, 3.0]).unwrap();
            // The final name does not exist until `finish`.
            assert!(!path.exists());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn reader_rejects_a_file_that_is_not_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file at all").unwrap();
        assert!(matches!(
            ShardReader::open(&path, None),
            Err(ShardError::Format { .. })
        ));
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: a change here changes every shard assignment (bump stage versions).
        let b = bucket_of("f5tts/train/audio/0001.flac", 64);
        assert_eq!(b, bucket_of("f5tts/train/audio/0001.flac", 64));
        let hash = blake3::hash(b"f5tts/train/audio/0001.flac");
        let expected = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap()) % 64;
        assert_eq!(u64::from(b), expected);
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[bucket_of(&format!("spk{}/utt{i}.flac", i % 37), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(bucket_of("anything", 1), 0);
    }

    #[test]
    fn index_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.csv");
        let rows = vec![
            IndexRow {
                shard: "real-003.safetensors".into(),
                row: 0,
                path: "train/audio/a, b.flac".into(),
                source: "real".into(),
                label: "bonafide".into(),
                split: "train".into(),
                speaker: String::new(),
                offset: 0,
                item: "ab12".into(),
            },
            IndexRow {
                shard: "real-003.safetensors".into(),
                row: 1,
                path: "train/audio/c.flac".into(),
                source: "real".into(),
                label: "bonafide".into(),
                split: "train".into(),
                speaker: "spk\"1".into(),
                offset: 64_600,
                item: "cd34".into(),
            },
        ];
        write_index(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("shard,row,path,source,label,split,speaker,offset,item\n"));
        assert_eq!(read_index(&path).unwrap(), rows);
        // A file without rows keeps its header.
        write_index(&path, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "shard,row,path,source,label,split,speaker,offset,item\n"
        );
        assert!(read_index(&path).unwrap().is_empty());

        let rejected = vec![RejectedItem {
            path: "a, b.wav".into(),
            source: "tts".into(),
            reason: "all_silent".into(),
            item: "ef56".into(),
        }];
        let rpath = dir.path().join("rejected.csv");
        write_rejected_items(&rpath, &rejected).unwrap();
        assert_eq!(
            std::fs::read_to_string(&rpath).unwrap(),
            "path,source,reason,item\n\"a, b.wav\",tts,all_silent,ef56\n"
        );
        assert_eq!(read_rejected_items(&rpath).unwrap(), rejected);
        write_rejected_items(&rpath, &[]).unwrap();
        assert!(read_rejected_items(&rpath).unwrap().is_empty());
    }
}
