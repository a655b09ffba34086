//! The content-addressed store: blake3 digests, the persistent stat cache, immutable objects,
//! committed stage entries, memo entries, resumable scratch folders, the run lock, and
//! gc / verify / du (docs/cache.md). It knows nothing about pipelines or stages.
//!
//! ```text
//! cache/
//!   objects/ab/cdef...     immutable files by blake3 content digest (hard-linked, read-only)
//!   entries/<stage key>/   manifest.json, log.txt, out/ (hard links to objects)
//!   memo/<ns>/ab/<key>/    content-keyed partial results
//!   scratch/<stage key>/   resumable state of an uncommitted run
//!   corrupt/<stage key>/   entries `cache verify` found damaged (never used again)
//!   logs/<pipeline>/       the latest log of every stage
//!   state/                 stat cache
//!   tmp/                   staging folders: never taken as valid
//!   lock                   run lock (pid + host + start time)
//! ```

pub mod digest;
pub mod fsutil;
mod lock;
mod maint;
pub mod stat;
mod store;
pub mod tree;

use std::path::{Path, PathBuf};

pub use digest::{ContentDigest, Digest, OutputDigest, StageKey, hash_file};
pub use lock::{Holder, LockNote, RunLock};
pub use maint::{CorruptEntry, DuReport, DuRow, GcPolicy, GcReport, VerifyReport, find_lock_files};
pub use stat::{
    FileStat, HashProgress, Listing, NoProgress, StatCache, TreeDigest, TreeKind, TreeSpec,
};
pub use store::{FileRecord, Manifest, ManifestDraft, Staging};
pub use tree::{TreeListing, TreeProblem, TreeProblemKind};

/// Errors of the cache layer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file or folder could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder could not be written.
    #[error("cannot write `{path}`")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or quota) is full.
    #[error(
        "no space left on device while writing `{path}`; free space (e.g. `brspeech cache gc`) and run again: nothing partial was recorded"
    )]
    DiskFull {
        /// What was being written.
        path: PathBuf,
    },
    /// Another run holds the cache.
    #[error("cache `{cache}` is locked by {holder}; wait for it with `--wait`, or stop that run")]
    Locked {
        /// The cache folder.
        cache: PathBuf,
        /// Who holds it (pid, host, since when).
        holder: String,
    },
    /// An object's content does not match its digest.
    #[error(
        "cache object `{path}` is corrupt (content does not match its digest); run `brspeech cache verify`"
    )]
    Corrupt {
        /// The object.
        path: PathBuf,
    },
    /// A cache file is not in the expected format.
    #[error("cannot parse `{path}`: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

const LAYOUT: &[&str] = &[
    "objects", "entries", "memo", "scratch", "state", "tmp", "logs", "corrupt",
];

impl Cache {
    /// Opens (creating its layout) the cache at `root`.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        let root = std::path::absolute(root).map_err(|e| fsutil::write_error(root, e))?;
        for d in LAYOUT {
            fsutil::ensure_dir(root.join(d))?;
        }
        Ok(Cache { root })
    }

    /// Opens an existing cache without creating anything (`None` when absent).
    #[must_use]
    pub fn existing(root: &Path) -> Option<Self> {
        let root = std::path::absolute(root).ok()?;
        root.join("entries").is_dir().then_some(Cache { root })
    }

    /// The cache folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the object holding content `digest`.
    #[must_use]
    pub fn object_path(&self, digest: &ContentDigest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Folder of the entry for `key` (which may not exist).
    #[must_use]
    pub fn entry_dir(&self, key: &StageKey) -> PathBuf {
        self.root.join("entries").join(key.to_hex())
    }

    /// Folder for resumable state of an uncommitted run of `key` (created).
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn scratch_dir(&self, key: &StageKey) -> Result<PathBuf, CacheError> {
        fsutil::ensure_dir(self.root.join("scratch").join(key.to_hex()))
    }

    /// Removes the scratch folder of `key` (after its commit).
    ///
    /// # Errors
    /// The folder cannot be removed.
    pub fn remove_scratch(&self, key: &StageKey) -> Result<(), CacheError> {
        fsutil::remove_path(&self.root.join("scratch").join(key.to_hex()))
    }

    /// Where the latest log of `stage` of `pipeline` is kept.
    #[must_use]
    pub fn log_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(pipeline)
            .join(format!("{stage}.log"))
    }

    /// The stat cache's folder.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Content-keyed memo entry `ns/key`: returns its folder, creating it with `fill` (into a
    /// staging folder, then an atomic rename) when absent. When two processes race, the first
    /// rename wins and the other's result is discarded.
    ///
    /// # Errors
    /// `fill`'s error, or the cache's.
    pub fn memo<E, F>(&self, ns: &str, key: &str, fill: F) -> Result<PathBuf, E>
    where
        E: From<CacheError>,
        F: FnOnce(&Path) -> Result<(), E>,
    {
        let dest = self.memo_path(ns, key);
        if dest.is_dir() {
            return Ok(dest);
        }
        let staging = self.staging("memo")?;
        fill(&staging.out)?;
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        fsutil::ensure_dir(parent)?;
        match std::fs::rename(&staging.out, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => Ok(dest),
            Err(e) => Err(fsutil::write_error(&dest, e).into()),
        }
    }

    /// Folder of memo entry `ns/key` (which may not exist).
    #[must_use]
    pub fn memo_path(&self, ns: &str, key: &str) -> PathBuf {
        let shard = key.get(..2).unwrap_or("__");
        self.root.join("memo").join(ns).join(shard).join(key)
    }
}
