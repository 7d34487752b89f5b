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
//! raised, so a fault's level is never followed) with an exponential moving average of time
//! constant [`Calibration::level_windows`](super::Calibration::level_windows), and the scorer is
//! given each window minus the level's drift since the model version's baseline: the model sees
//! the stream as it was when judging began. Only the level moves; the spread of a channel is
//! never adapted, since a growing spread is what most faults look like.
//!
//! The baseline is the level when a model version starts judging a stream (the end of its
//! learning windows, or the first window of a version whose calibration a shadow handed on):
//! until then no drift is applied, because a freshly trained version learnt the stream as it is
//! now. While the calibrator learns, the level is the plain mean of the windows learnt so far,
//! so the baseline is the mean of the learning windows, not of the first window.
//!
//! Pure and deterministic; its state serialises into the checkpoint with the calibrator's.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// One stream's input level. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Model version whose baseline this is.
    pub version: String,
    /// Each channel's level now (moving average of the windows learnt from).
    current: Vec<f64>,
    /// Each channel's level when the version began judging (`None` while it learns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline: Option<Vec<f64>>,
}

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

    /// Adds a window learnt from (`data`: W x C values, sample-major). `learnt` is how many
    /// windows the calibrator had learnt before this one since it began learning: the first
    /// `time_constant` windows are averaged plainly, later ones with weight 1 / time_constant.
    pub fn learn(&mut self, data: &[f32], channels: usize, learnt: u64, time_constant: u32) {
        if channels == 0 || data.len() < channels {
            return;
        }
        let rows = data.len() / channels;
        let data = &data[..rows * channels];
        if data.iter().any(|v| !v.is_finite()) {
            // A window with NaN or infinity says nothing about the level.
            return;
        }
        let weight = 1.0 / (learnt.saturating_add(1) as f64).min(f64::from(time_constant.max(1)));
        if self.current.len() != channels {
            self.current = vec![0.0; channels];
            self.baseline = None;
        }
        // Per channel, its values in row order (no buffer per window: this runs for every
        // window learnt from).
        for (c, level) in self.current.iter_mut().enumerate() {
            let sum: f64 = data
                .iter()
                .skip(c)
                .step_by(channels)
                .map(|&v| f64::from(v))
                .sum();
            *level += weight * (sum / rows as f64 - *level);
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
/// previous batch is judged, lag the level by up to that many windows more than the time
/// constant says (`[scoring] max_batch` bounds it): a level moves slowly, so a few windows'
/// lag matters only for a drift at the edge of what is followed. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Drift(Arc<Mutex<Vec<f32>>>);

impl Drift {
    /// A drift starting at `values` (empty: none).
    pub fn new(values: Vec<f32>) -> Self {
        Self(Arc::new(Mutex::new(values)))
    }

    /// Sets the drift (empty: none).
    pub fn set(&self, values: Vec<f32>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = values;
    }

    /// Sets the drift to `level`'s ([`Level::drift`]) in place: called for every judged window,
    /// so it reuses the buffer instead of allocating one.
    pub fn follow(&self, level: &Level) {
        level.drift_into(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The drift now (empty: none).
    pub fn get(&self) -> Vec<f32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Appends `data` (W x C values, sample-major) to `out`, minus the drift of each channel;
    /// returns whether any was taken off.
    pub fn apply(&self, data: &[f32], out: &mut Vec<f32>) -> bool {
        let drift = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if drift.is_empty() || drift.iter().all(|&d| d == 0.0) {
            out.extend_from_slice(data);
            return false;
        }
        out.reserve(data.len());
        for row in data.chunks(drift.len()) {
            out.extend(row.iter().zip(drift.iter()).map(|(v, d)| v - d));
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
        for (n, a) in [1.0, 3.0].into_iter().enumerate() {
            l.learn(&window(4, a, 10.0), 2, n as u64, 100);
        }
        assert!(l.drift().is_empty(), "no drift before judging begins");
        l.settle();
        assert_eq!(l.drift(), vec![0.0, 0.0]);
        // Past the first 100 windows, each moves the level by 1/100 of the difference.
        l.learn(&window(4, 102.0, 10.0), 2, 200, 100);
        let d = l.drift();
        assert!((d[0] - 1.0).abs() < 1e-6 && d[1] == 0.0, "{d:?}");
        // Settling again keeps the baseline.
        l.settle();
        assert!((l.drift()[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_slow_ramp_is_followed_with_a_lag_of_one_time_constant() {
        let mut l = Level::new("v1");
        l.learn(&window(1, 0.0, 0.0), 2, 0, 50);
        l.settle();
        // The level rises 0.01 per window for 2,000 windows.
        for n in 1..=2_000u64 {
            l.learn(&window(1, n as f32 * 0.01, 0.0), 2, n, 50);
        }
        // An EWMA of a ramp lags it by (time constant - 1) windows: 20 - 0.49.
        let d = l.drift()[0];
        assert!((d - (20.0 - 0.49)).abs() < 0.01, "{d}");
    }

    #[test]
    fn a_new_version_has_no_drift_until_it_judges() {
        let mut l = Level::new("v1");
        l.learn(&window(1, 0.0, 0.0), 2, 0, 10);
        l.settle();
        l.learn(&window(1, 10.0, 0.0), 2, 1, 10);
        assert!(l.drift()[0] > 0.0);
        l.rebase("v2");
        assert!(l.drift().is_empty());
        l.settle();
        assert_eq!(l.drift(), vec![0.0, 0.0]);
    }

    #[test]
    fn non_finite_windows_are_ignored() {
        let mut l = Level::new("v1");
        l.learn(&window(2, 1.0, 1.0), 2, 0, 10);
        l.settle();
        l.learn(&window(2, f32::NAN, 1.0), 2, 1, 10);
        assert_eq!(l.drift(), vec![0.0, 0.0]);
    }

    #[test]
    fn a_drift_follows_its_level_in_place() {
        let mut l = Level::new("v1");
        let d = Drift::new(vec![9.0]);
        d.follow(&l);
        assert!(d.get().is_empty(), "no baseline: no drift");
        l.learn(&window(4, 1.0, 2.0), 2, 0, 10);
        l.settle();
        l.learn(&window(4, 3.0, 2.0), 2, 1, 1);
        d.follow(&l);
        assert_eq!(d.get(), l.drift());
        assert_eq!(d.get(), vec![2.0, 0.0]);
    }

    #[test]
    fn drift_is_subtracted_per_channel() {
        let d = Drift::default();
        let mut out = Vec::new();
        assert!(!d.apply(&[1.0, 2.0], &mut out));
        assert_eq!(out, [1.0, 2.0]);
        d.set(vec![0.5, -1.0]);
        out.clear();
        assert!(d.apply(&[1.0, 2.0, 3.0, 4.0], &mut out));
        assert_eq!(out, [0.5, 3.0, 2.5, 5.0]);
    }
}
