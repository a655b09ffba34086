//! Plain option types of the model layer (devices, precisions, SSL output choice, preprocessing,
//! runtime information): no libtorch types, so they compile and serialise in every build.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where tensors live: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when libtorch sees a GPU, the CPU otherwise.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`: use `auto`, `cpu`, `cuda` or `cuda:N`")
                }),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Numeric precision of SSL inference: `f32`, or `bf16`/`f16` autocast (CUDA only; on the CPU
/// the model runs in `f32` and [`Precision::effective`] says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full float32.
    #[default]
    F32,
    /// bfloat16 autocast (matrix products in bf16, reductions and norms in f32).
    Bf16,
    /// float16 autocast.
    F16,
}

impl Precision {
    /// The precision actually used on a device: reduced precisions need CUDA.
    pub fn effective(self, on_cuda: bool) -> Precision {
        if on_cuda { self } else { Precision::F32 }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(format!("unknown dtype `{s}`: use `f32`, `bf16` or `f16`")),
        }
    }
}

/// Which wav2vec2 tensor is the feature: the final `last_hidden_state` or `hidden_states[k]`
/// (Hugging Face numbering: 0 = input of transformer layer 0, k = output of layer k-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslOutput {
    /// `last_hidden_state` (after the final encoder LayerNorm in the stable layout).
    #[default]
    LastHiddenState,
    /// `hidden_states[k]`.
    HiddenState(usize),
}

impl fmt::Display for SslOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslOutput::LastHiddenState => f.write_str("last_hidden_state"),
            SslOutput::HiddenState(k) => write!(f, "hidden_states.{k}"),
        }
    }
}

/// Channel policy of the preprocessing recorded in a model checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelPolicy {
    /// Keep channel 0 (the reference).
    #[default]
    First,
    /// Average all channels.
    Mean,
}

impl FromStr for ChannelPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "first" => Ok(ChannelPolicy::First),
            "mean" => Ok(ChannelPolicy::Mean),
            _ => Err(format!(
                "unknown channel policy `{s}`: use `first` or `mean`"
            )),
        }
    }
}

/// How audio must be prepared before the model sees it (stored in every model checkpoint, so
/// `predict` prepares files exactly as training did). Normalisation is done by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Sample rate the model expects (16 kHz for wav2vec2).
    pub sample_rate: u32,
    /// Samples per clip (the reference: 64,600, first samples, repeat-padded).
    pub samples: usize,
    /// Reference silence trimming before cropping.
    pub trim: bool,
    /// Channel policy.
    pub channel: ChannelPolicy,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing {
            sample_rate: 16_000,
            samples: 64_600,
            trim: true,
            channel: ChannelPolicy::First,
        }
    }
}

/// A batch of SSL features `[batch, frames, dim]`, row-major, as f16 (the on-disk dtype of
/// feature shards).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of clips.
    pub batch: usize,
    /// Frames per clip.
    pub frames: usize,
    /// Feature dimension (the SSL hidden size).
    pub dim: usize,
    /// `batch * frames * dim` values.
    pub data: Vec<half::f16>,
}

impl Features {
    /// The features of clip `i` (`frames * dim` values).
    pub fn clip(&self, i: usize) -> &[half::f16] {
        self.as_ref().clip(i)
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> FeaturesRef<'_> {
        FeaturesRef {
            batch: self.batch,
            frames: self.frames,
            dim: self.dim,
            data: &self.data,
        }
    }
}

/// A batch of features borrowed from the extractor's host buffer (see
/// `Extractor::extract_with`): `[batch, frames, dim]`, row-major, f16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeaturesRef<'a> {
    /// Number of clips.
    pub batch: usize,
    /// Frames per clip.
    pub frames: usize,
    /// Feature dimension (the SSL hidden size).
    pub dim: usize,
    /// `batch * frames * dim` values.
    pub data: &'a [half::f16],
}

impl<'a> FeaturesRef<'a> {
    /// The features of clip `i` (`frames * dim` values).
    pub fn clip(&self, i: usize) -> &'a [half::f16] {
        let n = self.frames * self.dim;
        &self.data[i * n..(i + 1) * n]
    }

    /// The features of clip `i` as little-endian bytes, as a feature shard stores a row (the
    /// in-memory bytes: every supported target is little-endian, checked at compile time).
    pub fn clip_bytes(&self, i: usize) -> &'a [u8] {
        const _: () = assert!(
            cfg!(target_endian = "little"),
            "feature shards are little-endian"
        );
        bytemuck::cast_slice(self.clip(i))
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Features {
        Features {
            batch: self.batch,
            frames: self.frames,
            dim: self.dim,
            data: self.data.to_vec(),
        }
    }
}

/// What libtorch this binary runs on (for `brspeech --version` and `doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeInfo {
    /// Whether the binary was built with the `torch` feature.
    pub torch_feature: bool,
    /// libtorch version (from the loaded library's folder), when known.
    pub libtorch_version: Option<String>,
    /// Folder of the loaded `libtorch_cpu.so`, when known.
    pub libtorch_path: Option<String>,
    /// Whether `libtorch_cuda` is linked in.
    pub cuda_linked: bool,
    /// Whether a CUDA device is usable.
    pub cuda_available: bool,
    /// Number of CUDA devices.
    pub cuda_device_count: usize,
    /// CUDA device names, when the driver reports them.
    pub cuda_devices: Vec<String>,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// cuDNN version (e.g. 91002), when CUDA is available.
    pub cudnn_version: Option<i64>,
    /// CPU threads libtorch uses for intra-op parallelism.
    pub cpu_threads: usize,
}

impl fmt::Display for RuntimeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.torch_feature {
            return f.write_str("libtorch: not built in (rebuild with the `torch` feature)");
        }
        write!(
            f,
            "libtorch {}",
            self.libtorch_version
                .as_deref()
                .unwrap_or("(unknown version)")
        )?;
        if let Some(p) = &self.libtorch_path {
            write!(f, " at {p}")?;
        }
        write!(f, "; {} CPU threads", self.cpu_threads)?;
        if !self.cuda_linked {
            return f.write_str("; CUDA: not linked (CPU build)");
        }
        if !self.cuda_available {
            return f.write_str("; CUDA: linked, no usable device");
        }
        write!(f, "; CUDA: {} device(s)", self.cuda_device_count)?;
        if !self.cuda_devices.is_empty() {
            write!(f, " ({})", self.cuda_devices.join(", "))?;
        }
        match self.cudnn_version {
            Some(v) if self.cudnn_available => write!(f, "; cuDNN {v}"),
            _ => f.write_str("; cuDNN: unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choice_round_trips() {
        for s in ["auto", "cpu", "cuda", "cuda:1"] {
            let d: DeviceChoice = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(
            "CUDA:0".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        let err = "tpu".parse::<DeviceChoice>().unwrap_err();
        assert!(err.contains("`tpu`"), "{err}");
    }

    #[test]
    fn precision_parses_and_falls_back_on_cpu() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!(Precision::Bf16.effective(false), Precision::F32);
        assert_eq!(Precision::Bf16.effective(true), Precision::Bf16);
        assert!("f64".parse::<Precision>().is_err());
    }

    #[test]
    fn ssl_output_serialises_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&SslOutput::LastHiddenState).unwrap(),
            "\"last_hidden_state\""
        );
        assert_eq!(
            serde_json::to_string(&SslOutput::HiddenState(3)).unwrap(),
            "{\"hidden_state\":3}"
        );
    }
}
