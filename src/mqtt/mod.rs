//! MQTT, transport only: the ingest connection ([`source`]: subscribe, poll, hand messages over,
//! send the acks, recognise redeliveries), the publish connection ([`sink`]: alerts through
//! the outbox, state, energy, status), client options and reconnect backoff. Nothing here knows
//! streams, models or verdicts.
//!
//! Two connections, on purpose: the ingest stage may wait on a full window queue (that is the
//! backpressure that makes the broker hold messages), and the alerts that drain that queue must
//! not wait behind it in the same client's request channel.

pub mod homeassistant;
pub mod redeliveries;
pub mod sink;
pub mod source;

use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, LastWill, MqttOptions, QoS, TlsConfiguration, Transport,
};

use crate::config::{Broker, MqttSettings};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{ConnLabel, FailureLabel};

pub use redeliveries::MessageId;
pub use sink::{Publisher, PublisherLoop};
pub use source::{Acker, Delivery, Source};

/// Errors of the MQTT stages.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A request could not be handed to the client (its event loop stopped).
    #[error("MQTT client request failed: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// A message could not be serialised.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The alert outbox could not be written.
    #[error("{0}")]
    Outbox(#[from] crate::durable::outbox::OutboxError),
}

/// Exponential backoff with jitter, reset once a connection has stayed up for a while.
///
/// rumqttc reconnects on the very next `poll()` after an error, with no delay; without this a
/// broker outage becomes a busy loop. The reset waits for [`STABLE_AFTER`] of uptime, not for
/// the ConnAck: a broker that accepts the connection and then drops it at once (mosquitto does
/// this to a client whose writes its ACL denies) would otherwise get a reconnect every few
/// milliseconds.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    connected_at: Option<std::time::Instant>,
}

/// Uptime after which a lost connection counts as a fresh start for the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A connection lost sooner than this after its ConnAck was dropped by the broker on purpose.
pub const DROPPED_AFTER_CONNECT: Duration = Duration::from_secs(2);

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
            connected_at: None,
        }
    }

    /// A ConnAck arrived.
    pub fn connected(&mut self) {
        self.connected_at = Some(std::time::Instant::now());
    }

    /// How long the current connection has been up (`None`: not connected).
    pub fn uptime(&self) -> Option<Duration> {
        self.connected_at.map(|t| t.elapsed())
    }

    /// The next delay: half the exponential step plus up to half again at random ("equal
    /// jitter"), so many daemons do not reconnect in lockstep but none retries at once.
    pub fn next_delay(&mut self) -> Duration {
        if self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
        {
            self.attempt = 0;
        }
        let step = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A lost connection: the delay before the next attempt, with the failure described as
    /// [`describe`] does, except that a connection the broker dropped within
    /// [`DROPPED_AFTER_CONNECT`] of accepting it is `dropped_after_connect`.
    pub fn lost(&mut self, e: &ConnectionError) -> (Duration, &'static str, String) {
        let (mut reason, mut why) = describe(e);
        if self.uptime().is_some_and(|u| u < DROPPED_AFTER_CONNECT)
            && matches!(reason, "io" | "other")
        {
            reason = "dropped_after_connect";
            why = format!(
                "the broker closed the connection right after accepting it ({why}); often its ACL \
                 denies a topic ebgand writes (the Last Will and status on {{prefix}}/status)"
            );
        }
        (self.next_delay(), reason, why)
    }
}

/// A std mutex guard, poisoned or not (the publisher's tag queue and the ingest connection
/// number have no invariant a panic could break).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lost or refused connection: counted by reason (`ebgand_mqtt_connect_failures_total`),
/// logged, and the delay before the next attempt.
pub(crate) fn report_lost(
    backoff: &mut Backoff,
    metrics: &Metrics,
    role: Role,
    e: &ConnectionError,
) -> Duration {
    let (delay, reason, why) = backoff.lost(e);
    metrics
        .connect_failures
        .get_or_create(&FailureLabel {
            connection: role.as_str(),
            reason,
        })
        .inc();
    tracing::error!(mqtt.connection = role.as_str(), reason, error = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost or refused.");
    delay
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

/// The status payload.
pub fn status_payload(online: bool, node: &str) -> Vec<u8> {
    let status = if online { "online" } else { "offline" };
    serde_json::json!({ "status": status, "node": node, "version": env!("CARGO_PKG_VERSION") })
        .to_string()
        .into_bytes()
}

/// The brokers one connection tries, and its client options for each: it starts on the first
/// of `mqtt.hosts` and moves to the next after every lost connection or failed attempt, round
/// and round, with the same client id, so a cluster that replicates sessions (NATS) hands the
/// persistent session and its queued QoS 1 messages over. The reconnect backoff runs across
/// the list, not per broker.
#[derive(Debug, Clone)]
pub struct Failover {
    settings: MqttSettings,
    role: Role,
    node: String,
    current: usize,
}

impl Failover {
    /// Starts on the first broker of `settings.brokers` (validation never leaves the list
    /// empty; a hand-built one that is gets `127.0.0.1:1883`).
    pub fn new(settings: &MqttSettings, role: Role, node: &str) -> Self {
        let mut settings = settings.clone();
        if settings.brokers.is_empty() {
            settings.brokers.push(Broker {
                host: "127.0.0.1".into(),
                port: 1883,
            });
        }
        Self {
            settings,
            role,
            node: node.to_owned(),
            current: 0,
        }
    }

    /// The broker connected or being tried.
    pub fn current(&self) -> &Broker {
        &self.settings.brokers[self.current % self.settings.brokers.len()]
    }

    /// Client options for the current broker.
    pub fn options(&self) -> MqttOptions {
        options_for(&self.settings, self.role, &self.node, self.current())
    }

    /// After a lost connection: moves `eventloop` to the next broker, if there is more than one,
    /// counting and logging the move. The options are rebuilt for it (same client id, session,
    /// credentials, TLS), so the packet size limit is the configured one again.
    pub(crate) fn move_on(&mut self, eventloop: &mut rumqttc::EventLoop, metrics: &Metrics) {
        if self.settings.brokers.len() < 2 {
            return;
        }
        let from = self.current().to_string();
        self.current = (self.current + 1) % self.settings.brokers.len();
        eventloop.mqtt_options = self.options();
        let connection = self.role.as_str();
        metrics
            .failovers
            .get_or_create(&ConnLabel { connection })
            .inc();
        tracing::warn!(mqtt.connection = connection, from = %from, to = %self.current(), "Trying the next broker of mqtt.hosts.");
    }
}

/// Client options for one connection to `broker`: stable client id, persistent session, QoS 1
/// flow control, credentials, TLS (the certificate checked against `broker`'s host unless
/// `mqtt.tls.server_name` names another); manual acks for ingest, the Last Will for publish.
fn options_for(s: &MqttSettings, role: Role, node: &str, broker: &Broker) -> MqttOptions {
    let id = match role {
        Role::Ingest => s.client_id.clone(),
        Role::Publish => format!("{}-pub", s.client_id),
    };
    let mut o = client_options(s, id, broker);
    o.set_clean_session(false);
    match role {
        Role::Ingest => {
            o.set_manual_acks(true);
        }
        Role::Publish => {
            o.set_last_will(LastWill::new(
                s.status_topic.clone(),
                status_payload(false, node),
                QoS::AtLeastOnce,
                true,
            ));
        }
    }
    o
}

/// Client options for `id` on `broker` with the config's keep-alive, flow control, packet
/// limit, credentials and TLS, and a clean session (the daemon's connections keep theirs).
pub fn client_options(s: &MqttSettings, id: String, broker: &Broker) -> MqttOptions {
    let mut o = MqttOptions::new(id, broker.host.clone(), broker.port);
    o.set_keep_alive(s.keep_alive)
        .set_inflight(s.inflight)
        .set_max_packet_size(s.max_packet_bytes, s.max_packet_bytes);
    if let Some((user, pass)) = &s.credentials {
        o.set_credentials(user.clone(), pass.expose().to_owned());
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    o
}

/// Why a connection attempt failed, as a metric label and a sentence for the log.
///
/// A refusal (bad credentials, not authorised, an untrusted certificate) will not go away by
/// itself; the caller still retries with backoff, so fixing the broker side is enough to
/// recover, and a refusal never becomes a tight reconnect loop or a crash.
pub fn describe(e: &ConnectionError) -> (&'static str, String) {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorised",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
                ConnectReturnCode::Success => "success code in a refusal",
            };
            (
                "refused",
                format!("the broker refused the connection: {why}"),
            )
        }
        ConnectionError::Tls(e) => (
            "tls",
            format!(
                "TLS handshake failed: {e} (check mqtt.tls: CA file, server name, client certificate)"
            ),
        ),
        ConnectionError::Io(e) => ("io", format!("{e}")),
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            ("timeout", e.to_string())
        }
        other => ("other", other.to_string()),
    }
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

    #[test]
    fn a_connection_dropped_at_once_does_not_reset_the_backoff() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for _ in 0..5 {
            b.connected();
            let _ = b.next_delay();
        }
        b.connected();
        let lost = rumqttc::ConnectionError::Io(std::io::Error::other("closed"));
        let (delay, reason, _) = b.lost(&lost);
        assert_eq!(reason, "dropped_after_connect");
        assert!(delay >= Duration::from_millis(500), "{delay:?}");
    }
}
