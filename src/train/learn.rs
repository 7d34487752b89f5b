//! Learning from the stream: healthy windows captured to bounded, rotated `.npy` shards, and
//! the learner that stands in for a model's scorer until a first version is trained.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array3, Axis};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::control::{Command, ControlMessage};
use crate::model::Window;
use crate::mqtt::Publisher;
use crate::telemetry::Metrics;

/// Errors of the capture store.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// File I/O.
    #[error("capture {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A shard could not be written or read as `.npy`.
    #[error("capture {path}: {reason}")]
    Npy {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Healthy windows of one model on disk: shards of `shard_windows` windows each
/// (`shard-000001.npy`, float32 `[n, W, C]`), at most `max_shards` of them (the oldest is
/// removed first). A shard is written to a temp name and renamed, so a crash never leaves a
/// half-written shard.
#[derive(Debug)]
pub struct Capture {
    dir: PathBuf,
    window: usize,
    channels: usize,
    shard_windows: usize,
    max_shards: usize,
    buf: Vec<f32>,
    next: u64,
    every: u64,
    offered: u64,
}

impl Capture {
    /// Opens (creating) a capture folder, continuing its shard numbering.
    ///
    /// # Errors
    /// [`CaptureError::Io`] when the folder cannot be created or listed.
    pub fn open(
        dir: &Path,
        window: usize,
        channels: usize,
        shard_windows: usize,
        max_shards: usize,
    ) -> Result<Self, CaptureError> {
        fs::create_dir_all(dir).map_err(|source| CaptureError::Io {
            path: dir.into(),
            source,
        })?;
        let next = shards(dir)?
            .iter()
            .filter_map(|p| shard_number(p))
            .max()
            .map_or(1, |n| n + 1);
        Ok(Self {
            dir: dir.into(),
            window,
            channels,
            shard_windows: shard_windows.max(1),
            max_shards: max_shards.max(1),
            buf: Vec::new(),
            next,
            every: 1,
            offered: 0,
        })
    }

    /// Keeps one window in `every` (1: all). Monitoring streams are captured sampled: a day of
    /// healthy traffic needs far fewer windows than it has to retrain well.
    #[must_use]
    pub fn sampled(mut self, every: usize) -> Self {
        self.every = every.max(1) as u64;
        self
    }

    /// Adds one window (or skips it, when sampled); writes a shard when one is full.
    ///
    /// # Errors
    /// [`CaptureError`] when the shard cannot be written (the window is then dropped from the
    /// buffer with the rest of the shard).
    pub fn push(&mut self, window: &[f32]) -> Result<(), CaptureError> {
        self.offered += 1;
        if window.len() != self.window * self.channels
            || !(self.offered - 1).is_multiple_of(self.every)
        {
            return Ok(());
        }
        self.buf.extend_from_slice(window);
        if self.buffered() >= self.shard_windows {
            self.flush()?;
        }
        Ok(())
    }

    /// Windows buffered and not yet on disk.
    pub fn buffered(&self) -> usize {
        self.buf.len() / (self.window * self.channels).max(1)
    }

    /// Writes what is buffered as a shard, then removes the oldest shards beyond the cap.
    ///
    /// # Errors
    /// [`CaptureError`] when writing fails.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        let n = self.buffered();
        if n == 0 {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        // Number from the folder itself: another writer (the learner, then the alerting stage)
        // may have added shards since this one opened.
        self.next = self.next.max(
            shards(&self.dir)?
                .iter()
                .filter_map(|p| shard_number(p))
                .max()
                .map_or(1, |n| n + 1),
        );
        let path = self.dir.join(format!("shard-{:06}.npy", self.next));
        let tmp = self.dir.join(format!(".shard-{:06}.npy.tmp", self.next));
        let npy = |reason: String| CaptureError::Npy {
            path: path.clone(),
            reason,
        };
        let array = Array3::from_shape_vec((n, self.window, self.channels), data)
            .map_err(|e| npy(e.to_string()))?;
        ndarray_npy::write_npy(&tmp, &array).map_err(|e| npy(e.to_string()))?;
        fs::rename(&tmp, &path).map_err(|source| CaptureError::Io {
            path: path.clone(),
            source,
        })?;
        self.next += 1;
        let all = shards(&self.dir)?;
        for old in all.iter().take(all.len().saturating_sub(self.max_shards)) {
            fs::remove_file(old).map_err(|source| CaptureError::Io {
                path: old.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Every captured window on disk, oldest first, as one `[n, W, C]` array.
    ///
    /// # Errors
    /// [`CaptureError`] when a shard cannot be read.
    pub fn load(dir: &Path) -> Result<Array3<f32>, CaptureError> {
        let mut parts = Vec::new();
        for p in shards(dir)? {
            let a: Array3<f32> = ndarray_npy::read_npy(&p).map_err(|e| CaptureError::Npy {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            parts.push(a);
        }
        let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
        if views.is_empty() {
            return Err(CaptureError::Npy {
                path: dir.into(),
                reason: "no captured windows".into(),
            });
        }
        ndarray::concatenate(Axis(0), &views).map_err(|e| CaptureError::Npy {
            path: dir.into(),
            reason: e.to_string(),
        })
    }
}

fn shard_number(p: &Path) -> Option<u64> {
    p.file_name()?
        .to_str()?
        .strip_prefix("shard-")?
        .strip_suffix(".npy")?
        .parse()
        .ok()
}

fn shards(dir: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| CaptureError::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| shard_number(p).is_some())
        .collect();
    v.sort();
    Ok(v)
}

/// How long a model learns before its first training run: a number of windows, or a
/// duration (whichever comes first; the duration needs at least [`LearningPeriod::MIN`]
/// windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearningPeriod {
    /// Windows to capture.
    pub windows: usize,
    /// Time to capture for, if set.
    pub duration: Option<std::time::Duration>,
}

impl LearningPeriod {
    /// Fewest windows a training run is started on.
    pub const MIN: usize = 10;

    /// Whether learning is over after `captured` windows and `elapsed` time.
    pub fn over(&self, captured: usize, elapsed: std::time::Duration) -> bool {
        captured >= self.windows
            || (self.duration.is_some_and(|d| elapsed >= d) && captured >= Self::MIN)
    }
}

/// Stands in for a model's scorer while it has no version: captures every window (the stream
/// is assumed healthy while learning), asks the control loop to train once `target` windows
/// are captured, and hands the window queue back when the trained model is activated.
///
/// Windows consumed here are captured, not scored: they are counted in
/// `ebgand_windows_captured_total`, and each stream's retained state says `learning`.
#[allow(clippy::too_many_arguments)]
pub async fn learner(
    model: String,
    mut rx: mpsc::Receiver<Window>,
    mut capture: Capture,
    period: LearningPeriod,
    control: mpsc::Sender<ControlMessage>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    handover: oneshot::Receiver<()>,
) -> mpsc::Receiver<Window> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut captured = 0usize;
    let mut asked = false;
    let started = std::time::Instant::now();
    let mut handover = handover;
    metrics.set_phase(&model, "learning");
    loop {
        tokio::select! {
            biased;
            _ = &mut handover => break,
            w = rx.recv() => {
                let Some(w) = w else { break };
                if seen.insert(w.stream.id.clone()) {
                    publisher.phase(&w.stream.id, &model, "learning", captured).await;
                }
                if let Err(e) = capture.push(&w.raw.data) {
                    warn!(model = %model, error = %e, "Cannot write captured windows; they are not kept.");
                }
                captured += 1;
                metrics.windows_captured.inc();
                if !asked && period.over(captured, started.elapsed()) {
                    if let Err(e) = capture.flush() {
                        warn!(model = %model, error = %e, "Cannot write captured windows.");
                    }
                    info!(model = %model, windows = captured, "Learning period over; training.");
                    metrics.set_phase(&model, "training");
                    for stream in &seen {
                        publisher.phase(stream, &model, "training", captured).await;
                    }
                    let train = ControlMessage::Command(Command::Train { model: model.clone() });
                    asked = control.send(train).await.is_ok();
                }
            }
        }
    }
    if let Err(e) = capture.flush() {
        warn!(model = %model, error = %e, "Cannot write captured windows.");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_ends_on_windows_or_duration() {
        use std::time::Duration;
        let p = LearningPeriod {
            windows: 100,
            duration: Some(Duration::from_secs(60)),
        };
        assert!(!p.over(99, Duration::from_secs(1)));
        assert!(p.over(100, Duration::from_secs(1)));
        assert!(p.over(10, Duration::from_secs(60)));
        assert!(!p.over(9, Duration::from_secs(600)));
        assert!(
            !LearningPeriod {
                windows: 100,
                duration: None
            }
            .over(50, Duration::from_secs(600))
        );
    }

    #[test]
    fn sampling_keeps_one_in_n() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 1, 1, 100, 2).unwrap().sampled(3);
        for i in 0..10 {
            c.push(&[i as f32]).unwrap();
        }
        assert_eq!(c.buffered(), 4);
    }

    #[test]
    fn shards_rotate_and_load_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 3, 2).unwrap();
        for i in 0..10 {
            c.push(&[i as f32, i as f32]).unwrap();
        }
        c.flush().unwrap();
        // 4 shards written (3, 3, 3, 1 windows); the 2 newest kept.
        assert_eq!(shards(dir.path()).unwrap().len(), 2);
        let all = Capture::load(dir.path()).unwrap();
        assert_eq!(all.shape(), &[4, 2, 1]);
        assert_eq!(all[[0, 0, 0]], 6.0);
        assert_eq!(all[[3, 0, 0]], 9.0);
        // Numbering continues after a restart.
        let c2 = Capture::open(dir.path(), 2, 1, 3, 2).unwrap();
        assert_eq!(c2.next, 5);
    }
}
