//! How a stream's verdicts compare with labels (`ebgand score --labels`): per window, the alert
//! state after it against the label of its newest sample (SKAB's protocol: a row is predicted
//! anomalous when the window ending at it is); per labelled anomaly (a run of anomalous
//! windows), whether an alert was raised inside it and how many windows after its start (NAB's
//! notion of a hit), and the alerts raised outside every anomaly.

use serde::Serialize;

use super::AlertState;

/// Confusion counts and event hits; feed it verdicts in stream order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelScore {
    /// Anomalous windows with an alert up.
    pub tp: u64,
    /// Normal windows with an alert up.
    pub fp: u64,
    /// Normal windows without an alert.
    pub tn: u64,
    /// Anomalous windows without an alert.
    pub fn_: u64,
    /// Labelled anomalies (runs of anomalous windows).
    pub anomalies: u64,
    /// Anomalies with an alert raised inside them.
    pub hit: u64,
    /// Per hit anomaly, windows from its first window to the raise.
    pub delays: Vec<u64>,
    /// Alerts raised outside every labelled anomaly.
    pub false_alerts: u64,
    /// Windows that were learning (never alerted; counted above as predicted normal).
    pub learning: u64,
    #[serde(skip)]
    run: Option<(u64, bool)>, // current anomaly: windows into it, hit yet
}

impl LabelScore {
    /// One window: its label, the alert state after it, whether it raised an alert, and whether
    /// it was learning.
    pub fn add(&mut self, label: bool, state: AlertState, raised: bool, learning: bool) {
        let up = state == AlertState::Raised;
        match (label, up) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
        self.learning += u64::from(learning);
        if label {
            let (into, hit) = self.run.get_or_insert_with(|| {
                self.anomalies += 1;
                (0, false)
            });
            if raised && !*hit {
                *hit = true;
                self.hit += 1;
                self.delays.push(*into);
            }
            *into += 1;
        } else {
            self.run = None;
            self.false_alerts += u64::from(raised);
        }
    }

    /// F1 of the anomalous class (0 when undefined).
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// False alarm rate: normal windows with an alert up, of all normal windows.
    pub fn far(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }

    /// Missed alarm rate: anomalous windows without an alert, of all anomalous windows.
    pub fn mar(&self) -> f64 {
        ratio(self.fn_, self.fn_ + self.tp)
    }

    /// The summary printed by `score --labels`.
    pub fn report(&self, column: &str) -> serde_json::Value {
        serde_json::json!({
            "labels": column,
            "f1": self.f1(), "far": self.far(), "mar": self.mar(),
            "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn_,
            "anomalies": self.anomalies, "anomalies_hit": self.hit,
            "windows_to_alert": self.delays, "false_alerts": self.false_alerts,
            "learning_windows": self.learning,
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertState::{Normal, Raised};

    #[test]
    fn counts_windows_hits_delays_and_false_alerts() {
        let mut s = LabelScore::default();
        // learning, normal, false alert (raised, held 2), normal, anomaly of 4 hit at its 3rd
        // window, normal, anomaly of 2 missed
        let rows = [
            (false, Normal, false, true),
            (false, Normal, false, false),
            (false, Raised, true, false),
            (false, Raised, false, false),
            (false, Normal, false, false),
            (true, Normal, false, false),
            (true, Normal, false, false),
            (true, Raised, true, false),
            (true, Raised, false, false),
            (false, Raised, false, false),
            (true, Normal, false, false),
            (true, Normal, false, false),
        ];
        for (label, state, raised, learning) in rows {
            s.add(label, state, raised, learning);
        }
        assert_eq!((s.tp, s.fp, s.tn, s.fn_), (2, 3, 3, 4));
        assert_eq!(
            (s.anomalies, s.hit, s.false_alerts, s.learning),
            (2, 1, 1, 1)
        );
        assert_eq!(s.delays, vec![2]);
        assert!((s.f1() - 4.0 / 11.0).abs() < 1e-12);
        assert!((s.far() - 0.5).abs() < 1e-12);
        assert!((s.mar() - 4.0 / 6.0).abs() < 1e-12);
        let r = s.report("anomaly");
        assert_eq!(r["fn"], 4);
        assert_eq!(r["anomalies_hit"], 1);
    }

    #[test]
    fn empty_is_all_zero() {
        let s = LabelScore::default();
        assert_eq!((s.f1(), s.far(), s.mar()), (0.0, 0.0, 0.0));
    }
}
