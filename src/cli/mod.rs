//! Command-line interface (clap): parses arguments, loads and validates the pipeline, and
//! dispatches to the layers. The only module that sees every other one (docs/cli.md).

mod model;

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cache::{Cache, GcPolicy, HashProgress, StatCache, find_lock_files};
use crate::error::{Error, INTERRUPTED, OK};
use crate::exec::context::CancelToken;
use crate::exec::event::{NullSink, Outcome, State};
use crate::exec::executor::LocalExecutor;
use crate::exec::lockfile::LockFile;
use crate::exec::{ExecError, RunOptions, Session, detect_gpus, error_chain, slurm};
use crate::plan::render::{Format, NodeStatus, render};
use crate::plan::{Built, Plan};
use crate::report::{Reporter, dry_run_table, secs, status_table};
use crate::spec::{self, Pipeline, SpecError};
use crate::stages;

/// Pipeline file used when none is given.
pub const DEFAULT_PIPELINE: &str = "brspeech.yaml";

/// brspeech: a declarative, content-addressed workflow runner for audio deepfake detection.
#[derive(Debug, Parser)]
#[command(name = "brspeech", version, about, long_about = None, max_term_width = 100)]
struct App {
    /// Cache folder (default: `<workspace root>/cache`).
    #[arg(long, global = true, env = "BRSPEECH_CACHE", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run stages (all, or the targets and what they need); cached stages are not rerun.
    Run(RunArgs),
    /// Show every stage as fresh, stale or never_run, with the exact reasons.
    Status(StatusArgs),
    /// Draw the stage graph (ascii, dot, mermaid, or a self-contained html page).
    Graph(GraphArgs),
    /// Check a pipeline file and print every problem with file:line:column.
    Validate(PipelineArg),
    /// Inspect and maintain the cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Import or export model checkpoints (reference AASIST state dicts, Hugging Face folders).
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Score audio files with a model checkpoint: CSV `path,logit,score,error` on stdout.
    Predict(model::PredictArgs),
    /// Check the machine: libtorch, CUDA and devices, the cache folder, free disk.
    Doctor(model::DoctorArgs),
    /// Print the JSON schema of pipeline files.
    #[command(hide = true)]
    Schema,
    /// Run one step of a stage inside a Slurm job (what `run --executor slurm` submits).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Where `run` carries out the stages' work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorKind {
    /// In this process (`-j` stages at once).
    Local,
    /// As Slurm jobs (`sbatch`), settings from the pipeline's `executor:` block.
    Slurm,
}

/// A step of a stage on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StepArg {
    /// Compute the stage key once the upstream stages are committed.
    Prepare,
    /// Run one shard (`--offset` + `SLURM_ARRAY_TASK_ID`, or `--shard`).
    Shard,
    /// Run the whole-stage step and commit.
    Final,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// Pipeline file.
    pipeline: PathBuf,
    /// The pipeline's journal folder (under `cache/slurm/runs/`).
    #[arg(long, value_name = "DIR")]
    journal: PathBuf,
    /// Stage name.
    #[arg(long, value_name = "STAGE")]
    stage: String,
    /// What to do.
    #[arg(long, value_enum)]
    step: StepArg,
    /// Shard number of array task 0.
    #[arg(long, default_value_t = 0, value_name = "N")]
    offset: u32,
    /// Shard number (instead of the array task id).
    #[arg(long, value_name = "N")]
    shard: Option<u32>,
    /// With `--step final`: compute the stage key first.
    #[arg(long)]
    prepare: bool,
}

#[derive(Debug, Args)]
struct PipelineArg {
    /// Pipeline file [default: brspeech.yaml].
    pipeline: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// `[PIPELINE] [STAGE...]`: a first argument ending in `.yaml`/`.yml` (or naming a file) is
    /// the pipeline [default: brspeech.yaml]; the rest are target stages [default: all].
    #[arg(value_name = "PIPELINE|STAGE")]
    args: Vec<String>,
    /// Run STAGE even if it is cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Run every selected stage even if cached.
    #[arg(long)]
    force_all: bool,
    /// Print what would run and why, and change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Stages run at once [default: number of cores].
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    json: bool,
    /// After a failure, keep running the stages that do not depend on it.
    #[arg(long, short = 'k')]
    keep_going: bool,
    /// Wait for another run holding the cache instead of failing.
    #[arg(long)]
    wait: bool,
    /// GPUs the scheduler hands to `gpu` stages [default: CUDA devices found, else 1].
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// Where the stages run: `local`, or `slurm` (jobs submitted with `sbatch`; docs/slurm.md).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local, value_name = "EXECUTOR")]
    executor: ExecutorKind,
    /// With `--executor slurm`: submit the jobs and exit; `status` shows them, and a later
    /// `run --executor slurm` waits for them and records the results.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Pipeline file [default: brspeech.yaml].
    pipeline: Option<PathBuf>,
    /// Print `{"stages": [{"name", "state", "reasons"}]}`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GraphArgs {
    /// Pipeline file [default: brspeech.yaml].
    pipeline: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Ascii)]
    format: Format,
    /// Write to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Do not compute stage status (no hashing).
    #[arg(long)]
    no_status: bool,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Size per stage and version (and which entries lock files use).
    Du {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove entries no lock file under the workspace references (keeping the last N per stage).
    Gc {
        /// Also keep the N most recent entries of every stage.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Wait for a running `run` instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Re-hash every object and entry; damaged entries are set aside and recomputed by the next run.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Wait for a running `run` instead of failing.
        #[arg(long)]
        wait: bool,
    },
}

/// Entry point used by [`crate::run`].
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let app = match App::try_parse_from(args) {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(model::version_text().as_bytes());
            return ExitCode::from(OK);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                crate::error::USAGE
            } else {
                OK
            });
        }
    };
    match dispatch(app) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report_error(e: &Error) {
    let mut err = std::io::stderr().lock();
    match e {
        Error::Spec(SpecError::Invalid(inv)) => {
            let _ = write!(err, "{}", inv.render(std::io::stderr().is_terminal()));
        }
        Error::Exec(ExecError::EnvironmentFailure { .. })
        | Error::StagesFailed { .. }
        | Error::Interrupted => {
            let _ = writeln!(err, "error: {e}");
        }
        other => {
            let _ = writeln!(err, "error: {}", error_chain(other));
        }
    }
}

/// Writes to stdout; a closed pipe is not an error.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output {
            path: "<stdout>".into(),
            source: e,
        }),
    }
}

fn dispatch(app: App) -> Result<u8, Error> {
    match app.command {
        Command::Run(a) => cmd_run(app.cache_dir.as_deref(), a),
        Command::Status(a) => cmd_status(app.cache_dir.as_deref(), a),
        Command::Graph(a) => cmd_graph(app.cache_dir.as_deref(), a),
        Command::Validate(a) => {
            let (p, _plan) = load(a.pipeline.as_deref())?;
            print(&format!(
                "pipeline `{}` is valid: {} stage{}\n",
                p.name,
                p.stages.len(),
                if p.stages.len() == 1 { "" } else { "s" }
            ))?;
            Ok(OK)
        }
        Command::Cache(c) => cmd_cache(app.cache_dir.as_deref(), c),
        Command::Model(c) => model::cmd_model(c),
        Command::Predict(a) => model::cmd_predict(a),
        Command::Doctor(a) => Ok(model::cmd_doctor(app.cache_dir.as_deref(), &a)),
        Command::Schema => {
            print(&spec::schema_json())?;
            Ok(OK)
        }
        Command::Worker(a) => cmd_worker(app.cache_dir.as_deref(), a),
    }
}

fn cmd_worker(cache_flag: Option<&Path>, a: WorkerArgs) -> Result<u8, Error> {
    let (pipeline, plan) = load(Some(&a.pipeline))?;
    let cache = Cache::open(&cache_root(cache_flag, &pipeline.root))?;
    let stat = StatCache::open(&cache.state_dir());
    let session = Session {
        pipeline: &pipeline,
        plan: &plan,
        cache: &cache,
        stat: &stat,
    };
    let args = slurm::WorkerArgs {
        journal: a.journal,
        stage: a.stage,
        step: match a.step {
            StepArg::Prepare => slurm::Step::Prepare,
            StepArg::Shard => slurm::Step::Shard,
            StepArg::Final => slurm::Step::Final,
        },
        offset: a.offset,
        shard: a.shard,
        prepare: a.prepare,
    };
    slurm::worker(&session, &args)?;
    Ok(OK)
}

/// The binary Slurm jobs run: `BRSPEECH_SLURM_BIN`, else this one.
fn worker_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("BRSPEECH_SLURM_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(|source| Error::Output {
        path: "<current executable>".into(),
        source,
    })
}

/// Loads, validates and plans a pipeline, reporting every problem at once.
///
/// # Errors
/// [`Error::Spec`] with all problems found.
pub fn load(pipeline: Option<&Path>) -> Result<(Pipeline, Plan<Built>), Error> {
    let path = pipeline.unwrap_or(Path::new(DEFAULT_PIPELINE));
    let display = path.display().to_string();
    let loaded = spec::load(path, &display)?;
    let p = loaded.pipeline;
    let mut issues = loaded.issues;
    // Kind checks only for stages whose structure is sound (no cascades such as "no `cmd`"
    // after a `cmd` of the wrong type).
    let broken: Vec<String> = p
        .stages
        .iter()
        .map(spec::StageDef::path)
        .filter(|sp| {
            issues
                .iter()
                .any(|i| i.path == *sp || i.path.starts_with(&format!("{sp}.")))
        })
        .collect();
    issues.extend(stages::check_pipeline(&p).into_iter().filter(|i| {
        !broken
            .iter()
            .any(|b| i.path == *b || i.path.starts_with(&format!("{b}.")))
    }));
    match Plan::new(&p) {
        Ok(plan) if issues.is_empty() => Ok((p, plan)),
        Ok(_) => Err(Box::new(spec::render_issues(&p.source, &issues)).into()),
        Err(more) => {
            issues.extend(more);
            Err(Box::new(spec::render_issues(&p.source, &issues)).into())
        }
    }
}

fn cache_root(flag: Option<&Path>, workspace: &Path) -> PathBuf {
    flag.map_or_else(|| workspace.join("cache"), Path::to_path_buf)
}

fn split_run_args(args: &[String]) -> (Option<PathBuf>, Vec<String>) {
    match args.split_first() {
        Some((first, rest))
            if first.ends_with(".yaml")
                || first.ends_with(".yml")
                || Path::new(first).is_file() =>
        {
            (Some(PathBuf::from(first)), rest.to_vec())
        }
        _ => (None, args.to_vec()),
    }
}

fn cmd_run(cache_flag: Option<&Path>, a: RunArgs) -> Result<u8, Error> {
    if a.detach && a.executor != ExecutorKind::Slurm {
        return Err(Error::Usage {
            message: "`--detach` needs `--executor slurm`".into(),
        });
    }
    let (pipeline_path, targets) = split_run_args(&a.args);
    let (pipeline, plan) = load(pipeline_path.as_deref())?;
    let cache = Cache::open(&cache_root(cache_flag, &pipeline.root))?;
    let stat = StatCache::open(&cache.state_dir());
    let session = Session {
        pipeline: &pipeline,
        plan: &plan,
        cache: &cache,
        stat: &stat,
    };
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    let opts = RunOptions {
        targets,
        force: a.force,
        force_all: a.force_all,
        jobs,
        keep_going: a.keep_going,
        wait: a.wait,
        gpus: a.gpus.unwrap_or_else(detect_gpus),
    };
    let on_slurm = a.executor == ExecutorKind::Slurm;
    let slurm_opts = if on_slurm {
        Some(slurm::SlurmOptions::new(worker_binary()?, a.detach))
    } else {
        None
    };
    if a.dry_run {
        let stages = session.dry_run(&opts, &NullSink)?;
        if let Some(so) = &slurm_opts {
            let script = slurm::dry_run(&session, &opts, so, &slurm::SlurmCli)?;
            if a.json {
                print(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "stages": stages, "sbatch": script })
                    )
                    .unwrap_or_default()
                ))?;
            } else {
                print(&format!("{}\n{script}", dry_run_table(&stages)))?;
            }
            return Ok(OK);
        }
        if a.json {
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&serde_json::json!({ "stages": stages }))
                    .unwrap_or_default()
            ))?;
        } else {
            print(&dry_run_table(&stages))?;
        }
        return Ok(OK);
    }
    let cancel = CancelToken::new();
    let handler = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if handler.is_cancelled() {
            std::process::exit(i32::from(INTERRUPTED));
        }
        handler.cancel();
    });
    let reporter = Reporter::stdio(a.json);
    let summary = if let Some(so) = &slurm_opts {
        match slurm::run(&session, &opts, so, &slurm::SlurmCli, &reporter, &cancel)? {
            slurm::Finish::Ran(summary) => summary,
            slurm::Finish::Detached { jobs, stages } => {
                if a.json {
                    print(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "pipeline": pipeline.name, "detached": true, "jobs": jobs, "stages": stages
                        }))
                        .unwrap_or_default()
                    ))?;
                }
                return Ok(OK);
            }
        }
    } else {
        slurm::ensure_idle(&session, &slurm::SlurmCli)?;
        session.run(&opts, &LocalExecutor, &reporter, &cancel)?
    };
    if summary.interrupted {
        return Err(Error::Interrupted);
    }
    let failed = summary.count(Outcome::Failed);
    if failed > 0 {
        return Err(Error::StagesFailed { count: failed });
    }
    Ok(OK)
}

fn statuses(
    cache_flag: Option<&Path>,
    pipeline: &Pipeline,
    plan: &Plan<Built>,
) -> Result<Vec<crate::exec::event::StageStatus>, Error> {
    let root = cache_root(cache_flag, &pipeline.root);
    let cache = Cache::open(&root)?;
    let stat = StatCache::open(&cache.state_dir());
    let session = Session {
        pipeline,
        plan,
        cache: &cache,
        stat: &stat,
    };
    let reporter = Reporter::stdio(false);
    Ok(session.status(&HashOnly(reporter))?)
}

/// Forwards only hashing progress (status and graph print their own output).
struct HashOnly(Reporter);

impl crate::exec::event::EventSink for HashOnly {
    fn emit(&self, event: crate::exec::event::Event) {
        use crate::exec::event::Event;
        if matches!(
            event,
            Event::HashingStarted { .. } | Event::HashingProgress { .. }
        ) && std::io::stderr().is_terminal()
        {
            self.0.emit(event);
        }
    }
}

fn cmd_status(cache_flag: Option<&Path>, a: StatusArgs) -> Result<u8, Error> {
    let (pipeline, plan) = load(a.pipeline.as_deref())?;
    let stages = statuses(cache_flag, &pipeline, &plan)?;
    // Jobs of the last `--executor slurm` submission, if there is one.
    let jobs = match Cache::existing(&cache_root(cache_flag, &pipeline.root)) {
        Some(cache) => {
            slurm::jobs_report(&cache, &pipeline, &slurm::SlurmCli).map_err(ExecError::from)?
        }
        None => None,
    };
    if a.json {
        let list: Vec<serde_json::Value> = stages
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "kind": s.kind, "state": s.state, "action": s.action, "reasons": s.reasons, "key": s.key}))
            .collect();
        let mut doc = serde_json::json!({ "stages": list });
        if let Some(j) = &jobs {
            doc["slurm"] = serde_json::to_value(j).unwrap_or_default();
            doc["slurm"]["live"] = serde_json::Value::Bool(j.live());
        }
        print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        ))?;
    } else {
        let fresh = stages.iter().filter(|s| s.state == State::Fresh).count();
        print(&format!(
            "pipeline `{}`: {fresh}/{} stages fresh\n{}{}",
            pipeline.name,
            stages.len(),
            status_table(&stages),
            // Shown while jobs are in flight, and after a failure until the next run.
            jobs.filter(|j| j.live() || j.stages.iter().any(|s| s.state == "failed"))
                .map(|j| j.render())
                .unwrap_or_default()
        ))?;
    }
    Ok(OK)
}

fn cmd_graph(cache_flag: Option<&Path>, a: GraphArgs) -> Result<u8, Error> {
    let (pipeline, plan) = load(a.pipeline.as_deref())?;
    let status: Vec<NodeStatus> = if a.no_status {
        Vec::new()
    } else {
        let st = statuses(cache_flag, &pipeline, &plan)?;
        let mut v = vec![NodeStatus::default(); pipeline.stages.len()];
        for s in st {
            if let Some(i) = plan.index(&s.name) {
                v[i] = NodeStatus {
                    state: s.state.as_str().to_owned(),
                    reasons: s.reasons,
                };
            }
        }
        v
    };
    let text = render(&plan, &pipeline, &status, a.format);
    match a.output {
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| Error::Output { path, source })?
        }
        None => print(&text)?,
    }
    Ok(OK)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

struct Referenced {
    keys: HashSet<crate::cache::StageKey>,
    objects: HashSet<crate::cache::ContentDigest>,
    locks: usize,
}

fn referenced(workspace: &Path, cache: &Cache) -> Referenced {
    let mut r = Referenced {
        keys: HashSet::new(),
        objects: HashSet::new(),
        locks: 0,
    };
    for path in find_lock_files(workspace, cache.root()) {
        let Some(lock) = LockFile::try_load(&path) else {
            continue;
        };
        r.locks += 1;
        for rec in lock.stages.values() {
            r.keys.insert(rec.key);
            for d in rec.components.deps.values() {
                r.objects.insert(d.digest);
            }
        }
    }
    r
}

struct VerifyBar(Option<indicatif::ProgressBar>);

impl HashProgress for VerifyBar {
    fn start(&self, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
        }
    }
    fn advance(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
}

fn cmd_cache(cache_flag: Option<&Path>, c: CacheCommand) -> Result<u8, Error> {
    let cwd = std::env::current_dir().map_err(|source| Error::Output {
        path: ".".into(),
        source,
    })?;
    let workspace = spec::find_root(&cwd);
    let root = cache_root(cache_flag, &workspace);
    let Some(cache) = Cache::existing(&root) else {
        return Err(Error::Usage {
            message: format!(
                "no cache at `{}` (pass `--cache-dir`, or run from the workspace)",
                root.display()
            ),
        });
    };
    let json = |v: &dyn erased_json::Json| print(&format!("{}\n", v.pretty()));
    match c {
        CacheCommand::Du { json: as_json } => {
            let refs = referenced(&workspace, &cache);
            let du = cache.du(&refs.keys);
            if as_json {
                json(&du)?;
            } else {
                let w = du
                    .rows
                    .iter()
                    .map(|r| r.pipeline.len() + r.stage.len() + 1)
                    .max()
                    .unwrap_or(5)
                    .max(5);
                let mut out = format!(
                    "{:<w$}  {:>7}  {:>7}  {:>10}  {:>10}\n",
                    "stage", "version", "entries", "in use", "size"
                );
                for r in &du.rows {
                    let _ = std::fmt::Write::write_fmt(
                        &mut out,
                        format_args!(
                            "{:<w$}  {:>7}  {:>7}  {:>10}  {:>10}\n",
                            format!("{}/{}", r.pipeline, r.stage),
                            r.version,
                            r.entries,
                            r.referenced,
                            human_bytes(r.bytes)
                        ),
                    );
                }
                let _ = std::fmt::Write::write_fmt(
                    &mut out,
                    format_args!(
                        "objects {} (deduplicated, on disk), memo {}, scratch {}, corrupt {}; {} lock file(s) reference {} entr{}\n",
                        human_bytes(du.objects_bytes),
                        human_bytes(du.memo_bytes),
                        human_bytes(du.scratch_bytes),
                        human_bytes(du.corrupt_bytes),
                        refs.locks,
                        refs.keys.len(),
                        if refs.keys.len() == 1 { "y" } else { "ies" }
                    ),
                );
                print(&out)?;
            }
            Ok(OK)
        }
        CacheCommand::Gc {
            keep_last,
            json: as_json,
            wait,
        } => {
            let _lock = crate::cache::RunLock::acquire(&cache, wait, &|_| {})?;
            let refs = referenced(&workspace, &cache);
            let report = cache.gc(&GcPolicy {
                keep_keys: refs.keys,
                keep_objects: refs.objects,
                keep_last,
            })?;
            if as_json {
                json(&report)?;
            } else {
                print(&format!(
                    "kept {} entr{} ({} lock file(s), --keep-last {keep_last}); removed {} entr{}, {} object(s), {} memo entr{}; freed {}\n",
                    report.entries_kept,
                    if report.entries_kept == 1 { "y" } else { "ies" },
                    refs.locks,
                    report.entries_removed,
                    if report.entries_removed == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    report.objects_removed,
                    report.memos_removed,
                    if report.memos_removed == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    human_bytes(report.bytes_freed)
                ))?;
            }
            Ok(OK)
        }
        CacheCommand::Verify {
            json: as_json,
            wait,
        } => {
            let _lock = crate::cache::RunLock::acquire(&cache, wait, &|_| {})?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let pb = indicatif::ProgressBar::new(0);
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "verifying [{bar:30}] {pos}/{len} files ({per_sec})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                pb
            });
            let t0 = std::time::Instant::now();
            let report = cache.verify(&VerifyBar(bar.clone()))?;
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            if as_json {
                json(&report)?;
            } else {
                let mut out = format!(
                    "checked {} entries and {} objects in {}\n",
                    report.entries,
                    report.objects,
                    secs(t0.elapsed().as_secs_f64())
                );
                for e in &report.corrupt_entries {
                    out.push_str(&format!(
                        "corrupt  {}/{} (key {}): {}\n",
                        e.pipeline,
                        e.stage,
                        &e.key[..12],
                        e.files.join(", ")
                    ));
                }
                for o in &report.corrupt_objects {
                    out.push_str(&format!("corrupt  object {o} (removed)\n"));
                }
                print(&out)?;
            }
            if report.corrupt_entries.is_empty() && report.corrupt_objects.is_empty() {
                Ok(OK)
            } else {
                Err(Error::CorruptCache {
                    entries: report.corrupt_entries.len(),
                    objects: report.corrupt_objects.len(),
                })
            }
        }
    }
}

mod erased_json {
    /// Anything printable as pretty JSON.
    pub(super) trait Json {
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_run_argument_is_the_pipeline_when_it_looks_like_one() {
        let s = |v: &[&str]| split_run_args(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            s(&["p.yaml", "a"]),
            (Some(PathBuf::from("p.yaml")), vec!["a".to_owned()])
        );
        assert_eq!(s(&["a", "b"]), (None, vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(s(&[]), (None, vec![]));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        App::command().debug_assert();
    }
}
