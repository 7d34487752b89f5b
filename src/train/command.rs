//! `ebgand train`: windows a healthy recording with the daemon's own windowing, runs the
//! training worker with progress, and checks that the daemon can serve the result.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array3;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{TrainJob, WorkerEvent, default_out, utc_version};
use crate::config::{RawConfig, Settings};
use crate::model::{ModelVersion, Scorer};
use crate::pipeline::WindowSpec;
use crate::recording::{InputArgs, Recording};

/// Arguments of `ebgand train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Healthy recordings: .csv, .npy (samples x channels), .npz (with --key) or .wav; each is
    /// windowed on its own.
    #[arg(value_name = "FILE", required_unless_present = "simulate")]
    pub files: Vec<PathBuf>,
    /// Audio: train on stacked log-mel frames (DCASE 2020 baseline parameters, or the
    /// stream's with --stream); --window and --hop then count frames.
    #[arg(long)]
    pub logmel: bool,
    /// How to read it.
    #[command(flatten)]
    pub input: InputArgs,
    /// Instead of a file: SECONDS of the demo's simulated healthy machine (1 kHz vibration).
    #[arg(long, value_name = "SECONDS", conflicts_with = "files")]
    pub simulate: Option<f64>,
    /// Model name (default: the model of --stream).
    #[arg(long)]
    pub name: Option<String>,
    /// Version label (default: the UTC time, YYYYMMDDTHHMMSSZ).
    #[arg(long)]
    pub version: Option<String>,
    /// Output folder (default: `<[train] models_dir>/<name>/<version>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Take window, channels and model name from this configured stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Window length W in samples (or from --stream).
    #[arg(long)]
    pub window: Option<usize>,
    /// Hop between training windows (default: W/4, or 1 with --logmel; overlapping windows
    /// give more examples).
    #[arg(long)]
    pub hop: Option<usize>,
    /// `ebgan` (generator + discriminator) or `ae` (the plain autoencoder). Default: `ebgan`
    /// for one channel (column); `ae` for several (fewer false alarms on SKAB's pump, steadier
    /// over seeds) and for log-mel audio (a fan's faults under another machine's sound ranked
    /// better); docs/EVALUATION-ROUNDS.md, rounds eighteen and thirty-two.
    #[arg(long, value_parser = ["ebgan", "ae"])]
    pub mode: Option<String>,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threshold quantile of held-out healthy energies.
    #[arg(long)]
    pub quantile: Option<f64>,
    /// `cpu` or `cuda` (default: [train] device).
    #[arg(long)]
    pub device: Option<String>,
    /// The channels' units, one per channel in order, comma-separated (`g,g,A,bar,C,C,V,l/min`):
    /// recorded in the manifest beside their names.
    #[arg(long, value_delimiter = ',', value_name = "UNIT,...")]
    pub units: Vec<String>,
    /// Train on a column that holds only 0 and 1 (a real on/off signal). Without it such a
    /// column is refused: it is usually a label (SKAB's `anomaly`), not a sensor.
    #[arg(long)]
    pub allow_binary: bool,
    /// Further worker arguments, after `--` (see models/trainer/README.md).
    #[arg(last = true)]
    pub worker_args: Vec<String>,
}

/// Runs `ebgand train`.
///
/// # Errors
/// Bad input, a failed or interrupted worker, or a result the daemon cannot serve.
pub fn train(args: &TrainArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let config = crate::config::config_path(config);
    let mut settings = RawConfig::load(config, None)?.validate()?;
    if let Some(device) = &args.device {
        settings.train.device = device.clone();
    }
    let stream = args
        .stream
        .as_ref()
        .map(|name| {
            settings
                .streams
                .iter()
                .find(|s| &s.name == name)
                .cloned()
                .with_context(|| format!("no stream {name:?} in the config (see [[streams]])"))
        })
        .transpose()?;
    let name = args
        .name
        .clone()
        .or_else(|| stream.as_ref().map(|s| s.model.clone()))
        .context("give --name (or --stream, whose model is the name)")?;
    let window = args
        .window
        .or_else(|| stream.as_ref().map(|s| s.window.get()))
        .or_else(|| {
            args.logmel
                .then_some(crate::pipeline::features::LogMelParams::default().frames)
        })
        .context("give --window (or --stream, whose window is used)")?;
    let hop = args.hop.unwrap_or((window / 4).max(1));
    if window == 0 || hop == 0 {
        bail!("--window and --hop must be at least 1");
    }

    // An audio model's window is its log-mel frames: --window sets them (a stream's are its
    // config's).
    let logmel = match (&stream, args.logmel) {
        (Some(s), _) if s.logmel.is_some() => s.logmel.clone(),
        (_, true) => {
            let default = crate::pipeline::features::LogMelParams::default();
            Some(crate::pipeline::features::LogMelParams {
                frames: args.window.unwrap_or(default.frames),
                ..default
            })
        }
        _ => None,
    };
    if let (Some(p), Some(w)) = (&logmel, args.window)
        && w != p.frames
    {
        bail!(
            "--window {w}: the stream's audio windows are its logmel.frames ({}); leave --window out",
            p.frames
        );
    }
    let recordings: Vec<Recording> = if args.files.is_empty() {
        let seconds = args.simulate.context("give FILEs or --simulate SECONDS")?;
        vec![simulated(seconds)]
    } else {
        args.files
            .iter()
            .map(|f| {
                let rec = crate::recording::read(f, &args.input)?;
                match &logmel {
                    Some(p) => rec.logmel(p),
                    None => Ok(rec),
                }
            })
            .collect::<Result<_, _>>()?
    };
    let (window, hop) = match &logmel {
        Some(p) => (p.frames, args.hop.unwrap_or(1)),
        None => (window, hop),
    };
    let channels = recordings[0].samples.ncols();
    if recordings.iter().any(|r| r.samples.ncols() != channels) {
        bail!("the recordings do not all have {channels} channel(s)");
    }
    if let Some(s) = &stream
        && s.channels.get() != channels
    {
        bail!(
            "stream {:?} has {} channel(s); the recording gives {channels}",
            s.name,
            s.channels
        );
    }
    // A CSV's columns name the channels; the manifest records them, and the daemon and
    // `score` refuse a stream or file that gives other names or another order.
    let names = recordings[0].names.clone();
    if logmel.is_none() && recordings.iter().any(|r| r.names != names) {
        bail!("the recordings do not all have the same columns in the same order");
    }
    check_signals(&recordings, &names, args.allow_binary)?;
    if !args.units.is_empty() && args.units.len() != channels {
        bail!(
            "--units gives {} unit(s) for {channels} channel(s); give one per channel, in order",
            args.units.len()
        );
    }
    let windows: Vec<_> = recordings
        .iter()
        .flat_map(|r| {
            r.windows(WindowSpec {
                window,
                hop,
                channels,
            })
        })
        .collect();
    if windows.len() < 10 {
        bail!(
            "only {} windows of {window} samples; give a longer recording",
            windows.len()
        );
    }
    let data: Vec<f32> = windows
        .iter()
        .flat_map(|w| w.data.iter().copied())
        .collect();
    let array = Array3::from_shape_vec((windows.len(), window, channels), data)?;
    let tmp = tempfile::tempdir()?;
    let data_path = tmp.path().join("windows.npy");
    ndarray_npy::write_npy(&data_path, &array)?;

    let version = args.version.clone().unwrap_or_else(utc_version);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&settings.train.models_dir, &name, &version));
    let mode = args
        .mode
        .clone()
        .unwrap_or_else(|| super::default_mode(logmel.is_some(), channels).to_owned());
    let worker_args = worker_args(args, &mode, logmel.as_ref(), &names)?;
    let source = describe(args, &recordings, logmel.is_some(), window, hop);
    let job = TrainJob {
        source,
        data: data_path,
        out: out.clone(),
        name,
        version,
        args: worker_args,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    info!(windows = windows.len(), window, hop, channels, out = %out.display(), "Training.");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(supervise(&settings, &job))?;
    let WorkerEvent::Done {
        dir,
        threshold,
        steps,
        seconds,
        peak_rss_mb,
    } = done
    else {
        bail!("the worker finished without a result");
    };
    // The daemon must be able to serve what was trained: hash, manifest, graph, one window.
    let scorer = Scorer::load(ModelVersion::open(&dir)?, &settings.runtime)
        .with_context(|| format!("the trained model in {} does not load", dir.display()))?;
    info!(model = %scorer.label(), threshold, steps, seconds, "Model ready.");
    let summary = serde_json::json!({
        "dir": dir, "model": scorer.version().manifest.name, "version": scorer.version().manifest.version,
        "mode": mode, "windows": windows.len(), "threshold": threshold, "steps": steps,
        "seconds": seconds, "peak_rss_mb": peak_rss_mb,
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{summary}");
    }
    Ok(())
}

/// The worker's arguments: the mode, the flags given, what the channels are (log-mel
/// parameters, or the columns' names and units), then whatever followed `--`.
fn worker_args(
    args: &TrainArgs,
    mode: &str,
    logmel: Option<&crate::pipeline::features::LogMelParams>,
    names: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut worker_args = vec!["--mode".to_string(), mode.to_owned()];
    for (flag, value) in [
        ("--steps", args.steps.map(|v| v.to_string())),
        ("--seed", args.seed.map(|v| v.to_string())),
        ("--quantile", args.quantile.map(|v| v.to_string())),
    ] {
        if let Some(v) = value {
            worker_args.extend([flag.to_string(), v]);
        }
    }
    if logmel.is_some() {
        worker_args.extend(super::features_args(logmel));
    } else if !names.is_empty() {
        worker_args.extend(["--channel-names".to_string(), serde_json::to_string(names)?]);
    }
    if !args.units.is_empty() {
        worker_args.extend([
            "--channel-units".to_string(),
            serde_json::to_string(&args.units)?,
        ]);
    }
    worker_args.extend(args.worker_args.iter().cloned());
    Ok(worker_args)
}

/// What the model learnt from, as its manifest records it: the files (key, rows), how many
/// samples or log-mel frames, and the windows cut from them.
fn describe(
    args: &TrainArgs,
    recordings: &[Recording],
    logmel: bool,
    window: usize,
    hop: usize,
) -> String {
    let channels = recordings.first().map_or(0, |r| r.samples.ncols());
    if args.files.is_empty() {
        return format!(
            "simulated demo machine (ebgand::sim, seed 2024): {} s of healthy 1 kHz \
             vibration; windows {window} x 1, hop {hop}",
            args.simulate.unwrap_or_default()
        );
    }
    let key = args
        .input
        .key
        .as_ref()
        .map(|k| format!(" [{k}]"))
        .unwrap_or_default();
    let rows = args.input.rows.map_or_else(String::new, |(a, b)| {
        format!(
            " rows {}:{}",
            a.unwrap_or(0),
            b.map(|b| b.to_string()).unwrap_or_default()
        )
    });
    let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let what = if logmel { "log-mel frames" } else { "samples" };
    format!(
        "{}{key}{rows}: {} {what} x {channels} channels; windows {window} x {channels}, hop {hop}",
        names.join(", "),
        recordings.iter().map(|r| r.samples.nrows()).sum::<usize>()
    )
}

/// Runs the worker with a progress bar on a terminal, structured logs otherwise, and
/// SIGTERM/SIGINT forwarded to it.
async fn supervise(settings: &Settings, job: &TrainJob) -> anyhow::Result<WorkerEvent> {
    let cancel = CancellationToken::new();
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            cancel.cancel();
        })
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} training [{bar:40}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut next_log = 0u64;
    let result = super::run_worker(
        &settings.train,
        job,
        |ev| match (ev, &bar) {
            (
                WorkerEvent::Start {
                    steps,
                    mode,
                    windows,
                },
                Some(bar),
            ) => {
                bar.set_length(*steps);
                bar.set_message(format!("{mode}, {windows} windows"));
            }
            (
                WorkerEvent::Step {
                    step,
                    d_loss,
                    g_loss,
                    val_energy,
                    ..
                },
                Some(bar),
            ) => {
                bar.set_position(*step);
                bar.set_message(format!(
                    "d_loss {} g_loss {} val {}",
                    fmt(*d_loss),
                    fmt(*g_loss),
                    fmt(*val_energy)
                ));
            }
            (
                WorkerEvent::Start {
                    mode,
                    steps,
                    windows,
                },
                None,
            ) => {
                info!(mode = %mode, steps, windows, "Training started.");
            }
            (
                WorkerEvent::Step {
                    step,
                    steps,
                    d_loss,
                    g_loss,
                    val_energy,
                },
                None,
            ) if *step >= next_log => {
                // About ten progress lines per run in the journal.
                next_log = step + (steps / 10).max(1);
                info!(
                    step,
                    steps, d_loss, g_loss, val_energy, "Training progress."
                );
            }
            _ => {}
        },
        cancel,
    )
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    signals.abort();
    Ok(result?)
}

/// Refuses channels that hold only 0 and 1 (labels, unless `allow_binary`) and warns loudly
/// about constant ones: neither is a sensor signal a model should learn.
fn check_signals(
    recordings: &[Recording],
    names: &[String],
    allow_binary: bool,
) -> anyhow::Result<()> {
    let Some(first) = recordings.first() else {
        return Ok(());
    };
    for c in 0..first.samples.ncols() {
        let name = names.get(c).cloned().unwrap_or_else(|| format!("ch{c}"));
        let values = || recordings.iter().flat_map(|r| r.samples.column(c).to_vec());
        let (lo, hi) = values().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let binary = lo == 0.0 && hi == 1.0 && values().all(|v| v == 0.0 || v == 1.0);
        if binary && !allow_binary {
            bail!(
                "column {name:?} holds only 0 and 1: a label (like SKAB's `anomaly`), not a \
                 sensor; leave it out of --columns, or pass --allow-binary if it is a real on/off \
                 signal"
            );
        }
        if hi - lo <= 1e-6 * lo.abs().max(hi.abs()).max(1.0) {
            warn!(column = %name, value = lo, "Column is constant in the training data: the model learns nothing from it, and any change in it will look anomalous. Leave it out of --columns unless that is what you want.");
        }
    }
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// Healthy samples from the demo's simulated machine.
fn simulated(seconds: f64) -> Recording {
    let n = (seconds.max(0.0) * crate::sim::RATE) as usize;
    let samples = crate::sim::Machine::new(2024).samples(n, false);
    Recording {
        samples: ndarray::Array2::from_shape_vec((n, 1), samples)
            .unwrap_or_else(|_| ndarray::Array2::zeros((0, 1))),
        stamps: None,
        sample_rate: Some(crate::sim::RATE as u32),
        names: Vec::new(),
    }
}
