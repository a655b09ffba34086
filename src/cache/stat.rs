//! The persistent stat cache: `(device, inode, size, mtime_ns, ctime_ns) → blake3`, so an
//! unchanged file is never read twice. Loaded once per process, saved atomically only when it
//! changed. Files and folders are hashed in parallel (rayon) with a progress callback whose total
//! is known before hashing starts.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use globset::GlobSet;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::digest::{ContentDigest, Digest, hash_file};
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

    fn from_meta(path: PathBuf, m: &std::fs::Metadata) -> Self {
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

/// The persistent stat cache (`cache/state/stat-cache.bin`).
#[derive(Debug)]
pub struct StatCache {
    file: Option<PathBuf>,
    map: RwLock<HashMap<(u64, u64), Rec>>,
    dirty: AtomicBool,
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

/// What to hash: a file or folder, optionally filtered by globs (relative to it).
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
        }
    }

    /// A cache that is never saved.
    #[must_use]
    pub fn in_memory() -> Self {
        StatCache {
            file: None,
            map: RwLock::new(HashMap::new()),
            dirty: AtomicBool::new(false),
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
        self.hash_refs(&refs, progress)
    }

    fn hash_refs(
        &self,
        files: &[&FileStat],
        progress: &dyn HashProgress,
    ) -> Result<Vec<ContentDigest>, CacheError> {
        let mut out: Vec<Option<ContentDigest>> = {
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
                        .then(|| Digest::from_hash(blake3::Hash::from_bytes(r.digest)))
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
        let hashed: Vec<(usize, ContentDigest)> = misses
            .par_iter()
            .map(|&i| {
                let f = files[i];
                let d = hash_file(&f.path, f.size).map_err(|source| CacheError::Read {
                    path: f.path.clone(),
                    source,
                })?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(256) {
                    progress.advance(256);
                }
                Ok((i, d))
            })
            .collect::<Result<_, CacheError>>()?;
        progress.advance(done.load(Ordering::Relaxed) % 256);
        let mut map = self
            .map
            .write()
            .map_err(|_| poisoned(Path::new("stat cache")))?;
        for (i, d) in hashed {
            let f = files[i];
            if f.mtime_ns.max(f.ctime_ns) < started - RACY_MARGIN_NS {
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
    ///
    /// # Errors
    /// A file or folder that exists but cannot be read.
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
        let digests = self.hash_refs(&all, progress)?;
        let mut it = digests.into_iter();
        Ok(collected
            .into_iter()
            .map(|c| {
                let c = c?;
                let bytes = c.files.iter().map(|(_, s)| s.size).sum();
                let n = c.files.len() as u64;
                Some(match c.kind {
                    TreeKind::File => TreeDigest {
                        kind: TreeKind::File,
                        digest: it.next().unwrap_or_else(|| ContentDigest::of_bytes(b"")),
                        files: 1,
                        bytes,
                        listing: None,
                    },
                    TreeKind::Dir => {
                        let listing: Listing = c
                            .files
                            .into_iter()
                            .map(|(rel, _)| {
                                (
                                    rel,
                                    it.next().unwrap_or_else(|| ContentDigest::of_bytes(b"")),
                                )
                            })
                            .collect();
                        let digest = ContentDigest::of_bytes(&listing_bytes(&listing));
                        TreeDigest {
                            kind: TreeKind::Dir,
                            digest,
                            files: n,
                            bytes,
                            listing: Some(Arc::new(listing)),
                        }
                    }
                })
            })
            .collect())
    }
}

fn poisoned(path: &Path) -> CacheError {
    CacheError::Format {
        path: path.to_path_buf(),
        message: "stat cache lock poisoned".into(),
    }
}

struct Collected {
    kind: TreeKind,
    files: Vec<(String, FileStat)>,
}

/// Lists a file or folder (sorted, `/`-separated relative paths). Files are stat-ed in parallel,
/// one folder at a time relative to an open descriptor of that folder (`fstatat`), so the kernel
/// resolves one path component per file instead of the whole path.
fn collect(spec: &TreeSpec) -> Result<Option<Collected>, CacheError> {
    let meta = match std::fs::metadata(&spec.path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                path: spec.path.clone(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Ok(Some(Collected {
            kind: TreeKind::File,
            files: vec![(String::new(), FileStat::from_meta(spec.path.clone(), &meta))],
        }));
    }
    // Consecutive files of one folder form a group (walkdir yields a folder's entries together,
    // interrupted only by the subfolders it descends into).
    let mut groups: Vec<(PathBuf, Vec<(String, std::ffi::OsString)>)> = Vec::new();
    let root_len = spec.path.as_os_str().len();
    // Unsorted walk: the listing is a sorted map, so the traversal order does not matter.
    for entry in walkdir::WalkDir::new(&spec.path) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(&spec.path).to_path_buf();
            CacheError::Read {
                path,
                source: e.into(),
            }
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        // Byte slicing instead of `Path` component parsing: this loop runs once per file.
        let full = entry.path().as_os_str().as_bytes();
        let rel =
            String::from_utf8_lossy(full.get(root_len + 1..).unwrap_or_default()).into_owned();
        if let Some(globs) = &spec.include
            && !globs.is_match(&rel)
        {
            continue;
        }
        let cut = full.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let parent = &full[..cut];
        let name = std::ffi::OsStr::from_bytes(&full[cut + 1..]).to_owned();
        match groups.last_mut() {
            Some((dir, files)) if dir.as_os_str().as_bytes() == parent => files.push((rel, name)),
            _ => groups.push((
                PathBuf::from(std::ffi::OsStr::from_bytes(parent)),
                vec![(rel, name)],
            )),
        }
    }
    let stats: Vec<Vec<(String, FileStat)>> = groups
        .into_par_iter()
        .map(|(dir, files)| stat_group(&dir, files))
        .collect::<Result<_, _>>()?;
    let mut files: Vec<(String, FileStat)> = stats.into_iter().flatten().collect();
    files.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(Collected {
        kind: TreeKind::Dir,
        files,
    }))
}

/// Stats the files of one folder relative to its descriptor; symlinks to folders are skipped
/// (not followed inside a dep).
fn stat_group(
    dir: &Path,
    files: Vec<(String, std::ffi::OsString)>,
) -> Result<Vec<(String, FileStat)>, CacheError> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let read_err = |path: PathBuf, e: rustix::io::Errno| CacheError::Read {
        path,
        source: e.into(),
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| read_err(dir.to_path_buf(), e))?;
    let mut out = Vec::with_capacity(files.len());
    for (rel, name) in files {
        let st = rustix::fs::statat(&fd, name.as_os_str(), AtFlags::empty())
            .map_err(|e| read_err(dir.join(&name), e))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            continue;
        }
        let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        out.push((
            rel,
            FileStat {
                path: dir.join(&name),
                dev: st.st_dev,
                ino: st.st_ino,
                size: u64::try_from(st.st_size).unwrap_or(0),
                mtime_ns: ns(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)),
                ctime_ns: ns(st.st_ctime, i64::try_from(st.st_ctime_nsec).unwrap_or(0)),
            },
        ));
    }
    Ok(out)
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
}
