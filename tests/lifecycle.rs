//! Model lifecycle under load: many swaps while windows stream through mosquitto.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use ebgand::demo::sim::Machine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_score_every_window_once() {
    const STREAMS: usize = 8;
    const SWAPS: usize = 20;
    let broker = Mosquitto::start().await;
    let prefix = "life";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(
        broker.port,
        prefix,
        &VIBRATION.replace("format = \"array\"", "format = \"f32le\""),
    );
    // Every other version calls everything anomalous on purpose, so that each swap moves
    // every stream's alert state; the gate's false-alarm bound would refuse those.
    s.registry.max_false_alarm_rate = 1.0;
    // 20 commands within a minute: above the default control budget of 10.
    s.control_per_minute = 100;
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let versions = tempfile::tempdir().unwrap();
    let labels: Vec<String> = (1..=SWAPS).map(|i| format!("s{i:02}")).collect();
    for (i, v) in labels.iter().enumerate() {
        let threshold = (i % 2 == 0).then_some("0.000001");
        registry
            .import(&fixture_version(versions.path(), v, |m| match threshold {
                Some(t) => with_threshold(m, t),
                None => m,
            }))
            .unwrap();
    }
    let daemon = TestDaemon::start(s).await;

    // Publisher: raw f32 windows, paced to about 6,000 windows/s over STREAMS streams.
    let port = broker.port;
    // The load runs until the last swap has been followed by traffic on every stream.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = stop.clone();
    let load = tokio::spawn(async move {
        let mut tx = Sender::start(port).await;
        let mut machines: Vec<Machine> = (0..STREAMS as u64).map(Machine::new).collect();
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, m) in machines.iter_mut().enumerate() {
                let raw: Vec<u8> = m
                    .samples(64, false)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                tx.publish(&format!("sensors/raw{i}/vibration"), raw).await;
            }
            sent += STREAMS as u64;
            let ahead =
                Duration::from_secs_f64(sent as f64 / 6500.0).saturating_sub(started.elapsed());
            if !ahead.is_zero() {
                tokio::time::sleep(ahead).await;
            }
        }
        let elapsed = started.elapsed();
        tx.flushed().await;
        (sent, elapsed)
    });

    // Swaps over MQTT while the load runs. Between two swaps, wait for enough windows (not
    // time) that every stream's hysteresis (k = j = 3) can act on the new version.
    let mut control = Sender::start(broker.port).await;
    let scored = || daemon.metric("ebgand_windows_scored_total");
    eventually(Duration::from_secs(20), "load flowing", || scored() >= 400).await;
    for v in &labels {
        control
            .publish(
                &format!("{prefix}/control/activate"),
                format!(r#"{{"model":"vibration","version":"{v}"}}"#),
            )
            .await;
        let target = v.clone();
        eventually(Duration::from_secs(10), "swap", || {
            daemon
                .metrics
                .encode()
                .contains(&format!("version=\"{target}\""))
        })
        .await;
        let after_swap = scored();
        eventually(
            Duration::from_secs(30),
            "traffic on the new version",
            || scored() >= after_swap + 150 * STREAMS as u64,
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, elapsed) = load.await.unwrap();
    let rate = sent as f64 / elapsed.as_secs_f64();
    eprintln!(
        "load: {sent} windows in {:.1} s = {rate:.0} windows/s, {SWAPS} swaps",
        elapsed.as_secs_f64()
    );
    // The rate is printed, not asserted: how fast a shared machine publishes is no pass/fail
    // matter. The load is measured in windows instead: at least 150 per stream follow each swap
    // (above), all of them scored exactly once (below).
    let wait = Instant::now();
    while daemon.metric("ebgand_windows_scored_total") < sent
        && wait.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        daemon.metric("ebgand_windows_scored_total"),
        sent,
        "messages in {}, malformed {}, windows queued {}",
        daemon.metric("ebgand_messages_total"),
        daemon.metric("ebgand_malformed_total"),
        daemon.metric("ebgand_windows_queued_total")
    );
    eventually(Duration::from_secs(60), "every energy published", || {
        obs.count(&format!("{prefix}/energy/")) as u64 >= sent
    })
    .await;

    let per_stream = sent / STREAMS as u64;
    let expected: HashMap<String, u64> = (0..STREAMS)
        .map(|i| (format!("vibration/raw{i}"), per_stream))
        .collect();
    assert_exactly_once(&obs.on(&format!("{prefix}/energy/")), &expected);
    assert_eq!(daemon.metric("ebgand_windows_scored_total"), sent);
    assert_eq!(
        daemon.metric("ebgand_windows_failed_total"),
        0,
        "no scoring errors"
    );
    let text = daemon.metrics.encode();
    assert!(!text.contains("state=\"refused\""), "no activation refused");
    assert_eq!(
        ebgand::telemetry::metrics::sum_metric(&text, "ebgand_model_reloads_total"),
        SWAPS as u64
    );

    // Each stream's alerts alternate raised/cleared, one per swap, each carrying the version
    // that was swapped in.
    for i in 0..STREAMS {
        let alerts = obs.on(&format!("{prefix}/alerts/vibration/raw{i}"));
        let got: Vec<(String, String)> = alerts
            .iter()
            .map(|a| {
                (
                    a.json["state"].as_str().unwrap().to_owned(),
                    a.json["model"]["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = labels
            .iter()
            .enumerate()
            .map(|(k, v)| {
                (
                    (if k % 2 == 0 { "raised" } else { "cleared" }).to_owned(),
                    v.clone(),
                )
            })
            .collect();
        assert_eq!(got, want, "stream raw{i}");
    }
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("s20")
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_scores_beside_the_active_version_and_reports_before_promotion() {
    let broker = Mosquitto::start().await;
    let prefix = "shadow";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    // The promotion is judged on the 40 healthy windows published.
    s.registry.gate_min_windows = 32;
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let versions = tempfile::tempdir().unwrap();
    registry
        .import(&fixture_version(versions.path(), "jumpy", |m| {
            with_threshold(m, "0.000001")
        }))
        .unwrap();
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    tx.publish(
        &format!("{prefix}/control/shadow"),
        r#"{"model":"vibration","version":"jumpy"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "shadow started", || {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .any(|e| e.json["event"] == "shadow_started")
    })
    .await;
    let mut m = Machine::new(4);
    for fault in [false; 40].into_iter().chain([true; 10]) {
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&m.samples(64, fault)).unwrap(),
        )
        .await;
    }
    tx.flushed().await;
    // Judged (energy published), not only scored: the shadow report covers judged windows.
    eventually(Duration::from_secs(10), "judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 50
    })
    .await;
    tx.publish(
        &format!("{prefix}/control/promote"),
        r#"{"model":"vibration"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "report and gate decision", || {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .any(|e| e.json["event"] == "refused")
    })
    .await;
    let events: Vec<serde_json::Value> = obs
        .on(&format!("{prefix}/events"))
        .into_iter()
        .map(|e| e.json)
        .collect();
    let report = events
        .iter()
        .find(|e| e["event"] == "shadow_report")
        .expect("report before promotion");
    assert_eq!(report["windows"], 50);
    assert_eq!(
        (report["active"].as_str(), report["shadow"].as_str()),
        (Some("fixture-1"), Some("jumpy"))
    );
    assert_eq!(report["shadow_anomalous_rate"], 1.0);
    let active_rate = report["active_anomalous_rate"].as_f64().unwrap();
    assert!(
        (0.15..=0.25).contains(&active_rate),
        "active flags the 10 fault windows: {active_rate}"
    );
    assert_eq!(report["active_alerts"], 1);
    assert_eq!(report["shadow_alerts"], 1);
    // The report comes first; then the gate refuses a version that flags all healthy traffic.
    let at = |name: &str| events.iter().position(|e| e["event"] == name).unwrap();
    assert!(at("shadow_report") < at("refused"));
    let refused = &events[at("refused")];
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("false-alarm rate"),
        "{refused}"
    );
    // The shadow never alerted: the one alert is the active version's.
    let alerts = obs.on(&format!("{prefix}/alerts/"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].json["model"]["version"], "fixture-1");
    daemon.shutdown().await.unwrap();
}

/// A new version is judged on enough recent healthy windows or not at all: with fewer than
/// `[registry] gate_min_windows` it is refused, the reason naming the count and the setting;
/// once the served version has judged enough, the same command activates it; a rollback to
/// the version that served before is not held to the minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_needs_enough_recent_windows_a_rollback_does_not() {
    let broker = Mosquitto::start().await;
    let prefix = "gmin";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.registry.gate_min_windows = 30;
    let (registry, _versions) = registry_with(&s, &["next"]);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(9);
    let events = |name: &str| obs.events(prefix, name);
    // Ten healthy windows judged, then the command: refused, with why.
    publish_healthy(&mut tx, &mut m, 10).await;
    eventually(Duration::from_secs(10), "10 windows judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 10
    })
    .await;
    activate(&mut tx, prefix, "next").await;
    eventually(Duration::from_secs(10), "refusal", || {
        !events("refused").is_empty()
    })
    .await;
    let reason = events("refused")[0]["reason"].as_str().unwrap().to_owned();
    // Ten judged; a healthy window over the threshold is not kept as healthy.
    let counted: usize = reason
        .split("only ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        (8..=10).contains(&counted) && reason.contains("gate_min_windows (30)"),
        "{reason}"
    );
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("fixture-1")
    );

    // Thirty more: the same command is accepted.
    publish_healthy(&mut tx, &mut m, 30).await;
    eventually(Duration::from_secs(10), "40 windows judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 40
    })
    .await;
    activate(&mut tx, prefix, "next").await;
    eventually(Duration::from_secs(10), "activation", || {
        events("activated").iter().any(|e| e["version"] == "next")
    })
    .await;
    let gate = &events("activated")[0]["gate"];
    let judged_on = gate["windows"].as_u64().unwrap();
    assert!((30..=40).contains(&judged_on), "{gate}");

    // The daemon restarts with nothing recent; a rollback still goes through.
    daemon.shutdown().await.unwrap();
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.registry.gate_min_windows = 30;
    s.registry.dir = registry.root().to_path_buf();
    let daemon = TestDaemon::start(s).await;
    tx.publish(
        &format!("{prefix}/control/rollback"),
        r#"{"model":"vibration"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "rollback", || {
        events("activated")
            .iter()
            .any(|e| e["version"] == "fixture-1" && e["reason"] == "rollback")
    })
    .await;
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("fixture-1")
    );
    daemon.shutdown().await.unwrap();
}

/// An operator moves the registry pointer (`ebgand models activate`) while a version the
/// daemon was told to activate still loads (a slow TensorRT build): the daemon serves that
/// version, then the operator's, and the pointer stays where the operator put it. Before, the
/// finished activation wrote its own version over the operator's choice, which then never
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_moved_during_a_slow_activation_is_left_to_the_watch() {
    let broker = Mosquitto::start().await;
    let prefix = "moved";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.registry.gate_min_windows = 0;
    let (registry, _versions) = registry_with(&s, &["next", "third"]);
    let faults = s.faults.clone();
    let daemon = TestDaemon::start(s).await;
    faults.delay_activations(Duration::from_secs(2));
    let mut tx = Sender::start(broker.port).await;
    activate(&mut tx, prefix, "next").await;
    eventually(Duration::from_secs(10), "the activation loading", || {
        faults.activation_loads() >= 1
    })
    .await;
    registry.activate("vibration", "third", "operator").unwrap();
    let activated = || -> Vec<String> {
        obs.on(&format!("{prefix}/events"))
            .into_iter()
            .filter(|e| e.json["event"] == "activated")
            .map(|e| e.json["version"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        Duration::from_secs(20),
        "the operator's version serves",
        || activated().contains(&"third".to_owned()),
    )
    .await;
    assert_eq!(activated(), ["next", "third"]);
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("third")
    );
    daemon.shutdown().await.unwrap();
}

/// A retrained version warms up in shadow (here resumed from the registry's `WARMING` record at
/// start) when an operator activates another version: the warm-up ends there
/// (`shadow_stopped`), so the retrained version is not promoted over the operator's choice
/// once warm, and stays in the registry. Before, it was promoted as soon as it had warmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_s_activation_ends_a_warm_up() {
    const WARM: usize = WARM_WINDOWS;
    let broker = Mosquitto::start().await;
    let prefix = "handwarm";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let s = warms_up(broker.port, prefix);
    let (registry, _versions) = warming(&s, &["retrained", "chosen"]);
    let daemon = TestDaemon::start(s).await;
    let events = |name: &str| obs.events(prefix, name);
    eventually(Duration::from_secs(10), "the warm-up resumed", || {
        events("shadow_started")
            .iter()
            .any(|e| e["version"] == "retrained")
    })
    .await;
    let mut tx = Sender::start(broker.port).await;
    activate(&mut tx, prefix, "chosen").await;
    eventually(Duration::from_secs(10), "the operator's version", || {
        !events("activated").is_empty()
    })
    .await;
    let stopped = events("shadow_stopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["version"], "retrained");
    assert_eq!(registry.warming("vibration").unwrap(), None);
    // Windows enough to warm the retrained version several times over: it is not promoted.
    let mut m = Machine::new(12);
    publish_healthy(&mut tx, &mut m, 4 * WARM).await;
    eventually(Duration::from_secs(20), "the windows judged", || {
        obs.on(&format!("{prefix}/energy/"))
            .iter()
            .filter(|e| e.json["model"]["version"] == "chosen")
            .count()
            >= 4 * WARM
    })
    .await;
    // Ten registry-watch ticks (100 ms), where a warm shadow is promoted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.shutdown().await.unwrap();
    obs.settled().await;
    let activated: Vec<_> = events("activated")
        .iter()
        .map(|e| e["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(activated, ["chosen"]);
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("chosen")
    );
    assert!(registry.path("vibration", "retrained").is_dir());
}

/// A warming shadow whose scorer panics ends (`shadow_stopped`, with why) and counts as a
/// failed training run, to be retried. Before, the scorer thread dropped it without a word:
/// it never warmed, was never promoted, and every scheduled retraining was skipped behind it
/// ("the last retrained version still warms up") until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warming_shadow_that_panics_ends_and_counts_as_a_failed_run() {
    let broker = Mosquitto::start().await;
    let prefix = "warmpanic";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let s = warms_up(broker.port, prefix);
    let faults = s.faults.clone();
    let (registry, _versions) = warming(&s, &["retrained"]);
    let daemon = TestDaemon::start(s).await;
    let events = |name: &str| obs.events(prefix, name);
    eventually(Duration::from_secs(10), "the warm-up resumed", || {
        !events("shadow_started").is_empty()
    })
    .await;
    faults.panic_scorer("retrained", 1);
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(13);
    publish_healthy(&mut tx, &mut m, 4 * WARM_WINDOWS).await;
    eventually(Duration::from_secs(20), "the failed run", || {
        !events("training_failed").is_empty()
    })
    .await;
    let stopped = events("shadow_stopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["version"], "retrained");
    assert_eq!(stopped[0]["reason"], "its scorer panicked");
    let failed = &events("training_failed")[0];
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("retrained panicked in shadow"),
        "{failed}"
    );
    assert_eq!(registry.warming("vibration").unwrap(), None);
    daemon.shutdown().await.unwrap();
    obs.settled().await;
    assert!(
        events("activated").is_empty(),
        "promoted: {:?}",
        events("activated")
    );
}

/// The settings of a vibration stream judged by probability, learning and warming
/// `WARM_WINDOWS` windows, with no minimum of recent windows for the gate.
fn warms_up(port: u16, prefix: &str) -> ebgand::config::Settings {
    let toml = VIBRATION.replace(
        "judge = \"threshold\"",
        &format!("judge = \"probability\"\nlearn_windows = 16\nwarm_windows = {WARM_WINDOWS}"),
    );
    let mut s = settings(port, prefix, &toml);
    s.registry.gate_min_windows = 0;
    s
}

const WARM_WINDOWS: usize = 16;

/// [`registry_with`] `versions`, as a daemon that served the fixture left it while
/// `versions[0]` warmed up in shadow (a seed activates, which ends a warm-up: seeded first).
fn warming(
    s: &ebgand::config::Settings,
    versions: &[&str],
) -> (ebgand::model::Registry, tempfile::TempDir) {
    let (registry, folder) = registry_with(s, versions);
    registry
        .seed(
            "vibration",
            Some(&root().join("models/vibration/fixture-1")),
        )
        .unwrap();
    registry
        .set_warming("vibration", Some(versions[0]))
        .unwrap();
    (registry, folder)
}

/// The registry of `s` holding a copy of the vibration fixture as each of `versions`; the
/// copies' folder goes with it.
fn registry_with(
    s: &ebgand::config::Settings,
    versions: &[&str],
) -> (ebgand::model::Registry, tempfile::TempDir) {
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let folder = tempfile::tempdir().unwrap();
    for v in versions {
        registry
            .import(&fixture_version(folder.path(), v, |m| m))
            .unwrap();
    }
    (registry, folder)
}

/// Publishes the `activate` command for the vibration model's `version`.
async fn activate(tx: &mut Sender, prefix: &str, version: &str) {
    let command = format!(r#"{{"model":"vibration","version":"{version}"}}"#);
    tx.publish(&format!("{prefix}/control/activate"), command)
        .await;
}

async fn publish_healthy(tx: &mut Sender, m: &mut Machine, n: usize) {
    for _ in 0..n {
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&m.samples(64, false)).unwrap(),
        )
        .await;
    }
    tx.flushed().await;
}

/// A version in shadow activated by hand (`activate`, not `promote`) stops shadowing: it
/// serves and raises, and there is no shadow left to promote. Before, the scorer kept the
/// version as its own shadow: every window was scored twice, each batch rebuilt the shadow's
/// judge, and a retrained version warming so stayed "warming", so scheduled retraining
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_activated_by_hand_serves_and_shadows_no_more() {
    let broker = Mosquitto::start().await;
    let prefix = "shact";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let config = VIBRATION.replace(
        "judge = \"threshold\"",
        "judge = \"probability\"\nlearn_windows = 16\nwarm_windows = 16",
    );
    let mut s = settings(broker.port, prefix, &config);
    s.registry.gate_min_windows = 16;
    let (_registry, _versions) = registry_with(&s, &["next"]);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    let events = |name: &str| {
        obs.on(&format!("{prefix}/events"))
            .iter()
            .any(|e| e.json["event"] == name)
    };
    tx.publish(
        &format!("{prefix}/control/shadow"),
        r#"{"model":"vibration","version":"next"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "shadow started", || {
        events("shadow_started")
    })
    .await;
    publish_healthy(&mut tx, &mut m, 40).await;
    eventually(Duration::from_secs(10), "judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 40
    })
    .await;
    activate(&mut tx, prefix, "next").await;
    eventually(Duration::from_secs(10), "activated", || events("activated")).await;
    publish_healthy(&mut tx, &mut m, 60).await;
    for _ in 0..10 {
        let fault = serde_json::to_vec(&m.samples(64, true)).unwrap();
        tx.publish("sensors/m1/vibration", fault).await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(15),
        "the fault raised by the version served",
        || {
            obs.on(&format!("{prefix}/alerts/"))
                .iter()
                .any(|a| a.json["state"] == "raised" && a.json["model"]["version"] == "next")
        },
    )
    .await;
    tx.publish(
        &format!("{prefix}/control/promote"),
        r#"{"model":"vibration"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "the promotion refused", || {
        events("command_failed")
    })
    .await;
    let all: Vec<serde_json::Value> = obs
        .on(&format!("{prefix}/events"))
        .into_iter()
        .map(|e| e.json)
        .collect();
    let failed = all.iter().find(|e| e["event"] == "command_failed").unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("no shadow"),
        "{failed}"
    );
    assert!(
        !all.iter().any(|e| e["event"] == "shadow_report"),
        "the version served still shadowed itself: {all:?}"
    );
    daemon.shutdown().await.unwrap();
}

/// A reload (SIGHUP, or the `reload` command) of the version served that is refused (here by
/// the gate: its manifest's threshold, edited in place, calls every recent healthy window
/// anomalous; a GPU out of memory for a second session would do the same) keeps it serving and
/// leaves the registry alone. Before, the refusal "put the pointer back" to the same version,
/// which recorded it as refused, and rollback then skipped the last good version for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_does_not_mark_the_version_served_refused() {
    let broker = Mosquitto::start().await;
    let prefix = "rel";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.registry.gate_min_windows = 0;
    let (registry, _versions) = registry_with(&s, &["next"]);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let events = |name: &str| obs.events(prefix, name);
    activate(&mut tx, prefix, "next").await;
    eventually(Duration::from_secs(10), "next activated", || {
        !events("activated").is_empty()
    })
    .await;
    let mut m = Machine::new(9);
    publish_healthy(&mut tx, &mut m, 20).await;
    eventually(Duration::from_secs(10), "windows scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 20
    })
    .await;
    let manifest = registry.path("vibration", "next").join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, with_threshold(text, "0.000001")).unwrap();
    tx.publish(&format!("{prefix}/control/reload"), "").await;
    eventually(Duration::from_secs(10), "the reload refused", || {
        !events("refused").is_empty()
    })
    .await;
    assert_eq!(events("refused")[0]["version"], "next");
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("next")
    );
    let history = registry.history("vibration").unwrap();
    assert!(
        history.iter().all(|a| a.refused.is_none()),
        "the version served recorded as refused: {history:?}"
    );
    assert_eq!(registry.rollback_target("vibration").unwrap(), "fixture-1");
    daemon.shutdown().await.unwrap();
}
