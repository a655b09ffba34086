//! Runs a sealed plan: stage keys, cache lookups, the `-j` scheduler with resources (`gpu`),
//! staging + atomic commit, the lock file, and the events reporters render
//! (docs/architecture.md, docs/cache.md).

pub mod context;
mod engine;
pub mod event;
pub mod executor;
pub mod key;
pub mod lockfile;
pub mod slurm;

use std::path::PathBuf;

pub use engine::{RunOptions, Session, detect_gpus, error_chain};

use crate::cache::CacheError;
use crate::plan::PlanError;
use crate::stages::StageError;

/// Errors of the engine (stage failures are reported in the run summary instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A target or `--force` names no stage.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A dep that no stage produces does not exist.
    #[error(
        "stage `{stage}` reads {} not on this machine:\n  dep {dep}: `{}`{}\ncopy or mount {} there, or change the path{} in the pipeline (or its `vars`)",
        if more.is_empty() { "a path" } else { "paths" },
        path.display(),
        more.iter().map(|m| format!("\n  dep {m}")).collect::<String>(),
        if more.is_empty() { "it" } else { "them" },
        if more.is_empty() { "" } else { "s" }
    )]
    MissingDep {
        /// Stage name.
        stage: String,
        /// The dep as written (quoted), with what it is for when known.
        dep: String,
        /// Resolved path.
        path: PathBuf,
        /// The stage's other missing deps (same form as `dep`, with their paths).
        more: Vec<String>,
    },
    /// A stage asks for more GPUs than the scheduler may hand out.
    #[error(
        "stage `{stage}` needs {need} GPU(s) but only {have} can be used; pass `--gpus {need}` if the machine has them"
    )]
    NotEnoughGpus {
        /// Stage name.
        stage: String,
        /// GPUs declared.
        need: u32,
        /// GPUs available.
        have: u32,
    },
    /// The cache failed (locked, disk full, unreadable).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The lock file cannot be read or written.
    #[error("lock file `{}`: {message}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stage could not compute its key (e.g. a missing checkpoint identity). The stage's
    /// error already names the stage.
    #[error("{source}")]
    Stage {
        /// Stage name.
        stage: String,
        /// The stage's error.
        #[source]
        source: StageError,
    },
    /// A stage's kind is not available (normally caught by validation).
    #[error("stage `{stage}`: {message}")]
    Kind {
        /// Stage name.
        stage: String,
        /// Why.
        message: String,
    },
    /// The Slurm executor failed outside a stage (Slurm missing or rejecting a job, jobs of
    /// another submission in the way).
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
    /// Stages failed because of the environment (disk full, missing input).
    #[error("{} stage(s) failed because of the environment", summary.count(event::Outcome::Failed))]
    EnvironmentFailure {
        /// The run's summary (already reported).
        summary: Box<event::RunSummary>,
    },
}

impl ExecError {
    /// [`ExecError::MissingDep`] for every `(dep described, path)` of `stage` that does not
    /// exist (all of them in one message); `None` when there are none.
    #[must_use]
    pub fn missing_deps(stage: &str, missing: Vec<(String, PathBuf)>) -> Option<ExecError> {
        let mut it = missing.into_iter();
        let (dep, path) = it.next()?;
        Some(ExecError::MissingDep {
            stage: stage.to_owned(),
            dep,
            path,
            more: it.map(|(d, p)| format!("{d}: `{}`", p.display())).collect(),
        })
    }

    /// Whether the error comes from the environment rather than the pipeline.
    #[must_use]
    pub fn is_environment(&self) -> bool {
        match self {
            ExecError::MissingDep { .. }
            | ExecError::NotEnoughGpus { .. }
            | ExecError::EnvironmentFailure { .. } => true,
            ExecError::Cache(e) => matches!(
                e,
                CacheError::DiskFull { .. } | CacheError::Read { .. } | CacheError::Write { .. }
            ),
            ExecError::Stage { source, .. } => {
                source.is_environment() || matches!(source, StageError::Environment { .. })
            }
            ExecError::Slurm(e) => !e.is_busy(),
            _ => false,
        }
    }
}
