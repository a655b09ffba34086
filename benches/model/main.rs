//! Rust (tch) side of the model benchmarks against PyTorch (`bench_torch.py` is the other side;
//! both print JSON lines). Modes:
//!
//! - `cpu THREADS ITERS`: wav2vec2-base (random weights) forward on 4 x 64,600 samples and the
//!   AASIST back end (D=768) forward+backward and eval forward on 4 x 201 frames
//!   (benches/model/run.sh);
//! - `extract`: feature-extraction throughput through the real `Extractor` over a sweep of batch
//!   sizes, f16 features copied to the host (benches/model/extract.sh, benches/gpu/run.sh);
//! - `train`: training-step throughput, frozen (back end on cached-feature-shaped inputs) or
//!   finetune (wav2vec2 + AASIST on waveforms), through the crate's `model::train::train` or a
//!   bench loop over the same pieces (for bf16 autocast, which `train` does not do);
//! - `parity-bf16`: the parity fixtures under bf16 autocast (and f32) on a device;
//! - `runtime`: what libtorch and the driver see; `write-ssl`: a random Hugging Face folder.
//!
//! usage: cargo bench --bench model -- MODE ...   (or the binary built by benches/gpu/build.sh)

mod common;
mod extract;
mod parity;
mod train;

use std::path::PathBuf;
use std::time::Instant;

use brspeech::model::aasist::{self, Aasist};
use brspeech::model::wav2vec2::{self, Wav2Vec2Model, normalize_waveforms};
use brspeech::model::{DeviceChoice, Precision};
use clap::{Parser, Subcommand};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use common::GpuMemory;

#[derive(Parser)]
#[command(about = "brspeech model benchmarks (tch side)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// CPU forward/backward timings of wav2vec2-base and AASIST.
    Cpu {
        /// libtorch threads.
        #[arg(default_value_t = 2)]
        threads: i32,
        /// Timed iterations (AASIST: 4x as many).
        #[arg(default_value_t = 5)]
        iters: usize,
    },
    /// Feature-extraction throughput over batch sizes (ascending).
    Extract(extract::ExtractArgs),
    /// Training-step throughput.
    Train(train::TrainArgs),
    /// The parity fixtures under bf16 autocast and in f32 on a device.
    #[command(name = "parity-bf16")]
    ParityBf16 {
        /// Device.
        #[arg(long, default_value = "cuda")]
        device: DeviceChoice,
        /// Folder of the parity fixtures.
        #[arg(long, default_value = "tests/fixtures/parity")]
        fixtures: PathBuf,
    },
    /// libtorch, CUDA and driver report, and a small computation on the device.
    Runtime {
        /// Device for the smoke computation.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Writes a Hugging Face wav2vec2 folder with random weights (seed 0).
    WriteSsl {
        /// `base` or `xlsr`.
        #[arg(long)]
        model: String,
        /// Override of the transformer depth.
        #[arg(long)]
        layers: Option<usize>,
        /// Output folder.
        dir: PathBuf,
    },
}

fn timed(mut f: impl FnMut(), iters: usize) -> serde_json::Value {
    for _ in 0..2 {
        f();
    }
    let mut runs: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let out = runs.clone();
    runs.sort_by(|a, b| a.total_cmp(b));
    let median = if runs.len() % 2 == 1 {
        runs[runs.len() / 2]
    } else {
        (runs[runs.len() / 2 - 1] + runs[runs.len() / 2]) / 2.0
    };
    serde_json::json!({ "min_s": runs[0], "median_s": median, "runs_s": out })
}

fn cpu_bench(threads: i32, iters: usize) {
    tch::set_num_threads(threads);
    tch::manual_seed(0);

    let vs = VarStore::new(Device::Cpu);
    let w2v = Wav2Vec2Model::new(vs.root(), &wav2vec2::Config::default());
    let wave = Tensor::randn([4, 64_600], (Kind::Float, Device::Cpu));
    let w2v_forward = || {
        let _ = tch::no_grad(|| w2v.forward_t(&normalize_waveforms(&wave), false));
    };

    let vs_a = VarStore::new(Device::Cpu);
    let model = Aasist::new(vs_a.root(), &aasist::Config { ssl_dim: 768 });
    let feats = Tensor::randn([4, 201, 768], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([4, 1]);
    let pos_weight = Tensor::from_slice(&[0.833_333_3f32]);
    let params = vs_a.trainable_variables();
    let aasist_step = || {
        for p in &params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
        let logits = model.forward_t(&feats, true);
        let loss = logits.binary_cross_entropy_with_logits(
            &labels,
            None::<&Tensor>,
            Some(&pos_weight),
            Reduction::Mean,
        );
        loss.backward();
    };
    let vs_e = VarStore::new(Device::Cpu);
    let eval_model = Aasist::new(vs_e.root(), &aasist::Config { ssl_dim: 768 });
    let aasist_forward = || {
        let _ = tch::no_grad(|| eval_model.forward_t(&feats, false));
    };

    let result = serde_json::json!({
        "impl": "brspeech-tch",
        "threads": tch::get_num_threads(),
        "w2v_base_forward_4x64600": timed(w2v_forward, iters),
        "aasist_fwd_bwd_4x201x768": timed(aasist_step, iters * 4),
        "aasist_eval_forward_4x201x768": timed(aasist_forward, iters * 4),
    });
    println!("{result}");
}

fn main() -> anyhow::Result<()> {
    // NVML's baseline must be read before anything initialises CUDA.
    let mem = GpuMemory::open();
    // `cargo bench` passes `--bench` to harness-less bench binaries.
    let args = std::env::args_os().filter(|a| a != "--bench");
    match Cli::parse_from(args).mode {
        Mode::Cpu { threads, iters } => {
            cpu_bench(threads, iters);
            Ok(())
        }
        Mode::Extract(a) => extract::run(&a, &mem),
        Mode::Train(a) => train::run(&a, &mem),
        Mode::ParityBf16 { device, fixtures } => parity::bf16(device, &fixtures),
        Mode::Runtime { device } => parity::runtime(device, &mem),
        Mode::WriteSsl { model, layers, dir } => {
            let cfg = common::ssl_config(&model, layers)?;
            let t0 = Instant::now();
            wav2vec2::write_random_hf_folder(&dir, &cfg, 0)?;
            common::emit(serde_json::json!({
                "kind": "write_ssl", "model": model, "layers": cfg.num_hidden_layers,
                "dir": dir, "seconds": t0.elapsed().as_secs_f64(),
            }));
            Ok(())
        }
    }
}

/// `f32` for the CPU (where autocast is not applied), the requested precision on CUDA.
pub fn effective(precision: Precision, device: Device) -> Precision {
    precision.effective(device.is_cuda())
}
