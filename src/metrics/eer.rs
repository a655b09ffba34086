//! Equal error rate: the ASVspoof definition (primary), the interpolated-ROC definition, and the
//! two ROC-argmin variants found in the reference code (docs/metrics.md, spec §4).

use super::roc::roc_curve;
use super::scores::ScoreSet;

/// An EER and the decision threshold (on the same scale as the scores) where it is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EerPoint {
    /// Equal error rate, a fraction in `[0, 1]`.
    pub eer: f64,
    /// Threshold at the EER operating point.
    pub threshold: f64,
}

/// The empirical DET curve of the ASVspoof evaluation code: every score of both classes sorted
/// ascending with a stable sort (bona fide first among exact ties), and after each position `k`
/// the miss and false-alarm rates of the threshold "accept above the first `k` scores".
#[derive(Debug, Clone, PartialEq)]
pub struct DetCurve {
    /// False rejection rate (bona fide among the `k` lowest scores / bona fide count), rising
    /// from 0 to 1.
    pub frr: Vec<f64>,
    /// False acceptance rate (spoof above the `k` lowest scores / spoof count), falling from 1
    /// to 0.
    pub far: Vec<f64>,
    /// `thresholds[0] = min score − 0.001`, then the sorted scores.
    pub thresholds: Vec<f64>,
}

/// Each class sorted ascending (within a class the order of ties does not matter).
fn sorted_classes(set: &ScoreSet) -> (Vec<f64>, Vec<f64>) {
    let mut b = set.bonafide().to_vec();
    let mut s = set.spoof().to_vec();
    b.sort_unstable_by(f64::total_cmp);
    s.sort_unstable_by(f64::total_cmp);
    (b, s)
}

/// Merges two ascending slices into the stable-sort order of their concatenation (bona fide,
/// then spoof): bona fide first among equal scores. Yields `(score, is_bonafide)`.
fn merge_stable<'a>(b: &'a [f64], s: &'a [f64]) -> impl Iterator<Item = (f64, bool)> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        // `<=` treats -0.0 and +0.0 as equal, as numpy's sort does.
        let take_bona = match (b.get(i), s.get(j)) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_bona {
            i += 1;
            Some((b[i - 1], true))
        } else {
            j += 1;
            Some((s[j - 1], false))
        }
    })
}

/// Runs the ASVspoof sweep over scores in stable ascending order, calling `visit(frr, far,
/// threshold)` for every DET position (the first one before any score).
fn sweep(b: &[f64], s: &[f64], mut visit: impl FnMut(f64, f64, f64)) {
    #[allow(clippy::cast_precision_loss)]
    let (nb, ns) = (b.len() as f64, s.len() as f64);
    let lowest = if b[0] <= s[0] { b[0] } else { s[0] };
    visit(0.0, 1.0, lowest - 0.001);
    let (mut bona_below, mut spoof_below) = (0u64, 0u64);
    for (score, is_bona) in merge_stable(b, s) {
        if is_bona {
            bona_below += 1;
        } else {
            spoof_below += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let (frr, far) = (bona_below as f64 / nb, (ns - spoof_below as f64) / ns);
        visit(frr, far, score);
    }
}

/// The ASVspoof EER over already-sorted classes: `(frr + far) / 2` at the first position where
/// `|frr − far|` is smallest.
pub(crate) fn eer_sorted(b: &[f64], s: &[f64]) -> EerPoint {
    let mut best = (
        f64::INFINITY,
        EerPoint {
            eer: 0.0,
            threshold: 0.0,
        },
    );
    sweep(b, s, |frr, far, threshold| {
        let d = (frr - far).abs();
        if d < best.0 {
            best = (
                d,
                EerPoint {
                    eer: f64::midpoint(frr, far),
                    threshold,
                },
            );
        }
    });
    best.1
}

/// The ASVspoof DET curve of a score set (see [`DetCurve`]).
#[must_use]
pub fn det_curve(set: &ScoreSet) -> DetCurve {
    let (b, s) = sorted_classes(set);
    let n = set.len() + 1;
    let mut det = DetCurve {
        frr: Vec::with_capacity(n),
        far: Vec::with_capacity(n),
        thresholds: Vec::with_capacity(n),
    };
    sweep(&b, &s, |frr, far, t| {
        det.frr.push(frr);
        det.far.push(far);
        det.thresholds.push(t);
    });
    det
}

/// EER, ASVspoof definition (the primary number): over the DET positions of [`det_curve`],
/// the first one with the smallest `|frr − far|`; EER = `(frr + far) / 2` there, and its
/// threshold. Exact on the empirical DET curve, no interpolation.
#[must_use]
pub fn eer(set: &ScoreSet) -> EerPoint {
    let (b, s) = sorted_classes(set);
    eer_sorted(&b, &s)
}

/// Replaces the `+∞` threshold of the ROC's `(0, 0)` point by the highest score.
fn finite_threshold(thresholds: &[f64], i: usize) -> f64 {
    if thresholds[i].is_finite() {
        thresholds[i]
    } else {
        thresholds[i + 1]
    }
}

/// First index of the smallest `|fnr − fpr|` over the ROC points (`fnr = 1 − tpr`).
fn roc_argmin(fpr: &[f64], tpr: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY, 0.0);
    for (i, (&x, &y)) in fpr.iter().zip(tpr).enumerate() {
        let fnr = 1.0 - y;
        let d = (fnr - x).abs();
        if d < best.1 {
            best = (i, d, fnr);
        }
    }
    (best.0, best.2)
}

/// EER, interpolated-ROC definition (the reference pipeline's `calculate_far_frr_eer`): the ROC
/// of [`roc_curve`] with `drop_intermediate`, linearly interpolated, crossed with the line
/// `fpr = 1 − tpr`; EER = the `fpr` of the crossing (the root of `1 − x − interp(fpr→tpr)(x)`
/// on `[0, 1]`, found exactly on the crossing segment). The threshold is the thresholds
/// interpolated linearly at that `fpr` as `scipy.interpolate.interp1d` does; where that is
/// undefined (the crossing at `fpr = 0`, or an interpolation towards the `+∞` threshold of the
/// `(0, 0)` point) it is the threshold of the ROC point that ends the crossing segment.
#[must_use]
pub fn eer_interp(set: &ScoreSet) -> EerPoint {
    let roc = roc_curve(set, true);
    let (x, y, t) = (&roc.fpr, &roc.tpr, &roc.thresholds);
    // h = x + y − 1 is non-decreasing along the curve, −1 at (0, 0) and 1 at (1, 1): the curve
    // crosses the anti-diagonal on the first segment whose end has h ≥ 0.
    let k = (1..x.len())
        .find(|&i| x[i] + y[i] - 1.0 >= 0.0)
        .expect("the last ROC point is (1, 1)");
    let (x0, y0, x1, y1) = (x[k - 1], y[k - 1], x[k], y[k]);
    let frac = ((1.0 - x0 - y0) / ((x1 - x0) + (y1 - y0))).clamp(0.0, 1.0);
    let eer = if x1 > x0 {
        (x0 + frac * (x1 - x0)).clamp(x0, x1)
    } else {
        x0
    };
    // interp1d: first index with fpr ≥ eer, clipped to [1, n − 1], interpolate from the point
    // before it.
    let hi = x.partition_point(|&v| v < eer).clamp(1, x.len() - 1);
    let lo = hi - 1;
    let threshold = if x[hi] > x[lo] && t[lo].is_finite() {
        let slope = (t[hi] - t[lo]) / (x[hi] - x[lo]);
        slope * (eer - x[lo]) + t[lo]
    } else {
        t[k]
    };
    EerPoint { eer, threshold }
}

/// EER as the reference's post-processing utilities compute it: over the ROC points
/// (`drop_intermediate`), the first index with the smallest `|fnr − fpr|`; EER = `fpr` there
/// (not averaged), threshold = that point's threshold (the highest score instead of `+∞` if it
/// is the `(0, 0)` point).
#[must_use]
pub fn eer_argmin_fpr(set: &ScoreSet) -> EerPoint {
    let roc = roc_curve(set, true);
    let (i, _) = roc_argmin(&roc.fpr, &roc.tpr);
    EerPoint {
        eer: roc.fpr[i],
        threshold: finite_threshold(&roc.thresholds, i),
    }
}

/// EER as the BRSpeech training wrapper's analysis script computes it: `(fpr + fnr) / 2` at the
/// first index with the smallest `|fpr − fnr|` over the ROC points (`drop_intermediate`).
#[must_use]
pub fn eer_argmin_mean(set: &ScoreSet) -> EerPoint {
    let roc = roc_curve(set, true);
    let (i, fnr) = roc_argmin(&roc.fpr, &roc.tpr);
    EerPoint {
        eer: f64::midpoint(roc.fpr[i], fnr),
        threshold: finite_threshold(&roc.thresholds, i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(b: &[f64], s: &[f64]) -> ScoreSet {
        ScoreSet::new(b.to_vec(), s.to_vec(), "test").unwrap()
    }

    #[test]
    fn det_curve_follows_the_stable_sort() {
        // Sorted: -1(s) 0(b) 0(s) 2(b) 3(s); the tie at 0 puts bona fide first.
        let d = det_curve(&set(&[2.0, 0.0], &[0.0, 3.0, -1.0]));
        assert_eq!(d.thresholds, vec![-1.0 - 0.001, -1.0, 0.0, 0.0, 2.0, 3.0]);
        assert_eq!(d.frr, vec![0.0, 0.0, 0.5, 0.5, 1.0, 1.0]);
        let third = 1.0 / 3.0;
        assert_eq!(
            d.far,
            vec![1.0, (3.0 - 1.0) / 3.0, (3.0 - 1.0) / 3.0, third, third, 0.0]
        );
    }

    #[test]
    fn asvspoof_eer_on_a_hand_worked_case() {
        // bona {1, 3}, spoof {0, 2}: sorted 0s 1b 2s 3b.
        // positions: (frr, far) = (0,1) (0,.5) (.5,.5) (.5,0) (1,0) → |d| min 0 at k=2.
        let e = eer(&set(&[1.0, 3.0], &[0.0, 2.0]));
        assert_eq!(
            e,
            EerPoint {
                eer: 0.5,
                threshold: 1.0
            }
        );
    }

    #[test]
    fn separable_scores_give_zero_for_every_definition() {
        let s = set(&[2.0, 3.0, 2.5], &[-1.0, 0.0, 1.0, 1.5]);
        for (name, e) in [
            ("asvspoof", eer(&s)),
            ("interp", eer_interp(&s)),
            ("argmin_fpr", eer_argmin_fpr(&s)),
            ("argmin_mean", eer_argmin_mean(&s)),
        ] {
            assert_eq!(e.eer, 0.0, "{name}");
            assert!(e.threshold.is_finite(), "{name}");
            assert!(
                e.threshold > 1.4 && e.threshold <= 2.0,
                "{name}: {}",
                e.threshold
            );
        }
    }

    #[test]
    fn fully_inverted_scores_give_one() {
        let s = set(&[-2.0, -3.0], &[1.0, 2.0, 5.0]);
        assert_eq!(eer(&s).eer, 1.0);
        assert_eq!(eer_interp(&s).eer, 1.0);
    }

    #[test]
    fn all_tied_scores_give_one_half() {
        let s = set(&[0.5; 4], &[0.5; 6]);
        assert_eq!(eer_interp(&s).eer, 0.5);
        assert_eq!(eer_argmin_mean(&s).eer, 0.5);
        assert_eq!(eer_interp(&s).threshold, 0.5);
        // ASVspoof: ties put every bona fide first: (0,1) (.25,1) .. (1,1) (1,5/6) .. (1,0).
        // |frr - far| = 0 at k=4, mean 1.
        assert_eq!(eer(&s).eer, 1.0);
    }

    #[test]
    fn interp_crossing_inside_a_segment() {
        // bona {1}, spoof {0, 2}: ROC (0,0) (.5,0) (.5,1) (1,1) after dropping nothing.
        // crossing with x + y = 1 on the vertical segment at x = 0.5.
        let e = eer_interp(&set(&[1.0], &[0.0, 2.0]));
        assert_eq!(e.eer, 0.5);
        // interp1d at x = 0.5 would interpolate from the +∞ threshold of (0, 0): the threshold
        // is the one of the segment's end point (0.5, 1).
        assert_eq!(e.threshold, 1.0);
        // bona {1, 1}, spoof {1}: ROC (0,0) (1,1): diagonal crossing at 0.5.
        let e = eer_interp(&set(&[1.0, 1.0], &[1.0]));
        assert_eq!(e.eer, 0.5);
        assert_eq!(e.threshold, 1.0);
    }
}
