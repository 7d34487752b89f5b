//! Machine sound end to end: a log-mel model trained on healthy DCASE clips, a held-out clip
//! with an injected fault replayed over mosquitto in 100 ms PCM frames, an alert on the fault
//! segment and only there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const RATE: u32 = 16_000;

/// Mixes a 3 kHz whine into samples [from, to) at `db` relative to the clip's RMS.
fn add_whine(samples: &mut [f32], from: usize, to: usize, db: f32) {
    let rms = (samples.iter().map(|x| x * x).sum::<f32>() / samples.len() as f32).sqrt();
    let amplitude = rms * 10f32.powf(db / 20.0) * std::f32::consts::SQRT_2;
    for (i, x) in samples.iter_mut().enumerate().take(to).skip(from) {
        *x += amplitude * (std::f32::consts::TAU * 3000.0 * i as f32 / RATE as f32).sin();
    }
}

/// Streams `wav` to the broker on `port` as `mics/m1`, in 100 ms i16le frames, as fast as it
/// can (`ebgand replay`).
async fn replay(wav: &Path, port: u16) {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args(["replay", wav.to_str().unwrap(), "--topic", "mics/m1"])
        .args(["--format", "i16le", "--chunk", "1600", "--rate", "max"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read_wav(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap();
    r.samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in samples {
        w.write_sample((x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_wav_raises_an_alert_on_its_fault_segment_only() {
    assert!(
        root().join(".venv/trainer/bin/python").exists(),
        "trainer venv missing: run `make setup`"
    );
    let clips = shared_data().join("dcase2020/normal");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("machine/audio-1");
    let mut train = Command::new(env!("CARGO_BIN_EXE_ebgand"));
    train
        .args([
            "train",
            "--logmel",
            "--name",
            "machine",
            "--version",
            "audio-1",
            "--out",
        ])
        .arg(&model);
    for i in 0..10 {
        train.arg(clips.join(format!("normal_id_00_{i:08}.wav")));
    }
    let o = train
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["mode"], "ae",
        "log-mel audio trains the plain autoencoder unless --mode says otherwise"
    );

    // A held-out clip with a whine from 4 s to 7 s, as loud as the machine (0 dB). At -10 dB
    // the window energy rises about 1.8x but stays under this model's calibrated threshold.
    let mut samples = read_wav(&clips.join("normal_id_00_00000010.wav"));
    let (from, to) = (4 * RATE as usize, 7 * RATE as usize);
    add_whine(&mut samples, from, to, 0.0);
    let wav = dir.path().join("faulted.wav");
    write_wav(&wav, &samples);

    let broker = Mosquitto::start().await;
    let prefix = "audio";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let toml = format!(
        "[detect]\njudge = \"threshold\"\n[models.machine]\npath = \"{}\"\n[[streams]]\nname = \"mic\"\ntopic = \"mics/+\"\n\
         model = \"machine\"\nformat = \"i16le\"\nwindow = 5\nhop = 1\nraise_after = 5\nclear_after = 10\nlogmel = {{}}\n",
        model.display()
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    replay(&wav, broker.port).await;
    // Streaming frames start every 512 samples once 1024 are there; windows are 5 frames.
    let frames = (samples.len() - 1024) / 512 + 1;
    let windows = (frames - 5 + 1) as u64;
    eventually(Duration::from_secs(30), "every audio window scored", || {
        obs.count(&format!("{prefix}/energy/")) as u64 >= windows
    })
    .await;
    assert_eq!(
        daemon.metric("ebgand_messages_total"),
        samples.len().div_ceil(1600) as u64,
        "100 ms frames"
    );
    let alerts: Vec<serde_json::Value> = obs
        .on(&format!("{prefix}/alerts/"))
        .into_iter()
        .map(|a| a.json)
        .collect();
    eprintln!("alerts: {alerts:?}");
    let energy = obs.on(&format!("{prefix}/energy/"));
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for e in &energy {
        let w = e.json["seq"].as_u64().unwrap() as usize;
        let v = e.json["energy"].as_f64().unwrap();
        if w * 512 >= from && w * 512 + 3072 <= to {
            inside.push(v)
        } else if w * 512 + 3072 < from || w * 512 > to {
            outside.push(v)
        }
    }
    let stats = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().sum::<f64>() / v.len().max(1) as f64,
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    eprintln!(
        "threshold {}; energies inside the fault (min, mean, max) {:?}, outside {:?}",
        energy[0].json["threshold"],
        stats(&inside),
        stats(&outside)
    );
    assert_eq!(alerts.len(), 2, "one raise and one clear: {alerts:?}");
    // Window w covers samples [w * 512, w * 512 + 1024 + 4 * 512).
    let covers_fault = |w: u64| {
        let (a, b) = (w as usize * 512, w as usize * 512 + 1024 + 4 * 512);
        a < to && b > from
    };
    let raised = alerts[0]["seq"].as_u64().unwrap();
    assert_eq!(alerts[0]["state"], "raised");
    assert!(
        covers_fault(raised),
        "raised at window {raised}, outside the fault"
    );
    let cleared = alerts[1]["seq"].as_u64().unwrap();
    assert_eq!(alerts[1]["state"], "cleared");
    assert!(
        cleared as usize * 512 >= to,
        "cleared at window {cleared}, before the fault ended"
    );
    assert!(
        (cleared as usize * 512) < to + RATE as usize,
        "cleared within a second of the fault's end"
    );
    daemon.shutdown().await.unwrap();
}

/// An audio stream with no model learns one from itself: the learner's first version is a
/// log-mel model (its manifest records the stream's log-mel parameters, so the stream takes
/// it) and, as `train --logmel`, the plain autoencoder; its retrained version keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_stream_learns_a_log_mel_model_from_itself() {
    let python = root().join(".venv/trainer/bin/python");
    assert!(python.exists(), "trainer venv missing: run `make setup`");
    let broker = Mosquitto::start().await;
    let prefix = "audiolearn";
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let toml = "[detect]\njudge = \"probability\"\nlearn_windows = 32\nwarm_windows = 48\n\
         [models.machine]\n[[streams]]\nname = \"mic\"\ntopic = \"mics/+\"\nmodel = \"machine\"\n\
         format = \"i16le\"\nwindow = 5\nhop = 1\nlogmel = {}\n";
    let mut s = settings(broker.port, prefix, toml);
    s.learning.period.windows = 250;
    s.learning.steps = 100;
    s.learning.capture_every = 1;
    // Retrained on schedule once the first version serves (a tick while one warms is skipped).
    s.learning.retrain_every = Some(Duration::from_secs(1));
    s.registry.gate_min_windows = 16;
    // The gate's own bound has its tests (tests/lifecycle.rs).
    s.registry.max_false_alarm_rate = 0.25;
    s.train.python = python;
    s.train.worker = root().join("models/trainer");
    s.train.cache = Some(std::env::temp_dir().join("ebgand-test-trainer-cache"));
    let registry = s.registry.dir.clone();
    let _daemon = TestDaemon::start(s).await;
    // One healthy 10 s clip, replayed: 307 windows of 5 frames, more than the 250 learnt from.
    let clip = shared_data().join("dcase2020/normal/normal_id_00_00000000.wav");
    replay(&clip, broker.port).await;
    let events = || -> Vec<serde_json::Value> {
        obs.on(&format!("{prefix}/events"))
            .into_iter()
            .map(|s| s.json)
            .collect()
    };
    eventually(
        Duration::from_secs(90),
        "a first version learnt from the stream and activated",
        || events().iter().any(|e| e["event"] == "activated"),
    )
    .await;
    let activated = events()
        .into_iter()
        .find(|e| e["event"] == "activated")
        .unwrap();
    let version = activated["version"].as_str().unwrap();
    let audio_ae = |version: &str| {
        let dir = registry.join("machine").join(version);
        let manifest = ebgand::model::ModelVersion::open(&dir).unwrap().manifest;
        assert_eq!(manifest.input.kind, "logmel", "{version}");
        assert_eq!(
            manifest.features,
            Some(ebgand::pipeline::features::LogMelParams::default())
        );
        let text = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
        assert!(text.contains("mode = \"ae\""), "{text}");
    };
    audio_ae(version);
    // The stream is scored by it: the clip again (the healthy sound the model knows), under
    // the new version.
    replay(&clip, broker.port).await;
    let topic = format!("{prefix}/state/mic/m1");
    eventually(
        Duration::from_secs(30),
        "a state under the learnt version",
        || {
            obs.on(&topic)
                .iter()
                .any(|s| s.json["model"]["version"] == version)
        },
    )
    .await;
    // Retrained from the captured windows: a shadow warms on the clip once more, then serves.
    eventually(
        Duration::from_secs(60),
        "the retrained version shadows",
        || events().iter().any(|e| e["event"] == "shadow_started"),
    )
    .await;
    replay(&clip, broker.port).await;
    let activations = || {
        events()
            .into_iter()
            .filter(|e| e["event"] == "activated")
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(60),
        "the retrained version activated",
        || activations().len() >= 2,
    )
    .await;
    let retrained = activations()[1].clone();
    assert_eq!(retrained["reason"], "trained", "{retrained}");
    let second = retrained["version"].as_str().unwrap();
    assert_ne!(second, version);
    audio_ae(second);
}
