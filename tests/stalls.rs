//! Ways one message or one slow stage could stall every stream, each against a real mosquitto:
//! an oversized message, a window queue held full past the keep-alive, a redelivery after the
//! packet ids wrap, streams that go quiet under the stream cap, and a journal fsync that hangs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use common::*;
use ebgand::sim::Machine;

/// One window (64 samples) of the simulated machine as a JSON array.
fn window(m: &mut Machine, fault: bool) -> Vec<u8> {
    serde_json::to_vec(&m.samples(64, fault)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_acknowledged_and_never_stalls_the_other_streams() {
    let broker = Mosquitto::start().await;
    let prefix = "big";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let settings = settings(broker.port, prefix, VIBRATION);
    let limit = settings.mqtt.max_packet_bytes;
    let daemon = TestDaemon::start(settings).await;
    let mut tx = Sender::start_with(broker.port, |o| {
        o.set_max_packet_size(4 << 20, 4 << 20);
    })
    .await;
    let mut m = Machine::new(3);
    // 2 MiB of JSON on one sensor's topic, over the 1 MiB limit, then ordinary windows.
    let huge = format!("[{}0]", "0.5,".repeat(512 * 1024));
    assert!(huge.len() > 2 * limit - 8);
    tx.publish("sensors/huge/vibration", huge).await;
    for _ in 0..20 {
        tx.publish("sensors/m1/vibration", window(&mut m, false))
            .await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(30),
        "the other sensor's windows scored",
        || obs.count(&format!("{prefix}/energy/")) >= 20,
    )
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("vibration/m1".to_string(), 20)]),
    );
    assert_eq!(
        daemon.metric_where("ebgand_malformed_total", "reason=\"oversize\""),
        1
    );
    // Acknowledged: a restarted daemon (same persistent session) is not sent it again.
    daemon.shutdown().await.unwrap();
    let daemon = TestDaemon::start(settings_again(broker.port, prefix)).await;
    tx.publish("sensors/m1/vibration", window(&mut m, false))
        .await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "the next window scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 1
    })
    .await;
    assert_eq!(daemon.metric("ebgand_malformed_total"), 0);
    daemon.shutdown().await.unwrap();
}

/// The same daemon identity (client id, prefix) with fresh state folders: the broker's
/// persistent session is what is being checked.
fn settings_again(port: u16, prefix: &str) -> ebgand::config::Settings {
    settings(port, prefix, VIBRATION)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_queue_held_full_past_the_keep_alive_never_costs_the_connection() {
    let broker = Mosquitto::start().await;
    let prefix = "full";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.mqtt.keep_alive = Duration::from_secs(5);
    s.scoring.queue_windows = NonZeroUsize::new(8).unwrap();
    s.scoring.max_batch = NonZeroUsize::new(4).unwrap();
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    faults.pause_scoring(true);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    let n = 300;
    for _ in 0..n {
        tx.publish("sensors/m1/vibration", window(&mut m, false))
            .await;
    }
    tx.flushed().await;
    // A client silent for 1.5 x its keep-alive (7.5 s) is dropped; mosquitto 2.0 checks every
    // few seconds (it closed a silent test client after 11 s here). Hold the queue full for
    // longer than that.
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(
        daemon.metric("ebgand_windows_scored_total") < n,
        "scoring was held"
    );
    faults.pause_scoring(false);
    eventually(Duration::from_secs(30), "every window scored", || {
        obs.count(&format!("{prefix}/energy/")) as u64 >= n
    })
    .await;
    assert_eq!(
        daemon.metric_where("ebgand_mqtt_reconnects_total", "connection=\"ingest\""),
        0,
        "the ingest connection was lost while the queue was full"
    );
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("vibration/m1".to_string(), n)]),
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_the_packet_ids_wrap_is_windowed_not_swallowed() {
    let broker = Mosquitto::start().await;
    // The daemon reaches the broker through a proxy that can hold what the broker sends and
    // cut the connection: messages lost in transit, as on a pulled cable.
    let proxy = Proxy::start(broker.port).await;
    let prefix = "wrap";
    let mut s = settings(proxy.port, prefix, VIBRATION);
    // Counted by the scorer, not observed: 65,000 energy messages would be most of the test.
    s.mqtt.publish_energy = false;
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(8);
    let scored = |d: &TestDaemon| d.metric("ebgand_windows_scored_total");

    // mosquitto numbers the messages it sends to a client 1, 2, 3 ..., wrapping after 65,535.
    // The first 200 are windowed, then the connection is cut: ids 1..200 were handed over on it.
    let first = 200u64;
    for _ in 0..first {
        tx.publish("sensors/a/vibration", window(&mut m, false))
            .await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(30), "first windows scored", || {
        scored(&daemon) >= first
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    // Reconnected, not merely still up: a filler sent to the connection being cut comes again
    // flagged DUP on the next one.
    eventually(Duration::from_secs(20), "daemon reconnected", || {
        daemon.metric_where("ebgand_mqtt_reconnects_total", "connection=\"ingest\"") >= 1
            && daemon.metrics.ready()
    })
    .await;
    // Cheap messages (refused as malformed, acknowledged) run the ids up to 65,535. Each is
    // different: a DUP copy of a payload already handed over is taken for a redelivery of it
    // and not counted as malformed (identical fillers once lost 88 of 65,335 that way).
    let filler = 65_535 - first;
    for i in 0..filler {
        tx.publish("sensors/filler/vibration", format!("x{i}"))
            .await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(120), "filler acknowledged", || {
        daemon.metric("ebgand_malformed_total") >= filler
    })
    .await;
    // The ids have wrapped: the next messages are 1, 2, 3 ... again. The broker sends them,
    // they are lost in transit, and the broker sends each again, flagged DUP, on the next
    // connection. None was ever windowed.
    proxy.hold(true);
    let last = 60u64;
    for _ in 0..last {
        tx.publish("sensors/b/vibration", window(&mut m, false))
            .await;
    }
    tx.flushed().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    proxy.hold(false);
    eventually(Duration::from_secs(30), "every window scored", || {
        scored(&daemon) >= first + last
    })
    .await;
    // One window more, of another machine: a doubled window came in before it on the same
    // connection, and is scored before it by the same scorer. Once it is judged, every
    // window before it is counted.
    tx.publish("sensors/c/vibration", window(&mut m, false))
        .await;
    let marker = ebgand::telemetry::metrics::StreamLabel {
        stream: "vibration/c".into(),
    };
    eventually(Duration::from_secs(30), "the last window judged", || {
        daemon.metrics.stream_energy.get(&marker).is_some()
    })
    .await;
    assert_eq!(
        scored(&daemon),
        first + last + 1,
        "a window was scored twice"
    );
    // And the ids did wrap: after 65,535, the broker's ids started again at the first
    // windows' (the premise, read off the wire).
    let ids = proxy.publish_ids();
    let wrap = ids
        .iter()
        .position(|&id| id == u16::MAX)
        .expect("the broker's packet ids reached 65,535");
    assert!(
        ids[wrap + 1..].iter().any(|&id| u64::from(id) <= first),
        "no id of the first windows used again after the wrap"
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_are_forgotten_so_a_new_sensor_is_scored_under_the_cap() {
    let broker = Mosquitto::start().await;
    let prefix = "churn";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.max_streams = 3;
    s.stream_idle = Some(Duration::from_secs(1));
    let journal = s.journal.as_ref().unwrap().dir.clone();
    let outbox = s.mqtt.outbox_dir.clone();
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(9);
    // Rounds of three new sensors (serials in the topic), each raising an alert (3 fault
    // windows), then going quiet.
    let rounds = 6;
    for round in 0..rounds {
        for i in 0..3 {
            let topic = format!("sensors/serial{round}-{i}/vibration");
            for _ in 0..3 {
                tx.publish(&topic, window(&mut m, true)).await;
            }
        }
        tx.flushed().await;
        let raised = 3 * (round + 1);
        eventually(
            Duration::from_secs(20),
            &format!("round {round}: three alerts"),
            || obs.count(&format!("{prefix}/alerts/")) >= raised,
        )
        .await;
        assert_eq!(daemon.metric("ebgand_streams_refused_total"), 0);
        assert!(daemon.metric("ebgand_streams_active") <= 3);
        // Quiet for longer than the idle horizon (swept every second).
        eventually(
            Duration::from_secs(10),
            "the round's streams forgotten",
            || daemon.metric("ebgand_streams_active") == 0,
        )
        .await;
    }
    assert_eq!(
        daemon.metric("ebgand_streams_expired_total"),
        3 * rounds as u64
    );
    // A new sensor after all of them is scored.
    tx.publish("sensors/new/vibration", window(&mut m, false))
        .await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "the new sensor's window", || {
        obs.count(&format!("{prefix}/energy/vibration/new")) == 1
    })
    .await;
    daemon.shutdown().await.unwrap();
    // Nothing keeps the forgotten streams: the checkpoint holds the last one, the outbox's
    // per-stream memory none of them.
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(journal.join("checkpoint.json")).unwrap()).unwrap();
    let kept: Vec<&String> = checkpoint["streams"].as_object().unwrap().keys().collect();
    assert_eq!(kept, ["vibration/new"]);
    let outbox = ebgand::durable::outbox::Outbox::open(&outbox, 100).unwrap();
    assert!(
        outbox.last_alerts().is_empty(),
        "{:?}",
        outbox.last_alerts()
    );
}

/// One runtime worker runs every task of the daemon here (an edge box with one core). A
/// journal fsync that hangs (an SD card's can take seconds) holds up ingest, which must wait
/// for it before acknowledging; it must not hold up the rest: the window already queued is
/// scored, judged and its energy published while the sync still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_journal_fsync_that_hangs_never_holds_up_scoring_or_publishing() {
    let broker = Mosquitto::start().await;
    let prefix = "fsync";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let s = settings(broker.port, prefix, VIBRATION);
    assert!(s.journal.is_some(), "the journal is on by default");
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    faults.hold_journal_syncs(true);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(11);
    tx.publish("sensors/m1/vibration", window(&mut m, false))
        .await;
    tx.flushed().await;
    eventually(
        Duration::from_secs(15),
        "the window's journal sync hung",
        || faults.journal_sync_waiting(),
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the window's energy published",
        || obs.count(&format!("{prefix}/energy/")) >= 1,
    )
    .await;
    // Had the sync held the only worker, nothing would have run until the hold's own limit
    // (20 s) ended it: the sync would be done by now.
    assert!(
        faults.journal_sync_waiting(),
        "published while the sync hung"
    );
    assert_eq!(daemon.metric("ebgand_journal_syncs_total"), 0);
    faults.hold_journal_syncs(false);
    eventually(Duration::from_secs(15), "the journal synced", || {
        daemon.metric("ebgand_journal_syncs_total") >= 1
    })
    .await;
    assert_eq!(
        daemon.metric_where("ebgand_mqtt_reconnects_total", "connection=\"ingest\""),
        0
    );
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("vibration/m1".to_string(), 1)]),
    );
    daemon.shutdown().await.unwrap();
}
