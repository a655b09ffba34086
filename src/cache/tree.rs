//! Folder walks for dependency hashing: every file under a folder (symlinked folders followed,
//! with loop detection), filtered by include globs and stat-ed relative to its folder's
//! descriptor. Symlink loops, dangling links, unreadable folders or files and non-UTF-8 names
//! are reported as [`TreeProblem`]s; none of them stops the walk.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::CacheError;
use super::digest::ContentDigest;
use super::stat::{FileStat, Listing, TreeSpec};

/// What went wrong at one path of a walked folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TreeProblemKind {
    /// A symlinked folder leads back to one of its own ancestors; it is not followed again.
    Loop {
        /// The ancestor it points back to.
        ancestor: PathBuf,
    },
    /// A symlink whose target does not exist.
    Dangling,
    /// A folder or file that cannot be read (its files are left out).
    Unreadable {
        /// The error.
        message: String,
    },
    /// A name that is not UTF-8: listed under a lossy name (`�` for the bad bytes).
    NonUtf8,
}

/// One problem met while walking a folder; the walk goes on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreeProblem {
    /// The path (through the walked folder, symlinks not resolved).
    pub path: PathBuf,
    /// What is wrong.
    #[serde(flatten)]
    pub kind: TreeProblemKind,
}

impl std::fmt::Display for TreeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.kind {
            TreeProblemKind::Loop { ancestor } => write!(
                f,
                "symlink loop at `{path}` (points back to `{}`), not followed",
                ancestor.display()
            ),
            TreeProblemKind::Dangling => write!(f, "dangling symlink `{path}`"),
            TreeProblemKind::Unreadable { message } => write!(f, "cannot read `{path}`: {message}"),
            TreeProblemKind::NonUtf8 => write!(f, "`{path}` has a name that is not UTF-8"),
        }
    }
}

/// Everything one walk of a folder found: the files its include globs take (the listing a
/// stage key is computed from, with each file's size), the names of the files they leave out,
/// and the problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeListing {
    /// The folder.
    pub root: PathBuf,
    /// Files taken: relative path (`/`-separated) → content digest, sorted.
    pub listing: Arc<Listing>,
    /// The size of each file of `listing`, in its order.
    pub sizes: Vec<u64>,
    /// Relative paths of the files the include globs leave out (not stat-ed), sorted.
    pub others: Vec<String>,
    /// Problems, sorted.
    pub problems: Vec<TreeProblem>,
}

impl TreeListing {
    /// The files taken, in order: relative path, size, digest.
    pub fn files(&self) -> impl ExactSizeIterator<Item = (&str, u64, &ContentDigest)> + '_ {
        self.listing
            .iter()
            .zip(&self.sizes)
            .map(|((rel, digest), &size)| (rel.as_str(), size, digest))
    }

    /// Number of files taken.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// Whether no file was taken.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }
}

/// What the stat cache compares for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
}

/// A file found in a folder walk, stat-ed.
pub(super) struct Walked {
    /// Path relative to the walked folder (lossy for a name that is not UTF-8).
    pub(super) rel: String,
    pub(super) stat: Stat,
    /// Its folder, as an index into [`DirWalk::dirs`].
    dir: u32,
    /// The name, when it is not UTF-8 (otherwise it is the end of `rel`).
    raw_name: Option<OsString>,
}

impl Walked {
    fn name(&self) -> &OsStr {
        match &self.raw_name {
            Some(n) => n,
            None => OsStr::new(self.rel.rsplit('/').next().unwrap_or(&self.rel)),
        }
    }

    /// Where to read it.
    pub(super) fn path(&self, dirs: &[PathBuf]) -> PathBuf {
        let dir = dirs
            .get(self.dir as usize)
            .map_or(Path::new(""), PathBuf::as_path);
        dir.join(self.name())
    }
}

/// A folder walk before hashing.
pub(super) struct DirWalk {
    /// The folders files were found in (indexed by [`Walked`]).
    pub(super) dirs: Vec<PathBuf>,
    /// Files taken, sorted by relative path.
    pub(super) files: Vec<Walked>,
    pub(super) others: Vec<String>,
    pub(super) problems: Vec<TreeProblem>,
}

/// What a spec names.
pub(super) enum Collected {
    /// A single file.
    File(FileStat),
    /// A folder, walked.
    Dir(DirWalk),
}

/// Files stat-ed by one task: at most this many (a flat folder of 400,000 files is still
/// stat-ed on every thread).
const GROUP: usize = 2048;

/// The problem a walk error stands for, or `None` when it concerns the root itself (which the
/// caller treats as fatal: a dep that cannot be listed at all is not a dep).
fn problem_of(root: &Path, err: &walkdir::Error) -> Option<TreeProblem> {
    let path = err
        .path()
        .map_or_else(|| root.to_path_buf(), Path::to_path_buf);
    if let Some(ancestor) = err.loop_ancestor() {
        return Some(TreeProblem {
            path,
            kind: TreeProblemKind::Loop {
                ancestor: ancestor.to_path_buf(),
            },
        });
    }
    if err.path().is_some_and(|p| p == root) {
        return None;
    }
    let io = err.io_error();
    let dangling = io.is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    let kind = if dangling {
        TreeProblemKind::Dangling
    } else {
        TreeProblemKind::Unreadable {
            message: io.map_or_else(|| err.to_string(), ToString::to_string),
        }
    };
    Some(TreeProblem { path, kind })
}

/// Files of one folder waiting to be stat-ed: relative path and, when it is not UTF-8, the name.
type Pending = Vec<(String, Option<OsString>)>;

/// Lists a file or folder. Folders are walked following symlinks (a link back to an ancestor
/// is reported, not followed). While one thread reads the folders, the others stat their files
/// (up to [`GROUP`] files of one folder per task) relative to an open descriptor of the folder
/// (`fstatat`), so the kernel resolves one path component per file instead of the whole path.
/// `None` when the path does not exist.
///
/// # Errors
/// The path exists but cannot be stat-ed, or it is a folder that cannot be read.
pub(super) fn collect(spec: &TreeSpec) -> Result<Option<Collected>, CacheError> {
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
        return Ok(Some(Collected::File(FileStat::from_meta(
            spec.path.clone(),
            &meta,
        ))));
    }
    let stated: Mutex<Vec<(Vec<Walked>, Vec<TreeProblem>)>> = Mutex::new(Vec::new());
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut others = Vec::new();
    let mut problems = Vec::new();
    let root_len = spec.path.as_os_str().len();
    let walked = rayon::scope(|scope| -> Result<(), CacheError> {
        let stated = &stated;
        let mut pending: Pending = Vec::new();
        let flush = |dirs: &[PathBuf], pending: &mut Pending| {
            if pending.is_empty() {
                return;
            }
            let files = std::mem::take(pending);
            let index = dirs.len() - 1;
            let dir = dirs[index].clone();
            scope.spawn(move |_| {
                let got = stat_group(&dir, index, files);
                stated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(got);
            });
        };
        // Unsorted walk: the listing is sorted afterwards, so the traversal order does not
        // matter. Walkdir yields a folder's entries together, interrupted only by the
        // subfolders it descends into.
        for entry in walkdir::WalkDir::new(&spec.path).follow_links(true) {
            let entry = match entry {
                Ok(e) => e,
                Err(err) => match problem_of(&spec.path, &err) {
                    Some(p) => {
                        problems.push(p);
                        continue;
                    }
                    None => {
                        return Err(CacheError::Read {
                            path: spec.path.clone(),
                            source: err.into(),
                        });
                    }
                },
            };
            if entry.file_type().is_dir() {
                continue;
            }
            // Byte slicing instead of `Path` component parsing: this loop runs once per file.
            let full = entry.path().as_os_str().as_bytes();
            let rel_bytes = full.get(root_len + 1..).unwrap_or_default();
            let cut = full.iter().rposition(|&b| b == b'/').unwrap_or(0);
            let (rel, raw_name) = match std::str::from_utf8(rel_bytes) {
                Ok(s) => (s.to_owned(), None),
                Err(_) => {
                    problems.push(TreeProblem {
                        path: entry.path().to_path_buf(),
                        kind: TreeProblemKind::NonUtf8,
                    });
                    (
                        String::from_utf8_lossy(rel_bytes).into_owned(),
                        Some(OsStr::from_bytes(&full[cut + 1..]).to_owned()),
                    )
                }
            };
            if let Some(globs) = &spec.include
                && !globs.is_match(&rel)
            {
                others.push(rel);
                continue;
            }
            let parent = &full[..cut];
            let same_dir = dirs
                .last()
                .is_some_and(|d| d.as_os_str().as_bytes() == parent);
            if !same_dir || pending.len() >= GROUP {
                flush(&dirs, &mut pending);
                if !same_dir {
                    dirs.push(PathBuf::from(OsStr::from_bytes(parent)));
                }
            }
            pending.push((rel, raw_name));
        }
        flush(&dirs, &mut pending);
        Ok(())
    });
    walked?;
    // Each task's files are sorted; in order of their first file, the pieces are often sorted
    // already as a whole (a folder's files are contiguous in the listing), which the stable
    // sort finishes in one pass.
    let mut groups = stated.into_inner().unwrap_or_else(PoisonError::into_inner);
    groups.sort_by(|a, b| {
        let first = |g: &GroupStats| g.0.first().map(|w| w.rel.clone());
        first(a).cmp(&first(b))
    });
    let mut files = Vec::with_capacity(groups.iter().map(|g| g.0.len()).sum());
    for (f, p) in groups {
        files.extend(f);
        problems.extend(p);
    }
    files.par_sort_by(|a, b| a.rel.cmp(&b.rel));
    others.par_sort_unstable();
    problems.sort();
    Ok(Some(Collected::Dir(DirWalk {
        dirs,
        files,
        others,
        problems,
    })))
}

/// The files of one folder with their stats, and the problems met stat-ing them.
type GroupStats = (Vec<Walked>, Vec<TreeProblem>);

/// Stats files of one folder (`dirs[index]`) relative to its descriptor. A file that cannot be
/// stat-ed (it vanished, or the folder cannot be searched) is a problem, not an error.
fn stat_group(dir: &Path, index: usize, files: Pending) -> GroupStats {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let unreadable = |path: PathBuf, e: rustix::io::Errno| TreeProblem {
        path,
        kind: TreeProblemKind::Unreadable {
            message: std::io::Error::from(e).to_string(),
        },
    };
    let dir_index = u32::try_from(index).unwrap_or(u32::MAX);
    let walked = |rel: String, raw_name: Option<OsString>| Walked {
        rel,
        stat: Stat {
            dev: 0,
            ino: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        },
        dir: dir_index,
        raw_name,
    };
    let fd = match rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let problems = files
                .into_iter()
                .map(|(rel, raw)| unreadable(dir.join(walked(rel, raw).name()), e))
                .collect();
            return (Vec::new(), problems);
        }
    };
    let mut out = Vec::with_capacity(files.len());
    let mut problems = Vec::new();
    for (rel, raw_name) in files {
        let mut w = walked(rel, raw_name);
        let st = match rustix::fs::statat(&fd, w.name(), AtFlags::empty()) {
            Ok(st) => st,
            Err(e) => {
                problems.push(unreadable(dir.join(w.name()), e));
                continue;
            }
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            continue;
        }
        let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        w.stat = Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: ns(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)),
            ctime_ns: ns(st.st_ctime, i64::try_from(st.st_ctime_nsec).unwrap_or(0)),
        };
        out.push(w);
    }
    out.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stat::{NoProgress, StatCache};
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    fn touch(path: &Path, body: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    fn flac_only() -> Arc<globset::GlobSet> {
        let mut b = globset::GlobSetBuilder::new();
        b.add(globset::Glob::new("**/*.flac").unwrap());
        Arc::new(b.build().unwrap())
    }

    #[test]
    fn a_flat_folder_is_stat_ed_in_several_tasks_and_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let n = GROUP * 2 + 17;
        for i in 0..n {
            touch(&dir.path().join(format!("f{i:05}.flac")), &[0; 3]);
        }
        touch(&dir.path().join("sub/g.flac"), b"g");
        let spec = TreeSpec {
            path: dir.path().to_path_buf(),
            include: None,
        };
        let tree = StatCache::in_memory()
            .tree_listing(&spec, &NoProgress)
            .unwrap()
            .unwrap();
        assert_eq!(tree.len(), n + 1);
        let rels: Vec<&str> = tree.files().map(|f| f.0).collect();
        assert_eq!(rels[0], "f00000.flac");
        assert_eq!(rels[n], "sub/g.flac");
        assert!(tree.files().all(|f| f.1 == 3 || f.0 == "sub/g.flac"));
        assert!(tree.problems.is_empty());
    }

    #[test]
    fn bad_entries_are_problems_and_symlinked_folders_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        touch(&root.join("a/x.flac"), b"x");
        touch(&root.join("a/notes.txt"), b"t");
        touch(&dir.path().join("elsewhere/y.flac"), b"y");
        symlink(dir.path().join("elsewhere"), root.join("linked")).unwrap();
        symlink("..", root.join("a/loop")).unwrap();
        symlink("nowhere.flac", root.join("a/dangling.flac")).unwrap();
        let bad_name = OsStr::from_bytes(b"bad-\xff.flac");
        touch(&root.join("a").join(bad_name), b"z");

        let spec = TreeSpec {
            path: root.clone(),
            include: Some(flac_only()),
        };
        let got = StatCache::in_memory()
            .digest_trees(std::slice::from_ref(&spec), &NoProgress)
            .unwrap();
        let tree = got[0].as_ref().unwrap().tree.clone().unwrap();
        let files: Vec<(&str, u64, &ContentDigest)> = tree.files().collect();
        let rels: Vec<&str> = files.iter().map(|f| f.0).collect();
        assert_eq!(rels, ["a/bad-\u{fffd}.flac", "a/x.flac", "linked/y.flac"]);
        assert_eq!(files[1].2, &ContentDigest::of_bytes(b"x"));
        assert_eq!(files[2].1, 1);
        assert_eq!(tree.others, ["a/notes.txt"]);
        let kinds: Vec<(String, &TreeProblemKind)> = tree
            .problems
            .iter()
            .map(|p| {
                let rel = p.path.strip_prefix(&root).unwrap();
                (rel.to_string_lossy().into_owned(), &p.kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a/bad-\u{fffd}.flac".to_owned(), &TreeProblemKind::NonUtf8),
                ("a/dangling.flac".to_owned(), &TreeProblemKind::Dangling),
                (
                    "a/loop".to_owned(),
                    &TreeProblemKind::Loop {
                        ancestor: root.clone()
                    }
                ),
            ]
        );
        let text: Vec<String> = tree.problems.iter().map(ToString::to_string).collect();
        assert!(text[1].starts_with("dangling symlink `"), "{text:?}");
        assert!(text[2].contains("symlink loop at"), "{text:?}");
        // The key's listing is the walk's files: a dangling link does not make it fail.
        let listing = got[0].as_ref().unwrap().listing.clone().unwrap();
        assert!(Arc::ptr_eq(&listing, &tree.listing));
        assert_eq!(listing.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().bytes, 3);
    }
}
