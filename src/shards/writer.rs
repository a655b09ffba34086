//! Streaming safetensors writer: rows go to disk as they come (memory O(row)); the header is
//! written last into a space-padded area reserved at the start; the file appears under its
//! final name only once complete (temp name, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Dtype, ShardError};

/// Bytes reserved for the JSON header beyond what the metadata needs: room for the tensor
/// entry with 20-digit numbers, rounded up to a multiple of 8.
const HEADER_SLACK: usize = 256;

/// What a finished shard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSummary {
    /// Final path of the shard.
    pub path: PathBuf,
    /// Rows written.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// Writes one named tensor `[rows, row_shape...]` row by row into a safetensors file.
///
/// Dropping a writer without [`finish`](Self::finish) removes its temporary file.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    tensor: String,
    dtype: Dtype,
    row_shape: Vec<usize>,
    row_len: usize,
    metadata: BTreeMap<String, String>,
    header_len: usize,
    rows: u64,
    encoded: Vec<u8>,
}

fn io_err(path: &Path, source: std::io::Error) -> ShardError {
    ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn header_json(
    tensor: &str,
    dtype: Dtype,
    shape: &[u64],
    data_len: u64,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut entries = serde_json::Map::new();
    if !metadata.is_empty() {
        entries.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map serialises"),
        );
    }
    entries.insert(
        tensor.into(),
        serde_json::json!({
            "dtype": dtype.safetensors_name(),
            "shape": shape,
            "data_offsets": [0, data_len],
        }),
    );
    serde_json::Value::Object(entries).to_string()
}

impl ShardWriter {
    /// Starts a shard at `path` holding tensor `tensor` of `dtype` with rows of `row_shape`
    /// (`[samples]` for audio, `[T, D]` for features). `metadata` goes to the header's
    /// `__metadata__`.
    ///
    /// # Errors
    /// `Io` when the temporary file cannot be created; `InvalidShape` for an empty tensor name
    /// or a zero dimension.
    pub fn create(
        path: &Path,
        tensor: &str,
        dtype: Dtype,
        row_shape: &[usize],
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, ShardError> {
        if tensor.is_empty() || tensor == "__metadata__" {
            return Err(ShardError::InvalidShape {
                path: path.to_path_buf(),
                message: format!("`{tensor}` cannot name a tensor"),
            });
        }
        if row_shape.is_empty() || row_shape.contains(&0) {
            return Err(ShardError::InvalidShape {
                path: path.to_path_buf(),
                message: format!("row shape {row_shape:?} must have non-zero dimensions"),
            });
        }
        let row_len = row_shape.iter().product();
        let mut max_shape = vec![u64::MAX];
        max_shape.extend(row_shape.iter().map(|_| u64::MAX));
        let widest = header_json(tensor, dtype, &max_shape, u64::MAX, &metadata);
        let header_len = (widest.len() + HEADER_SLACK).next_multiple_of(8);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp_path = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| io_err(&tmp_path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Placeholder header: rewritten by `finish`.
        out.write_all(&vec![b' '; 8 + header_len])
            .map_err(|e| io_err(&tmp_path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp_path,
            out: Some(out),
            tensor: tensor.to_string(),
            dtype,
            row_shape: row_shape.to_vec(),
            row_len,
            metadata,
            header_len,
            rows: 0,
            encoded: Vec::with_capacity(row_len * dtype.size()),
        })
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Appends one row given as `f32` values, converted to the shard's dtype (`i16`: scaled by
    /// 32767, rounded and clamped to [-32767, 32767]).
    ///
    /// # Errors
    /// `RowLength` when `row` does not have [`row_len`](Self::row_len) values; `Io` on a
    /// write failure.
    pub fn write_row(&mut self, row: &[f32]) -> Result<(), ShardError> {
        if row.len() != self.row_len {
            return Err(ShardError::RowLength {
                path: self.path.clone(),
                expected: self.row_len,
                got: row.len(),
            });
        }
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        self.dtype.encode(row, &mut encoded);
        let result = self.write_row_bytes(&encoded);
        self.encoded = encoded;
        result
    }

    /// Appends one row given as raw little-endian bytes of the shard's dtype (for copying rows
    /// out of another shard of the same dtype without converting them).
    ///
    /// # Errors
    /// `RowLength` when `bytes` is not exactly one row; `Io` on a write failure.
    pub fn write_row_bytes(&mut self, bytes: &[u8]) -> Result<(), ShardError> {
        let expected = self.row_len * self.dtype.size();
        if bytes.len() != expected {
            return Err(ShardError::RowLength {
                path: self.path.clone(),
                expected: self.row_len,
                got: bytes.len() / self.dtype.size(),
            });
        }
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(bytes)
            .map_err(|e| io_err(&self.tmp_path, e))?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the header, flushes and fsyncs, and renames the file to its final path.
    ///
    /// # Errors
    /// `Io` on any write, sync or rename failure (the temporary file is removed).
    pub fn finish(mut self) -> Result<ShardSummary, ShardError> {
        let out = self.out.take().expect("writer is open until finish");
        let result = self.finish_inner(out);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        result
    }

    fn finish_inner(&self, out: BufWriter<File>) -> Result<ShardSummary, ShardError> {
        let tmp = &self.tmp_path;
        let mut file = out.into_inner().map_err(|e| io_err(tmp, e.into_error()))?;
        let data_len = self.rows * (self.row_len * self.dtype.size()) as u64;
        let mut shape = vec![self.rows];
        shape.extend(self.row_shape.iter().map(|&d| d as u64));
        let json = header_json(&self.tensor, self.dtype, &shape, data_len, &self.metadata);
        debug_assert!(json.len() <= self.header_len);
        let mut header = Vec::with_capacity(8 + self.header_len);
        header.extend_from_slice(&(self.header_len as u64).to_le_bytes());
        header.extend_from_slice(json.as_bytes());
        header.resize(8 + self.header_len, b' ');
        file.seek(SeekFrom::Start(0)).map_err(|e| io_err(tmp, e))?;
        file.write_all(&header).map_err(|e| io_err(tmp, e))?;
        file.sync_all().map_err(|e| io_err(tmp, e))?;
        let bytes = file.metadata().map_err(|e| io_err(tmp, e))?.len();
        drop(file);
        std::fs::rename(tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            // Persist the rename; not all platforms allow syncing a directory.
            let _ = d.sync_all();
        }
        Ok(ShardSummary {
            path: self.path.clone(),
            rows: self.rows,
            bytes,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
