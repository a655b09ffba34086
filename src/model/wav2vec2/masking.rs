//! SpecAugment-style span masking as wav2vec2 applies it in training (`_compute_mask_indices`):
//! the same span-count rule and sampling scheme, drawn from libtorch's CPU generator (so a
//! seeded run is reproducible; the draws cannot match numpy's).

use tch::{Device, Kind, Tensor};

fn uniform() -> f64 {
    Tensor::rand([], (Kind::Double, Device::Cpu)).double_value(&[])
}

/// Computes a `[batch, length]` boolean mask of spans of `span` positions covering about
/// `prob` of every row, at least `min_masks` spans (overlaps allowed, as upstream).
pub(super) fn compute_mask_indices(
    batch: usize,
    length: usize,
    prob: f64,
    span: usize,
    min_masks: usize,
) -> Vec<bool> {
    let mut mask = vec![false; batch * length];
    if span == 0 || span > length {
        return mask;
    }
    let epsilon = uniform();
    let num_spans = |input_len: usize| -> usize {
        let mut n = (prob * input_len as f64 / span as f64 + epsilon) as usize;
        n = n.max(min_masks);
        if n * span > length {
            n = length / span;
        }
        if input_len + 1 < span + n {
            n = (input_len + 1).saturating_sub(span);
        }
        n
    };
    let max_spans = num_spans(length);
    if max_spans == 0 {
        return mask;
    }
    let starts_range = length - (span - 1);
    for row in 0..batch {
        let n = num_spans(length);
        // Sampling without replacement: the first n entries of a random permutation.
        let perm = Tensor::randperm(starts_range as i64, (Kind::Int64, Device::Cpu));
        let perm: Vec<i64> = Vec::try_from(&perm.narrow(0, 0, n as i64)).unwrap_or_default();
        for start in perm {
            for off in 0..span {
                let pos = (start as usize + off).min(length - 1);
                mask[row * length + pos] = true;
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_at_least_min_spans_of_the_span_length() {
        let _rng = crate::model::rng::seeded(7);
        let (b, t) = (3, 201);
        let mask = compute_mask_indices(b, t, 0.075, 10, 2);
        for row in mask.chunks(t) {
            let masked = row.iter().filter(|m| **m).count();
            // Two spans of 10 at least (they may overlap, so >= 10), at most the expected count.
            assert!((10..=30).contains(&masked), "masked {masked}");
            // Every masked run has length >= 10 unless clipped at the end.
            let mut run = 0;
            for (i, m) in row.iter().enumerate() {
                if *m {
                    run += 1;
                } else {
                    assert!(run == 0 || run >= 10, "run {run} ending at {i}");
                    run = 0;
                }
            }
        }
    }

    #[test]
    fn no_mask_when_span_longer_than_sequence() {
        assert!(compute_mask_indices(2, 5, 0.5, 10, 2).iter().all(|m| !m));
    }
}
