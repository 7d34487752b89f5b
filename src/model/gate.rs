//! The activation gate's data check: a candidate model scores a sample of recent healthy
//! windows; every energy must be finite and the share over its threshold (the false alarms it
//! would have raised) must stay under a bound.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{ModelError, Scorer};

/// Recent windows judged healthy by the active model, kept for the gate. Bounded: the oldest
/// window makes room for a new one.
#[derive(Debug)]
pub struct RecentWindows {
    cap: usize,
    windows: Mutex<VecDeque<Vec<f32>>>,
}

impl RecentWindows {
    /// Keeps at most `cap` windows.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            windows: Mutex::new(VecDeque::with_capacity(cap)),
        }
    }

    /// Adds a window (dropping the oldest when full).
    pub fn push(&self, window: &[f32]) {
        if self.cap == 0 {
            return;
        }
        // A poisoned lock only means a panic elsewhere mid-push; the data is still windows.
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Reuse the oldest window's buffer once full: this runs for every healthy window.
        let mut slot = if w.len() == self.cap {
            w.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        slot.clear();
        slot.extend_from_slice(window);
        w.push_back(slot);
    }

    /// A copy of what is kept.
    pub fn snapshot(&self) -> Vec<Vec<f32>> {
        let w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.iter().cloned().collect()
    }
}

/// What the gate measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateReport {
    /// Windows scored.
    pub windows: usize,
    /// Windows over the candidate's threshold.
    pub false_alarms: usize,
}

impl GateReport {
    /// False alarms / windows (0 with no windows).
    pub fn rate(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.false_alarms as f64 / self.windows as f64
        }
    }
}

/// Scores `windows` with the candidate and checks them against `max_rate`; fewer than
/// `min_windows` of them (of the model's shape) refuse it, as a rate on a handful of windows
/// means nothing. With `min_windows` 0 and no windows only the static checks done at load
/// apply.
///
/// # Errors
/// [`ModelError::Refused`] with the reason: too few windows, a non-finite energy, or too many
/// false alarms.
pub fn check(
    scorer: &mut Scorer,
    windows: &[Vec<f32>],
    max_rate: f64,
    min_windows: usize,
) -> Result<GateReport, ModelError> {
    let threshold = scorer.version().manifest.threshold.value;
    let mut report = GateReport {
        windows: 0,
        false_alarms: 0,
    };
    let len = scorer.window_len();
    for chunk in windows.chunks(super::BULK_BATCH) {
        let batch: Vec<f32> = chunk
            .iter()
            .filter(|w| w.len() == len)
            .flatten()
            .copied()
            .collect();
        let n = batch.len() / len.max(1);
        if n == 0 {
            continue;
        }
        let energies = scorer.score(&batch, n)?;
        if let Some(e) = energies.iter().find(|e| !e.is_finite()) {
            return Err(ModelError::Refused {
                model: scorer.label(),
                reason: format!("energy {e} on a recent healthy window"),
            });
        }
        report.windows += n;
        report.false_alarms += energies.iter().filter(|&&e| e > threshold).count();
    }
    if report.windows < min_windows {
        return Err(ModelError::Refused {
            model: scorer.label(),
            reason: format!(
                "only {} recent healthy windows to judge it on, fewer than registry.gate_min_windows \
                 ({min_windows}): let the served version judge more, or lower the minimum",
                report.windows
            ),
        });
    }
    if report.rate() > max_rate {
        return Err(ModelError::Refused {
            model: scorer.label(),
            reason: format!(
                "false-alarm rate {:.1} % on {} recent healthy windows exceeds the bound of {:.1} %",
                100.0 * report.rate(),
                report.windows,
                100.0 * max_rate
            ),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_windows_are_bounded() {
        let r = RecentWindows::new(2);
        for i in 0..5 {
            r.push(&[i as f32]);
        }
        assert_eq!(r.snapshot(), vec![vec![3.0], vec![4.0]]);
        assert_eq!(
            GateReport {
                windows: 4,
                false_alarms: 1
            }
            .rate(),
            0.25
        );
    }
}
