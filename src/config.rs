//! Configuration: built-in defaults, then a TOML file, then `EBGAND__SECTION__KEY` environment
//! variables, validated into typed [`Settings`].
//!
//! [`RawConfig`] mirrors the file (serde, unknown keys refused). [`RawConfig::validate`] checks
//! every value and reports *all* problems at once, so an operator fixes a config in one pass.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::mqtt::tls::{TlsFiles, client_config};
use crate::mqtt::topic::TopicFilter;
use crate::pipeline::decode::PayloadFormat;

/// The documented default configuration (the repository's `config.toml`).
pub const DOCUMENTED_CONFIG: &str = include_str!("../config.toml");

/// Environment prefix: `EBGAND__MQTT__HOST` overrides `[mqtt] host`.
pub const ENV_PREFIX: &str = "EBGAND";

/// Errors from loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file or environment could not be read or parsed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// The file named with `--config` does not exist.
    #[error("config file {path} does not exist")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// One or more values are invalid; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A secret string (a password) whose `Debug` and `Display` never show the value.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Creates a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value; call only where it is handed to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

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
    /// Client id; stable across restarts so the broker keeps the session.
    pub client_id: String,
    /// Topic prefix for everything ebgand publishes.
    pub prefix: String,
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
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            prefix: "ebgand".into(),
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
    /// Consecutive windows above threshold that raise an alert.
    pub raise_after: u32,
    /// Consecutive windows below threshold that clear it.
    pub clear_after: u32,
}

impl Default for RawDetect {
    fn default() -> Self {
        Self {
            raise_after: 3,
            clear_after: 5,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Most distinct streams tracked; messages for further streams are refused and counted.
    pub max_streams: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
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
}

impl Default for RawPartition {
    fn default() -> Self {
        Self { count: 1, index: 0 }
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
}

impl Default for RawRegistry {
    fn default() -> Self {
        Self {
            dir: "state/models".into(),
            watch_ms: 1000,
            gate_windows: 512,
            max_false_alarm_rate: 0.05,
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
    /// Retrain every model from its captured healthy windows this often, seconds (0: never).
    pub retrain_every_s: u64,
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
            retrain_every_s: 0,
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
    /// Channels per sample.
    #[serde(default = "one")]
    pub channels: usize,
    /// Window length in samples.
    pub window: usize,
    /// Hop between windows in samples (default: the window, no overlap).
    #[serde(default)]
    pub hop: Option<usize>,
    /// Threshold override (default: the model's calibrated threshold).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Hysteresis override.
    #[serde(default)]
    pub raise_after: Option<u32>,
    /// Hysteresis override.
    #[serde(default)]
    pub clear_after: Option<u32>,
}

const fn one() -> usize {
    1
}

// ---------------------------------------------------------------------------------------------
// Typed (validated) form
// ---------------------------------------------------------------------------------------------

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name in alerts.
    pub node: String,
    /// Broker connection.
    pub mqtt: MqttSettings,
    /// ONNX Runtime.
    pub runtime: RuntimeSettings,
    /// Seed version folders by model name (`None`: learn from the stream).
    pub models: BTreeMap<String, Option<PathBuf>>,
    /// Batching.
    pub scoring: ScoringSettings,
    /// Streams.
    pub streams: Vec<StreamSettings>,
    /// Most distinct streams.
    pub max_streams: usize,
    /// This daemon's share of the streams, `(index, count)`; `None`: all of them.
    pub partition: Option<(u32, u32)>,
    /// HTTP listen address.
    pub http_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Drain deadline.
    pub shutdown_grace: Duration,
    /// Training worker.
    pub train: TrainSettings,
    /// Registry.
    pub registry: RegistrySettings,
    /// Whether MQTT control commands are accepted.
    pub control: bool,
    /// Control commands accepted per minute.
    pub control_per_minute: u32,
    /// Learning from the stream.
    pub learning: LearningSettings,
    /// Ingest journal; `None` when off.
    pub journal: Option<JournalSettings>,
}

/// Ingest journal settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Folder.
    pub dir: PathBuf,
    /// Segment size, bytes.
    pub segment_bytes: u64,
    /// Bound, bytes.
    pub max_bytes: u64,
    /// Checkpoint interval.
    pub checkpoint: Duration,
}

/// Training worker settings.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// Interpreter.
    pub python: PathBuf,
    /// `PYTHONPATH` for the worker package.
    pub worker: PathBuf,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Niceness.
    pub nice: u8,
    /// Run time limit.
    pub timeout: Duration,
    /// Artifact cache.
    pub cache: Option<PathBuf>,
    /// Root of new model versions.
    pub models_dir: PathBuf,
}

/// Learning settings.
#[derive(Debug, Clone)]
pub struct LearningSettings {
    /// How long a model with no version learns.
    pub period: crate::train::learn::LearningPeriod,
    /// Capture root.
    pub dir: PathBuf,
    /// Windows per shard.
    pub shard_windows: usize,
    /// Shards kept.
    pub max_shards: usize,
    /// Free-space floor of the capture filesystem, MiB.
    pub min_free_mb: u64,
    /// Monitoring capture keeps one healthy window in this many.
    pub capture_every: usize,
    /// Steps of automatic runs.
    pub steps: u64,
    /// Retries.
    pub retries: u32,
    /// Delay before a retry.
    pub retry_delay: Duration,
    /// Retraining period, if any.
    pub retrain_every: Option<Duration>,
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Root folder.
    pub dir: PathBuf,
    /// Pointer check interval.
    pub watch: Duration,
    /// Windows kept for the gate.
    pub gate_windows: usize,
    /// False-alarm bound.
    pub max_false_alarm_rate: f64,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Client id of the ingest connection (the publisher adds `-pub`).
    pub client_id: String,
    /// Prefix of published topics.
    pub prefix: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Username and password, both or neither.
    pub credentials: Option<(String, Secret)>,
    /// TLS client configuration (`None`: plain TCP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Alert outbox folder.
    pub outbox_dir: PathBuf,
    /// Alert outbox bound.
    pub outbox_max: usize,
    /// Reconnect backoff floor.
    pub reconnect_min: Duration,
    /// Reconnect backoff cap.
    pub reconnect_max: Duration,
    /// Outgoing QoS 1 in flight.
    pub inflight: u16,
    /// Energy telemetry on/off.
    pub publish_energy: bool,
    /// Energy telemetry QoS.
    pub energy_qos: rumqttc::QoS,
    /// Largest packet.
    pub max_packet_bytes: usize,
}

/// An execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// NVIDIA TensorRT.
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// CPU (always available).
    Cpu,
}

impl Provider {
    /// Name as written in config and shown in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TensorRt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        }
    }
}

/// ONNX Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Library path, if configured.
    pub library: Option<PathBuf>,
    /// Providers in order; CPU is appended when missing, as the last resort.
    pub providers: Vec<Provider>,
    /// Intra-op threads.
    pub intra_threads: usize,
    /// GPU device id.
    pub device_id: i32,
    /// TensorRT engine cache.
    pub tensorrt_engine_cache: Option<PathBuf>,
    /// TensorRT FP16.
    pub tensorrt_fp16: bool,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct ScoringSettings {
    /// Batch cap.
    pub max_batch: NonZeroUsize,
    /// Batch wait cap.
    pub max_wait: Duration,
    /// Window queue capacity per model.
    pub queue_windows: NonZeroUsize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain on a terminal, JSON otherwise.
    Auto,
    /// Human-readable.
    Plain,
    /// JSON lines.
    Json,
}

/// One configured stream (a topic filter; each matching topic is a stream instance).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Name.
    pub name: String,
    /// Filter.
    pub topic: TopicFilter,
    /// Model name.
    pub model: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// Audio features, when the stream is audio.
    pub logmel: Option<crate::pipeline::features::LogMelParams>,
    /// Values per windowed step: payload channels, or `n_mels` for an audio stream.
    pub channels: NonZeroUsize,
    /// Window length.
    pub window: NonZeroUsize,
    /// Hop.
    pub hop: NonZeroUsize,
    /// Threshold override.
    pub threshold: Option<f32>,
    /// Raise after k windows above.
    pub raise_after: u32,
    /// Clear after j windows below.
    pub clear_after: u32,
}

/// The config file to read: `given`, else `./config.toml` when it exists, else none (built-in
/// defaults and the environment only).
pub fn config_path(given: Option<&Path>) -> Option<&Path> {
    let default = Path::new("config.toml");
    given.or_else(|| default.exists().then_some(default))
}

impl Settings {
    /// The daemon needs at least one stream; `score` and `train` do not.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when no stream is configured.
    pub fn require_streams(self) -> Result<Self, ConfigError> {
        if self.streams.is_empty() {
            return Err(ConfigError::Invalid(vec![
                "streams: no [[streams]] configured; nothing to score".into(),
            ]));
        }
        Ok(self)
    }
}

impl RawConfig {
    /// Loads defaults, then `file` (if any), then `EBGAND__*` variables from `env` (the process
    /// environment when `None`).
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when `file` does not exist, [`ConfigError::Load`] when a source
    /// does not parse or holds an unknown key.
    pub fn load(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            refuse_readable_password(path)?;
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env);
        let built = builder.add_source(environment).build()?;
        Ok(built.try_deserialize()?)
    }

    /// Parses a TOML string (no environment); used for the documented config and tests.
    ///
    /// # Errors
    /// [`ConfigError::Load`] when it does not parse.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        Ok(built.try_deserialize()?)
    }

    /// Checks every value and returns typed settings, or every problem found.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each bad value with its key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut errs: Vec<String> = Vec::new();
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            errs.push("mqtt.host: must not be empty".into());
        }
        if m.port == 0 {
            errs.push("mqtt.port: must be 1-65535".into());
        }
        if m.prefix.is_empty() || m.prefix.contains(['+', '#']) || m.prefix.ends_with('/') {
            errs.push(format!(
                "mqtt.prefix: {:?} must be non-empty, without wildcards or a trailing '/'",
                m.prefix
            ));
        }
        if m.keep_alive_s < 5 {
            errs.push(format!(
                "mqtt.keep_alive_s: {} is below the minimum of 5",
                m.keep_alive_s
            ));
        }
        let password = mqtt_password(m, &mut errs);
        if m.username.is_empty() != password.expose().is_empty() {
            errs.push(
                "mqtt.username / mqtt.password (or password_file): give both or neither".into(),
            );
        }
        let tls = mqtt_tls(m, &mut errs);
        if m.outbox_dir.is_empty() || m.outbox_max == 0 {
            errs.push(
                "mqtt.outbox_dir / outbox_max: need a folder and a bound of at least 1".into(),
            );
        }
        let j = &self.journal;
        if j.enabled
            && (j.dir.is_empty()
                || j.segment_mb == 0
                || j.max_mb < 2 * j.segment_mb
                || !(10..=60_000).contains(&j.checkpoint_ms))
        {
            errs.push(format!(
                "journal: need a dir, segment_mb >= 1, max_mb >= 2 x segment_mb and \
                 checkpoint_ms in 10-60000 (got dir {:?}, segment_mb {}, max_mb {}, checkpoint_ms {})",
                j.dir, j.segment_mb, j.max_mb, j.checkpoint_ms
            ));
        }
        if m.reconnect_min_ms == 0 || m.reconnect_min_ms > m.reconnect_max_ms {
            errs.push(format!(
                "mqtt.reconnect_min_ms: {} must be > 0 and <= reconnect_max_ms ({})",
                m.reconnect_min_ms, m.reconnect_max_ms
            ));
        }
        if m.inflight == 0 {
            errs.push("mqtt.inflight: must be at least 1".into());
        }
        let energy_qos = match m.energy_qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            q => {
                errs.push(format!("mqtt.energy_qos: {q} must be 0 or 1"));
                rumqttc::QoS::AtMostOnce
            }
        };
        if m.max_packet_bytes < 1024 {
            errs.push("mqtt.max_packet_bytes: must be at least 1024".into());
        }
        let node = if self.node.trim().is_empty() {
            default_node()
        } else {
            self.node.clone()
        };
        let client_id = if m.client_id.is_empty() {
            format!("ebgand-{node}")
        } else {
            m.client_id.clone()
        };
        if client_id.len() > 23 * 4 {
            errs.push(format!("mqtt.client_id: {client_id:?} is too long"));
        }

        let r = &self.runtime;
        let mut providers = Vec::new();
        for p in &r.providers {
            match p.as_str() {
                "tensorrt" => providers.push(Provider::TensorRt),
                "cuda" => providers.push(Provider::Cuda),
                "cpu" => providers.push(Provider::Cpu),
                other => errs.push(format!(
                    "runtime.providers: unknown provider {other:?} (known: tensorrt, cuda, cpu)"
                )),
            }
        }
        if !providers.contains(&Provider::Cpu) {
            providers.push(Provider::Cpu);
        }
        if r.intra_threads == 0 {
            errs.push("runtime.intra_threads: must be at least 1".into());
        }

        let mut models = BTreeMap::new();
        for (name, model) in &self.models {
            let path = model.path.trim();
            models.insert(
                name.clone(),
                (!path.is_empty()).then(|| PathBuf::from(path)),
            );
        }

        let s = &self.scoring;
        let max_batch = NonZeroUsize::new(s.max_batch);
        if max_batch.is_none() {
            errs.push("scoring.max_batch: must be at least 1".into());
        }
        let queue_windows = NonZeroUsize::new(s.queue_windows);
        if queue_windows.is_none() {
            errs.push("scoring.queue_windows: must be at least 1".into());
        }
        if self.detect.raise_after == 0 || self.detect.clear_after == 0 {
            errs.push("detect.raise_after / detect.clear_after: must be at least 1".into());
        }

        let mut streams = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, st) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}] ({})", st.name);
            // A filter that matches ebgand's own topics would feed its output back as input.
            if let Ok(f) = TopicFilter::parse(&st.topic) {
                let own = [
                    "status",
                    "events",
                    "alerts/x",
                    "state/x",
                    "energy/x",
                    "control/x",
                ];
                if let Some(t) = own
                    .iter()
                    .map(|t| format!("{}/{t}", m.prefix))
                    .find(|t| f.captures(t).is_some())
                {
                    errs.push(format!(
                        "{at}.topic: {:?} also matches ebgand's own topic {t:?} (mqtt.prefix {:?})",
                        st.topic, m.prefix
                    ));
                }
            }
            if let Some(s) = validate_stream(st, &at, &self.detect, &models, &mut errs) {
                if !names.insert(s.name.clone()) {
                    errs.push(format!("{at}.name: duplicate stream name"));
                }
                streams.push(s);
            }
        }

        let http_listen = if self.http.listen.trim().is_empty() {
            None
        } else {
            match self.http.listen.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    errs.push(format!("http.listen: {:?}: {e}", self.http.listen));
                    None
                }
            }
        };
        let log_format = match self.log.format.as_str() {
            "auto" => LogFormat::Auto,
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                errs.push(format!("log.format: {other:?} must be auto, plain or json"));
                LogFormat::Auto
            }
        };
        let t = &self.train;
        if !matches!(t.device.as_str(), "cpu" | "cuda") {
            errs.push(format!("train.device: {:?} must be cpu or cuda", t.device));
        }
        if t.timeout_s == 0 {
            errs.push("train.timeout_s: must be at least 1".into());
        }
        if t.nice > 19 {
            errs.push(format!("train.nice: {} must be 0-19", t.nice));
        }
        let g = &self.registry;
        if g.dir.trim().is_empty() {
            errs.push("registry.dir: must not be empty".into());
        }
        if g.watch_ms == 0 {
            errs.push("registry.watch_ms: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&g.max_false_alarm_rate) {
            errs.push(format!(
                "registry.max_false_alarm_rate: {} must be in 0..1",
                g.max_false_alarm_rate
            ));
        }
        let l = &self.learning;
        if l.windows < 10 || l.shard_windows == 0 || l.max_shards == 0 || l.steps == 0 {
            errs.push("learning: windows must be at least 10; shard_windows, max_shards, steps at least 1".into());
        }
        if self.control.max_per_minute == 0 {
            errs.push("control.max_per_minute: must be at least 1 (disable control with control.enabled = false)".into());
        }
        if self.partition.count == 0 || self.partition.index >= self.partition.count {
            errs.push(format!(
                "partition: index {} must be below count {} (count at least 1)",
                self.partition.index, self.partition.count
            ));
        }
        if self.limits.max_streams == 0 {
            errs.push("limits.max_streams: must be at least 1".into());
        }

        match (errs.is_empty(), max_batch, queue_windows) {
            (true, Some(max_batch), Some(queue_windows)) => Ok(Settings {
                node,
                mqtt: MqttSettings {
                    host: m.host.clone(),
                    port: m.port,
                    client_id,
                    prefix: m.prefix.clone(),
                    keep_alive: Duration::from_secs(m.keep_alive_s),
                    credentials: (!m.username.is_empty()).then(|| (m.username.clone(), password)),
                    tls,
                    outbox_dir: PathBuf::from(&m.outbox_dir),
                    outbox_max: m.outbox_max,
                    reconnect_min: Duration::from_millis(m.reconnect_min_ms),
                    reconnect_max: Duration::from_millis(m.reconnect_max_ms),
                    inflight: m.inflight,
                    publish_energy: m.publish_energy,
                    energy_qos,
                    max_packet_bytes: m.max_packet_bytes,
                },
                runtime: RuntimeSettings {
                    library: (!r.library.is_empty()).then(|| PathBuf::from(&r.library)),
                    providers,
                    intra_threads: r.intra_threads,
                    device_id: r.device_id,
                    tensorrt_engine_cache: (!r.tensorrt_engine_cache.is_empty())
                        .then(|| PathBuf::from(&r.tensorrt_engine_cache)),
                    tensorrt_fp16: r.tensorrt_fp16,
                },
                models,
                scoring: ScoringSettings {
                    max_batch,
                    max_wait: Duration::from_micros(s.max_wait_us),
                    queue_windows,
                },
                streams,
                max_streams: self.limits.max_streams,
                partition: (self.partition.count > 1)
                    .then_some((self.partition.index, self.partition.count)),
                http_listen,
                log_format,
                shutdown_grace: Duration::from_millis(self.shutdown.grace_ms),
                train: TrainSettings {
                    python: PathBuf::from(&t.python),
                    worker: PathBuf::from(&t.worker),
                    device: t.device.clone(),
                    nice: t.nice,
                    timeout: Duration::from_secs(t.timeout_s),
                    cache: (!t.cache.is_empty()).then(|| PathBuf::from(&t.cache)),
                    models_dir: PathBuf::from(&t.models_dir),
                },
                registry: RegistrySettings {
                    dir: PathBuf::from(&g.dir),
                    watch: Duration::from_millis(g.watch_ms),
                    gate_windows: g.gate_windows,
                    max_false_alarm_rate: g.max_false_alarm_rate,
                },
                control: self.control.enabled,
                control_per_minute: self.control.max_per_minute,
                journal: j.enabled.then(|| JournalSettings {
                    dir: PathBuf::from(&j.dir),
                    segment_bytes: j.segment_mb << 20,
                    max_bytes: j.max_mb << 20,
                    checkpoint: Duration::from_millis(j.checkpoint_ms),
                }),
                learning: LearningSettings {
                    period: crate::train::learn::LearningPeriod {
                        windows: self.learning.windows,
                        duration: (self.learning.duration_s > 0)
                            .then(|| Duration::from_secs(self.learning.duration_s)),
                    },
                    dir: PathBuf::from(&self.learning.dir),
                    shard_windows: self.learning.shard_windows,
                    max_shards: self.learning.max_shards,
                    min_free_mb: self.learning.min_free_mb,
                    capture_every: self.learning.capture_every.max(1),
                    steps: self.learning.steps,
                    retries: self.learning.retries,
                    retry_delay: Duration::from_secs(self.learning.retry_delay_s),
                    retrain_every: (self.learning.retrain_every_s > 0)
                        .then(|| Duration::from_secs(self.learning.retrain_every_s)),
                },
            }),
            _ => Err(ConfigError::Invalid(errs)),
        }
    }
}

/// A config file every user can read must not hold the broker password: it would be
/// everyone's. (The file alone is parsed here; a password from the environment is fine.)
fn refuse_readable_password(path: &Path) -> Result<(), ConfigError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // the loader reports an unreadable file
    };
    if meta.permissions().mode() & 0o004 == 0 {
        return Ok(());
    }
    let holds_password = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("mqtt")?
                .get("password")?
                .as_str()
                .map(|p| !p.is_empty())
        })
        .unwrap_or(false);
    if holds_password {
        return Err(ConfigError::Invalid(vec![format!(
            "mqtt.password: {} is readable by every user and must not hold the password; use \
             mqtt.password_file (mode 0600) or EBGAND__MQTT__PASSWORD",
            path.display()
        )]));
    }
    Ok(())
}

/// The broker password: `mqtt.password` (file or environment) or the first line of
/// `mqtt.password_file`, never both. A password file others can read is refused.
fn mqtt_password(m: &RawMqtt, errs: &mut Vec<String>) -> Secret {
    if m.password_file.is_empty() {
        return m.password.clone();
    }
    if !m.password.expose().is_empty() {
        errs.push("mqtt.password / mqtt.password_file: give one, not both".into());
        return Secret::default();
    }
    let path = Path::new(&m.password_file);
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o004 != 0 => {
            errs.push(format!(
                "mqtt.password_file: {} is readable by every user; `chmod o-r` it (0600 or 0640)",
                path.display()
            ));
            return Secret::default();
        }
        Ok(_) => {}
        Err(e) => {
            errs.push(format!("mqtt.password_file: {}: {e}", path.display()));
            return Secret::default();
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let line = text.lines().next().unwrap_or_default();
            if line.is_empty() {
                errs.push(format!(
                    "mqtt.password_file: {} has an empty first line",
                    path.display()
                ));
            }
            Secret::new(line)
        }
        Err(e) => {
            errs.push(format!("mqtt.password_file: {}: {e}", path.display()));
            Secret::default()
        }
    }
}

/// `[mqtt.tls]` checked and built into a client configuration (reading its files now, so that
/// `check-config` reports a bad certificate).
fn mqtt_tls(m: &RawMqtt, errs: &mut Vec<String>) -> Option<Arc<rustls::ClientConfig>> {
    let t = &m.tls;
    let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    if !t.enabled {
        if [
            &t.ca_file,
            &t.client_cert_file,
            &t.client_key_file,
            &t.server_name,
        ]
        .iter()
        .any(|s| !s.is_empty())
        {
            errs.push("mqtt.tls: files or server_name set but enabled = false".into());
        }
        return None;
    }
    let client_auth = match (path(&t.client_cert_file), path(&t.client_key_file)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            errs.push("mqtt.tls.client_cert_file / client_key_file: give both or neither".into());
            return None;
        }
    };
    let files = TlsFiles {
        ca_file: path(&t.ca_file),
        client_auth,
        server_name: (!t.server_name.is_empty()).then(|| t.server_name.clone()),
        check_server_name: t.check_server_name,
    };
    match client_config(&files) {
        Ok(config) => Some(config),
        Err(e) => {
            errs.push(format!("mqtt.tls: {e}"));
            None
        }
    }
}

/// Most values (window x channels) in one stream's window.
pub const MAX_WINDOW_VALUES: usize = 1 << 20;

fn validate_stream(
    st: &RawStream,
    at: &str,
    detect: &RawDetect,
    models: &BTreeMap<String, Option<PathBuf>>,
    errs: &mut Vec<String>,
) -> Option<StreamSettings> {
    let before = errs.len();
    if st.name.is_empty() || st.name.contains(['+', '#', '/']) {
        errs.push(format!(
            "{at}.name: must be non-empty, without '/', '+' or '#'"
        ));
    }
    let topic = match TopicFilter::parse(&st.topic) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(format!("{at}.topic: {e}"));
            None
        }
    };
    if !models.contains_key(&st.model) {
        errs.push(format!(
            "{at}.model: {:?} is not a key of [models] (known: {})",
            st.model,
            models.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let channels = NonZeroUsize::new(st.channels);
    if channels.is_none() {
        errs.push(format!("{at}.channels: must be at least 1"));
    }
    let format = match st.format.as_str() {
        "number" => {
            if st.channels != 1 {
                errs.push(format!(
                    "{at}.channels: format \"number\" carries one channel"
                ));
            }
            Some(PayloadFormat::Number)
        }
        "array" => Some(PayloadFormat::Array),
        "f32le" => Some(PayloadFormat::F32Le),
        "i16le" => Some(PayloadFormat::I16Le),
        "object" => {
            if st.fields.is_empty() {
                errs.push(format!(
                    "{at}.fields: format \"object\" needs the list of fields"
                ));
            } else if st.fields.len() != st.channels {
                errs.push(format!(
                    "{at}.channels: {} but {} fields are listed (one channel per field)",
                    st.channels,
                    st.fields.len()
                ));
            }
            let ts = (!st.timestamp_field.is_empty()).then(|| st.timestamp_field.clone());
            Some(PayloadFormat::Object {
                fields: st.fields.clone(),
                timestamp_field: ts,
            })
        }
        other => {
            errs.push(format!(
                "{at}.format: unknown format {other:?} (known: number, array, object, f32le, i16le)"
            ));
            None
        }
    };
    if st.format != "object" && (!st.fields.is_empty() || !st.timestamp_field.is_empty()) {
        errs.push(format!(
            "{at}.fields / timestamp_field: only for format \"object\""
        ));
    }
    let window = NonZeroUsize::new(st.window);
    if window.is_none() {
        errs.push(format!("{at}.window: must be at least 1"));
    }
    // Each stream holds a window's values; a typo must be an error, not an allocation failure.
    if st.window.saturating_mul(st.channels.max(1)) > MAX_WINDOW_VALUES {
        errs.push(format!(
            "{at}.window x channels: {} x {} is over the limit of {MAX_WINDOW_VALUES} values",
            st.window, st.channels
        ));
    }
    let hop = NonZeroUsize::new(st.hop.unwrap_or(st.window));
    match (hop, window) {
        (None, _) => errs.push(format!("{at}.hop: must be at least 1")),
        (Some(h), Some(w)) if h > w => errs.push(format!(
            "{at}.hop: {h} exceeds the window ({w}); samples between windows would never be scored"
        )),
        _ => {}
    }
    if let Some(t) = st.threshold
        && !(t.is_finite() && t > 0.0)
    {
        errs.push(format!(
            "{at}.threshold: {t} must be a positive finite number"
        ));
    }
    let raise_after = st.raise_after.unwrap_or(detect.raise_after);
    let clear_after = st.clear_after.unwrap_or(detect.clear_after);
    if raise_after == 0 || clear_after == 0 {
        errs.push(format!(
            "{at}.raise_after / clear_after: must be at least 1"
        ));
    }
    let mut channels = channels;
    if let Some(params) = &st.logmel {
        if st.channels != 1 || st.format == "object" {
            errs.push(format!(
                "{at}.logmel: audio streams are mono PCM (channels = 1, not \"object\")"
            ));
        }
        if let Err(e) = crate::pipeline::features::LogMel::new(params.clone()) {
            errs.push(format!("{at}.logmel: {e}"));
        }
        channels = NonZeroUsize::new(params.n_mels);
    }
    if errs.len() != before {
        return None;
    }
    Some(StreamSettings {
        name: st.name.clone(),
        topic: topic?,
        model: st.model.clone(),
        format: format?,
        logmel: st.logmel.clone(),
        channels: channels?,
        window: window?,
        hop: hop?,
        threshold: st.threshold,
        raise_after,
        clear_after,
    })
}

fn default_node() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn documented_config_is_valid_and_matches_builtin_defaults() {
        let doc = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        let settings = doc.validate().unwrap();
        assert!(!settings.streams.is_empty());
        // Every scalar the documented file sets must equal the built-in default, so that the
        // file documents the defaults truthfully.
        let d = RawConfig::default();
        assert_eq!(format!("{:?}", doc.mqtt), format!("{:?}", d.mqtt));
        assert_eq!(format!("{:?}", doc.runtime), format!("{:?}", d.runtime));
        assert_eq!(format!("{:?}", doc.scoring), format!("{:?}", d.scoring));
        assert_eq!(format!("{:?}", doc.detect), format!("{:?}", d.detect));
        assert_eq!(format!("{:?}", doc.limits), format!("{:?}", d.limits));
        assert_eq!(format!("{:?}", doc.http), format!("{:?}", d.http));
        assert_eq!(format!("{:?}", doc.shutdown), format!("{:?}", d.shutdown));
        assert_eq!(format!("{:?}", doc.train), format!("{:?}", d.train));
        assert_eq!(format!("{:?}", doc.registry), format!("{:?}", d.registry));
        assert_eq!(format!("{:?}", doc.control), format!("{:?}", d.control));
        assert_eq!(format!("{:?}", doc.learning), format!("{:?}", d.learning));
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, DOCUMENTED_CONFIG).unwrap();
        let raw = RawConfig::load(
            Some(&path),
            env(&[
                ("EBGAND__MQTT__HOST", "broker.local"),
                ("EBGAND__MQTT__PORT", "2883"),
            ]),
        )
        .unwrap();
        let s = raw.validate().unwrap();
        assert_eq!(s.mqtt.host, "broker.local");
        assert_eq!(s.mqtt.port, 2883);
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = RawConfig::from_toml("[mqtt]\nhots = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("hots"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = RawConfig::load(Some(Path::new("/nonexistent/e.toml")), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = r#"
            [mqtt]
            port = 0
            prefix = "a/#"
            username = "u"
            reconnect_min_ms = 0
            energy_qos = 2
            [runtime]
            providers = ["tpu"]
            [scoring]
            max_batch = 0
            [models.m]
            path = "x"
            [[streams]]
            name = "s"
            topic = "a/#/b"
            model = "nope"
            format = "object"
            channels = 2
            window = 4
            hop = 8
            threshold = -1.0
        "#;
        let err = RawConfig::from_toml(text).unwrap().validate().unwrap_err();
        let ConfigError::Invalid(list) = err else {
            panic!("expected Invalid")
        };
        let all = list.join("\n");
        for key in [
            "mqtt.port",
            "mqtt.prefix",
            "mqtt.username",
            "mqtt.reconnect_min_ms",
            "mqtt.energy_qos",
            "runtime.providers",
            "scoring.max_batch",
            ".topic",
            ".model",
            ".fields",
            ".hop",
            ".threshold",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
    }

    #[test]
    fn a_stream_cannot_subscribe_to_ebgands_own_topics() {
        let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        raw.streams[0].topic = "ebgand/+".into();
        let err = raw.validate().unwrap_err().to_string();
        assert!(
            err.contains("also matches ebgand's own topic \"ebgand/status\""),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let raw =
            RawConfig::from_toml("[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
        assert!(!format!("{raw:?}").contains("hunter2"));
    }

    fn invalid(raw: &RawConfig) -> String {
        match raw.validate() {
            Err(ConfigError::Invalid(errs)) => errs.join("\n"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn password_file_is_read_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        raw.mqtt.username = "ebgand".into();
        raw.mqtt.password_file = file.display().to_string();
        let s = raw.validate().unwrap();
        let (user, pass) = s.mqtt.credentials.unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("ebgand", "s3cret"));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let errs = invalid(&raw);
        assert!(errs.contains("readable by every user"), "{errs}");
        assert!(!errs.contains("s3cret"), "{errs}");

        raw.mqtt.password = Secret::new("other");
        assert!(invalid(&raw).contains("give one, not both"));
    }

    #[test]
    fn world_readable_config_must_not_hold_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ebgand.toml");
        std::fs::write(&file, "[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = RawConfig::load(Some(&file), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("readable by every user"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let raw = RawConfig::load(Some(&file), Some(HashMap::new())).unwrap();
        assert_eq!(raw.mqtt.password.expose(), "hunter2");
    }

    #[test]
    fn an_enormous_window_is_a_config_error() {
        let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        raw.streams = RawConfig::from_toml(
            "[[streams]]\nname = \"s\"\ntopic = \"a/+\"\nmodel = \"m\"\nformat = \"array\"\nwindow = 4000000000\n",
        )
        .unwrap()
        .streams;
        assert!(invalid(&raw).contains("over the limit"));
    }

    #[test]
    fn tls_settings_are_checked() {
        let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        raw.mqtt.tls.ca_file = "/nonexistent/ca.pem".into();
        assert!(invalid(&raw).contains("enabled = false"));
        raw.mqtt.tls.enabled = true;
        let errs = invalid(&raw);
        assert!(errs.contains("mqtt.tls: /nonexistent/ca.pem"), "{errs}");
        raw.mqtt.tls.client_cert_file = "/nonexistent/client.pem".into();
        assert!(invalid(&raw).contains("give both or neither"));
    }

    #[test]
    fn cpu_is_always_the_last_resort() {
        let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
        raw.runtime.providers = vec!["tensorrt".into(), "cuda".into()];
        let s = raw.validate().unwrap();
        assert_eq!(
            s.runtime.providers,
            vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
    }
}
