//! The `build_metadata` kind: places the scanned files in splits (folders / csv / hash,
//! speaker-disjoint, holdout), probes each placed file by decoding it (reusing the probes of
//! unchanged files from the previous output), and writes `train.csv`, `val.csv`, `test.csv`,
//! `rejected.csv`, `stats.json` and `probes.csv` (plus the generated sources' accepted files).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Deserialize;

use super::items::{self, OnBadAudio};
use super::{DepSpec, ItemCounts, Stage, StageError, StageReport, declared_deps, scan};
use crate::audio::{ProbeParams, probe_file};
use crate::corpus::{
    CorpusFile, MetadataRow, ProbeRow, RejectedRow, SplitConfig, SplitDef, compute_stats,
    read_manifest, read_probes, split_corpus, write_probes, write_rejected, write_split_csvs,
    write_stats,
};
use crate::exec::context::StageCtx;
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
        let mut csvs: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (_, s) in &defs {
            if let (Some(root), Some(SplitDef::Csv(csv))) = (&s.root, &s.split) {
                for file in csv.files.values() {
                    let written = root.join(file);
                    csvs.insert(
                        written.to_string_lossy().into_owned(),
                        pipeline.dir.join(written),
                    );
                }
            }
        }
        deps.extend(csvs.into_iter().map(|(name, path)| DepSpec {
            name,
            path,
            include: None,
        }));
        deps
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let p: Params = ctx.params()?;
        let scan_name =
            items::upstream_of_kind(ctx.def(), ctx.pipeline(), scan::KIND).map_err(|i| {
                StageError::Params {
                    stage: stage.clone(),
                    message: i.message,
                }
            })?;
        let scan_dir = ctx.input(&scan_name)?.to_path_buf();
        let cerr = |e| items::corpus_error(&stage, e);
        let manifest = read_manifest(&scan_dir.join(scan::MANIFEST)).map_err(cerr)?;
        let sources = items::sources(ctx.pipeline(), &stage)?;
        let by_name: BTreeMap<&str, &crate::corpus::Source> =
            sources.iter().map(|s| (s.name.as_str(), s)).collect();

        // Splits.
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

        // Probes: reuse those of unchanged files, decode the others.
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
        let mut previous: HashMap<String, ProbeRow> = HashMap::new();
        if let Some(prev) = ctx.prev_output() {
            let path = prev.join(PROBES);
            match read_probes(&path) {
                Ok(rows) => previous.extend(rows.into_iter().map(|r| (r.item.clone(), r))),
                Err(e) if path.exists() => {
                    ctx.log().line(&format!("previous probes not reused: {e}"))
                }
                Err(_) => {}
            }
        }
        // Files with the same content are probed once.
        let mut seen = std::collections::HashSet::new();
        let todo: Vec<&Placed> = placed
            .iter()
            .filter(|pl| !previous.contains_key(&pl.item) && seen.insert(pl.item.as_str()))
            .collect();
        let counts = ItemCounts {
            processed: todo.len() as u64,
            reused: (placed.len() - todo.len()) as u64,
        };
        let progress = ctx.progress("probe", todo.len() as u64);
        let stop = AtomicBool::new(false);
        let probed: Vec<Option<(ProbeRow, Option<String>)>> = todo
            .par_iter()
            .map(|pl| {
                if stop.load(Ordering::Relaxed) || ctx.is_cancelled() {
                    return None;
                }
                let m = &manifest[pl.index];
                let source = by_name.get(m.source.as_str())?;
                let abs = items::item_path(source, &scan_dir, &m.path);
                let mut row = ProbeRow {
                    source: m.source.clone(),
                    path: m.path.clone(),
                    item: pl.item.clone(),
                    reason: String::new(),
                    duration_s: 0.0,
                    sample_rate: 0,
                    channels: 0,
                };
                let mut detail = None;
                match probe_file(&abs, &probe_params) {
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
                        if p.on_bad_audio == OnBadAudio::Fail {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                progress.inc(1);
                Some((row, detail))
            })
            .collect();
        progress.finish();
        ctx.check_cancelled()?;
        let mut fresh: HashMap<&str, (ProbeRow, Option<String>)> = HashMap::new();
        for (pl, got) in todo.iter().zip(probed) {
            if let Some(got) = got {
                fresh.insert(pl.item.as_str(), got);
            }
        }

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
            let (probe, detail) = match fresh.get(pl.item.as_str()) {
                Some((row, detail)) => (row.clone(), detail.clone()),
                None => match previous.get(&pl.item) {
                    Some(prev) => (
                        ProbeRow {
                            source: m.source.clone(),
                            path: m.path.clone(),
                            ..prev.clone()
                        },
                        None,
                    ),
                    // Not probed: the run stopped at a bad file first (`on_bad_audio: fail`).
                    None => continue,
                },
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
                    let detail = detail.unwrap_or_else(|| {
                        format!("`{}` was rejected as `{}`", m.path, probe.reason)
                    });
                    return Err(StageError::Environment {
                        stage,
                        message: format!(
                            "source `{}`: file `{}` cannot be used ({}): {detail}; fix or remove it, or set `on_bad_audio: skip` to leave such files out",
                            m.source, m.path, probe.reason
                        ),
                    });
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
                &items::generated_path(&scan_dir, &m.source, &m.path),
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
            "{} files accepted, {} rejected; {} probed, {} probes reused",
            rows.len(),
            rejected.len(),
            counts.processed,
            counts.reused
        ));
        Ok(StageReport { items: counts })
    }
}
