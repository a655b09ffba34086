//! The `chunk_audio` kind: the accepted files of `build_metadata`, grouped into shards by
//! (source, bucket), each file decoded and cut into fixed-length clips by `audio::chunk_file`,
//! streamed into a safetensors shard by `shards::ShardWriter` inside a memo entry keyed by the
//! shard's content; rows of files already in the previous output are copied instead of decoded.
//! `run` assembles `shards/`, `index.csv`, `rejected.csv` and `chunk.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::items::{self, DEFAULT_BUCKETS, OnBadAudio, ParsedOnce};
use super::{ItemCounts, Stage, StageError, StageReport, metadata};
use crate::audio::{AudioError, ChannelPolicy, ChunkParams, CropMode, TrimParams, chunk_file};
use crate::corpus::{MetadataRow, Source, read_split_csvs};
use crate::exec::context::StageCtx;
use crate::shards::{
    Dtype, IndexRow, RejectedItem, ShardReader, ShardWriter, bucket_of, read_index,
    read_rejected_items, write_index, write_rejected_items,
};
use crate::spec::{Issue, Pipeline, StageDef, positions};

/// Kind name.
pub const KIND: &str = "chunk_audio";

/// Implementation version (part of every key and item key).
const VERSION: u32 = 1;

/// Memo namespace of shards.
const SHARD_NS: &str = "chunk";

/// Tensor name inside a shard.
pub const TENSOR: &str = "audio";

/// File names inside a shard's memo entry.
const MEMO_SHARD: &str = "audio.safetensors";
const MEMO_INDEX: &str = "index.csv";
const MEMO_REJECTED: &str = "rejected.csv";

/// Files decoded together (in parallel) before their rows are written in order.
const BATCH: usize = 64;

/// The `chunk_audio` kind.
#[derive(Debug, Clone, Copy)]
pub struct ChunkAudio;

/// Element type of the clips in the shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SampleType {
    /// 16-bit PCM (`round(clamp(x, -1, 1) * 32767)`).
    #[default]
    I16,
    /// 32-bit float.
    F32,
}

impl SampleType {
    fn dtype(self) -> Dtype {
        match self {
            Self::I16 => Dtype::I16,
            Self::F32 => Dtype::F32,
        }
    }
}

/// Params of `chunk_audio`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    sample_rate: u32,
    samples: usize,
    #[serde(alias = "channels")]
    channel: ChannelPolicy,
    trim: bool,
    silence: TrimParams,
    crop: CropMode,
    hop: Option<usize>,
    min_duration_s: f64,
    dtype: SampleType,
    buckets: u32,
    on_bad_audio: OnBadAudio,
}

impl Default for Params {
    fn default() -> Self {
        let a = ChunkParams::default();
        Self {
            sample_rate: a.sample_rate,
            samples: a.samples,
            channel: a.channels,
            trim: a.trim,
            silence: a.silence,
            crop: a.crop,
            hop: a.hop,
            min_duration_s: a.min_duration_s,
            dtype: SampleType::I16,
            buckets: DEFAULT_BUCKETS,
            on_bad_audio: OnBadAudio::Skip,
        }
    }
}

impl Params {
    fn audio(&self) -> ChunkParams {
        ChunkParams {
            sample_rate: self.sample_rate,
            channels: self.channel,
            trim: self.trim,
            silence: self.silence,
            crop: self.crop,
            samples: self.samples,
            hop: self.hop,
            min_duration_s: self.min_duration_s,
        }
    }
}

/// `chunk.json`: the effective params the model stages read.
#[derive(Debug, Serialize)]
struct ChunkInfo {
    sample_rate: u32,
    samples: usize,
    dtype: SampleType,
    channel: ChannelPolicy,
    trim: bool,
    crop: CropMode,
    hop: usize,
}

/// The metadata rows of all splits, sorted by (source, path), grouped by shard.
struct MetaIndex {
    rows: Vec<MetadataRow>,
    shards: HashMap<(String, u32), Vec<usize>>,
    by_path: HashMap<(String, String), usize>,
}

/// Rows and rejections of the previous output, by item key.
#[derive(Default)]
struct PrevIndex {
    dir: PathBuf,
    rows: HashMap<String, PrevRows>,
    rejected: HashMap<String, String>,
}

/// The rows of one item in the previous output (one path's rows, in row order).
struct PrevRows {
    shard: String,
    path: String,
    rows: Vec<(u64, u64)>,
}

static META: ParsedOnce<(PathBuf, u32), MetaIndex> = ParsedOnce::new();
static PREV: ParsedOnce<PathBuf, PrevIndex> = ParsedOnce::new();

/// One shard's items and memo key.
struct ShardPlan {
    source: String,
    bucket: u32,
    /// (metadata row, item key), sorted by path.
    items: Vec<(usize, String)>,
    key: String,
}

/// A shard whose memo entry exists.
struct ShardDone {
    source: String,
    bucket: u32,
    dir: PathBuf,
    counts: ItemCounts,
    filled: bool,
}

/// What to do with one item of a shard.
enum Work<'a> {
    Copy(&'a PrevRows),
    Rejected(String),
    Decode(PathBuf),
}

/// A row's samples: raw bytes of the shard's dtype (copied), or `f32` values (decoded).
enum RowData<'a> {
    Bytes(&'a [u8]),
    Samples(&'a [f32]),
}

/// The shard being written into a memo entry and its rows (the writer opens with the first row,
/// so a shard whose files were all rejected has no file).
struct ShardOut {
    path: PathBuf,
    dtype: Dtype,
    samples: usize,
    sample_rate: u32,
    writer: Option<ShardWriter>,
    index: Vec<IndexRow>,
}

impl ShardOut {
    fn push(
        &mut self,
        row: &MetadataRow,
        item: &str,
        offset: u64,
        data: RowData<'_>,
    ) -> Result<(), crate::shards::ShardError> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(ShardWriter::create(
                &self.path,
                TENSOR,
                self.dtype,
                &[self.samples],
                BTreeMap::from([("sample_rate".to_owned(), self.sample_rate.to_string())]),
            )?),
        };
        self.index.push(IndexRow {
            shard: String::new(),
            row: w.rows(),
            path: row.path.clone(),
            source: row.source.clone(),
            label: String::new(),
            split: String::new(),
            speaker: String::new(),
            offset,
            item: item.to_owned(),
        });
        match data {
            RowData::Bytes(b) => w.write_row_bytes(b),
            RowData::Samples(s) => w.write_row(s),
        }
    }
}

fn item_key(digest: &str, audio_digest: &str, dtype: SampleType) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"brspeech-chunk-item\0");
    h.update(&VERSION.to_le_bytes());
    h.update(audio_digest.as_bytes());
    h.update(dtype.dtype().safetensors_name().as_bytes());
    h.update(b"\0");
    h.update(digest.as_bytes());
    h.finalize().to_hex().to_string()
}

fn shard_key(source: &str, items: &[(usize, String)], meta: &MetaIndex) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"brspeech-chunk-shard\0");
    h.update(&VERSION.to_le_bytes());
    for part in std::iter::once(source).chain(
        items
            .iter()
            .flat_map(|(i, item)| [meta.rows[*i].path.as_str(), item.as_str()]),
    ) {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// `shards/<source>-<bucket:04>.safetensors`.
fn shard_name(source: &str, bucket: u32) -> String {
    format!("shards/{source}-{bucket:04}.safetensors")
}

/// The output name of shard `shard` of the chunk stage `def` (`shards/<source>-<bucket>`), as
/// numbered by its `run_shard`; `None` past the last one. Stages downstream shard the same way.
pub(crate) fn output_shard_name(def: &StageDef, pipeline: &Pipeline, shard: u32) -> Option<String> {
    let buckets = def
        .params_as::<Params>()
        .map_or(DEFAULT_BUCKETS, |p| p.buckets);
    let (source, bucket) = items::shard_source_bucket(pipeline, buckets, shard)?;
    Some(shard_name(&source, bucket))
}

fn load_meta(stage: &str, dir: &Path, buckets: u32) -> Result<MetaIndex, StageError> {
    let mut rows = read_split_csvs(dir).map_err(|e| items::corpus_error(stage, e))?;
    rows.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    let mut shards: HashMap<(String, u32), Vec<usize>> = HashMap::new();
    let mut by_path = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        shards
            .entry((r.source.clone(), bucket_of(&r.path, buckets)))
            .or_default()
            .push(i);
        by_path.insert((r.source.clone(), r.path.clone()), i);
    }
    Ok(MetaIndex {
        rows,
        shards,
        by_path,
    })
}

fn load_prev(dir: &Path) -> PrevIndex {
    let mut prev = PrevIndex {
        dir: dir.to_path_buf(),
        ..PrevIndex::default()
    };
    for r in read_index(&dir.join("index.csv")).unwrap_or_default() {
        let e = prev.rows.entry(r.item).or_insert_with(|| PrevRows {
            shard: r.shard.clone(),
            path: r.path.clone(),
            rows: Vec::new(),
        });
        if e.shard == r.shard && e.path == r.path {
            e.rows.push((r.row, r.offset));
        }
    }
    for r in read_rejected_items(&dir.join("rejected.csv")).unwrap_or_default() {
        prev.rejected.entry(r.item).or_insert(r.reason);
    }
    prev
}

fn bad_audio(stage: &str, source: &str, path: &str, reason: &str, detail: &str) -> StageError {
    StageError::Environment {
        stage: stage.to_owned(),
        message: format!(
            "source `{source}`: file `{path}` cannot be used ({reason}): {detail}; fix or remove it, or set `on_bad_audio: skip` to leave such files out"
        ),
    }
}

impl ChunkAudio {
    fn meta_dir(ctx: &StageCtx<'_>) -> Result<PathBuf, StageError> {
        let name =
            items::upstream_of_kind(ctx.def(), ctx.pipeline(), metadata::KIND).map_err(|i| {
                StageError::Params {
                    stage: ctx.name().to_owned(),
                    message: i.message,
                }
            })?;
        Ok(ctx.input(&name)?.to_path_buf())
    }

    fn meta(ctx: &StageCtx<'_>, p: &Params) -> Result<std::sync::Arc<MetaIndex>, StageError> {
        let dir = Self::meta_dir(ctx)?;
        META.get((dir.clone(), p.buckets), || {
            load_meta(ctx.name(), &dir, p.buckets)
        })
    }

    /// The items and memo key of shard `shard` (`None` when it has no items).
    fn plan(ctx: &StageCtx<'_>, p: &Params, meta: &MetaIndex, shard: u32) -> Option<ShardPlan> {
        let (source, bucket) = items::shard_source_bucket(ctx.pipeline(), p.buckets, shard)?;
        let rows = meta.shards.get(&(source.clone(), bucket))?;
        let audio_digest = p.audio().digest();
        let items: Vec<(usize, String)> = rows
            .iter()
            .map(|&i| (i, item_key(&meta.rows[i].digest, &audio_digest, p.dtype)))
            .collect();
        let key = shard_key(&source, &items, meta);
        Some(ShardPlan {
            source,
            bucket,
            items,
            key,
        })
    }

    /// Makes sure shard `shard`'s memo entry exists (filling it when absent).
    fn shard(
        ctx: &StageCtx<'_>,
        p: &Params,
        sources: &[Source],
        shard: u32,
    ) -> Result<Option<ShardDone>, StageError> {
        let meta = Self::meta(ctx, p)?;
        let Some(plan) = Self::plan(ctx, p, &meta, shard) else {
            return Ok(None);
        };
        let source = sources
            .iter()
            .find(|s| s.name == plan.source)
            .ok_or_else(|| StageError::Params {
                stage: ctx.name().to_owned(),
                message: format!("source `{}` is not in `sources:`", plan.source),
            })?;
        let meta_dir = Self::meta_dir(ctx)?;
        let mut filled = None;
        let dir = ctx.memo(SHARD_NS, &plan.key, |tmp| {
            filled = Some(Self::fill(ctx, p, &meta, &meta_dir, source, &plan, tmp)?);
            Ok(())
        })?;
        if p.on_bad_audio == OnBadAudio::Fail {
            let rejected = read_rejected_items(&dir.join(MEMO_REJECTED))
                .map_err(|e| items::shard_error(ctx.name(), e))?;
            if let Some(r) = rejected.first() {
                return Err(bad_audio(
                    ctx.name(),
                    &r.source,
                    &r.path,
                    &r.reason,
                    "rejected when it was chunked",
                ));
            }
        }
        Ok(Some(ShardDone {
            source: plan.source,
            bucket: plan.bucket,
            dir,
            counts: filled.unwrap_or(ItemCounts {
                processed: 0,
                reused: plan.items.len() as u64,
            }),
            filled: filled.is_some(),
        }))
    }

    /// Writes one shard into `tmp`: rows of items found in the previous output are copied, the
    /// others decoded (a batch at a time, in parallel) and written in path order.
    fn fill(
        ctx: &StageCtx<'_>,
        p: &Params,
        meta: &MetaIndex,
        meta_dir: &Path,
        source: &Source,
        plan: &ShardPlan,
        tmp: &Path,
    ) -> Result<ItemCounts, StageError> {
        let stage = ctx.name();
        let serr = |e| items::shard_error(stage, e);
        let audio = p.audio();
        let dtype = p.dtype.dtype();
        let prev = match ctx.prev_output() {
            Some(dir) => Some(PREV.get(dir.to_path_buf(), || Ok::<_, StageError>(load_prev(dir)))?),
            None => None,
        };
        let mut readers: HashMap<String, Option<ShardReader>> = HashMap::new();
        let mut shard = ShardOut {
            path: tmp.join(MEMO_SHARD),
            dtype,
            samples: p.samples,
            sample_rate: p.sample_rate,
            writer: None,
            index: Vec::new(),
        };
        let mut rejected: Vec<RejectedItem> = Vec::new();
        let mut counts = ItemCounts::default();
        let progress = ctx.progress(
            &format!("chunk {}", shard_name(&plan.source, plan.bucket)),
            plan.items.len() as u64,
        );

        for batch in plan.items.chunks(BATCH) {
            ctx.check_cancelled()?;
            let work: Vec<Work<'_>> = batch
                .iter()
                .map(|(i, item)| {
                    let row = &meta.rows[*i];
                    let reusable = prev.as_deref().and_then(|prev| {
                        if let Some(rows) = prev.rows.get(item) {
                            let reader = readers.entry(rows.shard.clone()).or_insert_with(|| {
                                ShardReader::open(&prev.dir.join(&rows.shard), Some(TENSOR))
                                    .ok()
                                    .filter(|r| r.dtype() == dtype && r.row_len() == p.samples)
                            });
                            reader.is_some().then_some(Work::Copy(rows))
                        } else {
                            prev.rejected.get(item).map(|r| Work::Rejected(r.clone()))
                        }
                    });
                    reusable.unwrap_or_else(|| {
                        Work::Decode(items::item_path(source, meta_dir, &row.path))
                    })
                })
                .collect();
            let decoded: Vec<Option<Result<crate::audio::ChunkedFile, AudioError>>> = work
                .par_iter()
                .map(|w| match w {
                    Work::Decode(abs) => Some(chunk_file(abs, &audio)),
                    _ => None,
                })
                .collect();
            for (((i, item), w), d) in batch.iter().zip(&work).zip(decoded) {
                let row = &meta.rows[*i];
                match (w, d) {
                    (Work::Copy(rows), _) => {
                        let reader = readers
                            .get(&rows.shard)
                            .and_then(Option::as_ref)
                            .expect("copied rows come from an open shard");
                        for &(r, offset) in &rows.rows {
                            let bytes = reader
                                .row_bytes(usize::try_from(r).unwrap_or(usize::MAX))
                                .map_err(serr)?;
                            shard
                                .push(row, item, offset, RowData::Bytes(bytes))
                                .map_err(serr)?;
                        }
                        counts.reused += 1;
                    }
                    (Work::Rejected(reason), _) => {
                        if p.on_bad_audio == OnBadAudio::Fail {
                            return Err(bad_audio(
                                stage,
                                &row.source,
                                &row.path,
                                reason,
                                "rejected when it was chunked before",
                            ));
                        }
                        rejected.push(RejectedItem {
                            path: row.path.clone(),
                            source: row.source.clone(),
                            reason: reason.clone(),
                            item: item.clone(),
                        });
                        counts.reused += 1;
                    }
                    (Work::Decode(_), Some(Ok(file))) => {
                        for clip in &file.clips {
                            shard
                                .push(row, item, clip.offset, RowData::Samples(&clip.samples))
                                .map_err(serr)?;
                        }
                        counts.processed += 1;
                    }
                    (Work::Decode(_), Some(Err(e))) => {
                        let Some(reason) = e.reason() else {
                            return Err(StageError::Params {
                                stage: stage.to_owned(),
                                message: e.to_string(),
                            });
                        };
                        if p.on_bad_audio == OnBadAudio::Fail {
                            return Err(bad_audio(
                                stage,
                                &row.source,
                                &row.path,
                                reason.as_str(),
                                &e.to_string(),
                            ));
                        }
                        ctx.log().line(&format!("rejected: {e}"));
                        rejected.push(RejectedItem {
                            path: row.path.clone(),
                            source: row.source.clone(),
                            reason: reason.as_str().to_owned(),
                            item: item.clone(),
                        });
                        counts.processed += 1;
                    }
                    (Work::Decode(_), None) => unreachable!("every decode has a result"),
                }
            }
            progress.inc(batch.len() as u64);
        }
        progress.finish();
        if let Some(w) = shard.writer {
            w.finish().map_err(serr)?;
        }
        write_index(&tmp.join(MEMO_INDEX), &shard.index).map_err(serr)?;
        write_rejected_items(&tmp.join(MEMO_REJECTED), &rejected).map_err(serr)?;
        Ok(counts)
    }
}

impl Stage for ChunkAudio {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = items::params_issues::<Params>(def);
        if let Err(i) = items::upstream_of_kind(def, pipeline, metadata::KIND) {
            issues.push(*i);
        }
        let Ok(p) = def.params_as::<Params>() else {
            return issues;
        };
        let params = positions::child(&def.path(), "params");
        for problem in p.audio().problems() {
            if let AudioError::InvalidParams { key, message } = problem {
                let key = if key == "channels" { "channel" } else { key };
                issues.push(Issue::new(
                    format!("{params}.{key}"),
                    format!("`{key}` {message}"),
                ));
            }
        }
        issues.extend(items::buckets_issue(&params, p.buckets, "shards"));
        issues
    }

    /// One shard per (source, bucket): `sources × buckets`, known from the pipeline alone.
    fn shard_count(&self, def: &StageDef, pipeline: &Pipeline) -> u32 {
        let buckets = def
            .params_as::<Params>()
            .map_or(DEFAULT_BUCKETS, |p| p.buckets);
        items::source_bucket_shards(pipeline, buckets)
    }

    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let p: Params = ctx.params()?;
        let sources = items::sources(ctx.pipeline(), ctx.name())?;
        Ok(Self::shard(ctx, &p, &sources, shard)?.map_or_else(ItemCounts::default, |d| d.counts))
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let serr = |e| items::shard_error(&stage, e);
        let p: Params = ctx.params()?;
        let sources = items::sources(ctx.pipeline(), &stage)?;
        let meta = Self::meta(ctx, &p)?;
        let mut report = StageReport::default();
        let mut done = Vec::new();
        for shard in 0..self.shard_count(ctx.def(), ctx.pipeline()) {
            ctx.check_cancelled()?;
            if let Some(d) = Self::shard(ctx, &p, &sources, shard)? {
                // Shards filled here were not run by `run_shard` (counted once).
                if d.filled {
                    report.items += d.counts;
                }
                done.push(d);
            }
        }
        done.sort_by(|a, b| (&a.source, a.bucket).cmp(&(&b.source, b.bucket)));

        let out = ctx.out_dir();
        let mut index = Vec::new();
        let mut rejected = Vec::new();
        for d in &done {
            let name = shard_name(&d.source, d.bucket);
            let rows = read_index(&d.dir.join(MEMO_INDEX)).map_err(serr)?;
            if !rows.is_empty() {
                items::link(&stage, &d.dir.join(MEMO_SHARD), &out.join(&name))?;
            }
            for mut r in rows {
                let m = meta
                    .by_path
                    .get(&(r.source.clone(), r.path.clone()))
                    .map(|&i| &meta.rows[i])
                    .ok_or_else(|| StageError::Params {
                        stage: stage.clone(),
                        message: format!(
                            "shard `{name}` has a row for `{}`, which the metadata does not list",
                            r.path
                        ),
                    })?;
                r.shard.clone_from(&name);
                r.label.clone_from(&m.label);
                r.split = m.split.as_str().to_owned();
                r.speaker.clone_from(&m.speaker);
                index.push(r);
            }
            rejected.extend(read_rejected_items(&d.dir.join(MEMO_REJECTED)).map_err(serr)?);
        }
        rejected.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
        write_index(&out.join("index.csv"), &index).map_err(serr)?;
        write_rejected_items(&out.join("rejected.csv"), &rejected).map_err(serr)?;
        let info = ChunkInfo {
            sample_rate: p.sample_rate,
            samples: p.samples,
            dtype: p.dtype,
            channel: p.channel,
            trim: p.trim,
            crop: p.crop,
            hop: p.audio().hop(),
        };
        let mut text = serde_json::to_string_pretty(&info).unwrap_or_default();
        text.push('\n');
        let info_path = out.join("chunk.json");
        std::fs::write(&info_path, text).map_err(|e| items::io_error(&stage, &info_path, e))?;
        if !rejected.is_empty() {
            ctx.warn(format!(
                "{} files rejected while chunking ({}); listed with their reasons in `rejected.csv`",
                rejected.len(),
                items::reason_counts(rejected.iter().map(|r| r.reason.as_str()))
            ));
        }
        ctx.log().line(&format!(
            "{} clips from {} files in {} shards",
            index.len(),
            meta.rows.len() - rejected.len(),
            done.iter()
                .filter(|d| d.dir.join(MEMO_SHARD).exists())
                .count()
        ));
        META.forget(&(Self::meta_dir(ctx)?, p.buckets));
        if let Some(dir) = ctx.prev_output() {
            PREV.forget(&dir.to_path_buf());
        }
        Ok(report)
    }
}
