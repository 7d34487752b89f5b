//! Every stage is supervised: a scorer that panics is rebuilt while every other stream goes
//! on, and a stage that stops stops the daemon with an error (exit 1, for systemd to restart
//! it). Faults come from the test-only hooks (`ebgand::faults`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ebgand::sim::Machine;

/// The vibration fixture and the multichannel fixture (16 samples x 8 channels, flat JSON
/// arrays interleaved by channel on pumps/+/skab), each on its own model.
fn two_models() -> String {
    format!(
        r#"{VIBRATION}
[models.multichannel]
path = "models/multichannel/fixture-1"
[[streams]]
name = "pump"
topic = "pumps/+/skab"
model = "multichannel"
format = "array"
channels = 8
window = 16
"#
    )
}

/// One multichannel window near the fixture's training data.
fn pump_window(k: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..16)
        .flat_map(|t| {
            (0..8).map(move |c| {
                let phase = (t + k) as f32 * std::f32::consts::TAU / (8 + c) as f32;
                (1 + c) as f32 + 0.3 * phase.sin()
            })
        })
        .collect();
    serde_json::to_vec(&values).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_scorer_is_rebuilt_and_no_other_stream_stalls() {
    let broker = Mosquitto::start().await;
    let prefix = "sup";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let s = settings(broker.port, prefix, &two_models());
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    // Watch /readyz's reason while the fault plays out.
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let (metrics, seen) = (daemon.metrics.clone(), said.clone());
    let watcher = tokio::spawn(async move {
        loop {
            if let Some(why) = metrics.not_ready() {
                seen.lock().unwrap().push(why);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Two batches in a row panic: the session is rebuilt at once after the first, after a
    // pause after the second; meanwhile this model's batches fail at once.
    faults.panic_scorer("vibration", 2);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(4);
    let (vibration, pumps) = (300u64, 100u64);
    for i in 0..vibration {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
        if i % 3 == 0 {
            tx.publish("pumps/p1/skab", pump_window(i as usize)).await;
        }
    }
    tx.flushed().await;
    // The other model's stream is scored whole, every window once.
    eventually(Duration::from_secs(30), "every pump window scored", || {
        obs.count(&format!("{prefix}/energy/pump/")) as u64 >= pumps
    })
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/pump/")),
        &HashMap::from([("pump/p1".to_string(), pumps)]),
    );
    // The session is rebuilt on a thread of its own while the batches fail at once: the second
    // panic comes with the first batch that reaches the rebuilt session, so windows go on
    // until the second rebuild.
    let restarts =
        || daemon.metric_where("ebgand_stage_restarts_total", "stage=\"scorer:vibration\"");
    let mut sent = vibration;
    tokio::time::timeout(Duration::from_secs(30), async {
        while restarts() < 2 {
            tx.publish("sensors/m1/vibration", healthy_window(&mut m))
                .await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two session rebuilds");
    tx.flushed().await;
    // Every vibration window was scored or failed (counted), none was stuck or lost.
    let failed = || daemon.metric_where("ebgand_windows_failed_total", "model=\"vibration\"");
    let scored = || daemon.metric_where("ebgand_windows_scored_total", "model=\"vibration\"");
    eventually(
        Duration::from_secs(30),
        "every vibration window handled",
        || scored() + failed() == sent,
    )
    .await;
    assert!(failed() >= 2, "the panicked batches failed: {}", failed());
    assert_eq!(restarts(), 2);
    // Recovered: new windows are scored, and the daemon is ready again.
    let before = obs.count(&format!("{prefix}/energy/vibration/"));
    for _ in 0..10 {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(20),
        "windows after the recovery",
        || obs.count(&format!("{prefix}/energy/vibration/")) >= before + 10,
    )
    .await;
    assert!(daemon.metrics.ready());
    watcher.abort();
    let said = said.lock().unwrap().clone();
    assert!(
        said.iter().any(|w| w.contains("scorer:vibration down")),
        "/readyz never named the scorer: {said:?}"
    );
    daemon.shutdown().await.unwrap();
}

/// A session that takes long to rebuild (a TensorRT engine) is built on a thread of its own:
/// meanwhile the model's batches fail at once, so its small queue never fills and ingest goes
/// on for the other model. Before, the scorer thread built it itself and took no batch, and
/// every stream waited out the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_session_rebuild_stalls_no_other_stream() {
    let broker = Mosquitto::start().await;
    let prefix = "slow";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let mut s = settings(broker.port, prefix, &two_models());
    s.scoring.queue_windows = std::num::NonZeroUsize::new(8).unwrap();
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    // Loads from here on take long: the rebuild is still under way when the pump's windows,
    // sent after 200 of the vibration model's, have all been scored.
    faults.delay_loads(Duration::from_secs(10));
    faults.panic_scorer("vibration", 1);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    let (vibration, pumps) = (200u64, 40u64);
    for _ in 0..vibration {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    for i in 0..pumps {
        tx.publish("pumps/p1/skab", pump_window(i as usize)).await;
    }
    eventually(Duration::from_secs(30), "every pump window scored", || {
        obs.count(&format!("{prefix}/energy/pump/")) as u64 >= pumps
    })
    .await;
    let restarts =
        || daemon.metric_where("ebgand_stage_restarts_total", "stage=\"scorer:vibration\"");
    let failed = daemon.metric_where("ebgand_windows_failed_total", "model=\"vibration\"");
    assert_eq!(restarts(), 0, "the pump waited for the rebuild");
    let why = daemon.metrics.not_ready().unwrap_or_default();
    assert!(why.contains("scorer:vibration down"), "{why}");
    assert!(
        failed > 8,
        "more of the vibration model's windows than its queue holds failed at once: {failed}"
    );
    // The rebuilt session serves.
    eventually(Duration::from_secs(30), "the session rebuilt", || {
        restarts() == 1
    })
    .await;
    let before = obs.count(&format!("{prefix}/energy/vibration/"));
    tx.publish("sensors/m1/vibration", healthy_window(&mut m))
        .await;
    eventually(
        Duration::from_secs(20),
        "a window after the rebuild",
        || obs.count(&format!("{prefix}/energy/vibration/")) > before,
    )
    .await;
    tx.flushed().await;
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_stops_stops_the_daemon_with_an_error() {
    let broker = Mosquitto::start().await;
    let s = settings(broker.port, "exit", VIBRATION);
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    let metrics = daemon.metrics.clone();
    faults.exit_batcher("vibration");
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(6);
    tx.publish("sensors/m1/vibration", healthy_window(&mut m))
        .await;
    tx.flushed().await;
    let outcome = daemon.exited(Duration::from_secs(30)).await;
    match outcome {
        Err(ebgand::app::AppError::StageDied { stage }) => assert_eq!(stage, "batcher:vibration"),
        other => panic!("expected the batcher's end to stop the daemon, got {other:?}"),
    }
    let why = metrics.not_ready().unwrap();
    assert!(why.contains("batcher:vibration down (stopped)"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_when_a_stage_stops() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_daemon_with(
        broker.port,
        "exit1",
        dir.path(),
        "",
        &[("EBGAND_FAULTS", "exit_batcher=vibration")],
    );
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(7);
    // Until the daemon has subscribed, messages go nowhere: keep sending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon kept running"
        );
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1));
}
