//! The control loop: signals, control commands (MQTT and learners), the registry watch,
//! training runs and scheduled retraining, one at a time on the model lifecycle.
//!
//! A lifecycle operation can take long: building a TensorRT engine, gating a candidate,
//! waiting for a learner to hand its queue over, publishing an event while the broker is
//! unreachable. Each runs *under* [`Interrupts::during`], so a SIGTERM (or a stage that dies)
//! is seen at once: the operation is dropped where it waits and the daemon drains within
//! `[shutdown] grace_ms`. A SIGHUP that arrives meanwhile is kept and runs next.

use std::future::Future;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control::{Command, ControlMessage};
use crate::lifecycle::{Context, Internal, Models};
use crate::signal::Signal;
use crate::telemetry::{Exits, Systemd};

/// Why the control loop ended.
#[derive(Debug)]
pub(super) enum Stop {
    /// A shutdown signal (or the signal channel closed).
    Signal(Signal),
    /// A stage ended while the daemon ran.
    Died(String),
}

/// What can interrupt the control loop: signals and stage ends.
pub(super) struct Interrupts {
    signals: mpsc::Receiver<Signal>,
    exits: Exits,
    /// A SIGHUP received during an operation, run after it.
    reload: bool,
}

/// One interrupt.
enum Interrupt {
    Reload,
    Stop(Stop),
}

impl Interrupts {
    pub(super) fn new(signals: mpsc::Receiver<Signal>, exits: Exits) -> Self {
        Self {
            signals,
            exits,
            reload: false,
        }
    }

    /// The next signal or stage end.
    async fn next(&mut self) -> Interrupt {
        tokio::select! {
            biased;
            sig = self.signals.recv() => match sig {
                Some(Signal::Reload) => Interrupt::Reload,
                Some(s) => Interrupt::Stop(Stop::Signal(s)),
                None => Interrupt::Stop(Stop::Signal(Signal::Shutdown)),
            },
            Some(stage) = self.exits.recv() => Interrupt::Stop(Stop::Died(stage)),
        }
    }

    /// Runs `op` unless a shutdown signal or a stage end comes first; then `op` is dropped
    /// where it waits. Every lifecycle operation is cancel-safe at its waits: a swap not yet
    /// answered stands or not, the registry pointer is only moved after it; a learner asked
    /// for its queue hands it to no one, and ingest leaves each message of its streams
    /// unacknowledged on the closed queue (logged), for the broker to send again.
    async fn during<F: Future<Output = ()>>(&mut self, op: F) -> Result<(), Stop> {
        tokio::pin!(op);
        loop {
            tokio::select! {
                biased;
                () = &mut op => return Ok(()),
                i = self.next() => match i {
                    Interrupt::Reload => self.reload = true,
                    Interrupt::Stop(s) => return Err(s),
                },
            }
        }
    }

    /// A second shutdown signal during the drain (never resolves once the channel is closed).
    pub(super) async fn second_signal(&mut self) {
        loop {
            match self.signals.recv().await {
                Some(Signal::Reload) => {}
                Some(s) => {
                    warn!(signal = ?s, "Second signal.");
                    return;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// One step of the control loop.
enum Step {
    Reload,
    Control(ControlMessage),
    Watch,
    Internal(Internal),
    Retrain,
}

/// Runs the control loop until a shutdown signal or a stage end.
pub(super) async fn run(
    ctx: Context<'_>,
    models: &mut Models,
    mut control_rx: mpsc::Receiver<ControlMessage>,
    mut internal_rx: mpsc::Receiver<Internal>,
    interrupts: &mut Interrupts,
) -> Stop {
    let systemd = Systemd;
    let mut retrain = ctx.settings.learning.retrain_every.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut watch = tokio::time::interval(ctx.settings.registry.watch);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A warm-up the last run left unfinished starts again; a stop meanwhile is honoured.
    if let Err(stop) = interrupts.during(models.resume_warming(&ctx)).await {
        return stop;
    }
    loop {
        let step = if std::mem::take(&mut interrupts.reload) {
            Step::Reload
        } else {
            tokio::select! {
                biased;
                i = interrupts.next() => match i {
                    Interrupt::Reload => Step::Reload,
                    Interrupt::Stop(s) => return s,
                },
                Some(msg) = control_rx.recv() => Step::Control(msg),
                Some(msg) = internal_rx.recv() => Step::Internal(msg),
                _ = watch.tick() => Step::Watch,
                Some(()) = tick(retrain.as_mut()) => Step::Retrain,
            }
        };
        let ctx = &ctx;
        let op = async {
            match step {
                Step::Reload => {
                    systemd.reloading();
                    models.command(ctx, Command::Reload).await;
                    systemd.ready();
                }
                Step::Control(ControlMessage::Command(cmd)) => {
                    info!(command = cmd.name(), "Control command.");
                    models.command(ctx, cmd).await;
                }
                Step::Control(ControlMessage::Learnt { model }) => {
                    if models.learners.contains_key(&model) {
                        models.command(ctx, Command::Train { model }).await;
                    } else {
                        // Queued while an operator's version took the model over.
                        info!(model = %model, "The learner's request to train is moot: a version was chosen by hand.");
                    }
                }
                Step::Control(ControlMessage::Refused { command, reason }) => {
                    warn!(command = %command, reason = %reason, "Control command refused.");
                    ctx.event(serde_json::json!({ "event": "command_refused", "command": command, "reason": reason })).await;
                }
                Step::Watch => {
                    models.follow_registry(ctx).await;
                    models.promote_warm(ctx).await;
                }
                Step::Internal(msg) => models.internal(ctx, msg).await,
                Step::Retrain => {
                    // Models that learnt from their streams keep learning; a seeded model is
                    // retrained only when asked to (`retrain_seeded`). A model whose last
                    // retrained version still warms up in shadow waits for the next tick, so
                    // a slow stream's versions get to serve (a newer one would start over).
                    let seeded =
                        |name: &String| ctx.settings.models.get(name).is_some_and(Option::is_some);
                    let names: Vec<String> = models
                        .scorers
                        .keys()
                        .filter(|n| ctx.settings.learning.retrain_seeded || !seeded(n))
                        .filter(|n| {
                            let warming = models.warming.contains(*n);
                            if warming {
                                // The streams it waits for: one whose alert stays up teaches
                                // the shadow nothing until it clears (`promote` ends the wait).
                                let waiting: Vec<String> = ctx
                                    .shadows
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .get(*n)
                                    .map(|s| {
                                        let learning = s.learning.iter().filter(|(_, l)| **l);
                                        learning.map(|(id, _)| id.clone()).take(5).collect()
                                    })
                                    .unwrap_or_default();
                                warn!(model = %n, waiting_for = ?waiting, "Scheduled retraining skipped: the last retrained version still warms up in shadow (the streams named still learn it; one whose alert stays up teaches it nothing until it clears; `promote` ends the wait).");
                            }
                            !warming
                        })
                        .cloned()
                        .collect();
                    for name in names {
                        match models.start_training(ctx, &name).await {
                            // Each scheduled run has its own retries: a week whose runs all
                            // failed does not leave the next week's none. (Its failure is
                            // counted after this step: the run reports through this loop.)
                            Ok(()) => {
                                models.attempts.remove(&name);
                            }
                            Err(reason) => {
                                warn!(model = %name, reason = %reason, "Scheduled retraining not started.");
                            }
                        }
                    }
                }
            }
        };
        if let Err(stop) = interrupts.during(op).await {
            warn!(
                "Stopping with a lifecycle operation unfinished (it is dropped where it waited)."
            );
            return stop;
        }
    }
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
