//! The season's step: kept through samples a stream skips or sends twice, changed by a new
//! rate.

use super::*;

/// A sensor that skips readings: about one sample in ten never arrives (the first window's
/// among them), so most windows span more time than their samples make at the stream's step,
/// each by a whole number of steps; and about one in a hundred is sent twice, with the same
/// time. The season is still found, a week, and the holiday flagged; before, every such
/// window read as a change of rate and started the watch again, so the stream never had a
/// season.
#[test]
fn a_stream_that_skips_samples_keeps_its_step_and_finds_its_week() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[4 * 7 + 3]);
    let arrived: Vec<u64> = (0..5 * 336)
        .filter(|&i| i == 0 || (noise(i + 90_000) + 1.0) > 0.2 && i != 5)
        .flat_map(|i| {
            let twice = noise(i + 70_000) > 0.98 && i > 5;
            std::iter::repeat_n(i, if twice { 2 } else { 1 })
        })
        .collect();
    let twice = arrived.windows(2).filter(|p| p[0] == p[1]).count();
    assert!((5..40).contains(&twice), "{twice} samples sent twice");
    let mut s = Season::default();
    let (mut flagged, mut chosen) = (Vec::new(), None);
    for end in arrived.windows(W) {
        let w = RawWindow {
            seq: end[W - 1],
            start: stamp(end[0]),
            end: stamp(end[W - 1]),
            data: end.iter().map(|&i| series(i)).collect(),
        };
        let p = read(&mut s, &w, &seasons, &cal, false);
        if chosen.is_none() && s.period().is_some() {
            chosen = Some(end[W - 1]);
        }
        if p.is_some_and(|p| p >= 0.9999) {
            flagged.push(end[W - 1]);
        }
    }
    // Chosen two weeks after the first window with nothing missing, which gives the step (a
    // window with a gap in it gives one too long): no sample skipped or sent twice after it
    // started the watch again.
    let whole = arrived
        .windows(W)
        .find(|w| w[W - 1] - w[0] == W as u64 - 1 && w.windows(2).all(|p| p[0] < p[1]))
        .map(|w| w[W - 1])
        .expect("a whole window");
    assert!(
        chosen.is_some_and(|i| i <= whole + 2 * 336),
        "chosen at {chosen:?}, the first whole window ends at {whole}"
    );
    let missing = 5 * 336 + twice - arrived.len();
    assert!((120..220).contains(&missing), "{missing} samples missing");
    assert_eq!(s.step_s, STEP_S as f64);
    assert_eq!(s.period(), Some(336));
    let thursday = (4 * 7 + 3) * 48;
    assert_only_the_holiday(&flagged, thursday, 2 * W as u64);
}

/// A stream that starts sending three times as often has changed its rate: its windows are
/// off the held step's grid, and the season is watched again at the new step.
#[test]
fn a_faster_rate_watches_the_stream_again() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let mut s = Season::default();
    let series = |i| demand(i, &[]);
    run(&mut s, W as u64 - 1, 3 * 336, &series);
    assert_eq!(s.period(), Some(336));
    // After sample 3 * 336, a sample every 10 minutes (seconds from the first sample); each
    // window the newest W samples, the half-hourly ones before the change first.
    let switch = 3 * 336 * STEP_S;
    let at = |k: u64| switch + k * STEP_S / 3;
    let mut watched = false;
    for k in 1..=(2 * W as u64) {
        let times: Vec<u64> = ((k + 1).saturating_sub(W as u64).max(1)..=k)
            .map(at)
            .collect();
        let times: Vec<u64> = (0..W as u64 - times.len() as u64)
            .rev()
            .map(|back| switch - back * STEP_S)
            .chain(times)
            .collect();
        let w = RawWindow {
            seq: 3 * 336 + k,
            start: stamp_at(times[0]),
            end: stamp_at(times[W - 1]),
            data: vec![20.0; W],
        };
        s.observe(&w, 1, &seasons, &cal);
        s.keep(true, &seasons);
        watched |= s.phase() == Phase::Watching;
    }
    assert!(watched, "the season was kept");
    assert_eq!(s.phase(), Phase::Watching);
    assert!(
        (s.step_s - (STEP_S / 3) as f64).abs() < 1e-9,
        "{}",
        s.step_s
    );
}
