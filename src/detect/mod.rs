//! Detection: the calibrated anomaly probability and hysteresis per stream, and the events they
//! produce. Pure logic: no I/O, no clock reads.
//!
//! A window is anomalous when its energy's probability under the stream's own recent healthy
//! behaviour ([`calibrate`]) reaches the stream's alert probability, or, where a stream sets an
//! absolute energy `threshold`, when its energy is over it. A stream's first windows (and its
//! first windows under a new model version) are learning: reported, never alerted on.

pub mod calibrate;
pub mod labels;

use std::collections::HashMap;

pub use calibrate::{Calibration, Calibrator};

use serde::{Deserialize, Serialize};

use crate::pipeline::{Mark, RawWindow};

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

/// Hysteresis parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// k: consecutive windows above threshold that raise.
    pub raise_after: u32,
    /// j: consecutive windows at or below threshold that clear.
    pub clear_after: u32,
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
    /// The stream's calibrator (absent for streams judged by an absolute threshold, and in
    /// checkpoints written before calibration existed: such a stream learns again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrator: Option<Calibrator>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One stream's hysteresis state machine: raise once after k windows above, clear once after j
/// below.
///
/// ```
/// use ebgand::detect::{Detector, Hysteresis, Transition};
/// let mut d = Detector::new(Hysteresis { raise_after: 2, clear_after: 2 });
/// let seen: Vec<_> = [true, true, true, false, false].iter().map(|&a| d.observe(a)).collect();
/// assert_eq!(seen, [None, Some(Transition::Raised), None, None, Some(Transition::Cleared)]);
/// ```
#[derive(Debug, Clone)]
pub struct Detector {
    hysteresis: Hysteresis,
    state: AlertState,
    run: u32,
    raised_for: u32,
    calibrator: Option<Calibrator>,
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
            calibrator: saved.calibrator,
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
            calibrator: self.calibrator.clone(),
        }
    }

    /// Feeds one window's verdict; returns the transition it caused, if any.
    pub fn observe(&mut self, anomalous: bool) -> Option<Transition> {
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
        if self.run >= limit {
            self.state = next;
            self.run = 0;
            out = Some(transition);
        }
        self.raised_for = match self.state {
            AlertState::Raised => self.raised_for.saturating_add(1),
            AlertState::Normal => 0,
        };
        out
    }
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
    pub energy: f32,
    /// Probability of an energy lower than this under the stream's recent healthy windows;
    /// `None` while the stream learns, and for a stream judged by an absolute threshold.
    pub probability: Option<f64>,
    /// The probability at or over which the window counts as anomalous (`None`: judged by
    /// energy against `threshold`).
    pub alert_probability: Option<f64>,
    /// The stream is learning: this window is added to its calibration, not judged.
    pub learning: bool,
    /// The model's calibrated threshold, or the stream's absolute threshold when it sets one.
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
    /// Whether this is the first window seen of its stream (its state is not yet published).
    #[serde(skip)]
    pub first: bool,
    /// The detector after this window, as a restart would carry it on.
    #[serde(skip)]
    pub detector: DetectorState,
    /// Set when an earlier run of the daemon already stored this window's alert (the window is
    /// judged again after a restart): the alert is not published a second time.
    #[serde(skip)]
    pub alerted_before: bool,
}

/// An alert event, as published on `{prefix}/alerts/{stream}` and printed by `ebgand score`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Stream id.
    pub stream: String,
    /// `raised` or `cleared`.
    pub state: Transition,
    /// Energy of the window that caused it.
    pub energy: f32,
    /// Its calibrated probability (absent for a stream judged by an absolute threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// The alert probability applied (absent when judged by energy against `threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_probability: Option<f64>,
    /// The model's calibrated threshold, or the stream's absolute one.
    pub threshold: f32,
    /// Model that scored the window.
    pub model: ModelRef,
    /// The window's first and last sample.
    pub window: WindowRef,
    /// The window's number in its stream.
    pub seq: u64,
    /// Node that raised it.
    pub node: String,
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
    /// The event for a verdict that caused a transition.
    pub fn from_verdict(v: &Verdict, node: &str) -> Option<Self> {
        Some(Self {
            stream: v.stream.clone(),
            state: v.transition?,
            energy: v.energy,
            probability: v.probability,
            alert_probability: v.alert_probability,
            threshold: v.threshold,
            model: v.model.clone(),
            window: WindowRef {
                start: v.start.clone(),
                end: v.end.clone(),
            },
            seq: v.seq,
            node: node.to_owned(),
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
}

impl ShadowStats {
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
    /// How streams are calibrated.
    pub calibration: Calibration,
    detectors: HashMap<String, Detector>,
    /// Saved states of streams not seen yet, from the last run's checkpoint.
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
            detectors: HashMap::new(),
            saved,
        }
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

    /// Forgets a stream (it went quiet): if it comes back, its detector starts fresh.
    pub fn forget(&mut self, stream: &str) {
        self.detectors.remove(stream);
        self.saved.remove(stream);
    }

    /// Judges one window: its probability under the stream's calibration (or its energy against
    /// the stream's absolute threshold), then hysteresis. A learning window is added to the
    /// calibration and leaves the alert state as it is; a judged one is added only when it is
    /// healthy and no alert is raised, so a fault is never learnt.
    pub fn judge(
        &mut self,
        stream: &StreamInfo,
        model: &ModelRef,
        model_threshold: f32,
        window: &RawWindow,
        energy: f32,
    ) -> Verdict {
        let cal = self.calibration;
        let mut first = false;
        let saved = &mut self.saved;
        let detector = self.detectors.entry(stream.id.clone()).or_insert_with(|| {
            first = true;
            let state = saved.remove(&stream.id).unwrap_or_default();
            Detector::restore(stream.hysteresis, state)
        });
        let (threshold, probability, learning, anomalous, transition);
        let mut alert_probability = None;
        match stream.judging {
            Judging::Energy(t) => {
                detector.calibrator = None;
                threshold = t.unwrap_or(model_threshold);
                (probability, learning) = (None, false);
                anomalous = is_anomalous(energy, threshold);
                transition = detector.observe(anomalous);
            }
            Judging::Probability(alert) => {
                alert_probability = Some(alert);
                threshold = model_threshold;
                // Energies of another model version mean nothing to this one: learn again.
                let mut c = detector
                    .calibrator
                    .take()
                    .filter(|c| c.version == model.version)
                    .unwrap_or_else(|| Calibrator::new(&model.version));
                learning = c.learning(&cal);
                if learning {
                    c.add(energy, &cal);
                    (probability, anomalous, transition) = (None, false, None);
                } else {
                    let p = c.probability(energy, &cal);
                    probability = Some(p);
                    anomalous = p >= alert;
                    transition = detector.observe(anomalous);
                    if !anomalous
                        && detector.state == AlertState::Normal
                        && (cal.learn_below <= 0.0 || p < cal.learn_below)
                    {
                        c.add(energy, &cal);
                    }
                    if cal.accept_after > 0 && detector.raised_for >= cal.accept_after {
                        // Raised this long: the level is the new normal. Learn it; the alert
                        // clears once the windows after learning are judged normal.
                        c.relearn();
                        detector.raised_for = 0;
                    }
                }
                detector.calibrator = Some(c);
            }
        }
        Verdict {
            stream: stream.id.clone(),
            seq: window.seq,
            start: window.start.clone(),
            end: window.end.clone(),
            energy,
            probability,
            alert_probability,
            learning,
            threshold,
            anomalous,
            state: detector.state(),
            transition,
            model: model.clone(),
            first,
            detector: detector.saved(),
            alerted_before: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Detector, energies: &[f32], threshold: f32) -> Vec<(usize, Transition)> {
        energies
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| d.observe(is_anomalous(e, threshold)).map(|t| (i, t)))
            .collect()
    }

    #[test]
    fn raises_once_after_k_and_clears_once_after_j() {
        let mut d = Detector::new(Hysteresis {
            raise_after: 3,
            clear_after: 2,
        });
        //        0    1    2    3    4    5    6    7    8    9    10   11   12
        let e = [
            0.5, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0, 0.5, 2.0, 0.5, 0.5, 0.5,
        ];
        assert_eq!(
            feed(&mut d, &e, 1.0),
            vec![(6, Transition::Raised), (11, Transition::Cleared)]
        );
        assert_eq!(d.state(), AlertState::Normal);
    }

    #[test]
    fn threshold_is_exclusive_and_nan_is_anomalous() {
        assert!(!is_anomalous(1.0, 1.0));
        assert!(is_anomalous(f32::NAN, 1.0));
        assert!(is_anomalous(f32::INFINITY, 1.0));
        let mut d = Detector::new(Hysteresis {
            raise_after: 1,
            clear_after: 1,
        });
        assert_eq!(d.observe(true), Some(Transition::Raised));
        assert_eq!(d.observe(true), None);
        assert_eq!(d.observe(false), Some(Transition::Cleared));
    }

    #[test]
    fn flapping_below_k_never_raises() {
        let mut d = Detector::new(Hysteresis {
            raise_after: 3,
            clear_after: 3,
        });
        let e: Vec<f32> = (0..100)
            .map(|i| if i % 3 == 2 { 0.0 } else { 5.0 })
            .collect();
        assert!(feed(&mut d, &e, 1.0).is_empty());
    }

    #[test]
    fn judge_uses_stream_override_and_builds_events() {
        let stream = StreamInfo {
            id: "vib/m1".into(),
            judging: Judging::Energy(Some(10.0)),
            hysteresis: Hysteresis {
                raise_after: 1,
                clear_after: 1,
            },
        };
        let model = ModelRef {
            name: "m".into(),
            version: "v1".into(),
        };
        let w = RawWindow {
            seq: 7,
            start: Mark::Index(0),
            end: Mark::Index(3),
            data: vec![],
        };
        let mut j = Judge::new(Calibration::default());
        let v = j.judge(&stream, &model, 1.0, &w, 5.0);
        assert!(!v.anomalous && v.first && v.threshold == 10.0);
        let v = j.judge(&stream, &model, 1.0, &w, 11.0);
        assert!(!v.first);
        let ev = AlertEvent::from_verdict(&v, "edge").unwrap();
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["state"], "raised");
        assert_eq!(json["window"]["end"], 3);
        assert_eq!(json["model"]["version"], "v1");
        assert_eq!(json["seq"], 7);
    }

    /// One stream judged by probability over `energies`; returns its transitions.
    fn judged(cal: Calibration, energies: impl IntoIterator<Item = f32>) -> Vec<(u64, Transition)> {
        let stream = StreamInfo {
            id: "s".into(),
            judging: Judging::Probability(0.999),
            hysteresis: Hysteresis {
                raise_after: 3,
                clear_after: 50,
            },
        };
        let model = ModelRef {
            name: "m".into(),
            version: "v1".into(),
        };
        let mut j = Judge::new(cal);
        let mut out = Vec::new();
        for (seq, e) in energies.into_iter().enumerate() {
            let w = RawWindow {
                seq: seq as u64,
                start: Mark::Index(0),
                end: Mark::Index(0),
                data: vec![],
            };
            let v = j.judge(&stream, &model, 1.0, &w, e);
            assert!(
                !(v.learning && v.anomalous),
                "a learning window is never anomalous"
            );
            out.extend(v.transition.map(|t| (seq as u64, t)));
        }
        out
    }

    /// Healthy energies: 1.0 with +-30 % deterministic noise, times `level(window)`.
    fn energies(n: usize, level: impl Fn(usize) -> f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let noise = ((i * 7_919) % 1_000) as f32 / 1_000.0; // 0..1, well mixed
                level(i) * (0.7 + 0.6 * noise)
            })
            .collect()
    }

    fn cal() -> Calibration {
        Calibration {
            learn_windows: 200,
            ..Calibration::default()
        }
    }

    #[test]
    fn a_fault_in_the_learning_windows_is_never_alerted() {
        let e = energies(300, |i| if (50..150).contains(&i) { 100.0 } else { 1.0 });
        assert!(judged(cal(), e.iter().copied().take(200)).is_empty());
    }

    #[test]
    fn slow_drift_is_followed_and_a_fault_climbing_faster_is_raised() {
        // Drift: the energy level doubles over 4,000 windows. Fault: the same doubling every
        // 100 windows from window 1,000.
        let drift = energies(5_000, |i| 2f32.powf(i as f32 / 4_000.0));
        assert_eq!(judged(cal(), drift), vec![]);
        let fault = energies(5_000, |i| 2f32.powf(i.saturating_sub(1_000) as f32 / 100.0));
        let t = judged(cal(), fault);
        assert_eq!(t.len(), 1, "raised once, never cleared: {t:?}");
        assert_eq!(t[0].1, Transition::Raised);
        assert!((1_000..1_400).contains(&t[0].0), "{t:?}");
    }

    #[test]
    fn a_held_step_is_raised_once_then_accepted_or_kept_by_configuration() {
        let step = energies(3_000, |i| if i >= 1_000 { 20.0 } else { 1.0 });
        let kept = judged(cal(), step.clone());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0], (1_002, Transition::Raised));
        // Accepted after 500 windows: the stream learns the new level (200 windows), then the
        // alert clears after clear_after (50) normal windows.
        let accepting = Calibration {
            accept_after: 500,
            ..cal()
        };
        let t = judged(accepting, step);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0], (1_002, Transition::Raised));
        assert_eq!(t[1].1, Transition::Cleared);
        assert!((1_750..1_760).contains(&t[1].0), "{t:?}");
    }

    #[test]
    fn a_new_model_version_learns_again() {
        let stream = StreamInfo {
            id: "s".into(),
            judging: Judging::Probability(0.999),
            hysteresis: Hysteresis {
                raise_after: 1,
                clear_after: 1,
            },
        };
        let w = RawWindow {
            seq: 0,
            start: Mark::Index(0),
            end: Mark::Index(0),
            data: vec![],
        };
        let mut j = Judge::new(Calibration {
            learn_windows: 16,
            ..Calibration::default()
        });
        let v1 = ModelRef {
            name: "m".into(),
            version: "v1".into(),
        };
        for e in energies(16, |_| 1.0) {
            assert!(j.judge(&stream, &v1, 1.0, &w, e).learning);
        }
        assert!(!j.judge(&stream, &v1, 1.0, &w, 1.0).learning);
        let v2 = ModelRef {
            version: "v2".into(),
            ..v1
        };
        let v = j.judge(&stream, &v2, 1.0, &w, 1_000.0);
        assert!(v.learning && !v.anomalous && v.probability.is_none());
        assert_eq!(v.detector.calibrator.unwrap().version, "v2");
    }
}
