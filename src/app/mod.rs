//! The wiring: every stage, channel and task of the daemon is created here, supervised here,
//! and drained here.
//!
//! ```text
//! mqtt::Source --Delivery--> ingest (route, decode, window, journal, ack)
//!     --[windows per model]--> batcher --> scorer thread --[scored]--> alerting
//!     --> MqttAlerts (mqtt::Publisher: outbox, alerts, state, energy) --> broker
//! control loop (control.rs): signals, control commands, registry watch, training runs
//! ```
//! Every task and thread holds a [`StageGuard`]: one that ends
//! while the daemon runs stops it with an error (exit 1, systemd restarts it). Drain order on
//! shutdown: stop ingest (its window senders drop; the source sends its last acks and
//! disconnects), let each scorer finish its queue, let alerting publish what it gets and the
//! offline status, let each learner finish its queue, write the last checkpoint, wait for the
//! broker's acks, then disconnect and stop the HTTP endpoints, all within `[shutdown] grace_ms`.

mod adapters;
mod control;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use self::adapters::{HealthyWindows, MqttAlerts};
use crate::alerting::{Alerting, Seeds, Shadows, TAP_TICK};
use crate::config::Settings;
use crate::durable::checkpoint::Progress;
use crate::durable::outbox::{Outbox, SharedOutbox};
use crate::ingest::Ingest;
use crate::ingest::log::IngestLog;
use crate::lifecycle::{self, Learner, Models};
use crate::model::gate::RecentWindows;
use crate::model::{ModelError, Registry, ScorerContext, Window, load_off_runtime, spawn_scorer};
use crate::mqtt::source::HANDOVER_QUEUE;
use crate::mqtt::{Publisher, Source};
use crate::signal::Signal;
use crate::telemetry::{self, Metrics, StageGuard, Systemd};
use crate::train::capture::{Capture, FLUSH_EVERY};
use crate::train::learn::{Learning, learner};
use crate::train::recent;

/// Scored batches queued between the scorers and the alerting stage.
const SCORED_QUEUE: usize = 8;

/// Control messages waiting for the control loop; beyond this, ingest drops them (logged).
const CONTROL_QUEUE: usize = 16;

/// Stream news from ingest (forgotten, stale, back) waiting for the alerting stage; beyond
/// this ingest holds them itself, in order (`ingest::MAX_UNSENT`).
const NEWS_QUEUE: usize = 1024;

/// The `kind` of a stale-stream alert (its incidents are kept apart from window alerts').
const STALE: &str = "stale";

/// Stage ends the supervisor's channel holds (one is enough to stop the daemon).
const EXITS_QUEUE: usize = 64;

/// After the drain, how long tasks still running get to see that they were cancelled.
const LAST_MOMENT: std::time::Duration = std::time::Duration::from_millis(200);

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A model could not be loaded at start-up.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// HTTP endpoints could not start.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// The alert outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] crate::durable::outbox::OutboxError),
    /// The ingest journal could not be opened.
    #[error(transparent)]
    Journal(#[from] crate::durable::journal::JournalError),
    /// The model registry's folder could not be opened.
    #[error(transparent)]
    Registry(#[from] crate::model::registry::RegistryError),
    /// A stage stopped while the daemon was running.
    #[error("the {stage} stage stopped unexpectedly")]
    StageDied {
        /// Which (`ingest`, `scorer:vibration` ...).
        stage: String,
    },
}

pub use crate::model::{check_models, load_model, open_model};

/// Runs the daemon until a [`Signal::Shutdown`] (drain) or [`Signal::Quit`] arrives, or the
/// signal channel closes (treated as shutdown), or a stage stops (an error).
///
/// # Errors
/// [`AppError`] when start-up fails (model, HTTP listener) or a stage dies while running.
pub async fn run(
    settings: Settings,
    signals: mpsc::Receiver<Signal>,
    metrics: Arc<Metrics>,
) -> Result<(), AppError> {
    let tracker = TaskTracker::new();
    let (stages, exits) = telemetry::stages(metrics.clone(), EXITS_QUEUE);
    let used: Vec<String> = {
        let mut v: Vec<String> = settings.streams.iter().map(|s| s.model.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    metrics.set_models(0, used.len());

    // Models first: a daemon that cannot score should not subscribe and ack messages.
    let registry = Registry::open(&settings.registry.dir)?;
    let (scored_tx, scored_rx) = mpsc::channel(SCORED_QUEUE);
    let outbox = SharedOutbox::new(
        Outbox::open(&settings.mqtt.outbox_dir, settings.mqtt.outbox_max)?,
        metrics.outbox_pending.clone(),
    );
    // The journal and checkpoint say where each stream resumes after a crash.
    let progress = Progress::default();
    let journal = settings
        .journal
        .as_ref()
        .map(|j| IngestLog::open(j, progress.clone(), settings.faults.clone()))
        .transpose()?;
    let mut resumed = journal
        .as_ref()
        .map(|d| d.resumed(outbox.lock().last_alerts()))
        .unwrap_or_default();
    // The raises the outbox holds open, and every stream it has alerts of (an earlier run's):
    // what the alerting stage sets right, and what ingest tells it of after the replay.
    let raised_open = outbox.lock().open_window_incidents(&[STALE]);
    resumed.raised = raised_open.iter().cloned().collect();
    let alerted_before: Vec<(String, bool)> = {
        let mut alerted: BTreeMap<String, bool> = (outbox.lock().last_alerts().keys())
            .map(|s| (s.clone(), false))
            .collect();
        alerted.extend(raised_open.into_iter().map(|s| (s, true)));
        alerted.into_iter().collect()
    };
    let (publisher, publisher_loop) = Publisher::new(
        &settings.mqtt,
        &settings.node,
        metrics.clone(),
        outbox.clone(),
    );
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let scorer_ctx = ScorerContext {
        scoring: settings.scoring,
        runtime: settings.runtime.clone(),
        scored: scored_tx,
        metrics: metrics.clone(),
        stages: stages.clone(),
        faults: settings.faults.clone(),
    };
    let mut models = Models {
        registry,
        scorers: BTreeMap::new(),
        served: BTreeMap::new(),
        recent: HashMap::new(),
        learners: HashMap::new(),
        training: HashSet::new(),
        attempts: HashMap::new(),
        shadowing: HashMap::new(),
        warming: HashSet::new(),
        superseded: HashSet::new(),
        unservable: HashMap::new(),
        scorer: Some(scorer_ctx.clone()),
    };
    let mut queues: HashMap<String, mpsc::Sender<Window>> = HashMap::new();
    let mut captures: HashMap<String, Capture> = HashMap::new();
    let mut expected = 0;
    for name in &used {
        let (tx, rx) = mpsc::channel(settings.scoring.queue_windows.get());
        queues.insert(name.clone(), tx);
        models.recent.insert(
            name.clone(),
            Arc::new(RecentWindows::new(settings.registry.gate_windows)),
        );
        let stream = settings
            .streams
            .iter()
            .find(|s| &s.model == name)
            .ok_or_else(|| ModelError::Mismatch {
                model: name.clone(),
                reason: "no stream uses it".into(),
            })?;
        let capture = || {
            Capture::open(
                &settings.learning.dir.join(name),
                stream.window.get(),
                stream.channels.get(),
                settings.learning.shard_windows,
                settings.learning.max_shards,
            )
            .map(|c| {
                c.min_free(settings.learning.min_free_mb.saturating_mul(1 << 20))
                    .reporting(metrics.capture_stopped.clone(), name)
                    .flushing_every(FLUSH_EVERY)
            })
            .map_err(|e| ModelError::Ort(e.to_string()))
        };
        captures.insert(
            name.clone(),
            capture()?.sampled(settings.learning.capture_every),
        );
        let configured = settings.models.get(name).and_then(Option::as_ref);
        let Some(version) = models
            .registry
            .seed(name, configured.map(std::path::PathBuf::as_path))?
        else {
            // No version: a learner captures the stream until a first version is trained.
            let (handover, handover_rx) = oneshot::channel();
            let learning = Learning {
                model: name.clone(),
                capture: capture()?,
                period: settings.learning.period,
                control: control_tx.clone(),
                phases: publisher.clone(),
                metrics: metrics.clone(),
                progress: progress.clone(),
                keep: usize::try_from(settings.learn_windows(name))
                    .unwrap_or(usize::MAX)
                    .max(settings.learning.period.windows),
            };
            let guard = stages.guard(format!("learner:{name}"));
            let task = tracker.spawn(
                async move {
                    let queue = learner(learning, rx, handover_rx).await;
                    // Handing the queue over (or draining) is how a learner is meant to end.
                    guard.disarm();
                    queue
                }
                .instrument(info_span!("learner", model = %name)),
            );
            models
                .learners
                .insert(name.clone(), Learner { handover, task });
            continue;
        };
        expected += 1;
        // A learner's progress left by a stop between the first version's activation and
        // its removal: nothing resumes it now.
        if let Err(e) = recent::forget_saved(&settings.learning.dir.join(name)) {
            warn!(model = %name, error = %e, "Cannot remove the saved learning progress.");
        }
        let scorer =
            load_off_runtime(&settings, name, models.registry.path(name, &version)).await?;
        let handle = spawn_scorer(scorer, rx, &scorer_ctx, &tracker)?;
        models.scorers.insert(name.clone(), handle);
        models.served.insert(name.clone(), version);
        metrics.set_phase(name, "monitoring");
    }
    metrics.set_models(models.scorers.len(), expected);
    // Only the models' context holds a scored-queue sender besides the scorers now.
    drop(scorer_ctx);

    let http = match settings.http_listen {
        Some(addr) => Some(telemetry::bind_http(addr).await?),
        None => None,
    };

    let broker = settings.mqtt.brokers_text();
    let (closing, abort) = (CancellationToken::new(), CancellationToken::new());
    let publisher_task = tracker.spawn(supervised(
        stages.guard("publisher"),
        publisher_loop
            .run(closing.clone(), abort.clone())
            .instrument(info_span!("publisher", mqtt.broker = %broker)),
    ));
    let (news_tx, news_rx) = mpsc::channel(NEWS_QUEUE);
    let shadows = Shadows::default();
    let seeds = Seeds::default();
    // The tap writes a quiet stream's due windows as often as its captures ask.
    let tick = captures
        .values()
        .map(Capture::check_every)
        .min()
        .unwrap_or(TAP_TICK);
    let alerting = Alerting::new(
        MqttAlerts(publisher.clone()),
        HealthyWindows {
            recent: models.recent.clone(),
            captures,
        },
        &settings.node,
        progress.clone(),
        shadows.clone(),
        metrics.clone(),
        resumed,
    )
    .calibrated(settings.calibration.clone())
    .seeded_from(seeds.clone())
    .hearing(news_rx)
    .ticking_every(tick);
    let guard = stages.guard("alerting");
    let alerting = alerting.beating(guard.pulse());
    let alerting_task = tracker.spawn(supervised(
        guard,
        alerting.run(scored_rx).instrument(info_span!("alerting")),
    ));

    // The ingest connection: its source task only polls the broker; the ingest stage does the
    // rest, so a full window queue or a journal sync never delays a keep-alive.
    let (source, acker) = Source::new(
        &settings.mqtt,
        &settings.node,
        crate::ingest::filters(&settings),
        metrics.clone(),
    );
    let source = source.suspecting(
        journal
            .as_ref()
            .map(|d| d.message_ids().collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    let (deliveries_tx, deliveries_rx) = mpsc::channel(HANDOVER_QUEUE);
    // Only ingest holds the queues' senders now: when it stops, the queues close.
    let ingest = Ingest::new(&settings, queues, acker, metrics.clone(), Some(control_tx))
        .telling(news_tx, progress.clone())
        .stale_before(outbox.lock().open_incidents(STALE))
        .alerted_before(alerted_before);
    let ingest = match journal {
        Some(d) => ingest.journaled(d),
        None => ingest,
    };
    let ingest_token = CancellationToken::new();
    let source_task = tracker.spawn(supervised(
        stages.guard("source"),
        source
            .run(deliveries_tx, abort.clone())
            .instrument(info_span!("source", mqtt.broker = %broker)),
    ));
    let guard = stages.guard("ingest");
    let ingest = ingest.beating(guard.pulse());
    let ingest_task = tracker.spawn(supervised(
        guard,
        ingest
            .run(deliveries_rx, ingest_token.clone())
            .instrument(info_span!("ingest")),
    ));

    let service_token = CancellationToken::new();
    if let Some(listener) = http {
        tracker.spawn(supervised(
            stages.guard("http"),
            telemetry::serve_http(listener, metrics.clone(), service_token.clone())
                .instrument(info_span!("http")),
        ));
    }
    let systemd = Systemd;
    tracker.spawn(
        telemetry::watchdog(
            systemd.watchdog_interval(),
            stages.clone(),
            metrics.clone(),
            service_token.clone(),
        )
        .instrument(info_span!("watchdog")),
    );
    systemd.ready();
    info!(streams = settings.streams.len(), models = models.scorers.len(), node = %settings.node, registry = %settings.registry.dir.display(), "ebgand running.");

    let mut interrupts = control::Interrupts::new(signals, exits);
    // Training runs report back here; cancelling training_stop stops them (SIGTERM to the
    // worker) when the daemon stops.
    let (internal_tx, internal_rx) = mpsc::channel(CONTROL_QUEUE);
    let training_stop = CancellationToken::new();
    let stop = control::run(
        lifecycle::Context {
            settings: &settings,
            metrics: &metrics,
            publisher: &publisher,
            tracker: &tracker,
            internal: internal_tx,
            stop: training_stop.clone(),
            shadows,
            seeds,
            progress: progress.clone(),
        },
        &mut models,
        control_rx,
        internal_rx,
        &mut interrupts,
    )
    .await;
    let outcome = match stop {
        control::Stop::Signal(signal) => {
            info!(signal = ?signal, "Stopping.");
            Ok(())
        }
        control::Stop::Died(stage) => {
            error!(stage = %stage, "A stage stopped; shutting down with an error.");
            Err(AppError::StageDied { stage })
        }
    };
    training_stop.cancel();
    // The publisher handle and the models' scored-queue sender must go before the drain waits
    // on the stages they feed.
    drop(publisher);
    models.scorer.take();

    systemd.stopping();
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
    info!(
        grace_ms = settings.shutdown_grace.as_millis() as u64,
        "Draining."
    );
    let drain = async {
        ingest_token.cancel();
        let leftover = ingest_task.await.unwrap_or_else(|e| {
            joined::<()>("ingest", Err(e));
            None
        });
        for (_, handle) in std::mem::take(&mut models.scorers) {
            handle.drain().await;
        }
        joined("alerting", alerting_task.await);
        // A learner still capturing finishes its queue (ingest's senders are gone), so the
        // windows it took are in the checkpoint's progress and not captured again after the
        // restart.
        for (name, learner) in std::mem::take(&mut models.learners) {
            if let Err(e) = learner.task.await {
                warn!(model = %name, error = %e, "A learner ended badly while draining.");
            }
        }
        // Every window queued has been judged: the last checkpoint leaves only incomplete
        // windows to replay.
        if let Some(l) = leftover {
            l.checkpoint();
        }
        // Meanwhile the source has sent the last acks and the DISCONNECT ingest queued.
        joined("source", source_task.await);
        closing.cancel();
        joined("publisher", publisher_task.await);
    };
    let at_once = tokio::select! {
        () = drain => {
            info!("Drained.");
            false
        }
        () = tokio::time::sleep_until(deadline) => {
            warn!("Drain deadline passed; stopping with work unfinished.");
            false
        }
        () = interrupts.second_signal() => {
            warn!("Second signal: stopping without finishing the drain.");
            true
        }
    };
    abort.cancel();
    service_token.cancel();
    ingest_token.cancel();
    tracker.close();
    // Every task has been told to stop; what remains of the grace period (at least a moment)
    // lets them observe it. A second signal stops at once: a moment only.
    let moment = tokio::time::Instant::now() + LAST_MOMENT;
    let until = if at_once {
        moment
    } else {
        deadline.max(moment)
    };
    if tokio::time::timeout_at(until, tracker.wait())
        .await
        .is_err()
    {
        warn!(tasks = tracker.len(), "Tasks still running at exit.");
    }
    info!("ebgand stopped.");
    outcome
}

/// Runs a stage's future holding its guard: when the future ends or panics, the guard tells
/// the supervisor.
async fn supervised<F: Future>(guard: StageGuard, stage: F) -> F::Output {
    let _guard = guard;
    stage.await
}

/// Logs a stage task that panicked instead of returning (one cancelled, at the drain deadline
/// or as the runtime stops, did not panic).
fn joined<T>(stage: &'static str, r: Result<T, tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_cancelled() {
            warn!(stage, "Stage task cancelled before it finished.");
            return;
        }
        error!(stage, error = %e, "Stage task panicked.");
    }
}
