//! The scorer worker: a batcher task that gathers windows into micro-batches, and one OS
//! thread that owns the model's session (`Session::run` takes `&mut self`) and scores them.
//!
//! ```text
//! ingest --Window--> [windows: queue_windows] --> batcher --Job--> [jobs: 2] --> thread
//!        thread --ScoredBatch--> [scored] --> detect
//! ```
//! A hot swap is a `Job::Swap` on the same channel, so it lands between two batches.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{ModelError, Scorer};
use crate::config::ScoringSettings;
use crate::detect::StreamInfo;
use crate::pipeline::RawWindow;
use crate::telemetry::metrics::{ActiveModelLabel, Metrics, ModelLabel, QueueLabel};

/// A window on its way to a scorer.
#[derive(Debug)]
pub struct Window {
    /// Its stream.
    pub stream: Arc<StreamInfo>,
    /// The samples and their position.
    pub raw: RawWindow,
}

/// Identity of the model that scored a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Calibrated threshold from the manifest.
    pub threshold: f32,
    /// Execution provider.
    pub provider: &'static str,
}

impl ModelInfo {
    fn of(scorer: &Scorer) -> Self {
        let m = &scorer.version().manifest;
        Self {
            name: m.name.clone(),
            version: m.version.clone(),
            threshold: m.threshold.value,
            provider: scorer.provider().as_str(),
        }
    }
}

/// Windows with their energies (or the error that kept them from being scored).
#[derive(Debug)]
pub struct ScoredBatch {
    /// The model that scored them.
    pub model: Arc<ModelInfo>,
    /// The windows, in arrival order.
    pub windows: Vec<Window>,
    /// One energy per window.
    pub energies: Result<Vec<f32>, Arc<ModelError>>,
    /// A shadow candidate's energies for the same windows (it never alerts).
    pub shadow: Option<(Arc<ModelInfo>, Vec<f32>)>,
}

enum Job {
    Score(Vec<Window>),
    Swap(Box<Scorer>, oneshot::Sender<Arc<ModelInfo>>),
    /// Score every batch with this candidate too (`None`: stop).
    Shadow(Option<Box<Scorer>>),
}

/// Handle to a running scorer: the window queue's sender, hot swap, and shutdown.
#[derive(Debug)]
pub struct ScorerHandle {
    model: String,
    jobs: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Score(w) => write!(f, "Score({} windows)", w.len()),
            Self::Swap(s, _) => write!(f, "Swap({})", s.label()),
            Self::Shadow(s) => write!(f, "Shadow({:?})", s.as_ref().map(|s| s.label())),
        }
    }
}

/// Starts the batcher (on `tracker`) over the window queue `windows_rx` and the scorer
/// thread for `scorer`, sending results to `scored`. The batcher ends when every sender of
/// the queue is gone.
///
/// # Errors
/// [`ModelError::Io`] when the thread cannot be spawned.
pub fn spawn_scorer(
    scorer: Scorer,
    windows_rx: mpsc::Receiver<Window>,
    settings: ScoringSettings,
    scored: mpsc::Sender<ScoredBatch>,
    metrics: Arc<Metrics>,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<ScorerHandle, ModelError> {
    let model = scorer.version().manifest.name.clone();
    // Two jobs in flight: one being scored, one being gathered. Deeper would only add latency.
    let (jobs_tx, jobs_rx) = mpsc::channel(2);
    tracker.spawn(
        batcher(
            windows_rx,
            jobs_tx.clone(),
            settings,
            metrics.clone(),
            model.clone(),
        )
        .instrument(info_span!("batcher", model = %model)),
    );
    let thread_metrics = metrics;
    let thread = std::thread::Builder::new()
        .name(format!("scorer-{model}"))
        .spawn(move || scorer_thread(scorer, jobs_rx, scored, thread_metrics))
        .map_err(|source| ModelError::Io {
            path: "scorer thread".into(),
            source,
        })?;
    Ok(ScorerHandle {
        model,
        jobs: jobs_tx,
        thread: Some(thread),
    })
}

impl ScorerHandle {
    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Replaces the served model between two batches; returns the model it replaced.
    ///
    /// # Errors
    /// [`ModelError::WorkerGone`] when the worker has stopped.
    pub async fn swap(&self, scorer: Scorer) -> Result<Arc<ModelInfo>, ModelError> {
        let gone = || ModelError::WorkerGone {
            model: self.model.clone(),
        };
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Swap(Box::new(scorer), tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Starts (or, with `None`, stops) shadow scoring with a candidate, between two batches.
    ///
    /// # Errors
    /// [`ModelError::WorkerGone`] when the worker has stopped.
    pub async fn shadow(&self, scorer: Option<Scorer>) -> Result<(), ModelError> {
        self.jobs
            .send(Job::Shadow(scorer.map(Box::new)))
            .await
            .map_err(|_| ModelError::WorkerGone {
                model: self.model.clone(),
            })
    }

    /// Closes the queue and waits for every queued window to be scored and handed on.
    /// Callers must have dropped their window senders (ingest stopped) first.
    pub async fn drain(mut self) {
        drop(self.jobs);
        if let Some(thread) = self.thread.take() {
            let model = self.model.clone();
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => debug!(model = %model, "Scorer thread stopped."),
                _ => error!(model = %model, "Scorer thread panicked."),
            }
        }
    }
}

async fn batcher(
    mut rx: mpsc::Receiver<Window>,
    jobs: mpsc::Sender<Job>,
    settings: ScoringSettings,
    metrics: Arc<Metrics>,
    model: String,
) {
    let max = settings.max_batch.get();
    let depth = metrics
        .queue_depth
        .get_or_create(&QueueLabel {
            queue: format!("windows:{model}"),
        })
        .clone();
    // The loop ends when every sender is gone (ingest stopped): what is queued is still batched.
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + settings.max_wait;
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        // Take what is already queued without touching a timer, then wait up to max_wait.
        while batch.len() < max {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        while batch.len() < max && !settings.max_wait.is_zero() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(w)) => batch.push(w),
                Ok(None) | Err(_) => break,
            }
        }
        depth.set(rx.len() as i64);
        if jobs.send(Job::Score(batch)).await.is_err() {
            error!(model = %model, "Scorer thread is gone; batcher stops.");
            return;
        }
    }
}

fn scorer_thread(
    mut scorer: Scorer,
    mut jobs: mpsc::Receiver<Job>,
    scored: mpsc::Sender<ScoredBatch>,
    metrics: Arc<Metrics>,
) {
    let mut info = Arc::new(ModelInfo::of(&scorer));
    set_active(&metrics, &info, 1);
    let model_label = ModelLabel {
        model: info.name.clone(),
    };
    let mut buf: Vec<f32> = Vec::new();
    let mut shadow: Option<(Box<Scorer>, Arc<ModelInfo>)> = None;
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Shadow(candidate) => {
                shadow = candidate.map(|s| {
                    let info = Arc::new(ModelInfo::of(&s));
                    info!(model.name = %info.name, model.shadow = %info.version, "Shadow scoring started.");
                    (s, info)
                });
            }
            Job::Swap(new, reply) => {
                let old = info.clone();
                scorer = *new;
                info = Arc::new(ModelInfo::of(&scorer));
                set_active(&metrics, &old, 0);
                set_active(&metrics, &info, 1);
                info!(model.name = %info.name, model.old = %old.version, model.new = %info.version, provider = info.provider, "Model swapped.");
                // The requester may have given up waiting; the swap stands either way.
                reply.send(old).ok();
            }
            Job::Score(windows) => {
                buf.clear();
                for w in &windows {
                    buf.extend_from_slice(&w.raw.data);
                }
                let started = Instant::now();
                let energies = scorer.score(&buf, windows.len()).map_err(Arc::new);
                metrics
                    .scoring_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.batch_size.observe(windows.len() as f64);
                let n = windows.len() as u64;
                if let Err(e) = &energies {
                    metrics.windows_failed.get_or_create(&model_label).inc_by(n);
                    error!(model = %scorer.label(), windows = n, error = %e, "Scoring failed; windows not scored.");
                } else {
                    metrics.windows_scored.get_or_create(&model_label).inc_by(n);
                }
                // The shadow scores the same windows; its failure never touches the active path.
                let shadow_energies = match &mut shadow {
                    Some((s, sinfo)) if energies.is_ok() => match s.score(&buf, windows.len()) {
                        Ok(e) => Some((sinfo.clone(), e)),
                        Err(e) => {
                            warn!(model = %s.label(), error = %e, "Shadow scoring failed for a batch.");
                            None
                        }
                    },
                    _ => None,
                };
                let batch = ScoredBatch {
                    model: info.clone(),
                    windows,
                    energies,
                    shadow: shadow_energies,
                };
                if scored.blocking_send(batch).is_err() {
                    error!(model = %info.name, "Detect stage is gone; scorer stops.");
                    break;
                }
            }
        }
    }
    set_active(&metrics, &info, 0);
}

fn set_active(metrics: &Metrics, info: &ModelInfo, v: i64) {
    let label = ActiveModelLabel {
        model: info.name.clone(),
        version: info.version.clone(),
        provider: info.provider.to_string(),
    };
    if v == 0 {
        metrics.active_model.remove(&label);
    } else {
        metrics.active_model.get_or_create(&label).set(v);
    }
}
