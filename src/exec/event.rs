//! Events: the only thing reporters see of a run (nextest-style runner → events → reporter),
//! plus the status and summary records `status`, `--dry-run` and `--json` print.

use std::path::PathBuf;

use serde::Serialize;

use crate::stages::ItemCounts;

/// How a stage ended in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Executed, outputs committed.
    Ran,
    /// Up to date: nothing to do.
    Cached,
    /// Found in the cache; outputs restored or relinked without running.
    Restored,
    /// Failed (or its outputs could not be committed).
    Failed,
    /// Not attempted: an upstream stage failed, or the run stopped.
    Skipped,
    /// Interrupted while running.
    Cancelled,
}

impl Outcome {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Restored => "restored",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Whether a stage's recorded outputs match what it would produce now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Up to date.
    Fresh,
    /// Has run before, but something changed (or its outputs are missing).
    Stale,
    /// No record of a run.
    NeverRun,
}

impl State {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Stale => "stale",
            State::NeverRun => "never_run",
        }
    }
}

/// What a run would do with a stage (`--dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing.
    UpToDate,
    /// Restore outputs from the cache.
    Restore,
    /// Run it.
    Run,
}

/// One stage in `status` / `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Fresh, stale, never run.
    pub state: State,
    /// What a run would do.
    pub action: Action,
    /// Exact reasons (`params.lr: 5e-6 -> 1e-5`).
    pub reasons: Vec<String>,
    /// The current key, when computable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One stage in the final summary.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// Stage name.
    pub name: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Seconds spent (hashing, running, committing).
    pub seconds: f64,
    /// Items processed (stages that process items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_processed: Option<u64>,
    /// Items reused (stages that process items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_reused: Option<u64>,
    /// Stage key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Full log of a stage that ran or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// The final summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// No stage failed and the run was not interrupted.
    pub ok: bool,
    /// Interrupted by a signal.
    pub interrupted: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Per stage, in run order.
    pub stages: Vec<StageSummary>,
}

impl RunSummary {
    /// Number of stages with `outcome`.
    #[must_use]
    pub fn count(&self, outcome: Outcome) -> usize {
        self.stages.iter().filter(|s| s.outcome == outcome).count()
    }
}

/// Something that happened during a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// The run starts: stages selected, parallelism.
    RunStarted {
        /// Pipeline name.
        pipeline: String,
        /// Selected stages.
        stages: usize,
        /// `-j` (0 when a cluster runs the stages).
        jobs: usize,
    },
    /// Another run holds the cache; waiting.
    LockWaiting {
        /// Who holds it.
        holder: String,
    },
    /// A lock left by a dead run was taken over.
    LockReclaimed {
        /// Who held it.
        holder: String,
    },
    /// Hashing a stage's deps: `total` files are not in the stat cache and will be read.
    HashingStarted {
        /// Stage name.
        stage: String,
        /// Files to read.
        total: u64,
    },
    /// `done` more files hashed.
    HashingProgress {
        /// Stage name.
        stage: String,
        /// Files read since the last event.
        done: u64,
    },
    /// A stage starts running.
    StageStarted {
        /// Stage name.
        stage: String,
        /// Why it runs.
        reasons: Vec<String>,
    },
    /// Progress inside a stage.
    StageProgress {
        /// Stage name.
        stage: String,
        /// What is counted.
        label: String,
        /// Done so far.
        done: u64,
        /// Total (0 = unknown).
        total: u64,
    },
    /// A stage's warning.
    StageWarning {
        /// Stage name.
        stage: String,
        /// The warning.
        message: String,
    },
    /// A stage finished (ran, cached, restored).
    StageFinished {
        /// Stage name.
        stage: String,
        /// Outcome.
        outcome: Outcome,
        /// Seconds.
        seconds: f64,
        /// Item counts.
        items: ItemCounts,
    },
    /// A stage failed.
    StageFailed {
        /// Stage name.
        stage: String,
        /// The error.
        message: String,
        /// Full log.
        log: Option<PathBuf>,
        /// Last lines of the log.
        log_tail: Vec<String>,
    },
    /// Information that is neither progress nor a warning (jobs submitted to a cluster,
    /// jobs of an earlier run picked up again).
    Note {
        /// Stage name (empty for the whole run).
        stage: String,
        /// The note.
        message: String,
    },
    /// A stage was not attempted.
    StageSkipped {
        /// Stage name.
        stage: String,
        /// Why.
        because: String,
    },
    /// The run is over.
    RunFinished {
        /// The summary.
        summary: RunSummary,
    },
}

/// Receives events (reporters implement it).
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: Event);
}

/// Discards events.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}
