//! The publish connection and the alerting stage: verdicts for every scored window, alert
//! events on transitions, retained state, optional energy telemetry, and the retained status
//! with its Last Will.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{Backoff, MqttError, Role, status_payload, status_topic};
use crate::config::MqttSettings;
use crate::detect::{AlertEvent, Judge, ModelRef, ShadowStats, Transition, Verdict};
use crate::durable::checkpoint::Progress;
use crate::durable::outbox::SharedOutbox;
use crate::model::ScoredBatch;
use crate::model::gate::RecentWindows;
use crate::telemetry::metrics::{ConnLabel, FailureLabel, Metrics, QueueLabel, StateLabel};
use crate::train::learn::Capture;

const REQUEST_CAPACITY: usize = 256;

/// A std mutex guard, poisoned or not (the tag queue has no invariant a panic could break).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which QoS 1 publish is which, in the order they enter rumqttc's request channel: an alert's
/// outbox id, or `None`. The publish loop matches them to packet ids as rumqttc sends them, so
/// that a PUBACK can take its alert out of the outbox.
type Tags = Arc<std::sync::Mutex<VecDeque<Option<u64>>>>;

/// Publishes under the configured prefix. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    prefix: String,
    node: String,
    energy_qos: Option<QoS>,
    queued: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    outbox: SharedOutbox,
    tags: Tags,
    /// Held from pushing a tag to handing the request over, so tags and requests stay in step.
    send: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The publish connection's event loop; run it with [`PublisherLoop::run`].
pub struct PublisherLoop {
    eventloop: EventLoop,
    client: AsyncClient,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicU64>,
    status: (String, Vec<u8>),
    outbox: SharedOutbox,
    tags: Tags,
    send: Arc<tokio::sync::Mutex<()>>,
    /// Packet ids sent and not yet acknowledged, with their tag. A packet id seen again is
    /// rumqttc resending after a reconnect, not a new publish.
    in_flight: HashMap<u16, Option<u64>>,
    /// Alerts a previous run left in the outbox, published once connected.
    recovered: VecDeque<crate::durable::outbox::Pending>,
}

impl std::fmt::Debug for PublisherLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherLoop").finish_non_exhaustive()
    }
}

/// The retained state of a stream, on `{prefix}/state/{stream}`.
#[derive(Debug, Serialize)]
struct StateMessage<'a> {
    stream: &'a str,
    phase: &'static str,
    state: crate::detect::AlertState,
    energy: f32,
    threshold: f32,
    model: &'a ModelRef,
    seq: u64,
    node: &'a str,
}

impl Publisher {
    /// Creates the publish client and its event loop.
    pub fn new(
        mqtt: &MqttSettings,
        node: &str,
        metrics: Arc<Metrics>,
        outbox: SharedOutbox,
    ) -> (Self, PublisherLoop) {
        let (client, eventloop) =
            AsyncClient::new(super::options(mqtt, Role::Publish, node), REQUEST_CAPACITY);
        let queued = Arc::new(AtomicU64::new(0));
        let tags = Tags::default();
        let send = Arc::new(tokio::sync::Mutex::new(()));
        let recovered: VecDeque<_> = outbox.lock().pending().into();
        if !recovered.is_empty() {
            info!(
                alerts = recovered.len(),
                "Alerts left unacknowledged by the last run; publishing them once connected."
            );
        }
        let publisher = Self {
            client: client.clone(),
            prefix: mqtt.prefix.clone(),
            node: node.to_owned(),
            energy_qos: mqtt.publish_energy.then_some(mqtt.energy_qos),
            queued: queued.clone(),
            metrics: metrics.clone(),
            outbox: outbox.clone(),
            tags: tags.clone(),
            send: send.clone(),
        };
        let run = PublisherLoop {
            eventloop,
            client,
            backoff: Backoff::new(mqtt.reconnect_min, mqtt.reconnect_max),
            metrics,
            queued,
            status: (status_topic(&mqtt.prefix), status_payload(true, node)),
            outbox,
            tags,
            send,
            in_flight: HashMap::new(),
            recovered,
        };
        (publisher, run)
    }

    /// Node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), MqttError> {
        self.publish_tagged(topic, qos, retain, payload, None).await
    }

    async fn publish_tagged(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        alert: Option<u64>,
    ) -> Result<(), MqttError> {
        let _in_order = self.send.lock().await;
        let tagged = qos != QoS::AtMostOnce;
        if tagged {
            lock(&self.tags).push_back(alert);
        }
        // Waiting here (request channel full) is backpressure toward the scorers, never toward
        // the ingest loop, which has its own connection.
        let r = self.client.publish(topic, qos, retain, payload).await;
        if r.is_err() && tagged {
            lock(&self.tags).pop_back();
        }
        match r {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.metrics.publish_errors.inc();
                Err(e.into())
            }
        }
    }

    /// Publishes the outcome of one window: energy telemetry, and on a transition the alert
    /// event and the new retained state. A stream's first window also publishes its state.
    ///
    /// # Errors
    /// [`MqttError`] when the client has stopped.
    pub async fn verdict(&self, v: &Verdict) -> Result<(), MqttError> {
        if let Some(qos) = self.energy_qos {
            let topic = format!("{}/energy/{}", self.prefix, v.stream);
            self.publish(topic, qos, false, serde_json::to_vec(v)?)
                .await?;
        }
        if v.alerted_before && v.transition.is_some() {
            self.metrics.alerts_deduplicated.inc();
            info!(stream = %v.stream, seq = v.seq, "Alert already stored by an earlier run; not published again.");
        } else if let Some(event) = AlertEvent::from_verdict(v, &self.node) {
            let topic = format!("{}/alerts/{}", self.prefix, v.stream);
            // On disk first: from here on the alert survives a crash or an unreachable broker.
            let stored = self
                .outbox
                .add(&topic, serde_json::to_value(&event)?)
                .await?;
            self.publish_tagged(
                topic,
                QoS::AtLeastOnce,
                false,
                stored.payload,
                Some(stored.id),
            )
            .await?;
            self.metrics
                .alerts
                .get_or_create(&StateLabel {
                    state: event.state.as_str(),
                })
                .inc();
            info!(stream = %v.stream, state = event.state.as_str(), energy = v.energy, threshold = v.threshold, seq = v.seq, "Alert.");
        }
        if v.transition.is_some() || v.first {
            let state = StateMessage {
                stream: &v.stream,
                phase: "monitoring",
                state: v.state,
                energy: v.energy,
                threshold: v.threshold,
                model: &v.model,
                seq: v.seq,
                node: &self.node,
            };
            let topic = format!("{}/state/{}", self.prefix, v.stream);
            self.publish(topic, QoS::AtLeastOnce, true, serde_json::to_vec(&state)?)
                .await?;
        }
        Ok(())
    }

    /// Publishes a stream's retained state while its model has no version yet (`learning`,
    /// `training`). Failures are logged: the phase is also in the metrics.
    pub async fn phase(&self, stream: &str, model: &str, phase: &str, captured: usize) {
        let state = serde_json::json!({
            "stream": stream, "phase": phase, "model": { "name": model }, "captured": captured,
            "node": self.node,
        });
        let topic = format!("{}/state/{stream}", self.prefix);
        let payload = serde_json::to_vec(&state).unwrap_or_default();
        if let Err(e) = self.publish(topic, QoS::AtLeastOnce, true, payload).await {
            warn!(stream, error = %e, "Cannot publish the stream's phase.");
        }
    }

    /// Publishes a lifecycle event (model activated, refused, training ...) on
    /// `{prefix}/events`, QoS 1.
    ///
    /// # Errors
    /// [`MqttError`] when the client has stopped.
    pub async fn event(&self, mut event: serde_json::Value) -> Result<(), MqttError> {
        if let Some(obj) = event.as_object_mut() {
            obj.insert("node".into(), serde_json::Value::String(self.node.clone()));
        }
        let topic = format!("{}/events", self.prefix);
        self.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&event)?)
            .await
    }

    /// Publishes the retained `offline` status and a clean DISCONNECT, after everything
    /// queued before it (the request channel is FIFO).
    ///
    /// # Errors
    /// [`MqttError`] when the client has stopped.
    pub async fn close(&self) -> Result<(), MqttError> {
        let payload = status_payload(false, &self.node);
        self.publish(status_topic(&self.prefix), QoS::AtLeastOnce, true, payload)
            .await?;
        Ok(())
    }
}

impl PublisherLoop {
    /// A QoS 1 publish from the loop itself, tagged in order with the others; `false` when it
    /// must wait (a publisher is mid-send, or the request channel is full).
    fn try_send(&self, topic: String, retain: bool, payload: Vec<u8>, alert: Option<u64>) -> bool {
        let Ok(_in_order) = self.send.try_lock() else {
            return false;
        };
        lock(&self.tags).push_back(alert);
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            lock(&self.tags).pop_back();
            return false;
        }
        true
    }

    /// Polls until every publish queued before `close` has been acknowledged, then
    /// disconnects. Reconnects with backoff; rumqttc resends unacknowledged QoS 1 publishes.
    ///
    /// `closing` starts the close; `abort` (the drain deadline) stops it at once.
    pub async fn run(
        mut self,
        closing: tokio_util::sync::CancellationToken,
        abort: tokio_util::sync::CancellationToken,
    ) {
        let conn = ConnLabel {
            connection: Role::Publish.as_str(),
        };
        let mut done: u64 = 0;
        let mut online_pending = false;
        let mut disconnecting = false;
        let mut connected_once = false;
        loop {
            if online_pending {
                let (topic, payload) = self.status.clone();
                online_pending = !self.try_send(topic, true, payload, None);
            }
            // What the last run left in the outbox goes out once, after the first connect;
            // afterwards rumqttc itself resends whatever a reconnect interrupts.
            while connected_once
                && !online_pending
                && let Some(p) = self.recovered.front()
            {
                let (topic, payload, id) = (p.topic.clone(), p.payload.clone(), p.id);
                if !self.try_send(topic, false, payload, Some(id)) {
                    break;
                }
                self.queued.fetch_add(1, Ordering::Relaxed);
                self.recovered.pop_front();
            }
            if closing.is_cancelled()
                && !disconnecting
                && done >= self.queued.load(Ordering::Relaxed)
            {
                disconnecting = self.client.try_disconnect().is_ok();
            }
            // Poll with a short timeout while closing so the exit condition is re-checked.
            let recheck = if closing.is_cancelled() {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(3600)
            };
            let polled = tokio::select! {
                biased;
                () = abort.cancelled() => {
                    warn!(unacked = self.queued.load(Ordering::Relaxed).saturating_sub(done), "Publisher aborted at the drain deadline.");
                    break;
                }
                // Wake up when closing starts, to check whether everything is acked.
                () = closing.cancelled(), if !closing.is_cancelled() => continue,
                () = tokio::time::sleep(recheck), if closing.is_cancelled() => continue,
                ev = self.eventloop.poll() => ev,
            };
            match polled {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    info!(
                        mqtt.connection = "publish",
                        session_present = ack.session_present,
                        "MQTT connected."
                    );
                    self.backoff.connected();
                    self.metrics.set_connected("publish", true);
                    online_pending = true;
                    connected_once = true;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                    if !self.in_flight.contains_key(&pkid) {
                        let tag = lock(&self.tags).pop_front().flatten();
                        self.in_flight.insert(pkid, tag);
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    done += 1;
                    if let Some(Some(id)) = self.in_flight.remove(&ack.pkid)
                        && let Err(e) = self.outbox.done(id)
                    {
                        warn!(alert_id = id, error = %e, "Cannot record an acknowledged alert; it may be published again at the next start.");
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(0))) => done += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    self.metrics.set_connected("publish", false);
                    self.metrics.reconnects.get_or_create(&conn).inc();
                    if disconnecting {
                        break;
                    }
                    let (delay, reason, why) = self.backoff.lost(&e);
                    self.metrics
                        .connect_failures
                        .get_or_create(&FailureLabel {
                            connection: "publish",
                            reason,
                        })
                        .inc();
                    error!(mqtt.connection = "publish", reason, error = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost or refused.");
                    tokio::select! {
                        () = abort.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.metrics.set_connected("publish", false);
        info!(
            published = self.queued.load(Ordering::Relaxed),
            "Publisher stopped."
        );
    }
}

/// Where the alerting stage carries on after a restart.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Each stream's detector at the checkpoint.
    pub detectors: std::collections::HashMap<String, crate::detect::DetectorState>,
    /// Per stream, the window of the last alert an earlier run stored, when it is past the
    /// checkpoint: windows up to it are judged again, and their alerts are not published twice.
    pub alerted_through: std::collections::HashMap<String, u64>,
}

/// The alerting stage: judges every scored window and publishes the results, until every
/// scorer has stopped.
#[allow(clippy::too_many_arguments)]
pub async fn alerting(
    mut scored: mpsc::Receiver<ScoredBatch>,
    publisher: Publisher,
    recent: std::collections::HashMap<String, Arc<RecentWindows>>,
    mut captures: std::collections::HashMap<String, Capture>,
    shadows: Arc<std::sync::Mutex<std::collections::HashMap<String, ShadowStats>>>,
    progress: Progress,
    resumed: Resumed,
) {
    let Resumed {
        detectors,
        alerted_through,
    } = resumed;
    let mut judge = Judge::restored(detectors);
    // Per model: the shadow's own detectors, so its alerts are counted as it would raise them.
    let mut shadow_judges: std::collections::HashMap<String, (String, Judge)> = Default::default();
    let depth = publisher
        .metrics
        .queue_depth
        .get_or_create(&QueueLabel {
            queue: "scored".into(),
        })
        .clone();
    while let Some(batch) = scored.recv().await {
        depth.set(scored.len() as i64);
        let Ok(energies) = &batch.energies else {
            // Counted and logged by the scorer; nothing to judge.
            for w in &batch.windows {
                progress.passed(&w.stream.id, w.raw.seq);
            }
            continue;
        };
        let model = ModelRef {
            name: batch.model.name.clone(),
            version: batch.model.version.clone(),
        };
        let mut shadow_pass = batch.shadow.as_ref().map(|(info, energies)| {
            let (version, judge) = shadow_judges
                .entry(model.name.clone())
                .or_insert_with(|| (info.version.clone(), Judge::new()));
            if *version != info.version {
                *version = info.version.clone();
                *judge = Judge::new();
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
            (judge, sref, info.threshold, energies, stats)
        });
        for (i, (w, &energy)) in batch.windows.iter().zip(energies).enumerate() {
            let mut verdict = judge.judge(&w.stream, &model, batch.model.threshold, &w.raw, energy);
            verdict.alerted_before = alerted_through
                .get(&verdict.stream)
                .is_some_and(|&seq| verdict.seq <= seq);
            if let Some((sjudge, sref, threshold, senergies, stats)) = shadow_pass.as_mut()
                && let Some(&se) = senergies.get(i)
            {
                let sv = sjudge.judge(&w.stream, sref, *threshold, &w.raw, se);
                stats.windows += 1;
                stats.active_anomalous += u64::from(verdict.anomalous);
                stats.shadow_anomalous += u64::from(sv.anomalous);
                stats.active_alerts += u64::from(verdict.transition == Some(Transition::Raised));
                stats.shadow_alerts += u64::from(sv.transition == Some(Transition::Raised));
            }
            if !verdict.anomalous {
                // Healthy windows feed the activation gate and the retraining data.
                if let Some(r) = recent.get(&model.name) {
                    r.push(&w.raw.data);
                }
                if let Some(c) = captures.get_mut(&model.name)
                    && let Err(e) = c.push(&w.raw.data)
                {
                    warn!(model = %model.name, error = %e, "Cannot capture healthy windows.");
                }
            }
            if let Err(e) = publisher.verdict(&verdict).await {
                error!(stream = %verdict.stream, seq = verdict.seq, error = %e, "Cannot publish; alerting stops.");
                return;
            }
            // After the alert is in the outbox: a checkpoint never runs ahead of it.
            progress.judged(&verdict.stream, verdict.seq, verdict.detector);
        }
        if let Some((_, _, _, _, add)) = shadow_pass {
            let mut all = shadows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let s = all.entry(model.name.clone()).or_default();
            if s.shadow != add.shadow || s.active != add.active {
                *s = ShadowStats {
                    active: add.active,
                    shadow: add.shadow,
                    ..ShadowStats::default()
                };
            }
            s.windows += add.windows;
            s.active_anomalous += add.active_anomalous;
            s.shadow_anomalous += add.shadow_anomalous;
            s.active_alerts += add.active_alerts;
            s.shadow_alerts += add.shadow_alerts;
        }
        debug!(windows = batch.windows.len(), model = %model.version, "Batch judged.");
    }
    for (model, mut c) in captures {
        if let Err(e) = c.flush() {
            warn!(model = %model, error = %e, "Cannot write captured windows.");
        }
    }
    if let Err(e) = publisher.close().await {
        warn!(error = %e, "Cannot publish the offline status.");
    }
}
