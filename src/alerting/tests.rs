//! The alerting stage against a recording sink: what is handed on, in which order, and when
//! progress moves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::detect::{Hysteresis, Names, StreamInfo};
use crate::durable::checkpoint::Judged;
use crate::model::ModelError;
use crate::model::worker::{ModelInfo, ShadowScored, Window};
use crate::pipeline::{Mark, RawWindow};

mod restart;

/// What the sink was handed, in order.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Energy(String, u64),
    Alert(String, &'static str, u64),
    State(String, AlertState, u64),
    /// A forgotten stream's retained state.
    Forgotten(String),
    Close,
}

/// A window number and the explanation published with it.
type Explained = (u64, Option<Explanation>);

/// A window number and its stream's progress while the window was handed on.
type Watched = (u64, Option<Judged>);

#[derive(Clone, Default)]
struct Recording {
    sent: Arc<Mutex<Vec<Sent>>>,
    /// Each alert's and state message's window and explanation.
    explained: Arc<Mutex<Vec<Explained>>>,
    /// Refuse alerts (an outbox that cannot be written).
    refuse_alerts: bool,
    /// Progress to look at as each window's energy is handed on (what a checkpoint taken then
    /// would hold), and what it held: by window, the stream's progress at that moment.
    watch: Arc<Mutex<Option<Progress>>>,
    watched: Arc<Mutex<Vec<Watched>>>,
}

impl Recording {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
    fn alerts(&self) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| matches!(s, Sent::Alert(..)))
            .collect()
    }
    fn push(&self, s: Sent) {
        self.sent.lock().unwrap().push(s);
    }
}

impl AlertSink for Recording {
    type Error = String;

    async fn energy(&self, v: &Verdict) -> Result<(), String> {
        self.push(Sent::Energy(v.stream.clone(), v.seq));
        if let Some(p) = self.watch.lock().unwrap().as_ref() {
            let now = p.snapshot().get(&v.stream).cloned();
            self.watched.lock().unwrap().push((v.seq, now));
        }
        Ok(())
    }

    async fn alert(&self, e: &AlertEvent) -> Result<(), String> {
        if self.refuse_alerts {
            return Err("outbox not writable".into());
        }
        self.push(Sent::Alert(e.stream.clone(), e.state.as_str(), e.seq));
        self.explained
            .lock()
            .unwrap()
            .push((e.seq, e.explanation.clone()));
        Ok(())
    }

    async fn stale(&self, a: &StaleAlert) -> Result<(), String> {
        self.push(Sent::Alert(a.stream.clone(), a.state.as_str(), u64::MAX));
        Ok(())
    }

    async fn state(&self, s: &StateMessage<'_>) -> Result<(), String> {
        self.push(Sent::State(s.stream.to_owned(), s.state, s.seq));
        self.explained
            .lock()
            .unwrap()
            .push((s.seq, s.explanation.cloned()));
        Ok(())
    }

    async fn forgotten(
        &self,
        clear: Option<&ForgottenClear>,
        state: Option<&ForgottenState>,
    ) -> Result<(), String> {
        if let Some(c) = clear {
            assert_eq!((c.state, c.reason), (Transition::Cleared, "forgotten"));
            self.push(Sent::Alert(c.stream.clone(), c.state.as_str(), u64::MAX));
        }
        let Some(state) = state else { return Ok(()) };
        assert_eq!(
            (state.phase, state.state),
            ("forgotten", AlertState::Normal)
        );
        self.push(Sent::Forgotten(state.stream.clone()));
        Ok(())
    }

    async fn close(&self) -> Result<(), String> {
        self.push(Sent::Close);
        Ok(())
    }
}

/// Healthy windows seen, by model.
#[derive(Default)]
struct Healthy(Arc<Mutex<Vec<(String, f32)>>>);

impl Tap for Healthy {
    fn healthy(&mut self, model: &str, window: &[f32]) {
        self.0.lock().unwrap().push((model.to_owned(), window[0]));
    }
    fn flush(&mut self) {}
}

fn stream(id: &str) -> Arc<StreamInfo> {
    Arc::new(StreamInfo::new(
        id,
        crate::detect::Judging::Energy(None),
        Hysteresis {
            raise_after: 2,
            clear_after: 2,
            accept: crate::detect::Accept::Never,
        },
        1,
    ))
}

/// A stream judged by calibrated probability (0.999), the same hysteresis as [`stream`].
fn probability_stream(id: &str) -> Arc<StreamInfo> {
    Arc::new(StreamInfo::new(
        id,
        crate::detect::Judging::Probability(0.999),
        Hysteresis {
            raise_after: 2,
            clear_after: 2,
            accept: crate::detect::Accept::Never,
        },
        1,
    ))
}

fn model(version: &str) -> Arc<ModelInfo> {
    Arc::new(ModelInfo {
        name: "vibration".into(),
        version: version.into(),
        threshold: 1.0,
        provider: "cpu",
    })
}

/// Windows `first..` of one stream with the given energies.
fn batch(s: &Arc<StreamInfo>, first: u64, energies: &[f32]) -> ScoredBatch {
    ScoredBatch {
        model: model("v1"),
        windows: (0..energies.len() as u64)
            .map(|i| Window {
                stream: s.clone(),
                raw: RawWindow {
                    seq: first + i,
                    start: Mark::Index(0),
                    end: Mark::Index(1),
                    data: vec![(first + i) as f32],
                },
            })
            .collect(),
        energies: Ok(energies.to_vec()),
        shadow: None,
        // One value per window: it carries all of the window's energy.
        residual: energies.iter().map(|e| e.sqrt()).collect(),
    }
}

/// A shadow's scores of a batch: its energies, each window's one value carrying all of it.
fn shadow(version: &str, energies: Vec<f32>) -> Option<ShadowScored> {
    Some(ShadowScored {
        model: model(version),
        residual: energies.iter().map(|e| e.sqrt()).collect(),
        energies,
    })
}

fn stage<T: Tap>(sink: &Recording, tap: T, resumed: Resumed) -> (Alerting<Recording, T>, Progress) {
    let progress = Progress::default();
    let a = Alerting::new(
        sink.clone(),
        tap,
        "edge",
        progress.clone(),
        Shadows::default(),
        Arc::new(Metrics::new()),
        resumed,
    );
    (a, progress)
}

#[tokio::test]
async fn a_fault_raises_once_clears_once_and_hands_on_in_order() {
    let sink = Recording::default();
    let healthy = Healthy::default();
    let seen = healthy.0.clone();
    let (mut a, progress) = stage(&sink, healthy, Resumed::default());
    let s = stream("vib/m1");
    //                            0    1    2    3    4    5    6
    a.batch(batch(&s, 0, &[0.5, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5]))
        .await
        .unwrap();
    assert_eq!(
        sink.alerts(),
        vec![
            Sent::Alert("vib/m1".into(), "raised", 2),
            Sent::Alert("vib/m1".into(), "cleared", 5)
        ]
    );
    // Per window: energy first, then the alert, then the retained state (first window and
    // transitions only).
    let sent = sink.sent();
    assert_eq!(sent[0], Sent::Energy("vib/m1".into(), 0));
    assert_eq!(sent[1], Sent::State("vib/m1".into(), AlertState::Normal, 0));
    let raised = sent
        .iter()
        .position(|x| *x == Sent::Alert("vib/m1".into(), "raised", 2))
        .unwrap();
    assert_eq!(sent[raised - 1], Sent::Energy("vib/m1".into(), 2));
    assert_eq!(
        sent[raised + 1],
        Sent::State("vib/m1".into(), AlertState::Raised, 2)
    );
    assert_eq!(
        sent.iter()
            .filter(|x| matches!(x, Sent::Energy(..)))
            .count(),
        7
    );
    // Only windows under the threshold with no alert up reach the tap: window 4 is under it
    // while the alert is still raised.
    let healthy: Vec<f32> = seen.lock().unwrap().iter().map(|(_, v)| *v).collect();
    assert_eq!(healthy, vec![0.0, 5.0, 6.0]);
    let p = progress.snapshot()["vib/m1"].clone();
    assert_eq!(p.next_seq, 7);
    assert_eq!(p.detector, DetectorState::default());
}

#[tokio::test]
async fn progress_never_runs_ahead_of_an_alert_the_sink_refused() {
    let sink = Recording {
        refuse_alerts: true,
        ..Recording::default()
    };
    let (mut a, progress) = stage(&sink, (), Resumed::default());
    let s = stream("vib/m1");
    a.batch(batch(&s, 0, &[0.5, 0.5])).await.unwrap();
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 2);
    assert!(a.batch(batch(&s, 2, &[0.5, 2.0, 2.0, 2.0])).await.is_err());
    // Windows 2 and 3 were handed on; window 4 raised and its alert was refused: the progress
    // stays before the batch, and a restart judges the batch again (windows 2 and 3 are
    // published twice, the alert once).
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 2);
}

#[tokio::test]
async fn a_failed_batch_moves_progress_and_hands_nothing_on() {
    let sink = Recording::default();
    let (mut a, progress) = stage(&sink, (), Resumed::default());
    let mut b = batch(&stream("vib/m1"), 5, &[0.5, 0.5]);
    b.energies = Err(Arc::new(ModelError::Ort("boom".into())));
    a.batch(b).await.unwrap();
    assert!(sink.sent().is_empty());
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 7);
}

#[tokio::test]
async fn run_judges_until_the_scorers_stop_then_closes_the_sink() {
    let sink = Recording::default();
    let (a, _) = stage(&sink, (), Resumed::default());
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(a.run(rx));
    tx.send(batch(&stream("vib/a"), 0, &[0.5])).await.unwrap();
    tx.send(batch(&stream("vib/b"), 0, &[0.5])).await.unwrap();
    drop(tx);
    task.await.unwrap();
    assert_eq!(sink.sent().last(), Some(&Sent::Close));
    assert_eq!(
        sink.sent()
            .iter()
            .filter(|x| matches!(x, Sent::Energy(..)))
            .count(),
        2
    );
}

/// Counts the stage's calls of [`Tap::tick`].
#[derive(Default)]
struct Ticks(Arc<Mutex<usize>>);

impl Tap for Ticks {
    fn healthy(&mut self, _model: &str, _window: &[f32]) {}
    fn flush(&mut self) {}
    fn tick(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

#[tokio::test]
async fn the_tap_is_ticked_while_no_window_arrives() {
    let sink = Recording::default();
    let ticks = Ticks::default();
    let count = ticks.0.clone();
    let (a, _) = stage(&sink, ticks, Resumed::default());
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(a.ticking_every(Duration::from_millis(10)).run(rx));
    // No batch at all: a capture's last windows must still reach disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while *count.lock().unwrap() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        *count.lock().unwrap() >= 2,
        "ticked {} times",
        count.lock().unwrap()
    );
    drop(tx);
    task.await.unwrap();
    assert_eq!(sink.sent(), vec![Sent::Close]);
}

#[tokio::test]
async fn a_shadow_is_judged_beside_the_active_version_and_never_handed_on() {
    let sink = Recording::default();
    let (mut a, _) = stage(&sink, (), Resumed::default());
    let mut b = batch(&stream("vib/m1"), 0, &[0.5, 0.5, 0.5]);
    b.shadow = shadow("v2", vec![2.0, 2.0, 2.0]);
    a.batch(b).await.unwrap();
    assert!(sink.alerts().is_empty());
    let stats = a.shadows.lock().unwrap()["vibration"].clone();
    assert_eq!(
        (stats.windows, stats.shadow_anomalous, stats.shadow_alerts),
        (3, 3, 1)
    );
    assert_eq!((stats.active.as_str(), stats.shadow.as_str()), ("v1", "v2"));
}

#[tokio::test]
async fn a_promoted_shadow_hands_its_calibrations_on_so_streams_do_not_learn_again() {
    let sink = Recording::default();
    let (a, progress) = stage(&sink, (), Resumed::default());
    let cal = crate::detect::Calibration {
        learn_windows: 8,
        warm_windows: 16,
        ..crate::detect::Calibration::default()
    };
    let mut a = a.calibrated(cal.clone());
    let s = probability_stream("vib/m1");
    let calm: Vec<f32> = (0..20).map(|i| 1.0 + (i % 5) as f32 * 0.1).collect();
    // v1 active with v2 in shadow: both learn the stream, the shadow for longer.
    let mut b = batch(&s, 0, &calm[..12]);
    b.shadow = shadow("v2", calm[..12].iter().map(|e| e * 3.0).collect());
    a.batch(b).await.unwrap();
    let active = progress.snapshot()["vib/m1"]
        .detector
        .calibrator
        .clone()
        .unwrap();
    assert_eq!(active.version, "v1");
    assert!(!active.learning(&cal), "v1 judges after 8 windows");
    assert!(
        !a.shadows.lock().unwrap()["vibration"].warm(),
        "v2 learns 16"
    );
    let mut b = batch(&s, 12, &calm[12..]);
    b.shadow = shadow("v2", calm[12..].iter().map(|e| e * 3.0).collect());
    a.batch(b).await.unwrap();
    // 16 windows learnt, the last 4 judged: the shadow is warm.
    assert!(a.shadows.lock().unwrap()["vibration"].warm());
    // v2 promoted: its first windows are judged at once, on the calibration the shadow made.
    let mut b = batch(&s, 20, &[3.3, 3.3]);
    b.model = model("v2");
    a.batch(b).await.unwrap();
    let judged = progress.snapshot()["vib/m1"].clone();
    let c = judged.detector.calibrator.unwrap();
    assert_eq!(c.version, "v2");
    assert_eq!(
        c.seen, 22,
        "20 shadow windows and the 2 after the promotion"
    );
    assert!(sink.alerts().is_empty());
}

#[tokio::test]
async fn alerts_and_states_say_which_channel_carried_the_energy() {
    let sink = Recording::default();
    let (mut a, _) = stage(&sink, (), Resumed::default());
    let s = Arc::new(StreamInfo {
        channels: 2,
        names: Names::channels(&["temperature".into(), "vibration".into()], 2),
        ..(*stream("pump/1")).clone()
    });
    // Two rows of two channels per window; the vibration carries 90 % in the second row.
    let mut b = batch(&s, 0, &[0.5, 2.0, 2.0]);
    for w in &mut b.windows {
        w.raw.data = vec![0.0; 4];
    }
    b.residual = [0.1, 0.0, 0.2, 0.9].repeat(3);
    a.batch(b).await.unwrap();
    let explained = sink.explained.lock().unwrap().clone();
    // The first window's state, then the raise (window 1, raise_after 2) and its state.
    assert_eq!(explained.len(), 3, "{explained:?}");
    for (seq, e) in &explained {
        let e = e
            .as_ref()
            .unwrap_or_else(|| panic!("window {seq} unexplained"));
        assert_eq!(e.top, ["vibration"]);
        assert_eq!(e.channels[1], ("vibration".to_owned(), 0.942));
        assert_eq!(e.rows, [1, 1]);
    }
}

/// A stage whose shadow `v2` (learning 4 windows a stream) has learnt `vib/m1` and only two
/// windows of `vib/m2`, which then went quiet: the shadow is not warm yet.
async fn warming_shadow_with_a_quiet_stream(sink: &Recording) -> Alerting<Recording, ()> {
    let (a, _) = stage(sink, (), Resumed::default());
    let mut a = a.calibrated(crate::detect::Calibration {
        learn_windows: 4,
        warm_windows: 4,
        ..crate::detect::Calibration::default()
    });
    for (stream, windows) in [("vib/m1", 6), ("vib/m2", 2)] {
        let mut b = batch(&probability_stream(stream), 0, &vec![1.0; windows]);
        b.shadow = shadow("v2", vec![2.0; windows]);
        a.batch(b).await.unwrap();
    }
    assert!(!a.shadows.lock().unwrap()["vibration"].warm());
    a
}

#[tokio::test]
async fn a_stream_forgotten_while_a_shadow_warms_does_not_hold_its_promotion_back() {
    let mut a = warming_shadow_with_a_quiet_stream(&Recording::default()).await;
    a.forget("vib/m2").await.unwrap();
    assert!(a.shadows.lock().unwrap()["vibration"].warm());
}

#[tokio::test]
async fn a_stale_stream_does_not_hold_a_warming_shadow_back_until_it_returns() {
    let sink = Recording::default();
    let mut a = warming_shadow_with_a_quiet_stream(&sink).await;
    // m2's sensor dies: its stale alert is raised, and the warm-up no longer waits for it.
    let stale = |state| StreamNews::Stale {
        stream: "vib/m2".into(),
        state,
        silent: None,
        usual: None,
    };
    a.stale(stale(Transition::Raised)).await.unwrap();
    assert!(a.shadows.lock().unwrap()["vibration"].warm());
    // It comes back before the promotion: the shadow waits for it again.
    a.stale(stale(Transition::Cleared)).await.unwrap();
    let mut b = batch(&probability_stream("vib/m2"), 2, &[1.0]);
    b.shadow = shadow("v2", vec![2.0]);
    a.batch(b).await.unwrap();
    assert!(!a.shadows.lock().unwrap()["vibration"].warm());
    assert_eq!(
        sink.alerts(),
        [
            Sent::Alert("vib/m2".into(), "raised", u64::MAX),
            Sent::Alert("vib/m2".into(), "cleared", u64::MAX)
        ]
    );
}

#[tokio::test]
async fn a_warming_shadow_never_learns_the_windows_of_a_raised_alert() {
    let sink = Recording::default();
    let (a, _) = stage(&sink, (), Resumed::default());
    let mut a = a.calibrated(crate::detect::Calibration {
        learn_windows: 8,
        warm_windows: 8,
        ..crate::detect::Calibration::default()
    });
    let s = probability_stream("vib/m1");
    let calm = |n: usize| -> Vec<f32> { (0..n).map(|i| 1.0 + (i % 4) as f32 * 0.1).collect() };
    a.batch(batch(&s, 0, &calm(8))).await.unwrap();
    // A fault: the active version raises after two windows.
    a.batch(batch(&s, 8, &[100.0; 2])).await.unwrap();
    assert_eq!(sink.alerts().len(), 1);
    // A retrained version starts warming in shadow while the fault is still up.
    let mut b = batch(&s, 10, &[100.0; 12]);
    b.shadow = shadow("v2", vec![300.0; 12]);
    a.batch(b).await.unwrap();
    assert!(
        !a.shadows.lock().unwrap()["vibration"].warm(),
        "twelve windows of a raised alert taught the shadow nothing"
    );
    // The machine is healthy again: the alert clears, and the shadow learns from then on.
    let mut b = batch(&s, 22, &calm(10));
    b.shadow = shadow("v2", calm(10).iter().map(|e| e * 3.0).collect());
    a.batch(b).await.unwrap();
    assert!(a.shadows.lock().unwrap()["vibration"].warm());
    // Promoted, it judges the fault's energies as anomalous: they were never learnt.
    let mut b = batch(&s, 32, &[300.0; 2]);
    b.model = model("v2");
    a.batch(b).await.unwrap();
    assert_eq!(sink.alerts().len(), 3, "{:?}", sink.alerts());
}

/// A stream forgotten with its alert raised gets that alert cleared (nothing would judge it
/// again); one forgotten in the normal state only has its retained state say so; one never
/// judged publishes nothing.
#[tokio::test]
async fn a_stream_forgotten_with_its_alert_raised_has_it_cleared() {
    let sink = Recording::default();
    let (mut a, _) = stage(&sink, (), Resumed::default());
    a.batch(batch(&stream("vib/m1"), 0, &[0.5, 2.0, 2.0]))
        .await
        .unwrap();
    a.batch(batch(&stream("vib/m2"), 0, &[0.5])).await.unwrap();
    let before = sink.sent().len();
    for s in ["vib/m1", "vib/m2", "vib/never"] {
        a.forget(s).await.unwrap();
    }
    assert_eq!(
        sink.sent()[before..],
        [
            Sent::Alert("vib/m1".into(), "cleared", u64::MAX),
            Sent::Forgotten("vib/m1".into()),
            Sent::Forgotten("vib/m2".into()),
        ]
    );
    // Back, it starts over: a fresh detector in the normal state.
    a.batch(batch(&stream("vib/m1"), 0, &[0.5])).await.unwrap();
    assert_eq!(
        sink.sent().last(),
        Some(&Sent::State("vib/m1".into(), AlertState::Normal, 0))
    );
}

/// A shadow ended without a promotion (another version activated by hand) leaves no
/// calibrations behind: its version, activated by hand much later, learns afresh instead of
/// judging at once on the stale, unfinished calibration of its warm-up.
#[tokio::test]
async fn an_ended_shadows_calibrations_are_not_adopted_later() {
    let sink = Recording::default();
    let (a, progress) = stage(&sink, (), Resumed::default());
    let mut a = a.calibrated(crate::detect::Calibration {
        learn_windows: 8,
        warm_windows: 16,
        ..crate::detect::Calibration::default()
    });
    let s = probability_stream("vib/m1");
    let calm: Vec<f32> = (0..10).map(|i| 1.0 + (i % 5) as f32 * 0.1).collect();
    // v1 serves; v2 warms in shadow for 10 windows, not warm yet.
    let mut b = batch(&s, 0, &calm);
    b.shadow = shadow("v2", calm.iter().map(|e| e * 3.0).collect());
    a.batch(b).await.unwrap();
    // The operator activates v3: the lifecycle ends the shadow. A batch scored by v3 with the
    // shadow, before it ended, is judged after.
    a.shadows
        .lock()
        .unwrap()
        .get_mut("vibration")
        .unwrap()
        .ended = true;
    let mut b = batch(&s, 10, &calm[..2]);
    b.model = model("v3");
    b.shadow = shadow("v2", vec![3.0; 2]);
    a.batch(b).await.unwrap();
    let mut b = batch(&s, 12, &calm);
    b.model = model("v3");
    a.batch(b).await.unwrap();
    // Much later, v2 is activated by hand: its calibration starts from its first window.
    let mut b = batch(&s, 22, &[3.3]);
    b.model = model("v2");
    a.batch(b).await.unwrap();
    let c = progress.snapshot()["vib/m1"]
        .detector
        .calibrator
        .clone()
        .unwrap();
    assert_eq!((c.version.as_str(), c.seen), ("v2", 1));
}
