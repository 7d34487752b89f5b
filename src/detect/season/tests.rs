use super::*;

const W: usize = 24;
/// Half-hourly samples: a day is 48, a week 336.
const STEP_S: u64 = 1_800;

/// A deterministic noise in (-1, 1) (splitmix64).
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f32 / (1u64 << 52) as f32 - 1.0
}

/// Taxi-like demand: a daily hump, half as high on Saturdays and Sundays (`sunday` lists other
/// days, counted from the first, that look like a Sunday: holidays).
fn demand(i: u64, sunday: &[u64]) -> f32 {
    let day = i / 48;
    let hour = (i % 48) as f32 / 2.0;
    let weekend = day % 7 >= 5 || sunday.contains(&day);
    let hump = (std::f32::consts::PI * hour / 24.0).sin().powi(2);
    10.0 + 20.0 * hump * if weekend { 0.5 } else { 1.0 } + noise(i)
}

/// An RFC 3339-like time the way NAB's CSV files write them, from 2014-07-07 (a Monday).
fn stamp(i: u64) -> Mark {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(1_404_691_200 + i * STEP_S);
    let s = humantime::format_rfc3339(t).to_string();
    Mark::Time(Value::String(
        s.replace('T', " ").trim_end_matches('Z').to_owned(),
    ))
}

fn window(i: u64, series: &impl Fn(u64) -> f32) -> RawWindow {
    let first = i + 1 - W as u64;
    RawWindow {
        seq: i,
        start: stamp(first),
        end: stamp(i),
        data: (first..=i).map(series).collect(),
    }
}

/// Feeds windows ending at samples `from..to` (every sample); returns each one's probability
/// (`None`: no seasonal energy), learning those under `learn_below` as a healthy stream's.
fn run(s: &mut Season, from: u64, to: u64, series: &impl Fn(u64) -> f32) -> Vec<Option<f64>> {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    (from..to)
        .map(|i| {
            let Some(e) = s.observe(&window(i, series), 1, &seasons, &cal) else {
                s.keep(true, &seasons);
                return None;
            };
            let p = s.probability(e, &cal);
            s.learn(e, Some(p), &cal);
            s.keep(p < 0.9999, &seasons);
            Some(p)
        })
        .collect()
}

#[test]
fn a_weekly_stream_finds_its_week_and_flags_a_holiday() {
    let weeks = |n: u64| n * 336;
    let mut s = Season::default();
    // A holiday on the Thursday of the fifth week.
    let series = |i| demand(i, &[4 * 7 + 3]);
    let watched = run(&mut s, W as u64 - 1, weeks(3) - 1, &series);
    assert!(
        watched.iter().all(Option::is_none),
        "read before the weeks watched"
    );
    assert_eq!(s.period(), None);
    let week4 = run(&mut s, weeks(3) - 1, weeks(4), &series);
    // A week, not a day: every weekday but Monday looks like the day before, the weekend not.
    assert_eq!(s.period(), Some(336));
    let top = week4
        .iter()
        .map(|p| p.expect("read once chosen"))
        .fold(0.0, f64::max);
    assert!(top < 0.9999, "an ordinary week reached {top}");
    let week5 = run(&mut s, weeks(4), weeks(5), &series);
    let thursday = (4 * 7 + 3) * 48 - weeks(4);
    let flagged: Vec<_> = (0..week5.len() as u64)
        .filter(|&i| week5[i as usize].is_some_and(|p| p >= 0.9999))
        .collect();
    assert!(!flagged.is_empty(), "the holiday was not flagged");
    assert!(
        flagged
            .iter()
            .all(|&i| i >= thursday && i < thursday + 48 + W as u64),
        "flagged outside the holiday: {flagged:?} (it is {thursday}..{})",
        thursday + 48
    );
}

#[test]
fn a_stream_without_a_season_holds_nothing() {
    let mut s = Season::default();
    let flat_noise = |i| 5.0 + noise(i);
    assert!(
        run(&mut s, W as u64 - 1, 3 * 336 + 100, &flat_noise)
            .iter()
            .all(Option::is_none)
    );
    assert!(s.settled && s.period().is_none() && s.history.is_empty());
    assert_eq!(
        serde_json::to_string(&s).expect("serialises"),
        r#"{"settled":true}"#
    );

    // Samples a second apart: three weeks would not fit, so it settles at once.
    let mut fast = Season::default();
    let w = RawWindow {
        seq: 0,
        start: Mark::Time(Value::from(1_000.0)),
        end: Mark::Time(Value::from(1_023.0)),
        data: vec![1.0; W],
    };
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    assert_eq!(fast.observe(&w, 1, &seasons, &cal), None);
    assert!(fast.settled && fast.history.is_empty());

    // Sample indices, not times: nothing is learnt either.
    let mut counted = Season::default();
    let w = RawWindow {
        start: Mark::Index(0),
        end: Mark::Index(23),
        ..w
    };
    assert_eq!(counted.observe(&w, 1, &seasons, &cal), None);
    assert!(counted.history.is_empty());
}

#[test]
fn a_gap_passes_its_moments_and_the_season_survives_a_restart() {
    let mut s = Season::default();
    let series = |i| demand(i, &[]);
    run(&mut s, W as u64 - 1, 3 * 336 + 10, &series);
    assert_eq!(s.period(), Some(336));

    // A restart resumes from the checkpoint's copy and reads the next window the same.
    let json = serde_json::to_string(&s).expect("serialises");
    let mut back: Season = serde_json::from_str(&json).expect("deserialises");
    let next = 3 * 336 + 10;
    assert_eq!(
        run(&mut back, next, next + 1, &series),
        run(&mut s, next, next + 1, &series)
    );

    // Windows skipped while their samples are all in the next one: nothing lost.
    let skipped = next + 1 + 12;
    assert!(run(&mut s, skipped, skipped + 1, &series)[0].is_some());
    // Thirty samples missing, more than a window: the moments missed pass, and the windows
    // after the gap are read at once, as ordinary as before (a moment out of step would not be).
    let after = skipped + 1 + 30;
    let resumed = run(&mut s, after, after + 336, &series);
    assert_eq!(s.period(), Some(336));
    let top = resumed
        .iter()
        .map(|p| p.expect("read at once"))
        .fold(0.0, f64::max);
    assert!(top < 0.9999, "after the gap: {top}");
    // The same window again (a batch judged again after a crash) takes nothing.
    let taken = s.taken;
    let last = after + 335;
    assert_eq!(run(&mut s, last, last + 1, &series), vec![None]);
    assert_eq!(s.taken, taken);
}

/// Through the judge: a stream whose model finds every window ordinary is raised on its
/// holiday by its season alone, once, and not without seasons.
#[test]
fn the_judge_raises_a_holiday_by_its_season() {
    use crate::detect::{AlertEvent, Hysteresis, Judge, Judging, ModelRef, StreamInfo, Transition};
    let series = |i| demand(i, &[4 * 7 + 3]);
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let hysteresis = Hysteresis {
        raise_after: 3,
        clear_after: 10,
    };
    let stream = StreamInfo::new("taxi", Judging::Probability(0.9999), hysteresis, 1);
    let raises = |seasons: Seasons| {
        let mut judge = Judge::new(Calibration {
            seasons,
            ..Calibration::default()
        });
        let mut raised = Vec::new();
        for i in W as u64 - 1..5 * 336 {
            // An ordinary energy for the model: the same spread everywhere.
            let energy = 1.0 + 0.1 * noise(i + 7_000_000).abs();
            let v = judge.judge(&stream, &model, 1.0, &window(i, &series), energy.into());
            if v.transition == Some(Transition::Raised) {
                // The alert says the season carried it.
                let q = v.season_probability.expect("a season's probability");
                assert!(q >= 0.9999 && v.probability == Some(q), "{v:?}");
                let alert = AlertEvent::from_verdict(&v, "n", UNIX_EPOCH).expect("an alert");
                let json = serde_json::to_value(alert).expect("serialises");
                assert_eq!(json["season_probability"], q);
                raised.push(i);
            }
        }
        raised
    };
    let thursday = (4 * 7 + 3) * 48;
    let with = raises(Seasons::default());
    assert_eq!(with.len(), 1, "raised at {with:?}");
    assert!(
        (thursday..thursday + 48 + W as u64).contains(&with[0]),
        "{with:?}"
    );
    let without = raises(Seasons {
        acf: 0.0,
        ..Seasons::default()
    });
    assert!(without.is_empty(), "raised without seasons at {without:?}");
}

/// A holiday is not expected a season later: its samples never go into what its moments are
/// expected to be (taken in anyway, the next Thursday would look like a fault).
#[test]
fn the_week_after_a_holiday_is_ordinary() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[4 * 7 + 3]);
    let next_thursday = |keep_all: bool| {
        let mut s = Season::default();
        let mut top = 0.0_f64;
        for i in W as u64 - 1..6 * 336 {
            let Some(e) = s.observe(&window(i, &series), 1, &seasons, &cal) else {
                s.keep(true, &seasons);
                continue;
            };
            let p = s.probability(e, &cal);
            s.learn(e, Some(p), &cal);
            s.keep(keep_all || p < 0.9999, &seasons);
            if ((5 * 7 + 3) * 48..(5 * 7 + 4) * 48).contains(&i) {
                top = top.max(p);
            }
        }
        top
    };
    let top = next_thursday(false);
    assert!(top < 0.9999, "the Thursday after the holiday reached {top}");
    let echo = next_thursday(true);
    assert!(echo >= 0.9999, "taken in, the holiday would echo: {echo}");
}

/// Times with a numeric zone are read as the instant they name; without one, as UTC.
#[test]
fn times_are_read_with_their_zone() {
    let at = |s: &str| seconds(&Mark::Time(Value::String(s.into())));
    let utc = at("2014-07-07 00:00:00").expect("reads");
    assert_eq!(at("2014-07-07T00:00:00Z"), Some(utc));
    assert_eq!(at("2014-07-07T02:00:00+02:00"), Some(utc));
    assert_eq!(at("2014-07-06T18:30:00.000-0530"), Some(utc));
    assert_eq!(
        at("2014-07-07T00:00:00+2"),
        None,
        "not a zone humantime reads either"
    );
    assert_eq!(seconds(&Mark::Time(Value::from(1_404_691_200))), Some(utc));
    assert_eq!(seconds(&Mark::Index(3)), None);
}
