//! SSL feature extraction (the core of the `extract_ssl` stage): a frozen wav2vec2 in eval
//! mode turns batches of waveforms `[B, S]` into f16 features `[B, T, D]`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::model::api::ExtractOptions;
use crate::model::checkpoint::{SslDigest, SslSection};
use crate::model::error::{ModelError, TorchContext};
use crate::model::options::{Features, Precision, SslOutput};
use crate::model::runtime::{GuardCtx, device_name, guard, resolve_device, with_precision};
use crate::model::wav2vec2::{PretrainedSsl, normalize_waveforms};

/// A frozen wav2vec2 ready to extract features.
///
/// The stage adapter streams shard rows through [`Extractor::extract`] one batch at a time;
/// memory stays bounded by the batch (weights + one batch of activations on the device, one
/// batch of f16 features on the host).
#[derive(Debug)]
pub struct Extractor {
    ssl: PretrainedSsl,
    device: Device,
    precision: Precision,
    opts: ExtractOptions,
    digest: SslDigest,
}

impl Extractor {
    /// Loads a Hugging Face wav2vec2 folder strictly onto the chosen device, frozen.
    pub fn load(ssl_dir: &Path, opts: &ExtractOptions) -> Result<Extractor, ModelError> {
        let device = resolve_device(opts.device)?;
        let mut ssl = PretrainedSsl::load(ssl_dir, device)?;
        ssl.vs.freeze();
        ssl.config.check_output(opts.output, &ssl.files.config)?;
        let digest = ssl.files.digest()?;
        Ok(Extractor {
            precision: opts.precision.effective(device.is_cuda()),
            device,
            ssl,
            opts: opts.clone(),
            digest,
        })
    }

    /// Digest of the SSL folder (part of the stage key and of back-end-only checkpoints).
    pub fn digest(&self) -> &SslDigest {
        &self.digest
    }

    /// What a back-end-only checkpoint trained on these features records about the SSL
    /// (configuration, digest, output; `embedded: false`).
    pub fn ssl_section(&self) -> SslSection {
        SslSection {
            embedded: false,
            output: self.opts.output,
            config: self.ssl.raw_config.clone(),
            digest: Some(self.digest.clone()),
            source: Some(self.ssl.files.dir.display().to_string()),
        }
    }

    /// `config.json` of the SSL folder, verbatim.
    pub fn ssl_config_json(&self) -> &serde_json::Value {
        &self.ssl.raw_config
    }

    /// Feature width D.
    pub fn hidden_size(&self) -> usize {
        self.ssl.config.hidden_size as usize
    }

    /// Frames T for clips of `samples` samples.
    pub fn frames_for(&self, samples: usize) -> usize {
        self.ssl.config.frames_for(samples)
    }

    /// The device in use (`cpu`, `cuda:0`).
    pub fn device(&self) -> String {
        device_name(self.device)
    }

    /// The precision in use (`f32` on the CPU whatever was asked).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The extracted tensor.
    pub fn output(&self) -> SslOutput {
        self.opts.output
    }

    fn check(&self, len: usize, batch: usize) -> Result<usize, ModelError> {
        if batch == 0 || !len.is_multiple_of(batch) {
            return Err(ModelError::Input {
                what: "Extractor::extract",
                message: format!("{len} samples do not split into {batch} equal clips"),
            });
        }
        let samples = len / batch;
        if self.frames_for(samples) == 0 {
            return Err(ModelError::Input {
                what: "Extractor::extract",
                message: format!(
                    "clips of {samples} samples are shorter than the model's receptive field ({})",
                    self.ssl.config.min_samples()
                ),
            });
        }
        Ok(samples)
    }

    fn run(&self, input: Tensor, batch: usize) -> Result<Features, ModelError> {
        let ctx = GuardCtx {
            stage: &self.opts.oom.stage,
            action: "extracting a batch",
            batch_size: batch,
            config_key: &self.opts.oom.config_key,
        };
        guard(&ctx, || {
            let feats = tch::no_grad(|| {
                let x = normalize_waveforms(&input);
                with_precision(self.precision, self.device, || {
                    self.ssl.model.forward_output(&x, self.opts.output, false)
                })
            });
            let (b, t, d) = feats.size3().ctx(|| "reading the feature shape".into())?;
            let host = feats
                .to_kind(Kind::Half)
                .to_device(Device::Cpu)
                .contiguous();
            let data = Vec::<half::f16>::try_from(host.view([-1]))
                .ctx(|| "copying features to the host".into())?;
            Ok(Features {
                batch: b as usize,
                frames: t as usize,
                dim: d as usize,
                data,
            })
        })
    }

    /// Features of `batch` clips of equal length given row-major in `waveforms` (float samples,
    /// any scale: every clip is z-normalised first).
    pub fn extract(&self, waveforms: &[f32], batch: usize) -> Result<Features, ModelError> {
        let samples = self.check(waveforms.len(), batch)?;
        let input = Tensor::from_slice(waveforms)
            .view([batch as i64, samples as i64])
            .to_device(self.device);
        self.run(input, batch)
    }

    /// Like [`Extractor::extract`] for 16-bit PCM rows (sent to the device as i16, half the
    /// bytes of f32; the scale is irrelevant after normalisation).
    pub fn extract_i16(&self, waveforms: &[i16], batch: usize) -> Result<Features, ModelError> {
        let samples = self.check(waveforms.len(), batch)?;
        let input = Tensor::from_slice(waveforms)
            .view([batch as i64, samples as i64])
            .to_device(self.device)
            .to_kind(Kind::Float)
            / 32768.0;
        self.run(input, batch)
    }
}
