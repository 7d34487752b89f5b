//! The configuration as written in the file (serde, unknown keys refused), with the built-in
//! defaults.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Secret;

// ---------------------------------------------------------------------------------------------
// Raw (file) form
// ---------------------------------------------------------------------------------------------

/// The configuration as written in the file, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Node name, reported in alerts. Empty means the host name.
    pub node: String,
    /// Broker connection.
    pub mqtt: RawMqtt,
    /// ONNX Runtime library and execution providers.
    pub runtime: RawRuntime,
    /// Model versions by model name.
    pub models: BTreeMap<String, RawModel>,
    /// Micro-batching and queue sizes.
    pub scoring: RawScoring,
    /// Default hysteresis for every stream.
    pub detect: RawDetect,
    /// Limits.
    pub limits: RawLimits,
    /// Sharing streams between daemons.
    pub partition: RawPartition,
    /// HTTP endpoints.
    pub http: RawHttp,
    /// Logging.
    pub log: RawLog,
    /// Shutdown.
    pub shutdown: RawShutdown,
    /// Training worker.
    pub train: RawTrain,
    /// Model registry and activation gate.
    pub registry: RawRegistry,
    /// MQTT control commands.
    pub control: RawControl,
    /// Learning from the stream.
    pub learning: RawLearning,
    /// Ingest journal (crash safety).
    pub journal: RawJournal,
    /// Home Assistant MQTT discovery.
    pub homeassistant: RawHomeAssistant,
    /// Sensor streams.
    pub streams: Vec<RawStream>,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Several brokers of one cluster, `host:port` (or `host`, on `port`), tried in order on
    /// every lost connection; replaces `host` when not empty.
    pub hosts: Vec<String>,
    /// Client id; stable across restarts so the broker keeps the session.
    pub client_id: String,
    /// Topic prefix for everything ebgand publishes.
    pub prefix: String,
    /// The retained online/offline topic (empty: `{prefix}/status`).
    pub status_topic: String,
    /// Keep-alive interval, seconds.
    pub keep_alive_s: u64,
    /// Username (empty: none).
    pub username: String,
    /// Password (empty: none). Prefer `password_file` or `EBGAND__MQTT__PASSWORD`: a config
    /// file that every user can read is refused when it holds a password.
    pub password: Secret,
    /// File holding the password (one line; must not be readable by every user).
    pub password_file: String,
    /// TLS to the broker.
    pub tls: RawTls,
    /// First reconnect delay, milliseconds.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// Unacknowledged QoS 1 publishes in flight toward the broker.
    pub inflight: u16,
    /// Publish every window's energy on `{prefix}/energy/{stream}`.
    pub publish_energy: bool,
    /// QoS of energy telemetry (0 or 1).
    pub energy_qos: u8,
    /// Largest MQTT packet accepted, bytes.
    pub max_packet_bytes: usize,
    /// Folder of the alert outbox (alerts kept until the broker acknowledges them).
    pub outbox_dir: String,
    /// Most alerts waiting in the outbox; at the bound, alerting waits.
    pub outbox_max: usize,
    /// Which incoming messages are checked for being duplicates: `flagged` (DUP) or
    /// `identical` (every one, by topic and payload).
    pub duplicates: String,
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            hosts: Vec::new(),
            client_id: String::new(),
            prefix: "ebgand".into(),
            status_topic: String::new(),
            keep_alive_s: 30,
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            tls: RawTls::default(),
            reconnect_min_ms: 100,
            reconnect_max_ms: 30_000,
            inflight: 100,
            publish_energy: false,
            energy_qos: 0,
            max_packet_bytes: 1 << 20,
            outbox_dir: "state/outbox".into(),
            outbox_max: 10_000,
            duplicates: "flagged".into(),
        }
    }
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// Connect with TLS.
    pub enabled: bool,
    /// PEM CA certificate(s) to trust (empty: the system's roots).
    pub ca_file: String,
    /// PEM client certificate chain, for brokers that require one (with `client_key_file`).
    pub client_cert_file: String,
    /// PEM private key of the client certificate.
    pub client_key_file: String,
    /// The name the server certificate must carry (empty: `mqtt.host`).
    pub server_name: String,
    /// Check that name (the chain is checked regardless).
    pub check_server_name: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            server_name: String::new(),
            check_server_name: true,
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    /// Path of `libonnxruntime.so` (empty: `ORT_DYLIB_PATH`, then the `make setup` cache).
    pub library: String,
    /// Execution providers in order of preference.
    pub providers: Vec<String>,
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// CUDA / TensorRT device id.
    pub device_id: i32,
    /// TensorRT engine cache directory (empty: no cache).
    pub tensorrt_engine_cache: String,
    /// Allow FP16 in TensorRT.
    pub tensorrt_fp16: bool,
}

impl Default for RawRuntime {
    fn default() -> Self {
        Self {
            library: String::new(),
            providers: vec!["cpu".into()],
            intra_threads: 1,
            device_id: 0,
            tensorrt_engine_cache: String::new(),
            tensorrt_fp16: true,
        }
    }
}

/// `[models.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// A model version folder (`model.onnx` + `manifest.toml`) that seeds the registry; empty:
    /// the model learns from its streams when the registry has no version of it.
    pub path: String,
}

/// `[scoring]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScoring {
    /// Most windows in one inference call.
    pub max_batch: usize,
    /// Longest a window waits for its batch to fill, microseconds.
    pub max_wait_us: u64,
    /// Windows queued between ingest and the batcher, per model.
    pub queue_windows: usize,
}

impl Default for RawScoring {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait_us: 2_000,
            queue_windows: 4_096,
        }
    }
}

/// `[detect]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDetect {
    /// `probability` (calibrated per stream) or `threshold` (the model's energy threshold).
    pub judge: String,
    /// Consecutive anomalous windows that raise an alert.
    pub raise_after: u32,
    /// Consecutive normal windows that clear it.
    pub clear_after: u32,
    /// A window is anomalous when the probability of its energy under the stream's recent
    /// healthy windows is at or over this.
    pub alert_probability: f64,
    /// Windows a stream (or a new model version on it) learns from before it is judged.
    pub learn_windows: u32,
    /// Windows a new version learns each stream from in shadow before it may serve.
    pub warm_windows: u32,
    /// Time constant, in healthy windows, over which the calibration forgets.
    pub memory_windows: u32,
    /// Quantile of healthy energies above which the tail is modelled.
    pub tail_quantile: f64,
    /// Excesses each channel's part fits its tail from at least (`per_channel`); 0: off.
    pub part_tail_excesses: u32,
    /// Windows an alert stays raised before its level is accepted as normal; 0: never. Each
    /// stream's default.
    pub accept_after: u32,
    /// Seconds of a stream's own time (its samples' timestamps) an alert stays raised before
    /// its level is accepted as normal; 0: never. Not with `accept_after`. Each stream's default.
    pub accept_after_s: f64,
    /// Time constant, in healthy windows, of the energy level windows are read against; 0: none.
    pub drift_windows: u32,
    /// Judged windows are learnt only under this probability; 0: every healthy window.
    pub learn_below: f64,
    /// Windows learnt from over which each channel's input level is the mean; 0: none.
    pub level_windows: u32,
    /// Each channel's part of the energy is calibrated too; a window is as unusual as its
    /// most unusual part (Bonferroni-corrected). false: the whole energy alone.
    pub per_channel: bool,
    /// A judged window at or over this probability is restless; 0 turns the restless raise
    /// off.
    pub restless_probability: f64,
    /// The restless raise counts this many of a stream's newest judged windows ...
    pub restless_windows: u32,
    /// ... and raises when at least this share of them are restless.
    pub restless_share: f64,
    /// Under this share of restless windows the stream has calmed: the rule may raise again.
    pub restless_calm: f64,
    /// An alert the restless rule raised stays up until the stream has calmed.
    pub restless_hold: bool,
    /// For this many judged windows after an alert clears, a window counts toward raising it
    /// again only at or over `quiet_probability` (and the restless rule waits); 0: off.
    pub quiet_windows: u32,
    /// See `quiet_windows`.
    pub quiet_probability: f64,
    /// A stream judged after a learning period shorter than `learn_windows` raises at a bar
    /// this many times likelier; 1: the same bar.
    pub thin_widen: f64,
    /// The autocorrelation at a day or a week a stream's channels need, on average, for its
    /// windows to be judged against the same moment of earlier seasons too; 0: no seasons.
    pub season_acf: f64,
    /// Weeks a stream is watched before its season is chosen.
    pub season_weeks: u32,
    /// Days watched after which a strong day judges the stream until the weeks are watched;
    /// 0: not before the weeks.
    pub season_days: u32,
    /// Seasons averaged into what a moment is expected to be.
    pub season_memory: u32,
    /// The time zone whose wall clock a season follows: a name of the time zone database
    /// (`Europe/Berlin`), `UTC`, or `local` (the system's).
    pub season_zone: String,
    /// A window whose seasonal probability is under this is learnt by the energy's
    /// calibration even when its energy is unusual, while no alert is up; 0: off.
    pub season_teaches: f64,
    /// A stream silent for this many times its usual interval between messages is stale (a
    /// dead sensor, a cut cable): alerted until data returns. 0: never.
    pub stale_after: f64,
    /// ... and never before this many seconds of silence.
    pub stale_min_s: f64,
}

impl Default for RawDetect {
    fn default() -> Self {
        let c = crate::detect::Calibration::default();
        Self {
            judge: "probability".into(),
            raise_after: 3,
            clear_after: 10,
            alert_probability: 0.9999,
            learn_windows: c.learn_windows,
            warm_windows: c.warm_windows,
            memory_windows: c.memory_windows,
            tail_quantile: c.tail_quantile,
            part_tail_excesses: c.part_tail_excesses,
            accept_after: 0,
            accept_after_s: 0.0,
            drift_windows: c.drift_windows,
            learn_below: c.learn_below,
            level_windows: c.level_windows,
            per_channel: c.per_channel,
            restless_probability: c.restless.probability,
            restless_windows: c.restless.windows,
            restless_share: c.restless.share,
            restless_calm: c.restless.calm,
            restless_hold: c.restless.hold,
            quiet_windows: c.quiet.windows,
            quiet_probability: c.quiet.probability,
            thin_widen: c.thin_widen,
            season_acf: c.seasons.acf,
            season_weeks: c.seasons.weeks,
            season_days: c.seasons.days,
            season_memory: c.seasons.memory,
            season_zone: "local".into(),
            season_teaches: c.seasons.teaches,
            stale_after: 10.0,
            stale_min_s: 10.0,
        }
    }
}

impl RawDetect {
    /// How a stream is judged: by its absolute `threshold` when it sets one, else by `judge`
    /// (the stream's `alert_probability`, or this section's).
    pub fn judging(
        &self,
        threshold: Option<f32>,
        alert_probability: Option<f64>,
    ) -> crate::detect::Judging {
        use crate::detect::Judging;
        match (threshold, self.judge.as_str()) {
            (Some(t), _) => Judging::Energy(Some(t)),
            (None, "threshold") => Judging::Energy(None),
            (None, _) => Judging::Probability(alert_probability.unwrap_or(self.alert_probability)),
        }
    }

    /// The acceptance `accept_after` / `accept_after_s` say (validation refuses both; then
    /// neither is taken).
    pub fn accept(&self) -> crate::detect::Accept {
        super::detect::acceptance(self.accept_after, self.accept_after_s, "detect.")
            .unwrap_or_default()
    }

    /// The time zone `season_zone` names (checked by validation); `local`, the system's, is
    /// UTC with a warning when the system's cannot be read.
    pub fn season_zone(&self) -> jiff::tz::TimeZone {
        if self.season_zone != "local" {
            return jiff::tz::TimeZone::get(&self.season_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        }
        jiff::tz::TimeZone::try_system().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "The system's time zone cannot be read: seasons follow UTC (set [detect] season_zone).");
            jiff::tz::TimeZone::UTC
        })
    }

    /// The calibration settings every stream shares.
    pub fn calibration(&self) -> crate::detect::Calibration {
        crate::detect::Calibration {
            learn_windows: self.learn_windows,
            warm_windows: self.warm_windows,
            memory_windows: self.memory_windows,
            tail_quantile: self.tail_quantile,
            part_tail_excesses: self.part_tail_excesses,
            drift_windows: self.drift_windows,
            learn_below: self.learn_below,
            level_windows: self.level_windows,
            per_channel: self.per_channel,
            restless: crate::detect::Restless {
                probability: self.restless_probability,
                windows: self.restless_windows,
                share: self.restless_share,
                calm: self.restless_calm,
                hold: self.restless_hold,
            },
            quiet: crate::detect::Quiet {
                windows: self.quiet_windows,
                probability: self.quiet_probability,
            },
            thin_widen: self.thin_widen,
            seasons: crate::detect::Seasons {
                acf: self.season_acf,
                weeks: self.season_weeks,
                days: self.season_days,
                memory: self.season_memory,
                zone: self.season_zone(),
                teaches: self.season_teaches,
            },
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Most streams tracked at once; messages for further streams are refused and counted.
    pub max_streams: usize,
    /// A stream with no message for this long is dropped from the stream table, the
    /// checkpoint and the alerting stage (0: never).
    pub stream_idle_s: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            stream_idle_s: 7 * 24 * 3600,
        }
    }
}

/// `[partition]`: this daemon's share of the streams when several subscribe to the same topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPartition {
    /// Daemons sharing the streams (1: no partitioning).
    pub count: u32,
    /// This daemon's share, 0..count.
    pub index: u32,
    /// Partitions a broker cluster makes (NATS subject mapping): subscribe to every stream's
    /// topic under each of these prefixes, and take the prefix off before the topic is matched.
    pub prefixes: Vec<String>,
}

impl Default for RawPartition {
    fn default() -> Self {
        Self {
            count: 1,
            index: 0,
            prefixes: Vec::new(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Listen address for `/metrics`, `/healthz`, `/readyz` (empty: disabled).
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".into(),
        }
    }
}

/// `[homeassistant]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHomeAssistant {
    /// Announce each stream's alert state as a Home Assistant `binary_sensor`.
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
}

impl Default for RawHomeAssistant {
    fn default() -> Self {
        Self {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `auto` (plain on a terminal, JSON otherwise), `plain` or `json`.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "auto".into(),
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShutdown {
    /// Longest the drain may take on SIGTERM, milliseconds.
    pub grace_ms: u64,
}

impl Default for RawShutdown {
    fn default() -> Self {
        Self { grace_ms: 10_000 }
    }
}

/// `[train]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrain {
    /// Python interpreter of the trainer venv.
    pub python: String,
    /// Folder holding the `ebgand_trainer` package (put on `PYTHONPATH`).
    pub worker: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Niceness of the worker process (0: not reniced).
    pub nice: u8,
    /// Longest a training run may take, seconds.
    pub timeout_s: u64,
    /// Training-artifact cache (empty: the worker's default).
    pub cache: String,
    /// Where new model versions go: `<models_dir>/<name>/<version>`.
    pub models_dir: String,
}

impl Default for RawTrain {
    fn default() -> Self {
        Self {
            python: ".venv/trainer/bin/python".into(),
            worker: "models/trainer".into(),
            device: "cpu".into(),
            nice: 10,
            timeout_s: 3600,
            cache: String::new(),
            models_dir: "models".into(),
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistry {
    /// Registry root (model versions, ACTIVE pointers, history).
    pub dir: String,
    /// How often the ACTIVE pointers are checked for changes, milliseconds.
    pub watch_ms: u64,
    /// Recent healthy windows kept per model for the activation gate.
    pub gate_windows: usize,
    /// Largest false-alarm rate a candidate may show on them.
    pub max_false_alarm_rate: f64,
    /// Fewest recent healthy windows a new version is judged on; with fewer it is refused.
    pub gate_min_windows: usize,
}

impl Default for RawRegistry {
    fn default() -> Self {
        Self {
            dir: "state/models".into(),
            watch_ms: 1000,
            gate_windows: 512,
            max_false_alarm_rate: 0.05,
            gate_min_windows: 64,
        }
    }
}

/// `[learning]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLearning {
    /// Windows captured as healthy before the first training run of a model with no version.
    pub windows: usize,
    /// Or this many seconds of capture, whichever comes first (0: windows only).
    pub duration_s: u64,
    /// Captured windows, per model: `<dir>/<model>/shard-*.npy`.
    pub dir: String,
    /// Windows per shard.
    pub shard_windows: usize,
    /// Shards kept per model (the oldest is removed first).
    pub max_shards: usize,
    /// Stop capturing rather than leave less than this many MiB free on its filesystem.
    pub min_free_mb: u64,
    /// After learning, capture one healthy window in this many (for retraining).
    pub capture_every: usize,
    /// Training steps of automatic runs.
    pub steps: u64,
    /// Retries after a failed training run.
    pub retries: u32,
    /// Delay before a retry, seconds.
    pub retry_delay_s: u64,
    /// Retrain models that learnt from their streams from their captured healthy windows this
    /// often, seconds (0: never).
    pub retrain_every_s: u64,
    /// Retrain models seeded from a folder (`[models.NAME] path`) on the schedule too.
    pub retrain_seeded: bool,
    /// Versions of a model kept in the registry after each training run (0: all).
    pub keep_versions: usize,
}

impl Default for RawLearning {
    fn default() -> Self {
        Self {
            windows: 2000,
            duration_s: 0,
            dir: "state/capture".into(),
            shard_windows: 1000,
            max_shards: 20,
            min_free_mb: 256,
            capture_every: 10,
            steps: 400,
            retries: 2,
            retry_delay_s: 30,
            retrain_every_s: 604_800,
            retrain_seeded: false,
            keep_versions: 10,
        }
    }
}

/// `[journal]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJournal {
    /// Journal stream messages before acknowledging them, so a crash loses none.
    pub enabled: bool,
    /// Folder of the journal segments and the checkpoint.
    pub dir: String,
    /// Segment size, MiB.
    pub segment_mb: u64,
    /// Journal bound, MiB: above it, ingest stops reading until windows are judged.
    pub max_mb: u64,
    /// Checkpoint interval, milliseconds.
    pub checkpoint_ms: u64,
}

impl Default for RawJournal {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "state/journal".into(),
            segment_mb: 4,
            max_mb: 256,
            checkpoint_ms: 1000,
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    /// Accept commands on `{prefix}/control/<command>`.
    pub enabled: bool,
    /// Commands accepted per minute (a burst of this many, refilled evenly); beyond it they
    /// are refused with a reason.
    pub max_per_minute: u32,
}

impl Default for RawControl {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_minute: 10,
        }
    }
}

/// `[[streams]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    /// Stream name; prefix of the stream ids it yields.
    pub name: String,
    /// MQTT topic filter (`+` and `#` allowed).
    pub topic: String,
    /// Model name (a key of `[models]`).
    pub model: String,
    /// Payload format: `number`, `array`, `object`, `f32le` or `i16le` (PCM).
    pub format: String,
    /// Audio: log-mel features (`logmel = {}` is the DCASE 2020 baseline). The stream's samples
    /// are mono audio at `logmel.sample_rate`; `window` and `hop` then count log-mel frames.
    #[serde(default)]
    pub logmel: Option<crate::pipeline::features::LogMelParams>,
    /// For `object`: the fields, one channel each, in order.
    #[serde(default)]
    pub fields: Vec<String>,
    /// For `object`: the field holding the sample's timestamp (optional).
    #[serde(default)]
    pub timestamp_field: String,
    /// Channels per sample (default: one per field of an `object` stream, else 1).
    #[serde(default)]
    pub channels: Option<usize>,
    /// Window length in samples.
    pub window: usize,
    /// Hop between windows in samples (default: the window, no overlap).
    #[serde(default)]
    pub hop: Option<usize>,
    /// Absolute energy threshold: judges this stream by energy instead of probability.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Alert probability override.
    #[serde(default)]
    pub alert_probability: Option<f64>,
    /// Hysteresis override.
    #[serde(default)]
    pub raise_after: Option<u32>,
    /// Hysteresis override.
    #[serde(default)]
    pub clear_after: Option<u32>,
    /// `[detect] accept_after` override (with `accept_after_s`, the stream's whole acceptance).
    #[serde(default)]
    pub accept_after: Option<u32>,
    /// `[detect] accept_after_s` override (needs `timestamp_field`).
    #[serde(default)]
    pub accept_after_s: Option<f64>,
    /// `[detect] learn_windows` for this stream alone.
    #[serde(default)]
    pub learn_windows: Option<u32>,
    /// `[detect] warm_windows` for this stream alone.
    #[serde(default)]
    pub warm_windows: Option<u32>,
    /// `[detect] memory_windows` for this stream alone.
    #[serde(default)]
    pub memory_windows: Option<u32>,
    /// `[detect] drift_windows` for this stream alone.
    #[serde(default)]
    pub drift_windows: Option<u32>,
    /// `[detect] level_windows` for this stream alone.
    #[serde(default)]
    pub level_windows: Option<u32>,
    /// `[detect] restless_windows` for this stream alone.
    #[serde(default)]
    pub restless_windows: Option<u32>,
    /// `[detect] quiet_windows` for this stream alone.
    #[serde(default)]
    pub quiet_windows: Option<u32>,
    /// `false`: no season for this stream, though `[detect] season_acf` gives the others one.
    #[serde(default)]
    pub season: Option<bool>,
}

impl RawStream {
    /// The `[detect]` settings this stream sets for itself.
    pub fn tuning(&self) -> crate::detect::StreamTuning {
        crate::detect::StreamTuning {
            learn_windows: self.learn_windows,
            warm_windows: self.warm_windows,
            memory_windows: self.memory_windows,
            drift_windows: self.drift_windows,
            level_windows: self.level_windows,
            restless_windows: self.restless_windows,
            quiet_windows: self.quiet_windows,
            no_season: self.season == Some(false),
        }
    }
}
