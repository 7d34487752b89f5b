//! Judgment by calibrated probability, end to end: a real mosquitto, the daemon in-process with
//! the default `[detect]` (judge = "probability"), real ONNX Runtime and the fixtures.
//!
//! Vibration fixture, three sensors alike at first (a 1 Hz-per-16-samples sine around 1.0 with
//! noise), then:
//! - **drift**: the level rises by 0.4 over the whole run (a slow drift): followed, never
//!   alerted;
//! - **ramp**: from window 300 the level rises by 0.4 every 100 windows (a slow-onset fault,
//!   ten times the drift's rate): raised once, never cleared;
//! - **step**: from window 300 the level is 0.5 higher and stays there: raised once, then kept
//!   raised (`accept_after = 0`, the default) or accepted as the new normal and cleared once
//!   (`accept_after = 200` in the stream's `[[streams]]` table), the clear saying so
//!   (`accepted_after`); sent as timed JSON objects by a sensor at 64 samples a second and one
//!   at 128, accepted after the same seconds of their own time (`accept_after_s`).
//!
//! Multichannel fixture (8 channels, a sine each around its own level), a pump's sensors:
//! - **warming**: channel 0, a temperature, rises 0.001 a window (1.0, about five healthy standard
//!   deviations, over the run): its level is followed (`level_windows = 25`), never alerted;
//!   with `level_windows = 0` the same drift is raised (so the adaptation, not luck, keeps it
//!   quiet);
//! - **wearing**: from window 300 a tone at a third of the sample rate grows on channel 1, a
//!   vibration, by 0.001 a window (the same rate): raised once, with or without adaptation.
//!
//! - **knock**: from window 300 a tone of fixed amplitude on channel 5, too small to lift the
//!   whole energy over the alert probability: raised by the default, which calibrates each
//!   channel's part of the energy too; with `per_channel = false`, raised only by the restless
//!   rule, once (and kept raised with `restless_hold`), never without it.
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

const WINDOWS: usize = 1_000;
const LEARN: u64 = 64;
/// The default `[detect] alert_probability`.
const ALERT: f64 = 0.9999;

/// The samples of one vibration sensor: `offset(window)` added to the shared healthy signal.
fn signal(seed: u64, offset: impl Fn(usize) -> f32) -> Vec<f32> {
    vibration_signal(seed, WINDOWS, offset)
}

/// The rows of one pump (8 channels, interleaved), healthy as the multichannel fixture learnt
/// it (channel c: level 1 + c, a sine of period 8 + c samples), plus `fault(window, t)` on
/// channel `channel`.
fn pump(seed: u64, channel: usize, fault: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut s = seed;
    (0..WINDOWS * 16)
        .flat_map(|t| (0..8).map(move |c| (t, c)))
        .map(|(t, c)| {
            let phase = 2.0 * std::f32::consts::PI * t as f32 / (8 + c) as f32 + c as f32;
            let x = (1 + c) as f32 + 0.3 * phase.sin() + noise(&mut s);
            if c == channel {
                x + fault(t / 16, t)
            } else {
                x
            }
        })
        .collect()
}

/// The rate of the pump's drift and of its fault, per window.
const RATE: f32 = 0.001;

fn warming(w: usize, _: usize) -> f32 {
    RATE * w as f32
}

fn wearing(w: usize, t: usize) -> f32 {
    let tone = (2.0 * std::f32::consts::PI * t as f32 / 3.0).sin();
    RATE * w.saturating_sub(300) as f32 * tone
}

/// What runs through the daemon: a fixture model and its sensors' samples.
struct Rig {
    /// Folder under `models/` and stream name.
    model: &'static str,
    window: usize,
    channels: usize,
    /// Per sensor: its name (`sensors/<name>/<model>`) and samples, interleaved by channel.
    sensors: Vec<(&'static str, Vec<f32>)>,
    /// Keys added to the stream's `[[streams]]` table.
    stream: &'static str,
}

impl Rig {
    fn vibration() -> Self {
        Self {
            model: "vibration",
            window: 64,
            channels: 1,
            sensors: vec![
                ("drift", signal(1, drift)),
                ("ramp", signal(2, ramp)),
                ("step", signal(3, step)),
            ],
            stream: "",
        }
    }

    fn pump() -> Self {
        Self {
            model: "multichannel",
            window: 16,
            channels: 8,
            sensors: vec![
                ("warming", pump(4, 0, warming)),
                ("wearing", pump(5, 1, wearing)),
            ],
            stream: "",
        }
    }

    /// The same with `keys` in its `[[streams]]` table.
    fn with_stream(self, keys: &'static str) -> Self {
        Self {
            stream: keys,
            ..self
        }
    }
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

/// Runs the rig's sensors through a daemon with `detect` added to the fixture config; returns
/// each sensor's alert transitions `(seq, state)` and checks the energy telemetry on the way.
async fn run(prefix: &str, rig: Rig, detect: &str) -> Vec<(String, Vec<(u64, String)>)> {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let Rig {
        model,
        window,
        channels,
        sensors,
        stream,
    } = rig;
    let toml = format!(
        "[detect]\nlearn_windows = {LEARN}\n{detect}\n[models.{model}]\n\
         path = \"models/{model}/fixture-1\"\n[[streams]]\nname = \"{model}\"\n\
         topic = \"sensors/+/{model}\"\nmodel = \"{model}\"\nformat = \"array\"\n\
         window = {window}\nchannels = {channels}\n{stream}\n"
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    // Two messages a window.
    let chunk = window / 2 * channels;
    for i in 0..WINDOWS * 2 {
        for (name, samples) in &sensors {
            tx.publish(
                &format!("sensors/{name}/{model}"),
                serde_json::to_vec(&samples[i * chunk..(i + 1) * chunk]).unwrap(),
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
        let accepting = detect.contains("accept_after") || stream.contains("accept_after");
        let relearns = m.json["stream"] != "vibration/drift" && accepting;
        assert!(
            learning == (seq < LEARN) || relearns && seq >= 300,
            "{}",
            m.json
        );
        assert_eq!(m.json["alert_probability"], ALERT);
        if learning {
            assert!(m.json["probability"].is_null() && m.json["anomalous"] == false);
        } else {
            let p = m.json["probability"].as_f64().unwrap();
            assert_eq!(m.json["anomalous"], p >= ALERT, "{}", m.json);
        }
    }
    let alerts = obs.on(&format!("{prefix}/alerts/"));
    for a in &alerts {
        schema::assert_valid("alert.json", &a.json);
        // Alerts carry the probability beside the energy.
        assert!(a.json["probability"].as_f64().unwrap() >= 0.0, "{}", a.json);
        assert!(a.json["energy"].as_f64().is_some());
        // A restless raise: 90 of the last 100 judged windows at or over 0.99 (the defaults).
        if let Some(r) = a.json.get("restless") {
            assert_eq!(a.json["state"], "raised");
            assert_eq!(
                (r["probability"].as_f64(), r["windows"].as_u64()),
                (Some(0.99), Some(100))
            );
            assert!(r["restless"].as_u64().unwrap() >= 90, "{}", a.json);
        }
    }
    // The per-stream gauge holds the last window's probability.
    let text = daemon.metrics.encode();
    for (name, _) in &sensors {
        let stream = format!("{model}/{name}");
        let last = energy
            .iter()
            .filter(|m| m.json["stream"] == stream.as_str())
            .max_by_key(|m| m.json["seq"].as_u64().unwrap())
            .unwrap();
        let Some(want) = last.json["probability"].as_f64() else {
            continue; // learning again (a new normal accepted)
        };
        let got = ebgand::telemetry::metrics::sum_metric_where(
            &text,
            "ebgand_stream_probability",
            &format!("stream=\"{stream}\""),
        );
        assert!((got - want).abs() < 1e-6, "{stream}: {got} against {want}");
    }
    daemon.shutdown().await.unwrap();
    sensors
        .iter()
        .map(|(name, _)| {
            let stream = format!("{model}/{name}");
            let t = alerts
                .iter()
                .filter(|a| a.json["stream"] == stream.as_str())
                .map(|a| {
                    let state = a.json["state"].as_str().unwrap();
                    // An alert the restless rule raised says so, and a clear that accepted a
                    // new normal.
                    let by = if a.json["restless"].is_object() {
                        " (restless)".to_owned()
                    } else if let Some(n) = a.json.get("accepted_after") {
                        format!(" (accepted after {n})")
                    } else {
                        String::new()
                    };
                    (a.json["seq"].as_u64().unwrap(), format!("{state}{by}"))
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
    let got = run("jd", Rig::vibration(), "").await;
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
    // Set for the stream (`[[streams]] accept_after`; `[detect]` keeps its default, 0).
    let rig = Rig::vibration().with_stream("accept_after = 200");
    let got = run("ja", rig, "").await;
    assert_eq!(of(&got, "drift"), []);
    // The ramp keeps climbing: accepted, it is raised again once the new level is left behind.
    assert_eq!(of(&got, "ramp")[0].1, "raised");
    let step = of(&got, "step");
    assert_eq!(step.len(), 2, "raised once, cleared once: {step:?}");
    assert_eq!(step[0].1, "raised");
    assert!((300..310).contains(&step[0].0), "{step:?}");
    // 200 windows raised, 64 learning the new level, then clear_after (the default, 10)
    // normal windows.
    // The clear says the level was accepted, not that the machine came back.
    assert_eq!(step[1].1, "cleared (accepted after 200)");
    let cleared = step[0].0 + 200 + LEARN + 10;
    assert!((cleared - 5..cleared + 5).contains(&step[1].0), "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warming_channel_is_followed_and_a_wearing_one_at_the_same_rate_raised() {
    // A level over the last 25 windows follows this drift with a lag of 12 windows, 0.012 (a
    // sixteenth of the channel's healthy spread); the default 300 would lag it by 0.15, which
    // is a fault. Each channel's part of the energy is calibrated on its own (per_channel),
    // which notices a lag of a quarter of the spread on one channel of eight. Windows scored
    // in one batch share the drift of when it was scored, which adds up to a batch of lag:
    // batches of at most 8 keep that small even when the test's burst queues windows up.
    let got = run(
        "jp",
        Rig::pump(),
        "level_windows = 25\n[scoring]\nmax_batch = 8",
    )
    .await;
    assert_eq!(
        of(&got, "warming"),
        [],
        "the temperature's drift is followed"
    );
    let wearing = of(&got, "wearing");
    assert_eq!(
        wearing.len(),
        1,
        "the growing tone raises once: {wearing:?}"
    );
    assert_eq!(wearing[0].1, "raised");
    assert!((300..700).contains(&wearing[0].0), "{wearing:?}");
    // Without following the level, the same drift is raised: the adaptation keeps it quiet.
    let got = run("jq", Rig::pump(), "level_windows = 0").await;
    let warming = of(&got, "warming");
    assert_eq!(
        warming.len(),
        1,
        "unfollowed, the drift raises: {warming:?}"
    );
    // By its energy or its restless shape (each channel's tail read from 40 of the 64
    // learnt windows is wide, so the restless raise may come first).
    assert!(warming[0].1.starts_with("raised"), "{warming:?}");
    assert_eq!(of(&got, "wearing").len(), 1);
}

/// A knock from window 300: a tone of `amplitude` at a third of the sample rate.
fn knocking(amplitude: f32) -> impl Fn(usize, usize) -> f32 {
    move |w, t| {
        let tone = (2.0 * std::f32::consts::PI * t as f32 / 3.0).sin();
        if w >= 300 { amplitude * tone } else { 0.0 }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_on_one_channel_of_eight_is_raised_in_its_own_part() {
    // From window 300 a tone of amplitude 0.2 on channel 5: raised by the default, which
    // calibrates each channel's part of the energy too; the whole energy alone (per_channel =
    // false) never reaches the alert probability (in this fixture it does from about 0.3, and
    // the parts from about 0.15).
    let rig = || Rig {
        model: "multichannel",
        window: 16,
        channels: 8,
        sensors: vec![("knock", pump(6, 5, knocking(0.2)))],
        stream: "",
    };
    let got = run("jk", rig(), "").await;
    let knock = of(&got, "knock");
    assert_eq!(knock.len(), 1, "raised once and kept: {knock:?}");
    assert_eq!(knock[0].1, "raised");
    assert!((300..310).contains(&knock[0].0), "{knock:?}");
    // The whole energy alone sits between 0.99 and the alert probability from window 300 on.
    // The restless rule raises it once 90 of the last 100 windows are in that tail; the
    // ordinary rule clears it ten windows later, and it is not raised again while the knock
    // goes on (600 windows): the spell is spent until the stream calms.
    let got = run("jl", rig(), "per_channel = false").await;
    assert_eq!(
        of(&got, "knock"),
        [(390, "raised (restless)".into()), (400, "cleared".into())]
    );
    // With restless_hold the alert stays up while the stream is restless.
    let got = run("jh", rig(), "per_channel = false\nrestless_hold = true").await;
    assert_eq!(of(&got, "knock"), [(390, "raised (restless)".into())]);
    // Without the rule the sum alone never notices it.
    let got = run("jm", rig(), "per_channel = false\nrestless_probability = 0").await;
    assert_eq!(of(&got, "knock"), [], "the sum alone does not notice it");
}

/// The step of the vibration rig from window 100, sent as JSON objects one sample each with
/// its time (`format = "object"`, `timestamp_field`), by two sensors: one at 64 samples a
/// second, one at 128. `accept_after_s` counts the stream's own time, so both held steps are
/// accepted about 20 s after their raise: 80 windows (a hop of 16 samples) on the first, 160 on
/// the second, where a count of windows would take half the time on the faster one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_held_past_accept_after_s_is_accepted_after_the_same_time_at_either_rate() {
    const HOP: u64 = 16;
    let prefix = "js";
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let toml = format!(
        "[detect]\nlearn_windows = {LEARN}\n\
         [models.vibration]\npath = \"models/vibration/fixture-1\"\n\
         [[streams]]\nname = \"timed\"\ntopic = \"timed/+\"\nmodel = \"vibration\"\n\
         format = \"object\"\nfields = [\"v\"]\ntimestamp_field = \"t\"\n\
         window = 64\nhop = {HOP}\naccept_after_s = 19.9\n"
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    let samples = vibration_signal(7, 165, |w| if w >= 100 { 0.5 } else { 0.0 });
    let sensors = [("slow", 64.0), ("fast", 128.0)];
    for (i, v) in samples.iter().enumerate() {
        for (name, rate) in sensors {
            let t = 1.7e9 + i as f64 / rate;
            let payload = serde_json::json!({"t": t, "v": v}).to_string();
            tx.publish(&format!("timed/{name}"), payload).await;
        }
    }
    tx.flushed().await;
    let windows = (samples.len() - 64) / HOP as usize + 1;
    eventually(Duration::from_secs(60), "every window judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 2 * windows
    })
    .await;
    let alerts = obs.on(&format!("{prefix}/alerts/"));
    daemon.shutdown().await.unwrap();
    for (name, rate) in sensors {
        let got: Vec<_> = alerts
            .iter()
            .filter(|a| a.json["stream"] == format!("timed/{name}").as_str())
            .inspect(|a| schema::assert_valid("alert.json", &a.json))
            .map(|a| {
                let seq = a.json["seq"].as_u64().unwrap();
                (
                    seq,
                    a.json["state"].clone(),
                    a.json.get("accepted_after").cloned(),
                )
            })
            .collect();
        assert_eq!(got.len(), 2, "{name}: raised once, cleared once: {got:?}");
        // Windows end at sample 63 + 16 n: the step's first sample, 6,400, ends window 396;
        // raised once enough of a window is stepped and raise_after (3) windows in a row.
        let raised = got[0].0;
        assert!((396..410).contains(&raised), "{name}: {got:?}");
        assert_eq!((&got[0].1, &got[0].2), (&"raised".into(), &None), "{name}");
        // Accepted ceil(19.9 s / hop) windows after the raise (the raise's and the acceptance's
        // windows both counted), then 64 learning the new level and clear_after (10) normal.
        let after = (19.9 * rate / HOP as f64).ceil() as u64;
        assert_eq!(got[1].1, "cleared", "{name}");
        assert_eq!(got[1].2, Some((after + 1).into()), "{name}: {got:?}");
        let cleared = raised + after + LEARN + 10;
        assert!(
            (cleared - 2..cleared + 3).contains(&got[1].0),
            "{name}: {got:?}"
        );
    }
}

/// Two configured streams of the same model and the same step (the rig's, from window 300):
/// one learns for `[detect]`'s 64 windows, the other for its own `learn_windows` of 400, so
/// the first is judged from window 64 and raises the step, while the second learns it as
/// its normal and never raises: a stream's own window counts reach the daemon's judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_learns_for_its_own_learn_windows() {
    const PATIENT: u64 = 400;
    let prefix = "jw";
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let stream = |name: &str, own: &str| {
        format!(
            "[[streams]]\nname = \"{name}\"\ntopic = \"{name}/+\"\nmodel = \"vibration\"\n\
             format = \"array\"\nwindow = 64\n{own}\n"
        )
    };
    let toml = format!(
        "[detect]\nlearn_windows = {LEARN}\n\
         [models.vibration]\npath = \"models/vibration/fixture-1\"\n{}{}",
        stream("quick", ""),
        stream("patient", &format!("learn_windows = {PATIENT}")),
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;
    let samples = signal(3, step);
    // Two messages a window.
    for chunk in samples.chunks(32) {
        for name in ["quick", "patient"] {
            let payload = serde_json::to_vec(chunk).unwrap();
            tx.publish(&format!("{name}/pump"), payload).await;
        }
    }
    tx.flushed().await;
    eventually(Duration::from_secs(60), "every window judged", || {
        obs.count(&format!("{prefix}/energy/")) >= 2 * WINDOWS
    })
    .await;
    let energy = obs.on(&format!("{prefix}/energy/"));
    let alerts = obs.on(&format!("{prefix}/alerts/"));
    daemon.shutdown().await.unwrap();
    for (name, learns) in [("quick", LEARN), ("patient", PATIENT)] {
        let id = format!("{name}/pump");
        let learning: Vec<u64> = energy
            .iter()
            .filter(|m| m.json["stream"] == id.as_str() && m.json["learning"] == true)
            .map(|m| m.json["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(learning, (0..learns).collect::<Vec<_>>(), "{name}");
    }
    let raised: Vec<_> = alerts
        .iter()
        .map(|a| (a.json["stream"].clone(), a.json["state"].clone()))
        .collect();
    assert_eq!(raised, [("quick/pump".into(), "raised".into())]);
    let seq = alerts[0].json["seq"].as_u64().unwrap();
    assert!((300..310).contains(&seq), "{}", alerts[0].json);
}
