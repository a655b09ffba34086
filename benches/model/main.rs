//! Rust (tch) side of the model CPU benchmark, the same workloads as `bench_torch.py`:
//! wav2vec2-base (random weights) forward on 4 x 64,600 samples, and the AASIST back end
//! (D=768) forward+backward and eval forward on 4 x 201 frames. Prints one JSON object.
//!
//! usage: cargo bench --bench model -- THREADS ITERS   (run through benches/model/run.sh)

use std::time::Instant;

use brspeech::model::aasist::{self, Aasist};
use brspeech::model::wav2vec2::{self, Wav2Vec2Model, normalize_waveforms};
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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
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
