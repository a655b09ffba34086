//! The coordinator of `brspeech run --executor slurm`: judges every selected stage exactly as
//! the local engine does (cached and restorable stages are finished here), picks up the jobs
//! of an earlier submission that are still in flight, submits the rest as chained jobs
//! (recording each in the journal as soon as `sbatch` answers), then polls all job states in
//! one `squeue` call per round. Finished stages are recorded in the lock file; a failed or
//! cancelled task is reported with its output file, and what depends on it is cancelled.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use super::client::{Retrying, Slurm};
use super::journal::{FORMAT, Job, Journal, JournalStage, Paths, Role, Ticket, def_digest, ranges};
use super::status::{States, View, index, tasks_of};
use super::submit::{After, JobSpec, WorkerCmd, name_prefix, resource_options, split_arrays};
use super::{SlurmError, SlurmOptions};
use crate::cache::{OutputDigest, RunLock, StageKey};
use crate::exec::context::CancelToken;
use crate::exec::engine::{Done, Settled, finished, log_tail, lookup, now_secs, skipped, summary};
use crate::exec::event::{Action, Event, EventSink, NullSink, Outcome, RunSummary, StageSummary};
use crate::exec::lockfile::{LockFile, LockRecord};
use crate::exec::{ExecError, RunOptions, Session};
use crate::spec::executor::{effective, pipeline_wide};
use crate::stages::ItemCounts;

/// How a Slurm run ended.
#[derive(Debug)]
pub enum Finish {
    /// The coordinator waited for every job.
    Ran(RunSummary),
    /// `--detach`: jobs submitted, nobody waits for them.
    Detached {
        /// Jobs submitted (arrays count once).
        jobs: usize,
        /// Stages with jobs in flight.
        stages: usize,
    },
}

#[derive(Debug, Clone)]
enum Planned {
    Unselected,
    /// Finished (cached, restored, or committed by an earlier submission).
    Settled {
        key: StageKey,
        output: OutputDigest,
    },
    /// Must run; its key is known now.
    Known(Box<Ticket>),
    /// Must run; its key needs the output of an upstream stage that has not run yet.
    Deferred,
    /// Jobs of an earlier submission are in flight for it.
    Adopted(JournalStage),
    /// Could not be judged or finished before submission.
    Failed,
}

impl Planned {
    fn submits(&self) -> bool {
        matches!(self, Planned::Known(_) | Planned::Deferred)
    }
    fn in_flight(&self) -> bool {
        matches!(
            self,
            Planned::Known(_) | Planned::Deferred | Planned::Adopted(_)
        )
    }
}

struct Coord<'s, 'a> {
    session: &'s Session<'a>,
    opts: &'s RunOptions,
    paths: Paths,
    sink: &'s dyn EventSink,
}

fn note(sink: &dyn EventSink, stage: &str, message: String) {
    sink.emit(Event::Note {
        stage: stage.to_owned(),
        message,
    });
}

/// Which stages of journal `j` still have pending or running jobs.
fn live_stages(j: &Journal, states: &States) -> BTreeMap<String, JournalStage> {
    j.stages
        .iter()
        .filter(|s| {
            s.jobs.iter().any(|job| {
                tasks_of(job)
                    .into_iter()
                    .any(|t| !View::of(states.get(&(job.id.clone(), t))).ended())
            })
        })
        .map(|s| (s.name.clone(), s.clone()))
        .collect()
}

fn nonce() -> String {
    let seed = format!("{}:{:?}", std::process::id(), std::time::SystemTime::now());
    blake3::hash(seed.as_bytes()).to_hex()[..6].to_owned()
}

impl Coord<'_, '_> {
    fn pipeline(&self) -> &crate::spec::Pipeline {
        self.session.pipeline
    }

    fn name(&self, i: usize) -> &str {
        &self.pipeline().stages[i].name
    }

    /// Records a finished stage in the lock file (unchanged records are left alone).
    fn record(&self, lock: &mut LockFile, name: &str, done: &Done) -> Result<(), ExecError> {
        let rec = LockRecord {
            key: done.key,
            output: done.output,
            components: done.components.clone(),
            finished_at: now_secs(),
        };
        let changed = lock.stages.get(name).is_none_or(|old| {
            old.key != rec.key || old.output != rec.output || old.components != rec.components
        });
        if changed {
            lock.stages.insert(name.to_owned(), rec);
            lock.save(&self.pipeline().lock_path())?;
        }
        Ok(())
    }

    fn upstream_triples(
        &self,
        i: usize,
        planned: &[Planned],
    ) -> Option<Vec<(String, OutputDigest, StageKey)>> {
        self.session
            .upstream_names(i)
            .into_iter()
            .map(|(u, n)| match &planned[u] {
                Planned::Settled { key, output } => Some((n, *output, *key)),
                _ => None,
            })
            .collect()
    }

    /// Judges every selected stage. With `apply`, cached and restorable stages are finished
    /// (outs restored, lock file recorded) as the local engine does; otherwise nothing changes.
    #[allow(
        clippy::too_many_arguments,
        clippy::too_many_lines,
        reason = "the planning pass keeps the run's whole state in one place"
    )]
    fn plan(
        &self,
        selected: &[usize],
        forced: &HashSet<usize>,
        old: Option<&Journal>,
        live: &BTreeMap<String, JournalStage>,
        apply: bool,
        lock: &mut LockFile,
        summaries: &mut [Option<StageSummary>],
        failed_env: &mut bool,
    ) -> Result<Vec<Planned>, ExecError> {
        let s = self.session;
        let n = self.pipeline().stages.len();
        let mut planned = vec![Planned::Unselected; n];
        for &i in selected {
            let def = &self.pipeline().stages[i];
            let name = def.name.clone();
            if let Some(js) = live.get(&name) {
                if js.def != def_digest(def) {
                    return Err(SlurmError::InFlight {
                        stage: name,
                        jobs: js
                            .jobs
                            .iter()
                            .map(|j| j.id.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        why: "an earlier definition of it".into(),
                    }
                    .into());
                }
                planned[i] = Planned::Adopted(js.clone());
                continue;
            }
            let ups = s.upstream_names(i);
            if ups
                .iter()
                .any(|(u, _)| matches!(planned[*u], Planned::Failed))
            {
                planned[i] = Planned::Failed;
                let first = ups
                    .iter()
                    .find(|(u, _)| matches!(planned[*u], Planned::Failed))
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                let because = format!("upstream `{first}` did not finish");
                // Planning only (`apply` false) reports nothing.
                let sink: &dyn EventSink = if apply { self.sink } else { &NullSink };
                summaries[i] = Some(skipped(sink, &name, because));
                continue;
            }
            let Some(upstream) = self.upstream_triples(i, &planned) else {
                planned[i] = Planned::Deferred;
                continue;
            };
            let rec = lock.stages.get(&name).cloned();
            let prev = rec
                .as_ref()
                .map(|r| r.key)
                .filter(|k| s.cache.entry_dir(k).join("out").is_dir());
            let inputs: BTreeMap<String, StageKey> =
                upstream.iter().map(|(n, _, k)| (n.clone(), *k)).collect();
            let is_forced = forced.contains(&i);
            if !apply {
                let up = upstream
                    .iter()
                    .map(|(n, o, _)| (n.clone(), Some(*o)))
                    .collect();
                let eval = s.evaluate(i, &up, &NullSink)?;
                let j = s.judge(&eval, rec.as_ref(), is_forced);
                planned[i] = match (j.action, eval.key, &eval.entry) {
                    (Action::Run, Some(key), _) => Planned::Known(Box::new(Ticket {
                        format: FORMAT,
                        stage: name.clone(),
                        key,
                        components: eval.components,
                        inputs,
                        prev,
                        forced: is_forced,
                        cached: false,
                        reasons: j.reasons,
                    })),
                    (Action::Run, None, _) => Planned::Deferred,
                    (_, Some(key), Some(m)) => Planned::Settled {
                        key,
                        output: m.output,
                    },
                    _ => Planned::Deferred,
                };
                continue;
            }
            match s.settle(i, &upstream, rec.as_ref(), is_forced, self.sink) {
                Ok(Settled::Done(mut done)) => {
                    // Committed by the jobs of an earlier (detached or killed) submission?
                    let ran_there = old.and_then(|j| j.stage(&name)).is_some()
                        && self
                            .paths
                            .load_ticket(&name)
                            .ok()
                            .flatten()
                            .is_some_and(|t| t.key == done.key && !t.cached)
                        && rec.as_ref().is_none_or(|r| r.key != done.key);
                    if ran_there {
                        done.outcome = Outcome::Ran;
                        if let Ok(Some(m)) = s.cache.entry(&done.key) {
                            // From submission to commit.
                            let submitted = old.map_or(m.started_at, |j| j.submitted_at);
                            #[allow(
                                clippy::cast_precision_loss,
                                reason = "seconds since the epoch"
                            )]
                            let span = m.started_at.saturating_sub(submitted) as f64 + m.seconds;
                            done.seconds = span.max(m.seconds);
                            let items = ItemCounts {
                                processed: m.items_processed,
                                reused: m.items_reused,
                            };
                            done.items = (items != ItemCounts::default()).then_some(items);
                        }
                        done.log = Some(s.cache.log_path(&self.pipeline().name, &name));
                    }
                    self.record(lock, &name, &done)?;
                    summaries[i] = Some(finished(
                        self.sink,
                        &name,
                        done.outcome,
                        done.seconds,
                        &done,
                    ));
                    planned[i] = Planned::Settled {
                        key: done.key,
                        output: done.output,
                    };
                }
                Ok(Settled::Run { eval, judged }) => {
                    let key = eval.key.unwrap_or_else(|| eval.components.key());
                    planned[i] = Planned::Known(Box::new(Ticket {
                        format: FORMAT,
                        stage: name.clone(),
                        key,
                        components: eval.components,
                        inputs,
                        prev,
                        forced: is_forced,
                        cached: false,
                        reasons: judged.reasons,
                    }));
                }
                Err(f) => {
                    *failed_env |= f.environment;
                    self.sink.emit(Event::StageFailed {
                        stage: name.clone(),
                        message: f.message.clone(),
                        log: f.log.clone(),
                        log_tail: f.log.as_deref().map(log_tail).unwrap_or_default(),
                    });
                    summaries[i] = Some(summary(
                        &name,
                        f.outcome,
                        f.seconds,
                        None,
                        None,
                        Some(f.message),
                        f.log,
                    ));
                    planned[i] = Planned::Failed;
                }
            }
        }
        Ok(planned)
    }

    /// The jobs to submit for the planned stages, in dependency order.
    fn specs(
        &self,
        planned: &[Planned],
        selected: &[usize],
        max_array: u32,
        worker: &WorkerCmd<'_>,
        prefix: &str,
    ) -> Vec<JobSpec> {
        let s = self.session;
        let p = self.pipeline();
        let mut specs: Vec<JobSpec> = Vec::new();
        let mut final_of: BTreeMap<usize, After> = BTreeMap::new();
        for &i in selected {
            if let Planned::Adopted(js) = &planned[i]
                && let Some(f) = js.jobs.iter().rev().find(|j| j.role == Role::Final)
            {
                final_of.insert(i, After::Id(f.id.clone()));
            }
            if !planned[i].submits() {
                continue;
            }
            let def = &p.stages[i];
            let Ok(stage) = lookup(def) else { continue };
            let shards = stage.shard_count(def, p);
            let settings = effective(p.executor.as_ref(), &def.name);
            let options = resource_options(&settings, stage.resources(def).gpu);
            let logs = self.paths.logs(&def.name);
            let after_up: Vec<After> = s
                .upstream_names(i)
                .into_iter()
                .filter_map(|(u, _)| final_of.get(&u).cloned())
                .collect();
            let base = |role: Role, suffix: String| JobSpec {
                stage: def.name.clone(),
                role,
                name: format!("{prefix}.{}.{suffix}", def.name),
                offset: 0,
                tasks: String::new(),
                count: 0,
                throttle: None,
                after: Vec::new(),
                options: options.clone(),
                log: logs.join(format!("{suffix}-%j.out")),
                dir: p.dir.clone(),
                command: Vec::new(),
            };
            let deferred = matches!(planned[i], Planned::Deferred);
            let mut final_after = after_up.clone();
            if shards > 1 {
                let todo: Vec<u32> = match &planned[i] {
                    Planned::Known(t) => self
                        .paths
                        .done_shards(&t.key, shards)
                        .iter()
                        .enumerate()
                        .filter(|(_, d)| !**d)
                        .filter_map(|(n, _)| u32::try_from(n).ok())
                        .collect(),
                    _ => (0..shards).collect(),
                };
                let mut array_after = after_up.clone();
                if deferred {
                    let mut prep = base(Role::Prepare, "prepare".into());
                    prep.options = resource_options(&pipeline_wide(p.executor.as_ref()), 0);
                    prep.after = after_up.clone();
                    prep.command = worker.command(&def.name, "prepare", None, false);
                    specs.push(prep);
                    array_after = vec![After::Spec(specs.len() - 1)];
                    final_after.clone_from(&array_after);
                }
                let mut arrays = Vec::new();
                for (offset, tasks) in split_arrays(&todo, max_array) {
                    let mut a = base(Role::Shards, format!("shards{offset}"));
                    a.offset = offset;
                    a.count = tasks.len() as u64;
                    a.tasks = ranges(&tasks);
                    a.throttle = settings.throttle;
                    a.after = array_after.clone();
                    a.log = logs.join("shards-%A_%a.out");
                    a.command = worker.command(&def.name, "shard", Some(offset), false);
                    specs.push(a);
                    arrays.push(After::Spec(specs.len() - 1));
                }
                if !arrays.is_empty() {
                    final_after = arrays;
                }
            }
            let mut f = base(Role::Final, "final".into());
            f.after = final_after;
            f.command = worker.command(&def.name, "final", None, deferred && shards <= 1);
            specs.push(f);
            final_of.insert(i, After::Spec(specs.len() - 1));
        }
        specs
    }
}

struct Prepared<'s, 'a> {
    coord: Coord<'s, 'a>,
    selected: Vec<usize>,
    planned: Vec<Planned>,
    forced: HashSet<usize>,
    specs: Vec<JobSpec>,
    live: BTreeMap<String, JournalStage>,
}

/// Everything up to the jobs to submit: the old journal and its live jobs, the plan, the specs.
#[allow(clippy::too_many_arguments, reason = "shared by run and dry-run")]
fn prepare<'s, 'a>(
    session: &'s Session<'a>,
    opts: &'s RunOptions,
    sopts: &SlurmOptions,
    slurm: &Retrying<'_>,
    sink: &'s dyn EventSink,
    apply: bool,
    lock: &mut LockFile,
    summaries: &mut [Option<StageSummary>],
    failed_env: &mut bool,
) -> Result<Prepared<'s, 'a>, ExecError> {
    let coord = Coord {
        session,
        opts,
        paths: Paths::new(session.cache, session.pipeline),
        sink,
    };
    let selected = session.plan.select(session.pipeline, &opts.targets)?;
    let forced = session.forced(opts, &selected)?;
    let old = coord.paths.load_journal()?;
    let mut live = match &old {
        Some(j) => match slurm.squeue(&j.job_ids()) {
            Ok(states) => live_stages(j, &index(states)),
            Err(e) if !apply => {
                note(
                    sink,
                    "",
                    format!("cannot ask Slurm about the last submission's jobs: {e}"),
                );
                BTreeMap::new()
            }
            Err(e) => return Err(e.into()),
        },
        None => BTreeMap::new(),
    };
    // A stage whose submission was cut short (no final job) cannot be picked up: its jobs are
    // cancelled and it is planned again (its finished shards are kept).
    let cut: Vec<String> = live
        .values()
        .filter(|js| !js.jobs.iter().any(|j| j.role == Role::Final))
        .map(|js| js.name.clone())
        .collect();
    for name in cut {
        if let Some(js) = live.remove(&name)
            && apply
        {
            let ids: Vec<String> = js.jobs.iter().map(|j| j.id.clone()).collect();
            slurm.scancel(&ids, false)?;
            note(
                sink,
                &name,
                format!(
                    "cancelled jobs {} of a submission that was cut short",
                    ids.join(",")
                ),
            );
        }
    }
    let planned = coord.plan(
        &selected,
        &forced,
        old.as_ref(),
        &live,
        apply,
        lock,
        summaries,
        failed_env,
    )?;
    let max_array = if planned.iter().any(Planned::submits) {
        match slurm.max_array_size() {
            Ok(m) => m,
            Err(e) if !apply => {
                note(sink, "", format!("assuming MaxArraySize=1001 ({e})"));
                1001
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        1001
    };
    let pipeline_file = session.pipeline.file.clone();
    let journal_dir = coord.paths.dir.clone();
    let worker = WorkerCmd {
        exe: &sopts.exe,
        cache: session.cache.root(),
        pipeline: &pipeline_file,
        journal: &journal_dir,
    };
    let prefix = name_prefix(&session.pipeline.name, &nonce());
    let specs = coord.specs(&planned, &selected, max_array, &worker, &prefix);
    Ok(Prepared {
        coord,
        selected,
        planned,
        forced,
        specs,
        live,
    })
}

/// The jobs `run --executor slurm` would submit, as a shell script of `sbatch` lines.
///
/// # Errors
/// Unknown targets, or a dep that cannot be hashed.
pub fn dry_run(
    session: &Session<'_>,
    opts: &RunOptions,
    sopts: &SlurmOptions,
    slurm: &dyn Slurm,
) -> Result<String, ExecError> {
    let quiet = |_m: String| {};
    // A dry run does not wait long for a controller that does not answer.
    let backoff = super::Backoff {
        budget: sopts.backoff.budget.min(std::time::Duration::from_secs(5)),
        ..sopts.backoff
    };
    let slurm = Retrying::new(slurm, backoff, &quiet);
    let mut lock = LockFile::load(&session.pipeline.lock_path(), &session.pipeline.name)?;
    let mut summaries = vec![None; session.pipeline.stages.len()];
    let mut failed_env = false;
    let p = prepare(
        session,
        opts,
        sopts,
        &slurm,
        &NullSink,
        false,
        &mut lock,
        &mut summaries,
        &mut failed_env,
    )?;
    let known = |a: &After| match a {
        After::Id(id) => Some(id.clone()),
        After::Spec(_) => None,
    };
    let mut out = super::submit::script(&p.specs, &known);
    for (name, js) in &p.live {
        out.push_str(&format!(
            "\n# stage `{name}`: jobs {} of an earlier submission are in flight and would be waited for\n",
            js.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>().join(",")
        ));
    }
    if p.specs.is_empty() {
        out.push_str("\n# nothing to submit\n");
    }
    Ok(out)
}

/// Fails when jobs of this pipeline's last Slurm submission are still in flight (a local run
/// would compute the same stages at the same time). Without Slurm commands it checks nothing.
///
/// # Errors
/// [`SlurmError::InFlight`].
pub fn ensure_idle(session: &Session<'_>, slurm: &dyn Slurm) -> Result<(), ExecError> {
    let paths = Paths::new(session.cache, session.pipeline);
    let Some(j) = paths.load_journal()? else {
        return Ok(());
    };
    let Ok(states) = slurm.squeue(&j.job_ids()) else {
        return Ok(());
    };
    let live = live_stages(&j, &index(states));
    if let Some((name, js)) = live.iter().next() {
        return Err(SlurmError::InFlight {
            stage: name.clone(),
            jobs: js
                .jobs
                .iter()
                .map(|j| j.id.clone())
                .collect::<Vec<_>>()
                .join(","),
            why: "the last `--executor slurm` run; a local run would compute the same stages again"
                .into(),
        }
        .into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TState {
    Active,
    Done,
    Failed,
    Skipped,
    Cancelled,
}

struct Track {
    i: usize,
    name: String,
    jobs: Vec<Job>,
    state: TState,
    announced: bool,
    started: Option<Instant>,
    progress: u64,
    shards: u64,
}

/// Runs the selected stages on Slurm (see the module documentation).
///
/// # Errors
/// Problems before submission (unknown targets, missing deps, the cache lock, jobs in flight
/// for another definition, Slurm unavailable or rejecting a job).
#[allow(clippy::too_many_lines, reason = "the run's phases share its state")]
pub fn run(
    session: &Session<'_>,
    opts: &RunOptions,
    sopts: &SlurmOptions,
    slurm: &dyn Slurm,
    sink: &dyn EventSink,
    cancel: &CancelToken,
) -> Result<Finish, ExecError> {
    let t0 = Instant::now();
    let retry_note = |m: String| note(sink, "", m);
    let slurm = Retrying::new(slurm, sopts.backoff, &retry_note);
    let selected = session.plan.select(session.pipeline, &opts.targets)?;
    session.check_external_deps(&selected)?;
    let _lock = RunLock::acquire(session.cache, opts.wait, &|n| match n {
        crate::cache::LockNote::Waiting(holder) => sink.emit(Event::LockWaiting { holder }),
        crate::cache::LockNote::Reclaimed(holder) => sink.emit(Event::LockReclaimed { holder }),
    })?;
    session.cache.clean_tmp()?;
    let lock_path = session.pipeline.lock_path();
    let mut lock = LockFile::load(&lock_path, &session.pipeline.name)?;
    lock.pipeline.clone_from(&session.pipeline.name);
    lock.stages
        .retain(|name, _| session.pipeline.stage(name).is_some());
    sink.emit(Event::RunStarted {
        pipeline: session.pipeline.name.clone(),
        stages: selected.len(),
        jobs: 0,
    });
    let n = session.pipeline.stages.len();
    let mut summaries: Vec<Option<StageSummary>> = vec![None; n];
    let mut failed_env = false;
    let prep = prepare(
        session,
        opts,
        sopts,
        &slurm,
        sink,
        true,
        &mut lock,
        &mut summaries,
        &mut failed_env,
    )?;
    let Prepared {
        coord,
        selected,
        mut planned,
        forced,
        specs,
        live,
    } = prep;

    // Tickets: every stage whose key is known now; deferred stages get theirs on the cluster.
    for &i in &selected {
        let name = coord.name(i).to_owned();
        match &planned[i] {
            Planned::Known(t) => coord.paths.save_ticket(t)?,
            Planned::Deferred => coord.paths.remove_ticket(&name)?,
            Planned::Settled { key, .. } => {
                let components = lock
                    .stages
                    .get(&name)
                    .filter(|r| r.key == *key)
                    .map(|r| r.components.clone());
                if let Some(components) = components {
                    coord.paths.save_ticket(&Ticket {
                        format: FORMAT,
                        stage: name,
                        key: *key,
                        components,
                        inputs: BTreeMap::new(),
                        prev: None,
                        forced: false,
                        cached: true,
                        reasons: Vec::new(),
                    })?;
                }
            }
            _ => {}
        }
    }

    // The journal: live jobs of the last submission (picked up or kept), then the new jobs.
    let mut journal = Journal {
        format: FORMAT,
        pipeline: session.pipeline.name.clone(),
        file: session.pipeline.file.clone(),
        submitted_at: now_secs(),
        pid: std::process::id(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        detached: sopts.detach,
        stages: live.values().cloned().collect(),
    };
    for js in live.values() {
        note(
            sink,
            &js.name,
            format!(
                "picked up jobs {} of an earlier submission",
                js.jobs
                    .iter()
                    .map(|j| j.id.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
    }
    // Every stage to submit is in the journal before its first job: a job may start (and its
    // worker read the journal) before `sbatch` has even answered.
    for spec in &specs {
        if journal.stage(&spec.stage).is_some() {
            continue;
        }
        let i = session.plan.index(&spec.stage).unwrap_or(0);
        let def = &session.pipeline.stages[i];
        let shards = lookup(def).map_or(1, |st| st.shard_count(def, session.pipeline));
        journal.stages.push(JournalStage {
            name: spec.stage.clone(),
            def: def_digest(def),
            key: match &planned[i] {
                Planned::Known(t) => Some(t.key),
                _ => None,
            },
            forced: forced.contains(&i),
            shards,
            submitted_shards: 0,
            jobs: Vec::new(),
        });
    }
    coord.paths.save_journal(&journal)?;
    let mut ids: Vec<String> = Vec::with_capacity(specs.len());
    let t_submit = Instant::now();
    for spec in &specs {
        let after: Vec<String> = spec
            .after
            .iter()
            .map(|a| match a {
                After::Id(id) => id.clone(),
                After::Spec(s) => ids[*s].clone(),
            })
            .collect();
        if let Some(dir) = spec.log.parent() {
            crate::cache::fsutil::ensure_dir(dir.to_path_buf())?;
        }
        let id = match slurm.sbatch(&spec.name, &spec.args(&after)) {
            Ok(id) => id,
            Err(e) => {
                // Nothing half-submitted keeps running: cancel what this run submitted.
                let _ = slurm.scancel(&ids, false);
                let _ = coord.paths.save_journal(&journal);
                return Err(e.into());
            }
        };
        ids.push(id.clone());
        if let Some(js) = journal.stages.iter_mut().find(|s| s.name == spec.stage) {
            if spec.role == Role::Shards {
                js.submitted_shards += spec.count;
            }
            js.jobs.push(Job {
                id,
                role: spec.role,
                offset: spec.offset,
                tasks: spec.tasks.clone(),
                log: spec.log.clone(),
            });
        }
        // Saved after every job: a coordinator killed here leaves a journal naming each job.
        coord.paths.save_journal(&journal)?;
    }
    let submit_seconds = t_submit.elapsed().as_secs_f64();
    // Also when nothing was submitted: the last submission's record is no longer needed (its
    // results are in the lock file now).
    coord.paths.save_journal(&journal)?;
    for js in &journal.stages {
        if live.contains_key(&js.name) {
            continue;
        }
        let arrays: Vec<&Job> = js.jobs.iter().filter(|j| j.role == Role::Shards).collect();
        let mut what = Vec::new();
        if let Some(p) = js.jobs.iter().find(|j| j.role == Role::Prepare) {
            what.push(format!("key job {}", p.id));
        }
        if !arrays.is_empty() {
            what.push(format!(
                "{} shard task(s) in array{} {}",
                js.submitted_shards,
                if arrays.len() == 1 { "" } else { "s" },
                arrays
                    .iter()
                    .map(|a| a.id.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        } else if js.shards > 1 && js.key.is_some() {
            what.push(format!("all {} shards done earlier", js.shards));
        }
        if let Some(f) = js.jobs.iter().find(|j| j.role == Role::Final) {
            what.push(format!("final job {}", f.id));
        }
        note(sink, &js.name, format!("submitted {}", what.join(", ")));
    }
    if !specs.is_empty() {
        note(
            sink,
            "",
            format!(
                "{} job(s) submitted in {:.3}s; output files in {}",
                specs.len(),
                submit_seconds,
                coord.paths.dir.join("logs").display()
            ),
        );
    }

    let mut tracks: Vec<Track> = selected
        .iter()
        .filter(|&&i| planned[i].in_flight())
        .filter_map(|&i| {
            let name = coord.name(i).to_owned();
            journal.stage(&name).map(|js| Track {
                i,
                name,
                jobs: js.jobs.clone(),
                state: TState::Active,
                announced: false,
                started: None,
                progress: 0,
                shards: js
                    .jobs
                    .iter()
                    .filter(|j| j.role == Role::Shards)
                    .map(|j| tasks_of(j).len() as u64)
                    .sum(),
            })
        })
        .collect();
    if sopts.detach {
        if tracks.is_empty() {
            note(
                sink,
                "",
                "nothing to submit: every selected stage is up to date".into(),
            );
        } else {
            note(
                sink,
                "",
                format!(
                    "detached: `brspeech status` shows the jobs; `brspeech run --executor slurm` waits for them and records the results (logs: {})",
                    coord.paths.dir.join("logs").display()
                ),
            );
        }
        let _ = session.stat.save();
        return Ok(Finish::Detached {
            jobs: specs.len(),
            stages: tracks.len(),
        });
    }

    // Poll until every job has ended.
    let mut states = States::new();
    let mut ended_jobs: HashSet<String> = HashSet::new();
    let mut ours: HashSet<String> = HashSet::new();
    let mut stop = false;
    let mut interval = sopts.poll.0;
    let mut interrupted = false;
    let t_poll = Instant::now();
    loop {
        if cancel.is_cancelled() {
            let ids: Vec<String> = tracks
                .iter()
                .filter(|t| t.state == TState::Active)
                .flat_map(|t| t.jobs.iter().map(|j| j.id.clone()))
                .filter(|id| !ended_jobs.contains(id))
                .collect();
            let _ = slurm.scancel(&ids, false);
            for t in tracks.iter_mut().filter(|t| t.state == TState::Active) {
                t.state = TState::Cancelled;
                summaries[t.i] = Some(summary(
                    &t.name,
                    Outcome::Cancelled,
                    t.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
                    None,
                    None,
                    Some(format!(
                        "interrupted: its jobs were cancelled ({})",
                        ids.join(",")
                    )),
                    None,
                ));
                sink.emit(Event::StageSkipped {
                    stage: t.name.clone(),
                    because: "interrupted: its Slurm jobs were cancelled".into(),
                });
            }
            interrupted = true;
            break;
        }
        let query: Vec<String> = tracks
            .iter()
            .flat_map(|t| t.jobs.iter().map(|j| j.id.clone()))
            .filter(|id| !ended_jobs.contains(id))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        if query.is_empty() && tracks.iter().all(|t| t.state != TState::Active) {
            break;
        }
        let fresh = slurm.squeue(&query)?;
        let mut changed = false;
        for st in fresh {
            let k = (st.job.clone(), st.task);
            if states.get(&k) != Some(&st) {
                changed = true;
            }
            states.insert(k, st);
        }
        // Jobs whose every task has ended are not asked about again.
        for t in &tracks {
            for job in &t.jobs {
                if ended_jobs.contains(&job.id) {
                    continue;
                }
                let seen = tasks_of(job)
                    .into_iter()
                    .all(|task| View::of(states.get(&(job.id.clone(), task))).ended());
                if seen {
                    ended_jobs.insert(job.id.clone());
                }
            }
        }
        let mut to_cancel: Vec<String> = Vec::new();
        let mut to_cancel_pending: Vec<String> = Vec::new();
        for k in 0..tracks.len() {
            if tracks[k].state != TState::Active {
                continue;
            }
            let verdict = judge_track(&coord, &tracks[k], &states, &ours);
            let t = &mut tracks[k];
            // A stage starts when a task of it runs and its key is known (a stage whose key
            // turns out to be in the cache already is not announced: nothing runs for it).
            if verdict.started
                && !t.announced
                && let Ok(Some(tk)) = coord.paths.load_ticket(&t.name)
            {
                t.announced = true;
                t.started = Some(Instant::now());
                if !tk.cached {
                    sink.emit(Event::StageStarted {
                        stage: t.name.clone(),
                        reasons: tk.reasons,
                    });
                }
            }
            if t.shards > 0 && verdict.shards_done != t.progress {
                t.progress = verdict.shards_done;
                sink.emit(Event::StageProgress {
                    stage: t.name.clone(),
                    label: "shards".into(),
                    done: verdict.shards_done,
                    total: t.shards,
                });
            }
            let seconds = t.started.map_or_else(
                || t_poll.elapsed().as_secs_f64(),
                |s| s.elapsed().as_secs_f64(),
            );
            if let Some(f) = verdict.failure {
                changed = true;
                let f_cancel_all = f.cancel_all;
                if f.skipped {
                    t.state = TState::Skipped;
                    summaries[t.i] = Some(skipped(sink, &t.name, f.message));
                } else {
                    t.state = TState::Failed;
                    sink.emit(Event::StageFailed {
                        stage: t.name.clone(),
                        message: f.message.clone(),
                        log: f.log.clone(),
                        log_tail: f.log.as_deref().map(log_tail).unwrap_or_default(),
                    });
                    summaries[t.i] = Some(summary(
                        &t.name,
                        Outcome::Failed,
                        t_poll.elapsed().as_secs_f64(),
                        None,
                        None,
                        Some(f.message),
                        f.log,
                    ));
                }
                planned[t.i] = Planned::Failed;
                // The stage's own key and final jobs never run now; its other shard tasks
                // finish (their results serve the next run) unless the run stops.
                for job in t
                    .jobs
                    .iter()
                    .filter(|j| f_cancel_all || j.role != Role::Shards)
                {
                    to_cancel.push(job.id.clone());
                }
                if !coord.opts.keep_going {
                    stop = true;
                    for job in t.jobs.iter().filter(|j| j.role == Role::Shards) {
                        to_cancel_pending.push(job.id.clone());
                    }
                }
                let failed_i = t.i;
                let failed_name = t.name.clone();
                // Everything downstream is cancelled.
                let mut down: BTreeSet<usize> = BTreeSet::new();
                let mut stack = vec![failed_i];
                while let Some(x) = stack.pop() {
                    for d in session.plan.downstream(x) {
                        if down.insert(d) {
                            stack.push(d);
                        }
                    }
                }
                for other in tracks.iter_mut().filter(|o| down.contains(&o.i)) {
                    if other.state != TState::Active {
                        continue;
                    }
                    other.state = TState::Skipped;
                    let because =
                        format!("upstream `{failed_name}` did not finish; its jobs were cancelled");
                    summaries[other.i] = Some(skipped(sink, &other.name, because));
                    to_cancel.extend(other.jobs.iter().map(|j| j.id.clone()));
                }
                continue;
            }
            if verdict.final_done {
                changed = true;
                match finish_track(&coord, t, &planned, &lock, seconds) {
                    Ok((done, outcome)) => {
                        coord.record(&mut lock, &t.name, &done)?;
                        t.state = TState::Done;
                        summaries[t.i] = Some(finished(sink, &t.name, outcome, seconds, &done));
                        planned[t.i] = Planned::Settled {
                            key: done.key,
                            output: done.output,
                        };
                    }
                    Err(message) => {
                        t.state = TState::Failed;
                        sink.emit(Event::StageFailed {
                            stage: t.name.clone(),
                            message: message.clone(),
                            log: None,
                            log_tail: Vec::new(),
                        });
                        summaries[t.i] = Some(summary(
                            &t.name,
                            Outcome::Failed,
                            seconds,
                            None,
                            None,
                            Some(message),
                            None,
                        ));
                        planned[t.i] = Planned::Failed;
                        if !coord.opts.keep_going {
                            stop = true;
                        }
                    }
                }
            }
        }
        if stop {
            // Like the local executor after a failure: nothing new starts. Stages with no task
            // started yet are cancelled; running tasks finish.
            for t in tracks
                .iter_mut()
                .filter(|t| t.state == TState::Active && !t.announced)
            {
                t.state = TState::Skipped;
                let because = "the run stopped after a failure (use `--keep-going` to run independent stages); its jobs were cancelled".to_owned();
                summaries[t.i] = Some(skipped(sink, &t.name, because));
                to_cancel.extend(t.jobs.iter().map(|j| j.id.clone()));
            }
        }
        to_cancel.retain(|id| !ended_jobs.contains(id) && !ours.contains(id));
        to_cancel.sort();
        to_cancel.dedup();
        if !to_cancel.is_empty() {
            slurm.scancel(&to_cancel, false)?;
            ours.extend(to_cancel);
        }
        to_cancel_pending.retain(|id| !ended_jobs.contains(id));
        to_cancel_pending.sort();
        to_cancel_pending.dedup();
        if !to_cancel_pending.is_empty() {
            slurm.scancel(&to_cancel_pending, true)?;
            ours.extend(to_cancel_pending);
        }
        let all_ended = tracks
            .iter()
            .flat_map(|t| t.jobs.iter())
            .all(|j| ended_jobs.contains(&j.id));
        if tracks.iter().all(|t| t.state != TState::Active) && all_ended {
            break;
        }
        interval = if changed {
            sopts.poll.0
        } else {
            (interval.mul_f64(1.5)).min(sopts.poll.1)
        };
        std::thread::sleep(interval);
    }

    for &i in &selected {
        if summaries[i].is_none() {
            let because = if interrupted {
                "interrupted".to_owned()
            } else {
                "the run stopped after a failure".to_owned()
            };
            summaries[i] = Some(summary(
                coord.name(i),
                Outcome::Skipped,
                0.0,
                None,
                None,
                Some(because),
                None,
            ));
        }
    }
    session
        .finish_run(
            &selected,
            &mut summaries,
            interrupted || cancel.is_cancelled(),
            failed_env,
            t0,
            sink,
        )
        .map(Finish::Ran)
}

struct TrackFailure {
    message: String,
    log: Option<PathBuf>,
    skipped: bool,
    /// Cancel every job of the stage (it can never run as submitted).
    cancel_all: bool,
}

#[derive(Default)]
struct Verdict {
    started: bool,
    shards_done: u64,
    final_done: bool,
    failure: Option<TrackFailure>,
}

/// What a stage's jobs say now. Tasks Slurm no longer knows are judged by what they left in
/// the cache (a shard record, the ticket, the committed entry).
fn judge_track(
    coord: &Coord<'_, '_>,
    t: &Track,
    states: &States,
    ours: &HashSet<String>,
) -> Verdict {
    let mut v = Verdict::default();
    let mut all_ended = true;
    let mut more: Vec<String> = Vec::new();
    let mut ticket: Option<Option<Ticket>> = None;
    let mut ticket = || -> Option<Ticket> {
        ticket
            .get_or_insert_with(|| coord.paths.load_ticket(&t.name).ok().flatten())
            .clone()
    };
    for job in &t.jobs {
        for task in tasks_of(job) {
            let mut view = View::of(states.get(&(job.id.clone(), task)));
            if view == View::Unknown {
                let tk = ticket();
                let done = match (job.role, task, &tk) {
                    (Role::Shards, Some(x), Some(tk)) => {
                        tk.cached
                            || coord.paths.shard(&tk.key, job.offset + x).exists()
                            || coord.session.cache.entry_dir(&tk.key).is_dir()
                    }
                    (Role::Prepare, _, Some(_)) => true,
                    (Role::Final, _, Some(tk)) => {
                        tk.cached || coord.session.cache.entry(&tk.key).ok().flatten().is_some()
                    }
                    _ => false,
                };
                view = if done {
                    View::Completed
                } else {
                    View::Failed("UNKNOWN".into(), "no longer known to Slurm".into())
                };
            }
            all_ended &= view.ended();
            let what = match (job.role, task) {
                (Role::Shards, Some(x)) => {
                    format!("shard {} (task {}_{x})", job.offset + x, job.id)
                }
                (Role::Prepare, _) => format!("key job {}", job.id),
                _ => format!("final job {}", job.id),
            };
            match &view {
                View::Running => v.started = true,
                View::Completed => {
                    v.started = true;
                    match job.role {
                        Role::Shards => v.shards_done += 1,
                        Role::Final => v.final_done = true,
                        Role::Prepare => {}
                    }
                }
                View::Pending(reason) => {
                    if states
                        .get(&(job.id.clone(), task))
                        .is_some_and(super::client::TaskState::stuck)
                        && v.failure.is_none()
                    {
                        v.failure = Some(TrackFailure {
                            message: format!(
                                "{what} cannot start: Slurm keeps it pending ({reason}); its partition cannot meet the request: check `partition`, `account`, `qos`, `time`, `mem`, `cpus` in `executor:` and the stage's `resources`"
                            ),
                            log: None,
                            skipped: false,
                            cancel_all: true,
                        });
                    }
                }
                View::Cancelled(reason) => {
                    if ours.contains(&job.id) {
                        continue;
                    }
                    if v.failure.is_some() {
                        if reason != "DependencyNeverSatisfied" {
                            more.push(what);
                        }
                        continue;
                    }
                    if reason == "DependencyNeverSatisfied" {
                        v.failure = Some(TrackFailure {
                            message: "an upstream job failed: Slurm cancelled its jobs (`--kill-on-invalid-dep`)".into(),
                            log: None,
                            skipped: true,
                            cancel_all: false,
                        });
                    } else {
                        v.failure = Some(TrackFailure {
                            message: format!(
                                "{what} was cancelled (by `scancel`, an administrator or the cluster); nothing of it was committed; run again to redo it"
                            ),
                            log: Some(job.log_of(task)),
                            skipped: false,
                            cancel_all: false,
                        });
                    }
                }
                View::Failed(state, reason) => {
                    if v.failure.is_some() {
                        more.push(what);
                        continue;
                    }
                    let why = match state.as_str() {
                        "TIMEOUT" => "ran out of time (raise `time` in `executor:`)".to_owned(),
                        "OUT_OF_MEMORY" => {
                            "ran out of memory (raise `mem` in `executor:`)".to_owned()
                        }
                        "NODE_FAIL" => "lost its node".to_owned(),
                        "UNKNOWN" => {
                            "ended but Slurm no longer knows it and it left no result".to_owned()
                        }
                        s => format!("ended {s} ({reason})"),
                    };
                    v.failure = Some(TrackFailure {
                        message: format!("{what} {why}"),
                        log: Some(job.log_of(task)),
                        skipped: false,
                        cancel_all: false,
                    });
                }
                View::Unknown => {}
            }
        }
    }
    if let Some(f) = &mut v.failure {
        v.final_done = false;
        if !more.is_empty() {
            const NAMED: usize = 5;
            let mut list = more
                .iter()
                .take(NAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if more.len() > NAMED {
                list.push_str(&format!(" and {} more", more.len() - NAMED));
            }
            f.message.push_str(&format!(
                "; also failed or cancelled: {list} (logs beside it)"
            ));
        }
    } else if all_ended && !v.final_done {
        v.failure = Some(TrackFailure {
            message: "its jobs were cancelled before it finished".into(),
            log: None,
            skipped: true,
            cancel_all: false,
        });
    }
    v
}

/// Records a stage whose final job completed: its entry is judged like a cached stage (outs
/// restored when missing, `outputs/` link set) and must match the current key.
fn finish_track(
    coord: &Coord<'_, '_>,
    t: &Track,
    planned: &[Planned],
    lock: &LockFile,
    seconds: f64,
) -> Result<(Done, Outcome), String> {
    let s = coord.session;
    let upstream = coord.upstream_triples(t.i, planned).ok_or_else(|| {
        format!(
            "stage `{}` finished before its upstream stages were recorded",
            t.name
        )
    })?;
    let ticket = coord.paths.load_ticket(&t.name).ok().flatten();
    let rec = lock.stages.get(&t.name);
    match s.settle(t.i, &upstream, rec, false, coord.sink) {
        Ok(Settled::Done(mut done)) => {
            let ran = ticket
                .as_ref()
                .is_some_and(|tk| !tk.cached && tk.key == done.key);
            let outcome = if ran { Outcome::Ran } else { done.outcome };
            if ran {
                if let Ok(Some(m)) = s.cache.entry(&done.key) {
                    let items = ItemCounts {
                        processed: m.items_processed,
                        reused: m.items_reused,
                    };
                    done.items = (items != ItemCounts::default()).then_some(items);
                }
                done.log = Some(s.cache.log_path(&s.pipeline.name, &t.name));
            }
            done.seconds = seconds;
            if ran && let Ok(Some(m)) = s.cache.entry(&done.key) {
                done.seconds = seconds.max(m.seconds);
            }
            Ok((*done, outcome))
        }
        Ok(Settled::Run { eval, .. }) => Err(format!(
            "stage `{}` finished on Slurm but the cache has no entry for its current key {}: its inputs changed while it was queued; run again",
            t.name,
            eval.key
                .map_or_else(|| "(unknown)".to_owned(), |k| k.short())
        )),
        Err(f) => Err(f.message),
    }
}
