//! `train` mode: training-step throughput of the W2V+AASIST detector.
//!
//! - `--impl train` runs the crate's own `model::train::train` (loader thread, host-to-device
//!   copy of every batch, BCE with `pos_weight`, the crate's Adam) on synthetic data and times
//!   the steps between two step events; the run is stopped before validation and checkpoints.
//! - `--impl loop` is a bench loop over the same public pieces (`Aasist` / `W2vAasist`,
//!   `train::Adam`, the same host-to-device copies) that can run the forward under bf16
//!   autocast, which `train` does not offer (training is f32 as in the reference).
//!
//! `frozen` trains the back end on cached-feature-shaped inputs `[B, 201, D]` (f16 on the host,
//! as feature shards hold them); `finetune` trains wav2vec2 + AASIST end to end on 64,600-sample
//! waveforms with the SSL in training mode (dropout, LayerDrop, time masking).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use brspeech::model::aasist::{self, Aasist};
use brspeech::model::full::W2vAasist;
use brspeech::model::runtime::{resolve_device, with_precision};
use brspeech::model::train::{
    Adam, BatchInput, Input, TrainConfig, TrainData, TrainEvent, TrainMode, TrainSpec, train,
};
use brspeech::model::wav2vec2;
use brspeech::model::{DeviceChoice, Precision, Preprocessing, SslOutput, SslSection};
use clap::{Args, ValueEnum};
use half::f16;
use serde_json::{Value, json};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::common::{CLIP_SAMPLES, EPOCH_CLIPS, GpuMemory, emit, progress, ssl_config};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainKind {
    /// Back end only, on cached features.
    Frozen,
    /// wav2vec2 + AASIST on waveforms.
    Finetune,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Impl {
    /// The crate's `model::train::train`.
    Train,
    /// A bench loop over the same pieces (allows bf16 autocast).
    Loop,
}

#[derive(Args)]
pub struct TrainArgs {
    /// frozen or finetune.
    #[arg(long, value_enum)]
    pub mode: TrainKind,
    /// Which training code runs.
    #[arg(long = "impl", value_enum, default_value = "train")]
    pub implementation: Impl,
    /// Device.
    #[arg(long, default_value = "cuda")]
    pub device: DeviceChoice,
    /// f32, or bf16 autocast around the forward (`--impl loop` only).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Items per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Untimed steps (also the interval of the synchronising step events).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed steps (rounded up to a multiple of `--warmup`).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Frozen mode: feature width D (768 base, 1024 XLS-R).
    #[arg(long, default_value_t = 1024)]
    pub dim: i64,
    /// Frozen mode: frames per item.
    #[arg(long, default_value_t = 201)]
    pub frames: usize,
    /// Samples per clip (finetune).
    #[arg(long, default_value_t = CLIP_SAMPLES)]
    pub samples: usize,
    /// Hugging Face folder: the SSL that is fine-tuned, or (frozen) the SSL the features are
    /// said to come from (its width must be D). Default: a random base/XLS-R folder.
    #[arg(long)]
    pub ssl_dir: Option<PathBuf>,
    /// Transformer depth of the random SSL (ignored with `--ssl-dir`).
    #[arg(long)]
    pub layers: Option<usize>,
}

/// Distinct random items behind the synthetic data sets.
const POOL: usize = 8;

/// Items `i` cycle over a small pool of random inputs; labels are 1 bona fide : 5 spoof.
struct Synthetic {
    len: usize,
    pool: Vec<Input>,
}

impl Synthetic {
    fn features(len: usize, frames: usize, dim: usize) -> Synthetic {
        let pool = (0..POOL)
            .map(|_| {
                let t = Tensor::randn([(frames * dim) as i64], (Kind::Float, Device::Cpu))
                    .to_kind(Kind::Half);
                Input::Features {
                    data: Vec::<f16>::try_from(t).expect("a half tensor converts"),
                    frames,
                    dim,
                }
            })
            .collect();
        Synthetic { len, pool }
    }

    fn waveforms(len: usize, samples: usize) -> Synthetic {
        let pool = (0..POOL)
            .map(|_| {
                let t = Tensor::randn([samples as i64], (Kind::Float, Device::Cpu)) * 0.1;
                Input::Waveform(Vec::<f32>::try_from(t).expect("a float tensor converts"))
            })
            .collect();
        Synthetic { len, pool }
    }
}

fn label_of(i: usize) -> bool {
    i.is_multiple_of(6)
}

impl TrainData for Synthetic {
    fn len(&self) -> usize {
        self.len
    }
    fn label(&self, index: usize) -> bool {
        label_of(index)
    }
    fn input(&self, index: usize) -> Result<Input, String> {
        Ok(self.pool[index % POOL].clone())
    }
    fn batch(&self, indices: &[usize]) -> Result<BatchInput, (usize, String)> {
        // Bulk assembly into one buffer, as a shard reader does (no per-item clone).
        match &self.pool[0] {
            Input::Features { frames, dim, .. } => {
                let mut data = Vec::with_capacity(indices.len() * frames * dim);
                for &i in indices {
                    if let Input::Features { data: d, .. } = &self.pool[i % POOL] {
                        data.extend_from_slice(d);
                    }
                }
                Ok(BatchInput::Features {
                    data,
                    batch: indices.len(),
                    frames: *frames,
                    dim: *dim,
                })
            }
            Input::Waveform(w) => {
                let samples = w.len();
                let mut data = Vec::with_capacity(indices.len() * samples);
                for &i in indices {
                    if let Input::Waveform(d) = &self.pool[i % POOL] {
                        data.extend_from_slice(d);
                    }
                }
                Ok(BatchInput::Waveforms {
                    data,
                    batch: indices.len(),
                    samples,
                })
            }
        }
    }
}

/// The SSL folder of a run: the given one, or a random one written into `tmp`.
fn ssl_folder(a: &TrainArgs, tmp: &Path) -> anyhow::Result<PathBuf> {
    if let Some(d) = &a.ssl_dir {
        return Ok(d.clone());
    }
    let model = match (a.mode, a.dim) {
        (TrainKind::Frozen, 1024) => "xlsr",
        (TrainKind::Frozen, 768) | (TrainKind::Finetune, _) => "base",
        (_, d) => anyhow::bail!("no random SSL folder of width {d}: pass `--ssl-dir`"),
    };
    let cfg = ssl_config(model, a.layers)?;
    let dir = tmp.join("ssl");
    wav2vec2::write_random_hf_folder(&dir, &cfg, 0)?;
    Ok(dir)
}

/// The timed part of a run, from the step event ending the warm-up to the last step event.
struct Timing {
    steps: usize,
    seconds: f64,
    parameters: Option<i64>,
    last_loss: Option<f64>,
}

fn result_row(a: &TrainArgs, device: Device, dim: i64, t: &Timing, mem: &GpuMemory) -> Value {
    let steps_per_s = t.steps as f64 / t.seconds;
    let epoch_steps = EPOCH_CLIPS / a.batch;
    json!({
        "kind": "train", "impl": "brspeech",
        "code": match a.implementation { Impl::Train => "model::train::train", Impl::Loop => "bench loop" },
        "mode": match a.mode { TrainKind::Frozen => "frozen", TrainKind::Finetune => "finetune" },
        "device": format!("{device:?}").to_lowercase(), "dtype": a.dtype.to_string(),
        "dtype_effective": crate::effective(a.dtype, device).to_string(),
        "dim": dim, "batch": a.batch, "warmup": a.warmup, "steps": t.steps, "seconds": t.seconds,
        "steps_per_s": steps_per_s, "items_per_s": steps_per_s * a.batch as f64,
        "epoch_clips": EPOCH_CLIPS, "epoch_steps": epoch_steps,
        "epoch_hours": epoch_steps as f64 / steps_per_s / 3600.0,
        "parameters": t.parameters, "last_loss": t.last_loss, "memory": mem.snapshot(),
    })
}

/// Through `model::train::train`: step events every `warmup` steps synchronise (they read the
/// loss); the time between the event at step `warmup` and the last one is measured.
fn run_train(a: &TrainArgs, ssl_dir: &Path, tmp: &Path, start: Instant) -> anyhow::Result<Timing> {
    let every = a.warmup.max(1);
    let timed = a.iters.div_ceil(every) * every;
    let total = every + timed;
    let n = total * a.batch;
    let (mode, data) = match a.mode {
        TrainKind::Frozen => (
            TrainMode::Frozen {
                ssl: SslSection::external(ssl_dir, SslOutput::LastHiddenState)?,
            },
            Synthetic::features(n, a.frames, a.dim as usize),
        ),
        TrainKind::Finetune => (
            TrainMode::Finetune {
                ssl_dir: ssl_dir.to_path_buf(),
                output: SslOutput::LastHiddenState,
            },
            Synthetic::waveforms(n, a.samples),
        ),
    };
    let val = Synthetic {
        len: a.batch.max(6),
        pool: data.pool.clone(),
    };
    let spec = TrainSpec {
        mode,
        preprocessing: Preprocessing {
            samples: a.samples,
            ..Preprocessing::default()
        },
        config: TrainConfig {
            epochs: 1,
            batch_size: a.batch,
            log_every: every,
            device: a.device,
            ..TrainConfig::default()
        },
        run_dir: tmp.join("run"),
        batch_size_key: "params.batch_size".into(),
        stage: "bench".into(),
    };
    let mut t0: Option<Instant> = None;
    let mut timing = Timing {
        steps: timed,
        seconds: f64::NAN,
        parameters: None,
        last_loss: None,
    };
    let eer = |_: &[f64], _: &[bool]| f64::NAN;
    let outcome = train(&spec, &data, &val, &eer, &mut |event| {
        match event {
            TrainEvent::Started { parameters, .. } => {
                timing.parameters = Some(*parameters);
                progress(start, &format!("training started, {parameters} parameters"));
            }
            TrainEvent::Step { step, loss, .. } => {
                timing.last_loss = Some(*loss);
                if *step == every {
                    t0 = Some(Instant::now());
                } else if *step == total {
                    timing.seconds = t0.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
                    return ControlFlow::Break(());
                }
            }
            TrainEvent::Epoch(_) => {}
        }
        ControlFlow::Continue(())
    })?;
    anyhow::ensure!(
        outcome.interrupted && timing.seconds.is_finite(),
        "the run ended before the timed steps finished"
    );
    Ok(timing)
}

/// A model's training-mode forward (input on the device → logits).
type Forward = Box<dyn Fn(&Tensor) -> Tensor>;

/// The bench loop: the trainer's step (BCE with the reference `pos_weight`, gradients with
/// autograd's `grad`, the crate's Adam) with the forward under `with_precision`.
fn run_loop(a: &TrainArgs, ssl_dir: &Path, device: Device) -> anyhow::Result<Timing> {
    tch::manual_seed(42);
    let vs = VarStore::new(device);
    let (forward, host): (Forward, Tensor) = match a.mode {
        TrainKind::Frozen => {
            let m = Aasist::new(vs.root(), &aasist::Config { ssl_dim: a.dim });
            let pool = Tensor::randn(
                [POOL as i64, a.frames as i64, a.dim],
                (Kind::Float, Device::Cpu),
            )
            .to_kind(Kind::Half);
            (
                Box::new(move |x: &Tensor| m.forward_t(&x.to_kind(Kind::Float), true)),
                pool,
            )
        }
        TrainKind::Finetune => {
            // Random weights of the folder's architecture (throughput does not depend on them).
            let (cfg, _) = wav2vec2::Config::from_file(&ssl_dir.join("config.json"))?;
            let m = W2vAasist::new(vs.root(), &cfg, SslOutput::LastHiddenState);
            let pool =
                Tensor::randn([POOL as i64, a.samples as i64], (Kind::Float, Device::Cpu)) * 0.1;
            (Box::new(move |x: &Tensor| m.forward_t(x, true)), pool)
        }
    };
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|x, y| x.0.cmp(&y.0));
    let parameters: i64 = params.iter().map(|(_, t)| t.numel() as i64).sum();
    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let cfg = TrainConfig::default();
    let mut adam = Adam::new(params, cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay);
    let pos_weight = Tensor::from_slice(&[5.0f32 / 6.0]).to_device(device);
    let b = a.batch;
    let mut step = |k: usize| -> Tensor {
        let idx: Vec<i64> = (0..b).map(|j| ((k * b + j) % POOL) as i64).collect();
        let labels: Vec<f32> = (0..b)
            .map(|j| if label_of(k * b + j) { 1.0 } else { 0.0 })
            .collect();
        let x = host
            .index_select(0, &Tensor::from_slice(&idx))
            .to_device(device);
        let y = Tensor::from_slice(&labels)
            .view([b as i64, 1])
            .to_device(device);
        let logits = with_precision(a.dtype, device, || forward(&x));
        let loss = logits
            .to_kind(Kind::Float)
            .binary_cross_entropy_with_logits(
                &y,
                None::<&Tensor>,
                Some(&pos_weight),
                Reduction::Mean,
            );
        let grads = Tensor::run_backward(&[&loss], &tensors, false, false);
        adam.step(&grads);
        loss
    };
    let every = a.warmup.max(1);
    let timed = a.iters.div_ceil(every) * every;
    let mut loss = step(0);
    for k in 1..every {
        loss = step(k);
    }
    let mut last = loss.double_value(&[]);
    let t0 = Instant::now();
    for k in 0..timed {
        let loss = step(every + k);
        // Synchronise as often as the `train` path's step events do.
        if (k + 1) % every == 0 {
            last = loss.double_value(&[]);
        }
    }
    Ok(Timing {
        steps: timed,
        seconds: t0.elapsed().as_secs_f64(),
        parameters: Some(parameters),
        last_loss: Some(last),
    })
}

pub fn run(a: &TrainArgs, mem: &GpuMemory) -> anyhow::Result<()> {
    let start = Instant::now();
    anyhow::ensure!(a.batch > 0, "`--batch` must be at least 1");
    if a.implementation == Impl::Train && a.dtype != Precision::F32 {
        anyhow::bail!("`model::train::train` trains in f32 only; use `--impl loop` for autocast");
    }
    let device = resolve_device(a.device)?;
    let tmp = tempfile::tempdir()?;
    let ssl_dir = ssl_folder(a, tmp.path())?;
    let ssl_width = wav2vec2::Config::from_file(&ssl_dir.join("config.json"))?
        .0
        .hidden_size;
    let dim = match a.mode {
        TrainKind::Frozen => {
            anyhow::ensure!(
                ssl_width == a.dim,
                "`--dim {}` but the SSL folder `{}` is {ssl_width} wide",
                a.dim,
                ssl_dir.display()
            );
            a.dim
        }
        TrainKind::Finetune => ssl_width,
    };
    progress(
        start,
        &format!(
            "train {} D={dim} batch {} on {device:?} ({}, {})",
            match a.mode {
                TrainKind::Frozen => "frozen",
                TrainKind::Finetune => "finetune",
            },
            a.batch,
            a.dtype,
            match a.implementation {
                Impl::Train => "model::train::train",
                Impl::Loop => "bench loop",
            }
        ),
    );
    let timing = match a.implementation {
        Impl::Train => run_train(a, &ssl_dir, tmp.path(), start)?,
        Impl::Loop => run_loop(a, &ssl_dir, device)?,
    };
    let row = result_row(a, device, dim, &timing, mem);
    progress(
        start,
        &format!(
            "  {:.2} steps/s ({} steps in {:.2}s)",
            row["steps_per_s"].as_f64().unwrap_or(f64::NAN),
            timing.steps,
            timing.seconds
        ),
    );
    emit(row);
    Ok(())
}
