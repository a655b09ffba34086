//! What the jobs of a pipeline's last submission are doing: each job's or array task's state
//! from one bulk `squeue` call (or, for jobs Slurm no longer knows, from what they left in the
//! cache), summed up per stage for `brspeech status` and used by the coordinator.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::SlurmError;
use super::client::{Slurm, TaskState};
use super::journal::{Job, Journal, Paths, Role, parse_ranges};
use crate::cache::Cache;
use crate::spec::Pipeline;

/// One job's or task's state as the executor understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum View {
    /// Waiting (`reason`: `Dependency`, `Resources`, `JobArrayTaskLimit`...).
    Pending(String),
    /// Running (or completing).
    Running,
    /// Ended successfully.
    Completed,
    /// Ended unsuccessfully: state and reason (`FAILED`, `NonZeroExitCode`).
    Failed(String, String),
    /// Cancelled (`reason` tells `DependencyNeverSatisfied` apart).
    Cancelled(String),
    /// Slurm does not know it (any more).
    Unknown,
}

impl View {
    pub(super) fn of(state: Option<&TaskState>) -> View {
        let Some(s) = state else { return View::Unknown };
        if !s.ended() {
            return if s.state == "PENDING" {
                View::Pending(s.reason.clone())
            } else {
                View::Running
            };
        }
        match s.state.as_str() {
            "COMPLETED" => View::Completed,
            "CANCELLED" => View::Cancelled(s.reason.clone()),
            other => View::Failed(other.to_owned(), s.reason.clone()),
        }
    }

    pub(super) fn ended(&self) -> bool {
        !matches!(self, View::Pending(_) | View::Running)
    }
}

/// The tasks of a job: each array task id, or `None` for a plain job.
pub(super) fn tasks_of(job: &Job) -> Vec<Option<u32>> {
    if job.role == Role::Shards {
        parse_ranges(&job.tasks).into_iter().map(Some).collect()
    } else {
        vec![None]
    }
}

/// Task states by `(job id, task id)`.
pub(super) type States = HashMap<(String, Option<u32>), TaskState>;

pub(super) fn index(states: Vec<TaskState>) -> States {
    states
        .into_iter()
        .map(|s| ((s.job.clone(), s.task), s))
        .collect()
}

/// A stage's jobs in the last submission.
#[derive(Debug, Clone, Serialize)]
pub struct StageJobs {
    /// Stage name.
    pub name: String,
    /// `pending`, `running`, `done`, `failed` or `cancelled`.
    pub state: &'static str,
    /// Shard tasks submitted.
    pub shards: u64,
    /// Shard tasks done.
    pub shards_done: u64,
    /// Shard tasks running.
    pub shards_running: u64,
    /// Job ids (`12`, `13` for the array, ...).
    pub jobs: Vec<String>,
    /// Why the stage's jobs wait, when they do (`Dependency`, `Resources`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Jobs or tasks cancelled (by brspeech after a failure, by `scancel`, or by Slurm).
    pub cancelled: u64,
    /// Failed tasks with their output files.
    pub failed: Vec<(String, PathBuf)>,
}

/// The last submission of a pipeline and the state of its jobs.
#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    /// When it was submitted (seconds since the epoch).
    pub submitted_at: u64,
    /// Whether a coordinator is attached (its process is alive).
    pub attached: bool,
    /// Pid and host of the process that submitted.
    pub submitter: String,
    /// Whether `squeue` answered.
    pub reachable: bool,
    /// Where the jobs' output files are.
    pub logs: PathBuf,
    /// Per stage.
    pub stages: Vec<StageJobs>,
}

impl JobsReport {
    /// Whether any job is still pending or running.
    #[must_use]
    pub fn live(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.state, "pending" | "running"))
    }

    /// The section `brspeech status` prints.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.submitted_at),
        );
        let who = if self.attached {
            format!("; {} is waiting for them", self.submitter)
        } else if self.live() {
            "; no coordinator is attached: `brspeech run --executor slurm` waits for them and records the results".to_owned()
        } else {
            String::new()
        };
        let _ = writeln!(out, "\nslurm jobs of the last submission ({when}){who}:");
        if !self.reachable {
            let _ = writeln!(
                out,
                "  (squeue did not answer: states are guessed from the cache)"
            );
        }
        let w = self
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        for s in &self.stages {
            let mut what = format!("jobs {}", s.jobs.join(","));
            if s.shards > 0 {
                let _ = write!(
                    what,
                    "; shards {}/{} done, {} running",
                    s.shards_done, s.shards, s.shards_running
                );
            }
            if let Some(r) = &s.waiting {
                let _ = write!(what, "; waiting ({r})");
            }
            if s.cancelled > 0 {
                let _ = write!(what, "; {} cancelled", s.cancelled);
            }
            let _ = writeln!(out, "  {:<w$}  {:<9}  {what}", s.name, s.state);
            for (task, log) in &s.failed {
                let _ = writeln!(
                    out,
                    "  {:<w$}  {:<9}  task {task}: {}",
                    "",
                    "",
                    log.display()
                );
            }
        }
        let _ = writeln!(out, "  logs: {}", self.logs.display());
        out
    }
}

/// Whether process `pid` runs (a zombie does not count: it holds no lock and polls nothing).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the process that wrote `j` is alive on this host and waiting for its jobs.
pub(super) fn attached(j: &Journal) -> bool {
    !j.detached
        && j.host == gethostname::gethostname().to_string_lossy()
        && j.pid != std::process::id()
        && pid_alive(j.pid)
}

/// The state of the last submission's jobs for `pipeline`, `None` when there is none.
///
/// # Errors
/// A journal that cannot be read.
pub fn jobs_report(
    cache: &Cache,
    pipeline: &Pipeline,
    slurm: &dyn Slurm,
) -> Result<Option<JobsReport>, SlurmError> {
    let paths = Paths::new(cache, pipeline);
    let Some(j) = paths.load_journal()?.filter(|j| !j.stages.is_empty()) else {
        return Ok(None);
    };
    let (states, reachable) = match slurm.squeue(&j.job_ids()) {
        Ok(s) => (index(s), true),
        Err(_) => (States::new(), false),
    };
    let mut stages = Vec::new();
    for s in &j.stages {
        let mut any_running = false;
        let mut any_failed = false;
        let mut any_cancelled = false;
        let mut all_done = true;
        let mut waiting = None;
        let mut shards = 0;
        let mut shards_done = 0;
        let mut shards_running = 0;
        let mut failed = Vec::new();
        let mut cancelled = 0;
        let ticket = paths.load_ticket(&s.name).ok().flatten();
        for job in &s.jobs {
            for task in tasks_of(job) {
                let mut v = View::of(states.get(&(job.id.clone(), task)));
                if v == View::Unknown {
                    // Slurm forgot it: what did it leave behind?
                    let key = ticket.as_ref().map(|t| t.key);
                    let done = match (job.role, task, key) {
                        (Role::Shards, Some(t), Some(k)) => {
                            paths.shard(&k, job.offset + t).exists()
                                || cache.entry(&k).ok().flatten().is_some()
                        }
                        (Role::Prepare, _, _) => ticket.is_some(),
                        (Role::Final, _, Some(k)) => {
                            ticket.as_ref().is_some_and(|t| t.cached)
                                || cache.entry(&k).ok().flatten().is_some()
                        }
                        _ => false,
                    };
                    v = if done {
                        View::Completed
                    } else if reachable {
                        View::Failed("UNKNOWN".into(), "no longer known to Slurm".into())
                    } else {
                        View::Pending("squeue did not answer".into())
                    };
                }
                let label = task.map_or_else(|| job.id.clone(), |t| format!("{}_{t}", job.id));
                if job.role == Role::Shards {
                    shards += 1;
                }
                match &v {
                    View::Completed => {
                        if job.role == Role::Shards {
                            shards_done += 1;
                        }
                    }
                    View::Running => {
                        any_running = true;
                        all_done = false;
                        if job.role == Role::Shards {
                            shards_running += 1;
                        }
                    }
                    View::Pending(r) => {
                        all_done = false;
                        waiting.get_or_insert_with(|| r.clone());
                    }
                    View::Cancelled(_) => {
                        all_done = false;
                        any_cancelled = true;
                        cancelled += 1;
                    }
                    View::Failed(..) | View::Unknown => {
                        all_done = false;
                        any_failed = true;
                        failed.push((label, job.log_of(task)));
                    }
                }
            }
        }
        let live = !all_done && (any_running || waiting.is_some());
        let state = if any_failed {
            if live { "running" } else { "failed" }
        } else if all_done {
            "done"
        } else if any_running {
            "running"
        } else if waiting.is_some() {
            "pending"
        } else if any_cancelled {
            "cancelled"
        } else {
            "failed"
        };
        stages.push(StageJobs {
            name: s.name.clone(),
            state,
            shards,
            shards_done,
            shards_running,
            jobs: s.jobs.iter().map(|j| j.id.clone()).collect(),
            waiting: if any_running { None } else { waiting },
            cancelled,
            failed,
        });
    }
    Ok(Some(JobsReport {
        submitted_at: j.submitted_at,
        attached: attached(&j),
        submitter: format!("pid {} on host `{}`", j.pid, j.host),
        reachable,
        logs: paths.dir.join("logs"),
        stages,
    }))
}
