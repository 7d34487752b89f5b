//! Detection: the calibrated anomaly probability and hysteresis per stream, and the events they
//! produce. Pure logic: no I/O, no clock reads.
//!
//! A window is anomalous when its energy's probability under the stream's own recent healthy
//! behaviour ([`calibrate`]) reaches the stream's alert probability, or, where a stream sets an
//! absolute energy `threshold`, when its energy is over it. A stream's first windows (and its
//! first windows under a new model version) are learning: reported, never alerted on. Each
//! stream's input level follows its healthy windows ([`level`]); the scorer takes its drift off
//! every window before inference.

pub mod calibrate;
pub mod detector;
pub mod explain;
pub mod labels;
pub mod level;
pub mod restless;
pub mod season;
pub mod seed;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use calibrate::{Calibration, Calibrator, Reading, StreamTuning, Unusual};
pub use detector::{Accept, Detector, DetectorState, Hysteresis, Quiet};
pub use explain::{Carried, Explanation, Names, energy_parts};
pub use level::{Drift, Level};
pub use restless::{Restless, Spell};
pub use season::{Phase, Season, Seasons};
pub use seed::{Seed, SeedWindow, Seeded};

use serde::{Deserialize, Serialize};

use crate::pipeline::{Mark, RawWindow};

/// What the model said of one window: its energy and, where known, each channel's part of it
/// (each group of mel bands' for audio; [`energy_parts`]), which [`Calibration::per_channel`]
/// calibrates too. Energies alone convert into it (`5.0.into()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored<'a> {
    /// The window's energy.
    pub energy: f32,
    /// Each channel's part of `energy` (they sum to it); empty when unknown.
    pub parts: &'a [f32],
}

impl From<f32> for Scored<'_> {
    fn from(energy: f32) -> Self {
        Self { energy, parts: &[] }
    }
}

/// The alert state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// No alert.
    #[default]
    Normal,
    /// Alert raised and not yet cleared.
    Raised,
}

/// A state change: the alert was raised or cleared by this window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// `raise_after` consecutive windows above threshold.
    Raised,
    /// `clear_after` consecutive windows at or below threshold while raised.
    Cleared,
}

impl Transition {
    /// `raised` or `cleared`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Cleared => "cleared",
        }
    }
}

/// What the detect stage needs to know about a stream instance.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// Stream id (`name/<captured topic levels>`).
    pub id: String,
    /// How its windows are judged.
    pub judging: Judging,
    /// Hysteresis.
    pub hysteresis: Hysteresis,
    /// Values per sample of its windows (channels; log-mel bands for audio).
    pub channels: usize,
    /// Its inputs' drift, which the scorer subtracts (set by [`Judge::judge`]; see [`level`]).
    pub drift: Drift,
    /// What its energy is explained by (see [`explain`]; empty: `ch0`, `ch1`, ...).
    pub names: Names,
    /// Its own `[detect]` settings, replacing the judge's (see [`StreamTuning`]).
    pub tuning: StreamTuning,
}

impl StreamInfo {
    /// A stream of `channels` values per sample, with no drift yet, its energy explained by
    /// `ch0`, `ch1`, ... until [`StreamInfo::named`].
    pub fn new(
        id: impl Into<String>,
        judging: Judging,
        hysteresis: Hysteresis,
        channels: usize,
    ) -> Self {
        Self {
            id: id.into(),
            judging,
            hysteresis,
            channels,
            drift: Drift::default(),
            names: Names::default(),
            tuning: StreamTuning::default(),
        }
    }

    /// The same stream, its energy explained by `names`.
    #[must_use]
    pub fn named(self, names: Names) -> Self {
        Self { names, ..self }
    }

    /// The same stream, with its own `[detect]` settings.
    #[must_use]
    pub fn tuned_by(self, tuning: StreamTuning) -> Self {
        Self { tuning, ..self }
    }
}

/// How a stream's windows are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judging {
    /// Anomalous when the energy's calibrated probability is at or over this (the default).
    Probability(f64),
    /// Anomalous when the energy is over this absolute threshold, or over the model's
    /// calibrated threshold when `None`. No learning, no adaptation.
    Energy(Option<f32>),
}

/// Whether `energy` is over `threshold`. A non-finite energy counts as anomalous: a model that
/// returns NaN for a window must not hide a fault.
pub fn is_anomalous(energy: f32, threshold: f32) -> bool {
    !energy.is_finite() || energy > threshold
}

/// Model identity as it appears in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRef {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// The outcome for one scored window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Stream id.
    pub stream: String,
    /// Window number in the stream.
    pub seq: u64,
    /// First sample.
    pub start: Mark,
    /// Last sample.
    pub end: Mark,
    /// Energy.
    #[serde(serialize_with = "short_f32")]
    pub energy: f32,
    /// Probability of an energy lower than this under the stream's recent healthy windows;
    /// `None` while the stream learns, and for a stream judged by an absolute threshold.
    pub probability: Option<f64>,
    /// The probability at or over which the window counts as anomalous (`None`: judged by
    /// energy against `threshold`).
    pub alert_probability: Option<f64>,
    /// Its probability against the same moment of the stream's earlier seasons, once the
    /// stream has a season ([`season`]); `probability` is the larger of it and the energy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season_probability: Option<f64>,
    /// The stream is learning: this window is added to its calibration, not judged.
    pub learning: bool,
    /// The model's calibrated threshold, or the stream's absolute threshold when it sets one.
    #[serde(serialize_with = "short_f32")]
    pub threshold: f32,
    /// Judged anomalous (probability at or over the alert probability, or energy over an
    /// absolute threshold).
    pub anomalous: bool,
    /// Alert state after this window.
    pub state: AlertState,
    /// The transition this window caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    /// Model that scored it.
    pub model: ModelRef,
    /// What carried its energy (set where one is published: alerts, state messages, `score`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// The part most unusual for its own channel, where parts are calibrated (it goes into
    /// the explanation).
    #[serde(skip)]
    pub unusual: Option<Unusual>,
    /// Set on an alert the restless rule raised: how restless the stream was ([`restless`]).
    #[serde(skip)]
    pub restless: Option<restless::Raise>,
    /// Whether this is the first window seen of its stream (its state is not yet published).
    #[serde(skip)]
    pub first: bool,
    /// Where the stream's season stands after the window (with seasons on, a stream judged by
    /// probability).
    #[serde(skip)]
    pub season: Option<Phase>,
    /// Whether the window chose the stream's season (a day early, or the season when its
    /// watch ends, or none found): its state is published again.
    #[serde(skip)]
    pub season_chosen: bool,
    /// On a clear that follows the level's acceptance as the new normal (`accept_after` or
    /// `accept_after_s`): the windows the alert had been raised for when it was accepted.
    #[serde(skip)]
    pub accepted_after: Option<u32>,
    /// Set when an earlier run of the daemon already stored this window's alert (the window is
    /// judged again after a restart): the alert is not published a second time.
    #[serde(skip)]
    pub alerted_before: bool,
}

impl Verdict {
    /// Judged healthy: not anomalous and no alert up. Only these teach the calibration (with
    /// those the season vouches for), a shadow, the capture and the gate: no fault is learnt.
    pub fn healthy(&self) -> bool {
        !self.anomalous && self.state == AlertState::Normal
    }
}

/// Serialises an f32 as the shortest decimal that reads back as the same f32 (`9.190548`, not
/// the f64 widening's `9.190547943115234`), so that every payload and `score` line carries the
/// same digits for the same number; NaN and infinities as `null`.
pub fn short_f32<S: serde::Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    match x.to_string().parse::<f64>() {
        Ok(v) if v.is_finite() => s.serialize_f64(v),
        _ => s.serialize_none(),
    }
}

/// An alert event, as published on `{prefix}/alerts/{stream}` and printed by `ebgand score`
/// (`docs/schema/alert.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Stream id.
    pub stream: String,
    /// `raised` or `cleared`.
    pub state: Transition,
    /// When it was judged: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Energy of the window that caused it.
    #[serde(serialize_with = "short_f32")]
    pub energy: f32,
    /// Its calibrated probability (absent for a stream judged by an absolute threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// The alert probability applied (absent when judged by energy against `threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_probability: Option<f64>,
    /// The window's probability against the same moment of earlier seasons (only on a stream
    /// with a season; see [`Verdict::season_probability`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season_probability: Option<f64>,
    /// The model's calibrated threshold, or the stream's absolute one.
    #[serde(serialize_with = "short_f32")]
    pub threshold: f32,
    /// Model that scored the window.
    pub model: ModelRef,
    /// The window's first and last sample.
    pub window: WindowRef,
    /// The window's number in its stream.
    pub seq: u64,
    /// Node that raised it.
    pub node: String,
    /// What carried the window's energy: each channel's share by name, the top channels, the
    /// part of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// On an alert the restless rule raised (not the alert probability): the windows it
    /// counted and how many were at or over its probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restless: Option<restless::Raise>,
    /// On a clear that is an acceptance, not a return (`[detect] accept_after` or
    /// `accept_after_s`): the windows the alert had been raised for when its level was accepted
    /// as the new normal. The machine did not come back; the stream learnt where it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_after: Option<u32>,
}

/// Seconds rounded to milliseconds, as alerts carry them.
pub fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Window position in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRef {
    /// First sample.
    pub start: Mark,
    /// Last sample.
    pub end: Mark,
}

impl AlertEvent {
    /// The event for a verdict that caused a transition, judged at `time` (the caller's clock).
    pub fn from_verdict(v: &Verdict, node: &str, time: std::time::SystemTime) -> Option<Self> {
        Some(Self {
            stream: v.stream.clone(),
            state: v.transition?,
            time: humantime::format_rfc3339_millis(time).to_string(),
            energy: v.energy,
            probability: v.probability,
            alert_probability: v.alert_probability,
            season_probability: v.season_probability,
            threshold: v.threshold,
            model: v.model.clone(),
            window: WindowRef {
                start: v.start.clone(),
                end: v.end.clone(),
            },
            seq: v.seq,
            node: node.to_owned(),
            explanation: v.explanation.clone(),
            restless: v.restless,
            accepted_after: v.accepted_after,
        })
    }
}

/// A shadow candidate against the active version on the same windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShadowStats {
    /// Active version.
    pub active: String,
    /// Shadow version.
    pub shadow: String,
    /// Windows both scored.
    pub windows: u64,
    /// Windows over the active version's threshold.
    pub active_anomalous: u64,
    /// Windows over the shadow's threshold.
    pub shadow_anomalous: u64,
    /// Alerts the active version raised.
    pub active_alerts: u64,
    /// Alerts the shadow would have raised (same hysteresis, never published).
    pub shadow_alerts: u64,
    /// Per stream the shadow has seen: whether its calibration was still learning at the
    /// stream's latest window.
    #[serde(skip)]
    pub learning: BTreeMap<String, bool>,
    /// The lifecycle ended this shadow without promoting it: the alerting stage drops its
    /// calibrations, never handing them to a later activation of the version.
    #[serde(skip)]
    pub ended: bool,
}

impl ShadowStats {
    /// Adds what one batch saw: counts add up, each stream keeps its latest learning state.
    pub fn merge(&mut self, add: Self) {
        self.windows += add.windows;
        self.active_anomalous += add.active_anomalous;
        self.shadow_anomalous += add.shadow_anomalous;
        self.active_alerts += add.active_alerts;
        self.shadow_alerts += add.shadow_alerts;
        self.learning.extend(add.learning);
    }

    /// Whether the shadow's calibration has learnt every stream it has seen (and has seen
    /// one): promoted now, it judges at once instead of learning again.
    pub fn warm(&self) -> bool {
        !self.learning.is_empty() && self.learning.values().all(|learning| !learning)
    }

    /// The report published before a promotion.
    pub fn report(&self) -> serde_json::Value {
        let rate = |n: u64| {
            if self.windows == 0 {
                0.0
            } else {
                n as f64 / self.windows as f64
            }
        };
        serde_json::json!({
            "active": self.active, "shadow": self.shadow, "windows": self.windows,
            "active_anomalous_rate": rate(self.active_anomalous),
            "shadow_anomalous_rate": rate(self.shadow_anomalous),
            "active_alerts": self.active_alerts, "shadow_alerts": self.shadow_alerts,
        })
    }
}

/// Every stream's detector, keyed by stream id.
#[derive(Debug, Default)]
pub struct Judge {
    /// How streams are calibrated (a stream's own settings replace some of it).
    calibration: Calibration,
    /// A shadow's judge: each stream's calibration is [`Calibration::shadow`]'s.
    shadow: bool,
    /// The calibrations of streams with `[detect]` settings of their own (and every stream's,
    /// in a shadow's judge), by those settings: a few per daemon, made once.
    tuned: HashMap<StreamTuning, Calibration>,
    detectors: HashMap<String, Detector>,
    /// Saved states of streams not seen yet, from the last run's checkpoint (or seeded).
    saved: HashMap<String, DetectorState>,
}

impl Judge {
    /// An empty judge.
    pub fn new(calibration: Calibration) -> Self {
        Self::restored(HashMap::new(), calibration)
    }

    /// A judge whose detectors start from saved states, by stream id.
    pub fn restored(saved: HashMap<String, DetectorState>, calibration: Calibration) -> Self {
        Self {
            calibration,
            shadow: false,
            tuned: HashMap::new(),
            detectors: HashMap::new(),
            saved,
        }
    }

    /// An empty judge for a shadow (a new version warming beside the served one): each
    /// stream calibrated as `calibration` and its own settings say, then as a shadow
    /// ([`Calibration::shadow`]: longer learning, no input level, no season).
    pub fn shadowing(calibration: Calibration) -> Self {
        Self {
            shadow: true,
            ..Self::new(calibration)
        }
    }

    /// How streams are calibrated, before their own settings.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Calibrates streams with `calibration` from now on.
    pub fn recalibrate(&mut self, calibration: Calibration) {
        self.calibration = calibration;
        self.tuned.clear();
    }

    /// Calibrates `stream` with `seeded` ([`Seed::calibrated`]) now: the seed's version
    /// judges the stream from its first window on. A stream that already has a calibration
    /// of that version keeps it (a restart resumed it); a version other than the one that
    /// judges the stream is replaced by its own, learning, as any other is.
    pub fn seed(&mut self, stream: &str, seeded: Seeded) {
        match self.detectors.get_mut(stream) {
            Some(d) => seeded.install(&mut d.calibrator, &mut d.level),
            None => self
                .saved
                .entry(stream.to_owned())
                .or_default()
                .seed(seeded),
        };
    }

    /// Takes over the calibrations `other` (a shadow judge) made of `version`'s energies, for
    /// streams whose own calibration is of another version: a promoted shadow's streams carry
    /// on instead of learning again. Alert states stay this judge's. Returns how many streams
    /// were taken over.
    pub fn adopt_calibrations(&mut self, other: Judge, version: &str) -> usize {
        let mut adopted = 0;
        let theirs = other
            .detectors
            .into_iter()
            .filter_map(|(id, d)| d.calibrator.map(|c| (id, c)))
            .filter(|(_, c)| c.version == version);
        for (id, c) in theirs {
            let mine = match self.detectors.get_mut(&id) {
                Some(d) => &mut d.calibrator,
                None => &mut self.saved.entry(id).or_default().calibrator,
            };
            if mine.as_ref().is_none_or(|m| m.version != version) {
                *mine = Some(c);
                adopted += 1;
            }
        }
        adopted
    }

    /// `stream`'s detector after the last window judged, as a restart would carry it on
    /// (`None` before its first). Taken once per stream and batch, not with every verdict (a
    /// copy of the calibration's histograms, the level and the restless ring per window).
    pub fn saved(&self, stream: &str) -> Option<DetectorState> {
        self.detectors.get(stream).map(Detector::saved)
    }

    /// Whether `stream` has a detector (judged, or restored from the checkpoint, and not
    /// forgotten since).
    pub fn knows(&self, stream: &str) -> bool {
        self.detectors.contains_key(stream) || self.saved.contains_key(stream)
    }

    /// Forgets a stream (it went quiet): if it comes back, its detector starts fresh. Returns
    /// its alert state then (`None`: it had no detector).
    pub fn forget(&mut self, stream: &str) -> Option<AlertState> {
        let live = self.detectors.remove(stream).map(|d| d.state);
        let saved = self.saved.remove(stream).map(|s| s.state);
        live.or(saved)
    }

    /// Judges one window: its probability under the stream's calibration (or its energy against
    /// the stream's absolute threshold), then hysteresis. A learning window is added to the
    /// calibration and leaves the alert state as it is; a judged one only when healthy (or
    /// vouched for by the season) and no alert is raised, so a fault is never learnt.
    pub fn judge(
        &mut self,
        stream: &StreamInfo,
        model: &ModelRef,
        model_threshold: f32,
        window: &RawWindow,
        scored: Scored<'_>,
    ) -> Verdict {
        self.judge_guided(stream, model, model_threshold, window, scored, true)
    }

    /// [`Judge::judge`] for a shadow judge, which may learn `window` only where `may_learn`
    /// (the active judge found it healthy: not anomalous, no alert up). The shadow never
    /// alerts, so without this a fault in progress while a retrained version warms up would be
    /// learnt into its calibration and, once promoted, judged normal. A learning window it may
    /// not learn is skipped: reported as learning, neither learnt nor judged.
    pub fn judge_guided(
        &mut self,
        stream: &StreamInfo,
        model: &ModelRef,
        model_threshold: f32,
        window: &RawWindow,
        scored: Scored<'_>,
        may_learn: bool,
    ) -> Verdict {
        let cal = calibration_of(stream, &self.calibration, self.shadow, &mut self.tuned);
        let mut first = false;
        let saved = &mut self.saved;
        let detector = self.detectors.entry(stream.id.clone()).or_insert_with(|| {
            first = true;
            let state = saved.remove(&stream.id).unwrap_or_default();
            Detector::restore(stream.hysteresis, state)
        });
        let had_level = detector.level.is_some();
        // What is known before judging; the rule of the stream fills in the rest.
        let mut v = Verdict {
            stream: stream.id.clone(),
            seq: window.seq,
            start: window.start.clone(),
            end: window.end.clone(),
            energy: scored.energy,
            probability: None,
            alert_probability: None,
            season_probability: None,
            learning: false,
            threshold: model_threshold,
            anomalous: false,
            state: detector.state(),
            transition: None,
            model: model.clone(),
            explanation: None,
            unusual: None,
            restless: None,
            first,
            season: None,
            season_chosen: false,
            accepted_after: None,
            alerted_before: false,
        };
        match stream.judging {
            Judging::Energy(t) => {
                detector.calibrator = None;
                detector.level = None;
                detector.season = None;
                v.threshold = t.unwrap_or(model_threshold);
                v.anomalous = is_anomalous(v.energy, v.threshold);
                v.transition = detector.observe(v.anomalous);
            }
            Judging::Probability(alert) => {
                v.alert_probability = Some(alert);
                detector.judge_probability(stream, window, scored, may_learn, cal, &mut v);
            }
        }
        if had_level && detector.level.is_none() && !self.shadow {
            // The level is dropped (restored, then no longer followed): so is its drift.
            stream.drift.set(Vec::new());
        }
        v.state = detector.state();
        v.accepted_after = (v.transition == Some(Transition::Cleared))
            .then(|| std::mem::take(&mut detector.accepted))
            .filter(|&n| n > 0);
        v
    }
}

impl Detector {
    /// Judges one window by its calibrated probability against `v.alert_probability` (the
    /// stream's alert probability, made the calibration's bar here), filling in `v`: learning
    /// while the calibration learns, then the probability (the larger of the energy's and the
    /// season's), whether it is anomalous, and the hysteresis. The calibration, the input
    /// level and the season learn from healthy windows only (and only where `may_learn`).
    fn judge_probability(
        &mut self,
        stream: &StreamInfo,
        window: &RawWindow,
        scored: Scored<'_>,
        may_learn: bool,
        cal: &Calibration,
        v: &mut Verdict,
    ) {
        let (energy, parts) = (scored.energy, scored.parts);
        let alert = v.alert_probability.unwrap_or(1.0);
        let version = &v.model.version;
        // The level carries on across versions; its baseline is the version's own.
        let mut level = (cal.level_windows > 0).then(|| {
            let mut l = self.level.take().unwrap_or_else(|| Level::new(version));
            if &l.version != version {
                l.rebase(version);
            }
            l
        });
        // Energies of another model version mean nothing to this one: learn again.
        let mut c = self
            .calibrator
            .take()
            .filter(|c| &c.version == version)
            .unwrap_or_else(|| Calibrator::new(version));
        v.learning = c.learning(cal);
        // The season does not depend on the model: it carries on across versions.
        let mut shared = cal
            .seasons
            .on()
            .then(|| self.season.take().unwrap_or_default());
        // Copied here when a saved state still shares it (at most once a batch).
        let mut season = shared.as_mut().map(Arc::make_mut);
        let before = season.as_ref().map(|s| s.choice());
        let seasonal = season
            .as_mut()
            .and_then(|s| s.observe(window, stream.channels, &cal.seasons, cal));
        if v.learning {
            if may_learn {
                take(
                    &mut c,
                    &mut level,
                    &window.data,
                    stream.channels,
                    scored,
                    None,
                    cal,
                );
                if let (Some(s), Some(e)) = (&mut season, seasonal) {
                    s.learn(e, None, cal);
                }
            }
        } else {
            if let Some(l) = &mut level {
                l.settle();
            }
            let reading = c.read(energy, parts, cal);
            // A window is as unusual as the more unusual of its energy and its season.
            let in_season = season
                .as_ref()
                .zip(seasonal)
                .map(|(s, e)| (e, s.probability(e, cal)));
            v.season_probability = in_season.map(|(_, q)| q);
            let p = v
                .season_probability
                .map_or(reading.probability, |q| q.max(reading.probability));
            v.unusual = reading.unusual;
            v.probability = Some(p);
            let alert = c.alert_bar(alert, cal);
            v.alert_probability = Some(alert);
            v.anomalous = p >= alert;
            v.transition = self.observe_probability(p, alert, &cal.restless, &cal.quiet);
            if v.transition == Some(Transition::Raised) && self.restless.raised_it() {
                v.restless = Some(self.restless.raise(&cal.restless));
            }
            let healthy = may_learn && !v.anomalous && self.state == AlertState::Normal;
            if healthy {
                let data = &window.data;
                take(
                    &mut c,
                    &mut level,
                    data,
                    stream.channels,
                    scored,
                    Some(&reading),
                    cal,
                );
                if let (Some(s), Some((e, q))) = (&mut season, in_season) {
                    s.learn(e, Some(q), cal);
                }
            }
            // A window the season vouches for (ordinary for its moment) is learnt by the
            // energy's calibration even when its energy is unusual, if it recurs (no more
            // unusual than its moment a season before) and no alert is up: a weekend the
            // learning period never showed is not a fault, a fault that grows is more unusual
            // each season.
            let learnt = healthy && cal.learns(&reading);
            let normal = self.state == AlertState::Normal;
            let recurs = cal.seasons.teaches > 0.0
                && season
                    .as_mut()
                    .is_some_and(|s| s.recurs(reading.probability));
            if may_learn && normal && !learnt && recurs && seasons_vouch(in_season, &cal.seasons) {
                c.add(energy, parts, cal);
            }
            if self.held_long_enough(stream.hysteresis.accept, &window.end) {
                // The level is the new normal. Learn it; the alert clears once the windows
                // after learning are judged normal, and says so.
                c.relearn();
                if let Some(l) = &mut level {
                    l.rebase(version);
                }
            }
        }
        if let Some(s) = &mut season {
            // What each moment is expected to be follows healthy windows only.
            let normal = !v.anomalous && self.state == AlertState::Normal;
            s.keep(may_learn && (v.learning || normal), &cal.seasons);
        }
        self.calibrator = Some(c);
        if let Some(l) = &level {
            stream.drift.follow(l);
        }
        self.level = level;
        v.season = season.as_ref().map(|s| s.phase());
        let after = season.as_ref().map(|s| s.choice());
        v.season_chosen = after != before && v.season.is_some_and(|p| p != Phase::Watching);
        self.season = shared;
    }
}

/// Whether a window's season vouches for it: its seasonal probability (`in_season`'s second)
/// is under [`Seasons::teaches`](season::Seasons::teaches).
fn seasons_vouch(in_season: Option<(f32, f64)>, seasons: &season::Seasons) -> bool {
    in_season.is_some_and(|(_, q)| q < seasons.teaches)
}

/// The calibration `stream` is judged by: `shared` with its own settings, as a shadow's
/// when `shadow`; made once per set of own settings and kept in `tuned`.
fn calibration_of<'a>(
    stream: &StreamInfo,
    shared: &'a Calibration,
    shadow: bool,
    tuned: &'a mut HashMap<StreamTuning, Calibration>,
) -> &'a Calibration {
    if !shadow && stream.tuning.is_empty() {
        return shared;
    }
    tuned.entry(stream.tuning).or_insert_with(|| {
        let own = shared.tuned(&stream.tuning);
        if shadow { own.shadow() } else { own }
    })
}

/// Takes a window the calibration may learn into it and into the input level: a learning
/// window (`reading` `None`) always; a judged healthy one as its `reading` allows (the level
/// follows it under `learn_below`; the calibration takes it only while no part is past
/// `learn_below` on its own, [`Calibrator::learn`]).
fn take(
    c: &mut Calibrator,
    level: &mut Option<Level>,
    data: &[f32],
    channels: usize,
    scored: Scored<'_>,
    reading: Option<&Reading>,
    cal: &Calibration,
) {
    let follow = reading.is_none_or(|r| cal.learn_below <= 0.0 || r.probability < cal.learn_below);
    if let Some(l) = level
        && follow
    {
        l.learn(data, channels, cal.level_windows);
    }
    match reading {
        None => c.add(scored.energy, scored.parts, cal),
        Some(r) => c.learn(scored.energy, scored.parts, r, cal),
    }
}

#[cfg(test)]
mod tests;
