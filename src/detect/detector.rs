//! One stream's alert state machine: raise once after `raise_after` anomalous windows in a
//! row (or by the [restless](super::restless) rule), clear once after `clear_after` normal ones,
//! and, for `quiet` windows after a clear, raise again only on much stronger evidence.
//!
//! **The quiet after a clear** ([`Quiet`]). An alert that clears and is raised again soon after
//! is most often the same incident: the stream hovers around the alert probability, dips under
//! it for `clear_after` windows, and climbs back. Each such re-raise pages again for nothing
//! new. For [`Quiet::windows`] judged windows after a clear, a window counts toward a raise
//! only at or over [`Quiet::probability`] (0.999999 by default, a hundred times rarer than the
//! alert probability), and the restless rule waits. A fault that is new and strong still
//! raises; a flapping one does not. On the dev sets it cut SKAB's false alarms from 13.2 to
//! 8.6 % and the alerts per valve episode from 1.67 to 1.33, and NAB's false alerts from 60 to
//! 50 (docs/EVALUATION-ROUNDS.md, round seventeen).
//!
//! **Accepting a held level** ([`Accept`]). By default an alert stays raised until the stream
//! comes back. A stream whose normal moves in steps (a new load, a rig that warms up for hours)
//! may instead accept the level it is held at as the new normal after `accept_after` windows,
//! or `accept_after_s` seconds of its own samples' time ([`Detector::held_long_enough`]): the
//! judge then relearns the stream, and the clear that follows says it accepted
//! ([`DetectorState::accepted`]) rather than that the machine came back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::restless::{Restless, Spell};
use super::{AlertState, Calibrator, Level, Season, Transition};
use crate::pipeline::Mark;

/// Hysteresis parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// k: consecutive windows above threshold that raise.
    pub raise_after: u32,
    /// j: consecutive windows at or below threshold that clear.
    pub clear_after: u32,
    /// How long an alert may stay raised before its level is accepted as the new normal.
    pub accept: Accept,
}

/// How long an alert may stay raised before its level is accepted as the new normal: the
/// stream learns again, then the alert clears and says so (judged by probability only).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Accept {
    /// Kept raised until the stream comes back (`accept_after = 0`, the default).
    #[default]
    Never,
    /// After this many windows raised (`accept_after`): a time only at the stream's rate.
    Windows(u32),
    /// After this many seconds raised by the stream's own clock, its samples' timestamps
    /// (`accept_after_s`), whatever its rate. A window without a time does not count.
    Seconds(f64),
}

impl Accept {
    /// Whether an alert raised for `windows` windows, from the stream time `since` to `now`
    /// (seconds, [`Mark::seconds`](crate::pipeline::Mark::seconds)), is due to be accepted.
    pub fn due(self, windows: u32, since: Option<f64>, now: Option<f64>) -> bool {
        match self {
            Self::Never => false,
            Self::Windows(n) => n > 0 && windows >= n,
            Self::Seconds(s) => since.zip(now).is_some_and(|(a, b)| b - a >= s),
        }
    }
}

/// The quiet after a clear (`[detect] quiet_windows`, `quiet_probability`; see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quiet {
    /// Judged windows after a clear that are quiet. 0: off.
    pub windows: u32,
    /// In them, a window counts toward a raise only at or over this probability.
    pub probability: f64,
}

impl Default for Quiet {
    fn default() -> Self {
        Self {
            windows: 200,
            probability: 0.999_999,
        }
    }
}

/// What a stream's detector must carry across a restart (saved in the ingest checkpoint):
/// everything it learned from the windows before the next one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DetectorState {
    /// Alert state.
    pub state: AlertState,
    /// Consecutive windows so far toward the next transition.
    pub run: u32,
    /// Windows the current alert has been raised for (for `accept_after`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub raised_for: u32,
    /// The stream time (seconds) of the first window of the current alert that had one (for
    /// `accept_after_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at: Option<f64>,
    /// When the current alert's level was accepted as the new normal: the windows it had been
    /// raised for then (0: not accepted). Told on its clear.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub accepted: u32,
    /// The stream's calibrator (absent for streams judged by an absolute threshold, and in
    /// checkpoints written before calibration existed: such a stream learns again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrator: Option<Calibrator>,
    /// The stream's input level (with `level_windows`; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The stream's restless windows (with [`Calibration::restless`](super::Calibration)
    /// on).
    #[serde(default, skip_serializing_if = "Spell::is_empty")]
    pub restless: Spell,
    /// Quiet windows left after the last clear ([`Quiet`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quiet: u32,
    /// The stream's season (with [`Seasons`](super::Seasons) on; absent otherwise). Shared,
    /// not copied, by the saved states taken of it (a watched one holds up to 32,768 values):
    /// the judge copies it when it next changes it ([`Arc::make_mut`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<Arc<Season>>,
}

impl DetectorState {
    /// The drift the scorer subtracts from the stream's windows (empty: none).
    pub fn drift(&self) -> Vec<f32> {
        self.level.as_ref().map(Level::drift).unwrap_or_default()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One stream's hysteresis state machine: raise once after k windows above, clear once after j
/// below.
///
/// ```
/// use ebgand::detect::{Accept, Detector, Hysteresis, Transition};
/// let mut d = Detector::new(Hysteresis { raise_after: 2, clear_after: 2, accept: Accept::Never });
/// let seen: Vec<_> = [true, true, true, false, false].iter().map(|&a| d.observe(a)).collect();
/// assert_eq!(seen, [None, Some(Transition::Raised), None, None, Some(Transition::Cleared)]);
/// ```
#[derive(Debug, Clone)]
pub struct Detector {
    hysteresis: Hysteresis,
    pub(super) state: AlertState,
    run: u32,
    raised_for: u32,
    raised_at: Option<f64>,
    pub(super) accepted: u32,
    pub(super) calibrator: Option<Calibrator>,
    pub(super) level: Option<Level>,
    pub(super) restless: Spell,
    quiet: u32,
    pub(super) season: Option<Arc<Season>>,
}

impl Detector {
    /// A detector in the normal state.
    pub fn new(hysteresis: Hysteresis) -> Self {
        Self::restore(hysteresis, DetectorState::default())
    }

    /// A detector carrying on from a saved state (see [`Detector::saved`]).
    pub fn restore(hysteresis: Hysteresis, saved: DetectorState) -> Self {
        Self {
            hysteresis,
            state: saved.state,
            run: saved.run,
            raised_for: saved.raised_for,
            raised_at: saved.raised_at,
            accepted: saved.accepted,
            calibrator: saved.calibrator,
            level: saved.level,
            restless: saved.restless,
            quiet: saved.quiet,
            season: saved.season,
        }
    }

    /// Current state.
    pub fn state(&self) -> AlertState {
        self.state
    }

    /// What a restart needs to carry on after the windows seen so far.
    pub fn saved(&self) -> DetectorState {
        DetectorState {
            state: self.state,
            run: self.run,
            raised_for: self.raised_for,
            raised_at: self.raised_at,
            accepted: self.accepted,
            calibrator: self.calibrator.clone(),
            level: self.level.clone(),
            restless: self.restless.clone(),
            quiet: self.quiet,
            season: self.season.clone(),
        }
    }

    /// Feeds one window's verdict; returns the transition it caused, if any.
    pub fn observe(&mut self, anomalous: bool) -> Option<Transition> {
        self.observe_with(anomalous, false, false).0
    }

    /// [`Detector::observe`] for a window of `probability`, which the restless rule counts
    /// too ([`restless`](super::restless)) and which, in the quiet after a clear, must reach `quiet`'s
    /// probability to count toward a raise.
    pub fn observe_probability(
        &mut self,
        probability: f64,
        alert_probability: f64,
        rule: &Restless,
        quiet: &Quiet,
    ) -> Option<Transition> {
        let hushed = self.state == AlertState::Normal && self.quiet > 0;
        let bar = if hushed {
            self.quiet -= 1;
            alert_probability.max(quiet.probability)
        } else {
            alert_probability
        };
        let anomalous = probability >= bar;
        let transition = if rule.on() {
            let step = self
                .restless
                .push(probability, rule, self.state == AlertState::Raised);
            let hold = rule.hold && self.restless.raised_it() && !step.calm;
            let (transition, by_run) = self.observe_with(anomalous, step.raise && !hushed, hold);
            if transition == Some(Transition::Raised) {
                // Raised by the ordinary run of windows, or by the restless rule alone.
                self.restless.raised(!by_run);
            }
            transition
        } else {
            self.observe(anomalous)
        };
        if transition == Some(Transition::Cleared) {
            self.quiet = quiet.windows;
        }
        transition
    }

    /// Whether the alert has been raised as long as `accept` allows, counted to the window
    /// ending at `end` (for an acceptance in seconds, from the stream time of the alert's
    /// first window that had one). When it has, the alert's windows so far are noted for its
    /// clear to tell ([`DetectorState::accepted`]) and counting starts again: the caller
    /// relearns the stream, and a level still not normal after as long again is accepted again.
    pub fn held_long_enough(&mut self, accept: Accept, end: &Mark) -> bool {
        // The window's time is read only for an acceptance in seconds (a parse per window).
        let now = matches!(accept, Accept::Seconds(_))
            .then(|| end.seconds())
            .flatten()
            .map(|s| s.at);
        // A clock set back while raised counts from its new time; one set forward (a sensor's
        // first time sync) counts its jump.
        self.raised_at = match (self.state, self.raised_at, now) {
            (AlertState::Normal, ..) => None,
            (AlertState::Raised, Some(since), Some(now)) => Some(since.min(now)),
            (AlertState::Raised, since, now) => since.or(now),
        };
        if !accept.due(self.raised_for, self.raised_at, now) {
            return false;
        }
        self.accepted = self.raised_for;
        (self.raised_for, self.raised_at) = (0, None);
        true
    }

    /// The hysteresis; `raise` raises besides it, `hold` keeps a raised alert from clearing.
    /// Returns the transition, and whether the run of windows reached its limit (a raise the
    /// ordinary rule made, not `raise` alone).
    fn observe_with(
        &mut self,
        anomalous: bool,
        raise: bool,
        hold: bool,
    ) -> (Option<Transition>, bool) {
        let (continues_run, limit, next, transition) = match self.state {
            AlertState::Normal => (
                anomalous,
                self.hysteresis.raise_after,
                AlertState::Raised,
                Transition::Raised,
            ),
            AlertState::Raised => (
                !anomalous,
                self.hysteresis.clear_after,
                AlertState::Normal,
                Transition::Cleared,
            ),
        };
        self.run = if continues_run { self.run + 1 } else { 0 };
        let mut out = None;
        let by_run = self.run >= limit;
        let due = match self.state {
            AlertState::Normal => by_run || raise,
            AlertState::Raised => by_run && !hold,
        };
        if due {
            self.state = next;
            self.run = 0;
            out = Some(transition);
        }
        self.raised_for = match self.state {
            AlertState::Raised => self.raised_for.saturating_add(1),
            AlertState::Normal => 0,
        };
        (out, by_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_after_a_clear_survives_a_restart() {
        let h = Hysteresis {
            raise_after: 1,
            clear_after: 1,
            accept: Accept::Never,
        };
        let (off, quiet) = (
            Restless {
                probability: 0.0,
                ..Restless::default()
            },
            Quiet {
                windows: 3,
                probability: 0.999_999,
            },
        );
        let mut d = Detector::new(h);
        let see = |d: &mut Detector, p: f64| d.observe_probability(p, 0.9999, &off, &quiet);
        assert_eq!(see(&mut d, 0.99995), Some(Transition::Raised));
        assert_eq!(see(&mut d, 0.5), Some(Transition::Cleared));
        assert_eq!(see(&mut d, 0.99995), None, "quiet: 0.99995 is not enough");
        // A restart in the quiet carries it on through the checkpoint's JSON.
        let json = serde_json::to_string(&d.saved()).unwrap();
        assert!(json.contains("\"quiet\":2"), "{json}");
        let mut d = Detector::restore(h, serde_json::from_str(&json).unwrap());
        assert_eq!(see(&mut d, 0.99995), None);
        assert_eq!(
            see(&mut d, 0.9999995),
            Some(Transition::Raised),
            "strong enough"
        );
        assert_eq!(see(&mut d, 0.5), Some(Transition::Cleared));
        for _ in 0..3 {
            assert_eq!(see(&mut d, 0.5), None);
        }
        // The quiet is over.
        assert_eq!(see(&mut d, 0.99995), Some(Transition::Raised));
        assert!(!serde_json::to_string(&d.saved()).unwrap().contains("quiet"));
    }

    #[test]
    fn an_acceptance_in_seconds_counts_the_stream_s_clock_from_the_raise() {
        let mut d = Detector::new(Hysteresis {
            raise_after: 1,
            clear_after: 1,
            accept: Accept::Never,
        });
        let accept = Accept::Seconds(10.0);
        // One anomalous window ending at `end`: is the alert due to be accepted, and after
        // how many windows raised?
        let mut window = |end: Mark| {
            d.observe(true);
            d.held_long_enough(accept, &end).then_some(d.accepted)
        };
        let at = |t: f64| Mark::Time(serde_json::json!(t));
        assert_eq!(window(at(100.0)), None, "raised here");
        assert_eq!(window(Mark::Index(7)), None, "no time: no count");
        assert_eq!(window(at(109.5)), None);
        // The clock set back: counted from its new time.
        assert_eq!(window(at(50.0)), None);
        assert_eq!(window(at(59.0)), None);
        assert_eq!(
            window(at(60.0)),
            Some(6),
            "10 s since the clock was set back"
        );
        // Counting starts again from the next window.
        assert_eq!(window(at(65.0)), None);
        assert_eq!(window(at(75.0)), Some(2));
    }
}
