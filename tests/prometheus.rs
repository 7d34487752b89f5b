//! A real Prometheus (Debian's `prometheus` package) scrapes a running daemon with the alerting
//! rules of `contrib/prometheus/` loaded: the target is up (the exposition parses), counters
//! keep their type, and a fault on a stream published through a
//! real mosquitto fires `EbgandStreamAnomaly` for that stream, and only for it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

/// A Prometheus server owned by the test; killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = root().join("contrib/prometheus/ebgand-rules.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: ebgand\n    static_configs: [{{targets: [\"127.0.0.1:{target}\"]}}]\n",
                rules = rules.display().to_string()
            ),
        )
        .unwrap();
        let port = ebgand::demo::free_port().unwrap();
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "prometheus not found: install it with `sudo apt-get install \
                 --no-install-recommends prometheus` (or `make setup`)",
            );
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// `GET path` on the API, its JSON `data` (HTTP/1.0: a plain body, never chunked).
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        let body = out.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_its_rules_fire_on_a_fault() {
    let broker = Mosquitto::start().await;
    let http = ebgand::demo::free_port().unwrap();
    let mut s = settings(broker.port, "prom", VIBRATION);
    s.http_listen = Some(format!("127.0.0.1:{http}").parse().unwrap());
    let daemon = TestDaemon::start(s).await;
    let prometheus = Prometheus::start(http);

    let mut tx = Sender::start(broker.port).await;
    let (mut sick, mut well) = (Machine::new(5), Machine::new(6));
    for fault in [false; 20].into_iter().chain([true; 20]) {
        for (topic, m, f) in [
            ("sensors/sick/vibration", &mut sick, fault),
            ("sensors/well/vibration", &mut well, false),
        ] {
            tx.publish(topic, serde_json::to_vec(&m.samples(64, f)).unwrap())
                .await;
        }
    }
    tx.flushed().await;

    let mut target = serde_json::Value::Null;
    eventually(Duration::from_secs(30), "the target scraped", || {
        target = prometheus
            .api("/api/v1/targets")
            .and_then(|d| d["activeTargets"].get(0).cloned())
            .unwrap_or_default();
        target["health"] == "up"
    })
    .await;
    assert_eq!(target["lastError"], "", "{target}");

    // Counters keep their type.
    let mut meta = serde_json::Value::Null;
    eventually(Duration::from_secs(10), "metadata", || {
        meta = prometheus
            .api("/api/v1/metadata?metric=ebgand_windows_scored")
            .unwrap_or_default();
        meta.get("ebgand_windows_scored").is_some()
    })
    .await;
    assert_eq!(
        meta["ebgand_windows_scored"][0]["type"], "counter",
        "{meta}"
    );

    // The fault fires the anomaly rule for its stream alone.
    let mut firing = Vec::new();
    eventually(
        Duration::from_secs(30),
        "EbgandStreamAnomaly firing",
        || {
            firing = prometheus
                .api("/api/v1/alerts")
                .and_then(|d| d["alerts"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|a| {
                    a["labels"]["alertname"] == "EbgandStreamAnomaly" && a["state"] == "firing"
                })
                .collect();
            !firing.is_empty()
        },
    )
    .await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["labels"]["stream"], "vibration/sick");
    assert_eq!(
        firing[0]["annotations"]["summary"],
        "Stream vibration/sick is anomalous"
    );
    // Every rule loaded and evaluated without error on the real series.
    let groups = prometheus.api("/api/v1/rules").unwrap();
    let rules = groups["groups"][0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 6);
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    daemon.shutdown().await.unwrap();
}
