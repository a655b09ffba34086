//! From planned stages to `sbatch` command lines: resource options from the `executor:` block
//! and the stage's declared resources, job arrays cut at the cluster's `MaxArraySize`, the
//! `afterok` chain, output files, and the `brspeech worker` command each job runs.

use std::path::{Path, PathBuf};

use super::journal::Role;
use crate::spec::StageExecutorSpec;

/// Another job a job waits for: submitted in an earlier run (id) or earlier in this list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// A job id.
    Id(String),
    /// Index of a job in the list being submitted.
    Spec(usize),
}

/// One job to submit.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Stage name.
    pub stage: String,
    /// What it does.
    pub role: Role,
    /// Job name (`--job-name`); unique per submission, so a lost answer can be looked up.
    pub name: String,
    /// For arrays: task `t` runs shard `offset + t`.
    pub offset: u32,
    /// For arrays: task ids (`0-99,120`).
    pub tasks: String,
    /// Number of array tasks.
    pub count: u64,
    /// Most tasks running at once.
    pub throttle: Option<u32>,
    /// Jobs that must complete first.
    pub after: Vec<After>,
    /// Resource options (`--partition=...`, `--gres=gpu:1`, extras).
    pub options: Vec<String>,
    /// Output file pattern.
    pub log: PathBuf,
    /// Working folder.
    pub dir: PathBuf,
    /// The command (`brspeech ... worker ...`).
    pub command: Vec<String>,
}

/// `sbatch` options for a job with settings `s` holding `gpu` GPUs.
#[must_use]
pub fn resource_options(s: &StageExecutorSpec, gpu: u32) -> Vec<String> {
    let mut o = Vec::new();
    let mut put = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            o.push(format!("--{name}={v}"));
        }
    };
    put("partition", &s.partition);
    put("account", &s.account);
    put("qos", &s.qos);
    put("time", &s.time);
    put("mem", &s.mem);
    if let Some(c) = s.cpus {
        o.push(format!("--cpus-per-task={c}"));
    }
    if gpu > 0 {
        o.push(format!("--gres=gpu:{gpu}"));
    }
    o.extend(s.extra.iter().cloned());
    o
}

/// Splits the shard numbers `shards` (sorted) into arrays whose task ids stay below
/// `max_array` (task id = shard − offset): `(offset, task ids)`.
#[must_use]
pub fn split_arrays(shards: &[u32], max_array: u32) -> Vec<(u32, Vec<u32>)> {
    let max = max_array.max(2) - 1;
    let mut out: Vec<(u32, Vec<u32>)> = Vec::new();
    for &s in shards {
        let offset = (s / max) * max;
        match out.last_mut() {
            Some((o, tasks)) if *o == offset => tasks.push(s - offset),
            _ => out.push((offset, vec![s - offset])),
        }
    }
    out
}

fn quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| format!("'{s}'"), |q| q.into_owned())
}

/// The shell line a job runs (`exec brspeech ...`), for `--wrap`.
#[must_use]
pub fn wrap(command: &[String]) -> String {
    let words: Vec<String> = command.iter().map(|w| quote(w)).collect();
    format!("exec {}", words.join(" "))
}

impl JobSpec {
    /// The `sbatch` arguments (without `--parsable`), with the dependencies' job ids.
    #[must_use]
    pub fn args(&self, after: &[String]) -> Vec<String> {
        let mut a = vec![
            format!("--job-name={}", self.name),
            format!("--chdir={}", self.dir.display()),
            format!("--output={}", self.log.display()),
        ];
        if !self.tasks.is_empty() {
            let throttle = self.throttle.map_or_else(String::new, |t| format!("%{t}"));
            a.push(format!("--array={}{throttle}", self.tasks));
        }
        if !after.is_empty() {
            a.push(format!("--dependency=afterok:{}", after.join(":")));
            a.push("--kill-on-invalid-dep=yes".to_owned());
        }
        a.extend(self.options.iter().cloned());
        a.push(format!("--wrap={}", wrap(&self.command)));
        a
    }

    /// The shell variable `--dry-run` prints for this job's id.
    #[must_use]
    pub fn var(&self) -> String {
        let stage: String = self
            .stage
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        match self.role {
            Role::Shards => format!("{stage}_shards_{}", self.offset),
            r => format!("{stage}_{}", r.as_str()),
        }
    }
}

/// The job-name prefix of a submission (`brs.<pipeline>.<nonce>`).
#[must_use]
pub fn name_prefix(pipeline: &str, nonce: &str) -> String {
    format!("brs.{pipeline}.{nonce}")
}

/// Where the jobs find the binary, the cache, the pipeline and the journal.
#[derive(Debug, Clone, Copy)]
pub struct WorkerCmd<'a> {
    /// The `brspeech` binary.
    pub exe: &'a Path,
    /// The cache folder.
    pub cache: &'a Path,
    /// The pipeline file.
    pub pipeline: &'a Path,
    /// The journal folder.
    pub journal: &'a Path,
}

impl WorkerCmd<'_> {
    /// The `brspeech worker` command of one job.
    #[must_use]
    pub fn command(
        &self,
        stage: &str,
        step: &str,
        offset: Option<u32>,
        prepare: bool,
    ) -> Vec<String> {
        let mut c = vec![
            self.exe.display().to_string(),
            "--cache-dir".into(),
            self.cache.display().to_string(),
            "worker".into(),
            self.pipeline.display().to_string(),
            "--journal".into(),
            self.journal.display().to_string(),
            "--stage".into(),
            stage.to_owned(),
            "--step".into(),
            step.to_owned(),
        ];
        if let Some(o) = offset {
            c.push("--offset".into());
            c.push(o.to_string());
        }
        if prepare {
            c.push("--prepare".into());
        }
        c
    }
}

/// The script `--dry-run` prints: one `sbatch` line per job, ids kept in shell variables.
#[must_use]
pub fn script(specs: &[JobSpec], known: &dyn Fn(&After) -> Option<String>) -> String {
    let mut out = String::from(
        "#!/bin/sh\n# the jobs `brspeech run --executor slurm` would submit\nset -e\n",
    );
    let mut stage = String::new();
    for spec in specs {
        if spec.stage != stage {
            stage.clone_from(&spec.stage);
            out.push_str(&format!("\n# stage `{stage}`\n"));
        }
        let after: Vec<String> = spec
            .after
            .iter()
            .map(|a| match a {
                After::Spec(k) => format!("${}", specs[*k].var()),
                other => known(other).unwrap_or_default(),
            })
            .collect();
        let words: Vec<String> = spec.args(&after).iter().map(|w| quote(w)).collect();
        // `$var` must stay expandable: unquote the dependency option.
        let words: Vec<String> = words
            .into_iter()
            .map(|w| {
                if w.contains("--dependency=") {
                    w.trim_matches('\'').to_owned()
                } else {
                    w
                }
            })
            .collect();
        let what = match spec.role {
            Role::Shards => format!(
                "  # {} shard task(s), shards {}+task",
                spec.count, spec.offset
            ),
            Role::Prepare => "  # computes the stage key once upstream is committed".to_owned(),
            Role::Final => String::new(),
        };
        out.push_str(&format!(
            "{}=$(sbatch --parsable {}){what}\n",
            spec.var(),
            words.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_stay_below_max_array_size() {
        let shards: Vec<u32> = (0..2500).collect();
        let a = split_arrays(&shards, 1001);
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].0, a[0].1.len()), (0, 1000));
        assert_eq!((a[1].0, a[1].1.len()), (1000, 1000));
        assert_eq!((a[2].0, a[2].1.len()), (2000, 500));
        assert!(a.iter().all(|(_, t)| t.iter().all(|&t| t < 1001)));
        let some = split_arrays(&[3, 1500], 1001);
        assert_eq!(some, vec![(0, vec![3]), (1000, vec![500])]);
    }

    #[test]
    fn options_and_args() {
        let s = StageExecutorSpec {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            mem: Some("16G".into()),
            cpus: Some(4),
            extra: vec!["--exclusive".into()],
            ..StageExecutorSpec::default()
        };
        assert_eq!(
            resource_options(&s, 1),
            [
                "--partition=gpu",
                "--time=01:00:00",
                "--mem=16G",
                "--cpus-per-task=4",
                "--gres=gpu:1",
                "--exclusive"
            ]
        );
        let spec = JobSpec {
            stage: "chunk".into(),
            role: Role::Shards,
            name: "brs.p.x.chunk.shards0".into(),
            offset: 0,
            tasks: "0-9".into(),
            count: 10,
            throttle: Some(4),
            after: vec![],
            options: vec!["--mem=1G".into()],
            log: "/c/logs/%A_%a.out".into(),
            dir: "/w".into(),
            command: vec!["/bin/brspeech".into(), "worker".into(), "a b".into()],
        };
        let a = spec.args(&["12".into(), "13".into()]);
        assert!(a.contains(&"--array=0-9%4".to_owned()));
        assert!(a.contains(&"--dependency=afterok:12:13".to_owned()));
        assert!(a.contains(&"--kill-on-invalid-dep=yes".to_owned()));
        assert_eq!(a.last().unwrap(), "--wrap=exec /bin/brspeech worker 'a b'");
        assert!(
            spec.args(&[])
                .iter()
                .all(|x| !x.starts_with("--dependency"))
        );
    }
}
