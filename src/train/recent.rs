//! Each stream's newest windows while its model learns ([`Recent`]): saved beside the capture
//! so a restart carries the learning period on ([`SAVED`]), and scored by the first version
//! into each stream's calibration ([`seed`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::detect::{Calibration, Seed, SeedWindow, Seeded, StreamInfo, energy_parts};
use crate::model::{ModelError, Scorer};
use crate::train::capture::CaptureError;

/// Values (`f32`) a learner keeps at most in [`Recent`] (64 MiB): past it, a stream's newest
/// window replaces its oldest, and a stream with none kept yet keeps none (it learns under the
/// first version as a stream with no seed does).
pub const RECENT_VALUES: usize = 16 << 20;

/// The file in a model's capture folder where its learner saves how far it got: the windows
/// captured in the learning period, how long it has run, and each stream's newest windows
/// ([`Recent`]). A learner that starts (after a restart) carries on from it, so neither the
/// period nor the first version's calibration starts over. Saved as the capture writes
/// ([`crate::train::capture::Capture::flush_interval`]), when the period ends and when the daemon stops, each time
/// as a temp file renamed over the last; removed once the first version serves
/// ([`forget_saved`]).
pub const SAVED: &str = "learning.npz";

/// What [`SAVED`] holds besides the windows (the `index` array of the `.npz`, as JSON bytes,
/// so one rename replaces both together).
#[derive(Debug, Serialize, Deserialize)]
struct SavedIndex {
    /// Windows captured in the learning period so far.
    captured: usize,
    /// How long the period has run, in milliseconds (time the daemon was down not counted).
    learnt_ms: u64,
    /// Each stream's id and its number of windows, in the order of the `windows` array.
    streams: Vec<(String, usize)>,
}

/// A learner's progress read back from [`SAVED`].
#[derive(Debug)]
pub struct Resumed {
    /// Each stream's newest windows, waiting for the stream's next window.
    pub recent: Recent,
    /// Windows captured in the learning period so far.
    pub captured: usize,
    /// How long the period has run.
    pub learnt: Duration,
}

/// Removes a model's saved learning progress ([`SAVED`]) from its capture folder `dir`: its
/// first version serves, so nothing will resume it. A missing file is not an error.
///
/// # Errors
/// [`CaptureError::Io`] when the file exists and cannot be removed.
pub fn forget_saved(dir: &Path) -> Result<(), CaptureError> {
    let path = dir.join(SAVED);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CaptureError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Each stream's newest windows while its model learns (at most `keep` each, at most
/// [`RECENT_VALUES`] values in all), handed over with the window queue: scored by the first
/// version, they calibrate each stream before that version judges it
/// ([`crate::detect::Seed`]).
#[derive(Debug, Default)]
pub struct Recent {
    /// Per stream id: the stream and its newest windows, oldest first.
    pub streams: HashMap<String, (Arc<StreamInfo>, VecDeque<Vec<f32>>)>,
    /// Per stream id: windows read back from [`SAVED`] for a stream that has not sent one
    /// since; they join the stream at its next window, and are left out of the calibration
    /// if it sends none before the handover.
    resumed: HashMap<String, VecDeque<Vec<f32>>>,
    keep: usize,
    /// Values kept (resumed ones included).
    values: usize,
    /// Streams not kept (the bound was reached before their first window).
    refused: HashSet<String>,
}

impl Recent {
    /// Keeps up to `keep` windows per stream.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// Adds a window of `stream`, dropping its oldest beyond `keep` or past
    /// [`RECENT_VALUES`]. `false` when the stream is not kept (the first time only: it is then
    /// not asked about again).
    pub(super) fn push(&mut self, stream: &Arc<StreamInfo>, data: &[f32]) -> bool {
        if self.keep == 0 || self.refused.contains(&stream.id) {
            return true;
        }
        let full = self.values.saturating_add(data.len()) > RECENT_VALUES;
        let ring = match self.streams.get_mut(&stream.id) {
            Some((_, ring)) => ring,
            None => {
                let resumed = self.resumed.remove(&stream.id);
                if resumed.is_none() && full {
                    self.refused.insert(stream.id.clone());
                    return false;
                }
                let entry = (stream.clone(), resumed.unwrap_or_default());
                &mut self.streams.entry(stream.id.clone()).or_insert(entry).1
            }
        };
        if (ring.len() >= self.keep || full)
            && let Some(old) = ring.pop_front()
        {
            self.values -= old.len();
        }
        self.values += data.len();
        ring.push_back(data.to_vec());
        true
    }

    /// Streams with resumed windows ([`Recent::resume`]) that have not sent one since.
    pub fn resumed_streams(&self) -> usize {
        self.resumed.len()
    }

    /// The contents of [`SAVED`]: the windows of `len` values (the model's window), the
    /// learning period's `captured` windows and `learnt` time. The learner writes them whole
    /// ([`crate::train::capture::Capture::write_file`]).
    ///
    /// # Errors
    /// [`CaptureError::Npy`] when they cannot be encoded.
    pub fn saved(
        &self,
        len: usize,
        captured: usize,
        learnt: Duration,
    ) -> Result<Vec<u8>, CaptureError> {
        let npz = |reason: String| CaptureError::Npy {
            path: SAVED.into(),
            reason,
        };
        let kept = self
            .streams
            .iter()
            .map(|(id, (_, ring))| (id, ring))
            .chain(self.resumed.iter());
        let (mut streams, mut data) = (Vec::new(), Vec::new());
        for (id, ring) in kept {
            let before = data.len();
            ring.iter()
                .filter(|w| w.len() == len)
                .for_each(|w| data.extend_from_slice(w));
            streams.push((id.clone(), (data.len() - before) / len.max(1)));
        }
        let index = SavedIndex {
            captured,
            learnt_ms: u64::try_from(learnt.as_millis()).unwrap_or(u64::MAX),
            streams,
        };
        let index = serde_json::to_vec(&index).map_err(|e| npz(e.to_string()))?;
        let rows = data.len() / len.max(1);
        let windows = Array2::from_shape_vec((rows, len), data).map_err(|e| npz(e.to_string()))?;
        let mut bytes = Vec::new();
        let mut writer = NpzWriter::new(std::io::Cursor::new(&mut bytes));
        writer
            .add_array("index", &Array1::from(index))
            .and_then(|()| writer.add_array("windows", &windows))
            .and_then(|()| writer.finish().map(drop))
            .map_err(|e| npz(e.to_string()))?;
        Ok(bytes)
    }

    /// Reads back what [`Recent::saved`] gave, written to `path`, each stream's windows cut to its
    /// newest `keep`; `None` when there is no such file.
    ///
    /// # Errors
    /// [`CaptureError`] when the file cannot be read, or its windows are not of `len` values
    /// (the streams' window or channels changed since).
    pub fn resume(path: &Path, keep: usize, len: usize) -> Result<Option<Resumed>, CaptureError> {
        let npz = |reason: String| CaptureError::Npy {
            path: path.into(),
            reason,
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CaptureError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let mut reader = NpzReader::new(file).map_err(|e| npz(e.to_string()))?;
        let index: Array1<u8> = reader.by_name("index").map_err(|e| npz(e.to_string()))?;
        let index: SavedIndex =
            serde_json::from_slice(&index.to_vec()).map_err(|e| npz(e.to_string()))?;
        let windows: Array2<f32> = reader.by_name("windows").map_err(|e| npz(e.to_string()))?;
        let (rows, cols) = windows.dim();
        let listed: usize = index.streams.iter().map(|(_, n)| n).sum();
        if rows > 0 && cols != len {
            return Err(npz(format!(
                "windows of {cols} values, the streams now cut {len}"
            )));
        }
        if listed != rows {
            return Err(npz(format!("{rows} windows, the index lists {listed}")));
        }
        let mut recent = Recent::new(keep);
        let mut rows = windows.outer_iter();
        for (id, n) in index.streams {
            let newest = rows.by_ref().take(n).skip(n.saturating_sub(keep));
            let ring: VecDeque<Vec<f32>> = newest.map(|w| w.to_vec()).collect();
            if keep > 0 && !ring.is_empty() {
                recent.values += ring.iter().map(Vec::len).sum::<usize>();
                recent.resumed.insert(id, ring);
            }
        }
        Ok(Some(Resumed {
            recent,
            captured: index.captured,
            learnt: Duration::from_millis(index.learnt_ms),
        }))
    }

    /// Each kept stream's windows scored by `scorer` (the model's first version), and the
    /// stream calibrated on them under it ([`Seed::calibrated`]; `cal` with the stream's own
    /// window counts), by stream id. Windows of
    /// another length than the model's are left out. Blocking: call it off the async runtime.
    ///
    /// # Errors
    /// The scorer's, for a batch it cannot score.
    pub fn calibrate(
        self,
        scorer: &mut Scorer,
        cal: &Calibration,
    ) -> Result<HashMap<String, Seeded>, ModelError> {
        let len = scorer.window_len();
        if !self.resumed.is_empty() {
            info!(
                streams = self.resumed.len(),
                "Streams with learning windows from before a restart sent none since; they learn under the new version."
            );
        }
        let mut seeded = HashMap::with_capacity(self.streams.len());
        for (id, (stream, ring)) in self.streams {
            let windows = ring.into_iter().filter(|w| w.len() == len).collect();
            let seed = seed(scorer, windows, &stream, SEED_BATCH)?;
            let own = cal.tuned(&stream.tuning);
            seeded.insert(id, seed.calibrated(stream.channels, &own));
        }
        Ok(seeded)
    }
}

/// Windows scored at once by [`Recent::calibrate`].
const SEED_BATCH: usize = crate::model::BULK_BATCH;

/// `windows` of `stream` (W x C values each, the model's shape) scored by `scorer`, `batch` at
/// a time, into the seed of the stream's calibration under its version ([`Seed`]): each
/// window's energy and each channel's part of it, as the alerting stage reads them.
///
/// # Errors
/// The scorer's, for a batch it cannot score.
pub fn seed(
    scorer: &mut Scorer,
    windows: Vec<Vec<f32>>,
    stream: &StreamInfo,
    batch: usize,
) -> Result<Seed, ModelError> {
    let len = scorer.window_len();
    let mut seed = Seed {
        version: scorer.version().manifest.version.clone(),
        windows: Vec::with_capacity(windows.len()),
    };
    let (mut data, mut residual) = (Vec::new(), Vec::new());
    let mut windows = windows.into_iter().peekable();
    while windows.peek().is_some() {
        let chunk: Vec<Vec<f32>> = windows.by_ref().take(batch.max(1)).collect();
        data.clear();
        chunk.iter().for_each(|w| data.extend_from_slice(w));
        residual.clear();
        let energies = scorer.score_explained(&data, chunk.len(), Some(&mut residual))?;
        for ((data, energy), r) in chunk
            .into_iter()
            .zip(energies)
            .zip(residual.chunks_exact(len))
        {
            let mut parts = Vec::new();
            energy_parts(r, stream.channels.max(1), stream.names.group, &mut parts);
            seed.windows.push(SeedWindow {
                data,
                energy,
                parts,
            });
        }
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stream `s/<n>`, one channel.
    fn stream(n: u64) -> Arc<StreamInfo> {
        Arc::new(StreamInfo::new(
            format!("s/{n}"),
            crate::detect::Judging::Energy(None),
            crate::detect::Hysteresis {
                raise_after: 1,
                clear_after: 1,
                accept: crate::detect::Accept::Never,
            },
            1,
        ))
    }

    #[test]
    fn saved_windows_come_back_per_stream_cut_to_keep_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SAVED);
        let mut r = Recent::new(3);
        let (a, b) = (stream(0), stream(1));
        for v in 0..3 {
            r.push(&a, &[v as f32; 2]);
        }
        r.push(&b, &[7.0; 2]);
        // A window of another length (not the model's) is left out.
        r.push(&b, &[8.0; 3]);
        std::fs::write(&path, r.saved(2, 12, Duration::from_millis(1500)).unwrap()).unwrap();

        let resumed = Recent::resume(&path, 2, 2).unwrap().unwrap();
        assert_eq!(
            (resumed.captured, resumed.learnt),
            (12, Duration::from_millis(1500))
        );
        let mut recent = resumed.recent;
        assert_eq!(recent.values, 3 * 2, "a's newest 2 and b's 1");
        // `a` sends again: its resumed windows are its oldest.
        recent.push(&a, &[3.0; 2]);
        let kept: Vec<f32> = recent.streams["s/0"].1.iter().map(|w| w[0]).collect();
        assert_eq!(kept, [2.0, 3.0]);
        // `b` has not sent since: its resumed windows are saved again with the rest.
        std::fs::write(&path, recent.saved(2, 13, Duration::ZERO).unwrap()).unwrap();
        let again = Recent::resume(&path, 2, 2).unwrap().unwrap().recent;
        assert_eq!(again.resumed.len(), 2);
        assert_eq!(
            again.resumed["s/1"]
                .iter()
                .map(|w| w[0])
                .collect::<Vec<_>>(),
            [7.0]
        );

        // Windows of another shape (the stream's window changed since) are refused.
        let err = Recent::resume(&path, 2, 4).unwrap_err().to_string();
        assert!(err.contains("the streams now cut 4"), "{err}");
        // No file: nothing to resume.
        assert!(
            Recent::resume(&dir.path().join("none.npz"), 2, 2)
                .unwrap()
                .is_none()
        );
        // A damaged file is an error, not a panic.
        std::fs::write(&path, b"not a zip").unwrap();
        assert!(Recent::resume(&path, 2, 2).is_err());
    }

    #[test]
    fn recent_windows_are_bounded_per_stream_and_in_all() {
        let mut r = Recent::new(3);
        let a = stream(0);
        for v in 0..5 {
            assert!(r.push(&a, &[v as f32; 2]));
        }
        let kept: Vec<f32> = r.streams["s/0"].1.iter().map(|w| w[0]).collect();
        assert_eq!(kept, [2.0, 3.0, 4.0]);
        // A stream whose windows would take the kept values over the bound is refused, once.
        // Past the bound a kept stream's newest window replaces its oldest, and a stream with
        // none kept is refused, once.
        let big = vec![9.0; RECENT_VALUES - 6];
        assert!(r.push(&a, &big));
        let kept: Vec<usize> = r.streams["s/0"].1.iter().map(Vec::len).collect();
        assert_eq!(
            kept,
            [2, 2, RECENT_VALUES - 6],
            "oldest dropped for the keep"
        );
        let b = stream(1);
        assert!(r.push(&b, &[1.0; 2]), "4 values left");
        assert!(!r.push(&stream(2), &[1.0; 4]));
        assert!(r.push(&stream(2), &[1.0; 4]), "refused once, then quietly");
        assert!(!r.streams.contains_key("s/2"));
        assert!(r.push(&b, &[2.0; 2]), "a kept stream carries on");
        let kept: Vec<f32> = r.streams["s/1"].1.iter().map(|w| w[0]).collect();
        assert_eq!(kept, [2.0], "its newest replaced its oldest");
        assert!(r.values <= RECENT_VALUES);
    }
}
