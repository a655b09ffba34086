//! What the Slurm executor keeps in the cache (`cache/slurm/`), so that a later `run` or
//! `status` (another process, maybe after the coordinator died) can pick the jobs up again:
//!
//! ```text
//! cache/slurm/
//!   runs/<pipeline>-<path hash>/   one folder per pipeline file
//!     journal.json                 the jobs submitted per stage (written after every sbatch)
//!     tickets/<stage>.json         a stage's key, components and inputs, once known
//!     logs/<stage>/                the jobs' output files
//!   shards/<stage key>/<n>.json    shard n of that key is done (items, memo entries used)
//! ```
//!
//! A ticket is written by the coordinator when the key is known at submission, otherwise by
//! the stage's first job on the cluster (once its upstream stages are committed). Shard
//! results are keyed by stage key, not by run: a rerun skips shards that are already done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;
use crate::cache::{Cache, CacheError, StageKey, fsutil};
use crate::exec::key::KeyComponents;
use crate::spec::{Pipeline, StageDef};
use crate::stages::ItemCounts;

/// Format version of journals and tickets.
pub const FORMAT: u32 = 1;

/// What a job does for its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Computes the stage's key once its upstream stages are committed (writes the ticket).
    Prepare,
    /// An array of shard tasks.
    Shards,
    /// The whole-stage step and the commit (and the key first, for a deferred whole-stage job).
    Final,
}

impl Role {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prepare => "prepare",
            Role::Shards => "shards",
            Role::Final => "final",
        }
    }
}

/// One submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Slurm job id (the array job id for arrays).
    pub id: String,
    /// What it does.
    pub role: Role,
    /// For arrays: task `t` runs shard `offset + t`.
    #[serde(default)]
    pub offset: u32,
    /// For arrays: the task ids (`0-99,120`, without the throttle).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tasks: String,
    /// Output file pattern (`%A`, `%a`, `%j` as sbatch expands them).
    pub log: PathBuf,
}

impl Job {
    /// The output file of task `task` (arrays) or of the job.
    #[must_use]
    pub fn log_of(&self, task: Option<u32>) -> PathBuf {
        let text = self.log.to_string_lossy();
        let t = task.map_or_else(String::new, |t| t.to_string());
        PathBuf::from(
            text.replace("%A", &self.id)
                .replace("%a", &t)
                .replace("%j", &self.id),
        )
    }
}

/// A stage's jobs in one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStage {
    /// Stage name.
    pub name: String,
    /// Digest of the stage's definition when submitted (see [`def_digest`]).
    pub def: String,
    /// The key, when known at submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<StageKey>,
    /// Run even if cached (`--force`).
    #[serde(default)]
    pub forced: bool,
    /// The stage's shard count.
    pub shards: u32,
    /// Shards submitted (the others were already done).
    pub submitted_shards: u64,
    /// Its jobs, in submission order.
    pub jobs: Vec<Job>,
}

/// The last submission for a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub format: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file.
    pub file: PathBuf,
    /// When it was submitted (seconds since the epoch).
    pub submitted_at: u64,
    /// Process that submitted it.
    pub pid: u32,
    /// Host it ran on.
    pub host: String,
    /// Whether that process detached (`--detach`).
    #[serde(default)]
    pub detached: bool,
    /// Stages with jobs, in submission order.
    pub stages: Vec<JournalStage>,
}

impl Journal {
    /// The record of stage `name`.
    #[must_use]
    pub fn stage(&self, name: &str) -> Option<&JournalStage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Every job id of the submission.
    #[must_use]
    pub fn job_ids(&self) -> Vec<String> {
        self.stages
            .iter()
            .flat_map(|s| s.jobs.iter().map(|j| j.id.clone()))
            .collect()
    }
}

/// A stage's key and what its jobs need to run it: written once the key is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Format version.
    pub format: u32,
    /// Stage name.
    pub stage: String,
    /// The stage key.
    pub key: StageKey,
    /// Its components (recorded in the manifest and the lock file).
    pub components: KeyComponents,
    /// Upstream stages' keys by name (their committed outputs are the stage's inputs).
    pub inputs: BTreeMap<String, StageKey>,
    /// Key of the stage's previous run (its committed output is `prev_output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<StageKey>,
    /// Run and replace the entry even if it exists.
    #[serde(default)]
    pub forced: bool,
    /// The entry exists already (early cutoff): the stage's jobs do nothing.
    pub cached: bool,
    /// Why it runs.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// A finished shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardDone {
    /// Items computed and reused.
    pub items: ItemCounts,
    /// Memo entries (`ns/key`) the shard used, recorded in the stage's manifest.
    pub memos: Vec<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// The Slurm job that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Digest of what defines a stage (kind, params, deps, outs, cmd, needs, config), to tell
/// whether a job in flight was submitted for the stage as it is now written.
#[must_use]
pub fn def_digest(def: &StageDef) -> String {
    let v = serde_json::json!({
        "kind": def.kind,
        "params": def.params,
        "cmd": def.cmd,
        "outs": def.outs,
        "deps": def.deps,
        "needs": def.needs,
        "config": def.config.as_ref().map(|c| &c.digest),
        "gpu": def.resources.gpu,
    });
    crate::spec::digest_value(&v)
}

/// The `cache/slurm/` folders of one pipeline file.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `cache/slurm/runs/<pipeline>-<hash>/`.
    pub dir: PathBuf,
    /// `cache/slurm/shards/`.
    pub shards: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> SlurmError {
    SlurmError::Cache(CacheError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, SlurmError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SlurmError::Journal {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SlurmError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| SlurmError::Journal {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

impl Paths {
    /// The folders for `pipeline` in `cache` (nothing is created).
    #[must_use]
    pub fn new(cache: &Cache, pipeline: &Pipeline) -> Self {
        let hash = blake3::hash(pipeline.file.to_string_lossy().as_bytes()).to_hex();
        let base = cache.root().join("slurm");
        Paths {
            dir: base
                .join("runs")
                .join(format!("{}-{}", pipeline.name, &hash[..12])),
            shards: base.join("shards"),
        }
    }

    /// `journal.json`.
    #[must_use]
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    /// The ticket of `stage`.
    #[must_use]
    pub fn ticket(&self, stage: &str) -> PathBuf {
        self.dir.join("tickets").join(format!("{stage}.json"))
    }

    /// The output folder of `stage`'s jobs.
    #[must_use]
    pub fn logs(&self, stage: &str) -> PathBuf {
        self.dir.join("logs").join(stage)
    }

    /// The folder of `key`'s finished shards.
    #[must_use]
    pub fn shard_dir(&self, key: &StageKey) -> PathBuf {
        self.shards.join(key.to_hex())
    }

    /// The record of shard `n` of `key`.
    #[must_use]
    pub fn shard(&self, key: &StageKey, n: u32) -> PathBuf {
        self.shard_dir(key).join(format!("{n}.json"))
    }

    /// The journal, if any.
    ///
    /// # Errors
    /// A journal that cannot be read or parsed.
    pub fn load_journal(&self) -> Result<Option<Journal>, SlurmError> {
        let j: Option<Journal> = read_json(&self.journal())?;
        Ok(j.filter(|j| j.format == FORMAT))
    }

    /// Writes the journal atomically.
    ///
    /// # Errors
    /// The write error.
    pub fn save_journal(&self, j: &Journal) -> Result<(), SlurmError> {
        write_json(&self.journal(), j)
    }

    /// The ticket of `stage`, if written.
    ///
    /// # Errors
    /// A ticket that cannot be read or parsed.
    pub fn load_ticket(&self, stage: &str) -> Result<Option<Ticket>, SlurmError> {
        read_json(&self.ticket(stage))
    }

    /// Writes `stage`'s ticket atomically.
    ///
    /// # Errors
    /// The write error.
    pub fn save_ticket(&self, t: &Ticket) -> Result<(), SlurmError> {
        write_json(&self.ticket(&t.stage), t)
    }

    /// Removes `stage`'s ticket (before its jobs are submitted again).
    ///
    /// # Errors
    /// The removal error.
    pub fn remove_ticket(&self, stage: &str) -> Result<(), SlurmError> {
        Ok(fsutil::remove_path(&self.ticket(stage))?)
    }

    /// Shard `n` of `key`, if done.
    ///
    /// # Errors
    /// A record that cannot be read or parsed.
    pub fn load_shard(&self, key: &StageKey, n: u32) -> Result<Option<ShardDone>, SlurmError> {
        read_json(&self.shard(key, n))
    }

    /// Records shard `n` of `key` as done (atomically: a killed task leaves no record).
    ///
    /// # Errors
    /// The write error.
    pub fn save_shard(&self, key: &StageKey, n: u32, done: &ShardDone) -> Result<(), SlurmError> {
        write_json(&self.shard(key, n), done)
    }

    /// The shards of `key` that are done, out of `0..count`.
    #[must_use]
    pub fn done_shards(&self, key: &StageKey, count: u32) -> Vec<bool> {
        let mut done = vec![false; count as usize];
        if let Ok(rd) = std::fs::read_dir(self.shard_dir(key)) {
            for e in rd.flatten() {
                let name = e.file_name();
                let n = name
                    .to_string_lossy()
                    .strip_suffix(".json")
                    .and_then(|n| n.parse::<usize>().ok());
                if let Some(n) = n
                    && n < done.len()
                {
                    done[n] = true;
                }
            }
        }
        done
    }

    /// Removes the shard records of `key` (after its entry is committed).
    ///
    /// # Errors
    /// The removal error.
    pub fn remove_shards(&self, key: &StageKey) -> Result<(), SlurmError> {
        Ok(fsutil::remove_path(&self.shard_dir(key))?)
    }
}

/// `0-3,5,7-9` for the sorted numbers `ns` (Slurm's `--array` syntax).
#[must_use]
pub fn ranges(ns: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ns.len() {
        let start = ns[i];
        let mut end = start;
        while i + 1 < ns.len() && ns[i + 1] == end + 1 {
            i += 1;
            end = ns[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// The numbers of a `ranges` string.
#[must_use]
pub fn parse_ranges(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let part = part.split('%').next().unwrap_or_default();
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.push(n);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_round_trip() {
        assert_eq!(ranges(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
        assert_eq!(parse_ranges("0-3,5,7-9"), [0, 1, 2, 3, 5, 7, 8, 9]);
        assert_eq!(parse_ranges("1-3%2"), [1, 2, 3]);
        let many: Vec<u32> = (0..1000).filter(|n| n % 7 != 3).collect();
        assert_eq!(parse_ranges(&ranges(&many)), many);
    }

    #[test]
    fn job_logs_expand_like_sbatch() {
        let j = Job {
            id: "12".into(),
            role: Role::Shards,
            offset: 0,
            tasks: "0-3".into(),
            log: PathBuf::from("/l/%A_%a.out"),
        };
        assert_eq!(j.log_of(Some(3)), PathBuf::from("/l/12_3.out"));
        let f = Job {
            log: PathBuf::from("/l/final-%j.out"),
            role: Role::Final,
            ..j
        };
        assert_eq!(f.log_of(None), PathBuf::from("/l/final-12.out"));
    }
}
