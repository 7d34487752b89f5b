//! The ingest stage: messages from the MQTT source are routed to their stream, decoded and
//! windowed ([`streams`]), appended to the journal ([`log`]), and their windows queued for
//! their model's scorer; each message is acknowledged only after that.
//!
//! ```text
//! mqtt::Source --Delivery--> Ingest::handle --> StreamTable (route, decode, window)
//!                                          --> IngestLog (journal; group commit)
//!                                          --> window queue of the stream's model
//!                                          --> Acker (after the journal sync)
//! ```
//! Waiting on a full window queue is the backpressure: the stage stops taking messages, the
//! source holds what the broker has sent (bounded by its in-flight window) and keeps polling,
//! and the broker holds the rest. The connection never depends on this stage's pace.
//!
//! With the journal on (the default), a stream message is acknowledged only once the journal
//! is synced (group commit: when no other message is ready, after 2 ms, or at 1,024 waiting).
//! A restart after a crash replays the journal records that the last checkpoint has not judged
//! yet, so windows queued but not judged, and each stream's incomplete window, are rebuilt
//! with their numbers.

mod control;
pub mod log;
mod news;
pub mod streams;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use self::control::ControlInput;
use self::log::IngestLog;
use self::streams::{Fed, Routed, StreamError, StreamTable};
use crate::alerting::StreamNews;
use crate::config::{Settings, Staleness};
use crate::control::ControlMessage;
use crate::detect::Transition;
use crate::durable::checkpoint::Progress;
use crate::model::Window;
use crate::mqtt::source::{Ack, Acker, Delivery};
use crate::pipeline::DecodeError;
use crate::telemetry::health::Pulse;
use crate::telemetry::metrics::{OutcomeLabel, Reason};
use crate::telemetry::{Metrics, RateLimit};

/// Journaled messages waiting for a sync before their acks go out; at this many the journal is
/// synced even if more messages are ready.
const MAX_UNSYNCED: usize = 1024;

/// Group commit: the journal is synced once this many messages wait and no other is ready, or
/// once the oldest has waited `SYNC_LINGER`. Below mosquitto's default in-flight window toward
/// a subscriber (20), so a broker left at its defaults never stalls on our acks.
const SYNC_WHEN_IDLE: usize = 16;

/// The longest a journaled message waits for its sync (and its ack). Its windows are queued at
/// once: only the ack waits, never scoring.
const SYNC_LINGER: Duration = Duration::from_millis(2);

/// How long shutdown waits for the DISCONNECT to fit in the request channel.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often quiet streams are looked for, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Stream news waiting for the alerting stage, at most; past it the oldest is dropped, logged
/// (the alerting stage would have been stalled for that many streams' news).
const MAX_UNSENT: usize = 4_096;

/// The ingest stage. Build with [`Ingest::new`], run with [`Ingest::run`].
pub struct Ingest {
    table: StreamTable,
    /// The window queue of each route's model, by route.
    queues: Vec<mpsc::Sender<Window>>,
    acker: Acker,
    /// The journal, when on.
    log: Option<IngestLog>,
    /// Acks of journaled messages waiting for the next sync, and when the oldest arrived.
    unsynced: Vec<Ack>,
    unsynced_since: Option<tokio::time::Instant>,
    control: Option<ControlInput>,
    metrics: Arc<Metrics>,
    max_payload: usize,
    /// Streams quiet this long are dropped from the table.
    idle: Option<Duration>,
    /// The alerting stage's news queue (streams forgotten, gone stale, back), and the judging
    /// progress, which forgets a stream here (the checkpoint's owner).
    news: Option<(mpsc::Sender<StreamNews>, Progress)>,
    /// News the alerting stage had no room for yet, oldest first: sent before any newer,
    /// retried at every message and sweep. Bounded by [`MAX_UNSENT`].
    unsent: VecDeque<StreamNews>,
    /// When a silent stream is stale.
    stale: Option<Staleness>,
    /// Streams whose stale alert an earlier run raised and nobody cleared: cleared when they
    /// are heard from.
    stale_open: HashSet<String>,
    /// Streams an earlier run alerted on, each with whether its window alert is still raised:
    /// after the replay, those this run does not carry on are told to the alerting stage.
    alerted_before: Vec<(String, bool)>,
    /// When the streams the last run's checkpoint knew and this run has not seen are dropped
    /// from the checkpoint (once: afterwards it only holds streams of the table).
    prune_saved_at: Option<Instant>,
    malformed_log: RateLimit,
    refused_log: RateLimit,
    gap_log: RateLimit,
    /// Beaten as messages are handled (the watchdog's progress check).
    pulse: Arc<Pulse>,
    /// `partition.prefixes`, each with its '/'.
    partition_prefixes: Vec<String>,
}

/// How much of `topic` is the prefix of one of `prefixes` (each ending in '/'): 0 for none.
fn partition_prefix_len(prefixes: &[String], topic: &str) -> usize {
    prefixes
        .iter()
        .find(|p| topic.starts_with(p.as_str()))
        .map_or(0, String::len)
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("streams", &self.table.len())
            .finish_non_exhaustive()
    }
}

/// The topic filters ingest subscribes to: every stream's (under each of
/// `partition.prefixes` when the broker cluster partitions them), and the control topics when
/// `control` is set.
pub fn filters(settings: &Settings) -> Vec<String> {
    let streams = settings.streams.iter().map(|s| s.topic.as_str());
    let mut f: Vec<String> = if settings.partition_prefixes.is_empty() {
        streams.map(str::to_owned).collect()
    } else {
        streams
            .flat_map(|t| {
                settings
                    .partition_prefixes
                    .iter()
                    .map(move |p| format!("{p}/{t}"))
            })
            .collect()
    };
    if settings.control {
        f.push(format!(
            "{}+",
            crate::control::topic_prefix(&settings.mqtt.prefix)
        ));
    }
    f
}

impl Ingest {
    /// A stage for the configured streams whose models have a queue in `queues`, acknowledging
    /// through `acker`; control commands go to `control` when enabled.
    pub fn new(
        settings: &Settings,
        queues: HashMap<String, mpsc::Sender<Window>>,
        acker: Acker,
        metrics: Arc<Metrics>,
        control: Option<mpsc::Sender<ControlMessage>>,
    ) -> Self {
        let (routes, queues): (Vec<_>, Vec<_>) = settings
            .streams
            .iter()
            .filter_map(|s| Some((s.clone(), queues.get(&s.model)?.clone())))
            .unzip();
        Self {
            table: StreamTable::new(routes, settings.max_streams, settings.partition),
            partition_prefixes: settings
                .partition_prefixes
                .iter()
                .map(|p| format!("{p}/"))
                .collect(),
            queues,
            acker,
            log: None,
            unsynced: Vec::new(),
            unsynced_since: None,
            control: control.filter(|_| settings.control).map(|tx| {
                ControlInput::new(&settings.mqtt.prefix, tx, settings.control_per_minute)
            }),
            metrics,
            max_payload: settings.mqtt.max_packet_bytes,
            idle: settings.stream_idle,
            news: None,
            unsent: VecDeque::new(),
            stale: settings.stale,
            stale_open: HashSet::new(),
            alerted_before: Vec::new(),
            prune_saved_at: settings.stream_idle.map(|idle| Instant::now() + idle),
            malformed_log: RateLimit::new(Duration::from_secs(5)),
            refused_log: RateLimit::new(Duration::from_secs(5)),
            gap_log: RateLimit::new(Duration::from_secs(5)),
            pulse: Arc::default(),
        }
    }

    /// Beats `pulse` as messages are handled (see [`crate::telemetry::health`]).
    #[must_use]
    pub fn beating(mut self, pulse: Arc<Pulse>) -> Self {
        self.pulse = pulse;
        self
    }

    /// Journals every stream message before acknowledging it (see the module docs).
    #[must_use]
    pub fn journaled(mut self, mut log: IngestLog) -> Self {
        log.prefixes.clone_from(&self.partition_prefixes);
        self.log = Some(log);
        self
    }

    /// Forgets every stream dropped after going quiet in `progress`, and tells `news` (the
    /// alerting stage) of it, and of streams that go stale or come back.
    #[must_use]
    pub fn telling(mut self, news: mpsc::Sender<StreamNews>, progress: Progress) -> Self {
        self.news = Some((news, progress));
        self
    }

    /// The streams whose stale alert an earlier run raised and did not clear (the outbox
    /// knows): each is cleared when it is heard from again.
    #[must_use]
    pub fn stale_before(mut self, streams: impl IntoIterator<Item = String>) -> Self {
        self.stale_open = streams.into_iter().collect();
        self
    }

    /// The streams an earlier run alerted on, each with whether its window alert is still
    /// raised (the outbox knows): after the replay, each that neither the checkpoint nor the
    /// journal carries on is told to the alerting stage ([`StreamNews::Orphaned`]), which
    /// clears a raise and forgets its window numbers.
    #[must_use]
    pub fn alerted_before(mut self, streams: Vec<(String, bool)>) -> Self {
        self.alerted_before = streams;
        self
    }

    /// Replays the journal, then handles deliveries until `token` is cancelled or the source
    /// stops, then sends the last acks and the DISCONNECT. Dropping the stage closes the window
    /// queues, which lets the scorers drain; the journal comes back for the last checkpoint.
    pub async fn run(
        mut self,
        mut deliveries: mpsc::Receiver<Vec<Delivery>>,
        token: CancellationToken,
    ) -> Option<Leftover> {
        self.finish_forgetting().await;
        self.replay().await;
        self.tell_orphans().await;
        let every = self.log.as_ref().map(|d| d.every);
        let mut next_checkpoint = tokio::time::Instant::now();
        let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
        loop {
            self.acker.flush();
            if !self.unsent.is_empty() {
                self.send_news();
            }
            let now = tokio::time::Instant::now();
            if let Some(every) = every
                && now >= next_checkpoint
            {
                // Checked here, not only in the select below: under a steady flood the
                // delivery arm is always ready first.
                self.checkpoint();
                next_checkpoint = tokio::time::Instant::now() + every;
            }
            let sweeps = self.idle.is_some() || self.stale.is_some();
            if sweeps && now >= next_sweep {
                self.sweep();
                next_sweep = now + SWEEP_EVERY;
            }
            let (mut unsynced, sync_by) = (
                self.unsynced.len(),
                self.unsynced_since.map(|t| t + SYNC_LINGER),
            );
            if unsynced >= MAX_UNSYNCED || sync_by.is_some_and(|t| now >= t) {
                self.sync_and_ack();
                unsynced = 0;
            }
            if let Some(log) = self.log.as_mut()
                && log.full(&self.table)
            {
                // Safety bound: stop taking messages (the source and the broker keep them)
                // until a checkpoint retires records. Ingest holds nothing meanwhile: it waits
                // on the judging, whose stages have pulses of their own, so a slow drain is
                // not taken for a stall of ingest.
                self.pulse.idle();
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    () = tokio::time::sleep_until(next_checkpoint) => {}
                }
                continue;
            }
            self.pulse.idle();
            let batch = tokio::select! {
                biased;
                () = token.cancelled() => break,
                d = deliveries.recv() => match d {
                    Some(d) => d,
                    None => {
                        error!("The ingest connection stopped; ingest stops.");
                        break;
                    }
                },
                // Nothing ready and enough messages waiting: the moment to sync the journal and
                // send their acks (group commit); else at the linger deadline.
                () = std::future::ready(()), if unsynced >= SYNC_WHEN_IDLE => {
                    self.sync_and_ack();
                    continue;
                }
                () = sleep_until_some(sync_by), if unsynced > 0 => {
                    self.sync_and_ack();
                    continue;
                }
                () = tokio::time::sleep_until(next_checkpoint), if every.is_some() => continue,
                () = tokio::time::sleep_until(next_sweep), if sweeps => continue,
            };
            for delivery in batch {
                self.pulse.progress();
                self.handle(delivery).await;
            }
        }
        self.close().await
    }

    /// Feeds the journal's records (of the last run) through windowing again, before the first
    /// message is taken. The broker sends one of their messages again only if its ack was lost
    /// (DUP set), and then its packet id is a suspect of the source: acknowledged, not windowed.
    async fn replay(&mut self) {
        let Some(log) = &mut self.log else { return };
        let records = log.take_replay();
        if records.is_empty() {
            return;
        }
        let mut replayed = 0u64;
        // Records of streams forgotten before the checkpoint: not brought back.
        let mut forgotten = 0u64;
        for r in records {
            let topic = &r.topic[partition_prefix_len(&self.partition_prefixes, &r.topic)..];
            if let (Some(log), Some((_, id))) = (&self.log, self.table.route_of(topic))
                && log.of_forgotten(&r, &id)
            {
                forgotten += 1;
                continue;
            }
            match self.window(&r.topic, &r.payload, Some(r.start), r.pos) {
                Some(w) if w.fed != Fed::Covered => {}
                _ => continue,
            }
            if !self.queue_windows().await {
                return;
            }
            replayed += 1;
        }
        self.metrics.journal_replayed.inc_by(replayed);
        info!(
            messages = replayed,
            skipped_forgotten = forgotten,
            "Journal replayed."
        );
    }

    /// One message: route, decode, window, journal, queue the windows (waiting while the queue
    /// is full), then acknowledge (after the journal sync when it was journaled).
    async fn handle(&mut self, d: Delivery) {
        self.metrics.messages_in.inc();
        // A command sent twice is two commands (`mqtt.duplicates = "identical"` is for sensor
        // readings, where the same reading twice is a resend): only one the broker flagged as
        // sent again is skipped.
        let command = |topic: &str| {
            self.control
                .as_ref()
                .is_some_and(|c| topic.starts_with(c.prefix.as_str()))
        };
        if d.duplicate && (d.flagged || !command(&d.topic)) {
            // Windowed on the previous connection (or journaled by the last run); its ack was
            // lost with it. Acknowledged after the next journal sync, like any journaled one.
            self.metrics.redeliveries.inc();
            debug!(topic = %d.topic, pkid = d.ack.pkid(), "Redelivered message already windowed; acknowledged.");
            self.hold(d.ack);
            return;
        }
        if d.payload.len() > self.max_payload {
            self.metrics.malformed(Reason::Oversize);
            if let Some(suppressed) = self.malformed_log.allow(Instant::now()) {
                warn!(topic = %d.topic, bytes = d.payload.len(), max_packet_bytes = self.max_payload, suppressed, "Message over mqtt.max_packet_bytes; acknowledged, not windowed.");
            }
            self.acker.ack(d.ack);
            return;
        }
        if let Some(c) = &mut self.control
            && let Some(command) = d.topic.strip_prefix(c.prefix.as_str())
        {
            let outcome = c.handle(command, &d.payload, d.retain);
            self.metrics
                .control_commands
                .get_or_create(&OutcomeLabel { outcome })
                .inc();
            self.acker.ack(d.ack);
            return;
        }
        // Journaled before its windows are queued: if queueing fails (shutting down), the
        // message is not acknowledged, and the next start replays it from the journal.
        let at = self.log.as_ref().map_or(0, IngestLog::next_pos);
        let journaled = match self.window(&d.topic, &d.payload, None, at) {
            Some(w) => self.journal(&d, w.start, w.samples),
            None => false,
        };
        if !self.queue_windows().await {
            return;
        }
        if journaled {
            self.hold(d.ack);
        } else {
            self.acker.ack(d.ack);
        }
    }

    /// Finds or creates the stream of a topic, whose message is journaled (or will be) at
    /// position `at`; `false` when it is not one of ours (counted and logged).
    fn route(&mut self, topic: &str, at: u64) -> bool {
        let log = self.log.as_ref();
        match self
            .table
            .route(topic, Instant::now(), |id| log.and_then(|l| l.saved(id)))
        {
            Routed::Known => true,
            Routed::New { id, resumed_at } => {
                // Its life began with this message, or where the checkpoint says.
                let since = log.and_then(|l| l.since(&id)).unwrap_or(at);
                self.table.begin_at(topic, since);
                match resumed_at {
                    Some(next_seq) => {
                        info!(stream = %id, topic, next_seq, "Stream resumed from the checkpoint.");
                    }
                    None => info!(stream = %id, topic, "New stream."),
                }
                self.metrics.streams_active.set(self.table.len() as i64);
                true
            }
            Routed::OtherPartition => {
                // Another daemon's stream: it receives the same message through its own session.
                self.metrics.messages_other_partition.inc();
                false
            }
            Routed::NoMatch => {
                debug!(
                    topic,
                    "Message on a topic no stream matches; acknowledged and ignored."
                );
                false
            }
            Routed::Refused => {
                self.metrics.streams_refused.inc();
                if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                    warn!(
                        topic,
                        max_streams = self.table.max_streams(),
                        suppressed,
                        "Stream cap reached; message from a new stream refused."
                    );
                }
                false
            }
        }
    }

    /// Decodes and windows a payload of the stream on `topic` (journaled, or to be, at
    /// position `at`), adding the stream when the topic is new (one table lookup for a known
    /// stream); `None` when the topic is not one of ours or the payload is malformed (counted
    /// and logged, like a gap).
    fn window(
        &mut self,
        topic: &str,
        payload: &[u8],
        start: Option<u64>,
        at: u64,
    ) -> Option<streams::Windowed> {
        // A partition's prefix comes off first: the stream is the same whichever partition
        // (or daemon) its messages arrive through.
        let topic = &topic[partition_prefix_len(&self.partition_prefixes, topic)..];
        let now = Instant::now();
        let mut windowed = self.table.window(topic, payload, start, now);
        if matches!(windowed, Err(StreamError::Unknown(_))) {
            if !self.route(topic, at) {
                return None;
            }
            windowed = self.table.window(topic, payload, start, now);
        }
        for s in self.table.take_fresh() {
            info!(stream = %s.id, silent_s = s.silent.as_secs_f64(), "Stale stream heard from again.");
            self.tell(StreamNews::Stale {
                stream: s.id,
                state: Transition::Cleared,
                silent: Some(s.silent),
                usual: s.usual,
            });
        }
        // Only a live message is the sensor heard from again (not a replayed record).
        if start.is_none()
            && !self.stale_open.is_empty()
            && let Some(id) = self.table.get(topic).map(|e| e.info().id.clone())
            && self.stale_open.remove(&id)
        {
            info!(stream = %id, "Stream stale before the restart heard from again.");
            self.tell(StreamNews::Stale {
                stream: id,
                state: Transition::Cleared,
                silent: None,
                usual: None,
            });
        }
        match windowed {
            Ok(w) => {
                if let Fed::Gap(missing) = w.fed {
                    self.metrics.stream_gaps.inc();
                    if let Some(suppressed) = self.gap_log.allow(Instant::now()) {
                        warn!(
                            topic,
                            missing_samples = missing,
                            next_seq = self.table.next_seq(topic),
                            suppressed,
                            "Samples missing after a restart; windowing goes on at the next window boundary."
                        );
                    }
                }
                Some(w)
            }
            Err(StreamError::Decode(e)) => {
                self.metrics.malformed(reason(&e));
                if let Some(suppressed) = self.malformed_log.allow(Instant::now()) {
                    warn!(topic, error = %e, bytes = payload.len(), suppressed, "Malformed payload refused.");
                }
                None
            }
            Err(e @ StreamError::Unknown(_)) => {
                debug!(error = %e, "Message for a stream no longer in the table.");
                None
            }
        }
    }

    /// Appends a windowed message to the journal; `false` when there is none or the append
    /// failed (counted and logged; the message is then acknowledged without it: scoring goes
    /// on, only crash safety is lost for it).
    fn journal(&mut self, d: &Delivery, start: u64, samples: u64) -> bool {
        let Some(log) = &mut self.log else {
            return false;
        };
        match log.append(d, start, samples) {
            Ok(()) => true,
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
    /// the queue is full (the backpressure). `false` when the queue has closed (shutting down).
    async fn queue_windows(&mut self) -> bool {
        let Some((route, info, windows)) = self.table.take_windows() else {
            return true;
        };
        let tx = &self.queues[route];
        for raw in windows {
            let window = Window {
                stream: info.clone(),
                raw,
            };
            if tx.send(window).await.is_err() {
                error!(stream = %info.id, "Scorer queue closed; message left unacknowledged.");
                return false;
            }
            self.metrics.windows_queued.inc();
        }
        true
    }

    /// Holds a journaled message's ack until the next sync (acks at once without a journal).
    fn hold(&mut self, ack: Ack) {
        if self.log.is_none() {
            self.acker.ack(ack);
            return;
        }
        if self.unsynced.is_empty() {
            self.unsynced_since = Some(tokio::time::Instant::now());
        }
        self.unsynced.push(ack);
    }

    /// Syncs the journal, then acknowledges the messages it now holds.
    fn sync_and_ack(&mut self) {
        self.unsynced_since = None;
        if let Some(log) = &mut self.log {
            log.sync(&self.metrics);
        }
        for ack in std::mem::take(&mut self.unsynced) {
            self.acker.ack(ack);
        }
    }

    /// Syncs and acknowledges, then saves a checkpoint and retires journal segments.
    fn checkpoint(&mut self) {
        self.sync_and_ack();
        if let Some(log) = &mut self.log {
            log.checkpoint(&self.table, &self.metrics, false);
        }
    }

    /// Sends the remaining acks, then the DISCONNECT (the source sends them and closes the
    /// connection); messages not taken are left unacknowledged, so the broker redelivers them
    /// next session.
    async fn close(mut self) -> Option<Leftover> {
        self.sync_and_ack();
        let deadline = tokio::time::Instant::now() + DISCONNECT_TIMEOUT;
        while !self.acker.disconnect() {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    acks_unsent = self.acker.parked(),
                    "Ingest disconnect timed out; unacknowledged messages will be redelivered."
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(streams = self.table.len(), "Ingest stopped.");
        let metrics = self.metrics.clone();
        self.log.take().map(|log| Leftover {
            log,
            table: self.table,
            metrics,
        })
    }
}

/// What the ingest stage hands back when it stops: the journal, for a last checkpoint once the
/// windows still queued have been judged.
pub struct Leftover {
    log: IngestLog,
    table: StreamTable,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leftover")
            .field("log", &self.log)
            .field("streams", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Leftover {
    /// Writes the last checkpoint (after the drain: every window judged is in it), so the
    /// next start replays only incomplete windows.
    pub fn checkpoint(mut self) {
        if self.log.sync(&self.metrics) {
            self.log.checkpoint(&self.table, &self.metrics, true);
        }
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
mod tests;
