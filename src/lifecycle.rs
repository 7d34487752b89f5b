//! The model lifecycle, run by the daemon's control loop: loading and checking versions,
//! activation through the gate, the registry watch, control commands, training runs with
//! retries, learners handing over to a first scorer, and shadow comparisons.
//!
//! Everything here runs on the control loop in [`crate::app::run`], one command at a time, so
//! the state below needs no locks; slow work (building sessions, training) runs off it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::Settings;
use crate::control::Command;
use crate::model::gate::{self, RecentWindows};
use crate::model::{
    ModelError, Registry, ScorerContext, ScorerHandle, Window, load_model, load_off_runtime,
    spawn_scorer,
};
use crate::mqtt::Publisher;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::StateLabel;
use crate::train::recent::{self, Recent};

/// The models being served and how they change: the registry, each model's scorer and the
/// version it serves, and the recent healthy windows the gate scores candidates on.
pub(crate) struct Models {
    pub(crate) registry: Registry,
    pub(crate) scorers: BTreeMap<String, ScorerHandle>,
    pub(crate) served: BTreeMap<String, String>,
    pub(crate) recent: HashMap<String, Arc<RecentWindows>>,
    /// Models with no version yet, learning from their streams.
    pub(crate) learners: HashMap<String, Learner>,
    /// Models with a training run in progress.
    pub(crate) training: HashSet<String>,
    /// Failed training runs in a row, per model.
    pub(crate) attempts: HashMap<String, u32>,
    /// Shadow versions being compared, per model.
    pub(crate) shadowing: HashMap<String, String>,
    /// Models whose shadow is a retrained version warming up: promoted once its calibration
    /// has learnt every stream ([`Models::promote_warm`]).
    pub(crate) warming: HashSet<String>,
    /// Models that learnt until an operator activated a version in the registry while a
    /// training run for them was in flight or waited for its retry: that run's version is
    /// kept in the registry, not served ([`Models::follow_registry`]).
    pub(crate) superseded: HashSet<String>,
    /// A learning model's registry pointer that could not serve: not tried again until the
    /// pointer moves.
    pub(crate) unservable: HashMap<String, String>,
    /// For scorers started after a first training run; dropped when draining.
    pub(crate) scorer: Option<ScorerContext>,
}

/// A model still learning: its learner task holds the window queue until a version exists,
/// then hands it back with each stream's newest windows.
pub(crate) struct Learner {
    pub(crate) handover: oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<(mpsc::Receiver<Window>, Recent)>,
}

/// Why a lifecycle operation did not happen: logged, and published in the `refused`,
/// `command_failed` or `training_failed` event of what asked for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LifecycleError {
    /// The version cannot be loaded, checked or swapped in.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The registry cannot be read or written.
    #[error(transparent)]
    Registry(#[from] crate::model::RegistryError),
    /// No configured stream uses the model.
    #[error("no stream uses model {0:?}")]
    NoStream(String),
    /// A shadow needs an active version to score beside.
    #[error("model {0:?} has no active version to shadow")]
    NoActive(String),
    /// Nothing to promote.
    #[error("model {0:?} has no shadow to promote")]
    NoShadow(String),
    /// One training run per model at a time.
    #[error("a training run for {0:?} is already in progress")]
    Training(String),
    /// A blocking task panicked or was cancelled.
    #[error("{what} failed: {reason}")]
    Task {
        /// What the task did.
        what: &'static str,
        /// The task's panic message.
        reason: String,
    },
}

/// Outcomes of background work, back to the control loop.
#[derive(Debug)]
pub(crate) enum Internal {
    /// A training run imported a new version into the registry.
    Trained { model: String, version: String },
    /// A training run failed.
    Failed { model: String, reason: String },
    /// Time to retry a failed training run.
    Retry { model: String },
}

/// The longest wait between two training runs of a model with no version yet.
pub(crate) const LEARNING_RETRY_MAX: Duration = Duration::from_secs(3600);

/// The wait before retrying a failed training run (`attempt` counts from 1), or `None` once
/// `retries` are spent, except for a `learning` model (no version yet): it keeps trying,
/// `delay` doubled for each attempt past `retries`, up to [`LEARNING_RETRY_MAX`].
fn retry_delay(delay: Duration, attempt: u32, retries: u32, learning: bool) -> Option<Duration> {
    if attempt <= retries {
        return Some(delay);
    }
    learning.then(|| {
        let doublings = (attempt - retries).min(16);
        delay
            .saturating_mul(1 << doublings)
            .min(LEARNING_RETRY_MAX)
            .max(delay)
    })
}

impl Models {
    /// Validates `version` (manifest, hash, shapes, ONNX Runtime, the gate on recent healthy
    /// windows) off the async runtime, swaps it into the running scorer between two batches,
    /// and points the registry at it. A refused version leaves the served one in place and,
    /// if the registry pointer had moved to it, puts the pointer back with the reason.
    async fn activate(
        &mut self,
        ctx: &Context<'_>,
        name: &str,
        version: &str,
        reason: &str,
        force: bool,
    ) -> Result<(), LifecycleError> {
        let Some(handle) = self.scorers.get(name) else {
            return Err(LifecycleError::NoStream(name.to_owned()));
        };
        let served = self.served.get(name).cloned();
        if !force && served.as_deref() == Some(version) {
            return Ok(());
        }
        let path = self.registry.path(name, version);
        // Where the pointer was before the load: one moved meanwhile (an operator's `ebgand
        // models activate` during a slow build) is left for the watch, not overwritten.
        let pointer = self.registry.active(name).ok().flatten();
        let windows = self
            .recent
            .get(name)
            .map(|r| r.snapshot())
            .unwrap_or_default();
        // A rollback or a reload goes back to a version that served; the minimum is for new ones.
        let min_windows = match reason {
            crate::model::registry::ROLLBACK | "reload" => 0,
            _ => ctx.settings.registry.gate_min_windows,
        };
        let (streams, rt, bound) = (
            ctx.settings.streams.clone(),
            ctx.settings.runtime.clone(),
            ctx.settings.registry.max_false_alarm_rate,
        );
        let (owned_name, faults) = (name.to_owned(), ctx.settings.faults.clone());
        let candidate = tokio::task::spawn_blocking(move || {
            crate::model::injected_load_delay(&faults, true);
            let mut scorer = load_model(&owned_name, &path, &streams, &rt)?;
            let report = gate::check(&mut scorer, &windows, bound, min_windows)?;
            Ok::<_, ModelError>((scorer, report))
        })
        .await
        .map_err(|e| LifecycleError::Task {
            what: "loading the candidate",
            reason: e.to_string(),
        })
        .and_then(|loaded| Ok(loaded?));
        // The version in shadow, passed by the gate to be activated by hand (not promoted),
        // stops shadowing first, so no batch is scored by it twice; its warm-up ends whatever
        // the swap then does.
        let unshadow =
            candidate.is_ok() && self.shadowing.get(name).map(String::as_str) == Some(version);
        if unshadow {
            if let Err(e) = handle.shadow(None).await {
                warn!(model = %name, version, error = %e, "Cannot stop the shadow being activated.");
            }
            self.shadowing.remove(name);
        }
        let swapped = match candidate {
            Ok((scorer, report)) => handle
                .swap(scorer)
                .await
                .map(|old| (old, report))
                .map_err(LifecycleError::from),
            Err(e) => Err(e),
        };
        if unshadow {
            self.stop_warming(name);
        }
        let outcome = match swapped {
            Ok((old, report)) => {
                // The new version serves from here on, whatever happens to the pointer.
                self.served.insert(name.to_owned(), version.to_owned());
                let now = self.registry.active(name).ok().flatten();
                if now != pointer {
                    info!(model = %name, version, pointer = ?now, "The registry pointer moved while this version loaded: left where it is, the watch activates it next.");
                } else if now.as_deref() != Some(version)
                    && let Err(e) =
                        crate::durable::on_disk(|| self.registry.activate(name, version, reason))
                {
                    // The watch will see the old pointer and swap back to it: say why.
                    error!(model = %name, version, error = %e, "Serving the new version, but the registry pointer could not be moved.");
                }
                if matches!(
                    reason,
                    "control" | "registry" | crate::model::registry::ROLLBACK
                ) {
                    self.end_warm_up(ctx, name).await;
                }
                ctx.metrics
                    .reloads
                    .get_or_create(&StateLabel { state: "swapped" })
                    .inc();
                info!(model = %name, model.old = %old.version, model.new = %version, reason, gate.windows = report.windows, gate.false_alarm_rate = report.rate(), "Model activated.");
                ctx.event(serde_json::json!({
                    "event": "activated", "model": name, "version": version,
                    "previous": old.version, "reason": reason,
                    "gate": { "windows": report.windows, "false_alarm_rate": report.rate() },
                }))
                .await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            ctx.metrics
                .reloads
                .get_or_create(&StateLabel { state: "refused" })
                .inc();
            error!(model = %name, version, error = %e, "Activation refused; the served version keeps serving.");
            ctx.event(serde_json::json!({
                "event": "refused", "model": name, "version": version, "reason": e.to_string(),
                "serving": served,
            }))
            .await;
            // A refused reload of the version served leaves the pointer alone: reverting it to
            // itself would record that version as refused, and rollback would skip it for good.
            if let Some(served) = &served
                && served != version
                && self.registry.active(name).ok().flatten().as_deref() == Some(version)
                && let Err(revert) = crate::durable::on_disk(|| {
                    self.registry
                        .revert(name, served, version, &format!("refused {version}: {e}"))
                })
            {
                error!(model = %name, error = %revert, "Cannot put the registry pointer back.");
            }
        }
        outcome
    }

    /// Activates whatever the registry's ACTIVE pointers name, where it differs from what is
    /// served (the registry watch). A model still learning serves the version its pointer
    /// names as its first ([`Models::first_version`]): an operator's `ebgand models import
    /// --activate` ends the learning, as it would have at a start.
    pub(crate) async fn follow_registry(&mut self, ctx: &Context<'_>) {
        let learning: Vec<String> = self.learners.keys().cloned().collect();
        for name in learning {
            let chosen = match self.registry.active(&name) {
                Ok(Some(v)) if self.unservable.get(&name) != Some(&v) => v,
                Ok(_) => continue,
                Err(e) => {
                    warn!(model = %name, error = %e, "Cannot read the registry pointer.");
                    continue;
                }
            };
            match self.serve_chosen(ctx, &name, &chosen, "registry").await {
                Ok(()) => {
                    self.unservable.remove(&name);
                }
                Err(e) => {
                    error!(model = %name, version = %chosen, error = %e, "The version activated in the registry cannot serve; the model learns on.");
                    ctx.event(serde_json::json!({
                        "event": "refused", "model": name, "version": chosen,
                        "reason": e.to_string(), "serving": null,
                    }))
                    .await;
                    self.unservable.insert(name, chosen);
                }
            }
        }
        let names: Vec<String> = self.scorers.keys().cloned().collect();
        for name in names {
            match self.registry.active(&name) {
                Ok(Some(v)) if self.served.get(&name) != Some(&v) => {
                    // `ebgand models rollback` moved it: a rollback, whoever wrote it.
                    let rolled_back = self.registry.history(&name).ok().and_then(|h| {
                        h.last()
                            .map(|a| a.version == v && a.reason == crate::model::registry::ROLLBACK)
                    });
                    let reason = if rolled_back == Some(true) {
                        crate::model::registry::ROLLBACK
                    } else {
                        "registry"
                    };
                    // A refusal is logged, published and reverted inside.
                    let _refused = self.activate(ctx, &name, &v, reason, false).await;
                }
                Ok(_) => {}
                Err(e) => warn!(model = %name, error = %e, "Cannot read the registry pointer."),
            }
        }
    }

    pub(crate) async fn command(&mut self, ctx: &Context<'_>, cmd: Command) {
        let result: Result<(), LifecycleError> = match &cmd {
            Command::Reload => {
                let served: Vec<(String, String)> = self
                    .served
                    .iter()
                    .map(|(a, b)| (a.clone(), b.clone()))
                    .collect();
                for (name, version) in served {
                    let target = self
                        .registry
                        .active(&name)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| version.clone());
                    // A reload of the version served needs no minimum of recent windows; a
                    // pointer moved to another one (not picked up yet) is a new version's.
                    let reason = if target == version {
                        "reload"
                    } else {
                        "registry"
                    };
                    let _refused = self.activate(ctx, &name, &target, reason, true).await;
                }
                Ok(())
            }
            Command::Activate { model, version } if self.learners.contains_key(model) => {
                self.serve_chosen(ctx, model, version, "control").await
            }
            Command::Activate { model, version } => {
                self.activate(ctx, model, version, "control", false).await
            }
            Command::Rollback { model } => {
                match crate::durable::on_disk(|| self.registry.rollback_target(model)) {
                    Ok(target) => {
                        self.activate(ctx, model, &target, crate::model::registry::ROLLBACK, false)
                            .await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Command::Train { model } => self.start_training(ctx, model).await,
            Command::Shadow { model, version } => {
                // An operator's shadow replaces a warming one and is promoted by hand; one that
                // fails to start leaves the warming one warming.
                let started = self.shadow(ctx, model, version).await;
                if started.is_ok() {
                    self.stop_warming(model);
                }
                started
            }
            Command::Promote { model } => {
                self.stop_warming(model);
                self.promote(ctx, model, "promoted from shadow").await
            }
        };
        if let Err(reason) = result {
            warn!(command = cmd.name(), reason = %reason, "Control command failed.");
            ctx.event(serde_json::json!({ "event": "command_failed", "command": cmd.name(), "reason": reason.to_string() })).await;
        }
    }
}

impl Models {
    /// Starts a training run from the model's captured healthy windows, in the background.
    pub(crate) async fn start_training(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
    ) -> Result<(), LifecycleError> {
        let Some(stream) = ctx.settings.streams.iter().find(|s| s.model == model) else {
            return Err(LifecycleError::NoStream(model.to_owned()));
        };
        if !self.training.insert(model.to_owned()) {
            return Err(LifecycleError::Training(model.to_owned()));
        }
        ctx.metrics.set_phase(model, "training");
        // A retrained version is of the served one's kind; a first one is the default kind
        // for its streams' input (an MLP: EBGAN for one channel, the autoencoder for several,
        // and with log-mel parameters for audio).
        let like = self
            .served
            .get(model)
            .and_then(|v| crate::model::Manifest::read(&self.registry.path(model, v)).ok())
            .map_or_else(
                || crate::train::first_kind(stream.logmel.as_ref(), stream.channels.get()),
                |m| crate::train::same_kind(&m),
            );
        let run = crate::train::TrainFromCapture {
            model: model.to_owned(),
            capture: ctx.settings.learning.dir.join(model),
            window: stream.window.get(),
            channels: stream.channels.get(),
            steps: ctx.settings.learning.steps,
            like,
            version: None,
            train: ctx.settings.train.clone(),
            registry: self.registry.clone(),
        };
        let (internal, stop, name) = (ctx.internal.clone(), ctx.stop.clone(), model.to_owned());
        let faults = ctx.settings.faults.clone();
        // The run is a task of its own, so a panic in it is reported as a failed run (and
        // retried) instead of leaving the model marked as training for good.
        let job = ctx.tracker.spawn(
            async move {
                assert!(
                    !faults.training_panics(&run.model),
                    "injected fault: training panics"
                );
                run.run(stop).await
            }
            .instrument(info_span!("training", model = %model)),
        );
        ctx.tracker.spawn(async move {
            let msg = match job.await {
                Ok(Ok(version)) => Internal::Trained {
                    model: name,
                    version,
                },
                Ok(Err(e)) => Internal::Failed {
                    model: name,
                    reason: format!("{e:#}"),
                },
                Err(e) => Internal::Failed {
                    model: name,
                    reason: format!("the training task failed: {e}"),
                },
            };
            // The control loop is gone only when shutting down.
            internal.send(msg).await.ok();
        });
        info!(model, "Training run started.");
        ctx.event(serde_json::json!({ "event": "training_started", "model": model }))
            .await;
        Ok(())
    }

    pub(crate) async fn internal(&mut self, ctx: &Context<'_>, msg: Internal) {
        match msg {
            Internal::Trained { model, version } => {
                self.training.remove(&model);
                ctx.metrics
                    .training_runs
                    .get_or_create(&StateLabel { state: "ok" })
                    .inc();
                if self.superseded.remove(&model) {
                    let reason = "a version activated by hand serves; kept in the registry";
                    info!(model = %model, version = %version, "Trained version not served: {reason}.");
                    ctx.event(serde_json::json!({
                        "event": "refused", "model": model, "version": version,
                        "reason": reason, "serving": self.served.get(&model),
                    }))
                    .await;
                    ctx.metrics.set_phase(&model, "monitoring");
                    return;
                }
                let outcome = if self.scorers.contains_key(&model) {
                    if self.warms_in_shadow(ctx, &model) {
                        // Judged on meanwhile by the served version; promoted once warm.
                        match self.shadow(ctx, &model, &version).await {
                            Ok(()) => {
                                self.start_warming(&model, &version);
                                info!(model = %model, version = %version, "Retrained version warming up in shadow: promoted once its calibration has learnt every stream.");
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        self.activate(ctx, &model, &version, "trained", false).await
                    }
                } else {
                    self.first_version(ctx, &model, &version, "trained from the stream")
                        .await
                };
                match outcome {
                    Ok(()) => {
                        self.attempts.remove(&model);
                        ctx.metrics.set_phase(&model, "monitoring");
                    }
                    Err(e) => {
                        self.failed(
                            ctx,
                            &model,
                            format!("trained version {version} refused: {e}"),
                        )
                        .await
                    }
                }
                // Last: the outcome is recorded and published before old versions go.
                self.retain(ctx, &model).await;
            }
            Internal::Failed { model, reason } => {
                self.training.remove(&model);
                self.failed(ctx, &model, reason).await;
            }
            Internal::Retry { model } => {
                if self.superseded.remove(&model) {
                    info!(model = %model, "Training retry dropped: a version activated by hand serves.");
                    return;
                }
                if let Err(reason) = self.start_training(ctx, &model).await {
                    warn!(model = %model, reason = %reason, "Training retry not started.");
                }
            }
        }
    }

    /// Deletes versions past `[learning] keep_versions` after a training run, sparing what this
    /// daemon serves or shadows (off the async runtime: it removes folders).
    async fn retain(&self, ctx: &Context<'_>, model: &str) {
        let Some(keep) = ctx.settings.learning.keep_versions else {
            return;
        };
        let spare: Vec<String> = [self.served.get(model), self.shadowing.get(model)]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let (registry, name) = (self.registry.clone(), model.to_owned());
        let pruned = tokio::task::spawn_blocking(move || {
            let spare: Vec<&str> = spare.iter().map(String::as_str).collect();
            registry.prune(&name, keep, &spare)
        })
        .await;
        match pruned {
            Ok(Ok(gone)) if !gone.is_empty() => {
                info!(model, keep, deleted = ?gone, "Old model versions deleted.");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(model, error = %e, "Cannot delete old model versions."),
            Err(e) => warn!(model, error = %e, "Version retention task failed."),
        }
    }

    /// Reports a failed run and schedules a retry while retries remain. A model with no
    /// version yet (still learning) judges nothing until one trains, so it keeps trying past
    /// `[learning] retries`, the delay doubling each time up to [`LEARNING_RETRY_MAX`].
    async fn failed(&mut self, ctx: &Context<'_>, model: &str, reason: String) {
        ctx.metrics
            .training_runs
            .get_or_create(&StateLabel { state: "failed" })
            .inc();
        let attempt = self.attempts.entry(model.to_owned()).or_default();
        *attempt += 1;
        let (attempt, retries) = (*attempt, ctx.settings.learning.retries);
        let learning = !self.scorers.contains_key(model);
        // A failed run for a first version an operator's choice replaced is not retried.
        let moot = self.superseded.remove(model);
        let delay = retry_delay(
            ctx.settings.learning.retry_delay,
            attempt,
            retries,
            learning,
        )
        .filter(|_| !moot);
        let retry = delay.is_some();
        error!(model, attempt, retry, reason = %reason, "Training run failed; the daemon keeps serving.");
        ctx.event(serde_json::json!({
            "event": "training_failed", "model": model, "attempt": attempt, "reason": reason,
            "retry_in_s": delay.map(|d| d.as_secs()),
        }))
        .await;
        ctx.metrics
            .set_phase(model, if learning { "learning" } else { "monitoring" });
        if let Some(delay) = delay {
            let (internal, stop, model) =
                (ctx.internal.clone(), ctx.stop.clone(), model.to_owned());
            ctx.tracker.spawn(
                async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => { internal.send(Internal::Retry { model }).await.ok(); }
                    }
                }
                .instrument(info_span!("training_retry")),
            );
        }
    }

    /// A learning model's first version chosen by an operator (`reason`: "registry" or
    /// "control"): it serves, and the run training one from the stream, in flight or waiting
    /// for its retry, is moot ([`Models::superseded`]).
    async fn serve_chosen(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
        version: &str,
        reason: &str,
    ) -> Result<(), LifecycleError> {
        self.first_version(ctx, model, version, reason).await?;
        let retry_pending = self.attempts.remove(model).is_some();
        if self.training.contains(model) || retry_pending {
            self.superseded.insert(model.to_owned());
        }
        ctx.metrics.set_phase(model, "monitoring");
        Ok(())
    }

    /// The first version of a learning model (trained from the stream, or activated in the
    /// registry by hand, `reason`): load and check it, take the window queue back from the
    /// learner and start a scorer on it.
    async fn first_version(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
        version: &str,
        reason: &str,
    ) -> Result<(), LifecycleError> {
        let scorer =
            load_off_runtime(ctx.settings, model, self.registry.path(model, version)).await?;
        let (Some(learner), Some(scorer_ctx)) = (self.learners.remove(model), self.scorer.clone())
        else {
            return Err(ModelError::WorkerGone {
                model: model.into(),
            }
            .into());
        };
        // The learner stops between two windows and returns the queue; nothing is dropped.
        learner.handover.send(()).ok();
        let (rx, recent) = learner.task.await.map_err(|_| ModelError::WorkerGone {
            model: model.into(),
        })?;
        // Each stream's newest learning windows, scored by the new version, calibrate it
        // before the version's first window: the streams are judged at once (NAB's rule).
        // The calibrations reach the alerting stage before any window this scorer scores, and
        // the checkpoint at once, so a restart before a stream's next window keeps them.
        // A panic there is caught, as the scorer thread catches one in a batch: the queue
        // is in hand now, and failing here would drop it with every window in it.
        let (cal, faults, name) = (
            ctx.settings.calibration.clone(),
            ctx.settings.faults.clone(),
            model.to_owned(),
        );
        let (scorer, seeded) = tokio::task::spawn_blocking(move || {
            let mut scorer = scorer;
            let seeded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert!(
                    !faults.scorer_panics(&name),
                    "injected fault: scorer panics"
                );
                recent
                    .calibrate(&mut scorer, &cal)
                    .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("scoring them panicked".to_owned()));
            (scorer, seeded)
        })
        .await
        .map_err(|e| LifecycleError::Task {
            what: "scoring the learning windows",
            reason: e.to_string(),
        })?;
        match seeded {
            Ok(mut seeded) => {
                // Not a stream forgotten while the model learnt (quiet past `stream_idle_s`):
                // one that comes back starts over, as any forgotten stream does.
                seeded.retain(|stream, _| ctx.progress.tracks(stream));
                let streams = seeded.len();
                for (stream, s) in &seeded {
                    ctx.progress.seeded(stream, s.clone());
                }
                ctx.seeds
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(seeded);
                info!(
                    model,
                    version, streams, "Streams calibrated on their learning windows."
                );
            }
            Err(e) => {
                warn!(model, version, error = %e, "Cannot score the learning windows; the streams learn under the new version instead.");
            }
        }
        let handle = spawn_scorer(scorer, rx, &scorer_ctx, ctx.tracker)?;
        self.scorers.insert(model.to_owned(), handle);
        self.served.insert(model.to_owned(), version.to_owned());
        // The version serves from here on, whatever happens to the pointer (as in `activate`).
        // Without the pointer a restart learns again: the saved learning progress then stays,
        // so it resumes rather than starts over. A pointer an operator set while the model
        // learnt (`ebgand models import --activate`) is left where it is: the registry watch,
        // which follows models with a scorer, activates it next.
        let pointer = self.registry.active(model).ok().flatten();
        let pointed = match &pointer {
            Some(chosen) if chosen == version => Ok(()),
            Some(chosen) => {
                info!(model, version, pointer = %chosen, "The registry pointer moved while this version loaded: left where it is, the watch activates it next.");
                Ok(())
            }
            None => {
                crate::durable::on_disk(|| self.registry.activate(model, version, reason).map(drop))
            }
        };
        if let Err(e) = pointed {
            error!(model, version, error = %e, "Serving the first version, but the registry pointer could not be written: a restart learns again.");
        } else if let Err(e) = recent::forget_saved(&ctx.settings.learning.dir.join(model)) {
            warn!(model, error = %e, "Cannot remove the saved learning progress; it is removed at the next start.");
        }
        ctx.metrics
            .reloads
            .get_or_create(&StateLabel { state: "swapped" })
            .inc();
        info!(model, version, reason, "First model version serving.");
        ctx.event(serde_json::json!({
            "event": "activated", "model": model, "version": version, "previous": null,
            "reason": reason,
        }))
        .await;
        Ok(())
    }
}

/// What the control loop needs besides the models.
pub(crate) struct Context<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) metrics: &'a Arc<Metrics>,
    pub(crate) publisher: &'a Publisher,
    pub(crate) tracker: &'a TaskTracker,
    pub(crate) internal: mpsc::Sender<Internal>,
    /// Cancelled when draining: stops training runs (the worker gets SIGTERM).
    pub(crate) stop: CancellationToken,
    /// Shadow comparisons, kept by the alerting stage.
    pub(crate) shadows: crate::alerting::Shadows,
    /// Streams calibrated for first versions, taken by the alerting stage.
    pub(crate) seeds: crate::alerting::Seeds,
    /// Each stream's judging progress, checkpointed: a seeded calibration goes in too.
    pub(crate) progress: crate::durable::checkpoint::Progress,
}

impl Context<'_> {
    pub(crate) async fn event(&self, event: serde_json::Value) {
        if let Err(e) = self.publisher.event(event).await {
            warn!(error = %e, "Cannot publish an event.");
        }
    }
}

mod shadow;
#[cfg(test)]
mod tests;
