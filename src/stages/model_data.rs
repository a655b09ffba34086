//! Shared plumbing of the model kinds (`extract_ssl`, `train_aasist`, `evaluate`): the upstream
//! stage of a kind, an upstream shard set (`index.csv` + mmapped shards) as training data,
//! the `layer` and device rules of their params, and model errors as stage errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::StageError;
use crate::exec::context::{KeyCtx, StageCtx};
use crate::model::train::{BatchInput, Input, TrainData};
use crate::model::{ChannelPolicy, DeviceChoice, ModelError, Preprocessing, SslOutput};
use crate::shards::{Dtype, IndexRow, ShardReader, read_index};
use crate::spec::{Issue, Pipeline, StageDef, positions};

/// Kind name of the chunking stage (audio shards).
pub(crate) const CHUNK_KIND: &str = "chunk_audio";
/// Kind name of the feature extraction stage (feature shards).
pub(crate) const EXTRACT_KIND: &str = "extract_ssl";
/// Kind name of the training stage (model checkpoint).
pub(crate) const TRAIN_KIND: &str = "train_aasist";

/// `chunk.json` of a `chunk_audio` output.
pub(crate) const CHUNK_JSON: &str = "chunk.json";
/// `features.json` of an `extract_ssl` output.
pub(crate) const FEATURES_JSON: &str = "features.json";
/// `index.csv` of every shard-writing stage.
pub(crate) const INDEX_CSV: &str = "index.csv";

/// The stages named in `def.needs` whose kind is one of `kinds`, in `needs` order.
pub(crate) fn upstream_of<'a>(
    def: &StageDef,
    pipeline: &'a Pipeline,
    kinds: &[&str],
) -> Vec<&'a StageDef> {
    def.needs
        .iter()
        .filter_map(|n| pipeline.stage(n))
        .filter(|s| kinds.contains(&s.kind.as_str()))
        .collect()
}

/// Exactly one upstream stage of one of `kinds` in `needs`, or the issue that says what to add.
pub(crate) fn require_upstream<'a>(
    def: &StageDef,
    pipeline: &'a Pipeline,
    kinds: &[&str],
) -> Result<&'a StageDef, Box<Issue>> {
    let found = upstream_of(def, pipeline, kinds);
    let names = kinds
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    let path = if def.needs.is_empty() {
        def.path()
    } else {
        positions::child(&def.path(), "needs")
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let candidates: Vec<String> = pipeline
                .stages
                .iter()
                .filter(|s| kinds.contains(&s.kind.as_str()))
                .map(|s| format!("`{}`", s.name))
                .collect();
            let help = if candidates.is_empty() {
                format!("add a {names} stage to the pipeline and name it in `needs`")
            } else {
                format!("add {} to `needs`", candidates.join(" or "))
            };
            Err(Box::new(
                Issue::new(
                    path,
                    format!(
                        "stage `{}` ({}) needs a {names} stage in `needs`",
                        def.name, def.kind
                    ),
                )
                .at_key()
                .with_help(help),
            ))
        }
        many => Err(Box::new(Issue::new(
            path,
            format!(
                "stage `{}` ({}) needs exactly one {names} stage, `needs` names {}",
                def.name,
                def.kind,
                many.iter()
                    .map(|s| format!("`{}`", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// `layer:` of the model kinds: `last_hidden_state` (default) or a hidden-state index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Layer(pub SslOutput);

impl<'de> Deserialize<'de> for Layer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(usize),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Index(k) => Ok(Layer(SslOutput::HiddenState(k))),
            Raw::Name(n) if n == "last_hidden_state" => Ok(Layer(SslOutput::LastHiddenState)),
            Raw::Name(n) => Err(serde::de::Error::custom(format!(
                "unknown layer `{n}`: use `last_hidden_state` or a hidden-state index (0 = the transformer's input)"
            ))),
        }
    }
}

/// The key identities of the SSL folder a stage reads (param `param`, written `written`):
/// `ssl_weights` and `ssl_config`, the digest `model::ssl_digest` computes (and back-end-only
/// checkpoints record). A single `model.safetensors` is fingerprinted through the stat cache,
/// so an unchanged multi-gigabyte checkpoint is not read again by every `status`.
pub(crate) fn ssl_identities(
    ctx: &KeyCtx<'_>,
    param: &str,
    written: &str,
) -> Result<BTreeMap<String, String>, StageError> {
    let stage = &ctx.def.name;
    let env = |e: ModelError| StageError::Environment {
        stage: stage.clone(),
        message: format!(
            "SSL checkpoint `{written}` (param `{param}`): {}",
            crate::exec::error_chain(&e)
        ),
    };
    let files =
        crate::model::checkpoint::HfFiles::locate(&ctx.pipeline.resolve(written)).map_err(env)?;
    let (weights, config) = match files.weights.as_slice() {
        [single] => (
            format!("blake3:{}", ctx.fingerprint(single)?.to_hex()),
            format!("blake3:{}", ctx.fingerprint(&files.config)?.to_hex()),
        ),
        _ => {
            let d = files.digest().map_err(env)?;
            (d.weights, d.config)
        }
    };
    Ok(BTreeMap::from([
        ("ssl_weights".to_owned(), weights),
        ("ssl_config".to_owned(), config),
    ]))
}

/// Whether a device setting may pick a GPU (`auto` or `cuda[:N]`): such stages hold `gpu: 1`.
pub(crate) fn may_use_gpu(device: DeviceChoice) -> bool {
    matches!(device, DeviceChoice::Auto | DeviceChoice::Cuda(_))
}

/// The YAML key that sets a stage's batch size (named by out-of-memory errors).
pub(crate) fn batch_size_key(stage: &str) -> String {
    format!("stages.{stage}.params.batch_size")
}

/// A model-layer error as a stage error: environment problems (devices, memory, missing or
/// unusable checkpoints) exit 4; anything else fails the stage with the message in its log.
pub(crate) fn model_error(ctx: &StageCtx<'_>, e: ModelError) -> StageError {
    let stage = ctx.name().to_owned();
    let message = crate::exec::error_chain(&e);
    ctx.log().line(&format!("error: {message}"));
    match e {
        ModelError::TorchDisabled { .. } => StageError::TorchDisabled { stage },
        ModelError::Io { path, source, .. } => StageError::Io {
            stage,
            path,
            source,
        },
        ModelError::OutOfMemory { .. } | ModelError::Device { .. } => {
            StageError::Environment { stage, message }
        }
        e if e.is_user_error() => StageError::Environment { stage, message },
        _ => StageError::Failed {
            stage,
            message,
            log: ctx.log().path().to_path_buf(),
        },
    }
}

/// An I/O error of `stage` on `path`.
pub(crate) fn io_error(stage: &str, path: &Path, source: std::io::Error) -> StageError {
    StageError::Io {
        stage: stage.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

/// A problem with an upstream output (exit 4: rerun or fix the upstream stage).
pub(crate) fn input_error(stage: &str, message: impl Into<String>) -> StageError {
    StageError::Environment {
        stage: stage.to_owned(),
        message: message.into(),
    }
}

/// Reads a JSON file of an upstream output.
pub(crate) fn read_json(stage: &str, path: &Path) -> Result<serde_json::Value, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(stage, path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        input_error(
            stage,
            format!("`{}` is not valid JSON: {e}", path.display()),
        )
    })
}

/// Writes pretty JSON with a final newline.
pub(crate) fn write_json(
    stage: &str,
    path: &Path,
    value: &serde_json::Value,
) -> Result<(), StageError> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    std::fs::write(path, text).map_err(|e| io_error(stage, path, e))
}

/// The `index.csv` rows of an upstream output.
pub(crate) fn read_rows(stage: &str, dir: &Path) -> Result<Vec<IndexRow>, StageError> {
    let path = dir.join(INDEX_CSV);
    if !path.is_file() {
        return Err(input_error(
            stage,
            format!(
                "`{}` is missing: the upstream stage did not write an index",
                path.display()
            ),
        ));
    }
    read_index(&path).map_err(|e| input_error(stage, crate::exec::error_chain(&e)))
}

/// Preprocessing recorded in model checkpoints, from a `chunk.json` (sample rate, samples,
/// trim, channel policy; missing keys take the chunk stage's defaults).
pub(crate) fn preprocessing_from_chunk(chunk: &serde_json::Value) -> Preprocessing {
    let defaults = Preprocessing {
        trim: false,
        ..Preprocessing::default()
    };
    let u = |k: &str| chunk.get(k).and_then(serde_json::Value::as_u64);
    let channel = ["channel", "channels"]
        .iter()
        .find_map(|k| chunk.get(*k).and_then(serde_json::Value::as_str))
        .and_then(|s| s.parse::<ChannelPolicy>().ok())
        .unwrap_or(defaults.channel);
    Preprocessing {
        sample_rate: u("sample_rate")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(defaults.sample_rate),
        samples: u("samples")
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(defaults.samples),
        trim: chunk
            .get("trim")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(defaults.trim),
        channel,
    }
}

/// Whether an index label is bona fide (`true`) or spoof (`false`).
///
/// # Errors
/// Any other label.
pub fn is_bonafide(stage: &str, row: &IndexRow) -> Result<bool, StageError> {
    match row.label.as_str() {
        "bonafide" => Ok(true),
        "spoof" => Ok(false),
        other => Err(input_error(
            stage,
            format!(
                "`index.csv` row for `{}` has label `{other}`; expected `bonafide` or `spoof`",
                row.path
            ),
        )),
    }
}

/// What one item of a shard set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemShape {
    /// f16 features `[frames, dim]`.
    Features {
        /// T.
        frames: usize,
        /// D.
        dim: usize,
    },
    /// A clip of `samples` samples (i16 or f32 in the shard).
    Waveform {
        /// Samples per clip.
        samples: usize,
    },
}

/// The rows of an upstream shard set selected by a filter, with their shards mapped: random
/// access to any row without reading the rest (the training loader shuffles across shards and
/// prefetches batches through [`TrainData`]).
#[derive(Debug)]
pub struct ShardData {
    readers: Vec<ShardReader>,
    /// `(reader, row)` per item.
    items: Vec<(usize, usize)>,
    /// The index rows of the items.
    pub rows: Vec<IndexRow>,
    labels: Vec<bool>,
    /// Shape of every item.
    pub shape: ItemShape,
}

impl ShardData {
    /// Opens the shards of `dir` (tensor `features` or `audio`) holding the rows `keep` selects.
    /// # Errors
    /// A shard that cannot be read, has another shape than the others, or lacks a row the
    /// index names; a label other than `bonafide` / `spoof`.
    pub fn open(
        stage: &str,
        dir: &Path,
        tensor: &str,
        rows: &[IndexRow],
        keep: impl Fn(&IndexRow) -> bool,
    ) -> Result<ShardData, StageError> {
        let mut readers = Vec::new();
        let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
        let mut items = Vec::new();
        let mut kept = Vec::new();
        let mut labels = Vec::new();
        let mut shape: Option<ItemShape> = None;
        for row in rows.iter().filter(|r| keep(r)) {
            let r = match by_name.get(row.shard.as_str()) {
                Some(&r) => r,
                None => {
                    let path = dir.join(&row.shard);
                    let reader = ShardReader::open(&path, Some(tensor))
                        .map_err(|e| input_error(stage, crate::exec::error_chain(&e)))?;
                    let this = shape_of(stage, &reader, tensor)?;
                    match shape {
                        None => shape = Some(this),
                        Some(s) if s == this => {}
                        Some(s) => {
                            return Err(input_error(
                                stage,
                                format!(
                                    "shard `{}` holds items of shape {this:?}, others {s:?}",
                                    path.display()
                                ),
                            ));
                        }
                    }
                    readers.push(reader);
                    by_name.insert(row.shard.as_str(), readers.len() - 1);
                    readers.len() - 1
                }
            };
            let index = usize::try_from(row.row).unwrap_or(usize::MAX);
            if index >= readers[r].rows() {
                return Err(input_error(
                    stage,
                    format!(
                        "`index.csv` names row {} of `{}`, which has {} rows",
                        row.row,
                        row.shard,
                        readers[r].rows()
                    ),
                ));
            }
            labels.push(is_bonafide(stage, row)?);
            items.push((r, index));
            kept.push(row.clone());
        }
        let shape = shape.unwrap_or(if tensor == "features" {
            ItemShape::Features { frames: 0, dim: 0 }
        } else {
            ItemShape::Waveform { samples: 0 }
        });
        Ok(ShardData {
            readers,
            items,
            rows: kept,
            labels,
            shape,
        })
    }

    /// Bona fide and spoof item counts.
    #[must_use]
    pub fn class_counts(&self) -> (usize, usize) {
        let bona = self.labels.iter().filter(|l| **l).count();
        (bona, self.labels.len() - bona)
    }

    /// Features of items `indices` as f16 values `[n, frames, dim]`, row-major.
    /// # Errors
    /// `(item, message)` for a row that cannot be read.
    pub fn features(&self, indices: &[usize]) -> Result<Vec<half::f16>, (usize, String)> {
        let mut out = Vec::new();
        for &i in indices {
            let (r, row) = self.items[i];
            let bytes = self.readers[r]
                .row_bytes(row)
                .map_err(|e| (i, e.to_string()))?;
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]])),
            );
        }
        Ok(out)
    }

    /// Waveforms of items `indices` as f32 `[n, samples]` (i16 divided by 32767).
    /// # Errors
    /// `(item, message)` for a row that cannot be read.
    pub fn waveforms(&self, indices: &[usize]) -> Result<Vec<f32>, (usize, String)> {
        let mut out = Vec::new();
        for &i in indices {
            let (r, row) = self.items[i];
            let reader = &self.readers[r];
            let bytes = reader.row_bytes(row).map_err(|e| (i, e.to_string()))?;
            reader.dtype().decode(bytes, &mut out);
        }
        Ok(out)
    }
}

fn shape_of(stage: &str, reader: &ShardReader, tensor: &str) -> Result<ItemShape, StageError> {
    let bad =
        |what: String| input_error(stage, format!("shard tensor `{}`: {what}", reader.tensor()));
    match (tensor, reader.shape()) {
        ("features", [_, t, d]) if reader.dtype() == Dtype::F16 => Ok(ItemShape::Features {
            frames: *t,
            dim: *d,
        }),
        ("features", s) => Err(bad(format!(
            "expected f16 features [N, T, D], found {:?} {s:?}",
            reader.dtype()
        ))),
        (_, [_, s]) if matches!(reader.dtype(), Dtype::I16 | Dtype::F32) => {
            Ok(ItemShape::Waveform { samples: *s })
        }
        (_, s) => Err(bad(format!(
            "expected i16 or f32 clips [N, samples], found {:?} {s:?}",
            reader.dtype()
        ))),
    }
}

impl TrainData for ShardData {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn label(&self, index: usize) -> bool {
        self.labels[index]
    }
    fn input(&self, index: usize) -> Result<Input, String> {
        match self.shape {
            ItemShape::Features { frames, dim } => Ok(Input::Features {
                data: self.features(&[index]).map_err(|e| e.1)?,
                frames,
                dim,
            }),
            ItemShape::Waveform { .. } => {
                Ok(Input::Waveform(self.waveforms(&[index]).map_err(|e| e.1)?))
            }
        }
    }
    fn batch(&self, indices: &[usize]) -> Result<BatchInput, (usize, String)> {
        match self.shape {
            ItemShape::Features { frames, dim } => Ok(BatchInput::Features {
                data: self.features(indices)?,
                batch: indices.len(),
                frames,
                dim,
            }),
            ItemShape::Waveform { samples } => Ok(BatchInput::Waveforms {
                data: self.waveforms(indices)?,
                batch: indices.len(),
                samples,
            }),
        }
    }
}

/// Hard-links `from` to `to` (same file system, as memo entries and staging folders are), or
/// copies it.
pub(crate) fn link_or_copy(stage: &str, from: &Path, to: &Path) -> Result<(), StageError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(stage, parent, e))?;
    }
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| io_error(stage, from, e))
}

/// A path as the pipeline wrote it, made relative to the workspace root when it lies inside
/// (so outputs do not depend on where the workspace is checked out).
pub(crate) fn workspace_relative(pipeline: &Pipeline, written: &str) -> String {
    let abs = pipeline.resolve(written);
    let normal: PathBuf = abs.components().fold(PathBuf::new(), |mut p, c| {
        match c {
            std::path::Component::ParentDir => {
                p.pop();
            }
            std::path::Component::CurDir => {}
            other => p.push(other),
        }
        p
    });
    normal
        .strip_prefix(&pipeline.root)
        .map_or_else(|_| normal.clone(), Path::to_path_buf)
        .to_string_lossy()
        .replace('\\', "/")
}

#[cfg(all(test, feature = "torch"))]
pub(crate) mod testing {
    //! Builds a [`StageCtx`] around a pipeline text and hand-made upstream folders, so a kind
    //! can be run directly in unit tests.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use crate::cache::{Cache, StageKey, StatCache};
    use crate::exec::context::{CancelToken, LogWriter, StageCtx};
    use crate::exec::event::NullSink;
    use crate::spec::Pipeline;

    /// libtorch's random generator is process-wide (model loading draws from it, training
    /// reseeds it): tests that run models take this lock so they run one at a time.
    pub(crate) static TORCH: Mutex<()> = Mutex::new(());

    /// A pipeline loaded from `text` in `dir` (which gets a `brspeech.toml`).
    pub(crate) fn pipeline(dir: &Path, text: &str) -> Pipeline {
        std::fs::write(dir.join("brspeech.toml"), "").unwrap();
        let l = crate::spec::load_text(&dir.join("p.yaml"), "p.yaml", text.to_owned()).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        l.pipeline
    }

    /// Everything a [`StageCtx`] borrows.
    pub(crate) struct Env {
        pub cache: Cache,
        pub stat: StatCache,
        pub sink: NullSink,
    }

    impl Env {
        pub(crate) fn new(dir: &Path) -> Env {
            Env {
                cache: Cache::open(&dir.join("cache")).unwrap(),
                stat: StatCache::in_memory(),
                sink: NullSink,
            }
        }

        /// A context for stage `name` with the given upstream outputs, a fresh output folder
        /// `out` and an optional previous output.
        pub(crate) fn ctx<'a>(
            &'a self,
            pipeline: &'a Pipeline,
            name: &str,
            inputs: BTreeMap<String, PathBuf>,
            out: &Path,
            prev: Option<&Path>,
            key_seed: &str,
        ) -> StageCtx<'a> {
            std::fs::create_dir_all(out).unwrap();
            StageCtx {
                def: pipeline.stage(name).unwrap(),
                pipeline,
                key: StageKey::of_bytes(key_seed.as_bytes()),
                inputs,
                out_dir: out.to_path_buf(),
                prev_output: prev.map(Path::to_path_buf),
                cache: &self.cache,
                stat: &self.stat,
                sink: &self.sink,
                log: LogWriter::create(&out.with_extension("log")).unwrap(),
                cancel: CancelToken::new(),
                items: (AtomicU64::new(0), AtomicU64::new(0)),
                memos: Mutex::new(Vec::new()),
            }
        }
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use std::collections::BTreeMap;

    use super::testing::{Env, pipeline};
    use super::*;

    #[test]
    fn out_of_memory_is_an_environment_error_naming_stage_batch_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  train: {kind: train_aasist, params: {batch_size: 64}}\n",
        );
        let env = Env::new(dir.path());
        let ctx = env.ctx(
            &p,
            "train",
            BTreeMap::new(),
            &dir.path().join("out"),
            None,
            "k",
        );
        let e = model_error(
            &ctx,
            ModelError::OutOfMemory {
                stage: "train".into(),
                batch_size: 64,
                config_key: batch_size_key("train"),
            },
        );
        assert!(e.is_environment(), "{e}");
        let text = e.to_string();
        for want in [
            "`train`",
            "batch size 64",
            "`stages.train.params.batch_size`",
        ] {
            assert!(text.contains(want), "{want} missing: {text}");
        }
        let log = std::fs::read_to_string(ctx.log().path()).unwrap();
        assert!(log.contains("out of GPU memory"), "{log}");
        // A libtorch failure fails the stage (exit 1) with the message and the log's path.
        let e = model_error(
            &ctx,
            ModelError::TorchPanic {
                context: "a step".into(),
                message: "boom".into(),
            },
        );
        assert!(!e.is_environment());
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[test]
    fn preprocessing_comes_from_chunk_json() {
        let p = preprocessing_from_chunk(&serde_json::json!({
            "sample_rate": 16000, "samples": 32000, "dtype": "i16", "channel": "mean",
            "trim": true, "crop": "first", "hop": 32000
        }));
        assert_eq!(
            (p.sample_rate, p.samples, p.trim, p.channel),
            (16_000, 32_000, true, ChannelPolicy::Mean)
        );
        let d = preprocessing_from_chunk(&serde_json::json!({}));
        assert_eq!(
            (d.samples, d.trim, d.channel),
            (64_600, false, ChannelPolicy::First)
        );
    }
}
