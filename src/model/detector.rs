//! Scoring with a model checkpoint (`predict`, `evaluate`): preprocessed 16 kHz waveforms or
//! cached SSL features in, one logit per clip out (sigmoid(logit) = P(bona fide)).

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::model::api::DetectorOptions;
use crate::model::checkpoint::{CheckpointConfig, HfFiles};
use crate::model::error::{ModelError, TorchContext};
use crate::model::full::ModelCheckpoint;
use crate::model::options::{Features, Precision, Preprocessing};
use crate::model::runtime::{GuardCtx, device_name, guard, resolve_device, with_precision};
use crate::model::wav2vec2::{PretrainedSsl, normalize_waveforms};

/// A loaded model checkpoint ready to score.
#[derive(Debug)]
pub struct Detector {
    ckpt: ModelCheckpoint,
    external_ssl: Option<PretrainedSsl>,
    device: Device,
    precision: Precision,
    opts: DetectorOptions,
    dir: PathBuf,
}

impl Detector {
    /// Loads a model checkpoint folder (and, for a back-end-only checkpoint, the SSL folder of
    /// `opts.ssl_dir`, which must have the recorded digest) onto the chosen device, frozen.
    pub fn load(model_dir: &Path, opts: &DetectorOptions) -> Result<Detector, ModelError> {
        let device = resolve_device(opts.device)?;
        let mut ckpt = ModelCheckpoint::load(model_dir, device)?;
        ckpt.vs.freeze();
        let external_ssl = match (&ckpt.config.ssl.embedded, &opts.ssl_dir) {
            (false, Some(dir)) => {
                let expected = ckpt
                    .config
                    .ssl
                    .digest
                    .clone()
                    .expect("validated: back-end-only checkpoints name their SSL");
                let found = HfFiles::locate(dir)?.digest()?;
                if found.weights != expected.weights {
                    return Err(ModelError::SslDigestMismatch {
                        path: dir.clone(),
                        expected: expected.weights,
                        found: found.weights,
                    });
                }
                let mut ssl = PretrainedSsl::load(dir, device)?;
                if ssl.config != ckpt.config.ssl_config(&model_dir.join("config.json"))? {
                    return Err(ModelError::config(
                        dir.join("config.json"),
                        "the SSL architecture differs from the one recorded in the model checkpoint",
                    ));
                }
                ssl.vs.freeze();
                Some(ssl)
            }
            _ => None,
        };
        Ok(Detector {
            precision: opts.precision.effective(device.is_cuda()),
            ckpt,
            external_ssl,
            device,
            opts: opts.clone(),
            dir: model_dir.to_path_buf(),
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &CheckpointConfig {
        &self.ckpt.config
    }

    /// How audio must be prepared (sample rate, samples, trim, channel).
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.ckpt.config.preprocessing
    }

    /// The device in use.
    pub fn device(&self) -> String {
        device_name(self.device)
    }

    /// The SSL precision in use.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether [`Detector::score_waveforms`] works (SSL embedded, or its folder given).
    pub fn can_score_waveforms(&self) -> bool {
        self.ckpt.ssl.is_some() || self.external_ssl.is_some()
    }

    fn ctx(&self, batch: usize) -> GuardCtx<'_> {
        GuardCtx {
            stage: &self.opts.oom.stage,
            action: "scoring a batch",
            batch_size: batch,
            config_key: &self.opts.oom.config_key,
        }
    }

    fn logits_to_vec(logits: Tensor) -> Result<Vec<f32>, ModelError> {
        let host = logits
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous()
            .view([-1]);
        Vec::<f32>::try_from(host).ctx(|| "copying scores to the host".into())
    }

    /// Logits of `batch` equal-length clips given row-major in `waveforms` (16 kHz, prepared as
    /// [`Detector::preprocessing`] says; normalised here).
    pub fn score_waveforms(&self, waveforms: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let ssl = match (&self.ckpt.ssl, &self.external_ssl) {
            (Some(ssl), _) => ssl,
            (None, Some(ext)) => &ext.model,
            (None, None) => {
                return Err(ModelError::SslRequired {
                    path: self.dir.clone(),
                    digest: self
                        .ckpt
                        .config
                        .ssl
                        .digest
                        .as_ref()
                        .map(|d| d.weights.clone())
                        .unwrap_or_default(),
                });
            }
        };
        if batch == 0 || !waveforms.len().is_multiple_of(batch) {
            return Err(ModelError::Input {
                what: "Detector::score_waveforms",
                message: format!(
                    "{} samples do not split into {batch} equal clips",
                    waveforms.len()
                ),
            });
        }
        let samples = waveforms.len() / batch;
        let min = ssl.config().min_samples();
        if samples < min {
            return Err(ModelError::Input {
                what: "Detector::score_waveforms",
                message: format!(
                    "clips of {samples} samples are shorter than the model's receptive field ({min})"
                ),
            });
        }
        guard(&self.ctx(batch), || {
            let x = Tensor::from_slice(waveforms)
                .view([batch as i64, samples as i64])
                .to_device(self.device);
            let logits = tch::no_grad(|| {
                let x = normalize_waveforms(&x);
                let feats = with_precision(self.precision, self.device, || {
                    ssl.forward_output(&x, self.ckpt.config.ssl.output, false)
                });
                self.ckpt
                    .backend
                    .forward_t(&feats.to_kind(Kind::Float), false)
            });
            Self::logits_to_vec(logits)
        })
    }

    /// Logits of cached SSL features (`[B, T, D]`, D = the checkpoint's `backend.ssl_dim`).
    pub fn score_features(&self, features: &Features) -> Result<Vec<f32>, ModelError> {
        let d = self.ckpt.config.backend.ssl_dim as usize;
        if features.dim != d
            || features.data.len() != features.batch * features.frames * features.dim
            || features.frames < 3
        {
            return Err(ModelError::Input {
                what: "Detector::score_features",
                message: format!(
                    "features are [{}, {}, {}] with {} values; the model needs D = {d} and at least 3 frames",
                    features.batch,
                    features.frames,
                    features.dim,
                    features.data.len()
                ),
            });
        }
        guard(&self.ctx(features.batch), || {
            let x = Tensor::from_slice(&features.data)
                .view([
                    features.batch as i64,
                    features.frames as i64,
                    features.dim as i64,
                ])
                .to_device(self.device)
                .to_kind(Kind::Float);
            let logits = tch::no_grad(|| self.ckpt.backend.forward_t(&x, false));
            Self::logits_to_vec(logits)
        })
    }
}
