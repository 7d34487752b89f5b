//! The scorer worker: a batcher task that gathers windows into micro-batches, and one OS
//! thread that owns the model's session (`Session::run` takes `&mut self`) and scores them.
//!
//! ```text
//! ingest --Window--> [windows: queue_windows] --> batcher --Job--> [jobs: 2] --> thread
//!        thread --ScoredBatch--> [scored] --> detect
//! ```
//! A hot swap is a `Job::Swap` on the same channel, so it lands between two batches.
//!
//! **Supervision.** A panic while scoring is caught in the thread: the batch is handed on as
//! failed (counted in `ebgand_windows_failed_total`), the stage is marked down (`/readyz`), and
//! the session is rebuilt from the same version folder, on a thread of its own: a TensorRT
//! engine may take minutes. Batches wait up to a second for the rebuild (one on the CPU takes
//! milliseconds, and loses no batch); past that, and while backing off after repeated panics,
//! they fail at once instead of waiting, so this model's queue never fills up and stalls
//! ingest for every other model. A rebuild that runs past 15 minutes gives up. Past
//! [`MAX_PANICS`] panics within [`PANIC_WINDOW`], or [`MAX_REBUILDS`] failed rebuilds in a row,
//! the thread gives up: its [`StageGuard`] reports it and the daemon exits non-zero, for
//! systemd to restart. The batcher and the thread each hold a guard, so either one ending
//! while the daemon runs is seen by the supervisor.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{ModelError, Scorer};
use crate::config::{RuntimeSettings, ScoringSettings};
use crate::detect::StreamInfo;
use crate::faults::Faults;
use crate::pipeline::RawWindow;
use crate::telemetry::health::Pulse;
use crate::telemetry::metrics::{ActiveModelLabel, Metrics, ModelLabel, QueueLabel, StageLabel};
use crate::telemetry::{StageGuard, Stages};

/// Panics within [`PANIC_WINDOW`] after which a scorer gives up.
pub const MAX_PANICS: usize = 5;

/// See [`MAX_PANICS`].
pub const PANIC_WINDOW: Duration = Duration::from_secs(60);

/// Failed session rebuilds in a row after which a scorer gives up.
pub const MAX_REBUILDS: u32 = 8;

/// Back-off before the first rebuild after the first panic; doubled per panic or failed
/// rebuild, up to [`REBUILD_MAX_DELAY`].
const REBUILD_DELAY: Duration = Duration::from_millis(100);

/// See [`REBUILD_DELAY`].
const REBUILD_MAX_DELAY: Duration = Duration::from_secs(5);

/// How long batches wait for a session being rebuilt before they fail at once.
const REBUILD_HOLD: Duration = Duration::from_secs(1);

/// How long a session's rebuild may take before the scorer gives up (a TensorRT engine of a
/// large model takes minutes; a wedged device, for ever).
const REBUILD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// What ends the scorer thread's wait while its session is rebuilt.
enum Wake {
    Job(Option<Job>),
    Loaded(Box<Result<Result<Scorer, ModelError>, oneshot::error::RecvError>>),
    Held,
    TooLong,
}

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
    /// A shadow candidate's scores of the same windows (it never alerts).
    pub shadow: Option<ShadowScored>,
    /// The windows' residuals end to end, W x C values each (empty when not scored): each
    /// channel's part of the energy, which the calibration reads (`detect::energy_parts`), and
    /// what an alert's explanation is made of (`detect::explain`).
    pub residual: Vec<f32>,
}

/// A shadow candidate's scores of a batch's windows.
#[derive(Debug)]
pub struct ShadowScored {
    /// The candidate.
    pub model: Arc<ModelInfo>,
    /// One energy per window.
    pub energies: Vec<f32>,
    /// Its residuals, as [`ScoredBatch::residual`] (each channel's part of its energies).
    pub residual: Vec<f32>,
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
    /// The version of a shadow whose scorer panicked and was dropped, until taken.
    lost_shadow: LostShadow,
}

/// Where the scorer thread leaves the version of a shadow it dropped after a panic, for the
/// control loop ([`ScorerHandle::take_lost_shadow`]).
type LostShadow = Arc<std::sync::Mutex<Option<String>>>;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Score(w) => write!(f, "Score({} windows)", w.len()),
            Self::Swap(s, _) => write!(f, "Swap({})", s.label()),
            Self::Shadow(s) => write!(f, "Shadow({:?})", s.as_ref().map(|s| s.label())),
        }
    }
}

/// What every scorer shares: batching and runtime settings, where scored batches go,
/// metrics, the supervisor, and (in tests) faults to inject.
#[derive(Debug, Clone)]
pub struct ScorerContext {
    /// Batching.
    pub scoring: ScoringSettings,
    /// For rebuilding a session after a panic.
    pub runtime: RuntimeSettings,
    /// To the alerting stage.
    pub scored: mpsc::Sender<ScoredBatch>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The supervisor's guards.
    pub stages: Stages,
    /// Faults to inject (tests only).
    pub faults: Faults,
}

/// Starts the batcher (on `tracker`) over the window queue `windows_rx` and the scorer
/// thread for `scorer`, sending results to `ctx.scored`. The batcher ends when every sender of
/// the queue is gone.
///
/// # Errors
/// [`ModelError::Io`] when the thread cannot be spawned.
pub fn spawn_scorer(
    scorer: Scorer,
    windows_rx: mpsc::Receiver<Window>,
    ctx: &ScorerContext,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<ScorerHandle, ModelError> {
    let model = scorer.version().manifest.name.clone();
    // Two jobs in flight: one being scored, one being gathered. Deeper would only add latency.
    let (jobs_tx, jobs_rx) = mpsc::channel(2);
    let guard = ctx.stages.guard(format!("batcher:{model}"));
    tracker.spawn(
        batcher(
            windows_rx,
            jobs_tx.clone(),
            ctx.clone(),
            model.clone(),
            guard,
        )
        .instrument(info_span!("batcher", model = %model)),
    );
    let (thread_ctx, guard) = (ctx.clone(), ctx.stages.guard(format!("scorer:{model}")));
    let lost_shadow = LostShadow::default();
    let lost = lost_shadow.clone();
    // The thread waits on its job channel with a deadline while its session is down.
    let rt = tokio::runtime::Handle::try_current().map_err(|e| ModelError::Io {
        path: "scorer thread".into(),
        source: std::io::Error::other(e),
    })?;
    let thread = std::thread::Builder::new()
        .name(format!("scorer-{model}"))
        .spawn(move || ScorerThread::new(scorer, thread_ctx, guard, lost).run(jobs_rx, &rt))
        .map_err(|source| ModelError::Io {
            path: "scorer thread".into(),
            source,
        })?;
    Ok(ScorerHandle {
        model,
        jobs: jobs_tx,
        thread: Some(thread),
        lost_shadow,
    })
}

impl ScorerHandle {
    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The version of a shadow the scorer dropped because it panicked, once: the shadow
    /// scores no more, so whoever started it is to end it.
    pub fn take_lost_shadow(&self) -> Option<String> {
        self.lost_shadow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
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
                Ok(Err(_)) => error!(model = %model, "Scorer thread panicked."),
                // The runtime is going away (its blocking pool no longer runs tasks).
                Err(e) => {
                    warn!(model = %model, error = %e, "Could not wait for the scorer thread to stop.")
                }
            }
        }
    }
}

async fn batcher(
    mut rx: mpsc::Receiver<Window>,
    jobs: mpsc::Sender<Job>,
    ctx: ScorerContext,
    model: String,
    guard: StageGuard,
) {
    let pulse = guard.pulse();
    let settings = ctx.scoring;
    let max = settings.max_batch.get();
    let depth = ctx
        .metrics
        .queue_depth
        .get_or_create(&QueueLabel {
            queue: format!("windows:{model}"),
        })
        .clone();
    // The loop ends when every sender is gone (ingest stopped): what is queued is still batched.
    loop {
        pulse.idle();
        let Some(first) = rx.recv().await else { break };
        pulse.progress();
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
        if ctx.faults.batcher_exits(&model) {
            error!(model = %model, "Injected fault: the batcher stops.");
            return;
        }
        if jobs.send(Job::Score(batch)).await.is_err() {
            error!(model = %model, "Scorer thread is gone; batcher stops.");
            return;
        }
        pulse.progress();
    }
}

/// The scorer thread's state: the session, the shadow, and its own health.
struct ScorerThread {
    scorer: Scorer,
    info: Arc<ModelInfo>,
    shadow: Option<(Box<Scorer>, Arc<ModelInfo>)>,
    /// Where a shadow dropped after a panic is told ([`ScorerHandle::take_lost_shadow`]).
    lost_shadow: LostShadow,
    ctx: ScorerContext,
    stage: String,
    label: ModelLabel,
    /// Since when and why the session is unusable, and when to try rebuilding it.
    down: Option<Down>,
    /// When the recent panics happened.
    panics: VecDeque<Instant>,
    /// Idle while waiting for a job; beaten as jobs are taken and scored.
    pulse: Arc<Pulse>,
    _guard: StageGuard,
}

struct Down {
    reason: String,
    rebuild: Rebuild,
    failed_rebuilds: u32,
}

/// Where a rebuild of a session that is down stands.
enum Rebuild {
    /// Backing off until then.
    At(Instant),
    /// A loader thread builds the new session, started then. A swap meanwhile drops this end:
    /// the new version serves, and the loaded session is dropped with the loader's send. The
    /// loader is not joined: nothing waits on a build that may take minutes (shutdown least).
    Loading(oneshot::Receiver<Result<Scorer, ModelError>>, Instant),
}

/// Why the thread stopped scoring for good.
struct GiveUp(String);

impl ScorerThread {
    fn new(scorer: Scorer, ctx: ScorerContext, guard: StageGuard, lost_shadow: LostShadow) -> Self {
        let info = Arc::new(ModelInfo::of(&scorer));
        set_active(&ctx.metrics, &info, 1);
        Self {
            label: ModelLabel {
                model: info.name.clone(),
            },
            stage: guard.name().to_owned(),
            scorer,
            info,
            shadow: None,
            lost_shadow,
            ctx,
            down: None,
            panics: VecDeque::new(),
            pulse: guard.pulse(),
            _guard: guard,
        }
    }

    fn run(mut self, mut jobs: mpsc::Receiver<Job>, rt: &tokio::runtime::Handle) {
        let mut buf: Vec<f32> = Vec::new();
        loop {
            // Rebuilding a session may take minutes (a TensorRT engine): a loader thread does
            // it while this one fails batches (after a second); the stage is down meanwhile,
            // which /readyz says; it is not a stall for the watchdog.
            self.pulse.idle();
            if let Err(give_up) = self.recover() {
                self.give_up(give_up);
                break;
            }
            // While the session is down, wake up to rebuild it when its back-off has passed,
            // or to take the rebuilt one, whether or not windows arrive.
            let job = match self.down.as_mut().map(|d| &mut d.rebuild) {
                None => jobs.blocking_recv(),
                Some(Rebuild::At(at)) => {
                    let at = tokio::time::Instant::from_std(*at);
                    // The timer is made inside block_on: it needs the runtime's context.
                    match rt.block_on(async { tokio::time::timeout_at(at, jobs.recv()).await }) {
                        Ok(job) => job,
                        Err(_) => continue,
                    }
                }
                Some(Rebuild::Loading(loaded, since)) => {
                    // The batches wait for a quick rebuild (one on the CPU takes milliseconds),
                    // as they did behind one on this thread: none is failed for it. Past
                    // REBUILD_HOLD they fail at once, so a slow one (a TensorRT engine) stalls
                    // no other model's streams; past REBUILD_LIMIT the scorer gives up (a
                    // wedged device), for systemd to restart the daemon.
                    let since = *since;
                    let (hold, limit) = (since + REBUILD_HOLD, since + REBUILD_LIMIT);
                    let (hold, limit) = (
                        tokio::time::Instant::from_std(hold),
                        tokio::time::Instant::from_std(limit),
                    );
                    let woke = rt.block_on(async {
                        tokio::select! {
                            loaded = loaded => Wake::Loaded(Box::new(loaded)),
                            () = tokio::time::sleep_until(hold), if tokio::time::Instant::now() < hold => Wake::Held,
                            job = jobs.recv(), if tokio::time::Instant::now() >= hold => Wake::Job(job),
                            () = tokio::time::sleep_until(limit) => Wake::TooLong,
                        }
                    });
                    match woke {
                        Wake::Job(job) => job,
                        Wake::Held => continue,
                        Wake::TooLong => {
                            self.give_up(GiveUp(format!(
                                "rebuilding its session took over {} s",
                                REBUILD_LIMIT.as_secs()
                            )));
                            break;
                        }
                        Wake::Loaded(loaded) => {
                            let loaded = (*loaded).unwrap_or_else(|_| {
                                Err(ModelError::Ort("the session's loader panicked".into()))
                            });
                            if let Err(give_up) = self.rebuilt(loaded) {
                                self.give_up(give_up);
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(job) = job else { break };
            self.pulse.progress();
            match job {
                Job::Shadow(candidate) => {
                    self.shadow = candidate.map(|s| {
                        let info = Arc::new(ModelInfo::of(&s));
                        info!(model.name = %info.name, model.shadow = %info.version, "Shadow scoring started.");
                        (s, info)
                    });
                }
                Job::Swap(new, reply) => {
                    let old = self.info.clone();
                    self.scorer = *new;
                    self.info = Arc::new(ModelInfo::of(&self.scorer));
                    set_active(&self.ctx.metrics, &old, 0);
                    set_active(&self.ctx.metrics, &self.info, 1);
                    if self.down.take().is_some() {
                        self.ctx.metrics.stage_up(&self.stage);
                    }
                    info!(model.name = %self.info.name, model.old = %old.version, model.new = %self.info.version, provider = self.info.provider, "Model swapped.");
                    // The requester may have given up waiting; the swap stands either way.
                    reply.send(old).ok();
                }
                Job::Score(windows) => {
                    let batch = self.score(windows, &mut buf);
                    if self.ctx.scored.blocking_send(batch).is_err() {
                        error!(model = %self.info.name, "Detect stage is gone; scorer stops.");
                        break;
                    }
                    self.pulse.progress();
                }
            }
        }
        set_active(&self.ctx.metrics, &self.info, 0);
    }

    fn give_up(&self, GiveUp(why): GiveUp) {
        // The windows still queued were journaled: the next start scores them.
        error!(model = %self.info.name, reason = %why, "Scorer gives up; the daemon stops so that systemd restarts it.");
    }

    /// Scores one batch with the active model (and the shadow), or fails it at once while the
    /// session is down.
    fn score(&mut self, windows: Vec<Window>, buf: &mut Vec<f32>) -> ScoredBatch {
        buf.clear();
        // Handed on with the batch: one allocation per batch.
        let mut residual = Vec::new();
        // Each window less its stream's drift (detect::level): the model sees the stream at
        // the level it began judging it at. A shadow was trained on recent windows as they
        // are, so it scores them raw.
        let mut drifted = false;
        for w in &windows {
            drifted |= w
                .stream
                .drift
                .apply(&w.raw.data, buf, Some(&self.info.version));
        }
        let n = windows.len();
        #[allow(clippy::disallowed_methods)] // a dedicated thread, not async code
        while self.ctx.faults.scoring_paused() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let energies = match &self.down {
            Some(d) => Err(Arc::new(ModelError::ScorerDown {
                model: self.info.name.clone(),
                reason: d.reason.clone(),
            })),
            None => {
                let (scorer, faults, model) = (&mut self.scorer, &self.ctx.faults, &self.info.name);
                let scored = catch_unwind(AssertUnwindSafe(|| {
                    assert!(
                        !faults.scorer_panics(model),
                        "injected fault: scorer panics"
                    );
                    scorer.score_explained(buf, n, Some(&mut residual))
                }));
                match scored {
                    Ok(r) => r.map_err(Arc::new),
                    Err(panic) => {
                        let why = panic_message(panic.as_ref());
                        self.panicked(&why);
                        Err(Arc::new(ModelError::ScorerDown {
                            model: self.info.name.clone(),
                            reason: format!("panicked: {why}"),
                        }))
                    }
                }
            }
        };
        let metrics = &self.ctx.metrics;
        metrics
            .scoring_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_size.observe(n as f64);
        if let Err(e) = &energies {
            metrics
                .windows_failed
                .get_or_create(&self.label)
                .inc_by(n as u64);
            error!(model = %self.scorer.label(), windows = n, error = %e, "Scoring failed; windows not scored.");
        } else {
            metrics
                .windows_scored
                .get_or_create(&self.label)
                .inc_by(n as u64);
        }
        // The shadow scores the same windows; its failure never touches the active path.
        let shadow = match &mut self.shadow {
            Some((s, sinfo)) if energies.is_ok() => {
                if drifted {
                    buf.clear();
                    for w in &windows {
                        buf.extend_from_slice(&w.raw.data);
                    }
                }
                let mut residual = Vec::new();
                let faults = &self.ctx.faults;
                match catch_unwind(AssertUnwindSafe(|| {
                    // (A shadow's fault is asked for by its version.)
                    assert!(
                        !faults.scorer_panics(&sinfo.version),
                        "injected fault: shadow panics"
                    );
                    s.score_explained(buf, n, Some(&mut residual))
                })) {
                    Ok(Ok(energies)) => Some(ShadowScored {
                        model: sinfo.clone(),
                        energies,
                        residual,
                    }),
                    Ok(Err(e)) => {
                        warn!(model = %s.label(), error = %e, "Shadow scoring failed for a batch.");
                        None
                    }
                    Err(_) => {
                        warn!(model = %s.label(), "Shadow scorer panicked; shadow scoring stops.");
                        *self
                            .lost_shadow
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(sinfo.version.clone());
                        self.shadow = None;
                        None
                    }
                }
            }
            _ => None,
        };
        if energies.is_err() {
            residual.clear();
        }
        ScoredBatch {
            model: self.info.clone(),
            windows,
            energies,
            shadow,
            residual,
        }
    }

    /// The session panicked: mark the stage down and schedule a rebuild, later the more
    /// often it has panicked lately.
    fn panicked(&mut self, why: &str) {
        let now = Instant::now();
        self.panics.push_back(now);
        while self
            .panics
            .front()
            .is_some_and(|t| now.duration_since(*t) > PANIC_WINDOW)
        {
            self.panics.pop_front();
        }
        let recent = self.panics.len() as u32;
        let delay = if recent <= 1 {
            Duration::ZERO
        } else {
            backoff(recent - 1)
        };
        error!(model = %self.info.name, panic = why, recent_panics = recent, rebuild_in_ms = delay.as_millis() as u64, "Scorer panicked; its batch failed, the session is rebuilt.");
        self.ctx
            .metrics
            .stage_down(&self.stage, "scorer panicked; rebuilding its session");
        self.down = Some(Down {
            reason: format!("panicked: {why}"),
            rebuild: Rebuild::At(now + delay),
            failed_rebuilds: 0,
        });
    }

    /// Starts rebuilding a session that is down once its back-off has passed, on a loader
    /// thread ([`Rebuild::Loading`]); gives up past the limits. Called before each wait for a
    /// job.
    fn recover(&mut self) -> Result<(), GiveUp> {
        if self.panics.len() > MAX_PANICS {
            return Err(GiveUp(format!(
                "{} panics within {} s",
                self.panics.len(),
                PANIC_WINDOW.as_secs()
            )));
        }
        let Some(Down {
            rebuild: Rebuild::At(at),
            ..
        }) = &self.down
        else {
            return Ok(());
        };
        if Instant::now() < *at {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let (version, runtime, faults) = (
            self.scorer.version().clone(),
            self.ctx.runtime.clone(),
            self.ctx.faults.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("scorer-load-{}", self.info.name))
            .spawn(move || {
                super::injected_load_delay(&faults, false);
                tx.send(Scorer::load(version, &runtime)).ok();
            });
        match spawned {
            Ok(_detached) => {
                if let Some(down) = &mut self.down {
                    down.rebuild = Rebuild::Loading(rx, Instant::now());
                }
                Ok(())
            }
            Err(source) => self.rebuilt(Err(ModelError::Io {
                path: "scorer loader thread".into(),
                source,
            })),
        }
    }

    /// Serves a rebuilt session, or backs off after a failed rebuild; gives up past
    /// [`MAX_REBUILDS`] failures in a row.
    fn rebuilt(&mut self, loaded: Result<Scorer, ModelError>) -> Result<(), GiveUp> {
        match loaded {
            Ok(fresh) => {
                self.scorer = fresh;
                // The rebuild walks the providers again and may land on another one (a GPU
                // left unusable by the panic): the metric and the batches say which serves.
                if self.scorer.provider().as_str() != self.info.provider {
                    let old =
                        std::mem::replace(&mut self.info, Arc::new(ModelInfo::of(&self.scorer)));
                    set_active(&self.ctx.metrics, &old, 0);
                    set_active(&self.ctx.metrics, &self.info, 1);
                    warn!(model = %self.info.name, provider.old = old.provider, provider.new = self.info.provider, "Scorer session rebuilt on another execution provider.");
                }
                self.down = None;
                self.ctx.metrics.stage_up(&self.stage);
                self.ctx
                    .metrics
                    .stage_restarts
                    .get_or_create(&StageLabel {
                        stage: self.stage.clone(),
                    })
                    .inc();
                info!(model = %self.info.name, version = %self.info.version, "Scorer session rebuilt; scoring again.");
                Ok(())
            }
            Err(e) => {
                let Some(down) = &mut self.down else {
                    return Ok(());
                };
                down.failed_rebuilds += 1;
                if down.failed_rebuilds >= MAX_REBUILDS {
                    return Err(GiveUp(format!(
                        "{} session rebuilds failed, the last: {e}",
                        down.failed_rebuilds
                    )));
                }
                let delay = backoff(down.failed_rebuilds);
                down.rebuild = Rebuild::At(Instant::now() + delay);
                error!(model = %self.info.name, error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot rebuild the scorer session; its batches fail until it is back.");
                Ok(())
            }
        }
    }
}

/// The `n`-th back-off step: [`REBUILD_DELAY`] doubled `n - 1` times, at most
/// [`REBUILD_MAX_DELAY`].
fn backoff(n: u32) -> Duration {
    REBUILD_DELAY
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(REBUILD_MAX_DELAY)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
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
