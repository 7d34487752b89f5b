//! Audio scoring speed as a real-time factor on one core: seconds of 16 kHz mono audio
//! turned into log-mel frames, windowed and scored per second of wall time.
//!
//! `cargo bench --bench audio` (or `make bench`). Trains a log-mel model on 10 healthy DCASE
//! clips first (the Python worker, a few seconds), then streams a held-out clip through the
//! daemon's own path (Framer in 100 ms chunks, Windower, Scorer at batch 64, one intra-op
//! thread) 20 times and prints the median real-time factor; the features alone are timed in
//! the same run for comparison.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::path::Path;
use std::time::Instant;

use ebgand::config::RawConfig;
use ebgand::pipeline::features::{Framer, LogMelParams};
use ebgand::pipeline::{WindowSpec, Windower};
use ebgand::recording::InputArgs;
use ebgand::train::{TrainJob, WorkerEvent, run_worker};

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    std::env::set_current_dir(root).unwrap();
    let clips = Path::new(root).join("../shared/data/dcase2020/normal");
    assert!(clips.is_dir(), "DCASE clips missing at {}", clips.display());
    let mut raw = RawConfig::default();
    raw.runtime.library = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| format!("{root}/.cache/onnxruntime/libonnxruntime.so"));
    let settings = raw.validate().unwrap();
    assert!(
        settings.train.python.exists(),
        "trainer venv missing: run `make setup`"
    );
    let params = LogMelParams::default();
    let clip = |i: u32| {
        ebgand::recording::read(
            &clips.join(format!("normal_id_00_{i:08}.wav")),
            &InputArgs::default(),
        )
        .unwrap()
    };

    let mut flat = Vec::new();
    let mut n = 0;
    for i in 0..10 {
        let frames = clip(i).logmel(&params).unwrap();
        for w in frames.windows(WindowSpec {
            window: params.frames,
            hop: 1,
            channels: params.n_mels,
        }) {
            flat.extend(w.data);
            n += 1;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("windows.npy");
    ndarray_npy::write_npy(
        &data,
        &ndarray::Array3::from_shape_vec((n, params.frames, params.n_mels), flat).unwrap(),
    )
    .unwrap();
    let job = TrainJob {
        data,
        out: tmp.path().join("machine/bench"),
        name: "machine".into(),
        version: "bench".into(),
        args: vec!["--features".into(), serde_json::to_string(&params).unwrap()],
        command: "cargo bench --bench audio".into(),
        source: "DCASE 2020 normal_id_00 clips 0-9".into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let WorkerEvent::Done { dir, .. } = rt
        .block_on(run_worker(
            &settings.train,
            &job,
            |_| {},
            Default::default(),
        ))
        .unwrap()
    else {
        panic!("no model")
    };
    let mut scorer = ebgand::model::Scorer::load(
        ebgand::model::ModelVersion::open(&dir).unwrap(),
        &settings.runtime,
    )
    .unwrap();

    let audio: Vec<f32> = clip(10).samples.column(0).to_vec();
    let seconds = audio.len() as f64 / f64::from(params.sample_rate);
    let spec = WindowSpec {
        window: params.frames,
        hop: 1,
        channels: params.n_mels,
    };
    let mut whole = Vec::new();
    let mut features_only = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut framer = Framer::new(params.clone()).unwrap();
        let mut windower = Windower::new(spec);
        let (mut frames, mut batch, mut count) = (Vec::new(), Vec::new(), 0usize);
        for chunk in audio.chunks(1600) {
            frames.clear();
            framer.push(chunk, &mut frames);
            windower.push(&frames, None, |w| {
                batch.extend(w.data);
                count += 1;
            });
            if count >= 64 {
                std::hint::black_box(scorer.score(&batch, count).unwrap());
                batch.clear();
                count = 0;
            }
        }
        if count > 0 {
            std::hint::black_box(scorer.score(&batch, count).unwrap());
        }
        whole.push(seconds / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut framer = Framer::new(params.clone()).unwrap();
        for chunk in audio.chunks(1600) {
            frames.clear();
            framer.push(chunk, &mut frames);
        }
        std::hint::black_box(&frames);
        features_only.push(seconds / t.elapsed().as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, f) = (median(whole), median(features_only));
    println!(
        "audio: {seconds:.1} s clip at 16 kHz, 100 ms chunks, 5 x 64 log-mel windows at hop 1 frame, batch 64, 1 thread; medians of 20"
    );
    println!("| stage | real-time factor |\n|---|---|");
    println!("| log-mel features alone | {f:.0}x |");
    println!("| features + windowing + scoring | {w:.0}x |");
    println!(
        "scoring's share of the time: {:.0} %",
        100.0 * (1.0 - w / f)
    );
}
