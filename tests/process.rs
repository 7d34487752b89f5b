//! The real binary under real signals: SIGTERM drains and exits 0, SIGHUP reloads, SIGKILL
//! leaves the Last Will.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;

/// Whether the daemon announced `version` active on its events topic.
fn activated(obs: &Observer, prefix: &str, version: &str) -> bool {
    obs.on(&format!("{prefix}/events"))
        .iter()
        .any(|s| s.json["event"] == "activated" && s.json["version"] == version)
}

fn last_status(obs: &Observer, prefix: &str) -> Option<String> {
    obs.on(&format!("{prefix}/status"))
        .last()
        .map(|s| s.json["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_sighup_reloads() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = "p1";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    // Windows are held in the batcher (a batch closes at 10,000 windows or after an hour):
    // only the drain scores them.
    let mut child = spawn_daemon_with(
        broker.port,
        prefix,
        dir.path(),
        "publish_energy = true",
        &[
            ("EBGAND__SCORING__MAX_BATCH", "10000"),
            ("EBGAND__SCORING__MAX_WAIT_US", "3600000000"),
        ],
    );
    eventually(Duration::from_secs(20), "online", || {
        last_status(&obs, prefix).as_deref() == Some("online")
    })
    .await;
    kill(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    // Acknowledged by the daemon once queued (and journaled), not yet scored.
    let mut tx = Sender::start(broker.port).await;
    let mut m = ebgand::sim::Machine::new(3);
    for _ in 0..10 {
        tx.publish("sensors/m1/vibration", healthy_window(&mut m))
            .await;
    }
    tx.flushed().await;
    let energy = format!("{prefix}/energy/");
    assert_eq!(obs.count(&energy), 0, "scored before the drain");
    kill(&child, "-TERM");
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("Model swapped"),
        "SIGHUP reload not in the log:\n{log}"
    );
    assert!(log.contains("Drained"), "{log}");
    eventually(Duration::from_secs(5), "offline after a clean stop", || {
        last_status(&obs, prefix).as_deref() == Some("offline")
    })
    .await;
    // Everything the daemon published before it went offline has arrived: the ten windows,
    // scored by the drain.
    obs.settled().await;
    assert_eq!(obs.count(&energy), 10, "windows left unscored at the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_the_last_will() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = "p2";
    let obs = Observer::start(broker.port, &format!("{prefix}/status")).await;
    let mut child = spawn_daemon(broker.port, prefix, dir.path(), "");
    eventually(Duration::from_secs(20), "online", || {
        last_status(&obs, prefix).as_deref() == Some("online")
    })
    .await;
    kill(&child, "-KILL");
    wait_exit(&mut child).await;
    eventually(Duration::from_secs(15), "Last Will published", || {
        last_status(&obs, prefix).as_deref() == Some("offline")
    })
    .await;
    let will = obs
        .on(&format!("{prefix}/status"))
        .last()
        .unwrap()
        .json
        .clone();
    assert_eq!(will["node"], "proc-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_activation_leaves_one_whole_active_version() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = "p3";
    let registry = ebgand::model::Registry::open(&dir.path().join("registry")).unwrap();
    // Versions v01..v12 beside the seed, with distinct bytes so a mix would be detectable.
    let versions: Vec<String> = (1..=12).map(|i| format!("v{i:02}")).collect();
    for v in &versions {
        registry
            .import(&fixture_version(&dir.path().join("src"), v, |m| m))
            .unwrap();
    }
    let mut tx = Sender::start(broker.port).await;
    let mut rng = fastrand::Rng::with_seed(3);
    let (mut before, mut completed, mut cut) = ("fixture-1".to_owned(), 0, 0);
    for (round, v) in versions.iter().enumerate() {
        let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
        // No traffic: without a minimum of recent windows the activation goes all the way to
        // the pointer write, where the kill must find it.
        let mut child = spawn_daemon_with(
            broker.port,
            prefix,
            dir.path(),
            "",
            &[("EBGAND__REGISTRY__GATE_MIN_WINDOWS", "0")],
        );
        eventually(Duration::from_secs(20), "online", || {
            last_status(&obs, prefix).as_deref() == Some("online")
        })
        .await;
        tx.publish(
            &format!("{prefix}/control/activate"),
            format!(r#"{{"model":"vibration","version":"{v}"}}"#),
        )
        .await;
        let last = round + 1 == versions.len();
        if last {
            // Once at least, the kill comes after the daemon said the version is active: the
            // pointer must then have moved, whatever the timing of the other rounds.
            eventually(Duration::from_secs(20), "activated", || {
                activated(&obs, prefix, v)
            })
            .await;
        } else {
            // Somewhere inside the activation: loading, gating, swapping or writing the pointer.
            tokio::time::sleep(Duration::from_micros(rng.u64(0..120_000))).await;
        }
        kill(&child, "-KILL");
        wait_exit(&mut child).await;
        let said = activated(&obs, prefix, v);
        let active = registry
            .active("vibration")
            .unwrap()
            .expect("an active version");
        let whole = ebgand::model::ModelVersion::open(&registry.path("vibration", &active));
        assert!(
            whole.is_ok(),
            "round {round}: active {active} is not whole: {:?}",
            whole.err()
        );
        assert_eq!(whole.unwrap().manifest.version, active);
        // The pointer names the version before the round or the one being activated, nothing
        // else; and once the daemon announced the activation, the new one (the event goes out
        // after the pointer is written).
        assert!(
            active == before || active == *v,
            "round {round}: active {active}; expected {before} or {v}"
        );
        assert!(
            !said || active == *v,
            "round {round}: the daemon announced {v} active, but the pointer names {active}"
        );
        if active == *v {
            completed += 1;
        } else {
            cut += 1;
        }
        // A kill between writing a temp pointer (`.ACTIVE.<pid>`) and renaming it leaves the
        // file: harmless, since only `ACTIVE` is read and no dot name is a version. Checked.
        let leftovers: Vec<_> = std::fs::read_dir(registry.root().join("vibration"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ACTIVE"))
            .collect();
        let listed = registry.versions("vibration").unwrap();
        assert!(
            listed.iter().all(|v| !v.starts_with('.')),
            "round {round}: a temp file listed as a version: {listed:?}"
        );
        eprintln!(
            "round {round}: killed while activating {v} (announced: {said}); active: {active}; temp pointers left: {leftovers:?}"
        );
        before = active;
    }
    eprintln!("activations completed before the kill: {completed}; cut short: {cut}");
    // The last restart serves exactly the registry's active version.
    let obs = Observer::start(broker.port, &format!("{prefix}/status")).await;
    let mut child = spawn_daemon(broker.port, prefix, dir.path(), "");
    eventually(Duration::from_secs(20), "online", || {
        last_status(&obs, prefix).as_deref() == Some("online")
    })
    .await;
    kill(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let active = registry.active("vibration").unwrap().unwrap();
    assert!(
        log.contains(&format!("\"model.version\":\"{active}\"")),
        "serves {active}:\n{log}"
    );
}
