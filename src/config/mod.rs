//! Configuration: built-in defaults, then a TOML file, then `EBGAND__SECTION__KEY` environment
//! variables, validated into typed [`Settings`].
//!
//! [`RawConfig`] mirrors the file (serde, unknown keys refused). [`RawConfig::validate`] checks
//! every value and reports *all* problems at once, so an operator fixes a config in one pass.
//!
//! Files: `raw.rs` (the file's form), `validate.rs` (checks, into [`Settings`]), `tls.rs` (the
//! broker's TLS configuration, built from PEM files while validating).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::pipeline::decode::PayloadFormat;
use crate::pipeline::topic::TopicFilter;

mod detect;
mod mqtt;
mod raw;
pub mod tls;
mod validate;

pub use detect::acceptance;
pub use raw::*;

/// The documented default configuration (the repository's `config.toml`).
pub const DOCUMENTED_CONFIG: &str = include_str!("../../config.toml");

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
// Typed (validated) form
// ---------------------------------------------------------------------------------------------

/// When a quiet stream counts as stale: silent for `multiple` times its usual interval between
/// messages, and for at least `floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Staleness {
    /// Multiple of the stream's usual interval.
    pub multiple: f64,
    /// Shortest silence that counts.
    pub floor: Duration,
}

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
    /// How every stream is calibrated.
    pub calibration: crate::detect::Calibration,
    /// Most distinct streams.
    pub max_streams: usize,
    /// Streams quiet this long are forgotten (`None`: never).
    pub stream_idle: Option<Duration>,
    /// When a stream's silence raises a stale-stream alert (`[detect] stale_after`).
    pub stale: Option<Staleness>,
    /// This daemon's share of the streams, `(index, count)`; `None`: all of them.
    pub partition: Option<(u32, u32)>,
    /// Topic prefixes of the partitions a broker cluster routes to this daemon (empty: none).
    pub partition_prefixes: Vec<String>,
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
    /// Faults to inject (this crate's tests only; empty in every other build).
    pub faults: crate::faults::Faults,
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
    pub period: LearningPeriod,
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
    /// Whether seeded models retrain on the schedule too (learnt ones always do).
    pub retrain_seeded: bool,
    /// Versions of a model kept in the registry after a training run (`None`: all).
    pub keep_versions: Option<usize>,
}

/// How long a model learns before its first training run: a number of windows, or a
/// duration (whichever comes first; the duration needs at least [`LearningPeriod::MIN`]
/// windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearningPeriod {
    /// Windows to capture.
    pub windows: usize,
    /// Time to capture for, if set.
    pub duration: Option<std::time::Duration>,
}

impl LearningPeriod {
    /// Fewest windows a training run is started on.
    pub const MIN: usize = 10;

    /// Whether learning is over after `captured` windows and `elapsed` time.
    pub fn over(&self, captured: usize, elapsed: std::time::Duration) -> bool {
        captured >= self.windows
            || (self.duration.is_some_and(|d| elapsed >= d) && captured >= Self::MIN)
    }
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
    /// Fewest recent windows a new version is judged on.
    pub gate_min_windows: usize,
}

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (with TLS, the name its certificate is checked against unless
    /// `mqtt.tls.server_name` says otherwise).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Broker {
    /// Parses `host:port`, `[v6]:port`, or a bare host (on `default_port`).
    ///
    /// # Errors
    /// A sentence naming what is wrong with `text`.
    pub fn parse(text: &str, default_port: u16) -> Result<Self, String> {
        let t = text.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: an IPv6 address needs its closing ']'"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{text:?}: expected ':port' after ']'")),
            }
        } else {
            match t.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!("{text:?}: write an IPv6 address as [addr]:port"));
                }
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{text:?}: port must be 1-65535")),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Which messages are checked for being a duplicate (`mqtt.duplicates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// Only those the broker flags DUP.
    #[default]
    Flagged,
    /// Every QoS 1 message: one identical (topic and payload) to a message handed over lately
    /// is a duplicate, flagged or not.
    Identical,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The brokers, in the order they are tried: `mqtt.hosts`, or `mqtt.host` alone. Both
    /// connections start on the first and move to the next on every lost connection.
    pub brokers: Vec<Broker>,
    /// Client id of the ingest connection (the publisher adds `-pub`).
    pub client_id: String,
    /// Prefix of published topics.
    pub prefix: String,
    /// The retained online/offline topic, with the Last Will.
    pub status_topic: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Username and password, both or neither.
    pub credentials: Option<(String, Secret)>,
    /// TLS client configuration (`None`: plain TCP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Alert outbox folder.
    pub outbox_dir: PathBuf,
    /// Home Assistant's discovery prefix, when streams are announced to it (`[homeassistant]`).
    pub homeassistant: Option<String>,
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
    /// Which incoming messages are checked for being duplicates.
    pub duplicates: Duplicates,
}

impl MqttSettings {
    /// The brokers as written in logs: `a:1883, b:1883`.
    pub fn brokers_text(&self) -> String {
        let list: Vec<String> = self.brokers.iter().map(ToString::to_string).collect();
        list.join(", ")
    }
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
    /// The scorer's largest batch (`scoring.max_batch`): a session is run once at it, or at
    /// the larger batch of the daemon's own passes over many windows (the model's bulk batch),
    /// as it loads, beside one window, so that a provider that builds for the shapes it has
    /// seen (TensorRT's engine, for a dynamic batch) builds for the whole range there, off the
    /// scorer, not at the first full batch inside it.
    pub warm_batch: usize,
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
    /// How its windows are judged.
    pub judging: crate::detect::Judging,
    /// Raise after k windows above.
    pub raise_after: u32,
    /// Clear after j windows below.
    pub clear_after: u32,
    /// How long an alert may stay raised before its level is accepted as normal.
    pub accept: crate::detect::Accept,
    /// Its own `[detect]` settings (counted in windows; `season = false`), replacing those of
    /// `[detect]` for it.
    pub tuning: crate::detect::StreamTuning,
}

/// The config file to read: `given` (`--config` or `EBGAND_CONFIG`), else `./config.toml` when
/// it exists, else [`INSTALLED_CONFIG`] when it exists, else none (built-in defaults and the
/// environment only).
pub fn config_path(given: Option<&Path>) -> Option<&Path> {
    let local = Path::new("config.toml");
    let installed = Path::new(INSTALLED_CONFIG);
    given
        .or_else(|| local.exists().then_some(local))
        .or_else(|| installed.exists().then_some(installed))
}

/// Where a package installs the service's configuration: the default of every command when
/// there is no `--config` and no `./config.toml`, so `ebgand models ...` run on the box works
/// on the registry the service keeps.
pub const INSTALLED_CONFIG: &str = "/etc/ebgand/ebgand.toml";

/// The problem of a configuration with no `[[streams]]` ([`Settings::require_streams`]).
pub const NO_STREAMS: &str = "streams: no [[streams]] configured; nothing to score";

impl Settings {
    /// The most windows a stream of `model` learns its calibration from (its own
    /// `learn_windows`, else `[detect]`'s): what a first version's cold start keeps of each
    /// stream to calibrate it on.
    pub fn learn_windows(&self, model: &str) -> u32 {
        self.streams
            .iter()
            .filter(|s| s.model == model)
            .map(|s| {
                s.tuning
                    .learn_windows
                    .unwrap_or(self.calibration.learn_windows)
            })
            .max()
            .unwrap_or(self.calibration.learn_windows)
    }

    /// The daemon needs at least one stream; `score` and `train` do not.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when no stream is configured.
    pub fn require_streams(self) -> Result<Self, ConfigError> {
        if self.streams.is_empty() {
            return Err(ConfigError::Invalid(vec![NO_STREAMS.into()]));
        }
        Ok(self)
    }
}

/// Each `EBGAND__SECTION__KEY` variable of `env` checked as the same key in the file would be,
/// the refused ones returned by name with why: `EBGAND__MQTT__PORT=64.9` is "invalid type: floating point
/// `64.9`, expected u16", `EBGAND__MQTT__PUBLISH_ENERGY=yes` is "expected a boolean", an
/// unknown key is named. A value is read as the TOML literal it spells when that fits the key
/// (`1883`, `true`, `0.05`), else as a string (`broker.lan`, a password of digits).
fn strict_env(env: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut vars: Vec<(&String, &String)> = env.iter().collect();
    vars.sort();
    let prefix = format!("{ENV_PREFIX}__");
    let mut problems = Vec::new();
    for (name, value) in vars {
        // The config crate takes the prefix in any case (`ebgand__mqtt__port`): so does this.
        let Some(path) = name
            .get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&prefix))
            .and_then(|_| name.get(prefix.len()..))
        else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let Some((key, tables)) = keys.split_last().filter(|_| {
            keys.iter()
                .all(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        }) else {
            problems.push((
                name.clone(),
                format!("{name}: not a configuration key (EBGAND__SECTION__KEY)"),
            ));
            continue;
        };
        let doc = |literal: &str| {
            let table = if tables.is_empty() {
                String::new()
            } else {
                format!("[{}]\n", tables.join("."))
            };
            format!("{table}{key} = {literal}\n")
        };
        let literal = doc(value);
        let quoted = doc(&toml::Value::String(value.clone()).to_string());
        let read = |d: &str| {
            toml::from_str::<RawConfig>(d)
                .map(|_| ())
                .map_err(|e| e.message().trim().to_owned())
        };
        let why = match (read(&literal), read(&quoted)) {
            (Ok(()), _) | (_, Ok(())) => continue,
            // The value spells a TOML literal (a number, a boolean) of the wrong type.
            (Err(e), Err(_)) if toml::from_str::<toml::Table>(&literal).is_ok() => e,
            (Err(_), Err(e)) => e,
        };
        // The value is not repeated: a type error quotes it, and a mistyped key may hold a secret.
        problems.push((name.clone(), format!("{name}: {why}")));
    }
    problems
}

/// Reads a config file as TOML exactly as written: no unknown section or key, every value of
/// its key's type and within its range, nothing coerced (`64.9` is not a port, `"yes"` is not
/// a boolean). Returns each problem as `FILE:LINE: message`, and, so that the rest can be
/// checked too, the text without the lines of the problems a lenient reading cannot get past
/// (unknown sections and keys, values out of range; values of another type are left in), and
/// the text without any line of a problem; line numbers stay those of the file.
pub fn strict(path: &Path, text: &str) -> (Vec<String>, String, String) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut known: Vec<String> = lines.clone();
    let mut problems = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..64 {
        let current = lines.join("\n");
        let Err(e) = toml::from_str::<RawConfig>(&current) else {
            break;
        };
        let Some(span) = e.span() else {
            problems.push(format!("{}: {}", path.display(), e.message()));
            break;
        };
        if blanked
            .iter()
            .any(|k| e.message().starts_with(&format!("missing field `{k}`")))
        {
            // Made by taking a bad line out: nothing further can be told reliably.
            break;
        }
        let line_of = |at: usize| current[..at.min(current.len())].matches('\n').count();
        let (first, last) = (
            line_of(span.start),
            line_of(span.end.max(span.start + 1) - 1),
        );
        problems.push(format!(
            "{}:{}: {}",
            path.display(),
            first + 1,
            e.message().trim()
        ));
        let header = lines[first].trim_start().starts_with('[');
        let end = if header {
            // An unknown section: its keys go with it.
            (first + 1..lines.len())
                .find(|&i| lines[i].trim_start().starts_with('['))
                .unwrap_or(lines.len())
        } else {
            last + 1
        };
        let before = lines.clone();
        // Unknown keys and values out of range cannot be read leniently either; a value of
        // another type often can (`"yes"`, `64.9`).
        if !e.message().starts_with("invalid type") {
            for l in &mut known[first..end.min(before.len())] {
                l.clear();
            }
        }
        for l in &mut lines[first..end.min(before.len())] {
            if let Some((key, _)) = l.split_once('=') {
                blanked.push(key.trim().trim_matches('"').to_owned());
            }
            l.clear();
        }
        if lines == before {
            break;
        }
    }
    (problems, known.join("\n"), lines.join("\n"))
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
        let (raw, problems) = Self::load_strict(file, env)?;
        if problems.is_empty() {
            Ok(raw)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// [`RawConfig::load`], reading the file strictly ([`strict`]): its problems are returned
    /// beside the configuration made of the rest of it, so that a caller can report them with
    /// every other problem at once.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing or unreadable, or the rest does not load.
    pub fn load_strict(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut builder = config::Config::builder();
        let mut problems = Vec::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            // Told with the file's other problems: one run of check-config shows them all.
            let refused = match mqtt::refuse_readable_password(path) {
                Err(ConfigError::Invalid(refused)) => refused,
                other => other.map(|()| Vec::new())?,
            };
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(vec![format!("{}: cannot read: {e}", path.display())])
            })?;
            let (known, rest);
            (problems, known, rest) = strict(path, &text);
            // The rest is checked as the file says, without unknown keys, where that loads (its
            // problems are reported already, so a value read leniently is not silently taken),
            // else without the lines of the problems.
            let loads = |t: &str| {
                config::Config::builder()
                    .add_source(config::File::from_str(t, config::FileFormat::Toml))
                    .build()
                    .and_then(config::Config::try_deserialize::<RawConfig>)
                    .is_ok()
            };
            let source = if problems.is_empty() || loads(&known) {
                known
            } else {
                rest
            };
            builder = builder.add_source(config::File::from_str(&source, config::FileFormat::Toml));
            problems.extend(refused);
        }
        // The environment is read as strictly as the file: the config crate's own reading would
        // take `64.9` for 65 and `yes` for true.
        // The variables it refuses are left out, so each problem is told once.
        let mut vars: HashMap<String, String> = env.unwrap_or_else(|| std::env::vars().collect());
        for (name, why) in strict_env(&vars) {
            vars.remove(&name);
            problems.push(why);
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            // Each value stays the text it is; the key's type reads it (strict_env checked
            // it), so a password `007` or a client id `1e3` is not turned into 7 or 1000.
            .try_parsing(false)
            .source(Some(vars));
        let loaded = builder
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize);
        match loaded {
            Ok(raw) => {
                problems.extend(case_twins(&raw));
                Ok((raw, problems))
            }
            Err(e) if !problems.is_empty() => {
                problems.push(e.to_string());
                Err(ConfigError::Invalid(problems))
            }
            Err(e) => Err(e.into()),
        }
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
}

/// Models whose names differ only in case: the environment's keys are read in lower case, so
/// `EBGAND__MODELS__PUMPA__PATH` makes a model `pumpa` beside the file's `[models.PumpA]`
/// instead of setting it, and nothing would say so.
fn case_twins(raw: &RawConfig) -> Vec<String> {
    let names: Vec<&String> = raw.models.keys().collect();
    let mut out = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if a.eq_ignore_ascii_case(b) {
                out.push(format!(
                    "models.{a} and models.{b}: names that differ only in case (the environment \
                     reads its keys in lower case, so EBGAND__MODELS__... sets a model of its \
                     own beside one named with capitals): name the model in lower case to set it \
                     from the environment"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
