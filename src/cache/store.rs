//! Objects and entries: staging folders, the atomic commit of a stage's outputs (objects by
//! hard link, entry by rename), restoring files by verified copy, folder-listing objects, and
//! clean-up of staging folders left by dead processes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::digest::{ContentDigest, OutputDigest, StageKey, hash_file};
use super::lock::{host, pid_alive};
use super::{Cache, CacheError, fsutil};

const MANIFEST_FORMAT: u32 = 1;

/// One committed output file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    /// Content digest.
    pub digest: ContentDigest,
    /// Size in bytes.
    pub size: u64,
}

/// What the engine knows about a stage run before its outputs are committed.
#[derive(Debug, Clone)]
pub struct ManifestDraft {
    /// The stage key.
    pub key: StageKey,
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// Stage kind.
    pub kind: String,
    /// Implementation version of the kind.
    pub version: u32,
    /// The key components (as recorded in the lock file).
    pub components: serde_json::Value,
    /// Start time, seconds since the epoch.
    pub started_at: u64,
    /// Run time in seconds.
    pub seconds: f64,
    /// Items processed.
    pub items_processed: u64,
    /// Items reused from an earlier output.
    pub items_reused: u64,
    /// Memo entries (`ns/key`) the run used; gc keeps them with the entry.
    pub memos: Vec<String>,
    /// The stage's log, copied into the entry.
    pub log: Option<PathBuf>,
}

/// `entries/<key>/manifest.json`: one committed stage run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this file.
    pub format: u32,
    /// The stage key.
    pub key: StageKey,
    /// Pipeline name of the run that committed it.
    pub pipeline: String,
    /// Stage name of the run that committed it.
    pub stage: String,
    /// Stage kind.
    pub kind: String,
    /// Implementation version of the kind.
    pub version: u32,
    /// The key components.
    pub components: serde_json::Value,
    /// Output files (relative to `out/`).
    pub files: BTreeMap<String, FileRecord>,
    /// Digest of the output file list (what downstream keys include).
    pub output: OutputDigest,
    /// Start time, seconds since the epoch.
    pub started_at: u64,
    /// Run time in seconds.
    pub seconds: f64,
    /// Items processed.
    pub items_processed: u64,
    /// Items reused.
    pub items_reused: u64,
    /// Memo entries used.
    #[serde(default)]
    pub memos: Vec<String>,
}

impl Manifest {
    /// Total bytes of the output files.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// Digest of an output file list.
#[must_use]
pub fn output_digest(files: &BTreeMap<String, FileRecord>) -> OutputDigest {
    let digests: BTreeMap<&String, &ContentDigest> =
        files.iter().map(|(k, v)| (k, &v.digest)).collect();
    OutputDigest::of_json(&digests)
}

/// A staging folder under `cache/tmp/`, removed on drop unless committed. Nothing in `tmp/` is
/// ever taken as valid.
#[derive(Debug)]
pub struct Staging {
    /// The staging folder.
    pub dir: PathBuf,
    /// `dir/out`: where the stage writes its outputs.
    pub out: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fsutil::remove_path(&self.dir);
    }
}

fn owner_prefix() -> String {
    format!("{}@{}.", std::process::id(), host())
}

fn readonly(path: &Path) {
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
}

impl Cache {
    /// A new staging folder (`tmp/<pid>@<host>.<label>-<random>/out`).
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn staging(&self, label: &str) -> Result<Staging, CacheError> {
        let tmp = self.root().join("tmp");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{label}-", owner_prefix()))
            .tempdir_in(&tmp)
            .map_err(|e| fsutil::write_error(&tmp, e))?
            .keep();
        let out = fsutil::ensure_dir(dir.join("out"))?;
        Ok(Staging { dir, out })
    }

    /// Removes staging folders whose owner (on this host) is dead. Call with the run lock held.
    ///
    /// # Errors
    /// The tmp folder cannot be listed.
    pub fn clean_tmp(&self) -> Result<usize, CacheError> {
        let tmp = self.root().join("tmp");
        let me = host();
        let mut removed = 0;
        let rd = std::fs::read_dir(&tmp).map_err(|source| CacheError::Read {
            path: tmp.clone(),
            source,
        })?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dead = match name.split_once('@') {
                Some((pid, rest)) => {
                    let host = rest.rsplit_once('.').map_or(rest, |(h, _)| h);
                    match pid.parse::<u32>() {
                        Ok(pid) => host == me && pid != std::process::id() && !pid_alive(pid),
                        Err(_) => true,
                    }
                }
                None => true,
            };
            if dead && fsutil::remove_path(&entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The committed entry for `key`, if there is a valid one.
    ///
    /// # Errors
    /// A manifest that exists but cannot be read or parsed.
    pub fn entry(&self, key: &StageKey) -> Result<Option<Manifest>, CacheError> {
        let path = self.entry_dir(key).join("manifest.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| CacheError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok((m.format == MANIFEST_FORMAT && m.key == *key).then_some(m))
    }

    /// Commits a staging folder as the entry of `draft.key`: every output file becomes an
    /// object (hard link; copy across file systems), the entry folder is assembled in `tmp/`
    /// and renamed into `entries/`. With `replace`, an existing entry of the same key is
    /// replaced (forced reruns); otherwise the existing one wins.
    ///
    /// # Errors
    /// Any I/O error (disk full classified); the cache is then unchanged apart from complete,
    /// unreferenced objects.
    pub fn commit(
        &self,
        staging: Staging,
        draft: ManifestDraft,
        replace: bool,
    ) -> Result<Manifest, CacheError> {
        let mut rels = Vec::new();
        for entry in walkdir::WalkDir::new(&staging.out).sort_by_file_name() {
            let entry = entry.map_err(|e| CacheError::Read {
                path: e.path().unwrap_or(&staging.out).to_path_buf(),
                source: e.into(),
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&staging.out)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .into_owned();
            rels.push(rel);
        }
        let records: Vec<(String, FileRecord)> = rels
            .into_par_iter()
            .map(|rel| {
                let path = staging.out.join(&rel);
                let size = std::fs::metadata(&path)
                    .map_err(|source| CacheError::Read {
                        path: path.clone(),
                        source,
                    })?
                    .len();
                let digest = hash_file(&path, size).map_err(|source| CacheError::Read {
                    path: path.clone(),
                    source,
                })?;
                let obj = self.object_path(&digest);
                if !obj.exists() {
                    fsutil::ensure_dir(obj.parent().unwrap_or(self.root()).to_path_buf())?;
                    fsutil::link_or_copy(&path, &obj)?;
                    readonly(&obj);
                }
                Ok((rel, FileRecord { digest, size }))
            })
            .collect::<Result<_, CacheError>>()?;
        let files: BTreeMap<String, FileRecord> = records.into_iter().collect();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            key: draft.key,
            pipeline: draft.pipeline,
            stage: draft.stage,
            kind: draft.kind,
            version: draft.version,
            components: draft.components,
            output: output_digest(&files),
            files,
            started_at: draft.started_at,
            seconds: draft.seconds,
            items_processed: draft.items_processed,
            items_reused: draft.items_reused,
            memos: draft.memos,
        };
        let assembled = self.staging("entry")?;
        for (rel, rec) in &manifest.files {
            let dest = assembled.out.join(rel);
            if let Some(parent) = dest.parent() {
                fsutil::ensure_dir(parent.to_path_buf())?;
            }
            fsutil::link_or_copy(&self.object_path(&rec.digest), &dest)?;
        }
        if let Some(log) = &draft.log
            && log.exists()
        {
            let dest = assembled.dir.join("log.txt");
            std::fs::copy(log, &dest).map_err(|e| fsutil::write_error(&dest, e))?;
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| CacheError::Format {
            path: assembled.dir.clone(),
            message: e.to_string(),
        })?;
        let mpath = assembled.dir.join("manifest.json");
        std::fs::File::create(&mpath)
            .and_then(|mut f| f.write_all(&json))
            .map_err(|e| fsutil::write_error(&mpath, e))?;
        let dest = self.entry_dir(&manifest.key);
        if dest.exists() {
            if !replace {
                return Ok(self.entry(&manifest.key)?.unwrap_or(manifest));
            }
            let trash = self.staging("replaced")?;
            std::fs::rename(&dest, trash.dir.join("old"))
                .map_err(|e| fsutil::write_error(&dest, e))?;
        }
        std::fs::rename(&assembled.dir, &dest).map_err(|e| fsutil::write_error(&dest, e))?;
        drop(staging);
        Ok(manifest)
    }

    /// Copies object `digest` to `dest` (through a temporary file and a rename), checking the
    /// bytes against the digest on the way.
    ///
    /// # Errors
    /// [`CacheError::Corrupt`] when the object's content does not match, or the I/O error.
    pub fn restore_file(&self, digest: &ContentDigest, dest: &Path) -> Result<(), CacheError> {
        let obj = self.object_path(digest);
        let dir = dest.parent().unwrap_or(Path::new("."));
        fsutil::ensure_dir(dir.to_path_buf())?;
        let mut src = std::fs::File::open(&obj).map_err(|source| CacheError::Read {
            path: obj.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(|e| fsutil::write_error(dir, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = src.read(&mut buf).map_err(|source| CacheError::Read {
                path: obj.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| fsutil::write_error(dest, e))?;
        }
        if hasher.finalize() != blake3::Hash::from_bytes(*digest.as_bytes()) {
            return Err(CacheError::Corrupt { path: obj });
        }
        let perms = std::fs::Permissions::from_mode(0o644);
        let _ = tmp.as_file().set_permissions(perms);
        tmp.persist(dest)
            .map_err(|e| fsutil::write_error(dest, e.error))?;
        Ok(())
    }

    /// Stores `bytes` as an object (no-op when present) and returns its digest.
    ///
    /// # Errors
    /// The write error.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, CacheError> {
        let digest = ContentDigest::of_bytes(bytes);
        let obj = self.object_path(&digest);
        if !obj.exists() {
            fsutil::write_atomic(&obj, bytes)?;
            readonly(&obj);
        }
        Ok(digest)
    }

    /// Whether object `digest` is stored.
    #[must_use]
    pub fn has_object(&self, digest: &ContentDigest) -> bool {
        self.object_path(digest).exists()
    }

    /// The content of object `digest`, if present.
    #[must_use]
    pub fn read_object(&self, digest: &ContentDigest) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(digest)).ok()
    }

    /// Moves the entry of `key` to `corrupt/` so no run uses it again; the next run recomputes
    /// it. `why` is written beside it.
    ///
    /// # Errors
    /// The entry cannot be moved.
    pub fn mark_corrupt(&self, key: &StageKey, why: &str) -> Result<(), CacheError> {
        let src = self.entry_dir(key);
        if !src.exists() {
            return Ok(());
        }
        let dest = self.root().join("corrupt").join(key.to_hex());
        fsutil::remove_path(&dest)?;
        std::fs::rename(&src, &dest).map_err(|e| fsutil::write_error(&dest, e))?;
        let _ = std::fs::write(dest.join("why.txt"), why);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(key: StageKey) -> ManifestDraft {
        ManifestDraft {
            key,
            pipeline: "p".into(),
            stage: "s".into(),
            kind: "command".into(),
            version: 1,
            components: serde_json::json!({}),
            started_at: 0,
            seconds: 0.0,
            items_processed: 0,
            items_reused: 0,
            memos: vec![],
            log: None,
        }
    }

    #[test]
    fn commit_dedups_objects_and_restores_verified_copies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let k1 = StageKey::of_bytes(b"1");
        let s = cache.staging("t").unwrap();
        std::fs::create_dir_all(s.out.join("d")).unwrap();
        std::fs::write(s.out.join("d/a"), "same").unwrap();
        std::fs::write(s.out.join("b"), "same").unwrap();
        let staged = s.dir.clone();
        let m = cache.commit(s, draft(k1), false).unwrap();
        assert!(!staged.exists(), "staging folder removed");
        assert_eq!(m.files.keys().collect::<Vec<_>>(), ["b", "d/a"]);
        assert_eq!(m.files["b"].digest, m.files["d/a"].digest);
        let entry = cache.entry(&k1).unwrap().unwrap();
        assert_eq!(entry.output, m.output);
        assert_eq!(
            std::fs::read_to_string(cache.entry_dir(&k1).join("out/d/a")).unwrap(),
            "same"
        );

        let dest = dir.path().join("ws/b");
        cache.restore_file(&m.files["b"].digest, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "same");

        // Damage the object: restoring refuses it, and marking moves the entry away.
        let obj = cache.object_path(&m.files["b"].digest);
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&obj, "evil").unwrap();
        assert!(matches!(
            cache.restore_file(&m.files["b"].digest, &dest),
            Err(CacheError::Corrupt { .. })
        ));
        cache.mark_corrupt(&k1, "test").unwrap();
        assert!(cache.entry(&k1).unwrap().is_none());
    }

    #[test]
    fn memo_runs_once_and_the_first_rename_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut calls = 0;
        for _ in 0..2 {
            let p = cache
                .memo::<CacheError, _>("shards", "abcdef", |tmp| {
                    calls += 1;
                    std::fs::write(tmp.join("x"), "1").map_err(|e| fsutil::write_error(tmp, e))
                })
                .unwrap();
            assert_eq!(std::fs::read_to_string(p.join("x")).unwrap(), "1");
        }
        assert_eq!(calls, 1);
        // Racing writers: both fill, one rename wins, both get the committed folder.
        let (a, b) = std::thread::scope(|s| {
            let h1 = s.spawn(|| {
                cache.memo::<CacheError, _>("race", "k1", |t| {
                    std::fs::write(t.join("v"), "a").map_err(|e| fsutil::write_error(t, e))
                })
            });
            let h2 = s.spawn(|| {
                cache.memo::<CacheError, _>("race", "k1", |t| {
                    std::fs::write(t.join("v"), "b").map_err(|e| fsutil::write_error(t, e))
                })
            });
            (h1.join().unwrap().unwrap(), h2.join().unwrap().unwrap())
        });
        assert_eq!(a, b);
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "losers cleaned up"
        );
    }

    #[test]
    fn tmp_folders_of_dead_owners_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let dead = dir
            .path()
            .join("tmp")
            .join(format!("999999@{}.run-x", host()));
        std::fs::create_dir_all(&dead).unwrap();
        let mine = cache.staging("live").unwrap();
        assert_eq!(cache.clean_tmp().unwrap(), 1);
        assert!(!dead.exists() && mine.dir.exists());
    }
}
