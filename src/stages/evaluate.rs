//! The `evaluate` kind: scores every clip of the test split with the model of a
//! `train_aasist` stage (from cached features for a back-end-only model, from audio clips for a
//! model that embeds its SSL) into `scores.csv`, then writes `metrics.json`, the DET / ROC /
//! histogram (and training-curve) plots and `report.md` / `report.html`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model_data::{
    CHUNK_KIND, EXTRACT_KIND, FEATURES_JSON, ItemShape, ShardData, TRAIN_KIND, batch_size_key,
    input_error, may_use_gpu, model_error, read_json, read_rows, require_upstream,
};
use super::train::epoch_records;
use super::{Stage, StageError, StageReport};
use crate::exec::context::StageCtx;
use crate::metrics::{
    BootstrapOptions, Label, MetricsError, MetricsOptions, ScoreRow, write_evaluation,
    write_scores_csv,
};
use crate::model::{
    CheckpointConfig, Detector, DetectorOptions, DeviceChoice, Features, OomHint, Precision,
};
use crate::spec::{Issue, Pipeline, Resources, StageDef, positions};

/// Kind name.
pub const KIND: &str = "evaluate";

/// The `evaluate` kind.
pub struct Evaluate;

/// `bootstrap:` of `evaluate` (every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Bootstrap {
    resamples: u32,
    seed: u64,
    level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        let d = BootstrapOptions::default();
        Bootstrap {
            resamples: d.resamples,
            seed: d.seed,
            level: d.level,
        }
    }
}

/// Params of `evaluate` (docs/pipeline-spec.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    device: DeviceChoice,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default)]
    dtype: Precision,
    #[serde(default)]
    threshold: f64,
    #[serde(default)]
    bootstrap: Bootstrap,
    #[serde(default = "default_split")]
    split: String,
}

fn default_batch_size() -> usize {
    32
}

fn default_split() -> String {
    "test".into()
}

/// The data kind the model of `train` is scored from: `extract_ssl` for `ssl: frozen`
/// (back-end-only checkpoint), `chunk_audio` for `ssl: finetune`.
fn data_kind_of(train: &StageDef) -> &'static str {
    let finetune = train
        .params
        .get("ssl")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| s == "finetune");
    if finetune { CHUNK_KIND } else { EXTRACT_KIND }
}

fn metrics_error(ctx: &StageCtx<'_>, e: MetricsError) -> StageError {
    let message = crate::exec::error_chain(&e);
    ctx.log().line(&format!("error: {message}"));
    match e {
        MetricsError::NoBonafide { .. } | MetricsError::NoSpoof { .. } => input_error(
            ctx.name(),
            format!(
                "{message} (the split must hold both classes: change the split ratios or seed of the metadata stage, or add data)"
            ),
        ),
        _ => StageError::Failed {
            stage: ctx.name().to_owned(),
            message,
            log: ctx.log().path().to_path_buf(),
        },
    }
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = Vec::new();
        let base = positions::child(&def.path(), "params");
        match def.params_as::<Params>() {
            Err(i) => issues.push(*i),
            Ok(p) => {
                if p.batch_size == 0 {
                    issues.push(Issue::new(
                        positions::child(&base, "batch_size"),
                        "`batch_size` must be at least 1",
                    ));
                }
                if !["train", "val", "test"].contains(&p.split.as_str()) {
                    issues.push(Issue::new(
                        positions::child(&base, "split"),
                        format!("unknown split `{}`: use `train`, `val` or `test`", p.split),
                    ));
                }
                if !(p.bootstrap.level > 0.0 && p.bootstrap.level < 1.0)
                    || p.bootstrap.resamples == 0
                {
                    issues.push(Issue::new(
                        positions::child(&base, "bootstrap"),
                        "`bootstrap.level` must lie in (0, 1) and `bootstrap.resamples` be at least 1",
                    ));
                }
            }
        }
        match require_upstream(def, pipeline, &[TRAIN_KIND]) {
            Err(i) => issues.push(*i),
            Ok(train) => {
                let kind = data_kind_of(train);
                if let Err(mut i) = require_upstream(def, pipeline, &[kind]) {
                    let why = if kind == CHUNK_KIND {
                        "`ssl: finetune`: the model embeds its SSL and scores audio clips"
                    } else {
                        "`ssl: frozen`: the model scores cached SSL features"
                    };
                    i.message = format!(
                        "{} (the model of `{}` is trained with {why})",
                        i.message, train.name
                    );
                    issues.push(*i);
                }
            }
        }
        issues
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

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let p: Params = ctx.params()?;
        let as_params = |i: Box<Issue>| StageError::Params {
            stage: stage.clone(),
            message: i.message,
        };
        let train =
            require_upstream(ctx.def(), ctx.pipeline(), &[TRAIN_KIND]).map_err(as_params)?;
        let data = require_upstream(ctx.def(), ctx.pipeline(), &[data_kind_of(train)])
            .map_err(as_params)?;
        let train_dir = ctx.input(&train.name)?.to_path_buf();
        let data_dir = ctx.input(&data.name)?.to_path_buf();
        let model_dir = train_dir.join("model");
        let config = CheckpointConfig::read(&model_dir).map_err(|e| model_error(ctx, e))?;
        let tensor = if config.ssl.embedded {
            "audio"
        } else {
            let info = read_json(&stage, &data_dir.join(FEATURES_JSON))?;
            let features_digest = info
                .pointer("/ssl/digest/weights")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let model_digest = config
                .ssl
                .digest
                .as_ref()
                .map(|d| d.weights.clone())
                .unwrap_or_default();
            if features_digest != model_digest {
                return Err(input_error(
                    &stage,
                    format!(
                        "the model of `{}` was trained on features of SSL {model_digest}, the features of `{}` come from {features_digest}",
                        train.name, data.name
                    ),
                ));
            }
            "features"
        };
        let rows = read_rows(&stage, &data_dir)?;
        let set = ShardData::open(&stage, &data_dir, tensor, &rows, |r| r.split == p.split)?;
        if set.rows.is_empty() {
            return Err(input_error(
                &stage,
                format!(
                    "the `{}` split of `{}` holds no clips to score",
                    p.split, data.name
                ),
            ));
        }
        let detector = Detector::load(
            &model_dir,
            &DetectorOptions {
                device: p.device,
                precision: p.dtype,
                ssl_dir: None,
                oom: OomHint::new(stage.clone(), batch_size_key(&stage)),
            },
        )
        .map_err(|e| model_error(ctx, e))?;
        ctx.log().line(&format!(
            "scoring {} `{}` clips on {} (batch {})",
            set.rows.len(),
            p.split,
            detector.device(),
            p.batch_size
        ));
        let progress = ctx.progress("clips", set.rows.len() as u64);
        let mut logits: Vec<f32> = Vec::with_capacity(set.rows.len());
        let indices: Vec<usize> = (0..set.rows.len()).collect();
        let data_err = |(i, m): (usize, String)| {
            input_error(
                &stage,
                format!("reading clip {i} of the `{}` split: {m}", p.split),
            )
        };
        for batch in indices.chunks(p.batch_size) {
            ctx.check_cancelled()?;
            let scores = match set.shape {
                ItemShape::Features { frames, dim } => detector.score_features(&Features {
                    batch: batch.len(),
                    frames,
                    dim,
                    data: set.features(batch).map_err(data_err)?,
                }),
                ItemShape::Waveform { .. } => {
                    detector.score_waveforms(&set.waveforms(batch).map_err(data_err)?, batch.len())
                }
            }
            .map_err(|e| model_error(ctx, e))?;
            logits.extend(scores);
            progress.inc(batch.len() as u64);
        }
        progress.finish();
        let scored: Vec<ScoreRow> = set
            .rows
            .iter()
            .zip(&logits)
            .map(|(r, &logit)| ScoreRow {
                path: r.path.clone(),
                source: r.source.clone(),
                label: if r.label == "bonafide" {
                    Label::Bonafide
                } else {
                    Label::Spoof
                },
                logit: f64::from(logit),
            })
            .collect();
        let out = ctx.out_dir();
        write_scores_csv(&out.join("scores.csv"), &scored).map_err(|e| metrics_error(ctx, e))?;
        let epochs = std::fs::read_to_string(train_dir.join("train_log.jsonl"))
            .map(|t| epoch_records(&t))
            .unwrap_or_default();
        let summary = std::fs::read_to_string(train_dir.join("train_summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let mut run = BTreeMap::from([
            (
                "pipeline".to_owned(),
                serde_json::json!(ctx.pipeline().name),
            ),
            ("stage".to_owned(), serde_json::json!(stage)),
            ("model_stage".to_owned(), serde_json::json!(train.name)),
            ("split".to_owned(), serde_json::json!(p.split)),
            (
                "ssl".to_owned(),
                serde_json::json!(if config.ssl.embedded {
                    "finetune"
                } else {
                    "frozen"
                }),
            ),
        ]);
        if let Some(s) = summary {
            for key in ["best_epoch", "pos_weight", "select_by"] {
                if let Some(v) = s.get(key) {
                    run.insert(key.to_owned(), v.clone());
                }
            }
        }
        let opts = MetricsOptions {
            threshold: p.threshold,
            bootstrap: BootstrapOptions {
                resamples: p.bootstrap.resamples,
                seed: p.bootstrap.seed,
                level: p.bootstrap.level,
            },
        };
        let evaluation = write_evaluation(
            out,
            &scored,
            &opts,
            (!epochs.is_empty()).then_some(epochs.as_slice()),
            run,
        )
        .map_err(|e| metrics_error(ctx, e))?;
        let m = &evaluation.metrics;
        ctx.log().line(&format!(
            "EER {:.4} (interpolated {:.4}), AUC {:.4}, accuracy {:.4} on {} clips",
            m.eer,
            m.eer_interp,
            m.auc,
            m.accuracy,
            scored.len()
        ));
        Ok(StageReport::default())
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::model::{SslOutput, SslSection};
    use crate::shards::{Dtype, IndexRow, ShardWriter, write_index};
    use crate::stages::model_data::testing::{Env, TORCH, pipeline};
    use crate::stages::train::TrainAasist;

    fn tiny_ssl() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wav2vec2-tiny-random")
    }

    /// An extract output whose bona fide features have mean +0.5 and spoof features -0.5.
    fn write_features(dir: &Path, per_split: &[(&str, usize)]) {
        use rand::{RngExt, SeedableRng};
        let (frames, dim) = (24usize, 64usize);
        std::fs::create_dir_all(dir.join("shards")).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rows = Vec::new();
        for (source, label) in [("real", "bonafide"), ("tts", "spoof")] {
            let rel = format!("shards/{source}-0000.safetensors");
            let mut w = ShardWriter::create(
                &dir.join(&rel),
                "features",
                Dtype::F16,
                &[frames, dim],
                BTreeMap::new(),
            )
            .unwrap();
            let mean = if label == "bonafide" { 0.5 } else { -0.5 };
            let mut n = 0u64;
            for (split, count) in per_split {
                for i in 0..*count {
                    let v: Vec<f32> = (0..frames * dim)
                        .map(|_| mean + rng.random::<f32>() - 0.5)
                        .collect();
                    w.write_row(&v).unwrap();
                    rows.push(IndexRow {
                        shard: rel.clone(),
                        row: n,
                        path: format!("{split}/{i}.flac"),
                        source: source.to_owned(),
                        label: label.to_owned(),
                        split: (*split).to_owned(),
                        speaker: String::new(),
                        offset: 0,
                        item: format!("{source}{split}{i}"),
                    });
                    n += 1;
                }
            }
            w.finish().unwrap();
        }
        write_index(&dir.join("index.csv"), &rows).unwrap();
        let ssl = SslSection::external(&tiny_ssl(), SslOutput::LastHiddenState).unwrap();
        let info = serde_json::json!({"frames": frames, "dim": dim, "ssl": ssl,
            "chunk": {"sample_rate": 16000, "samples": 8000, "channel": "first", "trim": false}});
        std::fs::write(dir.join("features.json"), info.to_string()).unwrap();
    }

    #[test]
    fn trains_on_features_and_evaluates_the_test_split() {
        let _serial = TORCH
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  extract: {kind: extract_ssl, params: {ssl: m}}\n  train: {kind: train_aasist, needs: [extract], params: {epochs: 4, batch_size: 4, lr: 0.001, device: cpu, log_every: 2}}\n  evaluate: {kind: evaluate, needs: [train, extract], params: {device: cpu, bootstrap: {resamples: 50}}}\n",
        );
        for s in ["train", "evaluate"] {
            let def = p.stage(s).unwrap();
            let issues = crate::stages::lookup(&def.kind).unwrap().check(def, &p);
            assert!(issues.is_empty(), "{s}: {issues:?}");
        }
        let env = Env::new(dir.path());
        let feats = dir.path().join("extract");
        write_features(&feats, &[("train", 8), ("val", 3), ("test", 4)]);
        let train_out = dir.path().join("train");
        let ctx = env.ctx(
            &p,
            "train",
            BTreeMap::from([("extract".to_owned(), feats.clone())]),
            &train_out,
            None,
            "train",
        );
        TrainAasist.run(&ctx).unwrap();
        for f in [
            "model/config.json",
            "model/model.safetensors",
            "train_log.jsonl",
            "plots/training.svg",
            "plots/training.png",
            "train_summary.json",
        ] {
            assert!(train_out.join(f).is_file(), "{f} missing");
        }
        let config = CheckpointConfig::read(&train_out.join("model")).unwrap();
        assert!(!config.ssl.embedded);
        assert_eq!(config.preprocessing.samples, 8000);
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(train_out.join("train_summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["train"]["bonafide"], 8);
        assert_eq!(summary["train"]["spoof"], 8);
        assert_eq!(summary["pos_weight"]["value"], 0.5);
        assert_eq!(summary["epochs_run"], 4);
        let log = std::fs::read_to_string(train_out.join("train_log.jsonl")).unwrap();
        assert_eq!(epoch_records(&log).len(), 4);
        assert!(
            log.lines().any(|l| l.contains("\"event\":\"step\"")),
            "{log}"
        );

        let eval_out = dir.path().join("evaluate");
        let ctx = env.ctx(
            &p,
            "evaluate",
            BTreeMap::from([
                ("extract".to_owned(), feats),
                ("train".to_owned(), train_out),
            ]),
            &eval_out,
            None,
            "evaluate",
        );
        Evaluate.run(&ctx).unwrap();
        let scores = crate::metrics::read_scores_csv(&eval_out.join("scores.csv")).unwrap();
        assert_eq!(scores.len(), 8);
        assert!(scores.iter().all(|s| s.path.starts_with("test/")));
        let m = crate::metrics::read_metrics_json(&eval_out.join("metrics.json")).unwrap();
        assert!(m.per_source.contains_key("tts"), "{:?}", m.per_source);
        assert!(m.eer <= 0.25, "EER {}", m.eer);
        for f in [
            "plots/det.svg",
            "plots/roc.png",
            "plots/histograms.svg",
            "plots/training.png",
            "report.md",
            "report.html",
        ] {
            assert!(eval_out.join(f).is_file(), "{f} missing");
        }
    }

    #[test]
    fn check_names_missing_upstream_stages() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(
            dir.path(),
            "name: t\nstages:\n  chunk: {kind: chunk_audio}\n  train: {kind: train_aasist, needs: [chunk], params: {ssl: finetune}}\n  evaluate: {kind: evaluate, needs: [train], params: {split: dev}}\n",
        );
        let train = TrainAasist.check(p.stage("train").unwrap(), &p);
        assert_eq!(train.len(), 1, "{train:?}");
        assert!(train[0].message.contains("`ssl_path`"), "{train:?}");
        let eval = Evaluate.check(p.stage("evaluate").unwrap(), &p);
        let text: Vec<&str> = eval.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(eval.len(), 2, "{text:?}");
        assert!(text[0].contains("unknown split `dev`"), "{text:?}");
        assert!(text[1].contains("needs a `chunk_audio` stage"), "{text:?}");
        assert!(text[1].contains("`ssl: finetune`"), "{text:?}");
        let help = eval[1].help.clone().unwrap_or_default();
        assert!(help.contains("add `chunk` to `needs`"), "{help}");
    }
}
