//! The `brspeech` binary: a thin wrapper over [`brspeech::run`].

fn main() -> std::process::ExitCode {
    brspeech::run(std::env::args_os())
}
