//! The `model` layer (docs/architecture.md, docs/model.md): the wav2vec2 family and the AASIST
//! back end in tch with the reference's state-dict keys, model checkpoints (import/export),
//! SSL feature extraction, scoring (`Detector`) and the training loop.
//!
//! libtorch sits behind the `torch` feature. Without it this module still compiles: the plain
//! types (configurations, options, checkpoint metadata, training configuration) are there and
//! every entry point returns [`ModelError::TorchDisabled`].

pub mod aasist;
pub mod checkpoint;
mod error;
mod options;
pub mod wav2vec2;

#[cfg(feature = "torch")]
pub mod layers;

pub use error::ModelError;
pub use options::{
    ChannelPolicy, DeviceChoice, Features, Precision, Preprocessing, RuntimeInfo, SslOutput,
};
