//! The `Stage` trait (the contract between the engine and the stage kinds) and the registry
//! of kinds. Each kind is one module implementing [`Stage`]; adding a kind is one line in
//! [`REGISTRY`] (docs/architecture.md).

pub mod chunk;
pub mod command;
pub mod evaluate;
pub mod extract;
pub(crate) mod items;
pub mod metadata;
pub mod model_data;
pub mod scan;
pub mod shard_demo;
#[cfg(test)]
pub(crate) mod testkind;
pub mod train;

use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::path::PathBuf;
use std::sync::Arc;

use globset::GlobSet;

use crate::exec::context::{KeyCtx, StageCtx};
use crate::spec::{Issue, Pipeline, Resources, StageDef, did_you_mean, positions};

/// Every kind name the pipeline format knows, available in this build or not.
pub const KINDS: &[&str] = &[
    "command",
    "scan_corpus",
    "build_metadata",
    "chunk_audio",
    "extract_ssl",
    "train_aasist",
    "evaluate",
    "shard_demo",
];

/// The kinds available in this build. Adding a kind: write its module, add it here.
pub static REGISTRY: &[&dyn Stage] = &[
    &command::Command,
    &scan::ScanCorpus,
    &metadata::BuildMetadata,
    &chunk::ChunkAudio,
    &extract::ExtractSsl,
    &train::TrainAasist,
    &evaluate::Evaluate,
    &shard_demo::ShardDemo,
];

/// A stage kind: how a stage of that kind is checked, keyed and run.
pub trait Stage: Send + Sync {
    /// Kind name as written in YAML (`chunk_audio`).
    fn kind(&self) -> &'static str;

    /// Implementation version, part of every key: bump it when the same inputs give other bytes.
    fn version(&self) -> u32;

    /// Checks the stage definition (typed params, required upstream kinds, sources...). Every
    /// problem is returned at once, each with the YAML path it concerns
    /// (`stages.chunk.params.crop`), which becomes `file:line:column`.
    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue>;

    /// Files and folders read from the workspace, hashed into the key through the stat cache.
    /// Default: the stage's declared `deps`.
    fn deps(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<DepSpec> {
        declared_deps(def, pipeline)
    }

    /// Identities that are not workspace files but change results (a checkpoint's digest, a
    /// tool's version), by name, so `status` can say which one changed.
    ///
    /// # Errors
    /// When an identity cannot be determined (e.g. a missing checkpoint).
    fn identities(&self, ctx: &KeyCtx<'_>) -> Result<BTreeMap<String, String>, StageError> {
        let _ = ctx;
        Ok(BTreeMap::new())
    }

    /// Declared resources (`gpu: 1`); the scheduler never over-subscribes them.
    fn resources(&self, def: &StageDef) -> Resources {
        def.resources
    }

    /// Paths (relative to the pipeline's folder) this stage writes *in the workspace*. The
    /// engine stores them in the cache after a run and restores them (by copy) when missing.
    /// Built-in kinds write into [`StageCtx::out_dir`] instead and return nothing here.
    fn workspace_outs(&self, def: &StageDef) -> Vec<String> {
        let _ = def;
        Vec::new()
    }

    /// Independent shards of this stage's work, known before upstream outputs exist (so a
    /// cluster executor can size a job array up front). 1 = whole-stage work.
    fn shard_count(&self, def: &StageDef, pipeline: &Pipeline) -> u32 {
        let _ = (def, pipeline);
        1
    }

    /// Does shard `shard`'s work. Idempotent: results go to memo entries keyed by content, so a
    /// rerun or a second worker finds them committed and does nothing. On a cluster each shard
    /// runs in its own job: anything it writes to `ctx.out_dir()` is not kept, and `run` must
    /// read the shards' results from their memo entries.
    ///
    /// # Errors
    /// The stage's failure.
    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let _ = (ctx, shard);
        Ok(ItemCounts::default())
    }

    /// Whole-stage step after all shards: assemble the output in [`StageCtx::out_dir`].
    ///
    /// # Errors
    /// The stage's failure.
    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError>;
}

/// A file or folder a stage reads.
#[derive(Debug, Clone)]
pub struct DepSpec {
    /// The name recorded in the key and shown in reasons (the path as written).
    pub name: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Only these files of a folder (globs relative to it); `None` = all.
    pub include: Option<Arc<GlobSet>>,
    /// What the path is for, in messages only (`the root of source `f5tts``); not in the key.
    pub about: Option<String>,
}

impl DepSpec {
    /// `name`, followed by what it is for when known.
    #[must_use]
    pub fn described(&self) -> String {
        match &self.about {
            Some(a) => format!("`{}` ({a})", self.name),
            None => format!("`{}`", self.name),
        }
    }
}

/// The declared `deps` of a stage.
#[must_use]
pub fn declared_deps(def: &StageDef, pipeline: &Pipeline) -> Vec<DepSpec> {
    def.deps
        .iter()
        .map(|d| DepSpec {
            name: d.clone(),
            path: pipeline.resolve(d),
            include: None,
            about: None,
        })
        .collect()
}

/// Items a stage (or shard) processed and reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemCounts {
    /// Items computed in this run.
    pub processed: u64,
    /// Items copied from an earlier output or memo entry.
    pub reused: u64,
}

impl AddAssign for ItemCounts {
    fn add_assign(&mut self, rhs: Self) {
        self.processed += rhs.processed;
        self.reused += rhs.reused;
    }
}

/// What a finished stage reports.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    /// Item counts of the whole-stage step (added to the shards' counts).
    pub items: ItemCounts,
}

/// Errors of stage kinds.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A command exited unsuccessfully.
    #[error("stage `{stage}` failed: {status}; full log: {}", log.display())]
    CommandFailed {
        /// Stage name.
        stage: String,
        /// `exit status 2`, `killed by signal 9`.
        status: String,
        /// Full log.
        log: PathBuf,
    },
    /// The stage's own work failed (a model or metrics error, not an external command).
    #[error("stage `{stage}` failed: {message}; full log: {}", log.display())]
    Failed {
        /// Stage name.
        stage: String,
        /// What failed.
        message: String,
        /// Full log.
        log: PathBuf,
    },
    /// A declared out was not produced.
    #[error("stage `{stage}` did not produce its declared out `{out}`")]
    MissingOut {
        /// Stage name.
        stage: String,
        /// The out, as written.
        out: String,
    },
    /// Reading or writing a file failed.
    #[error("stage `{stage}`: cannot access `{}`", path.display())]
    Io {
        /// Stage name.
        stage: String,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Params do not fit the kind (normally caught by `check`).
    #[error("stage `{stage}`: invalid params: {message}")]
    Params {
        /// Stage name.
        stage: String,
        /// What is wrong.
        message: String,
    },
    /// A required input is missing from the environment (corpus, checkpoint).
    #[error("stage `{stage}`: {message}")]
    Environment {
        /// Stage name.
        stage: String,
        /// What is missing and what to do.
        message: String,
    },
    /// The kind needs libtorch and this binary was built without it.
    #[error("stage `{stage}` needs libtorch: rebuild brspeech with the `torch` feature")]
    TorchDisabled {
        /// Stage name.
        stage: String,
    },
    /// The upstream stage's output is not available to this stage.
    #[error("stage `{stage}` has no input from `{input}`: add it to `needs`")]
    NoInput {
        /// Stage name.
        stage: String,
        /// The upstream stage asked for.
        input: String,
    },
    /// The cache failed underneath the stage.
    #[error("stage `{stage}`: {source}")]
    Cache {
        /// Stage name.
        stage: String,
        /// The cache error.
        #[source]
        source: crate::cache::CacheError,
    },
    /// The run was interrupted.
    #[error("stage `{stage}` was cancelled")]
    Cancelled {
        /// Stage name.
        stage: String,
    },
}

impl StageError {
    /// Whether the failure comes from the environment (exit code 4) rather than the stage.
    #[must_use]
    pub fn is_environment(&self) -> bool {
        match self {
            StageError::Environment { .. } | StageError::TorchDisabled { .. } => true,
            StageError::Io { source, .. } => crate::cache::fsutil::is_disk_full(source),
            StageError::Cache { source, .. } => {
                matches!(source, crate::cache::CacheError::DiskFull { .. })
            }
            _ => false,
        }
    }
}

/// Why a kind name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// Not a kind at all.
    #[error("unknown stage kind `{kind}`")]
    Unknown {
        /// The name written.
        kind: String,
    },
    /// A kind of the pipeline format whose module is not part of this build.
    #[error("kind `{kind}` is not available in this build")]
    Unavailable {
        /// The name written.
        kind: String,
    },
}

/// The implementation of `kind`.
///
/// # Errors
/// [`KindError`] when the name is unknown or not built in.
pub fn lookup(kind: &str) -> Result<&'static dyn Stage, KindError> {
    if let Some(s) = REGISTRY.iter().find(|s| s.kind() == kind) {
        return Ok(*s);
    }
    #[cfg(test)]
    if kind == testkind::KIND {
        return Ok(&testkind::TestItems);
    }
    if KINDS.contains(&kind) {
        Err(KindError::Unavailable {
            kind: kind.to_owned(),
        })
    } else {
        Err(KindError::Unknown {
            kind: kind.to_owned(),
        })
    }
}

/// Checks every stage's kind and lets each kind check its stage: unknown kinds (with a
/// did-you-mean), kinds not in this build, `cmd`/`outs` on kinds that do not take them.
#[must_use]
pub fn check_pipeline(pipeline: &Pipeline) -> Vec<Issue> {
    let mut issues = Vec::new();
    for def in &pipeline.stages {
        if def.kind.is_empty() {
            continue;
        }
        let path = positions::child(&def.path(), "kind");
        match lookup(&def.kind) {
            Err(KindError::Unknown { kind }) => {
                let help = did_you_mean(&kind, KINDS.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "known kinds: {}",
                        KINDS
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                issues
                    .push(Issue::new(path, format!("unknown stage kind `{kind}`")).with_help(help));
            }
            Err(KindError::Unavailable { kind }) => {
                let available: Vec<String> =
                    REGISTRY.iter().map(|s| format!("`{}`", s.kind())).collect();
                issues.push(
                    Issue::new(
                        path,
                        format!("kind `{kind}` is not available in this build"),
                    )
                    .with_help(format!("this build provides: {}", available.join(", "))),
                );
            }
            Ok(stage) => {
                if stage.kind() != command::KIND {
                    if def.cmd.is_some() {
                        issues.push(
                            Issue::new(
                                positions::child(&def.path(), "cmd"),
                                format!(
                                    "only `command` stages take `cmd` (stage `{}` is `{}`)",
                                    def.name, def.kind
                                ),
                            )
                            .at_key(),
                        );
                    }
                    if !def.outs.is_empty() {
                        issues.push(
                            Issue::new(positions::child(&def.path(), "outs"), format!("only `command` stages declare `outs` (stage `{}` is `{}`)", def.name, def.kind))
                                .at_key()
                                .with_help(format!("built-in kinds write into the cache; their output is at `outputs/{}/{}/`", pipeline.name, def.name)),
                        );
                    }
                }
                issues.extend(stage.check(def, pipeline));
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_known_kinds_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in REGISTRY {
            assert!(KINDS.contains(&s.kind()), "{} missing from KINDS", s.kind());
            assert!(seen.insert(s.kind()), "{} registered twice", s.kind());
        }
    }

    #[test]
    fn lookup_tells_unknown_from_unavailable() {
        assert_eq!(lookup("command").unwrap().kind(), "command");
        assert!(matches!(lookup("comand"), Err(KindError::Unknown { .. })));
        if REGISTRY.iter().all(|s| s.kind() != "train_aasist") {
            assert_eq!(
                lookup("train_aasist").err().unwrap().to_string(),
                "kind `train_aasist` is not available in this build"
            );
        }
    }
}
