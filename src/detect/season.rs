//! Seasons: a window also judged against the same moment of earlier days or weeks.
//!
//! A model that sees a two-hour window cannot tell a Thursday from a Sunday: a holiday's quiet
//! traffic, or a machine running on a day it never runs, is an ordinary window at the wrong
//! time (NAB's `nyc_taxi` holidays, docs/EVALUATION.md round twenty-two). A stream whose
//! samples carry timestamps and are minutes apart is watched for [`Seasons::weeks`] weeks;
//! then the autocorrelation of each channel at a day and at a week is measured over those
//! weeks, and the stronger of the two, when its mean over the channels is at least
//! [`Seasons::acf`], becomes the stream's season (otherwise it has none, for good).
//!
//! From then on every window has a *seasonal energy*: the mean, over its samples and channels,
//! of the squared difference from the mean of the same moment in the last [`Seasons::memory`]
//! seasons, each channel over its variance. It is calibrated by a [`Calibrator`] of its own
//! (the same tail model as the model's energy), seeded on the windows of the weeks watched, and
//! it learns only the windows the stream's calibration learns (healthy, no alert up) while its
//! own probability is under `learn_below`. A window's probability is the larger of its
//! energy's and its seasonal energy's.
//!
//! What is held: the newest samples, at most [`MAX_VALUES`] values per stream (a week of
//! 5-minute samples is 2,016; a week of 1-second ones is more than that, so a fast stream never
//! has a season and holds nothing). A gap in the timestamps empties the history (the season,
//! once chosen, and its calibration stay); the history refills before windows are read again.

use std::collections::VecDeque;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Calibration, Calibrator};
use crate::pipeline::{Mark, RawWindow};

/// Most values (samples x channels) a stream's season holds.
pub const MAX_VALUES: usize = 32_768;

const DAY_S: f64 = 86_400.0;

/// The season settings (`[detect] season_acf`, `season_weeks`, `season_memory`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seasons {
    /// The autocorrelation at a day or a week a stream's channels need, on average, for the
    /// stream to have a season. 0: no seasons.
    pub acf: f64,
    /// Weeks of samples watched before the season is chosen.
    pub weeks: u32,
    /// Seasons averaged into what a moment is expected to be.
    pub memory: u32,
}

impl Default for Seasons {
    fn default() -> Self {
        Self {
            acf: 0.8,
            weeks: 3,
            memory: 4,
        }
    }
}

impl Seasons {
    /// Whether seasons are on.
    pub fn on(&self) -> bool {
        self.acf > 0.0
    }
}

/// One stream's season. See the module documentation. A stream with none is saved as
/// `{"settled": true}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Season {
    /// Seconds between samples (0 before the first window with timestamps).
    #[serde(default, skip_serializing_if = "is_zero")]
    step_s: f64,
    /// Time of the newest sample held, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero")]
    end_s: f64,
    /// Values per sample.
    #[serde(default, skip_serializing_if = "is_none")]
    channels: usize,
    /// The newest samples, interleaved by channel.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    history: VecDeque<f32>,
    /// Whether the choice is made: the season is `period` samples, or none when it is 0.
    #[serde(default)]
    settled: bool,
    /// The season in samples.
    #[serde(default, skip_serializing_if = "is_none")]
    period: usize,
    /// Each channel's variance over the weeks the season was chosen on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scale: Vec<f32>,
    /// The calibration of the seasonal energies.
    #[serde(default, skip_serializing_if = "Calibrator::is_empty")]
    calibrator: Calibrator,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_none(n: &usize) -> bool {
    *n == 0
}

/// Seconds since the epoch of a sample's mark: a number, or an RFC 3339 time (the `T` and the
/// zone may be left out: UTC). `None` for sample indices and anything else.
fn seconds(mark: &Mark) -> Option<f64> {
    match mark {
        Mark::Time(Value::Number(n)) => n.as_f64(),
        Mark::Time(Value::String(s)) => humantime::parse_rfc3339_weak(s.trim())
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64()),
        _ => None,
    }
}

impl Season {
    /// Takes `window`'s new samples (`channels` per sample) and returns its seasonal energy
    /// once the stream has a season whose history covers the window, choosing the season when
    /// the weeks watched are complete (and seeding its calibration on them).
    pub fn observe(
        &mut self,
        window: &RawWindow,
        channels: usize,
        seasons: &Seasons,
        cal: &Calibration,
    ) -> Option<f32> {
        if !seasons.on() || (self.settled && self.period == 0) || channels == 0 {
            return None;
        }
        let rows = window.data.len() / channels;
        let (Some(start), Some(end)) = (seconds(&window.start), seconds(&window.end)) else {
            if !self.settled {
                self.settle_none(); // sample indices: a day is not known
            }
            return None;
        };
        if rows < 2 || end <= start || !(end - start).is_finite() {
            return None;
        }
        let step = (end - start) / (rows - 1) as f64;
        let day = (DAY_S / step).round() as usize;
        let weeks = seasons.weeks.max(1) as usize;
        let watched = weeks * 7 * day;
        let kept = seasons.memory.max(1) as usize * 7 * day + rows;
        if !self.settled
            && (watched.max(kept) * channels > MAX_VALUES || 7 * day < 2 * rows || day == 0)
        {
            // Too fast for its weeks to be held, or a week is no longer than two windows.
            self.settle_none();
            return None;
        }
        let fresh = self.fresh(end, step, rows, channels);
        if fresh == 0 {
            return None; // the same window again, or one out of order
        }
        let at = (rows - fresh) * channels;
        self.history.extend(&window.data[at..]);
        self.end_s = end;
        if !self.settled {
            if self.history.len() < watched * channels {
                return None;
            }
            self.choose(&[day, 7 * day], rows, fresh, seasons, cal);
            if self.period == 0 {
                return None;
            }
        }
        let keep = (seasons.memory.max(1) as usize * self.period + rows) * channels;
        while self.history.len() > keep {
            self.history.pop_front();
        }
        self.energy(self.history.len() / channels - 1, rows, seasons)
    }

    /// The probability of a seasonal energy under the season's calibration.
    pub fn probability(&self, energy: f32, cal: &Calibration) -> f64 {
        self.calibrator.probability(energy, &[], cal)
    }

    /// Learns a healthy window's seasonal energy (`probability` its own, or `None` while the
    /// stream learns) when it is under `learn_below`.
    pub fn learn(&mut self, energy: f32, probability: Option<f64>, cal: &Calibration) {
        if probability.is_none_or(|p| cal.learn_below <= 0.0 || p < cal.learn_below) {
            self.calibrator.add(energy, &[], cal);
        }
    }

    /// The season in samples, once chosen (`None`: not yet, or none).
    pub fn period(&self) -> Option<usize> {
        (self.period > 0).then_some(self.period)
    }

    fn settle_none(&mut self) {
        *self = Self {
            settled: true,
            ..Self::default()
        };
    }

    /// Samples of a window ending at `end` not held yet: 0 for a window already seen; all of
    /// them after a gap (the history starts again; a season chosen stays) or a change of rate
    /// or channels (the stream is watched again from the start).
    fn fresh(&mut self, end: f64, step: f64, rows: usize, channels: usize) -> usize {
        let same = self.step_s > 0.0
            && ((step - self.step_s) / self.step_s).abs() < 0.01
            && self.channels == channels;
        if same && !self.history.is_empty() {
            let ahead = (end - self.end_s) / step;
            if ahead < 0.5 {
                return 0;
            }
            let n = ahead.round();
            if (ahead - n).abs() < 0.1 && n <= rows as f64 {
                return n as usize;
            }
        }
        if !(same && self.settled) {
            *self = Self {
                step_s: step,
                channels,
                calibrator: Calibrator::new("season"),
                ..Self::default()
            };
        }
        self.history.clear();
        rows
    }

    /// Chooses the season among `candidates` (samples) over the history, and seeds its
    /// calibration with the windows the history holds (every `stride` samples).
    fn choose(
        &mut self,
        candidates: &[usize],
        rows: usize,
        stride: usize,
        seasons: &Seasons,
        cal: &Calibration,
    ) {
        self.settled = true;
        let c = self.channels;
        let n = self.history.len() / c;
        let column = |ch: usize| -> Vec<f64> {
            (0..n)
                .map(|i| f64::from(self.history[i * c + ch]))
                .collect()
        };
        let columns: Vec<Vec<f64>> = (0..c).map(column).collect();
        let mut best = (seasons.acf, 0);
        for &lag in candidates.iter().filter(|&&l| l >= 2 * rows && l < n) {
            let r = columns.iter().map(|x| acf(x, lag)).sum::<f64>() / c as f64;
            if r >= best.0 {
                best = (r, lag);
            }
        }
        self.scale = columns
            .iter()
            .map(|x| {
                let mean = x.iter().sum::<f64>() / n as f64;
                (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64) as f32
            })
            .collect();
        if best.1 == 0 || self.scale.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
            self.settle_none();
            return;
        }
        self.period = best.1;
        // The windows before the one being judged, every `stride` samples.
        let mut seeded = Vec::new();
        let Some(mut end) = (n - 1).checked_sub(stride.max(1)) else {
            return;
        };
        while end + 1 >= rows + self.period {
            if let Some(e) = self.energy(end, rows, seasons) {
                seeded.push(e);
            }
            match end.checked_sub(stride.max(1)) {
                Some(e) => end = e,
                None => break,
            }
        }
        for e in seeded.into_iter().rev() {
            self.calibrator.add(e, &[], cal);
        }
    }

    /// The seasonal energy of the window of `rows` samples ending at history sample `end`;
    /// `None` when a sample has no season behind it.
    fn energy(&self, end: usize, rows: usize, seasons: &Seasons) -> Option<f32> {
        let (c, p) = (self.channels, self.period);
        let first = (end + 1).checked_sub(rows)?;
        if first < p {
            return None;
        }
        let at = |i: usize, ch: usize| f64::from(self.history[i * c + ch]);
        let mut sum = 0.0;
        for i in first..=end {
            let seasons_back = (i / p).min(seasons.memory.max(1) as usize);
            for (ch, &scale) in self.scale.iter().enumerate() {
                let expected = (1..=seasons_back).map(|j| at(i - j * p, ch)).sum::<f64>()
                    / seasons_back as f64;
                sum += (at(i, ch) - expected).powi(2) / f64::from(scale);
            }
        }
        Some((sum / (rows * c) as f64) as f32)
    }
}

/// The autocorrelation of `x` at `lag` (0 when either side is constant).
fn acf(x: &[f64], lag: usize) -> f64 {
    let (a, b) = (&x[..x.len() - lag], &x[lag..]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (u, v) in a.iter().zip(b) {
        ab += (u - ma) * (v - mb);
        aa += (u - ma).powi(2);
        bb += (v - mb).powi(2);
    }
    let d = (aa * bb).sqrt();
    if d > 0.0 { ab / d } else { 0.0 }
}

#[cfg(test)]
mod tests;
