//! Judgment by calibrated probability, end to end: a real mosquitto, the daemon in-process with
//! the default `[detect] judge = "probability"`, real ONNX Runtime and the vibration fixture.
//!
//! Three sensors start alike (a 1 Hz-per-16-samples sine around 1.0 with noise) and then:
//! - **drift**: the level rises by 0.4 over the whole run (a slow thermal drift): followed, never
//!   alerted;
//! - **ramp**: from window 300 the level rises by 0.4 every 100 windows (a slow-onset fault,
//!   ten times the drift's rate): raised once, never cleared;
//! - **step**: from window 300 the level is 0.5 higher and stays there: raised once, then kept
//!   raised (`accept_after = 0`, the default) or accepted as the new normal and cleared once
//!   (`accept_after = 200`).
//!
//! Every stream's first 64 windows are learning: published with `"learning": true`, never anomalous.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;

const WINDOW: usize = 64;
const WINDOWS: usize = 1_000;
const LEARN: u64 = 64;
/// Samples per message (two messages a window).
const CHUNK: usize = 32;

/// The samples of one sensor: `offset(window)` added to the shared healthy signal.
fn signal(seed: u64, offset: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut s = seed;
    (0..WINDOWS * WINDOW)
        .map(|t| {
            // xorshift noise, uniform in +-0.1
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s % 2_001) as f32 / 10_000.0 - 0.1;
            let phase = 2.0 * std::f32::consts::PI * (t % 16) as f32 / 16.0;
            1.0 + 0.5 * phase.sin() + noise + offset(t / WINDOW)
        })
        .collect()
}

fn drift(w: usize) -> f32 {
    0.4 * w as f32 / WINDOWS as f32
}

fn ramp(w: usize) -> f32 {
    0.4 * w.saturating_sub(300) as f32 / 100.0
}

fn step(w: usize) -> f32 {
    if w >= 300 { 0.5 } else { 0.0 }
}

/// Runs the three sensors through a daemon with `detect` added to the fixture config; returns
/// each sensor's alert transitions `(seq, state)` and checks the energy telemetry on the way.
async fn run(prefix: &str, detect: &str) -> Vec<(String, Vec<(u64, String)>)> {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let toml = format!(
        "[detect]\nlearn_windows = {LEARN}\n{detect}\n[models.vibration]\n\
         path = \"models/vibration/fixture-1\"\n[[streams]]\nname = \"vibration\"\n\
         topic = \"sensors/+/vibration\"\nmodel = \"vibration\"\nformat = \"array\"\n\
         window = {WINDOW}\n"
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let sensors = [
        ("drift", signal(1, drift)),
        ("ramp", signal(2, ramp)),
        ("step", signal(3, step)),
    ];
    let mut tx = Sender::start(broker.port).await;
    for i in 0..WINDOWS * WINDOW / CHUNK {
        for (name, samples) in &sensors {
            let chunk = &samples[i * CHUNK..(i + 1) * CHUNK];
            tx.publish(
                &format!("sensors/{name}/vibration"),
                serde_json::to_vec(chunk).unwrap(),
            )
            .await;
        }
    }
    tx.flushed().await;
    let total = WINDOWS * sensors.len();
    eventually(Duration::from_secs(60), "every window judged", || {
        obs.count(&format!("{prefix}/energy/")) >= total
    })
    .await;
    let energy = obs.on(&format!("{prefix}/energy/"));
    assert_eq!(energy.len(), total, "each window judged once");
    for m in &energy {
        let seq = m.json["seq"].as_u64().unwrap();
        let learning = m.json["learning"].as_bool().unwrap();
        // Learning: a stream's first windows, and a faulty stream's new level once accepted.
        let relearns = m.json["stream"] != "vibration/drift" && detect.contains("accept_after");
        assert!(
            learning == (seq < LEARN) || relearns && seq >= 300,
            "{}",
            m.json
        );
        assert_eq!(m.json["alert_probability"], 0.999);
        if learning {
            assert!(m.json["probability"].is_null() && m.json["anomalous"] == false);
        } else {
            let p = m.json["probability"].as_f64().unwrap();
            assert_eq!(m.json["anomalous"], p >= 0.999, "{}", m.json);
        }
    }
    let alerts = obs.on(&format!("{prefix}/alerts/"));
    for a in &alerts {
        // Alerts carry the probability beside the energy.
        assert!(a.json["probability"].as_f64().unwrap() >= 0.0, "{}", a.json);
        assert!(a.json["energy"].as_f64().is_some());
    }
    daemon.shutdown().await.unwrap();
    sensors
        .iter()
        .map(|(name, _)| {
            let stream = format!("vibration/{name}");
            let t = alerts
                .iter()
                .filter(|a| a.json["stream"] == stream.as_str())
                .map(|a| {
                    (
                        a.json["seq"].as_u64().unwrap(),
                        a.json["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (name.to_string(), t)
        })
        .collect()
}

fn of<'a>(got: &'a [(String, Vec<(u64, String)>)], name: &str) -> &'a [(u64, String)] {
    &got.iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_followed_a_slow_onset_fault_is_raised_and_a_step_kept_raised() {
    let got = run("jd", "").await;
    assert_eq!(of(&got, "drift"), [], "the slow drift is adapted to");
    let ramp = of(&got, "ramp");
    assert_eq!(ramp.len(), 1, "the slow-onset fault raises once: {ramp:?}");
    assert_eq!(ramp[0].1, "raised");
    assert!((300..500).contains(&ramp[0].0), "{ramp:?}");
    let step = of(&got, "step");
    assert_eq!(
        step.len(),
        1,
        "the step raises once and stays raised: {step:?}"
    );
    assert_eq!(step[0].1, "raised");
    assert!((300..310).contains(&step[0].0), "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_held_past_accept_after_becomes_the_new_normal() {
    let got = run("ja", "accept_after = 200").await;
    assert_eq!(of(&got, "drift"), []);
    // The ramp keeps climbing: accepted, it is raised again once the new level is left behind.
    assert_eq!(of(&got, "ramp")[0].1, "raised");
    let step = of(&got, "step");
    assert_eq!(step.len(), 2, "raised once, cleared once: {step:?}");
    assert_eq!(step[0].1, "raised");
    assert!((300..310).contains(&step[0].0), "{step:?}");
    // 200 windows raised, 64 learning the new level, then clear_after (50) normal windows.
    assert_eq!(step[1].1, "cleared");
    assert!(
        (step[0].0 + 200 + LEARN + 50 - 5..step[0].0 + 200 + LEARN + 50 + 5).contains(&step[1].0),
        "{step:?}"
    );
}
