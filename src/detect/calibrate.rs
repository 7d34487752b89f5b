//! The calibrated anomaly probability of a stream: how unusual is this energy under the
//! stream's own recent healthy behaviour?
//!
//! Each stream keeps a histogram of the logarithm of its healthy windows' energies that forgets
//! exponentially (time constant [`Calibration::memory_windows`]), and reads a window's energy
//! against it as peaks-over-threshold (SPOT, Siffer et al., KDD 2017): below the
//! `tail_quantile` of the healthy energies the tail probability is the histogram's own; above
//! it, the excesses of log-energy are modelled as exponential (the generalised Pareto
//! distribution with shape 0 on log-energy, i.e. a power-law tail of energy), so a probability
//! of 0.99999 still means something beyond the largest energy seen. The probability reported is
//! `1 - P(energy at least this high)`, so `0.999` means the same on every stream and every
//! model.
//!
//! Only windows judged healthy are added (the caller's rule: never a window over the alert
//! probability or [`Calibration::learn_below`], never one of a raised alert), so the histogram
//! follows slow drift of healthy behaviour but cannot learn a fault: a drift moves the bulk of
//! the energies a little at a time, while a fault that climbs every window keeps landing in
//! the tail, is never learnt, and so climbs out of it. The first [`Calibration::learn_windows`] windows of a
//! stream (or of a new model version on it) are learning: every window is added, none judged.
//!
//! Pure and deterministic: no clock, no I/O; its state serialises into the checkpoint.

use serde::{Deserialize, Serialize};

/// Histogram resolution: bins per decade of energy.
const BINS_PER_DECADE: f64 = 10.0;
/// Lowest log10 energy binned; anything lower (including 0) counts in the first bin.
const LOG10_MIN: f64 = -12.0;
/// Number of bins: energies 1e-12 .. 1e12.
const BINS: i32 = 240;
/// Bin width in log10 units.
const WIDTH: f64 = 1.0 / BINS_PER_DECADE;
/// When the weight of the next window passes this, the histogram is rescaled (ratios unchanged).
const RESCALE_AT: f64 = 1e100;

/// How streams are calibrated: the `[detect]` settings every stream shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Windows a stream (or a new model on it) learns from before it is judged.
    pub learn_windows: u32,
    /// Time constant of forgetting, in healthy windows: an energy seen this many healthy windows
    /// ago weighs 1/e of the newest.
    pub memory_windows: u32,
    /// Quantile of the healthy energies above which the tail is modelled (SPOT's initial
    /// threshold level). An alert probability must be above it.
    pub tail_quantile: f64,
    /// Windows an alert may stay raised before its level is accepted as the new normal (the
    /// stream learns again); 0 keeps it raised.
    pub accept_after: u32,
    /// Time constant, in healthy windows, of the stream's energy level (DSPOT's drift term):
    /// each window is read relative to the level of the healthy windows before it, so a drift
    /// slower than this is followed and a rise faster than it stands out. 0: no level, read
    /// energies as they are.
    pub drift_windows: u32,
    /// Judged windows are learnt only when healthy and their probability is under this: a
    /// fault that rises a little every window stays in the tail instead of dragging the tail
    /// up with it. 0: every healthy window.
    pub learn_below: f64,
    /// Time constant, in windows learnt from, with which each channel's level (its mean) is
    /// followed and the drift since judging began taken off the model's input (see
    /// [`level`](super::level)). 0: inputs are scored as they arrive.
    pub level_windows: u32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            learn_windows: 512,
            memory_windows: 8_640,
            tail_quantile: 0.98,
            accept_after: 0,
            drift_windows: 0,
            learn_below: 0.99,
            level_windows: 300,
        }
    }
}

/// One stream's calibrator. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    /// Model version whose energies the histogram holds (energies of two versions do not mix).
    pub version: String,
    /// Windows added since learning began.
    pub seen: u64,
    /// Weight the next window adds (grows by 1 / (1 - 1/memory) per window: older ones fade).
    weight: f64,
    /// The healthy windows' level of log10 energy (with `drift_windows`).
    #[serde(default)]
    level: f64,
    /// Bin index of `mass[0]`.
    first: i32,
    /// Weighted counts of bins `first ..`.
    mass: Vec<f64>,
}

/// The tail model fitted to a histogram.
struct Tail {
    total: f64,
    /// log10 energy of the tail quantile.
    at: f64,
    /// Share of the mass above `at` (1 - tail quantile).
    share: f64,
    /// Mean excess of log10 energy above `at` (the exponential's scale).
    scale: f64,
}

fn bin_of(log10: f64) -> i32 {
    // Saturating float-to-int cast; NaN maps to 0 (callers reject non-finite energies first).
    (((log10 - LOG10_MIN) / WIDTH).floor() as i32).clamp(0, BINS - 1)
}

fn low_edge(bin: i32) -> f64 {
    LOG10_MIN + f64::from(bin) * WIDTH
}

fn log10_energy(energy: f32) -> f64 {
    f64::from(energy).max(1e-30).log10()
}

impl Calibrator {
    /// An empty calibrator for a model version: it starts learning.
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            ..Self::default()
        }
    }

    /// Whether the stream is still learning (fewer than `learn_windows` windows added).
    pub fn learning(&self, cal: &Calibration) -> bool {
        self.seen < u64::from(cal.learn_windows)
    }

    /// Forgets everything and learns again (a new normal was accepted).
    pub fn relearn(&mut self) {
        *self = Self::new(&self.version);
    }

    /// The value the histogram holds for `energy`: log10 energy, relative to the level when the
    /// stream has one.
    fn relative(&self, energy: f32, cal: &Calibration) -> f64 {
        let u = log10_energy(energy);
        if cal.drift_windows == 0 || self.seen == 0 {
            u
        } else {
            // Centred in the histogram's range, so a level at either end keeps its tails.
            u - self.level
        }
    }

    /// Adds a healthy window's energy. Non-finite energies are never healthy and are ignored.
    pub fn add(&mut self, energy: f32, cal: &Calibration) {
        if !energy.is_finite() {
            return;
        }
        let value = self.relative(energy, cal);
        if cal.drift_windows > 0 {
            // The level: the plain mean while learning, then an exponential average.
            let u = log10_energy(energy);
            let n = (self.seen as f64 + 1.0).min(f64::from(cal.drift_windows));
            self.level = if self.seen == 0 {
                u
            } else {
                self.level + (u - self.level) / n
            };
        }
        let bin = bin_of(value);
        if self.mass.is_empty() {
            self.first = bin;
            self.weight = 1.0;
        }
        if bin < self.first {
            let grow = usize::try_from(self.first - bin).unwrap_or(0);
            self.mass.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.first = bin;
        }
        let at = usize::try_from(bin - self.first).unwrap_or(0);
        if at >= self.mass.len() {
            self.mass.resize(at + 1, 0.0);
        }
        self.mass[at] += self.weight;
        self.seen += 1;
        let memory = f64::from(cal.memory_windows.max(1));
        self.weight /= 1.0 - 1.0 / (memory + 1.0);
        if self.weight > RESCALE_AT {
            let w = self.weight;
            self.mass.iter_mut().for_each(|m| *m /= w);
            self.weight = 1.0;
        }
    }

    /// The probability that a healthy window of this stream has a lower energy: 1 minus the tail
    /// probability of `energy`. A non-finite energy gives 1; an empty histogram gives 0.
    pub fn probability(&self, energy: f32, cal: &Calibration) -> f64 {
        if !energy.is_finite() {
            return 1.0;
        }
        match self.tail_fit(cal.tail_quantile) {
            None => 0.0,
            Some(t) => 1.0 - self.tail(self.relative(energy, cal), &t),
        }
    }

    fn tail_fit(&self, quantile: f64) -> Option<Tail> {
        let total: f64 = self.mass.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let target = (1.0 - quantile).clamp(0.0, 1.0) * total;
        // Walk down from the top bin until the mass above reaches the target; `at` interpolates
        // inside the bin where it does (mass spread evenly over a bin's log width).
        let mut above = 0.0;
        let mut excess = 0.0; // sum of mass * (its log10 energy), above `at`, for the mean
        let mut at = low_edge(self.first);
        for (i, &m) in self.mass.iter().enumerate().rev() {
            let lo = low_edge(self.first + i32::try_from(i).unwrap_or(0));
            if m <= 0.0 {
                continue;
            }
            if above + m >= target {
                let part = target - above; // mass of this bin that lies above `at`
                at = lo + WIDTH * (1.0 - part / m);
                excess += part * (at + lo + WIDTH) / 2.0;
                above = target;
                break;
            }
            above += m;
            excess += m * (lo + WIDTH / 2.0);
        }
        let scale = if above > 0.0 {
            (excess / above - at).max(WIDTH / 2.0)
        } else {
            WIDTH / 2.0
        };
        Some(Tail {
            total,
            at,
            share: above / total,
            scale,
        })
    }

    fn tail(&self, u: f64, t: &Tail) -> f64 {
        if u > t.at {
            return t.share * (-(u - t.at) / t.scale).exp();
        }
        let bin = bin_of(u);
        let mut above = 0.0;
        for (i, &m) in self.mass.iter().enumerate() {
            let b = self.first + i32::try_from(i).unwrap_or(0);
            if b > bin {
                above += m;
            } else if b == bin {
                above += m * ((low_edge(b) + WIDTH - u) / WIDTH).clamp(0.0, 1.0);
            }
        }
        (above / t.total).clamp(t.share, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic uniform (0, 1) sequence (splitmix64).
    fn uniforms(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            })
            .collect()
    }

    fn fed(energies: impl IntoIterator<Item = f64>, cal: &Calibration) -> Calibrator {
        let mut c = Calibrator::new("v1");
        for e in energies {
            c.add(e as f32, cal);
        }
        c
    }

    fn no_forgetting() -> Calibration {
        Calibration {
            memory_windows: u32::MAX,
            ..Calibration::default()
        }
    }

    #[test]
    fn pareto_tail_is_recovered_beyond_the_data() {
        // Pareto(alpha = 2, x_min = 1): P(X >= x) = x^-2. Its log is exponential, which is the
        // tail model, so the probability must hold far beyond the largest energy seen.
        let cal = no_forgetting();
        // 200,000 windows: 4,000 over the tail quantile, so the tail's scale is known to ~2 %.
        let c = fed(uniforms(1, 200_000).into_iter().map(|u| u.powf(-0.5)), &cal);
        for (x, tolerance) in [(3.0f32, 0.1), (10.0, 0.15), (100.0, 0.3), (1_000.0, 0.45)] {
            let want = f64::from(x).powi(-2);
            let got = 1.0 - c.probability(x, &cal);
            assert!(
                (got / want).ln().abs() < tolerance,
                "x {x}: tail {got:e}, want {want:e}"
            );
        }
    }

    #[test]
    fn bulk_quantiles_of_an_exponential_are_the_histograms() {
        let cal = no_forgetting();
        let c = fed(uniforms(2, 50_000).into_iter().map(|u| -u.ln()), &cal);
        // Exponential(1): P(X < x) = 1 - e^-x.
        for x in [0.1f32, 0.5, 1.0, 2.0, 3.0] {
            let want = 1.0 - (-f64::from(x)).exp();
            let got = c.probability(x, &cal);
            assert!((got - want).abs() < 0.02, "x {x}: {got} want {want}");
        }
        // Beyond the 0.98 quantile (3.9) the tail model takes over, still close (the
        // exponential in log-energy is only an approximation of this tail: within a factor 2).
        let got = 1.0 - c.probability(7.0, &cal);
        let want = (-7.0f64).exp();
        assert!((got / want).ln().abs() < 0.7, "{got:e} vs {want:e}");
        assert!(c.probability(50.0, &cal) > 0.9999);
    }

    #[test]
    fn empty_constant_and_non_finite() {
        let cal = Calibration::default();
        let mut c = Calibrator::new("v1");
        assert_eq!(c.probability(1.0, &cal), 0.0);
        assert!(c.learning(&cal));
        for _ in 0..1_000 {
            c.add(0.5, &cal);
        }
        assert!(!c.learning(&cal));
        assert!(
            c.probability(0.5, &cal) < 0.99,
            "the usual energy is not anomalous"
        );
        assert!(c.probability(5.0, &cal) > 0.999_99, "ten times it is");
        assert_eq!(c.probability(f32::NAN, &cal), 1.0);
        assert_eq!(c.probability(f32::INFINITY, &cal), 1.0);
        c.add(f32::NAN, &cal);
        assert_eq!(c.seen, 1_000, "a non-finite energy is never added");
        // Zero and negative energies land in the lowest bin instead of failing.
        c.add(0.0, &cal);
        c.add(-1.0, &cal);
        assert!(c.probability(0.0, &cal) < 0.5);
    }

    #[test]
    fn forgets_with_its_time_constant() {
        // 5,000 windows around 1.0, then 5,000 around 10.0: with a memory of 500 windows the
        // old level has faded (weight e^-10), so 10.0 is ordinary and 1.0 is low.
        let cal = Calibration {
            memory_windows: 500,
            ..Calibration::default()
        };
        let u = uniforms(3, 10_000);
        let c = fed(
            u.iter()
                .enumerate()
                .map(|(i, &u)| if i < 5_000 { 1.0 } else { 10.0 } * (0.9 + 0.2 * u)),
            &cal,
        );
        assert!(c.probability(10.0, &cal) < 0.9);
        assert!(c.probability(1.0, &cal) < 0.01);
        // Without forgetting, 1.5 (between the two levels) sits at the median of the mixture:
        // same windows, different memory, different answers.
        let all = fed(
            u.iter()
                .enumerate()
                .map(|(i, &u)| if i < 5_000 { 1.0 } else { 10.0 } * (0.9 + 0.2 * u)),
            &no_forgetting(),
        );
        assert!((all.probability(1.5, &no_forgetting()) - 0.5).abs() < 0.01);
    }

    #[test]
    fn survives_a_serde_round_trip_and_rescaling() {
        let cal = Calibration {
            memory_windows: 10,
            ..Calibration::default()
        };
        // weight grows by 1.1 per window: 10,000 windows rescale it many times
        let c = fed(uniforms(4, 10_000).into_iter().map(|u| 1.0 + u), &cal);
        assert!(c.weight.is_finite() && c.mass.iter().all(|m| m.is_finite()));
        let json = serde_json::to_string(&c).unwrap();
        let back: Calibrator = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.probability(1.5, &cal), c.probability(1.5, &cal));
    }

    #[test]
    fn relearn_starts_over_for_the_same_version() {
        let cal = Calibration::default();
        let mut c = fed((0..1_000).map(|_| 1.0), &cal);
        c.relearn();
        assert_eq!(c, Calibrator::new("v1"));
        assert!(c.learning(&cal));
    }
}
