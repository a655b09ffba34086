//! Band-limited sample-rate conversion with rubato's synchronous FFT resampler, driven as a
//! stream (blocks in, blocks out) so a file never needs to be resampled in one piece.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

/// Frames per FFT chunk requested from rubato (rounded up by rubato to fit the rate pair). A
/// longer block moves the anti-aliasing cutoff closer to the output Nyquist frequency.
const CHUNK_HINT: usize = 1024;

/// Error from the resampler crate, with the rate pair it concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {from_hz} Hz to {to_hz} Hz: {detail}")]
pub struct ResampleError {
    /// Input rate.
    pub from_hz: u32,
    /// Output rate.
    pub to_hz: u32,
    /// What rubato said.
    pub detail: String,
}

/// Streaming mono resampler: [`push`](Self::push) blocks of any length, then
/// [`finish`](Self::finish). The output is exactly what rubato's `process_all` gives for the
/// concatenated input: the startup delay is removed and the output has
/// `ceil(input_len * to_hz / from_hz)` samples.
pub struct StreamResampler {
    inner: Fft<f32>,
    from_hz: u32,
    to_hz: u32,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    to_trim: usize,
    input_total: u64,
    output_total: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// Creates a resampler from `from_hz` to `to_hz` (both > 0).
    ///
    /// # Errors
    /// When rubato refuses the rate pair.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        Self::with_chunk(from_hz, to_hz, CHUNK_HINT)
    }

    /// Like [`new`](Self::new) with another FFT chunk hint (frames): larger chunks put the
    /// anti-aliasing cutoff closer to Nyquist and cost a little more per sample.
    ///
    /// # Errors
    /// When rubato refuses the rate pair.
    pub fn with_chunk(from_hz: u32, to_hz: u32, chunk_hint: usize) -> Result<Self, ResampleError> {
        let err = |detail: String| ResampleError {
            from_hz,
            to_hz,
            detail,
        };
        let inner = Fft::<f32>::new_custom(
            from_hz as usize,
            to_hz as usize,
            chunk_hint,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(|e| err(e.to_string()))?;
        let scratch = vec![0.0; inner.output_frames_max()];
        let to_trim = inner.output_delay();
        Ok(Self {
            inner,
            from_hz,
            to_hz,
            pending: Vec::new(),
            scratch,
            to_trim,
            input_total: 0,
            output_total: 0,
        })
    }

    /// Input rate.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Relative cutoff of the anti-aliasing filter (1.0 = the lower Nyquist frequency).
    pub fn cutoff_hz(&self) -> f64 {
        f64::from(self.inner.cutoff()) * f64::from(self.from_hz) / 2.0
    }

    /// Clears all state so the next push starts a new signal.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.pending.clear();
        self.to_trim = self.inner.output_delay();
        self.input_total = 0;
        self.output_total = 0;
    }

    fn run_chunk(&mut self, input: &[f32], partial: Option<usize>, out: &mut Vec<f32>) {
        let need = self.inner.input_frames_next();
        let adapter_in = SequentialSlice::new(input, 1, need.max(input.len()))
            .expect("input slice holds the frames it declares");
        let frames_out = self.scratch.len();
        let mut adapter_out = SequentialSlice::new_mut(&mut self.scratch, 1, frames_out)
            .expect("scratch holds the frames it declares");
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (_, written) = self
            .inner
            .process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref())
            .expect("buffers are sized from the resampler's own limits");
        let skip = self.to_trim.min(written);
        self.to_trim -= skip;
        out.extend_from_slice(&self.scratch[skip..written]);
        self.output_total += (written - skip) as u64;
    }

    /// Feeds `input` and appends every output sample that is now final to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.input_total += input.len() as u64;
        let need = self.inner.input_frames_next();
        let mut rest = input;
        if !self.pending.is_empty() {
            let take = (need - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < need {
                return;
            }
            let pending = std::mem::take(&mut self.pending);
            self.run_chunk(&pending, None, out);
            self.pending = pending;
            self.pending.clear();
        }
        while rest.len() >= need {
            self.run_chunk(&rest[..need], None, out);
            rest = &rest[need..];
        }
        self.pending.extend_from_slice(rest);
    }

    /// Flushes the tail: appends the remaining output so that the total output length is
    /// `ceil(input_len * to_hz / from_hz)`.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let expected = (self.input_total as f64 * f64::from(self.to_hz) / f64::from(self.from_hz))
            .ceil() as u64;
        let need = self.inner.input_frames_next();
        let mut buf = std::mem::take(&mut self.pending);
        let valid = buf.len();
        buf.resize(need, 0.0);
        let before = out.len();
        if valid > 0 {
            self.run_chunk(&buf, Some(valid), out);
        }
        buf.iter_mut().for_each(|s| *s = 0.0);
        while self.output_total < expected {
            self.run_chunk(&buf, Some(0), out);
        }
        let excess = self.output_total - expected;
        #[allow(clippy::cast_possible_truncation)]
        out.truncate((out.len() - excess as usize).max(before));
        self.output_total = expected;
        buf.clear();
        self.pending = buf;
    }
}

/// Resamples a whole mono signal (convenience over [`StreamResampler`]); returns the input
/// unchanged when the rates are equal.
///
/// # Errors
/// When rubato refuses the rate pair.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, ResampleError> {
    if from_hz == to_hz {
        return Ok(input.to_vec());
    }
    let mut r = StreamResampler::new(from_hz, to_hz)?;
    let mut out = Vec::with_capacity(input.len() * to_hz as usize / from_hz as usize + 16);
    r.push(input, &mut out);
    r.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubato::audioadapter::Adapter;

    use crate::audio::test_signals::{fit_sine, rms, sine};

    /// Amplitude of the best fit at `freq` and the RMS of the residual, away from the edges.
    fn fit(signal: &[f32], rate: u32, freq: f64) -> (f64, f64) {
        fit_sine(signal, rate, freq, 400)
    }

    #[test]
    fn a_sine_keeps_its_frequency_and_amplitude() {
        for rate in [8_000u32, 22_050, 24_000, 44_100, 48_000] {
            for freq in [440.0, 3_000.0, 7_000.0] {
                if freq >= f64::from(rate) / 2.0 * 0.9 {
                    continue;
                }
                let input = sine(rate, freq, 0.5, 1.0);
                let out = resample(&input, rate, 16_000).unwrap();
                assert_eq!(out.len(), 16_000, "{rate} Hz");
                let (amp, res) = fit(&out, 16_000, freq);
                assert!(
                    (amp - 0.5).abs() < 0.005,
                    "{rate} Hz, {freq} Hz: amplitude {amp}"
                );
                assert!(res < 2e-3, "{rate} Hz, {freq} Hz: residual {res}");
            }
        }
    }

    #[test]
    fn nothing_above_8_khz_aliases_into_the_output() {
        // 10 kHz and 12 kHz would fold to 6 kHz and 4 kHz without the anti-aliasing filter.
        for (rate, freq) in [(44_100u32, 10_000.0), (44_100, 12_000.0), (48_000, 9_000.0)] {
            let input = sine(rate, freq, 0.5, 1.0);
            let out = resample(&input, rate, 16_000).unwrap();
            let rms = rms(&out[400..out.len() - 400]);
            // 0.5 amplitude has an RMS of 0.354; demand at least 100 dB of rejection (rubato
            // gives about 140 dB here).
            assert!(
                rms < 0.354e-5,
                "{rate} Hz, {freq} Hz tone leaks with RMS {rms}"
            );
        }
    }

    #[test]
    fn a_tone_below_nyquist_survives_next_to_a_rejected_one() {
        let rate = 44_100;
        let low = sine(rate, 1_000.0, 0.3, 1.0);
        let high = sine(rate, 11_000.0, 0.3, 1.0);
        let mix: Vec<f32> = low.iter().zip(&high).map(|(a, b)| a + b).collect();
        let out = resample(&mix, rate, 16_000).unwrap();
        let (amp, res) = fit(&out, 16_000, 1_000.0);
        assert!((amp - 0.3).abs() < 0.003, "amplitude {amp}");
        assert!(res < 1e-3, "residual {res}");
    }

    #[test]
    fn streaming_matches_rubato_process_all() {
        let rate = 44_100;
        let input = sine(rate, 440.0, 0.5, 50_000.0 / f64::from(rate));
        assert_eq!(input.len(), 50_000);
        let mut reference = Fft::<f32>::new_custom(
            rate as usize,
            16_000,
            CHUNK_HINT,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .unwrap();
        let adapter = SequentialSlice::new(&input, 1, input.len()).unwrap();
        let whole = reference.process_all(&adapter, input.len(), None).unwrap();
        let expected: Vec<f32> = (0..whole.frames())
            .map(|i| whole.read_sample(0, i).unwrap())
            .collect();
        for block in [1usize, 100, 1323, 4096, 50_000] {
            let mut r = StreamResampler::new(rate, 16_000).unwrap();
            let mut out = Vec::new();
            for part in input.chunks(block) {
                r.push(part, &mut out);
            }
            r.finish(&mut out);
            assert_eq!(out.len(), expected.len(), "block {block}");
            assert_eq!(out, expected, "block {block}");
            // A reset resampler gives the same output again.
            r.reset();
            let mut again = Vec::new();
            r.push(&input, &mut again);
            r.finish(&mut again);
            assert_eq!(again, expected);
        }
    }

    #[test]
    fn output_length_is_the_ceiling_of_the_ratio() {
        for (rate, n) in [
            (44_100u32, 1usize),
            (44_100, 441),
            (22_050, 1_000),
            (8_000, 3),
            (48_000, 12_345),
        ] {
            let input = sine(rate, 440.0, 0.5, n as f64 / f64::from(rate));
            assert_eq!(input.len(), n);
            let out = resample(&input, rate, 16_000).unwrap();
            let expected = (n as u64 * 16_000).div_ceil(u64::from(rate));
            assert_eq!(out.len() as u64, expected, "{rate} Hz, {n} samples");
        }
    }
}
