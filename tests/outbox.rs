//! The alert outbox across an unreachable broker and a SIGKILL: alerts raised while ebgand
//! cannot publish are kept on disk and delivered, once, by the next start.
//!
//! mosquitto's ACL stands in for an unreachable broker on the publishing side: while user
//! `ebgand` may not write under its prefix, the broker drops its publishing connection as soon
//! as it connects, but the ingest connection (read-only) works, so windows are scored and
//! alerts raised that cannot be delivered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

/// Judged by the model's threshold: this test is about delivery, not judgment.
const THRESHOLD: &[(&str, &str)] = &[("EBGAND__DETECT__JUDGE", "threshold")];

fn acl(dir: &Path, ebgand_may_publish: bool) {
    let write = if ebgand_may_publish {
        "topic readwrite ob/#\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("acl"),
        format!("user admin\ntopic readwrite #\n\nuser ebgand\ntopic read sensors/#\n{write}"),
    )
    .unwrap();
    // Readable by the broker, which drops to its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("acl"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn outbox_lines(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("outbox/outbox.jsonl")).unwrap_or_default()
}

/// Alert ids added and not done, as the daemon will read them at its next start.
fn outbox_pending(dir: &Path) -> Vec<u64> {
    let mut pending = std::collections::BTreeSet::new();
    for line in outbox_lines(dir).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(id) = v["add"].as_u64() {
            pending.insert(id);
        }
        if let Some(id) = v["done"].as_u64() {
            pending.remove(&id);
        }
    }
    pending.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_while_unpublishable_survive_sigkill_and_are_delivered_once() {
    let mut broker = Mosquitto::start_with(|dir| {
        mosquitto_passwd(&dir.join("passwd"), &[ADMIN, DAEMON]);
        acl(dir, false);
        format!(
            "allow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl\n",
            d = dir.display()
        )
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let password = state.path().join("password");
    std::fs::write(&password, format!("{}\n", DAEMON.1)).unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mqtt = format!(
        "username = \"{}\"\npassword_file = \"{}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500",
        DAEMON.0,
        password.display()
    );

    // Run 0, allowed to publish: creates the daemon's persistent sessions, so that the broker
    // queues sensor messages for it from then on.
    let status = Observer::start_with(broker.port, "ob/status", |o| {
        o.set_credentials(ADMIN.0, ADMIN.1);
    })
    .await;
    acl(broker.dir(), true);
    broker.stop().await;
    broker.restart().await;
    let mut daemon = spawn_daemon_with(broker.port, "ob", state.path(), &mqtt, THRESHOLD);
    eventually(Duration::from_secs(20), "online", || {
        status
            .on("ob/status")
            .iter()
            .any(|m| m.json["status"] == "online")
    })
    .await;
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());
    drop(status);

    // Run 1: scoring works, publishing does not. A fault raises an alert into the outbox.
    broker.stop().await;
    acl(broker.dir(), false);
    broker.restart().await;
    let mut daemon = spawn_daemon_with(broker.port, "ob", state.path(), &mqtt, THRESHOLD);
    let mut tx = Sender::start_with(broker.port, |o| {
        o.set_credentials(ADMIN.0, ADMIN.1);
    })
    .await;
    let mut m = Machine::new(5);
    let windows = |m: &mut Machine, n: usize, fault: bool| -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| serde_json::to_vec(&m.samples(64, fault)).unwrap())
            .collect()
    };
    for p in windows(&mut m, 20, false)
        .into_iter()
        .chain(windows(&mut m, 10, true))
    {
        tx.publish("sensors/m1/vibration", p).await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(30),
        "the alert stored in the outbox",
        || outbox_lines(state.path()).contains("\"raised\""),
    )
    .await;
    kill(&daemon, "-KILL");
    wait_exit(&mut daemon).await;
    assert_eq!(
        outbox_pending(state.path()),
        vec![1],
        "{}",
        outbox_lines(state.path())
    );

    // The broker lets ebgand publish again; run 2 delivers the stored alert, once.
    broker.stop().await;
    acl(broker.dir(), true);
    broker.restart().await;
    let obs = Observer::start_with(broker.port, "ob/alerts/#", |o| {
        o.set_credentials(ADMIN.0, ADMIN.1);
    })
    .await;
    let mut daemon = spawn_daemon_with(broker.port, "ob", state.path(), &mqtt, THRESHOLD);
    eventually(
        Duration::from_secs(30),
        "the stored alert delivered",
        || obs.count("ob/alerts/") >= 1,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the outbox emptied by the PUBACK",
        || outbox_pending(state.path()).is_empty(),
    )
    .await;
    // A clean stop, then a third start: nothing is left to publish again.
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());
    // Its status observed from before it starts: the retained one is run 2's "offline".
    let status = Observer::start_with(broker.port, "ob/status", |o| {
        o.set_credentials(ADMIN.0, ADMIN.1);
    })
    .await;
    let mut daemon = spawn_daemon_with(broker.port, "ob", state.path(), &mqtt, THRESHOLD);
    eventually(Duration::from_secs(20), "run 3 online", || {
        status
            .on("ob/status")
            .iter()
            .any(|m| m.json["status"] == "online")
    })
    .await;
    // Whatever the outbox still held goes out right after online, and a clean stop waits
    // for its acknowledgements: an alert sent again would reach the observer.
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());

    let alerts = obs.on("ob/alerts/");
    assert_eq!(alerts.len(), 1, "delivered exactly once: {alerts:?}");
    let a = &alerts[0].json;
    assert_eq!(a["state"], "raised");
    assert_eq!(a["stream"], "vibration/m1");
    assert_eq!(a["alert_id"], 1);
    assert!(
        a["seq"].as_u64().unwrap() >= 20,
        "raised inside the fault: {a}"
    );
}

/// The broker forgets the session (it restarts without persistence) while alerts are in
/// flight: rumqttc drops the publishes it had not had acknowledged with the session, so the
/// daemon sends those alerts again from its outbox; each reaches a subscriber once, and the
/// alerts raised afterwards are matched to their own acknowledgements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_in_flight_when_the_broker_forgets_the_session_are_published_again() {
    let mut broker = Mosquitto::start().await;
    let proxy = Proxy::start(broker.port).await;
    let prefix = "forget";
    let mut s = settings(proxy.port, prefix, VIBRATION);
    s.mqtt.publish_energy = false;
    let outbox = s.mqtt.outbox_dir.clone();
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(11);
    let mut send = async |tx: &mut Sender, n: usize, fault: bool| {
        for _ in 0..n {
            let p = serde_json::to_vec(&m.samples(64, fault)).unwrap();
            tx.publish("sensors/m1/vibration", p).await;
        }
        tx.flushed().await;
    };
    let alerts = |d: &TestDaemon, state: &str| {
        d.metric_where("ebgand_alerts_total", &format!("state=\"{state}\""))
    };
    send(&mut tx, 5, false).await;
    eventually(Duration::from_secs(20), "healthy windows scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 5
    })
    .await;

    // What the daemon publishes no longer reaches the broker: the alert stays in flight.
    proxy.hold_from(Some(&format!("ebgand-{prefix}-pub")));
    send(&mut tx, 4, true).await;
    eventually(Duration::from_secs(20), "the alert raised", || {
        alerts(&daemon, "raised") >= 1
    })
    .await;
    let outbox_dir = Path::new(&outbox).parent().unwrap();
    eventually(Duration::from_secs(10), "the alert stored", || {
        !outbox_pending(outbox_dir).is_empty()
    })
    .await;
    let stored = outbox_pending(outbox_dir);
    assert_eq!(stored.len(), 1, "the alert waits in the outbox: {stored:?}");

    // The broker dies and comes back with no sessions. New connections wait until a
    // subscriber is there to see what the daemon sends.
    proxy.refuse(true);
    proxy.hold_from(None);
    broker.restart_forgetting().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/alerts/#")).await;
    let mut tx = Sender::start(broker.port).await;
    proxy.refuse(false);
    eventually(Duration::from_secs(30), "the alert published again", || {
        obs.count(&format!("{prefix}/alerts/")) >= 1
    })
    .await;

    // Healthy again: the clear is published and acknowledged; nothing is left in the outbox.
    eventually(
        Duration::from_secs(20),
        "the daemon subscribed again",
        || daemon.metrics.ready(),
    )
    .await;
    send(&mut tx, 4, false).await;
    eventually(Duration::from_secs(20), "the clear published", || {
        obs.count(&format!("{prefix}/alerts/")) >= 2
    })
    .await;
    eventually(Duration::from_secs(10), "the outbox emptied", || {
        outbox_pending(Path::new(&outbox).parent().unwrap()).is_empty()
    })
    .await;
    // The broker acknowledged each alert the outbox held: they have all been routed here.
    obs.settled().await;
    let seen: Vec<(String, u64)> = obs
        .on(&format!("{prefix}/alerts/"))
        .iter()
        .map(|a| {
            (
                a.json["state"].as_str().unwrap().to_owned(),
                a.json["alert_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("raised".to_owned(), 1), ("cleared".to_owned(), 2)],
        "each alert once"
    );
    daemon.shutdown().await.unwrap();
}

/// What the last run left in the outbox goes out before anything this run publishes. Run 1's
/// raise was stored and never acknowledged (killed first); run 2 clears it before its publish
/// connection is up. A subscriber must see the raise, then the clear that names it. Before, the
/// clear went into the request channel at once and the left-over raise only after the first
/// CONNACK: clear first, and a subscriber tracking state ended with the stream raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_left_by_the_last_run_go_out_before_this_runs() {
    use ebgand::durable::outbox::{Outbox, SharedOutbox};
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let topic = "lo/alerts/vibration/m1";
    let raised = serde_json::json!({ "stream": "vibration/m1", "state": "raised" });
    Outbox::open(dir.path(), 100)
        .unwrap()
        .add(topic, raised)
        .unwrap();
    let outbox = SharedOutbox::new(
        Outbox::open(dir.path(), 100).unwrap(),
        prometheus_client::metrics::gauge::Gauge::default(),
    );
    let obs = Observer::start(broker.port, "lo/alerts/#").await;
    let s = settings(broker.port, "lo", VIBRATION);
    let metrics = std::sync::Arc::new(ebgand::telemetry::Metrics::new());
    let (publisher, events) = ebgand::mqtt::Publisher::new(&s.mqtt, "node", metrics, outbox);
    let cleared = serde_json::json!({
        "stream": "vibration/m1", "state": "cleared", "raise_alert_id": 1,
    });
    let mut clear = tokio::spawn(async move { publisher.alert("vibration/m1", cleared).await });
    // The clear is handed over while nothing is connected (the loop not even polled).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut clear).await;
    let closing = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(events.run(closing.clone(), tokio_util::sync::CancellationToken::new()));
    let id = match early {
        Ok(sent) => sent,
        Err(_) => clear.await,
    };
    assert_eq!(id.unwrap().unwrap(), 2);
    eventually(Duration::from_secs(20), "both alerts", || {
        obs.count("lo/alerts/") >= 2
    })
    .await;
    closing.cancel();
    run.await.unwrap();
    let seen: Vec<(u64, String)> = obs
        .on("lo/alerts/")
        .iter()
        .map(|a| {
            let state = a.json["state"].as_str().unwrap().to_owned();
            (a.json["alert_id"].as_u64().unwrap(), state)
        })
        .collect();
    assert_eq!(
        seen,
        [(1, "raised".to_owned()), (2, "cleared".to_owned())],
        "the raise first"
    );
}

/// A crash between the forgetting of a quiet stream and the clear of its alert: ingest's
/// checkpoint has dropped the stream, and the clear waits behind a full outbox (what the
/// daemon publishes is held on its way to the broker; `outbox_max = 1` holds the raise). The
/// next start publishes the raise the outbox kept, then clears it as forgotten, linked to it.
/// Before, nothing ever cleared it: the stream was in no checkpoint, and the next start
/// replayed its journal as a new stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_whose_stream_was_forgotten_just_before_a_crash_is_cleared_by_the_next_start() {
    forgotten_before_a_crash(false).await;
}

/// The same with the machine back in a new life before the crash (its first windows
/// checkpointed, not judged: the alerting stage is still held in the forgetting). The
/// checkpoint has the stream again, so it is no orphan; it also remembers the forgetting was
/// not finished, and the next start finishes it before anything is replayed. Before, the raise
/// stayed open and the earlier life's window numbers silenced the new life's alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_forgotten_before_a_crash_is_cleared_even_when_the_stream_is_back() {
    forgotten_before_a_crash(true).await;
}

/// A fault raises on `sensors/m1` while nothing the daemon publishes reaches the broker; the
/// sensor goes quiet and is forgotten (and, `comes_back`, sends again); SIGKILL; the next
/// start, publishing again, must deliver the raise, then its clear.
async fn forgotten_before_a_crash(comes_back: bool) {
    let broker = Mosquitto::start().await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let mqtt = "outbox_max = 1";
    let env = [THRESHOLD[0], ("EBGAND__LIMITS__STREAM_IDLE_S", "2")];
    let spawn = || spawn_daemon_with(proxy.port, "hf", state.path(), mqtt, &env);

    // Run 0 creates the daemon's persistent sessions: the broker queues sensor messages for
    // it from then on.
    let obs = Observer::start(broker.port, "hf/#").await;
    let mut daemon = spawn();
    eventually(Duration::from_secs(20), "online", || {
        obs.on("hf/status")
            .iter()
            .any(|m| m.json["status"] == "online")
    })
    .await;
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());

    // Run 1: what it publishes never reaches the broker. A fault raises an alert into the
    // outbox, which is then full; the sensor goes quiet and is forgotten.
    proxy.hold_from(Some("ebgand-hf-pub"));
    let mut daemon = spawn();
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    for fault in [false, true] {
        for _ in 0..15 {
            let samples = serde_json::to_vec(&m.samples(64, fault)).unwrap();
            tx.publish("sensors/m1/vibration", samples).await;
        }
    }
    tx.flushed().await;
    let has_stream = |yes: bool| {
        std::fs::read(state.path().join("journal/checkpoint.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|c| c["streams"].get("vibration/m1").is_some() == yes)
    };
    eventually(Duration::from_secs(30), "the stream checkpointed", || {
        has_stream(true)
    })
    .await;
    eventually(Duration::from_secs(30), "the stream forgotten", || {
        has_stream(false)
    })
    .await;
    if comes_back {
        for _ in 0..3 {
            let samples = serde_json::to_vec(&m.samples(64, false)).unwrap();
            tx.publish("sensors/m1/vibration", samples).await;
        }
        eventually(Duration::from_secs(30), "the new life checkpointed", || {
            has_stream(true)
        })
        .await;
    }
    kill(&daemon, "-KILL");
    wait_exit(&mut daemon).await;
    let pending = outbox_pending(state.path());
    assert_eq!(
        pending,
        vec![1],
        "the raise only: {}",
        outbox_lines(state.path())
    );

    // Run 2 may publish, and forgets no stream on its own (a week's idle, the default).
    proxy.cut();
    proxy.hold_from(None);
    let mut daemon = spawn_daemon_with(proxy.port, "hf", state.path(), mqtt, THRESHOLD);
    let alerts = || obs.on("hf/alerts/");
    eventually(Duration::from_secs(30), "the raise and its clear", || {
        alerts().len() >= 2
    })
    .await;
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());
    let alerts: Vec<serde_json::Value> = alerts().into_iter().map(|a| a.json).collect();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0]["state"], "raised");
    assert_eq!(alerts[0]["alert_id"], 1);
    assert_eq!(alerts[1]["state"], "cleared");
    assert_eq!(alerts[1]["reason"], "forgotten");
    assert_eq!(alerts[1]["raise_alert_id"], 1);
}
