//! `index.csv` rows: one per shard row, mapping it back to its file, split, label, source and
//! offset, plus the item key that lets a later run reuse it; and the rejected items of a
//! sharded stage (`path,source,reason,item`), kept with their keys for the same reuse.

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

/// Header of `index.csv`.
pub const INDEX_HEADER: [&str; 9] = [
    "shard", "row", "path", "source", "label", "split", "speaker", "offset", "item",
];

/// An item a sharded stage rejected (`path,source,reason,item`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RejectedItem {
    /// Item path relative to its source root.
    pub path: String,
    /// Source name.
    pub source: String,
    /// Why (`truncated`, `all_silent`, `too_short`, ...).
    pub reason: String,
    /// Content key of the item (as in `index.csv`).
    pub item: String,
}

/// Header of a rejected-items file.
pub const REJECTED_ITEMS_HEADER: [&str; 4] = ["path", "source", "reason", "item"];

fn write_rows<'a, T, I>(path: &Path, header: &[&str], rows: I) -> Result<(), ShardError>
where
    T: Serialize + 'a,
    I: IntoIterator<Item = &'a T>,
{
    let err = |source| ShardError::Index {
        path: path.to_path_buf(),
        source,
    };
    // The header is written explicitly so that a file without rows still has it.
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(err)?;
    w.write_record(header).map_err(err)?;
    for row in rows {
        w.serialize(row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))?;
    Ok(())
}

fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, ShardError> {
    let err = |source| ShardError::Index {
        path: path.to_path_buf(),
        source,
    };
    let mut r = csv::Reader::from_path(path).map_err(err)?;
    r.deserialize().collect::<Result<Vec<T>, _>>().map_err(err)
}

/// Writes `rows` to `path` with a header (also when there are no rows), in the order given.
///
/// # Errors
/// `Index` when the file cannot be created or written.
pub fn write_index<'a, I>(path: &Path, rows: I) -> Result<(), ShardError>
where
    I: IntoIterator<Item = &'a IndexRow>,
{
    write_rows(path, &INDEX_HEADER, rows)
}

/// Reads every row of `path`.
///
/// # Errors
/// `Index` when the file cannot be read or a row does not parse (the error names the line).
pub fn read_index(path: &Path) -> Result<Vec<IndexRow>, ShardError> {
    read_rows(path)
}

/// Writes rejected items to `path` with a header, in the order given.
///
/// # Errors
/// `Index` when the file cannot be created or written.
pub fn write_rejected_items<'a, I>(path: &Path, rows: I) -> Result<(), ShardError>
where
    I: IntoIterator<Item = &'a RejectedItem>,
{
    write_rows(path, &REJECTED_ITEMS_HEADER, rows)
}

/// Reads a rejected-items file.
///
/// # Errors
/// `Index` when the file cannot be read or a row does not parse.
pub fn read_rejected_items(path: &Path) -> Result<Vec<RejectedItem>, ShardError> {
    read_rows(path)
}
