//! The ingest connection: subscribe to stream topics, decode payloads, window them, hand the
//! windows to their model's queue, and acknowledge each message only after that.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, Publish, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Backoff, Role};
use crate::config::{MqttSettings, StreamSettings};
use crate::control::{Budget, ControlMessage, RATE_LIMIT_REPORT_EVERY, RETAINED};
use crate::detect::{Hysteresis, StreamInfo};
use crate::model::Window;
use crate::pipeline::features::Framer;
use crate::pipeline::{DecodeError, RawWindow, WindowSpec, Windower, decode_into};
use crate::telemetry::metrics::{ConnLabel, FailureLabel, Metrics, OutcomeLabel, Reason};

/// Acks waiting for room in the client's request channel are few (bounded by the broker's
/// in-flight window toward us); the channel itself holds this many requests.
const REQUEST_CAPACITY: usize = 1024;

/// Packet ids remembered from the last messages windowed, to recognise the broker's
/// redeliveries after a reconnect. Brokers hand out packet ids in sequence (mosquitto does), so
/// an id comes back for a *new* message only after 65,535 others; this window is far below that
/// and far above the in-flight limit toward a subscriber.
const RECENT_PKIDS: usize = 4096;

/// How long shutdown waits for the last acks to reach the broker.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// A configured stream and the queue of the model that scores it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The stream's settings.
    pub settings: StreamSettings,
    /// Its model's window queue.
    pub windows: mpsc::Sender<Window>,
}

struct StreamEntry {
    route: usize,
    info: Arc<StreamInfo>,
    windower: Windower,
    /// Audio streams: PCM samples to log-mel frames, which are what gets windowed.
    framer: Option<Framer>,
}

/// Allows one log line per interval and counts what it held back.
#[derive(Debug)]
struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last allowed line)` when a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Control commands arriving on `{prefix}/control/<command>`.
struct ControlInput {
    prefix: String,
    /// To the control loop; bounded, and full only if the loop is stuck (then: dropped).
    tx: mpsc::Sender<ControlMessage>,
    budget: Budget,
    /// One published refusal per interval for commands over the budget.
    rate_report: RateLimit,
}

impl ControlInput {
    /// Checks and queues one command; returns the outcome label.
    fn handle(&mut self, command: &str, p: &Publish) -> &'static str {
        let command_name = || command.chars().take(64).collect::<String>();
        let (message, outcome) = if p.retain {
            let refused = ControlMessage::Refused {
                command: command_name(),
                reason: RETAINED.into(),
            };
            (Some(refused), "retained")
        } else if !self.budget.take(Instant::now()) {
            // Over the budget the command is not even parsed; a flood is reported once a minute.
            let report =
                self.rate_report
                    .allow(Instant::now())
                    .map(|held_back| ControlMessage::Refused {
                        command: command_name(),
                        reason: format!(
                            "rate limit: at most {} commands a minute ({held_back} more refused \
                         without a reply since the last one)",
                            self.budget.per_minute()
                        ),
                    });
            if report.is_none() {
                debug!(topic = %p.topic, "Control command over the rate limit; refused.");
            }
            (report, "rate_limited")
        } else {
            let message = crate::control::parse(command, &p.payload);
            let outcome = match message {
                ControlMessage::Command(_) => "accepted",
                ControlMessage::Refused { .. } => "refused",
            };
            (Some(message), outcome)
        };
        if let Some(m) = message
            && self.tx.try_send(m).is_err()
        {
            warn!(topic = %p.topic, "Control queue full; command dropped.");
            return "dropped";
        }
        outcome
    }
}

/// The ingest stage. Build with [`Ingest::new`], run with [`Ingest::run`].
pub struct Ingest {
    client: AsyncClient,
    eventloop: EventLoop,
    routes: Vec<Route>,
    filters: Vec<SubscribeFilter>,
    streams: HashMap<String, StreamEntry>,
    max_streams: usize,
    /// `(index, count)`: only streams whose [`partition_of`](super::topic::partition_of) is
    /// `index` are windowed; the rest are acknowledged and left to the other daemons.
    partition: Option<(u32, u32)>,
    /// Topics known to belong to another daemon's partition (at most `max_streams` kept), so
    /// their messages skip matching and hashing.
    others: HashSet<String>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    pending_acks: VecDeque<Publish>,
    recent: VecDeque<u16>,
    suspects: HashSet<u16>,
    scratch: Vec<f32>,
    frames: Vec<f32>,
    windows: Vec<RawWindow>,
    malformed_log: RateLimit,
    refused_log: RateLimit,
    /// Control commands, when enabled.
    control: Option<ControlInput>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Creates the client (it connects on the first poll in [`Ingest::run`]).
    pub fn new(
        mqtt: &MqttSettings,
        node: &str,
        routes: Vec<Route>,
        max_streams: usize,
        partition: Option<(u32, u32)>,
        metrics: Arc<Metrics>,
        control: Option<(mpsc::Sender<ControlMessage>, u32)>,
    ) -> Self {
        let (client, eventloop) =
            AsyncClient::new(super::options(mqtt, Role::Ingest, node), REQUEST_CAPACITY);
        let mut filters: Vec<SubscribeFilter> = routes
            .iter()
            .map(|r| SubscribeFilter::new(r.settings.topic.as_str().to_owned(), QoS::AtLeastOnce))
            .collect();
        let control = control.map(|(tx, per_minute)| ControlInput {
            prefix: format!("{}/control/", mqtt.prefix),
            tx,
            budget: Budget::new(per_minute, Instant::now()),
            rate_report: RateLimit::new(RATE_LIMIT_REPORT_EVERY),
        });
        if let Some(c) = &control {
            filters.push(SubscribeFilter::new(
                format!("{}+", c.prefix),
                QoS::AtLeastOnce,
            ));
        }
        Self {
            client,
            eventloop,
            routes,
            filters,
            streams: HashMap::new(),
            max_streams,
            partition,
            others: HashSet::new(),
            metrics,
            backoff: Backoff::new(mqtt.reconnect_min, mqtt.reconnect_max),
            pending_acks: VecDeque::new(),
            recent: VecDeque::with_capacity(RECENT_PKIDS),
            suspects: HashSet::new(),
            scratch: Vec::new(),
            frames: Vec::new(),
            windows: Vec::new(),
            malformed_log: RateLimit::new(Duration::from_secs(5)),
            refused_log: RateLimit::new(Duration::from_secs(5)),
            control,
        }
    }

    /// Polls the broker until `token` is cancelled, then sends the last acks and disconnects.
    /// Dropping the stage closes the window queues, which lets the scorers drain.
    pub async fn run(mut self, token: CancellationToken) {
        let conn = ConnLabel {
            connection: Role::Ingest.as_str(),
        };
        loop {
            self.flush_acks();
            let event = tokio::select! {
                biased;
                () = token.cancelled() => break,
                // Cancel-safe: rumqttc keeps partially read packets in its state.
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    info!(
                        mqtt.connection = "ingest",
                        session_present = ack.session_present,
                        "MQTT connected."
                    );
                    self.backoff.connected();
                    self.metrics.set_connected("ingest", true);
                    if !ack.session_present {
                        // A new session: the broker redelivers nothing from the old one.
                        self.suspects.clear();
                    }
                    // Subscribe on every connect: a broker that lost the session (restarted
                    // without persistence, or expired it) has forgotten our subscriptions.
                    if let Err(e) = self.client.try_subscribe_many(self.filters.clone()) {
                        error!(error = %e, "Cannot queue the subscription request.");
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    for (filter, code) in self.filters.iter().zip(&ack.return_codes) {
                        match code {
                            rumqttc::SubscribeReasonCode::Success(qos) => {
                                debug!(topic = %filter.path, qos = ?qos, "Subscribed.");
                            }
                            rumqttc::SubscribeReasonCode::Failure => {
                                self.metrics.subscriptions_refused.inc();
                                error!(topic = %filter.path, "The broker refused the subscription (check its ACL); this stream gets no data.");
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => self.handle(p).await,
                Ok(_) => {}
                Err(e) => {
                    // Acks not yet written are dropped by rumqttc with the connection; the
                    // broker will redeliver those messages (DUP set) if the session survives.
                    self.suspects.extend(self.recent.drain(..));
                    self.metrics.set_connected("ingest", false);
                    self.metrics.reconnects.get_or_create(&conn).inc();
                    let (delay, reason, why) = self.backoff.lost(&e);
                    self.metrics
                        .connect_failures
                        .get_or_create(&FailureLabel {
                            connection: "ingest",
                            reason,
                        })
                        .inc();
                    error!(mqtt.connection = "ingest", reason, error = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost or refused.");
                    tokio::select! {
                        biased;
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.close().await;
    }

    /// One message: route, decode, window, queue the windows (waiting while the queue is
    /// full), then acknowledge.
    async fn handle(&mut self, p: Publish) {
        self.metrics.messages_in.inc();
        if p.dup && self.suspects.remove(&p.pkid) {
            // Windowed on the previous connection; its ack was lost with it.
            self.metrics.redeliveries.inc();
            debug!(topic = %p.topic, pkid = p.pkid, "Redelivered message already windowed; acknowledged.");
            self.ack(p);
            return;
        }
        if let Some(c) = &mut self.control
            && let Some(command) = p.topic.strip_prefix(c.prefix.as_str())
        {
            let outcome = c.handle(command, &p);
            self.metrics
                .control_commands
                .get_or_create(&OutcomeLabel { outcome })
                .inc();
            self.ack(p);
            return;
        }
        if self.ensure_stream(&p.topic) {
            self.window_message(&p);
            let Some(entry) = self.streams.get(p.topic.as_str()) else {
                return;
            };
            let (info, tx) = (entry.info.clone(), self.routes[entry.route].windows.clone());
            for raw in self.windows.drain(..) {
                // Waiting here is the backpressure: the broker holds what we do not read.
                if tx
                    .send(Window {
                        stream: info.clone(),
                        raw,
                    })
                    .await
                    .is_err()
                {
                    // Not acknowledged: the broker redelivers it to the next session.
                    error!(stream = %info.id, "Scorer queue closed; message left unacknowledged.");
                    return;
                }
                self.metrics.windows_queued.inc();
            }
        }
        self.ack(p);
    }

    /// Finds or creates the stream for a topic; `false` when refused (counted and logged).
    fn ensure_stream(&mut self, topic: &str) -> bool {
        if self.streams.contains_key(topic) {
            return true;
        }
        if self.others.contains(topic) {
            self.metrics.messages_other_partition.inc();
            return false;
        }
        let found = self.routes.iter().enumerate().find_map(|(i, r)| {
            r.settings
                .topic
                .captures(topic)
                .map(|cap| (i, super::topic::stream_id(&r.settings.name, &cap)))
        });
        let Some((route, id)) = found else {
            debug!(
                topic,
                "Message on a topic no stream matches; acknowledged and ignored."
            );
            return false;
        };
        if let Some((index, count)) = self.partition
            && super::topic::partition_of(&id, count) != index
        {
            // Another daemon's stream: it receives the same message through its own session.
            self.metrics.messages_other_partition.inc();
            if self.others.len() < self.max_streams {
                self.others.insert(topic.to_owned());
            }
            return false;
        }
        if self.streams.len() >= self.max_streams {
            self.metrics.streams_refused.inc();
            if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                warn!(
                    topic,
                    max_streams = self.max_streams,
                    suppressed,
                    "Stream cap reached; message from a new stream refused."
                );
            }
            return false;
        }
        let s = &self.routes[route].settings;
        let info = Arc::new(StreamInfo {
            id,
            threshold: s.threshold,
            hysteresis: Hysteresis {
                raise_after: s.raise_after,
                clear_after: s.clear_after,
            },
        });
        let spec = WindowSpec {
            window: s.window.get(),
            hop: s.hop.get(),
            channels: s.channels.get(),
        };
        info!(stream = %info.id, topic, "New stream.");
        self.streams.insert(
            topic.to_owned(),
            StreamEntry {
                route,
                info,
                windower: Windower::new(spec),
                // Parameters were checked when the config was validated.
                framer: s.logmel.clone().and_then(|p| Framer::new(p).ok()),
            },
        );
        self.metrics.streams_active.set(self.streams.len() as i64);
        true
    }

    /// Decodes the payload and windows it into `self.windows`; counts and logs malformed ones.
    fn window_message(&mut self, p: &Publish) {
        let Some(entry) = self.streams.get_mut(p.topic.as_str()) else {
            return;
        };
        let s = &self.routes[entry.route].settings;
        let channels = if s.logmel.is_some() {
            1
        } else {
            s.channels.get()
        };
        match decode_into(&s.format, channels, &p.payload, &mut self.scratch) {
            Ok(ts) => {
                let out = &mut self.windows;
                if let Some(framer) = &mut entry.framer {
                    self.frames.clear();
                    framer.push(&self.scratch, &mut self.frames);
                    entry.windower.push(&self.frames, None, |w| out.push(w));
                } else {
                    entry
                        .windower
                        .push(&self.scratch, ts.as_ref(), |w| out.push(w));
                }
            }
            Err(e) => {
                self.metrics.malformed(reason(&e));
                if let Some(suppressed) = self.malformed_log.allow(Instant::now()) {
                    warn!(stream = %entry.info.id, error = %e, bytes = p.payload.len(), suppressed, "Malformed payload refused.");
                }
            }
        }
    }

    fn ack(&mut self, p: Publish) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        if self.recent.len() == RECENT_PKIDS {
            self.recent.pop_front();
        }
        self.recent.push_back(p.pkid);
        // try_ack: this task is the one that drains the request channel, so it must never wait
        // on it. A full channel parks the ack until the next poll iteration.
        if !self.pending_acks.is_empty() || self.client.try_ack(&p).is_err() {
            self.pending_acks.push_back(p);
        }
    }

    fn flush_acks(&mut self) {
        while let Some(p) = self.pending_acks.front() {
            if self.client.try_ack(p).is_err() {
                break;
            }
            self.pending_acks.pop_front();
        }
    }

    /// Sends the remaining acks, then a clean DISCONNECT; messages received after cancellation
    /// are left unacknowledged, so the broker redelivers them next session.
    async fn close(mut self) {
        let deadline = tokio::time::Instant::now() + ACK_FLUSH_TIMEOUT;
        let mut disconnect_sent = false;
        loop {
            self.flush_acks();
            if self.pending_acks.is_empty() && !disconnect_sent {
                disconnect_sent = self.client.try_disconnect().is_ok();
            }
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "Ingest connection closed during shutdown.");
                    break;
                }
                Err(_) => {
                    warn!(
                        acks_unsent = self.pending_acks.len(),
                        "Ingest disconnect timed out; unacknowledged messages will be redelivered."
                    );
                    break;
                }
            }
        }
        self.metrics.set_connected("ingest", false);
        info!(streams = self.streams.len(), "Ingest stopped.");
    }
}

fn reason(e: &DecodeError) -> Reason {
    match e {
        DecodeError::Json(_) => Reason::Json,
        DecodeError::NotFinite { .. } => Reason::NotFinite,
        DecodeError::WrongLength { .. } => Reason::Length,
        DecodeError::Field { .. } => Reason::Field,
        DecodeError::Empty => Reason::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let mut r = RateLimit::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(6)), Some(2));
    }
}
