//! Talking to Slurm: `sbatch`, `squeue`, `scancel` and `scontrol` behind the [`Slurm`] trait
//! (one attempt per call, errors classified as transient or not), and [`Retrying`], which
//! retries transient failures (a busy or restarting controller) with exponential back-off.
//! States come from one bulk `squeue -h -t all -r -j <ids>` call per poll; `sacct` (which
//! needs slurmdbd) is never used.

use std::process::Command;
use std::time::{Duration, Instant};

use super::SlurmError;

/// One job or array task as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The job id of a plain job, or the array job id of an array task (`%F`).
    pub job: String,
    /// The array task id (`%K`); `None` for a plain job.
    pub task: Option<u32>,
    /// Job state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`...).
    pub state: String,
    /// Why it is pending or how it ended (`Dependency`, `NonZeroExitCode`...).
    pub reason: String,
}

impl TaskState {
    /// Whether the job or task has ended (whatever the outcome).
    #[must_use]
    pub fn ended(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
                | "RESV_DEL_HOLD"
        )
    }

    /// Whether it ended successfully.
    #[must_use]
    pub fn completed(&self) -> bool {
        self.state == "COMPLETED"
    }

    /// Whether it is pending for a reason that never resolves by itself.
    #[must_use]
    pub fn stuck(&self) -> bool {
        self.state == "PENDING"
            && (matches!(
                self.reason.as_str(),
                "PartitionConfig"
                    | "BadConstraints"
                    | "InvalidAccount"
                    | "InvalidQOS"
                    | "PartitionTimeLimit"
                    | "PartitionNodeLimit"
                    | "QOSMaxWallDurationPerJobLimit"
                    | "AccountNotAllowed"
                    | "QOSNotAllowed"
            ) || self.reason.contains("launch_failed")
                || self.reason.contains("launch failed"))
    }
}

/// The Slurm commands the executor uses; each call is one attempt.
pub trait Slurm: Send + Sync {
    /// `sbatch --parsable ARGS`: the new job's id.
    ///
    /// # Errors
    /// [`SlurmError::Transient`] when the controller did not answer, else the failure.
    fn sbatch(&self, args: &[String]) -> Result<String, SlurmError>;

    /// States of the jobs `ids` and all their array tasks (`squeue -h -t all -r -j`); ids
    /// Slurm no longer knows are left out.
    ///
    /// # Errors
    /// As [`Slurm::sbatch`].
    fn squeue(&self, ids: &[String]) -> Result<Vec<TaskState>, SlurmError>;

    /// `scancel` of jobs or array tasks (`123`, `123_4`); `pending_only` leaves running
    /// ones alone.
    ///
    /// # Errors
    /// As [`Slurm::sbatch`].
    fn scancel(&self, ids: &[String], pending_only: bool) -> Result<(), SlurmError>;

    /// The id of a job named `name` (to tell whether a submission that timed out went
    /// through), if any.
    ///
    /// # Errors
    /// As [`Slurm::sbatch`].
    fn find_by_name(&self, name: &str) -> Result<Option<String>, SlurmError>;

    /// `MaxArraySize` of the cluster (array task ids must stay below it).
    ///
    /// # Errors
    /// As [`Slurm::sbatch`].
    fn max_array_size(&self) -> Result<u32, SlurmError>;
}

/// Messages of a controller that is busy, restarting or briefly unreachable.
const TRANSIENT: &[&str] = &[
    "Socket timed out",
    "Unable to contact slurm controller",
    "Resource temporarily unavailable",
    "temporarily unable to accept job",
    "Zero Bytes were transmitted",
    "Connection refused",
    "Connection timed out",
    "Transport endpoint is not connected",
    "Slurm backup controller in standby mode",
];

fn transient(stderr: &str) -> bool {
    TRANSIENT.iter().any(|t| stderr.contains(t))
}

/// The real commands, found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlurmCli;

impl SlurmCli {
    fn exec(&self, program: &str, args: &[String]) -> Result<String, SlurmError> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SlurmError::NotInstalled {
                    command: program.to_owned(),
                },
                _ => SlurmError::Failed {
                    command: program.to_owned(),
                    message: e.to_string(),
                },
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let message = if stderr.is_empty() {
            format!("{} ({})", stdout.trim(), out.status)
        } else {
            stderr
        };
        if transient(&message) {
            Err(SlurmError::Transient {
                command: program.to_owned(),
                message,
            })
        } else {
            Err(SlurmError::Failed {
                command: program.to_owned(),
                message,
            })
        }
    }
}

/// Parses `squeue -o '%F|%K|%T|%r'` lines.
///
/// # Errors
/// [`SlurmError::Parse`] for a line that does not have the four fields.
pub fn parse_squeue(text: &str) -> Result<Vec<TaskState>, SlurmError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let [job, task, state, reason] = f[..] else {
            return Err(SlurmError::Parse {
                command: "squeue".into(),
                output: line.to_owned(),
            });
        };
        // A pending array remainder (`1-5%1`) is expanded by `-r`; anything not a number is a
        // plain job's `N/A`.
        out.push(TaskState {
            job: job.to_owned(),
            task: task.parse().ok(),
            state: state
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(out)
}

impl Slurm for SlurmCli {
    fn sbatch(&self, args: &[String]) -> Result<String, SlurmError> {
        let mut all = vec!["--parsable".to_owned()];
        all.extend_from_slice(args);
        let out = self.exec("sbatch", &all)?;
        // `--parsable` prints `id` or `id;cluster`.
        let id = out.trim().split(';').next().unwrap_or_default().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SlurmError::Parse {
                command: "sbatch".into(),
                output: out,
            });
        }
        Ok(id)
    }

    fn squeue(&self, ids: &[String]) -> Result<Vec<TaskState>, SlurmError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args = [
            "-h".to_owned(),
            "-t".to_owned(),
            "all".to_owned(),
            "-r".to_owned(),
            "-o".to_owned(),
            "%F|%K|%T|%r".to_owned(),
            "-j".to_owned(),
            ids.join(","),
        ];
        match self.exec("squeue", &args) {
            Ok(text) => parse_squeue(&text),
            // Every id is unknown (finished longer than MinJobAge ago).
            Err(SlurmError::Failed { message, .. }) if message.contains("Invalid job id") => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    fn scancel(&self, ids: &[String], pending_only: bool) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = Vec::new();
        if pending_only {
            args.push("--state=PENDING".to_owned());
        }
        args.extend_from_slice(ids);
        match self.exec("scancel", &args) {
            Ok(_) => Ok(()),
            // Already gone: nothing to cancel.
            Err(SlurmError::Failed { message, .. })
                if message.contains("Invalid job id")
                    || message.contains("already completing or completed") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn find_by_name(&self, name: &str) -> Result<Option<String>, SlurmError> {
        let args = [
            "-h".to_owned(),
            "-t".to_owned(),
            "all".to_owned(),
            "-o".to_owned(),
            "%F".to_owned(),
            "-n".to_owned(),
            name.to_owned(),
        ];
        let out = self.exec("squeue", &args)?;
        Ok(out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned))
    }

    fn max_array_size(&self) -> Result<u32, SlurmError> {
        let out = self.exec("scontrol", &["show".to_owned(), "config".to_owned()])?;
        Ok(out
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "MaxArraySize").then(|| v.trim().parse().ok())?
            })
            .unwrap_or(1001))
    }
}

/// How long and how often transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait.
    pub first: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Give up after this much time in total.
    pub budget: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            budget: Duration::from_secs(600),
        }
    }
}

/// A [`Slurm`] that retries transient failures with exponential back-off, telling `note`
/// about each retry. A submission whose answer was lost is looked up by its job name before
/// it is sent again, so a job is never submitted twice.
pub struct Retrying<'a> {
    inner: &'a dyn Slurm,
    backoff: Backoff,
    note: &'a (dyn Fn(String) + Sync),
}

impl<'a> Retrying<'a> {
    /// Wraps `inner`.
    pub fn new(inner: &'a dyn Slurm, backoff: Backoff, note: &'a (dyn Fn(String) + Sync)) -> Self {
        Retrying {
            inner,
            backoff,
            note,
        }
    }

    fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(u32) -> Result<T, SlurmError>,
    ) -> Result<T, SlurmError> {
        let t0 = Instant::now();
        let mut wait = self.backoff.first;
        let mut n = 0;
        loop {
            match attempt(n) {
                Err(SlurmError::Transient { command, message }) => {
                    n += 1;
                    if t0.elapsed() + wait > self.backoff.budget {
                        return Err(SlurmError::Busy {
                            command,
                            attempts: n,
                            seconds: t0.elapsed().as_secs(),
                            message,
                        });
                    }
                    (self.note)(format!(
                        "{what}: the Slurm controller did not answer ({message}); retrying in {:.1}s",
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(self.backoff.max);
                }
                other => return other,
            }
        }
    }

    /// `sbatch` of a job named `name` (which `args` must set).
    ///
    /// # Errors
    /// A non-transient failure, or [`SlurmError::Busy`] after the back-off budget.
    pub fn sbatch(&self, name: &str, args: &[String]) -> Result<String, SlurmError> {
        self.retry("sbatch", |n| {
            if n > 0
                && let Ok(Some(id)) = self.inner.find_by_name(name)
            {
                return Ok(id);
            }
            self.inner.sbatch(args)
        })
    }

    /// See [`Slurm::squeue`].
    ///
    /// # Errors
    /// As [`Retrying::sbatch`].
    pub fn squeue(&self, ids: &[String]) -> Result<Vec<TaskState>, SlurmError> {
        self.retry("squeue", |_| self.inner.squeue(ids))
    }

    /// See [`Slurm::scancel`].
    ///
    /// # Errors
    /// As [`Retrying::sbatch`].
    pub fn scancel(&self, ids: &[String], pending_only: bool) -> Result<(), SlurmError> {
        self.retry("scancel", |_| self.inner.scancel(ids, pending_only))
    }

    /// See [`Slurm::max_array_size`].
    ///
    /// # Errors
    /// As [`Retrying::sbatch`].
    pub fn max_array_size(&self) -> Result<u32, SlurmError> {
        self.retry("scontrol", |_| self.inner.max_array_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn squeue_lines_parse_into_tasks() {
        let text = "6|N/A|COMPLETED|None\n7|1|PENDING|JobArrayTaskLimit\n7|0|RUNNING|None\n7|2|CANCELLED by 0|None\n";
        let t = parse_squeue(text).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].task, None);
        assert!(t[0].completed() && t[0].ended());
        assert_eq!(t[1].task, Some(1));
        assert!(!t[1].ended());
        assert_eq!(t[3].state, "CANCELLED");
        assert!(t[3].ended() && !t[3].completed());
        assert!(parse_squeue("garbage").is_err());
        let stuck = TaskState {
            job: "1".into(),
            task: None,
            state: "PENDING".into(),
            reason: "PartitionConfig".into(),
        };
        assert!(stuck.stuck());
    }

    struct Flaky {
        fails: Mutex<u32>,
        submitted: Mutex<Vec<String>>,
        lost_answer: bool,
    }

    impl Slurm for Flaky {
        fn sbatch(&self, args: &[String]) -> Result<String, SlurmError> {
            let mut f = self.fails.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                if self.lost_answer {
                    // The controller took the job but the answer timed out.
                    self.submitted.lock().unwrap().push(args[0].clone());
                }
                return Err(SlurmError::Transient {
                    command: "sbatch".into(),
                    message: "Socket timed out on send/recv operation".into(),
                });
            }
            self.submitted.lock().unwrap().push(args[0].clone());
            Ok("42".into())
        }
        fn squeue(&self, _: &[String]) -> Result<Vec<TaskState>, SlurmError> {
            Ok(Vec::new())
        }
        fn scancel(&self, _: &[String], _: bool) -> Result<(), SlurmError> {
            Ok(())
        }
        fn find_by_name(&self, name: &str) -> Result<Option<String>, SlurmError> {
            Ok(self
                .submitted
                .lock()
                .unwrap()
                .iter()
                .any(|n| n == name)
                .then(|| "41".to_owned()))
        }
        fn max_array_size(&self) -> Result<u32, SlurmError> {
            Ok(1001)
        }
    }

    fn fast() -> Backoff {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            budget: Duration::from_millis(200),
        }
    }

    #[test]
    fn busy_controller_is_retried_and_a_lost_answer_is_not_submitted_twice() {
        let notes = Mutex::new(Vec::new());
        let note = |m: String| notes.lock().unwrap().push(m);
        let flaky = Flaky {
            fails: Mutex::new(2),
            submitted: Mutex::new(Vec::new()),
            lost_answer: false,
        };
        let r = Retrying::new(&flaky, fast(), &note);
        assert_eq!(r.sbatch("job-a", &["job-a".into()]).unwrap(), "42");
        assert_eq!(notes.lock().unwrap().len(), 2);
        assert!(notes.lock().unwrap()[0].contains("retrying"));

        let lost = Flaky {
            fails: Mutex::new(1),
            submitted: Mutex::new(Vec::new()),
            lost_answer: true,
        };
        let r = Retrying::new(&lost, fast(), &note);
        assert_eq!(r.sbatch("job-b", &["job-b".into()]).unwrap(), "41");
        assert_eq!(lost.submitted.lock().unwrap().len(), 1, "submitted once");

        let dead = Flaky {
            fails: Mutex::new(u32::MAX),
            submitted: Mutex::new(Vec::new()),
            lost_answer: false,
        };
        let r = Retrying::new(&dead, fast(), &note);
        let e = r.sbatch("job-c", &["job-c".into()]).unwrap_err();
        assert!(matches!(e, SlurmError::Busy { .. }), "{e}");
    }
}
