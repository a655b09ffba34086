//! The single integration-test binary: runs the real `brspeech` CLI in temporary workspaces.

mod common;

mod integration {
    mod cache;
    mod corpus_stages;
    mod crash;
    #[cfg(feature = "torch")]
    mod e2e;
    mod errors;
    mod graph;
    mod locking;
    mod parallel;
    mod pipelines;
    mod run;
    mod slurm;
    mod status;
}
