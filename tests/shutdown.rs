//! SIGTERM is honoured within the drain deadline (`[shutdown] grace_ms`) whatever the control
//! loop is doing: activating a slow model, reloading on SIGHUP, handing a learner's queue to a
//! first trained version, or waiting on a broker that cannot be reached. The slow parts come
//! from the test-only fault hooks (`ebgand::faults`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;
use ebgand::signal::Signal;
use ebgand::sim::Machine;

/// The drain deadline the daemons here get.
const GRACE: Duration = Duration::from_secs(2);

/// How long the tests wait for a stop before they fail: the deadline, and room for a loaded
/// machine. A hang guard, not a measurement: the slow operations below take 20 s, and a
/// SIGTERM that waited for one would still be waiting. (The test runtime still waits for the
/// abandoned load at its end.)
const LIMIT: Duration = Duration::from_secs(8);

/// A model load as slow as a large TensorRT engine build.
const SLOW_LOAD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_reload_stops_the_daemon_in_time() {
    let broker = Mosquitto::start().await;
    let mut s = settings(broker.port, "slowload", VIBRATION);
    s.shutdown_grace = GRACE;
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    faults.delay_loads(SLOW_LOAD);
    // SIGHUP: every model is loaded again and gated; this load takes 20 s (SLOW_LOAD), ten times the grace.
    daemon.signal(Signal::Reload).await;
    eventually(Duration::from_secs(10), "the reload loading", || {
        faults.activation_loads() >= 1
    })
    .await;
    daemon.shutdown_within(LIMIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_unreachable_and_a_reload_waiting_on_it_stops_in_time() {
    let mut broker = Mosquitto::start().await;
    let mut s = settings(broker.port, "nobroker", VIBRATION);
    s.shutdown_grace = GRACE;
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    // Windows held in the pipeline, then the broker goes away: their energy and state fill
    // the publish connection's queue, and everything that publishes waits.
    faults.pause_scoring(true);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(2);
    for _ in 0..400 {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    tx.flushed().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop().await;
    faults.pause_scoring(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A reload now waits on the scorer (behind the stuck alerting stage) and on publishing
    // its event.
    daemon.signal(Signal::Reload).await;
    daemon.signal(Signal::Reload).await;
    eventually(Duration::from_secs(10), "the reload under way", || {
        faults.activation_loads() >= 1
    })
    .await;
    assert!(!daemon.metrics.connected(), "the broker is still reachable");
    daemon.shutdown_within(LIMIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_learners_handover_stops_the_daemon_in_time() {
    assert!(
        root().join(".venv/trainer/bin/python").exists(),
        "trainer venv missing: run `make setup`"
    );
    let broker = Mosquitto::start().await;
    // The vibration stream with no model version: it learns, trains, then hands over.
    let mut s = settings(
        broker.port,
        "handover",
        &VIBRATION.replace("path = \"models/vibration/fixture-1\"", ""),
    );
    s.shutdown_grace = GRACE;
    s.learning.period.windows = 200;
    s.learning.steps = 100;
    s.train.python = root().join(".venv/trainer/bin/python");
    s.train.worker = root().join("models/trainer");
    s.train.cache = Some(std::env::temp_dir().join("ebgand-test-trainer-cache"));
    // Loading the trained version (the first step of the handover) takes SLOW_LOAD (20 s).
    s.faults.delay_loads(SLOW_LOAD);
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(12);
    for _ in 0..200 {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(120),
        "the first training run done",
        || daemon.metric_where("ebgand_training_runs_total", "state=\"ok\"") == 1,
    )
    .await;
    // The trained version loading (the learning model had no version to load at the start).
    eventually(Duration::from_secs(10), "the first version loading", || {
        faults.loads() >= 1
    })
    .await;
    daemon.shutdown_within(LIMIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_in_time_on_sigterm_during_a_slow_reload() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = "procslow";
    let obs = Observer::start(broker.port, &format!("{prefix}/status")).await;
    let grace = GRACE.as_millis().to_string();
    let mut child = spawn_daemon_with(
        broker.port,
        prefix,
        dir.path(),
        "",
        &[
            ("EBGAND_FAULTS", "activation_delay_ms=20000"),
            ("EBGAND__SHUTDOWN__GRACE_MS", grace.as_str()),
        ],
    );
    eventually(Duration::from_secs(20), "online", || {
        obs.on(&format!("{prefix}/status"))
            .last()
            .is_some_and(|s| s.json["status"] == "online")
    })
    .await;
    kill(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(&child, "-TERM");
    let status = tokio::time::timeout(LIMIT, wait_exit(&mut child))
        .await
        .unwrap_or_else(|_| panic!("the daemon did not stop within {LIMIT:?} of SIGTERM"));
    assert_eq!(status.code(), Some(0));
}

/// A second SIGTERM (or SIGINT) stops at once, the drain unfinished: with scoring held and
/// windows queued under a 20-second grace period, the daemon is gone well before the grace
/// period ends (the 8 s wait is a hang guard). Before, it waited out the grace period all the
/// same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let broker = Mosquitto::start().await;
    let mut s = settings(broker.port, "second", VIBRATION);
    s.shutdown_grace = Duration::from_secs(20);
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    faults.pause_scoring(true);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(2);
    for _ in 0..50 {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    tx.flushed().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal(Signal::Shutdown).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(daemon.running(), "the drain ended before the second signal");
    daemon.signal(Signal::Quit).await;
    let stopped = daemon.exited(LIMIT).await;
    faults.pause_scoring(false);
    stopped.unwrap();
}
