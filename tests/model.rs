//! ONNX Runtime side: provider fallback, graph checks against the manifest, scoring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ebgand::config::{Provider, RawConfig, RuntimeSettings};
use ebgand::model::{ModelError, ModelVersion, Scorer};

fn runtime(providers: &[&str]) -> RuntimeSettings {
    let mut raw = RawConfig::from_toml(ebgand::config::DOCUMENTED_CONFIG).unwrap();
    raw.runtime.library = ort_library().display().to_string();
    raw.runtime.providers = providers.iter().map(|p| p.to_string()).collect();
    raw.validate().unwrap().runtime
}

/// A copy of the fixture, still labelled `fixture-1`, with `edit` applied to its manifest.
fn fixture_copy(edit: impl Fn(String) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = fixture_version(dir.path(), "fixture-1", edit);
    (dir, out)
}

#[test]
fn gpu_providers_fall_back_to_cpu_on_a_cpu_build() {
    let version = ModelVersion::open(&root().join("models/vibration/fixture-1")).unwrap();
    let scorer = Scorer::load(version, &runtime(&["tensorrt", "cuda", "cpu"])).unwrap();
    assert_eq!(scorer.provider(), Provider::Cpu);
}

#[test]
fn scores_match_the_manifest_validation_numbers() {
    let version = ModelVersion::open(&root().join("models/vibration/fixture-1")).unwrap();
    let threshold = version.manifest.threshold.value;
    let mut scorer = Scorer::load(version, &runtime(&["cpu"])).unwrap();
    // A dead sensor (all zeros) and a healthy window, in one batch.
    let mut m = ebgand::demo::sim::Machine::new(1);
    let mut batch = vec![0.0f32; 64];
    batch.extend(m.samples(64, false));
    let e = scorer.score(&batch, 2).unwrap();
    let dead = scorer.version().manifest.validation.as_ref().unwrap()["dead_sensor_energy"]
        .as_float()
        .unwrap();
    assert!(
        (f64::from(e[0]) - dead).abs() / dead < 1e-4,
        "dead sensor {} vs manifest {dead}",
        e[0]
    );
    assert!(
        e[1] < threshold,
        "healthy window {} over threshold {threshold}",
        e[1]
    );
    assert!(matches!(
        scorer.score(&batch, 3),
        Err(ModelError::Mismatch { .. })
    ));
}

#[test]
fn graph_that_does_not_fit_its_manifest_is_refused() {
    let (_dir, dir) = fixture_copy(|m| m.replace("name = \"window\"", "name = \"samples\""));
    let err = Scorer::load(ModelVersion::open(&dir).unwrap(), &runtime(&["cpu"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("input \"samples\" not in the graph"),
        "{err}"
    );

    let (_dir, dir) = fixture_copy(|m| m.replace("window = 64", "window = 32"));
    let err = Scorer::load(ModelVersion::open(&dir).unwrap(), &runtime(&["cpu"])).unwrap_err();
    assert!(err.to_string().contains("expected [-1, 32, 1]"), "{err}");

    let (_dir, dir) = fixture_copy(|m| m.replace("energy = \"energy\"", "energy = \"score\""));
    let err = Scorer::load(ModelVersion::open(&dir).unwrap(), &runtime(&["cpu"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("output \"score\" not in the graph"),
        "{err}"
    );
}

/// The copied fixture's manifest, with the checksum of its edited `model.onnx`.
fn manifest_follows(dir: &std::path::Path) {
    use sha2::Digest as _;
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let manifest = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let old = ModelVersion::open(&root().join("models/vibration/fixture-1"))
        .unwrap()
        .manifest
        .sha256;
    let new = format!("{:x}", sha2::Sha256::digest(&bytes));
    std::fs::write(&manifest, text.replace(&old, &new)).unwrap();
}

/// A model whose weights hold a NaN would score every window NaN, read as anomalous for good:
/// the load refuses it. Here the graph's baked-in std (the manifest's `[data] std`, stored once
/// as a float32 in `model.onnx`) is made NaN, and the manifest's checksum follows.
#[test]
fn a_model_with_nan_weights_is_refused() {
    let (_dir, dir) = fixture_copy(|m| m);
    let path = dir.join("model.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    let std_value = 0.384_355_78_f32.to_le_bytes();
    let at: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == std_value)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the fixture's std is stored once");
    bytes[at[0]..at[0] + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    manifest_follows(&dir);
    let err = Scorer::load(ModelVersion::open(&dir).unwrap(), &runtime(&["cpu"])).unwrap_err();
    assert!(
        matches!(err, ModelError::Mismatch { .. }) && err.to_string().contains("not finite"),
        "{err}"
    );
}

/// A graph whose batch dimension is fixed at one passes the shape check (a known size against a
/// dynamic one) and scores one window, but no batch the scorer makes: the load runs the largest
/// batch once and refuses it there, not at the first full batch in service. (The same run is
/// what has TensorRT build its engine for the whole range at load.)
#[test]
fn a_graph_that_takes_one_window_at_a_time_is_refused_at_load() {
    let python = root().join(".venv/fixture/bin/python");
    assert!(
        python.exists(),
        "fixture venv missing: run `make setup-venv`"
    );
    let (_dir, dir) = fixture_copy(|m| m);
    let path = dir.join("model.onnx");
    let fixed = std::process::Command::new(&python)
        .args([
            "-c",
            "import onnx, sys\n\
             m = onnx.load(sys.argv[1])\n\
             m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1\n\
             onnx.save(m, sys.argv[1])",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(fixed.success());
    manifest_follows(&dir);
    let version = ModelVersion::open(&dir).unwrap();
    let err = Scorer::load(version, &runtime(&["cpu"])).unwrap_err();
    // Refused at the batch, the one-window probe before it passed.
    assert!(err.to_string().contains("a batch of 256 windows"), "{err}");
}
