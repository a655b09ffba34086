//! The `model` layer's error type: every failure names the file, key or option involved.

use std::path::PathBuf;

/// Errors of the model layer (loading, checkpoints, inference, training).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The binary was built without libtorch.
    #[error(
        "`{entry}` needs libtorch: rebuild with the `torch` feature (`cargo build --features torch`)"
    )]
    TorchDisabled {
        /// The entry point that was called.
        entry: &'static str,
    },

    /// A file or folder could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done (`read`, `write`, `create`, `rename`...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed or does not have the expected shape.
    #[error("invalid JSON in `{path}`: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A configuration value is not supported or inconsistent.
    #[error("invalid configuration in `{path}`: {message}")]
    Config {
        /// The file (or a description of where the configuration came from).
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// A checkpoint folder lacks a required file.
    #[error("`{path}` is missing; {hint}")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// What the folder should hold.
        hint: String,
    },

    /// A pickle checkpoint (`.bin`, `.pt`, `.pth`, `.ckpt`) was given; it is never unpickled.
    #[error(
        "`{path}` is a pickle file, which brspeech never loads (unpickling runs arbitrary code); convert it to safetensors first: {how}"
    )]
    PickleRefused {
        /// The refused file.
        path: PathBuf,
        /// A command that converts it.
        how: String,
    },

    /// A parameter the model needs is absent from the checkpoint.
    #[error(
        "missing key `{key}` in `{path}` (the model expects it; is this the right checkpoint?)"
    )]
    MissingKey {
        /// The state-dict key.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
    },

    /// The checkpoint holds a tensor the model does not have.
    #[error("unexpected key `{key}` in `{path}` (the model has no such parameter)")]
    UnexpectedKey {
        /// The state-dict key.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
    },

    /// A tensor has another shape than the model's parameter.
    #[error("key `{key}` in `{path}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The state-dict key.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
        /// Shape of the model's parameter.
        expected: Vec<i64>,
        /// Shape found in the file.
        found: Vec<i64>,
    },

    /// A back-end-only checkpoint was paired with another SSL checkpoint than the one it was
    /// trained on.
    #[error(
        "SSL checkpoint `{path}` has digest {found}, but the model was trained on features of {expected}; pass the SSL folder it names"
    )]
    SslDigestMismatch {
        /// The SSL folder that was given.
        path: PathBuf,
        /// Digest recorded in the model checkpoint.
        expected: String,
        /// Digest of the given folder.
        found: String,
    },

    /// A back-end-only checkpoint needs its SSL folder to score waveforms.
    #[error(
        "model `{path}` holds only the AASIST back end (trained on frozen SSL features {digest}); pass the SSL checkpoint folder to score audio"
    )]
    SslRequired {
        /// The model checkpoint folder.
        path: PathBuf,
        /// The digest of the SSL checkpoint it expects.
        digest: String,
    },

    /// Inputs have the wrong size or shape.
    #[error("bad input for `{what}`: {message}")]
    Input {
        /// The entry point or tensor.
        what: &'static str,
        /// What is wrong.
        message: String,
    },

    /// The requested device is not usable.
    #[error("device `{device}` is not available: {reason}")]
    Device {
        /// The requested device.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The GPU ran out of memory.
    #[error(
        "out of GPU memory in `{stage}` at batch size {batch_size}: lower `{config_key}` (or use a smaller `dtype`); checkpoints already written are kept"
    )]
    OutOfMemory {
        /// What was running (`extract_ssl`, `train_aasist`, ...).
        stage: String,
        /// The batch size in use.
        batch_size: usize,
        /// The configuration key that sets the batch size.
        config_key: String,
    },

    /// A training data set failed to deliver an item.
    #[error("training data item {index}: {message}")]
    Data {
        /// Item index in the data set.
        index: usize,
        /// What went wrong.
        message: String,
    },

    /// A training checkpoint (resume state) is unusable.
    #[error("cannot resume from `{path}`: {message}")]
    Resume {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// An error reported by libtorch.
    #[cfg(feature = "torch")]
    #[error("libtorch error while {context}: {}", first_line(&.source.to_string()))]
    Torch {
        /// What was being done.
        context: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },

    /// libtorch failed inside an operation (its message, without a backtrace).
    #[error("libtorch failed while {context}: {message}")]
    TorchPanic {
        /// What was being done.
        context: String,
        /// The first line of libtorch's message.
        message: String,
    },
}

/// The first non-empty line of a libtorch message (its C++ backtrace follows).
#[cfg(feature = "torch")]
pub(crate) fn first_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown failure")
        .to_string()
}

impl ModelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ModelError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// True for errors that come from the user's configuration or files (as opposed to the
    /// environment or a bug); lets the caller pick an exit code.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ModelError::Json { .. }
                | ModelError::Config { .. }
                | ModelError::MissingFile { .. }
                | ModelError::PickleRefused { .. }
                | ModelError::MissingKey { .. }
                | ModelError::UnexpectedKey { .. }
                | ModelError::ShapeMismatch { .. }
                | ModelError::SslDigestMismatch { .. }
                | ModelError::SslRequired { .. }
                | ModelError::Input { .. }
        )
    }
}

#[cfg(feature = "torch")]
pub(crate) trait TorchContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError>;
}

#[cfg(feature = "torch")]
impl<T> TorchContext<T> for Result<T, tch::TchError> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Torch {
            context: context(),
            source,
        })
    }
}
