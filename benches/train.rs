//! Training benchmark: time and peak memory of the default model's training run on this
//! machine, EBGAN against the plain autoencoder (same discriminator, same data) in one run.
//!
//! `cargo bench --bench train` (or `make bench`): 3 runs per mode of the served default's
//! recipe (120 s of the demo machine's healthy vibration, W = 64, hop 16, 600 steps); prints
//! medians and the ratio EBGAN / autoencoder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::time::Instant;

use ebgand::config::RawConfig;
use ebgand::pipeline::WindowSpec;
use ebgand::recording::Recording;
use ebgand::train::{TrainJob, WorkerEvent, run_worker};

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    std::env::set_current_dir(root).unwrap();
    let settings = RawConfig::default().validate().unwrap();
    assert!(
        settings.train.python.exists(),
        "trainer venv missing: run `make setup`"
    );
    let samples = ebgand::demo::sim::Machine::new(2024).samples(120_000, false);
    let rec = Recording {
        samples: ndarray::Array2::from_shape_vec((120_000, 1), samples).unwrap(),
        stamps: None,
        sample_rate: None,
        names: Vec::new(),
    };
    let windows = rec.windows(WindowSpec {
        window: 64,
        hop: 16,
        channels: 1,
    });
    let flat: Vec<f32> = windows
        .iter()
        .flat_map(|w| w.data.iter().copied())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("windows.npy");
    ndarray_npy::write_npy(
        &data,
        &ndarray::Array3::from_shape_vec((windows.len(), 64, 1), flat).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "default model recipe: {} windows of 64 x 1, 600 steps, batch 64; 3 runs per mode",
        windows.len()
    );
    println!(
        "\n| mode | worker wall s (median) | training loop s (median) | peak RSS MiB (median) |\n|---|---|---|---|"
    );
    let mut loop_medians = Vec::new();
    for mode in ["ebgan", "ae"] {
        let mut wall = Vec::new();
        let mut loop_s = Vec::new();
        let mut rss = Vec::new();
        for run in 0..3 {
            let job = TrainJob {
                data: data.clone(),
                out: tmp.path().join(format!("m/{mode}-{run}")),
                name: "vibration".into(),
                version: format!("{mode}-{run}"),
                args: vec!["--mode".into(), mode.into(), "--steps".into(), "600".into()],
                command: "cargo bench --bench train".into(),
                source: "simulated demo machine, 120 s".into(),
            };
            let t = Instant::now();
            let done = rt
                .block_on(run_worker(
                    &settings.train,
                    &job,
                    |_| {},
                    Default::default(),
                ))
                .unwrap();
            wall.push(t.elapsed().as_secs_f64());
            let WorkerEvent::Done {
                seconds,
                peak_rss_mb,
                ..
            } = done
            else {
                panic!("no result")
            };
            loop_s.push(seconds);
            rss.push(peak_rss_mb.unwrap_or(f64::NAN));
        }
        let (w, l, r) = (median(wall), median(loop_s), median(rss));
        loop_medians.push(l);
        println!("| {mode} | {w:.2} | {l:.2} | {r:.0} |");
    }
    println!(
        "\nratio EBGAN / autoencoder, training seconds: {:.2}",
        loop_medians[0] / loop_medians[1]
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
