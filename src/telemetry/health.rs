//! Which stages are up: each long-running task and thread holds a [`StageGuard`], which
//! reports its end (a return or a panic) to the daemon's supervisor and marks the stage down
//! for `/readyz`. A stage that recovers by itself (a scorer rebuilding its session) marks
//! itself down and up through [`Metrics`].
//!
//! Whether they make progress: the stages that move windows (ingest, batchers, scorers,
//! alerting) beat a [`Pulse`]: idle while they wait for input, a timestamp each time they get
//! or finish a piece of work. One that has held work without finishing any for longer than a
//! limit is stalled ([`Stages::stalled`]): a scorer stuck in an inference, a stage waiting on
//! a stalled one downstream. The systemd watchdog is fed only while none is (see
//! [`super::watchdog`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Metrics;

/// Stage ends reported to the supervisor: the stage's name.
pub type Exits = mpsc::Receiver<String>;

/// Hands out [`StageGuard`]s. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stages {
    tx: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
    pulses: Arc<Mutex<Vec<Watched>>>,
}

/// A running stage's name and heartbeat (gone when the stage ends).
type Watched = (String, Weak<Pulse>);

/// A stage's heartbeat: idle (waiting for input), or working since its last progress.
#[derive(Debug)]
pub struct Pulse {
    epoch: Instant,
    /// 0: idle; else milliseconds since `epoch`, plus one, of the last progress.
    last: AtomicU64,
}

impl Default for Pulse {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Pulse {
    /// About to wait for input: nothing held, nothing owed.
    pub fn idle(&self) {
        self.last.store(0, Ordering::Relaxed);
    }

    /// Got or finished a piece of work.
    pub fn progress(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    /// How long the stage has held work without progress (`None`: idle).
    pub fn held(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            t => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(t - 1)),
            ),
        }
    }
}

/// Stages and the receiver of their ends. The channel holds `capacity` reports; a report that
/// does not fit is dropped (the supervisor is already stopping the daemon for an earlier one).
pub fn stages(metrics: Arc<Metrics>, capacity: usize) -> (Stages, Exits) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Stages {
            tx,
            metrics,
            pulses: Arc::default(),
        },
        rx,
    )
}

impl Stages {
    /// A guard for the stage `name` (`scorer:vibration`, `ingest` ...).
    pub fn guard(&self, name: impl Into<String>) -> StageGuard {
        let name = name.into();
        let pulse = Arc::new(Pulse::default());
        let mut pulses = self.pulses.lock().unwrap_or_else(PoisonError::into_inner);
        // Stages that ended leave their place.
        pulses.retain(|(_, p)| p.strong_count() > 0);
        pulses.push((name.clone(), Arc::downgrade(&pulse)));
        // Exported from the start, at 0, so that a query over it sees every stage.
        self.metrics
            .stage_stalled
            .get_or_create(&super::metrics::StageLabel {
                stage: name.clone(),
            })
            .set(0);
        StageGuard {
            name,
            stages: Some(self.clone()),
            pulse,
        }
    }

    /// The running stages that have held work without progress for longer than `limit`, with
    /// for how long.
    pub fn stalled(&self, limit: Duration) -> Vec<(String, Duration)> {
        let pulses = self.pulses.lock().unwrap_or_else(PoisonError::into_inner);
        pulses
            .iter()
            .filter_map(|(name, p)| {
                let held = p.upgrade()?.held()?;
                (held > limit).then(|| (name.clone(), held))
            })
            .collect()
    }
}

/// Held by a running stage; dropped when it ends, however it ends.
#[derive(Debug)]
pub struct StageGuard {
    name: String,
    stages: Option<Stages>,
    pulse: Arc<Pulse>,
}

impl StageGuard {
    /// The stage ended as designed (a learner handing its queue over): nothing to report.
    pub fn disarm(mut self) {
        self.stages = None;
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stage's heartbeat, to beat from wherever its work is done.
    pub fn pulse(&self) -> Arc<Pulse> {
        self.pulse.clone()
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if let Some(s) = self.stages.take() {
            let why = if std::thread::panicking() {
                "panicked"
            } else {
                "stopped"
            };
            s.metrics.stage_down(&self.name, why);
            // Full only when the supervisor is already stopping the daemon.
            s.tx.try_send(std::mem::take(&mut self.name)).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_holding_work_without_progress_is_stalled_an_idle_one_never() {
        let (stages, _exits) = stages(Arc::new(Metrics::new()), 4);
        let (busy, waiting) = (stages.guard("scorer:a"), stages.guard("ingest"));
        busy.pulse().progress();
        waiting.pulse().idle();
        std::thread::sleep(Duration::from_millis(30));
        let stalled = stages.stalled(Duration::from_millis(10));
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].0, "scorer:a");
        // Progress starts the held time again: under the 30 ms just held, however slow the
        // machine is between these lines (no second limit to race).
        busy.pulse().progress();
        let held = stalled[0].1;
        assert!(stages.stalled(held).is_empty());
        // A stage that ended is no longer watched.
        busy.pulse().progress();
        busy.disarm();
        std::thread::sleep(Duration::from_millis(30));
        assert!(stages.stalled(Duration::from_millis(10)).is_empty());
    }
}
