//! Scale-out through the broker: two daemons on one mosquitto share 100 streams by
//! `[partition]` (FNV-1a of the stream id, modulo the number of daemons). Each daemon has its
//! own persistent session on the same topic filter and windows only the streams it owns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

const STREAMS: usize = 100;
const HEALTHY: usize = 4;
const FAULT: usize = 8; // on the first FAULTY streams; raise_after = 3
const FAULTY: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_100_streams_each_window_scored_once_no_alert_twice() {
    let broker = Mosquitto::start().await;
    let prefixes = ["so0", "so1"];
    let mut observers = Vec::new();
    let mut daemons = Vec::new();
    for (index, prefix) in prefixes.iter().enumerate() {
        observers.push((
            *prefix,
            Observer::start(broker.port, &format!("{prefix}/#")).await,
        ));
        let toml = format!("[partition]\ncount = 2\nindex = {index}\n{VIBRATION}");
        daemons.push(TestDaemon::start(settings(broker.port, prefix, &toml)).await);
    }

    let mut tx = Sender::start(broker.port).await;
    let windows = HEALTHY + FAULT;
    let mut machines: Vec<Machine> = (0..STREAMS as u64).map(Machine::new).collect();
    for w in 0..windows {
        for (i, m) in machines.iter_mut().enumerate() {
            let fault = i < FAULTY && w >= HEALTHY;
            let payload = serde_json::to_vec(&m.samples(64, fault)).unwrap();
            tx.publish(&format!("sensors/m{i}/vibration"), payload)
                .await;
        }
    }
    tx.flushed().await;
    let total = (STREAMS * windows) as u64;
    let scored = || {
        daemons
            .iter()
            .map(|d| d.metric("ebgand_windows_scored_total"))
            .sum::<u64>()
    };
    // Then one window of a marker machine in each daemon's partition. A daemon receives its
    // marker after every message above, on the same session, and scores, judges and
    // publishes its window after theirs: once both markers' energies are here, anything
    // scored twice or raised twice is too (mosquitto hands a subscriber one client's
    // messages in the order they were published).
    for index in 0..2u32 {
        let marker = (0..)
            .map(|k| format!("mark{k}"))
            .find(|m| ebgand::pipeline::topic::partition_of(&format!("vibration/{m}"), 2) == index)
            .unwrap();
        let payload = serde_json::to_vec(&Machine::new(999).samples(64, false)).unwrap();
        tx.publish(&format!("sensors/{marker}/vibration"), payload)
            .await;
    }
    let marked = |o: &Observer, p: &str| {
        o.on(&format!("{p}/energy/"))
            .iter()
            .any(|s| s.topic.contains("/mark"))
    };
    eventually(Duration::from_secs(60), "both markers' energies", || {
        observers.iter().all(|(p, o)| marked(o, p))
    })
    .await;
    assert_eq!(scored(), total + 2);

    // Every window of every stream exactly once over both daemons.
    let energy: Vec<Seen> = observers
        .iter()
        .flat_map(|(p, o)| o.on(&format!("{p}/energy/")))
        .filter(|s| !s.topic.contains("/mark"))
        .collect();
    let expected: HashMap<String, u64> = (0..STREAMS)
        .map(|i| (format!("vibration/m{i}"), windows as u64))
        .collect();
    assert_exactly_once(&energy, &expected);
    assert_eq!(energy.len() as u64, total);

    // Each stream on exactly one daemon, both daemons busy.
    let owned: Vec<HashSet<String>> = observers
        .iter()
        .map(|(p, o)| {
            o.on(&format!("{p}/energy/"))
                .iter()
                .filter(|s| !s.topic.contains("/mark"))
                .map(|s| s.json["stream"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert!(owned[0].is_disjoint(&owned[1]), "a stream on both daemons");
    assert_eq!(owned[0].len() + owned[1].len(), STREAMS);
    assert!(
        owned.iter().all(|s| s.len() >= 30),
        "{:?}",
        owned.iter().map(HashSet::len).collect::<Vec<_>>()
    );
    for (d, set) in owned.iter().enumerate() {
        for stream in set {
            assert_eq!(
                ebgand::pipeline::topic::partition_of(stream, 2),
                d as u32,
                "{stream}"
            );
        }
    }
    // Every message reached both sessions; each daemon skipped exactly the other's.
    let skipped: u64 = daemons
        .iter()
        .map(|d| d.metric("ebgand_messages_other_partition_total"))
        .sum();
    assert_eq!(skipped, total + 2);

    // One raise per faulty stream, over both daemons; none for the healthy ones (each was
    // published before its daemon's marker's energy).
    let mut alerts: Vec<String> = observers.iter().flat_map(|(_, o)| raised(o)).collect();
    alerts.sort();
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..FAULTY).map(|i| format!("vibration/m{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(alerts, want, "each faulty stream raised exactly once");
    for d in daemons {
        d.shutdown().await.unwrap();
    }
}

/// Streams with a `raised` alert seen by this observer.
fn raised(o: &Observer) -> Vec<String> {
    o.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.topic.contains("/alerts/") && s.json["state"] == "raised")
        .map(|s| s.json["stream"].as_str().unwrap().to_owned())
        .collect()
}

/// A stream filter may be a shared subscription (`$share/<group>/<filter>`): subscribed as
/// written, matched by `<filter>`. With one member, mosquitto delivers it everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_filter_scores_its_streams() {
    let broker = Mosquitto::start().await;
    let prefix = "sh";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let toml = VIBRATION.replace(
        "topic = \"sensors/+/vibration\"",
        "topic = \"$share/ebgand/sensors/+/vibration\"",
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    let mut machines: Vec<Machine> = (0..3).map(Machine::new).collect();
    for _ in 0..10 {
        for (i, m) in machines.iter_mut().enumerate() {
            let payload = serde_json::to_vec(&m.samples(64, false)).unwrap();
            tx.publish(&format!("sensors/m{i}/vibration"), payload)
                .await;
        }
    }
    tx.flushed().await;
    eventually(Duration::from_secs(20), "30 energies", || {
        obs.count(&format!("{prefix}/energy/")) >= 30
    })
    .await;
    let expected: HashMap<String, u64> = (0..3).map(|i| (format!("vibration/m{i}"), 10)).collect();
    assert_exactly_once(&obs.on(&format!("{prefix}/energy/")), &expected);
    daemon.shutdown().await.unwrap();
}
