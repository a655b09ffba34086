//! Fixed-length clips: the reference's first-N crop with repeat padding, and hop windows over
//! the whole signal.

use serde::{Deserialize, Serialize};

/// Which fixed-length clips a file gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// One clip: the first `samples` samples, repeat-padded when shorter (the reference).
    #[default]
    First,
    /// Windows of `samples` every `hop` samples until the end is covered; the last one is
    /// repeat-padded.
    All,
}

/// One fixed-length clip of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Index of the clip's first sample in the processed (resampled, trimmed) signal.
    pub offset: u64,
    /// Exactly the configured number of samples.
    pub samples: Vec<f32>,
}

/// Tiles `signal` to exactly `n` samples: the first `n` when it is longer, otherwise the signal
/// repeated from its start as many times as needed and cut (`out[i] = signal[i % len]`).
/// An empty signal gives zeros.
pub fn repeat_pad(signal: &[f32], n: usize) -> Vec<f32> {
    if signal.is_empty() {
        return vec![0.0; n];
    }
    if signal.len() >= n {
        return signal[..n].to_vec();
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let take = (n - out.len()).min(signal.len());
        out.extend_from_slice(&signal[..take]);
    }
    out
}

/// Start positions of the windows that cover a signal of `len` samples with windows of `n`
/// samples every `hop` samples: 0, hop, 2·hop, ... up to and including the first window that
/// reaches the end. A signal no longer than `n` gives the single start 0. `hop` must be in
/// `1..=n` for the windows to cover every sample.
pub fn window_starts(len: usize, n: usize, hop: usize) -> Vec<usize> {
    let hop = hop.max(1);
    let mut starts = vec![0];
    let mut start = 0;
    while start + n < len {
        start += hop;
        starts.push(start);
    }
    starts
}

/// Cuts `signal` into clips under `mode` (`hop` is used by [`CropMode::All`] only).
pub fn crop(signal: &[f32], mode: CropMode, n: usize, hop: usize) -> Vec<Clip> {
    match mode {
        CropMode::First => vec![Clip {
            offset: 0,
            samples: repeat_pad(signal, n),
        }],
        CropMode::All => window_starts(signal.len(), n, hop)
            .into_iter()
            .map(|start| {
                let end = (start + n).min(signal.len());
                Clip {
                    offset: start as u64,
                    samples: repeat_pad(&signal[start.min(end)..end], n),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_of_1000_padded_to_64600_ends_with_599() {
        #[allow(clippy::cast_precision_loss)]
        let ramp: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let out = repeat_pad(&ramp, 64_600);
        assert_eq!(out.len(), 64_600);
        assert_eq!(out[64_599], 599.0);
        assert_eq!(out[1000], 0.0);
        assert_eq!(out[999], 999.0);
        for (i, v) in out.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let expected = (i % 1000) as f32;
            assert_eq!(*v, expected, "sample {i}");
        }
    }

    #[test]
    fn longer_signal_keeps_its_first_samples() {
        #[allow(clippy::cast_precision_loss)]
        let long: Vec<f32> = (0..70_000).map(|i| i as f32).collect();
        let clips = crop(&long, CropMode::First, 64_600, 64_600);
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].offset, 0);
        assert_eq!(clips[0].samples, long[..64_600].to_vec());
    }

    #[test]
    fn empty_signal_pads_with_zeros() {
        assert_eq!(repeat_pad(&[], 4), vec![0.0; 4]);
    }

    #[test]
    fn all_windows_cover_every_sample() {
        for len in [1usize, 5, 99, 100, 101, 150, 199, 200, 201, 1234] {
            for (n, hop) in [(100usize, 100usize), (100, 50), (100, 1), (100, 37), (7, 7)] {
                #[allow(clippy::cast_precision_loss)]
                let signal: Vec<f32> = (0..len).map(|i| i as f32).collect();
                let clips = crop(&signal, CropMode::All, n, hop);
                let mut covered = vec![false; len];
                for (k, c) in clips.iter().enumerate() {
                    assert_eq!(c.samples.len(), n);
                    assert_eq!(c.offset as usize, k * hop);
                    let start = c.offset as usize;
                    let end = (start + n).min(len);
                    assert_eq!(&c.samples[..end - start], &signal[start..end]);
                    covered[start..end].iter_mut().for_each(|x| *x = true);
                }
                assert!(covered.iter().all(|c| *c), "len {len} n {n} hop {hop}");
                // No window starts past the end, and only the last one may reach past it.
                assert!(clips.iter().all(|c| (c.offset as usize) < len));
                for c in &clips[..clips.len() - 1] {
                    assert!(c.offset as usize + n < len || len <= n);
                }
            }
        }
    }

    #[test]
    fn last_window_is_repeat_padded_from_its_own_samples() {
        #[allow(clippy::cast_precision_loss)]
        let signal: Vec<f32> = (0..250).map(|i| i as f32).collect();
        let clips = crop(&signal, CropMode::All, 100, 100);
        assert_eq!(clips.len(), 3);
        let last = &clips[2];
        assert_eq!(last.offset, 200);
        assert_eq!(last.samples[..50], signal[200..250]);
        assert_eq!(last.samples[50..], signal[200..250]);
    }
}
