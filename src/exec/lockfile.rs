//! The pipeline's lock file (`full.yaml` → `full.lock`): per stage, the key, the output digest
//! and the key *components* of its last successful run, so `status` can say exactly what
//! changed. JSON, written atomically after every committed stage.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ExecError;
use super::key::KeyComponents;
use crate::cache::{OutputDigest, StageKey, fsutil};

/// Format version of lock files.
pub const LOCK_FORMAT: u32 = 1;

/// One stage's last successful run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Stage key.
    pub key: StageKey,
    /// Output digest (what downstream keys include).
    pub output: OutputDigest,
    /// Key components.
    pub components: KeyComponents,
    /// When it finished, seconds since the epoch.
    pub finished_at: u64,
}

/// A lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    /// Format version (also marks the file as a brspeech lock file).
    pub brspeech_lock: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Records by stage name.
    pub stages: BTreeMap<String, LockRecord>,
}

impl LockFile {
    /// An empty lock file for `pipeline`.
    #[must_use]
    pub fn empty(pipeline: &str) -> Self {
        LockFile {
            brspeech_lock: LOCK_FORMAT,
            pipeline: pipeline.to_owned(),
            stages: BTreeMap::new(),
        }
    }

    /// Reads `path`; a missing file is an empty lock.
    ///
    /// # Errors
    /// [`ExecError::LockFile`] when it exists but is not a brspeech lock file.
    pub fn load(path: &Path, pipeline: &str) -> Result<Self, ExecError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<LockFile>(&bytes)
                .ok()
                .filter(|l| l.brspeech_lock == LOCK_FORMAT)
                .ok_or_else(|| ExecError::LockFile {
                    path: path.to_path_buf(),
                    message: "not a brspeech lock file of this version; move it away and run again"
                        .into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty(pipeline)),
            Err(e) => Err(ExecError::LockFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    /// Like [`LockFile::load`] but `None` for anything that is not a lock file (gc's scan).
    #[must_use]
    pub fn try_load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice::<LockFile>(&bytes)
            .ok()
            .filter(|l| l.brspeech_lock == LOCK_FORMAT)
    }

    /// Writes `path` atomically.
    ///
    /// # Errors
    /// [`ExecError::Cache`] with the write error (disk full classified).
    pub fn save(&self, path: &Path) -> Result<(), ExecError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ExecError::LockFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes)?;
        Ok(())
    }
}
