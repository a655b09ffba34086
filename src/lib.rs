//! brspeech: a declarative, content-addressed workflow runner for training and evaluating
//! audio deepfake detectors. See `docs/architecture.md` for the layers and what each owns.

pub mod audio;
pub mod cache;
pub mod cli;
pub mod corpus;
pub mod error;
pub mod exec;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod report;
pub mod shards;
pub mod spec;
pub mod stages;

/// Runs the command line and maps the outcome to a process exit code (`docs/exit-codes.md`).
pub fn run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    cli::main(args)
}
