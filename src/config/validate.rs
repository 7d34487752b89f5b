//! [`RawConfig::validate`]: every value checked, every problem reported at once, into typed
//! [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::detect::{
    acceptance, check_alert_probability, check_own_season, check_window_counts,
    validate_calibration,
};
use super::tls::{TlsFiles, client_config};
use super::*;

/// Smallest `mqtt.max_packet_bytes`.
const MIN_PACKET: usize = 1024;

/// Largest `mqtt.max_packet_bytes`: well inside what one ingest journal record holds (64 MiB).
const MAX_PACKET: usize = 32 << 20;

impl RawConfig {
    /// Checks every value and returns typed settings, or every problem found.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each bad value with its key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut errs: Vec<String> = Vec::new();
        let m = &self.mqtt;
        if m.port == 0 {
            errs.push("mqtt.port: must be 1-65535".into());
        }
        let brokers = brokers(m, &mut errs);
        let duplicates = match m.duplicates.as_str() {
            "flagged" => Duplicates::Flagged,
            "identical" => Duplicates::Identical,
            other => {
                errs.push(format!(
                    "mqtt.duplicates: {other:?} is not one of \"flagged\", \"identical\""
                ));
                Duplicates::Flagged
            }
        };
        let mut topic_prefix = |key: &str, p: &str| {
            if p.is_empty() || p.contains(['+', '#']) || p.ends_with('/') {
                errs.push(format!(
                    "{key}: {p:?} must be non-empty, without wildcards or a trailing '/'"
                ));
            }
        };
        if self.homeassistant.enabled {
            topic_prefix(
                "homeassistant.discovery_prefix",
                &self.homeassistant.discovery_prefix,
            );
        }
        topic_prefix("mqtt.prefix", &m.prefix);
        if !m.status_topic.is_empty() {
            topic_prefix("mqtt.status_topic", &m.status_topic);
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
        if !(MIN_PACKET..=MAX_PACKET).contains(&m.max_packet_bytes) {
            errs.push(format!(
                "mqtt.max_packet_bytes: {} must be in {MIN_PACKET}-{MAX_PACKET} (a journal record \
                 holds one message; larger messages are acknowledged unread and counted as \
                 malformed, reason \"oversize\")",
                m.max_packet_bytes
            ));
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
        // Built once: `season_zone = "local"` reads the system's zone (and warns when it
        // cannot), and the streams' own window counts are checked against it.
        let calibration = self.detect.calibration();
        validate_calibration(&self.detect, &calibration, &mut errs);

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
                let discovery = self.homeassistant.enabled.then(|| {
                    format!(
                        "{}/binary_sensor/x/x/config",
                        self.homeassistant.discovery_prefix
                    )
                });
                if let Some(t) = own
                    .iter()
                    .map(|t| format!("{}/{t}", m.prefix))
                    .chain(discovery)
                    .find(|t| f.captures(t).is_some())
                {
                    errs.push(format!(
                        "{at}.topic: {:?} also matches ebgand's own topic {t:?} (mqtt.prefix {:?})",
                        st.topic, m.prefix
                    ));
                }
            }
            if let Some(s) =
                validate_stream(st, &at, &self.detect, &calibration, &models, &mut errs)
            {
                if !names.insert(s.name.clone()) {
                    errs.push(format!("{at}.name: duplicate stream name"));
                }
                streams.push(s);
            }
        }

        let http_listen = if self.http.listen.trim().is_empty() {
            None
        } else {
            match listen_addr(&self.http.listen) {
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
        if g.gate_min_windows > g.gate_windows {
            errs.push(format!(
                "registry.gate_min_windows: {} is more than the gate_windows ({}) kept",
                g.gate_min_windows, g.gate_windows
            ));
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
        let prefixes = &self.partition.prefixes;
        for (i, p) in prefixes.iter().enumerate() {
            if p.is_empty() || p.contains(['+', '#']) || p.starts_with('/') || p.ends_with('/') {
                errs.push(format!(
                    "partition.prefixes: {p:?} must be non-empty, without wildcards or a leading or trailing '/'"
                ));
            } else if prefixes[..i].contains(p) {
                errs.push(format!("partition.prefixes: {p:?} is listed twice"));
            }
        }
        if !prefixes.is_empty() && self.partition.count > 1 {
            errs.push(
                "partition: prefixes (partitions the broker makes) and count > 1 (partitions \
                 ebgand makes on one broker) are two ways of sharing streams; use one"
                    .into(),
            );
        }
        if self.limits.max_streams == 0 {
            errs.push("limits.max_streams: must be at least 1".into());
        }

        match (errs.is_empty(), max_batch, queue_windows) {
            (true, Some(max_batch), Some(queue_windows)) => Ok(Settings {
                node,
                mqtt: MqttSettings {
                    brokers,
                    client_id,
                    prefix: m.prefix.clone(),
                    status_topic: if m.status_topic.is_empty() {
                        format!("{}/status", m.prefix)
                    } else {
                        m.status_topic.clone()
                    },
                    keep_alive: Duration::from_secs(m.keep_alive_s),
                    credentials: (!m.username.is_empty()).then(|| (m.username.clone(), password)),
                    tls,
                    outbox_dir: PathBuf::from(&m.outbox_dir),
                    homeassistant: self
                        .homeassistant
                        .enabled
                        .then(|| self.homeassistant.discovery_prefix.clone()),
                    outbox_max: m.outbox_max,
                    reconnect_min: Duration::from_millis(m.reconnect_min_ms),
                    reconnect_max: Duration::from_millis(m.reconnect_max_ms),
                    inflight: m.inflight,
                    publish_energy: m.publish_energy,
                    energy_qos,
                    max_packet_bytes: m.max_packet_bytes,
                    duplicates,
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
                calibration,
                max_streams: self.limits.max_streams,
                stream_idle: (self.limits.stream_idle_s > 0)
                    .then(|| Duration::from_secs(self.limits.stream_idle_s)),
                stale: (self.detect.stale_after > 0.0).then(|| Staleness {
                    multiple: self.detect.stale_after,
                    floor: Duration::from_secs_f64(self.detect.stale_min_s.max(0.0)),
                }),
                partition: (self.partition.count > 1)
                    .then_some((self.partition.index, self.partition.count)),
                partition_prefixes: self.partition.prefixes.clone(),
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
                    gate_min_windows: g.gate_min_windows,
                },
                control: self.control.enabled,
                control_per_minute: self.control.max_per_minute,
                journal: j.enabled.then(|| JournalSettings {
                    dir: PathBuf::from(&j.dir),
                    segment_bytes: j.segment_mb << 20,
                    max_bytes: j.max_mb << 20,
                    checkpoint: Duration::from_millis(j.checkpoint_ms),
                }),
                faults: crate::faults::Faults::default(),
                learning: LearningSettings {
                    period: LearningPeriod {
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
                    retrain_seeded: self.learning.retrain_seeded,
                    keep_versions: (self.learning.keep_versions > 0)
                        .then_some(self.learning.keep_versions),
                },
            }),
            _ => Err(ConfigError::Invalid(errs)),
        }
    }
}

/// A config file every user can read must not hold the broker password: it would be
/// everyone's. (The file alone is parsed here; a password from the environment is fine.)
pub(super) fn refuse_readable_password(path: &Path) -> Result<(), ConfigError> {
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

/// `mqtt.hosts` (or `mqtt.host` alone) parsed.
fn brokers(m: &RawMqtt, errs: &mut Vec<String>) -> Vec<Broker> {
    if m.hosts.is_empty() {
        if m.host.trim().is_empty() {
            errs.push("mqtt.host: must not be empty".into());
        }
        return vec![Broker {
            host: m.host.trim().to_owned(),
            port: m.port,
        }];
    }
    let mut out: Vec<Broker> = Vec::new();
    for h in &m.hosts {
        match Broker::parse(h, m.port) {
            Ok(b) if out.contains(&b) => errs.push(format!("mqtt.hosts: {b} is listed twice")),
            Ok(b) => out.push(b),
            Err(e) => errs.push(format!("mqtt.hosts: {e}")),
        }
    }
    out
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

/// A stream's acceptance: its own `accept_after` / `accept_after_s` when it sets either (the
/// pair replaces `[detect]`'s), else `[detect]`'s. One in seconds needs the stream's samples to
/// carry their times (`format`, [`PayloadFormat::timed`]). `None` (with the reason in `errs`) when it is not valid; `[detect]`'s
/// own errors are reported once, with `[detect]`.
fn stream_acceptance(
    st: &RawStream,
    format: Option<&PayloadFormat>,
    detect: &RawDetect,
    at: &str,
    errs: &mut Vec<String>,
) -> Option<crate::detect::Accept> {
    let own = st.accept_after.is_some() || st.accept_after_s.is_some();
    let accept = if own {
        let (w, s) = (
            st.accept_after.unwrap_or(0),
            st.accept_after_s.unwrap_or(0.0),
        );
        acceptance(w, s, &format!("{at}."))
            .map_err(|e| errs.push(e))
            .ok()?
    } else {
        acceptance(detect.accept_after, detect.accept_after_s, "detect.").ok()?
    };
    // An unknown format is reported on its own.
    let untimed = format.is_some_and(|f| !f.timed());
    if matches!(accept, crate::detect::Accept::Seconds(_)) && untimed {
        let setting = if own {
            format!("{at}.accept_after_s")
        } else {
            format!("{at}: [detect] accept_after_s")
        };
        errs.push(format!(
            "{setting} counts the stream's own time, and its samples carry none: give it a timestamp_field (format \"object\"), or accept_after in windows"
        ));
        return None;
    }
    Some(accept)
}

/// Most values (window x channels) in one stream's window.
pub const MAX_WINDOW_VALUES: usize = 1 << 20;

fn validate_stream(
    st: &RawStream,
    at: &str,
    detect: &RawDetect,
    shared: &crate::detect::Calibration,
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
    // An object stream has a channel per field unless it says otherwise (and then they must agree).
    let st_channels = st.channels.unwrap_or(if st.format == "object" {
        st.fields.len().max(1)
    } else {
        1
    });
    let channels = NonZeroUsize::new(st_channels);
    if channels.is_none() {
        errs.push(format!("{at}.channels: must be at least 1"));
    }
    let format = match st.format.as_str() {
        "number" => {
            if st_channels != 1 {
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
            } else if st.fields.len() != st_channels {
                errs.push(format!(
                    "{at}.channels: {} but {} fields are listed (one channel per field)",
                    st_channels,
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
    if st.window.saturating_mul(st_channels.max(1)) > MAX_WINDOW_VALUES {
        errs.push(format!(
            "{at}.window x channels: {} x {} is over the limit of {MAX_WINDOW_VALUES} values",
            st.window, st_channels
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
    if let Some(p) = st.alert_probability {
        check_alert_probability(p, detect.tail_quantile, &format!("{at}."), errs);
        if st.threshold.is_some() {
            errs.push(format!(
                "{at}: give threshold (judge by energy) or alert_probability, not both"
            ));
        }
    }
    let judging = detect.judging(st.threshold, st.alert_probability);
    let raise_after = st.raise_after.unwrap_or(detect.raise_after);
    let clear_after = st.clear_after.unwrap_or(detect.clear_after);
    if raise_after == 0 || clear_after == 0 {
        errs.push(format!(
            "{at}.raise_after / clear_after: must be at least 1"
        ));
    }
    let accept = stream_acceptance(st, format.as_ref(), detect, at, errs);
    let tuning = st.tuning();
    if !tuning.is_empty() {
        // Checked with [detect]'s in place of the ones the stream leaves alone; what is
        // wrong with [detect]'s alone is said once, of [detect].
        let (mut theirs, mut own) = (Vec::new(), Vec::new());
        check_window_counts(shared, "", &mut theirs);
        check_window_counts(&shared.tuned(&tuning), "", &mut own);
        errs.extend(
            own.into_iter()
                .filter(|e| !theirs.contains(e))
                .map(|e| format!("{at}.{e}")),
        );
    }
    if st.season == Some(true) {
        check_own_season(shared, !st.timestamp_field.is_empty(), at, errs);
    }
    let mut channels = channels;
    if let Some(params) = &st.logmel {
        if st_channels != 1 || st.format == "object" {
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
        judging,
        raise_after,
        clear_after,
        accept: accept?,
        tuning,
    })
}

/// A listen address as people write them: `127.0.0.1:9898`, `[::1]:9898`, `localhost:9898`
/// (resolved; the first address), or `:9898` (every interface).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port (0-65535)"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, :PORT or IP:PORT")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port (0-65535)"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn default_node() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge".into())
}
