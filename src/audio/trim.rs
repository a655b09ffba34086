//! Silence removal with the semantics of the reference's `sox silence 1 0.2 1% -1 0.2 1%`:
//! the same level detector (moving RMS over 20 ms) and the same state machine, run on `f32`
//! samples as a stream.

use serde::{Deserialize, Serialize};

/// Settings of the silence trimmer (and of the all-silent check, which uses `threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrimParams {
    /// Level, as a fraction of full scale, at and above which audio counts as sound (0.01 = 1 %).
    pub threshold: f32,
    /// Seconds of continuous sound needed before audio is kept (again), 0.2 in the reference.
    pub above_s: f64,
    /// A stretch of at least this many seconds below the threshold is removed, 0.2 in the
    /// reference.
    pub below_s: f64,
    /// Length of the moving RMS window in seconds (sox uses 1/50 s).
    pub window_s: f64,
}

impl Default for TrimParams {
    fn default() -> Self {
        Self {
            threshold: 0.01,
            above_s: 0.2,
            below_s: 0.2,
            window_s: 0.02,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Dropping audio until `above` samples in a row reach the threshold.
    Trim,
    /// Copying audio; a quiet stretch is held back until it proves short or long enough.
    Copy,
}

/// Streaming silence trimmer for a mono signal at a fixed rate.
///
/// * While trimming (at the start, and again after every removed silence) samples whose level
///   reaches the threshold are held back; once `above_s` of them follow each other they are
///   emitted and copying starts. A sample below the threshold throws the held-back run away.
/// * While copying, samples below the threshold are held back; if the quiet run reaches
///   `below_s` it is discarded and trimming starts again (with a cleared level window);
///   a sample at or above the threshold first releases the held-back run.
/// * At the end, a held-back quiet run shorter than `below_s` is kept, a held-back loud run
///   shorter than `above_s` is dropped.
///
/// The level of a sample is the RMS of the last `window_s` seconds of input including it.
#[derive(Debug, Clone)]
pub struct SilenceTrimmer {
    /// Threshold on the sum of squares over the window (threshold² × window length).
    limit: f64,
    start_len: usize,
    stop_len: usize,
    window: Vec<f64>,
    pos: usize,
    sum: f64,
    mode: Mode,
    holdoff: Vec<f32>,
}

fn seconds_to_samples(seconds: f64, rate: u32) -> usize {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (seconds * f64::from(rate)).round() as usize;
    n
}

impl SilenceTrimmer {
    /// A trimmer for a signal at `rate` Hz.
    pub fn new(params: &TrimParams, rate: u32) -> Self {
        let window_len = seconds_to_samples(params.window_s, rate).max(1);
        let threshold = f64::from(params.threshold);
        #[allow(clippy::cast_precision_loss)]
        let limit = threshold * threshold * window_len as f64;
        Self {
            limit,
            start_len: seconds_to_samples(params.above_s, rate).max(1),
            stop_len: seconds_to_samples(params.below_s, rate).max(1),
            window: vec![0.0; window_len],
            pos: 0,
            sum: 0.0,
            mode: Mode::Trim,
            holdoff: Vec::new(),
        }
    }

    /// Clears all state (the next sample starts a new signal).
    pub fn reset(&mut self) {
        self.clear_window();
        self.mode = Mode::Trim;
        self.holdoff.clear();
    }

    fn clear_window(&mut self) {
        self.window.iter_mut().for_each(|w| *w = 0.0);
        self.pos = 0;
        self.sum = 0.0;
    }

    /// Feeds samples; appends every sample known to be kept to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        // Work on locals so the running sum and position stay in registers.
        let Self {
            limit,
            start_len,
            stop_len,
            window,
            pos,
            sum,
            mode,
            holdoff,
        } = self;
        let (limit, start_len, stop_len) = (*limit, *start_len, *stop_len);
        let window = window.as_mut_slice();
        let (mut p, mut total, mut m) = (*pos, *sum, *mode);
        let mut i = 0;
        while i < input.len() {
            if m == Mode::Copy && holdoff.is_empty() {
                // Fast path: copy a run of loud samples in one go.
                let start = i;
                let mut quiet = false;
                while i < input.len() {
                    let sq = f64::from(input[i]) * f64::from(input[i]);
                    i += 1;
                    if !step(window, limit, sq, &mut p, &mut total) {
                        quiet = true;
                        break;
                    }
                }
                if quiet {
                    out.extend_from_slice(&input[start..i - 1]);
                    holdoff.push(input[i - 1]);
                    if holdoff.len() >= stop_len {
                        holdoff.clear();
                        window.fill(0.0);
                        (p, total, m) = (0, 0.0, Mode::Trim);
                    }
                } else {
                    out.extend_from_slice(&input[start..i]);
                }
                continue;
            }
            let x = input[i];
            i += 1;
            let loud = step(
                window,
                limit,
                f64::from(x) * f64::from(x),
                &mut p,
                &mut total,
            );
            match m {
                Mode::Trim => {
                    if loud {
                        holdoff.push(x);
                        if holdoff.len() >= start_len {
                            out.append(holdoff);
                            m = Mode::Copy;
                        }
                    } else {
                        holdoff.clear();
                    }
                }
                Mode::Copy => {
                    if loud {
                        out.append(holdoff);
                        out.push(x);
                    } else {
                        holdoff.push(x);
                        if holdoff.len() >= stop_len {
                            holdoff.clear();
                            window.fill(0.0);
                            (p, total, m) = (0, 0.0, Mode::Trim);
                        }
                    }
                }
            }
        }
        (*pos, *sum, *mode) = (p, total, m);
    }

    /// Ends the signal: keeps a pending short quiet run, drops a pending short loud run.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.mode == Mode::Copy {
            out.append(&mut self.holdoff);
        }
        self.reset();
    }
}

/// Adds a sample's square to the level window; returns whether the level (the window's sum of
/// squares) reaches `limit`.
#[inline]
fn step(window: &mut [f64], limit: f64, sq: f64, p: &mut usize, total: &mut f64) -> bool {
    *total += sq - window[*p];
    window[*p] = sq;
    *p += 1;
    if *p == window.len() {
        *p = 0;
    }
    *total >= limit
}

/// Trims a whole signal. Returns the untrimmed signal when nothing would be left, as the
/// reference does.
pub fn trim_silence(signal: &[f32], rate: u32, params: &TrimParams) -> Vec<f32> {
    let mut trimmer = SilenceTrimmer::new(params, rate);
    let mut out = Vec::with_capacity(signal.len());
    trimmer.push(signal, &mut out);
    trimmer.finish(&mut out);
    if out.is_empty() { signal.to_vec() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        crate::audio::test_signals::sine(RATE, 440.0, f64::from(amp), seconds)
    }

    fn silence(seconds: f64) -> Vec<f32> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (seconds * f64::from(RATE)).round() as usize;
        vec![0.0; n]
    }

    fn cat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    /// Samples the RMS window lets through after a loud-to-silent edge (the level falls below
    /// 1 % within one window).
    const EDGE: usize = 320;

    #[test]
    fn leading_silence_is_dropped_and_sound_kept() {
        let t = tone(0.5, 0.3);
        let signal = cat(&[silence(0.4), t.clone()]);
        let out = trim_silence(&signal, RATE, &TrimParams::default());
        // Sound starts at the first loud sample (the RMS window needs a few samples to rise).
        assert!(
            out.len() <= t.len() && out.len() + 40 >= t.len(),
            "{}",
            out.len()
        );
        assert_eq!(out[..], t[t.len() - out.len()..]);
    }

    #[test]
    fn short_leading_burst_is_dropped() {
        let t = tone(0.5, 0.3);
        let signal = cat(&[tone(0.1, 0.5), silence(0.3), t.clone()]);
        let out = trim_silence(&signal, RATE, &TrimParams::default());
        assert!(
            out.len() <= t.len() && out.len() + 40 >= t.len(),
            "{}",
            out.len()
        );
    }

    #[test]
    fn short_pause_is_kept_long_silence_removed() {
        let a = tone(0.5, 0.3);
        let b = tone(0.5, 0.3);
        let short = cat(&[a.clone(), silence(0.1), b.clone()]);
        let out = trim_silence(&short, RATE, &TrimParams::default());
        // Everything after the first loud samples is kept, the 0.1 s pause included.
        assert!(
            out.len() + 40 >= short.len(),
            "{} vs {}",
            out.len(),
            short.len()
        );

        let long = cat(&[a.clone(), silence(0.5), b.clone()]);
        let out = trim_silence(&long, RATE, &TrimParams::default());
        let expected = a.len() + b.len();
        // The silence goes (except the window's tail after the edge); both tones stay.
        assert!(
            out.len() >= expected - 80 && out.len() <= expected + EDGE,
            "{} vs {expected}",
            out.len()
        );
    }

    #[test]
    fn after_a_removed_silence_a_short_burst_is_dropped_too() {
        let a = tone(0.5, 0.3);
        let signal = cat(&[
            a.clone(),
            silence(0.5),
            tone(0.1, 0.3),
            silence(0.5),
            a.clone(),
        ]);
        let out = trim_silence(&signal, RATE, &TrimParams::default());
        let expected = 2 * a.len();
        assert!(
            out.len() >= expected - 80 && out.len() <= expected + EDGE,
            "{} vs {expected}",
            out.len()
        );
    }

    #[test]
    fn trailing_short_pause_is_kept_long_one_removed() {
        let a = tone(0.5, 0.3);
        let out = trim_silence(
            &cat(&[a.clone(), silence(0.1)]),
            RATE,
            &TrimParams::default(),
        );
        assert!(out.len() + 40 >= a.len() + 1600, "{}", out.len());
        let out = trim_silence(
            &cat(&[a.clone(), silence(0.3)]),
            RATE,
            &TrimParams::default(),
        );
        assert!(out.len() <= a.len() + EDGE, "{}", out.len());
    }

    #[test]
    fn nothing_left_keeps_the_untrimmed_signal() {
        let quiet = tone(1.0, 0.005);
        assert_eq!(trim_silence(&quiet, RATE, &TrimParams::default()), quiet);
        let bursts = cat(&[tone(0.1, 0.5), silence(0.3), tone(0.1, 0.5), silence(0.3)]);
        assert_eq!(trim_silence(&bursts, RATE, &TrimParams::default()), bursts);
    }

    #[test]
    fn streaming_in_any_block_size_matches_one_shot() {
        let signal = cat(&[
            silence(0.3),
            tone(0.05, 0.5),
            silence(0.25),
            tone(0.6, 0.3),
            silence(0.1),
            tone(0.4, 0.3),
            silence(0.4),
            tone(0.15, 0.3),
            silence(0.3),
            tone(0.45, 0.3),
            silence(0.1),
        ]);
        let whole = trim_silence(&signal, RATE, &TrimParams::default());
        for block in [1usize, 7, 160, 1000, 4096] {
            let mut t = SilenceTrimmer::new(&TrimParams::default(), RATE);
            let mut out = Vec::new();
            for part in signal.chunks(block) {
                t.push(part, &mut out);
            }
            t.finish(&mut out);
            assert_eq!(out, whole, "block {block}");
        }
    }
}
