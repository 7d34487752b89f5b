//! The capture store: healthy windows of one model on disk, in bounded, rotated `.npy` shards,
//! for the learner's first training run and for retraining.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array3, Axis};
use ndarray_npy::WriteNpyExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::info;

use crate::telemetry::metrics::CaptureLabel;

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
    /// Capturing stopped: the disk is full or at its floor. Scoring is not affected.
    #[error(
        "capture {path} stopped ({}): {detail}; scoring goes on, capture retries in {} s",
        .reason.as_str(), STOP_RETRY.as_secs()
    )]
    Stopped {
        /// The capture folder.
        path: PathBuf,
        /// Why, as exported.
        reason: StopReason,
        /// What happened.
        detail: String,
    },
}

/// Why capturing stopped (the `reason` label of `ebgand_capture_stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The write failed with "no space left on device" (or over quota).
    DiskFull,
    /// Writing the shard would leave less free space than `learning.min_free_mb`.
    MinFree,
    /// Another write error.
    Io,
}

impl StopReason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::MinFree => "min_free",
            Self::Io => "io",
        }
    }
}

/// How long a stopped capture waits before it tries to write again.
pub const STOP_RETRY: Duration = Duration::from_secs(600);

/// How long captured windows may wait in memory before they are written (checked at each
/// window offered to the capture, and by its owner every [`Capture::check_every`] while no
/// window comes, so a stream that falls silent does not keep its last ones in memory). A slow stream fills
/// a shard slowly (one window per 5 minutes, sampled 1 in 10: 35 days for 1,000 windows), so
/// without this its retraining would see only old shards and a crash would lose weeks of
/// capture. The newest shard is topped up until full, so frequent writes do not shorten the
/// history `max_shards` keeps.
pub const FLUSH_EVERY: Duration = Duration::from_secs(600);

/// Healthy windows of one model on disk: shards of `shard_windows` windows each
/// (`shard-000001.npy`, float32 `[n, W, C]`), at most `max_shards` of them (the oldest is
/// removed first). A shard is written to a temp name, synced and renamed, so neither a crash of
/// the daemon nor a power loss leaves a half-written shard (one found empty all the same, on a
/// disk that lies about its syncs, [`Capture::load`] skips with a warning). With [`Capture::flushing_every`], windows are written at least that
/// often: the newest shard this capture wrote (or found when it opened) is rewritten with the
/// new windows until it holds `shard_windows`, so every shard but the newest stays full.
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
    /// Free bytes the filesystem must keep after a shard is written.
    min_free: u64,
    /// Since when and why capturing is stopped.
    stopped: Option<(StopReason, Instant)>,
    /// `ebgand_capture_stopped{model, reason}`, when reporting.
    report: Option<(Family<CaptureLabel, Gauge>, String)>,
    /// Write what is buffered once its oldest window has waited this long.
    flush_every: Option<Duration>,
    /// When the oldest buffered window was added.
    oldest: Option<Instant>,
    /// The newest shard on disk, when it may not be full, and its windows as far as known (0
    /// until this capture has written it): the next write tops it up if it has room.
    tail: Option<(u64, usize)>,
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
        let newest = shards(dir)?.iter().filter_map(|p| shard_number(p)).max();
        let next = newest.map_or(1, |n| n + 1);
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
            min_free: 0,
            stopped: None,
            report: None,
            flush_every: None,
            oldest: None,
            // A partial shard left by the last run (written early, or at shutdown) is topped
            // up; how full it is is read at the first write, not at start-up.
            tail: newest.map(|n| (n, 0)),
        })
    }

    /// Writes buffered windows once the oldest has waited `every` (see [`FLUSH_EVERY`]),
    /// checked as windows are offered (sampled out or not) and by [`Capture::write_due`];
    /// [`Capture::flush`] writes them at once.
    #[must_use]
    pub fn flushing_every(mut self, every: Duration) -> Self {
        self.flush_every = Some(every);
        self
    }

    /// Stops capturing (until [`STOP_RETRY`] has passed) rather than leave the filesystem
    /// with less than `bytes` free.
    #[must_use]
    pub fn min_free(mut self, bytes: u64) -> Self {
        self.min_free = bytes;
        self
    }

    /// Exports stops as `ebgand_capture_stopped{model, reason} 1` (0 once resumed).
    #[must_use]
    pub fn reporting(mut self, gauges: Family<CaptureLabel, Gauge>, model: &str) -> Self {
        self.report = Some((gauges, model.to_owned()));
        self
    }

    /// The capture folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Values of one window it captures (window × channels).
    pub fn window_values(&self) -> usize {
        self.window * self.channels
    }

    /// How long a captured window may wait in memory ([`Capture::flushing_every`]), if set.
    pub fn flush_interval(&self) -> Option<Duration> {
        self.flush_every
    }

    /// Why capturing is stopped, if it is.
    pub fn stopped(&self) -> Option<StopReason> {
        self.stopped.map(|(r, _)| r)
    }

    fn set_stopped(&mut self, stop: Option<StopReason>) {
        if let Some((gauges, model)) = &self.report {
            for reason in [StopReason::DiskFull, StopReason::MinFree, StopReason::Io] {
                let label = CaptureLabel {
                    model: model.clone(),
                    reason: reason.as_str(),
                };
                gauges
                    .get_or_create(&label)
                    .set(i64::from(stop == Some(reason)));
            }
        }
        self.stopped = stop.map(|r| (r, Instant::now()));
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
        if self
            .stopped
            .is_some_and(|(_, since)| since.elapsed() < STOP_RETRY)
        {
            return Ok(());
        }
        self.offered += 1;
        if window.len() == self.window * self.channels
            && (self.offered - 1).is_multiple_of(self.every)
        {
            self.buf.extend_from_slice(window);
            self.oldest.get_or_insert_with(Instant::now);
        }
        // Checked on every window offered, kept or not, so a sampled slow stream's windows
        // wait about `flush_every`, not until the next one kept.
        let on_disk = self.tail.map_or(0, |(_, rows)| rows);
        if on_disk + self.buffered() >= self.shard_windows || self.due() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is buffered if the oldest window has waited `flush_every`: called on a
    /// timer, so the last windows of streams gone quiet reach disk without another window.
    ///
    /// # Errors
    /// As [`Capture::flush`].
    pub fn write_due(&mut self) -> Result<(), CaptureError> {
        if self.due() { self.flush() } else { Ok(()) }
    }

    /// How often an owner should call [`Capture::write_due`] while no window arrives: a tenth
    /// of the flush interval (a minute by default), so a window waits at most 1.1 times it;
    /// an hour without one.
    pub fn check_every(&self) -> Duration {
        self.flush_every.map_or(Duration::from_secs(3600), |every| {
            (every / 10).max(Duration::from_millis(1))
        })
    }

    fn due(&self) -> bool {
        self.oldest
            .zip(self.flush_every)
            .is_some_and(|(since, every)| since.elapsed() >= every)
    }

    /// Windows buffered and not yet on disk.
    pub fn buffered(&self) -> usize {
        self.buf.len() / (self.window * self.channels).max(1)
    }

    /// Writes what is buffered as a shard, then removes the oldest shards beyond the cap.
    ///
    /// A full disk, the `min_free` floor, or another write error stops capturing for
    /// [`STOP_RETRY`] ([`CaptureError::Stopped`], once); the buffered windows are dropped and no
    /// partial shard is left behind.
    ///
    /// # Errors
    /// [`CaptureError`] when writing fails.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        // Off the runtime's worker when on one (`on_disk`): the alerting stage and the
        // learners write shards between windows, and an edge box's card is slow.
        match crate::durable::on_disk(|| self.write_shard()) {
            Err(CaptureError::Stopped {
                path,
                reason,
                detail,
            }) => {
                self.set_stopped(Some(reason));
                Err(CaptureError::Stopped {
                    path,
                    reason,
                    detail,
                })
            }
            Ok(()) if self.stopped.is_some() => {
                info!(path = %self.dir.display(), "Capture resumed.");
                self.set_stopped(None);
                Ok(())
            }
            other => other,
        }
    }

    fn write_shard(&mut self) -> Result<(), CaptureError> {
        let n = self.buffered();
        if n == 0 {
            return Ok(());
        }
        let mut data = std::mem::take(&mut self.buf);
        self.oldest = None;
        // Number from the folder itself: another writer (the learner, then the alerting stage)
        // may have added shards since this one opened.
        let newest = shards(&self.dir)?
            .iter()
            .filter_map(|p| shard_number(p))
            .max();
        self.next = self.next.max(newest.map_or(1, |n| n + 1));
        // Top up the newest shard when it is the partial one this capture knows, and still
        // has room (another writer may have added to it); else start a new one.
        let mut number = self.next;
        let mut rows = n;
        if let Some((tail, _)) = self.tail.take()
            && newest == Some(tail)
            && let Ok(old) = read_shard(&shard_path(&self.dir, tail), self.window, self.channels)
            && old.len_of(Axis(0)) + n <= self.shard_windows
        {
            let mut merged: Vec<f32> = old.iter().copied().collect();
            merged.append(&mut data);
            data = merged;
            number = tail;
            rows += old.len_of(Axis(0));
        }
        let path = shard_path(&self.dir, number);
        let npy = |reason: String| CaptureError::Npy {
            path: path.clone(),
            reason,
        };
        let array = Array3::from_shape_vec((rows, self.window, self.channels), data)
            .map_err(|e| npy(e.to_string()))?;
        let mut bytes = Vec::new();
        array
            .write_npy(&mut bytes)
            .map_err(|e| npy(e.to_string()))?;
        self.write_whole(&path, &bytes)?;
        self.next = self.next.max(number + 1);
        self.tail = (rows < self.shard_windows).then_some((number, rows));
        let all = shards(&self.dir)?;
        for old in all.iter().take(all.len().saturating_sub(self.max_shards)) {
            fs::remove_file(old).map_err(|source| CaptureError::Io {
                path: old.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Writes `bytes` as the file `name` in the capture folder (not a shard: the learner's
    /// saved progress), whole and under the same free-space floor as the shards.
    ///
    /// # Errors
    /// As writing a shard: [`CaptureError::Stopped`] for a full disk, the floor or another
    /// write error (capturing itself is not stopped by it), [`CaptureError::Io`] for the
    /// rename.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), CaptureError> {
        self.write_whole(&self.dir.join(name), bytes)
    }

    /// Writes `bytes` to `path` in the capture folder through a temp file renamed over it,
    /// unless that would leave less than `min_free` bytes free.
    fn write_whole(&self, path: &Path, bytes: &[u8]) -> Result<(), CaptureError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = self.dir.join(format!(".{}.tmp", name.unwrap_or_default()));
        let stopped = |reason, detail: String| CaptureError::Stopped {
            path: self.dir.clone(),
            reason,
            detail,
        };
        if self.min_free > 0 {
            let st = rustix::fs::statvfs(&self.dir)
                .map_err(|e| stopped(StopReason::Io, format!("statvfs: {e}")))?;
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < self.min_free.saturating_add(bytes.len() as u64) {
                return Err(stopped(
                    StopReason::MinFree,
                    format!(
                        "{free} bytes free, a {} byte shard would go below the floor of {}",
                        bytes.len(),
                        self.min_free
                    ),
                ));
            }
        }
        // Synced before the rename: a shard topped up holds older windows too, and a power cut
        // must not leave it renamed with nothing in it (nor learning.npz, the learning's
        // progress). A leftover temp file is never read as a shard and is replaced next time.
        if let Err(e) = crate::durable::write_synced(&tmp, bytes) {
            let reason = match e.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    StopReason::DiskFull
                }
                _ => StopReason::Io,
            };
            return Err(stopped(reason, format!("{}: {e}", tmp.display())));
        }
        // The rename replaces a topped-up shard whole: a reader sees the old one or the new.
        fs::rename(&tmp, path).map_err(|source| CaptureError::Io {
            path: path.into(),
            source,
        })
    }

    /// Every captured window on disk, oldest first, as one `[n, W, C]` array.
    ///
    /// # Errors
    /// [`CaptureError`] when a shard cannot be read.
    pub fn load(dir: &Path) -> Result<Array3<f32>, CaptureError> {
        let mut parts = Vec::new();
        for p in shards(dir)? {
            // A shard cut short by a power loss is left out, not fatal to every training run.
            match ndarray_npy::read_npy::<_, Array3<f32>>(&p) {
                Ok(a) => parts.push(a),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "Unreadable captured shard skipped.")
                }
            }
        }
        // Windows of another shape than the newest shard's were captured before the stream's
        // window or channels changed: they cannot train the model it has now.
        let newest = parts.last().map(|a| a.shape()[1..].to_vec());
        let views: Vec<_> = parts
            .iter()
            .filter(|a| {
                let same = newest.as_deref() == Some(&a.shape()[1..]);
                if !same {
                    tracing::warn!(dir = %dir.display(), shape = ?&a.shape()[1..], newest = ?newest, "Captured windows of another shape than the newest skipped.");
                }
                same
            })
            .map(|a| a.view())
            .collect();
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

fn shard_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("shard-{number:06}.npy"))
}

/// One shard, checked to hold windows of `window` × `channels`.
fn read_shard(path: &Path, window: usize, channels: usize) -> Result<Array3<f32>, CaptureError> {
    let npy = |reason: String| CaptureError::Npy {
        path: path.into(),
        reason,
    };
    let a: Array3<f32> = ndarray_npy::read_npy(path).map_err(|e| npy(e.to_string()))?;
    if a.shape()[1..] != [window, channels] {
        return Err(npy(format!(
            "windows of {:?}, expected [{window}, {channels}]",
            &a.shape()[1..]
        )));
    }
    Ok(a)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_full_disk_stops_capture_and_leaves_no_partial_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 3, 4).unwrap();
        // The kernel's own "no space left on device": the temp shard name points at /dev/full.
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".shard-000001.npy.tmp")).unwrap();
        for _ in 0..2 {
            c.push(&[1.0, 2.0]).unwrap();
        }
        let err = c.push(&[1.0, 2.0]).unwrap_err();
        assert!(
            matches!(
                err,
                CaptureError::Stopped {
                    reason: StopReason::DiskFull,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(c.stopped(), Some(StopReason::DiskFull));
        // While stopped, windows are dropped without error; nothing half-written remains.
        for _ in 0..10 {
            c.push(&[1.0, 2.0]).unwrap();
        }
        assert_eq!(c.buffered(), 0);
        assert!(shards(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join(".shard-000001.npy.tmp").exists());
    }

    #[test]
    fn the_free_space_floor_stops_capture_and_the_learner_s_saved_progress() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 1, 4)
            .unwrap()
            .min_free(u64::MAX / 2);
        let err = c.push(&[1.0, 2.0]).unwrap_err();
        assert!(err.to_string().contains("min_free"), "{err}");
        assert_eq!(c.stopped(), Some(StopReason::MinFree));
        assert!(shards(dir.path()).unwrap().is_empty());
        let err = c.write_file("learning.npz", b"saved").unwrap_err();
        assert!(err.to_string().contains("min_free"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_slow_stream_s_windows_reach_disk_in_time_and_top_up_one_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 3, 2)
            .unwrap()
            .flushing_every(Duration::ZERO);
        for i in 0..3 {
            c.push(&[i as f32, i as f32]).unwrap();
            // Each window is on disk at once, in the one shard being topped up.
            assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[i + 1, 2, 1]);
            assert_eq!(shards(dir.path()).unwrap().len(), 1);
        }
        // Full: the next window starts a second shard.
        c.push(&[3.0, 3.0]).unwrap();
        assert_eq!(shards(dir.path()).unwrap().len(), 2);
        // A restart tops up the partial shard it finds rather than start another.
        drop(c);
        let mut c = Capture::open(dir.path(), 2, 1, 3, 2)
            .unwrap()
            .flushing_every(Duration::ZERO);
        c.push(&[4.0, 4.0]).unwrap();
        assert_eq!(shards(dir.path()).unwrap().len(), 2);
        let all = Capture::load(dir.path()).unwrap();
        let firsts: Vec<f32> = all.index_axis(Axis(2), 0).column(0).to_vec();
        assert_eq!(firsts, [0.0, 1.0, 2.0, 3.0, 4.0]);
        // Rotation still counts full shards: two more windows fill the second and start a
        // third, and the oldest goes.
        c.push(&[5.0, 5.0]).unwrap();
        c.push(&[6.0, 6.0]).unwrap();
        let all = Capture::load(dir.path()).unwrap();
        let firsts: Vec<f32> = all.index_axis(Axis(2), 0).column(0).to_vec();
        assert_eq!(firsts, [3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn a_window_sampled_out_still_writes_the_ones_kept_when_they_are_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 1, 1, 100, 2)
            .unwrap()
            .sampled(10)
            .flushing_every(Duration::from_millis(20));
        c.push(&[1.0]).unwrap();
        assert_eq!(c.buffered(), 1);
        std::thread::sleep(Duration::from_millis(30));
        // The next window is not kept (one in 10), but the kept one has waited long enough.
        c.push(&[2.0]).unwrap();
        assert_eq!(c.buffered(), 0);
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[1, 1, 1]);
    }

    #[test]
    fn windows_of_a_stream_gone_quiet_reach_disk_on_the_timer() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 1, 1, 100, 2)
            .unwrap()
            .flushing_every(Duration::from_millis(500));
        c.push(&[1.0]).unwrap();
        c.write_due().unwrap();
        assert_eq!(c.buffered(), 1, "not due yet");
        std::thread::sleep(Duration::from_millis(600));
        // No further window arrives; the timer's call writes the one waiting.
        c.write_due().unwrap();
        assert_eq!(c.buffered(), 0);
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[1, 1, 1]);
    }

    #[test]
    fn without_a_flush_interval_windows_wait_for_a_full_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 3, 2)
            .unwrap()
            .flushing_every(Duration::from_secs(3600));
        c.push(&[1.0, 1.0]).unwrap();
        assert_eq!(c.buffered(), 1);
        assert!(shards(dir.path()).unwrap().is_empty());
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
    /// One shard left empty (a power cut after a new shard's rename, its data not on disk),
    /// or holding windows of another shape (captured before the stream's window changed),
    /// does not make every other captured window unreadable for training.
    #[test]
    fn an_empty_shard_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Capture::open(dir.path(), 2, 1, 2, 10).unwrap();
        for _ in 0..2 {
            c.push(&[1.0, 2.0]).unwrap();
        }
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[2, 2, 1]);
        std::fs::write(dir.path().join("shard-000002.npy"), b"").unwrap();
        let loaded = Capture::load(dir.path());
        assert!(loaded.is_ok(), "{:?}", loaded.err());
        // Older windows of 3 samples, before the newest of 2.
        ndarray_npy::write_npy(
            dir.path().join("shard-000000.npy"),
            &Array3::<f32>::zeros((4, 3, 1)),
        )
        .unwrap();
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[2, 2, 1]);
    }
}
