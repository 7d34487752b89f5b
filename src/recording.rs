//! Recordings on disk (CSV, `.npy`, `.npz`) read into `samples x channels`, for `ebgand score`
//! and `ebgand train`, and cut into windows by the daemon's own [`Windower`].

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Axis};
use serde_json::Value;

use crate::pipeline::features::{Framer, LogMelParams};
use crate::pipeline::{RawWindow, WindowSpec, Windower};

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// CSV syntax.
    #[error("{path}: {source}")]
    Csv {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: csv::Error,
    },
    /// An array file that is not a 1-D or 2-D float array, or an unknown key.
    #[error("{path}: {reason}")]
    Array {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bad flag value or a column that is not there.
    #[error("{0}")]
    Usage(String),
    /// A value that is not a finite number.
    #[error("row {row}, column {column:?}: {text:?} is not a finite number")]
    Value {
        /// 1-based data row.
        row: usize,
        /// Column name.
        column: String,
        /// The text found.
        text: String,
    },
}

/// How to read a recording (the file itself is each command's positional argument).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputArgs {
    /// CSV: columns to use, one channel each, comma-separated (default: every numeric column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// CSV: a column whose values mark window start/end instead of row indices (RFC 3339
    /// times or seconds since the epoch also give a slow stream its season, `[detect]
    /// season_*`).
    #[arg(long)]
    pub timestamp_column: Option<String>,
    /// CSV field delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// .npz: the array to read.
    #[arg(long)]
    pub key: Option<String>,
    /// Rows to use, `A:B` (0-based, B excluded; either side may be left out: `:400`, `400:`).
    #[arg(long, value_parser = parse_rows)]
    pub rows: Option<(Option<usize>, Option<usize>)>,
}

/// Parses `A:B` row ranges (the `--rows` flag's syntax).
pub(crate) fn parse_rows(s: &str) -> Result<(Option<usize>, Option<usize>), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or("expected A:B, e.g. 0:400 or 400:")?;
    let num = |x: &str| -> Result<Option<usize>, String> {
        if x.is_empty() {
            Ok(None)
        } else {
            x.parse().map(Some).map_err(|e| format!("{x:?}: {e}"))
        }
    };
    let (a, b) = (num(a)?, num(b)?);
    if let (Some(a), Some(b)) = (a, b)
        && a >= b
    {
        return Err(format!("{a}:{b} selects no rows"));
    }
    Ok((a, b))
}

/// Samples read from a file: `rows x channels`, with optional per-row marks.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Samples, one row per time step.
    pub samples: Array2<f32>,
    /// Timestamps per row (CSV with `--timestamp-column`).
    pub stamps: Option<Vec<Value>>,
    /// Samples per second, when the file says (WAV).
    pub sample_rate: Option<u32>,
    /// Channel names, when the file has them (a CSV's column headers); else empty.
    pub names: Vec<String>,
}

impl Recording {
    /// Cuts the recording into windows with the daemon's windower.
    pub fn windows(&self, spec: WindowSpec) -> Vec<RawWindow> {
        let mut windower = Windower::new(spec);
        let mut out = Vec::new();
        let mut row = Vec::with_capacity(spec.channels);
        for (i, r) in self.samples.axis_iter(Axis(0)).enumerate() {
            row.clear();
            row.extend(r.iter().copied());
            let stamp = self.stamps.as_ref().map(|s| &s[i]);
            windower.push(&row, stamp, |w| out.push(w));
        }
        out
    }

    /// The recording as log-mel frames (`[n_frames, n_mels]`): what audio models window,
    /// `params.frames` frames at a time. Framed as the daemon frames a live stream
    /// ([`Framer`]: not centred, no padding), so a model is
    /// trained, calibrated and scored offline on the frames it is served; a clip's centred
    /// frames (the DCASE baseline's, [`LogMel::frames`](crate::pipeline::features::LogMel::frames)) begin and end half in zeros, which a
    /// stream never sends.
    ///
    /// # Errors
    /// [`RecordingError::Usage`] for more than one channel, a sample rate that differs from
    /// the parameters', or invalid parameters.
    pub fn logmel(&self, params: &LogMelParams) -> Result<Self, RecordingError> {
        if self.samples.ncols() != 1 {
            return Err(RecordingError::Usage(format!(
                "log-mel features take mono audio; this recording has {} channels",
                self.samples.ncols()
            )));
        }
        if let Some(rate) = self.sample_rate
            && rate != params.sample_rate
        {
            return Err(RecordingError::Usage(format!(
                "the recording is {rate} Hz; the log-mel parameters expect {} Hz",
                params.sample_rate
            )));
        }
        let mut framer =
            Framer::new(params.clone()).map_err(|e| RecordingError::Usage(e.to_string()))?;
        let samples: Vec<f32> = self.samples.column(0).to_vec();
        let mut frames = Vec::new();
        framer.push(&samples, &mut frames);
        let n_mels = params.n_mels.max(1);
        let frames = Array2::from_shape_vec((frames.len() / n_mels, n_mels), frames)
            .map_err(|e| RecordingError::Usage(e.to_string()))?;
        Ok(Self {
            samples: frames,
            stamps: None,
            sample_rate: None,
            names: Vec::new(),
        })
    }

    fn select_rows(
        self,
        rows: Option<(Option<usize>, Option<usize>)>,
    ) -> Result<Self, RecordingError> {
        let Some((a, b)) = rows else { return Ok(self) };
        let n = self.samples.nrows();
        let (a, b) = (a.unwrap_or(0), b.unwrap_or(n).min(n));
        if a >= b {
            return Err(RecordingError::Usage(format!(
                "--rows {a}:{b} selects none of {n} rows"
            )));
        }
        Ok(Self {
            samples: self.samples.select(Axis(0), &(a..b).collect::<Vec<_>>()),
            stamps: self.stamps.map(|s| s[a..b].to_vec()),
            sample_rate: self.sample_rate,
            names: self.names,
        })
    }
}

/// Reads `file` as the extension says: `.csv`/`.txt`, `.npy` or `.npz` (with `--key`).
///
/// # Errors
/// [`RecordingError`] for unreadable files, unknown columns or keys, non-numeric values.
pub fn read(file: &Path, args: &InputArgs) -> Result<Recording, RecordingError> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let rec = match ext.as_str() {
        "csv" | "txt" => read_csv(file, args)?,
        "npy" => Recording {
            samples: finite(file, read_npy(file)?)?,
            stamps: None,
            sample_rate: None,
            names: Vec::new(),
        },
        "npz" => Recording {
            samples: finite(file, read_npz(file, args.key.as_deref())?)?,
            stamps: None,
            sample_rate: None,
            names: Vec::new(),
        },
        "wav" => read_wav(file)?,
        other => {
            return Err(RecordingError::Usage(format!(
                "unsupported file type {other:?} ({}): use .csv, .npy, .npz or .wav",
                file.display()
            )));
        }
    };
    if rec.samples.ncols() == 0 {
        // A CSV whose first row has no number (decimal commas, a blank row), or an array of
        // shape (n, 0): nothing to window.
        return Err(RecordingError::Usage(format!(
            "{} has no numeric column{}",
            file.display(),
            if ext == "csv" || ext == "txt" {
                " in its first row (decimal commas? pick them with --columns to see which value \
                 does not parse)"
            } else {
                ""
            }
        )));
    }
    rec.select_rows(args.rows)
}

fn array_err(path: &Path, reason: impl Into<String>) -> RecordingError {
    RecordingError::Array {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A WAV file (16-bit PCM scaled to [-1, 1), or 32-bit float) as `samples x channels`.
fn read_wav(path: &Path) -> Result<Recording, RecordingError> {
    let mut reader = hound::WavReader::open(path).map_err(|e| array_err(path, e.to_string()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let values: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .samples::<i16>()
            .map(|s| s.map(|v| f32::from(v) / 32_768.0))
            .collect::<Result<_, _>>(),
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>(),
        (format, bits) => {
            return Err(array_err(
                path,
                format!("{bits}-bit {format:?} WAV; use 16-bit PCM or 32-bit float"),
            ));
        }
    }
    .map_err(|e| array_err(path, e.to_string()))?;
    let rows = values.len() / channels;
    let samples = Array2::from_shape_vec((rows, channels), values[..rows * channels].to_vec())
        .map_err(|e| array_err(path, e.to_string()))?;
    Ok(Recording {
        samples,
        stamps: None,
        sample_rate: Some(spec.sample_rate),
        names: Vec::new(),
    })
}

/// `a` when every value is a finite float32, as the daemon takes only those (it drops a
/// message holding NaN, an infinity, or a float64 past float32's range).
fn finite(path: &Path, a: Array2<f32>) -> Result<Array2<f32>, RecordingError> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(a),
        Some(((row, channel), v)) => Err(array_err(
            path,
            format!("sample {row} of channel {channel} is {v}: not a finite float32"),
        )),
    }
}

/// A 1-D or 2-D float32/float64 array as `samples x channels` float32.
fn read_npy(path: &Path) -> Result<Array2<f32>, RecordingError> {
    use ndarray_npy::read_npy;
    if let Ok(a) = read_npy::<_, Array2<f64>>(path) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = read_npy::<_, Array2<f32>>(path) {
        return Ok(a);
    }
    if let Ok(a) = read_npy::<_, Array1<f64>>(path) {
        return Ok(a.mapv(|v| v as f32).insert_axis(Axis(1)));
    }
    read_npy::<_, Array1<f32>>(path)
        .map(|a| a.insert_axis(Axis(1)))
        .map_err(|e| {
            array_err(
                path,
                format!("not a 1-D or 2-D float32/float64 array ({e})"),
            )
        })
}

fn read_npz(path: &Path, key: Option<&str>) -> Result<Array2<f32>, RecordingError> {
    use ndarray::{Ix1, Ix2, OwnedRepr};
    let key = key.ok_or_else(|| RecordingError::Usage("an .npz file needs --key NAME".into()))?;
    let f = std::fs::File::open(path).map_err(|source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut npz = ndarray_npy::NpzReader::new(f).map_err(|e| array_err(path, e.to_string()))?;
    let names = npz.names().map_err(|e| array_err(path, e.to_string()))?;
    if !names.iter().any(|n| n == key) {
        return Err(array_err(
            path,
            format!("no array {key:?} (it has: {})", names.join(", ")),
        ));
    }
    if let Ok(a) = npz.by_name::<OwnedRepr<f64>, Ix2>(key) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = npz.by_name::<OwnedRepr<f64>, Ix1>(key) {
        return Ok(a.mapv(|v| v as f32).insert_axis(Axis(1)));
    }
    if let Ok(a) = npz.by_name::<OwnedRepr<f32>, Ix2>(key) {
        return Ok(a);
    }
    npz.by_name::<OwnedRepr<f32>, Ix1>(key)
        .map(|a| a.insert_axis(Axis(1)))
        .map_err(|e| array_err(path, format!("array {key:?} is not 1-D or 2-D float ({e})")))
}

fn read_csv(path: &Path, args: &InputArgs) -> Result<Recording, RecordingError> {
    let csv_err = |source| RecordingError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let delimiter = u8::try_from(args.delimiter)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| RecordingError::Usage("--delimiter must be one ASCII character".into()))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .map_err(csv_err)?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .map_err(csv_err)?;
    let index = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            RecordingError::Usage(format!(
                "no column {name:?} in {} (it has: {})",
                path.display(),
                headers.join(", ")
            ))
        })
    };
    let ts = args.timestamp_column.as_deref().map(index).transpose()?;
    let columns: Vec<usize> = if args.columns.is_empty() {
        let first = records
            .first()
            .ok_or_else(|| RecordingError::Usage(format!("{} has no rows", path.display())))?;
        (0..headers.len())
            .filter(|&i| Some(i) != ts)
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
    let mut samples = Array2::<f32>::zeros((records.len(), columns.len()));
    let mut stamps = ts.map(|_| Vec::with_capacity(records.len()));
    for (r, rec) in records.iter().enumerate() {
        for (c, &col) in columns.iter().enumerate() {
            let text = rec.get(col).unwrap_or_default().trim();
            match text.parse::<f64>() {
                // Finite as a float32 too, as the daemon decodes it (1e39 is not).
                Ok(v) if (v as f32).is_finite() => samples[[r, c]] = v as f32,
                _ => {
                    return Err(RecordingError::Value {
                        row: r + 1,
                        column: headers[col].clone(),
                        text: text.to_owned(),
                    });
                }
            }
        }
        if let (Some(col), Some(s)) = (ts, stamps.as_mut()) {
            s.push(Value::String(rec.get(col).unwrap_or_default().to_owned()));
        }
    }
    Ok(Recording {
        samples,
        stamps,
        sample_rate: None,
        names: columns.iter().map(|&c| headers[c].clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clip's log-mel frames offline are the frames the daemon cuts from the same samples
    /// streamed in pieces: what a model is trained and scored on is what it is served.
    #[test]
    fn a_clips_frames_are_the_streams() {
        let params = LogMelParams::default();
        let samples: Vec<f32> = (0..20_000u32)
            .map(|i| (f64::from(i) * 0.37).sin() as f32 * 0.1)
            .collect();
        let rec = Recording {
            samples: Array2::from_shape_vec((samples.len(), 1), samples.clone()).unwrap(),
            stamps: None,
            sample_rate: Some(params.sample_rate),
            names: Vec::new(),
        };
        let offline = rec.logmel(&params).unwrap().samples;
        let mut framer = Framer::new(params.clone()).unwrap();
        let mut live = Vec::new();
        for piece in samples.chunks(1_600) {
            framer.push(piece, &mut live);
        }
        // (20,000 - 1,024) / 512 + 1 frames: none padded.
        assert_eq!(offline.dim(), (38, params.n_mels));
        assert_eq!(offline.as_slice().unwrap(), live.as_slice());
    }

    #[test]
    fn rows_flag_parses_open_ranges() {
        assert_eq!(parse_rows("0:400"), Ok((Some(0), Some(400))));
        assert_eq!(parse_rows("400:"), Ok((Some(400), None)));
        assert_eq!(parse_rows(":10"), Ok((None, Some(10))));
        assert!(parse_rows("5:5").is_err());
        assert!(parse_rows("x").is_err());
    }

    /// Decimal commas under ';' leave no column that parses: refused, where it reached the
    /// windower as 0 channels and panicked (`chunks_exact(0)`).
    #[test]
    fn a_file_with_no_numeric_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("commas.csv");
        std::fs::write(&p, "a;b\n1,5;2,5\n3,5;4,5\n").unwrap();
        let args = InputArgs {
            delimiter: ';',
            ..InputArgs::default()
        };
        let err = read(&p, &args).unwrap_err().to_string();
        assert!(err.contains("no numeric column"), "{err}");
        let empty = dir.path().join("empty.npy");
        ndarray_npy::write_npy(&empty, &Array2::<f32>::zeros((4, 0))).unwrap();
        let err = read(&empty, &InputArgs::default()).unwrap_err().to_string();
        assert!(err.contains("no numeric column"), "{err}");
    }

    /// Values the daemon would drop (NaN, infinities, past float32's range) are refused
    /// with where they are, not scored as probability 1 or trained on.
    #[test]
    fn values_that_are_not_finite_float32_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.csv");
        std::fs::write(&p, "a\n1\n1e39\n").unwrap();
        let err = read(&p, &InputArgs::default()).unwrap_err().to_string();
        assert!(err.contains("1e39"), "{err}");
        for (name, v) in [("nan.npy", f64::NAN), ("big.npy", 1e39)] {
            let path = dir.path().join(name);
            ndarray_npy::write_npy(&path, &ndarray::arr1(&[1.0, 2.0, v])).unwrap();
            let err = read(&path, &InputArgs::default()).unwrap_err().to_string();
            assert!(err.contains("sample 2 of channel 0"), "{err}");
        }
        let npz = dir.path().join("x.npz");
        let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&npz).unwrap());
        w.add_array("x", &ndarray::arr2(&[[1.0_f32, f32::INFINITY]]))
            .unwrap();
        w.finish().unwrap();
        let args = InputArgs {
            key: Some("x".into()),
            ..InputArgs::default()
        };
        let err = read(&npz, &args).unwrap_err().to_string();
        assert!(err.contains("sample 0 of channel 1 is inf"), "{err}");
    }

    #[test]
    fn csv_columns_rows_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "t;a;b;label\n0;1;10;x\n1;2;20;x\n2;3;30;x\n3;4;40;x\n").unwrap();
        let args = InputArgs {
            delimiter: ';',
            timestamp_column: Some("t".into()),
            rows: Some((Some(1), None)),
            ..InputArgs::default()
        };
        let rec = read(&p, &args).unwrap();
        assert_eq!(rec.samples.shape(), &[3, 2]);
        assert_eq!(rec.samples[[0, 1]], 20.0);
        let w = rec.windows(WindowSpec {
            window: 2,
            hop: 1,
            channels: 2,
        });
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].data, vec![2.0, 20.0, 3.0, 30.0]);
        assert_eq!(
            w[1].end,
            crate::pipeline::Mark::Time(Value::String("3".into()))
        );
        let bad = InputArgs {
            columns: vec!["nope".into()],
            delimiter: ';',
            ..InputArgs::default()
        };
        assert!(
            read(&p, &bad)
                .unwrap_err()
                .to_string()
                .contains("no column \"nope\"")
        );
        let label = InputArgs {
            columns: vec!["label".into()],
            delimiter: ';',
            ..InputArgs::default()
        };
        assert!(matches!(
            read(&p, &label),
            Err(RecordingError::Value { row: 1, .. })
        ));
    }

    #[test]
    fn npy_one_and_two_dimensional() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        ndarray_npy::write_npy(&p, &ndarray::array![1.0f64, 2.0, 3.0]).unwrap();
        assert_eq!(
            read(&p, &InputArgs::default()).unwrap().samples.shape(),
            &[3, 1]
        );
        ndarray_npy::write_npy(&p, &ndarray::array![[1.0f32, 2.0], [3.0, 4.0]]).unwrap();
        assert_eq!(
            read(&p, &InputArgs::default()).unwrap().samples.shape(),
            &[2, 2]
        );
    }
}
