//! The `executor:` block of a pipeline (cluster settings for the Slurm executor): its shape,
//! the per-stage overrides under `executor.stages`, and the checks that report every bad value
//! at its YAML path (time and memory formats, unknown stages, `sbatch` options brspeech sets
//! itself).

use std::collections::BTreeMap;

use super::{Issue, Pipeline, did_you_mean, positions};

/// The `executor:` block (read by the Slurm executor; the local executor ignores it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    /// Slurm partition (`--partition`).
    pub partition: Option<String>,
    /// Slurm account (`--account`).
    pub account: Option<String>,
    /// Slurm quality of service (`--qos`).
    pub qos: Option<String>,
    /// Time limit per job or array task (`--time`, e.g. `02:00:00`, `1-12:00:00`, `30`).
    pub time: Option<String>,
    /// Memory per job or array task (`--mem`, e.g. `16G`).
    pub mem: Option<String>,
    /// CPUs per job or array task (`--cpus-per-task`).
    pub cpus: Option<u32>,
    /// Most array tasks of one stage running at once (`--array=...%N`); default: no limit.
    pub throttle: Option<u32>,
    /// Further `sbatch` options, passed as written (e.g. `--exclusive`, `--constraint=a100`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Per-stage settings, by stage name: each field given replaces the pipeline-wide one;
    /// `extra` options are added after the pipeline-wide ones.
    #[serde(default)]
    pub stages: BTreeMap<String, StageExecutorSpec>,
}

/// Slurm settings of one stage (`executor.stages.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageExecutorSpec {
    /// Slurm partition (`--partition`).
    pub partition: Option<String>,
    /// Slurm account (`--account`).
    pub account: Option<String>,
    /// Slurm quality of service (`--qos`).
    pub qos: Option<String>,
    /// Time limit per job or array task (`--time`).
    pub time: Option<String>,
    /// Memory per job or array task (`--mem`).
    pub mem: Option<String>,
    /// CPUs per job or array task (`--cpus-per-task`).
    pub cpus: Option<u32>,
    /// Most array tasks of this stage running at once (`%N`).
    pub throttle: Option<u32>,
    /// Further `sbatch` options, added after the pipeline-wide `extra`.
    #[serde(default)]
    pub extra: Vec<String>,
}

/// The settings that apply to one stage: the pipeline-wide ones with the stage's overrides.
#[must_use]
pub fn effective(spec: Option<&ExecutorSpec>, stage: &str) -> StageExecutorSpec {
    let Some(spec) = spec else {
        return StageExecutorSpec::default();
    };
    let own = spec.stages.get(stage).cloned().unwrap_or_default();
    StageExecutorSpec {
        partition: own.partition.or_else(|| spec.partition.clone()),
        account: own.account.or_else(|| spec.account.clone()),
        qos: own.qos.or_else(|| spec.qos.clone()),
        time: own.time.or_else(|| spec.time.clone()),
        mem: own.mem.or_else(|| spec.mem.clone()),
        cpus: own.cpus.or(spec.cpus),
        throttle: own.throttle.or(spec.throttle),
        extra: spec.extra.iter().chain(&own.extra).cloned().collect(),
    }
}

/// The pipeline-wide settings alone (for jobs that belong to no single stage's resources,
/// such as computing a stage's key on the cluster).
#[must_use]
pub fn pipeline_wide(spec: Option<&ExecutorSpec>) -> StageExecutorSpec {
    spec.map(|s| StageExecutorSpec {
        partition: s.partition.clone(),
        account: s.account.clone(),
        qos: s.qos.clone(),
        time: s.time.clone(),
        mem: s.mem.clone(),
        cpus: s.cpus,
        throttle: s.throttle,
        extra: s.extra.clone(),
    })
    .unwrap_or_default()
}

/// `sbatch` options brspeech sets itself; `extra` must not contain them.
pub const MANAGED_OPTIONS: &[&str] = &[
    "-a",
    "--array",
    "-d",
    "--dependency",
    "--kill-on-invalid-dep",
    "-o",
    "--output",
    "-e",
    "--error",
    "-J",
    "--job-name",
    "--parsable",
    "--wrap",
    "-D",
    "--chdir",
    "-W",
    "--wait",
    "--gres",
    "--gpus",
    "-G",
];

/// Whether `time` is a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`,
/// or `UNLIMITED` / `INFINITE`.
#[must_use]
pub fn valid_time(time: &str) -> bool {
    if matches!(time, "UNLIMITED" | "INFINITE" | "unlimited" | "infinite") {
        return true;
    }
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match time.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, time),
    };
    if days.is_some_and(|d| !digits(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    if !parts.iter().all(|p| digits(p)) {
        return false;
    }
    (1..=3).contains(&parts.len())
}

/// Whether `mem` is a Slurm memory size: digits with an optional `K`, `M`, `G` or `T` unit.
#[must_use]
pub fn valid_mem(mem: &str) -> bool {
    let body = mem
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(mem);
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit())
}

fn check_word(issues: &mut Vec<Issue>, path: &str, what: &str, value: Option<&String>) {
    if let Some(v) = value
        && (v.is_empty() || v.chars().any(char::is_whitespace))
    {
        issues.push(Issue::new(
            positions::child(path, what),
            format!("`{what}` must be one word, not {v:?}"),
        ));
    }
}

fn check_settings(issues: &mut Vec<Issue>, path: &str, s: &StageExecutorSpec, extra_base: &str) {
    check_word(issues, path, "partition", s.partition.as_ref());
    check_word(issues, path, "account", s.account.as_ref());
    check_word(issues, path, "qos", s.qos.as_ref());
    if let Some(t) = &s.time
        && !valid_time(t)
    {
        issues.push(
            Issue::new(
                positions::child(path, "time"),
                format!("invalid Slurm time limit {t:?}"),
            )
            .with_help(
                "write minutes (`30`), `HH:MM:SS` (`02:00:00`) or `D-HH:MM:SS` (`1-12:00:00`)",
            ),
        );
    }
    if let Some(m) = &s.mem
        && !valid_mem(m)
    {
        issues.push(
            Issue::new(
                positions::child(path, "mem"),
                format!("invalid Slurm memory size {m:?}"),
            )
            .with_help("write a number with an optional unit: `16G`, `4000M`"),
        );
    }
    for (what, v) in [("cpus", s.cpus), ("throttle", s.throttle)] {
        if v == Some(0) {
            issues.push(Issue::new(
                positions::child(path, what),
                format!("`{what}` must be at least 1"),
            ));
        }
    }
    for (i, opt) in s.extra.iter().enumerate() {
        let at = positions::item(&positions::child(extra_base, "extra"), i);
        let name = opt.split_once('=').map_or(opt.as_str(), |(n, _)| n);
        if !opt.starts_with('-') {
            issues.push(
                Issue::new(at, format!("`extra` option {opt:?} is not an option"))
                    .with_help("write each `sbatch` option as one item, e.g. `--exclusive` or `--constraint=a100`"),
            );
        } else if MANAGED_OPTIONS.contains(&name)
            || (name.len() > 2 && !name.starts_with("--") && MANAGED_OPTIONS.contains(&&name[..2]))
        {
            issues.push(
                Issue::new(at, format!("`{name}` is set by brspeech and cannot be given in `extra`"))
                    .with_help("GPUs come from the stage's `resources.gpu`; array, dependency, output and job-name options are managed per job"),
            );
        }
    }
}

/// Every problem of the `executor:` block, located at its YAML path.
#[must_use]
pub fn check(pipeline: &Pipeline) -> Vec<Issue> {
    let mut issues = Vec::new();
    let Some(spec) = &pipeline.executor else {
        return issues;
    };
    check_settings(
        &mut issues,
        "executor",
        &pipeline_wide(Some(spec)),
        "executor",
    );
    for (name, s) in &spec.stages {
        let path = positions::child(&positions::child("executor", "stages"), name);
        if pipeline.stage(name).is_none() {
            let names = pipeline.stages.iter().map(|s| s.name.as_str());
            issues.push(
                Issue::new(
                    &path,
                    format!("`executor.stages` names unknown stage `{name}`"),
                )
                .at_key()
                .with_help_opt(did_you_mean(name, names)),
            );
            continue;
        }
        check_settings(&mut issues, &path, s, &path);
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_and_memory_formats() {
        for ok in [
            "30",
            "30:00",
            "02:00:00",
            "1-12",
            "1-12:30",
            "1-12:30:00",
            "UNLIMITED",
        ] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "2h", "1:2:3:4", "-1", "1-", "a-1", "1-1:1:1:1", "1.5"] {
            assert!(!valid_time(bad), "{bad}");
        }
        for ok in ["16G", "4000", "512M", "1t"] {
            assert!(valid_mem(ok), "{ok}");
        }
        for bad in ["", "G", "16GB", "1.5G", "-1"] {
            assert!(!valid_mem(bad), "{bad}");
        }
    }

    #[test]
    fn stage_settings_override_and_extra_adds() {
        let spec = ExecutorSpec {
            partition: Some("cpu".into()),
            time: Some("10".into()),
            extra: vec!["--exclusive".into()],
            stages: [(
                "train".to_owned(),
                StageExecutorSpec {
                    partition: Some("gpu".into()),
                    extra: vec!["--constraint=a100".into()],
                    ..StageExecutorSpec::default()
                },
            )]
            .into_iter()
            .collect(),
            ..ExecutorSpec::default()
        };
        let t = effective(Some(&spec), "train");
        assert_eq!(t.partition.as_deref(), Some("gpu"));
        assert_eq!(t.time.as_deref(), Some("10"));
        assert_eq!(t.extra, ["--exclusive", "--constraint=a100"]);
        let o = effective(Some(&spec), "other");
        assert_eq!(o.partition.as_deref(), Some("cpu"));
        assert_eq!(o.extra, ["--exclusive"]);
        assert_eq!(effective(None, "x"), StageExecutorSpec::default());
    }
}
