//! The `model` layer (docs/architecture.md, docs/model.md): the wav2vec2 family and the AASIST
//! back end in tch with the reference's state-dict keys, model checkpoints (import/export),
//! SSL feature extraction, scoring ([`Detector`]) and the training loop.
//!
//! libtorch sits behind the `torch` feature. Without it this module still compiles: the plain
//! types (configurations, options, checkpoint metadata) are there and every entry point returns
//! [`ModelError::TorchDisabled`].

pub mod aasist;
mod api;
pub mod checkpoint;
mod error;
mod options;
pub mod train;
pub mod wav2vec2;

pub use api::{
    DetectorOptions, ExportOptions, ExportReport, ExtractOptions, ImportOptions, ImportReport,
    OomHint,
};
pub use checkpoint::{CheckpointConfig, SslDigest, SslSection, copy_checkpoint, ssl_digest};
pub use error::ModelError;
pub use options::{
    ChannelPolicy, DeviceChoice, Features, FeaturesRef, Precision, Preprocessing, RuntimeInfo,
    SslOutput,
};

#[cfg(feature = "torch")]
mod convert;
#[cfg(feature = "torch")]
mod detector;
#[cfg(feature = "torch")]
mod extract;
#[cfg(feature = "torch")]
pub mod full;
#[cfg(feature = "torch")]
pub mod layers;
#[cfg(feature = "torch")]
pub mod rng;
#[cfg(feature = "torch")]
pub mod runtime;

#[cfg(feature = "torch")]
pub use convert::{export_checkpoint, import_checkpoint};
#[cfg(feature = "torch")]
pub use detector::Detector;
#[cfg(feature = "torch")]
pub use extract::Extractor;
#[cfg(feature = "torch")]
pub use runtime::runtime_info;

#[cfg(not(feature = "torch"))]
mod disabled;
#[cfg(not(feature = "torch"))]
pub use disabled::{Detector, Extractor, export_checkpoint, import_checkpoint, runtime_info};
