//! Which stages are up: each long-running task and thread holds a [`StageGuard`], which
//! reports its end (a return or a panic) to the daemon's supervisor and marks the stage down
//! for `/readyz`. A stage that recovers by itself (a scorer rebuilding its session) marks
//! itself down and up through [`Metrics`].

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Metrics;

/// Stage ends reported to the supervisor: the stage's name.
pub type Exits = mpsc::Receiver<String>;

/// Hands out [`StageGuard`]s. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stages {
    tx: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
}

/// Stages and the receiver of their ends. The channel holds `capacity` reports; a report that
/// does not fit is dropped (the supervisor is already stopping the daemon for an earlier one).
pub fn stages(metrics: Arc<Metrics>, capacity: usize) -> (Stages, Exits) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Stages { tx, metrics }, rx)
}

impl Stages {
    /// A guard for the stage `name` (`scorer:vibration`, `ingest` ...).
    pub fn guard(&self, name: impl Into<String>) -> StageGuard {
        StageGuard {
            name: name.into(),
            stages: Some(self.clone()),
        }
    }
}

/// Held by a running stage; dropped when it ends, however it ends.
#[derive(Debug)]
pub struct StageGuard {
    name: String,
    stages: Option<Stages>,
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
