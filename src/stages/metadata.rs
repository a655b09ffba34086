//! The `build_metadata` kind: places the scanned files in splits (folders / csv / hash,
//! speaker-disjoint, holdout), probes each placed file by decoding it (reusing the probes of
//! unchanged files from the previous output), and writes `train.csv`, `val.csv`, `test.csv`,
//! `rejected.csv`, `stats.json` and `probes.csv` (plus the generated sources' accepted files).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Deserialize;

use super::items::{self, DEFAULT_BUCKETS, OnBadAudio, ParsedOnce};
use super::{DepSpec, ItemCounts, Stage, StageError, StageReport, declared_deps, scan};
use crate::audio::{ProbeParams, probe_file};
use crate::cache::StageKey;
use crate::corpus::{
    CorpusFile, CorpusSplits, ManifestRow, MetadataRow, ProbeRow, RejectedRow, Source, SplitConfig,
    SplitDef, compute_stats, read_manifest, read_probes, split_corpus, write_probes,
    write_rejected, write_split_csvs, write_stats,
};
use crate::exec::context::{Progress, StageCtx};
use crate::shards::bucket_of;
use crate::spec::{Issue, Pipeline, StageDef, did_you_mean, positions};

/// Kind name.
pub const KIND: &str = "build_metadata";

/// Probe records file in the stage output (what a later run reuses).
pub const PROBES: &str = "probes.csv";

/// Version of the probe results for given bytes and parameters (part of each probe's key).
const PROBE_VERSION: u32 = 1;

/// The `build_metadata` kind.
#[derive(Debug, Clone, Copy)]
pub struct BuildMetadata;

/// Params of `build_metadata`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Seed of the hash split rule.
    seed: u64,
    /// `[train, val, test]` weights of the hash split rule.
    ratios: [f64; 3],
    /// Sources whose files all go to test.
    holdout_sources: Vec<String>,
    /// Files shorter than this many seconds are rejected (`too_short`).
    min_duration_s: f64,
    /// `skip` (reject and warn) or `fail`.
    on_bad_audio: OnBadAudio,
    /// Probe shards per source (by a hash of the path); a shard is one task on a cluster.
    buckets: u32,
}

impl Default for Params {
    fn default() -> Self {
        let split = SplitConfig::default();
        Self {
            seed: split.seed,
            ratios: split.ratios,
            holdout_sources: split.holdout_sources,
            min_duration_s: 0.0,
            on_bad_audio: OnBadAudio::Skip,
            buckets: DEFAULT_BUCKETS,
        }
    }
}

impl Params {
    fn probe(&self) -> ProbeParams {
        ProbeParams {
            min_duration_s: self.min_duration_s,
            ..ProbeParams::default()
        }
    }
}

/// Key of one probe: the file's content digest under the probe parameters.
fn probe_item(digest: &str, params: &ProbeParams) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"brspeech-probe\0");
    h.update(&PROBE_VERSION.to_le_bytes());
    h.update(
        serde_json::to_string(params)
            .expect("probe parameters serialise")
            .as_bytes(),
    );
    h.update(b"\0");
    h.update(digest.as_bytes());
    h.finalize().to_hex().to_string()
}

/// A placed file and what is known about it.
struct Placed {
    index: usize,
    item: String,
}

impl Stage for BuildMetadata {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = items::params_issues::<Params>(def);
        if let Err(i) = items::upstream_of_kind(def, pipeline, scan::KIND) {
            issues.push(*i);
        }
        let Ok(p) = def.params_as::<Params>() else {
            return issues;
        };
        let params = positions::child(&def.path(), "params");
        if let Some(problem) = crate::corpus::source::ratio_problem(&p.ratios) {
            issues.push(Issue::new(
                positions::child(&params, "ratios"),
                format!("`ratios` {problem}"),
            ));
        }
        if !(p.min_duration_s.is_finite() && p.min_duration_s >= 0.0) {
            issues.push(Issue::new(
                positions::child(&params, "min_duration_s"),
                "`min_duration_s` must be zero or a positive number of seconds",
            ));
        }
        issues.extend(items::buckets_issue(&params, p.buckets, "probe shards"));
        let names = items::source_names(pipeline);
        for (i, h) in p.holdout_sources.iter().enumerate() {
            if !names.contains(h) {
                issues.push(
                    Issue::new(
                        positions::item(&positions::child(&params, "holdout_sources"), i),
                        format!("`{h}` is not a source"),
                    )
                    .with_help_opt(
                        did_you_mean(h, names.iter().map(String::as_str)).or_else(|| {
                            Some(format!(
                                "sources: {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }),
                    ),
                );
            }
        }
        issues
    }

    /// The declared deps plus the split CSV files of `split: csv` sources (they decide splits).
    fn deps(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<DepSpec> {
        let mut deps = declared_deps(def, pipeline);
        let (defs, _) = items::source_defs(pipeline);
        let mut csvs: BTreeMap<String, (PathBuf, Vec<String>)> = BTreeMap::new();
        for (_, s) in &defs {
            if let (Some(root), Some(SplitDef::Csv(csv))) = (&s.root, &s.split) {
                for file in csv.files.values() {
                    let written = root.join(file);
                    csvs.entry(written.to_string_lossy().into_owned())
                        .or_insert_with(|| (pipeline.dir.join(written), Vec::new()))
                        .1
                        .push(s.name.clone());
                }
            }
        }
        deps.extend(csvs.into_iter().map(|(name, (path, sources))| DepSpec {
            name,
            path,
            include: None,
            about: Some(items::for_sources("a split file", &sources)),
        }));
        deps
    }

    /// One shard per (source, bucket of the file's path): `sources × buckets`, so on a cluster
    /// the probing (a full decode of every file) is a job array.
    fn shard_count(&self, def: &StageDef, pipeline: &Pipeline) -> u32 {
        let buckets = def
            .params_as::<Params>()
            .map_or(DEFAULT_BUCKETS, |p| p.buckets);
        items::source_bucket_shards(pipeline, buckets)
    }

    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let p: Params = ctx.params()?;
        let plan = Plan::get(ctx, &p)?;
        let progress = plan.progress(ctx);
        Ok(match plan.shard(ctx, &p, shard, &progress)? {
            Some((Some(filled), _)) => filled,
            Some((None, _)) => ItemCounts {
                processed: 0,
                reused: plan.by_shard.get(&shard).map_or(0, |v| v.len() as u64),
            },
            None => ItemCounts::default(),
        })
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let p: Params = ctx.params()?;
        let cerr = |e| items::corpus_error(&stage, e);
        let plan = Plan::get(ctx, &p)?;
        let (manifest, splits, scan_dir) = (&plan.manifest, &plan.splits, &plan.scan_dir);
        let by_name: BTreeMap<&str, &Source> =
            plan.sources.iter().map(|s| (s.name.as_str(), s)).collect();
        for c in &splits.conflicts {
            ctx.warn(format!(
                "speaker `{}` is in several splits by the data's own rules ({}); nothing was moved",
                c.speaker,
                c.splits
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (source, missing) in &splits.listed_missing {
            ctx.warn(format!(
                "source `{source}`: {} paths listed in its split CSV files were not found (first: `{}`)",
                missing.len(),
                missing[0]
            ));
        }
        for (source, twice) in &splits.listed_twice {
            ctx.warn(format!(
                "source `{source}`: {} paths are listed more than once in its split CSV files; the first listing counts (first: `{}`)",
                twice.len(),
                twice[0]
            ));
        }

        // Probes, shard by shard: memo entries that `run_shard` filled (and counted) are read
        // back; shards not filled yet are probed here and counted here.
        let progress = plan.progress(ctx);
        let mut counts = ItemCounts::default();
        let mut probed: HashMap<String, ProbeRow> = HashMap::new();
        for shard in 0..self.shard_count(ctx.def(), ctx.pipeline()) {
            ctx.check_cancelled()?;
            if let Some((filled, dir)) = plan.shard(ctx, &p, shard, &progress)? {
                if let Some(c) = filled {
                    counts += c;
                }
                let rows = read_probes(&dir.join(PROBES)).map_err(cerr)?;
                probed.extend(rows.into_iter().map(|r| (r.item.clone(), r)));
            }
        }
        progress.finish();
        let placed = &plan.placed;

        // Rows, in manifest order (source, path).
        let mut rows = Vec::new();
        let mut rejected = Vec::new();
        let mut probes = Vec::new();
        let mut accepted_generated = Vec::new();
        let mut placed_iter = placed.iter().peekable();
        for (i, (m, placement)) in manifest.iter().zip(&splits.placements).enumerate() {
            let split = match &placement.split {
                Ok(s) => *s,
                Err(why) => {
                    ctx.log()
                        .line(&format!("unplaced: `{}` of `{}`: {why}", m.path, m.source));
                    rejected.push(RejectedRow {
                        path: m.path.clone(),
                        source: m.source.clone(),
                        reason: "unplaced".into(),
                    });
                    continue;
                }
            };
            let pl = placed_iter
                .next()
                .filter(|pl| pl.index == i)
                .expect("placed files follow the manifest order");
            let Some(probe) = probed.get(&pl.item).map(|r| ProbeRow {
                source: m.source.clone(),
                path: m.path.clone(),
                ..r.clone()
            }) else {
                return Err(StageError::Params {
                    stage,
                    message: format!(
                        "no probe of `{}` (source `{}`) in the shards' results",
                        m.path, m.source
                    ),
                });
            };
            if probe.reason.is_empty() {
                rows.push(MetadataRow {
                    path: m.path.clone(),
                    label: m.label.clone(),
                    source: m.source.clone(),
                    split,
                    speaker: placement.speaker.clone().unwrap_or_default(),
                    duration_s: probe.duration_s,
                    sample_rate: probe.sample_rate,
                    channels: probe.channels,
                    digest: m.digest.clone(),
                });
                if by_name
                    .get(m.source.as_str())
                    .is_some_and(|s| s.root().is_none())
                {
                    accepted_generated.push(i);
                }
            } else {
                if p.on_bad_audio == OnBadAudio::Fail {
                    // Probed by an earlier run with `on_bad_audio: skip`.
                    let detail = format!("`{}` was rejected as `{}`", m.path, probe.reason);
                    return Err(bad_file(&stage, &m.source, &m.path, &probe.reason, &detail));
                }
                rejected.push(RejectedRow {
                    path: m.path.clone(),
                    source: m.source.clone(),
                    reason: probe.reason.clone(),
                });
            }
            probes.push(probe);
        }

        let out = ctx.out_dir();
        write_split_csvs(out, &rows).map_err(cerr)?;
        write_rejected(&out.join("rejected.csv"), &rejected).map_err(cerr)?;
        write_stats(&out.join("stats.json"), &compute_stats(&rows, &rejected)).map_err(cerr)?;
        write_probes(&out.join(PROBES), &probes).map_err(cerr)?;
        for i in accepted_generated {
            let m = &manifest[i];
            items::link(
                &stage,
                &items::generated_path(scan_dir, &m.source, &m.path),
                &items::generated_path(out, &m.source, &m.path),
            )?;
        }
        if !rejected.is_empty() {
            ctx.warn(format!(
                "{} of {} files rejected ({}); listed with their reasons in `rejected.csv`",
                rejected.len(),
                manifest.len(),
                items::reason_counts(rejected.iter().map(|r| r.reason.as_str()))
            ));
        }
        ctx.log().line(&format!(
            "{} files accepted, {} rejected; {} probed in this step",
            rows.len(),
            rejected.len(),
            counts.processed,
        ));
        drop(plan);
        PLAN.forget(&(*ctx.key(), ctx.out_dir().to_path_buf()));
        Ok(StageReport { items: counts })
    }
}

fn bad_file(stage: &str, source: &str, path: &str, reason: &str, detail: &str) -> StageError {
    StageError::Environment {
        stage: stage.to_owned(),
        message: format!(
            "source `{source}`: file `{path}` cannot be used ({reason}): {detail}; fix or remove it, or set `on_bad_audio: skip` to leave such files out"
        ),
    }
}

/// Memo namespace of probe shards.
const MEMO_NS: &str = "build_metadata";

/// The manifest, its split placements, the probe item of every placed file and the previous
/// output's probes: what every shard and the final step share, read once per process and
/// stage key (the local executor runs every shard and then the final step in one process).
struct Plan {
    scan_dir: PathBuf,
    sources: Vec<Source>,
    manifest: Vec<ManifestRow>,
    splits: CorpusSplits,
    placed: Vec<Placed>,
    /// Indices into `placed` by shard number (source position × buckets + bucket of the path).
    by_shard: BTreeMap<u32, Vec<usize>>,
    previous: HashMap<String, ProbeRow>,
    /// Distinct items that no previous probe covers (the progress bar's total).
    to_probe: u64,
    /// Items probed so far in this process.
    done: AtomicU64,
}

static PLAN: ParsedOnce<(StageKey, PathBuf), Plan> = ParsedOnce::new();

impl Plan {
    fn get(ctx: &StageCtx<'_>, p: &Params) -> Result<Arc<Plan>, StageError> {
        PLAN.get((*ctx.key(), ctx.out_dir().to_path_buf()), || {
            Plan::load(ctx, p)
        })
    }

    fn load(ctx: &StageCtx<'_>, p: &Params) -> Result<Plan, StageError> {
        let stage = ctx.name();
        let scan_name =
            items::upstream_of_kind(ctx.def(), ctx.pipeline(), scan::KIND).map_err(|i| {
                StageError::Params {
                    stage: stage.to_owned(),
                    message: i.message,
                }
            })?;
        let scan_dir = ctx.input(&scan_name)?.to_path_buf();
        let cerr = |e| items::corpus_error(stage, e);
        let manifest = read_manifest(&scan_dir.join(scan::MANIFEST)).map_err(cerr)?;
        let sources = items::sources(ctx.pipeline(), stage)?;
        let files: Vec<CorpusFile> = manifest
            .iter()
            .map(|m| CorpusFile {
                source: m.source.clone(),
                path: m.path.clone(),
            })
            .collect();
        let config = SplitConfig {
            seed: p.seed,
            ratios: p.ratios,
            holdout_sources: p.holdout_sources.clone(),
        };
        let splits = split_corpus(&sources, &files, &config).map_err(cerr)?;
        let probe_params = p.probe();
        let placed: Vec<Placed> = manifest
            .iter()
            .zip(&splits.placements)
            .enumerate()
            .filter(|(_, (_, pl))| pl.split.is_ok())
            .map(|(index, (m, _))| Placed {
                index,
                item: probe_item(&m.digest, &probe_params),
            })
            .collect();
        let names = items::source_names(ctx.pipeline());
        let position: HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let buckets = p.buckets.max(1);
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (k, pl) in placed.iter().enumerate() {
            let m = &manifest[pl.index];
            if let Some(&src) = position.get(m.source.as_str()) {
                let shard = src
                    .saturating_mul(buckets)
                    .saturating_add(bucket_of(&m.path, buckets));
                by_shard.entry(shard).or_default().push(k);
            }
        }
        let mut previous: HashMap<String, ProbeRow> = HashMap::new();
        if let Some(prev) = ctx.prev_output() {
            let path = prev.join(PROBES);
            match read_probes(&path) {
                Ok(rows) => previous.extend(rows.into_iter().map(|r| (r.item.clone(), r))),
                Err(e) if path.exists() => {
                    ctx.log().line(&format!("previous probes not reused: {e}"));
                }
                Err(_) => {}
            }
        }
        let to_probe = placed
            .iter()
            .filter(|pl| !previous.contains_key(&pl.item))
            .map(|pl| pl.item.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        Ok(Plan {
            scan_dir,
            sources,
            manifest,
            splits,
            placed,
            by_shard,
            previous,
            to_probe,
            done: AtomicU64::new(0),
        })
    }

    /// A progress bar over the files to probe, continuing from those probed so far.
    fn progress<'c>(&self, ctx: &'c StageCtx<'_>) -> Progress<'c> {
        ctx.progress_from("probe", self.to_probe, self.done.load(Ordering::Relaxed))
    }

    /// Makes sure shard `shard`'s probes have a memo entry (`probes.csv`, one row per placed
    /// file of the shard, in manifest order), probing the files no previous probe covers.
    /// `None` for a shard without files; else the counts when it was filled here, and the
    /// entry's folder.
    fn shard(
        &self,
        ctx: &StageCtx<'_>,
        p: &Params,
        shard: u32,
        progress: &Progress<'_>,
    ) -> Result<Option<(Option<ItemCounts>, PathBuf)>, StageError> {
        let stage = ctx.name();
        let Some(members) = self.by_shard.get(&shard) else {
            return Ok(None);
        };
        let probe_params = p.probe();
        let mut key = blake3::Hasher::new();
        key.update(&PROBE_VERSION.to_le_bytes());
        key.update(
            serde_json::to_string(&probe_params)
                .expect("probe parameters serialise")
                .as_bytes(),
        );
        for &k in members {
            let (pl, m) = (&self.placed[k], &self.manifest[self.placed[k].index]);
            for part in [m.source.as_str(), m.path.as_str(), pl.item.as_str()] {
                key.update(b"\0");
                key.update(part.as_bytes());
            }
        }
        let key = key.finalize().to_hex().to_string();
        let mut filled = None;
        let dir = ctx.memo(MEMO_NS, &key, |tmp| {
            // Files with the same content are probed once.
            let mut seen = std::collections::HashSet::new();
            let todo: Vec<&Placed> = members
                .iter()
                .map(|&k| &self.placed[k])
                .filter(|pl| !self.previous.contains_key(&pl.item) && seen.insert(&pl.item))
                .collect();
            let stop = AtomicBool::new(false);
            let results: Vec<Option<(ProbeRow, Option<String>)>> = todo
                .par_iter()
                .map(|pl| {
                    if stop.load(Ordering::Relaxed) || ctx.is_cancelled() {
                        return None;
                    }
                    let m = &self.manifest[pl.index];
                    let got = self.probe(m, &pl.item, &probe_params)?;
                    if got.1.is_some() && p.on_bad_audio == OnBadAudio::Fail {
                        stop.store(true, Ordering::Relaxed);
                    }
                    progress.inc(1);
                    self.done.fetch_add(1, Ordering::Relaxed);
                    Some(got)
                })
                .collect();
            ctx.check_cancelled()?;
            let mut fresh: HashMap<&str, ProbeRow> = HashMap::new();
            for (pl, got) in todo.iter().zip(results) {
                match got {
                    Some((row, Some(detail))) if p.on_bad_audio == OnBadAudio::Fail => {
                        let m = &self.manifest[pl.index];
                        return Err(bad_file(stage, &m.source, &m.path, &row.reason, &detail));
                    }
                    Some((row, _)) => {
                        fresh.insert(pl.item.as_str(), row);
                    }
                    None => {}
                }
            }
            let mut rows = Vec::with_capacity(members.len());
            for &k in members {
                let (pl, m) = (&self.placed[k], &self.manifest[self.placed[k].index]);
                let found = fresh
                    .get(pl.item.as_str())
                    .or_else(|| self.previous.get(&pl.item));
                let Some(r) = found else {
                    // Not probed: a file failed first (`on_bad_audio: fail`).
                    continue;
                };
                rows.push(ProbeRow {
                    source: m.source.clone(),
                    path: m.path.clone(),
                    ..r.clone()
                });
            }
            write_probes(&tmp.join(PROBES), &rows).map_err(|e| items::corpus_error(stage, e))?;
            filled = Some(ItemCounts {
                processed: todo.len() as u64,
                reused: (members.len() - todo.len()) as u64,
            });
            Ok(())
        })?;
        Ok(Some((filled, dir)))
    }

    /// Probes one file: its row, with the error's text when it is rejected. `None` when its
    /// source is not in `sources:`.
    fn probe(
        &self,
        m: &ManifestRow,
        item: &str,
        params: &ProbeParams,
    ) -> Option<(ProbeRow, Option<String>)> {
        let source = self.sources.iter().find(|s| s.name == m.source)?;
        let abs = items::item_path(source, &self.scan_dir, &m.path);
        let mut row = ProbeRow {
            source: m.source.clone(),
            path: m.path.clone(),
            item: item.to_owned(),
            reason: String::new(),
            duration_s: 0.0,
            sample_rate: 0,
            channels: 0,
        };
        let mut detail = None;
        match probe_file(&abs, params) {
            Ok(info) => {
                row.duration_s = info.duration_s;
                row.sample_rate = info.sample_rate;
                row.channels = info.channels;
            }
            Err(e) => {
                row.reason = e
                    .reason()
                    .map_or("corrupt", crate::audio::RejectReason::as_str)
                    .to_owned();
                detail = Some(e.to_string());
            }
        }
        Some((row, detail))
    }
}
