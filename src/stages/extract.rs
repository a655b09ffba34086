//! The `extract_ssl` kind: a frozen wav2vec2 (eval mode) turns the chunk stage's audio shards
//! into f16 feature shards `features [N, T, D]` with the same shard names, plus `index.csv` and
//! `features.json`. Incremental: one memo entry per input shard (keyed by its items and the
//! extraction settings), and rows of unchanged items copied from the previous output.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::chunk::output_shard_name;
use super::items::ParsedOnce;
use super::model_data::{
    CHUNK_JSON, CHUNK_KIND, FEATURES_JSON, INDEX_CSV, Layer, batch_size_key, input_error, io_error,
    link_or_copy, may_use_gpu, model_error, read_json, read_rows, require_upstream, ssl_identities,
    workspace_relative, write_json,
};
use super::{ItemCounts, Stage, StageError, StageReport};
use crate::cache::StageKey;
use crate::exec::context::{KeyCtx, Progress, StageCtx};
use crate::model::{
    DeviceChoice, ExtractOptions, Extractor, FeaturesRef, OomHint, Precision, SslDigest, SslSection,
};
use crate::shards::{Dtype, IndexRow, ShardReader, ShardWriter, write_index};
use crate::spec::{Issue, Pipeline, Resources, StageDef, positions};

/// Kind name.
pub const KIND: &str = "extract_ssl";

/// Memo namespace of feature shards.
const MEMO_NS: &str = "extract_ssl";

/// The `extract_ssl` kind.
pub struct ExtractSsl;

/// Params of `extract_ssl` (docs/pipeline-spec.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    /// Hugging Face wav2vec2 folder (`config.json` + `model.safetensors`).
    pub ssl: String,
    /// `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`.
    #[serde(default)]
    pub device: DeviceChoice,
    /// Clips per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// SSL precision: `f32`, or `bf16`/`f16` autocast on CUDA.
    #[serde(default)]
    pub dtype: Precision,
    /// `last_hidden_state` or a hidden-state index.
    #[serde(default)]
    pub layer: Layer,
}

fn default_batch_size() -> usize {
    8
}

/// What a feature row depends on besides its clip: part of every feature item key.
fn settings_digest(digest: &SslDigest, extractor: &Extractor) -> String {
    let v = serde_json::json!({
        "kind": KIND,
        "version": ExtractSsl.version(),
        "ssl_weights": digest.weights,
        "ssl_config": digest.config,
        "output": extractor.output(),
        "precision": extractor.precision(),
    });
    blake3::hash(v.to_string().as_bytes()).to_hex().to_string()
}

/// Item key of a feature row: the settings and the chunk row's own item key and offset.
fn feature_item(settings: &str, row: &IndexRow) -> String {
    let mut h = blake3::Hasher::new();
    h.update(settings.as_bytes());
    h.update(b"\0");
    h.update(row.item.as_bytes());
    h.update(b"\0");
    h.update(row.offset.to_string().as_bytes());
    h.finalize().to_hex().to_string()
}

/// Rows of the previous output by feature item key.
struct Previous {
    dir: PathBuf,
    rows: HashMap<String, (String, usize)>,
    readers: HashMap<String, ShardReader>,
}

impl Previous {
    fn load(dir: Option<&Path>) -> Option<Previous> {
        let dir = dir?;
        let rows = crate::shards::read_index(&dir.join(INDEX_CSV)).ok()?;
        Some(Previous {
            dir: dir.to_path_buf(),
            rows: rows
                .into_iter()
                .map(|r| {
                    (
                        r.item,
                        (r.shard, usize::try_from(r.row).unwrap_or(usize::MAX)),
                    )
                })
                .collect(),
            readers: HashMap::new(),
        })
    }

    /// The bytes of the previous row with this item key, when it exists and has `len` bytes.
    fn row(&mut self, item: &str, len: usize) -> Option<&[u8]> {
        let (shard, row) = self.rows.get(item)?.clone();
        if !self.readers.contains_key(&shard) {
            let reader = ShardReader::open(&self.dir.join(&shard), Some("features")).ok()?;
            self.readers.insert(shard.clone(), reader);
        }
        let bytes = self.readers.get(&shard)?.row_bytes(row).ok()?;
        (bytes.len() == len).then_some(bytes)
    }
}

/// Clips waiting for a forward pass.
enum Pending {
    I16(Vec<i16>),
    F32(Vec<f32>),
}

impl Pending {
    fn new(dtype: Dtype) -> Pending {
        match dtype {
            Dtype::I16 => Pending::I16(Vec::new()),
            _ => Pending::F32(Vec::new()),
        }
    }
    fn push(&mut self, dtype: Dtype, bytes: &[u8]) {
        match self {
            Pending::I16(v) => v.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            ),
            Pending::F32(v) => dtype.decode(bytes, v),
        }
    }
    fn clear(&mut self) {
        match self {
            Pending::I16(v) => v.clear(),
            Pending::F32(v) => v.clear(),
        }
    }
}

/// Everything one input shard's extraction needs.
struct ShardJob<'a> {
    ctx: &'a StageCtx<'a>,
    extractor: &'a Extractor,
    input: &'a Path,
    rows: &'a [(IndexRow, String)],
    batch_size: usize,
    row_shape: [usize; 2],
    metadata: &'a BTreeMap<String, String>,
    progress: &'a Progress<'a>,
}

impl ShardJob<'_> {
    /// Writes the feature shard `out`: rows of known items copied from `prev`, the others
    /// extracted in batches of `batch_size` (order kept, memory bounded by one batch).
    fn fill(&self, out: &Path, prev: &mut Option<Previous>) -> Result<ItemCounts, StageError> {
        let stage = self.ctx.name();
        let reader = ShardReader::open(self.input, Some("audio"))
            .map_err(|e| input_error(stage, crate::exec::error_chain(&e)))?;
        if !matches!(reader.dtype(), Dtype::I16 | Dtype::F32) || reader.shape().len() != 2 {
            return Err(input_error(
                stage,
                format!(
                    "`{}` holds {:?} {:?}; expected i16 or f32 clips [N, samples]",
                    self.input.display(),
                    reader.dtype(),
                    reader.shape()
                ),
            ));
        }
        let shard_err = |e: crate::shards::ShardError| StageError::Io {
            stage: stage.to_owned(),
            path: out.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut writer = ShardWriter::create(
            out,
            "features",
            Dtype::F16,
            &self.row_shape,
            self.metadata.clone(),
        )
        .map_err(shard_err)?;
        let row_bytes = self.row_shape[0] * self.row_shape[1] * 2;
        let mut counts = ItemCounts::default();
        let mut pending = Pending::new(reader.dtype());
        let mut pending_rows = 0usize;
        let flush = |pending: &mut Pending,
                     n: &mut usize,
                     writer: &mut ShardWriter|
         -> Result<(), StageError> {
            if *n == 0 {
                return Ok(());
            }
            self.ctx.check_cancelled()?;
            let shape = self.row_shape;
            let write = |feats: FeaturesRef<'_>| -> Result<(), StageError> {
                if [feats.frames, feats.dim] != shape {
                    return Err(input_error(
                        stage,
                        format!(
                            "features came out [{}, {}], expected {shape:?}",
                            feats.frames, feats.dim
                        ),
                    ));
                }
                for i in 0..feats.batch {
                    writer
                        .write_row_bytes(feats.clip_bytes(i))
                        .map_err(shard_err)?;
                }
                Ok(())
            };
            match pending {
                Pending::I16(v) => self.extractor.extract_i16_with(v, *n, write),
                Pending::F32(v) => self.extractor.extract_with(v, *n, write),
            }
            .map_err(|e| model_error(self.ctx, e))??;
            self.progress.inc(*n as u64);
            pending.clear();
            *n = 0;
            Ok(())
        };
        for (row, item) in self.rows {
            let index = usize::try_from(row.row).unwrap_or(usize::MAX);
            let audio = reader
                .row_bytes(index)
                .map_err(|e| input_error(stage, e.to_string()))?;
            let reused = prev.as_mut().and_then(|p| p.row(item, row_bytes));
            if let Some(bytes) = reused {
                let bytes = bytes.to_vec();
                flush(&mut pending, &mut pending_rows, &mut writer)?;
                writer.write_row_bytes(&bytes).map_err(shard_err)?;
                self.progress.inc(1);
                counts.reused += 1;
            } else {
                pending.push(reader.dtype(), audio);
                pending_rows += 1;
                counts.processed += 1;
                if pending_rows == self.batch_size {
                    flush(&mut pending, &mut pending_rows, &mut writer)?;
                }
            }
        }
        flush(&mut pending, &mut pending_rows, &mut writer)?;
        writer.finish().map_err(shard_err)?;
        Ok(counts)
    }
}

impl Stage for ExtractSsl {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = Vec::new();
        match def.params_as::<Params>() {
            Err(i) => issues.push(*i),
            Ok(p) => {
                if p.batch_size == 0 {
                    issues.push(Issue::new(
                        positions::child(&positions::child(&def.path(), "params"), "batch_size"),
                        "`batch_size` must be at least 1",
                    ));
                }
            }
        }
        if let Err(i) = require_upstream(def, pipeline, &[CHUNK_KIND]) {
            issues.push(*i);
        }
        issues
    }

    fn identities(&self, ctx: &KeyCtx<'_>) -> Result<BTreeMap<String, String>, StageError> {
        let p: Params = ctx.def.params_as().map_err(|i| StageError::Params {
            stage: ctx.def.name.clone(),
            message: i.message,
        })?;
        ssl_identities(ctx, "ssl", &p.ssl)
    }

    fn resources(&self, def: &StageDef) -> Resources {
        let mut r = def.resources;
        if let Ok(p) = def.params_as::<Params>()
            && may_use_gpu(p.device)
        {
            r.gpu = r.gpu.max(1);
        }
        r
    }

    /// One shard per shard of the upstream `chunk_audio` stage (`sources × buckets`), so on a
    /// cluster the feature shards are extracted by a job array.
    fn shard_count(&self, def: &StageDef, pipeline: &Pipeline) -> u32 {
        require_upstream(def, pipeline, &[CHUNK_KIND])
            .map_or(1, |up| super::chunk::ChunkAudio.shard_count(up, pipeline))
    }

    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let prep = Prepared::get(ctx)?;
        let Some(name) = output_shard_name(&prep.upstream, ctx.pipeline(), shard) else {
            return Ok(ItemCounts::default());
        };
        let Some(rows) = prep.shards.get(&name) else {
            return Ok(ItemCounts::default());
        };
        let progress = prep.progress(ctx);
        let (filled, _) = prep.shard(ctx, &name, rows, &progress)?;
        Ok(filled.unwrap_or(ItemCounts {
            processed: 0,
            reused: rows.len() as u64,
        }))
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let prep = Prepared::get(ctx)?;
        let progress = prep.progress(ctx);
        let mut counts = ItemCounts::default();
        let mut out_rows: Vec<IndexRow> = Vec::with_capacity(prep.rows);
        // Input shards that `run_shard` handles (and counts); the others are counted here.
        let numbered: std::collections::HashSet<String> = (0..self
            .shard_count(ctx.def(), ctx.pipeline()))
            .filter_map(|n| output_shard_name(&prep.upstream, ctx.pipeline(), n))
            .collect();
        for (shard, shard_rows) in &prep.shards {
            ctx.check_cancelled()?;
            let (filled, memo) = prep.shard(ctx, shard, shard_rows, &progress)?;
            match filled {
                Some(c) => counts += c,
                None if !numbered.contains(shard) => counts.reused += shard_rows.len() as u64,
                None => {}
            }
            let file_name = memo_file_name(shard);
            link_or_copy(&stage, &memo.join(&file_name), &ctx.out_dir().join(shard))?;
            out_rows.extend(shard_rows.iter().map(|(r, item)| IndexRow {
                item: item.clone(),
                ..r.clone()
            }));
        }
        progress.finish();
        let index = ctx.out_dir().join(INDEX_CSV);
        write_index(&index, &out_rows)
            .map_err(|e| io_error(&stage, &index, std::io::Error::other(e.to_string())))?;
        let extractor = prep.extractor();
        let ssl = SslSection {
            source: Some(workspace_relative(ctx.pipeline(), &prep.ssl)),
            ..extractor.ssl_section()
        };
        write_json(
            &stage,
            &ctx.out_dir().join(FEATURES_JSON),
            &serde_json::json!({
                "tensor": "features",
                "dtype": "f16",
                "frames": prep.row_shape[0],
                "dim": prep.row_shape[1],
                "clips": out_rows.len(),
                "output": extractor.output(),
                "precision": extractor.precision(),
                "ssl": ssl,
                "chunk": prep.chunk,
            }),
        )?;
        ctx.log().line(&format!(
            "{} clips in {} shards ({} extracted in this step)",
            out_rows.len(),
            prep.shards.len(),
            counts.processed
        ));
        drop(extractor);
        drop(prep);
        PREPARED.forget(&(*ctx.key(), ctx.out_dir().to_path_buf()));
        Ok(StageReport { items: counts })
    }
}

/// The file name of a feature shard inside its memo entry.
fn memo_file_name(shard: &str) -> String {
    Path::new(shard)
        .file_name()
        .map_or_else(|| shard.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// What every shard of one `extract_ssl` run shares: the loaded extractor, the input rows by
/// shard, the previous output. Loaded once per process and stage key (the local executor runs
/// every shard and then the final step in one process).
struct Prepared {
    upstream: StageDef,
    ssl: String,
    batch_size: usize,
    input_dir: PathBuf,
    chunk: serde_json::Value,
    /// Input rows by shard name, in index order, each with its feature item key.
    shards: BTreeMap<String, Vec<(IndexRow, String)>>,
    rows: usize,
    /// Behind a lock: tensors are not `Sync` (one shard extracts at a time anyway).
    extractor: Mutex<Extractor>,
    settings: String,
    row_shape: [usize; 2],
    metadata: BTreeMap<String, String>,
    prev: Mutex<Option<Previous>>,
    /// Clips done so far in this process (the progress bar continues across shards).
    done: AtomicU64,
}

static PREPARED: ParsedOnce<(StageKey, PathBuf), Prepared> = ParsedOnce::new();

impl Prepared {
    fn get(ctx: &StageCtx<'_>) -> Result<Arc<Prepared>, StageError> {
        PREPARED.get((*ctx.key(), ctx.out_dir().to_path_buf()), || {
            Prepared::load(ctx)
        })
    }

    fn load(ctx: &StageCtx<'_>) -> Result<Prepared, StageError> {
        let stage = ctx.name().to_owned();
        let p: Params = ctx.params()?;
        let upstream = require_upstream(ctx.def(), ctx.pipeline(), &[CHUNK_KIND]).map_err(|i| {
            StageError::Params {
                stage: stage.clone(),
                message: i.message,
            }
        })?;
        let input_dir = ctx.input(&upstream.name)?.to_path_buf();
        let chunk = read_json(&stage, &input_dir.join(CHUNK_JSON))?;
        let rows = read_rows(&stage, &input_dir)?;
        let ssl_dir = ctx.resolve(&p.ssl);
        let extractor = Extractor::load(
            &ssl_dir,
            &ExtractOptions {
                device: p.device,
                precision: p.dtype,
                output: p.layer.0,
                oom: OomHint::new(stage.clone(), batch_size_key(&stage)),
            },
        )
        .map_err(|e| model_error(ctx, e))?;
        if extractor.precision() != p.dtype {
            ctx.warn(format!(
                "`dtype: {}` needs CUDA; extracting in {} on {}",
                p.dtype,
                extractor.precision(),
                extractor.device()
            ));
        }
        ctx.log().line(&format!(
            "extracting {} on {} in {} (batch {}), {} clips",
            extractor.output(),
            extractor.device(),
            extractor.precision(),
            p.batch_size,
            rows.len()
        ));
        let digest = extractor.digest().clone();
        let settings = settings_digest(&digest, &extractor);
        let samples = chunk
            .get("samples")
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| usize::try_from(s).ok());
        let mut shards: BTreeMap<String, Vec<(IndexRow, String)>> = BTreeMap::new();
        for row in &rows {
            let item = feature_item(&settings, row);
            shards
                .entry(row.shard.clone())
                .or_default()
                .push((row.clone(), item));
        }
        let frames = match samples {
            Some(s) => extractor.frames_for(s),
            None => {
                // No `samples` in chunk.json: read the first shard's clip length.
                match shards.keys().next() {
                    Some(name) => {
                        let r = ShardReader::open(&input_dir.join(name), Some("audio"))
                            .map_err(|e| input_error(&stage, crate::exec::error_chain(&e)))?;
                        extractor.frames_for(r.row_len())
                    }
                    None => 0,
                }
            }
        };
        let dim = extractor.hidden_size();
        let metadata = BTreeMap::from([
            ("ssl_weights".to_owned(), digest.weights.clone()),
            ("output".to_owned(), extractor.output().to_string()),
            ("precision".to_owned(), extractor.precision().to_string()),
        ]);
        Ok(Prepared {
            upstream: upstream.clone(),
            ssl: p.ssl,
            batch_size: p.batch_size,
            input_dir,
            chunk,
            shards,
            rows: rows.len(),
            extractor: Mutex::new(extractor),
            settings,
            row_shape: [frames, dim],
            metadata,
            prev: Mutex::new(Previous::load(ctx.prev_output())),
            done: AtomicU64::new(0),
        })
    }

    fn extractor(&self) -> std::sync::MutexGuard<'_, Extractor> {
        self.extractor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A progress bar over all the stage's clips, continuing from the clips done so far.
    fn progress<'c>(&self, ctx: &'c StageCtx<'_>) -> Progress<'c> {
        ctx.progress_from("clips", self.rows as u64, self.done.load(Ordering::Relaxed))
    }

    /// Makes sure the feature shard for input shard `shard` has a memo entry (extracting it
    /// when absent). Returns the counts when it was filled here, and the entry's folder.
    fn shard(
        &self,
        ctx: &StageCtx<'_>,
        shard: &str,
        rows: &[(IndexRow, String)],
        progress: &Progress<'_>,
    ) -> Result<(Option<ItemCounts>, PathBuf), StageError> {
        let mut key = blake3::Hasher::new();
        key.update(self.settings.as_bytes());
        key.update(shard.as_bytes());
        for (r, item) in rows {
            key.update(b"\n");
            key.update(r.row.to_string().as_bytes());
            key.update(b" ");
            key.update(item.as_bytes());
        }
        let key = key.finalize().to_hex().to_string();
        let file_name = memo_file_name(shard);
        let extractor = self.extractor();
        let job = ShardJob {
            ctx,
            extractor: &extractor,
            input: &self.input_dir.join(shard),
            rows,
            batch_size: self.batch_size,
            row_shape: self.row_shape,
            metadata: &self.metadata,
            progress,
        };
        let mut filled = None;
        let memo = ctx.memo(MEMO_NS, &key, |tmp| {
            let mut prev = self
                .prev
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            filled = Some(job.fill(&tmp.join(&file_name), &mut prev)?);
            Ok(())
        })?;
        if filled.is_none() {
            progress.inc(rows.len() as u64);
        }
        self.done.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok((filled, memo))
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::stages::model_data::testing::{Env, TORCH, pipeline};

    pub(crate) fn tiny_ssl() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wav2vec2-tiny-random")
    }

    fn clip(seed: usize, samples: usize) -> Vec<f32> {
        (0..samples)
            .map(|i| {
                #[allow(clippy::cast_precision_loss)]
                let t = i as f32 / 16_000.0;
                #[allow(clippy::cast_precision_loss)]
                let f = 200.0 + 50.0 * seed as f32;
                0.3 * (2.0 * std::f32::consts::PI * f * t).sin()
            })
            .collect()
    }

    /// Items of one shard: (path, label, split).
    type Items<'a> = Vec<(&'a str, &'a str, &'a str)>;

    /// A chunk output: each shard name with its items.
    pub(crate) fn write_chunk(dir: &Path, shards: &[(&str, Items<'_>)], samples: usize) {
        std::fs::create_dir_all(dir.join("shards")).unwrap();
        let mut rows = Vec::new();
        for (name, items) in shards {
            let rel = format!("shards/{name}.safetensors");
            let mut w = ShardWriter::create(
                &dir.join(&rel),
                "audio",
                Dtype::I16,
                &[samples],
                BTreeMap::new(),
            )
            .unwrap();
            for (i, (path, label, split)) in items.iter().enumerate() {
                let seed = path.bytes().map(usize::from).sum::<usize>() % 13;
                w.write_row(&clip(seed, samples)).unwrap();
                rows.push(IndexRow {
                    shard: rel.clone(),
                    row: i as u64,
                    path: (*path).to_owned(),
                    source: name.split('-').next().unwrap().to_owned(),
                    label: (*label).to_owned(),
                    split: (*split).to_owned(),
                    speaker: String::new(),
                    offset: 0,
                    item: blake3::hash(path.as_bytes()).to_hex().to_string(),
                });
            }
            w.finish().unwrap();
        }
        write_index(&dir.join(INDEX_CSV), &rows).unwrap();
        std::fs::write(
            dir.join(CHUNK_JSON),
            format!(r#"{{"sample_rate": 16000, "samples": {samples}, "dtype": "i16", "channel": "first", "trim": false, "crop": "first", "hop": {samples}}}"#),
        )
        .unwrap();
    }

    fn text(batch: usize) -> String {
        format!(
            "name: t\nstages:\n  chunk: {{kind: chunk_audio}}\n  extract: {{kind: extract_ssl, needs: [chunk], params: {{ssl: {}, device: cpu, batch_size: {batch}}}}}\n",
            tiny_ssl().display()
        )
    }

    #[test]
    fn extracts_every_clip_and_reuses_unchanged_shards_and_rows() {
        let _serial = TORCH
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), &text(2));
        let env = Env::new(dir.path());
        let chunk1 = dir.path().join("chunk1");
        write_chunk(
            &chunk1,
            &[
                (
                    "real-0000",
                    vec![
                        ("a.flac", "bonafide", "train"),
                        ("b.flac", "bonafide", "val"),
                        ("c.flac", "bonafide", "test"),
                    ],
                ),
                (
                    "tts-0001",
                    vec![("d.wav", "spoof", "train"), ("e.wav", "spoof", "test")],
                ),
            ],
            8000,
        );
        let out1 = dir.path().join("out1");
        let ctx = env.ctx(
            &p,
            "extract",
            BTreeMap::from([("chunk".to_owned(), chunk1.clone())]),
            &out1,
            None,
            "k1",
        );
        let report = ExtractSsl.run(&ctx).unwrap();
        assert_eq!(
            report.items,
            ItemCounts {
                processed: 5,
                reused: 0
            }
        );
        let rows1 = crate::shards::read_index(&out1.join(INDEX_CSV)).unwrap();
        assert_eq!(rows1.len(), 5);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out1.join(FEATURES_JSON)).unwrap())
                .unwrap();
        let frames = info["frames"].as_u64().unwrap() as usize;
        assert_eq!((frames, info["dim"].as_u64()), (24, Some(64)));
        assert_eq!(info["chunk"]["samples"], 8000);
        assert!(
            info["ssl"]["digest"]["weights"]
                .as_str()
                .unwrap()
                .starts_with("blake3:")
        );

        // The rows are what the extractor gives for the clips, in index order.
        let extractor = Extractor::load(
            &tiny_ssl(),
            &ExtractOptions {
                device: DeviceChoice::Cpu,
                ..ExtractOptions::default()
            },
        )
        .unwrap();
        let audio = ShardReader::open(&chunk1.join("shards/real-0000.safetensors"), None).unwrap();
        let feats = ShardReader::open(&out1.join("shards/real-0000.safetensors"), None).unwrap();
        assert_eq!(feats.shape(), &[3, frames, 64]);
        for row in 0..3 {
            let expected = extractor.extract(&audio.row_f32(row).unwrap(), 1).unwrap();
            let got = feats.row_f32(row).unwrap();
            let max = expected
                .data
                .iter()
                .zip(&got)
                .map(|(e, g)| (e.to_f32() - g).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-2, "row {row}: max difference {max}");
        }

        // One more file in the first shard: only it is extracted; the other shard is a memo hit.
        let chunk2 = dir.path().join("chunk2");
        write_chunk(
            &chunk2,
            &[
                (
                    "real-0000",
                    vec![
                        ("a.flac", "bonafide", "train"),
                        ("ab.flac", "bonafide", "train"),
                        ("b.flac", "bonafide", "val"),
                        ("c.flac", "bonafide", "test"),
                    ],
                ),
                (
                    "tts-0001",
                    vec![("d.wav", "spoof", "train"), ("e.wav", "spoof", "test")],
                ),
            ],
            8000,
        );
        let out2 = dir.path().join("out2");
        let ctx = env.ctx(
            &p,
            "extract",
            BTreeMap::from([("chunk".to_owned(), chunk2)]),
            &out2,
            Some(&out1),
            "k2",
        );
        let report = ExtractSsl.run(&ctx).unwrap();
        assert_eq!(
            report.items,
            ItemCounts {
                processed: 1,
                reused: 5
            }
        );
        let rows2 = crate::shards::read_index(&out2.join(INDEX_CSV)).unwrap();
        assert_eq!(rows2.len(), 6);
        let old = ShardReader::open(&out1.join("shards/real-0000.safetensors"), None).unwrap();
        let new = ShardReader::open(&out2.join("shards/real-0000.safetensors"), None).unwrap();
        assert_eq!(new.rows(), 4);
        assert_eq!(new.row_bytes(0).unwrap(), old.row_bytes(0).unwrap());
        assert_eq!(new.row_bytes(2).unwrap(), old.row_bytes(1).unwrap());
        assert_eq!(rows2[0].item, rows1[0].item);
        assert_eq!(
            std::fs::read(out2.join("shards/tts-0001.safetensors")).unwrap(),
            std::fs::read(out1.join("shards/tts-0001.safetensors")).unwrap()
        );
    }

    #[test]
    fn identities_are_the_ssl_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), &text(4));
        let stat = crate::cache::StatCache::in_memory();
        let ctx = KeyCtx {
            pipeline: &p,
            def: p.stage("extract").unwrap(),
            stat: &stat,
        };
        let ids = ExtractSsl.identities(&ctx).unwrap();
        let d = crate::model::ssl_digest(&tiny_ssl()).unwrap();
        assert_eq!(ids["ssl_weights"], d.weights);
        assert_eq!(ids["ssl_config"], d.config);
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  extract: {kind: extract_ssl, params: {ssl: nowhere}}\n",
        );
        let ctx = KeyCtx {
            pipeline: &p,
            def: p.stage("extract").unwrap(),
            stat: &stat,
        };
        let e = ExtractSsl.identities(&ctx).unwrap_err();
        assert!(e.is_environment(), "{e}");
        assert!(
            e.to_string()
                .contains("SSL checkpoint `nowhere` (param `ssl`)"),
            "{e}"
        );
    }

    #[test]
    fn check_wants_a_chunk_stage_and_a_positive_batch() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  extract: {kind: extract_ssl, params: {ssl: m, batch_size: 0, layer: 3}}\n",
        );
        let issues = ExtractSsl.check(p.stage("extract").unwrap(), &p);
        let text: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        assert_eq!(issues.len(), 2, "{text:?}");
        assert!(text[0].contains("batch_size"), "{text:?}");
        assert!(text[1].contains("needs a `chunk_audio` stage"), "{text:?}");
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  extract: {kind: extract_ssl, params: {ssl: m, layer: first}}\n",
        );
        let issues = ExtractSsl.check(p.stage("extract").unwrap(), &p);
        assert!(
            issues[0].message.contains("unknown layer `first`"),
            "{:?}",
            issues[0]
        );
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  a: {kind: extract_ssl, params: {ssl: m}}\n  b: {kind: extract_ssl, params: {ssl: m, device: cpu}}\n",
        );
        assert_eq!(ExtractSsl.resources(p.stage("a").unwrap()).gpu, 1);
        assert_eq!(ExtractSsl.resources(p.stage("b").unwrap()).gpu, 0);
    }
}
