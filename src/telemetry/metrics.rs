//! Prometheus metrics. Names live here as one registry built at start-up; labels are low
//! cardinality (no payload-derived values), except the per-stream gauges (`ebgand_stream_*`),
//! which hold at most `[limits] max_streams` streams and drop a stream when it is forgotten.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a payload was refused; exported in snake case (`not_finite`, `oversize` ...).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Reason {
    Json,
    NotFinite,
    Length,
    Field,
    Empty,
    /// Over `mqtt.max_packet_bytes`: read once, acknowledged, not windowed.
    Oversize,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::NotFinite => "not_finite",
            Self::Length => "length",
            Self::Field => "field",
            Self::Empty => "empty",
            Self::Oversize => "oversize",
        }
    }
}

impl EncodeLabelValue for Reason {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: Reason,
}

/// `reason` label of messages dropped on purpose.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    /// `qos0_overflow`: a QoS 0 message beyond what the ingest connection holds.
    pub reason: &'static str,
}

/// `stream` label of the per-stream gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// Stream id.
    pub stream: String,
}

/// `version` label of `ebgand_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// The crate version.
    pub version: &'static str,
}

/// `state` label of alert counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `raised` or `cleared`.
    pub state: &'static str,
}

/// `model` and `reason` labels of a stopped capture.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaptureLabel {
    /// Model name.
    pub model: String,
    /// `disk_full`, `min_free` or `io`.
    pub reason: &'static str,
}

/// `outcome` label of control commands.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `refused` (bad command), `retained`, `rate_limited` or `dropped` (queue full).
    pub outcome: &'static str,
}

/// `connection` label: `ingest` or `publish`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabel {
    /// Which MQTT connection.
    pub connection: &'static str,
}

/// `connection` and `reason` labels of a failed connection attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    /// Which MQTT connection.
    pub connection: &'static str,
    /// `refused` (credentials, authorisation), `tls`, `io`, `timeout` or `other`.
    pub reason: &'static str,
}

/// `queue` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// Which queue: `windows:<model>`, `scored`.
    pub queue: String,
}

/// `stage` label: `ingest`, `source`, `alerting`, `publisher`, `batcher:<model>`,
/// `scorer:<model>` ...
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage.
    pub stage: String,
}

/// `model` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// Model name.
    pub model: String,
}

/// Model phase labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// Model name.
    pub model: String,
    /// `learning`, `training` or `monitoring`.
    pub phase: &'static str,
}

/// Active model info labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActiveModelLabel {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Execution provider.
    pub provider: String,
}

/// Every metric the daemon exports, plus the readiness flags `/readyz` reads.
pub struct Metrics {
    registry: Registry,
    /// Per stream: the last window's energy.
    pub stream_energy: Family<StreamLabel, Gauge<f64, AtomicU64>>,
    /// Per stream: the last judged window's calibrated probability.
    pub stream_probability: Family<StreamLabel, Gauge<f64, AtomicU64>>,
    /// Per stream: 1 while its alert is raised.
    pub stream_alert: Family<StreamLabel, Gauge>,
    /// Per stream: seconds since its last message (refreshed every second).
    pub stream_silence: Family<StreamLabel, Gauge<f64, AtomicU64>>,
    build_info: Family<BuildLabel, Gauge>,
    process: super::process::Process,
    /// MQTT messages received on stream topics.
    pub messages_in: Counter,
    /// Payloads refused, by reason.
    pub malformed: Family<ReasonLabel, Counter>,
    /// Messages refused because the stream cap was reached.
    pub streams_refused: Counter,
    /// Messages dropped on purpose (QoS 0 beyond what the ingest connection holds).
    pub messages_dropped: Family<DropLabel, Counter>,
    /// Streams dropped from the stream table after going quiet.
    pub streams_expired: Counter,
    /// Streams found stale (silent for many times their usual interval).
    pub streams_stale: Counter,
    /// Redelivered messages recognised as already windowed (acked, not windowed again).
    pub redeliveries: Counter,
    /// Streams tracked.
    pub streams_active: Gauge,
    /// Windows cut and queued for scoring.
    pub windows_queued: Counter,
    /// Windows captured while a model learns (not scored).
    pub windows_captured: Counter,
    /// 1 for each model's current phase (learning, training, monitoring).
    pub model_phase: Family<PhaseLabel, Gauge>,
    /// Training runs by outcome.
    pub training_runs: Family<StateLabel, Counter>,
    /// Windows scored.
    pub windows_scored: Family<ModelLabel, Counter>,
    /// Windows whose scoring failed.
    pub windows_failed: Family<ModelLabel, Counter>,
    /// Windows per inference call.
    pub batch_size: Histogram,
    /// Seconds per inference call.
    pub scoring_seconds: Histogram,
    /// Alerts published, by state.
    pub alerts: Family<StateLabel, Counter>,
    /// Items waiting in each queue (sampled as batches pass).
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// MQTT connection losses.
    pub reconnects: Family<ConnLabel, Counter>,
    /// Moves to the next broker of `mqtt.hosts` after a lost connection.
    pub failovers: Family<ConnLabel, Counter>,
    /// MQTT connection losses and failed attempts, by reason.
    pub connect_failures: Family<FailureLabel, Counter>,
    /// Topic filters the broker refused to subscribe us to (its ACL).
    pub subscriptions_refused: Counter,
    /// Messages of streams another daemon's partition owns (acknowledged, not windowed).
    pub messages_other_partition: Counter,
    /// Alerts in the outbox, waiting for the broker's acknowledgement.
    pub outbox_pending: Gauge,
    /// Alerts not published because an earlier run stored them (windows judged again after a
    /// crash).
    pub alerts_deduplicated: Counter,
    /// Bytes in the ingest journal (sampled at each checkpoint).
    pub journal_bytes: Gauge,
    /// Journal or checkpoint writes that failed.
    pub journal_errors: Counter,
    /// Journal syncs (fsync), each acknowledging the messages journaled before it.
    pub journal_syncs: Counter,
    /// Journaled messages replayed at start-up.
    pub journal_replayed: Counter,
    /// Streams that resumed after missing samples (windowing went on at the next boundary).
    pub stream_gaps: Counter,
    /// 1 while a model's healthy-window capture is stopped, by reason.
    pub capture_stopped: Family<CaptureLabel, Gauge>,
    /// MQTT control commands by outcome.
    pub control_commands: Family<OutcomeLabel, Counter>,
    /// MQTT publishes that failed to queue.
    pub publish_errors: Counter,
    /// 1 for each (model, version, provider) being served.
    pub active_model: Family<ActiveModelLabel, Gauge>,
    /// Model reloads (SIGHUP), by outcome.
    pub reloads: Family<StateLabel, Counter>,
    ingest_connected: AtomicBool,
    publish_connected: AtomicBool,
    /// Stage restarts (a scorer rebuilding its session after a panic), by stage.
    pub stage_restarts: Family<StageLabel, Counter>,
    /// 1 while a stage is down, by stage.
    pub stage_down: Family<StageLabel, Gauge>,
    models_loaded: AtomicUsize,
    models_expected: AtomicUsize,
    /// Stages down and why, for `/readyz`.
    down: Mutex<BTreeMap<String, String>>,
    /// 1 while a stage holds work without progress, by stage (the watchdog's check).
    pub stage_stalled: Family<StageLabel, Gauge>,
    /// Stages holding work without progress, and for how long (seconds), for `/readyz`.
    stalled: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric under the `ebgand_` prefix.
    pub fn new() -> Self {
        let mut top = Registry::default();
        let m = Self {
            registry: Registry::default(),
            stream_energy: Family::default(),
            stream_probability: Family::default(),
            stream_alert: Family::default(),
            stream_silence: Family::default(),
            build_info: Family::default(),
            process: super::process::Process::default(),
            messages_in: Counter::default(),
            malformed: Family::default(),
            streams_refused: Counter::default(),
            messages_dropped: Family::default(),
            streams_expired: Counter::default(),
            streams_stale: Counter::default(),
            redeliveries: Counter::default(),
            streams_active: Gauge::default(),
            windows_queued: Counter::default(),
            windows_captured: Counter::default(),
            model_phase: Family::default(),
            training_runs: Family::default(),
            windows_scored: Family::default(),
            windows_failed: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            scoring_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 22)),
            alerts: Family::default(),
            queue_depth: Family::default(),
            reconnects: Family::default(),
            failovers: Family::default(),
            connect_failures: Family::default(),
            subscriptions_refused: Counter::default(),
            control_commands: Family::default(),
            capture_stopped: Family::default(),
            outbox_pending: Gauge::default(),
            messages_other_partition: Counter::default(),
            alerts_deduplicated: Counter::default(),
            journal_bytes: Gauge::default(),
            journal_errors: Counter::default(),
            journal_syncs: Counter::default(),
            journal_replayed: Counter::default(),
            stream_gaps: Counter::default(),
            publish_errors: Counter::default(),
            active_model: Family::default(),
            reloads: Family::default(),
            ingest_connected: AtomicBool::new(false),
            publish_connected: AtomicBool::new(false),
            stage_restarts: Family::default(),
            stage_down: Family::default(),
            down: Mutex::new(BTreeMap::new()),
            stage_stalled: Family::default(),
            stalled: Mutex::new(BTreeMap::new()),
            models_loaded: AtomicUsize::new(0),
            models_expected: AtomicUsize::new(usize::MAX),
        };
        m.process.register(&mut top);
        let r = top.sub_registry_with_prefix("ebgand");
        r.register(
            "build_info",
            "1, labelled with the version of this build",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "stream_energy",
            "The last window's energy, per stream",
            m.stream_energy.clone(),
        );
        r.register(
            "stream_probability",
            "The last judged window's calibrated anomaly probability, per stream",
            m.stream_probability.clone(),
        );
        r.register(
            "stream_alert",
            "1 while the stream's alert is raised",
            m.stream_alert.clone(),
        );
        r.register(
            "stream_silence_seconds",
            "Seconds since the stream's last message (refreshed every second)",
            m.stream_silence.clone(),
        );
        // Labelled counters exist from the start, at 0: a rate over them works before the
        // first event.
        for state in ["raised", "cleared"] {
            m.alerts.get_or_create(&StateLabel { state }).inc_by(0);
        }
        for reason in [
            Reason::Json,
            Reason::NotFinite,
            Reason::Length,
            Reason::Field,
            Reason::Empty,
            Reason::Oversize,
        ] {
            m.malformed.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        r.register(
            "messages",
            "MQTT messages received on stream topics",
            m.messages_in.clone(),
        );
        r.register(
            "malformed",
            "Payloads refused (acknowledged, not windowed)",
            m.malformed.clone(),
        );
        r.register(
            "streams_refused",
            "Messages refused: stream cap reached",
            m.streams_refused.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped on purpose, by reason (QoS 0 beyond what ingest holds)",
            m.messages_dropped.clone(),
        );
        r.register(
            "streams_expired",
            "Streams dropped from the stream table after [limits] stream_idle_s without a message",
            m.streams_expired.clone(),
        );
        r.register(
            "streams_stale",
            "Streams found stale: silent for [detect] stale_after times their usual interval",
            m.streams_stale.clone(),
        );
        r.register(
            "redeliveries_skipped",
            "Redelivered messages already windowed before a reconnect",
            m.redeliveries.clone(),
        );
        r.register(
            "streams_active",
            "Streams tracked",
            m.streams_active.clone(),
        );
        r.register(
            "windows_queued",
            "Windows cut and queued for scoring",
            m.windows_queued.clone(),
        );
        r.register(
            "windows_captured",
            "Windows captured while a model learns",
            m.windows_captured.clone(),
        );
        r.register(
            "model_phase",
            "Model phase: learning, training, monitoring",
            m.model_phase.clone(),
        );
        r.register(
            "training_runs",
            "Training runs by outcome",
            m.training_runs.clone(),
        );
        r.register("windows_scored", "Windows scored", m.windows_scored.clone());
        r.register(
            "windows_failed",
            "Windows whose inference failed",
            m.windows_failed.clone(),
        );
        r.register(
            "batch_size",
            "Windows per inference call",
            m.batch_size.clone(),
        );
        r.register(
            "scoring_seconds",
            "Inference call latency",
            m.scoring_seconds.clone(),
        );
        r.register("alerts", "Alert events published", m.alerts.clone());
        r.register(
            "queue_depth",
            "Items waiting in a queue",
            m.queue_depth.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "MQTT connection losses",
            m.reconnects.clone(),
        );
        r.register(
            "mqtt_failovers",
            "Moves to the next broker of mqtt.hosts after a lost connection",
            m.failovers.clone(),
        );
        for connection in ["ingest", "publish"] {
            m.reconnects
                .get_or_create(&ConnLabel { connection })
                .inc_by(0);
            m.failovers
                .get_or_create(&ConnLabel { connection })
                .inc_by(0);
        }
        r.register(
            "mqtt_connect_failures",
            "MQTT connection losses and failed attempts, by reason",
            m.connect_failures.clone(),
        );
        r.register(
            "mqtt_subscriptions_refused",
            "Topic filters the broker refused (ACL)",
            m.subscriptions_refused.clone(),
        );
        r.register(
            "messages_other_partition",
            "Messages of streams another daemon's [partition] owns, acknowledged and skipped",
            m.messages_other_partition.clone(),
        );
        r.register(
            "alerts_deduplicated",
            "Alerts not published again for windows judged again after a crash (an earlier run stored them)",
            m.alerts_deduplicated.clone(),
        );
        r.register(
            "journal_bytes",
            "Bytes in the ingest journal",
            m.journal_bytes.clone(),
        );
        r.register(
            "journal_errors",
            "Ingest journal or checkpoint writes that failed",
            m.journal_errors.clone(),
        );
        r.register(
            "journal_syncs",
            "Ingest journal syncs (fsync; one per group of messages)",
            m.journal_syncs.clone(),
        );
        r.register(
            "journal_replayed",
            "Journaled messages replayed at start-up",
            m.journal_replayed.clone(),
        );
        r.register(
            "stream_gaps",
            "Times a stream resumed after missing samples",
            m.stream_gaps.clone(),
        );
        r.register(
            "outbox_pending",
            "Alerts in the on-disk outbox, not yet acknowledged by the broker",
            m.outbox_pending.clone(),
        );
        r.register(
            "capture_stopped",
            "1 while capturing healthy windows is stopped (disk full, free-space floor, I/O)",
            m.capture_stopped.clone(),
        );
        r.register(
            "control_commands",
            "MQTT control commands by outcome",
            m.control_commands.clone(),
        );
        r.register(
            "publish_errors",
            "Publishes that could not be queued",
            m.publish_errors.clone(),
        );
        r.register(
            "active_model",
            "Model version served, and its execution provider",
            m.active_model.clone(),
        );
        r.register(
            "stage_restarts",
            "Stage restarts (a scorer rebuilding its session after a panic)",
            m.stage_restarts.clone(),
        );
        r.register(
            "stage_down",
            "1 while a stage is down (see /readyz for why)",
            m.stage_down.clone(),
        );
        r.register(
            "stage_stalled",
            "1 while a stage holds work without progress (the systemd watchdog is not fed)",
            m.stage_stalled.clone(),
        );
        r.register(
            "model_reloads",
            "Model reloads by outcome",
            m.reloads.clone(),
        );
        Self { registry: top, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.process.update();
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).ok();
        out
    }

    /// A stream was judged: its last energy, probability and alert state.
    pub fn stream_judged(&self, stream: &str, energy: f32, probability: Option<f64>, raised: bool) {
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        self.stream_energy
            .get_or_create(&label)
            .set(f64::from(energy));
        if let Some(p) = probability {
            self.stream_probability.get_or_create(&label).set(p);
        }
        self.stream_alert
            .get_or_create(&label)
            .set(i64::from(raised));
    }

    /// A stream was forgotten: its gauges go.
    pub fn forget_stream(&self, stream: &str) {
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        self.stream_energy.remove(&label);
        self.stream_probability.remove(&label);
        self.stream_alert.remove(&label);
        self.stream_silence.remove(&label);
    }

    /// Counts a refused payload.
    pub fn malformed(&self, reason: Reason) {
        self.malformed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Sets a model's phase (the other phases' gauges go to 0).
    pub fn set_phase(&self, model: &str, phase: &'static str) {
        for p in ["learning", "training", "monitoring"] {
            let label = PhaseLabel {
                model: model.to_owned(),
                phase: p,
            };
            self.model_phase
                .get_or_create(&label)
                .set(i64::from(p == phase));
        }
    }

    /// Records a connection's state.
    pub fn set_connected(&self, connection: &'static str, up: bool) {
        let flag = if connection == "ingest" {
            &self.ingest_connected
        } else {
            &self.publish_connected
        };
        flag.store(up, Ordering::Relaxed);
    }

    /// Records how many models must be loaded for readiness, and how many are.
    pub fn set_models(&self, loaded: usize, expected: usize) {
        self.models_loaded.store(loaded, Ordering::Relaxed);
        self.models_expected.store(expected, Ordering::Relaxed);
    }

    /// Ready: both MQTT connections up, every model loaded, no stage down. (Cheap: flags only;
    /// [`Metrics::not_ready`] says why not.)
    pub fn ready(&self) -> bool {
        self.connected()
            && self.models_loaded.load(Ordering::Relaxed)
                >= self.models_expected.load(Ordering::Relaxed)
            && self
                .down
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            && self
                .stalled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Both broker connections are up.
    pub fn connected(&self) -> bool {
        self.ingest_connected.load(Ordering::Relaxed)
            && self.publish_connected.load(Ordering::Relaxed)
    }

    /// Records the stages that hold work without progress (replacing the last record).
    pub fn set_stalled(&self, stalled: &[(String, Duration)]) {
        let mut now = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        for stage in now.keys() {
            if !stalled.iter().any(|(s, _)| s == stage) {
                self.stage_stalled
                    .get_or_create(&StageLabel {
                        stage: stage.clone(),
                    })
                    .set(0);
            }
        }
        now.clear();
        for (stage, held) in stalled {
            now.insert(stage.clone(), held.as_secs());
            self.stage_stalled
                .get_or_create(&StageLabel {
                    stage: stage.clone(),
                })
                .set(1);
        }
    }

    /// Why the daemon is not ready, if it is not: what `/readyz` says.
    pub fn not_ready(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.ingest_connected.load(Ordering::Relaxed) {
            why.push("ingest connection down or not subscribed yet".to_owned());
        }
        if !self.publish_connected.load(Ordering::Relaxed) {
            why.push("publish connection down".to_owned());
        }
        let (loaded, expected) = (
            self.models_loaded.load(Ordering::Relaxed),
            self.models_expected.load(Ordering::Relaxed),
        );
        if loaded < expected {
            why.push(if expected == usize::MAX {
                "starting".to_owned()
            } else {
                format!("{loaded} of {expected} models loaded")
            });
        }
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        why.extend(
            down.iter()
                .map(|(stage, reason)| format!("{stage} down ({reason})")),
        );
        let stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        why.extend(
            stalled
                .iter()
                .map(|(stage, s)| format!("{stage} stalled (no progress for {s} s)")),
        );
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// Marks a stage down, with why (`/readyz`, `ebgand_stage_down`).
    pub fn stage_down(&self, stage: &str, why: &str) {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stage.to_owned(), why.to_owned());
        self.stage_down
            .get_or_create(&StageLabel {
                stage: stage.to_owned(),
            })
            .set(1);
    }

    /// Marks a stage up again.
    pub fn stage_up(&self, stage: &str) {
        let was_down = self
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stage)
            .is_some();
        if was_down {
            self.stage_down
                .get_or_create(&StageLabel {
                    stage: stage.to_owned(),
                })
                .set(0);
        }
    }

    /// Sum of `windows_scored` over models (for tests and the demo).
    pub fn windows_scored_total(&self) -> u64 {
        // Family has no iteration API; the text encoding is the public view.
        sum_metric(&self.encode(), "ebgand_windows_scored_total")
    }
}

/// Sums every sample of `name` in a Prometheus text exposition.
pub fn sum_metric(text: &str, name: &str) -> u64 {
    sum_metric_where(text, name, "") as u64
}

/// Sums the samples of `name` whose label set contains `label` (e.g. `reason="tls"`; empty:
/// every sample).
pub fn sum_metric_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let whole_name = labels.is_empty() || labels.starts_with('{');
            (whole_name && labels.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
