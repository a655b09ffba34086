//! The persistent stat cache: `(device, inode, size, mtime_ns, ctime_ns) → blake3`, so an
//! unchanged file is never read twice. Loaded once per process, saved atomically only when it
//! changed. Files and folders are hashed in parallel (rayon) with a progress callback whose total
//! is known before hashing starts. The last listing of every folder hashed in this process is
//! kept, so a stage can use the listing its key was computed from instead of walking again.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use globset::GlobSet;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::digest::{ContentDigest, Digest, hash_file};
use super::tree::{Collected, TreeFile, TreeListing, TreeProblem, TreeProblemKind, collect};
use super::{CacheError, fsutil};

const FORMAT: u32 = 1;
/// A file whose mtime or ctime is this close to the moment it was hashed may still be changing
/// within the file system's timestamp granularity: its digest is used but not remembered.
const RACY_MARGIN_NS: i64 = 50_000_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Rec {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    digest: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct StatFile {
    format: u32,
    records: Vec<(u64, u64, Rec)>,
}

/// What `stat` says about one file.
#[derive(Debug, Clone)]
pub struct FileStat {
    /// The file.
    pub path: PathBuf,
    /// Device id.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl FileStat {
    /// Stats `path` (following symlinks).
    ///
    /// # Errors
    /// The I/O error, with the path.
    pub fn of(path: &Path) -> Result<Self, CacheError> {
        let m = std::fs::metadata(path).map_err(|source| CacheError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_meta(path.to_path_buf(), &m))
    }

    pub(super) fn from_meta(path: PathBuf, m: &std::fs::Metadata) -> Self {
        FileStat {
            path,
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// Which folder walk a remembered listing came from: the folder and the include globs (by the
/// identity of their `Arc`, which the memo keeps alive so the address cannot be reused).
type TreeId = (PathBuf, usize);

/// A remembered listing with the globs it was filtered by.
type TreeMemo = HashMap<TreeId, (Option<Arc<GlobSet>>, Arc<TreeListing>)>;

/// The persistent stat cache (`cache/state/stat-cache.bin`).
#[derive(Debug)]
pub struct StatCache {
    file: Option<PathBuf>,
    map: RwLock<HashMap<(u64, u64), Rec>>,
    dirty: AtomicBool,
    trees: Mutex<TreeMemo>,
}

fn tree_id(spec: &TreeSpec) -> TreeId {
    (
        spec.path.clone(),
        spec.include.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize),
    )
}

/// A folder's content: relative path (`/`-separated) → file digest.
pub type Listing = BTreeMap<String, ContentDigest>;

/// Digest of a folder listing (the bytes stored as its object).
#[must_use]
pub fn listing_bytes(listing: &Listing) -> Vec<u8> {
    serde_json::to_vec(listing).unwrap_or_default()
}

/// Whether a path was a file or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeKind {
    /// A single file.
    File,
    /// A folder (digest of its listing).
    Dir,
}

/// What to hash: a file or folder, optionally filtered by globs (relative to it). Two specs name
/// the same walk when their paths are equal and their `include` is the same `Arc` (or both
/// `None`): see [`StatCache::tree_listing`].
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Absolute path.
    pub path: PathBuf,
    /// Only files whose relative path matches (folders only); `None` = all.
    pub include: Option<Arc<GlobSet>>,
}

/// Content digest of a file or folder.
#[derive(Debug, Clone)]
pub struct TreeDigest {
    /// File, or folder.
    pub kind: TreeKind,
    /// File digest, or digest of the folder's listing bytes.
    pub digest: ContentDigest,
    /// Number of files.
    pub files: u64,
    /// Total bytes.
    pub bytes: u64,
    /// The folder listing (folders only).
    pub listing: Option<Arc<Listing>>,
    /// The walk behind it: sizes, left-out files, problems (folders only).
    pub tree: Option<Arc<TreeListing>>,
}

/// Progress of one hashing pass.
pub trait HashProgress: Sync {
    /// Files that must be read (not found in the stat cache), before reading starts.
    fn start(&self, to_hash: u64);
    /// `n` more files read.
    fn advance(&self, n: u64);
}

/// Ignores progress.
pub struct NoProgress;
impl HashProgress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl StatCache {
    /// Loads `state_dir/stat-cache.bin` (an unreadable or older file counts as empty).
    #[must_use]
    pub fn open(state_dir: &Path) -> Self {
        let file = state_dir.join("stat-cache.bin");
        let map = std::fs::read(&file)
            .ok()
            .and_then(|bytes| postcard::from_bytes::<StatFile>(&bytes).ok())
            .filter(|f| f.format == FORMAT)
            .map(|f| f.records.into_iter().map(|(d, i, r)| ((d, i), r)).collect())
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            map: RwLock::new(map),
            dirty: AtomicBool::new(false),
            trees: Mutex::new(HashMap::new()),
        }
    }

    /// A cache that is never saved.
    #[must_use]
    pub fn in_memory() -> Self {
        StatCache {
            file: None,
            map: RwLock::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            trees: Mutex::new(HashMap::new()),
        }
    }

    /// Number of remembered files.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache back (atomically) if it changed. Returns whether it wrote.
    ///
    /// # Errors
    /// The I/O error writing the file.
    pub fn save(&self) -> Result<bool, CacheError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let records: Vec<(u64, u64, Rec)> = {
            let map = self.map.read().map_err(|_| poisoned(file))?;
            let mut r: Vec<_> = map.iter().map(|(&(d, i), &rec)| (d, i, rec)).collect();
            r.sort_unstable_by_key(|&(d, i, _)| (d, i));
            r
        };
        let bytes = postcard::to_stdvec(&StatFile {
            format: FORMAT,
            records,
        })
        .map_err(|e| CacheError::Format {
            path: file.clone(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(file, &bytes)?;
        Ok(true)
    }

    /// Digests of `files` (same order): remembered ones from the cache, the others read in
    /// parallel. `progress.start` gets the number of files to read before any is read.
    ///
    /// # Errors
    /// The first file that cannot be read.
    pub fn hash_files(
        &self,
        files: &[FileStat],
        progress: &dyn HashProgress,
    ) -> Result<Vec<ContentDigest>, CacheError> {
        let refs: Vec<&FileStat> = files.iter().collect();
        self.hash_each(&refs, progress)?
            .into_iter()
            .zip(files)
            .map(|(d, f)| {
                d.map_err(|source| CacheError::Read {
                    path: f.path.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Digests of `files` (same order), each with its own read error.
    fn hash_each(
        &self,
        files: &[&FileStat],
        progress: &dyn HashProgress,
    ) -> Result<Vec<std::io::Result<ContentDigest>>, CacheError> {
        let mut out: Vec<Option<std::io::Result<ContentDigest>>> = {
            let map = self
                .map
                .read()
                .map_err(|_| poisoned(Path::new("stat cache")))?;
            let map = &*map;
            files
                .par_iter()
                .map(|s| {
                    let r = map.get(&(s.dev, s.ino))?;
                    (r.size == s.size && r.mtime_ns == s.mtime_ns && r.ctime_ns == s.ctime_ns)
                        .then(|| Ok(Digest::from_hash(blake3::Hash::from_bytes(r.digest))))
                })
                .collect()
        };
        let misses: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_none())
            .map(|(i, _)| i)
            .collect();
        progress.start(misses.len() as u64);
        if misses.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        let started = now_ns();
        let done = AtomicU64::new(0);
        let hashed: Vec<(usize, std::io::Result<ContentDigest>)> = misses
            .par_iter()
            .map(|&i| {
                let f = files[i];
                let d = hash_file(&f.path, f.size);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(256) {
                    progress.advance(256);
                }
                (i, d)
            })
            .collect();
        progress.advance(done.load(Ordering::Relaxed) % 256);
        let mut map = self
            .map
            .write()
            .map_err(|_| poisoned(Path::new("stat cache")))?;
        for (i, d) in hashed {
            let f = files[i];
            if let Ok(d) = &d
                && f.mtime_ns.max(f.ctime_ns) < started - RACY_MARGIN_NS
            {
                map.insert(
                    (f.dev, f.ino),
                    Rec {
                        size: f.size,
                        mtime_ns: f.mtime_ns,
                        ctime_ns: f.ctime_ns,
                        digest: *d.as_bytes(),
                    },
                );
                self.dirty.store(true, Ordering::Release);
            }
            out[i] = Some(d);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Digests of several files and folders in one parallel pass (`None` for a missing path).
    /// Inside a folder, symlinked folders are followed; symlink loops, dangling links,
    /// unreadable folders and files that cannot be read are left out of the listing and reported
    /// in [`TreeDigest::tree`], never fatal. Every folder's listing is remembered for
    /// [`StatCache::tree_listing`].
    ///
    /// # Errors
    /// A path that exists but cannot be stat-ed, a folder whose own entries cannot be read, or a
    /// file (given directly, not inside a folder) that cannot be read.
    pub fn digest_trees(
        &self,
        specs: &[TreeSpec],
        progress: &dyn HashProgress,
    ) -> Result<Vec<Option<TreeDigest>>, CacheError> {
        let collected: Vec<Option<Collected>> =
            specs.iter().map(collect).collect::<Result<_, _>>()?;
        let all: Vec<&FileStat> = collected
            .iter()
            .flatten()
            .flat_map(|c| c.files.iter().map(|(_, s)| s))
            .collect();
        let digests = self.hash_each(&all, progress)?;
        let mut it = digests.into_iter();
        let mut out = Vec::with_capacity(specs.len());
        for (spec, c) in specs.iter().zip(collected) {
            let Some(c) = c else {
                out.push(None);
                continue;
            };
            let n = c.files.len();
            let hashed: Vec<(String, FileStat, std::io::Result<ContentDigest>)> = c
                .files
                .into_iter()
                .zip(it.by_ref().take(n))
                .map(|((rel, st), d)| (rel, st, d))
                .collect();
            if c.kind == TreeKind::File {
                let Some((_, st, d)) = hashed.into_iter().next() else {
                    out.push(None);
                    continue;
                };
                let digest = d.map_err(|source| CacheError::Read {
                    path: st.path.clone(),
                    source,
                })?;
                out.push(Some(TreeDigest {
                    kind: TreeKind::File,
                    digest,
                    files: 1,
                    bytes: st.size,
                    listing: None,
                    tree: None,
                }));
                continue;
            }
            let mut problems = c.problems;
            let mut files = Vec::with_capacity(hashed.len());
            for (rel, st, d) in hashed {
                match d {
                    Ok(digest) => files.push(TreeFile {
                        rel,
                        size: st.size,
                        digest,
                    }),
                    Err(e) => problems.push(TreeProblem {
                        path: st.path,
                        kind: TreeProblemKind::Unreadable {
                            message: e.to_string(),
                        },
                    }),
                }
            }
            problems.sort();
            let listing: Listing = files.iter().map(|f| (f.rel.clone(), f.digest)).collect();
            let tree = Arc::new(TreeListing {
                root: spec.path.clone(),
                files,
                others: c.others,
                problems,
            });
            self.remember(spec, &tree);
            out.push(Some(TreeDigest {
                kind: TreeKind::Dir,
                digest: ContentDigest::of_bytes(&listing_bytes(&listing)),
                files: tree.files.len() as u64,
                bytes: tree.files.iter().map(|f| f.size).sum(),
                listing: Some(Arc::new(listing)),
                tree: Some(tree),
            }));
        }
        Ok(out)
    }

    fn remember(&self, spec: &TreeSpec, tree: &Arc<TreeListing>) {
        if let Ok(mut m) = self.trees.lock() {
            m.insert(tree_id(spec), (spec.include.clone(), Arc::clone(tree)));
        }
    }

    /// The listing of the last walk of `spec` in this process (same path, same `include` `Arc`),
    /// if any: what a stage key computed moments earlier was built from.
    #[must_use]
    pub fn remembered_listing(&self, spec: &TreeSpec) -> Option<Arc<TreeListing>> {
        let m = self.trees.lock().ok()?;
        m.get(&tree_id(spec)).map(|(_, t)| Arc::clone(t))
    }

    /// The listing of folder `spec`: the remembered one (see
    /// [`StatCache::remembered_listing`]), else a new walk (remembered in turn). `None` when
    /// the path does not exist or is not a folder.
    ///
    /// # Errors
    /// As [`StatCache::digest_trees`].
    pub fn tree_listing(
        &self,
        spec: &TreeSpec,
        progress: &dyn HashProgress,
    ) -> Result<Option<Arc<TreeListing>>, CacheError> {
        if let Some(t) = self.remembered_listing(spec) {
            return Ok(Some(t));
        }
        let got = self.digest_trees(std::slice::from_ref(spec), progress)?;
        Ok(got.into_iter().next().flatten().and_then(|t| t.tree))
    }
}

fn poisoned(path: &Path) -> CacheError {
    CacheError::Format {
        path: path.to_path_buf(),
        message: "stat cache lock poisoned".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Count(AtomicU64, AtomicU64);
    impl HashProgress for Count {
        fn start(&self, n: u64) {
            self.0.store(n, Ordering::SeqCst);
        }
        fn advance(&self, n: u64) {
            self.1.fetch_add(n, Ordering::SeqCst);
        }
    }

    fn age(path: &Path) {
        let old = SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn unchanged_files_are_not_read_again_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        for (name, body) in [("a", "1"), ("sub/b", "2")] {
            std::fs::write(data.join(name), body).unwrap();
        }
        // Files written just now are "racy": hashed every time until they age.
        let spec = [TreeSpec {
            path: data.clone(),
            include: None,
        }];
        let c = Count(AtomicU64::new(0), AtomicU64::new(0));
        let sc = StatCache::open(&state);
        sc.digest_trees(&spec, &c).unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 2);
        assert!(!sc.save().unwrap(), "racy files are not remembered");
        // ctime cannot be set back: wait out the margin instead.
        std::thread::sleep(std::time::Duration::from_millis(60));
        age(&data.join("a"));
        age(&data.join("sub/b"));
        std::thread::sleep(std::time::Duration::from_millis(60));
        let first = sc.digest_trees(&spec, &c).unwrap();
        assert!(sc.save().unwrap());

        let sc = StatCache::open(&state);
        assert_eq!(sc.len(), 2);
        let again = sc.digest_trees(&spec, &c).unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 0, "warm pass reads nothing");
        let (a, b) = (first[0].as_ref().unwrap(), again[0].as_ref().unwrap());
        assert_eq!(a.digest, b.digest);
        let listing = b.listing.as_ref().unwrap();
        assert_eq!(listing.keys().collect::<Vec<_>>(), ["a", "sub/b"]);
        assert_eq!(listing["a"], ContentDigest::of_bytes(b"1"));

        std::fs::write(data.join("a"), "changed").unwrap();
        let changed = sc.digest_trees(&spec, &c).unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_ne!(changed[0].as_ref().unwrap().digest, a.digest);
    }

    #[test]
    fn missing_paths_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.flac"), "f").unwrap();
        std::fs::write(dir.path().join("x.txt"), "t").unwrap();
        let mut b = globset::GlobSetBuilder::new();
        b.add(globset::Glob::new("*.flac").unwrap());
        let specs = [
            TreeSpec {
                path: dir.path().join("nope"),
                include: None,
            },
            TreeSpec {
                path: dir.path().to_path_buf(),
                include: Some(Arc::new(b.build().unwrap())),
            },
        ];
        let got = StatCache::in_memory()
            .digest_trees(&specs, &NoProgress)
            .unwrap();
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().unwrap().listing.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn the_last_listing_of_a_walk_is_remembered_by_path_and_glob_identity() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.flac", "b.flac", "c.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let globs = || {
            let mut b = globset::GlobSetBuilder::new();
            b.add(globset::Glob::new("*.flac").unwrap());
            Some(Arc::new(b.build().unwrap()))
        };
        let spec = TreeSpec {
            path: dir.path().to_path_buf(),
            include: globs(),
        };
        let sc = StatCache::in_memory();
        assert!(sc.remembered_listing(&spec).is_none());
        let key_walk = sc
            .digest_trees(std::slice::from_ref(&spec), &NoProgress)
            .unwrap();
        let first = key_walk[0].as_ref().unwrap().tree.clone().unwrap();
        assert_eq!(first.files.len(), 2);
        assert_eq!(first.others, ["c.txt"]);

        // The same spec gets the listing the key was computed from, without walking again
        // (a file removed since is still listed: it is what the key saw).
        std::fs::remove_file(dir.path().join("b.flac")).unwrap();
        let handed = sc.tree_listing(&spec, &NoProgress).unwrap().unwrap();
        assert!(Arc::ptr_eq(&handed, &first));

        // Equal globs in another `Arc` are another walk: the folder as it is now.
        let other = TreeSpec {
            path: dir.path().to_path_buf(),
            include: globs(),
        };
        let fresh = sc.tree_listing(&other, &NoProgress).unwrap().unwrap();
        assert_eq!(fresh.files.len(), 1);
        assert!(Arc::ptr_eq(&sc.remembered_listing(&other).unwrap(), &fresh));
        assert!(Arc::ptr_eq(&sc.remembered_listing(&spec).unwrap(), &first));

        // A walk of the same spec replaces what was remembered.
        sc.digest_trees(std::slice::from_ref(&spec), &NoProgress)
            .unwrap();
        assert_eq!(sc.remembered_listing(&spec).unwrap().files.len(), 1);

        // Files and missing paths have no listing.
        let file = TreeSpec {
            path: dir.path().join("a.flac"),
            include: None,
        };
        assert!(sc.tree_listing(&file, &NoProgress).unwrap().is_none());
        let missing = TreeSpec {
            path: dir.path().join("nope"),
            include: None,
        };
        assert!(sc.tree_listing(&missing, &NoProgress).unwrap().is_none());
    }
}
