//! The `train_aasist` kind: trains the AASIST back end on cached SSL features (`ssl: frozen`,
//! from an `extract_ssl` stage) or wav2vec2 + AASIST end to end on audio clips
//! (`ssl: finetune`, from a `chunk_audio` stage), with per-epoch checkpoints in the stage's
//! resume folder. Writes `model/`, `train_log.jsonl`, `plots/training.{svg,png}` and
//! `train_summary.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use serde::Deserialize;

use super::model_data::{
    CHUNK_JSON, CHUNK_KIND, EXTRACT_KIND, FEATURES_JSON, ItemShape, Layer, ShardData,
    batch_size_key, input_error, io_error, may_use_gpu, model_error, preprocessing_from_chunk,
    read_json, read_rows, require_upstream, ssl_identities, write_json,
};
use super::{Stage, StageError, StageReport};
use crate::exec::context::{KeyCtx, StageCtx};
use crate::metrics::{EpochRecord, Label, ScoreSet, plot_training};
use crate::model::train::{EpochMetrics, TrainConfig, TrainEvent, TrainMode, TrainSpec, train};
use crate::model::{SslSection, copy_checkpoint};
use crate::spec::{Issue, Pipeline, Resources, StageDef, decode, positions};

/// Kind name.
pub const KIND: &str = "train_aasist";

/// The `train_aasist` kind.
pub struct TrainAasist;

/// `ssl:` of `train_aasist`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SslMode {
    /// Back end only, on cached features.
    #[default]
    Frozen,
    /// wav2vec2 + AASIST end to end, on audio clips.
    Finetune,
}

/// The params that are not [`TrainConfig`] fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeParams {
    #[serde(default)]
    ssl: SslMode,
    #[serde(default)]
    ssl_path: Option<String>,
    #[serde(default)]
    layer: Option<Layer>,
}

/// The keys of [`ModeParams`].
const MODE_KEYS: [&str; 3] = ["ssl", "ssl_path", "layer"];

/// Params of `train_aasist`: the mode and the training configuration (every [`TrainConfig`]
/// key, defaults = the reference recipe).
#[derive(Debug, Clone)]
pub(crate) struct Params {
    mode: ModeParams,
    config: TrainConfig,
}

fn params_of(def: &StageDef) -> Result<Params, Box<Issue>> {
    let base = positions::child(&def.path(), "params");
    let (mode, rest): (BTreeMap<_, _>, BTreeMap<_, _>) = def
        .params
        .clone()
        .into_iter()
        .partition(|(k, _)| MODE_KEYS.contains(&k.as_str()));
    let mode: ModeParams = decode(
        &serde_json::Value::Object(mode.into_iter().collect()),
        &base,
    )?;
    let config: TrainConfig = decode(
        &serde_json::Value::Object(rest.into_iter().collect()),
        &base,
    )?;
    Ok(Params { mode, config })
}

fn check_params(def: &StageDef, p: &Params) -> Vec<Issue> {
    let base = positions::child(&def.path(), "params");
    let at = |k: &str| positions::child(&base, k);
    let mut issues = Vec::new();
    match (p.mode.ssl, &p.mode.ssl_path) {
        (SslMode::Finetune, None) => issues.push(
            Issue::new(
                at("ssl"),
                "`ssl: finetune` needs `ssl_path`, the Hugging Face wav2vec2 folder to start from",
            )
            .with_help("add `ssl_path: models/wav2vec2-...` to the params"),
        ),
        (SslMode::Frozen, Some(_)) => issues.push(
            Issue::new(
                at("ssl_path"),
                "`ssl_path` is for `ssl: finetune`; with `ssl: frozen` the SSL is the one of the `extract_ssl` stage",
            )
            .at_key(),
        ),
        _ => {}
    }
    if p.mode.ssl == SslMode::Frozen && p.mode.layer.is_some() {
        issues.push(
            Issue::new(
                at("layer"),
                "`layer` is for `ssl: finetune`; with `ssl: frozen` set it on the `extract_ssl` stage",
            )
            .at_key(),
        );
    }
    for (key, bad) in [
        ("epochs", p.config.epochs == 0),
        ("batch_size", p.config.batch_size == 0),
        ("lr", !(p.config.lr.is_finite() && p.config.lr > 0.0)),
        (
            "weight_decay",
            !(p.config.weight_decay.is_finite() && p.config.weight_decay >= 0.0),
        ),
    ] {
        if bad {
            issues.push(Issue::new(
                at(key),
                format!("`{key}` must be positive (weight_decay may be 0)"),
            ));
        }
    }
    issues
}

fn data_kind(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Frozen => EXTRACT_KIND,
        SslMode::Finetune => CHUNK_KIND,
    }
}

/// ASVspoof EER of validation logits (NaN when a class is missing, which `run` rules out).
fn validation_eer(scores: &[f64], labels: &[bool]) -> f64 {
    let items = labels
        .iter()
        .zip(scores)
        .map(|(&bona, &s)| (if bona { Label::Bonafide } else { Label::Spoof }, s));
    ScoreSet::from_labelled(items, "validation")
        .map_or(f64::NAN, |set| crate::metrics::eer(&set).eer)
}

/// The epoch records of a `train_log.jsonl` (the last record of each epoch wins, so a resumed
/// run's repeated epochs count once).
pub(crate) fn epoch_records(log: &str) -> Vec<EpochRecord> {
    let mut by_epoch: BTreeMap<u32, EpochRecord> = BTreeMap::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("event").and_then(serde_json::Value::as_str) != Some("epoch") {
            continue;
        }
        let Ok(m) = serde_json::from_value::<EpochMetrics>(v) else {
            continue;
        };
        let finite = |x: f64| x.is_finite().then_some(x);
        let epoch = u32::try_from(m.epoch).unwrap_or(u32::MAX);
        by_epoch.insert(
            epoch,
            EpochRecord {
                epoch,
                train_loss: m.train_loss,
                val_loss: finite(m.val_loss),
                val_eer: finite(m.val_eer),
                val_accuracy: finite(m.val_accuracy),
            },
        );
    }
    by_epoch.into_values().collect()
}

/// Appends events to `train_log.jsonl` in the resume folder and draws the progress bar.
struct EventLog<'a> {
    ctx: &'a StageCtx<'a>,
    file: std::fs::File,
    path: std::path::PathBuf,
    epochs: usize,
    steps_per_epoch: usize,
    last_loss: Option<f64>,
    last_eer: Option<f64>,
    error: Option<StageError>,
}

impl EventLog<'_> {
    fn on_event(&mut self, event: &TrainEvent) -> ControlFlow<()> {
        let line = serde_json::to_string(event).unwrap_or_default();
        if let Err(e) = writeln!(self.file, "{line}").and_then(|()| self.file.flush()) {
            self.error = Some(io_error(self.ctx.name(), &self.path, e));
            return ControlFlow::Break(());
        }
        let done = match event {
            TrainEvent::Started {
                first_epoch,
                epochs,
                steps_per_epoch,
                train_items,
                val_items,
                device,
                pos_weight,
                parameters,
            } => {
                self.epochs = *epochs;
                self.steps_per_epoch = *steps_per_epoch;
                self.ctx.log().line(&format!(
                    "training epochs {first_epoch}..={epochs} on {device}: {train_items} training and {val_items} validation items, {steps_per_epoch} steps per epoch, pos_weight {pos_weight:?}, {parameters} parameters"
                ));
                (first_epoch - 1) * steps_per_epoch
            }
            TrainEvent::Step {
                epoch, step, loss, ..
            } => {
                self.last_loss = Some(*loss);
                (epoch - 1) * self.steps_per_epoch + step
            }
            TrainEvent::Epoch(m) => {
                self.last_loss = Some(m.train_loss);
                self.last_eer = Some(m.val_eer);
                self.ctx.log().line(&format!(
                    "epoch {}: train loss {:.4}, val loss {:.4}, val accuracy {:.4}, val EER {:.4}, {:.1} items/s, {:.1} s{}",
                    m.epoch,
                    m.train_loss,
                    m.val_loss,
                    m.val_accuracy,
                    m.val_eer,
                    m.items_per_s,
                    m.seconds,
                    if m.best { " (best)" } else { "" }
                ));
                m.epoch * self.steps_per_epoch
            }
        };
        let mut label = String::from("steps");
        if let Some(l) = self.last_loss {
            label.push_str(&format!(", loss {l:.4}"));
        }
        if let Some(e) = self.last_eer {
            label.push_str(&format!(", val EER {:.2} %", e * 100.0));
        }
        self.ctx
            .progress(&label, (self.epochs * self.steps_per_epoch) as u64)
            .inc(done as u64);
        if self.ctx.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Stage for TrainAasist {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        // 2: dropout reseeded per training step; equal validation EERs broken by validation loss.
        2
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = Vec::new();
        let p = match params_of(def) {
            Ok(p) => p,
            Err(i) => return vec![*i],
        };
        issues.extend(check_params(def, &p));
        if let Err(mut i) = require_upstream(def, pipeline, &[data_kind(p.mode.ssl)]) {
            i.message.push_str(&format!(
                " (`ssl: {}`)",
                match p.mode.ssl {
                    SslMode::Frozen => "frozen",
                    SslMode::Finetune => "finetune",
                }
            ));
            issues.push(*i);
        }
        issues
    }

    fn identities(&self, ctx: &KeyCtx<'_>) -> Result<BTreeMap<String, String>, StageError> {
        let p = params_of(ctx.def).map_err(|i| StageError::Params {
            stage: ctx.def.name.clone(),
            message: i.message,
        })?;
        let Some(path) = p.mode.ssl_path.filter(|_| p.mode.ssl == SslMode::Finetune) else {
            return Ok(BTreeMap::new());
        };
        ssl_identities(ctx, "ssl_path", &path)
    }

    fn resources(&self, def: &StageDef) -> Resources {
        let mut r = def.resources;
        if let Ok(p) = params_of(def)
            && may_use_gpu(p.config.device)
        {
            r.gpu = r.gpu.max(1);
        }
        r
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let t0 = Instant::now();
        let p = params_of(ctx.def()).map_err(|i| StageError::Params {
            stage: stage.clone(),
            message: format!("`{}`: {}", i.path, i.message),
        })?;
        let upstream = require_upstream(ctx.def(), ctx.pipeline(), &[data_kind(p.mode.ssl)])
            .map_err(|i| StageError::Params {
                stage: stage.clone(),
                message: i.message.clone(),
            })?;
        let data_dir = ctx.input(&upstream.name)?.to_path_buf();
        let rows = read_rows(&stage, &data_dir)?;
        let (mode, preprocessing, tensor) = match p.mode.ssl {
            SslMode::Frozen => {
                let info = read_json(&stage, &data_dir.join(FEATURES_JSON))?;
                let ssl: SslSection = info
                    .get("ssl")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| {
                        input_error(
                            &stage,
                            "`features.json` of the extract stage has no `ssl` section",
                        )
                    })?;
                let chunk = info.get("chunk").cloned().unwrap_or_default();
                (
                    TrainMode::Frozen { ssl },
                    preprocessing_from_chunk(&chunk),
                    "features",
                )
            }
            SslMode::Finetune => {
                let chunk = read_json(&stage, &data_dir.join(CHUNK_JSON))?;
                let ssl_path = p.mode.ssl_path.clone().unwrap_or_default();
                (
                    TrainMode::Finetune {
                        ssl_dir: ctx.resolve(&ssl_path),
                        output: p.mode.layer.unwrap_or_default().0,
                    },
                    preprocessing_from_chunk(&chunk),
                    "audio",
                )
            }
        };
        let train_data = ShardData::open(&stage, &data_dir, tensor, &rows, |r| r.split == "train")?;
        let val_data = ShardData::open(&stage, &data_dir, tensor, &rows, |r| r.split == "val")?;
        let (train_bona, train_spoof) = train_data.class_counts();
        let (val_bona, val_spoof) = val_data.class_counts();
        for (split, bona, spoof) in [
            ("train", train_bona, train_spoof),
            ("val", val_bona, val_spoof),
        ] {
            if bona == 0 || spoof == 0 {
                return Err(input_error(
                    &stage,
                    format!(
                        "the `{split}` split has {bona} bona fide and {spoof} spoof clips; training needs both classes in `train` and `val` (change the split ratios or seed of the metadata stage, or add data)"
                    ),
                ));
            }
        }
        if let ItemShape::Features { frames, .. } = train_data.shape
            && frames < 3
        {
            return Err(input_error(
                &stage,
                format!("features have {frames} frames; AASIST needs at least 3 (longer clips)"),
            ));
        }
        let run_dir = ctx.resume_dir()?;
        let spec = TrainSpec {
            mode,
            preprocessing,
            config: p.config.clone(),
            run_dir: run_dir.clone(),
            batch_size_key: batch_size_key(&stage),
            stage: stage.clone(),
        };
        let log_path = run_dir.join("train_log.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_error(&stage, &log_path, e))?;
        let mut events = EventLog {
            ctx,
            file,
            path: log_path.clone(),
            epochs: p.config.epochs,
            steps_per_epoch: 1,
            last_loss: None,
            last_eer: None,
            error: None,
        };
        let outcome = train(&spec, &train_data, &val_data, &validation_eer, &mut |e| {
            events.on_event(e)
        });
        if let Some(e) = events.error.take() {
            return Err(e);
        }
        let outcome = outcome.map_err(|e| model_error(ctx, e))?;
        if outcome.interrupted {
            return Err(StageError::Cancelled { stage });
        }

        let out = ctx.out_dir();
        copy_checkpoint(&outcome.best_model, &out.join("model"))
            .map_err(|e| model_error(ctx, e))?;
        let log_out = out.join("train_log.jsonl");
        std::fs::copy(&log_path, &log_out).map_err(|e| io_error(&stage, &log_path, e))?;
        let records: Vec<EpochRecord> = outcome
            .history
            .iter()
            .map(|m| {
                let finite = |x: f64| x.is_finite().then_some(x);
                EpochRecord {
                    epoch: u32::try_from(m.epoch).unwrap_or(u32::MAX),
                    train_loss: m.train_loss,
                    val_loss: finite(m.val_loss),
                    val_eer: finite(m.val_eer),
                    val_accuracy: finite(m.val_accuracy),
                }
            })
            .collect();
        let plots = out.join("plots");
        std::fs::create_dir_all(&plots).map_err(|e| io_error(&stage, &plots, e))?;
        if !records.is_empty() {
            plot_training(&records, &plots.join("training"))
                .map_err(|e| input_error(&stage, format!("drawing the training curves: {e}")))?;
        }
        let best = outcome
            .history
            .iter()
            .find(|m| m.epoch == outcome.best_epoch);
        let pos_weight = p.config.pos_weight.resolve(train_bona, train_spoof);
        write_json(
            &stage,
            &out.join("train_summary.json"),
            &serde_json::json!({
                "ssl": p.mode.ssl,
                "best_epoch": outcome.best_epoch,
                "epochs_run": outcome.history.len(),
                "stopped_early": outcome.stopped_early,
                "best": best,
                "last": outcome.history.last(),
                "select_by": p.config.select_by,
                "pos_weight": { "rule": p.config.pos_weight, "value": pos_weight },
                "train": { "items": train_data.rows.len(), "bonafide": train_bona, "spoof": train_spoof },
                "val": { "items": val_data.rows.len(), "bonafide": val_bona, "spoof": val_spoof },
                "config": p.config,
                "model": "model",
                "seconds_this_run": t0.elapsed().as_secs_f64(),
            }),
        )?;
        Ok(StageReport::default())
    }
}
