//! Seasons: a window also judged against the same moment of earlier days or weeks.
//!
//! A model that sees a two-hour window cannot tell a Thursday from a Sunday: a holiday's quiet
//! traffic, or a machine running on a day it never runs, is an ordinary window at the wrong
//! time (NAB's `nyc_taxi` holidays, docs/EVALUATION-ROUNDS.md round twenty-two). A stream whose
//! samples carry timestamps and are minutes apart is watched for [`Seasons::weeks`] weeks;
//! then, for a day and for a week, each channel's samples are read as their departures from
//! the mean of the day's (or week's) samples before them, and the departures'
//! autocorrelation at that lag is measured (a level that climbs or wanders correlates with
//! itself at every lag; its departures do not: round twenty-nine). The stronger of the two,
//! when its mean over the channels (those not constant: a set point or a status has no
//! season, and is left out) is at least [`Seasons::acf`], becomes the stream's season
//! (otherwise it has none, for good). The first season watched has none before it: it departs
//! as the season reads it afterwards (from its mean carried back along the climb to the
//! second's), so two weeks watched are enough for a week.
//!
//! A day need not wait for the weeks: from [`Seasons::days`] days watched, at the end of each
//! day, a day strong enough is chosen as it would be after the weeks and judges the stream
//! while the watch goes on; when the weeks are watched the season is chosen over them as if it
//! had not been, and replaces it (a week, the day again, or none). It judges but does not
//! teach: a week's weekends recur a day apart (round thirty-eight). Without it a stream of two
//! weeks, NAB's AWS and artificial ones, is never judged by a season.
//!
//! From then on every window has a *seasonal energy*. Each sample is read as its departure from the
//! stream's level over the season before it (the mean of the newest season's samples, which a daily
//! or weekly cycle does not move and a drift does; a sample not healthy counts there as what its
//! moment was expected to be, so a holiday week does not move it); the seasonal energy is the mean,
//! over the window's samples and channels, of the squared difference of that departure from the
//! mean departure of the same moment in the last [`Seasons::memory`] seasons, each channel over its
//! departures' variance. A plant that warms over the spring, or traffic that grows, drifts away
//! from neither. It is calibrated by a [`Calibrator`] of its own (the same tail model as the
//! model's energy), seeded on the windows of the weeks watched, and it learns only the windows the
//! stream's calibration learns (healthy, no alert up) while its own probability is under
//! `learn_below`. What each moment is expected to be follows healthy windows only too
//! ([`Season::keep`]): a holiday is not expected a season later. A window's probability is the
//! larger of its energy's and its seasonal energy's.
//!
//! A season also teaches ([`Seasons::teaches`]): a window ordinary for its moment is learnt by
//! the energy's calibration even when its energy is unusual, if it *recurs*: its energy is no
//! more unusual than its moment's was a season before ([`Season::recurs`]), and no alert is
//! up. A weekend the learning period never showed has energies the model finds unusual, which
//! the energy's calibration would otherwise never learn (it learns healthy windows only): it
//! would be paged every weekend. A holiday or a new schedule, unusual for its moment, is never
//! taught; nor is a fault that grows, more unusual at each moment than a season before, even
//! one that leaves each moment's values where they were (the model sees it, the season not).
//!
//! What is held: while a stream is watched, its samples (at most [`MAX_VALUES`] values: two
//! weeks of 5-minute samples are 4,032 a channel; a week of 1-second ones is more than that,
//! so a fast stream never has a season and holds nothing) and how unusual each sample's window
//! was, and from the day chosen early on, that day's season too (what is held below, for a
//! day); once the season is chosen, only what each moment of it is expected to be (a running
//! mean over the last `memory` seasons it holds: 2,016 values a channel for a week of 5-minute
//! samples, and how many seasons each moment holds, 2,016 small counts, fewer than the seasons
//! passed where a gap skipped it or it was not healthy), how unusual each moment was a season
//! ago (2,016 more), the newest season's samples
//! (the level they depart from: 2,016 values a channel more) and the newest window's
//! residuals. A season saved before departures reads its samples as they are.
//! A gap in the timestamps moves the moment on by the samples missed, each counted in the
//! level as what its moment was expected to be (while watched, a gap of up to an hour beyond
//! a window is filled with the sample before it; a longer one watches the stream again), also
//! when the samples are missing inside a window (its span a whole number of steps longer than
//! its samples make: a sensor that skips readings keeps its rate; a time sent twice is taken
//! once). Times that jitter (a gateway's queue) are read to the nearest step, and a step
//! within 0.5 % of a whole number of seconds that divides a day is taken as that (a late
//! first sample would otherwise hold 300.87 s for good). A window off the step (a sample far
//! off its time, a clock set back to the epoch and synced again) is passed; a window's rows of
//! them in a row are a change of rate, which, like a change of channels, watches the stream
//! again. A window wholly before the newest sample taken is passed too (the same window
//! again), unless a window's rows of them came in a row: a clock set ahead, then put right,
//! from which the season reads on, its moments coming again as after a daylight-saving
//! change back (until the clock caught up, the stream once had no season, unsaid). A moment
//! that comes again (a clock set back, a daylight-saving change back, a source sending its
//! past again) is read again, not learnt twice. The weeks watched choose the season with their far outliers clipped (a garbled
//! reading, a sentinel such as 65535: more than 100 robust standard deviations out), and their
//! autocorrelation is measured with every sample and departure past 5 of them clipped too, so
//! one spike does not take a strong week away; only when such values are rare (one in 200 at
//! most: a pump that runs two hours a day has its spread in its idle hours, and its running
//! samples are its own).
//!
//! Moments follow a wall clock, [`Seasons::zone`]'s: a time sent with a zone, or as seconds
//! since the epoch, is read on that clock, so a shift that starts at 06:00 local time stays
//! at its moment when the clocks change (the moment moves on, or back, by the hour). Read on
//! UTC's clock instead, every day after a change would be an hour off, and those windows,
//! not healthy, would never move what their moments are expected to be.

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::{Calibration, Calibrator};
use crate::pipeline::RawWindow;

/// Most values (samples x channels) a stream's season holds while it is watched.
pub const MAX_VALUES: usize = 32_768;

const DAY_S: f64 = 86_400.0;
/// The largest squared residual a sample counts for ([`Season::take`]): far past any real
/// departure, and a window's sum of them (a million rows) stays a finite f32.
const RESIDUAL_MAX: f64 = 1e30;
/// The longest gap beyond a window a watch fills, in seconds.
const FILL_S: f64 = 3_600.0;

/// The season settings (`[detect] season_acf`, `season_weeks`, `season_memory`,
/// `season_zone`).
#[derive(Debug, Clone, PartialEq)]
pub struct Seasons {
    /// The autocorrelation at a day or a week a stream's channels need, on average, for the
    /// stream to have a season. 0: no seasons.
    pub acf: f64,
    /// Weeks of samples watched before the season is chosen.
    pub weeks: u32,
    /// Days of samples watched after which a day, when strong enough, judges the stream until
    /// the weeks are watched and the season chosen over them (a day or a week). 0: a day
    /// waits for the weeks too.
    pub days: u32,
    /// Seasons averaged into what a moment is expected to be.
    pub memory: u32,
    /// The zone whose wall clock a season's moments follow: a time with a zone (or seconds
    /// since the epoch) is read on this zone's clock, so a day's pattern kept by local time
    /// stays at its moment across a daylight-saving change. A time without a zone is read as
    /// the wall clock already.
    pub zone: TimeZone,
    /// A window whose seasonal probability is under this (ordinary for its moment of the
    /// season: more than half the windows of that moment are further from it) is learnt by
    /// the energy's calibration even when its energy is unusual, while no alert is up, if its
    /// energy is no more unusual than its moment's a season before ([`Season::recurs`]): a
    /// weekend or a daily moment the learning period never showed well is not a fault, and
    /// would otherwise be paged every time it comes back. 0: off.
    pub teaches: f64,
}

impl Default for Seasons {
    fn default() -> Self {
        Self {
            acf: 0.8,
            weeks: 2,
            days: 7,
            memory: 4,
            zone: TimeZone::UTC,
            teaches: 0.5,
        }
    }
}

impl Seasons {
    /// Whether seasons are on.
    pub fn on(&self) -> bool {
        self.acf > 0.0
    }
}

/// Where a stream's season stands (the `season` of its state message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Its samples are watched for [`Seasons::weeks`] weeks.
    Watching,
    /// Its season is a day (chosen early, after [`Seasons::days`] days, while still
    /// watched for its weeks, or when they are).
    Day,
    /// Its season is a week.
    Week,
    /// It has none (no timestamps, too fast, or no strong day or week), for good.
    None,
}

/// One stream's season. See the module documentation. A stream with none is saved as
/// `{"settled": true}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Season {
    /// Seconds between samples (0 before the first window with timestamps).
    #[serde(default, skip_serializing_if = "is_zero")]
    step_s: f64,
    /// The wall clock's reading of the newest sample taken ([`Time::wall`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    end_s: f64,
    /// When the newest sample taken was taken, in seconds since the epoch ([`Time::at`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    end_at: f64,
    /// Values per sample.
    #[serde(default, skip_serializing_if = "is_none")]
    channels: usize,
    /// While watched: the samples so far, interleaved by channel.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    history: VecDeque<f32>,
    /// While watched: the surprise of the window each sample ended (0 for one not judged),
    /// the season's first `echo` once chosen.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    history_echo: VecDeque<f32>,
    /// Whether the choice is made: the season is `period` samples, or none when it is 0.
    #[serde(default)]
    settled: bool,
    /// While watched: the day chosen after [`Seasons::days`] days, which judges the stream
    /// until the weeks are watched and the season is chosen over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    early: Option<Box<Season>>,
    /// The season in samples.
    #[serde(default, skip_serializing_if = "is_none")]
    period: usize,
    /// Each channel's variance over the weeks the season was chosen on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scale: Vec<f32>,
    /// What each moment of the season is expected to be, per channel (`period` x channels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    profile: Vec<f32>,
    /// How many seasons each moment's expected value holds (`period` values, at most
    /// `memory` counted): fewer than the seasons passed where a gap skipped it or it was not
    /// healthy. Empty in a season saved before it was kept: the seasons passed stand in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    folded: Vec<u8>,
    /// Samples taken into `profile` since the season began (the next one's moment is this
    /// modulo `period`).
    #[serde(default, skip_serializing_if = "is_naught")]
    taken: u64,
    /// Moments before it were taken before the wall clock went back (a clock put right, a
    /// daylight-saving change back, a source sending its past again): read again, not learnt
    /// twice.
    #[serde(default, skip_serializing_if = "is_naught")]
    retaken_until: u64,
    /// The newest samples' squared residuals, each summed over the channels over their
    /// variance (at most a window's).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    residuals: VecDeque<f32>,
    /// The calibration of the seasonal energies.
    #[serde(default, skip_serializing_if = "Calibrator::is_empty")]
    calibrator: Calibrator,
    /// How unusual the model's energy was at each moment a season ago (`period` values: its
    /// probability's surprise, -ln(1 - p); 0 for a moment not judged yet), for
    /// [`Season::recurs`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    echo: Vec<f32>,
    /// The newest season's samples (`period` x channels, oldest first; one not healthy as
    /// what its moment was expected to be), whose mean is the level each new sample is read
    /// against. Filled when the season is chosen; empty in a season saved before departures,
    /// which reads its samples as they are.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    recent: VecDeque<f32>,
    /// `recent`'s sum per channel (made again from it after a restart).
    #[serde(skip)]
    recent_sum: Vec<f64>,
    /// The newest window's samples not taken into `profile` yet, from moment `pending_from`:
    /// [`Season::keep`] takes them in only if the window was healthy.
    #[serde(skip)]
    pending: Vec<f32>,
    #[serde(skip)]
    pending_from: u64,
    /// The same samples as they came, for `recent`.
    #[serde(skip)]
    pending_raw: Vec<f32>,
    /// The newest window's new samples (0: none, or the window was not read).
    #[serde(skip)]
    newest: usize,
    /// Windows in a row too slow for the step held, passed while watched ([`Season::observe`]).
    #[serde(skip)]
    across: usize,
    /// Windows in a row wholly before the newest sample taken ([`Season::fresh`]).
    #[serde(skip)]
    behind: usize,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_none(n: &usize) -> bool {
    *n == 0
}

fn is_naught(n: &u64) -> bool {
    *n == 0
}

impl Season {
    /// Takes `window`'s new samples (`channels` per sample) and returns its seasonal energy
    /// once the stream has a season and each of the window's samples a moment to be read
    /// against, choosing the season when the weeks watched are complete (and seeding its
    /// calibration on them).
    pub fn observe(
        &mut self,
        window: &RawWindow,
        channels: usize,
        seasons: &Seasons,
        cal: &Calibration,
    ) -> Option<f32> {
        self.newest = 0;
        if !seasons.on() || (self.settled && self.period == 0) || channels == 0 {
            return None;
        }
        let rows = window.data.len() / channels;
        let zone = &seasons.zone;
        let (Some(start), Some(end)) = (time(&window.start, zone), time(&window.end, zone)) else {
            if !self.settled && self.step_s == 0.0 {
                self.settle_none(); // sample indices: a day is not known
            }
            return None; // (after times: one that does not read as a time is passed)
        };
        let span = end.at - start.at;
        if rows < 2 || !(span > 0.0 && span.is_finite()) {
            return None;
        }
        let step = self.step(span, rows);
        let day = (DAY_S / step).round() as usize;
        let watched = seasons.weeks.max(1) as usize * 7 * day;
        let slow = 7 * day < 2 * rows || day == 0;
        // Off the held step: a window across a clock set forward (a sensor that booted at the
        // epoch, then synced; an outage), or one with a sample far off its time, is passed.
        // A window's rows of them in a row are a new rate, which starts the watch again
        // (`fresh`). Early in a watch there is little to lose: a first window with a gap in
        // it (a step too long) is put right by the next whole one at once.
        let off = self.step_s > 0.0 && step != self.step_s;
        let held_day = (DAY_S / self.step_s).round() as usize;
        let invested = self.settled || self.history.len() >= held_day.saturating_mul(channels);
        if off && (invested || slow) && self.across < rows {
            self.across += 1;
            return None;
        }
        self.across = 0;
        if !self.settled && (watched * channels > MAX_VALUES || slow) {
            // Too fast for its weeks to be held, or a week is no longer than two windows.
            self.settle_none();
            return None;
        }
        let (moved, fresh) = self.fresh(end, step, rows, channels);
        if fresh == 0 {
            return None; // the same window again, or one out of order
        }
        (self.end_s, self.end_at) = (end.wall, end.at);
        let new = &window.data[(rows - fresh) * channels..];
        self.newest = fresh;
        if !self.settled {
            self.move_history(moved);
            self.history.extend(new);
            self.history_echo.extend(std::iter::repeat_n(0.0, fresh));
            if self.history.len() < watched * channels {
                return self.early_day(window, day, fresh, seasons, cal);
            }
            self.early = None;
            return self.choose(&[day, 7 * day], rows, fresh, seasons, cal);
        }
        // A gap or a clock change: the moments the wall clock moved on by pass (or come
        // again), and the residuals before it end. Each moment passed counts in the level as
        // what it was expected to be, so the level stays the mean of one whole season.
        if moved != 0 {
            if moved > 0 {
                self.pass(moved.unsigned_abs());
            } else {
                self.retaken_until = self.retaken_until.max(self.taken);
            }
            self.taken = self.taken.saturating_add_signed(moved);
            self.residuals.clear();
        }
        self.pending_from = self.taken;
        self.pending.clear();
        self.pending_raw = new.to_vec();
        for sample in new.chunks(channels) {
            let departure = self.depart(sample);
            self.take(&departure, rows, seasons, false);
            self.pending.extend(departure);
        }
        self.energy(rows)
    }

    /// While watched, the seasonal energy of `window` (of `fresh` new samples) under the day
    /// chosen early: chosen, once [`Seasons::days`] days are watched, at the end of the first
    /// day whose autocorrelation is strong enough, as the day would be chosen after the weeks.
    fn early_day(
        &mut self,
        window: &RawWindow,
        day: usize,
        fresh: usize,
        seasons: &Seasons,
        cal: &Calibration,
    ) -> Option<f32> {
        let c = self.channels;
        if let Some(early) = &mut self.early {
            return early.observe(window, c, seasons, cal);
        }
        let n = self.history.len() / c;
        let days = seasons.days as usize;
        if days == 0 || n < days * day || (n - fresh) / day == n / day {
            return None;
        }
        let rows = window.data.len() / c;
        let mut early = self.clone();
        let energy = early.choose(&[day], rows, fresh, seasons, cal);
        if early.period == 0 {
            return None; // not strong enough yet
        }
        self.early = Some(Box::new(early));
        energy
    }

    /// `sample`'s departure from the mean of the newest season's samples (`recent`), per
    /// channel (the sample as it is for a season saved before departures).
    fn depart(&mut self, sample: &[f32]) -> Vec<f32> {
        if !self.summed() {
            return sample.to_vec();
        }
        (sample.iter().zip(self.means()))
            .map(|(&x, l)| x - l as f32)
            .collect()
    }

    /// The mean of the newest season's samples per channel (`None` for a season saved before
    /// departures).
    fn level(&mut self) -> Option<Vec<f64>> {
        self.summed().then(|| self.means().collect())
    }

    /// Each channel's mean of `recent`, from `recent_sum` (made by [`Season::summed`]).
    fn means(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.recent.len() / self.channels.max(1)).max(1) as f64;
        self.recent_sum.iter().map(move |sum| sum / n)
    }

    /// Whether the season reads departures (`recent` is held; not in a season saved before
    /// them), making `recent_sum` from `recent` when it is not made yet (after the choice or a
    /// restart).
    fn summed(&mut self) -> bool {
        if self.recent.is_empty() {
            return false;
        }
        let c = self.channels;
        if self.recent_sum.len() != c {
            self.recent_sum = vec![0.0; c];
            for (i, &x) in self.recent.iter().enumerate() {
                self.recent_sum[i % c] += f64::from(x);
            }
        }
        true
    }

    /// Passes `moved` moments a gap skipped: each enters the level as what it was expected to
    /// be (the level before the gap plus its moment's expected departure); only the last season
    /// of a longer gap matters.
    fn pass(&mut self, moved: u64) {
        let (c, p) = (self.channels, self.period as u64);
        // The level before the gap: read again as the moments enter, it would follow the part
        // of the season taken in so far (a gap longer than a season enters its moments out of
        // step with those they replace).
        let Some(level) = self.level().filter(|_| p > 0) else {
            return;
        };
        for k in moved.saturating_sub(p)..moved {
            let at = ((self.taken + k) % p) as usize * c;
            let expected: Vec<f32> = (level.iter().zip(&self.profile[at..at + c]))
                .map(|(&l, &e)| l as f32 + e)
                .collect();
            self.remember(&expected);
        }
    }

    /// Takes `sample` (a healthy one, or what a moment was expected to be) into the mean the
    /// next ones depart from.
    fn remember(&mut self, sample: &[f32]) {
        if !self.summed() {
            return; // a season saved before departures
        }
        let c = self.channels;
        self.recent.extend(sample);
        for (sum, &x) in self.recent_sum.iter_mut().zip(sample) {
            *sum += f64::from(x);
        }
        while self.recent.len() > self.period * c {
            for sum in &mut self.recent_sum {
                *sum -= f64::from(self.recent.pop_front().unwrap_or(0.0));
            }
        }
    }

    /// Ends the newest window: its samples go into what each moment is expected to be only
    /// when it was `healthy` (judged normal with no alert up, or learning), so a holiday or a
    /// fault is not expected a season later, and into the level the next samples depart from
    /// (when not healthy, what their moments were expected to be). Call after every
    /// [`Season::observe`].
    pub fn keep(&mut self, healthy: bool, seasons: &Seasons) {
        if let Some(early) = &mut self.early {
            early.keep(healthy, seasons);
        }
        let pending = std::mem::take(&mut self.pending);
        let raw = std::mem::take(&mut self.pending_raw);
        if self.period == 0 {
            return;
        }
        let c = self.channels.max(1);
        // The level the window's samples departed from (nothing was remembered since).
        let level = if healthy { None } else { self.level() };
        for (j, (sample, x)) in pending.chunks(c).zip(raw.chunks(c)).enumerate() {
            let moment = self.pending_from + j as u64;
            if moment < self.retaken_until {
                continue; // taken before the clock went back
            }
            if healthy {
                self.fold(moment, sample, seasons);
                self.remember(x);
            } else if let Some(level) = &level {
                // What the moment was expected to be stands in for it in the mean the next
                // samples depart from: a holiday does not move it, nor a part of the season
                // that is not healthy yet, nor a garbled 1e20 (rebuilt from the sample and its
                // departure, the level would be lost in its digits).
                let at = (moment % self.period as u64) as usize * c;
                let expected: Vec<f32> = (level.iter().zip(&self.profile[at..at + c]))
                    .map(|(&l, &e)| l as f32 + e)
                    .collect();
                self.remember(&expected);
            }
        }
    }

    /// The probability of a seasonal energy under the season's calibration.
    pub fn probability(&self, energy: f32, cal: &Calibration) -> f64 {
        if let Some(early) = &self.early {
            return early.probability(energy, cal);
        }
        self.calibrator.probability(energy, &[], cal)
    }

    /// Learns a healthy window's seasonal energy (`probability` its own, or `None` while the
    /// stream learns) when it is under `learn_below`.
    pub fn learn(&mut self, energy: f32, probability: Option<f64>, cal: &Calibration) {
        if let Some(early) = &mut self.early {
            early.learn(energy, probability, cal);
            return;
        }
        if probability.is_none_or(|p| cal.learn_below <= 0.0 || p < cal.learn_below) {
            self.calibrator.add(energy, &[], cal);
        }
    }

    /// Whether the newest window's energy, of `probability` under the stream's calibration,
    /// is no more unusual than its moment's was a season ago (the most unusual of its new
    /// samples' moments); remembers it for the season after. A weekend the model never learnt
    /// is as unusual every week, or less as the calibration learns it; a fault that grows is
    /// more unusual than it was a season ago, and one that is new was not there. Call once
    /// per judged window, before [`Season::keep`].
    pub fn recurs(&mut self, probability: f64) -> bool {
        let (p, fresh) = (self.period, self.newest as u64);
        if fresh == 0 || (self.settled && p == 0) {
            return false;
        }
        let surprise = -(1.0 - probability).max(f64::MIN_POSITIVE).ln() as f32;
        if !self.settled {
            // Watched: kept for the season's first echo.
            let n = self.history_echo.len();
            for s in self.history_echo.range_mut(n.saturating_sub(self.newest)..) {
                *s = surprise;
            }
            // A day chosen early keeps its echo but does not vouch: the week chosen after it
            // may have weekends, which recur a day apart on a weekday's moments.
            if let Some(early) = &mut self.early {
                early.recurs(probability);
            }
            return false;
        }
        if self.echo.len() != p {
            self.echo = vec![0.0; p];
        }
        let mut before = 0.0_f32;
        for moment in self.pending_from..self.pending_from + fresh {
            let at = (moment % p as u64) as usize;
            before = before.max(std::mem::replace(&mut self.echo[at], surprise));
        }
        surprise <= before
    }

    /// Where the season stands.
    pub fn phase(&self) -> Phase {
        if !self.settled {
            self.early
                .as_ref()
                .map_or(Phase::Watching, |early| early.phase())
        } else if self.period == 0 {
            Phase::None
        } else if (self.period as f64 * self.step_s / DAY_S).round() <= 1.0 {
            Phase::Day
        } else {
            Phase::Week
        }
    }

    /// Where the choice stands: the phase, and whether the watch is over (a day chosen early
    /// is still watched).
    pub fn choice(&self) -> (Phase, bool) {
        (self.phase(), self.settled)
    }

    /// Whether a restart from `saved`, this stream's season as last saved (`None`: never),
    /// could lose more than it makes up when it comes back: the choice made since, or, while
    /// watched, more than an hour of samples (a restart fills a gap of an hour beyond its first
    /// window; a longer one starts the watch again). A chosen season saved a while ago only
    /// misses some folding, which the seasons after it make up.
    pub fn outruns(&self, saved: Option<&Season>) -> bool {
        match saved {
            None => true,
            Some(s) if s.choice() != self.choice() => true,
            Some(s) => !self.settled && self.end_at - s.end_at > FILL_S,
        }
    }

    /// The season in samples, once chosen (`None`: not yet, or none).
    #[cfg(test)]
    fn period(&self) -> Option<usize> {
        (self.period > 0).then_some(self.period)
    }

    /// Keeps the watched samples in the wall clock's order when it `moved` on by more than the
    /// samples (an hour the clock skips, a gap: filled with the sample before it) or back (an
    /// hour it repeats: its first pass dropped).
    fn move_history(&mut self, moved: i64) {
        let c = self.channels;
        if moved > 0 && self.history.len() >= c {
            let last: Vec<f32> = self
                .history
                .range(self.history.len() - c..)
                .copied()
                .collect();
            for _ in 0..moved {
                self.history.extend(&last);
            }
            self.history_echo
                .extend(std::iter::repeat_n(0.0, moved as usize));
        } else if moved < 0 {
            let keep = self
                .history
                .len()
                .saturating_sub(moved.unsigned_abs() as usize * c);
            self.history.truncate(keep);
            self.history_echo.truncate(keep / c.max(1));
        }
    }

    fn settle_none(&mut self) {
        *self = Self {
            settled: true,
            ..Self::default()
        };
    }

    /// Takes the next sample: its residual against its moment's expected value (once the
    /// moment has one), and, with `fold`, the sample into that value.
    fn take(&mut self, sample: &[f32], rows: usize, seasons: &Seasons, fold: bool) {
        let p = self.period;
        let at = (self.taken % p as u64) as usize * self.channels;
        let seen = self.taken / p as u64; // seasons this moment has been seen in
        let mut residual = 0.0_f64;
        if seen > 0 {
            for (ch, &x) in sample.iter().enumerate() {
                if self.scale[ch] > 0.0 {
                    let d = f64::from(x) - f64::from(self.profile[at + ch]);
                    residual += d * d / f64::from(self.scale[ch]);
                }
            }
        }
        // A garbled sample (1e20 from a raw register) squares past f32: an infinite residual
        // would be saved as null and make the seasons file unreadable. Capped, it still makes
        // its windows' seasonal energy huge (probability 1), and the sum of a window's
        // residuals stays finite.
        let residual = residual.min(RESIDUAL_MAX) as f32;
        if fold {
            self.fold(self.taken, sample, seasons);
        }
        self.taken += 1;
        if seen > 0 {
            self.residuals.push_back(residual);
            if self.residuals.len() > rows {
                self.residuals.pop_front();
            }
        } else {
            self.residuals.clear();
        }
    }

    /// Takes the sample of `moment` (counted since the season began) into its expected
    /// value: the mean over the seasons it holds so far, up to `memory`, then an exponential
    /// one.
    fn fold(&mut self, moment: u64, sample: &[f32], seasons: &Seasons) {
        let p = self.period as u64;
        let m = (moment % p) as usize;
        let at = m * self.channels;
        let memory = seasons.memory.clamp(1, u32::from(u8::MAX)) as u8;
        let held = match self.folded.get_mut(m) {
            Some(n) => {
                let held = *n;
                *n = n.saturating_add(1).min(memory);
                u64::from(held)
            }
            None => moment / p, // saved before the counts were kept
        };
        let weight = 1.0 / (held + 1).min(u64::from(memory)) as f32;
        for (expected, &x) in self.profile[at..].iter_mut().zip(sample) {
            *expected += (x - *expected) * weight;
        }
    }

    /// The seasonal energy of the newest window of `rows` samples: the mean of its residuals;
    /// `None` until each of its samples has one.
    fn energy(&self, rows: usize) -> Option<f32> {
        let varying = self.scale.iter().filter(|&&v| v > 0.0).count();
        (self.period > 0 && self.residuals.len() == rows)
            .then(|| self.residuals.iter().sum::<f32>() / (rows * varying) as f32)
    }
}

mod choice;
mod time;

use time::time;

#[cfg(test)]
mod tests;
