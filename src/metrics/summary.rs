//! `metrics.json`: the evaluation summary of a `scores.csv` (pooled and per-source EER, CI,
//! threshold metrics, counts), its JSON I/O, and [`write_evaluation`] which writes the summary,
//! the plots and the report into one folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MetricsError;
use super::bootstrap::{BootstrapOptions, ConfidenceInterval, bootstrap_eer_ci};
use super::eer::{eer, eer_interp};
use super::plots::{Curve, EpochRecord, plot_det, plot_histograms, plot_roc, plot_training};
use super::report::{ReportPlots, render_html, render_markdown};
use super::roc::auc;
use super::scores::{Label, ScoreRow, ScoreSet};
use super::threshold::Confusion;

/// What the summary is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsOptions {
    /// Decision threshold on logits for accuracy, confusion, precision, recall, F1
    /// (logit ≥ threshold → bona fide). 0 by default, i.e. σ(logit) ≥ 0.5.
    pub threshold: f64,
    /// Bootstrap of the EER confidence interval.
    pub bootstrap: BootstrapOptions,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            threshold: 0.0,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// EER of all bona fide clips against the spoofs of one source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SourceEer {
    /// ASVspoof EER (fraction).
    pub eer: f64,
    /// Threshold (logit) at that EER.
    pub eer_threshold: f64,
    /// Number of spoof clips of this source.
    pub n_spoof: usize,
}

/// Clip counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Bona fide clips.
    pub bonafide: usize,
    /// Spoof clips.
    pub spoof: usize,
    /// Clips per source (bona fide and spoof sources alike).
    pub per_source: BTreeMap<String, usize>,
}

/// The content of `metrics.json` (docs/metrics.md explains every field). Rates are fractions in
/// `[0, 1]`; thresholds are logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Pooled EER, ASVspoof definition (all bona fide vs all spoof): the primary number.
    pub eer: f64,
    /// Logit threshold at `eer`.
    pub eer_threshold: f64,
    /// Pooled EER, interpolated-ROC definition (the reference pipeline's).
    pub eer_interp: f64,
    /// Logit threshold at `eer_interp`.
    pub eer_interp_threshold: f64,
    /// Bootstrap interval `[lo, hi]` of `eer` at `bootstrap.level`.
    pub eer_ci95: ConfidenceInterval,
    /// How `eer_ci95` was drawn.
    pub bootstrap: BootstrapOptions,
    /// Share of correct decisions at `threshold`.
    pub accuracy: f64,
    /// Area under the ROC curve (bona fide positive).
    pub auc: f64,
    /// The logit threshold of `accuracy`, `confusion`, `precision`, `recall`, `f1`.
    pub threshold: f64,
    /// Confusion matrix at `threshold`, bona fide positive.
    pub confusion: Confusion,
    /// `tp / (tp + fp)` at `threshold`.
    pub precision: f64,
    /// `tp / (tp + fn)` at `threshold`.
    pub recall: f64,
    /// F1 at `threshold`.
    pub f1: f64,
    /// EER of all bona fide clips against each spoof source.
    pub per_source: BTreeMap<String, SourceEer>,
    /// Clip counts.
    pub counts: Counts,
    /// Free-form run information added by the caller (model digest, stage key, epoch...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run: BTreeMap<String, serde_json::Value>,
}

/// Spoof rows grouped by source, in source-name order.
fn spoof_sources(rows: &[ScoreRow]) -> BTreeMap<&str, Vec<&ScoreRow>> {
    let mut by_source: BTreeMap<&str, Vec<&ScoreRow>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.label == Label::Spoof) {
        by_source.entry(row.source.as_str()).or_default().push(row);
    }
    by_source
}

/// The score sets of each spoof source against all bona fide rows, in source-name order.
///
/// # Errors
/// [`MetricsError::NoBonafide`] when no row is bona fide; non-finite logits.
pub(crate) fn per_source_sets(rows: &[ScoreRow]) -> Result<Vec<(String, ScoreSet)>, MetricsError> {
    let bona: Vec<&ScoreRow> = rows.iter().filter(|r| r.label == Label::Bonafide).collect();
    spoof_sources(rows)
        .into_iter()
        .map(|(source, spoofs)| {
            let subset = format!("source `{source}` against all bona fide clips");
            let set = ScoreSet::from_rows(bona.iter().copied().chain(spoofs), &subset)?;
            Ok((source.to_owned(), set))
        })
        .collect()
}

/// Per-source EER: for each spoof source, the ASVspoof EER of **all** bona fide rows against the
/// spoof rows of that source (never a single-class subset).
///
/// # Errors
/// [`MetricsError::NoBonafide`] when no row is bona fide; non-finite logits.
pub fn per_source_eer(rows: &[ScoreRow]) -> Result<BTreeMap<String, SourceEer>, MetricsError> {
    Ok(per_source_sets(rows)?
        .into_iter()
        .map(|(source, set)| {
            let e = eer(&set);
            let n_spoof = set.spoof().len();
            (
                source,
                SourceEer {
                    eer: e.eer,
                    eer_threshold: e.threshold,
                    n_spoof,
                },
            )
        })
        .collect())
}

fn counts(rows: &[ScoreRow]) -> Counts {
    let mut per_source = BTreeMap::new();
    for row in rows {
        *per_source.entry(row.source.clone()).or_insert(0) += 1;
    }
    let bonafide = rows.iter().filter(|r| r.label == Label::Bonafide).count();
    Counts {
        bonafide,
        spoof: rows.len() - bonafide,
        per_source,
    }
}

/// Computes the whole summary of scored clips.
///
/// # Errors
/// [`MetricsError::NoBonafide`] / [`MetricsError::NoSpoof`] (also for no rows at all),
/// [`MetricsError::NonFiniteScore`] naming the clip, bad bootstrap options.
pub fn compute_metrics(rows: &[ScoreRow], opts: &MetricsOptions) -> Result<Metrics, MetricsError> {
    if !opts.threshold.is_finite() {
        return Err(MetricsError::InvalidOption {
            key: "threshold",
            message: format!(
                "must be a finite logit (0 means σ ≥ 0.5), got {}",
                opts.threshold
            ),
        });
    }
    let set = ScoreSet::from_rows(rows, "all scored clips")?;
    let primary = eer(&set);
    let interp = eer_interp(&set);
    let ci = bootstrap_eer_ci(&set, &opts.bootstrap)?;
    let confusion = Confusion::at(&set, opts.threshold);
    Ok(Metrics {
        eer: primary.eer,
        eer_threshold: primary.threshold,
        eer_interp: interp.eer,
        eer_interp_threshold: interp.threshold,
        eer_ci95: ci,
        bootstrap: opts.bootstrap,
        accuracy: confusion.accuracy(),
        auc: auc(&set),
        threshold: opts.threshold,
        confusion,
        precision: confusion.precision(),
        recall: confusion.recall(),
        f1: confusion.f1(),
        per_source: per_source_eer(rows)?,
        counts: counts(rows),
        run: BTreeMap::new(),
    })
}

/// Writes `metrics.json` (pretty, keys in declaration order, trailing newline).
///
/// # Errors
/// [`MetricsError::Json`] / [`MetricsError::Io`].
pub fn write_metrics_json(path: &Path, metrics: &Metrics) -> Result<(), MetricsError> {
    let mut text = serde_json::to_string_pretty(metrics).map_err(|source| MetricsError::Json {
        action: "serialise metrics for",
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    fs::write(path, text).map_err(|source| MetricsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `metrics.json`.
///
/// # Errors
/// [`MetricsError::Io`] / [`MetricsError::Json`].
pub fn read_metrics_json(path: &Path) -> Result<Metrics, MetricsError> {
    let text = fs::read_to_string(path).map_err(|source| MetricsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| MetricsError::Json {
        action: "parse",
        path: path.to_path_buf(),
        source,
    })
}

/// What [`write_evaluation`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The summary written to `metrics.json`.
    pub metrics: Metrics,
    /// Every file written, relative to the output folder, sorted.
    pub files: Vec<PathBuf>,
}

/// Computes the summary of `rows` and writes, into `dir` (created if missing):
/// `metrics.json`, `plots/{det,roc,histograms}.{svg,png}`, `plots/training.{svg,png}` when
/// `epochs` is given and not empty, `report.md` and `report.html` (both link the plots
/// relatively). `run` is copied into `metrics.run`. Output bytes depend only on the inputs.
///
/// # Errors
/// Everything [`compute_metrics`] returns, plus I/O and plotting errors naming the file.
pub fn write_evaluation(
    dir: &Path,
    rows: &[ScoreRow],
    opts: &MetricsOptions,
    epochs: Option<&[EpochRecord]>,
    run: BTreeMap<String, serde_json::Value>,
) -> Result<Evaluation, MetricsError> {
    let mut metrics = compute_metrics(rows, opts)?;
    metrics.run = run;
    let plots_dir = dir.join("plots");
    fs::create_dir_all(&plots_dir).map_err(|source| MetricsError::Io {
        action: "create folder",
        path: plots_dir.clone(),
        source,
    })?;
    let pooled = ScoreSet::from_rows(rows, "all scored clips")?;
    let sources = per_source_sets(rows)?;
    let mut curves = vec![Curve {
        name: "all sources",
        set: &pooled,
    }];
    if sources.len() > 1 {
        curves.extend(sources.iter().map(|(name, set)| Curve { name, set }));
    }
    let mut plots = ReportPlots {
        det: Some(plot_det(&curves, &plots_dir.join("det"))?),
        roc: Some(plot_roc(&curves, &plots_dir.join("roc"))?),
        histograms: Some(plot_histograms(
            rows,
            opts.threshold,
            &plots_dir.join("histograms"),
        )?),
        training: None,
    };
    if let Some(epochs) = epochs.filter(|e| !e.is_empty()) {
        plots.training = Some(plot_training(epochs, &plots_dir.join("training"))?);
    }
    let plots = plots.relative_to(dir);
    write_metrics_json(&dir.join("metrics.json"), &metrics)?;
    for (name, text) in [
        (
            "report.md",
            render_markdown(&metrics, &plots, "Evaluation report"),
        ),
        (
            "report.html",
            render_html(&metrics, &plots, "Evaluation report"),
        ),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|source| MetricsError::Io {
            action: "write",
            path,
            source,
        })?;
    }
    let mut files: Vec<PathBuf> = ["metrics.json", "report.md", "report.html"]
        .iter()
        .map(PathBuf::from)
        .chain(plots.all().flat_map(|p| [p.svg.clone(), p.png.clone()]))
        .collect();
    files.sort();
    Ok(Evaluation { metrics, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, source: &str, label: Label, logit: f64) -> ScoreRow {
        ScoreRow {
            path: path.into(),
            source: source.into(),
            label,
            logit,
        }
    }

    fn rows() -> Vec<ScoreRow> {
        vec![
            row("r1", "real", Label::Bonafide, 2.0),
            row("r2", "real", Label::Bonafide, 1.0),
            row("r3", "real2", Label::Bonafide, -0.5),
            row("a1", "tts_a", Label::Spoof, -3.0),
            row("a2", "tts_a", Label::Spoof, -2.0),
            row("b1", "tts_b", Label::Spoof, 1.5),
            row("b2", "tts_b", Label::Spoof, -1.0),
        ]
    }

    #[test]
    fn per_source_uses_all_bonafide() {
        let ps = per_source_eer(&rows()).unwrap();
        assert_eq!(ps.keys().collect::<Vec<_>>(), ["tts_a", "tts_b"]);
        // tts_a is below every bona fide clip: separable.
        assert_eq!(ps["tts_a"].eer, 0.0);
        assert_eq!(ps["tts_a"].n_spoof, 2);
        // tts_b: bona {2, 1, -0.5} vs spoof {1.5, -1}: sorted -1s -.5b 1b 1.5s 2b;
        // (frr, far): (0,1) (0,.5) (1/3,.5) (2/3,.5) (2/3,0) (1,0). |1/3 - 1/2| and
        // |2/3 - 1/2| are equal in exact arithmetic, but in f64 (as in numpy) the second is
        // smaller, so the EER is (2/3 + 1/2) / 2 at the clip scored 1.
        assert!(((2.0f64 / 3.0) - 0.5).abs() < (0.5 - 1.0f64 / 3.0).abs());
        assert!(
            (ps["tts_b"].eer - 7.0 / 12.0).abs() < 1e-15,
            "{:?}",
            ps["tts_b"]
        );
        assert_eq!(ps["tts_b"].eer_threshold, 1.0);
    }

    #[test]
    fn summary_fields_are_consistent() {
        let m = compute_metrics(&rows(), &MetricsOptions::default()).unwrap();
        assert_eq!(m.counts.bonafide, 3);
        assert_eq!(m.counts.spoof, 4);
        assert_eq!(m.counts.per_source["tts_b"], 2);
        assert_eq!(
            m.confusion,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 3,
                fn_: 1
            }
        );
        assert!((m.accuracy - 5.0 / 7.0).abs() < 1e-15);
        assert!(m.eer_ci95.lo <= m.eer_ci95.hi);
        assert!((0.0..=1.0).contains(&m.eer) && (0.0..=1.0).contains(&m.eer_interp));
        let json = serde_json::to_value(&m).unwrap();
        for key in [
            "eer",
            "eer_threshold",
            "eer_interp",
            "eer_ci95",
            "accuracy",
            "auc",
            "threshold",
            "confusion",
            "precision",
            "recall",
            "f1",
            "per_source",
            "counts",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json.get("run").is_none());
        assert_eq!(json["eer_ci95"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn degenerate_rows_are_errors() {
        let opts = MetricsOptions::default();
        assert!(matches!(
            compute_metrics(&[], &opts),
            Err(MetricsError::NoBonafide { .. })
        ));
        let only_bona = &rows()[..3];
        assert!(matches!(
            compute_metrics(only_bona, &opts),
            Err(MetricsError::NoSpoof { .. })
        ));
        let only_spoof = &rows()[3..];
        let err = per_source_eer(only_spoof).unwrap_err();
        assert!(err.to_string().contains("source `tts_a`"), "{err}");
        let mut bad = rows();
        bad[4].logit = f64::NAN;
        let err = compute_metrics(&bad, &opts).unwrap_err();
        assert!(err.to_string().contains("`a2`"), "{err}");
        let err = compute_metrics(
            &rows(),
            &MetricsOptions {
                threshold: f64::NAN,
                ..opts
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("`threshold`"), "{err}");
    }
}
