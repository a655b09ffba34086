//! Cache maintenance: `verify` (re-hash objects and entries, move damaged entries aside),
//! `gc` (keep what lock files reference plus the last N entries per stage), `du` (sizes by
//! stage and version).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::digest::{ContentDigest, StageKey, hash_file};
use super::stat::HashProgress;
use super::store::Manifest;
use super::{Cache, CacheError, fsutil};

/// A damaged entry found by `verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorruptEntry {
    /// Stage key.
    pub key: String,
    /// Pipeline and stage that committed it.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// Files that are missing or do not match.
    pub files: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: usize,
    /// Objects checked.
    pub objects: usize,
    /// Damaged entries (moved to `corrupt/`).
    pub corrupt_entries: Vec<CorruptEntry>,
    /// Damaged objects (deleted).
    pub corrupt_objects: Vec<String>,
}

/// What `gc` keeps.
#[derive(Debug, Clone, Default)]
pub struct GcPolicy {
    /// Stage keys referenced by lock files.
    pub keep_keys: HashSet<StageKey>,
    /// Objects referenced by lock files (folder listings).
    pub keep_objects: HashSet<ContentDigest>,
    /// Also keep the N most recent entries of every (pipeline, stage).
    pub keep_last: usize,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Entries kept.
    pub entries_kept: usize,
    /// Entries removed (including corrupt ones).
    pub entries_removed: usize,
    /// Objects removed.
    pub objects_removed: usize,
    /// Memo entries removed.
    pub memos_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Size of the entries of one (pipeline, stage, version).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DuRow {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// Kind.
    pub kind: String,
    /// Implementation version.
    pub version: u32,
    /// Number of entries.
    pub entries: usize,
    /// Bytes of their outputs (each distinct object counted once).
    pub bytes: u64,
    /// How many of them a lock file references.
    pub referenced: usize,
}

/// `du` result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DuReport {
    /// Per stage and version, largest first.
    pub rows: Vec<DuRow>,
    /// Bytes of all objects on disk.
    pub objects_bytes: u64,
    /// Bytes of memo entries.
    pub memo_bytes: u64,
    /// Bytes of scratch folders (resumable runs).
    pub scratch_bytes: u64,
    /// Bytes of corrupt entries not yet collected.
    pub corrupt_bytes: u64,
}

impl Cache {
    /// All committed entries (unreadable manifests are skipped).
    #[must_use]
    pub fn entries(&self) -> Vec<Manifest> {
        let dir = self.root().join("entries");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let keys: Vec<StageKey> = rd
            .flatten()
            .filter_map(|e| StageKey::from_hex(&e.file_name().to_string_lossy()))
            .collect();
        let mut out: Vec<Manifest> = keys
            .par_iter()
            .filter_map(|k| self.entry(k).ok().flatten())
            .collect();
        out.sort_by(|a, b| {
            (&a.pipeline, &a.stage, a.started_at).cmp(&(&b.pipeline, &b.stage, b.started_at))
        });
        out
    }

    fn objects(&self) -> Vec<(ContentDigest, PathBuf)> {
        let dir = self.root().join("objects");
        walkdir::WalkDir::new(&dir)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let prefix = e
                    .path()
                    .parent()?
                    .file_name()?
                    .to_string_lossy()
                    .into_owned();
                let rest = e.file_name().to_string_lossy().into_owned();
                ContentDigest::from_hex(&format!("{prefix}{rest}")).map(|d| (d, e.into_path()))
            })
            .collect()
    }

    /// Re-hashes every object and every entry file. Damaged objects are deleted, damaged
    /// entries moved to `corrupt/` (the next run recomputes them).
    ///
    /// # Errors
    /// An entry that cannot be moved aside.
    pub fn verify(&self, progress: &dyn HashProgress) -> Result<VerifyReport, CacheError> {
        let objects = self.objects();
        let entries = self.entries();
        let files: usize = entries.iter().map(|m| m.files.len()).sum();
        progress.start((objects.len() + files) as u64);
        // Hash each inode once: entry files are hard links to objects.
        let by_inode: HashMap<(u64, u64), Option<ContentDigest>> = objects
            .par_iter()
            .filter_map(|(_, p)| {
                let m = std::fs::metadata(p).ok()?;
                let d = hash_file(p, m.len()).ok();
                progress.advance(1);
                Some(((m.dev(), m.ino()), d))
            })
            .collect();
        let mut report = VerifyReport {
            entries: entries.len(),
            objects: objects.len(),
            ..VerifyReport::default()
        };
        for (digest, path) in &objects {
            let ok = std::fs::metadata(path)
                .ok()
                .and_then(|m| by_inode.get(&(m.dev(), m.ino())).copied().flatten())
                == Some(*digest);
            if !ok {
                report.corrupt_objects.push(digest.to_hex());
                let _ = fsutil::remove_path(path);
            }
        }
        for m in &entries {
            let out = self.entry_dir(&m.key).join("out");
            let bad: Vec<String> = m
                .files
                .par_iter()
                .filter_map(|(rel, rec)| {
                    progress.advance(1);
                    let p = out.join(rel);
                    let meta = std::fs::metadata(&p).ok();
                    let d = meta.and_then(|meta| match by_inode.get(&(meta.dev(), meta.ino())) {
                        Some(d) => *d,
                        None => hash_file(&p, meta.len()).ok(),
                    });
                    (d != Some(rec.digest)).then(|| rel.clone())
                })
                .collect();
            if !bad.is_empty() {
                self.mark_corrupt(&m.key, &format!("damaged files: {}", bad.join(", ")))?;
                report.corrupt_entries.push(CorruptEntry {
                    key: m.key.to_hex(),
                    pipeline: m.pipeline.clone(),
                    stage: m.stage.clone(),
                    files: bad,
                });
            }
        }
        Ok(report)
    }

    /// Removes entries, objects and memo entries that `policy` does not keep, corrupt entries,
    /// and staging folders of dead runs. Call with the run lock held.
    ///
    /// # Errors
    /// The first file that cannot be removed.
    pub fn gc(&self, policy: &GcPolicy) -> Result<GcReport, CacheError> {
        let mut report = GcReport::default();
        let entries = self.entries();
        let mut by_stage: BTreeMap<(&str, &str), Vec<&Manifest>> = BTreeMap::new();
        for m in &entries {
            by_stage.entry((&m.pipeline, &m.stage)).or_default().push(m);
        }
        let mut kept: HashSet<StageKey> = HashSet::new();
        for list in by_stage.values_mut() {
            list.sort_by_key(|m| std::cmp::Reverse(m.started_at));
            for (i, m) in list.iter().enumerate() {
                if i < policy.keep_last || policy.keep_keys.contains(&m.key) {
                    kept.insert(m.key);
                }
            }
        }
        let mut live_objects: HashSet<ContentDigest> = policy.keep_objects.clone();
        let mut live_memos: HashSet<String> = HashSet::new();
        for m in &entries {
            if kept.contains(&m.key) {
                live_objects.extend(m.files.values().map(|f| f.digest));
                live_memos.extend(m.memos.iter().cloned());
            } else {
                fsutil::remove_path(&self.entry_dir(&m.key))?;
                report.entries_removed += 1;
            }
        }
        report.entries_kept = kept.len();
        let corrupt = self.root().join("corrupt");
        if let Ok(rd) = std::fs::read_dir(&corrupt) {
            for e in rd.flatten() {
                report.bytes_freed += fsutil::tree_size(&e.path());
                fsutil::remove_path(&e.path())?;
                report.entries_removed += 1;
            }
        }
        for (digest, path) in self.objects() {
            if !live_objects.contains(&digest) {
                report.bytes_freed += std::fs::metadata(&path).map_or(0, |m| m.len());
                fsutil::remove_path(&path)?;
                report.objects_removed += 1;
            }
        }
        let memo = self.root().join("memo");
        for e in walkdir::WalkDir::new(&memo)
            .min_depth(3)
            .max_depth(3)
            .into_iter()
            .filter_map(Result::ok)
        {
            let rel = e.path().strip_prefix(&memo).unwrap_or(e.path());
            let mut parts = rel.iter().map(|s| s.to_string_lossy().into_owned());
            let (Some(ns), _, Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if !live_memos.contains(&format!("{ns}/{key}")) {
                report.bytes_freed += fsutil::tree_size(e.path());
                fsutil::remove_path(e.path())?;
                report.memos_removed += 1;
            }
        }
        self.clean_tmp()?;
        Ok(report)
    }

    /// Sizes by (pipeline, stage, version); `referenced` tells which keys lock files use.
    #[must_use]
    pub fn du(&self, referenced: &HashSet<StageKey>) -> DuReport {
        let mut rows: BTreeMap<(String, String, u32), (DuRow, HashSet<ContentDigest>)> =
            BTreeMap::new();
        for m in self.entries() {
            let (row, seen) = rows
                .entry((m.pipeline.clone(), m.stage.clone(), m.version))
                .or_insert_with(|| {
                    (
                        DuRow {
                            pipeline: m.pipeline.clone(),
                            stage: m.stage.clone(),
                            kind: m.kind.clone(),
                            version: m.version,
                            entries: 0,
                            bytes: 0,
                            referenced: 0,
                        },
                        HashSet::new(),
                    )
                });
            row.entries += 1;
            row.referenced += usize::from(referenced.contains(&m.key));
            for f in m.files.values() {
                if seen.insert(f.digest) {
                    row.bytes += f.size;
                }
            }
        }
        let mut rows: Vec<DuRow> = rows.into_values().map(|(r, _)| r).collect();
        rows.sort_by(|a, b| {
            b.bytes.cmp(&a.bytes).then_with(|| {
                (&a.pipeline, &a.stage, a.version).cmp(&(&b.pipeline, &b.stage, b.version))
            })
        });
        let size = |d: &str| fsutil::tree_size(&self.root().join(d));
        DuReport {
            rows,
            objects_bytes: size("objects"),
            memo_bytes: size("memo"),
            scratch_bytes: size("scratch"),
            corrupt_bytes: size("corrupt"),
        }
    }
}

/// Lock files under `root` (skipping version control, caches, build outputs and the cache).
#[must_use]
pub fn find_lock_files(root: &Path, cache: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_dir()
                && (matches!(
                    name.as_ref(),
                    ".git" | "target" | ".deps" | "node_modules" | "outputs"
                ) || e.path() == cache))
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "lock"))
        .map(walkdir::DirEntry::into_path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::stat::NoProgress;
    use super::super::store::ManifestDraft;
    use super::*;

    fn commit(cache: &Cache, stage: &str, key: &[u8], started_at: u64, body: &str) -> Manifest {
        let s = cache.staging("t").unwrap();
        std::fs::write(s.out.join("f"), body).unwrap();
        let draft = ManifestDraft {
            key: StageKey::of_bytes(key),
            pipeline: "p".into(),
            stage: stage.into(),
            kind: "command".into(),
            version: 1,
            components: serde_json::json!({}),
            started_at,
            seconds: 0.0,
            items_processed: 0,
            items_reused: 0,
            memos: vec![],
            log: None,
        };
        cache.commit(s, draft, false).unwrap()
    }

    #[test]
    fn gc_keeps_referenced_and_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let old = commit(&cache, "a", b"1", 1, "one");
        let mid = commit(&cache, "a", b"2", 2, "two");
        let new = commit(&cache, "a", b"3", 3, "three");
        let policy = GcPolicy {
            keep_keys: [old.key].into(),
            keep_objects: HashSet::new(),
            keep_last: 1,
        };
        let r = cache.gc(&policy).unwrap();
        assert_eq!(
            (r.entries_kept, r.entries_removed, r.objects_removed),
            (2, 1, 1)
        );
        assert!(cache.entry(&old.key).unwrap().is_some());
        assert!(cache.entry(&new.key).unwrap().is_some());
        assert!(cache.entry(&mid.key).unwrap().is_none());
        assert!(!cache.object_path(&mid.files["f"].digest).exists());
        let du = cache.du(&[old.key].into());
        assert_eq!(du.rows.len(), 1);
        assert_eq!(
            (du.rows[0].entries, du.rows[0].referenced, du.rows[0].bytes),
            (2, 1, 8)
        );
    }

    #[test]
    fn verify_finds_damaged_entries_and_moves_them_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let good = commit(&cache, "a", b"1", 1, "good");
        let bad = commit(&cache, "b", b"2", 1, "bad");
        let obj = cache.object_path(&bad.files["f"].digest);
        std::fs::remove_file(&obj).unwrap();
        std::fs::write(cache.entry_dir(&bad.key).join("out/f"), "tampered").unwrap();
        let r = cache.verify(&NoProgress).unwrap();
        assert_eq!(r.corrupt_entries.len(), 1, "{r:?}");
        assert_eq!(r.corrupt_entries[0].stage, "b");
        assert!(cache.entry(&bad.key).unwrap().is_none());
        assert!(cache.entry(&good.key).unwrap().is_some());
        assert!(
            cache
                .verify(&NoProgress)
                .unwrap()
                .corrupt_entries
                .is_empty()
        );
    }
}
