//! ebgand on a broker cluster: three NATS nodes (Debian's `nats-server`, run with
//! `contrib/nats/node.conf` and its partition mapping), three daemons, 300 sensor streams
//! published through all three nodes. The cluster routes each sensor to one of three partitions
//! (`part/<p>/...`); each daemon subscribes to its own (`[partition] prefixes`) and lists all
//! three nodes (`[mqtt] hosts`), starting on a different one.
//!
//! Mid-stream, the node one daemon is connected to is killed (SIGKILL): that daemon moves to
//! the next node and resumes its session there. Later another daemon is SIGKILLed and started
//! again: its journal and the cluster's copy of its session carry it on.
//!
//! Checked against the truth computed here from the samples sent: every stream's windows
//! 0..N, each scored with the energy ONNX Runtime gives one message's samples, every message in
//! exactly one window (none lost, none doubled); each stream on one daemon; the daemons never
//! killed scored exactly their streams' windows, once; each fault raised once and cleared once.
//!
//! `EBGAND_TEST_LOGS=1 cargo test --test cluster -- --nocapture` shows the daemons' logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::nats::{NODES, NatsCluster};
use common::*;
use ebgand::demo::free_port;
use ebgand::demo::sim::Machine;

const STREAMS: usize = 300;
const WINDOW: usize = 64;
const ROUNDS: usize = 21;
/// A round every 2 s: 150 sensor and 150 energy messages a second, QoS 1, each stored on
/// three nodes. (This 2-core machine's three-node cluster stores about 600 a second, and
/// fewer for the seconds after a node's loss while its streams elect new leaders; above
/// that the cluster times its own stores out and closes connections.)
const ROUND_EVERY: Duration = Duration::from_secs(2);
/// Node 0 dies before this round is published; the publisher that used it moves on first.
const NODE_KILL_ROUND: usize = 7;
/// Daemon 1 is SIGKILLed and started again once this round is being published.
const DAEMON_KILL_ROUND: usize = 14;
/// The last rounds, all healthy, are sent after a pause longer than the cluster's ack_wait
/// (contrib/nats/node.conf: 10 s): what daemon 1 had received and not journaled when it was
/// killed comes back that late, behind newer messages, and each fault's clear must follow it.
const LAST_ROUNDS_FROM: usize = 17;
/// Faults: (first stream, streams, first round, rounds). raise_after = clear_after = 3.
const FAULTS: [(usize, usize, usize, usize); 2] = [(0, 30, 5, 5), (30, 30, 12, 5)];

/// One daemon of the cluster: partition `index`, brokers listed from node `index` on.
struct Daemon {
    index: usize,
    dir: tempfile::TempDir,
    http: u16,
    process: Option<DaemonProcess>,
}

impl Daemon {
    fn new(index: usize, hosts: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ebgand.toml"),
            format!(
                r#"node = "d{index}"
[mqtt]
hosts = {hosts}
prefix = "cl"
status_topic = "cl/status/d{index}"
client_id = "ebgand-d{index}"
keep_alive_s = 5
reconnect_max_ms = 2000
publish_energy = true
energy_qos = 1
# NATS resends without the DUP flag when a node's loss moves a consumer; every payload here
# is 64 raw samples, which never repeat.
duplicates = "identical"
outbox_dir = "{d}/outbox"
[http]
listen = "127.0.0.1:{http}"
[detect]
judge = "threshold"
stale_after = 0
# Windows are scored as sent (no input level taken off), so each one's energy is its samples'.
level_windows = 0
[partition]
prefixes = ["part/{index}"]
{state}raise_after = 3
clear_after = 3
"#,
                d = d.display(),
                state = state_toml(d),
            ),
        )
        .unwrap();
        let mut daemon = Self {
            index,
            dir,
            http,
            process: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        // To a file, not a pipe: 300 streams' logs would fill a pipe nobody reads. Appended
        // across the restart, for a failure's message ([`Daemon::log_tail`]).
        let config = self.dir.path().join("ebgand.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        self.process = Some(run_binary(&config, &[], Stdio::from(log)));
    }

    /// The last lines of its log about connections, warnings and errors (for a failure's
    /// message: where a message went missing).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("MQTT")
                    || l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("edeliver")
            })
            .collect();
        let from = lines.len().saturating_sub(25);
        format!("daemon {}:\n{}", self.index, lines[from..].join("\n"))
    }

    async fn restart_after_sigkill(&mut self) {
        let mut p = self.process.take().unwrap();
        kill(&p, "-KILL");
        wait_exit(&mut p).await;
        self.spawn();
    }

    /// `/metrics`, or nothing while the daemon is down.
    fn metrics(&self) -> Option<String> {
        try_http_get(self.http, "/metrics")
    }

    fn ready(&self) -> bool {
        try_http_get(self.http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    }

    /// The sum of a metric's samples whose labels contain `labels` (all of them when empty).
    fn metric(&self, name: &str, labels: &str) -> u64 {
        let text = self.metrics().unwrap_or_default();
        ebgand::telemetry::metrics::sum_metric_where(&text, name, labels) as u64
    }

    /// The streams this daemon has windowed (its per-stream gauges).
    fn streams(&self) -> HashSet<String> {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("ebgand_stream_silence_seconds{"))
            .filter_map(|l| l.split("stream=\"").nth(1)?.split('"').next())
            .map(str::to_owned)
            .collect()
    }
}

/// For a failure's message: what node 1 says of its JetStream consumers, and each daemon's
/// connection lines and warnings.
fn diagnosis(cluster: &NatsCluster, daemons: &[Daemon]) -> String {
    let logs: Vec<String> = daemons.iter().map(Daemon::log_tail).collect();
    format!(
        "JetStream on node 1:\n{}\n{}",
        cluster.jetstream(1),
        logs.join("\n")
    )
}

/// The alerts a stream's windows make, in window order: raised after 3 over `threshold`,
/// cleared after 3 at or under it.
fn transitions(judged: &BTreeMap<u64, f32>, threshold: f32) -> Vec<(u64, String)> {
    let (mut raised, mut run, mut out) = (false, 0, Vec::new());
    for (seq, e) in judged {
        let anomalous = *e > threshold;
        run = if anomalous != raised { run + 1 } else { 0 };
        if run == 3 {
            raised = !raised;
            run = 0;
            out.push((*seq, if raised { "raised" } else { "cleared" }.to_owned()));
        }
    }
    out
}

fn faulty(stream: usize, round: usize) -> bool {
    FAULTS
        .iter()
        .any(|&(s0, n, r0, k)| (s0..s0 + n).contains(&stream) && (r0..r0 + k).contains(&round))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_three_nats_nodes_survive_a_node_and_a_daemon_dying() {
    let mut cluster = NatsCluster::start().await;
    // The observer sits on node 2, which stays up.
    let obs = Observer::start(cluster.mqtt[2], "cl/#").await;
    let mut daemons: Vec<Daemon> = (0..NODES)
        .map(|i| Daemon::new(i, cluster.hosts_from(i)))
        .collect();
    eventually(Duration::from_secs(60), "daemons subscribed", || {
        daemons.iter().all(Daemon::ready)
    })
    .await;

    // Every message is one window of its stream: the samples sent, kept for the truth.
    let mut machines: Vec<Machine> = (0..STREAMS as u64).map(Machine::new).collect();
    let mut sent: Vec<Vec<f32>> = vec![Vec::new(); STREAMS];
    let mut rounds: Vec<Vec<Vec<u8>>> = Vec::new();
    for r in 0..ROUNDS {
        let mut round = Vec::new();
        for (i, m) in machines.iter_mut().enumerate() {
            let samples = m.samples(WINDOW, faulty(i, r));
            sent[i].extend_from_slice(&samples);
            round.push(serde_json::to_vec(&samples).unwrap());
        }
        rounds.push(round);
    }

    // The sensors: a third publish through each node, a round every ROUND_EVERY. Before the node
    // kill, the publisher on node 0 waits until node 0 has acknowledged all it sent, then its
    // sensors move to node 1 (publisher failover is the sensors' business; here it loses
    // nothing, so every count below is exact).
    let mqtt = cluster.mqtt.clone();
    let round_now = Arc::new(AtomicUsize::new(0));
    let (node_kill_tx, mut node_kill_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (settled_tx, mut settled_rx) = tokio::sync::mpsc::channel::<()>(1);
    let progress = round_now.clone();
    let sensors = tokio::spawn(async move {
        let mut tx = Vec::new();
        for port in &mqtt {
            tx.push(Sender::start(*port).await);
        }
        let mut route: Vec<usize> = (0..NODES).collect();
        for (r, round) in rounds.into_iter().enumerate() {
            if r == NODE_KILL_ROUND {
                tx[0].flushed().await;
                route[0] = 1;
                node_kill_tx.send(()).await.unwrap();
            }
            if r == DAEMON_KILL_ROUND {
                settled_rx.recv().await.unwrap();
            }
            if r == LAST_ROUNDS_FROM {
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
            progress.store(r, Ordering::SeqCst);
            for (i, payload) in round.into_iter().enumerate() {
                tx[route[i % NODES]]
                    .publish(&format!("sensors/m{i}/vibration"), payload)
                    .await;
            }
            tokio::time::sleep(ROUND_EVERY).await;
        }
        for t in &tx[1..] {
            t.flushed().await;
        }
    });

    // Node 0 dies under daemon 0 (both its connections are on it) mid-stream.
    node_kill_rx.recv().await.unwrap();
    cluster.kill(0);
    let missing = |rounds: usize| {
        let seqs = seqs_by_stream(&obs.on("cl/energy/"));
        let mut missing = Vec::new();
        for i in 0..STREAMS {
            let stream = format!("vibration/m{i}");
            for seq in 0..rounds as u64 {
                if !seqs.get(&stream).is_some_and(|s| s.contains_key(&seq)) {
                    missing.push(format!("{stream}#{seq}"));
                }
            }
        }
        missing
    };
    // The cluster settles (its streams elect new leaders; for seconds it refuses sessions
    // and stores) and every window sent so far is scored; then the sensors go on, and daemon 1
    // dies mid-stream and comes back. (Energy telemetry is not kept across a crash: killed
    // while the cluster was still refusing its publishes, a daemon would lose the energy
    // messages of windows it had judged, and this test could not see them.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let m = missing(DAEMON_KILL_ROUND);
        let ready: Vec<bool> = daemons.iter().map(Daemon::ready).collect();
        if m.is_empty() && ready.iter().all(|r| *r) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster never settled: daemons ready {ready:?}, scored {:?}, messages {:?}, redeliveries {:?}, {} windows not scored, e.g. {:?}\n{}",
            daemons
                .iter()
                .map(|d| d.metric("ebgand_windows_scored_total", ""))
                .collect::<Vec<_>>(),
            daemons
                .iter()
                .map(|d| d.metric("ebgand_messages_total", ""))
                .collect::<Vec<_>>(),
            daemons
                .iter()
                .map(|d| d.metric("ebgand_redeliveries_skipped_total", ""))
                .collect::<Vec<_>>(),
            m.len(),
            &m[..m.len().min(20)],
            diagnosis(&cluster, &daemons)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    settled_tx.send(()).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the sensors past the daemon kill",
        || round_now.load(Ordering::SeqCst) >= DAEMON_KILL_ROUND + 2,
    )
    .await;
    daemons[1].restart_after_sigkill().await;
    sensors.await.unwrap();

    // Every stream's every window, however late (a message lost in transit with node 0 comes
    // back after the cluster's ack_wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let m = missing(ROUNDS);
        if m.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let scored: Vec<u64> = daemons
                .iter()
                .map(|d| d.metric("ebgand_windows_scored_total", ""))
                .collect();
            panic!(
                "{} windows never scored (daemons scored {scored:?}), e.g. {:?}\n{}",
                m.len(),
                &m[..m.len().min(20)],
                diagnosis(&cluster, &daemons)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give a late duplicate time to show.
    tokio::time::sleep(Duration::from_secs(12)).await;

    // The truth: each message's energy, scored here.
    let settings = settings(cluster.mqtt[2], "cl", VIBRATION);
    let mut scorer = ebgand::app::load_model(
        "vibration",
        &root().join("models/vibration/fixture-1"),
        &settings.streams,
        &settings.runtime,
    )
    .unwrap();
    let energy = obs.on("cl/energy/");
    let owned: Vec<HashSet<String>> = daemons.iter().map(Daemon::streams).collect();
    let mut late = [0usize; NODES];
    for (i, samples) in sent.iter().enumerate() {
        let stream = format!("vibration/m{i}");
        let truth = scorer.score(samples, ROUNDS).unwrap();
        let mut seen: BTreeMap<u64, f32> = BTreeMap::new();
        for m in energy
            .iter()
            .filter(|m| m.json["stream"] == stream.as_str())
        {
            let seq = m.json["seq"].as_u64().unwrap();
            let e = m.json["energy"].as_f64().unwrap() as f32;
            // A window published twice (a resend across nodes) or judged again (after the
            // daemon's crash, from its journal) must be the same window.
            if let Some(before) = seen.insert(seq, e) {
                assert_eq!(before, e, "{stream} window {seq} judged differently twice");
            }
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (0..ROUNDS as u64).collect::<Vec<_>>(),
            "{stream}: windows missing or extra"
        );
        // Each message in exactly one window: the windows' energies are the messages'. A
        // message windowed out of its order (it came back late) is counted.
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(1e-3);
        let mut unused: Vec<Option<f32>> = truth.iter().copied().map(Some).collect();
        let mut misplaced = Vec::new();
        for (seq, e) in &seen {
            let i = *seq as usize;
            if unused[i].is_some_and(|t| close(t, *e)) {
                unused[i] = None;
            } else {
                misplaced.push((*seq, *e));
            }
        }
        for (seq, e) in misplaced {
            let at = unused
                .iter()
                .position(|t| t.is_some_and(|t| close(t, e)))
                .unwrap_or_else(|| {
                    panic!("{stream} window {seq}: energy {e} is no message's (lost or doubled); windows {seen:?}, messages {truth:?}")
                });
            unused[at] = None;
            if let Some(d) = owned.iter().position(|o| o.contains(&stream)) {
                late[d] += 1;
            }
        }
    }
    eprintln!(
        "windows holding a message that came back late, after newer ones, by daemon: {late:?}"
    );

    // Each stream on one daemon; the daemons never killed scored their streams' windows once.
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let both: Vec<_> = owned[a].intersection(&owned[b]).collect();
        assert!(both.is_empty(), "streams on daemons {a} and {b}: {both:?}");
    }
    for d in [&daemons[0], &daemons[2]] {
        assert!(
            !owned[d.index].is_empty(),
            "daemon {} has no stream",
            d.index
        );
        assert_eq!(
            d.metric("ebgand_windows_scored_total", ""),
            (owned[d.index].len() * ROUNDS) as u64,
            "daemon {}: windows scored",
            d.index
        );
    }
    let total: usize = owned.iter().map(HashSet::len).sum();
    assert_eq!(
        total,
        STREAMS,
        "streams per daemon: {:?}",
        owned.iter().map(HashSet::len).collect::<Vec<_>>()
    );
    // Daemon 0 lost its node and moved on, both connections.
    for connection in ["ingest", "publish"] {
        assert!(
            daemons[0].metric(
                "ebgand_mqtt_failovers_total",
                &format!("connection=\"{connection}\"")
            ) >= 1,
            "daemon 0's {connection} connection did not move to another node"
        );
    }

    // The alerts are, one for one, the transitions of the windows as judged (raise after 3
    // windows over the threshold, clear after 3 at or under it), each published once (an
    // alert resent across nodes keeps its id), and every fault raised.
    let threshold = energy[0].json["threshold"].as_f64().unwrap() as f32;
    let mut alerts: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let mut ids = HashSet::new();
    for a in obs.on("cl/alerts/") {
        // alert_id counts per daemon: with several, (node, alert_id) names an alert.
        let id = (
            a.json["node"].as_str().unwrap().to_owned(),
            a.json["alert_id"].as_u64().unwrap(),
        );
        if ids.insert(id) {
            alerts
                .entry(a.json["stream"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    a.json["seq"].as_u64().unwrap(),
                    a.json["state"].as_str().unwrap().to_owned(),
                ));
        }
    }
    for i in 0..STREAMS {
        let stream = format!("vibration/m{i}");
        let judged: BTreeMap<u64, f32> = energy
            .iter()
            .filter(|m| m.json["stream"] == stream.as_str())
            .map(|m| {
                (
                    m.json["seq"].as_u64().unwrap(),
                    m.json["energy"].as_f64().unwrap() as f32,
                )
            })
            .collect();
        let want = transitions(&judged, threshold);
        let got = alerts.remove(&stream).unwrap_or_default();
        assert_eq!(got, want, "{stream}: alerts; windows judged {judged:?}");
        if FAULTS.iter().any(|&(s0, n, ..)| (s0..s0 + n).contains(&i)) {
            assert!(
                want.iter().any(|(_, s)| s == "raised"),
                "{stream}: its fault raised no alert"
            );
        }
    }
    for d in &mut daemons {
        let mut p = d.process.take().unwrap();
        kill(&p, "-TERM");
        assert!(
            wait_exit(&mut p).await.success(),
            "daemon {} stopped",
            d.index
        );
    }
}
