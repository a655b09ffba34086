//! `metrics` layer: EER (ASVspoof and interpolated ROC definitions), ROC/DET/AUC, threshold
//! metrics, bootstrap CI, per-source EER, `scores.csv` and `metrics.json` I/O, plots (SVG + PNG)
//! and the evaluation report (docs/architecture.md, docs/metrics.md).
//!
//! Scores are bona fide logits (label 1 = bona fide is the positive class). Nothing here knows
//! about stages, YAML or torch: the `evaluate` stage and the training loop call these functions.

pub mod bootstrap;
pub mod eer;
pub mod plots;
pub mod report;
pub mod roc;
pub mod scores;
pub mod summary;
pub mod threshold;

use std::path::PathBuf;

pub use bootstrap::{BootstrapOptions, ConfidenceInterval, bootstrap_eer_ci};
pub use eer::{DetCurve, EerPoint, det_curve, eer, eer_argmin_fpr, eer_argmin_mean, eer_interp};
pub use plots::{
    Curve, EpochRecord, PlotFiles, plot_det, plot_histograms, plot_roc, plot_training, probit,
};
pub use report::{ReportPlots, render_html, render_markdown};
pub use roc::{Roc, auc, roc_curve};
pub use scores::{
    Label, ScoreRow, ScoreSet, read_scores, read_scores_csv, write_scores, write_scores_csv,
};
pub use summary::{
    Counts, Evaluation, Metrics, MetricsOptions, SourceEer, compute_metrics, per_source_eer,
    read_metrics_json, write_evaluation, write_metrics_json,
};
pub use threshold::Confusion;

/// Everything that can go wrong in the metrics layer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The score set has no bona fide scores, so no error rate on bona fide can be computed.
    #[error(
        "no bona fide scores in {subset}: EER, ROC and AUC need both classes; check the labels and the split of the scored clips"
    )]
    NoBonafide {
        /// Which set of scores (`all scored clips`, ``source `xtts` ``, ...).
        subset: String,
    },
    /// The score set has no spoof scores.
    #[error(
        "no spoof scores in {subset}: EER, ROC and AUC need both classes; check the labels and the split of the scored clips"
    )]
    NoSpoof {
        /// Which set of scores.
        subset: String,
    },
    /// A score is NaN or infinite.
    #[error(
        "score of {item} in {subset} is {value}: every score must be a finite logit; check the model output for this clip"
    )]
    NonFiniteScore {
        /// Which set of scores.
        subset: String,
        /// The clip's path, or its index when there is no path.
        item: String,
        /// The offending value.
        value: f64,
    },
    /// An option is out of range.
    #[error("invalid metrics option `{key}`: {message}")]
    InvalidOption {
        /// The option's name (`bootstrap.resamples`, ...).
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A `scores.csv` could not be read or parsed.
    #[error("cannot read scores from `{path}`: {source}")]
    ReadScores {
        /// The file (or `<reader>`).
        path: PathBuf,
        /// The CSV error, with its line.
        #[source]
        source: csv::Error,
    },
    /// A `scores.csv` could not be written.
    #[error("cannot write scores to `{path}`: {source}")]
    WriteScores {
        /// The file (or `<writer>`).
        path: PathBuf,
        /// The CSV error.
        #[source]
        source: csv::Error,
    },
    /// A JSON file (`metrics.json`) could not be read, parsed or written.
    #[error("cannot {action} `{path}`: {source}")]
    Json {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// A file or folder could not be created, read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was attempted (`create folder`, `write`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A plot could not be drawn or saved.
    #[error("cannot draw plot `{path}`: {message}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// The plotting backend's message.
        message: String,
    },
}
