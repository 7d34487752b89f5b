//! The wiring: every stage, channel and task of the daemon is created here, and drained here.
//!
//! ```text
//! ingest (MQTT, decode, window) --[windows per model]--> batcher --> scorer thread
//!     --[scored]--> alerting (detect, publish) --> publish connection
//! ```
//! Drain order on shutdown: stop ingest (its window senders drop), let each scorer finish its
//! queue, let alerting publish what it gets and the offline status, wait for the broker's acks,
//! then disconnect and stop the HTTP endpoints.

mod adapters;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use self::adapters::{HealthyWindows, MqttAlerts};
use crate::alerting::{Alerting, Shadows};
use crate::config::Settings;
use crate::control::{Command, ControlMessage};
use crate::durable::checkpoint::Progress;
use crate::durable::outbox::{Outbox, SharedOutbox};
use crate::ingest::Ingest;
use crate::ingest::log::IngestLog;
use crate::lifecycle::{Context, Learner, Models, seed_version};
use crate::model::gate::RecentWindows;
use crate::model::{ModelError, Registry, Window, load_off_runtime, spawn_scorer};
use crate::mqtt::source::HANDOVER_QUEUE;
use crate::mqtt::{Publisher, Source};
use crate::signal::Signal;
use crate::telemetry::{self, Metrics, Systemd};
use crate::train::learn::{Capture, Learning, learner};

/// Scored batches queued between the scorers and the alerting stage.
const SCORED_QUEUE: usize = 8;

/// Control messages waiting for the control loop; beyond this, ingest drops them (logged).
const CONTROL_QUEUE: usize = 16;

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
    /// A stage stopped while the daemon was running.
    #[error("the {stage} stage stopped unexpectedly")]
    StageDied {
        /// Which.
        stage: &'static str,
    },
}

pub use crate::model::{check_models, load_model, open_model};

/// Runs the daemon until a [`Signal::Shutdown`] (drain) or [`Signal::Quit`] arrives, or the
/// signal channel closes (treated as shutdown).
///
/// # Errors
/// [`AppError`] when start-up fails (model, HTTP listener) or a stage dies while running.
pub async fn run(
    settings: Settings,
    mut signals: mpsc::Receiver<Signal>,
    metrics: Arc<Metrics>,
) -> Result<(), AppError> {
    let tracker = TaskTracker::new();
    let used: Vec<String> = {
        let mut v: Vec<String> = settings.streams.iter().map(|s| s.model.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    metrics.set_models(0, used.len());

    // Models first: a daemon that cannot score should not subscribe and ack messages.
    let registry =
        Registry::open(&settings.registry.dir).map_err(|e| ModelError::Ort(e.to_string()))?;
    let (scored_tx, scored_rx) = mpsc::channel(SCORED_QUEUE);
    let outbox = SharedOutbox::new(
        Outbox::open(&settings.mqtt.outbox_dir, settings.mqtt.outbox_max)?,
        metrics.outbox_pending.clone(),
    );
    // The journal and checkpoint say where each stream resumes after a crash.
    let progress = Progress::default();
    let durable = settings
        .journal
        .as_ref()
        .map(|j| IngestLog::open(j, progress.clone()))
        .transpose()?;
    let resumed = durable
        .as_ref()
        .map(|d| d.resumed(outbox.lock().last_alerts()))
        .unwrap_or_default();
    let (publisher, publisher_loop) =
        Publisher::new(&settings.mqtt, &settings.node, metrics.clone(), outbox);
    let (control_tx, mut control_rx) = mpsc::channel(CONTROL_QUEUE);
    let mut models = Models {
        registry,
        scorers: BTreeMap::new(),
        served: BTreeMap::new(),
        recent: HashMap::new(),
        learners: HashMap::new(),
        training: HashSet::new(),
        attempts: HashMap::new(),
        shadowing: HashMap::new(),
        scored: Some(scored_tx.clone()),
    };
    let shadows = Shadows::default();
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
            })
            .map_err(|e| ModelError::Ort(e.to_string()))
        };
        captures.insert(
            name.clone(),
            capture()?.sampled(settings.learning.capture_every),
        );
        let configured = settings.models.get(name).and_then(Option::as_ref);
        let Some(version) = seed_version(&models.registry, name, configured)? else {
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
            };
            let task = tracker.spawn(
                learner(learning, rx, handover_rx).instrument(info_span!("learner", model = %name)),
            );
            models
                .learners
                .insert(name.clone(), Learner { handover, task });
            continue;
        };
        expected += 1;
        let scorer =
            load_off_runtime(&settings, name, models.registry.path(name, &version)).await?;
        let handle = spawn_scorer(
            scorer,
            rx,
            settings.scoring,
            scored_tx.clone(),
            metrics.clone(),
            &tracker,
        )?;
        models.scorers.insert(name.clone(), handle);
        models.served.insert(name.clone(), version);
        metrics.set_phase(name, "monitoring");
    }
    metrics.set_models(models.scorers.len(), expected);
    drop(scored_tx);

    let http = match settings.http_listen {
        Some(addr) => Some(telemetry::bind_http(addr).await?),
        None => None,
    };

    let broker = format!("{}:{}", settings.mqtt.host, settings.mqtt.port);
    let (closing, abort) = (CancellationToken::new(), CancellationToken::new());
    let publisher_task = tracker.spawn(
        publisher_loop
            .run(closing.clone(), abort.clone())
            .instrument(info_span!("publisher", mqtt.broker = %broker)),
    );
    let alerting = Alerting::new(
        MqttAlerts(publisher.clone()),
        HealthyWindows {
            recent: models.recent.clone(),
            captures,
        },
        &settings.node,
        progress,
        shadows.clone(),
        metrics.clone(),
        resumed,
    );
    let mut alerting_task =
        tracker.spawn(alerting.run(scored_rx).instrument(info_span!("alerting")));

    // The ingest connection: its source task only polls the broker; the ingest stage does the
    // rest, so a full window queue or a journal sync never delays a keep-alive.
    let (source, acker) = Source::new(
        &settings.mqtt,
        &settings.node,
        crate::ingest::filters(&settings),
        metrics.clone(),
    );
    let source = source.suspecting(
        durable
            .as_ref()
            .map(|d| d.pkids().collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    let (deliveries_tx, deliveries_rx) = mpsc::channel(HANDOVER_QUEUE);
    // Only ingest holds the queues' senders now: when it stops, the queues close.
    let ingest = Ingest::new(&settings, queues, acker, metrics.clone(), Some(control_tx));
    let ingest = match durable {
        Some(d) => ingest.journaled(d),
        None => ingest,
    };
    let ingest_token = CancellationToken::new();
    let source_task = tracker.spawn(
        source
            .run(deliveries_tx, abort.clone())
            .instrument(info_span!("source", mqtt.broker = %broker)),
    );
    let ingest_task = tracker.spawn(
        ingest
            .run(deliveries_rx, ingest_token.clone())
            .instrument(info_span!("ingest")),
    );

    let service_token = CancellationToken::new();
    if let Some(listener) = http {
        tracker.spawn(
            telemetry::serve_http(listener, metrics.clone(), service_token.clone())
                .instrument(info_span!("http")),
        );
    }
    let systemd = Systemd;
    if let Some(interval) = systemd.watchdog_interval() {
        tracker.spawn(
            telemetry::watchdog(interval, service_token.clone()).instrument(info_span!("watchdog")),
        );
    }
    systemd.ready();
    info!(streams = settings.streams.len(), models = models.scorers.len(), node = %settings.node, registry = %settings.registry.dir.display(), "ebgand running.");

    let (internal_tx, mut internal_rx) = mpsc::channel(CONTROL_QUEUE);
    let stop = CancellationToken::new();
    let ctx = Context {
        settings: &settings,
        metrics: &metrics,
        publisher: &publisher,
        tracker: &tracker,
        internal: internal_tx,
        stop: stop.clone(),
        shadows: shadows.clone(),
    };
    let mut retrain = settings.learning.retrain_every.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut watch = tokio::time::interval(settings.registry.watch);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            sig = signals.recv() => match sig {
                Some(Signal::Reload) => {
                    systemd.reloading();
                    models.command(&ctx, Command::Reload).await;
                    systemd.ready();
                }
                Some(Signal::Shutdown | Signal::Quit) | None => break,
            },
            Some(msg) = control_rx.recv() => match msg {
                ControlMessage::Command(cmd) => {
                    info!(command = cmd.name(), "Control command.");
                    models.command(&ctx, cmd).await;
                }
                ControlMessage::Refused { command, reason } => {
                    warn!(command = %command, reason = %reason, "Control command refused.");
                    ctx.event(serde_json::json!({ "event": "command_refused", "command": command, "reason": reason })).await;
                }
            },
            _ = watch.tick() => models.follow_registry(&ctx).await,
            Some(msg) = internal_rx.recv() => models.internal(&ctx, msg).await,
            Some(_) = tick(retrain.as_mut()) => {
                let names: Vec<String> = models.scorers.keys().cloned().collect();
                for name in names {
                    if let Err(reason) = models.start_training(&ctx, &name).await {
                        warn!(model = %name, reason = %reason, "Scheduled retraining not started.");
                    }
                }
            }
            // Alerting ends only when every scorer has stopped or publishing failed.
            _ = &mut alerting_task => {
                error!("The alerting stage stopped; shutting down.");
                outcome = Err(AppError::StageDied { stage: "alerting" });
                break;
            }
        }
    }
    // Training runs stop (the worker gets SIGTERM); the publisher handle and the spare
    // scored-queue sender must go before the drain waits on the stages they feed.
    stop.cancel();
    drop(ctx);
    drop(publisher);
    models.scored.take();

    systemd.stopping();
    info!(
        grace_ms = settings.shutdown_grace.as_millis() as u64,
        "Draining."
    );
    let drain = async {
        ingest_token.cancel();
        let leftover = match ingest_task.await {
            Ok(l) => l,
            Err(e) => {
                joined("ingest", Err(e));
                None
            }
        };
        // The source sends the last acks and the DISCONNECT ingest queued, then ends.
        joined("source", source_task.await);
        for (_, handle) in std::mem::take(&mut models.scorers) {
            handle.drain().await;
        }
        if !alerting_task.is_finished() {
            joined("alerting", (&mut alerting_task).await);
        }
        // Every window queued has been judged: the last checkpoint leaves only incomplete
        // windows to replay.
        if let Some(l) = leftover {
            l.checkpoint();
        }
        closing.cancel();
        joined("publisher", publisher_task.await);
    };
    tokio::select! {
        () = drain => info!("Drained."),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            warn!("Drain deadline passed; stopping with work unfinished.");
        }
        sig = signals.recv() => {
            if let Some(s) = sig { warn!(signal = ?s, "Second signal: stopping without finishing the drain."); }
        }
    }
    abort.cancel();
    service_token.cancel();
    ingest_token.cancel();
    tracker.close();
    // Every task has been told to stop; give them a moment to observe it.
    if tokio::time::timeout(std::time::Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        warn!(tasks = tracker.len(), "Tasks still running at exit.");
    }
    info!("ebgand stopped.");
    outcome
}

/// Ticks `interval` when there is one; never resolves otherwise (a disabled select arm).
async fn tick(interval: Option<&mut tokio::time::Interval>) -> Option<()> {
    match interval {
        Some(i) => {
            i.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

/// Logs a stage task that panicked instead of returning.
fn joined(stage: &'static str, r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        error!(stage, error = %e, "Stage task panicked.");
    }
}
