//! Folder walks for dependency hashing: every file under a folder (symlinked folders followed,
//! with loop detection), filtered by include globs and stat-ed relative to its folder's
//! descriptor. Symlink loops, dangling links, unreadable folders or files and non-UTF-8 names
//! are reported as [`TreeProblem`]s; none of them stops the walk.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::CacheError;
use super::digest::ContentDigest;
use super::stat::{FileStat, TreeKind, TreeSpec};

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

/// One file of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path relative to the folder, `/`-separated.
    pub rel: String,
    /// Size in bytes (symlinks followed).
    pub size: u64,
    /// blake3 of the content.
    pub digest: ContentDigest,
}

/// Everything one walk of a folder found: the files its include globs take (with size and
/// digest, as hashed for a stage key), the names of the files they leave out, and the problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeListing {
    /// The folder.
    pub root: PathBuf,
    /// Files taken, sorted by relative path.
    pub files: Vec<TreeFile>,
    /// Relative paths of the files the include globs leave out (not stat-ed), sorted.
    pub others: Vec<String>,
    /// Problems, sorted.
    pub problems: Vec<TreeProblem>,
}

/// What a walk collected before hashing.
pub(super) struct Collected {
    pub(super) kind: TreeKind,
    pub(super) files: Vec<(String, FileStat)>,
    pub(super) others: Vec<String>,
    pub(super) problems: Vec<TreeProblem>,
}

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

/// Lists a file or folder. Folders are walked following symlinks (a link back to an ancestor
/// is reported, not followed); files are stat-ed in parallel, one folder at a time relative to
/// an open descriptor of that folder (`fstatat`), so the kernel resolves one path component per
/// file instead of the whole path. `None` when the path does not exist.
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
        return Ok(Some(Collected {
            kind: TreeKind::File,
            files: vec![(String::new(), FileStat::from_meta(spec.path.clone(), &meta))],
            others: Vec::new(),
            problems: Vec::new(),
        }));
    }
    // Consecutive files of one folder form a group (walkdir yields a folder's entries together,
    // interrupted only by the subfolders it descends into).
    let mut groups: Vec<(PathBuf, Vec<(String, OsString)>)> = Vec::new();
    let mut others = Vec::new();
    let mut problems = Vec::new();
    let root_len = spec.path.as_os_str().len();
    // Unsorted walk: the listing is sorted afterwards, so the traversal order does not matter.
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
        let rel = match std::str::from_utf8(rel_bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                problems.push(TreeProblem {
                    path: entry.path().to_path_buf(),
                    kind: TreeProblemKind::NonUtf8,
                });
                String::from_utf8_lossy(rel_bytes).into_owned()
            }
        };
        if let Some(globs) = &spec.include
            && !globs.is_match(&rel)
        {
            others.push(rel);
            continue;
        }
        let cut = full.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let parent = &full[..cut];
        let name = OsStr::from_bytes(&full[cut + 1..]).to_owned();
        match groups.last_mut() {
            Some((dir, files)) if dir.as_os_str().as_bytes() == parent => files.push((rel, name)),
            _ => groups.push((PathBuf::from(OsStr::from_bytes(parent)), vec![(rel, name)])),
        }
    }
    let stats: Vec<GroupStats> = groups
        .into_par_iter()
        .map(|(dir, files)| stat_group(&dir, files))
        .collect();
    let mut files = Vec::new();
    for (f, p) in stats {
        files.extend(f);
        problems.extend(p);
    }
    files.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    others.par_sort_unstable();
    problems.sort();
    Ok(Some(Collected {
        kind: TreeKind::Dir,
        files,
        others,
        problems,
    }))
}

/// The files of one folder with their stats, and the problems met stat-ing them.
type GroupStats = (Vec<(String, FileStat)>, Vec<TreeProblem>);

/// Stats the files of one folder relative to its descriptor. A file that cannot be stat-ed
/// (it vanished, or the folder cannot be searched) is a problem, not an error.
fn stat_group(
    dir: &Path,
    files: Vec<(String, OsString)>,
) -> GroupStats {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let unreadable = |path: PathBuf, e: rustix::io::Errno| TreeProblem {
        path,
        kind: TreeProblemKind::Unreadable {
            message: std::io::Error::from(e).to_string(),
        },
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
                .map(|(_, name)| unreadable(dir.join(name), e))
                .collect();
            return (Vec::new(), problems);
        }
    };
    let mut out = Vec::with_capacity(files.len());
    let mut problems = Vec::new();
    for (rel, name) in files {
        let st = match rustix::fs::statat(&fd, name.as_os_str(), AtFlags::empty()) {
            Ok(st) => st,
            Err(e) => {
                problems.push(unreadable(dir.join(&name), e));
                continue;
            }
        };
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
        let rels: Vec<&str> = tree.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a/bad-\u{fffd}.flac", "a/x.flac", "linked/y.flac"]);
        assert_eq!(tree.files[1].digest, ContentDigest::of_bytes(b"x"));
        assert_eq!(tree.files[2].size, 1);
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
        assert_eq!(listing.len(), 3);
    }
}
