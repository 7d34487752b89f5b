//! A stale stream (a dead sensor, a cut cable) raises its own alert and clears it when data
//! returns, through a real mosquitto: two sensors send a message every 50 ms, one stops for
//! two seconds (forty times its usual interval; `stale_after = 5`, `stale_min_s = 0.5`), the
//! other keeps going. Then the same with a daemon restart during the silence: the alert
//! raised before it is cleared by the next run when the sensor comes back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;

const DETECT: &str = "stale_after = 5\nstale_min_s = 0.5\n";

fn config() -> String {
    VIBRATION.replace("[detect]\n", &format!("[detect]\n{DETECT}"))
}

/// One message of 16 samples from each sensor named, every 50 ms, `n` times.
async fn beat(tx: &mut Sender, sensors: &[&str], n: usize) {
    let samples = serde_json::to_vec(&[1.0f32; 16]).unwrap();
    for _ in 0..n {
        for s in sensors {
            tx.publish(&format!("sensors/{s}/vibration"), samples.clone())
                .await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stale alerts seen so far: `(stream, state, json)`.
fn stale_alerts(obs: &Observer, prefix: &str) -> Vec<(String, String, serde_json::Value)> {
    obs.on(&format!("{prefix}/alerts/"))
        .into_iter()
        .filter(|a| a.json["kind"] == "stale")
        .map(|a| {
            (
                a.json["stream"].as_str().unwrap().to_owned(),
                a.json["state"].as_str().unwrap().to_owned(),
                a.json,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_raises_a_stale_alert_and_clears_it_when_data_returns() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "st/#").await;
    let daemon = TestDaemon::start(settings(broker.port, "st", &config())).await;
    let mut tx = Sender::start(broker.port).await;
    beat(&mut tx, &["dead", "alive"], 20).await;
    // "dead" stops; "alive" goes on for 2 s.
    let silence = std::time::Instant::now();
    beat(&mut tx, &["alive"], 40).await;
    eventually(Duration::from_secs(10), "the stale alert", || {
        !stale_alerts(&obs, "st").is_empty()
    })
    .await;
    let gap = silence.elapsed();
    beat(&mut tx, &["dead", "alive"], 10).await;
    eventually(Duration::from_secs(10), "the stale alert cleared", || {
        stale_alerts(&obs, "st").len() >= 2
    })
    .await;
    assert_eq!(daemon.metric("ebgand_streams_stale_total"), 1);
    // Everything the daemon published, drained by its shutdown, has arrived.
    daemon.shutdown().await.unwrap();
    obs.settled().await;
    let alerts = stale_alerts(&obs, "st");
    let states: Vec<(&str, &str)> = alerts
        .iter()
        .map(|(s, st, _)| (s.as_str(), st.as_str()))
        .collect();
    assert_eq!(
        states,
        [("vibration/dead", "raised"), ("vibration/dead", "cleared")],
        "only the silent sensor, raised once and cleared once"
    );
    let (raised, cleared) = (&alerts[0].2, &alerts[1].2);
    // Read against each other and against the silence the test made, not the clock: the
    // alert came past `stale_after` usual intervals and `stale_min_s`, and the clear tells
    // the whole silence, no longer than the test kept it.
    let usual = raised["usual_interval_s"].as_f64().unwrap();
    let at_raise = raised["silent_s"].as_f64().unwrap();
    assert!(usual > 0.0, "{raised}");
    assert!(at_raise >= 5.0 * usual && at_raise >= 0.5, "{raised}");
    let silent = cleared["silent_s"].as_f64().unwrap();
    assert!(silent >= at_raise, "{cleared}");
    assert!(
        // (A bound far past any delivery delay: the silence, not a time since some epoch.)
        silent <= gap.as_secs_f64() + 10.0,
        "{cleared}; the test kept {gap:?}"
    );
    assert_eq!(cleared["raise_alert_id"], raised["alert_id"]);
    assert!(cleared["duration_s"].as_f64().unwrap() > 0.0, "{cleared}");
    for (_, _, a) in &alerts {
        schema::assert_valid("alert.json", a);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_alert_raised_before_a_restart_is_cleared_after_it() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "sr/#").await;
    let settings = settings(broker.port, "sr", &config());
    let daemon = TestDaemon::start(settings.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    beat(&mut tx, &["dead"], 20).await;
    eventually(Duration::from_secs(10), "the stale alert", || {
        !stale_alerts(&obs, "sr").is_empty()
    })
    .await;
    daemon.shutdown().await.unwrap();
    // The next run has never heard the sensor; the outbox remembers the open incident. It
    // replays the sensor's journaled messages (its incomplete window), which are not the
    // sensor speaking again: the alert stays raised until it does.
    let daemon = TestDaemon::start(settings).await;
    // The replay and a second of stale checks, then whatever they published has arrived.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    obs.settled().await;
    assert_eq!(stale_alerts(&obs, "sr").len(), 1, "cleared by the replay");
    beat(&mut tx, &["dead"], 5).await;
    eventually(Duration::from_secs(10), "the stale alert cleared", || {
        stale_alerts(&obs, "sr").len() >= 2
    })
    .await;
    let alerts = stale_alerts(&obs, "sr");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let (raised, cleared) = (&alerts[0].2, &alerts[1].2);
    assert_eq!(
        (raised["state"].as_str(), cleared["state"].as_str()),
        (Some("raised"), Some("cleared"))
    );
    assert_eq!(cleared["raise_alert_id"], raised["alert_id"]);
    assert!(
        cleared.get("silent_s").is_none(),
        "silence began before the restart: {cleared}"
    );
    schema::assert_valid("alert.json", cleared);
    daemon.shutdown().await.unwrap();
}

/// A sensor silent past `[limits] stream_idle_s` is forgotten while its stale alert is up; the
/// alert stays raised, and is cleared when the sensor speaks again as a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_stream_forgotten_while_silent_is_cleared_when_it_is_back() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "sf/#").await;
    let config = format!("{}\n[limits]\nstream_idle_s = 2\n", config());
    let daemon = TestDaemon::start(settings(broker.port, "sf", &config)).await;
    let mut tx = Sender::start(broker.port).await;
    beat(&mut tx, &["dead"], 20).await;
    eventually(Duration::from_secs(10), "the stream forgotten", || {
        daemon.metric("ebgand_streams_expired_total") >= 1
    })
    .await;
    assert_eq!(stale_alerts(&obs, "sf").len(), 1, "raised, not cleared");
    beat(&mut tx, &["dead"], 5).await;
    eventually(Duration::from_secs(10), "the stale alert cleared", || {
        stale_alerts(&obs, "sf").len() >= 2
    })
    .await;
    let alerts = stale_alerts(&obs, "sf");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1].1, "cleared");
    assert_eq!(alerts[1].2["raise_alert_id"], alerts[0].2["alert_id"]);
    daemon.shutdown().await.unwrap();
}

/// A machine whose alert is up goes quiet past `[limits] stream_idle_s` (a sensor unplugged
/// mid-fault, a machine taken away): the daemon forgets its stream, and since nothing will
/// judge it again it clears the alert then (`"reason": "forgotten"`, linked to its raise), and
/// its retained state says `forgotten` instead of `raised` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_still_raised_when_its_stream_is_forgotten_is_cleared() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "fg/#").await;
    let config = format!("{VIBRATION}\n[limits]\nstream_idle_s = 2\n");
    let daemon = TestDaemon::start(settings(broker.port, "fg", &config)).await;
    let mut tx = Sender::start(broker.port).await;
    fault_on_m1(&mut tx).await;
    let alerts = || obs.on("fg/alerts/vibration/m1");
    eventually(Duration::from_secs(20), "the fault's alert", || {
        !alerts().is_empty()
    })
    .await;
    eventually(Duration::from_secs(20), "the alert cleared", || {
        alerts().len() >= 2
    })
    .await;
    let alerts = alerts();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let (raised, cleared) = (&alerts[0].json, &alerts[1].json);
    assert_eq!(raised["state"], "raised");
    assert_eq!(cleared["state"], "cleared");
    assert_eq!(cleared["reason"], "forgotten");
    assert_eq!(cleared["raise_alert_id"], raised["alert_id"]);
    assert!(cleared["duration_s"].as_f64().unwrap() >= 0.0, "{cleared}");
    schema::assert_valid("alert.json", cleared);
    assert_eq!(daemon.metric("ebgand_streams_expired_total"), 1);
    // A dashboard that subscribes now reads the retained state: forgotten, not raised.
    let late = Observer::start(broker.port, "fg/state/#").await;
    eventually(Duration::from_secs(10), "the retained state", || {
        !late.on("fg/state/vibration/m1").is_empty()
    })
    .await;
    let state = late.on("fg/state/vibration/m1").remove(0);
    assert!(state.retain);
    assert_eq!(state.json["phase"], "forgotten");
    assert_eq!(state.json["state"], "normal");
    schema::assert_valid("state.json", &state.json);
    daemon.shutdown().await.unwrap();
}

/// A stream forgotten after going quiet stays forgotten across a restart. Its messages may
/// still be in the journal (a segment is retired whole); before, the next start replayed
/// them as a new stream's, judged a week-old fault afresh and published its alert again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_stream_is_not_brought_back_by_the_next_start() {
    forgotten_then_restarted(false).await;
}

/// The same with the stream back after it was forgotten, in a new life: the next start
/// replayed its earlier life's messages into it (kept, since the stream was in the table
/// again), and published the old fault's alert again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_back_after_it_was_forgotten_does_not_get_its_earlier_life_replayed() {
    forgotten_then_restarted(true).await;
}

/// A stream raises, goes quiet and is forgotten, and (`comes_back`) starts a new life; after
/// a restart, nothing of its earlier life is judged or published again.
async fn forgotten_then_restarted(comes_back: bool) {
    let broker = Mosquitto::start().await;
    let prefix = if comes_back { "rc" } else { "rb" };
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let config = format!("{VIBRATION}\n[limits]\nstream_idle_s = 2\n");
    let settings = settings(broker.port, prefix, &config);
    let daemon = TestDaemon::start(settings.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = fault_on_m1(&mut tx).await;
    let alerts = || obs.on(&format!("{prefix}/alerts/vibration/m1"));
    eventually(
        Duration::from_secs(20),
        "raised, then cleared as forgotten",
        || alerts().len() >= 2,
    )
    .await;
    assert_eq!(alerts()[1].json["reason"], "forgotten");
    // Forgotten by the checkpoint too (saved every second).
    let file = settings
        .journal
        .as_ref()
        .unwrap()
        .dir
        .join("checkpoint.json");
    let checkpointed =
        || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
    // Without it, and without it as one being forgotten once the alerting stage has cleared it.
    eventually(Duration::from_secs(10), "the checkpoint without it", || {
        let c = checkpointed();
        c["streams"].get("vibration/m1").is_none() && c.get("forgetting").is_none()
    })
    .await;
    if comes_back {
        // A new life: window 0 again, healthy, in the checkpoint again.
        for _ in 0..3 {
            let samples = serde_json::to_vec(&m.samples(64, false)).unwrap();
            tx.publish("sensors/m1/vibration", samples).await;
        }
        eventually(
            Duration::from_secs(10),
            "the checkpoint with it again",
            || checkpointed()["streams"]["vibration/m1"]["next_seq"] == 3,
        )
        .await;
    }
    daemon.shutdown().await.unwrap();
    let before = obs.on(&format!("{prefix}/")).len();
    let daemon = TestDaemon::start(settings).await;
    // A live window of another machine: replayed windows are scored, judged and published
    // before it, so once its energy is here, any of the forgotten stream would be too.
    for _ in 0..2 {
        let samples = serde_json::to_vec(&m.samples(64, false)).unwrap();
        tx.publish("sensors/m2/vibration", samples).await;
    }
    eventually(
        Duration::from_secs(20),
        "the other machine's energy",
        || !obs.on(&format!("{prefix}/energy/vibration/m2")).is_empty(),
    )
    .await;
    let again: Vec<_> = obs.on(&format!("{prefix}/"))[before..]
        .iter()
        .filter(|s| s.topic.ends_with("vibration/m1"))
        .map(|s| s.topic.clone())
        .collect();
    assert!(again.is_empty(), "brought back: {again:?}");
    assert_eq!(daemon.metric("ebgand_journal_replayed_total"), 0);
    daemon.shutdown().await.unwrap();
}

/// Without a journal a restart carries no stream on: a raise the last run left open is cleared
/// as forgotten when the next run starts, and the retained state says so. Before, nothing ever
/// cleared it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_journal_a_restart_clears_the_raises_it_cannot_carry_on() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "nj/#").await;
    let mut settings = settings(broker.port, "nj", VIBRATION);
    settings.journal = None;
    let daemon = TestDaemon::start(settings.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    fault_on_m1(&mut tx).await;
    let alerts = || obs.on("nj/alerts/vibration/m1");
    eventually(Duration::from_secs(20), "the fault's alert", || {
        !alerts().is_empty()
    })
    .await;
    daemon.shutdown().await.unwrap();
    let daemon = TestDaemon::start(settings).await;
    eventually(Duration::from_secs(20), "the alert cleared", || {
        alerts().len() >= 2
    })
    .await;
    let (raised, cleared) = (&alerts()[0].json, &alerts()[1].json);
    assert_eq!(raised["state"], "raised");
    assert_eq!(cleared["state"], "cleared");
    assert_eq!(cleared["reason"], "forgotten");
    assert_eq!(cleared["raise_alert_id"], raised["alert_id"]);
    eventually(Duration::from_secs(10), "the forgotten state", || {
        obs.on("nj/state/vibration/m1")
            .iter()
            .any(|s| s.json["phase"] == "forgotten")
    })
    .await;
    daemon.shutdown().await.unwrap();
}

/// Twenty healthy windows of machine `m1`, then twenty of a fault (the threshold raises); the
/// machine, to send more.
async fn fault_on_m1(tx: &mut Sender) -> ebgand::demo::sim::Machine {
    let mut m = ebgand::demo::sim::Machine::new(7);
    for fault in [false, true] {
        for _ in 0..20 {
            let samples = serde_json::to_vec(&m.samples(64, fault)).unwrap();
            tx.publish("sensors/m1/vibration", samples).await;
        }
    }
    tx.flushed().await;
    m
}
