//! MQTT control safety: commands only on `{prefix}/control/<command>`, validated strictly,
//! retained commands refused, and a per-minute budget; every refusal is published back on
//! `{prefix}/events` with its reason (rate-limit refusals once a minute, the rest counted).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;

fn outcome(daemon: &TestDaemon, outcome: &str) -> u64 {
    daemon.metric_where(
        "ebgand_control_commands_total",
        &format!("outcome=\"{outcome}\""),
    )
}

fn reasons(obs: &Observer, prefix: &str) -> Vec<(String, String)> {
    obs.on(&format!("{prefix}/events"))
        .iter()
        .filter(|e| e.json["event"] == "command_refused" || e.json["event"] == "command_failed")
        .map(|e| {
            (
                e.json["command"].as_str().unwrap_or_default().to_string(),
                e.json["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retained_and_excess_commands_are_refused_with_reasons() {
    let broker = Mosquitto::start().await;
    let prefix = "ctl";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut tx = Sender::start(broker.port).await;
    let topic = |c: &str| format!("{prefix}/control/{c}");
    // A retained command, left on the broker: the broker hands it to every new subscription,
    // so it would run again at each reconnect. It is refused without spending the budget.
    tx.publish_retained(&topic("reload"), "{}").await;
    tx.flushed().await;
    let toml = format!("[control]\nmax_per_minute = 5\n{VIBRATION}");
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    eventually(Duration::from_secs(10), "retained refusal", || {
        reasons(&obs, prefix)
            .iter()
            .any(|(_, r)| r.contains("retained control messages are refused"))
    })
    .await;

    // Three that spend the budget: an unknown command, bad JSON, a version that does not exist.
    tx.publish(&topic("explode"), "{}").await;
    tx.publish(&topic("reload"), "{not json").await;
    tx.publish(
        &topic("activate"),
        r#"{"model":"vibration","version":"nope"}"#,
    )
    .await;
    tx.flushed().await;
    eventually(Duration::from_secs(10), "three more replies", || {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .filter(|e| e.json["event"] != "activated")
            .count()
            >= 4
    })
    .await;
    let got = reasons(&obs, prefix);
    assert!(
        got.iter()
            .any(|(c, r)| c == "explode" && r.contains("unknown command")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(c, r)| c == "reload" && r.contains("bad payload")),
        "{got:?}"
    );
    let missing = obs
        .on(&format!("{prefix}/events"))
        .into_iter()
        .find(|e| e.json["version"] == "nope")
        .expect("a reply about version nope");
    assert_eq!(missing.json["event"], "refused", "{}", missing.json);
    assert!(!missing.json["reason"].as_str().unwrap().is_empty());

    // Ten more: two fit in the budget (5 - 3), eight are refused, one reply says so.
    for _ in 0..10 {
        tx.publish(&topic("reload"), "").await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(10), "all 14 commands counted", || {
        ["accepted", "refused", "retained", "rate_limited", "dropped"]
            .iter()
            .map(|o| outcome(&daemon, o))
            .sum::<u64>()
            == 14
    })
    .await;
    assert_eq!(outcome(&daemon, "accepted"), 3); // activate (refused later, by the registry), 2 reloads
    assert_eq!(outcome(&daemon, "refused"), 2);
    assert_eq!(outcome(&daemon, "retained"), 1);
    assert_eq!(outcome(&daemon, "rate_limited"), 8);
    assert_eq!(outcome(&daemon, "dropped"), 0);
    eventually(Duration::from_secs(10), "one rate-limit reply", || {
        reasons(&obs, prefix)
            .iter()
            .any(|(_, r)| r.contains("rate limit: at most 5 commands a minute"))
    })
    .await;
    assert!(daemon.running());
    // Every reply the daemon had to send, drained by its shutdown, has arrived.
    daemon.shutdown().await.unwrap();
    obs.settled().await;
    let limited = reasons(&obs, prefix)
        .iter()
        .filter(|(_, r)| r.contains("rate limit"))
        .count();
    assert_eq!(limited, 1, "one reply per minute for a flood");
}

/// With `mqtt.duplicates = "identical"` a sensor reading sent twice is taken as a resend of
/// the first; a command sent twice is two commands. Before, the second `reload` was dropped
/// as a duplicate, unanswered and uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_twice_is_run_twice_when_duplicates_are_identical_messages() {
    let broker = Mosquitto::start().await;
    let prefix = "twice";
    let toml = format!("[mqtt]\nduplicates = \"identical\"\n{VIBRATION}");
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    for _ in 0..2 {
        tx.publish(&format!("{prefix}/control/reload"), "{}").await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(10), "both reloads accepted", || {
        outcome(&daemon, "accepted") == 2
    })
    .await;
    assert_eq!(daemon.metric("ebgand_redeliveries_skipped_total"), 0);
    daemon.shutdown().await.unwrap();
}
