//! The calibrated anomaly probability of a stream: how unusual is this energy under the
//! stream's own recent healthy behaviour?
//!
//! Each stream keeps a histogram of the logarithm of its healthy windows' energies that forgets
//! exponentially (time constant [`Calibration::memory_windows`]), and reads a window's energy
//! against it as peaks-over-threshold (SPOT, Siffer et al., KDD 2017): below the
//! `tail_quantile` of the healthy energies the tail probability is the histogram's own; above
//! it, the excesses of log-energy are modelled as exponential (the generalised Pareto
//! distribution with shape 0 on log-energy, i.e. a power-law tail of energy), so a probability
//! of 0.99999 still means something beyond the largest energy seen. The exponential's scale is
//! the mean excess, each excess read no further than ten times the scale the median excess
//! gives: one garbled window among the ten-odd excesses of a learning period (a sensor's 65535)
//! would otherwise blind the stream for some 20,000 windows. The probability reported is
//! `1 - P(energy at least this high)`, so `0.999` means the same on every stream and every
//! model.
//!
//! Only windows judged healthy are added (the caller's rule: never a window over the alert
//! probability or [`Calibration::learn_below`], never one of a raised alert; the one exception
//! is a window the stream's season vouches for, [`season`](super::season)), so the histogram
//! follows slow drift of healthy behaviour but cannot learn a fault: a drift moves the bulk of
//! the energies a little at a time, while a fault that climbs every window keeps landing in
//! the tail, is never learnt, and so climbs out of it. The first [`Calibration::learn_windows`] windows of a
//! stream (or of a new model version on it) are learning: every window is added, none judged
//! (fewer when a first version's seed was shorter, [`Calibrator::learnt_from_seed`]).
//!
//! With [`Calibration::per_channel`], each channel's part of the energy (its share of the
//! squared residual; each group of mel bands' for audio) has a histogram of its own, read the
//! same way, and a window's tail probability is the smallest of the energy's and its parts',
//! times their number (Bonferroni): a fault on one sensor of eight, diluted in the sum by the
//! other seven, stands out in its own part. On the SKAB valve1 dev set this lifted F1 from
//! 0.75 to 0.83 (docs/EVALUATION-ROUNDS.md, round eleven).
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
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Windows a stream (or a new model on it) learns from before it is judged.
    pub learn_windows: u32,
    /// Windows a new version of a model learns each stream from in shadow, judged beside the
    /// served version, before it may serve (a retrained version is promoted then). Longer than
    /// `learn_windows`: the shadow's calibration is what the stream is judged by from the
    /// promotion on, and a tail read from a few hundred windows raises more false alerts.
    pub warm_windows: u32,
    /// Time constant of forgetting, in healthy windows: an energy seen this many healthy windows
    /// ago weighs 1/e of the newest.
    pub memory_windows: u32,
    /// Quantile of the healthy energies above which the tail is modelled (SPOT's initial
    /// threshold level). An alert probability must be above it.
    pub tail_quantile: f64,
    /// Excesses each channel's part ([`Calibration::per_channel`]) fits its tail from at
    /// least: while fewer than `part_tail_excesses / (1 - tail_quantile)` windows are learnt
    /// (2,000 at the defaults), counted as the memory weighs them (with `memory_windows` 8,640,
    /// 2,000 weigh as much as about 2,270 windows; never, below 2,000), a part's tail is
    /// modelled above the quantile that leaves this
    /// many over it instead of above `tail_quantile`. A window is read against the most
    /// unusual of its energy and its parts, so of nine tails fitted from a handful of
    /// excesses each, the one fitted worst sets the probability (SKAB, 385 windows learnt and
    /// 8 channels: false alarms on a fifth of its healthy rows; round forty-one of
    /// docs/EVALUATION-ROUNDS.md). 0: every tail above `tail_quantile`. One channel has no
    /// parts.
    pub part_tail_excesses: u32,
    /// Time constant, in healthy windows, of the stream's energy level (DSPOT's drift term):
    /// each window is read relative to the level of the healthy windows before it, so a drift
    /// slower than this is followed and a rise faster than it stands out. 0: no level, read
    /// energies as they are.
    pub drift_windows: u32,
    /// Judged windows are learnt only when healthy and their probability is under this (the
    /// calibration's: the energy and each part each on its own, [`Calibrator::learn`]; the
    /// input level's: the window's probability): a fault that rises a little every window
    /// stays in the tail instead of dragging the tail up with it. 0: every healthy window.
    pub learn_below: f64,
    /// Windows learnt from over which each channel's level (its mean) is followed (the mean
    /// of the last this many), and the drift since judging began taken off the model's input
    /// (see [`level`](super::level)). 0: inputs are scored as they arrive.
    pub level_windows: u32,
    /// Each channel's part of a window's energy (each group of mel bands' for audio) is
    /// calibrated on its own as well, and a window is as unusual as the most unusual of its
    /// energy and its parts, corrected for their number (see [`Calibrator::probability`]).
    /// false: the whole energy alone.
    pub per_channel: bool,
    /// The restless raise: a second way to raise, for a stream that sits in its tail for a
    /// long stretch (see [`restless`](super::restless)).
    pub restless: super::Restless,
    /// The quiet after a clear (see [`detector`](super::detector)).
    pub quiet: super::Quiet,
    /// How much likelier the bar of a stream judged after a short learning period is (NAB's
    /// rule, [`Calibrator::learnt_from_seed`]): its alert probability `a` becomes
    /// `1 - (1 - a) x thin_widen` (0.999 for 0.9999 at 10; [`Calibrator::alert_bar`]). 1: the
    /// same bar as every stream.
    pub thin_widen: f64,
    /// Each stream's season: its windows judged against the same moment of earlier days or
    /// weeks as well (see [`season`](super::season)).
    pub seasons: super::Seasons,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            learn_windows: 512,
            warm_windows: 2_016,
            memory_windows: 8_640,
            tail_quantile: 0.98,
            part_tail_excesses: 40,
            drift_windows: 0,
            learn_below: 0.99,
            level_windows: 300,
            per_channel: true,
            restless: super::Restless::default(),
            quiet: super::Quiet::default(),
            thin_widen: 10.0,
            seasons: super::Seasons::default(),
        }
    }
}

impl Calibration {
    /// The bar of a stream judged after a short learning period whose alert probability is
    /// `alert`: `1 - (1 - alert) x thin_widen` ([`Calibrator::alert_bar`]).
    pub fn thin_bar(&self, alert: f64) -> f64 {
        1.0 - (1.0 - alert) * self.thin_widen
    }

    /// The calibration of a shadow's judge: it learns each stream for `warm_windows`, and it
    /// follows no input level (a shadow scores windows as they arrive; the drift the scorer
    /// takes off is the served version's) and no season (the served judge's carries on: it
    /// does not depend on the model).
    pub fn shadow(&self) -> Self {
        Self {
            learn_windows: self.warm_windows,
            level_windows: 0,
            seasons: super::Seasons {
                acf: 0.0,
                ..self.seasons.clone()
            },
            ..self.clone()
        }
    }

    /// Whether a healthy judged window read as `reading` is learnt: the energy and each part
    /// under `learn_below` ([`Calibrator::learn`]).
    pub fn learns(&self, reading: &Reading) -> bool {
        self.learn_below <= 0.0 || reading.highest < self.learn_below
    }

    /// These settings with a stream's own values in place of the ones they replace.
    pub fn tuned(&self, own: &StreamTuning) -> Self {
        let mut c = self.clone();
        let take = |own: Option<u32>, shared: &mut u32| *shared = own.unwrap_or(*shared);
        take(own.learn_windows, &mut c.learn_windows);
        take(own.warm_windows, &mut c.warm_windows);
        take(own.memory_windows, &mut c.memory_windows);
        take(own.drift_windows, &mut c.drift_windows);
        take(own.level_windows, &mut c.level_windows);
        take(own.restless_windows, &mut c.restless.windows);
        take(own.quiet_windows, &mut c.quiet.windows);
        if own.no_season {
            c.seasons.acf = 0.0;
        }
        c
    }
}

/// A stream's own values of `[detect]` settings (`[[streams]]`), each replacing the shared
/// one for that stream alone ([`Calibration::tuned`]): the settings counted in windows (a
/// count of windows is a time only at one stream's rate, and one daemon may judge a vibration
/// stream at 15 windows a second beside a thermometer at one a minute; `None`: the shared
/// value), and whether the stream may have a season.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StreamTuning {
    /// [`Calibration::learn_windows`].
    pub learn_windows: Option<u32>,
    /// [`Calibration::warm_windows`].
    pub warm_windows: Option<u32>,
    /// [`Calibration::memory_windows`].
    pub memory_windows: Option<u32>,
    /// [`Calibration::drift_windows`].
    pub drift_windows: Option<u32>,
    /// [`Calibration::level_windows`].
    pub level_windows: Option<u32>,
    /// The restless raise's windows ([`Restless::windows`](super::Restless)).
    pub restless_windows: Option<u32>,
    /// The quiet after a clear's windows ([`Quiet::windows`](super::Quiet)).
    pub quiet_windows: Option<u32>,
    /// No season for this stream (`season = false`: [`Seasons::acf`](super::Seasons) 0 for it
    /// alone), though its samples carry times: a machine idle on a holiday it should not be
    /// paged for, or a day or week that is not its measure.
    pub no_season: bool,
}

impl StreamTuning {
    /// Whether the stream sets none of its own.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One stream's calibrator. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    /// Model version whose energies the histogram holds (energies of two versions do not mix).
    pub version: String,
    /// Windows added since learning began.
    pub seen: u64,
    /// The healthy windows' level of log10 energy (with `drift_windows`).
    #[serde(default)]
    level: f64,
    /// The window's whole energy (flattened: the checkpoint's format from before `channels`).
    #[serde(flatten)]
    energy: Histogram,
    /// Each channel's part of the energy (or each group's; with `per_channel`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channels: Vec<Histogram>,
    /// Windows added to `channels`: fewer than `seen` when they began later (a checkpoint
    /// written before them, a stream whose channel count changed).
    #[serde(default)]
    channels_seen: u64,
    /// Windows learnt before judging when fewer than [`Calibration::learn_windows`]: the
    /// stream's learning period was a shorter seed ([`Calibrator::learnt_from_seed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learn_until: Option<u64>,
}

/// A forgetting histogram of log10 energy, read as peaks over threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Histogram {
    /// Weight the next window adds (grows by 1 / (1 - 1/(memory + 1)) per window: older ones fade).
    weight: f64,
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

/// Excesses over a tail's threshold are read no further than this many times the scale their
/// median gives ([`Histogram::tail_fit`]): a garbled window does not set the scale.
const TAIL_CLIP: f64 = 10.0;

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

    /// Whether the stream is still learning (fewer than `learn_windows` windows added, or
    /// than its seed's, [`Calibrator::learnt_from_seed`]).
    pub fn learning(&self, cal: &Calibration) -> bool {
        self.seen < self.learn_count(cal)
    }

    /// Windows learnt before the stream is judged.
    fn learn_count(&self, cal: &Calibration) -> u64 {
        let configured = u64::from(cal.learn_windows);
        self.learn_until.map_or(configured, |n| n.min(configured))
    }

    /// The bar a window's probability must reach to count toward a raise, for a stream whose
    /// alert probability is `alert`: `alert` itself, or for a thin stream, judged after a
    /// learning period shorter than `learn_windows` ([`Calibrator::learnt_from_seed`]),
    /// `1 - (1 - alert) x thin_widen`, no lower than the tail quantile. A thin stream has little
    /// history to be judged against: on look-alikes of NAB's short streams (217-336 windows
    /// learnt) the stream's own bar missed half their anomalies, where a miss costs as much as
    /// nine false alerts (docs/EVALUATION-ROUNDS.md, round twenty-one).
    pub fn alert_bar(&self, alert: f64, cal: &Calibration) -> f64 {
        if !self.thin(cal) || cal.thin_widen <= 1.0 {
            return alert;
        }
        cal.thin_bar(alert).max(cal.tail_quantile)
    }

    /// Whether the stream was judged after fewer windows than `learn_windows` (a short seed).
    pub fn thin(&self, cal: &Calibration) -> bool {
        self.learn_count(cal) < u64::from(cal.learn_windows)
    }

    /// Ends learning after the `windows` of a seed shorter than `learn_windows` when they are
    /// at least a quarter of it (NAB's rule: learn on the probationary period, then judge).
    /// A stream seeded with fewer (it joined the learning period late) learns on to
    /// `learn_windows`. Call it before adding the seed.
    pub fn learnt_from_seed(&mut self, windows: usize, cal: &Calibration) {
        let n = u64::try_from(windows).unwrap_or(u64::MAX);
        let configured = u64::from(cal.learn_windows);
        if n < configured && n >= configured / 4 {
            self.learn_until = Some(n);
        }
    }

    /// Forgets everything and learns again (a new normal was accepted).
    pub fn relearn(&mut self) {
        *self = Self::new(&self.version);
    }

    /// The value the histogram holds for `energy`: log10 energy, relative to the level when the
    /// stream has one.
    fn relative(&self, energy: f32, cal: &Calibration) -> f64 {
        let u = log10_energy(energy);
        if cal.drift_windows == 0 {
            u
        } else if self.seen == 0 {
            0.0 // the first window sets the level (`add`): it is at it
        } else {
            // Centred in the histogram's range, so a level at either end keeps its tails.
            u - self.level
        }
    }

    /// Adds a judged healthy window, but only while its energy and each of its parts are each
    /// under [`Calibration::learn_below`] in their own histogram (not corrected for their
    /// number; `reading` is this window's, from [`Calibrator::read`]): an energy or a part
    /// that climbs a little every window stays in its tail instead of dragging the tail up
    /// with it. Parts whose histograms are still learning (they began later than the
    /// stream's) do not hold a window back.
    pub fn learn(&mut self, energy: f32, parts: &[f32], reading: &Reading, cal: &Calibration) {
        if cal.learns(reading) {
            self.add(energy, parts, cal);
        }
    }

    /// Whether nothing was ever added or named (a default calibrator).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `parts` are read: per channel, as many as the histograms, which have learnt.
    fn channels_ready(&self, parts: &[f32], cal: &Calibration) -> bool {
        cal.per_channel
            && parts.len() > 1
            && parts.len() == self.channels.len()
            && self.channels_seen >= self.learn_count(cal)
    }

    /// Adds a window while learning: its energy and, with [`Calibration::per_channel`], each
    /// channel's part of it (`parts`; empty when unknown). Non-finite energies are never
    /// healthy and are ignored, as are parts that are not all finite.
    pub fn add(&mut self, energy: f32, parts: &[f32], cal: &Calibration) {
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
        self.energy.add(value, cal.memory_windows);
        self.seen += 1;
        if cal.per_channel && parts.len() > 1 && parts.iter().all(|p| p.is_finite()) {
            if self.channels.len() != parts.len() {
                self.channels = vec![Histogram::default(); parts.len()];
                self.channels_seen = 0;
            }
            for (h, &p) in self.channels.iter_mut().zip(parts) {
                h.add(log10_energy(p), cal.memory_windows);
            }
            self.channels_seen += 1;
        }
    }

    /// The probability that a healthy window of this stream is less unusual: 1 minus the tail
    /// probability of `energy`. A non-finite energy gives 1; an empty histogram gives 0.
    ///
    /// With [`Calibration::per_channel`] and `parts` (each channel's part of the energy) whose
    /// channels have learnt as long as the stream, the tail probability is the smallest of the
    /// energy's and each part's, times the number of them (Bonferroni's correction, so a
    /// healthy window still reaches a probability `p` at most `1 - p` of the time): a fault on
    /// one channel of many shows in its own part long before it moves the sum.
    pub fn probability(&self, energy: f32, parts: &[f32], cal: &Calibration) -> f64 {
        self.read(energy, parts, cal).probability
    }

    /// [`Calibrator::probability`], with the part that was most unusual for its own channel.
    pub fn read(&self, energy: f32, parts: &[f32], cal: &Calibration) -> Reading {
        let certain = Reading {
            probability: 1.0,
            highest: 1.0,
            unusual: None,
        };
        if !energy.is_finite() {
            return certain;
        }
        let Some(whole) =
            self.energy
                .tail_probability(self.relative(energy, cal), cal.tail_quantile, 0)
        else {
            return Reading {
                probability: 0.0,
                highest: 0.0,
                unusual: None,
            };
        };
        if !self.channels_ready(parts, cal) {
            return Reading {
                probability: 1.0 - whole,
                highest: 1.0 - whole,
                unusual: None,
            };
        }
        let mut most: Option<(usize, f64)> = None;
        for (i, (h, &p)) in self.channels.iter().zip(parts).enumerate() {
            if !p.is_finite() {
                return certain;
            }
            if let Some(t) =
                h.tail_probability(log10_energy(p), cal.tail_quantile, cal.part_tail_excesses)
                && most.is_none_or(|(_, m)| t < m)
            {
                most = Some((i, t));
            }
        }
        let tail = most.map_or(whole, |(_, t)| t.min(whole));
        Reading {
            probability: 1.0 - (tail * (parts.len() + 1) as f64).min(1.0),
            highest: 1.0 - tail,
            unusual: most.map(|(channel, t)| Unusual {
                channel,
                probability: 1.0 - t,
            }),
        }
    }
}

/// A window read against its stream's calibration ([`Calibrator::read`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The window's probability ([`Calibrator::probability`]).
    pub probability: f64,
    /// The highest probability of the energy and each part, each alone (not corrected):
    /// what [`Calibrator::learn`] holds against [`Calibration::learn_below`].
    pub highest: f64,
    /// With parts: the one most unusual for its own channel.
    pub unusual: Option<Unusual>,
}

/// The part of a window most unusual for its own channel (or group of mel bands).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unusual {
    /// Its index among the window's parts.
    pub channel: usize,
    /// Its probability under its own channel's calibration alone (not corrected).
    pub probability: f64,
}

impl Histogram {
    /// Adds one value (log10 energy) with the weight of the newest window.
    fn add(&mut self, value: f64, memory_windows: u32) {
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
        let memory = f64::from(memory_windows.max(1));
        self.weight /= 1.0 - 1.0 / (memory + 1.0);
        if self.weight > RESCALE_AT {
            let w = self.weight;
            self.mass.iter_mut().for_each(|m| *m /= w);
            self.weight = 1.0;
        }
    }

    /// P(a healthy value at least `u`), its tail modelled above `quantile` ([`Self::tail_fit`]);
    /// `None` while empty.
    fn tail_probability(&self, u: f64, quantile: f64, min_excesses: u32) -> Option<f64> {
        let t = self.tail_fit(quantile, min_excesses)?;
        Some(self.tail(u, &t))
    }

    /// The tail above `quantile`, or above a lower one (no lower than 0.5) while too few windows
    /// are learnt to leave `min_excesses` over it ([`Calibration::part_tail_excesses`]; 0: none).
    fn tail_fit(&self, quantile: f64, min_excesses: u32) -> Option<Tail> {
        let total: f64 = self.mass.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let quantile = if min_excesses == 0 {
            quantile
        } else {
            let windows = total / self.weight;
            (1.0 - f64::from(min_excesses) / windows).clamp(0.5, quantile)
        };
        let target = (1.0 - quantile).clamp(0.0, 1.0) * total;
        // Walk down from the top bin until the mass above reaches the target; `at` interpolates
        // inside the bin where it does (mass spread evenly over a bin's log width). On the way,
        // the median of the excesses: where half the target's mass lies above.
        let (half, mut median) = (target / 2.0, None);
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
                if median.is_none() && part > 0.0 {
                    median = Some(lo + WIDTH - (lo + WIDTH - at) * ((half - above) / part));
                }
                above = target;
                break;
            }
            if median.is_none() && above + m >= half {
                median = Some(lo + WIDTH * (1.0 - (half - above) / m));
            }
            above += m;
            excess += m * (lo + WIDTH / 2.0);
        }
        if above <= 0.0 {
            return Some(Tail {
                total,
                at,
                share: 0.0,
                scale: WIDTH / 2.0,
            });
        }
        // One garbled window (a 65535 sentinel) among the few excesses a learning period
        // leaves would set the mean excess for thousands of windows: each excess is read no
        // further than TAIL_CLIP times the scale the median gives (for an exponential tail the
        // median is the scale times ln 2), which a healthy tail passes once in 20,000. Only
        // the top bins can be past it.
        let median = median.unwrap_or(at);
        let cap = TAIL_CLIP * ((median - at) / std::f64::consts::LN_2).max(WIDTH / 2.0);
        for (i, &m) in self.mass.iter().enumerate().rev() {
            let centre = low_edge(self.first + i32::try_from(i).unwrap_or(0)) + WIDTH / 2.0;
            if centre - at <= cap {
                break;
            }
            excess -= m.max(0.0) * (centre - at - cap);
        }
        Some(Tail {
            total,
            at,
            share: above / total,
            scale: (excess / above - at).max(WIDTH / 2.0),
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
mod tests;
