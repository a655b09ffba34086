//! Memory-mapped shard reader: header parsed by the `safetensors` crate, rows read straight
//! from the map as raw bytes or converted to `f32`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;

use super::{Dtype, ShardError};

/// A shard opened for reading (one tensor, rows along the first dimension).
#[derive(Debug)]
pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    tensor: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data_start: usize,
    row_bytes: usize,
    metadata: BTreeMap<String, String>,
}

impl ShardReader {
    /// Opens `path` and reads the tensor `tensor` (or the only tensor when `None`).
    ///
    /// # Errors
    /// `Io` when the file cannot be mapped, `Format` when the `safetensors` crate rejects it or
    /// the tensor is missing, of an unsupported dtype, or has no dimensions.
    pub fn open(path: &Path, tensor: Option<&str>) -> Result<Self, ShardError> {
        let file = File::open(path).map_err(|source| ShardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: shards are immutable once renamed into place; the map is read-only.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ShardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |message: String| ShardError::Format {
            path: path.to_path_buf(),
            message,
        };
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| format(e.to_string()))?;
        let names: Vec<String> = meta.tensors().keys().cloned().collect();
        let name = match tensor {
            Some(t) => t.to_string(),
            None if names.len() == 1 => names[0].clone(),
            None => {
                let mut sorted = names.clone();
                sorted.sort();
                return Err(format(format!(
                    "holds {} tensors ({}); name the one to read",
                    sorted.len(),
                    sorted.join(", ")
                )));
            }
        };
        let info = meta
            .info(&name)
            .ok_or_else(|| format(format!("has no tensor `{name}`")))?;
        let dtype = Dtype::from_safetensors(info.dtype).ok_or_else(|| {
            format(format!(
                "tensor `{name}` has dtype {:?}; shards hold I16, F16 or F32",
                info.dtype
            ))
        })?;
        if info.shape.is_empty() {
            return Err(format(format!("tensor `{name}` is a scalar, not rows")));
        }
        let row_len: usize = info.shape[1..].iter().product();
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            data_start: 8 + header_len + info.data_offsets.0,
            row_bytes: row_len * dtype.size(),
            tensor: name,
            dtype,
            shape: info.shape.clone(),
            map,
            metadata,
        })
    }

    /// Full tensor shape, rows first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Tensor name.
    pub fn tensor(&self) -> &str {
        &self.tensor
    }

    /// The header's `__metadata__`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Raw little-endian bytes of row `i`.
    ///
    /// # Errors
    /// `RowOutOfRange` when `i >= rows()`.
    pub fn row_bytes(&self, i: usize) -> Result<&[u8], ShardError> {
        if i >= self.rows() {
            return Err(ShardError::RowOutOfRange {
                path: self.path.clone(),
                row: i,
                rows: self.rows(),
            });
        }
        let start = self.data_start + i * self.row_bytes;
        Ok(&self.map[start..start + self.row_bytes])
    }

    /// Row `i` as `f32` (i16 values divided by 32767).
    ///
    /// # Errors
    /// `RowOutOfRange` when `i >= rows()`.
    pub fn row_f32(&self, i: usize) -> Result<Vec<f32>, ShardError> {
        let mut out = Vec::with_capacity(self.row_len());
        self.dtype.decode(self.row_bytes(i)?, &mut out);
        Ok(out)
    }

    /// Rows `indices`, concatenated as `f32` (`indices.len() * row_len()` values).
    ///
    /// # Errors
    /// `RowOutOfRange` for any index `>= rows()`.
    pub fn batch_f32(&self, indices: &[usize]) -> Result<Vec<f32>, ShardError> {
        let mut out = Vec::with_capacity(indices.len() * self.row_len());
        for &i in indices {
            self.dtype.decode(self.row_bytes(i)?, &mut out);
        }
        Ok(out)
    }
}
