//! MQTT: the ingest connection (subscribe, decode, window, ack after windowing), the publish
//! connection (alerts, state, energy, status), topic filters, and reconnect backoff.
//!
//! Two connections, on purpose: the ingest loop may wait on a full window queue (that is the
//! backpressure that makes the broker hold messages), and the alerts that drain that queue must
//! not wait behind it in the same client's request channel.

pub mod ingest;
pub mod publish;
pub mod topic;

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS};

use crate::config::MqttSettings;

pub use ingest::Ingest;
pub use publish::{Publisher, PublisherLoop};
pub use topic::TopicFilter;

/// Errors of the MQTT stages.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A request could not be handed to the client (its event loop stopped).
    #[error("MQTT client request failed: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// A message could not be serialised.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Exponential backoff with jitter, reset after a successful connection.
///
/// rumqttc reconnects on the very next `poll()` after an error, with no delay; without this a
/// broker outage becomes a busy loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: half the exponential step plus up to half again at random ("equal
    /// jitter"), so many daemons do not reconnect in lockstep but none retries at once.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to `min` (after a ConnAck).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribes to streams, manual acks.
    Ingest,
    /// Publishes alerts, state, energy and status; carries the Last Will.
    Publish,
}

impl Role {
    /// Label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Publish => "publish",
        }
    }
}

/// The `{prefix}/status` topic.
pub fn status_topic(prefix: &str) -> String {
    format!("{prefix}/status")
}

/// The status payload.
pub fn status_payload(online: bool, node: &str) -> Vec<u8> {
    let status = if online { "online" } else { "offline" };
    serde_json::json!({ "status": status, "node": node, "version": env!("CARGO_PKG_VERSION") })
        .to_string()
        .into_bytes()
}

/// Client options for one connection: stable client id, persistent session, QoS 1 flow control,
/// credentials; manual acks for ingest, the Last Will for publish.
pub fn options(s: &MqttSettings, role: Role, node: &str) -> MqttOptions {
    let id = match role {
        Role::Ingest => s.client_id.clone(),
        Role::Publish => format!("{}-pub", s.client_id),
    };
    let mut o = MqttOptions::new(id, s.host.clone(), s.port);
    o.set_keep_alive(s.keep_alive)
        .set_clean_session(false)
        .set_inflight(s.inflight)
        .set_max_packet_size(s.max_packet_bytes, s.max_packet_bytes);
    if let Some((user, pass)) = &s.credentials {
        o.set_credentials(user.clone(), pass.expose().to_owned());
    }
    match role {
        Role::Ingest => {
            o.set_manual_acks(true);
        }
        Role::Publish => {
            o.set_last_will(LastWill::new(
                status_topic(&s.prefix),
                status_payload(false, node),
                QoS::AtLeastOnce,
                true,
            ));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[5..] {
            assert!(
                *x >= Duration::from_secs(1) && *x <= Duration::from_secs(2),
                "{x:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
