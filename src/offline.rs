//! `ebgand score`: scores a recording (CSV, `.npy`, `.npz`) through the daemon's own windowing,
//! scoring and detection code, printing one JSON object per window.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ndarray::{Array2, Axis};
use serde::Serialize;

use crate::config::RawConfig;
use crate::detect::{AlertEvent, Hysteresis, Judge, ModelRef, StreamInfo, Verdict};
use crate::model::{ModelVersion, Scorer};
use crate::pipeline::{RawWindow, WindowSpec, Windower};

/// Arguments of `ebgand score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Model version folder (model.onnx + manifest.toml).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Recording: .csv, .npy (samples x channels, or one channel) or .npz (with --key).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// CSV: columns to use, one channel each, comma-separated (default: every numeric column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// CSV: a column whose values mark window start/end instead of row indices.
    #[arg(long)]
    pub timestamp_column: Option<String>,
    /// CSV field delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// .npz: the array to read.
    #[arg(long)]
    pub key: Option<String>,
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

/// Samples read from a file: `rows x channels`, with optional per-row marks.
struct Recording {
    samples: Array2<f32>,
    stamps: Option<Vec<serde_json::Value>>,
}

/// Runs `ebgand score`.
///
/// # Errors
/// Unreadable files, a model that does not load, or channels that do not fit the model.
pub fn score(args: &ScoreArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let default = Path::new("config.toml");
    let config = config.or_else(|| default.exists().then_some(default));
    let raw = RawConfig::load(config, None)?;
    let version = ModelVersion::open(&args.model)?;
    let (w, c) = (
        version.manifest.input.window,
        version.manifest.input.channels,
    );
    let rec = read_recording(args)?;
    if rec.samples.ncols() != c {
        bail!(
            "{} gives {} channel(s) but model {} takes {c} (choose them with --columns)",
            args.file.display(),
            rec.samples.ncols(),
            version.manifest.name
        );
    }
    let runtime = runtime_settings(&raw)?;
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
    let hop = args.hop.unwrap_or(w);
    if hop == 0 || hop > w {
        bail!("--hop {hop} must be between 1 and the model's window ({w})");
    }
    let mut windower = Windower::new(WindowSpec {
        window: w,
        hop,
        channels: c,
    });
    let mut windows: Vec<RawWindow> = Vec::new();
    for (i, row) in rec.samples.axis_iter(Axis(0)).enumerate() {
        let values: Vec<f32> = row.to_vec();
        let stamp = rec.stamps.as_ref().map(|s| &s[i]);
        windower.push(&values, stamp, |win| windows.push(win));
    }
    let node = crate::config::RawConfig::default().node;
    let mut judge = Judge::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for chunk in windows.chunks(256) {
        let data: Vec<f32> = chunk.iter().flat_map(|w| w.data.iter().copied()).collect();
        let energies = scorer.score(&data, chunk.len())?;
        for (win, energy) in chunk.iter().zip(energies) {
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
    out.flush()?;
    Ok(())
}

fn runtime_settings(raw: &RawConfig) -> anyhow::Result<crate::config::RuntimeSettings> {
    // Only [runtime] matters here; validate a copy that has no streams to complain about.
    let mut only_runtime = RawConfig {
        runtime: raw.runtime.clone(),
        ..RawConfig::default()
    };
    only_runtime.models.insert(
        "m".into(),
        crate::config::RawModel {
            path: "unused".into(),
        },
    );
    only_runtime.streams.push(crate::config::RawStream {
        name: "s".into(),
        topic: "s".into(),
        model: "m".into(),
        format: "number".into(),
        fields: vec![],
        timestamp_field: String::new(),
        channels: 1,
        window: 1,
        hop: None,
        threshold: None,
        raise_after: None,
        clear_after: None,
    });
    Ok(only_runtime.validate()?.runtime)
}

fn read_recording(args: &ScoreArgs) -> anyhow::Result<Recording> {
    let ext = args
        .file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = &args.file;
    match ext.as_str() {
        "csv" | "txt" => read_csv(args),
        "npy" => Ok(Recording {
            samples: npy_to_2d(path)?,
            stamps: None,
        }),
        "npz" => {
            let key = args
                .key
                .as_deref()
                .context("an .npz file needs --key NAME")?;
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut npz = ndarray_npy::NpzReader::new(f)?;
            let names = npz.names()?;
            let name = names
                .iter()
                .find(|n| n.as_str() == key || n.as_str() == format!("{key}.npy"))
                .with_context(|| {
                    format!(
                        "no array {key:?} in {} (it has: {})",
                        path.display(),
                        names.join(", ")
                    )
                })?
                .clone();
            let samples = if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::Ix2>(&name)
            {
                a.mapv(|v| v as f32)
            } else if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::Ix1>(&name) {
                a.mapv(|v| v as f32).insert_axis(Axis(1))
            } else if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f32>, ndarray::Ix2>(&name) {
                a
            } else {
                let a = npz
                    .by_name::<ndarray::OwnedRepr<f32>, ndarray::Ix1>(&name)
                    .with_context(|| format!("array {key:?} is not 1-D or 2-D float32/float64"))?;
                a.insert_axis(Axis(1))
            };
            Ok(Recording {
                samples,
                stamps: None,
            })
        }
        other => bail!("unsupported file type {other:?}: use .csv, .npy or .npz"),
    }
}

/// Reads a 1-D or 2-D float32/float64 array as `samples x channels` float32.
fn npy_to_2d(path: &Path) -> anyhow::Result<Array2<f32>> {
    use ndarray_npy::read_npy;
    if let Ok(a) = read_npy::<_, Array2<f64>>(path) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = read_npy::<_, Array2<f32>>(path) {
        return Ok(a);
    }
    if let Ok(a) = read_npy::<_, ndarray::Array1<f64>>(path) {
        return Ok(a.mapv(|v| v as f32).insert_axis(Axis(1)));
    }
    let a = read_npy::<_, ndarray::Array1<f32>>(path)
        .with_context(|| format!("{}: not a 1-D or 2-D float32/float64 array", path.display()))?;
    Ok(a.insert_axis(Axis(1)))
}

fn read_csv(args: &ScoreArgs) -> anyhow::Result<Recording> {
    let delimiter =
        u8::try_from(args.delimiter).context("--delimiter must be one ASCII character")?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let headers: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    let index = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "no column {name:?} in {} (it has: {})",
                args.file.display(),
                headers.join(", ")
            )
        })
    };
    let columns: Vec<usize> = if args.columns.is_empty() {
        let first = records.first().context("the CSV has no rows")?;
        (0..headers.len())
            .filter(|&i| Some(i) != args.timestamp_column.as_deref().and_then(|t| index(t).ok()))
            .filter(|&i| {
                first
                    .get(i)
                    .is_some_and(|v| v.trim().parse::<f64>().is_ok())
            })
            .collect()
    } else {
        args.columns
            .iter()
            .map(|c| index(c))
            .collect::<Result<_, _>>()?
    };
    let ts = args.timestamp_column.as_deref().map(index).transpose()?;
    let mut samples = Array2::<f32>::zeros((records.len(), columns.len()));
    let mut stamps = ts.map(|_| Vec::with_capacity(records.len()));
    for (r, rec) in records.iter().enumerate() {
        for (c, &col) in columns.iter().enumerate() {
            let text = rec.get(col).unwrap_or_default().trim();
            let v: f64 = text.parse().with_context(|| {
                format!(
                    "row {} column {:?}: {text:?} is not a number",
                    r + 1,
                    headers[col]
                )
            })?;
            if !v.is_finite() {
                bail!(
                    "row {} column {:?}: value is not finite",
                    r + 1,
                    headers[col]
                );
            }
            samples[[r, c]] = v as f32;
        }
        if let (Some(col), Some(s)) = (ts, stamps.as_mut()) {
            s.push(serde_json::Value::String(
                rec.get(col).unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(Recording { samples, stamps })
}
