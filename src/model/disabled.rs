//! The model layer's entry points in a build without libtorch: the same names and signatures
//! as with the `torch` feature, each returning [`ModelError::TorchDisabled`].

use std::path::Path;

use crate::model::api::{
    DetectorOptions, ExportOptions, ExportReport, ExtractOptions, ImportOptions, ImportReport,
};
use crate::model::checkpoint::{CheckpointConfig, SslDigest, SslSection};
use crate::model::error::ModelError;
use crate::model::options::{
    Features, FeaturesRef, Precision, Preprocessing, RuntimeInfo, SslOutput,
};

/// Without libtorch: reports that it is not built in.
pub fn runtime_info() -> RuntimeInfo {
    RuntimeInfo {
        torch_feature: false,
        libtorch_version: None,
        libtorch_path: None,
        cuda_linked: false,
        cuda_available: false,
        cuda_device_count: 0,
        cuda_devices: Vec::new(),
        cudnn_available: false,
        cudnn_version: None,
        cpu_threads: 0,
    }
}

/// Without libtorch: [`ModelError::TorchDisabled`].
pub fn import_checkpoint(_opts: &ImportOptions) -> Result<ImportReport, ModelError> {
    Err(ModelError::TorchDisabled {
        entry: "model import",
    })
}

/// Without libtorch: [`ModelError::TorchDisabled`].
pub fn export_checkpoint(_opts: &ExportOptions) -> Result<ExportReport, ModelError> {
    Err(ModelError::TorchDisabled {
        entry: "model export",
    })
}

/// Uninhabited: an [`Extractor`] cannot be loaded without libtorch.
#[derive(Debug)]
pub enum Extractor {}

impl Extractor {
    /// Without libtorch: [`ModelError::TorchDisabled`].
    pub fn load(_ssl_dir: &Path, _opts: &ExtractOptions) -> Result<Extractor, ModelError> {
        Err(ModelError::TorchDisabled {
            entry: "extract_ssl",
        })
    }
    /// Never called (no value exists).
    pub fn digest(&self) -> &SslDigest {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn ssl_section(&self) -> SslSection {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn ssl_config_json(&self) -> &serde_json::Value {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn hidden_size(&self) -> usize {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn frames_for(&self, _samples: usize) -> usize {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn device(&self) -> String {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn precision(&self) -> Precision {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn output(&self) -> SslOutput {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn extract(&self, _waveforms: &[f32], _batch: usize) -> Result<Features, ModelError> {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn extract_i16(&self, _waveforms: &[i16], _batch: usize) -> Result<Features, ModelError> {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn extract_with<R>(
        &self,
        _waveforms: &[f32],
        _batch: usize,
        _consume: impl FnOnce(FeaturesRef<'_>) -> R,
    ) -> Result<R, ModelError> {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn extract_i16_with<R>(
        &self,
        _waveforms: &[i16],
        _batch: usize,
        _consume: impl FnOnce(FeaturesRef<'_>) -> R,
    ) -> Result<R, ModelError> {
        match *self {}
    }
}

/// Uninhabited: a [`Detector`] cannot be loaded without libtorch.
#[derive(Debug)]
pub enum Detector {}

impl Detector {
    /// Without libtorch: [`ModelError::TorchDisabled`].
    pub fn load(_model_dir: &Path, _opts: &DetectorOptions) -> Result<Detector, ModelError> {
        Err(ModelError::TorchDisabled { entry: "predict" })
    }
    /// Never called (no value exists).
    pub fn config(&self) -> &CheckpointConfig {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn preprocessing(&self) -> &Preprocessing {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn device(&self) -> String {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn precision(&self) -> Precision {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn can_score_waveforms(&self) -> bool {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn score_waveforms(
        &self,
        _waveforms: &[f32],
        _batch: usize,
    ) -> Result<Vec<f32>, ModelError> {
        match *self {}
    }
    /// Never called (no value exists).
    pub fn score_features(&self, _features: &Features) -> Result<Vec<f32>, ModelError> {
        match *self {}
    }
}
