//! Property tests of the metrics: ranges, invariance under strictly monotone score transforms,
//! separable scores, class swap symmetry, AUC as the Mann–Whitney statistic, CSV round trip.

use brspeech::metrics::{
    BootstrapOptions, Confusion, Label, ScoreRow, ScoreSet, auc, bootstrap_eer_ci, det_curve, eer,
    eer_argmin_fpr, eer_argmin_mean, eer_interp, read_scores, write_scores,
};
use proptest::prelude::*;

/// Integer-valued scores (many exact ties) scaled to look like logits.
fn scores(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-40i32..40, 1..max_len)
        .prop_map(|v| v.into_iter().map(|x| f64::from(x) / 4.0).collect())
}

fn score_set(max_len: usize) -> impl Strategy<Value = ScoreSet> {
    (scores(max_len), scores(max_len))
        .prop_map(|(b, s)| ScoreSet::new(b, s, "proptest").expect("finite, non-empty"))
}

/// Strictly increasing maps that are exact (or keep distinct inputs distinct) on the generated
/// grid, so they neither create nor remove ties.
type Transform = (&'static str, fn(f64) -> f64);

fn transforms() -> Vec<Transform> {
    vec![
        ("x^3 + 7x", |x| x * x * x + 7.0 * x),
        ("exp(x)", f64::exp),
        ("16x - 3", |x| 16.0 * x - 3.0),
        ("sigmoid", |x| 1.0 / (1.0 + (-x).exp())),
    ]
}

fn all_eers(set: &ScoreSet) -> [f64; 4] {
    [
        eer(set).eer,
        eer_interp(set).eer,
        eer_argmin_fpr(set).eer,
        eer_argmin_mean(set).eer,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_rate_lies_in_zero_one(set in score_set(80)) {
        for e in all_eers(&set) {
            prop_assert!((0.0..=1.0).contains(&e), "{e}");
        }
        let a = auc(&set);
        prop_assert!((0.0..=1.0).contains(&a));
        let c = Confusion::at(&set, 0.0);
        prop_assert_eq!(c.total() as usize, set.len());
        for v in [c.accuracy(), c.precision(), c.recall(), c.f1()] {
            prop_assert!((0.0..=1.0).contains(&v));
        }
        prop_assert!(eer(&set).threshold.is_finite() && eer_interp(&set).threshold.is_finite());
    }

    #[test]
    fn strictly_monotone_transforms_change_no_rate(set in score_set(80)) {
        let base = all_eers(&set);
        let base_auc = auc(&set);
        let base_thr = eer(&set).threshold;
        for (name, f) in transforms() {
            let t = set.map(f, name).unwrap();
            prop_assert_eq!(all_eers(&t), base, "{}", name);
            prop_assert_eq!(auc(&t), base_auc, "{}", name);
            // The ASVspoof threshold is a score (or min − 0.001 before every score): it moves
            // with the scores.
            let lowest = set.bonafide().iter().chain(set.spoof()).copied().fold(f64::INFINITY, f64::min);
            if base_thr >= lowest {
                prop_assert_eq!(eer(&t).threshold, f(base_thr), "{}", name);
            }
        }
    }

    #[test]
    fn separable_scores_give_zero(b in scores(60), s in scores(60), gap in 1u32..50) {
        // Shift bona fide above every spoof score.
        let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let low = b.iter().copied().fold(f64::INFINITY, f64::min);
        let shift = top - low + f64::from(gap) / 8.0;
        let set = ScoreSet::new(b.iter().map(|x| x + shift).collect(), s, "sep").unwrap();
        prop_assert_eq!(all_eers(&set), [0.0; 4]);
        prop_assert_eq!(auc(&set), 1.0);
        // Any threshold between the classes classifies perfectly at the EER threshold.
        let thr = eer(&set).threshold;
        prop_assert!(set.spoof().iter().all(|&x| x <= thr));
        prop_assert!(set.bonafide().iter().all(|&x| x > thr));
        let ci = bootstrap_eer_ci(&set, &BootstrapOptions { resamples: 20, seed: 1, level: 0.95 }).unwrap();
        prop_assert_eq!((ci.lo, ci.hi), (0.0, 0.0));
    }

    #[test]
    fn swapping_classes_and_negating_scores_is_symmetric(set in score_set(80)) {
        let sw = set.swapped();
        // The ASVspoof DET of the mirrored problem is the original one read backwards with the
        // two error rates exchanged, exactly.
        let d = det_curve(&set);
        let m = det_curve(&sw);
        let n = d.frr.len();
        for k in 0..n {
            prop_assert_eq!(m.frr[k], d.far[n - 1 - k]);
            prop_assert_eq!(m.far[k], d.frr[n - 1 - k]);
        }
        // So its EER is (frr + far) / 2 at one of the original's minimal-|frr − far| positions.
        let min = d.frr.iter().zip(&d.far).map(|(a, b)| (a - b).abs()).fold(f64::INFINITY, f64::min);
        let candidates: Vec<f64> = d.frr.iter().zip(&d.far)
            .filter(|(a, b)| (*a - *b).abs() == min)
            .map(|(a, b)| f64::midpoint(*a, *b))
            .collect();
        prop_assert!(candidates.contains(&eer(&sw).eer), "{} not in {:?}", eer(&sw).eer, candidates);
        prop_assert!(candidates.contains(&eer(&set).eer));
        // The interpolated ROC is reflected about the anti-diagonal: same crossing.
        prop_assert!((eer_interp(&sw).eer - eer_interp(&set).eer).abs() < 1e-12);
        prop_assert_eq!(auc(&sw), auc(&set));
    }

    #[test]
    fn auc_is_the_mann_whitney_probability(set in score_set(50)) {
        let mut wins = 0.0;
        for &b in set.bonafide() {
            for &s in set.spoof() {
                wins += if b > s { 1.0 } else if b == s { 0.5 } else { 0.0 };
            }
        }
        let want = wins / (set.bonafide().len() * set.spoof().len()) as f64;
        prop_assert!((auc(&set) - want).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_interval_is_ordered_and_reproducible(set in score_set(40), seed in any::<u64>()) {
        let opts = BootstrapOptions { resamples: 25, seed, level: 0.9 };
        let a = bootstrap_eer_ci(&set, &opts).unwrap();
        prop_assert!(0.0 <= a.lo && a.lo <= a.hi && a.hi <= 1.0);
        prop_assert_eq!(a, bootstrap_eer_ci(&set, &opts).unwrap());
    }

    #[test]
    fn scores_csv_round_trips(
        rows in prop::collection::vec(
            (".*", "[a-z_]{1,8}", any::<bool>(), any::<f64>().prop_filter("finite", |x| x.is_finite())),
            0..20,
        )
    ) {
        let rows: Vec<ScoreRow> = rows
            .into_iter()
            .map(|(path, source, bona, logit)| ScoreRow {
                path,
                source,
                label: if bona { Label::Bonafide } else { Label::Spoof },
                logit,
            })
            .collect();
        let mut buf = Vec::new();
        write_scores(&mut buf, &rows).unwrap();
        let back = read_scores(buf.as_slice()).unwrap();
        prop_assert_eq!(back.len(), rows.len());
        for (a, b) in back.iter().zip(&rows) {
            prop_assert_eq!(&a.path, &b.path);
            prop_assert_eq!(&a.source, &b.source);
            prop_assert_eq!(a.label, b.label);
            prop_assert_eq!(a.logit.to_bits(), b.logit.to_bits());
        }
    }
}
