//! `ebgand train` end to end: the Python worker (ONNX Runtime 1.19 training API) trains, the
//! daemon's ONNX Runtime 1.31 serves, and the two agree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use ebgand::demo::sim::Machine;
use ebgand::model::{ModelVersion, Scorer};

fn trainer_python() -> PathBuf {
    let p = root().join(".venv/trainer/bin/python");
    assert!(
        p.exists(),
        "trainer venv missing at {}: run `make setup`",
        p.display()
    );
    p
}

fn ebgand(args: &[&str]) -> Output {
    trainer_python();
    common::ebgand(args, &[])
}

fn healthy_npy(dir: &Path, seconds: usize, seed: u64) -> PathBuf {
    let path = dir.join("healthy.npy");
    let samples = Machine::new(seed).samples(seconds * 1000, false);
    ndarray_npy::write_npy(&path, &ndarray::Array1::from(samples)).unwrap();
    path
}

fn train(dir: &Path, data: &Path, mode: &str) -> PathBuf {
    let out = dir.join(format!("vibration/{mode}"));
    let o = ebgand(&[
        "train",
        data.to_str().unwrap(),
        "--name",
        "vibration",
        "--version",
        mode,
        "--window",
        "64",
        "--steps",
        "400",
        "--mode",
        mode,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["mode"], mode);
    assert!(summary["threshold"].as_f64().unwrap() > 0.0);
    out
}

/// ROC AUC by ranks (Mann-Whitney U): P(score of a positive > score of a negative).
fn auc(negatives: &[f32], positives: &[f32]) -> f64 {
    let mut wins = 0.0;
    for p in positives {
        for n in negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (positives.len() * negatives.len()) as f64
}

fn windows(samples: &[f32]) -> Vec<Vec<f32>> {
    samples.chunks_exact(64).map(<[f32]>::to_vec).collect()
}

fn score(scorer: &mut Scorer, windows: &[Vec<f32>]) -> Vec<f32> {
    let flat: Vec<f32> = windows.concat();
    scorer.score(&flat, windows.len()).unwrap()
}

/// Faults built from the healthy signal's own formula, as the trainer's self-check does.
fn faults(n: usize) -> Vec<(&'static str, Vec<Vec<f32>>)> {
    let mut rng = fastrand::Rng::with_seed(5);
    let healthy = windows(&Machine::new(77).samples(n * 64, false));
    let spikes = healthy
        .iter()
        .map(|w| {
            let mut w = w.clone();
            for _ in 0..3 {
                w[rng.usize(..64)] += 5.0;
            }
            w
        })
        .collect();
    let shift = (0..n)
        .map(|_| {
            let (p1, p2) = (
                rng.f64() * std::f64::consts::TAU,
                rng.f64() * std::f64::consts::TAU,
            );
            (0..64)
                .map(|t| {
                    let t = f64::from(t) / 1000.0;
                    let tau = std::f64::consts::TAU;
                    (1.0 + 0.5 * (tau * 65.0 * t + p1).sin()
                        + 0.2 * (tau * 130.0 * t + p2).sin()
                        + 0.05 * (rng.f64() - 0.5) * 3.4) as f32
                })
                .collect()
        })
        .collect();
    let dead = vec![vec![0.0f32; 64]; n];
    vec![
        ("spikes", spikes),
        ("frequency shift", shift),
        ("dead sensor", dead),
    ]
}

#[test]
fn trained_models_separate_synthetic_faults_and_match_the_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let data = healthy_npy(dir.path(), 40, 1);
    let test_healthy = windows(&Machine::new(99).samples(300 * 64, false));
    let mut rt = ebgand::config::RawConfig::default();
    rt.runtime.library = ort_library().display().to_string();
    let runtime = rt.validate().unwrap().runtime;
    for mode in ["ebgan", "ae"] {
        let out = train(dir.path(), &data, mode);
        let mut scorer = Scorer::load(ModelVersion::open(&out).unwrap(), &runtime).unwrap();
        let negatives = score(&mut scorer, &test_healthy);
        for (name, fault) in faults(300) {
            let a = auc(&negatives, &score(&mut scorer, &fault));
            eprintln!("{mode}: ROC AUC healthy vs {name}: {a:.4}");
            assert!(a >= 0.95, "{mode}: AUC {a} for {name}");
        }
        // The same windows through the trainer's ONNX Runtime 1.19.
        let probe = dir.path().join("probe.npy");
        let batch: Vec<f32> = test_healthy[..64].concat();
        ndarray_npy::write_npy(
            &probe,
            &ndarray::Array3::from_shape_vec((64, 64, 1), batch).unwrap(),
        )
        .unwrap();
        let py = Command::new(trainer_python())
            .env("PYTHONPATH", root().join("models/trainer"))
            .args([
                "-c",
                "import json, sys, numpy as np\n\
                 from ebgand_trainer.ort import onnxruntime as ort\n\
                 s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
                 print(json.dumps(s.run(['energy'], {'window': np.load(sys.argv[2])})[0].tolist()))",
                out.join("model.onnx").to_str().unwrap(),
                probe.to_str().unwrap(),
            ])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(py.status.success());
        let theirs: Vec<f64> = serde_json::from_slice(&py.stdout).unwrap();
        let ours = &negatives[..64];
        assert_eq!(
            theirs.len(),
            ours.len(),
            "{mode}: the trainer scored {} windows",
            theirs.len()
        );
        // A NaN on either side counts as the largest difference (f64::max would skip it).
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| (f64::from(a) - b).abs() / b.abs().max(1e-12))
            .map(|d| if d.is_nan() { f64::INFINITY } else { d })
            .fold(0.0, f64::max);
        eprintln!(
            "{mode}: largest relative energy difference, ORT 1.31 (Rust) vs 1.19 (trainer): {worst:.2e}"
        );
        assert!(worst <= 1e-4, "{mode}: relative difference {worst}");
    }
}

#[test]
fn worker_errors_are_reported_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = healthy_npy(dir.path(), 5, 2);
    let out = dir.path().join("vibration/existing");
    std::fs::create_dir_all(&out).unwrap();
    let o = ebgand(&[
        "train",
        data.to_str().unwrap(),
        "--name",
        "vibration",
        "--window",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("training failed (worker exit Some(2))"),
        "{err}"
    );
    assert!(err.contains("exists"), "{err}");
    // Nothing left behind: no staging folder beside the target, nothing written into it.
    let beside: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["existing"], "left beside the target: {beside:?}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "written into the target"
    );
}

/// `ebgand train`'s arguments for a vibration model of 64-sample windows trained on `data` for
/// `steps` steps into `out`.
fn steps_into<'a>(data: &'a Path, steps: &'a str, out: &'a Path) -> [&'a str; 10] {
    [
        "train",
        data.to_str().unwrap(),
        "--name",
        "vibration",
        "--window",
        "64",
        "--steps",
        steps,
        "--out",
        out.to_str().unwrap(),
    ]
}

/// `ebgand train` of a million steps (far longer than any test waits) into `out`.
fn long_training(data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebgand"));
    cmd.args(steps_into(data, "1000000", out))
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library());
    cmd
}

/// No training worker left running for the output folder `out`.
fn assert_no_worker_writing(out: &Path) {
    // `--` first: a pattern that starts with '-' is otherwise read as an option, and pgrep
    // exits 2 (usage) with nothing on stdout, which would pass for "no worker".
    let ps = Command::new("pgrep")
        .args(["-f", "--", &format!("--out {}", out.display())])
        .output()
        .expect("pgrep runs (apt-get install procps)");
    assert_eq!(
        ps.status.code(),
        Some(1),
        "worker still running (pgrep exit 0), or pgrep failed (2, 3): {}{}",
        String::from_utf8_lossy(&ps.stdout),
        String::from_utf8_lossy(&ps.stderr)
    );
}

#[test]
fn sigterm_is_forwarded_to_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = healthy_npy(dir.path(), 20, 3);
    let out = dir.path().join("vibration/long");
    let mut child = long_training(&data, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    trainer_python();
    // Wait for the worker to report progress, then stop the supervisor.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines.any(|l| l.unwrap().contains("Training progress")),
        "no progress reported"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        !out.exists(),
        "an interrupted run must not leave a model folder"
    );
    assert_no_worker_writing(&out);
}

/// A run past `[train] timeout_s` is stopped: the worker is killed, no model folder is left,
/// and the error says why (the daemon's retraining reports the same error and keeps serving).
#[test]
fn a_run_past_its_timeout_is_stopped_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = healthy_npy(dir.path(), 20, 3);
    let out = dir.path().join("vibration/slow");
    let o = long_training(&data, &out)
        .env("EBGAND__TRAIN__TIMEOUT_S", "3")
        .output()
        .unwrap();
    trainer_python();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("training timed out after 3s"), "{err}");
    assert!(!out.exists(), "a stopped run must not leave a model folder");
    assert_no_worker_writing(&out);
}

#[test]
fn audio_model_trains_on_wav_logmel_and_scores_clips() {
    let clips = shared_data().join("dcase2020/normal");
    let clip = |i: u32| {
        clips
            .join(format!("normal_id_00_{i:08}.wav"))
            .display()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("machine/a1");
    let (c0, c1, c2) = (clip(0), clip(1), clip(2));
    let o = ebgand(&[
        "train",
        "--logmel",
        "--name",
        "machine",
        "--version",
        "a1",
        "--steps",
        "150",
        "--out",
        out.to_str().unwrap(),
        &c0,
        &c1,
        &c2,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = ModelVersion::open(&out).unwrap().manifest;
    assert_eq!(
        (m.input.kind.as_str(), m.input.window, m.input.channels),
        ("logmel", 5, 64)
    );
    assert_eq!(
        m.features,
        Some(ebgand::pipeline::features::LogMelParams::default())
    );
    let o = ebgand(&["score", "--model", out.to_str().unwrap(), &clip(12)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&o.stdout);
    // 10 s at 16 kHz: 311 frames, framed as a stream is (the first on the clip's first 1,024
    // samples, no padding), 307 windows of 5 frames, then the clip line.
    assert_eq!(lines.len(), 308);
    let last = lines.last().unwrap();
    assert_eq!(last["windows"], 307);
    assert!(last["clip_energy"].as_f64().unwrap().is_finite());
}

#[test]
fn score_replays_continual_learning_and_no_stream_learns_again_after_a_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = healthy_npy(dir.path(), 4, 1);
    let out = train(dir.path(), &healthy, "ebgan");
    // 30 s of the same healthy machine, another seed: 468 windows of 64 samples.
    let later = dir.path().join("later.npy");
    let samples = Machine::new(2).samples(30_000, false);
    ndarray_npy::write_npy(&later, &ndarray::Array1::from(samples)).unwrap();
    let o = common::ebgand(
        &[
            "score",
            "--json",
            "--judge",
            "probability",
            "--model",
            out.to_str().unwrap(),
            "--retrain-every",
            "100",
            later.to_str().unwrap(),
        ],
        &[
            ("EBGAND__DETECT__LEARN_WINDOWS", "32"),
            ("EBGAND__DETECT__WARM_WINDOWS", "48"),
            ("EBGAND__LEARNING__STEPS", "100"),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // Runs are staged in the registry's NAME/VERSION layout, so the worker has nothing to warn.
    assert!(!stderr.contains("registry expects"), "{stderr}");
    let lines = json_lines(&o.stdout);
    let (summary, verdicts) = lines.split_last().unwrap();
    schema::assert_valid("score.json", summary);
    let runs = summary["retrained"].as_array().unwrap();
    // The schedule ticks every 100 windows; a run starts after the batch of the tick (112,
    // 208, ...) and warms on 48 windows (`warm_windows`) before it serves.
    assert!(runs.len() >= 3, "{runs:?}");
    let first = &runs[0];
    assert_eq!(first["version"], "ebgan-retrained-1");
    let trained_at = first["trained_at"].as_u64().unwrap();
    let promoted_at = first["promoted_at"].as_u64().unwrap();
    assert!(
        trained_at >= 100 && promoted_at >= trained_at + 48,
        "{first}"
    );
    assert!(first["windows"].as_u64().unwrap() > 50, "{first}");
    for v in verdicts {
        let seq = v["seq"].as_u64().unwrap();
        let version = v["model"]["version"].as_str().unwrap();
        if seq < promoted_at {
            assert_eq!(version, "ebgan", "window {seq}");
        }
        if seq == promoted_at {
            assert_eq!(version, "ebgan-retrained-1", "window {seq}");
        }
        // Only the stream's first windows learn: a promoted version carries its shadow's
        // calibration on.
        assert_eq!(v["learning"], seq < 32, "window {seq}: {v}");
    }
}

/// `[train] python` may be a bare name looked up in `PATH` (`python3`), as the preflight
/// accepts it. Before, the worker was refused as missing unless the name was a file in the
/// working folder.
#[test]
fn the_trainer_s_python_may_be_a_name_on_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = healthy_npy(dir.path(), 5, 4);
    let out = dir.path().join("vibration/named");
    let venv = trainer_python().parent().unwrap().to_owned();
    let path = std::env::join_paths(
        std::iter::once(venv).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let o = common::ebgand(
        &steps_into(&data, "20", &out),
        &[
            ("EBGAND__TRAIN__PYTHON", "python3"),
            ("PATH", path.to_str().unwrap()),
        ],
    );
    assert!(
        o.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("manifest.toml").is_file());
}
