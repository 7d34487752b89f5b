//! The alerting stage: judges every scored window (threshold, hysteresis, shadow candidates),
//! writes what the outside world sees to an [`AlertSink`] (energy telemetry, alert events, the
//! retained state), offers healthy windows to a [`Tap`] (the activation gate, retraining
//! capture), and records each stream's progress for the ingest checkpoint.
//!
//! ```text
//! scorers --ScoredBatch--> Alerting::batch --> AlertSink (the MQTT publisher in the daemon)
//!                                          --> Tap (healthy windows)
//!                                          --> Progress (what a restart may skip)
//! ```
//! The sink is a trait so that the stage can be tested without a broker, and so that another
//! transport is one more implementation. Progress moves only after the sink has accepted a
//! window's alert (for MQTT: it is in the on-disk outbox), so a checkpoint never runs ahead of
//! an alert.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info};

use crate::detect::{
    AlertEvent, AlertState, Calibration, Carried, DetectorState, Explanation, Judge, ModelRef,
    Scored, Seeded, ShadowStats, Transition, Verdict, energy_parts,
};
use crate::durable::checkpoint::Progress;
use crate::model::{ScoredBatch, Window};
use crate::telemetry::Metrics;
use crate::telemetry::health::Pulse;
use crate::telemetry::metrics::{QueueLabel, StateLabel};

mod output;

use output::{Output, set_right};

/// Where judged windows go. Each method returns once the sink has taken the message: for an
/// alert, once it is stored durably (it will be delivered even if the process dies next).
pub trait AlertSink: Send + Sync {
    /// Why a message could not be taken (the stage stops: nothing downstream can be trusted).
    type Error: std::fmt::Display + Send;

    /// A window's energy telemetry (the sink may drop it when telemetry is off).
    fn energy(&self, verdict: &Verdict) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// An alert raised or cleared.
    fn alert(&self, event: &AlertEvent) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A stream's latest state (retained by MQTT brokers).
    fn state(
        &self,
        state: &StateMessage<'_>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A stale-stream alert raised or cleared.
    fn stale(&self, alert: &StaleAlert) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A stream that had been judged was forgotten: `clear` (when its alert was raised) is
    /// handed over as an alert, then `state` as its retained state (none when a life of the
    /// stream in this run goes on). Before [`AlertSink::forget`].
    fn forgotten(
        &self,
        clear: Option<&ForgottenClear>,
        state: Option<&ForgottenState>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Everything judged has been handed over; the daemon is going offline.
    fn close(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A stream was forgotten (quiet too long): drop what the sink remembers of it (the
    /// outbox's last alerted window), so that it starts over if it comes back.
    fn forget(&self, _stream: &str) {}
}

/// Healthy windows, offered as they are judged (the activation gate's recent windows and the
/// retraining capture, per model).
pub trait Tap: Send {
    /// One window judged healthy by `model`.
    fn healthy(&mut self, model: &str, window: &[f32]);
    /// The stage is stopping: write out what is buffered.
    fn flush(&mut self);
    /// Called every [`TAP_TICK`] while the stage runs, windows or not: write out what has
    /// waited long enough, so that a stream gone quiet does not hold its last windows in
    /// memory until it speaks again.
    fn tick(&mut self) {}
}

/// How often the stage calls [`Tap::tick`] unless told otherwise ([`Alerting::ticking_every`];
/// the daemon uses its captures' own `check_every`).
pub const TAP_TICK: Duration = Duration::from_secs(60);

/// No tap (tests, or a daemon that neither gates nor captures).
impl Tap for () {
    fn healthy(&mut self, _model: &str, _window: &[f32]) {}
    fn flush(&mut self) {}
}

/// The retained state of a stream, on `{prefix}/state/{stream}`.
#[derive(Debug, Serialize)]
pub struct StateMessage<'a> {
    /// Stream id.
    pub stream: &'a str,
    /// `monitoring` (a learning model's streams say `learning` or `training`).
    pub phase: &'static str,
    /// Alert state after the window.
    pub state: AlertState,
    /// The window's energy.
    #[serde(serialize_with = "crate::detect::short_f32")]
    pub energy: f32,
    /// Its calibrated probability (absent while the stream learns, or judged by threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Its probability against the same moment of earlier seasons (a stream with a season).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season_probability: Option<f64>,
    /// Where its season stands: `watching`, `day`, `week` or `none` (with seasons on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season: Option<crate::detect::Phase>,
    /// The stream is learning: not judged yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub learning: bool,
    /// The model's threshold, or the stream's absolute one.
    #[serde(serialize_with = "crate::detect::short_f32")]
    pub threshold: f32,
    /// Model that scored it.
    pub model: &'a ModelRef,
    /// Window number.
    pub seq: u64,
    /// Node name.
    pub node: &'a str,
    /// What carried the window's energy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<&'a Explanation>,
}

/// A stale-stream alert: the stream has sent nothing for many times its usual interval (a dead
/// sensor, a cut cable), raised once and cleared when data returns. Published on the same
/// topic as the stream's other alerts, told apart by `"kind": "stale"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleAlert {
    /// Stream id.
    pub stream: String,
    /// Always `stale`.
    pub kind: &'static str,
    /// `raised` (silent too long) or `cleared` (data is back).
    pub state: Transition,
    /// When it was noticed: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Seconds since the stream's last message (on a clear: how long it was silent; absent
    /// when the silence began before a restart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_s: Option<f64>,
    /// The stream's usual interval between messages, in seconds (absent when not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_interval_s: Option<f64>,
    /// Node that noticed it.
    pub node: String,
}

/// The clear of a window alert still raised when its stream was forgotten (quiet past
/// `[limits] stream_idle_s`): nothing will judge the stream again, so its incident is closed
/// here, with `"reason": "forgotten"` and no window. Published like the stream's other alerts
/// (the outbox links it to its raise: `raise_alert_id`, `duration_s`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgottenClear {
    /// Stream id.
    pub stream: String,
    /// Always `cleared`.
    pub state: Transition,
    /// Always `forgotten`.
    pub reason: &'static str,
    /// When it was forgotten: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Node that forgot it.
    pub node: String,
}

/// The retained state of a stream forgotten after it had been judged: `phase` `forgotten`,
/// `state` `normal` (its alert, if raised, was cleared by a [`ForgottenClear`] just before),
/// so a dashboard does not show the last state it had as current.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgottenState {
    /// Stream id.
    pub stream: String,
    /// Always `forgotten`.
    pub phase: &'static str,
    /// Always `normal`.
    pub state: AlertState,
    /// When it was forgotten: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Node that forgot it.
    pub node: String,
}

/// What the ingest stage tells the alerting stage about its streams (beside their windows).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamNews {
    /// A stream dropped after going quiet: forget its detector.
    Forget(String),
    /// A stream an earlier run alerted on that this run does not carry on (neither in the
    /// checkpoint nor in the journal replayed: forgotten just before a crash, or a run
    /// without a journal): its window numbers start over, and a raise still up is cleared as
    /// forgotten, since nothing else ever would.
    Orphaned {
        /// Stream id.
        stream: String,
        /// Whether its window alert is still raised.
        raised: bool,
    },
    /// A stream the last run forgot without this stage finishing it (a crash came first; the
    /// checkpoint remembers): finish it before anything is replayed. A life of the stream that
    /// began after it (in the checkpoint) is this run's, and left alone.
    ForgottenBefore {
        /// Stream id.
        stream: String,
        /// Whether its window alert is still raised.
        raised: bool,
    },
    /// A stream went stale (silent for many times its usual interval) or was heard from again.
    Stale {
        /// Stream id.
        stream: String,
        /// `Raised` when it went stale, `Cleared` when it came back.
        state: Transition,
        /// How long it has been (or was) silent, when known.
        silent: Option<std::time::Duration>,
        /// Its usual interval between messages, when known.
        usual: Option<std::time::Duration>,
    },
}

/// Where the alerting stage carries on after a restart.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Each stream's detector at the checkpoint.
    pub detectors: HashMap<String, DetectorState>,
    /// Per stream, the window of the last alert an earlier run stored, when it is past the
    /// checkpoint: windows up to it are judged again, and their alerts are not published twice.
    pub alerted_through: HashMap<String, u64>,
    /// The streams whose window alert an earlier run left raised (the outbox's open
    /// incidents): what subscribers were last told, set right against the windows judged
    /// again once they pass `alerted_through`.
    pub raised: HashSet<String>,
}

/// Shadow comparisons by model, kept by the alerting stage and read by the control loop when a
/// shadow is promoted.
pub type Shadows = Arc<Mutex<HashMap<String, ShadowStats>>>;

/// Streams calibrated on their learning windows for a first version trained from them, by
/// stream id: put by the model lifecycle before the version scores a window (and into the
/// checkpoint's progress), taken by the alerting stage before it judges the next batch
/// ([`Judge::seed`]).
pub type Seeds = Arc<Mutex<HashMap<String, Seeded>>>;

/// The stage's state. Build with [`Alerting::new`], run with [`Alerting::run`].
pub struct Alerting<S, T> {
    out: Output<S>,
    tap: T,
    judge: Judge,
    /// Per model: the shadow version and its own detectors, so its alerts are counted as it
    /// would raise them.
    shadow_judges: HashMap<String, (String, Judge)>,
    alerted_through: HashMap<String, u64>,
    /// [`Resumed::raised`], each until it is set right.
    raised_before: HashSet<String>,
    progress: Progress,
    shadows: Shadows,
    seeds: Seeds,
    /// Ids of streams ingest forgot.
    news: Option<mpsc::Receiver<StreamNews>>,
    /// Between calls of [`Tap::tick`].
    tap_tick: Duration,
    /// Beaten as batches are judged (the watchdog's progress check).
    pulse: Arc<Pulse>,
}

impl<S, T> std::fmt::Debug for Alerting<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting")
            .field("node", &self.out.node)
            .finish_non_exhaustive()
    }
}

impl<S: AlertSink, T: Tap> Alerting<S, T> {
    /// A stage writing to `sink` as `node`, carrying on from `resumed`.
    pub fn new(
        sink: S,
        tap: T,
        node: &str,
        progress: Progress,
        shadows: Shadows,
        metrics: Arc<Metrics>,
        resumed: Resumed,
    ) -> Self {
        // Only those with windows to judge again: for the others the restored detector says
        // what subscribers were told, or the stream is not carried on (Orphaned).
        let raised_before = resumed
            .raised
            .into_iter()
            .filter(|s| resumed.alerted_through.contains_key(s))
            .collect();
        Self {
            out: Output {
                sink,
                node: node.to_owned(),
                metrics,
            },
            tap,
            judge: Judge::restored(resumed.detectors, Calibration::default()),
            shadow_judges: HashMap::new(),
            alerted_through: resumed.alerted_through,
            raised_before,
            progress,
            shadows,
            seeds: Seeds::default(),
            news: None,
            tap_tick: TAP_TICK,
            pulse: Arc::default(),
        }
    }

    /// Calls [`Tap::tick`] every `every` instead of every [`TAP_TICK`].
    #[must_use]
    pub fn ticking_every(mut self, every: Duration) -> Self {
        self.tap_tick = every;
        self
    }

    /// Beats `pulse` while it judges (see [`crate::telemetry::health`]).
    #[must_use]
    pub fn beating(mut self, pulse: Arc<Pulse>) -> Self {
        self.pulse = pulse;
        self
    }

    /// Calibrates streams with `calibration` instead of the defaults.
    #[must_use]
    pub fn calibrated(mut self, calibration: Calibration) -> Self {
        self.judge.recalibrate(calibration);
        self
    }

    /// Takes first versions' calibration seeds from `seeds`.
    #[must_use]
    pub fn seeded_from(mut self, seeds: Seeds) -> Self {
        self.seeds = seeds;
        self
    }

    /// Takes the ingest stage's news from `news`: forgets each stream dropped after it went
    /// quiet (its detector, its shadow detectors and what the sink remembers), and publishes
    /// the stale-stream alerts.
    #[must_use]
    pub fn hearing(mut self, news: mpsc::Receiver<StreamNews>) -> Self {
        self.news = Some(news);
        self
    }

    /// Publishes a stale-stream alert.
    async fn stale(&mut self, news: StreamNews) -> Result<(), S::Error> {
        let StreamNews::Stale {
            stream,
            state,
            silent,
            usual,
        } = news
        else {
            return Ok(());
        };
        if state == Transition::Raised {
            // A dead sensor does not hold a warming shadow's promotion back (for up to
            // `[limits] stream_idle_s`, until it is forgotten): the others are judged by the
            // new version, and this one learns again under it if it comes back.
            self.release_warm_up(&stream);
        }
        let alert = StaleAlert {
            stream,
            kind: "stale",
            state,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            silent_s: silent.map(crate::detect::seconds),
            usual_interval_s: usual.map(crate::detect::seconds),
            node: self.out.node.clone(),
        };
        self.out.sink.stale(&alert).await?;
        self.out
            .metrics
            .alerts
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .inc();
        info!(stream = %alert.stream, state = state.as_str(), kind = "stale", silent_s = alert.silent_s, "Alert.");
        Ok(())
    }

    /// Stops `stream` holding back the promotion of a warming shadow (until the shadow sees it
    /// again).
    fn release_warm_up(&self, stream: &str) {
        for stats in self
            .shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
        {
            stats.learning.remove(stream);
        }
    }

    /// Forgets `stream` everywhere. One that had been judged says so first (its retained
    /// state, and the clear of its alert when one was raised): nothing else ever would.
    async fn forget(&mut self, stream: &str) -> Result<(), S::Error> {
        let left_raised = self.raised_before.remove(stream);
        let state = self.judge.forget(stream);
        if state.is_some() || left_raised {
            self.out
                .say_forgotten(
                    stream,
                    state == Some(AlertState::Raised) || left_raised,
                    true,
                )
                .await?;
        }
        for (_, judge) in self.shadow_judges.values_mut() {
            judge.forget(stream);
        }
        // A stream dropped while a shadow warms no longer holds its promotion back.
        self.release_warm_up(stream);
        self.alerted_through.remove(stream);
        self.out.sink.forget(stream);
        self.out.metrics.forget_stream(stream);
        self.progress.forgotten(stream);
        debug!(stream, "Stream forgotten by the alerting stage.");
        Ok(())
    }

    /// Forgets what the sink remembers of `stream`, an earlier run's that this run does not
    /// carry on ([`StreamNews::Orphaned`]): its window numbers start over, and the last run's
    /// alerts must not silence its new ones. Its retained state says it was forgotten, its
    /// alert, when `raised`, cleared first. A stream judged already is this run's: left alone
    /// (ingest sends this news before it reads a live message).
    async fn orphaned(&mut self, stream: &str, raised: bool) -> Result<(), S::Error> {
        if self.judge.knows(stream) {
            return Ok(());
        }
        if raised {
            info!(
                stream,
                "Alert raised by an earlier run for a stream this one does not carry on; cleared as forgotten."
            );
        }
        // With no life in this run, what is left of it is finished as a forgetting is.
        self.forgotten_before(stream, raised).await
    }

    /// Finishes forgetting `stream`, which the last run forgot and this stage did not finish
    /// ([`StreamNews::ForgottenBefore`]): its raise, when one is left, is cleared; what the
    /// sink remembers of it and its window numbers go. A life of the stream restored from the
    /// checkpoint began after it: its detector stays, and its retained state is left to it.
    async fn forgotten_before(&mut self, stream: &str, raised: bool) -> Result<(), S::Error> {
        let live = self.judge.knows(stream);
        if raised || !live {
            self.out.say_forgotten(stream, raised, !live).await?;
        }
        self.raised_before.remove(stream);
        self.alerted_through.remove(stream);
        self.out.sink.forget(stream);
        self.progress.forgotten(stream);
        Ok(())
    }

    /// Judges every batch from `scored` until every scorer has stopped (the channel closes),
    /// then flushes the tap and closes the sink. Stops early, logged, when the sink fails.
    pub async fn run(mut self, mut scored: mpsc::Receiver<ScoredBatch>) {
        let depth = self
            .out
            .metrics
            .queue_depth
            .get_or_create(&QueueLabel {
                queue: "scored".into(),
            })
            .clone();
        let mut news = self.news.take();
        let mut tick = tokio::time::interval_at(Instant::now() + self.tap_tick, self.tap_tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.pulse.idle();
            let batch = tokio::select! {
                // Rare and cheap: first, so a steady flow of batches cannot starve it.
                biased;
                Some(n) = recv_some(news.as_mut()) => {
                    self.pulse.progress();
                    match n {
                        StreamNews::Forget(stream) => {
                            if let Err(e) = self.forget(&stream).await {
                                error!(error = %e, "Cannot hand a forgotten stream's state on; alerting stops.");
                                return;
                            }
                        }
                        StreamNews::ForgottenBefore { stream, raised } => {
                            if let Err(e) = self.forgotten_before(&stream, raised).await {
                                error!(error = %e, "Cannot hand a forgotten stream's state on; alerting stops.");
                                return;
                            }
                        }
                        StreamNews::Orphaned { stream, raised } => {
                            if let Err(e) = self.orphaned(&stream, raised).await {
                                error!(error = %e, "Cannot hand a forgotten stream's state on; alerting stops.");
                                return;
                            }
                        }
                        stale => {
                            if let Err(e) = self.stale(stale).await {
                                error!(error = %e, "Cannot hand a stale-stream alert on; alerting stops.");
                                return;
                            }
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {
                    self.tap.tick();
                    continue;
                }
                batch = scored.recv() => match batch {
                    Some(b) => b,
                    None => break,
                },
            };
            self.pulse.progress();
            depth.set(scored.len() as i64);
            if let Err(e) = self.batch(batch).await {
                error!(error = %e, "Cannot hand a judged window on; alerting stops.");
                return;
            }
        }
        self.tap.flush();
        if let Err(e) = self.out.sink.close().await {
            error!(error = %e, "Cannot publish the offline status.");
        }
    }

    /// Judges one scored batch: each window's verdict goes to the sink, healthy windows to the
    /// tap, and the stream's progress moves past it.
    ///
    /// # Errors
    /// The sink's error; the windows after the failing one are not judged.
    pub async fn batch(&mut self, batch: ScoredBatch) -> Result<(), S::Error> {
        let Ok(energies) = &batch.energies else {
            // Counted and logged by the scorer; nothing to judge.
            for w in &batch.windows {
                self.progress.passed(&w.stream.id, w.raw.seq);
            }
            return Ok(());
        };
        let model = ModelRef {
            name: batch.model.name.clone(),
            version: batch.model.version.clone(),
        };
        {
            let mut seeds = self.seeds.lock().unwrap_or_else(PoisonError::into_inner);
            for (stream, seeded) in seeds.drain() {
                self.judge.seed(&stream, seeded);
            }
        }
        // A shadow the lifecycle ended without promoting it: its calibrations go, so that a
        // later activation of its version learns afresh, as any activation does.
        if batch.shadow.is_none() && self.ended_shadow(&model.name) {
            self.shadow_judges.remove(&model.name);
        }
        // The shadow was promoted: its streams' calibrations carry on under the active version
        // (they learnt its energies on the same windows), so no stream learns from scratch.
        if let Some((version, _)) = self.shadow_judges.get(&model.name)
            && *version == model.version
            && let Some((_, shadow)) = self.shadow_judges.remove(&model.name)
        {
            let adopted = self.judge.adopt_calibrations(shadow, &model.version);
            info!(model = %model.name, version = %model.version, streams = adopted, "Promoted shadow's calibrations adopted.");
        }
        // Shadow judges calibrate like the active one, for longer and with no input level.
        let calibration = self.judge.calibration();
        let mut shadow_pass = batch.shadow.as_ref().map(|shadow| {
            let info = &shadow.model;
            let (version, judge) = self
                .shadow_judges
                .entry(model.name.clone())
                .or_insert_with(|| (info.version.clone(), Judge::shadowing(calibration.clone())));
            if *version != info.version {
                *version = info.version.clone();
                *judge = Judge::shadowing(calibration.clone());
            }
            let sref = ModelRef {
                name: info.name.clone(),
                version: info.version.clone(),
            };
            let stats = ShadowStats {
                active: model.version.clone(),
                shadow: info.version.clone(),
                ..ShadowStats::default()
            };
            (judge, sref, info.threshold, shadow, stats)
        });
        // Judge the whole batch first, then hand it on: the shadow comparison a promotion
        // reads covers every window whose energy has been published.
        let mut verdicts = Vec::with_capacity(batch.windows.len());
        let mut parts = Vec::new();
        for (i, (w, &energy)) in batch.windows.iter().zip(energies).enumerate() {
            let residual = window_parts(&batch.residual, i, w, &mut parts);
            let scored = Scored {
                energy,
                parts: &parts,
            };
            let mut verdict =
                self.judge
                    .judge(&w.stream, &model, batch.model.threshold, &w.raw, scored);
            verdict.alerted_before = self
                .alerted_through
                .get(&verdict.stream)
                .is_some_and(|&seq| verdict.seq <= seq);
            set_right(
                &mut self.alerted_through,
                &mut self.raised_before,
                &mut verdict,
            );
            if verdict.transition.is_some() || verdict.first {
                // Published with an alert or a state message: say what carried the energy.
                let channels = w.stream.channels.max(1);
                verdict.explanation = residual.and_then(|r| {
                    Explanation::new(
                        &Carried::of(r, channels, w.stream.names.group),
                        &w.stream.names,
                        r.len() / channels,
                    )
                    .map(|e| e.with_unusual(verdict.unusual))
                });
            }
            if let Some((sjudge, sref, threshold, shadow, stats)) = shadow_pass.as_mut()
                && let Some(&se) = shadow.energies.get(i)
            {
                window_parts(&shadow.residual, i, w, &mut parts);
                let scored = Scored {
                    energy: se,
                    parts: &parts,
                };
                // It learns only what the active judge found healthy: never a fault's windows.
                let sv = sjudge.judge_guided(
                    &w.stream,
                    sref,
                    *threshold,
                    &w.raw,
                    scored,
                    verdict.healthy(),
                );
                stats.windows += 1;
                stats.active_anomalous += u64::from(verdict.anomalous);
                stats.shadow_anomalous += u64::from(sv.anomalous);
                stats.active_alerts += u64::from(verdict.transition == Some(Transition::Raised));
                stats.shadow_alerts += u64::from(sv.transition == Some(Transition::Raised));
                stats.learning.insert(sv.stream, sv.learning);
            }
            if verdict.healthy() {
                // Healthy windows feed the activation gate and the retraining data (from which
                // a retrained version takes its normalisation): never a window of a raised
                // alert, so neither learns the fault.
                self.tap.healthy(&model.name, &w.raw.data);
            }
            verdicts.push(verdict);
        }
        if let Some((_, _, _, _, add)) = shadow_pass {
            self.add_shadow_stats(&model.name, add);
        }
        for verdict in &verdicts {
            self.out.hand_on(verdict).await?;
        }
        // After the batch's alerts are in the sink: a checkpoint never runs ahead of them. One
        // save per stream, its newest window's: a checkpoint taken while the batch was handed
        // on holds the state before it, and a restart judges the batch again, its alerts
        // deduplicated against the outbox (`alerted_before`). The stream's gauges, which hold
        // its newest window, are set here too: once a batch, not once a window.
        let mut saved = HashSet::new();
        for verdict in verdicts.iter().rev() {
            if !saved.insert(verdict.stream.as_str()) {
                continue;
            }
            self.out.metrics.stream_judged(
                &verdict.stream,
                verdict.energy,
                verdict.probability,
                verdict.state == AlertState::Raised,
            );
            if let Some(detector) = self.judge.saved(&verdict.stream) {
                self.progress.judged(&verdict.stream, verdict.seq, detector);
            }
        }
        debug!(windows = batch.windows.len(), model = %model.version, "Batch judged.");
        Ok(())
    }

    /// Whether `model`'s shadow was ended without a promotion (taking the mark: it is seen
    /// once).
    fn ended_shadow(&self, model: &str) -> bool {
        let mut all = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = all.get(model).is_some_and(|s| s.ended);
        if ended {
            all.remove(model);
        }
        ended
    }

    fn add_shadow_stats(&self, model: &str, add: ShadowStats) {
        let mut all = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
        let s = all.entry(model.to_owned()).or_default();
        if s.shadow != add.shadow || s.active != add.active {
            // A batch scored before the shadow ended, judged after: it stays ended.
            let ended = s.ended && s.shadow == add.shadow;
            *s = ShadowStats {
                active: add.active.clone(),
                shadow: add.shadow.clone(),
                ended,
                ..ShadowStats::default()
            };
        }
        s.merge(add);
    }
}

/// The next message of `rx`, when there is a receiver; never resolves otherwise (a disabled
/// select arm).
async fn recv_some<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Window `i`'s residual in a batch's (`None` when the batch was scored without one), with
/// each channel's part of its energy written into `parts` (empty without a residual: the
/// energy alone is calibrated).
fn window_parts<'a>(
    all: &'a [f32],
    i: usize,
    w: &Window,
    parts: &mut Vec<f32>,
) -> Option<&'a [f32]> {
    let len = w.raw.data.len();
    let residual = all.get(i * len..(i + 1) * len);
    energy_parts(
        residual.unwrap_or_default(),
        w.stream.channels.max(1),
        w.stream.names.group,
        parts,
    );
    residual
}

#[cfg(test)]
mod tests;
