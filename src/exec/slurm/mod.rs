//! The Slurm executor (docs/slurm.md): the same plan, keys and cache as the local executor,
//! with the work handed to Slurm. Each stage that must run becomes a few jobs chained with
//! `--dependency=afterok` and `--kill-on-invalid-dep=yes`: a job array over its shards (one
//! task per shard, `--array=...%throttle`), then one job for the whole-stage step and the
//! commit. A stage whose key depends on the output of a stage that has not run yet gets a small
//! first job that computes the key on the cluster once its upstream stages are committed. The
//! jobs run `brspeech worker` (this binary) against the shared cache and commit exactly as the
//! local executor does; the coordinator (`brspeech run --executor slurm`) polls their states in
//! bulk, records finished stages in the lock file, reports failures with their logs and cancels
//! what depends on them. What it submitted is kept in a journal under the cache, so a later
//! `run` or `status` picks the jobs up again (`--detach`, or a coordinator that died).

pub mod client;
mod coordinator;
pub mod journal;
mod status;
mod submit;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{Backoff, Retrying, Slurm, SlurmCli, TaskState};
pub use coordinator::{Finish, dry_run, ensure_idle, run};
pub use status::{JobsReport, StageJobs, jobs_report};
pub use worker::{Step, WorkerArgs, worker};

use crate::cache::CacheError;

/// Settings of one `run --executor slurm`.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Submit and exit without waiting (`--detach`).
    pub detach: bool,
    /// The `brspeech` binary the jobs run (must be reachable from the compute nodes).
    pub exe: PathBuf,
    /// Retries while the controller is busy.
    pub backoff: Backoff,
    /// Shortest and longest time between two polls.
    pub poll: (Duration, Duration),
}

impl SlurmOptions {
    /// Defaults with this process's own binary.
    #[must_use]
    pub fn new(exe: PathBuf, detach: bool) -> Self {
        SlurmOptions {
            detach,
            exe,
            backoff: Backoff::default(),
            poll: (Duration::from_millis(250), Duration::from_secs(2)),
        }
    }
}

/// Errors of the Slurm executor.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command is not installed.
    #[error(
        "`{command}` not found: install Slurm's client commands (`sbatch`, `squeue`, `scancel`, `scontrol`) and set `SLURM_CONF`, or run without `--executor slurm`"
    )]
    NotInstalled {
        /// The command.
        command: String,
    },
    /// A Slurm command failed (rejected options, unknown partition...).
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command.
        command: String,
        /// Its error output.
        message: String,
    },
    /// The controller did not answer (retried by [`Retrying`]).
    #[error("`{command}`: the Slurm controller did not answer: {message}")]
    Transient {
        /// The command.
        command: String,
        /// Its error output.
        message: String,
    },
    /// The controller did not answer within the retry budget.
    #[error(
        "`{command}`: the Slurm controller did not answer after {attempts} attempts in {seconds}s ({message}); check `sinfo` and run again"
    )]
    Busy {
        /// The command.
        command: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent.
        seconds: u64,
        /// The last error output.
        message: String,
    },
    /// A command printed something unexpected.
    #[error("cannot understand the output of `{command}`: {output:?}")]
    Parse {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The journal or a ticket cannot be parsed.
    #[error(
        "cannot read `{}`: {message}; if no jobs of this pipeline are in flight, remove it and run again",
        path.display()
    )]
    Journal {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Jobs of an earlier submission are still in flight for another definition of a stage.
    #[error(
        "stage `{stage}` has Slurm jobs in flight ({jobs}) for {why}; wait for them (`brspeech status` shows them) or cancel them with `scancel {jobs}`, then run again"
    )]
    InFlight {
        /// Stage name.
        stage: String,
        /// Their job ids.
        jobs: String,
        /// Why they cannot be picked up.
        why: String,
    },
    /// A job on the cluster cannot do its part.
    #[error("stage `{stage}`: {message}")]
    Worker {
        /// Stage name.
        stage: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The stage's own work failed inside a job.
    #[error(transparent)]
    Stage(crate::stages::StageError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl SlurmError {
    /// Whether another run's jobs are in the way (exit code 5, like a held cache lock).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, SlurmError::InFlight { .. })
    }
}
