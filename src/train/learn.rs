//! Learning from the stream: the learner that stands in for a model's scorer until a first
//! version is trained, capturing every window ([`Capture`]) for that version's training run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::LearningPeriod;
use crate::control::{Command, ControlMessage};
use crate::detect::{Calibration, Seed, SeedWindow, Seeded, StreamInfo, energy_parts};
use crate::durable::checkpoint::Progress;
use crate::model::{ModelError, Scorer, Window};
use crate::telemetry::Metrics;
use crate::train::capture::Capture;

/// Where a learner says what its streams are doing (`learning`, then `training`): each
/// stream's retained state, in the daemon.
pub trait PhaseSink: Send + Sync {
    /// `stream` of `model` is in `phase`, with `captured` windows captured so far. Failures are
    /// the sink's to log: the phase is also in the metrics.
    fn phase(
        &self,
        stream: &str,
        model: &str,
        phase: &'static str,
        captured: usize,
    ) -> impl Future<Output = ()> + Send;
}

/// What a learner needs besides its window queue.
#[derive(Debug)]
pub struct Learning<P> {
    /// Model name.
    pub model: String,
    /// Where its windows are captured.
    pub capture: Capture,
    /// How long it learns.
    pub period: LearningPeriod,
    /// Asks the control loop for the training run.
    pub control: mpsc::Sender<ControlMessage>,
    /// Where stream phases go.
    pub phases: P,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Windows consumed are recorded here (they are captured, never judged).
    pub progress: Progress,
    /// Each stream's newest windows kept for the first version's calibration ([`Recent`]):
    /// the larger of `[detect] learn_windows` and the learning period's windows.
    pub keep: usize,
}

/// Values (`f32`) a learner keeps at most in [`Recent`] (64 MiB): past it, a stream's newest
/// window replaces its oldest, and a stream with none kept yet keeps none (it learns under the
/// first version as a stream with no seed does).
pub const RECENT_VALUES: usize = 16 << 20;

/// Each stream's newest windows while its model learns (at most `keep` each, at most
/// [`RECENT_VALUES`] values in all), handed over with the window queue: scored by the first
/// version, they calibrate each stream before that version judges it
/// ([`crate::detect::Seed`]).
#[derive(Debug, Default)]
pub struct Recent {
    /// Per stream id: the stream and its newest windows, oldest first.
    pub streams: HashMap<String, (Arc<StreamInfo>, VecDeque<Vec<f32>>)>,
    keep: usize,
    /// Values kept.
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
    fn push(&mut self, stream: &Arc<StreamInfo>, data: &[f32]) -> bool {
        if self.keep == 0 || self.refused.contains(&stream.id) {
            return true;
        }
        let full = self.values.saturating_add(data.len()) > RECENT_VALUES;
        let ring = match self.streams.get_mut(&stream.id) {
            Some((_, ring)) => ring,
            None if full => {
                self.refused.insert(stream.id.clone());
                return false;
            }
            None => {
                let entry = (stream.clone(), VecDeque::new());
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

    /// Each kept stream's windows scored by `scorer` (the model's first version), and the
    /// stream calibrated on them under it ([`Seed::calibrated`]), by stream id. Windows of
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
        let mut seeded = HashMap::with_capacity(self.streams.len());
        for (id, (stream, ring)) in self.streams {
            let windows = ring.into_iter().filter(|w| w.len() == len).collect();
            let seed = seed(scorer, windows, &stream, SEED_BATCH)?;
            seeded.insert(id, seed.calibrated(stream.channels, cal));
        }
        Ok(seeded)
    }
}

/// Windows scored at once by [`Recent::calibrate`].
const SEED_BATCH: usize = 256;

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

/// Stands in for a model's scorer while it has no version: captures every window (the stream
/// is assumed healthy while learning), asks the control loop to train once the learning period
/// is over, and hands the window queue back when `handover` fires (the trained model is being
/// activated).
///
/// The handover wins over everything else the learner may be waiting on: publishing a phase
/// (the publish connection may be down) or queueing the training request (the control loop
/// that drains that queue is the one waiting for the handover). A window is captured before
/// any of those waits, so none taken off the queue is lost.
///
/// Windows consumed here are captured, not scored: they are counted in
/// `ebgand_windows_captured_total`, and each stream's retained state says `learning`. Each
/// stream's newest ones come back with the queue ([`Recent`]).
pub async fn learner<P: PhaseSink>(
    learning: Learning<P>,
    mut rx: mpsc::Receiver<Window>,
    mut handover: oneshot::Receiver<()>,
) -> (mpsc::Receiver<Window>, Recent) {
    let every = learning.capture.check_every();
    let mut state = LearnerState {
        recent: Recent::new(learning.keep),
        learning,
        seen: HashSet::new(),
        captured: 0,
        asked: false,
        started: std::time::Instant::now(),
        tick: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
    };
    state
        .learning
        .metrics
        .set_phase(&state.learning.model, "learning");
    loop {
        tokio::select! {
            biased;
            _ = &mut handover => break,
            more = state.step(&mut rx) => if !more { break },
        }
    }
    let l = &mut state.learning;
    if let Err(e) = l.capture.flush() {
        warn!(model = %l.model, error = %e, "Cannot write captured windows.");
    }
    (rx, state.recent)
}

struct LearnerState<P> {
    learning: Learning<P>,
    recent: Recent,
    seen: HashSet<String>,
    captured: usize,
    asked: bool,
    started: std::time::Instant,
    /// Writes the capture's due windows while no window arrives.
    tick: tokio::time::Interval,
}

impl<P: PhaseSink> LearnerState<P> {
    /// Captures one window, then sends what it changed (a new stream's phase; the training
    /// request), or, when no window comes for a while, writes the capture's windows that are
    /// due. Cancel-safe: the window is captured before the first wait. `false` when the queue
    /// has closed.
    async fn step(&mut self, rx: &mut mpsc::Receiver<Window>) -> bool {
        let l = &mut self.learning;
        let w = tokio::select! {
            w = rx.recv() => w,
            _ = self.tick.tick() => {
                if let Err(e) = l.capture.write_due() {
                    warn!(model = %l.model, error = %e, "Cannot write captured windows.");
                }
                // Streams that went quiet still end a learning period set in seconds.
                self.ask_when_over().await;
                return true;
            }
        };
        let Some(w) = w else {
            return false;
        };
        if let Err(e) = l.capture.push(&w.raw.data) {
            warn!(model = %l.model, error = %e, "Cannot write captured windows; they are not kept.");
        }
        if !self.recent.push(&w.stream, &w.raw.data) {
            warn!(model = %l.model, stream = %w.stream.id, limit = RECENT_VALUES, "Too many streams to keep their learning windows for the first version's calibration; this one learns under it instead.");
        }
        l.progress.passed(&w.stream.id, w.raw.seq);
        self.captured += 1;
        l.metrics.windows_captured.inc();
        if self.seen.insert(w.stream.id.clone()) {
            l.phases
                .phase(&w.stream.id, &l.model, "learning", self.captured)
                .await;
        }
        self.ask_when_over().await;
        true
    }

    /// Once the learning period is over: writes the capture out, asks the control loop to
    /// train, and tells every stream it is training (once).
    async fn ask_when_over(&mut self) {
        let l = &mut self.learning;
        if self.asked || !l.period.over(self.captured, self.started.elapsed()) {
            return;
        }
        if let Err(e) = l.capture.flush() {
            warn!(model = %l.model, error = %e, "Cannot write captured windows.");
        }
        info!(model = %l.model, windows = self.captured, "Learning period over; training.");
        l.metrics.set_phase(&l.model, "training");
        self.asked = true;
        let train = ControlMessage::Command(Command::Train {
            model: l.model.clone(),
        });
        if l.control.send(train).await.is_err() {
            // The control loop is gone: shutting down.
            return;
        }
        for stream in &self.seen {
            l.phases
                .phase(stream, &l.model, "training", self.captured)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phases that never get through (a publish connection that is down).
    struct Stuck;

    impl PhaseSink for Stuck {
        async fn phase(&self, _: &str, _: &str, _: &'static str, _: usize) {
            std::future::pending::<()>().await;
        }
    }

    /// Phases that get through at once.
    struct Heard;

    impl PhaseSink for Heard {
        async fn phase(&self, _: &str, _: &str, _: &'static str, _: usize) {}
    }

    /// A learner over a capture in `dir` written 20 ms after a window, learning for `period`,
    /// started: the window queue, the control queue, and the handover with the task.
    struct Started {
        tx: mpsc::Sender<Window>,
        control: mpsc::Receiver<ControlMessage>,
        handover: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<(mpsc::Receiver<Window>, Recent)>,
    }

    fn start(dir: &std::path::Path, period: LearningPeriod) -> Started {
        let (control, control_rx) = mpsc::channel(1);
        let (tx, rx) = mpsc::channel(16);
        let (handover, handover_rx) = oneshot::channel();
        let learning = Learning {
            model: "m".into(),
            capture: Capture::open(dir, 2, 1, 100, 2)
                .unwrap()
                .flushing_every(std::time::Duration::from_millis(20)),
            period,
            control,
            phases: Heard,
            metrics: Arc::new(Metrics::new()),
            progress: Progress::default(),
            keep: 2,
        };
        Started {
            tx,
            control: control_rx,
            handover,
            task: tokio::spawn(learner(learning, rx, handover_rx)),
        }
    }

    #[tokio::test]
    async fn a_quiet_stream_s_captured_windows_reach_disk_without_another_window() {
        let dir = tempfile::tempdir().unwrap();
        let period = LearningPeriod {
            windows: 10,
            duration: None,
        };
        let l = start(dir.path(), period);
        l.tx.send(window(0)).await.unwrap();
        // Then silence: the learner's timer writes the window while it still runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Capture::load(dir.path()).map_or(0, |a| a.shape()[0]) == 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[1, 2, 1]);
        assert!(!l.task.is_finished());
        l.handover.send(()).unwrap();
        l.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_learning_period_in_seconds_ends_while_the_streams_are_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let period = LearningPeriod {
            windows: 100,
            duration: Some(std::time::Duration::from_millis(50)),
        };
        let mut l = start(dir.path(), period);
        for seq in 0..LearningPeriod::MIN as u64 {
            l.tx.send(window(seq)).await.unwrap();
        }
        // The fewest windows a run starts on, then silence: the period ends on time, not at
        // the next window.
        let asked = tokio::time::timeout(std::time::Duration::from_secs(10), l.control.recv())
            .await
            .expect("the learner asked for training while no window came");
        assert!(matches!(
            asked,
            Some(ControlMessage::Command(Command::Train { model })) if model == "m"
        ));
        assert_eq!(
            Capture::load(dir.path()).unwrap().shape(),
            &[LearningPeriod::MIN, 2, 1]
        );
        l.handover.send(()).unwrap();
        l.task.await.unwrap();
    }

    fn window(seq: u64) -> Window {
        Window {
            stream: Arc::new(crate::detect::StreamInfo::new(
                format!("s/{}", seq % 3),
                crate::detect::Judging::Energy(None),
                crate::detect::Hysteresis {
                    raise_after: 1,
                    clear_after: 1,
                },
                1,
            )),
            raw: crate::pipeline::RawWindow {
                seq,
                start: crate::pipeline::Mark::Index(0),
                end: crate::pipeline::Mark::Index(0),
                data: vec![seq as f32; 2],
            },
        }
    }

    #[tokio::test]
    async fn the_handover_wins_over_a_stuck_phase_or_a_full_control_queue() {
        let dir = tempfile::tempdir().unwrap();
        // The control queue is full and nobody drains it: the control loop is the one waiting
        // for this handover.
        let (control, _control_rx) = mpsc::channel(1);
        control
            .try_send(ControlMessage::Command(Command::Reload))
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (handover, handover_rx) = oneshot::channel();
        let learning = Learning {
            model: "m".into(),
            capture: Capture::open(dir.path(), 2, 1, 100, 2).unwrap(),
            period: LearningPeriod {
                windows: 10,
                duration: None,
            },
            control,
            phases: Stuck,
            metrics: Arc::new(Metrics::new()),
            progress: Progress::default(),
            keep: 2,
        };
        let task = tokio::spawn(learner(learning, rx, handover_rx));
        for seq in 0..12 {
            tx.send(window(seq)).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        handover.send(()).unwrap();
        let (mut rx, recent) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the learner handed the queue back")
            .unwrap();
        // The queue comes back with the windows the learner had not taken yet.
        let mut left = 0;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        assert!(left < 12, "the learner took no window");
        // With each stream's newest windows it took (streams s/0, s/1, s/2 take turns).
        let taken = 12 - left;
        for (id, (stream, ring)) in &recent.streams {
            assert_eq!(&stream.id, id);
            let mine: Vec<u64> = (0..taken as u64)
                .filter(|seq| format!("s/{}", seq % 3) == *id)
                .collect();
            let newest: Vec<f32> = mine.iter().rev().take(2).rev().map(|&s| s as f32).collect();
            let kept: Vec<f32> = ring.iter().map(|w| w[0]).collect();
            assert_eq!(kept, newest, "{id}");
        }
        assert_eq!(recent.streams.len(), taken.min(3));
    }

    #[test]
    fn recent_windows_are_bounded_per_stream_and_in_all() {
        let mut r = Recent::new(3);
        let a = window(0).stream;
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
        let b = window(1).stream;
        assert!(r.push(&b, &[1.0; 2]), "4 values left");
        assert!(!r.push(&window(2).stream, &[1.0; 4]));
        assert!(
            r.push(&window(2).stream, &[1.0; 4]),
            "refused once, then quietly"
        );
        assert!(!r.streams.contains_key("s/2"));
        assert!(r.push(&b, &[2.0; 2]), "a kept stream carries on");
        let kept: Vec<f32> = r.streams["s/1"].1.iter().map(|w| w[0]).collect();
        assert_eq!(kept, [2.0], "its newest replaced its oldest");
        assert!(r.values <= RECENT_VALUES);
    }

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
}
