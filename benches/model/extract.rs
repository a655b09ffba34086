//! `extract` mode: clips/s of the crate's `Extractor` (upload, normalisation, wav2vec2 forward
//! under the chosen precision, f16 features copied to the host) over a sweep of batch sizes,
//! with GPU memory after each, and a cross-check file for comparing its features with
//! transformers' on the same weights and input.

use std::path::{Path, PathBuf};
use std::time::Instant;

use brspeech::model::wav2vec2;
use brspeech::model::{DeviceChoice, ExtractOptions, Extractor, ModelError, Precision};
use clap::Args;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::common::{CLIP_SAMPLES, GpuMemory, emit, progress, ssl_config};

#[derive(Args)]
pub struct ExtractArgs {
    /// Device.
    #[arg(long, default_value = "cuda")]
    pub device: DeviceChoice,
    /// Precision: f32, bf16 or f16 (autocast on CUDA).
    #[arg(long, default_value = "bf16")]
    pub dtype: Precision,
    /// `base` or `xlsr`.
    #[arg(long, default_value = "base")]
    pub model: String,
    /// Batch sizes, comma-separated (run ascending; the sweep stops at the first failure).
    #[arg(
        long,
        default_value = "16,32,64",
        value_delimiter = ',',
        required = true
    )]
    pub batches: Vec<usize>,
    /// Untimed batches per batch size.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed batches per batch size.
    #[arg(long, default_value_t = 8)]
    pub iters: usize,
    /// A Hugging Face folder to load (written by `write-ssl`); default: a random one in a
    /// temporary folder.
    #[arg(long)]
    pub ssl_dir: Option<PathBuf>,
    /// Transformer depth of the random model (ignored with `--ssl-dir`).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Samples per clip.
    #[arg(long, default_value_t = CLIP_SAMPLES)]
    pub samples: usize,
    /// Writes `waveform` [4, S] f32 and this side's `features` [4, T, D] f16 here.
    #[arg(long)]
    pub xcheck: Option<PathBuf>,
}

fn random_waves(batch: usize, samples: usize) -> Vec<f32> {
    let t = Tensor::randn([(batch * samples) as i64], (Kind::Float, Device::Cpu));
    Vec::<f32>::try_from(t).expect("a float tensor converts")
}

fn write_xcheck(ex: &Extractor, samples: usize, path: &Path) -> anyhow::Result<()> {
    tch::manual_seed(1234);
    let wave = random_waves(4, samples);
    let f = ex.extract(&wave, 4)?;
    let waveform = Tensor::from_slice(&wave).view([4, samples as i64]);
    let features =
        Tensor::from_slice(&f.data).view([f.batch as i64, f.frames as i64, f.dim as i64]);
    Tensor::write_safetensors(&[("waveform", waveform), ("features", features)], path)?;
    Ok(())
}

pub fn run(a: &ExtractArgs, mem: &GpuMemory) -> anyhow::Result<()> {
    let start = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = match &a.ssl_dir {
        Some(d) => d.clone(),
        None => {
            let cfg = ssl_config(&a.model, a.layers)?;
            wav2vec2::write_random_hf_folder(tmp.path(), &cfg, 0)?;
            tmp.path().to_path_buf()
        }
    };
    let t0 = Instant::now();
    let ex = Extractor::load(
        &dir,
        &ExtractOptions {
            device: a.device,
            precision: a.dtype,
            ..ExtractOptions::default()
        },
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let cfg = wav2vec2::Config::from_json(ex.ssl_config_json(), &dir)?;
    progress(
        start,
        &format!(
            "extract {} ({} layers, D={}) on {} in {}: loaded in {load_s:.1}s",
            a.model,
            cfg.num_hidden_layers,
            ex.hidden_size(),
            ex.device(),
            ex.precision()
        ),
    );
    let base = json!({
        "kind": "extract", "impl": "brspeech", "model": a.model, "layers": cfg.num_hidden_layers,
        "dim": ex.hidden_size(), "device": ex.device(), "dtype": a.dtype.to_string(),
        "dtype_effective": ex.precision().to_string(), "samples": a.samples,
        "frames": ex.frames_for(a.samples), "load_s": load_s,
    });
    let mut batches = a.batches.clone();
    batches.sort_unstable();
    batches.dedup();
    anyhow::ensure!(!batches.contains(&0), "batch sizes must be at least 1");
    for batch in batches {
        let wave = random_waves(batch, a.samples);
        let mut row = base.clone();
        let obj = row.as_object_mut().expect("an object");
        obj.insert("batch".into(), json!(batch));
        let measured = (|| -> Result<(f64, usize), ModelError> {
            // As the extract_ssl stage does: the features are read where the extractor left
            // them on the host (PyTorch's side ends with them in a host tensor too).
            for _ in 0..a.warmup {
                ex.extract_with(&wave, batch, |f| f.frames)?;
            }
            let t = Instant::now();
            let mut frames = 0;
            for _ in 0..a.iters {
                frames = ex.extract_with(&wave, batch, |f| f.frames)?;
            }
            Ok((t.elapsed().as_secs_f64(), frames))
        })();
        match measured {
            Ok((secs, frames)) => {
                let clips = (batch * a.iters) as f64 / secs;
                obj.insert("iters".into(), json!(a.iters));
                obj.insert("warmup".into(), json!(a.warmup));
                obj.insert("seconds".into(), json!(secs));
                obj.insert("s_per_batch".into(), json!(secs / a.iters as f64));
                obj.insert("clips_per_s".into(), json!(clips));
                obj.insert("frames_out".into(), json!(frames));
                obj.insert("memory".into(), mem.snapshot());
                progress(start, &format!("  batch {batch}: {clips:.1} clips/s"));
                emit(row);
            }
            Err(e) => {
                let oom = matches!(e, ModelError::OutOfMemory { .. });
                obj.insert("error".into(), json!(e.to_string()));
                obj.insert("oom".into(), json!(oom));
                obj.insert("memory".into(), mem.snapshot());
                progress(start, &format!("  batch {batch}: failed: {e}"));
                emit(row);
                break;
            }
        }
    }
    if let Some(path) = &a.xcheck {
        write_xcheck(&ex, a.samples, path)?;
        progress(
            start,
            &format!("cross-check input and features: {}", path.display()),
        );
    }
    Ok(())
}
