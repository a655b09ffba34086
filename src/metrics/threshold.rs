//! Decisions at a fixed threshold (logit ≥ threshold → bona fide): confusion matrix, accuracy,
//! precision, recall and F1 with bona fide as the positive class.

use serde::{Deserialize, Serialize};

use super::scores::ScoreSet;

/// Confusion matrix at a threshold, bona fide = positive class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// Bona fide accepted as bona fide.
    pub tp: u64,
    /// Spoof accepted as bona fide (false acceptance).
    pub fp: u64,
    /// Spoof rejected as spoof.
    pub tn: u64,
    /// Bona fide rejected as spoof (false rejection). Written `fn` in JSON.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// Counts the decisions `score ≥ threshold → bona fide` over a score set.
    #[must_use]
    pub fn at(set: &ScoreSet, threshold: f64) -> Self {
        let accepted = |scores: &[f64]| scores.iter().filter(|&&s| s >= threshold).count() as u64;
        let tp = accepted(set.bonafide());
        let fp = accepted(set.spoof());
        Self {
            tp,
            fp,
            tn: set.spoof().len() as u64 - fp,
            fn_: set.bonafide().len() as u64 - tp,
        }
    }

    /// Number of decisions.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Share of correct decisions, `(tp + tn) / total`; 0 for an empty matrix.
    #[must_use]
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// `tp / (tp + fp)`; 0 when nothing is accepted (scikit-learn's `zero_division=0`).
    #[must_use]
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)` (the bona fide acceptance rate); 0 without bona fide.
    #[must_use]
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall, `2 tp / (2 tp + fp + fn)`; 0 when `tp = 0`.
    #[must_use]
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = num as f64 / den as f64;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_counts_logit_at_threshold_as_bonafide() {
        let set = ScoreSet::new(vec![0.0, 1.0, -0.5], vec![-2.0, 0.3, -0.1, -0.0], "t").unwrap();
        let c = Confusion::at(&set, 0.0);
        // bona: 0.0 ≥ 0 yes, 1.0 yes, -0.5 no; spoof: 0.3 yes, -0.0 ≥ 0 yes, others no.
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 2,
                tn: 2,
                fn_: 1
            }
        );
        assert_eq!(c.total(), 7);
        assert!((c.accuracy() - 4.0 / 7.0).abs() < 1e-15);
        assert!((c.precision() - 0.5).abs() < 1e-15);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-15);
        let (p, r) = (c.precision(), c.recall());
        assert!((c.f1() - 2.0 * p * r / (p + r)).abs() < 1e-15);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"tp":2,"fp":2,"tn":2,"fn":1}"#);
    }

    #[test]
    fn nothing_accepted_gives_zero_precision_not_nan() {
        let set = ScoreSet::new(vec![-1.0], vec![-2.0], "t").unwrap();
        let c = Confusion::at(&set, 0.0);
        assert_eq!(c.precision(), 0.0);
        assert_eq!(c.f1(), 0.0);
        assert_eq!(c.accuracy(), 0.5);
    }
}
