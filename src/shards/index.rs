//! `index.csv` rows: one per shard row, mapping it back to its file, split, label, source and
//! offset, plus the item key that lets a later run reuse it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ShardError;

/// One row of `index.csv` (`shard,row,path,source,label,split,speaker,offset,item`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IndexRow {
    /// Shard file name, relative to the stage output folder.
    pub shard: String,
    /// Row inside the shard.
    pub row: u64,
    /// Item path relative to its source root.
    pub path: String,
    /// Source name.
    pub source: String,
    /// `bonafide` or `spoof`.
    pub label: String,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Speaker, empty when unknown.
    pub speaker: String,
    /// First sample of the clip in the processed signal.
    pub offset: u64,
    /// Content key of the item (input digest and the parameters that shaped the row).
    pub item: String,
}

/// Writes `rows` to `path` with a header, in the order given.
///
/// # Errors
/// `Index` when the file cannot be created or written.
pub fn write_index<'a, I>(path: &Path, rows: I) -> Result<(), ShardError>
where
    I: IntoIterator<Item = &'a IndexRow>,
{
    let err = |source| ShardError::Index {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    for row in rows {
        w.serialize(row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))?;
    Ok(())
}

/// Reads every row of `path`.
///
/// # Errors
/// `Index` when the file cannot be read or a row does not parse (the error names the line).
pub fn read_index(path: &Path) -> Result<Vec<IndexRow>, ShardError> {
    let err = |source| ShardError::Index {
        path: path.to_path_buf(),
        source,
    };
    let mut r = csv::Reader::from_path(path).map_err(err)?;
    r.deserialize()
        .collect::<Result<Vec<IndexRow>, _>>()
        .map_err(err)
}
