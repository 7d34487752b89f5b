//! Unit tests of the detect stage's judge and hysteresis.

use super::*;

/// A stream judged by `judging`, raising after `raise_after` windows and clearing after
/// `clear_after`, with `channels` channels.
fn stream(
    id: &str,
    judging: Judging,
    raise_after: u32,
    clear_after: u32,
    channels: usize,
) -> StreamInfo {
    let hysteresis = Hysteresis {
        raise_after,
        clear_after,
        accept: Accept::Never,
    };
    StreamInfo::new(id, judging, hysteresis, channels)
}

fn feed(d: &mut Detector, energies: &[f32], threshold: f32) -> Vec<(usize, Transition)> {
    energies
        .iter()
        .enumerate()
        .filter_map(|(i, &e)| d.observe(is_anomalous(e, threshold)).map(|t| (i, t)))
        .collect()
}

#[test]
fn raises_once_after_k_and_clears_once_after_j() {
    let mut d = Detector::new(Hysteresis {
        raise_after: 3,
        clear_after: 2,
        accept: Accept::Never,
    });
    //        0    1    2    3    4    5    6    7    8    9    10   11   12
    let e = [
        0.5, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0, 0.5, 2.0, 0.5, 0.5, 0.5,
    ];
    assert_eq!(
        feed(&mut d, &e, 1.0),
        vec![(6, Transition::Raised), (11, Transition::Cleared)]
    );
    assert_eq!(d.state(), AlertState::Normal);
}

#[test]
fn threshold_is_exclusive_and_nan_is_anomalous() {
    assert!(!is_anomalous(1.0, 1.0));
    assert!(is_anomalous(f32::NAN, 1.0));
    assert!(is_anomalous(f32::INFINITY, 1.0));
    let mut d = Detector::new(Hysteresis {
        raise_after: 1,
        clear_after: 1,
        accept: Accept::Never,
    });
    assert_eq!(d.observe(true), Some(Transition::Raised));
    assert_eq!(d.observe(true), None);
    assert_eq!(d.observe(false), Some(Transition::Cleared));
}

#[test]
fn flapping_below_k_never_raises() {
    let mut d = Detector::new(Hysteresis {
        raise_after: 3,
        clear_after: 3,
        accept: Accept::Never,
    });
    let e: Vec<f32> = (0..100)
        .map(|i| if i % 3 == 2 { 0.0 } else { 5.0 })
        .collect();
    assert!(feed(&mut d, &e, 1.0).is_empty());
}

#[test]
fn judge_uses_stream_override_and_builds_events() {
    let stream = stream("vib/m1", Judging::Energy(Some(10.0)), 1, 1, 1);
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let w = RawWindow {
        seq: 7,
        start: Mark::Index(0),
        end: Mark::Index(3),
        data: vec![],
    };
    let mut j = Judge::new(Calibration::default());
    let v = j.judge(&stream, &model, 1.0, &w, 5.0.into());
    assert!(!v.anomalous && v.first && v.threshold == 10.0);
    let v = j.judge(&stream, &model, 1.0, &w, 11.0.into());
    assert!(!v.first);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_500_000_123);
    let ev = AlertEvent::from_verdict(&v, "edge", at).unwrap();
    let json = serde_json::to_value(&ev).unwrap();
    assert_eq!(json["state"], "raised");
    assert_eq!(json["window"]["end"], 3);
    assert_eq!(json["model"]["version"], "v1");
    assert_eq!(json["seq"], 7);
    assert_eq!(json["time"], "2025-11-30T10:53:20.123Z");
    // The f32 energy with its own digits, not the f64 widening's.
    assert_eq!(json["energy"].to_string(), "11.0");
    assert_eq!(json["threshold"].to_string(), "10.0");
}

/// One stream judged by probability over `energies`; returns its transitions.
fn judged(cal: Calibration, energies: impl IntoIterator<Item = f32>) -> Vec<(u64, Transition)> {
    judged_accepting(cal, Accept::Never, None, energies)
        .into_iter()
        .map(|(seq, t, _)| (seq, t))
        .collect()
}

/// The end of window `seq` of a stream whose windows are `step_s` seconds apart by their
/// samples' timestamps (epoch seconds from 2023-11-14), or whose samples carry none (`None`).
fn end_mark(seq: usize, step_s: Option<f64>) -> Mark {
    step_s.map_or(Mark::Index(seq as u64), |s| {
        Mark::Time(serde_json::json!(1.7e9 + seq as f64 * s))
    })
}

/// [`judged`], the stream's alerts accepted by `accept`, its windows `step_s` apart
/// ([`end_mark`]); with each transition, what its verdict says of an acceptance.
fn judged_accepting(
    cal: Calibration,
    accept: Accept,
    step_s: Option<f64>,
    energies: impl IntoIterator<Item = f32>,
) -> Vec<(u64, Transition, Option<u32>)> {
    let mut stream = stream("s", Judging::Probability(0.999), 3, 50, 1);
    stream.hysteresis.accept = accept;
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let mut j = Judge::new(cal);
    let mut out = Vec::new();
    for (seq, e) in energies.into_iter().enumerate() {
        let w = RawWindow {
            seq: seq as u64,
            start: Mark::Index(0),
            end: end_mark(seq, step_s),
            data: vec![],
        };
        let v = j.judge(&stream, &model, 1.0, &w, e.into());
        assert!(
            !(v.learning && v.anomalous),
            "a learning window is never anomalous"
        );
        out.extend(v.transition.map(|t| (seq as u64, t, v.accepted_after)));
    }
    out
}

/// Healthy energies: 1.0 with +-30 % deterministic noise, times `level(window)`.
fn energies(n: usize, level: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let noise = ((i * 7_919) % 1_000) as f32 / 1_000.0; // 0..1, well mixed
            level(i) * (0.7 + 0.6 * noise)
        })
        .collect()
}

fn cal() -> Calibration {
    Calibration {
        learn_windows: 200,
        ..Calibration::default()
    }
}

#[test]
fn a_fault_in_the_learning_windows_is_never_alerted() {
    let e = energies(300, |i| if (50..150).contains(&i) { 100.0 } else { 1.0 });
    assert!(judged(cal(), e.iter().copied().take(200)).is_empty());
}

#[test]
fn slow_drift_is_followed_and_a_fault_climbing_faster_is_raised() {
    // Drift: the energy level doubles over 4,000 windows. Fault: the same doubling every
    // 100 windows from window 1,000.
    let drift = energies(5_000, |i| 2f32.powf(i as f32 / 4_000.0));
    assert_eq!(judged(cal(), drift), vec![]);
    let fault = energies(5_000, |i| 2f32.powf(i.saturating_sub(1_000) as f32 / 100.0));
    let t = judged(cal(), fault);
    assert_eq!(t.len(), 1, "raised once, never cleared: {t:?}");
    assert_eq!(t[0].1, Transition::Raised);
    assert!((1_000..1_400).contains(&t[0].0), "{t:?}");
}

#[test]
fn a_held_step_is_raised_once_then_accepted_or_kept_by_configuration() {
    let step = energies(3_000, |i| if i >= 1_000 { 20.0 } else { 1.0 });
    let kept = judged(cal(), step.clone());
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0], (1_002, Transition::Raised));
    // Accepted after 500 windows: the stream learns the new level (200 windows), then the
    // alert clears after clear_after (50) normal windows.
    // The clear says the level was accepted after 500 windows raised.
    let t = judged_accepting(cal(), Accept::Windows(500), None, step);
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0], (1_002, Transition::Raised, None));
    assert_eq!((t[1].1, t[1].2), (Transition::Cleared, Some(500)));
    assert!((1_750..1_760).contains(&t[1].0), "{t:?}");
}

#[test]
fn an_acceptance_in_seconds_takes_the_same_time_at_any_rate() {
    // The held step of the test above, on a stream of a window a second and on one of ten a
    // second: accepted after 300 s of the stream's own time, 300 windows raised on the first
    // and 3,000 on the second; an acceptance counted in windows would take a tenth of the
    // time on the faster one.
    for (step_s, raised) in [(1.0, 300), (0.1, 3_000)] {
        let step = energies(
            1_500 + raised as usize,
            |i| if i >= 1_000 { 20.0 } else { 1.0 },
        );
        let t = judged_accepting(cal(), Accept::Seconds(300.0), Some(step_s), step);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0], (1_002, Transition::Raised, None));
        // Accepted 300 s after the raise (its windows counted with the raise's and the
        // acceptance's), then 200 windows relearnt and 50 judged normal.
        assert_eq!(
            (t[1].1, t[1].2),
            (Transition::Cleared, Some(raised + 1)),
            "{t:?}"
        );
        let cleared = 1_002 + u64::from(raised);
        assert!((cleared + 250..cleared + 260).contains(&t[1].0), "{t:?}");
    }
    // Samples without times never reach an acceptance in seconds: kept raised.
    let step = energies(3_000, |i| if i >= 1_000 { 20.0 } else { 1.0 });
    let t = judged_accepting(cal(), Accept::Seconds(300.0), None, step);
    assert_eq!(t, vec![(1_002, Transition::Raised, None)]);
}

#[test]
fn an_acceptance_in_seconds_counts_from_the_raise_across_a_restart() {
    // The step at a window a second, accepted after 300 s; the daemon restarts 100 windows
    // into the alert, its detector carried over in the checkpoint (JSON).
    let step = energies(2_000, |i| if i >= 1_000 { 20.0 } else { 1.0 });
    let mut stream = stream("s", Judging::Probability(0.999), 3, 50, 1);
    stream.hysteresis.accept = Accept::Seconds(300.0);
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let mut j = Judge::new(cal());
    let mut out = Vec::new();
    for (seq, &e) in step.iter().enumerate() {
        if seq == 1_102 {
            let saved = serde_json::to_string(&j.saved("s")).unwrap();
            let saved: DetectorState = serde_json::from_str(&saved).unwrap();
            assert_eq!(saved.raised_at, Some(1.7e9 + 1_002.0));
            j = Judge::restored(HashMap::from([("s".to_owned(), saved)]), cal());
        }
        let w = RawWindow {
            seq: seq as u64,
            start: Mark::Index(0),
            end: end_mark(seq, Some(1.0)),
            data: vec![],
        };
        let v = j.judge(&stream, &model, 1.0, &w, e.into());
        out.extend(v.transition.map(|t| (seq, t, v.accepted_after)));
    }
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], (1_002, Transition::Raised, None));
    assert_eq!((out[1].1, out[1].2), (Transition::Cleared, Some(301)));
    assert!((1_552..1_562).contains(&out[1].0), "{out:?}");
}

/// How many of `energies` each stream's verdicts call learning, every stream judged by `j`
/// in turn on each window, with 4 channels of data (so an input level can be followed).
fn learning_windows(j: &mut Judge, streams: &[StreamInfo], energies: &[f32]) -> Vec<usize> {
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let mut learning = vec![0; streams.len()];
    for (seq, &e) in energies.iter().enumerate() {
        let w = RawWindow {
            seq: seq as u64,
            start: Mark::Index(0),
            end: Mark::Index(seq as u64),
            data: vec![1.0; 4],
        };
        for (n, s) in learning.iter_mut().zip(streams) {
            *n += usize::from(j.judge(s, &model, 1.0, &w, e.into()).learning);
        }
    }
    learning
}

#[test]
fn each_stream_learns_by_its_own_window_counts_served_and_in_shadow() {
    let own =
        |counts: StreamTuning| stream("s", Judging::Probability(0.999), 3, 50, 4).tuned_by(counts);
    let named = |id: &str, s: StreamInfo| StreamInfo { id: id.into(), ..s };
    let shared = named("shared", own(StreamTuning::default()));
    let short = named(
        "short",
        own(StreamTuning {
            learn_windows: Some(50),
            level_windows: Some(0),
            ..StreamTuning::default()
        }),
    );
    let warm = named(
        "warm",
        own(StreamTuning {
            warm_windows: Some(100),
            ..StreamTuning::default()
        }),
    );
    let streams = [shared, short, warm];
    let cal = Calibration {
        learn_windows: 200,
        warm_windows: 300,
        ..Calibration::default()
    };
    let e = energies(400, |_| 1.0);
    // Served: the shared 200, the short stream's own 50, the warm one's learn_windows (its
    // warm_windows is a shadow's).
    let mut served = Judge::new(cal.clone());
    assert_eq!(learning_windows(&mut served, &streams, &e), [200, 50, 200]);
    // The short stream follows no input level (its own 0); the others do.
    let levels = streams
        .each_ref()
        .map(|s| served.saved(&s.id).unwrap().level.is_some());
    assert_eq!(levels, [true, false, true]);
    // A shadow learns warm_windows: the shared 300, the warm stream's own 100; a stream's
    // own learn_windows is not a shadow's. No shadow follows an input level.
    let mut shadow = Judge::shadowing(cal);
    assert_eq!(learning_windows(&mut shadow, &streams, &e), [300, 300, 100]);
    assert!(
        streams
            .iter()
            .all(|s| shadow.saved(&s.id).unwrap().level.is_none())
    );
}

#[test]
fn a_new_model_version_learns_again() {
    let stream = stream("s", Judging::Probability(0.999), 1, 1, 1);
    let w = RawWindow {
        seq: 0,
        start: Mark::Index(0),
        end: Mark::Index(0),
        data: vec![],
    };
    let mut j = Judge::new(Calibration {
        learn_windows: 16,
        ..Calibration::default()
    });
    let v1 = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    for e in energies(16, |_| 1.0) {
        assert!(j.judge(&stream, &v1, 1.0, &w, e.into()).learning);
    }
    assert!(!j.judge(&stream, &v1, 1.0, &w, 1.0.into()).learning);
    let v2 = ModelRef {
        version: "v2".into(),
        ..v1
    };
    let v = j.judge(&stream, &v2, 1.0, &w, 1_000.0.into());
    assert!(v.learning && !v.anomalous && v.probability.is_none());
    assert_eq!(j.saved("s").unwrap().calibrator.unwrap().version, "v2");
}

#[test]
fn the_input_level_is_followed_from_healthy_windows_and_frozen_while_raised() {
    let stream = stream("s", Judging::Probability(0.999), 1, 5, 2);
    let v1 = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let mut j = Judge::new(Calibration {
        learn_windows: 16,
        level_windows: 10,
        ..Calibration::default()
    });
    // Two rows of two channels; channel 0 at `level`.
    let window = |seq: u64, level: f32| RawWindow {
        seq,
        start: Mark::Index(0),
        end: Mark::Index(0),
        data: vec![level, 5.0, level, 5.0],
    };
    let e = energies(200, |_| 1.0);
    for (seq, &e) in e.iter().enumerate().take(16) {
        assert!(
            j.judge(&stream, &v1, 1.0, &window(seq as u64, 1.0), e.into())
                .learning
        );
    }
    assert!(stream.drift.get().is_empty(), "no drift while learning");
    // Healthy windows at level 3: the drift follows, channel 1 stays put.
    for (seq, &e) in e.iter().enumerate().skip(16).take(100) {
        let v = j.judge(&stream, &v1, 1.0, &window(seq as u64, 3.0), e.into());
        assert!(!v.anomalous);
    }
    let d = stream.drift.get();
    assert!((d[0] - 2.0).abs() < 1e-3 && d[1] == 0.0, "{d:?}");
    // A raised alert: its windows are not followed.
    let v = j.judge(&stream, &v1, 1.0, &window(116, 50.0), 1e6.into());
    assert_eq!(v.transition, Some(Transition::Raised));
    j.judge(&stream, &v1, 1.0, &window(117, 50.0), 0.9.into());
    assert_eq!(stream.drift.get(), d, "frozen while raised");
    // It is saved with the detector, so a restart scores with the same drift.
    assert_eq!(j.saved("s").unwrap().drift(), d);
    // A new version starts from no drift: it learnt the stream as it is now.
    let v2 = ModelRef {
        version: "v2".into(),
        ..v1
    };
    j.judge(&stream, &v2, 1.0, &window(118, 3.0), 1.0.into());
    assert!(stream.drift.get().is_empty());
}

/// A stream whose input level is turned off (`level_windows = 0`), or that is judged by an
/// absolute energy threshold, scores its windows as they arrive after a restart: the drift
/// its checkpoint restored is not taken off them any more.
#[test]
fn a_drift_restored_without_a_level_is_not_taken_off() {
    let v1 = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let window = |seq: u64, level: f32| RawWindow {
        seq,
        start: Mark::Index(0),
        end: Mark::Index(0),
        data: vec![level, 5.0, level, 5.0],
    };
    let following = Calibration {
        learn_windows: 16,
        level_windows: 10,
        ..Calibration::default()
    };
    let s = stream("s", Judging::Probability(0.999), 1, 5, 2);
    let mut j = Judge::new(following.clone());
    for seq in 0..116 {
        let level = if seq < 16 { 1.0 } else { 3.0 };
        j.judge(&s, &v1, 1.0, &window(seq, level), 1.0.into());
    }
    let saved = j.saved("s").expect("judged");
    assert!((saved.drift()[0] - 2.0).abs() < 1e-3);
    for (judging, level_windows) in [
        (Judging::Probability(0.999), 0),
        (Judging::Energy(Some(10.0)), 10),
    ] {
        // What ingest does on a restart: the stream's drift from its checkpoint.
        let s = stream("s", judging, 1, 5, 2);
        s.drift.set(saved.drift());
        let cal = Calibration {
            level_windows,
            ..following.clone()
        };
        let mut j = Judge::restored([("s".to_owned(), saved.clone())].into(), cal);
        j.judge(&s, &v1, 1.0, &window(116, 3.0), 1.0.into());
        assert!(s.drift.get().is_empty(), "{judging:?}");
    }
}

#[test]
fn f32_numbers_keep_their_own_digits() {
    #[derive(Serialize)]
    struct E(#[serde(serialize_with = "short_f32")] f32);
    assert_eq!(serde_json::to_string(&E(9.190_548)).unwrap(), "9.190548");
    // Through a serde_json::Value too (the outbox's path), not 9.190547943115234.
    let v = serde_json::to_value(E(9.190_548)).unwrap();
    assert_eq!(v.to_string(), "9.190548");
    assert_eq!(serde_json::to_string(&E(f32::NAN)).unwrap(), "null");
}

#[test]
fn a_shadow_is_warm_once_every_stream_it_saw_was_judged() {
    let batch = |learning: &[&str], judged: &[&str]| ShadowStats {
        windows: (learning.len() + judged.len()) as u64,
        learning: learning
            .iter()
            .map(|s| ((*s).to_owned(), true))
            .chain(judged.iter().map(|s| ((*s).to_owned(), false)))
            .collect(),
        ..ShadowStats::default()
    };
    let mut s = ShadowStats::default();
    assert!(!s.warm(), "nothing seen yet");
    s.merge(batch(&["a", "b"], &[]));
    assert!(!s.warm());
    s.merge(batch(&["b"], &["a"]));
    assert!(!s.warm(), "b still learns");
    s.merge(batch(&[], &["b"]));
    assert!(s.warm());
    assert_eq!(s.windows, 5);
    // A stream that learns again (a new normal accepted) makes it cold until judged again.
    s.merge(batch(&["a"], &[]));
    assert!(!s.warm());
}

/// A stream seeded with the windows its model learnt from is judged from the version's first
/// window on, the same as a stream that learnt those windows itself, and so is one restored
/// from a checkpoint taken before that window; a seed of another version is ignored, a short
/// seed leaves the rest to learn, and a stream that already judges with the version keeps
/// its own calibration.
#[test]
fn a_seeded_stream_is_judged_from_its_first_window() {
    let cal = Calibration {
        learn_windows: 64,
        ..Calibration::default()
    };
    let stream = stream("s", Judging::Probability(0.999), 1, 1, 2);
    let model = |version: &str| ModelRef {
        name: "m".into(),
        version: version.into(),
    };
    let window = |seq: u64, level: f32| RawWindow {
        seq,
        start: Mark::Index(0),
        end: Mark::Index(0),
        data: vec![level, 2.0 * level, level, 2.0 * level],
    };
    let healthy = energies(100, |_| 1.0);
    let seed = |version: &str, n: usize| {
        Seed {
            version: version.into(),
            windows: healthy[..n]
                .iter()
                .map(|&energy| SeedWindow {
                    data: window(0, 3.0).data,
                    energy,
                    parts: vec![energy / 2.0, energy / 2.0],
                })
                .collect(),
        }
        .calibrated(2, &cal)
    };
    let judge = |j: &mut Judge, seq: u64, energy: f32| {
        let parts = [energy / 2.0, energy / 2.0];
        let scored = Scored {
            energy,
            parts: &parts,
        };
        j.judge(&stream, &model("v1"), 1.0, &window(seq, 3.0), scored)
    };

    // Seeded with more than learn_windows: the first 64 are learnt, the rest read and learnt
    // while healthy; the version's first window is judged, a healthy one not anomalous, a
    // fault anomalous.
    let mut j = Judge::new(cal.clone());
    j.seed("s", seed("v1", 100));
    let v = judge(&mut j, 0, 1.0);
    assert!(!v.learning, "{v:?}");
    assert!(v.probability.is_some_and(|p| p < 0.9), "{v:?}");
    let v = judge(&mut j, 1, 50.0);
    assert!(
        v.anomalous && v.transition == Some(Transition::Raised),
        "{v:?}"
    );
    // The same probabilities as a stream judged from its first window on.
    let mut learnt = Judge::new(cal.clone());
    for (seq, &e) in healthy.iter().enumerate() {
        let v = judge(&mut learnt, seq as u64, e);
        assert_eq!(v.learning, seq < 64);
        assert!(!v.anomalous);
    }
    let mine = judge(&mut learnt, 100, 1.0).probability;
    let mut seeded = Judge::new(cal.clone());
    seeded.seed("s", seed("v1", 100));
    assert_eq!(judge(&mut seeded, 0, 1.0).probability, mine);
    // The level learnt the seed's windows: no drift while the stream stays where it was.
    assert_eq!(stream.drift.get(), vec![0.0, 0.0]);

    // Kept in a stream's saved state (the checkpoint's), it survives a restart.
    let mut saved = DetectorState::default();
    assert!(saved.seed(seed("v1", 100)));
    let json = serde_json::to_string(&saved).unwrap();
    let restored = || {
        let state: DetectorState = serde_json::from_str(&json).unwrap();
        Judge::restored(HashMap::from([("s".to_owned(), state)]), cal.clone())
    };
    let (mut j, mut k) = (restored(), restored());
    assert_eq!(judge(&mut j, 0, 1.0).probability, mine);
    // A stream already judged with the version keeps what it learnt since.
    judge(&mut k, 0, 1.0);
    j.seed("s", seed("v1", 20));
    let (a, b) = (judge(&mut j, 1, 1.0), judge(&mut k, 1, 1.0));
    assert_eq!(a.probability, b.probability);
    assert_eq!(
        j.saved("s").unwrap().calibrator,
        k.saved("s").unwrap().calibrator
    );

    // A seed of another version is ignored: the stream learns.
    let mut j = Judge::new(cal.clone());
    j.seed("s", seed("v0", 100));
    assert!(judge(&mut j, 0, 1.0).learning);

    // A seed shorter than learn_windows is the stream's learning period (NAB's rule: learn
    // on the probationary period, then judge): judged from the version's first window, and so
    // after a restart; its part of each channel too, a fault on one channel of two raised.
    let mut j = Judge::new(cal.clone());
    j.seed("s", seed("v1", 20));
    assert!(!judge(&mut j, 0, 1.0).learning);
    let mut saved = DetectorState::default();
    assert!(saved.seed(seed("v1", 20)));
    let state = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
    let mut j = Judge::restored(HashMap::from([("s".to_owned(), state)]), cal.clone());
    let scored = Scored {
        energy: 1.0,
        parts: &[0.5, 5.0],
    };
    let v = j.judge(&stream, &model("v1"), 1.0, &window(0, 3.0), scored);
    assert!(!v.learning && v.anomalous, "{v:?}");
    // A seed of fewer than a quarter of learn_windows (a stream that joined the learning
    // period late): the stream learns the rest.
    let mut j = Judge::new(cal.clone());
    j.seed("s", seed("v1", 15));
    for seq in 0..49 {
        assert!(judge(&mut j, seq, 1.0).learning, "window {seq}");
    }
    assert!(!judge(&mut j, 49, 1.0).learning);
}

#[test]
fn a_thin_stream_raises_at_a_likelier_bar() {
    // Ten windows at 1.8 after 100 learnt: probability about 0.997, under the stream's 0.999.
    // Judged after a learning period of 100 windows where learn_windows is 200 (NAB's rule),
    // the stream is thin: its bar is 1 - 0.001 x 10 = 0.99, and they raise it.
    let e: Vec<f32> = energies(200, |_| 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, e)| if (130..140).contains(&i) { 1.8 } else { e })
        .collect();
    let stream = stream("s", Judging::Probability(0.999), 3, 50, 1);
    let v1 = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let run = |cal: Calibration, learnt_from_seed: bool| {
        let mut c = Calibrator::new("v1");
        if learnt_from_seed {
            c.learnt_from_seed(100, &cal);
        }
        let saved = DetectorState {
            calibrator: Some(c),
            ..DetectorState::default()
        };
        let mut j = Judge::restored(HashMap::from([("s".to_owned(), saved)]), cal.clone());
        let mut out = Vec::new();
        for (seq, &e) in e.iter().enumerate() {
            let w = RawWindow {
                seq: seq as u64,
                start: Mark::Index(0),
                end: Mark::Index(0),
                data: vec![],
            };
            let v = j.judge(&stream, &v1, 1.0, &w, e.into());
            assert_eq!(v.learning, seq < 100);
            if seq == 100 {
                // The verdict carries the bar it was judged at.
                let thin = learnt_from_seed && cal.thin_widen > 1.0;
                let want = if thin { 0.99 } else { 0.999 };
                assert!((v.alert_probability.unwrap() - want).abs() < 1e-12, "{v:?}");
            }
            out.extend(v.transition.map(|t| (seq as u64, t)));
        }
        out
    };
    assert_eq!(
        run(cal(), true),
        [(132, Transition::Raised), (189, Transition::Cleared)]
    );
    // thin_widen 1: the stream's own bar, the same windows not raised.
    let off = Calibration {
        thin_widen: 1.0,
        ..cal()
    };
    assert!(run(off, true).is_empty());
    // As many windows learnt where learn_windows is 100: a full learning period, the
    // stream's own bar.
    let hundred = Calibration {
        learn_windows: 100,
        ..cal()
    };
    assert!(run(hundred, false).is_empty());
}

#[test]
fn a_stream_restless_for_a_long_stretch_is_raised_once_per_spell() {
    // Healthy energies, then spells at 1.8 (probability about 0.997: over the restless 0.99,
    // under the alert probability 0.999) with a calm stretch between them.
    let spell = |i: usize| (200..500).contains(&i) || (800..1_100).contains(&i);
    let e: Vec<f32> = energies(1_400, |_| 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, e)| if spell(i) { 1.8 } else { e })
        .collect();
    // Raised at the 90th restless window, cleared by the ordinary rule (50 windows under the
    // alert probability), not raised again until the stream has calmed.
    let t = judged(cal(), e.iter().copied());
    let want = [
        (289, Transition::Raised),
        (339, Transition::Cleared),
        (889, Transition::Raised),
        (939, Transition::Cleared),
    ];
    assert_eq!(t, want);
    // Held: each alert stays up until fewer than half the last 100 windows are restless.
    let held = Calibration {
        restless: Restless {
            hold: true,
            ..Restless::default()
        },
        ..cal()
    };
    let t = judged(held, e.iter().copied());
    let want = [
        (289, Transition::Raised),
        (550, Transition::Cleared),
        (889, Transition::Raised),
        (1_150, Transition::Cleared),
    ];
    assert_eq!(t, want);
    // Off: the ordinary rule alone never sees the spells.
    let off = Calibration {
        restless: Restless {
            probability: 0.0,
            ..Restless::default()
        },
        ..cal()
    };
    assert_eq!(judged(off, e), []);
}

#[test]
fn an_alert_that_flaps_is_paged_once_and_a_strong_fault_in_the_quiet_still_is() {
    // After 200 healthy windows, bursts of 5 windows at 3 (0.99996: over the alert
    // probability 0.999, under the quiet's 0.999999) every 80 windows:
    // the alert clears 50 windows after each burst (clear_after) and the next burst comes 25
    // windows later. Then, in the quiet after the last clear, a fault 1,000 times the level.
    let burst = |i: usize| (200..600).contains(&i) && (i - 200) % 80 < 5;
    let e: Vec<f32> = energies(900, |_| 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, e)| match i {
            _ if burst(i) => 3.0,
            700.. => 1_000.0,
            _ => e,
        })
        .collect();
    let loud = Calibration {
        quiet: Quiet {
            windows: 0,
            ..Quiet::default()
        },
        ..cal()
    };
    let raised = |t: &[(u64, Transition)]| {
        t.iter()
            .filter(|(_, t)| *t == Transition::Raised)
            .map(|(i, _)| *i)
            .collect::<Vec<_>>()
    };
    // Without the quiet: each burst is paged again.
    let t = judged(loud, e.iter().copied());
    assert_eq!(raised(&t), [202, 282, 362, 442, 522, 702], "{t:?}");
    // With it: each clear starts 200 quiet windows, in which 3 is not enough and 1,000 is.
    let t = judged(cal(), e.iter().copied());
    assert_eq!(raised(&t), [202, 522, 702], "{t:?}");
}
