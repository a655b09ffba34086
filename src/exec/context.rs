//! What the engine hands a stage: [`StageCtx`] while it runs (params, upstream outputs, output
//! folder, previous output, resumable scratch, memo entries, stat-cache fingerprints, the
//! listings of its folder deps as hashed for its key, progress, log, warnings, cancellation,
//! item counters) and [`KeyCtx`] while its key is computed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::event::{Event, EventSink};
use crate::cache::{
    Cache, CacheError, ContentDigest, NoProgress, StageKey, StatCache, TreeDigest, TreeListing,
    TreeSpec,
};
use crate::spec::{Pipeline, StageDef};
use crate::stages::{ItemCounts, StageError};

/// A shared cancellation flag (Ctrl-C, or the scheduler stopping a run).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A flag that is not set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether the flag is set.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A stage's log file (`cache/logs/<pipeline>/<stage>.log`, copied into its entry).
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogWriter {
    /// Creates (truncates) the log at `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let file = File::create(path)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// A log writing to an already open file (a cluster job's output file) known as `path`.
    #[must_use]
    pub fn from_file(path: PathBuf, file: File) -> Self {
        LogWriter {
            path,
            file: Mutex::new(file),
        }
    }

    /// The log file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line.
    pub fn line(&self, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "{text}");
        }
    }

    /// Another handle on the file (for a child process's stdout/stderr).
    ///
    /// # Errors
    /// The handle cannot be duplicated.
    pub fn file(&self) -> std::io::Result<File> {
        self.file
            .lock()
            .map_err(|_| std::io::Error::other("log lock poisoned"))?
            .try_clone()
    }
}

/// A progress counter inside a stage; throttled into [`Event::StageProgress`].
pub struct Progress<'a> {
    stage: &'a str,
    label: String,
    total: u64,
    done: AtomicU64,
    last: Mutex<Instant>,
    sink: &'a dyn EventSink,
}

impl Progress<'_> {
    /// Counts `n` more.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let due = self.last.lock().is_ok_and(|mut last| {
            let due = last.elapsed() >= Duration::from_millis(100) || done == self.total;
            if due {
                *last = Instant::now();
            }
            due
        });
        if due {
            self.emit(done);
        }
    }

    /// Marks the counter complete.
    pub fn finish(&self) {
        self.emit(self.done.load(Ordering::Relaxed).max(self.total));
    }

    fn emit(&self, done: u64) {
        self.sink.emit(Event::StageProgress {
            stage: self.stage.to_owned(),
            label: self.label.clone(),
            done,
            total: self.total,
        });
    }
}

/// What a stage's `identities` may look at.
pub struct KeyCtx<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// The stage.
    pub def: &'a StageDef,
    pub(crate) stat: &'a StatCache,
}

impl KeyCtx<'_> {
    /// blake3 of a file or folder through the stat cache.
    ///
    /// # Errors
    /// [`StageError::Environment`] when the path does not exist, or the read error.
    pub fn fingerprint(&self, path: &Path) -> Result<ContentDigest, StageError> {
        fingerprint(self.stat, &self.def.name, path).map(|t| t.digest)
    }
}

fn fingerprint(stat: &StatCache, stage: &str, path: &Path) -> Result<TreeDigest, StageError> {
    let spec = [TreeSpec {
        path: path.to_path_buf(),
        include: None,
    }];
    let got = stat
        .digest_trees(&spec, &NoProgress)
        .map_err(|source| StageError::Cache {
            stage: stage.to_owned(),
            source,
        })?;
    got.into_iter()
        .next()
        .flatten()
        .ok_or_else(|| StageError::Environment {
            stage: stage.to_owned(),
            message: format!("`{}` does not exist", path.display()),
        })
}

/// Everything a running stage gets from the engine.
pub struct StageCtx<'a> {
    pub(crate) def: &'a StageDef,
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) key: StageKey,
    pub(crate) inputs: BTreeMap<String, PathBuf>,
    pub(crate) out_dir: PathBuf,
    pub(crate) prev_output: Option<PathBuf>,
    pub(crate) cache: &'a Cache,
    pub(crate) stat: &'a StatCache,
    pub(crate) sink: &'a dyn EventSink,
    pub(crate) log: LogWriter,
    pub(crate) cancel: CancelToken,
    pub(crate) items: (AtomicU64, AtomicU64),
    pub(crate) memos: Mutex<Vec<String>>,
}

impl StageCtx<'_> {
    /// The stage's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The stage's definition.
    #[must_use]
    pub fn def(&self) -> &StageDef {
        self.def
    }

    /// The pipeline (sources, vars, folders).
    #[must_use]
    pub fn pipeline(&self) -> &Pipeline {
        self.pipeline
    }

    /// This run's stage key.
    #[must_use]
    pub fn key(&self) -> &StageKey {
        &self.key
    }

    /// The params decoded into `P` (config section merged under the stage's own params).
    ///
    /// # Errors
    /// [`StageError::Params`] naming the field that does not fit.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        self.def.params_as::<P>().map_err(|i| StageError::Params {
            stage: self.def.name.clone(),
            message: format!("`{}`: {}", i.path, i.message),
        })
    }

    /// A path written in the pipeline, resolved against the pipeline's folder.
    #[must_use]
    pub fn resolve(&self, written: &str) -> PathBuf {
        self.pipeline.resolve(written)
    }

    /// The committed output folder of upstream stage `stage` (read-only, inside the cache).
    ///
    /// # Errors
    /// [`StageError::NoInput`] when `stage` is not upstream of this one.
    pub fn input(&self, stage: &str) -> Result<&Path, StageError> {
        self.inputs
            .get(stage)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::NoInput {
                stage: self.def.name.clone(),
                input: stage.to_owned(),
            })
    }

    /// Every upstream stage's committed output folder, by stage name.
    #[must_use]
    pub fn inputs(&self) -> &BTreeMap<String, PathBuf> {
        &self.inputs
    }

    /// The staging folder the stage writes its outputs into (committed atomically on success).
    #[must_use]
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The last committed output of this stage name, whatever its key (stages that process
    /// items copy the rows of unchanged items from it).
    #[must_use]
    pub fn prev_output(&self) -> Option<&Path> {
        self.prev_output.as_deref()
    }

    /// A folder that survives a killed run of the same key (training checkpoints); deleted
    /// after the stage commits.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn resume_dir(&self) -> Result<PathBuf, StageError> {
        self.cache
            .scratch_dir(&self.key)
            .map_err(|source| self.cache_error(source))
    }

    /// A content-keyed memo entry `ns/key`: its folder, created by `fill` (given an empty
    /// staging folder) when absent, committed by atomic rename. Safe when two processes race:
    /// the first rename wins. `key` must be derived from content (input digests, params).
    ///
    /// # Errors
    /// `fill`'s error, or the cache's.
    pub fn memo<F>(&self, ns: &str, key: &str, fill: F) -> Result<PathBuf, StageError>
    where
        F: FnOnce(&Path) -> Result<(), StageError>,
    {
        let stage = self.def.name.clone();
        let path = self
            .cache
            .memo::<MemoError, _>(ns, key, |tmp| fill(tmp).map_err(MemoError::Stage))
            .map_err(|e| match e {
                MemoError::Stage(s) => s,
                MemoError::Cache(source) => StageError::Cache { stage, source },
            })?;
        if let Ok(mut m) = self.memos.lock() {
            m.push(format!("{ns}/{key}"));
        }
        Ok(path)
    }

    /// blake3 of a file or folder through the stat cache (unchanged files are not read).
    ///
    /// # Errors
    /// [`StageError::Environment`] when the path does not exist, or the read error.
    pub fn fingerprint(&self, path: &Path) -> Result<ContentDigest, StageError> {
        self.fingerprint_tree(path).map(|t| t.digest)
    }

    /// Like [`StageCtx::fingerprint`], with the folder listing (relative path → digest).
    ///
    /// # Errors
    /// As [`StageCtx::fingerprint`].
    pub fn fingerprint_tree(&self, path: &Path) -> Result<TreeDigest, StageError> {
        fingerprint(self.stat, &self.def.name, path)
    }

    /// The listing of the stage's folder dep `name` (as its `deps` names it): every file its
    /// include globs take with size and digest, the files they leave out, and the walk's
    /// problems (symlink loops, dangling links, unreadable folders). It is the listing the
    /// stage's key was computed from when the engine computed the key in this process (no
    /// second walk, no second `stat` of any file); otherwise the folder is walked now, through
    /// the stat cache. `None` when the stage has no such dep or it is not a folder.
    ///
    /// # Errors
    /// The stage's kind is unknown, or the folder cannot be listed.
    pub fn dep_listing(&self, name: &str) -> Result<Option<Arc<TreeListing>>, StageError> {
        let kind = crate::stages::lookup(&self.def.kind).map_err(|e| StageError::Environment {
            stage: self.def.name.clone(),
            message: e.to_string(),
        })?;
        let Some(dep) = kind
            .deps(self.def, self.pipeline)
            .into_iter()
            .find(|d| d.name == name)
        else {
            return Ok(None);
        };
        let spec = TreeSpec {
            path: dep.path,
            include: dep.include,
        };
        self.stat
            .tree_listing(&spec, &NoProgress)
            .map_err(|source| self.cache_error(source))
    }

    /// A progress counter with a known `total` (0 = unknown).
    #[must_use]
    pub fn progress(&self, label: &str, total: u64) -> Progress<'_> {
        self.progress_from(label, total, 0)
    }

    /// A progress counter that starts at `done` (a stage whose shards each make a counter
    /// continues where the previous shard's stopped).
    #[must_use]
    pub fn progress_from(&self, label: &str, total: u64, done: u64) -> Progress<'_> {
        Progress {
            stage: &self.def.name,
            label: label.to_owned(),
            total,
            done: AtomicU64::new(done),
            last: Mutex::new(
                Instant::now()
                    .checked_sub(Duration::from_secs(1))
                    .unwrap_or_else(Instant::now),
            ),
            sink: self.sink,
        }
    }

    /// The stage's log.
    #[must_use]
    pub fn log(&self) -> &LogWriter {
        &self.log
    }

    /// Reports a warning (shown to the user and written to the log).
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        self.log.line(&format!("warning: {message}"));
        self.sink.emit(Event::StageWarning {
            stage: self.def.name.clone(),
            message,
        });
    }

    /// Whether the run is being interrupted; long loops should check it.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(Cancelled)` when the run is being interrupted.
    ///
    /// # Errors
    /// [`StageError::Cancelled`].
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.is_cancelled() {
            Err(StageError::Cancelled {
                stage: self.def.name.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// The cancellation flag, for worker threads.
    #[must_use]
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Counts processed and reused items (reported by `run --json`).
    pub fn add_items(&self, processed: u64, reused: u64) {
        self.items.0.fetch_add(processed, Ordering::Relaxed);
        self.items.1.fetch_add(reused, Ordering::Relaxed);
    }

    pub(crate) fn counted_items(&self) -> ItemCounts {
        ItemCounts {
            processed: self.items.0.load(Ordering::Relaxed),
            reused: self.items.1.load(Ordering::Relaxed),
        }
    }

    fn cache_error(&self, source: CacheError) -> StageError {
        StageError::Cache {
            stage: self.def.name.clone(),
            source,
        }
    }
}

enum MemoError {
    Stage(StageError),
    Cache(CacheError),
}

impl From<CacheError> for MemoError {
    fn from(e: CacheError) -> Self {
        MemoError::Cache(e)
    }
}
