//! Home Assistant MQTT discovery (`[homeassistant]`, off by default): each stream's alert state
//! as a `binary_sensor` (device class `problem`: on while an alert is raised), read from the
//! stream's retained state on `{prefix}/state/{stream}`, its attributes the state message
//! itself (energy, probability, what carried it), available while the status topic
//! (`mqtt.status_topic`, `{prefix}/status` by default) says `online`. One device per ebgand
//! node holds the node's streams.
//!
//! The config is published retained, QoS 1, on
//! `{discovery_prefix}/binary_sensor/ebgand_{node}/{stream}/config` before a stream's first
//! state of this run, so Home Assistant finds it whenever it starts. A stream ebgand forgets
//! (quiet past `[limits] stream_idle_s`) keeps its entity (its retained state then says
//! `forgotten`): a dead sensor stays visible; remove it in Home Assistant, or by publishing an
//! empty retained message on its config topic.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::json;

/// Announces streams to Home Assistant, once each per run.
#[derive(Debug)]
pub struct Discovery {
    discovery_prefix: String,
    prefix: String,
    status_topic: String,
    node: String,
    /// `ebgand_{node}`, as Home Assistant takes an id: the device's, and the start of each
    /// entity's.
    node_id: String,
    /// Streams announced this run (bounded by the streams active at once: a forgotten stream
    /// leaves it).
    announced: Mutex<HashSet<String>>,
}

impl Discovery {
    /// Discovery under `discovery_prefix` for a node publishing under `prefix`.
    pub fn new(discovery_prefix: &str, prefix: &str, status_topic: &str, node: &str) -> Self {
        Self {
            discovery_prefix: discovery_prefix.to_owned(),
            prefix: prefix.to_owned(),
            status_topic: status_topic.to_owned(),
            node: node.to_owned(),
            node_id: format!("ebgand_{}", object_id(node)),
            announced: Mutex::new(HashSet::new()),
        }
    }

    /// The config to publish for `stream`, the first time it is asked this run.
    pub fn announce(&self, stream: &str) -> Option<(String, Vec<u8>)> {
        let mut announced = self
            .announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        announced
            .insert(stream.to_owned())
            .then(|| self.config(stream))
    }

    /// Forgets that `stream` was announced (ebgand forgot the stream).
    pub fn forget(&self, stream: &str) {
        self.announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(stream);
    }

    /// The discovery topic of `stream`'s binary sensor.
    pub fn topic(&self, stream: &str) -> String {
        self.topic_of(&object_id(stream))
    }

    fn topic_of(&self, object: &str) -> String {
        let (prefix, node_id) = (&self.discovery_prefix, &self.node_id);
        format!("{prefix}/binary_sensor/{node_id}/{object}/config")
    }

    /// The discovery topic and payload of `stream`'s binary sensor.
    pub fn config(&self, stream: &str) -> (String, Vec<u8>) {
        let node_id = &self.node_id;
        let object = object_id(stream);
        let topic = self.topic_of(&object);
        let state = format!("{}/state/{stream}", self.prefix);
        let payload = json!({
            "name": stream,
            "unique_id": format!("{node_id}_{object}"),
            // Home Assistant 2025.10 on; `object_id` for older ones (2026.4 ignores it).
            "default_entity_id": format!("binary_sensor.{}", entity_slug(&format!("{node_id}_{object}"))),
            "object_id": format!("ebgand_{object}"),
            "device_class": "problem",
            "state_topic": state,
            // A learning stream's state has no `state`: it is not in alert.
            "value_template": "{{ 'ON' if value_json.state is defined and value_json.state == 'raised' else 'OFF' }}",
            "json_attributes_topic": state,
            "availability": [{
                "topic": self.status_topic,
                "value_template": "{{ value_json.status }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }],
            "qos": 1,
            "device": {
                "identifiers": [node_id],
                "name": format!("ebgand {}", self.node),
                "manufacturer": "ebgand",
                "model": "EBGAN energy anomaly detector",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
            "origin": { "name": "ebgand", "sw_version": env!("CARGO_PKG_VERSION") },
        });
        (topic, payload.to_string().into_bytes())
    }
}

/// What Home Assistant accepts as a node or object id (`[a-zA-Z0-9_-]`): other characters
/// become `_`, and a short hash of the original keeps ids that differ only there apart.
pub fn object_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == id && !id.is_empty() {
        return clean;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    format!(
        "{clean}_{:02x}{:02x}{:02x}{:02x}",
        hash[0], hash[1], hash[2], hash[3]
    )
}

/// An entity id's object part as Home Assistant writes one: lower case, runs of anything but
/// `[a-z0-9]` one `_`, none at either end.
fn entity_slug(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_what_home_assistant_accepts_and_stay_apart() {
        assert_eq!(object_id("pump-1_a"), "pump-1_a");
        let (a, b) = (object_id("site/pump 1"), object_id("site_pump_1"));
        assert!(a.starts_with("site_pump_1_") && a.len() == "site_pump_1_".len() + 8);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn a_stream_is_announced_once_until_forgotten() {
        let d = Discovery::new("homeassistant", "ebgand", "ebgand/status", "edge-1");
        let (topic, payload) = d.announce("pump/7").unwrap();
        assert!(d.announce("pump/7").is_none());
        d.forget("pump/7");
        assert!(d.announce("pump/7").is_some());
        assert!(topic.starts_with("homeassistant/binary_sensor/ebgand_edge-1/pump_7_"));
        assert!(topic.ends_with("/config"));
        let c: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(c["state_topic"], "ebgand/state/pump/7");
        assert_eq!(c["json_attributes_topic"], "ebgand/state/pump/7");
        assert_eq!(c["availability"][0]["topic"], "ebgand/status");
        assert_eq!(c["device_class"], "problem");
        assert_eq!(c["device"]["identifiers"][0], "ebgand_edge-1");
        // The node is in the entity id: two nodes' streams of the same name stay apart.
        let entity = c["default_entity_id"].as_str().unwrap();
        assert!(
            entity.starts_with("binary_sensor.ebgand_edge_1_pump_7_"),
            "{entity}"
        );
        assert_eq!(entity_slug("Site--A/__b_"), "site_a_b");
    }
}
