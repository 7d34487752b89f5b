//! The wiring: every stage, channel and task of the daemon is created here, and drained here.
//!
//! ```text
//! ingest (MQTT, decode, window) --[windows per model]--> batcher --> scorer thread
//!     --[scored]--> alerting (detect, publish) --> publish connection
//! ```
//! Drain order on shutdown: stop ingest (its window senders drop), let each scorer finish its
//! queue, let alerting publish what it gets and the offline status, wait for the broker's acks,
//! then disconnect and stop the HTTP endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{RuntimeSettings, Settings, StreamSettings};
use crate::model::{ModelError, ModelVersion, Scorer, ScorerHandle, spawn_scorer};
use crate::mqtt::ingest::Route;
use crate::mqtt::{Ingest, Publisher, publish};
use crate::signal::Signal;
use crate::telemetry::metrics::StateLabel;
use crate::telemetry::{self, Metrics, Systemd};

/// Scored batches queued between the scorers and the alerting stage.
const SCORED_QUEUE: usize = 8;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A model could not be loaded at start-up.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// HTTP endpoints could not start.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// A stage stopped while the daemon was running.
    #[error("the {stage} stage stopped unexpectedly")]
    StageDied {
        /// Which.
        stage: &'static str,
    },
}

/// Opens a model version folder (manifest, content hash) and checks it against the streams
/// that use it, without loading ONNX Runtime. `ebgand check-config` runs this for every model.
///
/// # Errors
/// [`ModelError`] for a missing or corrupt folder, or a shape the streams do not cut.
pub fn open_model(
    name: &str,
    path: &std::path::Path,
    streams: &[StreamSettings],
) -> Result<ModelVersion, ModelError> {
    let version = ModelVersion::open(path)?;
    let m = &version.manifest;
    let label = format!("{}@{} ({})", m.name, m.version, path.display());
    if m.name != name {
        return Err(ModelError::Mismatch {
            model: label,
            reason: format!(
                "manifest names model {:?}, configured as [models.{name}]",
                m.name
            ),
        });
    }
    for s in streams.iter().filter(|s| s.model == name) {
        if (s.window.get(), s.channels.get()) != (m.input.window, m.input.channels) {
            return Err(ModelError::Mismatch {
                model: label,
                reason: format!(
                    "stream {:?} cuts windows of {} samples x {} channels; the model takes {} x {}",
                    s.name, s.window, s.channels, m.input.window, m.input.channels
                ),
            });
        }
    }
    Ok(version)
}

/// Opens and checks a model ([`open_model`]) and builds its ONNX Runtime session. Blocking:
/// call it off the async runtime.
///
/// # Errors
/// [`ModelError`] for a missing, corrupt or mismatched model, or a library that cannot load.
pub fn load_model(
    name: &str,
    path: &std::path::Path,
    streams: &[StreamSettings],
    rt: &RuntimeSettings,
) -> Result<Scorer, ModelError> {
    Scorer::load(open_model(name, path, streams)?, rt)
}

/// Checks every configured model that a stream uses; one message per problem.
pub fn check_models(settings: &Settings) -> Vec<String> {
    settings
        .models
        .iter()
        .filter(|(name, _)| settings.streams.iter().any(|s| &s.model == *name))
        .filter_map(|(name, path)| open_model(name, path, &settings.streams).err())
        .map(|e| format!("models: {e}"))
        .collect()
}

async fn load_model_async(name: String, settings: &Settings) -> Result<Scorer, ModelError> {
    let path = settings.models.get(&name).cloned().unwrap_or_default();
    let (streams, rt) = (settings.streams.clone(), settings.runtime.clone());
    tokio::task::spawn_blocking(move || load_model(&name, &path, &streams, &rt))
        .await
        .unwrap_or_else(|e| Err(ModelError::Ort(format!("model loading task failed: {e}"))))
}

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
    let (scored_tx, scored_rx) = mpsc::channel(SCORED_QUEUE);
    let mut scorers: BTreeMap<String, ScorerHandle> = BTreeMap::new();
    for name in &used {
        let scorer = load_model_async(name.clone(), &settings).await?;
        let handle = spawn_scorer(
            scorer,
            settings.scoring,
            scored_tx.clone(),
            metrics.clone(),
            &tracker,
        )?;
        scorers.insert(name.clone(), handle);
        metrics.set_models(scorers.len(), used.len());
    }
    drop(scored_tx);

    let http = match settings.http_listen {
        Some(addr) => Some(telemetry::bind_http(addr).await?),
        None => None,
    };

    let (publisher, publisher_loop) =
        Publisher::new(&settings.mqtt, &settings.node, metrics.clone());
    let (closing, abort) = (CancellationToken::new(), CancellationToken::new());
    let publisher_task = tracker.spawn(
        publisher_loop
            .run(closing.clone(), abort.clone())
            .instrument(info_span!("publisher", mqtt.broker = %format!("{}:{}", settings.mqtt.host, settings.mqtt.port))),
    );
    let mut alerting_task =
        tracker.spawn(publish::alerting(scored_rx, publisher).instrument(info_span!("alerting")));

    let routes: Vec<Route> = settings
        .streams
        .iter()
        .filter_map(|s| {
            scorers.get(&s.model).map(|h| Route {
                settings: s.clone(),
                windows: h.windows(),
            })
        })
        .collect();
    let ingest = Ingest::new(
        &settings.mqtt,
        &settings.node,
        routes,
        settings.max_streams,
        metrics.clone(),
    );
    let ingest_token = CancellationToken::new();
    let ingest_task = tracker.spawn(
        ingest
            .run(ingest_token.clone())
            .instrument(info_span!("ingest", mqtt.broker = %format!("{}:{}", settings.mqtt.host, settings.mqtt.port))),
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
    info!(streams = settings.streams.len(), models = scorers.len(), node = %settings.node, "ebgand running.");

    let mut outcome = Ok(());
    loop {
        tokio::select! {
            sig = signals.recv() => match sig {
                Some(Signal::Reload) => {
                    systemd.reloading();
                    reload(&settings, &scorers, &metrics).await;
                    systemd.ready();
                }
                Some(Signal::Shutdown | Signal::Quit) | None => break,
            },
            // Alerting ends only when every scorer has stopped or publishing failed.
            _ = &mut alerting_task => {
                error!("The alerting stage stopped; shutting down.");
                outcome = Err(AppError::StageDied { stage: "alerting" });
                break;
            }
        }
    }

    systemd.stopping();
    info!(
        grace_ms = settings.shutdown_grace.as_millis() as u64,
        "Draining."
    );
    let drain = async {
        ingest_token.cancel();
        joined("ingest", ingest_task.await);
        for (_, handle) in std::mem::take(&mut scorers) {
            handle.drain().await;
        }
        if !alerting_task.is_finished() {
            joined("alerting", (&mut alerting_task).await);
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

/// Logs a stage task that panicked instead of returning.
fn joined(stage: &'static str, r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        error!(stage, error = %e, "Stage task panicked.");
    }
}

/// Reloads every model from its configured folder and swaps it in; a model that fails to load
/// or fit is refused and the old one keeps serving.
async fn reload(settings: &Settings, scorers: &BTreeMap<String, ScorerHandle>, metrics: &Metrics) {
    for (name, handle) in scorers {
        match load_model_async(name.clone(), settings).await {
            Ok(scorer) => match handle.swap(scorer).await {
                Ok(old) => {
                    metrics
                        .reloads
                        .get_or_create(&StateLabel { state: "swapped" })
                        .inc();
                    info!(model = %name, model.old = %old.version, "Model reloaded.");
                }
                Err(e) => error!(model = %name, error = %e, "Model swap failed."),
            },
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&StateLabel { state: "refused" })
                    .inc();
                error!(model = %name, error = %e, "Reload refused; the current model keeps serving.");
            }
        }
    }
}
