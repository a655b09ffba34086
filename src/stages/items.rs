//! Shared plumbing of the corpus kinds (`scan_corpus`, `build_metadata`, `chunk_audio`):
//! `sources:` decoded and validated with YAML paths, the upstream stage of a given kind, where
//! an item's audio file lies, the `on_bad_audio` policy, error conversions, and a per-process
//! memo of parsed upstream files. No walking, CSV or audio logic lives here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::StageError;
use crate::corpus::{CorpusError, Origin, Source, SourceDef, validate_sources};
use crate::spec::{Issue, Pipeline, StageDef, decode, positions};

/// Folder of a stage output holding generated sources' files: `generated/<source>/<file>`.
pub(crate) const GENERATED_DIR: &str = "generated";

/// What a stage does when a file cannot be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnBadAudio {
    /// Leave the file out, list it in `rejected.csv` and warn with a count.
    #[default]
    Skip,
    /// Stop the stage, naming the file.
    Fail,
}

/// Every `sources:` entry decoded into a [`SourceDef`] (those that decode, with their index),
/// and the problems of those that do not, located at `sources[i]...`.
pub(crate) fn source_defs(pipeline: &Pipeline) -> (Vec<(usize, SourceDef)>, Vec<Issue>) {
    let mut defs = Vec::new();
    let mut issues = Vec::new();
    for (i, value) in pipeline.sources.iter().enumerate() {
        match decode::<SourceDef>(value, &positions::item("sources", i)) {
            Ok(d) => defs.push((i, d)),
            Err(issue) => issues.push(*issue),
        }
    }
    (defs, issues)
}

/// Checks `sources:`: typed decoding, then [`validate_sources`]; every problem, each at its
/// YAML path (`sources[2].label`).
pub(crate) fn check_sources(pipeline: &Pipeline) -> Vec<Issue> {
    let (defs, mut issues) = source_defs(pipeline);
    let (index, defs): (Vec<usize>, Vec<SourceDef>) = defs.into_iter().unzip();
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, d) in index.iter().zip(&defs) {
        first.entry(d.name.as_str()).or_insert(*i);
    }
    if let Err(found) = validate_sources(&defs, &pipeline.dir) {
        // A root or file missing on this machine is reported when a stage runs (exit 4), so
        // that a pipeline written for another machine still validates and graphs here.
        for si in found.into_iter().filter(|si| !si.missing) {
            let original = index.get(si.index).copied().unwrap_or(si.index);
            let base = positions::item("sources", original);
            let path = if si.field.is_empty() {
                base
            } else {
                format!("{base}.{}", si.field)
            };
            let mut issue = Issue::new(path, si.message);
            if si.field == "name" {
                issue = issue.at_key();
                // A repeated name: show where it was first given.
                if let Some(&f) = defs
                    .get(si.index)
                    .and_then(|d| first.get(d.name.as_str()))
                    .filter(|&&f| f != original)
                {
                    issue = issue.with_note(
                        format!("{}.name", positions::item("sources", f)),
                        "first given here",
                    );
                }
            }
            issues.push(issue);
        }
    }
    issues.sort_by(|a, b| a.path.cmp(&b.path));
    issues
}

/// The validated sources, for a running stage (the checks already passed at load time).
///
/// # Errors
/// [`StageError::Params`] listing the problems when `sources:` is invalid.
pub(crate) fn sources(pipeline: &Pipeline, stage: &str) -> Result<Vec<Source>, StageError> {
    let (defs, issues) = source_defs(pipeline);
    let invalid = |issues: Vec<Issue>| StageError::Params {
        stage: stage.to_owned(),
        message: issues
            .iter()
            .map(|i| format!("`{}`: {}", i.path, i.message))
            .collect::<Vec<_>>()
            .join("; "),
    };
    if !issues.is_empty() {
        return Err(invalid(issues));
    }
    let defs: Vec<SourceDef> = defs.into_iter().map(|(_, d)| d).collect();
    validate_sources(&defs, &pipeline.dir).map_err(|found| {
        if found.iter().all(|si| si.missing) {
            let names = |si: &crate::corpus::SourceIssue| {
                let name = defs.get(si.index).map_or("?", |d| d.name.as_str());
                format!("source `{name}` (`{}`): {}", si.key("sources"), si.message)
            };
            return StageError::Environment {
                stage: stage.to_owned(),
                message: format!(
                    "{}; copy or mount the corpus there, or point the source at where it is",
                    found.iter().map(names).collect::<Vec<_>>().join("; ")
                ),
            };
        }
        invalid(
            found
                .into_iter()
                .map(|si| Issue::new(si.key("sources"), si.message))
                .collect(),
        )
    })
}

/// Buckets per source by default for the kinds sharded by (source, bucket of the path): a
/// 450,000-file corpus of a few sources gives shards of about 1,000 to 4,000 files.
pub(crate) const DEFAULT_BUCKETS: u32 = 16;

/// Shards of a kind sharded by (source, bucket of the path): `sources × buckets`, known from
/// the pipeline alone; shard `n` is source `n / buckets`, bucket `n % buckets`.
pub(crate) fn source_bucket_shards(pipeline: &Pipeline, buckets: u32) -> u32 {
    u32::try_from(pipeline.sources.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(buckets.max(1))
}

/// The source name and bucket of shard `shard` (see [`source_bucket_shards`]); `None` past the
/// last one.
pub(crate) fn shard_source_bucket(
    pipeline: &Pipeline,
    buckets: u32,
    shard: u32,
) -> Option<(String, u32)> {
    let buckets = buckets.max(1);
    let names = source_names(pipeline);
    let source = names.get(usize::try_from(shard / buckets).ok()?)?;
    Some((source.clone(), shard % buckets))
}

/// The problem with a `buckets` param (`params` is the stage's params path), if any.
pub(crate) fn buckets_issue(params: &str, buckets: u32, per_source: &str) -> Option<Issue> {
    (buckets == 0 || buckets > 65_536).then(|| {
        Issue::new(
            positions::child(params, "buckets"),
            format!(
                "`buckets` must be between 1 and 65536 ({per_source} per source), not {buckets}"
            ),
        )
    })
}

/// `the root of source `a`` / `the root of sources `a`, `b`` (what a dep is for, in messages).
pub(crate) fn for_sources(what: &str, sources: &[String]) -> String {
    let names = sources
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let plural = if sources.len() == 1 { "" } else { "s" };
    format!("{what} of source{plural} {names}")
}

/// Names of the `sources:` entries in list order, as written (also for invalid entries, so
/// that shard counts do not depend on validation).
pub(crate) fn source_names(pipeline: &Pipeline) -> Vec<String> {
    pipeline
        .sources
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.get("name")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("sources[{i}]"), str::to_owned)
        })
        .collect()
}

/// The one stage of kind `kind` among `def`'s `needs`.
///
/// # Errors
/// An issue at `stages.<name>.needs` when there is none or more than one.
pub(crate) fn upstream_of_kind(
    def: &StageDef,
    pipeline: &Pipeline,
    kind: &str,
) -> Result<String, Box<Issue>> {
    let found: Vec<&String> = def
        .needs
        .iter()
        .filter(|n| pipeline.stage(n).is_some_and(|s| s.kind == kind))
        .collect();
    let path = positions::child(&def.path(), "needs");
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let candidates: Vec<String> = pipeline
                .stages
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| format!("`{}`", s.name))
                .collect();
            let help = if candidates.is_empty() {
                format!("add a `{kind}` stage and name it in `needs`")
            } else {
                format!("add {} to `needs`", candidates.join(" or "))
            };
            Err(Box::new(
                Issue::new(
                    path,
                    format!(
                        "stage `{}` reads a `{kind}` stage's output: name one in `needs`",
                        def.name
                    ),
                )
                .with_help(help),
            ))
        }
        many => Err(Box::new(Issue::new(
            path,
            format!(
                "stage `{}` needs exactly one `{kind}` stage, found {}",
                def.name,
                many.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// Typed params of a stage, or the issue locating the field that does not fit.
pub(crate) fn params_issues<P: serde::de::DeserializeOwned>(def: &StageDef) -> Vec<Issue> {
    def.params_as::<P>()
        .err()
        .map(|i| vec![*i])
        .unwrap_or_default()
}

/// Where the audio of item `rel` of `source` lies: under the source's root, or, for a generated
/// source, under `generated/<source>/` of the upstream output that carries the files.
pub(crate) fn item_path(source: &Source, upstream: &Path, rel: &str) -> PathBuf {
    match &source.origin {
        Origin::Root(root) => root.join(rel),
        Origin::Generate(_) => generated_path(upstream, &source.name, rel),
    }
}

/// `<dir>/generated/<source>/<name>`.
pub(crate) fn generated_path(dir: &Path, source: &str, name: &str) -> PathBuf {
    dir.join(GENERATED_DIR).join(source).join(name)
}

/// Links (or copies) `from` to `to`, creating `to`'s folder.
///
/// # Errors
/// [`StageError::Cache`] with the I/O error.
pub(crate) fn link(stage: &str, from: &Path, to: &Path) -> Result<(), StageError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(stage, parent, e))?;
    }
    crate::cache::fsutil::link_or_copy(from, to).map_err(|source| StageError::Cache {
        stage: stage.to_owned(),
        source,
    })
}

/// [`StageError::Io`] for `path`.
pub(crate) fn io_error(stage: &str, path: &Path, source: std::io::Error) -> StageError {
    StageError::Io {
        stage: stage.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

/// A corpus-layer error as a stage error: I/O stays I/O; unreadable or malformed corpus files
/// (split CSVs, texts) are the environment's.
pub(crate) fn corpus_error(stage: &str, e: CorpusError) -> StageError {
    match e {
        CorpusError::Io { path, source } => StageError::Io {
            stage: stage.to_owned(),
            path,
            source,
        },
        other => StageError::Environment {
            stage: stage.to_owned(),
            message: other.to_string(),
        },
    }
}

/// A shard-layer error as a stage error.
pub(crate) fn shard_error(stage: &str, e: crate::shards::ShardError) -> StageError {
    match e {
        crate::shards::ShardError::Io { path, source } => StageError::Io {
            stage: stage.to_owned(),
            path,
            source,
        },
        other => StageError::Environment {
            stage: stage.to_owned(),
            message: other.to_string(),
        },
    }
}

/// `3 truncated, 1 zero_byte` (counts by reason, in name order).
pub(crate) fn reason_counts<'a>(reasons: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    counts
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A per-process memo of one parsed input, keyed by its path (and whatever else shaped the
/// parse). Stage outputs in the cache are content-addressed (`entries/<key>/out/...`), so one
/// path always holds the same bytes; the shards of a stage share one parse instead of reading
/// the file once each.
pub(crate) struct ParsedOnce<K, T> {
    slots: Mutex<Vec<(K, Arc<T>)>>,
}

impl<K: PartialEq, T> ParsedOnce<K, T> {
    /// An empty memo.
    pub(crate) const fn new() -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<(K, Arc<T>)>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The parse for `key`, from the memo or from `load` (one entry per key, so stages running
    /// at the same time in one process keep their own).
    ///
    /// # Errors
    /// `load`'s error.
    pub(crate) fn get<E>(&self, key: K, load: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let mut slots = self.slots();
        if let Some((_, v)) = slots.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(load()?);
        slots.push((key, Arc::clone(&v)));
        Ok(v)
    }

    /// Forgets the entry of `key` (frees its memory once no one holds it).
    pub(crate) fn forget(&self, key: &K) {
        self.slots().retain(|(k, _)| k != key);
    }
}
