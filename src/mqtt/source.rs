//! The ingest connection: subscribe, poll, hand every message to the ingest stage, and send the
//! acknowledgements it asks for.
//!
//! Transport only: the source knows topics, payloads and packet ids, never streams or models.
//! Its task does nothing but poll rumqttc, so keep-alive pings go out however long the ingest
//! stage waits on a full window queue, a journal sync or a checkpoint: a slow pipeline never
//! costs the connection.
//!
//! ```text
//! broker --> Source::run (poll, resubscribe, backoff) --[Delivery]--> [64 x 64] --> ingest
//! ingest stage --Ack--> Acker --> rumqttc request channel --> Source::run --> broker
//! ```
//!
//! **Holding messages.** Messages are handed over in batches of what arrived together.
//! Messages the ingest stage has not taken yet wait in the source, in arrival order, so that
//! it can keep polling. For QoS 1 the broker bounds them: it sends at
//! most `max_inflight_messages` unacknowledged messages (mosquitto: 20 by default; the README
//! asks 100 for high rates). QoS 0 messages have no such bound: beyond [`HOLD_QOS0`] waiting,
//! new ones are dropped and counted (`ebgand_messages_dropped_total{reason="qos0_overflow"}`),
//! as QoS 0 allows. Should the held messages pass [`HOLD_MAX_BYTES`] (a broker with no
//! in-flight limit and large payloads), the source stops reading until the stage catches up;
//! the broker keeps the rest, and drops the connection if that lasts past its keep-alive
//! timeout (nothing is lost: unacknowledged messages are sent again).
//!
//! **Redeliveries.** The broker sends again, flagged DUP, the messages whose acknowledgements
//! it did not get (after a lost connection; a NATS cluster also on a late ack); those the stage
//! already took are recognised by topic and payload ([`Redeliveries`]) and marked
//! [`Delivery::duplicate`], so they are acknowledged without being windowed twice.
//!
//! **Several brokers.** With `mqtt.hosts`, every lost connection moves on to the next broker of
//! the list ([`super::Failover`]) with the same client id, so a cluster that keeps the
//! persistent session (NATS) resumes it on another node.
//!
//! **Oversized messages.** A packet over `mqtt.max_packet_bytes` makes rumqttc drop the
//! connection before anything of it is read; the persistent session would send it again at
//! every reconnect and stall every stream. The source reconnects once with the limit raised to
//! that packet's size, so the message is read and handed over (the ingest stage acknowledges it
//! as `oversize` without windowing it), then restores the limit for the next connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, Outgoing, Publish, QoS, StateError,
    SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::redeliveries::{MessageId, Redeliveries};
use super::{Backoff, Role};
use crate::config::MqttSettings;
use crate::telemetry::metrics::{ConnLabel, DropLabel, FailureLabel, Metrics};

/// Requests (acks, subscriptions, the DISCONNECT) the client channel holds.
const REQUEST_CAPACITY: usize = 1024;

/// Batches handed to the ingest stage and not taken yet.
pub const HANDOVER_QUEUE: usize = 64;

/// Messages in one batch at most. A batch is what arrived together (rumqttc reads up to 10
/// packets at a time), so the ingest task wakes once per read, not once per message.
pub const HANDOVER_BATCH: usize = 64;

/// QoS 0 messages held beyond the hand-over queue before new ones are dropped.
pub const HOLD_QOS0: usize = 10_000;

/// Bytes of payload held beyond the hand-over queue before the source stops reading.
pub const HOLD_MAX_BYTES: usize = 256 << 20;

/// How long the source keeps polling for the last acks and the DISCONNECT once the ingest stage
/// has stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest packet MQTT 3.1.1 can carry (its remaining-length field's maximum).
const MQTT_MAX_PACKET: usize = 268_435_455;

/// One message from the broker.
#[derive(Debug)]
pub struct Delivery {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Whether the broker sent it as a retained message.
    pub retain: bool,
    /// Its identity, for recognising the broker's redeliveries (the journal keeps it).
    pub id: MessageId,
    /// A redelivery of a message already handed over (before a reconnect, or journaled by the
    /// last run): acknowledge it, do not process it again.
    pub duplicate: bool,
    /// The broker flagged it as sent again (DUP). With `mqtt.duplicates = "identical"` a
    /// message is a [`Delivery::duplicate`] without it, by its content alone.
    pub flagged: bool,
    /// Acknowledge with [`Acker::ack`] once processed.
    pub ack: Ack,
}

/// What acknowledging a [`Delivery`] takes: its packet id, QoS and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pkid: u16,
    qos: QoS,
    connection: u64,
}

impl Ack {
    /// The packet id (0 for QoS 0).
    pub fn pkid(&self) -> u16 {
        self.pkid
    }
}

/// Sends acknowledgements on the ingest connection, from the ingest stage's task.
///
/// An ack for a message of an earlier connection is dropped: the broker sends that message
/// again (DUP set) on the new connection, where it is recognised and acknowledged; an ack sent
/// now could land on the new connection's packet id of another message. Acks are handed to
/// rumqttc under a lock (`Gate`) which the source holds while it counts a lost connection and
/// empties rumqttc's request channel of acks, so none of an old connection reaches a new one.
pub struct Acker {
    client: AsyncClient,
    gate: Gate,
    /// Acks that did not fit in the request channel, sent before any newer one.
    parked: VecDeque<Ack>,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}

impl Acker {
    /// Acknowledges a processed message. Never waits: a full request channel parks the ack
    /// until [`Acker::flush`].
    pub fn ack(&mut self, ack: Ack) {
        if ack.qos == QoS::AtMostOnce {
            return;
        }
        let now = self.gate.lock();
        if ack.connection != *now {
            return;
        }
        if !self.parked.is_empty() || !self.try_send(ack) {
            self.parked.push_back(ack);
        }
    }

    /// Sends parked acks, in order, while the request channel has room.
    pub fn flush(&mut self) {
        let now = self.gate.lock();
        while let Some(ack) = self.parked.front().copied() {
            if ack.connection == *now && !self.try_send(ack) {
                break;
            }
            self.parked.pop_front();
        }
    }

    /// Acks parked.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Sends the parked acks and then a DISCONNECT, after them in the request channel; `false`
    /// when the channel is full (call again).
    pub fn disconnect(&mut self) -> bool {
        self.flush();
        self.parked.is_empty() && self.client.try_disconnect().is_ok()
    }

    fn try_send(&self, ack: Ack) -> bool {
        let mut p = Publish::new("", ack.qos, Vec::new());
        p.pkid = ack.pkid;
        self.client.try_ack(&p).is_ok()
    }
}

/// The number of the ingest connection, counted up at every lost one. Locked by the [`Acker`]
/// from comparing an ack's connection to handing it to rumqttc, and by the source from
/// counting a lost connection to emptying rumqttc's request channel of acks: an ack handed
/// over under the old number is in the channel before it is emptied.
#[derive(Debug, Clone, Default)]
struct Gate(Arc<std::sync::Mutex<u64>>);

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        super::lock(&self.0)
    }
}

/// The ingest connection's event loop. Build with [`Source::new`], run with [`Source::run`].
pub struct Source {
    eventloop: EventLoop,
    client: AsyncClient,
    /// The brokers, and the options for each.
    failover: super::Failover,
    filters: Vec<SubscribeFilter>,
    /// The control topics' prefix: its filter granted alone is no stream's data.
    control: String,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    redeliveries: Redeliveries,
    /// Incremented on every lost connection; acks carry the value they were received under.
    connection: u64,
    /// The same number, shared with the [`Acker`].
    gate: Gate,
    max_packet: usize,
    /// Messages not taken by the ingest stage yet, and their payload bytes.
    held: VecDeque<Delivery>,
    held_bytes: usize,
    held_qos0: usize,
    /// [`HOLD_MAX_BYTES`] (smaller in tests).
    hold_max_bytes: usize,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Creates the client (it connects on the first poll) subscribing to `filters` at QoS 1,
    /// and the [`Acker`] for the ingest stage.
    pub fn new(
        mqtt: &MqttSettings,
        node: &str,
        filters: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> (Self, Acker) {
        let failover = super::Failover::new(mqtt, Role::Ingest, node);
        let (client, eventloop) = AsyncClient::new(failover.options(), REQUEST_CAPACITY);
        let gate = Gate::default();
        let source = Self {
            eventloop,
            client: client.clone(),
            failover,
            filters: filters
                .into_iter()
                .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce))
                .collect(),
            backoff: Backoff::new(mqtt.reconnect_min, mqtt.reconnect_max),
            metrics,
            redeliveries: Redeliveries::new(mqtt.duplicates),
            connection: 0,
            gate: gate.clone(),
            max_packet: mqtt.max_packet_bytes,
            control: crate::control::topic_prefix(&mqtt.prefix),
            held: VecDeque::new(),
            held_bytes: 0,
            held_qos0: 0,
            hold_max_bytes: HOLD_MAX_BYTES,
        };
        let acker = Acker {
            client,
            gate,
            parked: VecDeque::new(),
        };
        (source, acker)
    }

    /// Messages journaled by the last run: if the broker sends one of them again (DUP set),
    /// it is marked a duplicate.
    #[must_use]
    pub fn suspecting(mut self, ids: impl IntoIterator<Item = MessageId>) -> Self {
        self.redeliveries.suspect(ids);
        self
    }

    /// Polls until the ingest stage has sent its DISCONNECT (after its last acks), or it has
    /// stopped and a few seconds has passed, or `abort` (the drain deadline) fires.
    pub async fn run(mut self, tx: mpsc::Sender<Vec<Delivery>>, abort: CancellationToken) {
        let conn = ConnLabel {
            connection: Role::Ingest.as_str(),
        };
        let mut stage_gone: Option<tokio::time::Instant> = None;
        loop {
            // Once the stage is gone, what is held will never be taken: poll regardless.
            let reading = self.held_bytes <= self.hold_max_bytes || stage_gone.is_some();
            // Hand over once rumqttc has nothing more already read (its next poll would wait
            // for the network), or a batch is full.
            let hand_over = !self.held.is_empty()
                && stage_gone.is_none()
                && (!reading
                    || self.eventloop.state.events.is_empty()
                    || self.held.len() >= HANDOVER_BATCH);
            let event = tokio::select! {
                biased;
                () = abort.cancelled() => break,
                // Cancel-safe: a permit not used is given back.
                permit = tx.reserve(), if hand_over => {
                    match permit {
                        Ok(permit) => permit.send(self.take_batch()),
                        Err(_) => stage_gone = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT),
                    }
                    continue;
                }
                () = tx.closed(), if stage_gone.is_none() => {
                    // The stage stopped; its last acks and DISCONNECT are in the request
                    // channel. Messages not handed over are left unacknowledged: the broker
                    // sends them again next session.
                    stage_gone = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                    self.held.clear();
                    (self.held_bytes, self.held_qos0) = (0, 0);
                    continue;
                }
                () = sleep_until_some(stage_gone) => {
                    warn!("Ingest disconnect timed out; unacknowledged messages will be redelivered.");
                    break;
                }
                // Cancel-safe: rumqttc keeps partially read packets in its state.
                ev = self.eventloop.poll(), if reading => ev,
            };
            match event {
                Ok(Event::Incoming(Incoming::Publish(p))) => self.arrived(p),
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    info!(
                        mqtt.connection = "ingest",
                        mqtt.broker = %self.failover.current(),
                        session_present = ack.session_present,
                        "MQTT connected."
                    );
                    self.backoff.connected();
                    self.redeliveries.connected(ack.session_present);
                    // This connection has its codec; the next one gets the configured limit.
                    self.eventloop
                        .mqtt_options
                        .set_max_packet_size(self.max_packet, self.max_packet);
                    // Subscribe on every connect: a broker that lost the session (restarted
                    // without persistence, or expired it) has forgotten our subscriptions.
                    if let Err(e) = self.client.try_subscribe_many(self.filters.clone()) {
                        error!(error = %e, "Cannot queue the subscription request.");
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    // Up (and ready) once subscribed: a cluster (NATS) answers the
                    // subscription only when it can keep the session's messages. A broker
                    // that refused every filter sends nothing: not ready.
                    let mut granted = false;
                    for (filter, code) in self.filters.iter().zip(&ack.return_codes) {
                        match code {
                            rumqttc::SubscribeReasonCode::Success(qos) => {
                                granted |= !filter.path.starts_with(&self.control);
                                debug!(topic = %filter.path, qos = ?qos, "Subscribed.");
                            }
                            rumqttc::SubscribeReasonCode::Failure => {
                                self.metrics.subscriptions_refused.inc();
                                error!(topic = %filter.path, "The broker refused the subscription (check its ACL); this stream gets no data.");
                            }
                        }
                    }
                    self.metrics.set_connected("ingest", granted);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    // rumqttc drops the acks not written yet with the connection; the broker
                    // sends those messages again (DUP set) if the session survives.
                    self.connection_lost();
                    self.redeliveries.lost();
                    self.metrics.set_connected("ingest", false);
                    if stage_gone.is_some() {
                        debug!(error = %e, "Ingest connection closed during shutdown.");
                        break;
                    }
                    self.metrics.reconnects.get_or_create(&conn).inc();
                    let delay = match oversize(&e) {
                        Some(size) => self.read_oversized_next(size),
                        None => {
                            let delay = super::report_lost(
                                &mut self.backoff,
                                &self.metrics,
                                Role::Ingest,
                                &e,
                            );
                            // The oversized case stays on its broker (the raised limit is for
                            // the message that broker holds); any other loss tries the next.
                            self.failover.move_on(&mut self.eventloop, &self.metrics);
                            delay
                        }
                    };
                    tokio::select! {
                        biased;
                        () = abort.cancelled() => break,
                        // Stopping while disconnected: the acks ingest queued belong to the
                        // lost connection and would not be sent; the broker resends those
                        // messages next session.
                        () = tx.closed() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.metrics.set_connected("ingest", false);
        info!("Ingest connection closed.");
    }

    /// Counts a lost connection. rumqttc emptied its request channel of acks when it lost the
    /// connection, but the ingest stage may have handed it one since, under the old number;
    /// emptying it again under the gate drops those (other requests are kept for the next
    /// connection, as rumqttc keeps them).
    ///
    /// rumqttc reads up to ten packets at a time and keeps the ones it has not yielded in its
    /// state when a later one fails: publishes of the lost connection, which it would yield
    /// first on the next one. They are taken here, under the old number, so their acks are
    /// never sent on the new connection, where their packet ids may name other messages (a
    /// broker restarted without its sessions numbers afresh).
    fn connection_lost(&mut self) {
        while let Some(ev) = self.eventloop.state.events.pop_front() {
            if let Event::Incoming(Incoming::Publish(p)) = ev {
                self.arrived(p);
            }
        }
        let mut gate = self.gate.lock();
        self.connection += 1;
        *gate = self.connection;
        self.eventloop.clean();
    }

    /// The oldest held messages, up to a batch.
    fn take_batch(&mut self) -> Vec<Delivery> {
        let n = self.held.len().min(HANDOVER_BATCH);
        let batch: Vec<Delivery> = self.held.drain(..n).collect();
        for d in &batch {
            self.held_bytes -= d.payload.len();
            self.held_qos0 -= usize::from(d.ack.qos == QoS::AtMostOnce);
        }
        batch
    }

    /// Holds a message for the ingest stage, marking a redelivery of one handed over before.
    fn arrived(&mut self, p: Publish) {
        let qos0 = p.qos == QoS::AtMostOnce;
        if qos0 && self.held_qos0 >= HOLD_QOS0 {
            self.metrics
                .messages_dropped
                .get_or_create(&DropLabel {
                    reason: "qos0_overflow",
                })
                .inc();
            return;
        }
        let id = MessageId::of(&p.topic, &p.payload);
        let duplicate = !qos0 && self.redeliveries.arrived(id, p.dup);
        self.held_bytes += p.payload.len();
        self.held_qos0 += usize::from(qos0);
        self.held.push_back(Delivery {
            ack: Ack {
                pkid: p.pkid,
                qos: p.qos,
                connection: self.connection,
            },
            topic: p.topic,
            payload: p.payload,
            retain: p.retain,
            id,
            duplicate,
            flagged: p.dup,
        });
    }

    /// A packet of `size` bytes was over the limit: the next connection reads packets up to
    /// that size, once, so the message can be acknowledged instead of stalling the session.
    fn read_oversized_next(&mut self, size: usize) -> Duration {
        let raised = size.clamp(self.max_packet, MQTT_MAX_PACKET);
        self.eventloop
            .mqtt_options
            .set_max_packet_size(raised, self.max_packet);
        self.metrics
            .connect_failures
            .get_or_create(&FailureLabel {
                connection: "ingest",
                reason: "oversize",
            })
            .inc();
        warn!(
            packet_bytes = size,
            max_packet_bytes = self.max_packet,
            "A message over mqtt.max_packet_bytes arrived; reconnecting once to read it and acknowledge it as oversize."
        );
        self.backoff.reset();
        self.backoff.next_delay()
    }
}

/// The size of the packet that broke the connection, when it was over the size limit.
fn oversize(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

/// Sleeps until `t`; never wakes without one (a disabled select arm).
async fn sleep_until_some(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source (and its acker) for a broker that `listener` plays, subscribing to `filters`.
    fn source_on(listener: &tokio::net::TcpListener, filters: Vec<String>) -> (Source, Acker) {
        let mut raw =
            crate::config::RawConfig::from_toml(crate::config::DOCUMENTED_CONFIG).unwrap();
        raw.mqtt.host = "127.0.0.1".into();
        raw.mqtt.port = listener.local_addr().unwrap().port();
        let settings = raw.validate().unwrap();
        Source::new(&settings.mqtt, "node", filters, Arc::new(Metrics::new()))
    }

    /// An ack the ingest stage hands over after rumqttc lost the connection (and emptied its
    /// request channel) but before the source counted the loss never reaches the next
    /// connection, where its packet id may be another message's.
    #[tokio::test]
    async fn an_ack_handed_over_as_the_connection_is_lost_never_reaches_the_next_one() {
        use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut source, mut acker) = source_on(&listener, Vec::new());
        // rumqttc loses connection 0 and empties its request channel; the stage acknowledges a
        // message of connection 0; then the source counts the loss.
        source.eventloop.clean();
        acker.ack(Ack {
            pkid: 7,
            qos: QoS::AtLeastOnce,
            connection: 0,
        });
        source.connection_lost();
        // The next connection, to a broker that answers CONNECT and keeps what it is sent.
        let broker = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (mut buf, mut packets) = (bytes::BytesMut::new(), Vec::new());
            let until = tokio::time::Instant::now() + Duration::from_millis(500);
            loop {
                tokio::select! {
                    n = socket.read_buf(&mut buf) => {
                        if n.unwrap_or(0) == 0 {
                            break;
                        }
                        while let Ok(p) = Packet::read(&mut buf, 1 << 20) {
                            if matches!(p, Packet::Connect(_)) {
                                let mut out = bytes::BytesMut::new();
                                ConnAck::new(ConnectReturnCode::Success, true).write(&mut out).unwrap();
                                socket.write_all(&out).await.unwrap();
                            }
                            packets.push(p);
                        }
                    }
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            packets
        });
        let polling = async { while source.eventloop.poll().await.is_ok() {} };
        // Polled until the broker hangs up (or, connected still, for 0.7 s).
        match tokio::time::timeout(Duration::from_millis(700), polling).await {
            Ok(()) | Err(_) => {}
        }
        let packets = broker.await.unwrap();
        assert!(
            matches!(packets.first(), Some(Packet::Connect(_))),
            "{packets:?}"
        );
        assert!(
            !packets.iter().any(|p| matches!(p, Packet::PubAck(_))),
            "an ack of the lost connection was sent on the new one: {packets:?}"
        );
    }

    /// Held bytes over the bound while rumqttc still holds events it read in the same batch:
    /// the source stops reading but still hands over, so it cannot stall (before, neither arm
    /// of its select could fire: no hand-over, no poll, no keep-alive, every stream stopped).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_over_the_bound_with_events_read_still_hands_over() {
        use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, Publish as P};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut source, _acker) = source_on(&listener, vec!["sensors/+/v".into()]);
        source.hold_max_bytes = 1000;
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = bytes::BytesMut::new();
            loop {
                let n = socket.read_buf(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                while let Ok(p) = Packet::read(&mut buf, 1 << 20) {
                    let mut out = bytes::BytesMut::new();
                    match p {
                        Packet::Connect(_) => {
                            ConnAck::new(ConnectReturnCode::Success, false)
                                .write(&mut out)
                                .unwrap();
                        }
                        Packet::Subscribe(_) => {
                            for i in 1..=5u16 {
                                let mut p =
                                    P::new("sensors/a/v", QoS::AtLeastOnce, vec![i as u8; 600]);
                                p.pkid = i;
                                p.write(&mut out).unwrap();
                            }
                        }
                        _ => {}
                    }
                    socket.write_all(&out).await.unwrap();
                }
            }
        });
        let (tx, mut rx) = mpsc::channel(HANDOVER_QUEUE);
        let abort = CancellationToken::new();
        let run = tokio::spawn(source.run(tx, abort.clone()));
        let got = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
        abort.cancel();
        run.await.unwrap();
        let n = got.ok().flatten().map(|b| b.len());
        assert!(
            n.is_some(),
            "nothing handed over in 3 s: the source stalled"
        );
    }
}
