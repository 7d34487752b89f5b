//! Throughput through a three-node NATS cluster against a single mosquitto, same machine, same
//! run.
//!
//! `cargo bench --bench cluster` (or `make bench-cluster`). Starts mosquitto and three
//! `nats-server` nodes (`contrib/nats/node.conf` with its partition mapping), then for each of 3
//! rounds, alternating the brokers: a publisher process sends N QoS 1 messages (a JSON array of
//! 64 floats, one window each) and the daemon (in this process, journal on, energy telemetry
//! off) receives, windows, scores and judges them.
//! - mosquitto: publisher and daemon on the one broker;
//! - NATS: the publisher on node 2, the daemon on node 1 (`[mqtt] hosts`, its first), through
//!   the mapping to the three partitions, all of which it takes (`[partition] prefixes`): every
//!   message is stored on three nodes (JetStream) and crosses the cluster once.
//!
//! Rate: N over the time from the first publish to the N-th window scored. CPU per message: the
//! daemon's (this process, from ready to the N-th window), and the broker's (mosquitto, or the
//! three nodes together) over the same time. Prints medians and the ratios NATS / mosquitto.
//! Absolute numbers move with the machine's load; compare the ratios.
#![allow(
    clippy::let_underscore_must_use,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use support::Broker;

#[path = "../tests/common/nats.rs"]
mod nats;
mod support;

/// Messages per run: the cluster stores a few hundred a second on a 2-core machine.
const MESSAGES: u64 = 5_000;
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--publish") {
        let port: u16 = args[i + 1].parse().unwrap();
        return support::publish(port, &args[i + 2], MESSAGES, &payloads());
    }
    let lib = support::ort_library();
    let rt = support::runtime();
    let mosquitto = Broker::start();
    let cluster = rt.block_on(nats::NatsCluster::start());
    println!(
        "messages per run: {MESSAGES} (QoS 1, 64-float JSON arrays, one window each), rounds: {ROUNDS}"
    );
    let (mut single, mut three) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let m = rt.block_on(run(
            &lib,
            round,
            vec![format!("127.0.0.1:{}", mosquitto.port)],
            &[],
            mosquitto.port,
            &[mosquitto.pid()],
        ));
        let n = rt.block_on(run(
            &lib,
            round,
            cluster.hosts(0),
            &["part/0", "part/1", "part/2"],
            cluster.mqtt[1],
            &cluster.pids(),
        ));
        println!(
            "round {round}: mosquitto {:>6.0} msg/s, daemon {:.1} us CPU/msg, broker {:.1} us CPU/msg   NATS x3 {:>6.0} msg/s, daemon {:.1} us CPU/msg, brokers {:.1} us CPU/msg",
            m.0, m.1, m.2, n.0, n.1, n.2
        );
        single.push(m);
        three.push(n);
    }
    let med = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    let (m_rate, m_cpu, m_broker) = (
        med(&single, |x| x.0),
        med(&single, |x| x.1),
        med(&single, |x| x.2),
    );
    let (n_rate, n_cpu, n_broker) = (
        med(&three, |x| x.0),
        med(&three, |x| x.1),
        med(&three, |x| x.2),
    );
    println!("\n| path (medians of {ROUNDS}) | msg/s | daemon CPU us/msg | broker CPU us/msg |");
    println!("|---|---|---|---|");
    println!("| one mosquitto | {m_rate:.0} | {m_cpu:.1} | {m_broker:.1} |");
    println!(
        "| three NATS nodes (JetStream R3, partition mapping) | {n_rate:.0} | {n_cpu:.1} | {n_broker:.1} |"
    );
    println!(
        "\nratio NATS / mosquitto: throughput {:.3}, daemon CPU per message {:.2}, broker CPU per message {:.1}",
        n_rate / m_rate,
        n_cpu / m_cpu,
        n_broker / m_broker
    );
}

/// Every payload its own samples, as a sensor's are: the daemons on NATS recognise duplicates
/// by content (`duplicates = "identical"`).
fn payloads() -> Vec<Vec<u8>> {
    let mut m = ebgand::demo::sim::Machine::new(11);
    (0..MESSAGES)
        .map(|_| serde_json::to_vec(&m.samples(64, false)).unwrap())
        .collect()
}

/// One run: the daemon on `hosts` (subscribing under `prefixes`), the publisher on `publish_to`;
/// rate, daemon CPU and broker CPU (the processes `brokers`) per message.
async fn run(
    lib: &str,
    round: usize,
    hosts: Vec<String>,
    prefixes: &[&str],
    publish_to: u16,
    brokers: &[u32],
) -> (f64, f64, f64) {
    let state = tempfile::tempdir().unwrap();
    let tag = format!("{round}{}", prefixes.len());
    let mut raw = support::daemon_config(lib, state.path(), &tag);
    raw.mqtt.hosts = hosts;
    raw.mqtt.duplicates = if prefixes.is_empty() {
        "flagged"
    } else {
        "identical"
    }
    .into();
    raw.partition.prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
    let (secs, cpu, bcpu) = support::scored_run(raw, &tag, publish_to, MESSAGES, brokers).await;
    let n = MESSAGES as f64;
    (n / secs, cpu * 1e6 / n, bcpu * 1e6 / n)
}
