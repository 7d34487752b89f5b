//! `ebgand score`: scores a recording (CSV, `.npy`, `.npz`) through the daemon's own windowing,
//! scoring and detection code, printing one JSON object per window.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

use crate::config::RawConfig;
use crate::detect::{AlertEvent, Hysteresis, Judge, ModelRef, StreamInfo, Verdict};
use crate::model::{ModelVersion, Scorer};
use crate::pipeline::WindowSpec;
use crate::recording::InputArgs;

/// Arguments of `ebgand score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Model version folder (model.onnx + manifest.toml).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Recording: .csv, .npy (samples x channels, or one channel) or .npz (with --key).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// How to read it.
    #[command(flatten)]
    pub input: InputArgs,
    /// Hop between windows in samples (default: the model's window, no overlap).
    #[arg(long)]
    pub hop: Option<usize>,
    /// Threshold (default: the model's calibrated threshold).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Consecutive windows above threshold that raise an alert (default: the config's detect section).
    #[arg(long)]
    pub raise_after: Option<u32>,
    /// Consecutive windows below threshold that clear it (default: the config's detect section).
    #[arg(long)]
    pub clear_after: Option<u32>,
}

/// One output line: the window's verdict, with its alert event when it caused one.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<AlertEvent>,
}

/// Runs `ebgand score`.
///
/// # Errors
/// Unreadable files, a model that does not load, or channels that do not fit the model.
pub fn score(args: &ScoreArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let config = crate::config::config_path(config);
    let raw = RawConfig::load(config, None)?;
    let version = ModelVersion::open(&args.model)?;
    let (w, c) = (
        version.manifest.input.window,
        version.manifest.input.channels,
    );
    let mut rec = crate::recording::read(&args.file, &args.input)?;
    // Audio models window log-mel frames, made with the parameters in their manifest.
    if let Some(features) = &version.manifest.features {
        rec = rec.logmel(features)?;
    }
    if rec.samples.ncols() != c {
        bail!(
            "{} gives {} channel(s) but model {} takes {c} (choose them with --columns)",
            args.file.display(),
            rec.samples.ncols(),
            version.manifest.name
        );
    }
    let version_is_audio = version.manifest.features.is_some();
    let runtime = raw.validate()?.runtime;
    let mut scorer = Scorer::load(version, &runtime)?;
    let m = &scorer.version().manifest;
    let model = ModelRef {
        name: m.name.clone(),
        version: m.version.clone(),
    };
    let model_threshold = m.threshold.value;
    let stream = StreamInfo {
        id: args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        threshold: args.threshold,
        hysteresis: Hysteresis {
            raise_after: args.raise_after.unwrap_or(raw.detect.raise_after),
            clear_after: args.clear_after.unwrap_or(raw.detect.clear_after),
        },
    };
    let hop = args.hop.unwrap_or(if version_is_audio { 1 } else { w });
    if hop == 0 || hop > w {
        bail!("--hop {hop} must be between 1 and the model's window ({w})");
    }
    let windows = rec.windows(WindowSpec {
        window: w,
        hop,
        channels: c,
    });
    let node = crate::config::RawConfig::default().node;
    let mut judge = Judge::new();
    let mut total = 0.0f64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for chunk in windows.chunks(256) {
        let data: Vec<f32> = chunk.iter().flat_map(|w| w.data.iter().copied()).collect();
        let energies = scorer.score(&data, chunk.len())?;
        for (win, energy) in chunk.iter().zip(energies) {
            total += f64::from(energy);
            let verdict = judge.judge(&stream, &model, model_threshold, win, energy);
            let alert = AlertEvent::from_verdict(&verdict, &node);
            serde_json::to_writer(
                &mut out,
                &Line {
                    verdict: &verdict,
                    alert,
                },
            )?;
            out.write_all(b"\n")?;
        }
    }
    // The clip's energy: the mean over its windows (the DCASE clip score).
    let clip = serde_json::json!({
        "clip": args.file.display().to_string(),
        "windows": windows.len(),
        "clip_energy": if windows.is_empty() { 0.0 } else { total / windows.len() as f64 },
        "threshold": model_threshold,
    });
    serde_json::to_writer(&mut out, &clip)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
