//! Broker security: mosquitto with TLS (certificates made here), a password file and an ACL.
//!
//! The broker has two listeners: TLS with a required client certificate, where the daemon
//! connects as user `ebgand`, and plain TCP on localhost, where the test's own clients connect
//! as `admin`. Both require a password; the ACL lets `ebgand` read `sensors/#` and read and
//! write under its prefix `sec*/`, and nothing else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA, and a certificate for `names` signed by it: (CA PEM, certificate PEM, key PEM).
struct Pki {
    ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca: issuer.pem(),
            issuer,
        }
    }

    /// A certificate (PEM) and its key (PEM) for these subject alternative names.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What a secure broker's test needs: the broker, its TLS port, and client files.
struct Secure {
    broker: Mosquitto,
    tls_port: u16,
    files: PathBuf,
    pki: Pki,
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn secure_broker() -> Secure {
    secure_broker_named(&["localhost", "127.0.0.1"]).await
}

/// A secure broker whose certificate names only `names`.
async fn secure_broker_named(names: &[&str]) -> Secure {
    let pki = Pki::new("ebgand test CA");
    let tls_port = ebgand::demo::free_port().unwrap();
    let files = tempfile::tempdir().unwrap().keep();
    let broker = Mosquitto::start_with(|dir| {
        let (cert, key) = pki.issue(names);
        write(&dir.join("ca.pem"), &pki.ca, 0o644);
        write(&dir.join("server.pem"), &cert, 0o644);
        // The broker drops to the `mosquitto` user; in a throwaway folder that is fine.
        write(&dir.join("server.key"), &key, 0o644);
        mosquitto_passwd(&dir.join("passwd"), &[ADMIN, DAEMON]);
        write(
            &dir.join("acl"),
            "user admin\ntopic readwrite #\n\n\
             user ebgand\ntopic read sensors/#\ntopic readwrite sec/#\ntopic readwrite secd/#\n",
            0o644,
        );
        format!(
            "per_listener_settings false\nallow_anonymous false\n\
             password_file {d}/passwd\nacl_file {d}/acl\n\
             listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nrequire_certificate true\n",
            d = dir.display()
        )
    })
    .await;
    eventually(Duration::from_secs(10), "TLS listener up", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    })
    .await;
    let (cert, key) = pki.issue(&["ebgand-client"]);
    write(&files.join("ca.pem"), &pki.ca, 0o644);
    write(&files.join("client.pem"), &cert, 0o644);
    write(&files.join("client.key"), &key, 0o600);
    write(&files.join("password"), &format!("{}\n", DAEMON.1), 0o600);
    Secure {
        broker,
        tls_port,
        files,
        pki,
    }
}

impl Secure {
    /// Daemon config: TLS with a client certificate, password from a file, `extra` streams.
    fn settings(
        &self,
        prefix: &str,
        password_file: &Path,
        ca: &Path,
        extra: &str,
    ) -> ebgand::config::Settings {
        let toml = format!(
            "[mqtt]\nusername = \"{user}\"\npassword_file = \"{pw}\"\n\
             [mqtt.tls]\nenabled = true\nca_file = \"{ca}\"\n\
             client_cert_file = \"{f}/client.pem\"\nclient_key_file = \"{f}/client.key\"\n\
             {VIBRATION}{extra}",
            user = DAEMON.0,
            pw = password_file.display(),
            ca = ca.display(),
            f = self.files.display(),
        );
        settings(self.tls_port, prefix, &toml)
    }

    async fn admin_observer(&self, filter: &str) -> Observer {
        Observer::start_with(self.broker.port, filter, |o| {
            o.set_credentials(ADMIN.0, ADMIN.1);
        })
        .await
    }

    async fn admin_sender(&self) -> Sender {
        Sender::start_with(self.broker.port, |o| {
            o.set_credentials(ADMIN.0, ADMIN.1);
        })
        .await
    }
}

/// Failed connection attempts with this `reason` label, over both connections.
fn failures(daemon: &TestDaemon, reason: &str) -> u64 {
    daemon.metric_where(
        "ebgand_mqtt_connect_failures_total",
        &format!("reason=\"{reason}\""),
    )
}

async fn send_windows(tx: &mut Sender, topic: &str, windows: usize) {
    let mut m = Machine::new(7);
    for _ in 0..windows {
        tx.publish(topic, serde_json::to_vec(&m.samples(64, false)).unwrap())
            .await;
    }
    tx.flushed().await;
}

/// Refused connections are retried with backoff, for as long as the daemon runs: over
/// `seconds` with `reconnect_min_ms = 50` and `reconnect_max_ms = 1000`, each connection makes
/// at most about a dozen attempts. A tight loop would make thousands.
async fn assert_refused_without_crash_loop(daemon: &TestDaemon, reason: &str, seconds: u64) {
    eventually(Duration::from_secs(10), "a refused attempt", || {
        failures(daemon, reason) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let attempts = failures(daemon, reason);
    assert!(daemon.running(), "the daemon must keep running");
    assert!(!daemon.metrics.ready(), "never ready without a broker");
    assert!(
        (1..=2 * (seconds + 8)).contains(&attempts),
        "{attempts} refused attempts in {seconds} s: backoff not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_works_over_tls_with_password_file_and_acl() {
    let s = secure_broker().await;
    let prefix = "sec";
    let obs = s.admin_observer(&format!("{prefix}/#")).await;
    let daemon = TestDaemon::start(s.settings(
        prefix,
        &s.files.join("password"),
        &s.files.join("ca.pem"),
        "",
    ))
    .await;
    let mut tx = s.admin_sender().await;
    send_windows(&mut tx, "sensors/m1/vibration", 20).await;
    eventually(Duration::from_secs(20), "20 energies", || {
        obs.count(&format!("{prefix}/energy/")) >= 20
    })
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("vibration/m1".to_string(), 20)]),
    );
    assert_eq!(daemon.metric("ebgand_windows_scored_total"), 20);
    assert_eq!(failures(&daemon, "tls") + failures(&daemon, "refused"), 0);
    // The status message went out over TLS under the ACL's prefix.
    assert!(
        obs.on(&format!("{prefix}/status"))
            .iter()
            .any(|m| m.json["status"] == "online")
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_clearly_without_a_crash_loop() {
    let s = secure_broker().await;
    let wrong = s.files.join("wrong-password");
    write(&wrong, "not-the-password\n", 0o600);
    let daemon = TestDaemon::spawn(s.settings("secd", &wrong, &s.files.join("ca.pem"), ""));
    assert_refused_without_crash_loop(&daemon, "refused", 3).await;
    assert_eq!(failures(&daemon, "tls"), 0);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_broker_certificate_is_refused_clearly_without_a_crash_loop() {
    let s = secure_broker().await;
    // A CA the broker's certificate was not signed by.
    let other = s.files.join("other-ca.pem");
    write(&other, &Pki::new("some other CA").ca, 0o644);
    let daemon = TestDaemon::spawn(s.settings("secd", &s.files.join("password"), &other, ""));
    assert_refused_without_crash_loop(&daemon, "tls", 3).await;
    assert_eq!(failures(&daemon, "refused"), 0);
    daemon.shutdown().await.unwrap();
    drop(s.pki);
}

/// mosquitto's `acl_file` grants every SUBSCRIBE (it filters on delivery, so a denied stream
/// topic just stays silent) and, for a client that may not write its Last Will and status
/// topic, accepts the connection and then drops it. The daemon reports that as
/// `dropped_after_connect`, backs off instead of reconnecting at once, and goes on scoring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_publish_topic_is_reported_counted_and_scoring_goes_on() {
    let s = secure_broker().await;
    // `ebgand` may not write under this prefix.
    let prefix = "plant";
    let obs = s.admin_observer(&format!("{prefix}/#")).await;
    let daemon = TestDaemon::spawn(s.settings(
        prefix,
        &s.files.join("password"),
        &s.files.join("ca.pem"),
        "",
    ));
    assert_refused_without_crash_loop(&daemon, "dropped_after_connect", 3).await;
    let mut tx = s.admin_sender().await;
    send_windows(&mut tx, "sensors/m1/vibration", 10).await;
    eventually(Duration::from_secs(20), "10 windows scored", || {
        daemon.metric("ebgand_windows_scored_total") == 10
    })
    .await;
    assert!(daemon.running());
    // The broker really dropped them: nothing arrived under the prefix.
    assert_eq!(obs.count(&format!("{prefix}/")), 0);
    daemon.shutdown().await.unwrap();
}

/// With several brokers (`mqtt.hosts`), each one's certificate is checked against its own
/// address: the first, `localhost`, is down; the second, `127.0.0.1`, has a certificate naming
/// only `127.0.0.1`. Checked against the first address's name, it would be refused for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_several_tls_brokers_is_checked_against_its_own_name() {
    let sec = secure_broker_named(&["127.0.0.1"]).await;
    let obs = sec.admin_observer("sec/#").await;
    let mut s = sec.settings(
        "sec",
        &sec.files.join("password"),
        &sec.files.join("ca.pem"),
        "",
    );
    s.mqtt.brokers = vec![
        ebgand::config::Broker {
            host: "localhost".into(),
            port: ebgand::demo::free_port().unwrap(),
        },
        ebgand::config::Broker {
            host: "127.0.0.1".into(),
            port: sec.tls_port,
        },
    ];
    let daemon = TestDaemon::start(s).await;
    assert!(
        daemon.metric_where("ebgand_mqtt_failovers_total", "connection=\"ingest\"") >= 1,
        "never moved past the broker that is down"
    );
    assert_eq!(failures(&daemon, "tls"), 0, "a certificate was refused");
    let mut tx = sec.admin_sender().await;
    send_windows(&mut tx, "sensors/m1/vibration", 3).await;
    eventually(Duration::from_secs(20), "windows scored over TLS", || {
        obs.count("sec/energy/") >= 3
    })
    .await;
    daemon.shutdown().await.unwrap();
}
