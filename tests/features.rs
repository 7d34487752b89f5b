//! Log-mel features against the numpy reference (`models/audio/logmel_reference.py`) on real
//! DCASE 2020 clips: the Rust extractor must agree within 1e-3 dB everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ebgand::pipeline::features::{LogMel, LogMelParams};
use ndarray::Array2;

const TOLERANCE_DB: f64 = 1e-3;

/// Clips spread over the folder (first, middle, last of the 15 shipped).
const CLIPS: [&str; 3] = [
    "normal_id_00_00000000.wav",
    "normal_id_00_00000007.wav",
    "normal_id_00_00000014.wav",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn trainer_python() -> PathBuf {
    let p = root().join(".venv/trainer/bin/python");
    assert!(
        p.exists(),
        "trainer venv missing at {}: run `make setup` (creates it with numpy)",
        p.display()
    );
    p
}

fn clip(name: &str) -> PathBuf {
    let dir = root().join("../shared/data/dcase2020/normal");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "DCASE 2020 clip not found at {}: the shared data folder (../shared/data, with \
         dcase2020/normal/*.wav) must sit beside the repository; `make setup` does not fetch it",
        p.display()
    );
    p
}

/// A 16-bit mono WAV as f32 in [-1, 1), int16 scaled by 1/32768 like the reference.
fn read_wav(path: &Path) -> (Vec<f32>, u32) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.bits_per_sample, spec.sample_format),
        (1, 16, hound::SampleFormat::Int),
        "{}",
        path.display()
    );
    let samples = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    (samples, spec.sample_rate)
}

fn reference(wav: &Path, out: &Path) -> Array2<f64> {
    let script = root().join("models/audio/logmel_reference.py");
    let status = Command::new(trainer_python())
        .arg(&script)
        .arg(wav)
        .arg(out)
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed: {status}", script.display());
    ndarray_npy::read_npy(out).unwrap()
}

#[test]
fn log_mel_matches_the_numpy_reference_on_real_clips() {
    let dir = tempfile::tempdir().unwrap();
    let mut mel = LogMel::new(LogMelParams::default()).unwrap();
    for name in CLIPS {
        let wav = clip(name);
        let (samples, sr) = read_wav(&wav);
        assert_eq!(sr, mel.params().sample_rate, "{name}");
        let ours = mel.frames(&samples);
        let theirs = reference(&wav, &dir.path().join(format!("{name}.npy")));
        assert_eq!(ours.dim(), theirs.dim(), "{name}");
        assert_eq!(
            ours.dim(),
            (313, 64),
            "{name}: 10 s at 16 kHz, hop 512, centred"
        );
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            // A NaN on either side counts as the largest difference (f64::max skips it).
            .map(|d| if d.is_nan() { f64::INFINITY } else { d })
            .fold(0.0, f64::max);
        let (lo, hi) = theirs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        eprintln!("{name}: max |rust - numpy| = {max_diff:.3e} dB (range {lo:.1} .. {hi:.1} dB)");
        assert!(
            max_diff <= TOLERANCE_DB,
            "{name}: max abs difference {max_diff} dB > {TOLERANCE_DB}"
        );
    }
}

#[test]
fn vectors_stack_five_frames_of_a_real_clip() {
    let (samples, _) = read_wav(&clip(CLIPS[0]));
    let mut mel = LogMel::new(LogMelParams::default()).unwrap();
    let frames = mel.frames(&samples);
    let vectors = mel.vectors(&samples);
    assert_eq!(vectors.dim(), (frames.nrows() - 4, 320));
    assert_eq!(vectors.dim(), (309, 320));
    assert_eq!(
        vectors.row(10).to_vec()[64 * 4..],
        frames.row(14).to_vec()[..]
    );
}
