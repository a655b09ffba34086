//! Options and reports of the model layer's entry points (extraction, scoring, import,
//! export): plain data, identical with and without the `torch` feature.

use std::path::PathBuf;

use crate::model::checkpoint::SslDigest;
use crate::model::options::{DeviceChoice, Precision, Preprocessing, SslOutput};

/// Names used in an out-of-memory error: the stage that ran and the configuration key that
/// sets its batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomHint {
    /// Stage or command (`extract_ssl`, `evaluate`, `predict`).
    pub stage: String,
    /// The key to lower (`stages.extract.params.batch_size`, `--batch-size`).
    pub config_key: String,
}

impl OomHint {
    /// A hint for `stage` with `config_key`.
    pub fn new(stage: impl Into<String>, config_key: impl Into<String>) -> OomHint {
        OomHint {
            stage: stage.into(),
            config_key: config_key.into(),
        }
    }
}

/// Options of [`crate::model::Extractor::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Device (`auto` = CUDA when available).
    pub device: DeviceChoice,
    /// SSL precision (`bf16`/`f16` autocast on CUDA; `f32` on the CPU whatever is asked).
    pub precision: Precision,
    /// The tensor to extract.
    pub output: SslOutput,
    /// Names for an out-of-memory error.
    pub oom: OomHint,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            device: DeviceChoice::Auto,
            precision: Precision::F32,
            output: SslOutput::LastHiddenState,
            oom: OomHint::new("extract_ssl", "batch_size"),
        }
    }
}

/// Options of [`crate::model::Detector::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorOptions {
    /// Device (`auto` = CUDA when available).
    pub device: DeviceChoice,
    /// SSL precision (the back end always runs in f32).
    pub precision: Precision,
    /// The SSL folder a back-end-only checkpoint needs to score waveforms (checked against the
    /// digest the checkpoint records). Ignored for checkpoints that embed the SSL.
    pub ssl_dir: Option<PathBuf>,
    /// Names for an out-of-memory error.
    pub oom: OomHint,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            device: DeviceChoice::Auto,
            precision: Precision::F32,
            ssl_dir: None,
            oom: OomHint::new("predict", "--batch-size"),
        }
    }
}

/// Options of [`crate::model::import_checkpoint`] (`brspeech model import`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// A Hugging Face wav2vec2 folder (`config.json` + `model.safetensors`).
    pub ssl_dir: PathBuf,
    /// The reference AASIST state dict as safetensors: back-end keys (`LL.weight`, ...), or the
    /// whole `W2V_AASIST` state dict whose `ssl_model.model.*` keys then supply the SSL weights
    /// (a model fine-tuned by the reference code).
    pub backend: PathBuf,
    /// Preprocessing recorded in the checkpoint (`--samples`, `--trim`, `--channel`).
    pub preprocessing: Preprocessing,
    /// The SSL tensor the back end reads.
    pub output: SslOutput,
    /// Copy the SSL weights into the checkpoint (true), or write a back-end-only checkpoint
    /// that names the SSL folder by digest (false; only when `backend` has no SSL keys).
    pub embed_ssl: bool,
    /// The checkpoint folder to create (must not exist or be empty).
    pub out_dir: PathBuf,
}

/// What [`crate::model::import_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The checkpoint folder.
    pub out_dir: PathBuf,
    /// Digest of the SSL folder.
    pub ssl_digest: SslDigest,
    /// Where the SSL weights came from: `ssl_dir` or the `ssl_model.model.*` keys of `backend`.
    pub ssl_weights_from: PathBuf,
    /// SSL hidden size D.
    pub ssl_dim: i64,
    /// Parameters of the whole model (SSL included when embedded).
    pub parameters: i64,
    /// Keys of the SSL file that are not part of `Wav2Vec2Model` (pre-training/CTC heads).
    pub set_aside: Vec<String>,
}

/// Options of [`crate::model::export_checkpoint`] (`brspeech model export`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// The model checkpoint folder.
    pub model_dir: PathBuf,
    /// Write the back-end state dict (reference key names) here.
    pub backend_out: Option<PathBuf>,
    /// Write a Hugging Face wav2vec2 folder (`config.json` + `model.safetensors`) here; needs a
    /// checkpoint that embeds the SSL.
    pub ssl_out: Option<PathBuf>,
    /// Write the whole reference `W2V_AASIST` state dict (`ssl_model.model.*` + back end) here.
    pub state_dict_out: Option<PathBuf>,
}

/// What [`crate::model::export_checkpoint`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Files and folders written.
    pub written: Vec<PathBuf>,
}
