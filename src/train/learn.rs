//! Learning from the stream: the learner that stands in for a model's scorer until a first
//! version is trained, capturing every window ([`Capture`]) for that version's training run.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::LearningPeriod;
use crate::control::ControlMessage;
use crate::durable::checkpoint::Progress;
use crate::durable::on_disk;
use crate::model::Window;
use crate::telemetry::Metrics;
use crate::train::capture::Capture;
use crate::train::recent::{RECENT_VALUES, Recent, SAVED};

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
///
/// It carries on from what the model's last learner saved ([`SAVED`]), and saves its own
/// progress as often as the capture writes, when the learning period ends and when its queue
/// closes (not at the handover: the first version's activation removes the file).
pub async fn learner<P: PhaseSink>(
    learning: Learning<P>,
    mut rx: mpsc::Receiver<Window>,
    mut handover: oneshot::Receiver<()>,
) -> (mpsc::Receiver<Window>, Recent) {
    let every = learning.capture.check_every();
    let (recent, captured, learnt) = resumed(&learning);
    let mut state = LearnerState {
        recent,
        learning,
        seen: HashSet::new(),
        captured,
        asked: false,
        started: Instant::now()
            .checked_sub(learnt)
            .unwrap_or_else(Instant::now),
        tick: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        changed: false,
        saved_at: Instant::now(),
    };
    state
        .learning
        .metrics
        .set_phase(&state.learning.model, "learning");
    let handed_over = loop {
        tokio::select! {
            biased;
            _ = &mut handover => break true,
            more = state.step(&mut rx) => if !more { break false },
        }
    };
    let l = &mut state.learning;
    if let Err(e) = l.capture.flush() {
        warn!(model = %l.model, error = %e, "Cannot write captured windows.");
    }
    // Stopping (the queue closed): the next start resumes from the saved progress. Handed
    // over, the first version is being activated and removes the file: nothing to write.
    if !handed_over {
        state.save();
    }
    (rx, state.recent)
}

/// What a learner of `learning` starts from: each stream's newest windows, the windows
/// captured and the time learnt, as the model's last learner saved them ([`SAVED`]); nothing
/// when it saved none or they cannot be read.
fn resumed<P>(learning: &Learning<P>) -> (Recent, usize, Duration) {
    let path = learning.capture.dir().join(SAVED);
    let len = learning.capture.window_values();
    match Recent::resume(&path, learning.keep, len) {
        Ok(Some(r)) => {
            info!(model = %learning.model, captured = r.captured, learnt_s = r.learnt.as_secs(), streams = r.recent.resumed_streams(), "Learning period resumed.");
            (r.recent, r.captured, r.learnt)
        }
        Ok(None) => (Recent::new(learning.keep), 0, Duration::ZERO),
        Err(e) => {
            warn!(model = %learning.model, error = %e, "Cannot resume the learning period; it starts over.");
            (Recent::new(learning.keep), 0, Duration::ZERO)
        }
    }
}

struct LearnerState<P> {
    learning: Learning<P>,
    recent: Recent,
    seen: HashSet<String>,
    captured: usize,
    asked: bool,
    started: Instant,
    /// Writes the capture's due windows while no window arrives.
    tick: tokio::time::Interval,
    /// A window was captured since the last save.
    changed: bool,
    /// When the progress was last saved (or the learner started).
    saved_at: Instant,
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
                self.save_due();
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
        self.changed = true;
        l.metrics.windows_captured.inc();
        self.save_due();
        if self.seen.insert(w.stream.id.clone()) {
            let l = &self.learning;
            l.phases
                .phase(&w.stream.id, &l.model, "learning", self.captured)
                .await;
        }
        self.ask_when_over().await;
        true
    }

    /// Saves the progress when a window was captured since the last save and the capture's
    /// flush interval has passed since: as often as captured windows reach disk.
    fn save_due(&mut self) {
        let every = self.learning.capture.flush_interval();
        if every.is_some_and(|every| self.saved_at.elapsed() >= every) {
            self.save();
        }
    }

    /// Saves the progress ([`SAVED`]) if a window was captured since the last save.
    fn save(&mut self) {
        if !self.changed {
            return;
        }
        let capture = &self.learning.capture;
        let saved = self
            .recent
            .saved(
                capture.window_values(),
                self.captured,
                self.started.elapsed(),
            )
            // Up to 64 MiB: off the runtime's other tasks on a slow disk.
            .and_then(|bytes| on_disk(|| capture.write_file(SAVED, &bytes)));
        if let Err(e) = saved {
            warn!(model = %self.learning.model, error = %e, "Cannot save the learning period's progress; a restart would start it over.");
        }
        self.changed = false;
        self.saved_at = Instant::now();
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
        // A restart during training then trains again at once.
        self.save();
        let l = &mut self.learning;
        info!(model = %l.model, windows = self.captured, "Learning period over; training.");
        l.metrics.set_phase(&l.model, "training");
        self.asked = true;
        let train = ControlMessage::Learnt {
            model: l.model.clone(),
        };
        if l.control.send(train).await.is_err() {
            // The control loop is gone: shutting down.
            return;
        }
        // Not the streams forgotten meanwhile (quiet past `stream_idle_s`): their retained
        // state is not brought back, and the set does not grow with every id ever seen.
        self.seen.retain(|stream| l.progress.tracks(stream));
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
    use crate::control::Command;
    use crate::train::recent::forget_saved;

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
        start_with(dir, period, Heard, Progress::default())
    }

    /// [`start`] with the phases told to `phases` and the windows passed in `progress`.
    fn start_with<P: PhaseSink + 'static>(
        dir: &std::path::Path,
        period: LearningPeriod,
        phases: P,
        progress: Progress,
    ) -> Started {
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
            phases,
            metrics: Arc::new(Metrics::new()),
            progress,
            keep: 2,
        };
        Started {
            tx,
            control: control_rx,
            handover,
            task: tokio::spawn(learner(learning, rx, handover_rx)),
        }
    }

    /// Phases that get through, recorded.
    #[derive(Clone, Default)]
    struct Recorded(Arc<std::sync::Mutex<Vec<(String, &'static str)>>>);

    impl PhaseSink for Recorded {
        async fn phase(&self, stream: &str, _: &str, phase: &'static str, _: usize) {
            self.0.lock().unwrap().push((stream.to_owned(), phase));
        }
    }

    /// A stream forgotten while the model learns (ingest dropped it after `stream_idle_s`) is
    /// not told it trains when the period ends: its retained state is not brought back.
    #[tokio::test]
    async fn a_stream_forgotten_while_learning_is_not_told_it_trains() {
        let dir = tempfile::tempdir().unwrap();
        let (phases, progress) = (Recorded::default(), Progress::default());
        let period = LearningPeriod {
            windows: 6,
            duration: None,
        };
        let mut l = start_with(dir.path(), period, phases.clone(), progress.clone());
        // Streams s/0, s/1 and s/2 send (the learner marks each window passed); once its last
        // window is taken, s/1 goes quiet and is forgotten.
        for seq in 0..5 {
            l.tx.send(window(seq)).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress.next_seq("s/1") < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        progress.forget("s/1");
        l.tx.send(window(5)).await.unwrap();
        let asked = tokio::time::timeout(Duration::from_secs(10), l.control.recv())
            .await
            .expect("the learner asked for training");
        assert!(matches!(asked, Some(ControlMessage::Learnt { .. })));
        l.handover.send(()).unwrap();
        l.task.await.unwrap();
        let mut training: Vec<String> = phases
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| *p == "training")
            .map(|(s, _)| s.clone())
            .collect();
        training.sort();
        assert_eq!(training, ["s/0", "s/2"]);
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
            Some(ControlMessage::Learnt { model }) if model == "m"
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
                    accept: crate::detect::Accept::Never,
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

    /// The windows captured in the progress saved at `saved`, once it holds `n` (or after 10 s).
    async fn captured_by_then(saved: &std::path::Path, n: usize) -> usize {
        let captured = || {
            Recent::resume(saved, 2, 2)
                .ok()
                .flatten()
                .map(|r| r.captured)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while captured().is_none_or(|c| c < n) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        captured().unwrap_or(0)
    }

    /// A learner stopped (or killed) during its learning period is resumed by the next one on
    /// the same folder: the period goes on counting, and each stream's newest windows span
    /// the restart.
    #[tokio::test]
    async fn a_restarted_learner_carries_on_where_the_last_one_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let period = LearningPeriod {
            windows: 10,
            duration: None,
        };
        let l = start(dir.path(), period);
        for seq in 0..6 {
            l.tx.send(window(seq)).await.unwrap();
        }
        // Saved as the capture writes, while the learner runs: a crash now keeps it.
        let saved = dir.path().join(SAVED);
        assert_eq!(captured_by_then(&saved, 6).await, 6);
        assert!(!l.task.is_finished());
        // The daemon stops: the queue closes, and the learner saves what it has.
        drop(l.tx);
        l.task.await.unwrap();

        let mut l = start(dir.path(), period);
        for seq in 6..9 {
            l.tx.send(window(seq)).await.unwrap();
        }
        // The ninth window taken (and saved) before asking whether it trains.
        assert_eq!(captured_by_then(&saved, 9).await, 9);
        assert!(
            l.control.try_recv().is_err(),
            "9 of 10 windows: still learning"
        );
        l.tx.send(window(9)).await.unwrap();
        let asked = tokio::time::timeout(Duration::from_secs(10), l.control.recv())
            .await
            .expect("the resumed learner asked for training at its 10th window");
        assert!(matches!(
            asked,
            Some(ControlMessage::Learnt { model }) if model == "m"
        ));
        l.handover.send(()).unwrap();
        let (_, recent) = l.task.await.unwrap();
        let newest = |id: &str| -> Vec<f32> { recent.streams[id].1.iter().map(|w| w[0]).collect() };
        assert_eq!(newest("s/0"), [6.0, 9.0]);
        assert_eq!(
            newest("s/1"),
            [4.0, 7.0],
            "window 4 came before the restart"
        );
        assert_eq!(
            newest("s/2"),
            [5.0, 8.0],
            "window 5 came before the restart"
        );
        assert_eq!(Capture::load(dir.path()).unwrap().shape(), &[10, 2, 1]);
        forget_saved(dir.path()).unwrap();
        assert!(!saved.exists());
        forget_saved(dir.path()).unwrap();
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
