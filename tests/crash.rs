//! Crash safety of ingest: the daemon (the real binary) is killed with SIGKILL twice while four
//! streams are flowing, and started again each time. The journal and its checkpoint must
//! rebuild every window that was queued but not judged, and each stream's incomplete window
//! (messages of 48 samples, windows of 64: one is always open), with the same numbers and the
//! same samples; and no alert may be published twice.
//!
//! Checked against the truth computed here from the samples sent: every window scored (no
//! window missing or extra), with the energy ONNX Runtime gives for exactly those samples, the
//! calibrated probability an uninterrupted judge gives those energies (so each stream's
//! calibration survives the kills through the checkpoint), and the alerts equal, one for one,
//! to what that judge makes of them.
//!
//! `EBGAND_TEST_LOGS=1 cargo test --test crash -- --nocapture` shows the daemons' logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ebgand::demo::sim::Machine;
use ebgand::detect::{Calibration, Hysteresis, Judge, Judging, ModelRef, StreamInfo, Transition};
use ebgand::pipeline::{Mark, RawWindow};

const STREAMS: usize = 4;
const SAMPLES_PER_MESSAGE: usize = 48;
const WINDOW: usize = 64;
/// Messages per stream: healthy (150 windows: 100 learnt, 50 judged), fault, healthy.
const PHASES: [(usize, bool); 3] = [(200, false), (40, true), (60, false)];
/// Windows each stream learns from (`[detect] learn_windows`).
const LEARN: u32 = 100;
/// The daemons' settings beyond the fixture config's. Input levels are not followed
/// (`level_windows = 0`): the drift taken off a window depends on how many windows before it
/// were judged when it was scored, which a kill changes, and this test pins every energy to
/// its samples exactly. That the drift rides in the checkpoint and a resumed stream is scored
/// with it is tested in `ingest::streams` and `detect`.
const ENV: [(&str, &str); 2] = [
    ("EBGAND__DETECT__LEARN_WINDOWS", "100"),
    ("EBGAND__DETECT__LEVEL_WINDOWS", "0"),
];

/// Messages in sending order: (stream index, JSON payload).
type Messages = Vec<(usize, Vec<u8>)>;

/// Four streams of healthy, faulty, healthy samples: the messages, and each stream's samples.
fn sensor_data() -> (Messages, Vec<Vec<f32>>) {
    let mut machines: Vec<Machine> = (0..STREAMS).map(|i| Machine::new(40 + i as u64)).collect();
    let mut sent: Vec<Vec<f32>> = vec![Vec::new(); STREAMS];
    let mut messages = Vec::new();
    for (count, fault) in PHASES {
        for _ in 0..count {
            for (i, m) in machines.iter_mut().enumerate() {
                let samples = m.samples(SAMPLES_PER_MESSAGE, fault);
                sent[i].extend_from_slice(&samples);
                messages.push((i, serde_json::to_vec(&samples).unwrap()));
            }
        }
    }
    (messages, sent)
}

const MQTT: &str =
    "publish_energy = true\nenergy_qos = 1\nreconnect_min_ms = 50\nreconnect_max_ms = 500";

/// The real binary on `state` with `env`, and the port of its HTTP listener.
fn spawn(port: u16, state: &std::path::Path, env: &[(&str, &str)]) -> (DaemonProcess, u16) {
    let http = ebgand::demo::free_port().unwrap();
    let listen = format!("127.0.0.1:{http}");
    let mut env = env.to_vec();
    env.push(("EBGAND__HTTP__LISTEN", &listen));
    (spawn_daemon_with(port, "cr", state, MQTT, &env), http)
}

/// Waits until the daemon on `http` is ready (subscribed: what is published from now on is
/// its) and the observer has seen `runs` "online" statuses.
async fn wait_online(obs: &Observer, runs: usize, http: u16) {
    eventually(Duration::from_secs(20), "online and subscribed", || {
        try_http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            && obs
                .on("cr/status")
                .iter()
                .filter(|m| m.json["status"] == "online")
                .count()
                >= runs
    })
    .await;
}

/// Waits until every window of every stream has been scored at least once.
async fn wait_all_scored(obs: &Observer, windows: u64) {
    eventually(Duration::from_secs(60), "every window scored", || {
        let got = seqs_by_stream(&obs.on("cr/energy/"));
        (0..STREAMS).all(|i| {
            got.get(&format!("vibration/m{i}"))
                .is_some_and(|seqs| seqs.len() as u64 >= windows)
        })
    })
    .await;
}

/// Checks what `obs` saw against the samples sent (see the module docs); returns the number of
/// energy messages (windows judged, repeats included).
fn check_against_truth(obs: &Observer, sent: &[Vec<f32>], port: u16) -> usize {
    let windows = sent[0].len() / WINDOW;
    let settings = settings(port, "cr", VIBRATION);
    let mut scorer = ebgand::app::load_model(
        "vibration",
        &root().join("models/vibration/fixture-1"),
        &settings.streams,
        &settings.runtime,
    )
    .unwrap();
    let energy = obs.on("cr/energy/");
    let threshold = energy[0].json["threshold"].as_f64().unwrap() as f32;
    let alerts = obs.on("cr/alerts/");
    let mut raised = 0;
    for (i, samples) in sent.iter().enumerate() {
        let stream = format!("vibration/m{i}");
        let truth = scorer.score(&samples[..windows * WINDOW], windows).unwrap();
        // Every window, with its own samples (energies equal to the offline ones), and nothing
        // else; a window judged again after a crash must agree with its first judgement.
        let mut seen: BTreeMap<u64, f32> = BTreeMap::new();
        for m in energy
            .iter()
            .filter(|m| m.json["stream"] == stream.as_str())
        {
            let seq = m.json["seq"].as_u64().unwrap();
            let e = m.json["energy"].as_f64().unwrap() as f32;
            assert_eq!(m.json["start"], seq * WINDOW as u64, "{stream} #{seq}");
            assert_eq!(m.json["end"], seq * WINDOW as u64 + 63, "{stream} #{seq}");
            let want = truth[seq as usize];
            assert!(
                (e - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{stream} window {seq}: energy {e}, samples sent give {want}"
            );
            if let Some(before) = seen.insert(seq, e) {
                assert_eq!(before, e, "{stream} window {seq} judged differently twice");
            }
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (0..windows as u64).collect::<Vec<_>>(),
            "{stream}: windows missing or extra"
        );
        // Probabilities and alerts: what one uninterrupted judge makes of those energies.
        let mut judge = Judge::new(Calibration {
            learn_windows: LEARN,
            level_windows: 0,
            ..Calibration::default()
        });
        let info = StreamInfo::new(
            stream.clone(),
            Judging::Probability(0.9999),
            Hysteresis {
                raise_after: 3, // the defaults
                clear_after: 10,
                accept: ebgand::detect::Accept::Never,
            },
            1,
        );
        let model = ModelRef {
            name: "vibration".into(),
            version: "fixture-1".into(),
        };
        let mut want = Vec::new();
        for (seq, &e) in truth.iter().enumerate() {
            let w = RawWindow {
                seq: seq as u64,
                start: Mark::Index(0),
                end: Mark::Index(0),
                data: vec![],
            };
            let v = judge.judge(&info, &model, threshold, &w, e.into());
            for m in energy
                .iter()
                .filter(|m| m.json["stream"] == stream.as_str() && m.json["seq"] == seq as u64)
            {
                assert_eq!(m.json["learning"], v.learning, "{stream} #{seq}");
                match v.probability {
                    None => assert!(m.json["probability"].is_null(), "{stream} #{seq}"),
                    Some(p) => {
                        let got = m.json["probability"].as_f64().unwrap();
                        assert!(
                            (got - p).abs() <= 1e-3 * (1.0 - p).max(1e-6) + 1e-9,
                            "{stream} #{seq}: probability {got}, an uninterrupted judge gives {p}"
                        );
                    }
                }
            }
            if let Some(t) = v.transition {
                want.push((seq as u64, t.as_str()));
            }
        }
        // One stored alert may be delivered twice (at least once: its PUBACK lost in the
        // kill), always with the same alert_id; a second alert for a window would have another.
        let mut ids = std::collections::HashSet::new();
        let got: Vec<(u64, &str)> = alerts
            .iter()
            .filter(|a| a.json["stream"] == stream.as_str())
            .filter(|a| ids.insert(a.json["alert_id"].as_u64().unwrap()))
            .map(|a| {
                (
                    a.json["seq"].as_u64().unwrap(),
                    a.json["state"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{stream}: alerts published");
        raised += want
            .iter()
            .filter(|(_, s)| *s == Transition::Raised.as_str())
            .count();
    }
    assert!(
        raised >= STREAMS,
        "the fault raised no alert on some stream ({raised} raised)"
    );
    energy.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_window_and_alerts_once() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "cr/#").await;
    let state = tempfile::tempdir().unwrap();
    let (messages, sent) = sensor_data();
    let windows = (sent[0].len() / WINDOW) as u64;

    let (mut daemon, http) = spawn(broker.port, state.path(), &ENV);
    wait_online(&obs, 1, http).await;
    // The sensors publish at their own pace, whether the daemon is up or not (the broker
    // queues for its persistent session); it is killed twice while they do.
    let port = broker.port;
    let sensors = tokio::spawn(async move {
        let mut tx = Sender::start(port).await;
        for (i, payload) in messages {
            tx.publish(&format!("sensors/m{i}/vibration"), payload)
                .await;
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
        tx.flushed().await;
    });
    let total = windows * STREAMS as u64;
    for fraction in [0.3, 0.65] {
        let at = (total as f64 * fraction) as usize;
        eventually(Duration::from_secs(60), "windows being scored", || {
            obs.count("cr/energy/") >= at
        })
        .await;
        kill(&daemon, "-KILL");
        wait_exit(&mut daemon).await;
        daemon = spawn(broker.port, state.path(), &ENV).0;
    }
    sensors.await.unwrap();
    wait_all_scored(&obs, windows).await;
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());
    check_against_truth(&obs, &sent, broker.port);
}

/// With no checkpoint since the start (a long interval), a SIGKILL after the alerts makes the
/// next run judge every window again from the journal: each window is scored twice, and each
/// alert still published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_judged_again_after_a_crash_do_not_alert_twice() {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "cr/#").await;
    let state = tempfile::tempdir().unwrap();
    let (messages, sent) = sensor_data();
    let windows = (sent[0].len() / WINDOW) as u64;
    let env = [ENV[0], ENV[1], ("EBGAND__JOURNAL__CHECKPOINT_MS", "60000")];

    let (mut daemon, http) = spawn(broker.port, state.path(), &env);
    wait_online(&obs, 1, http).await;
    let mut tx = Sender::start(broker.port).await;
    for (i, payload) in messages {
        tx.publish(&format!("sensors/m{i}/vibration"), payload)
            .await;
    }
    tx.flushed().await;
    wait_all_scored(&obs, windows).await;
    kill(&daemon, "-KILL");
    wait_exit(&mut daemon).await;

    let (mut daemon, http) = spawn(broker.port, state.path(), &env);
    wait_online(&obs, 2, http).await;
    let total = (windows * STREAMS as u64) as usize;
    eventually(Duration::from_secs(60), "every window judged again", || {
        obs.count("cr/energy/") >= 2 * total
    })
    .await;
    kill(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon).await.success());
    assert_eq!(check_against_truth(&obs, &sent, broker.port), 2 * total);
}
