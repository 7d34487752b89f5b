//! A three-node NATS cluster on loopback running `contrib/nats/node.conf` (with its partition
//! mapping), for the cluster test and benchmark. Self-contained: the benchmark includes this
//! file with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode};

/// Nodes in the cluster.
pub const NODES: usize = 3;

/// Debian's `nats-server`, or a panic saying how to install it.
pub fn nats_server() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "nats-server not found: install it with `sudo apt-get install nats-server` (or `make setup`)"
    );
}

/// Three NATS nodes on loopback running `contrib/nats/node.conf`; killed on drop.
pub struct NatsCluster {
    pub mqtt: Vec<u16>,
    monitor: Vec<u16>,
    nodes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Every port at once, each listener held until all are picked: no two alike.
        let held: Vec<std::net::TcpListener> = (0..4 * NODES)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut ports = held.iter().map(|l| l.local_addr().unwrap().port());
        let mut take = || -> Vec<u16> { (0..NODES).filter_map(|_| ports.next()).collect() };
        let (client, routes, mqtt, monitor) = (take(), take(), take(), take());
        drop(held);
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/nats/node.conf");
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).unwrap();
            let mut cmd = Command::new(nats_server());
            cmd.arg("-c")
                .arg(&conf)
                .env("NATS_NAME", format!("n{i}"))
                .env("NATS_CLIENT_LISTEN", format!("127.0.0.1:{}", client[i]))
                .env("NATS_MQTT_LISTEN", format!("127.0.0.1:{}", mqtt[i]))
                .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{}", routes[i]))
                .env("NATS_STORE_DIR", dir.path().join(format!("js{i}")))
                .env("NATS_MONITOR_LISTEN", format!("127.0.0.1:{}", monitor[i]));
            for (r, port) in routes.iter().enumerate() {
                cmd.env(
                    format!("NATS_ROUTE_{}", r + 1),
                    format!("nats-route://127.0.0.1:{port}"),
                );
            }
            nodes.push(Some(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()));
        }
        let cluster = Self {
            mqtt,
            monitor,
            nodes,
            _dir: dir,
        };
        // Ready when every node takes a persistent QoS 1 subscription (it needs JetStream,
        // which needs the cluster's meta leader).
        for port in cluster.mqtt.clone() {
            tokio::time::timeout(Duration::from_secs(60), subscribed(port))
                .await
                .unwrap_or_else(|_| panic!("NATS node on {port} never took a QoS 1 subscription"));
        }
        cluster
    }

    /// Every node's MQTT address, starting with node `first`.
    pub fn hosts(&self, first: usize) -> Vec<String> {
        (0..NODES)
            .map(|k| format!("127.0.0.1:{}", self.mqtt[(first + k) % NODES]))
            .collect()
    }

    /// `[mqtt] hosts` as TOML: every node, starting with node `first`.
    pub fn hosts_from(&self, first: usize) -> String {
        let quoted: Vec<String> = self.hosts(first).iter().map(|h| format!("{h:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// What node `i` says of its JetStream streams and consumers (for a failure's message).
    pub fn jetstream(&self, i: usize) -> String {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.monitor[i])) else {
            return "node down".into();
        };
        // HTTP/1.0: a 1.1 answer comes chunked, which is not JSON.
        let _ = write!(
            c,
            "GET /jsz?accounts=true&consumers=true&config=true HTTP/1.0\r\nHost: x\r\n\r\n"
        );
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let Some(json) = out.split("\r\n\r\n").nth(1) else {
            return out;
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let mut lines = Vec::new();
        for s in v["account_details"][0]["stream_detail"]
            .as_array()
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "stream {} messages {} leader {}",
                s["name"], s["state"]["messages"], s["cluster"]["leader"]
            ));
            for c in s["consumer_detail"].as_array().into_iter().flatten() {
                lines.push(format!(
                    "  consumer {} delivered {} ack floor {} pending {} ack_pending {} redelivered {} leader {}",
                    c["config"]["filter_subject"],
                    c["delivered"]["stream_seq"],
                    c["ack_floor"]["stream_seq"],
                    c["num_pending"],
                    c["num_ack_pending"],
                    c["num_redelivered"],
                    c["cluster"]["leader"]
                ));
            }
        }
        lines.join("\n")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.kill_node(i);
    }

    /// Process ids of the nodes still running.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(Child::id).collect()
    }

    fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill_node(i);
        }
    }
}

/// Connects to `port` until a persistent QoS 1 subscription is granted.
pub async fn subscribed(port: u16) {
    loop {
        let mut o = MqttOptions::new(format!("probe-{port}"), "127.0.0.1", port);
        o.set_clean_session(false);
        let (client, mut el) = AsyncClient::new(o, 10);
        client
            .subscribe("probe/ready", QoS::AtLeastOnce)
            .await
            .unwrap();
        let granted = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(a))) => {
                        return matches!(a.return_codes[..], [SubscribeReasonCode::Success(_)]);
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if granted == Ok(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
