//! Corpus leaf: source definitions and their validation, the sorted parallel walk, generated
//! sources, split rules (folders / csv / hash, speaker-disjoint, holdout) and the metadata
//! files (docs/audio.md, docs/architecture.md). Knows nothing about stages, YAML or the cache.

pub mod generate;
pub mod metadata;
pub mod source;
pub mod split;
pub mod walk;

use std::path::PathBuf;

pub use generate::{
    generate_key, generated_name, parse_texts, read_texts, render_command, run_generate,
    run_generate_in,
};
pub use metadata::{
    ManifestRow, MetadataRow, ProbeRow, RejectedRow, Stats, compute_stats, read_manifest,
    read_metadata_csv, read_probes, read_rejected, read_split_csvs, read_stats, write_manifest,
    write_probes, write_rejected, write_split_csvs, write_stats,
};
pub use source::{
    DEFAULT_INCLUDE, Label, Origin, Source, SourceDef, SourceIssue, SplitDef, validate_sources,
};
pub use split::{
    CorpusFile, CorpusSplits, Placement, Split, SplitConfig, assign_splits, split_corpus,
};
pub use walk::{
    FileRecord, Hidden, SourceScan, WalkProblem, WalkReport, dangling_detail, is_hidden_path,
    walk_source, walk_sources,
};

/// Errors of the corpus layer.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be read, parsed or written (the error names the line).
    #[error("CSV file `{path}`: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV error.
        #[source]
        source: csv::Error,
    },
    /// A JSON file does not parse.
    #[error("JSON file `{path}`: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV header lacks a column the configuration names.
    #[error("`{path}` has no column `{column}` (its header has: {}); set the column name in the source's `split.csv` / `speaker`", available.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// Columns the header has.
        available: Vec<String>,
    },
    /// A name that is not a source.
    #[error("{context} names `{name}`, which is not a source")]
    UnknownSource {
        /// The name.
        name: String,
        /// Where it was named.
        context: String,
    },
    /// A value that no shell argument can carry.
    #[error("the {what} `{value}` holds a NUL byte and cannot be passed to a command")]
    Quote {
        /// Which value.
        what: String,
        /// The value, escaped.
        value: String,
    },
    /// A generate command failed.
    #[error("generate command `{cmd}` {status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Generate {
        /// The rendered command.
        cmd: String,
        /// Exit status in words.
        status: String,
        /// End of its standard error.
        stderr: String,
    },
    /// A generate command succeeded without writing its output.
    #[error(
        "generate command `{cmd}` succeeded but wrote nothing to `{out}`; check that it writes to `{{out}}`"
    )]
    GenerateNoOutput {
        /// The rendered command.
        cmd: String,
        /// The expected output.
        out: PathBuf,
    },
}
