//! SSL feature extraction (the core of the `extract_ssl` stage): a frozen wav2vec2 in eval
//! mode turns batches of waveforms `[B, S]` into f16 features `[B, T, D]`.

use std::path::Path;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::model::api::ExtractOptions;
use crate::model::checkpoint::{SslDigest, SslSection};
use crate::model::error::{ModelError, TorchContext};
use crate::model::options::{Features, FeaturesRef, Precision, SslOutput};
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
    /// Page-locked host buffers for the copies to and from a CUDA device (input waveforms,
    /// output features), reused while the batch shape stays the same: a pageable copy is
    /// staged by the driver and runs at a fraction of the bus speed.
    staging: Mutex<Staging>,
}

#[derive(Debug, Default)]
struct Staging {
    input: Option<Tensor>,
    output: Option<Tensor>,
}

/// A host tensor of `shape` and `kind`, page-locked when `device` is CUDA, kept in `slot` while
/// the shape and kind stay the same.
fn staging_buffer(slot: &mut Option<Tensor>, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let fits = slot
        .as_ref()
        .is_some_and(|t| t.size() == shape && t.kind() == kind);
    if !fits {
        let t = Tensor::empty(shape, (kind, Device::Cpu));
        *slot = Some(if device.is_cuda() {
            t.pin_memory(device)
        } else {
            t
        });
    }
    slot.as_ref().expect("staging buffer").shallow_clone()
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
            staging: Mutex::new(Staging::default()),
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

    /// Extracts the batch and hands `consume` the features on the host, borrowed from a
    /// page-locked buffer on CUDA (no further copy), from the result tensor on the CPU.
    fn run<R>(
        &self,
        input: Tensor,
        batch: usize,
        consume: impl FnOnce(FeaturesRef<'_>) -> R,
    ) -> Result<R, ModelError> {
        let ctx = GuardCtx {
            stage: &self.opts.oom.stage,
            action: "extracting a batch",
            batch_size: batch,
            config_key: &self.opts.oom.config_key,
        };
        let (feats, b, t, d) = guard(&ctx, || {
            let feats = tch::no_grad(|| {
                let x = normalize_waveforms(&input);
                with_precision(self.precision, self.device, || {
                    self.ssl.model.forward_output(&x, self.opts.output, false)
                })
            });
            let (b, t, d) = feats.size3().ctx(|| "reading the feature shape".into())?;
            Ok((feats, b, t, d))
        })?;
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let host = guard(&ctx, || {
            if self.device.is_cuda() {
                let mut host =
                    staging_buffer(&mut staging.output, &[b, t, d], Kind::Half, self.device);
                host.f_copy_(&feats.to_kind(Kind::Half))
                    .ctx(|| "copying features to the host".into())?;
                Ok(host)
            } else {
                Ok(feats.to_kind(Kind::Half).contiguous())
            }
        })?;
        let n = (b * t * d) as usize;
        // SAFETY: `host` is a contiguous CPU tensor of `n` f16 values; it is alive (and, on
        // CUDA, not reused: `staging` stays locked) until `consume` returns.
        let data = unsafe { std::slice::from_raw_parts(host.data_ptr() as *const half::f16, n) };
        Ok(consume(FeaturesRef {
            batch: b as usize,
            frames: t as usize,
            dim: d as usize,
            data,
        }))
    }

    /// Features of `batch` clips of equal length given row-major in `waveforms` (float samples,
    /// any scale: every clip is z-normalised first).
    pub fn extract(&self, waveforms: &[f32], batch: usize) -> Result<Features, ModelError> {
        self.extract_with(waveforms, batch, |f| f.to_owned())
    }

    /// Like [`Extractor::extract`], handing `consume` the features borrowed from the host
    /// buffer instead of returning a copy (the `extract_ssl` stage writes them straight into
    /// its shard).
    pub fn extract_with<R>(
        &self,
        waveforms: &[f32],
        batch: usize,
        consume: impl FnOnce(FeaturesRef<'_>) -> R,
    ) -> Result<R, ModelError> {
        let samples = self.check(waveforms.len(), batch)?;
        let input = self.upload(waveforms, Kind::Float, batch, samples);
        self.run(input, batch, consume)
    }

    /// The rows on the device: through a page-locked buffer for CUDA, synchronously (the buffer
    /// is reused by the next batch).
    fn upload<T: tch::kind::Element>(
        &self,
        rows: &[T],
        kind: Kind,
        batch: usize,
        samples: usize,
    ) -> Tensor {
        let shape = [batch as i64, samples as i64];
        if !self.device.is_cuda() {
            return Tensor::from_slice(rows).view(shape);
        }
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let host = staging_buffer(&mut staging.input, &shape, kind, self.device);
        // SAFETY: `host` is a contiguous CPU tensor of exactly `rows.len()` elements of `T`.
        unsafe {
            std::ptr::copy_nonoverlapping(rows.as_ptr(), host.data_ptr() as *mut T, rows.len());
        }
        host.to_device(self.device)
    }

    /// Like [`Extractor::extract`] for 16-bit PCM rows (sent to the device as i16, half the
    /// bytes of f32; the scale is irrelevant after normalisation).
    pub fn extract_i16(&self, waveforms: &[i16], batch: usize) -> Result<Features, ModelError> {
        self.extract_i16_with(waveforms, batch, |f| f.to_owned())
    }

    /// [`Extractor::extract_with`] for 16-bit PCM rows.
    pub fn extract_i16_with<R>(
        &self,
        waveforms: &[i16],
        batch: usize,
        consume: impl FnOnce(FeaturesRef<'_>) -> R,
    ) -> Result<R, ModelError> {
        let samples = self.check(waveforms.len(), batch)?;
        let input = self
            .upload(waveforms, Kind::Int16, batch, samples)
            .to_kind(Kind::Float)
            / 32768.0;
        self.run(input, batch, consume)
    }
}
