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
use super::tree::{Collected, Stat, TreeListing, TreeProblem, TreeProblemKind, Walked, collect};
use super::{CacheError, fsutil};

/// `stat-cache.bin`: this magic, the format, the record count, then fixed-size records (so
/// loading 450,000 of them is a copy, not a parse).
const MAGIC: &[u8; 8] = b"brstat\0\0";
const FORMAT: u32 = 2;
const HEADER: usize = 8 + 4 + 4 + 8;
/// dev, ino, size, mtime_ns, ctime_ns (little-endian 8 bytes each), blake3 (32 bytes).
const RECORD: usize = 5 * 8 + 32;
/// A file whose mtime or ctime is this close to the moment it was hashed may still be changing
/// within the file system's timestamp granularity: its digest is used but not remembered.
const RACY_MARGIN_NS: i64 = 50_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    digest: [u8; 32],
}

type StatMap = HashMap<(u64, u64), Rec>;

/// The records of a `stat-cache.bin`, or `None` when it is not one of this format.
fn decode(bytes: &[u8]) -> Option<StatMap> {
    let (head, body) = bytes.split_at_checked(HEADER)?;
    let word = |at: usize| -> Option<[u8; 8]> { head.get(at..at + 8)?.try_into().ok() };
    let format = u32::from_le_bytes(head.get(8..12)?.try_into().ok()?);
    let count = usize::try_from(u64::from_le_bytes(word(16)?)).ok()?;
    if &head[..8] != MAGIC || format != FORMAT || body.len() != count.checked_mul(RECORD)? {
        return None;
    }
    let mut map = HashMap::with_capacity(count);
    for r in body.chunks_exact(RECORD) {
        let n = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[i * 8..i * 8 + 8]);
            b
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&r[40..]);
        map.insert(
            (u64::from_le_bytes(n(0)), u64::from_le_bytes(n(1))),
            Rec {
                size: u64::from_le_bytes(n(2)),
                mtime_ns: i64::from_le_bytes(n(3)),
                ctime_ns: i64::from_le_bytes(n(4)),
                digest,
            },
        );
    }
    Some(map)
}

/// The bytes of a `stat-cache.bin` holding `map`, records sorted by (device, inode).
fn encode(map: &StatMap) -> Vec<u8> {
    let mut keys: Vec<&(u64, u64)> = map.keys().collect();
    keys.sort_unstable();
    let mut out = Vec::with_capacity(HEADER + keys.len() * RECORD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        let r = &map[k];
        out.extend_from_slice(&k.0.to_le_bytes());
        out.extend_from_slice(&k.1.to_le_bytes());
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.mtime_ns.to_le_bytes());
        out.extend_from_slice(&r.ctime_ns.to_le_bytes());
        out.extend_from_slice(&r.digest);
    }
    out
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

    fn stat(&self) -> Stat {
        Stat {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
        }
    }
}

/// A file to hash: given directly, or found by a folder walk (whose folders give its path).
#[derive(Clone, Copy)]
enum HashItem<'a> {
    File(&'a FileStat),
    InTree(&'a Walked, &'a [PathBuf]),
}

impl HashItem<'_> {
    fn stat(&self) -> Stat {
        match self {
            HashItem::File(f) => f.stat(),
            HashItem::InTree(w, _) => w.stat,
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            HashItem::File(f) => f.path.clone(),
            HashItem::InTree(w, dirs) => w.path(dirs),
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
    map: RwLock<StatMap>,
    dirty: AtomicBool,
    trees: Mutex<TreeMemo>,
}

fn tree_id(spec: &TreeSpec) -> TreeId {
    (
        spec.path.clone(),
        spec.include.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize),
    )
}

/// A folder's content: relative path (`/`-separated) → file digest, sorted; serialised as a
/// JSON map (its bytes are the folder's digest). Read back by collecting the entries, which
/// are stored sorted, and building the map in one pass instead of inserting them one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Listing(BTreeMap<String, ContentDigest>);

impl Listing {
    /// An empty listing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::ops::Deref for Listing {
    type Target = BTreeMap<String, ContentDigest>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Listing {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, ContentDigest)> for Listing {
    fn from_iter<I: IntoIterator<Item = (String, ContentDigest)>>(iter: I) -> Self {
        Listing(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Listing {
    type Item = (&'a String, &'a ContentDigest);
    type IntoIter = std::collections::btree_map::Iter<'a, String, ContentDigest>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Listing;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of relative paths to digests")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Listing, A::Error> {
                let mut entries: Vec<(String, ContentDigest)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                // Sorted input (as written) makes this a check and a bulk build; a repeated
                // key keeps its last value, as inserting would.
                Ok(entries.into_iter().collect())
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A folder listing's JSON (`{"path":"digest",...}`, what `serde_json` writes for the map), in
/// consecutive pieces serialised in parallel.
fn listing_parts(listing: &Listing) -> Vec<Vec<u8>> {
    const CHUNK: usize = 8192;
    let entries: Vec<(&String, &ContentDigest)> = listing.iter().collect();
    let mut parts: Vec<Vec<u8>> = entries
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.len() * 96);
            for (k, v) in chunk {
                buf.push(b',');
                // Writing into a `Vec` cannot fail, nor can serialising strings.
                let _ = serde_json::to_writer(&mut buf, k);
                buf.push(b':');
                let _ = serde_json::to_writer(&mut buf, v);
            }
            buf
        })
        .collect();
    if let Some(first) = parts.first_mut() {
        first[0] = b'{';
    } else {
        parts.push(b"{".to_vec());
    }
    parts.push(b"}".to_vec());
    parts
}

/// The bytes of a folder listing (stored as its object; its digest is the dep's digest).
#[must_use]
pub fn listing_bytes(listing: &Listing) -> Vec<u8> {
    listing_parts(listing).concat()
}

/// The digest of [`listing_bytes`], without joining the pieces.
fn listing_digest(listing: &Listing) -> ContentDigest {
    let mut h = blake3::Hasher::new();
    for part in listing_parts(listing) {
        h.update(&part);
    }
    Digest::from_hash(h.finalize())
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
            .and_then(|bytes| decode(&bytes))
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
        let bytes = encode(&*self.map.read().map_err(|_| poisoned(file))?);
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
        let items: Vec<HashItem<'_>> = files.iter().map(HashItem::File).collect();
        self.hash_each(&items, progress)?
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
        files: &[HashItem<'_>],
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
                .map(|f| {
                    let s = f.stat();
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
                let d = hash_file(&f.path(), f.stat().size);
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
            let s = files[i].stat();
            if let Ok(d) = &d
                && s.mtime_ns.max(s.ctime_ns) < started - RACY_MARGIN_NS
            {
                map.insert(
                    (s.dev, s.ino),
                    Rec {
                        size: s.size,
                        mtime_ns: s.mtime_ns,
                        ctime_ns: s.ctime_ns,
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
        let mut items: Vec<HashItem<'_>> = Vec::new();
        for c in collected.iter().flatten() {
            match c {
                Collected::File(f) => items.push(HashItem::File(f)),
                Collected::Dir(d) => {
                    items.extend(d.files.iter().map(|w| HashItem::InTree(w, &d.dirs)))
                }
            }
        }
        let digests = self.hash_each(&items, progress)?;
        drop(items);
        let mut digests = digests.into_iter();
        let mut out = Vec::with_capacity(specs.len());
        for (spec, c) in specs.iter().zip(collected) {
            match c {
                None => out.push(None),
                Some(Collected::File(f)) => {
                    let d = digests
                        .next()
                        .unwrap_or_else(|| Ok(ContentDigest::of_bytes(b"")));
                    let digest = d.map_err(|source| CacheError::Read {
                        path: f.path.clone(),
                        source,
                    })?;
                    out.push(Some(TreeDigest {
                        kind: TreeKind::File,
                        digest,
                        files: 1,
                        bytes: f.size,
                        listing: None,
                        tree: None,
                    }));
                }
                Some(Collected::Dir(walk)) => {
                    let mut problems = walk.problems;
                    let mut entries = Vec::with_capacity(walk.files.len());
                    let mut sizes = Vec::with_capacity(walk.files.len());
                    for (w, d) in walk.files.into_iter().zip(digests.by_ref()) {
                        match d {
                            Ok(d) => {
                                sizes.push(w.stat.size);
                                entries.push((w.rel, d));
                            }
                            Err(e) => problems.push(TreeProblem {
                                path: w.path(&walk.dirs),
                                kind: TreeProblemKind::Unreadable {
                                    message: e.to_string(),
                                },
                            }),
                        }
                    }
                    problems.sort();
                    // Sorted and unique already: the map is built in one pass.
                    let listing: Arc<Listing> = Arc::new(entries.into_iter().collect());
                    let tree = Arc::new(TreeListing {
                        root: spec.path.clone(),
                        listing: Arc::clone(&listing),
                        sizes,
                        others: walk.others,
                        problems,
                    });
                    self.remember(spec, &tree);
                    out.push(Some(TreeDigest {
                        kind: TreeKind::Dir,
                        digest: listing_digest(&listing),
                        files: tree.len() as u64,
                        bytes: tree.sizes.iter().sum(),
                        listing: Some(listing),
                        tree: Some(tree),
                    }));
                }
            }
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
        assert_eq!(first.len(), 2);
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
        assert_eq!(fresh.len(), 1);
        assert!(Arc::ptr_eq(&sc.remembered_listing(&other).unwrap(), &fresh));
        assert!(Arc::ptr_eq(&sc.remembered_listing(&spec).unwrap(), &first));

        // A walk of the same spec replaces what was remembered.
        sc.digest_trees(std::slice::from_ref(&spec), &NoProgress)
            .unwrap();
        assert_eq!(sc.remembered_listing(&spec).unwrap().len(), 1);

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

    #[test]
    fn listing_bytes_are_the_json_of_the_map() {
        let mut listing = Listing::new();
        assert_eq!(
            listing_bytes(&listing),
            serde_json::to_vec(&listing).unwrap()
        );
        assert_eq!(listing_digest(&listing), ContentDigest::of_bytes(b"{}"));
        for i in 0..9_000u32 {
            let name = match i % 4 {
                0 => format!("spk{i}/a \"quoted\" \\ {i}.flac"),
                1 => format!("ção/é{i}\u{1}.wav"),
                2 => format!("tab\there/{i}"),
                _ => format!("plain/{i:06}.flac"),
            };
            listing.insert(name, ContentDigest::of_bytes(&i.to_le_bytes()));
        }
        let expected = serde_json::to_vec(&listing).unwrap();
        assert_eq!(listing_bytes(&listing), expected);
        assert_eq!(listing_digest(&listing), ContentDigest::of_bytes(&expected));
        let back: Listing = serde_json::from_slice(&expected).unwrap();
        assert_eq!(back, listing);
        let unsorted: Listing = serde_json::from_str(r#"{"b":"HEX","a":"HEX","b":"HEX2"}"#
            .replace("HEX2", &ContentDigest::of_bytes(b"2").to_hex())
            .replace("HEX", &ContentDigest::of_bytes(b"1").to_hex())
            .as_str())
        .unwrap();
        assert_eq!(unsorted.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(unsorted["b"], ContentDigest::of_bytes(b"2"));
    }

    #[test]
    fn the_stat_file_round_trips_and_other_bytes_count_as_empty() {
        let mut map = StatMap::new();
        for i in 0..1000u64 {
            map.insert(
                (i % 3, i * 7),
                Rec {
                    size: i,
                    mtime_ns: -(i as i64),
                    ctime_ns: i as i64 * 11,
                    digest: [u8::try_from(i % 256).unwrap(); 32],
                },
            );
        }
        let bytes = encode(&map);
        assert_eq!(bytes.len(), HEADER + 1000 * RECORD);
        assert_eq!(decode(&bytes), Some(map.clone()));
        assert_eq!(encode(&decode(&bytes).unwrap()), bytes, "deterministic");
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(b"short"), None);
        let mut other = bytes.clone();
        other[8] = 1;
        assert_eq!(decode(&other), None, "another format");
    }
}
