//! Choosing a stream's season once its weeks are watched: a day or a week, or none, by the
//! autocorrelation of its samples' departures from the season before them.

use super::{Calibration, Season, Seasons};

impl Season {
    /// Chooses the season among `candidates` (samples) over the samples watched, then takes
    /// them into its profile, seeding its calibration with the windows before the newest
    /// (every `fresh` samples, the newest window's new ones). Returns the newest window's
    /// seasonal energy (`None` when no season was chosen).
    pub(super) fn choose(
        &mut self,
        candidates: &[usize],
        rows: usize,
        fresh: usize,
        seasons: &Seasons,
        cal: &Calibration,
    ) -> Option<f32> {
        self.settled = true;
        let c = self.channels;
        let n = self.history.len() / c;
        // Each channel's samples with the far outliers (a garbled reading, a sentinel such as
        // 65535: 100 robust standard deviations out) clipped, here and in what the season keeps
        // of the weeks watched. One would otherwise blind the season (its channel's variance),
        // move its level for a season, or be expected at its moment; the windows that hold one
        // do not seed the calibration. A stream's own spikes are nearer than that.
        let columns: Vec<Vec<f64>> = (0..c)
            .map(|ch| {
                let x = (0..n).map(|i| f64::from(self.history[i * c + ch]));
                clipped(x.collect(), FAR)
            })
            .collect();
        let mut outlier = vec![false; n];
        for (ch, x) in columns.iter().enumerate() {
            for (i, &v) in x.iter().enumerate() {
                let was = &mut self.history[i * c + ch];
                outlier[i] |= f64::from(*was) != v;
                *was = v as f32;
            }
        }
        // A constant channel (a set point, a status) has no season and is left out: its
        // scale is 0.
        self.scale = columns.iter().map(|x| variance(x)).collect();
        let varying: Vec<&Vec<f64>> = (columns.iter().zip(&self.scale))
            .filter_map(|(x, &v)| (v > 0.0).then_some(x))
            .collect();
        // Each candidate is measured on the samples' departures from the season before them
        // (a climbing or wandering level correlates at every lag; its departures do not).
        let mut best = (seasons.acf, 0);
        let near: Vec<Vec<f64>> = varying.iter().map(|x| clipped(x.to_vec(), NEAR)).collect();
        let lags = candidates.iter().filter(|&&l| l >= 2 * rows && 2 * l <= n);
        for &lag in lags.filter(|_| !near.is_empty()) {
            let r = (near.iter())
                .map(|x| acf(&clipped(departures(x, lag), NEAR), lag))
                .sum::<f64>()
                / varying.len() as f64;
            if r >= best.0 {
                best = (r, lag);
            }
        }
        if best.1 == 0 {
            self.settle_none();
            return None;
        }
        self.period = best.1;
        let p = self.period;
        self.profile = vec![0.0; p * c];
        self.folded = vec![0; p];
        // Moments are read as each sample's departure from the mean of the season before it,
        // so a level that drifts over the weeks is not taken for the season; the scale is the
        // departures' variance.
        let departed: Vec<Vec<f64>> = columns.iter().map(|x| departures(x, p)).collect();
        for (scale, d) in self.scale.iter_mut().zip(&departed) {
            if *scale > 0.0 {
                let kept: Vec<f64> = (d.iter().zip(&outlier))
                    .filter_map(|(&v, &o)| (!o).then_some(v))
                    .collect();
                *scale = variance(&kept);
            }
        }
        let history: Vec<f32> = (0..n)
            .flat_map(|i| departed.iter().map(move |d| d[i] as f32))
            .collect();
        // The level the next samples depart from: the newest season watched.
        let watched = std::mem::take(&mut self.history);
        self.recent = watched.range(n.saturating_sub(p) * c..).copied().collect();
        self.recent_sum.clear();
        // The watched samples' surprises, of the last season watched, are the first echo.
        let echoes = std::mem::take(&mut self.history_echo);
        self.echo = vec![0.0; self.period];
        if echoes.len() == n {
            for (i, &s) in echoes
                .iter()
                .enumerate()
                .skip(n.saturating_sub(self.period))
            {
                self.echo[i % self.period] = s;
            }
        }
        let stride = fresh.max(1);
        let mut last_outlier = None;
        for (i, sample) in history.chunks(c).enumerate() {
            // An outlier is not what its moment is expected to be.
            self.take(sample, rows, seasons, !outlier[i]);
            if outlier[i] {
                last_outlier = Some(i);
            }
            // The windows watched end every `stride` samples before the newest.
            let before_newest = n - 1 - i;
            if before_newest > 0
                && before_newest.is_multiple_of(stride)
                && last_outlier.is_none_or(|o| i >= o + rows)
                && let Some(e) = self.energy(rows)
            {
                self.calibrator.add(e, &[], cal);
            }
        }
        // The newest window's moments, as [`Season::recurs`] reads them.
        self.pending_from = self.taken.saturating_sub(fresh as u64);
        self.energy(rows)
    }
}

/// The variance of `x`, 0 when it is not a positive number (a constant channel).
fn variance(x: &[f64]) -> f32 {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    let v = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n) as f32;
    if v > 0.0 && v.is_finite() { v } else { 0.0 }
}

/// Each of `x`'s values as its departure from the mean of the `p` values before it. The first
/// `p` have none before them: they depart from the first `p` values' mean carried back along
/// the climb from it to the next `p` values' mean (the mean of the values before, on a level
/// that climbs steadily; no climb when fewer than `2 p` values are there).
fn departures(x: &[f64], p: usize) -> Vec<f64> {
    let (n, p) = (x.len(), p.max(1));
    let first = p.min(n);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let m1 = mean(&x[..first]);
    let climb = if 2 * p <= n {
        mean(&x[p..2 * p]) - m1
    } else {
        0.0
    };
    let mut out = Vec::with_capacity(n);
    for (i, &v) in x[..first].iter().enumerate() {
        out.push(v - (m1 - climb * (p - i) as f64 / p as f64));
    }
    let mut sum: f64 = x[..first].iter().sum();
    for t in first..n {
        out.push(x[t] - sum / p as f64);
        sum += x[t] - x[t - p];
    }
    out
}

/// Robust standard deviations out at which the autocorrelation that chooses a season clips
/// a sample or departure: one spike adds to the variance without adding to the correlation,
/// and (left as it is) takes a strong week away for good.
const NEAR: f64 = 5.0;

/// Robust standard deviations out at which a sample is taken for garbled ([`Season::choose`]).
const FAR: f64 = 100.0;

/// `x` with every value further than `k` robust standard deviations (1.4826 times the median
/// absolute deviation) from its median put at that bound, when they are rare (a channel that
/// climbs steadily is never clipped: its range is under 2 of them either side).
fn clipped(mut x: Vec<f64>, k: f64) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return x;
    }
    let mut sorted = x.clone();
    let median = *sorted.select_nth_unstable_by(n / 2, f64::total_cmp).1;
    for v in &mut sorted {
        *v = (*v - median).abs();
    }
    let spread = k * 1.4826 * *sorted.select_nth_unstable_by(n / 2, f64::total_cmp).1;
    // Only a few, or they are the stream's own: a pump that runs two hours a day, or an
    // office's CO2 by day, has its median and spread in the idle hours, and every running
    // sample far past them.
    let beyond = x.iter().filter(|v| (**v - median).abs() > spread).count();
    if spread > 0.0 && beyond <= n / RARE {
        for v in &mut x {
            *v = v.clamp(median - spread, median + spread);
        }
    }
    x
}

/// At most one value in this many may be clipped ([`clipped`]); more are no outliers.
const RARE: usize = 200;

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
