//! File-system helpers shared by the cache: atomic writes (temp file + rename), hard links with
//! a copy fallback across file systems, tree copies and removal, disk-full classification.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::CacheError;

/// Whether an I/O error means the disk (or quota) is full.
#[must_use]
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The error for a failed write of `path`: [`CacheError::DiskFull`] when the disk is full.
#[must_use]
pub fn write_error(path: &Path, source: std::io::Error) -> CacheError {
    if is_disk_full(&source) {
        CacheError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        CacheError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// readers see the old content or the new one, never a part.
///
/// # Errors
/// The write error (disk full classified).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| write_error(dir, e))?;
    tmp.write_all(bytes).map_err(|e| write_error(path, e))?;
    tmp.flush().map_err(|e| write_error(path, e))?;
    tmp.persist(path).map_err(|e| write_error(path, e.error))?;
    Ok(())
}

/// Hard-links `from` to `to`; across file systems (or where links are refused) copies through
/// a temporary file and a rename. An existing `to` is left alone (objects are immutable).
///
/// # Errors
/// The I/O error (disk full classified).
pub fn link_or_copy(from: &Path, to: &Path) -> Result<(), CacheError> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if is_disk_full(&e) => Err(write_error(to, e)),
        Err(_) => copy_atomic(from, to),
    }
}

/// Copies `from` to `to` through a temporary file beside `to` and a rename.
///
/// # Errors
/// The I/O error (disk full classified).
pub fn copy_atomic(from: &Path, to: &Path) -> Result<(), CacheError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| write_error(dir, e))?;
    std::fs::copy(from, tmp.path()).map_err(|e| {
        if is_disk_full(&e) {
            CacheError::DiskFull {
                path: to.to_path_buf(),
            }
        } else {
            CacheError::Read {
                path: from.to_path_buf(),
                source: e,
            }
        }
    })?;
    tmp.persist(to).map_err(|e| write_error(to, e.error))?;
    Ok(())
}

/// Copies a file or a whole folder to `to` (created; parents too). Never hard-links.
///
/// # Errors
/// The first I/O error (disk full classified).
pub fn copy_tree(from: &Path, to: &Path) -> Result<u64, CacheError> {
    let meta = std::fs::metadata(from).map_err(|source| CacheError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        std::fs::copy(from, to).map_err(|e| write_error(to, e))?;
        return Ok(1);
    }
    let mut n = 0;
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.map_err(|e| CacheError::Read {
            path: e.path().unwrap_or(from).to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| write_error(&dest, e))?;
        } else {
            std::fs::copy(entry.path(), &dest).map_err(|e| write_error(&dest, e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes a file, link or folder if present.
///
/// # Errors
/// The I/O error, unless the path did not exist.
pub fn remove_path(path: &Path) -> Result<(), CacheError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let r = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::Write {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Total size in bytes of the regular files under `path` (0 when missing).
#[must_use]
pub fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Creates (with parents) and returns `path`.
///
/// # Errors
/// The I/O error (disk full classified).
pub fn ensure_dir(path: PathBuf) -> Result<PathBuf, CacheError> {
    std::fs::create_dir_all(&path).map_err(|e| write_error(&path, e))?;
    Ok(path)
}
