//! Learning from the stream over MQTT alone: a cold start with no model learns, trains,
//! activates and then alerts on a fault; a killed training run is reported and retried while
//! the daemon keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;

async fn publish_windows(tx: &mut Sender, m: &mut Machine, windows: usize, fault: bool) {
    for _ in 0..windows {
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&m.samples(64, fault)).unwrap(),
        )
        .await;
    }
}

/// Runs training with the repository's worker and venv (from the repository root, as the
/// daemon's default config expects) and a shared artifact cache.
fn with_trainer(s: &mut ebgand::config::Settings) {
    let python = root().join(".venv/trainer/bin/python");
    assert!(python.exists(), "trainer venv missing: run `make setup`");
    s.train.python = python;
    s.train.worker = root().join("models/trainer");
    s.train.cache = Some(std::env::temp_dir().join("ebgand-test-trainer-cache"));
}

/// The vibration stream with no model version, judged by probability with the `[detect]`
/// settings in `detect`: it learns a first version from 300 windows (200 training steps).
fn learns_by_probability(port: u16, prefix: &str, detect: &str) -> ebgand::config::Settings {
    let toml = VIBRATION
        .replace("path = \"models/vibration/fixture-1\"", "")
        .replace(
            "judge = \"threshold\"",
            &format!("judge = \"probability\"\n{detect}"),
        );
    let mut s = settings(port, prefix, &toml);
    s.learning.period.windows = 300;
    s.learning.steps = 200;
    with_trainer(&mut s);
    s
}

/// Where the vibration model's learner saves its progress (`learning.npz`).
fn saved_progress(s: &ebgand::config::Settings) -> std::path::PathBuf {
    s.learning
        .dir
        .join("vibration")
        .join(ebgand::train::recent::SAVED)
}

/// Publishes `windows` healthy windows for a model to learn from, and waits (at most a minute)
/// for the first version trained on them to be activated; returns that version.
async fn learn_first_version(
    obs: &Observer,
    prefix: &str,
    tx: &mut Sender,
    m: &mut Machine,
    windows: usize,
) -> String {
    publish_windows(tx, m, windows, false).await;
    tx.flushed().await;
    eventually(
        Duration::from_secs(60),
        "first version trained and activated",
        || !obs.events(prefix, "activated").is_empty(),
    )
    .await;
    obs.events(prefix, "activated")[0]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for the first state of `vibration/m1` published under `version` and checks that it
/// was judged (a probability, not learning) and was window `seq`, the version's first.
async fn judged_from_the_version_s_first_window(
    obs: &Observer,
    prefix: &str,
    version: &str,
    seq: u64,
) {
    let topic = format!("{prefix}/state/vibration/m1");
    let under = |s: &Seen| s.json["model"]["version"] == version;
    eventually(Duration::from_secs(20), "the version's first state", || {
        obs.on(&topic).iter().any(under)
    })
    .await;
    let first = obs.on(&topic).into_iter().find(|s| under(s)).unwrap().json;
    // (`learning` is left out of a state message when false.)
    assert_ne!(first["learning"], true, "{first}");
    assert!(first["probability"].as_f64().is_some(), "{first}");
    assert_eq!(first["seq"], seq, "the version's first window: {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_learns_trains_activates_alerts_and_survives_a_killed_trainer() {
    let broker = Mosquitto::start().await;
    let prefix = "learn";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    // The vibration stream with no model version: it has to learn.
    let mut s = settings(
        broker.port,
        prefix,
        &VIBRATION.replace("path = \"models/vibration/fixture-1\"", ""),
    );
    s.learning.period.windows = 400;
    s.learning.steps = 300;
    s.learning.retries = 1;
    s.learning.retry_delay = Duration::from_secs(1);
    // The retrained version is judged on the ~50 healthy windows published after the first.
    s.registry.gate_min_windows = 16;
    with_trainer(&mut s);
    let state_dir = s.registry.dir.clone();
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let daemon = TestDaemon::start(s).await;
    assert_eq!(
        registry.active("vibration").unwrap(),
        None,
        "cold start: no model"
    );

    // Learning: the stream alone teaches the daemon what healthy looks like.
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(21);
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 400).await;
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some(version.as_str())
    );
    let phases: Vec<String> = obs
        .on(&format!("{prefix}/state/vibration/m1"))
        .iter()
        .filter_map(|s| s.json["phase"].as_str().map(str::to_owned))
        .collect();
    assert!(
        phases.starts_with(&["learning".to_string(), "training".to_string()]),
        "{phases:?}"
    );
    assert_eq!(daemon.metric("ebgand_windows_captured_total"), 400);
    assert!(
        daemon
            .metrics
            .encode()
            .contains("ebgand_model_phase{model=\"vibration\",phase=\"monitoring\"} 1")
    );

    // Monitoring: healthy stays quiet, a fault raises an alert from the trained version.
    publish_windows(&mut tx, &mut m, 30, false).await;
    publish_windows(&mut tx, &mut m, 20, true).await;
    tx.flushed().await;
    eventually(
        Duration::from_secs(20),
        "alert on the injected fault",
        || !obs.on(&format!("{prefix}/alerts/")).is_empty(),
    )
    .await;
    let alert = obs.on(&format!("{prefix}/alerts/"))[0].json.clone();
    assert_eq!(alert["state"], "raised");
    assert_eq!(alert["model"]["version"], version.as_str());
    assert!(
        alert["seq"].as_u64().unwrap() >= 30,
        "no alert on healthy windows: {alert}"
    );
    let phases: Vec<String> = obs
        .on(&format!("{prefix}/state/vibration/m1"))
        .iter()
        .filter_map(|s| s.json["phase"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(phases.last().map(String::as_str), Some("monitoring"));

    // Retraining on command; the worker is killed mid-run: reported, retried, and the daemon
    // scores throughout.
    let scored_before = daemon.metric("ebgand_windows_scored_total");
    tx.publish(
        &format!("{prefix}/control/train"),
        r#"{"model":"vibration"}"#,
    )
    .await;
    let mut killed = false;
    for _ in 0..400 {
        let pids = Command::new("pgrep")
            .args([
                "-f",
                &format!(
                    "ebgand_trainer.*{state_dir}",
                    state_dir = state_dir.display()
                ),
            ])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&pids.stdout).trim().to_owned();
        if !pids.is_empty() {
            for pid in pids.lines() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(killed, "the training worker never showed up");
    publish_windows(&mut tx, &mut m, 20, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(30), "failure reported", || {
        !obs.events(prefix, "training_failed").is_empty()
    })
    .await;
    let failure = obs.events(prefix, "training_failed")[0].clone();
    assert_eq!(failure["attempt"], 1);
    assert_eq!(failure["retry_in_s"], 1);
    eventually(Duration::from_secs(10), "scoring continued", || {
        daemon.metric("ebgand_windows_scored_total") >= scored_before + 20
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the retry trains and activates",
        || obs.events(prefix, "activated").len() >= 2,
    )
    .await;
    let retrained = obs.events(prefix, "activated")[1].clone();
    assert_eq!(retrained["reason"], "trained");
    assert_ne!(retrained["version"], version.as_str());
    assert!(
        daemon
            .metrics
            .encode()
            .contains("ebgand_training_runs_total{state=\"failed\"} 1")
    );
    daemon.shutdown().await.unwrap();
    // Neither the killed run nor the two that trained left their staged output behind.
    let leftovers: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".train-") || n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A model with no version judges nothing until one trains: when its first runs fail past
/// `[learning] retries` (here a trainer that always fails), it keeps trying, each wait twice
/// the last, instead of staying in learning for good (the learner asks once, and scheduled
/// retraining is for models that serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_no_version_keeps_retrying_its_first_training() {
    let broker = Mosquitto::start().await;
    let prefix = "again";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(
        broker.port,
        prefix,
        &VIBRATION.replace("path = \"models/vibration/fixture-1\"", ""),
    );
    s.learning.period.windows = 20;
    s.learning.retries = 1;
    s.learning.retry_delay = Duration::from_millis(200);
    s.train.python = "/bin/false".into();
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(3);
    publish_windows(&mut tx, &mut m, 30, false).await;
    tx.flushed().await;
    // Runs 1 and 2 are the first and its retry; 3 and 4 come 0.4 s and 0.8 s after.
    eventually(Duration::from_secs(30), "four failed runs", || {
        obs.events(prefix, "training_failed").len() >= 4
    })
    .await;
    let failed = obs.events(prefix, "training_failed");
    let attempts: Vec<u64> = failed
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts[..4], [1, 2, 3, 4]);
    assert!(
        failed[..4].iter().all(|e| !e["retry_in_s"].is_null()),
        "every failure schedules another run: {failed:?}"
    );
    assert!(obs.events(prefix, "training_started").len() >= 4);
    daemon.shutdown().await.unwrap();
}

/// A training run that panics is a failed run like any other: reported, counted and retried,
/// and the retry trains the first version. Before, the panic ended the task that would have
/// reported it, and the model stayed marked as training: no run could start again, so a model
/// with no version learnt for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_run_that_panics_is_retried() {
    let broker = Mosquitto::start().await;
    let prefix = "panicked";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = learns_by_probability(broker.port, prefix, "");
    s.learning.period.windows = 100;
    s.learning.retries = 1;
    s.learning.retry_delay = Duration::from_millis(200);
    s.faults.panic_training("vibration", 1);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(4);
    learn_first_version(&obs, prefix, &mut tx, &mut m, 120).await;
    let failed = obs.events(prefix, "training_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("panicked"),
        "{failed:?}"
    );
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(obs.events(prefix, "training_started").len(), 2);
    let activated = obs.events(prefix, "activated");
    assert_eq!(
        activated[0]["reason"], "trained from the stream",
        "{activated:?}"
    );
    daemon.shutdown().await.unwrap();
}

/// The first version's scorer panics while it scores the learning windows to calibrate the
/// streams (after the learner handed the window queue back): the streams then learn under
/// the new version, which serves, and the windows keep flowing. Before, the panic failed the
/// activation and dropped the queue with the windows in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_seeding_the_first_version_loses_nothing() {
    let broker = Mosquitto::start().await;
    let prefix = "seedpanic";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = learns_by_probability(broker.port, prefix, "");
    s.learning.period.windows = 100;
    s.faults.panic_scorer("vibration", 1);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(6);
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 120).await;
    publish_windows(&mut tx, &mut m, 20, false).await;
    tx.flushed().await;
    // Every window from the version's first to the last one published is scored by it.
    let topic = format!("{prefix}/energy/vibration/m1");
    let under = |s: &Seen| s.json["model"]["version"] == version.as_str();
    eventually(Duration::from_secs(20), "the last window's energy", || {
        obs.on(&topic)
            .iter()
            .any(|s| under(s) && s.json["seq"] == 139)
    })
    .await;
    let scored: Vec<Seen> = obs.on(&topic).into_iter().filter(under).collect();
    let mut seqs: Vec<u64> = scored
        .iter()
        .map(|s| s.json["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let first = seqs[0];
    assert_eq!(seqs, (first..=139).collect::<Vec<_>>());
    // Not seeded: the streams learn under the new version.
    assert_eq!(scored[0].json["learning"], true, "{}", scored[0].json);
    daemon.shutdown().await.unwrap();
}

/// NAB's rule for a cold start: learn on the probationary period, then judge. The first
/// version's calibration is seeded with the stream's newest learning windows, so the stream is
/// judged from that version's first window on, not after `learn_windows` more, and so when
/// the learning period (300 windows) is shorter than `learn_windows` (512): its windows are
/// all the stream learns from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_version_judges_its_streams_at_once() {
    let broker = Mosquitto::start().await;
    let prefix = "seeded";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let s = learns_by_probability(
        broker.port,
        prefix,
        "alert_probability = 0.999\nlearn_windows = 512",
    );
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(5);
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 300).await;

    // The version's first window is judged: a probability, not learning.
    publish_windows(&mut tx, &mut m, 20, false).await;
    publish_windows(&mut tx, &mut m, 10, true).await;
    tx.flushed().await;
    judged_from_the_version_s_first_window(&obs, prefix, &version, 300).await;
    // And a fault right after activation is raised: without the seed these windows would
    // still be learning (512 of them), and with the seed but not its learning period's rule
    // (before round nineteen of docs/EVALUATION-ROUNDS.md) too (212 more).
    eventually(Duration::from_secs(20), "alert on the fault", || {
        !obs.on(&format!("{prefix}/alerts/")).is_empty()
    })
    .await;
    let alert = obs.on(&format!("{prefix}/alerts/"))[0].json.clone();
    assert_eq!(alert["state"], "raised");
    assert_eq!(alert["model"]["version"], version.as_str());
    let seq = alert["seq"].as_u64().unwrap();
    assert!((320..330).contains(&seq), "raised on the fault: {alert}");
    daemon.shutdown().await.unwrap();
}

/// A stream's own `learn_windows` reaches its cold start: seeded with the 300 windows of the
/// learning period, a stream that learns 512 of its own (`[detect]`'s: 128) is judged at once
/// by NAB's rule, as thin, at a bar ten times likelier than its alert probability (the test
/// above); seeded by `[detect]`'s 128 instead, it would learn 212 more windows first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_version_seeds_a_stream_by_its_own_learn_windows() {
    let broker = Mosquitto::start().await;
    let prefix = "ownseed";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = learns_by_probability(
        broker.port,
        prefix,
        "alert_probability = 0.999\nlearn_windows = 128",
    );
    s.streams[0].tuning.learn_windows = Some(512);
    let daemon = TestDaemon::start(s).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(9);
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 300).await;
    publish_windows(&mut tx, &mut m, 5, false).await;
    tx.flushed().await;
    judged_from_the_version_s_first_window(&obs, prefix, &version, 300).await;
    let topic = format!("{prefix}/energy/vibration/m1");
    let under = |s: &Seen| s.json["model"]["version"] == version.as_str();
    eventually(Duration::from_secs(20), "the version's energies", || {
        obs.on(&topic).iter().filter(|s| under(s)).count() == 5
    })
    .await;
    for s in obs.on(&topic).into_iter().filter(under) {
        assert_eq!(s.json["alert_probability"], 0.99, "{}", s.json);
    }
    daemon.shutdown().await.unwrap();
}

/// The calibration a first version made from the learning windows is checkpointed when the
/// version starts serving, not when the stream's next window arrives (five minutes later on a
/// metric stream): a restart in between does not send the stream back to learning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_calibration_survives_a_restart_before_the_stream_s_next_window() {
    let broker = Mosquitto::start().await;
    let prefix = "reseeded";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let s = learns_by_probability(broker.port, prefix, "learn_windows = 128");
    let daemon = TestDaemon::start(s.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(6);
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 300).await;
    // Stopped before any window of the version: the seed was never used by a judged window.
    daemon.shutdown().await.unwrap();
    // As if the daemon had stopped between the activation and the removal of the learner's
    // saved progress: start-up removes it beside a model that has a version.
    let saved = saved_progress(&s);
    std::fs::write(&saved, b"left over").unwrap();

    let daemon = TestDaemon::start(s).await;
    assert!(!saved.exists(), "removed at start-up");
    publish_windows(&mut tx, &mut m, 5, false).await;
    tx.flushed().await;
    // Learning again after the restart would publish `learning` here.
    judged_from_the_version_s_first_window(&obs, prefix, &version, 300).await;
    daemon.shutdown().await.unwrap();
}

/// A restart during the learning period carries it on: the windows captured before it count
/// towards the period, and the first version's calibration is seeded with windows from both
/// sides of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_learning_carries_the_learning_period_on() {
    let broker = Mosquitto::start().await;
    let prefix = "resumed";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let s = learns_by_probability(broker.port, prefix, "learn_windows = 256");
    let saved = saved_progress(&s);
    let daemon = TestDaemon::start(s.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(8);
    publish_windows(&mut tx, &mut m, 200, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "200 windows captured", || {
        daemon.metric("ebgand_windows_captured_total") == 200
    })
    .await;
    daemon.shutdown().await.unwrap();
    assert!(saved.exists(), "the learner saved its progress at shutdown");

    let daemon = TestDaemon::start(s).await;
    // 100 more end the period of 300: without the 200 from before the restart, the stream
    // would learn for 300 more.
    let version = learn_first_version(&obs, prefix, &mut tx, &mut m, 100).await;
    assert_eq!(daemon.metric("ebgand_windows_captured_total"), 100);
    // Judged from the version's first window: its calibration learnt 256 windows, which the
    // 100 since the restart could not have given it.
    publish_windows(&mut tx, &mut m, 5, false).await;
    tx.flushed().await;
    judged_from_the_version_s_first_window(&obs, prefix, &version, 300).await;
    assert!(!saved.exists(), "removed once the first version serves");
    daemon.shutdown().await.unwrap();
}

/// Continual learning is the default for a model that learnt from its stream: it retrains on
/// `[learning] retrain_every_s` from its captured healthy windows; a model seeded from a folder
/// on the same schedule does not (unless `retrain_seeded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learnt_model_retrains_on_schedule_and_a_seeded_one_does_not() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "#").await;
    let mut daemons = Vec::new();
    let mut registries = Vec::new();
    for (prefix, toml) in [
        (
            "cont",
            VIBRATION.replace("path = \"models/vibration/fixture-1\"", ""),
        ),
        ("seed", VIBRATION.replace("sensors/+", "seeded/+")),
    ] {
        let mut s = settings(broker.port, prefix, &toml);
        assert!(s.learning.retrain_every.is_some(), "on by default");
        s.learning.retrain_every = Some(Duration::from_secs(3));
        s.learning.period.windows = 300;
        s.learning.capture_every = 1;
        s.learning.steps = 200;
        // About the schedule: the windows all arrive before the first version serves, so none
        // is judged healthy for the gate (its minimum has its own test in tests/lifecycle.rs).
        s.registry.gate_min_windows = 0;
        // Retention after each run: the active version and the newest other.
        s.learning.keep_versions = Some(2);
        registries.push(s.registry.dir.clone());
        with_trainer(&mut s);
        daemons.push(TestDaemon::start(s).await);
    }
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(33);
    for _ in 0..600 {
        let samples = serde_json::to_vec(&m.samples(64, false)).unwrap();
        tx.publish("sensors/m1/vibration", samples.clone()).await;
        tx.publish("seeded/m1/vibration", samples).await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(90),
        "learnt, then retrained on schedule twice",
        || obs.events("cont", "activated").len() >= 3,
    )
    .await;
    let activated = obs.events("cont", "activated");
    assert_ne!(activated[0]["version"], activated[1]["version"]);
    assert_eq!(activated[1]["reason"], "trained");
    // Three versions made, two kept: the oldest goes right after the third run's activation.
    let registry = ebgand::model::Registry::open(&registries[0]).unwrap();
    // (Runs go on every 3 s meanwhile: a fourth version may be imported and not yet pruned.)
    let mut kept = Vec::new();
    eventually(Duration::from_secs(10), "retention after the run", || {
        kept = registry.versions("vibration").unwrap();
        let active = registry.active("vibration").unwrap().unwrap();
        kept.len() <= 2 && kept.contains(&active)
    })
    .await;
    assert!(
        !kept.contains(&activated[0]["version"].as_str().unwrap().to_owned()),
        "the first version outlived retention: {kept:?}"
    );
    // Two more periods: the seeded daemon's schedule has ticked at least twice by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    obs.settled().await;
    assert!(
        obs.events("seed", "training_started").is_empty(),
        "the seeded model was retrained"
    );
    for d in daemons {
        d.shutdown().await.unwrap();
    }
}

/// A retrained version of a model whose streams are judged by calibrated probability warms up
/// in shadow: the served version keeps judging while the new one's calibration learns on the
/// same windows, and only then is it activated (reason "trained"), handing its calibrations
/// on. No stream goes back to learning, so a slow stream retrained on a schedule is still
/// judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrained_version_warms_up_in_shadow_across_a_restart_and_no_stream_learns_again() {
    const LEARN: u64 = 32;
    // A new version learns each stream for longer than a new stream does.
    const WARM: u64 = 48;
    let broker = Mosquitto::start().await;
    let prefix = "warm";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = learns_by_probability(
        broker.port,
        prefix,
        &format!("learn_windows = {LEARN}\nwarm_windows = {WARM}"),
    );
    s.learning.capture_every = 1;
    // Scheduled retraining every second: a tick while a version warms is skipped.
    s.learning.retrain_every = Some(Duration::from_secs(1));
    s.registry.gate_min_windows = 16;
    // The gate's own bound has its tests (tests/lifecycle.rs); a short run's threshold on a
    // few hundred windows can miss it by a little, which is not what this test is about.
    s.registry.max_false_alarm_rate = 0.25;
    let daemon = TestDaemon::start(s.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    let mut m = Machine::new(44);

    // The first version judges from its first window (calibrated on the learning windows).
    let first = learn_first_version(&obs, prefix, &mut tx, &mut m, 300).await;
    publish_windows(&mut tx, &mut m, 60, false).await;
    tx.flushed().await;
    let energy = format!("{prefix}/energy/");
    eventually(Duration::from_secs(20), "first version judges", || {
        obs.on(&energy)
            .iter()
            .any(|e| e.json["probability"].is_number())
    })
    .await;

    // Retrained on schedule: a shadow first, not an activation.
    eventually(
        Duration::from_secs(60),
        "the retrained version shadows",
        || !obs.events(prefix, "shadow_started").is_empty(),
    )
    .await;
    let second = obs.events(prefix, "shadow_started")[0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    // No windows for three ticks: the shadow cannot warm, and the schedule waits for it.
    let runs = obs.events(prefix, "training_started").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    obs.settled().await;
    assert_eq!(
        obs.events(prefix, "activated").len(),
        1,
        "activated before its calibration learnt a window"
    );
    assert_eq!(
        obs.events(prefix, "training_started").len(),
        runs,
        "a scheduled run started while the last version warmed"
    );
    assert_eq!(obs.events(prefix, "shadow_started").len(), 1);

    // A restart while it warms: the warm-up starts again (its calibration was in memory)
    // rather than leaving the version unserved until the next run.
    daemon.shutdown().await.unwrap();
    let daemon = TestDaemon::start(s).await;
    eventually(Duration::from_secs(20), "the warm-up resumed", || {
        obs.events(prefix, "shadow_started").len() == 2
    })
    .await;
    assert_eq!(
        obs.events(prefix, "shadow_started")[1]["version"],
        second.as_str()
    );
    assert_eq!(obs.events(prefix, "activated").len(), 1);

    // Windows arrive: the shadow learns on them while the served version judges them, then
    // the retrained version is promoted.
    publish_windows(&mut tx, &mut m, 2 * WARM as usize, false).await;
    tx.flushed().await;
    eventually(
        Duration::from_secs(30),
        "the warm version activated",
        || obs.events(prefix, "activated").len() >= 2,
    )
    .await;
    let activated = obs.events(prefix, "activated")[1].clone();
    assert_eq!(activated["version"], second.as_str());
    assert_eq!(activated["reason"], "trained");
    let report = obs.events(prefix, "shadow_report");
    assert!(
        report[0]["windows"].as_u64().unwrap() >= WARM,
        "{}",
        report[0]
    );

    // Windows after the promotion are judged by the new version at once.
    publish_windows(&mut tx, &mut m, 20, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "the new version judges", || {
        obs.on(&energy)
            .iter()
            .any(|e| e.json["model"]["version"] == second.as_str())
    })
    .await;
    let judged: Vec<serde_json::Value> = obs.on(&energy).into_iter().map(|e| e.json).collect();
    let learning = |version: &str| {
        judged
            .iter()
            .filter(|j| j["model"]["version"] == version && j["learning"] == true)
            .count()
    };
    // The first version was calibrated on the stream's learning windows, and the second took
    // over the shadow's calibration: no window of either was spent learning.
    assert_eq!(
        learning(&first),
        0,
        "the first version learnt after its training"
    );
    assert_eq!(learning(&second), 0, "the stream learnt again");
    assert!(
        judged
            .iter()
            .filter(|j| j["model"]["version"] == second.as_str())
            .all(|j| j["probability"].is_number()),
        "the promoted version judged from its first window"
    );
    daemon.shutdown().await.unwrap();
}

/// An operator who activates a version while the model still learns (`ebgand models import
/// --activate`, the registry watch) ends the learning, as a start with that pointer would:
/// the version serves at once, its streams calibrated on the learning windows, and the
/// training run in flight for a first version is kept in the registry, not served over that
/// choice. Before, the registry watch did not follow a learning model, and the first trained
/// version overwrote the operator's pointer. An `activate` command for a version that cannot
/// serve leaves the model learning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_activated_by_hand_while_the_model_learns_serves_at_once() {
    let broker = Mosquitto::start().await;
    let prefix = "handlearn";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = learns_by_probability(broker.port, prefix, "learn_windows = 128");
    // The training run waits 3 s before it starts: the operator's choice lands while it runs.
    let slow = tempfile::tempdir().unwrap();
    let python = slow.path().join("python");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\nsleep 3\nexec {} \"$@\"\n",
            s.train.python.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&python).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&python, perms).unwrap();
    s.train.python = python;
    let daemon = TestDaemon::start(s.clone()).await;
    let mut tx = Sender::start(broker.port).await;
    tx.publish(
        &format!("{prefix}/control/activate"),
        r#"{"model":"vibration","version":"chosen"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "the command failed", || {
        !obs.events(prefix, "command_failed").is_empty()
    })
    .await;
    let failed = &obs.events(prefix, "command_failed")[0];
    assert!(
        failed["reason"].as_str().unwrap().contains("chosen"),
        "{failed}"
    );

    // The learning period ends and a first version trains; meanwhile the operator's.
    let mut m = Machine::new(9);
    publish_windows(&mut tx, &mut m, 300, false).await;
    tx.flushed().await;
    eventually(Duration::from_secs(20), "the training run", || {
        !obs.events(prefix, "training_started").is_empty()
    })
    .await;
    let registry = ebgand::model::Registry::open(&s.registry.dir).unwrap();
    let folder = tempfile::tempdir().unwrap();
    registry
        .import(&fixture_version(folder.path(), "chosen", |m| m))
        .unwrap();
    registry
        .activate("vibration", "chosen", "cli import")
        .unwrap();
    eventually(Duration::from_secs(10), "the operator's version", || {
        !obs.events(prefix, "activated").is_empty()
    })
    .await;
    let activated = &obs.events(prefix, "activated")[0];
    assert_eq!(activated["version"], "chosen", "{activated}");
    assert_eq!(activated["reason"], "registry");
    eventually(
        Duration::from_secs(60),
        "the trained version kept aside",
        || !obs.events(prefix, "refused").is_empty(),
    )
    .await;
    let kept = &obs.events(prefix, "refused")[0];
    assert_ne!(kept["version"], "chosen");
    assert_eq!(kept["serving"], "chosen", "{kept}");
    assert!(
        registry
            .path("vibration", kept["version"].as_str().unwrap())
            .is_dir()
    );
    // Judged at once by the operator's version: its streams learnt from the learning windows.
    publish_windows(&mut tx, &mut m, 5, false).await;
    tx.flushed().await;
    judged_from_the_version_s_first_window(&obs, prefix, "chosen", 300).await;
    daemon.shutdown().await.unwrap();
    obs.settled().await;
    assert_eq!(
        obs.events(prefix, "activated").len(),
        1,
        "served over the choice"
    );
    assert_eq!(
        registry.active("vibration").unwrap().as_deref(),
        Some("chosen")
    );
}

/// Each scheduled retraining has its own retries: with every run failing (an injected panic),
/// `retries = 1` and the schedule every 2 s, each period makes a first attempt and one retry.
/// Before, the count was cleared only by a success, so once one period had used the retries
/// every later one got a single attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduled_retraining_gets_its_own_retries() {
    let broker = Mosquitto::start().await;
    let prefix = "retries";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let mut s = settings(broker.port, prefix, VIBRATION);
    s.learning.retrain_every = Some(Duration::from_secs(2));
    s.learning.retrain_seeded = true;
    s.learning.retries = 1;
    s.learning.retry_delay = Duration::from_millis(100);
    s.faults.panic_training("vibration", 1000);
    let daemon = TestDaemon::start(s).await;
    eventually(Duration::from_secs(30), "three scheduled periods", || {
        obs.events(prefix, "training_failed").len() >= 5
    })
    .await;
    daemon.shutdown().await.unwrap();
    let attempts: Vec<u64> = obs
        .events(prefix, "training_failed")
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts[..5], [1, 2, 1, 2, 1], "{attempts:?}");
}
