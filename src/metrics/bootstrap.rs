//! Bootstrap confidence interval of the (ASVspoof) EER: bona fide and spoof scores are resampled
//! with replacement separately (each class keeps its size), seeded and deterministic whatever the
//! thread count.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};

use super::MetricsError;
use super::eer::eer_sorted;
use super::scores::ScoreSet;

/// How the bootstrap interval is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapOptions {
    /// Number of resamples (≥ 1; 1,000 by default).
    pub resamples: u32,
    /// Seed of the resampling (resample `i` draws from ChaCha8 stream `i` of this seed).
    pub seed: u64,
    /// Confidence level in `(0, 1)`; 0.95 by default.
    pub level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// A confidence interval `[lo, hi]`, written as a two-element JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f64; 2]", into = "[f64; 2]")]
pub struct ConfidenceInterval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl From<[f64; 2]> for ConfidenceInterval {
    fn from([lo, hi]: [f64; 2]) -> Self {
        Self { lo, hi }
    }
}

impl From<ConfidenceInterval> for [f64; 2] {
    fn from(ci: ConfidenceInterval) -> Self {
        [ci.lo, ci.hi]
    }
}

/// Percentile bootstrap interval of the ASVspoof EER: `resamples` times, draw as many bona fide
/// scores as there are (with replacement) and as many spoof scores, compute the EER; the interval
/// is the `(1 − level)/2` and `(1 + level)/2` quantiles of those EERs (Hyndman–Fan type 8, as
/// `statrs` computes them).
///
/// # Errors
/// [`MetricsError::InvalidOption`] for `resamples = 0` or a `level` outside `(0, 1)`.
pub fn bootstrap_eer_ci(
    set: &ScoreSet,
    opts: &BootstrapOptions,
) -> Result<ConfidenceInterval, MetricsError> {
    if opts.resamples == 0 {
        return Err(MetricsError::InvalidOption {
            key: "bootstrap.resamples",
            message: "must be at least 1 (1000 is usual)".into(),
        });
    }
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(MetricsError::InvalidOption {
            key: "bootstrap.level",
            message: format!(
                "must lie strictly between 0 and 1 (e.g. 0.95), got {}",
                opts.level
            ),
        });
    }
    let mut b = set.bonafide().to_vec();
    let mut s = set.spoof().to_vec();
    b.sort_unstable_by(f64::total_cmp);
    s.sort_unstable_by(f64::total_cmp);
    let eers: Vec<f64> = (0..opts.resamples)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            rng.set_stream(u64::from(i));
            let rb = resample_sorted(&b, &mut rng);
            let rs = resample_sorted(&s, &mut rng);
            eer_sorted(&rb, &rs).eer
        })
        .collect();
    let mut data = Data::new(eers);
    let tail = (1.0 - opts.level) / 2.0;
    Ok(ConfidenceInterval {
        lo: data.quantile(tail),
        hi: data.quantile(1.0 - tail),
    })
}

/// Draws `sorted.len()` elements with replacement and returns them sorted, in O(n): count how
/// often each index is drawn, then expand the counts in index order.
fn resample_sorted(sorted: &[f64], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = sorted.len();
    let mut counts = vec![0u32; n];
    for _ in 0..n {
        counts[rng.random_range(0..n)] += 1;
    }
    let mut out = Vec::with_capacity(n);
    for (&v, &c) in sorted.iter().zip(&counts) {
        out.extend(std::iter::repeat_n(v, c as usize));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::eer::eer;

    fn noisy_set() -> ScoreSet {
        // Deterministic overlapping classes.
        let b: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64 / 50.0).collect();
        let s: Vec<f64> = (0..600)
            .map(|i| ((i * 53) % 103) as f64 / 50.0 - 1.0)
            .collect();
        ScoreSet::new(b, s, "t").unwrap()
    }

    #[test]
    fn interval_is_deterministic_and_brackets_the_eer() {
        let set = noisy_set();
        let opts = BootstrapOptions {
            resamples: 300,
            seed: 7,
            level: 0.95,
        };
        let a = bootstrap_eer_ci(&set, &opts).unwrap();
        let b = bootstrap_eer_ci(&set, &opts).unwrap();
        assert_eq!(a, b);
        let e = eer(&set).eer;
        assert!(a.lo < e && e < a.hi, "{a:?} vs {e}");
        assert!(a.hi - a.lo < 0.2, "{a:?}");
        let other = bootstrap_eer_ci(&set, &BootstrapOptions { seed: 8, ..opts }).unwrap();
        assert_ne!(a, other);
        let narrow = bootstrap_eer_ci(&set, &BootstrapOptions { level: 0.5, ..opts }).unwrap();
        assert!(narrow.lo >= a.lo && narrow.hi <= a.hi);
    }

    #[test]
    fn same_result_in_a_one_thread_pool() {
        let set = noisy_set();
        let opts = BootstrapOptions {
            resamples: 64,
            seed: 3,
            level: 0.9,
        };
        let many = bootstrap_eer_ci(&set, &opts).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = pool.install(|| bootstrap_eer_ci(&set, &opts).unwrap());
        assert_eq!(many, one);
    }

    #[test]
    fn separable_set_has_a_zero_interval() {
        let set = ScoreSet::new(vec![5.0, 6.0, 7.0], vec![-1.0, 0.0], "t").unwrap();
        let ci = bootstrap_eer_ci(&set, &BootstrapOptions::default()).unwrap();
        assert_eq!(ci, ConfidenceInterval { lo: 0.0, hi: 0.0 });
        assert_eq!(serde_json::to_string(&ci).unwrap(), "[0.0,0.0]");
    }

    #[test]
    fn bad_options_are_errors() {
        let set = noisy_set();
        let err = bootstrap_eer_ci(
            &set,
            &BootstrapOptions {
                resamples: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("`bootstrap.resamples`"), "{err}");
        for level in [0.0, 1.0, f64::NAN, -0.5] {
            let err = bootstrap_eer_ci(
                &set,
                &BootstrapOptions {
                    level,
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(err.to_string().contains("`bootstrap.level`"), "{err}");
        }
    }

    #[test]
    fn resample_keeps_size_and_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = [1.0, 2.0, 3.0, 4.0];
        let r = resample_sorted(&v, &mut rng);
        assert_eq!(r.len(), 4);
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
        assert!(r.iter().all(|x| v.contains(x)));
    }
}
