//! Corpus walk: every folder source walked in parallel (across sources and inside each tree),
//! files classified by the source's globs, problems (symlink loops, dangling links, unreadable
//! folders, non-UTF-8 names) reported with their paths instead of stopping the walk. Output
//! sorted. The `scan_corpus` stage applies the same rules to the listing the engine built for
//! its key ([`is_hidden_path`], [`dangling_detail`]), so both give the same files and problems.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ignore::{WalkBuilder, WalkState};
use rayon::prelude::*;

use super::source::{Match, Origin, Source};

/// One file found under a source root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileRecord {
    /// Source name.
    pub source: String,
    /// Path relative to the source root, `/`-separated.
    pub path: String,
    /// Absolute path (what the engine's stat cache fingerprints).
    pub abs: PathBuf,
    /// Size in bytes (following symlinks).
    pub size: u64,
}

/// A problem met during the walk; the walk goes on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalkProblem {
    /// A symlink leads back to one of its ancestors; not followed again.
    Loop {
        /// Source name.
        source: String,
        /// The link.
        path: PathBuf,
        /// The ancestor it points back to.
        ancestor: PathBuf,
    },
    /// A folder or file that could not be read, or a dangling symlink (its `message` is
    /// [`dangling_detail`]).
    Unreadable {
        /// Source name.
        source: String,
        /// The path (may be the root itself).
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// A file name that is not UTF-8 (paths are written to CSV files); skipped.
    NonUtf8 {
        /// Source name.
        source: String,
        /// The path.
        path: PathBuf,
    },
}

impl std::fmt::Display for WalkProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Loop {
                source,
                path,
                ancestor,
            } => write!(
                f,
                "source `{source}`: symlink loop at `{}` (points back to `{}`), not followed",
                path.display(),
                ancestor.display()
            ),
            Self::Unreadable {
                source,
                path,
                message,
            } => write!(
                f,
                "source `{source}`: cannot read `{}`: {message}",
                path.display()
            ),
            Self::NonUtf8 { source, path } => write!(
                f,
                "source `{source}`: `{}` has a name that is not UTF-8; rename it to include it",
                path.display()
            ),
        }
    }
}

/// Counts for one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceScan {
    /// Source name.
    pub name: String,
    /// Files taken.
    pub files: u64,
    /// Bytes in the files taken.
    pub bytes: u64,
    /// Files that match no `include` glob (not audio by the source's rules).
    pub skipped_non_audio: u64,
    /// Files matched by `include` but ruled out by `exclude`.
    pub excluded: u64,
    /// Hidden files (name starting with `.`) and files inside hidden folders are not walked;
    /// this counts the hidden files met directly.
    pub hidden: u64,
}

/// Result of walking a corpus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkReport {
    /// Files taken, sorted by (source, path).
    pub files: Vec<FileRecord>,
    /// Counts per walked source, in source-list order.
    pub sources: Vec<SourceScan>,
    /// Problems, sorted.
    pub problems: Vec<WalkProblem>,
}

impl WalkReport {
    /// Names of walked sources that gave no file (an error for the stage to report).
    pub fn empty_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| s.files == 0)
            .map(|s| s.name.as_str())
            .collect()
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Where a relative path (`/`-separated) stands with the hidden-file rule: the walk never
/// enters a hidden folder, and counts (then skips) a hidden file met directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Nothing hidden on the path.
    No,
    /// The name itself is hidden (`spk1/._a.flac`).
    Name,
    /// A folder above it is hidden (`.cache/x.flac`): the walk never sees it.
    Inside,
}

/// Classifies `relative_path` by the hidden-file rule.
#[must_use]
pub fn is_hidden_path(relative_path: &str) -> Hidden {
    let mut parts = relative_path.rsplit('/');
    let name = parts.next().unwrap_or_default();
    if parts.any(|p| p.starts_with('.')) {
        Hidden::Inside
    } else if name.starts_with('.') {
        Hidden::Name
    } else {
        Hidden::No
    }
}

/// What an unreadable-path problem says for a dangling symlink.
#[must_use]
pub fn dangling_detail(path: &Path) -> String {
    match std::fs::read_link(path) {
        Ok(target) => format!(
            "dangling symlink (its target `{}` does not exist)",
            target.display()
        ),
        Err(_) => "dangling symlink".to_owned(),
    }
}

/// A `NotFound` error at a path that is itself a symlink: a dangling link.
fn is_dangling(err: &std::io::Error, path: &Path) -> bool {
    err.kind() == std::io::ErrorKind::NotFound
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Collects what the walker threads find.
#[derive(Default)]
struct Found {
    files: Vec<FileRecord>,
    scan: SourceScan,
    problems: Vec<WalkProblem>,
}

fn problem_from(source: &str, err: &ignore::Error, at: Option<&Path>, out: &mut Vec<WalkProblem>) {
    match err {
        ignore::Error::WithPath { path, err } => problem_from(source, err, Some(path), out),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            problem_from(source, err, at, out);
        }
        ignore::Error::Partial(errs) => {
            for e in errs {
                problem_from(source, e, at, out);
            }
        }
        ignore::Error::Loop { ancestor, child } => out.push(WalkProblem::Loop {
            source: source.to_string(),
            path: child.clone(),
            ancestor: ancestor.clone(),
        }),
        ignore::Error::Io(e) if at.is_some_and(|p| is_dangling(e, p)) => {
            let path = at.map(Path::to_path_buf).unwrap_or_default();
            out.push(WalkProblem::Unreadable {
                source: source.to_string(),
                message: dangling_detail(&path),
                path,
            });
        }
        other => out.push(WalkProblem::Unreadable {
            source: source.to_string(),
            path: at.map(Path::to_path_buf).unwrap_or_default(),
            message: other.to_string(),
        }),
    }
}

/// Walks one folder source with `threads` walker threads (0: as many as rayon has).
pub fn walk_source(
    source: &Source,
    threads: usize,
) -> (Vec<FileRecord>, SourceScan, Vec<WalkProblem>) {
    let Origin::Root(root) = &source.origin else {
        return (
            Vec::new(),
            SourceScan {
                name: source.name.clone(),
                ..SourceScan::default()
            },
            Vec::new(),
        );
    };
    let threads = if threads == 0 {
        rayon::current_num_threads()
    } else {
        threads
    };
    let found = Mutex::new(Found::default());
    WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(true)
        .threads(threads)
        .build_parallel()
        .run(|| {
            let found = &found;
            let mut local = Found::default();
            let root = root.as_path();
            // Each walker thread fills `local` and merges it when it is dropped.
            struct Flush<'a> {
                local: Found,
                into: &'a Mutex<Found>,
            }
            impl Drop for Flush<'_> {
                fn drop(&mut self) {
                    let mut g = self
                        .into
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    g.files.append(&mut self.local.files);
                    g.problems.append(&mut self.local.problems);
                    let s = &self.local.scan;
                    g.scan.files += s.files;
                    g.scan.bytes += s.bytes;
                    g.scan.skipped_non_audio += s.skipped_non_audio;
                    g.scan.excluded += s.excluded;
                    g.scan.hidden += s.hidden;
                }
            }
            local.files.reserve(1024);
            let mut flush = Flush { local, into: found };
            Box::new(move |entry| {
                let local = &mut flush.local;
                let entry = match entry {
                    Ok(e) => e,
                    Err(err) => {
                        problem_from(&source.name, &err, None, &mut local.problems);
                        return WalkState::Continue;
                    }
                };
                if entry.depth() == 0 {
                    return WalkState::Continue;
                }
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                if is_hidden(entry.file_name()) {
                    if !is_dir {
                        local.scan.hidden += 1;
                    }
                    return if is_dir {
                        WalkState::Skip
                    } else {
                        WalkState::Continue
                    };
                }
                if is_dir {
                    return WalkState::Continue;
                }
                let abs = entry.path();
                let Ok(rel) = abs.strip_prefix(root) else {
                    return WalkState::Continue;
                };
                let Some(rel) = rel.to_str() else {
                    local.problems.push(WalkProblem::NonUtf8 {
                        source: source.name.clone(),
                        path: abs.to_path_buf(),
                    });
                    return WalkState::Continue;
                };
                let rel = if std::path::MAIN_SEPARATOR == '/' {
                    rel.to_string()
                } else {
                    rel.replace(std::path::MAIN_SEPARATOR, "/")
                };
                match source.matcher.classify(&rel) {
                    Match::NotIncluded => local.scan.skipped_non_audio += 1,
                    Match::Excluded => local.scan.excluded += 1,
                    Match::Include => match std::fs::metadata(abs) {
                        Ok(meta) if meta.is_file() => {
                            local.scan.files += 1;
                            local.scan.bytes += meta.len();
                            local.files.push(FileRecord {
                                source: source.name.clone(),
                                path: rel,
                                abs: abs.to_path_buf(),
                                size: meta.len(),
                            });
                        }
                        Ok(_) => local.scan.skipped_non_audio += 1,
                        Err(e) => local.problems.push(WalkProblem::Unreadable {
                            source: source.name.clone(),
                            path: abs.to_path_buf(),
                            message: e.to_string(),
                        }),
                    },
                }
                WalkState::Continue
            })
        });
    let mut found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    found.files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    found.problems.sort();
    found.scan.name = source.name.clone();
    (found.files, found.scan, found.problems)
}

/// Walks every folder source (generated sources are skipped), in parallel across sources and
/// inside each tree. Files come out sorted by (source, path); problems are collected, not fatal.
pub fn walk_sources(sources: &[Source]) -> WalkReport {
    let folder_sources: Vec<&Source> = sources.iter().filter(|s| s.root().is_some()).collect();
    let per_source = (rayon::current_num_threads() / folder_sources.len().max(1)).max(1);
    let results: Vec<_> = folder_sources
        .par_iter()
        .map(|s| walk_source(s, per_source))
        .collect();
    let mut report = WalkReport::default();
    for (files, scan, problems) in results {
        report.files.extend(files);
        report.sources.push(scan);
        report.problems.extend(problems);
    }
    report
        .files
        .sort_unstable_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    report.problems.sort();
    report
}
