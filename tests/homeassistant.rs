//! Home Assistant MQTT discovery through a real mosquitto: with `[homeassistant]` on, each
//! stream is announced as a `binary_sensor` (retained, before its first state), and everything
//! the announcement points at exists where it says: the state topic holds the stream's retained
//! state, whose `state` the value template reads (`raised` = on), and the availability topic
//! holds the daemon's retained status, `online` while it runs and `offline` after it stops.
//! A Home Assistant that connects later (a fresh subscriber) finds all of it retained, also
//! after the broker restarted with nothing kept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

const CHUNK: usize = 32;

async fn publish(tx: &mut Sender, topic: &str, m: &mut Machine, windows: usize, fault: bool) {
    for _ in 0..windows * 64 / CHUNK {
        tx.publish(topic, serde_json::to_vec(&m.samples(CHUNK, fault)).unwrap())
            .await;
    }
}

/// What Home Assistant makes of a message with the template the config announced: the
/// template rendered as Jinja2 with the message as `value_json`, as Home Assistant does.
fn render(template: &serde_json::Value, message: &serde_json::Value) -> String {
    let env = minijinja::Environment::new();
    env.render_str(
        template.as_str().expect("a template"),
        minijinja::context! { value_json => minijinja::Value::from_serialize(message) },
    )
    .unwrap_or_else(|e| panic!("the template {template} does not render: {e}"))
    .trim()
    .to_owned()
}

/// The latest retained message on `topic`, as a subscriber that connects now gets it.
async fn retained(port: u16, filter: &str, topic: &str) -> serde_json::Value {
    let late = Observer::start(port, filter).await;
    let mut found = None;
    eventually(Duration::from_secs(5), "the retained message", || {
        found = late
            .on(topic)
            .into_iter()
            .rfind(|s| s.topic == topic && s.retain);
        found.is_some()
    })
    .await;
    found.unwrap().json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_is_announced_and_its_state_and_availability_are_where_the_config_says() {
    let mut broker = Mosquitto::start().await;
    let all = Observer::start(broker.port, "#").await;
    let toml =
        format!("{VIBRATION}\n[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha-test\"\n");
    let settings = settings(broker.port, "hs", &toml);
    let daemon = TestDaemon::start(settings.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    let (mut m1, mut m2) = (Machine::new(1), Machine::new(2));
    publish(&mut tx, "sensors/m1/vibration", &mut m1, 20, false).await;
    publish(&mut tx, "sensors/m2/vibration", &mut m2, 20, false).await;
    publish(&mut tx, "sensors/m1/vibration", &mut m1, 10, true).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "m1's alert", || {
        all.count("hs/alerts/vibration/m1") >= 1
    })
    .await;

    // One config per stream, each before its stream's first state.
    let seen = all.on("");
    let configs: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.topic.starts_with("ha-test/"))
        .collect();
    assert_eq!(configs.len(), 2, "{configs:?}");
    let mut unique = std::collections::HashSet::new();
    for (at, c) in &configs {
        assert!(
            c.topic
                .starts_with("ha-test/binary_sensor/ebgand_test-node/")
                && c.topic.ends_with("/config"),
            "{}",
            c.topic
        );
        let state_topic = c.json["state_topic"].as_str().unwrap();
        let first_state = seen.iter().position(|s| s.topic == state_topic).unwrap();
        assert!(*at < first_state, "config after the stream's first state");
        assert_eq!(c.json["json_attributes_topic"], state_topic);
        assert_eq!(c.json["device_class"], "problem");
        assert_eq!(c.json["device"]["identifiers"][0], "ebgand_test-node");
        assert!(unique.insert(c.json["unique_id"].as_str().unwrap().to_owned()));
    }

    // A Home Assistant connecting now: both configs retained, each pointing at a retained state
    // it reads as the stream's alert state, and at the daemon's status.
    let mut states = Vec::new();
    for (_, c) in &configs {
        let cfg = retained(broker.port, "ha-test/#", &c.topic).await;
        assert_eq!(cfg, c.json);
        let state_topic = cfg["state_topic"].as_str().unwrap();
        let state = retained(broker.port, "hs/state/#", state_topic).await;
        states.push((
            cfg["name"].as_str().unwrap().to_owned(),
            render(&cfg["value_template"], &state),
        ));
        let avail = &cfg["availability"][0];
        let status = retained(broker.port, "hs/status", avail["topic"].as_str().unwrap()).await;
        assert_eq!(
            render(&avail["value_template"], &status),
            avail["payload_available"]
        );
    }
    states.sort();
    // A learning stream's state has no `state` yet: not a problem.
    let learning = serde_json::json!({ "stream": "vibration/m1", "learning": true });
    assert_eq!(
        render(&configs[0].1.json["value_template"], &learning),
        "OFF"
    );
    assert_eq!(
        states,
        [
            ("vibration/m1".to_owned(), "ON".to_owned()),
            ("vibration/m2".to_owned(), "OFF".to_owned())
        ]
    );

    // The broker restarts with nothing kept (no persistence): the daemon publishes the
    // configs and each stream's latest state again, so a Home Assistant that connects after
    // still finds both sensors, m1's still on.
    broker.restart_forgetting().await;
    eventually(Duration::from_secs(30), "the daemon back", || {
        daemon.metrics.ready()
    })
    .await;
    for (_, c) in &configs {
        let cfg = retained(broker.port, "ha-test/#", &c.topic).await;
        assert_eq!(cfg, c.json);
        let state = retained(
            broker.port,
            "hs/state/#",
            cfg["state_topic"].as_str().unwrap(),
        )
        .await;
        let on = if cfg["name"] == "vibration/m1" {
            "ON"
        } else {
            "OFF"
        };
        assert_eq!(render(&cfg["value_template"], &state), on, "{state}");
    }

    daemon.shutdown().await.unwrap();
    let cfg = &configs[0].1.json;
    let avail = &cfg["availability"][0];
    let status = retained(broker.port, "hs/status", "hs/status").await;
    assert_eq!(
        render(&avail["value_template"], &status),
        avail["payload_not_available"]
    );
}
