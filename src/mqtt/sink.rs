//! The publish connection: alerts (through the on-disk outbox), retained state, energy
//! telemetry, lifecycle events, and the retained status with its Last Will.
//!
//! Transport only: callers hand over topics and JSON. Alerts are stored in the outbox before
//! they are published and leave it at the broker's PUBACK; matching a PUBACK to its alert
//! relies on the tag FIFO (see [`PublisherLoop::run`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, Publish, QoS, Request};
use tracing::{debug, info, warn};

use super::homeassistant::Discovery;
use super::{Backoff, MqttError, Role, lock, status_payload};
use crate::config::MqttSettings;
use crate::durable::outbox::SharedOutbox;
use crate::telemetry::metrics::{ConnLabel, Metrics};

const REQUEST_CAPACITY: usize = 256;

/// The retained messages of this run a broker must keep (each stream's state, its Home
/// Assistant config), newest by topic: published again after a reconnect to a broker that
/// lost the session (one restarted without persistence has lost its retained messages too,
/// and a stream's state is otherwise published again only when it changes). Bounded by the
/// streams tracked: a forgotten stream's leave it.
type Retained = Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>;

/// Which QoS 1 publish is which, in the order they enter rumqttc's request channel: an alert's
/// outbox id, or `None`. The publish loop matches them to packet ids as rumqttc sends them, so
/// that a PUBACK can take its alert out of the outbox.
type Tags = Arc<std::sync::Mutex<VecDeque<Option<u64>>>>;

/// The tag of a request about to enter rumqttc's channel; taken back off the FIFO when dropped
/// without [`TagGuard::keep_if`] saying it went in (the request failed, or the future sending
/// it was cancelled). Only pushed while the `send` lock is held, so the back of the FIFO is
/// this request's tag.
struct TagGuard<'a> {
    /// The FIFO while the tag may still have to be taken back.
    pushed: Option<&'a Tags>,
}

impl<'a> TagGuard<'a> {
    /// Pushes the tag of a publish at `qos`; QoS 0 publishes get no packet id and no PUBACK,
    /// so no tag.
    fn push(tags: &'a Tags, qos: QoS, alert: Option<u64>) -> Self {
        if qos == QoS::AtMostOnce {
            return Self { pushed: None };
        }
        lock(tags).push_back(alert);
        Self { pushed: Some(tags) }
    }

    /// The tag stays when the request went into rumqttc's channel.
    fn keep_if(mut self, sent: bool) {
        if sent {
            self.pushed = None;
        }
    }
}

impl Drop for TagGuard<'_> {
    fn drop(&mut self) {
        if let Some(tags) = self.pushed {
            lock(tags).pop_back();
        }
    }
}

/// Publishes under the configured prefix. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    prefix: String,
    /// The retained online/offline topic.
    status_topic: String,
    node: String,
    energy_qos: Option<QoS>,
    queued: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    outbox: SharedOutbox,
    tags: Tags,
    /// Held from pushing a tag to handing the request over, so tags and requests stay in step.
    send: Arc<tokio::sync::Mutex<()>>,
    /// Announces streams to Home Assistant (`[homeassistant]`).
    discovery: Option<Arc<Discovery>>,
    retained: Retained,
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
    /// The brokers, and the options for each.
    failover: super::Failover,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicU64>,
    status: (String, Vec<u8>),
    outbox: SharedOutbox,
    tags: Tags,
    send: Arc<tokio::sync::Mutex<()>>,
    /// Packet ids sent and not yet acknowledged, with their tag. A packet id seen again is
    /// a resend after a reconnect, not a new publish.
    in_flight: HashMap<u16, Option<u64>>,
    /// PUBACKs and QoS 0 publishes sent: everything queued is done when this reaches `queued`.
    done: u64,
    /// Publishes sent and not acknowledged when the connection was lost, sent again (same
    /// packet ids) once connected, whether or not the broker kept the session.
    resend: VecDeque<Request>,
    /// Publishes that rumqttc had taken but not sent when the connection was lost, with their
    /// tags, going back into the request channel in their order (see
    /// [`PublisherLoop::take_back`]).
    requeue: VecDeque<(Publish, Option<u64>)>,
    /// The `send` lock, held from a lost connection until `requeue` is back in the channel, so
    /// that nothing published meanwhile overtakes it. Held whenever `requeue` is not empty.
    requeue_lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Alerts the broker acknowledged, not yet recorded in the outbox.
    acked: Vec<u64>,
    retained: Retained,
    /// Topics of `retained` to publish again (the broker lost the session).
    republish: VecDeque<String>,
    /// Recording the last batch of them (file I/O, on the blocking pool: never on this task,
    /// which keeps the connection alive).
    recording: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PublisherLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherLoop").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates the publish client and its event loop.
    pub fn new(
        mqtt: &MqttSettings,
        node: &str,
        metrics: Arc<Metrics>,
        outbox: SharedOutbox,
    ) -> (Self, PublisherLoop) {
        let failover = super::Failover::new(mqtt, Role::Publish, node);
        let (client, eventloop) = AsyncClient::new(failover.options(), REQUEST_CAPACITY);
        let queued = Arc::new(AtomicU64::new(0));
        let tags = Tags::default();
        let send = Arc::new(tokio::sync::Mutex::new(()));
        // What the last run left in the outbox goes out first, before anything this run
        // publishes (a clear of a raise it left, say): in the request channel ahead of all
        // else, through the path that puts back what a lost connection took
        // ([`PublisherLoop::put_back`]), the publishers held off until it is all in.
        let requeue: VecDeque<_> = outbox
            .lock()
            .pending()
            .into_iter()
            .map(|p| {
                let publish = Publish::new(p.topic, QoS::AtLeastOnce, p.payload);
                (publish, Some(p.id))
            })
            .collect();
        let requeue_lock = (!requeue.is_empty())
            .then(|| send.clone().try_lock_owned().ok())
            .flatten();
        queued.fetch_add(requeue.len() as u64, Ordering::Relaxed);
        let retained = Retained::default();
        if !requeue.is_empty() {
            info!(
                alerts = requeue.len(),
                "Alerts left unacknowledged by the last run; publishing them first."
            );
        }
        let publisher = Self {
            client: client.clone(),
            prefix: mqtt.prefix.clone(),
            status_topic: mqtt.status_topic.clone(),
            node: node.to_owned(),
            energy_qos: mqtt.publish_energy.then_some(mqtt.energy_qos),
            queued: queued.clone(),
            metrics: metrics.clone(),
            outbox: outbox.clone(),
            tags: tags.clone(),
            send: send.clone(),
            discovery: mqtt
                .homeassistant
                .as_ref()
                .map(|d| Arc::new(Discovery::new(d, &mqtt.prefix, &mqtt.status_topic, node))),
            retained: retained.clone(),
        };
        let run = PublisherLoop {
            eventloop,
            failover,
            client,
            backoff: Backoff::new(mqtt.reconnect_min, mqtt.reconnect_max),
            metrics,
            queued,
            status: (mqtt.status_topic.clone(), status_payload(true, node)),
            outbox,
            tags,
            send,
            in_flight: HashMap::new(),
            done: 0,
            resend: VecDeque::new(),
            requeue,
            requeue_lock,
            acked: Vec::new(),
            retained,
            republish: VecDeque::new(),
            recording: None,
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
        let tag = TagGuard::push(&self.tags, qos, alert);
        // Waiting here (request channel full) is backpressure toward the scorers, never toward
        // the ingest loop, which has its own connection. If this future is dropped while it
        // waits (a shutdown), the guard takes the tag back: tags and requests stay in step.
        let r = self.client.publish(topic, qos, retain, payload).await;
        tag.keep_if(r.is_ok());
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

    /// Publishes a window's energy telemetry on `{prefix}/energy/{stream}`, when it is on.
    ///
    /// # Errors
    /// [`MqttError`] when the client has stopped.
    pub async fn energy(&self, stream: &str, json: Vec<u8>) -> Result<(), MqttError> {
        match self.energy_qos {
            Some(qos) => {
                let topic = format!("{}/energy/{stream}", self.prefix);
                self.publish(topic, qos, false, json).await
            }
            None => Ok(()),
        }
    }

    /// Whether energy telemetry is on (callers can skip encoding it).
    pub fn publishes_energy(&self) -> bool {
        self.energy_qos.is_some()
    }

    /// Stores an alert in the outbox (its JSON gets `alert_id`), then publishes it on
    /// `{prefix}/alerts/{stream}`, QoS 1; it leaves the outbox at the broker's PUBACK. Waits
    /// while the outbox is full.
    ///
    /// # Errors
    /// [`MqttError`] when the outbox cannot be written or the client has stopped.
    pub async fn alert(&self, stream: &str, json: serde_json::Value) -> Result<u64, MqttError> {
        let topic = format!("{}/alerts/{stream}", self.prefix);
        // On disk first: from here on the alert survives a crash or an unreachable broker.
        let stored = self.outbox.add(&topic, json).await?;
        self.publish_tagged(
            topic,
            QoS::AtLeastOnce,
            false,
            stored.payload,
            Some(stored.id),
        )
        .await?;
        Ok(stored.id)
    }

    /// Forgets what the outbox remembers of `stream` (it went quiet). A failure is logged: the
    /// stream's old window number then lingers until the outbox is next compacted.
    pub fn forget(&self, stream: &str) {
        let mut retained = lock(&self.retained);
        retained.remove(&self.state_topic(stream));
        if let Some(d) = &self.discovery {
            d.forget(stream);
            retained.remove(&d.topic(stream));
        }
        drop(retained);
        // A write to the outbox's file, which a compaction may hold through two fsyncs.
        if let Err(e) = crate::durable::on_disk(|| self.outbox.lock().forget(stream)) {
            warn!(stream, error = %e, "Cannot record a forgotten stream in the outbox.");
        }
    }

    fn state_topic(&self, stream: &str) -> String {
        format!("{}/state/{stream}", self.prefix)
    }

    /// Publishes a stream's retained state on `{prefix}/state/{stream}`, QoS 1; before a
    /// stream's first state of this run, its Home Assistant discovery config when that is on.
    ///
    /// # Errors
    /// [`MqttError`] when the client has stopped.
    pub async fn state(&self, stream: &str, json: Vec<u8>) -> Result<(), MqttError> {
        if let Some((topic, config)) = self.discovery.as_ref().and_then(|d| d.announce(stream)) {
            lock(&self.retained).insert(topic.clone(), config.clone());
            self.publish(topic, QoS::AtLeastOnce, true, config).await?;
        }
        let topic = self.state_topic(stream);
        lock(&self.retained).insert(topic.clone(), json.clone());
        self.publish(topic, QoS::AtLeastOnce, true, json).await
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
        self.publish(self.status_topic.clone(), QoS::AtLeastOnce, true, payload)
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
        self.try_publish_tagged(topic, QoS::AtLeastOnce, retain, payload, alert)
    }

    /// Pushes the tag (QoS 1) and hands the publish to rumqttc without waiting; the tag is
    /// taken back when the channel is full. The caller holds the `send` lock.
    fn try_publish_tagged(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        alert: Option<u64>,
    ) -> bool {
        let tag = TagGuard::push(&self.tags, qos, alert);
        let sent = self.client.try_publish(topic, qos, retain, payload).is_ok();
        tag.keep_if(sent);
        sent
    }

    /// Polls until every publish queued before `close` has been acknowledged, then
    /// disconnects. Reconnects with backoff; what was unacknowledged at a lost connection is
    /// sent again (`take_back`).
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
        let mut online_pending = false;
        let mut disconnecting = false;
        let mut connected_once = false;
        loop {
            self.put_back();
            if online_pending {
                let (topic, payload) = self.status.clone();
                online_pending = !self.try_send(topic, true, payload, None);
            }
            // The retained messages a broker that lost the session lost too, each as it
            // is now (a newer one published meanwhile is what goes).
            while !online_pending && let Some(topic) = self.republish.front() {
                // Read under the `send` lock: a publisher stores a state before it takes the
                // lock to send it, so what is read here is at least as new as anything sent.
                let Ok(_in_order) = self.send.try_lock() else {
                    break;
                };
                let Some(payload) = lock(&self.retained).get(topic).cloned() else {
                    self.republish.pop_front(); // forgotten meanwhile
                    continue;
                };
                let topic = topic.clone();
                if !self.try_publish_tagged(topic, QoS::AtLeastOnce, true, payload, None) {
                    break;
                }
                self.queued.fetch_add(1, Ordering::Relaxed);
                self.republish.pop_front();
            }
            if self.recording.is_none() && !self.acked.is_empty() {
                self.record_acked();
            }
            if closing.is_cancelled()
                && !disconnecting
                && self.requeue.is_empty()
                && self.done >= self.queued.load(Ordering::Relaxed)
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
                    warn!(unacked = self.queued.load(Ordering::Relaxed).saturating_sub(self.done), "Publisher aborted at the drain deadline.");
                    break;
                }
                // Wake up when closing starts, to check whether everything is acked.
                () = closing.cancelled(), if !closing.is_cancelled() => continue,
                () = tokio::time::sleep(recheck), if closing.is_cancelled() => continue,
                () = join_some(&mut self.recording) => {
                    self.recording = None;
                    continue;
                }
                ev = self.eventloop.poll() => ev,
            };
            match polled {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    info!(
                        mqtt.connection = "publish",
                        mqtt.broker = %self.failover.current(),
                        session_present = ack.session_present,
                        "MQTT connected."
                    );
                    self.backoff.connected();
                    self.metrics.set_connected("publish", true);
                    // Before anything new: rumqttc sends `pending` first.
                    let mut resend = std::mem::take(&mut self.resend);
                    resend.append(&mut self.eventloop.pending);
                    self.eventloop.pending = resend;
                    online_pending = true;
                    if connected_once && !ack.session_present {
                        self.republish = lock(&self.retained).keys().cloned().collect();
                        info!(
                            retained = self.republish.len(),
                            "The broker lost the session: publishing the streams' retained state again."
                        );
                    }
                    connected_once = true;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(ev) => self.account(&ev),
                Err(e) => {
                    self.metrics.set_connected("publish", false);
                    self.metrics.reconnects.get_or_create(&conn).inc();
                    if disconnecting {
                        break;
                    }
                    // Publishers wait until what is taken back is in the channel again, so
                    // nothing published while reconnecting overtakes it.
                    if self.requeue_lock.is_none() {
                        let Some(held) = self.hold_publishers(&abort).await else {
                            break;
                        };
                        self.requeue_lock = Some(held);
                    }
                    self.take_back();
                    if self.requeue.is_empty() {
                        self.requeue_lock = None;
                    }
                    let delay =
                        super::report_lost(&mut self.backoff, &self.metrics, Role::Publish, &e);
                    self.failover.move_on(&mut self.eventloop, &self.metrics);
                    tokio::select! {
                        () = abort.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.metrics.set_connected("publish", false);
        // The acknowledgements received last are recorded before the publisher ends (a few
        // appends; what is not recorded is published once more by the next start).
        if let Some(h) = self.recording.take() {
            h.await.ok();
        }
        if !self.acked.is_empty() {
            self.record_acked();
            if let Some(h) = self.recording.take() {
                h.await.ok();
            }
        }
        info!(
            published = self.queued.load(Ordering::Relaxed),
            "Publisher stopped."
        );
    }

    /// Matches a sent publish to its tag and a PUBACK to its alert.
    fn account(&mut self, ev: &Event) {
        match ev {
            Event::Outgoing(Outgoing::Publish(0)) => self.done += 1,
            // A packet id already tracked is a resend.
            Event::Outgoing(Outgoing::Publish(pkid)) if !self.in_flight.contains_key(pkid) => {
                let tag = lock(&self.tags).pop_front().flatten();
                self.in_flight.insert(*pkid, tag);
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                self.done += 1;
                if let Some(Some(id)) = self.in_flight.remove(&ack.pkid) {
                    self.acked.push(id);
                }
            }
            _ => {}
        }
    }

    /// The connection was lost: takes back from rumqttc every publish it would send again,
    /// so that none depends on the broker keeping the session or on rumqttc's packet-id
    /// collisions. Left to rumqttc, a broker that forgot the session (restarted without
    /// persistence) makes it drop them all, alerts included; and after an outage with
    /// `mqtt.inflight` publishes unacknowledged, it would send the requests it had queued
    /// ahead of the flow control onto packet ids still in flight, keeping one of those
    /// publishes aside at a time and dropping the one before.
    ///
    /// - Events read before the loss are accounted first (a PUBACK or a sent publish not yet
    ///   seen).
    /// - Publishes sent and not acknowledged keep their packet ids and tags: `resend`, put in
    ///   front of rumqttc's queue at the next CONNACK.
    /// - The rest (taken from the request channel, or held aside on a packet-id collision) were
    ///   never sent: their tags are the oldest in the FIFO, in their order. They go back into
    ///   the request channel, each with its tag, before anything newer ([`Self::put_back`]).
    ///
    /// The caller holds the `send` lock ([`Self::hold_publishers`]) from here until they are
    /// all back in: whatever the channel holds is then older than what `requeue` still holds
    /// from an earlier loss, so it goes in front of it.
    fn take_back(&mut self) {
        while let Some(ev) = self.eventloop.state.events.pop_front() {
            self.account(&ev);
        }
        // A failed connect leaves the channel as it was; take it too.
        self.eventloop.clean();
        let mut unsent: Vec<Publish> = self.eventloop.state.collision.take().into_iter().collect();
        for request in std::mem::take(&mut self.eventloop.pending) {
            match request {
                Request::Publish(p) if p.pkid != 0 && self.in_flight.contains_key(&p.pkid) => {
                    self.resend.push_back(Request::Publish(p));
                }
                Request::Publish(p) => unsent.push(p),
                // The loop sends its own DISCONNECT when closing; nothing else goes through
                // this connection's channel.
                other => debug!(request = ?other, "Request dropped with the connection."),
            }
        }
        let mut tags = lock(&self.tags);
        let mut taken: VecDeque<_> = unsent
            .into_iter()
            .map(|p| {
                let tag = if p.qos == QoS::AtMostOnce {
                    None
                } else {
                    tags.pop_front().flatten()
                };
                (p, tag)
            })
            .collect();
        taken.append(&mut self.requeue);
        self.requeue = taken;
    }

    /// Takes the `send` lock from the publishers; `None` when aborted first. A publisher
    /// holding it may be waiting for room in the request channel, which nothing polls now: the
    /// channel is emptied into rumqttc's pending requests (taken back next) until that
    /// publisher has put its request in and let go.
    async fn hold_publishers(
        &mut self,
        abort: &tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        // One request for the lock throughout, so its place in the queue is kept.
        let held = self.send.clone().lock_owned();
        tokio::pin!(held);
        loop {
            self.eventloop.clean();
            tokio::select! {
                biased;
                () = abort.cancelled() => return None,
                held = &mut held => return Some(held),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// Puts the publishes taken back by [`Self::take_back`] into the request channel, in their
    /// order and before anything newer, pushing each one's tag as it goes in (as publishers
    /// do); lets go of the `send` lock, held since the connection was lost, once all are in.
    fn put_back(&mut self) {
        while let Some((p, tag)) = self.requeue.front() {
            // rumqttc gives it a new packet id: the one it had may be in flight.
            let (topic, payload) = (p.topic.clone(), p.payload.to_vec());
            if !self.try_publish_tagged(topic, p.qos, p.retain, payload, *tag) {
                return;
            }
            self.requeue.pop_front();
        }
        self.requeue_lock = None;
    }

    /// Records the acknowledged alerts in the outbox on the blocking pool.
    fn record_acked(&mut self) {
        let (outbox, ids) = (self.outbox.clone(), std::mem::take(&mut self.acked));
        self.recording = Some(tokio::task::spawn_blocking(move || {
            for id in ids {
                if let Err(e) = outbox.done(id) {
                    warn!(alert_id = id, error = %e, "Cannot record an acknowledged alert; it may be published again at the next start.");
                }
            }
        }));
    }
}

/// Waits for `handle` when there is one (a panic in it was logged by the runtime); never
/// resolves otherwise (a disabled select arm).
async fn join_some(handle: &mut Option<tokio::task::JoinHandle<()>>) {
    match handle {
        Some(h) => {
            if let Err(e) = h.await {
                warn!(error = %e, "Recording acknowledged alerts failed.");
            }
        }
        None => std::future::pending().await,
    }
}
