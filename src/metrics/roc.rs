//! ROC curve with scikit-learn's `roc_curve` semantics (bona fide = positive class) and the exact
//! area under it.

use super::scores::{Label, ScoreSet};

/// ROC points as scikit-learn's `roc_curve` returns them: `fpr` (share of spoof scored ≥
/// threshold), `tpr` (share of bona fide scored ≥ threshold) and the thresholds, by decreasing
/// threshold. The first point is `(0, 0)` with threshold `+∞`; the last is `(1, 1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    /// False positive rate: spoof accepted as bona fide.
    pub fpr: Vec<f64>,
    /// True positive rate: bona fide accepted.
    pub tpr: Vec<f64>,
    /// Decision thresholds (score ≥ threshold → bona fide), decreasing; `thresholds[0] = +∞`.
    pub thresholds: Vec<f64>,
}

/// Integer ROC counts: `fps[i]`/`tps[i]` spoof/bona fide scores at or above `thresholds[i]`.
#[derive(Debug, Clone)]
pub(crate) struct RocCounts {
    pub(crate) fps: Vec<u64>,
    pub(crate) tps: Vec<u64>,
    pub(crate) thresholds: Vec<f64>,
}

/// Counts at every distinct score (scikit-learn's `_binary_clf_curve`), without the `(0, 0)`
/// point.
fn distinct_counts(set: &ScoreSet) -> RocCounts {
    let mut items: Vec<(f64, bool)> = set
        .labelled()
        .map(|(label, s)| (s, label == Label::Bonafide))
        .collect();
    // Descending by score; scores are finite (ScoreSet guarantees it).
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = items.len();
    let mut out = RocCounts {
        fps: Vec::new(),
        tps: Vec::new(),
        thresholds: Vec::new(),
    };
    let mut tp = 0u64;
    for i in 0..n {
        if items[i].1 {
            tp += 1;
        }
        // -0.0 and +0.0 are one threshold, as in numpy's `diff != 0`.
        #[allow(clippy::float_cmp)]
        let last_of_group = i + 1 == n || items[i + 1].0 != items[i].0;
        if last_of_group {
            out.fps.push(i as u64 + 1 - tp);
            out.tps.push(tp);
            out.thresholds.push(items[i].0);
        }
    }
    out
}

/// ROC counts with scikit-learn's `drop_intermediate` (drop points collinear with their
/// neighbours, i.e. with zero second difference in both counts) and the `(0, 0, +∞)` point
/// prepended.
pub(crate) fn roc_counts(set: &ScoreSet, drop_intermediate: bool) -> RocCounts {
    let mut c = distinct_counts(set);
    if drop_intermediate && c.fps.len() > 2 {
        let n = c.fps.len();
        let second_diff = |v: &[u64], i: usize| -> bool {
            // v[i-1] - 2 v[i] + v[i+1] != 0, in exact integers.
            v[i - 1] + v[i + 1] != 2 * v[i]
        };
        let keep: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || i == n - 1 || second_diff(&c.fps, i) || second_diff(&c.tps, i))
            .collect();
        c = RocCounts {
            fps: keep.iter().map(|&i| c.fps[i]).collect(),
            tps: keep.iter().map(|&i| c.tps[i]).collect(),
            thresholds: keep.iter().map(|&i| c.thresholds[i]).collect(),
        };
    }
    c.fps.insert(0, 0);
    c.tps.insert(0, 0);
    c.thresholds.insert(0, f64::INFINITY);
    c
}

/// The ROC curve of a score set, with scikit-learn's `roc_curve(y, s, drop_intermediate)`
/// semantics: one point per distinct score (collinear points dropped when
/// `drop_intermediate`), `fpr = fps / n_spoof`, `tpr = tps / n_bonafide`.
#[must_use]
pub fn roc_curve(set: &ScoreSet, drop_intermediate: bool) -> Roc {
    let c = roc_counts(set, drop_intermediate);
    #[allow(clippy::cast_precision_loss)]
    let (ns, nb) = (set.spoof().len() as f64, set.bonafide().len() as f64);
    #[allow(clippy::cast_precision_loss)]
    Roc {
        fpr: c.fps.iter().map(|&f| f as f64 / ns).collect(),
        tpr: c.tps.iter().map(|&t| t as f64 / nb).collect(),
        thresholds: c.thresholds,
    }
}

/// Area under the ROC curve (trapezoids over every distinct threshold, as scikit-learn's
/// `roc_auc_score`; tied bona fide/spoof scores count one half), computed exactly in integers
/// and rounded once. Equals the probability that a random bona fide clip scores above a random
/// spoof clip, ties counting one half.
#[must_use]
pub fn auc(set: &ScoreSet) -> f64 {
    let c = roc_counts(set, false);
    let mut twice_area: u128 = 0;
    for i in 1..c.fps.len() {
        let dx = u128::from(c.fps[i] - c.fps[i - 1]);
        twice_area += dx * u128::from(c.tps[i] + c.tps[i - 1]);
    }
    let denom = 2 * set.bonafide().len() as u128 * set.spoof().len() as u128;
    #[allow(clippy::cast_precision_loss)]
    let auc = twice_area as f64 / denom as f64;
    auc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(b: &[f64], s: &[f64]) -> ScoreSet {
        ScoreSet::new(b.to_vec(), s.to_vec(), "test").unwrap()
    }

    #[test]
    fn roc_points_match_sklearn_on_a_small_example() {
        // sklearn.metrics.roc_curve([1,1,0,0,1,0], [0.9,0.8,0.7,0.6,0.55,0.2]) keeps every
        // point but 0.7 (collinear between 0.8 and 0.6).
        let s = set(&[0.9, 0.8, 0.55], &[0.7, 0.6, 0.2]);
        let roc = roc_curve(&s, true);
        assert_eq!(
            roc.thresholds,
            vec![f64::INFINITY, 0.9, 0.8, 0.6, 0.55, 0.2]
        );
        assert_eq!(roc.fpr, vec![0.0, 0.0, 0.0, 2.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(
            roc.tpr,
            vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]
        );
        let full = roc_curve(&s, false);
        assert_eq!(full.thresholds.len(), 7);
        assert_eq!(
            full.fpr,
            vec![0.0, 0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0]
        );
        assert_eq!(full.thresholds[3], 0.7);
    }

    #[test]
    fn tied_scores_form_one_point() {
        let s = set(&[1.0, 0.0, -0.0], &[0.0, -1.0]);
        let roc = roc_curve(&s, false);
        // thresholds: inf, 1, 0 (three tied scores incl. -0.0), -1
        assert_eq!(roc.thresholds, vec![f64::INFINITY, 1.0, 0.0, -1.0]);
        assert_eq!(roc.tpr, vec![0.0, 1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(roc.fpr, vec![0.0, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn auc_is_the_mann_whitney_statistic() {
        let b = [0.3, 1.2, -0.4, 0.3, 2.0];
        let s = [0.3, -1.0, 0.5, -2.0];
        let mut wins = 0.0;
        for x in b {
            for y in s {
                wins += if x > y {
                    1.0
                } else if x == y {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let expect = wins / (b.len() * s.len()) as f64;
        assert!((auc(&set(&b, &s)) - expect).abs() < 1e-15);
        assert_eq!(auc(&set(&[1.0, 2.0], &[0.0, -3.0])), 1.0);
        assert_eq!(auc(&set(&[-1.0], &[0.0, 3.0])), 0.0);
        assert_eq!(auc(&set(&[0.0], &[0.0])), 0.5);
    }
}
