//! Following slow drift of a stream's inputs: each channel's level.
//!
//! A machine warms up over the day, a season turns, a load changes: the level (mean) of a
//! temperature or pressure channel wanders far from where it was when the model learnt the
//! stream, and an autoencoder then reconstructs every window badly. A fault in a vibration,
//! current or sound channel shows mostly in the window's shape instead (amplitude, frequency
//! content), which a level does not absorb.
//!
//! So each stream follows the level of every channel over the windows it learns from (the
//! calibrator's rule: learning windows, and judged windows that are healthy with no alert
//! raised, so a fault's level is never followed) as the mean of the last
//! [`Calibration::level_windows`](super::Calibration::level_windows) of them, and the scorer is
//! given each window minus the level's drift since the model version's baseline: the model sees
//! the stream as it was when judging began. Only the level moves; the spread of a channel is
//! never adapted, since a growing spread is what most faults look like.
//!
//! A mean over the last N windows, not an exponential one: a daily cycle about N windows long
//! (300 is a day and an hour of 5-minute windows) leaves it almost flat, where an exponential
//! mean of time constant N keeps about a sixth of the cycle, and the model then sees each hour
//! of the day shifted by that ripple (a square wave was paged once a day;
//! docs/EVALUATION-ROUNDS.md, round thirty-three). A ramp is followed with a lag of N / 2
//! windows (an exponential mean's is N). The windows are held as [`BLOCKS`] block means, so the
//! state is a few numbers a channel; the oldest block stands for the part of it still within
//! the last N windows.
//!
//! A garbled window (a sensor's 65535 among its samples) is not learnt: one whose mean strays
//! from the level by more than [`GARBLED`] times the channel's usual stray, unless
//! [`GARBLED_RUN`] such windows came in a row, which say the level moved. One in the learning
//! windows would otherwise shift the baseline, and the model would see the stream off by its
//! share once it left the mean, for good.
//!
//! The baseline is the level when a model version starts judging a stream (the end of its
//! learning windows, or the first window of a version whose calibration a shadow handed on):
//! until then no drift is applied, because a freshly trained version learnt the stream as it is
//! now. While the calibrator learns, the level is the plain mean of its last N learning windows,
//! so the baseline is not one window's.
//!
//! Pure and deterministic; its state serialises into the checkpoint with the calibrator's.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Most blocks a level's windows are held in: the level is the mean of the newest blocks of
/// `windows / BLOCKS` windows each (and of the block being filled), so its state is a few
/// numbers a channel however many windows it spans.
pub const BLOCKS: usize = 10;

/// One stream's input level. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Model version whose baseline this is.
    pub version: String,
    /// Each channel's level now (the mean of the windows held in `blocks` and `filling`).
    current: Vec<f64>,
    /// Each channel's mean over each of the newest complete blocks, oldest first (channels
    /// values a block).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<f64>,
    /// Each channel's sum over the windows of the block being filled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filling: Vec<f64>,
    /// Windows in the block being filled.
    #[serde(default)]
    filled: u32,
    /// Each channel's level when the version began judging (`None` while it learns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline: Option<Vec<f64>>,
    /// Each channel's mean distance of a learnt window's mean from the level (over the last
    /// `windows` of them, exponentially): how far a window strays, against which a garbled
    /// one is told ([`GARBLED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    spread: Vec<f64>,
    /// Windows learnt into `spread`, up to `windows`.
    #[serde(default)]
    spread_seen: u32,
    /// Garbled windows passed in a row.
    #[serde(default)]
    garbled: u32,
}

/// A window whose mean strays from the level by more than this many `spread`s is garbled (a
/// sensor's 65535, a decoding error), and not learnt: one such window among the learning
/// windows would otherwise shift what the model sees for good. Only [`GARBLED_RUN`] in a row:
/// more say the level moved, and it is followed.
pub const GARBLED: f64 = 100.0;

/// See [`GARBLED`].
pub const GARBLED_RUN: u32 = 3;

/// Windows a spread is learnt from before it tells garbled ones.
const SPREAD_MIN: u32 = 30;

impl Level {
    /// A level with no windows seen, for a model version.
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            ..Self::default()
        }
    }

    /// A new baseline for `version` (a new model version, or a level accepted as the new
    /// normal): no drift applied until it begins judging. The level itself carries on.
    pub fn rebase(&mut self, version: &str) {
        version.clone_into(&mut self.version);
        self.baseline = None;
    }

    /// Adds a window learnt from (`data`: W x C values, sample-major): the level becomes the
    /// mean of the last `windows` windows learnt from (to within a block), of all of them
    /// while fewer have been.
    pub fn learn(&mut self, data: &[f32], channels: usize, windows: u32) {
        if channels == 0 || data.len() < channels {
            return;
        }
        let rows = data.len() / channels;
        let data = &data[..rows * channels];
        // Each channel's sum of its values, in row order: one pass over the window (this runs
        // for every window learnt from) and no check of its own for NaN or infinity, since any
        // leaves its channel's sum non-finite (f32 values cannot overflow an f64 sum). One
        // channel is summed plainly: rows of one value cost several times the instructions.
        let sums = if channels == 1 {
            vec![data.iter().map(|&v| f64::from(v)).sum()]
        } else {
            let mut sums = vec![0.0; channels];
            for row in data.chunks_exact(channels) {
                for (sum, &v) in sums.iter_mut().zip(row) {
                    *sum += f64::from(v);
                }
            }
            sums
        };
        if sums.iter().any(|s| !s.is_finite()) {
            // A window with NaN or infinity says nothing about the level.
            return;
        }
        if self.current.len() != channels {
            // The first window, or the channels changed: start again, with no baseline.
            *self = Self::new(&self.version);
            self.current = vec![0.0; channels];
            self.filling = vec![0.0; channels];
        } else if self.filling.len() != channels {
            // A level saved before blocks (an exponential mean): it is the first block.
            self.blocks = self.current.clone();
            self.filling = vec![0.0; channels];
            self.filled = 0;
        }
        if self.spread.len() != channels {
            self.spread = vec![0.0; channels];
            self.spread_seen = 0;
        }
        let stray = |(c, s): (usize, &f64)| (s / rows as f64 - self.current[c]).abs();
        // A stream that never strayed (a constant) has no spread: a change as small as its
        // values' precision is then a stray.
        let floor = f64::EPSILON * self.current.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
        if self.spread_seen >= SPREAD_MIN
            && self.garbled < GARBLED_RUN
            && sums
                .iter()
                .enumerate()
                .map(stray)
                .zip(&self.spread)
                .any(|(d, spread)| d > GARBLED * spread.max(floor))
        {
            self.garbled += 1;
            return;
        }
        self.garbled = 0;
        self.spread_seen = self.spread_seen.saturating_add(1).min(windows.max(1));
        let seen = f64::from(self.spread_seen);
        for (c, spread) in self.spread.iter_mut().enumerate() {
            *spread += (stray((c, &sums[c])) - *spread) / seen;
        }
        for (sum, s) in self.filling.iter_mut().zip(&sums) {
            *sum += s / rows as f64;
        }
        self.filled += 1;
        let windows = windows.max(1) as usize;
        let block = windows.div_ceil(BLOCKS);
        let kept = windows.div_ceil(block);
        if self.filled as usize >= block {
            let filled = f64::from(self.filled);
            self.blocks.extend(self.filling.iter().map(|s| s / filled));
            self.filling.iter_mut().for_each(|s| *s = 0.0);
            self.filled = 0;
        }
        let excess = self.blocks.len().saturating_sub(kept * channels);
        self.blocks.drain(..excess);
        // The mean of the last `windows` windows: each complete block weighs `block` windows,
        // but the oldest, once `kept` are held, only what the newer blocks and the one being
        // filled leave of `windows`.
        let held = self.blocks.len() / channels;
        let newer = held.saturating_sub(1) * block + self.filled as usize;
        let oldest = match held {
            0 => 0.0,
            n if n == kept => windows.saturating_sub(newer).min(block) as f64,
            _ => block as f64,
        };
        let total = oldest + newer as f64;
        for (c, level) in self.current.iter_mut().enumerate() {
            let mut sum = self.filling[c];
            for (i, mean) in self.blocks.iter().skip(c).step_by(channels).enumerate() {
                sum += mean * if i == 0 { oldest } else { block as f64 };
            }
            *level = sum / total;
        }
    }

    /// The version begins judging: the level now is its baseline (kept if it has one).
    pub fn settle(&mut self) {
        if self.baseline.is_none() && !self.current.is_empty() {
            self.baseline = Some(self.current.clone());
        }
    }

    /// Each channel's drift since the baseline (empty while there is none): what the scorer
    /// subtracts from every sample.
    pub fn drift(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.drift_into(&mut out);
        out
    }

    /// [`Level::drift`] written into `out` (cleared first), reusing its buffer.
    fn drift_into(&self, out: &mut Vec<f32>) {
        out.clear();
        if let Some(b) = &self.baseline {
            out.extend(self.current.iter().zip(b).map(|(c, b)| (c - b) as f32));
        }
    }
}

/// A stream's current drift, shared between the stage that judges its windows (which sets it)
/// and the scorer (which subtracts it from each window before inference). A window gets the
/// drift of when its batch is scored, so the windows of one batch, and those scored before the
/// previous batch is judged, lag the level by up to that many windows more than its own lag
/// (`[scoring] max_batch` bounds it): a level moves slowly, so a few windows'
/// lag matters only for a drift at the edge of what is followed. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Drift(Arc<Mutex<(Option<String>, Vec<f32>)>>);

impl Drift {
    /// A drift starting at `values` (empty: none).
    pub fn new(values: Vec<f32>) -> Self {
        Self(Arc::new(Mutex::new((None, values))))
    }

    /// Sets the drift (empty: none), of no version in particular.
    pub fn set(&self, values: Vec<f32>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = (None, values);
    }

    /// Sets the drift to `level`'s ([`Level::drift`]) in place, as of its version.
    pub fn follow(&self, level: &Level) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if g.0.as_deref() != Some(level.version.as_str()) {
            g.0 = Some(level.version.clone());
        }
        level.drift_into(&mut g.1);
    }

    /// The drift now (empty: none).
    pub fn get(&self) -> Vec<f32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Appends `data` (W x C values, sample-major) to `out`, minus the drift of each channel,
    /// unless the drift is of another version than `version` (a version just swapped in: its
    /// baseline is set when it begins judging); returns whether any was taken off.
    pub fn apply(&self, data: &[f32], out: &mut Vec<f32>, version: Option<&str>) -> bool {
        let g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let other = matches!((g.0.as_deref(), version), (Some(a), Some(b)) if a != b);
        let drift = &g.1;
        if other || drift.is_empty() || drift.iter().all(|&d| d == 0.0) {
            out.extend_from_slice(data);
            return false;
        }
        // Copied whole, then taken off in place: this runs for every window scored.
        let start = out.len();
        out.extend_from_slice(data);
        let taken = &mut out[start..];
        if let [d] = drift[..] {
            taken.iter_mut().for_each(|v| *v -= d);
        } else {
            for row in taken.chunks_mut(drift.len()) {
                row.iter_mut().zip(drift.iter()).for_each(|(v, d)| *v -= d);
            }
        }
        true
    }
}

impl PartialEq for Drift {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.get() == other.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of `rows` rows of two channels at levels `a` and `b`.
    fn window(rows: usize, a: f32, b: f32) -> Vec<f32> {
        (0..rows).flat_map(|_| [a, b]).collect()
    }

    #[test]
    fn learning_windows_average_plainly_then_drift_is_followed_from_the_baseline() {
        let mut l = Level::new("v1");
        for a in [1.0, 3.0] {
            l.learn(&window(4, a, 10.0), 2, 100);
        }
        assert!(l.drift().is_empty(), "no drift before judging begins");
        l.settle();
        assert_eq!(l.drift(), vec![0.0, 0.0]);
        // 110 windows at 102: the two before have left the mean (whose oldest block may hold
        // up to a block of windows older than the last 100).
        for _ in 0..110 {
            l.learn(&window(4, 102.0, 10.0), 2, 100);
        }
        let d = l.drift();
        assert!((d[0] - 100.0).abs() < 1e-9 && d[1] == 0.0, "{d:?}");
        // Settling again keeps the baseline.
        l.settle();
        assert!((l.drift()[0] - 100.0).abs() < 1e-9);
    }

    /// Twelve samples of one channel around `at` (a fixed wobble of about one standard
    /// deviation, different for each `n`).
    fn noisy(n: u32, at: f32) -> Vec<f32> {
        (0..12u32)
            .map(|k| at + ((n * 12 + k) as f32 * 0.618_034).fract() * 3.4 - 1.7)
            .collect()
    }

    /// One window holding a sensor's 65535 among the learning windows is not learnt: without
    /// it the baseline took in 1/300 of it, and once it left the mean the drift stood at minus
    /// that (a review's reproduction: -3.6 standard deviations, the stream read at 0.993 for
    /// good). A level that moves, many spreads at once and for good, is followed after
    /// `GARBLED_RUN` windows.
    #[test]
    fn a_garbled_learning_window_is_not_learnt_a_step_is() {
        let mut l = Level::new("v1");
        for n in 0..512 {
            let mut w = noisy(n, 20.0);
            if n == 400 {
                w[5] = 65_535.0;
            }
            l.learn(&w, 1, 300);
        }
        l.settle();
        for n in 512..1_200 {
            l.learn(&noisy(n, 20.0), 1, 300);
        }
        let d = l.drift()[0];
        assert!(d.abs() < 0.1, "drift {d}");
        // A step of 500 (some 2,000 spreads), held: passed for three windows, then followed.
        for n in 1_200..1_600 {
            l.learn(&noisy(n, 520.0), 1, 300);
        }
        let d = l.drift()[0];
        assert!((d - 500.0).abs() < 0.5, "drift {d}");
    }

    #[test]
    fn a_slow_ramp_is_followed_with_a_lag_of_half_its_windows() {
        let mut l = Level::new("v1");
        l.learn(&window(1, 0.0, 0.0), 2, 50);
        l.settle();
        // The level rises 0.01 per window for 2,000 windows.
        for n in 1..=2_000u16 {
            l.learn(&window(1, f32::from(n) * 0.01, 0.0), 2, 50);
        }
        // The mean of the last 50 windows of a ramp lags it by 24.5 windows.
        let d = l.drift()[0];
        assert!((d - (20.0 - 0.245)).abs() < 0.01, "{d}");
    }

    #[test]
    fn a_cycle_as_long_as_the_level_leaves_almost_no_ripple() {
        // A daily cycle of 288 windows (5-minute windows) under a level of 288 windows: the
        // mean over whole cycles does not move (an exponential mean of the same time constant
        // keeps about a sixth of the cycle: docs/EVALUATION-ROUNDS.md, round seventeen).
        let mut l = Level::new("v1");
        let cycle = |n: u32| (std::f64::consts::TAU * f64::from(n) / 288.0).sin() as f32;
        for n in 0..2_880 {
            l.learn(&window(2, cycle(n), 0.0), 2, 288);
        }
        l.settle();
        let (mut low, mut high) = (f32::MAX, f32::MIN);
        for n in 2_880..2_880 + 288 {
            l.learn(&window(2, cycle(n), 0.0), 2, 288);
            low = low.min(l.drift()[0]);
            high = high.max(l.drift()[0]);
        }
        // The blocks leave a little (a mean of exactly 288 windows none; an exponential mean
        // of time constant 288, 0.157 of the cycle's amplitude).
        assert!(
            high - low < 0.02,
            "the level moves by {} over a cycle",
            high - low
        );
    }

    #[test]
    fn a_level_of_fewer_windows_than_blocks_or_not_a_multiple_of_them_is_exact_on_a_ramp() {
        for windows in [5u32, 25, 288] {
            let mut l = Level::new("v1");
            l.learn(&window(1, 0.0, 0.0), 2, windows);
            l.settle();
            for n in 1..=1_000u16 {
                l.learn(&window(1, f32::from(n), 0.0), 2, windows);
            }
            // The mean of the last `windows` values of a ramp lags it by (windows - 1) / 2,
            // to within what the oldest block's mean stands for.
            let lag = 1_000.0 - l.drift()[0];
            let exact = (windows as f32 - 1.0) / 2.0;
            assert!(
                (lag - exact).abs() <= 0.5,
                "{windows}: lag {lag} against {exact}"
            );
        }
    }

    #[test]
    fn a_saved_level_learns_on_as_if_never_saved() {
        let mut l = Level::new("v1");
        for n in 0..137u16 {
            l.learn(&window(3, f32::from(n), -f32::from(n)), 2, 50);
        }
        l.settle();
        let text = serde_json::to_string(&l).expect("a level serialises");
        let mut restored: Level = serde_json::from_str(&text).expect("and reads back");
        assert_eq!(restored, l);
        for n in 137..200u16 {
            l.learn(&window(3, f32::from(n), 0.0), 2, 50);
            restored.learn(&window(3, f32::from(n), 0.0), 2, 50);
        }
        assert_eq!(restored.drift(), l.drift());
        // Ten block means and the block being filled: the state does not grow with the
        // windows it spans.
        let blocks = serde_json::to_value(&restored).expect("serialises")["blocks"]
            .as_array()
            .map(Vec::len);
        assert_eq!(blocks, Some(BLOCKS * 2));
    }

    #[test]
    fn a_level_saved_as_an_exponential_mean_learns_on_from_it() {
        // A checkpoint from before blocks holds the level alone.
        let saved = r#"{"version": "v1", "current": [4.0, 1.0], "baseline": [4.0, 1.0]}"#;
        let mut l: Level = serde_json::from_str(saved).expect("an old level reads");
        assert_eq!(l.drift(), vec![0.0, 0.0]);
        // It is taken as the first block of 10 windows: one window at 15 moves it by 1.
        l.learn(&window(1, 15.0, 1.0), 2, 100);
        let d = l.drift();
        assert!((d[0] - 1.0).abs() < 1e-9 && d[1] == 0.0, "{d:?}");
    }

    #[test]
    fn a_new_version_has_no_drift_until_it_judges() {
        let mut l = Level::new("v1");
        l.learn(&window(1, 0.0, 0.0), 2, 10);
        l.settle();
        l.learn(&window(1, 10.0, 0.0), 2, 10);
        assert!(l.drift()[0] > 0.0);
        l.rebase("v2");
        assert!(l.drift().is_empty());
        l.settle();
        assert_eq!(l.drift(), vec![0.0, 0.0]);
    }

    #[test]
    fn non_finite_windows_are_ignored() {
        let mut l = Level::new("v1");
        l.learn(&window(2, 1.0, 1.0), 2, 10);
        l.settle();
        l.learn(&window(2, f32::NAN, 1.0), 2, 10);
        assert_eq!(l.drift(), vec![0.0, 0.0]);
    }

    #[test]
    fn a_drift_follows_its_level_in_place() {
        let mut l = Level::new("v1");
        let d = Drift::new(vec![9.0]);
        d.follow(&l);
        assert!(d.get().is_empty(), "no baseline: no drift");
        l.learn(&window(4, 1.0, 2.0), 2, 10);
        l.settle();
        l.learn(&window(4, 3.0, 2.0), 2, 10);
        d.follow(&l);
        assert_eq!(d.get(), l.drift());
        // The mean of the two windows, 2.0, less the baseline.
        assert_eq!(d.get(), vec![1.0, 0.0]);
        // It is v1's: a version swapped in scores its windows as they arrive until its own
        // level begins judging (the alerting stage follows it then).
        let mut out = Vec::new();
        assert!(d.apply(&[3.0, 2.0], &mut out, Some("v1")));
        assert_eq!(out, [2.0, 2.0]);
        out.clear();
        assert!(!d.apply(&[3.0, 2.0], &mut out, Some("v2")));
        assert_eq!(out, [3.0, 2.0]);
    }

    #[test]
    fn drift_is_subtracted_per_channel() {
        let d = Drift::default();
        let mut out = Vec::new();
        assert!(!d.apply(&[1.0, 2.0], &mut out, None));
        assert_eq!(out, [1.0, 2.0]);
        d.set(vec![0.5, -1.0]);
        out.clear();
        assert!(d.apply(&[1.0, 2.0, 3.0, 4.0], &mut out, None));
        assert_eq!(out, [0.5, 3.0, 2.5, 5.0]);
    }
}
