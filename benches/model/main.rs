//! Rust (tch) side of the model CPU benchmark, the same workloads as `bench_torch.py`:
//! wav2vec2-base (random weights) forward on 4 x 64,600 samples, and the AASIST back end
//! (D=768) forward+backward and eval forward on 4 x 201 frames. Prints one JSON object.
//!
//! usage: cargo bench --bench model -- THREADS ITERS   (run through benches/model/run.sh)
//!
//! A second mode measures feature extraction through the real `Extractor` (random weights
//! written as a Hugging Face folder; f16 features copied to the host), for CPU or CUDA:
//! `... -- extract DEVICE DTYPE BATCH BATCHES base|xlsr` (run through benches/model/extract.sh).

use std::time::Instant;

use brspeech::model::aasist::{self, Aasist};
use brspeech::model::wav2vec2::{self, Wav2Vec2Model, normalize_waveforms};
use brspeech::model::{DeviceChoice, ExtractOptions, Extractor, Precision};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

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

/// The Hugging Face XLS-R 300M architecture (`facebook/wav2vec2-xls-r-300m`).
fn xlsr_300m() -> wav2vec2::Config {
    wav2vec2::Config {
        hidden_size: 1024,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        intermediate_size: 4096,
        feat_extract_norm: "layer".into(),
        do_stable_layer_norm: true,
        conv_bias: true,
        mask_time_prob: 0.075,
        ..wav2vec2::Config::default()
    }
}

fn extract_bench(args: &[String]) {
    let arg = |i: usize, what: &str| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing {what}"))
    };
    let device: DeviceChoice = arg(1, "DEVICE").parse().unwrap();
    let precision: Precision = arg(2, "DTYPE").parse().unwrap();
    let batch: usize = arg(3, "BATCH").parse().unwrap();
    let batches: usize = arg(4, "BATCHES").parse().unwrap();
    let layout = arg(5, "base|xlsr");
    let cfg = if layout == "xlsr" {
        xlsr_300m()
    } else {
        wav2vec2::Config::default()
    };
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    wav2vec2::write_random_hf_folder(dir.path(), &cfg, 0).unwrap();
    let opts = ExtractOptions {
        device,
        precision,
        ..ExtractOptions::default()
    };
    let ex = Extractor::load(dir.path(), &opts).unwrap();
    let wave = Vec::<f32>::try_from(Tensor::randn(
        [(batch * 64_600) as i64],
        (Kind::Float, Device::Cpu),
    ))
    .unwrap();
    for _ in 0..2 {
        ex.extract(&wave, batch).unwrap();
    }
    let t0 = Instant::now();
    for _ in 0..batches {
        let f = ex.extract(&wave, batch).unwrap();
        assert_eq!((f.frames, f.dim), (201, cfg.hidden_size as usize));
    }
    let secs = t0.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "impl": "brspeech-tch",
        "model": layout,
        "device": ex.device(),
        "dtype": ex.precision().to_string(),
        "batch": batch,
        "batches": batches,
        "seconds": secs,
        "clips_per_s": (batch * batches) as f64 / secs,
    });
    println!("{result}");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("extract") {
        return extract_bench(&args);
    }
    let threads: i32 = args.first().and_then(|s| s.parse().ok()).unwrap_or(2);
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
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
