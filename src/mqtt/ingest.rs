//! The ingest connection: subscribe to stream topics, decode payloads, window them, hand the
//! windows to their model's queue, and acknowledge each message only after that.
//!
//! With the journal on (the default), a stream message is also appended to the journal, and
//! acknowledged only once the journal is synced (group commit: when no other message is ready
//! to read). A restart after a crash replays the journal records that the last checkpoint has
//! not judged yet, so windows queued but not judged, and each stream's incomplete window, are
//! rebuilt with their numbers; see [`crate::durable::journal`] and [`crate::durable::checkpoint`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, Publish, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Backoff, Role};
use crate::alerting::Resumed;
use crate::config::{JournalSettings, MqttSettings, StreamSettings};
use crate::control::{Budget, ControlMessage, RATE_LIMIT_REPORT_EVERY, RETAINED};
use crate::detect::{Hysteresis, StreamInfo};
use crate::durable::checkpoint::{self, Progress, Saved};
use crate::durable::journal::{Journal, Record};
use crate::model::Window;
use crate::pipeline::features::Framer;
use crate::pipeline::{DecodeError, RawWindow, WindowSpec, Windower, decode_into};
use crate::telemetry::metrics::{ConnLabel, FailureLabel, Metrics, OutcomeLabel, Reason};
use serde_json::Value;

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

/// Journaled messages waiting for a sync before their acks go out; at this many the journal is
/// synced even if more messages are ready to read.
const MAX_UNSYNCED: usize = 1024;

/// Group commit: the journal is synced once this many messages wait and no other is ready to
/// read, or once the oldest has waited `SYNC_LINGER`. Below mosquitto's default in-flight
/// window toward a subscriber (20), so a broker left at its defaults never stalls on our acks.
const SYNC_WHEN_IDLE: usize = 16;

/// The longest a journaled message waits for its sync (and its ack). Its windows are queued at
/// once: only the ack waits, never scoring.
const SYNC_LINGER: Duration = Duration::from_millis(2);

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
    spec: WindowSpec,
    windower: Windower,
    /// Audio streams: PCM samples to log-mel frames, which are what gets windowed.
    framer: Option<Framer>,
    logmel: Option<crate::pipeline::features::LogMelParams>,
    /// Input samples (PCM samples for audio) from one window's start to the next one's.
    unit: u64,
    /// Input samples received so far: where the next message of the stream starts.
    received: u64,
    /// Input samples fed to the windower (or skipped as already judged) so far.
    fed: u64,
}

/// What one message did to its stream, as [`StreamEntry::feed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    /// Samples windowed (some may have been skipped as judged before a restart).
    Windowed,
    /// Every sample was judged before (a replayed record the checkpoint already covers).
    Covered,
    /// Samples were missing before this message; windowing went on at the next window
    /// boundary after the gap, whose length in input samples is given.
    Gap(u64),
}

/// A message windowed by [`Ingest::window_payload`]: what it did, and where it sits in its
/// stream (input samples `start .. start + samples`).
#[derive(Debug, Clone, Copy)]
struct Windowed {
    fed: Fed,
    start: u64,
    samples: u64,
}

impl StreamEntry {
    /// Carries on at window `seq`: the next input sample fed is `seq * unit`.
    fn restart_at(&mut self, seq: u64) {
        self.windower = Windower::resume(self.spec, seq);
        self.framer = self.logmel.clone().and_then(|p| Framer::new(p).ok());
        self.fed = seq.saturating_mul(self.unit);
    }

    /// Feeds the input samples `start ..` of one message (`values`, interleaved by `channels`),
    /// skipping those fed before; windows completed go to `out`.
    fn feed(
        &mut self,
        start: u64,
        values: &[f32],
        channels: usize,
        timestamp: Option<&Value>,
        frames: &mut Vec<f32>,
        out: &mut Vec<RawWindow>,
    ) -> Fed {
        let end = start + (values.len() / channels) as u64;
        let mut outcome = Fed::Windowed;
        if start > self.fed {
            outcome = Fed::Gap(start - self.fed);
            self.restart_at(start.div_ceil(self.unit));
        }
        if end <= self.fed {
            return if outcome == Fed::Windowed {
                Fed::Covered
            } else {
                outcome
            };
        }
        let values = &values[(self.fed - start) as usize * channels..];
        if let Some(framer) = &mut self.framer {
            frames.clear();
            framer.push(values, frames);
            self.windower.push(frames, None, |w| out.push(w));
        } else {
            self.windower.push(values, timestamp, |w| out.push(w));
        }
        self.fed = end;
        outcome
    }
}

/// The journal, the checkpoint and the messages waiting for a sync. Owned by the ingest
/// stage, then handed back by [`Ingest::run`] for the last checkpoint.
pub struct Durable {
    journal: Journal,
    dir: std::path::PathBuf,
    progress: Progress,
    /// The last checkpoint written (or read at start-up), by stream id.
    saved: HashMap<String, Saved>,
    /// Packet ids of the last messages journaled (at most `RECENT_PKIDS`).
    pkids: VecDeque<u16>,
    /// Records found at start-up, replayed before the first message is read.
    replay: Vec<Record>,
    /// Journaled messages whose acks wait for the next sync.
    unsynced: Vec<Publish>,
    /// When the oldest of them arrived.
    unsynced_since: Option<tokio::time::Instant>,
    max_bytes: u64,
    every: Duration,
    full_log: RateLimit,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("dir", &self.dir)
            .field("unsynced", &self.unsynced.len())
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Opens the journal and reads the checkpoint in `settings.dir`; `progress` is seeded with
    /// the checkpoint. A checkpoint that cannot be read is logged and ignored (every stream
    /// then starts from its first journaled record).
    ///
    /// # Errors
    /// [`crate::durable::journal::JournalError`] when the journal cannot be opened.
    pub fn open(
        settings: &JournalSettings,
        progress: Progress,
    ) -> Result<Self, crate::durable::journal::JournalError> {
        let (journal, replay) = Journal::open(&settings.dir, settings.segment_bytes)?;
        let found = checkpoint::load(&settings.dir).unwrap_or_else(|e| {
            error!(error = %e, "Cannot read the ingest checkpoint; replaying the journal from its start.");
            checkpoint::Checkpoint::default()
        });
        let saved = found.streams;
        progress.seed(&saved);
        let mut pkids: VecDeque<u16> = found.pkids.into();
        pkids.extend(replay.iter().map(|r| r.pkid));
        while pkids.len() > RECENT_PKIDS {
            pkids.pop_front();
        }
        if !replay.is_empty() {
            info!(
                records = replay.len(),
                streams = saved.len(),
                "Journal found; replaying what the last run did not judge."
            );
        }
        Ok(Self {
            journal,
            dir: settings.dir.clone(),
            progress,
            saved,
            pkids,
            replay,
            unsynced: Vec::new(),
            unsynced_since: None,
            max_bytes: settings.max_bytes,
            every: settings.checkpoint,
            full_log: RateLimit::new(Duration::from_secs(10)),
        })
    }

    /// Where the alerting stage carries on: each stream's detector as the last checkpoint
    /// saved it, and, from `last_alerts` (the outbox's last alerted window per stream), the
    /// alerts that windows judged again would repeat. Those are all the stream's stored alerts
    /// at or after its checkpoint, or all of them when the last run left a journal but no
    /// checkpoint of the stream; none when it left nothing (a fresh journal: numbering starts
    /// over, and old alerts must not silence new ones).
    pub fn resumed(&self, last_alerts: &std::collections::BTreeMap<String, u64>) -> Resumed {
        let found = !self.saved.is_empty() || !self.replay.is_empty();
        Resumed {
            detectors: self
                .saved
                .iter()
                .map(|(id, s)| (id.clone(), s.judged.detector))
                .collect(),
            alerted_through: last_alerts
                .iter()
                .filter(|(stream, seq)| {
                    self.saved
                        .get(*stream)
                        .map_or(found, |s| **seq >= s.judged.next_seq)
                })
                .map(|(stream, seq)| (stream.clone(), *seq))
                .collect(),
        }
    }

    /// Holds a journaled message's ack until the next sync.
    fn hold(&mut self, p: Publish) {
        if self.unsynced.is_empty() {
            self.unsynced_since = Some(tokio::time::Instant::now());
        }
        self.unsynced.push(p);
    }

    /// Syncs the journal; `false` when it failed (logged and counted; the acks then go out
    /// anyway: scoring goes on, only crash safety is lost for these messages).
    fn sync(&mut self, metrics: &Metrics) -> bool {
        self.unsynced_since = None;
        if self.journal.unsynced() {
            metrics.journal_syncs.inc();
        }
        match self.journal.sync() {
            Ok(()) => true,
            Err(e) => {
                metrics.journal_errors.inc();
                error!(error = %e, "Cannot sync the ingest journal.");
                false
            }
        }
    }

    /// Saves a checkpoint of `streams` (by topic) and the judging progress, then retires the
    /// journal segments it no longer needs. Call after [`Durable::sync`].
    fn checkpoint(&mut self, streams: &HashMap<String, StreamEntry>, metrics: &Metrics) {
        let judged = self.progress.snapshot();
        let mut saved = self.saved.clone();
        for e in streams.values() {
            let entry = saved.entry(e.info.id.clone()).or_insert(Saved {
                judged: checkpoint::Judged::default(),
                samples: 0,
            });
            entry.samples = e.received;
            if let Some(j) = judged.get(&e.info.id) {
                entry.judged = *j;
            }
        }
        if saved == self.saved && self.journal.segments() < 2 {
            return;
        }
        let file = checkpoint::Checkpoint {
            streams: saved,
            pkids: self.pkids.iter().copied().collect(),
        };
        if let Err(e) = checkpoint::save(&self.dir, &file) {
            metrics.journal_errors.inc();
            error!(error = %e, "Cannot save the ingest checkpoint; the journal keeps its records.");
            return;
        }
        self.saved = file.streams;
        let saved = &self.saved;
        let needed = |r: &Record| {
            streams.get(&r.topic).is_some_and(|e| {
                let from = saved
                    .get(&e.info.id)
                    .map_or(0, |s| s.judged.next_seq.saturating_mul(e.unit));
                r.end() > from
            })
        };
        // The segments before the current one, counted first: records carried forward land in
        // the current segment (or one it rotates to), which must not be retired in this pass.
        for _ in 1..self.journal.segments() {
            match self.journal.retire_oldest(needed) {
                Ok(Some(carried)) => debug!(carried, "Journal segment retired."),
                Ok(None) => break,
                Err(e) => {
                    metrics.journal_errors.inc();
                    error!(error = %e, "Cannot retire a journal segment.");
                    break;
                }
            }
        }
        metrics.journal_bytes.set(self.journal.bytes() as i64);
    }
}

/// What the ingest stage hands back when it stops: the journal, for a last checkpoint once the
/// windows still queued have been judged.
pub struct Leftover {
    durable: Durable,
    streams: HashMap<String, StreamEntry>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leftover")
            .field("durable", &self.durable)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Leftover {
    /// Writes the last checkpoint (after the drain: every window judged is in it), so the
    /// next start replays only incomplete windows.
    pub fn checkpoint(mut self) {
        if self.durable.sync(&self.metrics) {
            self.durable.checkpoint(&self.streams, &self.metrics);
        }
    }
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
    /// `(index, count)`: only streams whose [`partition_of`](crate::pipeline::topic::partition_of) is
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
    /// The journal, when on.
    durable: Option<Durable>,
    gap_log: RateLimit,
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
            durable: None,
            gap_log: RateLimit::new(Duration::from_secs(5)),
        }
    }

    /// Journals every stream message before acknowledging it (see the module docs).
    #[must_use]
    pub fn journaled(mut self, durable: Durable) -> Self {
        // Messages the last run journaled come again, flagged DUP, if their acks were lost.
        self.suspects.extend(durable.pkids.iter().copied());
        self.durable = Some(durable);
        self
    }

    /// Replays the journal, then polls the broker until `token` is cancelled, then sends the
    /// last acks and disconnects. Dropping the stage closes the window queues, which lets the
    /// scorers drain; the journal comes back for the last checkpoint.
    pub async fn run(mut self, token: CancellationToken) -> Option<Leftover> {
        let conn = ConnLabel {
            connection: Role::Ingest.as_str(),
        };
        self.replay().await;
        let every = self.durable.as_ref().map(|d| d.every);
        let mut next_checkpoint = tokio::time::Instant::now();
        loop {
            self.flush_acks();
            if let Some(every) = every
                && tokio::time::Instant::now() >= next_checkpoint
            {
                // Checked here, not only in the select below: under a steady flood the poll
                // arm is always ready first.
                self.checkpoint();
                next_checkpoint = tokio::time::Instant::now() + every;
            }
            let (mut unsynced, sync_by) = self.durable.as_ref().map_or((0, None), |d| {
                (d.unsynced.len(), d.unsynced_since.map(|t| t + SYNC_LINGER))
            });
            if unsynced >= MAX_UNSYNCED || sync_by.is_some_and(|t| tokio::time::Instant::now() >= t)
            {
                self.sync_and_ack();
                unsynced = 0;
            }
            if self.journal_full() {
                // Safety bound: stop reading (the broker keeps the messages) until a
                // checkpoint retires records.
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    () = tokio::time::sleep_until(next_checkpoint) => {}
                }
                continue;
            }
            let event = tokio::select! {
                biased;
                () = token.cancelled() => break,
                // Cancel-safe: rumqttc keeps partially read packets in its state.
                ev = self.eventloop.poll() => ev,
                // Nothing ready to read and enough messages waiting: the moment to sync the
                // journal and send their acks (group commit); else at the linger deadline.
                () = std::future::ready(()), if unsynced >= SYNC_WHEN_IDLE => {
                    self.sync_and_ack();
                    continue;
                }
                () = sleep_until_some(sync_by), if unsynced > 0 => {
                    self.sync_and_ack();
                    continue;
                }
                () = tokio::time::sleep_until(next_checkpoint), if every.is_some() => continue,
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
                    if let Some(d) = &mut self.durable {
                        // Their packet ids belong to the lost connection; the broker sends
                        // these messages again (DUP), and those are acknowledged instead.
                        d.unsynced.clear();
                        d.unsynced_since = None;
                    }
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
        self.close().await
    }

    /// Feeds the journal's records (of the last run) through windowing again, before the first
    /// message is read. The broker sends one of their messages again only if its ack was lost
    /// (DUP set), and then its packet id is among the suspects: acknowledged, not windowed.
    async fn replay(&mut self) {
        let Some(d) = &mut self.durable else { return };
        let records = std::mem::take(&mut d.replay);
        if records.is_empty() {
            return;
        }
        let mut replayed = 0u64;
        for r in records {
            if !self.ensure_stream(&r.topic) {
                continue;
            }
            match self.window_payload(&r.topic, &r.payload, Some(r.start)) {
                Some(w) if w.fed != Fed::Covered => {}
                _ => continue,
            }
            if !self.queue_windows(&r.topic).await {
                return;
            }
            replayed += 1;
        }
        self.metrics.journal_replayed.inc_by(replayed);
        info!(messages = replayed, "Journal replayed.");
    }

    /// Syncs the journal, then acknowledges the messages it now holds.
    fn sync_and_ack(&mut self) {
        let Some(d) = &mut self.durable else { return };
        d.sync(&self.metrics);
        for p in std::mem::take(&mut d.unsynced) {
            self.ack(p);
        }
    }

    /// Syncs and acknowledges, then saves a checkpoint and retires journal segments.
    fn checkpoint(&mut self) {
        self.sync_and_ack();
        if let Some(d) = &mut self.durable {
            d.checkpoint(&self.streams, &self.metrics);
        }
    }

    /// Whether the journal is over its bound (logged, rate-limited).
    fn journal_full(&mut self) -> bool {
        let Some(d) = &mut self.durable else {
            return false;
        };
        let bytes = d.journal.bytes();
        if bytes <= d.max_bytes {
            return false;
        }
        if let Some(suppressed) = d.full_log.allow(Instant::now()) {
            warn!(
                bytes,
                max_bytes = d.max_bytes,
                suppressed,
                "Ingest journal over its bound; reading paused until windows are judged."
            );
        }
        true
    }

    /// One message: route, decode, window, queue the windows (waiting while the queue is
    /// full), then acknowledge.
    async fn handle(&mut self, p: Publish) {
        self.metrics.messages_in.inc();
        if p.dup && self.suspects.remove(&p.pkid) {
            // Windowed on the previous connection (or journaled by the last run); its ack was
            // lost with it. Acknowledged after the next journal sync, like any journaled one.
            self.metrics.redeliveries.inc();
            debug!(topic = %p.topic, pkid = p.pkid, "Redelivered message already windowed; acknowledged.");
            match &mut self.durable {
                Some(d) => d.hold(p),
                None => self.ack(p),
            }
            return;
        }
        if p.qos != QoS::AtMostOnce {
            if self.recent.len() == RECENT_PKIDS {
                self.recent.pop_front();
            }
            self.recent.push_back(p.pkid);
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
            // Journaled before its windows are queued: if queueing fails (shutting down), the
            // message is not acknowledged, and the next start replays it from the journal.
            let journaled = match self.window_payload(&p.topic, &p.payload, None) {
                Some(w) => self.journal(&p, w.start, w.samples),
                None => false,
            };
            if !self.queue_windows(&p.topic).await {
                return;
            }
            if journaled && let Some(d) = &mut self.durable {
                d.hold(p);
                return;
            }
        }
        self.ack(p);
    }

    /// Appends a windowed message to the journal; `false` when there is none or the append
    /// failed (counted and logged; the message is then acknowledged without it: scoring goes
    /// on, only crash safety is lost for it).
    fn journal(&mut self, p: &Publish, start: u64, samples: u64) -> bool {
        let Some(d) = &mut self.durable else {
            return false;
        };
        match d
            .journal
            .append(p.pkid, &p.topic, start, samples, &p.payload)
        {
            Ok(_) => {
                if d.pkids.len() == RECENT_PKIDS {
                    d.pkids.pop_front();
                }
                d.pkids.push_back(p.pkid);
                true
            }
            Err(e) => {
                self.metrics.journal_errors.inc();
                if let Some(suppressed) = self.malformed_log.allow(Instant::now()) {
                    error!(error = %e, suppressed, "Cannot journal a message; acknowledged without it.");
                }
                false
            }
        }
    }

    /// Sends the windows cut from the last message to its stream's model queue, waiting while
    /// the queue is full (the backpressure: the broker holds what we do not read). `false`
    /// when the queue has closed (shutting down).
    async fn queue_windows(&mut self, topic: &str) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let Some(entry) = self.streams.get(topic) else {
            self.windows.clear();
            return true;
        };
        let (info, tx) = (entry.info.clone(), self.routes[entry.route].windows.clone());
        for raw in self.windows.drain(..) {
            if tx
                .send(Window {
                    stream: info.clone(),
                    raw,
                })
                .await
                .is_err()
            {
                error!(stream = %info.id, "Scorer queue closed; message left unacknowledged.");
                return false;
            }
            self.metrics.windows_queued.inc();
        }
        true
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
                .map(|cap| (i, crate::pipeline::topic::stream_id(&r.settings.name, &cap)))
        });
        let Some((route, id)) = found else {
            debug!(
                topic,
                "Message on a topic no stream matches; acknowledged and ignored."
            );
            return false;
        };
        if let Some((index, count)) = self.partition
            && crate::pipeline::topic::partition_of(&id, count) != index
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
        let unit = spec.hop as u64 * s.logmel.as_ref().map_or(1, |p| p.hop as u64);
        let saved = self
            .durable
            .as_ref()
            .and_then(|d| d.saved.get(&info.id).copied());
        let mut entry = StreamEntry {
            route,
            info,
            spec,
            windower: Windower::new(spec),
            // Parameters were checked when the config was validated.
            framer: s.logmel.clone().and_then(|p| Framer::new(p).ok()),
            logmel: s.logmel.clone(),
            unit,
            received: 0,
            fed: 0,
        };
        if let Some(saved) = saved {
            // Carry on where the last run's checkpoint left the stream.
            entry.restart_at(saved.judged.next_seq);
            entry.received = saved.samples;
            info!(stream = %entry.info.id, topic, next_seq = saved.judged.next_seq, "Stream resumed from the checkpoint.");
        } else {
            info!(stream = %entry.info.id, topic, "New stream.");
        }
        self.streams.insert(topic.to_owned(), entry);
        self.metrics.streams_active.set(self.streams.len() as i64);
        true
    }

    /// Decodes a payload of the stream on `topic` and windows it into `self.windows`; counts
    /// and logs malformed ones (`None`). A live message starts where the stream's last one
    /// ended; a replayed record says where it starts (`start`).
    fn window_payload(
        &mut self,
        topic: &str,
        payload: &[u8],
        start: Option<u64>,
    ) -> Option<Windowed> {
        let entry = self.streams.get_mut(topic)?;
        let s = &self.routes[entry.route].settings;
        let channels = if s.logmel.is_some() {
            1
        } else {
            s.channels.get()
        };
        match decode_into(&s.format, channels, payload, &mut self.scratch) {
            Ok(ts) => {
                let start = start.unwrap_or(entry.received);
                let n = (self.scratch.len() / channels) as u64;
                entry.received = entry.received.max(start + n);
                let fed = entry.feed(
                    start,
                    &self.scratch,
                    channels,
                    ts.as_ref(),
                    &mut self.frames,
                    &mut self.windows,
                );
                if let Fed::Gap(missing) = fed {
                    self.metrics.stream_gaps.inc();
                    if let Some(suppressed) = self.gap_log.allow(Instant::now()) {
                        warn!(stream = %entry.info.id, missing_samples = missing, next_seq = entry.windower.next_seq(), suppressed, "Samples missing after a restart; windowing goes on at the next window boundary.");
                    }
                }
                Some(Windowed {
                    fed,
                    start,
                    samples: n,
                })
            }
            Err(e) => {
                self.metrics.malformed(reason(&e));
                if let Some(suppressed) = self.malformed_log.allow(Instant::now()) {
                    warn!(stream = %entry.info.id, error = %e, bytes = payload.len(), suppressed, "Malformed payload refused.");
                }
                None
            }
        }
    }

    fn ack(&mut self, p: Publish) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
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
    async fn close(mut self) -> Option<Leftover> {
        self.sync_and_ack();
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
        let streams = std::mem::take(&mut self.streams);
        self.durable.take().map(|durable| Leftover {
            durable,
            streams,
            metrics: self.metrics.clone(),
        })
    }
}

/// Sleeps until `t`; never wakes without one (a disabled select arm).
async fn sleep_until_some(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
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

    fn entry(window: usize, hop: usize) -> StreamEntry {
        let spec = WindowSpec {
            window,
            hop,
            channels: 1,
        };
        StreamEntry {
            route: 0,
            info: Arc::new(StreamInfo {
                id: "s/a".into(),
                threshold: None,
                hysteresis: Hysteresis {
                    raise_after: 1,
                    clear_after: 1,
                },
            }),
            spec,
            windower: Windower::new(spec),
            framer: None,
            logmel: None,
            unit: hop as u64,
            received: 0,
            fed: 0,
        }
    }

    fn feed(e: &mut StreamEntry, start: u64, values: &[f32]) -> (Fed, Vec<(u64, Vec<f32>)>) {
        let mut out = Vec::new();
        let fed = e.feed(start, values, 1, None, &mut Vec::new(), &mut out);
        (fed, out.into_iter().map(|w| (w.seq, w.data)).collect())
    }

    #[test]
    fn a_resumed_stream_skips_what_was_judged_and_rebuilds_the_open_window() {
        // Window 4, hop 2; the checkpoint says windows 0 and 1 were judged: window 2 starts at
        // sample 4. The journal replays messages of 3 samples from sample 3.
        let mut e = entry(4, 2);
        e.restart_at(2);
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (fed, w) = feed(&mut e, 0, &x[0..3]);
        assert_eq!((fed, w.len()), (Fed::Covered, 0));
        let (fed, w) = feed(&mut e, 3, &x[3..6]);
        assert_eq!((fed, w), (Fed::Windowed, vec![]));
        let (_, w) = feed(&mut e, 6, &x[6..9]);
        assert_eq!(w, vec![(2, vec![4., 5., 6., 7.])]);
        // A copy of a record already fed (a retired segment carried forward twice) is ignored.
        assert_eq!(feed(&mut e, 6, &x[6..9]).0, Fed::Covered);
        let (_, w) = feed(&mut e, 9, &x[9..12]);
        assert_eq!(
            w,
            vec![(3, vec![6., 7., 8., 9.]), (4, vec![8., 9., 10., 11.])]
        );
    }

    #[test]
    fn missing_samples_restart_windowing_at_the_next_boundary() {
        let mut e = entry(4, 4);
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert_eq!(feed(&mut e, 0, &x[0..2]).1, vec![]);
        // Samples 2..6 never arrive: window 0 is lost, window 1 (samples 4..8) too (its first
        // samples are missing); windowing goes on with window 2 at sample 8.
        let (fed, w) = feed(&mut e, 6, &x[6..12]);
        assert_eq!(fed, Fed::Gap(4));
        assert_eq!(w, vec![(2, vec![8., 9., 10., 11.])]);
    }

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
