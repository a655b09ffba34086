//! Top-level error type and the stable exit codes (docs/exit-codes.md). Each error maps to
//! its exit code in one place, [`Error::exit_code`].

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::exec::ExecError;
use crate::model::ModelError;
use crate::spec::{InvalidPipeline, SpecError};

/// Success.
pub const OK: u8 = 0;
/// A stage failed (its name, exit status and log path were printed).
pub const STAGE_FAILED: u8 = 1;
/// Command-line usage error (unknown flag, unknown stage name, missing pipeline file).
pub const USAGE: u8 = 2;
/// Invalid pipeline or config file (all problems were printed with `file:line:column`).
pub const INVALID: u8 = 3;
/// The environment is missing something: a dep or input, disk space, GPUs, libtorch.
pub const ENVIRONMENT: u8 = 4;
/// The cache is locked by another run, or corrupt entries were found.
pub const CACHE: u8 = 5;
/// A bug in brspeech.
pub const INTERNAL: u8 = 70;
/// Interrupted (Ctrl-C / SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Who should act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The user: fix the command line or the pipeline.
    User,
    /// The machine: free space, provide inputs, wait for the lock.
    Environment,
    /// brspeech itself.
    Internal,
}

/// Everything `brspeech` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file cannot be read or is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The engine failed before or outside a stage.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The cache failed (cache subcommands).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A model command failed (`model import|export`, `predict`).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A command-line problem clap cannot see.
    #[error("{message}")]
    Usage {
        /// What is wrong and what to do.
        message: String,
    },
    /// Writing an output file failed.
    #[error("cannot write `{}`", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Stages failed (already reported).
    #[error("{count} stage(s) failed")]
    StagesFailed {
        /// How many.
        count: usize,
    },
    /// The run was interrupted.
    #[error("interrupted")]
    Interrupted,
    /// `cache verify` found damaged entries (moved aside; the next run recomputes them).
    #[error("{entries} corrupt cache entr{} and {objects} corrupt object(s) found and removed; the next run recomputes them", if *entries == 1 { "y" } else { "ies" })]
    CorruptCache {
        /// Damaged entries.
        entries: usize,
        /// Damaged objects.
        objects: usize,
    },
}

impl From<Box<InvalidPipeline>> for Error {
    fn from(e: Box<InvalidPipeline>) -> Self {
        Error::Spec(SpecError::Invalid(e))
    }
}

impl Error {
    /// The process exit code (docs/exit-codes.md).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(SpecError::NotFound { .. }) | Error::Usage { .. } => USAGE,
            Error::Spec(SpecError::Invalid(_)) => INVALID,
            Error::Spec(SpecError::Read { .. }) | Error::Output { .. } => ENVIRONMENT,
            Error::Exec(e) => match e {
                ExecError::Plan(_) => USAGE,
                ExecError::Kind { .. } => INVALID,
                ExecError::Cache(c) => cache_code(c),
                ExecError::LockFile { .. } => CACHE,
                ExecError::Slurm(s) if s.is_busy() => CACHE,
                e if e.is_environment() => ENVIRONMENT,
                ExecError::Stage { .. } => STAGE_FAILED,
                _ => INTERNAL,
            },
            Error::Cache(c) => cache_code(c),
            Error::Model(e) => model_code(e),
            Error::StagesFailed { .. } => STAGE_FAILED,
            Error::Interrupted => INTERRUPTED,
            Error::CorruptCache { .. } => CACHE,
        }
    }

    /// Who should act on it.
    #[must_use]
    pub fn tier(&self) -> Tier {
        match self.exit_code() {
            USAGE | INVALID | STAGE_FAILED => Tier::User,
            INTERNAL => Tier::Internal,
            _ => Tier::Environment,
        }
    }
}

/// Unusable inputs named on the command line (checkpoints, pickle files, missing keys) are
/// usage errors; the machine (devices, memory, files, libtorch) is the environment; anything
/// else is a bug.
fn model_code(e: &ModelError) -> u8 {
    match e {
        e if e.is_user_error() => USAGE,
        ModelError::TorchDisabled { .. }
        | ModelError::Io { .. }
        | ModelError::Device { .. }
        | ModelError::OutOfMemory { .. } => ENVIRONMENT,
        _ => INTERNAL,
    }
}

fn cache_code(c: &CacheError) -> u8 {
    match c {
        CacheError::Locked { .. } | CacheError::Corrupt { .. } | CacheError::Format { .. } => CACHE,
        CacheError::DiskFull { .. } | CacheError::Read { .. } | CacheError::Write { .. } => {
            ENVIRONMENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let locked = Error::Cache(CacheError::Locked {
            cache: "c".into(),
            holder: "pid 1".into(),
        });
        assert_eq!(locked.exit_code(), CACHE);
        assert_eq!(
            Error::Cache(CacheError::DiskFull { path: "x".into() }).exit_code(),
            ENVIRONMENT
        );
        assert_eq!(Error::Interrupted.exit_code(), 130);
        assert_eq!(Error::StagesFailed { count: 1 }.exit_code(), 1);
        assert_eq!(
            Error::Spec(SpecError::NotFound { path: "p".into() }).exit_code(),
            USAGE
        );
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/exit-codes.md"))
                .unwrap();
        for (code, name) in [
            (OK, "OK"),
            (STAGE_FAILED, "STAGE_FAILED"),
            (USAGE, "USAGE"),
            (INVALID, "INVALID"),
            (ENVIRONMENT, "ENVIRONMENT"),
            (CACHE, "CACHE"),
            (INTERNAL, "INTERNAL"),
            (INTERRUPTED, "INTERRUPTED"),
        ] {
            assert!(
                docs.contains(&format!("| {code} | `{name}` |")),
                "docs/exit-codes.md lacks {code} {name}"
            );
        }
    }
}
