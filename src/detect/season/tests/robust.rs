//! A season against what real streams do to it: timestamps that jitter, a sample late or
//! garbled, a clock reset and synced again. Each of these once took the season away (for
//! good, or for weeks), or held it wrong and flagged two windows in five.

use super::*;

/// A window of the `W` samples ending at `i`, each taken at `at(sample)` seconds.
fn timed(i: u64, series: &impl Fn(u64) -> f32, at: &impl Fn(u64) -> u64) -> RawWindow {
    let first = i + 1 - W as u64;
    RawWindow {
        seq: i,
        start: stamp_at(at(first)),
        end: stamp_at(at(i)),
        data: (first..=i).map(series).collect(),
    }
}

/// A season that has chosen its week, three weeks in.
fn settled(series: &impl Fn(u64) -> f32) -> Season {
    let mut s = Season::default();
    run(&mut s, W as u64 - 1, 3 * 336, series);
    assert_eq!(s.period(), Some(336));
    s
}

/// The first window's last sample 20 s late gave 5-minute samples a step of 300.87 s, held
/// for good, a day of 287 samples, and two windows in five at 0.9999 from the fourth week.
#[test]
fn a_late_first_sample_does_not_set_the_step() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i: u64| {
        let hour = (i % 288) as f32 / 12.0;
        humped(hour, if (i / 288) % 7 >= 5 { 0.5 } else { 1.0 }, i)
    };
    let at = |i: u64| i * 300 + if i == W as u64 - 1 { 20 } else { 0 };
    let mut s = Season::default();
    let mut flagged = 0;
    for i in W as u64 - 1..4 * 2016 {
        let p = read(&mut s, &timed(i, &series, &at), &seasons, &cal, false);
        flagged += usize::from(i >= 3 * 2016 && p.is_some_and(|p| p >= 0.9999));
    }
    assert_eq!(s.step_s, 300.0);
    assert_eq!(s.period(), Some(2016));
    assert!(flagged < 20, "{flagged} windows of the fourth week flagged");
}

/// Samples whose times jitter by up to 100 s either way on a half-hourly stream (a gateway's
/// queue) once restarted the watch at every window whose ends were a tenth of a step off:
/// still watching after five weeks.
#[test]
fn jittered_times_still_find_the_week() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[4 * 7 + 3]);
    let at = |i: u64| (i * STEP_S + 1_000).saturating_add_signed((100.0 * noise(i + 5_000)) as i64);
    let mut s = Season::default();
    let mut flagged = Vec::new();
    for i in W as u64 - 1..5 * 336 {
        let p = read(&mut s, &timed(i, &series, &at), &seasons, &cal, false);
        if p.is_some_and(|p| p >= 0.9999) {
            flagged.push(i);
        }
    }
    assert_eq!(s.period(), Some(336));
    let thursday = (4 * 7 + 3) * 48;
    assert_only_the_holiday(&flagged, thursday, W as u64);
}

/// One sample 10 minutes late put its window off the grid, which dropped a settled week and
/// watched the stream again for two weeks.
#[test]
fn one_late_sample_keeps_a_settled_season() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[]);
    let mut s = settled(&series);
    let late = 3 * 336 + 5;
    run(&mut s, 3 * 336, late, &series);
    let at = |i: u64| i * STEP_S + if i == late { 600 } else { 0 };
    for i in late..late + W as u64 + 2 {
        read(&mut s, &timed(i, &series, &at), &seasons, &cal, false);
        assert_eq!(
            (s.phase(), s.step_s),
            (Phase::Week, STEP_S as f64),
            "window {i}"
        );
    }
}

/// A sensor that rebooted with its clock at the epoch and synced again: the window across the
/// jump forward turned a settled week into "none", for good.
#[test]
fn a_clock_reset_and_synced_keeps_a_settled_season() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[]);
    let mut s = settled(&series);
    let base = 3 * 336_u64;
    // Samples base.. are stamped from the epoch (1000 s on), until `synced` is back on time.
    let synced = base + 2 * W as u64;
    let mark = |i: u64| {
        if (base..synced).contains(&i) {
            Mark::Time(Value::from(1_000 + (i - base) * STEP_S))
        } else {
            stamp(i)
        }
    };
    for i in base..synced + 4 * 336 {
        let first = i + 1 - W as u64;
        let w = RawWindow {
            seq: i,
            start: mark(first),
            end: mark(i),
            data: (first..=i).map(series).collect(),
        };
        read(&mut s, &w, &seasons, &cal, false);
    }
    assert_eq!(s.phase(), Phase::Week);
}

/// A garbled 1e20 in a window that is not healthy: what its moment was expected to be stands
/// in for it, and was rebuilt from the sample and its departure in f32, which lost the level
/// (100,000) in the sample's digits; every later window was then unusual, so never healthy,
/// so the level never came back, and the alert never cleared.
#[test]
fn a_garbled_sample_does_not_move_the_level() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| 100_000.0 + demand(i, &[]);
    let mut s = settled(&series);
    let before = s.level().expect("departures")[0];
    let g = 3 * 336;
    let garbled = |i| if i == g { 1e20 } else { series(i) };
    let e = s.observe(&window(g, &garbled), 1, &seasons, &cal);
    assert!(s.probability(e.expect("read"), &cal) >= 0.9999);
    s.keep(false, &seasons);
    let after = s.level().expect("departures")[0];
    assert!((after - before).abs() < 1.0, "level {before} -> {after}");
    let rest = feed(&mut s, g + 1, g + 1 + 2 * 336, &garbled, false);
    let flagged = rest
        .iter()
        .filter(|p| p.is_some_and(|p| p >= 0.9999))
        .count();
    assert!(
        flagged < W,
        "{flagged} windows flagged after the garbled one"
    );
}

/// One sample at 65535 (a sensor's error value) while the weeks were watched lowered the
/// autocorrelation under `season_acf`: no season, for good, and the holiday never flagged.
/// Garbled values are clipped out of what the season keeps too (its variance, its moments,
/// its calibration's seed), or they would blind it; a spike of the stream's own (100, some 13
/// standard deviations out) only no longer takes the week away.
#[test]
fn one_sentinel_while_watched_keeps_the_week() {
    let holiday = 4 * 7 + 3;
    for (sentinel, garbled) in [(65_535.0, true), (-9_999.0, true), (100.0, false)] {
        let series = |i: u64| {
            if i == 100 {
                sentinel
            } else {
                demand(i, &[holiday])
            }
        };
        let mut s = Season::default();
        let all = run(&mut s, W as u64 - 1, 5 * 336, &series);
        assert_eq!(s.period(), Some(336), "sentinel {sentinel}");
        let thursday = holiday * 48;
        let flagged = all
            .iter()
            .zip(W as u64 - 1..)
            .filter(|(p, i)| *i >= thursday && p.is_some_and(|p| p >= 0.9999))
            .count();
        assert!(
            !garbled || flagged > 0,
            "sentinel {sentinel}: the holiday was not flagged"
        );
    }
}

/// A stream that is mostly idle and runs for a few hours a day (a pump at 1000 two hours a
/// day over an idle 0 ± 1; an office's CO2, 900 ppm on weekday hours over 420) has its median
/// and spread in the idle hours: its running samples are its own, not garbled outliers. Taken
/// for garbled, they were clipped out of the season's variance, and every window was flagged
/// for good.
#[test]
fn a_stream_that_runs_a_few_hours_a_day_is_not_taken_for_garbled() {
    let pump = |hours: u64, amp: f32, noise_amp: f32| {
        move |i: u64| {
            let slot = i % 48;
            (if (16..16 + 2 * hours).contains(&slot) {
                amp
            } else {
                0.0
            }) + noise_amp * noise(i)
        }
    };
    let co2 = |i: u64| {
        let (day, slot) = (i / 48, i % 48);
        let occupied = day % 7 < 5 && (18..36).contains(&slot);
        (if occupied { 900.0 } else { 420.0 }) + 2.0 * noise(i)
    };
    type Series = Box<dyn Fn(u64) -> f32>;
    let streams: Vec<(&str, Series)> = vec![
        ("pump 2 h", Box::new(pump(2, 1000.0, 1.0))),
        ("pump 8 h", Box::new(pump(8, 1000.0, 1.0))),
        ("pump 4 h, small", Box::new(pump(4, 50.0, 0.2))),
        ("office CO2", Box::new(co2)),
    ];
    for (name, series) in streams {
        let mut s = Season::default();
        let all = run(&mut s, W as u64 - 1, 5 * 336, &|i| series(i));
        assert!(s.period().is_some(), "{name}: no season");
        let lo = (4 * 336) as usize - (W - 1);
        let flagged = all[lo..lo + 336]
            .iter()
            .filter(|p| p.is_some_and(|p| p >= 0.9999))
            .count();
        assert!(
            flagged < 10,
            "{name}: {flagged} of the fifth week's windows flagged"
        );
    }
}
