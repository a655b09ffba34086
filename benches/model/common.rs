//! Shared pieces of the bench modes: the benchmarked model shapes, JSON-line output, progress
//! lines, and GPU memory readings from the NVIDIA driver (NVML).

use std::io::Write;
use std::time::Instant;

use brspeech::model::wav2vec2;
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use serde_json::{Value, json};

/// Samples of one clip: 4.04 s at 16 kHz, the reference's crop length.
pub const CLIP_SAMPLES: usize = 64_600;

/// Clips of the seed's training set, for epoch-time projections.
pub const EPOCH_CLIPS: usize = 444_274;

/// The Hugging Face XLS-R 300M architecture (`facebook/wav2vec2-xls-r-300m`).
pub fn xlsr_300m() -> wav2vec2::Config {
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

/// `base` (Hugging Face `Wav2Vec2Config()`, the wav2vec2-base architecture) or `xlsr`
/// (XLS-R 300M); `layers` overrides the transformer depth (small CPU smoke runs).
pub fn ssl_config(model: &str, layers: Option<usize>) -> anyhow::Result<wav2vec2::Config> {
    let mut cfg = match model {
        "base" => wav2vec2::Config::default(),
        "xlsr" => xlsr_300m(),
        other => anyhow::bail!("unknown model `{other}`: use `base` or `xlsr`"),
    };
    if let Some(n) = layers {
        cfg.num_hidden_layers = n;
    }
    Ok(cfg)
}

/// Prints one result object as a JSON line on stdout (flushed: a killed run keeps its lines).
pub fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// A progress line on stderr with the seconds since `start`.
pub fn progress(start: Instant, message: &str) {
    eprintln!("[{:7.2}s] {message}", start.elapsed().as_secs_f64());
}

/// GPU memory as the NVIDIA driver reports it: the memory held by this process, and the
/// device's used memory against a baseline read before this process touched CUDA (the only
/// reading that works where the driver cannot see the container's process ids).
pub struct GpuMemory {
    nvml: Option<Nvml>,
    baseline: Option<u64>,
}

impl GpuMemory {
    /// Opens NVML (absent on machines without the NVIDIA driver) and reads the baseline; call
    /// before anything initialises CUDA.
    pub fn open() -> GpuMemory {
        let nvml = Nvml::init().ok();
        let baseline = nvml
            .as_ref()
            .and_then(|n| n.device_by_index(0).ok())
            .and_then(|d| d.memory_info().ok())
            .map(|m| m.used);
        GpuMemory { nvml, baseline }
    }

    /// Bytes held by this process on all devices, when the driver lists it.
    pub fn process_bytes(&self) -> Option<u64> {
        let nvml = self.nvml.as_ref()?;
        let pid = std::process::id();
        let mut total = None;
        for i in 0..nvml.device_count().ok()? {
            let Ok(procs) = nvml
                .device_by_index(i)
                .and_then(|d| d.running_compute_processes())
            else {
                continue;
            };
            for p in procs.into_iter().filter(|p| p.pid == pid) {
                if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                    *total.get_or_insert(0) += bytes;
                }
            }
        }
        total
    }

    /// Used memory of device 0 now.
    pub fn device_used(&self) -> Option<u64> {
        self.nvml
            .as_ref()?
            .device_by_index(0)
            .ok()?
            .memory_info()
            .ok()
            .map(|m| m.used)
    }

    /// The readings as a JSON object (`null` where unavailable). Caching allocators keep what
    /// they reserved, so a reading after a workload is that workload's peak reservation plus
    /// the CUDA context.
    pub fn snapshot(&self) -> Value {
        let used = self.device_used();
        json!({
            "nvml_process_bytes": self.process_bytes(),
            "nvml_device_used_bytes": used,
            "nvml_device_baseline_bytes": self.baseline,
            "nvml_device_delta_bytes": used.zip(self.baseline).map(|(u, b)| u.saturating_sub(b)),
        })
    }
}
