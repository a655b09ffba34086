//! The engine: computes stage keys from a sealed plan (hashing deps through the stat cache),
//! judges each stage against the lock file and the cache (`status`, `--dry-run`), and runs the
//! selected stages with the `-j` scheduler and the `gpu` semaphore, committing every stage
//! through a staging folder and recording it in the lock file only after the commit.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::ExecError;
use super::context::{CancelToken, KeyCtx, LogWriter, StageCtx};
use super::event::{
    Action, Event, EventSink, Outcome, RunSummary, StageStatus, StageSummary, State,
};
use super::executor::Executor;
use super::key::{ConfigRecord, DepRecord, KeyComponents, Listings, diff};
use super::lockfile::{LockFile, LockRecord};
use crate::cache::{
    Cache, CacheError, ContentDigest, HashProgress, Listing, LockNote, Manifest, ManifestDraft,
    OutputDigest, RunLock, StageKey, StatCache, TreeSpec, fsutil, stat::listing_bytes,
};
use crate::plan::{Built, Plan, normalize};
use crate::spec::{Pipeline, StageDef};
use crate::stages::{self, ItemCounts, Stage, StageError};

/// A pipeline ready to be judged or run: its sealed plan, its cache, the stat cache.
pub struct Session<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// Its sealed plan.
    pub plan: &'a Plan<Built>,
    /// The cache.
    pub cache: &'a Cache,
    /// The stat cache (loaded once per process).
    pub stat: &'a StatCache,
}

/// Options of `brspeech run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages to run (with what they need); empty = all.
    pub targets: Vec<String>,
    /// Stages to run even when cached.
    pub force: Vec<String>,
    /// Run every selected stage even when cached.
    pub force_all: bool,
    /// Stages run at once.
    pub jobs: usize,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    /// Wait for another run's lock instead of failing.
    pub wait: bool,
    /// GPUs the scheduler may hand out.
    pub gpus: u32,
}

/// GPUs visible to this process: `CUDA_VISIBLE_DEVICES` when set, else the NVIDIA device
/// nodes, else 1 (so GPU stages still never overlap).
#[must_use]
pub fn detect_gpus() -> u32 {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let n = v
            .split(',')
            .filter(|s| !s.trim().is_empty() && s.trim() != "-1")
            .count();
        return u32::try_from(n).unwrap_or(1).max(1);
    }
    let n = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia")
                        .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0);
    u32::try_from(n).unwrap_or(1).max(1)
}

#[derive(Debug, Clone, PartialEq)]
enum OutsCheck {
    NotApplicable,
    Match,
    Differ(Vec<String>),
}

/// A stage's key components, key and cache entry as computed now.
pub(crate) struct Eval {
    pub(crate) components: KeyComponents,
    pub(crate) key: Option<StageKey>,
    pub(crate) entry: Option<Manifest>,
    listings: BTreeMap<ContentDigest, Arc<Listing>>,
    /// Deps not on this machine: `(name and what it is for, path)`.
    pub(crate) missing: Vec<(String, PathBuf)>,
    /// Why the stage's identities could not be computed on this machine (a checkpoint not
    /// there): the stage cannot run here, but `status` still shows it.
    unavailable: Option<StageError>,
    unknown_upstream: Vec<String>,
    outs: OutsCheck,
}

/// A stage's state against its lock record, what a run does with it, and why.
pub(crate) struct Judged {
    pub(crate) state: State,
    pub(crate) action: Action,
    pub(crate) reasons: Vec<String>,
}

struct CacheListings<'a> {
    current: &'a BTreeMap<ContentDigest, Arc<Listing>>,
    cache: &'a Cache,
}

impl Listings for CacheListings<'_> {
    fn listing(&self, d: &ContentDigest) -> Option<Arc<Listing>> {
        if let Some(l) = self.current.get(d) {
            return Some(Arc::clone(l));
        }
        let bytes = self.cache.read_object(d)?;
        serde_json::from_slice::<Listing>(&bytes).ok().map(Arc::new)
    }
}

struct HashEvents<'a> {
    stage: &'a str,
    sink: &'a dyn EventSink,
}

impl HashProgress for HashEvents<'_> {
    fn start(&self, total: u64) {
        if total > 0 {
            self.sink.emit(Event::HashingStarted {
                stage: self.stage.to_owned(),
                total,
            });
        }
    }
    fn advance(&self, n: u64) {
        if n > 0 {
            self.sink.emit(Event::HashingProgress {
                stage: self.stage.to_owned(),
                done: n,
            });
        }
    }
}

/// `a/./b/` → `a/b`: how an out is named inside an entry.
fn out_rel(written: &str) -> String {
    Path::new(written)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn under<'m>(
    files: &'m BTreeMap<String, crate::cache::FileRecord>,
    out: &'m str,
) -> impl Iterator<Item = (&'m String, &'m crate::cache::FileRecord)> {
    files
        .iter()
        .filter(move |(k, _)| *k == out || k.strip_prefix(out).is_some_and(|r| r.starts_with('/')))
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn lookup(def: &StageDef) -> Result<&'static dyn Stage, ExecError> {
    stages::lookup(&def.kind).map_err(|e| ExecError::Kind {
        stage: def.name.clone(),
        message: e.to_string(),
    })
}

/// What a finished worker reports.
pub(crate) struct Done {
    pub(crate) outcome: Outcome,
    pub(crate) key: StageKey,
    pub(crate) output: OutputDigest,
    pub(crate) components: KeyComponents,
    pub(crate) seconds: f64,
    pub(crate) items: Option<ItemCounts>,
    pub(crate) log: Option<PathBuf>,
}

/// Why a stage did not finish.
pub(crate) struct Failure {
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
    pub(crate) log: Option<PathBuf>,
    pub(crate) environment: bool,
    pub(crate) seconds: f64,
}

/// What [`Session::settle`] found: the stage is done (cached or restored), or it must run.
pub(crate) enum Settled {
    /// Up to date or restored from the cache.
    Done(Box<Done>),
    /// Its current key has no entry (or it is forced).
    Run {
        /// The stage's evaluation.
        eval: Box<Eval>,
        /// Its judgement (reasons for the log).
        judged: Judged,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unselected,
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl Session<'_> {
    pub(crate) fn evaluate(
        &self,
        i: usize,
        upstream: &BTreeMap<String, Option<OutputDigest>>,
        sink: &dyn EventSink,
    ) -> Result<Eval, ExecError> {
        let def = &self.pipeline.stages[i];
        let stage = lookup(def)?;
        let deps = stage.deps(def, self.pipeline);
        let specs: Vec<TreeSpec> = deps
            .iter()
            .map(|d| TreeSpec {
                path: d.path.clone(),
                include: d.include.clone(),
            })
            .collect();
        let trees = self.stat.digest_trees(
            &specs,
            &HashEvents {
                stage: &def.name,
                sink,
            },
        )?;
        let mut dep_records = BTreeMap::new();
        let mut listings = BTreeMap::new();
        let mut missing = Vec::new();
        for (d, t) in deps.iter().zip(trees) {
            match t {
                Some(t) => {
                    if let Some(l) = &t.listing {
                        listings.insert(t.digest, Arc::clone(l));
                    }
                    dep_records.insert(
                        d.name.clone(),
                        DepRecord {
                            kind: t.kind,
                            digest: t.digest,
                            files: t.files,
                        },
                    );
                }
                None => missing.push((d.described(), d.path.clone())),
            }
        }
        let (identities, unavailable) = match stage.identities(&KeyCtx {
            pipeline: self.pipeline,
            def,
            stat: self.stat,
        }) {
            Ok(ids) => (ids, None),
            Err(e) if matches!(e, StageError::Environment { .. }) => (BTreeMap::new(), Some(e)),
            Err(source) => {
                return Err(ExecError::Stage {
                    stage: def.name.clone(),
                    source,
                });
            }
        };
        let unknown_upstream: Vec<String> = upstream
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let components = KeyComponents {
            kind: def.kind.clone(),
            version: stage.version(),
            params: def.params.clone(),
            cmd: def.cmd.clone(),
            outs: def.outs.clone(),
            deps: dep_records,
            config: def.config.as_ref().map(|c| ConfigRecord {
                alias: c.alias.clone(),
                section: c.section.clone(),
                digest: c.digest.clone(),
            }),
            upstream: upstream
                .iter()
                .filter_map(|(n, o)| o.map(|o| (n.clone(), o)))
                .collect(),
            identities,
        };
        let key = (unknown_upstream.is_empty() && missing.is_empty() && unavailable.is_none())
            .then(|| components.key());
        let entry = match key {
            Some(k) => self.cache.entry(&k).ok().flatten(),
            None => None,
        };
        let outs = match &entry {
            Some(m) if !stage.workspace_outs(def).is_empty() => {
                self.check_outs(&stage.workspace_outs(def), m, sink, &def.name)?
            }
            _ => OutsCheck::NotApplicable,
        };
        Ok(Eval {
            components,
            key,
            entry,
            listings,
            missing,
            unavailable,
            unknown_upstream,
            outs,
        })
    }

    fn check_outs(
        &self,
        outs: &[String],
        m: &Manifest,
        sink: &dyn EventSink,
        stage: &str,
    ) -> Result<OutsCheck, ExecError> {
        let specs: Vec<TreeSpec> = outs
            .iter()
            .map(|o| TreeSpec {
                path: self.pipeline.resolve(o),
                include: None,
            })
            .collect();
        let trees = self
            .stat
            .digest_trees(&specs, &HashEvents { stage, sink })?;
        let mut reasons = Vec::new();
        for (o, t) in outs.iter().zip(trees) {
            let rel = out_rel(o);
            let expected: BTreeMap<&String, &ContentDigest> =
                under(&m.files, &rel).map(|(k, v)| (k, &v.digest)).collect();
            let Some(t) = t else {
                reasons.push(format!("out `{o}` missing from the workspace"));
                continue;
            };
            let actual: BTreeMap<String, ContentDigest> = match &t.listing {
                Some(l) => l.iter().map(|(k, v)| (format!("{rel}/{k}"), *v)).collect(),
                None => [(rel.clone(), t.digest)].into_iter().collect(),
            };
            let same = actual.len() == expected.len()
                && actual.iter().all(|(k, v)| expected.get(k) == Some(&v));
            if !same {
                reasons.push(format!("out `{o}` modified in the workspace"));
            }
        }
        Ok(if reasons.is_empty() {
            OutsCheck::Match
        } else {
            OutsCheck::Differ(reasons)
        })
    }

    pub(crate) fn judge(&self, eval: &Eval, rec: Option<&LockRecord>, forced: bool) -> Judged {
        let listings = CacheListings {
            current: &eval.listings,
            cache: self.cache,
        };
        let mut reasons = rec.map_or_else(Vec::new, |r| {
            diff(
                &r.components,
                &eval.components,
                &listings,
                eval.unknown_upstream.is_empty(),
            )
        });
        reasons.extend(
            eval.unknown_upstream
                .iter()
                .map(|u| format!("upstream `{u}` is not up to date")),
        );
        reasons.extend(
            eval.missing
                .iter()
                .map(|(d, _)| format!("dep {d} is missing")),
        );
        if let Some(StageError::Environment { message, .. }) = &eval.unavailable {
            reasons.push(format!("cannot run here: {message}"));
        }
        let mut j = match (eval.key, &eval.entry) {
            (Some(k), Some(_)) => {
                let outs = match &eval.outs {
                    OutsCheck::Differ(r) => r.clone(),
                    _ => Vec::new(),
                };
                if rec.is_some_and(|r| r.key == k) && outs.is_empty() {
                    Judged {
                        state: State::Fresh,
                        action: Action::UpToDate,
                        reasons: Vec::new(),
                    }
                } else {
                    reasons.extend(outs);
                    if rec.is_none() {
                        reasons.push("not in the lock file".to_owned());
                    }
                    reasons.push("outputs are in the cache: restored without running".to_owned());
                    Judged {
                        state: State::Stale,
                        action: Action::Restore,
                        reasons,
                    }
                }
            }
            (Some(_), None) => match rec {
                Some(_) => {
                    if reasons.is_empty() {
                        reasons.push(
                            "cache entry missing (collected by gc, or found corrupt)".to_owned(),
                        );
                    }
                    Judged {
                        state: State::Stale,
                        action: Action::Run,
                        reasons,
                    }
                }
                None => Judged {
                    state: State::NeverRun,
                    action: Action::Run,
                    reasons: vec!["never run".to_owned()],
                },
            },
            (None, _) => {
                let state = if rec.is_some() {
                    State::Stale
                } else {
                    State::NeverRun
                };
                if rec.is_none() {
                    reasons.insert(0, "never run".to_owned());
                }
                Judged {
                    state,
                    action: Action::Run,
                    reasons,
                }
            }
        };
        if forced {
            j.action = Action::Run;
            j.reasons.push("forced".to_owned());
        }
        j
    }

    pub(crate) fn upstream_names(&self, i: usize) -> Vec<(usize, String)> {
        self.plan
            .upstream(i)
            .into_iter()
            .map(|u| (u, self.pipeline.stages[u].name.clone()))
            .collect()
    }

    /// Every stage's state and exact reasons (what `status` prints), in run order.
    ///
    /// # Errors
    /// A lock file that cannot be read, or a dep that cannot be hashed.
    pub fn status(&self, sink: &dyn EventSink) -> Result<Vec<StageStatus>, ExecError> {
        self.plan_stages(self.plan.order(), &HashSet::new(), sink)
    }

    /// What `run` would do with `opts` (`--dry-run`).
    ///
    /// # Errors
    /// Unknown targets, or as [`Session::status`].
    pub fn dry_run(
        &self,
        opts: &RunOptions,
        sink: &dyn EventSink,
    ) -> Result<Vec<StageStatus>, ExecError> {
        let selected = self.plan.select(self.pipeline, &opts.targets)?;
        let forced = self.forced(opts, &selected)?;
        self.plan_stages(&selected, &forced, sink)
    }

    pub(crate) fn forced(
        &self,
        opts: &RunOptions,
        selected: &[usize],
    ) -> Result<HashSet<usize>, ExecError> {
        if opts.force_all {
            return Ok(selected.iter().copied().collect());
        }
        opts.force
            .iter()
            .map(|f| self.plan.resolve(self.pipeline, f).map_err(ExecError::from))
            .collect()
    }

    fn plan_stages(
        &self,
        selected: &[usize],
        forced: &HashSet<usize>,
        sink: &dyn EventSink,
    ) -> Result<Vec<StageStatus>, ExecError> {
        let lock = LockFile::load(&self.pipeline.lock_path(), &self.pipeline.name)?;
        let mut outputs: Vec<Option<OutputDigest>> = vec![None; self.pipeline.stages.len()];
        let mut out = Vec::new();
        for &i in selected {
            let def = &self.pipeline.stages[i];
            let upstream: BTreeMap<String, Option<OutputDigest>> = self
                .upstream_names(i)
                .into_iter()
                .map(|(u, n)| (n, outputs[u]))
                .collect();
            let eval = self.evaluate(i, &upstream, sink)?;
            let j = self.judge(&eval, lock.stages.get(&def.name), forced.contains(&i));
            if j.action != Action::Run {
                outputs[i] = eval.entry.as_ref().map(|m| m.output);
            }
            out.push(StageStatus {
                name: def.name.clone(),
                kind: def.kind.clone(),
                state: j.state,
                action: j.action,
                reasons: j.reasons,
                key: eval.key.map(|k| k.to_hex()),
            });
        }
        self.stat.save()?;
        Ok(out)
    }

    pub(crate) fn check_external_deps(&self, selected: &[usize]) -> Result<(), ExecError> {
        let produced: Vec<PathBuf> = self
            .pipeline
            .stages
            .iter()
            .flat_map(|s| s.outs.iter().map(|o| normalize(&self.pipeline.dir, o)))
            .collect();
        for &i in selected {
            let def = &self.pipeline.stages[i];
            let missing: Vec<_> = lookup(def)?
                .deps(def, self.pipeline)
                .into_iter()
                .filter(|d| {
                    let n = normalize(&self.pipeline.dir, &d.path.to_string_lossy());
                    !d.path.exists()
                        && !produced
                            .iter()
                            .any(|o| n.starts_with(o) || o.starts_with(&n))
                })
                .map(|d| (d.described(), d.path))
                .collect();
            if let Some(e) = ExecError::missing_deps(&def.name, missing) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs the selected stages. Stages whose key has a committed entry are not run (their
    /// workspace outs are restored when missing); the others run in a staging folder and are
    /// committed, then recorded in the lock file.
    ///
    /// # Errors
    /// Problems before any stage starts (unknown targets, missing deps, too few GPUs, the cache
    /// lock). Stage failures are reported in the summary, not as errors.
    pub fn run(
        &self,
        opts: &RunOptions,
        executor: &dyn Executor,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<RunSummary, ExecError> {
        let t0 = Instant::now();
        let selected = self.plan.select(self.pipeline, &opts.targets)?;
        let forced = self.forced(opts, &selected)?;
        let gpus: Vec<u32> = self
            .pipeline
            .stages
            .iter()
            .map(|d| lookup(d).map(|s| s.resources(d).gpu).unwrap_or(0))
            .collect();
        for &i in &selected {
            if gpus[i] > opts.gpus {
                return Err(ExecError::NotEnoughGpus {
                    stage: self.pipeline.stages[i].name.clone(),
                    need: gpus[i],
                    have: opts.gpus,
                });
            }
        }
        self.check_external_deps(&selected)?;
        let _lock = RunLock::acquire(self.cache, opts.wait, &|note| match note {
            LockNote::Waiting(holder) => sink.emit(Event::LockWaiting { holder }),
            LockNote::Reclaimed(holder) => sink.emit(Event::LockReclaimed { holder }),
        })?;
        self.cache.clean_tmp()?;
        let lock_path = self.pipeline.lock_path();
        let mut lockfile = LockFile::load(&lock_path, &self.pipeline.name)?;
        lockfile.pipeline.clone_from(&self.pipeline.name);
        lockfile
            .stages
            .retain(|name, _| self.pipeline.stage(name).is_some());
        let records = lockfile.stages.clone();
        let jobs = opts.jobs.max(1);
        sink.emit(Event::RunStarted {
            pipeline: self.pipeline.name.clone(),
            stages: selected.len(),
            jobs,
        });

        let n = self.pipeline.stages.len();
        let mut slot = vec![Slot::Unselected; n];
        for &i in &selected {
            slot[i] = Slot::Pending;
        }
        let mut outputs: Vec<Option<(OutputDigest, StageKey)>> = vec![None; n];
        let mut summaries: Vec<Option<StageSummary>> = vec![None; n];
        let mut failed_env = false;
        let (tx, rx) = mpsc::channel::<(usize, Result<Done, Failure>)>();
        std::thread::scope(|scope| {
            let mut running = 0usize;
            let mut gpus_used = 0u32;
            let mut stop = false;
            loop {
                if cancel.is_cancelled() {
                    stop = true;
                }
                if !stop {
                    for &i in &selected {
                        if running >= jobs {
                            break;
                        }
                        if slot[i] != Slot::Pending
                            || !self.plan.upstream(i).iter().all(|&u| slot[u] == Slot::Done)
                            || gpus_used + gpus[i] > opts.gpus
                        {
                            continue;
                        }
                        slot[i] = Slot::Running;
                        running += 1;
                        gpus_used += gpus[i];
                        let upstream: Vec<(String, OutputDigest, StageKey)> = self
                            .upstream_names(i)
                            .into_iter()
                            .filter_map(|(u, name)| outputs[u].map(|(o, k)| (name, o, k)))
                            .collect();
                        let tx = tx.clone();
                        let rec = records.get(&self.pipeline.stages[i].name).cloned();
                        let force = forced.contains(&i);
                        scope.spawn(move || {
                            let t0 = Instant::now();
                            let work = std::panic::AssertUnwindSafe(|| {
                                self.process(i, &upstream, rec.as_ref(), force, executor, sink, cancel)
                            });
                            let r = std::panic::catch_unwind(work).unwrap_or_else(|_| {
                                Err(Failure {
                                    outcome: Outcome::Failed,
                                    message: "internal error: the stage panicked (a bug in brspeech; please report it)".to_owned(),
                                    log: None,
                                    environment: false,
                                    seconds: t0.elapsed().as_secs_f64(),
                                })
                            });
                            let _ = tx.send((i, r));
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok((i, result)) = rx.recv() else { break };
                running -= 1;
                gpus_used -= gpus[i];
                let name = self.pipeline.stages[i].name.clone();
                match result {
                    Ok(done) => {
                        let rec = LockRecord {
                            key: done.key,
                            output: done.output,
                            components: done.components.clone(),
                            finished_at: now_secs(),
                        };
                        // A cached stage keeps its record (and its `finished_at`): no-op runs do not touch the lock file.
                        let changed = lockfile.stages.get(&name).is_none_or(|old| {
                            old.key != rec.key
                                || old.output != rec.output
                                || old.components != rec.components
                        });
                        if changed {
                            lockfile.stages.insert(name.clone(), rec);
                        }
                        let saved = if changed {
                            lockfile.save(&lock_path)
                        } else {
                            Ok(())
                        };
                        if let Err(e) = saved {
                            slot[i] = Slot::Failed;
                            failed_env = true;
                            let message = format!(
                                "outputs committed but the lock file could not be written: {e}"
                            );
                            sink.emit(Event::StageFailed {
                                stage: name.clone(),
                                message: message.clone(),
                                log: None,
                                log_tail: Vec::new(),
                            });
                            summaries[i] = Some(summary(
                                &name,
                                Outcome::Failed,
                                done.seconds,
                                None,
                                Some(done.key),
                                Some(message),
                                None,
                            ));
                            stop = true;
                            continue;
                        }
                        slot[i] = Slot::Done;
                        outputs[i] = Some((done.output, done.key));
                        summaries[i] =
                            Some(finished(sink, &name, done.outcome, done.seconds, &done));
                    }
                    Err(f) => {
                        slot[i] = Slot::Failed;
                        failed_env |= f.environment;
                        if f.outcome == Outcome::Failed {
                            let tail = f.log.as_deref().map(log_tail).unwrap_or_default();
                            sink.emit(Event::StageFailed {
                                stage: name.clone(),
                                message: f.message.clone(),
                                log: f.log.clone(),
                                log_tail: tail,
                            });
                            if !opts.keep_going {
                                stop = true;
                            }
                        } else {
                            sink.emit(Event::StageSkipped {
                                stage: name.clone(),
                                because: f.message.clone(),
                            });
                        }
                        summaries[i] = Some(summary(
                            &name,
                            f.outcome,
                            f.seconds,
                            None,
                            None,
                            Some(f.message),
                            f.log,
                        ));
                    }
                }
            }
        });
        for &i in &selected {
            if slot[i] == Slot::Pending {
                let failed_up: Vec<&str> = self
                    .plan
                    .upstream(i)
                    .into_iter()
                    .filter(|&u| matches!(slot[u], Slot::Failed | Slot::Skipped))
                    .map(|u| self.pipeline.stages[u].name.as_str())
                    .collect();
                let because = if let Some(u) = failed_up.first() {
                    format!("upstream `{u}` did not finish")
                } else if cancel.is_cancelled() {
                    "interrupted".to_owned()
                } else {
                    "the run stopped after a failure (use `--keep-going` to run independent stages)"
                        .to_owned()
                };
                slot[i] = Slot::Skipped;
                let name = &self.pipeline.stages[i].name;
                summaries[i] = Some(skipped(sink, name, because));
            }
        }
        self.finish_run(
            &selected,
            &mut summaries,
            cancel.is_cancelled(),
            failed_env,
            t0,
            sink,
        )
    }

    /// The end of a run, whichever executor ran it: saves the stat cache (a warning when it
    /// cannot), gathers the selected stages' summaries in run order and reports the run.
    ///
    /// # Errors
    /// [`ExecError::EnvironmentFailure`] when a stage failed for lack of something on this
    /// machine (and the run was not interrupted).
    pub(crate) fn finish_run(
        &self,
        selected: &[usize],
        summaries: &mut [Option<StageSummary>],
        interrupted: bool,
        failed_env: bool,
        t0: Instant,
        sink: &dyn EventSink,
    ) -> Result<RunSummary, ExecError> {
        if let Err(e) = self.stat.save() {
            sink.emit(Event::StageWarning {
                stage: String::new(),
                message: format!("stat cache not saved: {e}"),
            });
        }
        let stages: Vec<StageSummary> = selected
            .iter()
            .filter_map(|&i| summaries[i].take())
            .collect();
        let ok = !interrupted
            && stages.iter().all(|s| {
                matches!(
                    s.outcome,
                    Outcome::Ran | Outcome::Cached | Outcome::Restored
                )
            });
        let summary = RunSummary {
            pipeline: self.pipeline.name.clone(),
            ok,
            interrupted,
            seconds: t0.elapsed().as_secs_f64(),
            stages,
        };
        sink.emit(Event::RunFinished {
            summary: summary.clone(),
        });
        if failed_env && !interrupted && summary.count(Outcome::Failed) > 0 {
            return Err(ExecError::EnvironmentFailure {
                summary: Box::new(summary),
            });
        }
        Ok(summary)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one worker's whole input, passed from the scheduler"
    )]
    fn process(
        &self,
        i: usize,
        upstream: &[(String, OutputDigest, StageKey)],
        rec: Option<&LockRecord>,
        forced: bool,
        executor: &dyn Executor,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<Done, Failure> {
        let t0 = Instant::now();
        match self.settle(i, upstream, rec, forced, sink)? {
            Settled::Done(done) => Ok(*done),
            Settled::Run { eval, judged } => self.execute_and_commit(
                i, upstream, rec, forced, executor, sink, cancel, t0, *eval, judged,
            ),
        }
    }

    /// Computes stage `i`'s key with its upstream stages' outputs and, when its entry is in
    /// the cache (and it is not forced), finishes it without running: workspace outs restored
    /// when they differ, the `outputs/` link set. Otherwise says it must run.
    pub(crate) fn settle(
        &self,
        i: usize,
        upstream: &[(String, OutputDigest, StageKey)],
        rec: Option<&LockRecord>,
        forced: bool,
        sink: &dyn EventSink,
    ) -> Result<Settled, Failure> {
        let t0 = Instant::now();
        let def = &self.pipeline.stages[i];
        let fail = |message: String, environment: bool| Failure {
            outcome: Outcome::Failed,
            message,
            log: None,
            environment,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let stage = lookup(def).map_err(|e| fail(e.to_string(), false))?;
        let up: BTreeMap<String, Option<OutputDigest>> = upstream
            .iter()
            .map(|(n, o, _)| (n.clone(), Some(*o)))
            .collect();
        let eval = self
            .evaluate(i, &up, sink)
            .map_err(|e| fail(error_chain(&e), e.is_environment()))?;
        if let Some(e) = ExecError::missing_deps(&def.name, eval.missing.clone()) {
            return Err(fail(e.to_string(), true));
        }
        if let Some(e) = &eval.unavailable {
            return Err(fail(e.to_string(), true));
        }
        let key = eval
            .key
            .ok_or_else(|| fail("stage key not computable".into(), false))?;
        for (digest, l) in &eval.listings {
            if self.cache.has_object(digest) {
                continue;
            }
            self.cache
                .put_bytes(&listing_bytes(l))
                .map_err(|e| fail(error_chain(&e), is_env_cache(&e)))?;
        }
        let judged = self.judge(&eval, rec, forced);
        let builtin = stage.workspace_outs(def).is_empty();
        if !forced && let Some(m) = &eval.entry {
            let restored = match &eval.outs {
                OutsCheck::Differ(_) => self
                    .restore_outs(&stage.workspace_outs(def), m)
                    .map(|()| true),
                _ => Ok(false),
            };
            match restored {
                Ok(restored) => {
                    if builtin {
                        self.link_output(def, &key)
                            .map_err(|e| fail(error_chain(&e), is_env_cache(&e)))?;
                    }
                    let outcome = if restored || judged.action == Action::Restore {
                        Outcome::Restored
                    } else {
                        Outcome::Cached
                    };
                    return Ok(Settled::Done(Box::new(Done {
                        outcome,
                        key,
                        output: m.output,
                        components: eval.components,
                        seconds: t0.elapsed().as_secs_f64(),
                        items: None,
                        log: None,
                    })));
                }
                Err(CacheError::Corrupt { path }) => {
                    let why = format!("object `{}` does not match its digest", path.display());
                    // Drop the damaged object so the rerun's commit stores a good copy.
                    let _ = fsutil::remove_path(&path);
                    sink.emit(Event::StageWarning {
                        stage: def.name.clone(),
                        message: format!(
                            "cache entry {} is corrupt ({why}); running the stage again",
                            key.short()
                        ),
                    });
                    self.cache
                        .mark_corrupt(&key, &why)
                        .map_err(|e| fail(error_chain(&e), is_env_cache(&e)))?;
                }
                Err(e) => return Err(fail(error_chain(&e), is_env_cache(&e))),
            }
        }
        Ok(Settled::Run {
            eval: Box::new(eval),
            judged,
        })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the rest of `process` once the stage must run"
    )]
    fn execute_and_commit(
        &self,
        i: usize,
        upstream: &[(String, OutputDigest, StageKey)],
        rec: Option<&LockRecord>,
        forced: bool,
        executor: &dyn Executor,
        sink: &dyn EventSink,
        cancel: &CancelToken,
        t0: Instant,
        eval: Eval,
        judged: Judged,
    ) -> Result<Done, Failure> {
        let def = &self.pipeline.stages[i];
        let fail = |message: String, environment: bool| Failure {
            outcome: Outcome::Failed,
            message,
            log: None,
            environment,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let stage = lookup(def).map_err(|e| fail(e.to_string(), false))?;
        if let Some(e) = &eval.unavailable {
            return Err(fail(e.to_string(), true));
        }
        let key = eval
            .key
            .ok_or_else(|| fail("stage key not computable".into(), false))?;
        let builtin = stage.workspace_outs(def).is_empty();
        let log_path = self.cache.log_path(&self.pipeline.name, &def.name);
        let log = LogWriter::create(&log_path).map_err(|e| {
            fail(
                format!("cannot create log `{}`: {e}", log_path.display()),
                true,
            )
        })?;
        log.line(&format!(
            "# brspeech: stage `{}` ({}), key {}",
            def.name, def.kind, key
        ));
        for r in &judged.reasons {
            log.line(&format!("# why: {r}"));
        }
        let with_log = |message: String, environment: bool, outcome: Outcome| Failure {
            outcome,
            message,
            log: Some(log_path.clone()),
            environment,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let staging = self
            .cache
            .staging("run")
            .map_err(|e| with_log(error_chain(&e), is_env_cache(&e), Outcome::Failed))?;
        sink.emit(Event::StageStarted {
            stage: def.name.clone(),
            reasons: judged.reasons.clone(),
        });
        let inputs: BTreeMap<String, PathBuf> = upstream
            .iter()
            .map(|(n, _, k)| (n.clone(), self.cache.entry_dir(k).join("out")))
            .collect();
        let prev_output = rec
            .map(|r| self.cache.entry_dir(&r.key).join("out"))
            .filter(|p| p.is_dir());
        let started_at = now_secs();
        let ctx = StageCtx {
            def,
            pipeline: self.pipeline,
            key,
            inputs,
            out_dir: staging.out.clone(),
            prev_output,
            cache: self.cache,
            stat: self.stat,
            sink,
            log,
            cancel: cancel.clone(),
            items: (AtomicU64::new(0), AtomicU64::new(0)),
            memos: Mutex::new(Vec::new()),
        };
        let report = match executor.execute(stage, &ctx) {
            Ok(r) => r,
            Err(e) => {
                let outcome = if matches!(e, StageError::Cancelled { .. }) {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                };
                ctx.log.line(&format!("# brspeech: {e}"));
                return Err(with_log(e.to_string(), e.is_environment(), outcome));
            }
        };
        let mut items = report.items;
        items += ctx.counted_items();
        let draft = ManifestDraft {
            key,
            pipeline: self.pipeline.name.clone(),
            stage: def.name.clone(),
            kind: def.kind.clone(),
            version: stage.version(),
            components: serde_json::to_value(&eval.components).unwrap_or_default(),
            started_at,
            seconds: t0.elapsed().as_secs_f64(),
            items_processed: items.processed,
            items_reused: items.reused,
            memos: ctx.memos.lock().map(|m| m.clone()).unwrap_or_default(),
            log: Some(log_path.clone()),
        };
        drop(ctx);
        let manifest = self.cache.commit(staging, draft, forced).map_err(|e| {
            let message = format!(
                "stage `{}`: cannot commit its outputs: {}",
                def.name,
                error_chain(&e)
            );
            with_log(message, is_env_cache(&e), Outcome::Failed)
        })?;
        if builtin {
            self.link_output(def, &key)
                .map_err(|e| with_log(error_chain(&e), is_env_cache(&e), Outcome::Failed))?;
        }
        let _ = self.cache.remove_scratch(&key);
        let has_items = items != ItemCounts::default();
        Ok(Done {
            outcome: Outcome::Ran,
            key,
            output: manifest.output,
            components: eval.components,
            seconds: t0.elapsed().as_secs_f64(),
            items: has_items.then_some(items),
            log: Some(log_path),
        })
    }

    /// Copies a committed entry's files back to the workspace outs (replacing what is there).
    fn restore_outs(&self, outs: &[String], m: &Manifest) -> Result<(), CacheError> {
        for o in outs {
            let rel = out_rel(o);
            let dest = self.pipeline.resolve(o);
            let files: Vec<(&String, &crate::cache::FileRecord)> = under(&m.files, &rel).collect();
            fsutil::remove_path(&dest)?;
            if files.is_empty() {
                fsutil::ensure_dir(dest)?;
                continue;
            }
            for (k, f) in files {
                self.cache
                    .restore_file(&f.digest, &self.pipeline.dir.join(k))?;
            }
        }
        Ok(())
    }

    /// Points `<root>/outputs/<pipeline>/<stage>` at the entry's `out/` (atomic symlink swap).
    pub(crate) fn link_output(&self, def: &StageDef, key: &StageKey) -> Result<(), CacheError> {
        let dir = fsutil::ensure_dir(self.pipeline.root.join("outputs").join(&self.pipeline.name))?;
        let link = dir.join(&def.name);
        let target = self.cache.entry_dir(key).join("out");
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(());
        }
        let tmp = dir.join(format!(".{}.{}.tmp", def.name, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| fsutil::write_error(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| fsutil::write_error(&link, e))
    }
}

/// Reports a stage that finished (ran, cached or restored) as `outcome` in `seconds`, and
/// returns its summary line.
pub(crate) fn finished(
    sink: &dyn EventSink,
    name: &str,
    outcome: Outcome,
    seconds: f64,
    done: &Done,
) -> StageSummary {
    sink.emit(Event::StageFinished {
        stage: name.to_owned(),
        outcome,
        seconds,
        items: done.items.unwrap_or_default(),
    });
    summary(
        name,
        outcome,
        seconds,
        done.items,
        Some(done.key),
        None,
        done.log.clone(),
    )
}

/// Reports a stage that will not run (`because`) and returns its summary line.
pub(crate) fn skipped(sink: &dyn EventSink, name: &str, because: String) -> StageSummary {
    sink.emit(Event::StageSkipped {
        stage: name.to_owned(),
        because: because.clone(),
    });
    summary(name, Outcome::Skipped, 0.0, None, None, Some(because), None)
}

pub(crate) fn summary(
    name: &str,
    outcome: Outcome,
    seconds: f64,
    items: Option<ItemCounts>,
    key: Option<StageKey>,
    error: Option<String>,
    log: Option<PathBuf>,
) -> StageSummary {
    StageSummary {
        name: name.to_owned(),
        outcome,
        seconds,
        items_processed: items.map(|i| i.processed),
        items_reused: items.map(|i| i.reused),
        key: key.map(|k| k.to_hex()),
        error,
        log,
    }
}

pub(crate) fn is_env_cache(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::DiskFull { .. } | CacheError::Write { .. } | CacheError::Read { .. }
    )
}

/// An error and its sources, joined with `: `.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The last lines of a log file.
pub(crate) fn log_tail(path: &Path) -> Vec<String> {
    const LINES: usize = 10;
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("# brspeech") && !l.starts_with("# why"))
        .collect();
    lines[lines.len().saturating_sub(LINES)..]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::event::NullSink;
    use crate::exec::executor::LocalExecutor;

    fn session_run(dir: &Path, text: &str) -> (RunSummary, Pipeline) {
        let l = crate::spec::load_text(&dir.join("p.yaml"), "p.yaml", text.to_owned()).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        let p = l.pipeline;
        assert!(crate::stages::check_pipeline(&p).is_empty());
        let plan = Plan::new(&p).unwrap();
        let cache = Cache::open(&dir.join("cache")).unwrap();
        let stat = StatCache::in_memory();
        let s = Session {
            pipeline: &p,
            plan: &plan,
            cache: &cache,
            stat: &stat,
        };
        let opts = RunOptions {
            targets: vec![],
            force: vec![],
            force_all: false,
            jobs: 2,
            keep_going: false,
            wait: false,
            gpus: 1,
        };
        let summary = s
            .run(&opts, &LocalExecutor, &NullSink, &CancelToken::new())
            .unwrap();
        (summary, p)
    }

    fn outcome(s: &RunSummary, name: &str) -> (Outcome, Option<u64>, Option<u64>) {
        let st = s.stages.iter().find(|x| x.name == name).unwrap();
        (st.outcome, st.items_processed, st.items_reused)
    }

    #[test]
    fn builtin_kinds_get_shards_memo_inputs_prev_output_and_an_outputs_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("brspeech.toml"), "").unwrap();
        let text = |n: u32| {
            format!(
                "name: t\nstages:\n  a: {{kind: test_items, params: {{items: {n}}}}}\n  b: {{kind: test_items, needs: [a], params: {{items: 1}}}}\n"
            )
        };
        let (s, _) = session_run(dir.path(), &text(4));
        assert_eq!(outcome(&s, "a"), (Outcome::Ran, Some(4), Some(0)));
        let link = dir.path().join("outputs/t/a");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(link.join("items.txt"))
                .unwrap()
                .lines()
                .count(),
            4
        );
        let b_info = std::fs::read_to_string(dir.path().join("outputs/t/b/info.txt")).unwrap();
        assert_eq!(
            b_info, "prev 0\nupstream 4\n",
            "b reads a's committed output"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache/scratch"))
                .unwrap()
                .count(),
            0,
            "resume dir removed after commit"
        );

        // More items: the memo entries of the first four are reused; prev_output is the old run.
        let (s, _) = session_run(dir.path(), &text(6));
        assert_eq!(outcome(&s, "a"), (Outcome::Ran, Some(2), Some(4)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("outputs/t/a/info.txt")).unwrap(),
            "prev 4\nupstream 0\n"
        );
        assert_eq!(outcome(&s, "b").0, Outcome::Ran, "upstream output changed");

        // Nothing changed: cached, and the link still points at the committed entry.
        let (s, _) = session_run(dir.path(), &text(6));
        assert!(
            s.stages.iter().all(|x| x.outcome == Outcome::Cached),
            "{:?}",
            s.stages
        );
        // Back to four items: restored from the cache, link switched back.
        let (s, _) = session_run(dir.path(), &text(4));
        assert_eq!(outcome(&s, "a").0, Outcome::Restored);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("outputs/t/a/items.txt"))
                .unwrap()
                .lines()
                .count(),
            4
        );
    }
}
