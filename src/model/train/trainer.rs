//! The training loop: seeded per-epoch shuffling and dropout, a prefetching loader thread,
//! BCE-with-logits + Adam steps, validation (loss, accuracy, EER), model selection, early
//! stopping, and an atomic checkpoint folder per epoch from which a killed run resumes.
//!
//! Reproducibility: the libtorch generator is reseeded and the shuffle order derived from
//! `(seed, epoch)` at the start of every epoch, and every piece of state that carries over
//! between epochs (weights, BatchNorm buffers, Adam moments and step counts, selection
//! counters) is saved with the epoch. A resumed run therefore performs the same operations as
//! an uninterrupted one; on the CPU with the same thread count it ends with identical bits.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use super::adam::Adam;
use super::gpu::process_memory_bytes;
use super::{
    BatchInput, EerFn, EpochMetrics, SelectBy, TrainConfig, TrainData, TrainEvent, TrainMode,
    TrainOutcome, TrainSpec,
};
use crate::model::aasist;
use crate::model::checkpoint::load::{read_safetensors, write_safetensors};
use crate::model::checkpoint::{
    CheckpointConfig, HfFiles, SSL_PREFIX, SslSection, load_hf_weights,
};
use crate::model::error::{ModelError, TorchContext};
use crate::model::full::{ModelCheckpoint, write_checkpoint_files};
use crate::model::runtime::{GuardCtx, device_name, guard, resolve_device};
use crate::model::wav2vec2;

/// `state.json` of an epoch folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    epoch: usize,
    best_epoch: usize,
    epochs_since_best: usize,
    stopped_early: bool,
    pos_weight: Option<f64>,
    steps: BTreeMap<String, i64>,
    history: Vec<EpochMetrics>,
    fingerprint: serde_json::Value,
}

/// How the trainer draws and selects (per-step reseeding, the selection rule): a run folder
/// written under another scheme is not resumed, since its epochs would not continue the same run.
const TRAINING_SCHEME: u32 = 2;

/// What must not change between a run and its resumption.
fn fingerprint(spec: &TrainSpec, ckpt_config: &CheckpointConfig) -> serde_json::Value {
    let TrainConfig {
        batch_size,
        lr,
        weight_decay,
        betas,
        eps,
        pos_weight,
        select_by,
        seed,
        drop_last,
        ..
    } = spec.config.clone();
    serde_json::json!({
        "model": { "ssl": ckpt_config.ssl, "backend": ckpt_config.backend, "preprocessing": ckpt_config.preprocessing },
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps,
        "pos_weight": pos_weight, "select_by": select_by, "seed": seed, "drop_last": drop_last,
        "scheme": TRAINING_SCHEME,
    })
}

fn epoch_dir(run_dir: &Path, epoch: usize) -> PathBuf {
    run_dir.join(format!("epoch-{epoch:04}"))
}

/// The highest complete epoch folder (folders appear by atomic rename only when complete).
fn latest_epoch(run_dir: &Path) -> Result<Option<usize>, ModelError> {
    if !run_dir.is_dir() {
        return Ok(None);
    }
    let mut best = None;
    for entry in std::fs::read_dir(run_dir).map_err(|e| ModelError::io("read", run_dir, e))? {
        let entry = entry.map_err(|e| ModelError::io("read", run_dir, e))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("epoch-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            best = best.max(Some(n));
        }
    }
    Ok(best)
}

/// splitmix64: decorrelates per-epoch seeds.
fn mix(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The checkpoint configuration and, for fine-tuning, the SSL folder's files.
fn checkpoint_config(spec: &TrainSpec) -> Result<(CheckpointConfig, Option<HfFiles>), ModelError> {
    match &spec.mode {
        TrainMode::Frozen { ssl } => {
            let ssl_cfg = wav2vec2::Config::from_json(&ssl.config, Path::new("frozen SSL config"))?;
            let mut ssl = ssl.clone();
            ssl.embedded = false;
            let cfg = CheckpointConfig::new(
                ssl,
                aasist::Config {
                    ssl_dim: ssl_cfg.hidden_size,
                },
                spec.preprocessing.clone(),
            );
            cfg.validate(Path::new("training configuration"))?;
            Ok((cfg, None))
        }
        TrainMode::Finetune { ssl_dir, output } => {
            let files = HfFiles::locate(ssl_dir)?;
            let (ssl_cfg, raw) = wav2vec2::Config::from_file(&files.config)?;
            let ssl = SslSection {
                embedded: true,
                output: *output,
                config: raw,
                digest: Some(files.digest()?),
                source: Some(ssl_dir.display().to_string()),
            };
            let cfg = CheckpointConfig::new(
                ssl,
                aasist::Config {
                    ssl_dim: ssl_cfg.hidden_size,
                },
                spec.preprocessing.clone(),
            );
            cfg.validate(&files.config)?;
            Ok((cfg, Some(files)))
        }
    }
}

/// Trainable parameters sorted by name.
fn parameters(ckpt: &ModelCheckpoint) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = ckpt
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Moves a batch to the device as model input.
fn to_input(batch: &BatchInput, device: Device) -> Tensor {
    match batch {
        BatchInput::Features {
            data,
            batch,
            frames,
            dim,
        } => Tensor::from_slice(data)
            .view([*batch as i64, *frames as i64, *dim as i64])
            .to_device(device)
            .to_kind(Kind::Float),
        BatchInput::Waveforms {
            data,
            batch,
            samples,
        } => Tensor::from_slice(data)
            .view([*batch as i64, *samples as i64])
            .to_device(device),
    }
}

fn check_input(ckpt: &ModelCheckpoint, batch: &BatchInput) -> Result<(), ModelError> {
    match (batch, ckpt.ssl.is_some()) {
        (BatchInput::Features { dim, .. }, false) if *dim as i64 == ckpt.config.backend.ssl_dim => {
            Ok(())
        }
        (BatchInput::Features { dim, .. }, false) => Err(ModelError::Input {
            what: "train",
            message: format!(
                "features have width {dim}, the SSL has {}",
                ckpt.config.backend.ssl_dim
            ),
        }),
        (BatchInput::Waveforms { .. }, true) => Ok(()),
        (BatchInput::Features { .. }, true) => Err(ModelError::Input {
            what: "train",
            message: "`ssl: finetune` trains from waveforms, the data gives features".into(),
        }),
        (BatchInput::Waveforms { .. }, false) => Err(ModelError::Input {
            what: "train",
            message: "`ssl: frozen` trains from SSL features, the data gives waveforms".into(),
        }),
    }
}

fn forward(ckpt: &ModelCheckpoint, x: &Tensor, train: bool) -> Tensor {
    match ckpt.forward_waveforms(x, train) {
        Some(logits) => logits,
        None => ckpt.backend.forward_t(x, train),
    }
}

fn labels_tensor(data: &dyn TrainData, indices: &[usize], device: Device) -> Tensor {
    let v: Vec<f32> = indices
        .iter()
        .map(|&i| if data.label(i) { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_slice(&v)
        .view([indices.len() as i64, 1])
        .to_device(device)
}

/// Runs `f` over the batches of `order`, reading them on a loader thread two batches ahead.
fn with_batches<T>(
    data: &dyn TrainData,
    batches: &[Vec<usize>],
    mut f: impl FnMut(usize, &[usize], BatchInput) -> Result<ControlFlow<T>, ModelError>,
) -> Result<Option<T>, ModelError> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<BatchInput, (usize, String)>>(2);
        scope.spawn(move || {
            for b in batches {
                if tx.send(data.batch(b)).is_err() {
                    break;
                }
            }
        });
        for (i, b) in batches.iter().enumerate() {
            let batch = rx
                .recv()
                .map_err(|_| ModelError::Data {
                    index: b[0],
                    message: "the loader thread stopped".into(),
                })?
                .map_err(|(index, message)| ModelError::Data { index, message })?;
            if let ControlFlow::Break(t) = f(i, b, batch)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    })
}

struct Validation {
    loss: f64,
    accuracy: f64,
    eer: f64,
}

fn validate(
    ckpt: &ModelCheckpoint,
    data: &dyn TrainData,
    batch_size: usize,
    pos_weight: Option<&Tensor>,
    device: Device,
    eer: EerFn<'_>,
    ctx: &GuardCtx<'_>,
) -> Result<Validation, ModelError> {
    let order: Vec<usize> = (0..data.len()).collect();
    let batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    let mut logits = Vec::with_capacity(order.len());
    let mut loss_sum = 0.0;
    with_batches(data, &batches, |_, idx, batch| {
        check_input(ckpt, &batch)?;
        guard(ctx, || {
            let (l, s) = tch::no_grad(|| {
                let x = to_input(&batch, device);
                let y = labels_tensor(data, idx, device);
                let out = forward(ckpt, &x, false);
                let loss = out.binary_cross_entropy_with_logits(
                    &y,
                    None::<&Tensor>,
                    pos_weight,
                    Reduction::Sum,
                );
                (out, loss)
            });
            loss_sum += s.double_value(&[]);
            let host =
                Vec::<f32>::try_from(l.to_kind(Kind::Float).to_device(Device::Cpu).view([-1]))
                    .ctx(|| "reading logits".into())?;
            logits.extend(host.into_iter().map(f64::from));
            Ok(())
        })?;
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    let labels: Vec<bool> = order.iter().map(|&i| data.label(i)).collect();
    let correct = logits
        .iter()
        .zip(&labels)
        .filter(|(z, y)| (**z >= 0.0) == **y)
        .count();
    Ok(Validation {
        loss: loss_sum / order.len() as f64,
        accuracy: correct as f64 / order.len() as f64,
        eer: eer(&logits, &labels),
    })
}

fn improved(select_by: SelectBy, m: &EpochMetrics, best: Option<&EpochMetrics>) -> bool {
    match best {
        None => true,
        Some(b) => match select_by {
            SelectBy::ValEer => {
                m.val_eer < b.val_eer
                    || (m.val_eer == b.val_eer && m.val_loss < b.val_loss)
                    || (b.val_eer.is_nan() && !m.val_eer.is_nan())
            }
            SelectBy::ValAccuracy => m.val_accuracy > b.val_accuracy,
        },
    }
}

/// Writes an epoch folder atomically: built under a temporary name, then renamed.
fn write_epoch(
    run_dir: &Path,
    epoch: usize,
    ckpt: &ModelCheckpoint,
    adam: &Adam,
    state: &RunState,
) -> Result<PathBuf, ModelError> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".epoch-{epoch:04}-"))
        .tempdir_in(run_dir)
        .map_err(|e| ModelError::io("create", run_dir, e))?;
    let mut config = ckpt.config.clone();
    let last = state.history.last().expect("an epoch was recorded");
    config.training = Some(serde_json::json!({
        "epoch": epoch,
        "val_loss": last.val_loss,
        "val_accuracy": last.val_accuracy,
        "val_eer": last.val_eer,
        "pos_weight": state.pos_weight,
    }));
    write_checkpoint_files(tmp.path(), &config, &ckpt.state_dict())?;
    let (opt_tensors, _) = adam.state();
    write_safetensors(&tmp.path().join("optimizer.safetensors"), &opt_tensors)?;
    let state_path = tmp.path().join("state.json");
    let text = serde_json::to_string_pretty(state).expect("run state serialises");
    std::fs::write(&state_path, text).map_err(|e| ModelError::io("write", &state_path, e))?;
    let target = epoch_dir(run_dir, epoch);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| ModelError::io("remove", &target, e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, &target).map_err(|e| ModelError::io("rename", &kept, e))?;
    Ok(target)
}

/// Removes epoch folders other than `keep`.
fn prune(run_dir: &Path, keep: &[usize]) -> Result<(), ModelError> {
    for entry in std::fs::read_dir(run_dir)
        .map_err(|e| ModelError::io("read", run_dir, e))?
        .flatten()
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let epoch = name
            .strip_prefix("epoch-")
            .and_then(|n| n.parse::<usize>().ok());
        let stale_tmp = name.starts_with(".epoch-");
        if stale_tmp || epoch.is_some_and(|e| !keep.contains(&e)) {
            let p = entry.path();
            std::fs::remove_dir_all(&p).map_err(|e| ModelError::io("remove", &p, e))?;
        }
    }
    Ok(())
}

fn outcome(run_dir: &Path, state: &RunState, interrupted: bool) -> TrainOutcome {
    TrainOutcome {
        history: state.history.clone(),
        best_epoch: state.best_epoch,
        best_model: epoch_dir(run_dir, state.best_epoch),
        last_model: epoch_dir(run_dir, state.epoch),
        stopped_early: state.stopped_early,
        interrupted,
    }
}

/// Trains as `spec` says, reporting through `on_event` (return `Break` to stop; the run then
/// resumes from its last finished epoch). Resumes from `spec.run_dir` when it holds epochs of
/// the same run.
pub fn train(
    spec: &TrainSpec,
    train_data: &dyn TrainData,
    val_data: &dyn TrainData,
    eer: EerFn<'_>,
    on_event: &mut dyn FnMut(&TrainEvent) -> ControlFlow<()>,
) -> Result<TrainOutcome, ModelError> {
    let cfg = &spec.config;
    let where_ = spec.run_dir.clone();
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(ModelError::config(
            where_,
            "`batch_size` and `epochs` must be at least 1",
        ));
    }
    if train_data.is_empty() || val_data.is_empty() {
        return Err(ModelError::config(
            where_,
            "training and validation data must not be empty",
        ));
    }
    let n_bona = (0..train_data.len())
        .filter(|&i| train_data.label(i))
        .count();
    let n_spoof = train_data.len() - n_bona;
    if n_bona == 0 || n_spoof == 0 {
        return Err(ModelError::config(
            where_,
            format!("training data needs both classes ({n_bona} bona fide, {n_spoof} spoof items)"),
        ));
    }
    let device = resolve_device(cfg.device)?;
    let (ckpt_config, hf_files) = checkpoint_config(spec)?;
    let print = fingerprint(spec, &ckpt_config);
    std::fs::create_dir_all(&spec.run_dir)
        .map_err(|e| ModelError::io("create", &spec.run_dir, e))?;

    // Resume or start.
    let (ckpt, mut adam, mut state) = match latest_epoch(&spec.run_dir)? {
        Some(epoch) => {
            let dir = epoch_dir(&spec.run_dir, epoch);
            let resume_err = |message: String| ModelError::Resume {
                path: dir.clone(),
                message,
            };
            let state_path = dir.join("state.json");
            let text = std::fs::read_to_string(&state_path)
                .map_err(|e| ModelError::io("read", &state_path, e))?;
            let state: RunState =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: state_path.clone(),
                    source,
                })?;
            if state.fingerprint != print {
                return Err(resume_err(
                    "it holds a training run with other settings; use another run folder or remove this one".into(),
                ));
            }
            let ckpt = ModelCheckpoint::load(&dir, device)?;
            let mut adam = Adam::new(
                parameters(&ckpt),
                cfg.lr,
                cfg.betas,
                cfg.eps,
                cfg.weight_decay,
            );
            let opt: Vec<(String, Tensor)> = read_safetensors(&dir.join("optimizer.safetensors"))?
                .into_iter()
                .map(|n| (n.name, n.tensor))
                .collect();
            adam.load_state(opt, state.steps.clone())
                .map_err(resume_err)?;
            (ckpt, adam, state)
        }
        None => {
            let ckpt = {
                let _rng = crate::model::rng::seeded(cfg.seed as i64);
                ModelCheckpoint::build(ckpt_config.clone(), device)?
            };
            if let Some(files) = &hf_files {
                load_hf_weights(&ckpt.vs, SSL_PREFIX, files)?;
            }
            let adam = Adam::new(
                parameters(&ckpt),
                cfg.lr,
                cfg.betas,
                cfg.eps,
                cfg.weight_decay,
            );
            let state = RunState {
                epoch: 0,
                best_epoch: 0,
                epochs_since_best: 0,
                stopped_early: false,
                pos_weight: cfg.pos_weight.resolve(n_bona, n_spoof),
                steps: BTreeMap::new(),
                history: Vec::new(),
                fingerprint: print,
            };
            (ckpt, adam, state)
        }
    };
    if state.stopped_early || state.epoch >= cfg.epochs {
        return Ok(outcome(&spec.run_dir, &state, false));
    }

    let pos_weight = state
        .pos_weight
        .map(|w| Tensor::from_slice(&[w as f32]).to_device(device));
    let mut order: Vec<usize> = (0..train_data.len()).collect();
    let mut batches_of = |epoch: usize| -> Vec<Vec<usize>> {
        order.sort_unstable();
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch) ^ 0x5348_5546_464C_4531);
        order.shuffle(&mut rng);
        let mut batches: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if cfg.drop_last
            && batches.len() > 1
            && batches.last().is_some_and(|b| b.len() < cfg.batch_size)
        {
            batches.pop();
        }
        batches
    };
    let steps_per_epoch = batches_of(1).len();
    let param_tensors: Vec<Tensor> = adam
        .params()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let ctx = GuardCtx {
        stage: &spec.stage,
        action: "training a batch",
        batch_size: cfg.batch_size,
        config_key: &spec.batch_size_key,
    };
    let vctx = GuardCtx {
        stage: &spec.stage,
        action: "validating a batch",
        batch_size: cfg.batch_size,
        config_key: &spec.batch_size_key,
    };

    if on_event(&TrainEvent::Started {
        first_epoch: state.epoch + 1,
        epochs: cfg.epochs,
        steps_per_epoch,
        train_items: train_data.len(),
        val_items: val_data.len(),
        device: device_name(device),
        pos_weight: state.pos_weight,
        parameters: ckpt.parameter_count(),
    })
    .is_break()
    {
        return Ok(outcome(&spec.run_dir, &state, true));
    }

    for epoch in state.epoch + 1..=cfg.epochs {
        let started = Instant::now();
        let batches = batches_of(epoch);
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut window = (Tensor::zeros([], (Kind::Double, device)), 0usize);
        let mut items = 0usize;
        let stop = with_batches(train_data, &batches, |step, idx, batch| {
            check_input(&ckpt, &batch)?;
            guard(&ctx, || {
                let x = to_input(&batch, device);
                let y = labels_tensor(train_data, idx, device);
                // Dropout, layer drop and time masking draw from a generator seeded for this
                // step alone, held only for the forward pass: a resumed run draws the same
                // masks, and another stage's draws in this process cannot shift them.
                let logits = {
                    let _rng = crate::model::rng::seeded(mix(mix(cfg.seed, epoch), step) as i64);
                    forward(&ckpt, &x, true)
                };
                let loss = logits.binary_cross_entropy_with_logits(
                    &y,
                    None::<&Tensor>,
                    pos_weight.as_ref(),
                    Reduction::Mean,
                );
                let grads = Tensor::f_run_backward(&[&loss], &param_tensors, false, false)
                    .ctx(|| "computing gradients".into())?;
                adam.step(&grads);
                tch::no_grad(|| {
                    let l = loss.detach().to_kind(Kind::Double) * idx.len() as f64;
                    loss_sum += &l;
                    window.0 += &l;
                    correct += logits.ge(0.0).eq_tensor(&y.ge(0.5)).sum(Kind::Int64);
                });
                Ok(())
            })?;
            items += idx.len();
            window.1 += idx.len();
            let step = step + 1;
            if cfg.log_every > 0 && (step % cfg.log_every == 0 || step == batches.len()) {
                let loss = window.0.double_value(&[]) / window.1.max(1) as f64;
                window = (Tensor::zeros([], (Kind::Double, device)), 0);
                let event = TrainEvent::Step {
                    epoch,
                    step,
                    steps: batches.len(),
                    loss,
                    lr: adam.lr(),
                    items_per_s: items as f64 / started.elapsed().as_secs_f64().max(1e-9),
                    gpu_memory_bytes: process_memory_bytes(device),
                };
                if on_event(&event).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if stop.is_some() {
            return Ok(outcome(&spec.run_dir, &state, true));
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let train_loss = loss_sum.double_value(&[]) / items.max(1) as f64;
        let train_accuracy = correct.int64_value(&[]) as f64 / items.max(1) as f64;

        let val = validate(
            &ckpt,
            val_data,
            cfg.batch_size,
            pos_weight.as_ref(),
            device,
            eer,
            &vctx,
        )?;
        let mut metrics = EpochMetrics {
            epoch,
            train_loss,
            train_accuracy,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            val_eer: val.eer,
            lr: adam.lr(),
            items_per_s: items as f64 / train_seconds.max(1e-9),
            seconds: 0.0,
            gpu_memory_bytes: process_memory_bytes(device),
            best: false,
        };
        let best_so_far = state.history.iter().find(|m| m.epoch == state.best_epoch);
        metrics.best = improved(cfg.select_by, &metrics, best_so_far);
        if metrics.best {
            state.best_epoch = epoch;
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
        state.epoch = epoch;
        state.stopped_early = cfg.patience.is_some_and(|p| state.epochs_since_best >= p)
            || (cfg.stop_on_perfect && metrics.val_accuracy >= 1.0);
        metrics.seconds = started.elapsed().as_secs_f64();
        state.history.push(metrics.clone());
        state.steps = adam.steps().clone();
        write_epoch(&spec.run_dir, epoch, &ckpt, &adam, &state)?;
        prune(&spec.run_dir, &[epoch, state.best_epoch])?;
        let flow = on_event(&TrainEvent::Epoch(metrics));
        if state.stopped_early {
            break;
        }
        if flow.is_break() && epoch < cfg.epochs {
            return Ok(outcome(&spec.run_dir, &state, true));
        }
    }
    Ok(outcome(&spec.run_dir, &state, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, val_eer: f64, val_loss: f64, val_accuracy: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 0.0,
            train_accuracy: 0.0,
            val_loss,
            val_accuracy,
            val_eer,
            lr: 0.0,
            items_per_s: 0.0,
            seconds: 0.0,
            gpu_memory_bytes: None,
            best: false,
        }
    }

    #[test]
    fn equal_eers_are_told_apart_by_validation_loss_and_accuracy_ties_keep_the_earliest() {
        let best = epoch(2, 0.0, 0.30, 0.9);
        let eer = SelectBy::ValEer;
        assert!(improved(eer, &best, None));
        assert!(improved(eer, &epoch(3, 0.0, 0.10, 0.9), Some(&best)));
        assert!(!improved(eer, &epoch(3, 0.0, 0.30, 0.9), Some(&best)));
        assert!(!improved(eer, &epoch(3, 0.0, 0.40, 1.0), Some(&best)));
        assert!(!improved(eer, &epoch(3, 0.1, 0.01, 1.0), Some(&best)));
        assert!(improved(
            eer,
            &epoch(3, 0.2, 0.5, 0.5),
            Some(&epoch(1, f64::NAN, 0.1, 0.5))
        ));
        let acc = SelectBy::ValAccuracy;
        assert!(!improved(acc, &epoch(3, 0.0, 0.01, 0.9), Some(&best)));
        assert!(improved(acc, &epoch(3, 0.5, 0.90, 0.95), Some(&best)));
    }
}
