//! `[mqtt]`'s checks: the brokers, the credentials (a password in a file every user can read
//! is refused), TLS, ebgand's own topics and the limits, into [`MqttSettings`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::tls::{TlsFiles, client_config};
use super::*;

/// Smallest `mqtt.max_packet_bytes`.
const MIN_PACKET: usize = 1024;

/// Largest `mqtt.max_packet_bytes`: well inside what one ingest journal record holds (64 MiB).
const MAX_PACKET: usize = 32 << 20;

impl RawConfig {
    /// `[mqtt]` alone, checked, for a tool that talks to the daemon's broker (`replay`):
    /// the rest of the file is not its business.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each bad `[mqtt]` value.
    pub fn mqtt_alone(&self) -> Result<MqttSettings, ConfigError> {
        let mut errs = Vec::new();
        let mqtt = self.mqtt_settings("tool", &mut errs);
        if errs.is_empty() {
            Ok(mqtt)
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }

    /// `[mqtt]` (and `[homeassistant]`'s prefix): the brokers, credentials, TLS, topics and
    /// limits. The client id defaults to `ebgand-{node}`.
    pub(super) fn mqtt_settings(&self, node: &str, errs: &mut Vec<String>) -> MqttSettings {
        let m = &self.mqtt;
        if m.port == 0 {
            errs.push("mqtt.port: must be 1-65535".into());
        }
        let brokers = brokers(m, errs);
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
        // MQTT carries it in 16 bits: more would wrap (65536 is 0, keep-alive off).
        if !(5..=65_535).contains(&m.keep_alive_s) {
            errs.push(format!(
                "mqtt.keep_alive_s: {} must be 5-65535",
                m.keep_alive_s
            ));
        }
        let password = mqtt_password(m, errs);
        if m.username.is_empty() != password.expose().is_empty() {
            errs.push(
                "mqtt.username / mqtt.password (or password_file): give both or neither".into(),
            );
        }
        let tls = mqtt_tls(m, errs);
        if m.outbox_dir.is_empty() || m.outbox_max == 0 {
            errs.push(
                "mqtt.outbox_dir / outbox_max: need a folder and a bound of at least 1".into(),
            );
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
                 holds one message; larger messages are read once, acknowledged, not windowed and \
                 counted as malformed, reason \"oversize\")",
                m.max_packet_bytes
            ));
        }
        let client_id = if m.client_id.is_empty() {
            format!("ebgand-{node}")
        } else {
            m.client_id.clone()
        };
        if client_id.len() > 23 * 4 {
            errs.push(format!("mqtt.client_id: {client_id:?} is too long"));
        }
        MqttSettings {
            brokers,
            client_id,
            prefix: m.prefix.clone(),
            status_topic: status_topic(m),
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
/// The topic of ebgand's online/offline status: `mqtt.status_topic`, else `{prefix}/status`.
pub(super) fn status_topic(m: &RawMqtt) -> String {
    if m.status_topic.is_empty() {
        format!("{}/status", m.prefix)
    } else {
        m.status_topic.clone()
    }
}

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
