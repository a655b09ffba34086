//! `brspeech worker`: what a Slurm job runs on the compute node. `prepare` computes a stage's
//! key once its upstream stages are committed (the ticket); `shard` runs one shard
//! (`run_shard`) and records it as done; `final` runs the whole-stage step and commits the
//! stage's entry with the same atomic commit as the local executor. A task that is killed or
//! cancelled leaves nothing committed: memo entries and entries appear by rename, shard records
//! are written after the shard's work, and staging folders are never read.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::SlurmError;
use super::journal::{FORMAT, JournalStage, Paths, ShardDone, Ticket, def_digest};
use crate::cache::{ManifestDraft, OutputDigest};
use crate::exec::context::{CancelToken, LogWriter, StageCtx};
use crate::exec::engine::{Settled, error_chain, lookup, now_secs};
use crate::exec::event::{Event, EventSink};
use crate::exec::lockfile::LockFile;
use crate::exec::{ExecError, Session};
use crate::stages::{ItemCounts, Stage, StageError};

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Compute the stage's key (its upstream stages are committed) and write its ticket.
    Prepare,
    /// Run one shard.
    Shard,
    /// Run the whole-stage step and commit.
    Final,
}

/// Arguments of `brspeech worker`.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The pipeline's journal folder.
    pub journal: PathBuf,
    /// Stage name.
    pub stage: String,
    /// What to do.
    pub step: Step,
    /// Shard = `offset` + the array task id (`SLURM_ARRAY_TASK_ID`).
    pub offset: u32,
    /// Shard number, overriding the array task id.
    pub shard: Option<u32>,
    /// With [`Step::Final`]: compute the key first (a deferred whole-stage job).
    pub prepare: bool,
}

/// Upstream stages' output digests by name (as `Session::evaluate` takes them).
type Outputs = BTreeMap<String, Option<OutputDigest>>;
/// Upstream stages' keys by name.
type Keys = BTreeMap<String, crate::cache::StageKey>;

/// Prints a running stage's warnings into the job's output.
struct JobSink;

impl EventSink for JobSink {
    fn emit(&self, event: Event) {
        if let Event::StageWarning { stage, message } = event {
            eprintln!("warning: stage `{stage}`: {message}");
        }
    }
}

fn worker_error(stage: &str, message: impl Into<String>) -> ExecError {
    ExecError::Slurm(SlurmError::Worker {
        stage: stage.to_owned(),
        message: message.into(),
    })
}

fn stage_error(source: StageError) -> ExecError {
    ExecError::Slurm(SlurmError::Stage(source))
}

struct Job<'s, 'a> {
    session: &'s Session<'a>,
    paths: Paths,
    i: usize,
    name: String,
    record: JournalStage,
    stage: &'static dyn Stage,
}

/// Runs one step of a stage on the compute node.
///
/// # Errors
/// The stage's failure, a missing ticket or upstream entry, a pipeline changed since
/// submission, or the cache's error.
pub fn worker(session: &Session<'_>, args: &WorkerArgs) -> Result<(), ExecError> {
    let name = args.stage.clone();
    let i = session
        .plan
        .index(&name)
        .ok_or_else(|| worker_error(&name, "no such stage in the pipeline"))?;
    let def = &session.pipeline.stages[i];
    let paths = Paths {
        dir: args.journal.clone(),
        shards: session.cache.root().join("slurm").join("shards"),
    };
    let journal = paths.load_journal()?.ok_or_else(|| {
        worker_error(&name, format!("no journal in `{}`", args.journal.display()))
    })?;
    let record = journal.stage(&name).cloned().ok_or_else(|| {
        worker_error(
            &name,
            "the journal has no jobs for this stage (a newer submission replaced it?)",
        )
    })?;
    if record.def != def_digest(def) {
        return Err(worker_error(
            &name,
            "the stage's definition changed since its jobs were submitted; run `brspeech run --executor slurm` again",
        ));
    }
    let job = Job {
        session,
        paths,
        i,
        name,
        stage: lookup(def)?,
        record,
    };
    let result = match args.step {
        Step::Prepare => job.prepare().map(|_| ()),
        Step::Shard => {
            let shard = match args.shard {
                Some(s) => s,
                None => {
                    let task = std::env::var("SLURM_ARRAY_TASK_ID")
                        .ok()
                        .and_then(|t| t.parse::<u32>().ok())
                        .ok_or_else(|| {
                            worker_error(&job.name, "no `--shard` and no `SLURM_ARRAY_TASK_ID`")
                        })?;
                    args.offset + task
                }
            };
            job.shard(shard)
        }
        Step::Final => job.finish(args.prepare),
    };
    // Shard tasks leave the stat cache alone: hundreds of them finishing together would each
    // rewrite it (the key and final steps, which hash the deps, keep it current).
    if args.step != Step::Shard {
        let _ = session.stat.save();
    }
    result
}

fn slurm_job() -> Option<String> {
    match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(a), Ok(t)) => Some(format!("{a}_{t}")),
        _ => std::env::var("SLURM_JOB_ID").ok(),
    }
}

impl Job<'_, '_> {
    fn def(&self) -> &crate::spec::StageDef {
        &self.session.pipeline.stages[self.i]
    }

    fn ticket(&self) -> Result<Ticket, ExecError> {
        self.paths.load_ticket(&self.name)?.ok_or_else(|| {
            worker_error(
                &self.name,
                "its key was never computed (no ticket): did the stage's first job fail? run `brspeech run --executor slurm` again",
            )
        })
    }

    /// Upstream outputs and keys from the upstream stages' tickets and committed entries.
    fn upstream(&self) -> Result<(Outputs, Keys), ExecError> {
        let mut outputs = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for (_, up) in self.session.upstream_names(self.i) {
            let t = self.paths.load_ticket(&up)?.ok_or_else(|| {
                worker_error(&self.name, format!("upstream stage `{up}` has no ticket"))
            })?;
            let m = self.session.cache.entry(&t.key)?.ok_or_else(|| {
                worker_error(
                    &self.name,
                    format!(
                        "upstream stage `{up}` has no committed entry for key {}",
                        t.key.short()
                    ),
                )
            })?;
            outputs.insert(up.clone(), Some(m.output));
            keys.insert(up, t.key);
        }
        Ok((outputs, keys))
    }

    /// Computes the key now that the upstream stages are committed; writes the ticket.
    fn prepare(&self) -> Result<Ticket, ExecError> {
        let s = self.session;
        let (outputs, inputs) = self.upstream()?;
        let eval = s.evaluate(self.i, &outputs, &JobSink)?;
        if let Some(e) = ExecError::missing_deps(&self.name, eval.missing.clone()) {
            return Err(e);
        }
        let key = eval
            .key
            .ok_or_else(|| worker_error(&self.name, "its key cannot be computed"))?;
        let lock = LockFile::load(&s.pipeline.lock_path(), &s.pipeline.name)?;
        let rec = lock.stages.get(&self.name);
        let judged = s.judge(&eval, rec, self.record.forced);
        let cached = !self.record.forced && eval.entry.is_some();
        let ticket = Ticket {
            format: FORMAT,
            stage: self.name.clone(),
            key,
            components: eval.components,
            inputs,
            prev: rec
                .map(|r| r.key)
                .filter(|k| s.cache.entry_dir(k).join("out").is_dir()),
            forced: self.record.forced,
            cached,
            reasons: judged.reasons,
        };
        self.paths.save_ticket(&ticket)?;
        println!(
            "stage `{}`: key {}{}",
            self.name,
            key.short(),
            if cached {
                " is in the cache already: nothing to run"
            } else {
                ""
            }
        );
        Ok(ticket)
    }

    fn ctx<'c>(&'c self, ticket: &Ticket, out_dir: PathBuf, log: LogWriter) -> StageCtx<'c> {
        let s = self.session;
        StageCtx {
            def: self.def(),
            pipeline: s.pipeline,
            key: ticket.key,
            inputs: ticket
                .inputs
                .iter()
                .map(|(n, k)| (n.clone(), s.cache.entry_dir(k).join("out")))
                .collect(),
            out_dir,
            prev_output: ticket.prev.map(|k| s.cache.entry_dir(&k).join("out")),
            cache: s.cache,
            stat: s.stat,
            sink: &JobSink,
            log,
            cancel: CancelToken::new(),
            items: (AtomicU64::new(0), AtomicU64::new(0)),
            memos: Mutex::new(Vec::new()),
        }
    }

    fn shard(&self, n: u32) -> Result<(), ExecError> {
        let t = self.ticket()?;
        if t.cached {
            println!(
                "stage `{}` is in the cache already: shard {n} has nothing to do",
                self.name
            );
            return Ok(());
        }
        if self.paths.load_shard(&t.key, n)?.is_some() {
            println!(
                "stage `{}`: shard {n} is done already (an earlier job)",
                self.name
            );
            return Ok(());
        }
        let t0 = Instant::now();
        let staging = self.session.cache.staging("shard")?;
        let log_path = self
            .record
            .jobs
            .iter()
            .find(|j| std::env::var("SLURM_ARRAY_JOB_ID").is_ok_and(|a| a == j.id))
            .and_then(|j| {
                let task = std::env::var("SLURM_ARRAY_TASK_ID").ok()?.parse().ok()?;
                Some(j.log_of(Some(task)))
            })
            .unwrap_or_else(|| PathBuf::from("<stderr>"));
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| worker_error(&self.name, format!("cannot use stderr: {e}")))?;
        let log = LogWriter::from_file(log_path, std::fs::File::from(stderr));
        let ctx = self.ctx(&t, staging.out.clone(), log);
        println!("stage `{}`: shard {n}, key {}", self.name, t.key.short());
        let mut items = self.stage.run_shard(&ctx, n).map_err(stage_error)?;
        items += ctx.counted_items();
        let memos = ctx.memos.lock().map(|m| m.clone()).unwrap_or_default();
        drop(ctx);
        drop(staging);
        self.paths.save_shard(
            &t.key,
            n,
            &ShardDone {
                items,
                memos,
                seconds: t0.elapsed().as_secs_f64(),
                job: slurm_job(),
            },
        )?;
        println!(
            "stage `{}`: shard {n} done in {:.2}s ({} items processed, {} reused)",
            self.name,
            t0.elapsed().as_secs_f64(),
            items.processed,
            items.reused
        );
        Ok(())
    }

    fn finish(&self, prepare: bool) -> Result<(), ExecError> {
        let s = self.session;
        let t0 = Instant::now();
        let t = if prepare {
            self.prepare()?
        } else {
            self.ticket()?
        };
        if t.cached {
            return self.publish();
        }
        if !t.forced && s.cache.entry(&t.key)?.is_some() {
            println!(
                "stage `{}`: key {} is committed already",
                self.name,
                t.key.short()
            );
            return self.publish();
        }
        if !prepare {
            // The key was computed at submission: make sure the inputs did not change since.
            let (outputs, _) = self.upstream()?;
            let eval = s.evaluate(self.i, &outputs, &JobSink)?;
            if eval.key != Some(t.key) {
                return Err(worker_error(
                    &self.name,
                    format!(
                        "its inputs changed since its jobs were submitted (key {} is now {}); run `brspeech run --executor slurm` again",
                        t.key.short(),
                        eval.key.map_or_else(|| "unknown".to_owned(), |k| k.short())
                    ),
                ));
            }
        }
        let def = self.def();
        let shards = self.stage.shard_count(def, s.pipeline);
        let mut items = ItemCounts::default();
        let mut memos = Vec::new();
        if shards > 1 {
            for n in 0..shards {
                let d = self
                    .paths
                    .load_shard(&t.key, n)?
                    .ok_or_else(|| worker_error(&self.name, format!("shard {n} has no result")))?;
                items += d.items;
                memos.extend(d.memos);
            }
        }
        let log_path = s.cache.log_path(&s.pipeline.name, &self.name);
        let log = LogWriter::create(&log_path).map_err(|e| {
            worker_error(
                &self.name,
                format!("cannot create log `{}`: {e}", log_path.display()),
            )
        })?;
        log.line(&format!(
            "# brspeech: stage `{}` ({}), key {}",
            self.name, def.kind, t.key
        ));
        for r in &t.reasons {
            log.line(&format!("# why: {r}"));
        }
        if let Some(job) = slurm_job() {
            log.line(&format!(
                "# brspeech: slurm job {job} on host `{}`",
                gethostname::gethostname().to_string_lossy()
            ));
        }
        let staging = s.cache.staging("run")?;
        let started_at = now_secs();
        let ctx = self.ctx(&t, staging.out.clone(), log);
        let work = || -> Result<ItemCounts, StageError> {
            let mut items = ItemCounts::default();
            if shards <= 1 {
                items += self.stage.run_shard(&ctx, 0)?;
            }
            items += self.stage.run(&ctx)?.items;
            Ok(items)
        };
        match work() {
            Ok(got) => items += got,
            Err(e) => {
                ctx.log.line(&format!("# brspeech: {e}"));
                let tail = crate::exec::engine::log_tail(&log_path);
                eprintln!("stage `{}` failed: {e}", self.name);
                eprintln!("stage log: {}", log_path.display());
                for l in tail {
                    eprintln!("| {l}");
                }
                return Err(stage_error(e));
            }
        }
        items += ctx.counted_items();
        memos.extend(ctx.memos.lock().map(|m| m.clone()).unwrap_or_default());
        drop(ctx);
        let draft = ManifestDraft {
            key: t.key,
            pipeline: s.pipeline.name.clone(),
            stage: self.name.clone(),
            kind: def.kind.clone(),
            version: self.stage.version(),
            components: serde_json::to_value(&t.components).unwrap_or_default(),
            started_at,
            seconds: t0.elapsed().as_secs_f64(),
            items_processed: items.processed,
            items_reused: items.reused,
            memos,
            log: Some(log_path.clone()),
        };
        s.cache.commit(staging, draft, t.forced).map_err(|e| {
            worker_error(
                &self.name,
                format!("cannot commit its outputs: {}", error_chain(&e)),
            )
        })?;
        let _ = s.cache.remove_scratch(&t.key);
        let _ = self.paths.remove_shards(&t.key);
        println!(
            "stage `{}`: committed key {} in {:.2}s",
            self.name,
            t.key.short(),
            t0.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        self.publish()
    }

    /// Makes the committed entry visible in the workspace before downstream jobs start, as the
    /// local executor does: `outputs/<pipeline>/<stage>` linked, a command's outs restored
    /// when they differ.
    fn publish(&self) -> Result<(), ExecError> {
        let s = self.session;
        let (outputs, keys) = self.upstream()?;
        let upstream: Vec<(String, OutputDigest, crate::cache::StageKey)> = outputs
            .into_iter()
            .filter_map(|(n, o)| {
                let k = *keys.get(&n)?;
                Some((n, o?, k))
            })
            .collect();
        match s.settle(self.i, &upstream, None, false, &JobSink) {
            Ok(Settled::Done(_)) => Ok(()),
            Ok(Settled::Run { .. }) => Err(worker_error(
                &self.name,
                "its entry is not in the cache for the current inputs (they changed meanwhile?); run again",
            )),
            Err(f) => Err(worker_error(&self.name, f.message)),
        }
    }
}
