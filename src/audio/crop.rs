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
