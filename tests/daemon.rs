//! End-to-end: a real mosquitto, the daemon in-process, real ONNX Runtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

const CHUNK: usize = 32; // samples per message; a window (64) is two messages

async fn publish_phase(tx: &mut Sender, topic: &str, m: &mut Machine, windows: usize, fault: bool) {
    for _ in 0..windows * 64 / CHUNK {
        tx.publish(topic, serde_json::to_vec(&m.samples(CHUNK, fault)).unwrap())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_then_fault_raises_once_and_clears_once() {
    let broker = Mosquitto::start().await;
    let prefix = "t1";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let daemon = TestDaemon::start(settings(broker.port, prefix, VIBRATION)).await;
    let mut tx = Sender::start(broker.port).await;
    let topic = "sensors/m1/vibration";
    let mut m = Machine::new(42);
    let (healthy, fault, recovery) = (40, 20, 30);
    publish_phase(&mut tx, topic, &mut m, healthy, false).await;
    publish_phase(&mut tx, topic, &mut m, fault, true).await;
    publish_phase(&mut tx, topic, &mut m, recovery, false).await;
    tx.flushed().await;
    let total = (healthy + fault + recovery) as u64;
    eventually(
        Duration::from_secs(30),
        "every window's energy published",
        || obs.count(&format!("{prefix}/energy/")) as u64 >= total,
    )
    .await;

    let stream = "vibration/m1";
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([(stream.to_string(), total)]),
    );
    assert_eq!(daemon.metric("ebgand_windows_scored_total"), total);

    // Healthy windows stay under threshold (the calibrated 0.995 quantile allows a rare one,
    // never k=3 in a row).
    let energy = obs.on(&format!("{prefix}/energy/"));
    let healthy_over = energy
        .iter()
        .filter(|s| s.json["seq"].as_u64().unwrap() < healthy as u64 && s.json["anomalous"] == true)
        .count();
    assert!(
        healthy_over <= 2,
        "{healthy_over} healthy windows over threshold"
    );

    let alerts = obs.on(&format!("{prefix}/alerts/{stream}"));
    assert_eq!(
        alerts.len(),
        2,
        "expected one raise and one clear: {alerts:#?}"
    );
    let (raised, cleared) = (&alerts[0].json, &alerts[1].json);
    assert_eq!(raised["state"], "raised");
    assert_eq!(cleared["state"], "cleared");
    let k = 3;
    let raised_seq = raised["seq"].as_u64().unwrap();
    assert!(
        (healthy as u64..healthy as u64 + k).contains(&raised_seq),
        "raised at window {raised_seq}, fault began at {healthy}"
    );
    let cleared_seq = cleared["seq"].as_u64().unwrap();
    assert!(
        ((healthy + fault) as u64..(healthy + fault) as u64 + 3).contains(&cleared_seq),
        "cleared at {cleared_seq}"
    );
    for a in [raised, cleared] {
        assert_eq!(a["stream"], stream);
        assert_eq!(a["node"], "test-node");
        assert_eq!(a["model"]["name"], "vibration");
        assert_eq!(a["model"]["version"], "fixture-1");
        assert!(a["energy"].as_f64().is_some() && a["threshold"].as_f64().unwrap() > 0.0);
        let (start, end) = (
            a["window"]["start"].as_u64().unwrap(),
            a["window"]["end"].as_u64().unwrap(),
        );
        assert_eq!(
            (start, end),
            (
                a["seq"].as_u64().unwrap() * 64,
                a["seq"].as_u64().unwrap() * 64 + 63
            )
        );
    }
    assert!(raised["energy"].as_f64().unwrap() > raised["threshold"].as_f64().unwrap());
    // A pager's view: when each was judged, and the clear names its raise and how long the
    // incident lasted.
    let time = |a: &serde_json::Value| {
        humantime::parse_rfc3339(a["time"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {a}"))
    };
    let lasted = time(cleared).duration_since(time(raised)).unwrap();
    assert_eq!(cleared["raise_alert_id"], raised["alert_id"]);
    let duration = cleared["duration_s"].as_f64().unwrap();
    assert!(
        (duration - lasted.as_secs_f64()).abs() < 0.002,
        "{duration} s, {lasted:?}"
    );
    assert!(raised.get("raise_alert_id").is_none());
    for a in [raised, cleared] {
        schema::assert_valid("alert.json", a);
    }
    assert_eq!(daemon.metric("ebgand_alerts_total"), 2);
    // Per-stream gauges, build and process metrics, labelled counters from 0.
    eventually(Duration::from_secs(5), "the stream's silence gauge", || {
        daemon
            .metrics
            .encode()
            .contains(r#"ebgand_stream_silence_seconds{stream="vibration/m1"}"#)
    })
    .await;
    let text = daemon.metrics.encode();
    let at =
        |name: &str, label: &str| ebgand::telemetry::metrics::sum_metric_where(&text, name, label);
    let this = r#"stream="vibration/m1""#;
    assert_eq!(at("ebgand_stream_alert", this), 0.0, "cleared at the end");
    let last = obs.on(&format!("{prefix}/energy/"));
    let last_energy = last.last().unwrap().json["energy"].as_f64().unwrap();
    assert!(
        (at("ebgand_stream_energy", this) - last_energy).abs() < 1e-4 * last_energy.max(1.0),
        "{text}"
    );
    assert_eq!(
        at(
            "ebgand_build_info",
            concat!("version=\"", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert!(at("process_resident_memory_bytes", "") > 1e6, "{text}");
    assert!(at("process_open_fds", "") > 0.0, "{text}");
    assert!(text.contains("process_cpu_seconds_total "), "{text}");
    assert!(
        text.contains(r#"ebgand_malformed_total{reason="oversize"} 0"#),
        "{text}"
    );
    // The label values the daemon chooses are lower-case (names from the config are the
    // user's own).
    let mut chosen = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        for pair in labels.split('}').next().unwrap().split(',') {
            let (key, value) = pair.split_once('=').unwrap();
            if ["reason", "state", "outcome", "connection", "phase"].contains(&key) {
                chosen += 1;
                assert_eq!(value, value.to_lowercase(), "{line}");
            }
        }
    }
    assert!(chosen > 10, "{text}");

    // Retained state and status.
    let state: Vec<_> = obs.on(&format!("{prefix}/state/{stream}"));
    assert_eq!(state.last().unwrap().json["state"], "normal");
    assert!(
        obs.on(&format!("{prefix}/status"))
            .iter()
            .any(|s| s.json["status"] == "online")
    );
    daemon.shutdown().await.unwrap();
    eventually(Duration::from_secs(5), "offline status", || {
        obs.on(&format!("{prefix}/status"))
            .iter()
            .any(|s| s.json["status"] == "offline")
    })
    .await;
    let late = Observer::start(broker.port, &format!("{prefix}/state/#")).await;
    eventually(
        Duration::from_secs(5),
        "retained state for a new subscriber",
        || {
            late.on(&format!("{prefix}/state/"))
                .iter()
                .any(|s| s.retain)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_payloads_are_counted_and_good_windows_all_scored() {
    let broker = Mosquitto::start().await;
    let prefix = "t2";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let toml = format!(
        "{VIBRATION}\n[[streams]]\nname = \"raw\"\ntopic = \"raw/+\"\nmodel = \"vibration\"\nformat = \"f32le\"\nwindow = 64\n"
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(7);
    let bad_json: [&[u8]; 9] = [
        b"[1,",
        b"{}",
        b"\"x\"",
        b"[]",
        b"[1e39]",
        b"[[1,2]]",
        b"[1,\"a\"]",
        b"null",
        &[0xff, 0x00, 0xfe],
    ];
    let nan: Vec<u8> = [0.0f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let good_messages = 200; // 100 windows per stream
    let mut malformed = 0;
    for i in 0..good_messages {
        let samples = m.samples(CHUNK, false);
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&samples).unwrap(),
        )
        .await;
        let raw: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        tx.publish("raw/m1", raw).await;
        for j in 0..25 {
            match (i + j) % 3 {
                0 => {
                    tx.publish("sensors/m1/vibration", bad_json[(i + j) % bad_json.len()])
                        .await
                }
                1 => tx.publish("raw/m1", nan.clone()).await,
                _ => tx.publish("raw/m1", vec![1u8, 2, 3]).await,
            }
            malformed += 1;
        }
    }
    assert_eq!(malformed, 5_000);
    // Another 5,000 on a stream of their own, all malformed.
    for i in 0..5_000 {
        tx.publish("sensors/junk/vibration", bad_json[i % bad_json.len()])
            .await;
        malformed += 1;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(60), "all malformed counted", || {
        daemon.metric("ebgand_malformed_total") >= malformed as u64
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "all good windows published",
        || obs.count(&format!("{prefix}/energy/")) >= 200,
    )
    .await;
    assert_eq!(daemon.metric("ebgand_malformed_total"), 10_000);
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([
            ("vibration/m1".to_string(), 100),
            ("raw/m1".to_string(), 100),
        ]),
    );
    assert_eq!(daemon.metric("ebgand_messages_total"), 10_000 + 2 * 200);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_no_qos1_message() {
    let mut broker = Mosquitto::start().await;
    let prefix = "t3";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let toml = r#"
[models.vibration]
path = "models/vibration/fixture-1"
[[streams]]
name = "obj"
topic = "obj/+"
model = "vibration"
format = "object"
fields = ["v"]
timestamp_field = "t"
window = 64
"#;
    let mut s = settings(broker.port, prefix, toml);
    // Slow first retry so the test's publisher is back before the daemon is.
    s.mqtt.reconnect_min = Duration::from_millis(1500);
    s.mqtt.reconnect_max = Duration::from_millis(3000);
    let daemon = TestDaemon::start(s).await;
    let mut m = Machine::new(3);
    let samples = m.samples(64 * 60, false);
    let mut tx = Sender::start(broker.port).await;
    for (t, v) in samples[..64 * 30].iter().enumerate() {
        tx.publish("obj/a", serde_json::json!({"t": t, "v": v}).to_string())
            .await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(30), "first half scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 30
    })
    .await;

    broker.stop().await;
    eventually(Duration::from_secs(10), "daemon notices the outage", || {
        !daemon.metrics.ready()
    })
    .await;
    broker.restart().await;
    let mut tx = Sender::start(broker.port).await;
    for (t, v) in samples.iter().enumerate().skip(64 * 30) {
        tx.publish("obj/a", serde_json::json!({"t": t, "v": v}).to_string())
            .await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(30), "daemon reconnects", || {
        daemon.metrics.ready()
    })
    .await;
    eventually(Duration::from_secs(30), "second half scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 60
    })
    .await;
    eventually(Duration::from_secs(30), "energies observed", || {
        obs.count(&format!("{prefix}/energy/")) >= 60
    })
    .await;
    assert!(
        daemon.metric("ebgand_mqtt_reconnects_total") >= 2,
        "both connections saw the outage"
    );
    // Window starts carry the payload timestamps: every window 0..60, each sample windowed
    // once (a redelivered sample would shift the windows after it). The observer may see an
    // energy message twice: the daemon's own QoS 1 publishes are resent after the outage.
    let mut starts: Vec<u64> = obs
        .on(&format!("{prefix}/energy/"))
        .iter()
        .map(|s| s.json["start"].as_u64().unwrap())
        .collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts, (0..60).map(|i| i * 64).collect::<Vec<u64>>());
    assert_eq!(daemon.metric("ebgand_windows_scored_total"), 60);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_scores_and_alerts_what_was_received() {
    let broker = Mosquitto::start().await;
    let prefix = "t4";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    // Hold windows in the batcher: only the drain can score them.
    s.scoring.max_batch = std::num::NonZeroUsize::new(10_000).unwrap();
    s.scoring.max_wait = Duration::from_secs(3600);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(9);
    publish_phase(&mut tx, "sensors/m1/vibration", &mut m, 10, true).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "windows received", || {
        daemon.metric("ebgand_windows_queued_total") >= 10
    })
    .await;
    assert_eq!(
        daemon.metric("ebgand_windows_scored_total"),
        0,
        "held in the batcher"
    );
    let metrics = daemon.metrics.clone();
    daemon.shutdown().await.unwrap();
    assert_eq!(
        ebgand::telemetry::metrics::sum_metric(&metrics.encode(), "ebgand_windows_scored_total"),
        10
    );
    eventually(
        Duration::from_secs(10),
        "alert published during the drain",
        || obs.count(&format!("{prefix}/alerts/")) == 1,
    )
    .await;
    assert_eq!(
        obs.on(&format!("{prefix}/alerts/"))[0].json["state"],
        "raised"
    );
    assert_eq!(obs.count(&format!("{prefix}/energy/")), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_versions_are_gated_swapped_and_refused() {
    let broker = Mosquitto::start().await;
    let prefix = "t5";
    let obs = Observer::start(broker.port, &format!("{prefix}/events")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    // The first swap comes before any traffic; the minimum of recent windows has its own test
    // (tests/lifecycle.rs).
    s.registry.gate_min_windows = 0;
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let daemon = TestDaemon::start(s).await;
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("fixture-1"),
        "seeded from the config"
    );
    let versions = tempfile::tempdir().unwrap();

    // A new version activated in the registry (as `ebgand models activate` does): the watch
    // validates it and swaps it in.
    registry
        .import(&fixture_version(versions.path(), "fixture-2", |m| m))
        .unwrap();
    registry.activate("vibration", "fixture-2", "test").unwrap();
    eventually(Duration::from_secs(10), "swap to fixture-2", || {
        daemon.metrics.encode().contains("version=\"fixture-2\"")
    })
    .await;

    // Incompatible (a window the streams do not cut): refused, pointer put back.
    let bad = fixture_version(versions.path(), "wide", |m| {
        m.replace("window = 64", "window = 32")
    });
    registry.import(&bad).unwrap();
    registry.activate("vibration", "wide", "test").unwrap();
    eventually(Duration::from_secs(10), "refusal event", || {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .any(|e| e.json["event"] == "refused" && e.json["version"] == "wide")
    })
    .await;
    eventually(Duration::from_secs(5), "pointer reverted", || {
        registry.active("vibration").unwrap().as_deref() == Some("fixture-2")
    })
    .await;
    let refusal = obs
        .on(&format!("{prefix}/events"))
        .into_iter()
        .find(|e| e.json["event"] == "refused")
        .unwrap();
    assert!(
        refusal.json["reason"]
            .as_str()
            .unwrap()
            .contains("cuts windows of 64"),
        "{}",
        refusal.json
    );
    assert!(
        registry
            .history("vibration")
            .unwrap()
            .last()
            .unwrap()
            .reason
            .starts_with("refused wide")
    );

    // A model that would raise false alarms on recent healthy traffic: refused by the gate.
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(8);
    publish_phase(&mut tx, "sensors/m1/vibration", &mut m, 40, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(10), "healthy windows scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 40
    })
    .await;
    let jumpy = fixture_version(versions.path(), "jumpy", |m| with_threshold(m, "0.000001"));
    registry.import(&jumpy).unwrap();
    tx.publish(
        &format!("{prefix}/control/activate"),
        r#"{"model":"vibration","version":"jumpy"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "gate refusal", || {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .any(|e| e.json["event"] == "refused" && e.json["version"] == "jumpy")
    })
    .await;
    let refusal = obs
        .on(&format!("{prefix}/events"))
        .into_iter()
        .rfind(|e| e.json["version"] == "jumpy")
        .unwrap();
    assert!(
        refusal.json["reason"]
            .as_str()
            .unwrap()
            .contains("false-alarm rate"),
        "{}",
        refusal.json
    );

    // Rollback over MQTT goes back to fixture-1; a malformed command is refused with a reason.
    tx.publish(
        &format!("{prefix}/control/rollback"),
        r#"{"model":"vibration"}"#,
    )
    .await;
    tx.publish(&format!("{prefix}/control/explode"), "{}").await;
    eventually(Duration::from_secs(10), "rollback", || {
        registry.active("vibration").unwrap().as_deref() == Some("fixture-1")
    })
    .await;
    eventually(Duration::from_secs(10), "refused command", || {
        obs.on(&format!("{prefix}/events")).iter().any(|e| {
            e.json["event"] == "command_refused"
                && e.json["reason"]
                    .as_str()
                    .unwrap()
                    .contains("unknown command")
        })
    })
    .await;
    assert!(daemon.metrics.encode().contains("version=\"fixture-1\""));
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cap_refuses_new_streams_and_http_reports_it() {
    let broker = Mosquitto::start().await;
    let prefix = "t6";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.max_streams = 2;
    let http_port = ebgand::demo::free_port().unwrap();
    s.http_listen = Some(([127, 0, 0, 1], http_port).into());
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    for topic in [
        "sensors/a/vibration",
        "sensors/b/vibration",
        "sensors/c/vibration",
    ] {
        publish_phase(&mut tx, topic, &mut m, 5, false).await;
    }
    tx.flushed().await;
    eventually(Duration::from_secs(20), "two streams scored", || {
        obs.count(&format!("{prefix}/energy/")) >= 10
    })
    .await;
    eventually(Duration::from_secs(5), "refusals counted", || {
        daemon.metric("ebgand_streams_refused_total") == 10
    })
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([
            ("vibration/a".to_string(), 5),
            ("vibration/b".to_string(), 5),
        ]),
    );

    let get = move |path: &str| http_get(http_port, path);
    let metrics =
        tokio::task::spawn_blocking(move || (get("/metrics"), get("/readyz"), get("/healthz")))
            .await
            .unwrap();
    assert!(
        metrics.0.contains("ebgand_streams_refused_total 10"),
        "{}",
        metrics.0
    );
    assert!(metrics.0.contains(
        "ebgand_active_model{model=\"vibration\",version=\"fixture-1\",provider=\"cpu\"} 1"
    ));
    assert!(metrics.0.contains("ebgand_scoring_seconds_bucket"));
    assert!(metrics.1.starts_with("HTTP/1.1 200"), "{}", metrics.1);
    assert!(metrics.2.starts_with("HTTP/1.1 200"));
    daemon.shutdown().await.unwrap();
}

/// The capture of healthy windows for retraining stops, with its reason exported, when the
/// disk would go under its free-space floor; scoring and alerting go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_stops_at_the_disk_floor_and_scoring_goes_on() {
    let broker = Mosquitto::start().await;
    let prefix = "cap";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.learning.capture_every = 1;
    s.learning.shard_windows = 10;
    // A floor no filesystem here can meet.
    s.learning.min_free_mb = u64::MAX >> 21;
    let capture_dir = s.learning.dir.join("vibration");
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(11);
    publish_phase(&mut tx, "sensors/m1/vibration", &mut m, 60, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "60 energies", || {
        obs.count(&format!("{prefix}/energy/")) >= 60
    })
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("vibration/m1".to_string(), 60)]),
    );
    assert_eq!(
        daemon.metric_where(
            "ebgand_capture_stopped",
            "model=\"vibration\",reason=\"min_free\""
        ),
        1
    );
    let shards = std::fs::read_dir(&capture_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(shards, 0, "nothing written under the floor");
    daemon.shutdown().await.unwrap();
}

/// `[mqtt] hosts`: a first broker that is down is passed over for the next one, by both
/// connections, and `status_topic` replaces `{prefix}/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_passed_over_for_the_next_of_hosts() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "hosts/#").await;
    // A port nothing listens on: the first attempt is refused.
    let down = ebgand::demo::free_port().unwrap();
    let mut s = settings(broker.port, "hosts", VIBRATION);
    s.mqtt.brokers = [down, broker.port]
        .map(|port| ebgand::config::Broker {
            host: "127.0.0.1".into(),
            port,
        })
        .to_vec();
    s.mqtt.status_topic = "hosts/status/edge-7".into();
    let daemon = TestDaemon::start(s).await;
    for connection in ["ingest", "publish"] {
        assert!(
            daemon.metric_where(
                "ebgand_mqtt_failovers_total",
                &format!("connection=\"{connection}\"")
            ) >= 1,
            "{connection}: never moved to the next broker"
        );
    }
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(3);
    publish_phase(&mut tx, "sensors/m1/vibration", &mut m, 2, false).await;
    eventually(Duration::from_secs(20), "windows scored", || {
        obs.count("hosts/energy/") >= 2
    })
    .await;
    let status = obs.on("hosts/status");
    assert!(
        status
            .iter()
            .any(|m| m.topic == "hosts/status/edge-7" && m.json["status"] == "online"),
        "{status:?}"
    );
    daemon.shutdown().await.unwrap();
}
