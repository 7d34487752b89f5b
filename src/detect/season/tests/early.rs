//! A day chosen early: after [`Seasons::days`] days a strong day judges the stream until its
//! weeks are watched and the season is chosen over them.

use super::*;

/// A daily hump, the same every day but `quiet`, where it is half as high.
fn daily(i: u64, quiet: u64) -> f32 {
    let hour = (i % 48) as f32 / 2.0;
    humped(hour, if i / 48 == quiet { 0.5 } else { 1.0 }, i)
}

/// The samples of `from..` whose window reached the alert bar.
fn flagged(read: &[Option<f64>], from: u64) -> Vec<u64> {
    (read.iter().zip(from..))
        .filter(|(p, _)| p.is_some_and(|p| p >= 0.9999))
        .map(|(_, i)| i)
        .collect()
}

#[test]
fn a_daily_stream_is_read_by_its_day_before_its_weeks_are_watched() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let days = u64::from(seasons.days);
    let weeks = u64::from(seasons.weeks) * 336;
    // A quiet day between the days watched and the weeks.
    let quiet = days + 3;
    let series = |i| daily(i, quiet);
    let mut s = Season::default();
    let first = run(&mut s, W as u64 - 1, days * 48 - 1, &series);
    assert!(first.iter().all(Option::is_none), "read before its days");
    assert_eq!(s.phase(), Phase::Watching);
    let watched = s.clone();
    let after = run(&mut s, days * 48 - 1, days * 48, &series);
    assert!(after[0].is_some(), "the day was not chosen");
    assert_eq!(
        s.choice(),
        (Phase::Day, false),
        "still watched for its weeks"
    );
    assert!(s.outruns(Some(&watched)), "a restart would lose the choice");

    // The quiet day is flagged by the day, and nothing else; what is saved half-way reads the
    // same.
    let half = quiet * 48;
    let mut seen = run(&mut s, days * 48, half, &series);
    let json = serde_json::to_string(&s).expect("serialises");
    let mut back: Season = serde_json::from_str(&json).expect("deserialises");
    let rest = run(&mut s, half, weeks - 1, &series);
    let resumed = run(&mut back, half, weeks - 1, &series);
    // The same but for rounding: the level's sum is made again from the samples saved.
    let same = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        _ => a == b,
    };
    assert!(rest.iter().zip(&resumed).all(|(a, b)| same(a, b)));
    seen.extend(rest);
    let flagged = flagged(&seen, days * 48);
    let (from, to) = (quiet * 48, (quiet + 1) * 48 + W as u64 - 1);
    assert!(!flagged.is_empty(), "the quiet day was not flagged");
    assert!(
        flagged.iter().all(|i| (from..to).contains(i)),
        "flagged {flagged:?}, windows with the quiet day end at {from}..{to}"
    );

    // Without the early day, the quiet day passes unread.
    let late = Seasons {
        days: 0,
        ..Seasons::default()
    };
    let mut l = Season::default();
    let unread = (W as u64 - 1..weeks - 1)
        .all(|i| read(&mut l, &window(i, &series), &late, &cal, false).is_none());
    assert!(unread, "read before its weeks with days = 0");

    // The weeks watched, the season is chosen over them as it is without the early day (a
    // week here: one quiet day lowers a day's autocorrelation more than a week's).
    run(&mut s, weeks - 1, weeks, &series);
    read(&mut l, &window(weeks - 1, &series), &late, &cal, false);
    assert!(s.choice().1 && l.choice().1, "chosen at the weeks' end");
    assert_eq!((s.phase(), s.period()), (l.phase(), l.period()));
    assert_eq!(s.period(), Some(336));
}

/// The day chosen early does not vouch for a window: on a weekly stream its weekends recur a
/// day apart, and the week chosen after it would not vouch for them.
#[test]
fn the_early_day_does_not_teach() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[]);
    let mut s = Season::default();
    let mut recurred = Vec::new();
    for i in W as u64 - 1..u64::from(seasons.weeks) * 336 - 1 {
        let read = s.observe(&window(i, &series), 1, &seasons, &cal);
        recurred.push((read.is_some(), s.recurs(0.5)));
        s.keep(true, &seasons);
    }
    assert_eq!(s.phase(), Phase::Day);
    assert!(
        recurred.iter().any(|&(read, _)| read),
        "never read by the day"
    );
    assert!(recurred.iter().all(|&(_, r)| !r), "taught while watched");
}

/// The judge publishes a stream's state again when a day is chosen early and when the weeks'
/// choice replaces it, and at no other window.
#[test]
fn the_state_is_published_at_each_choice() {
    use crate::detect::Accept;
    let calibration = Calibration {
        learn_windows: 96,
        ..Calibration::default()
    };
    let series = |i| demand(i, &[]);
    let verdicts = judge_series(calibration, Accept::Never, &series, 3 * 336, ordinary);
    let chosen: Vec<_> = (verdicts.iter().enumerate())
        .filter(|(_, v)| v.season_chosen)
        .map(|(i, v)| (i, v.season))
        .collect();
    let weeks = u64::from(Seasons::default().weeks) as usize * 336;
    let days = Seasons::default().days as usize * 48;
    // The i-th verdict is the window ending at sample W - 1 + i.
    assert_eq!(
        chosen,
        vec![(days - W, Some(Phase::Day)), (weeks - W, Some(Phase::Week))]
    );
}

/// A weekly stream whose weekends are quieter is judged by a day from the end of its first
/// week (its weekend in the days watched) and is not raised on its second weekend: the day's
/// calibration is seeded on the windows watched, a weekend's among them. Weekends with no
/// hump at all leave a day too weak to be chosen early.
#[test]
fn a_weekly_stream_is_not_raised_on_its_weekends_by_the_early_day() {
    use crate::detect::{Accept, Transition};
    for (depth, early) in [(0.5, true), (0.2, true), (0.0, false)] {
        let series = move |i: u64| {
            let weekend = (i / 48) % 7 >= 5;
            let hour = (i % 48) as f32 / 2.0;
            humped(hour, if weekend { depth } else { 1.0 }, i)
        };
        let calibration = Calibration {
            learn_windows: 96,
            ..Calibration::default()
        };
        let verdicts = judge_series(calibration, Accept::Never, &series, 4 * 336, ordinary);
        let raised = when(&verdicts, Transition::Raised, 48);
        assert!(
            raised.is_empty(),
            "weekends at {depth}: raised on days {raised:?}"
        );
        // The i-th verdict is the window ending at sample W - 1 + i: day 8 begins.
        let day8 = verdicts[8 * 48 - (W - 1)].season;
        let expected = if early { Phase::Day } else { Phase::Watching };
        assert_eq!(day8, Some(expected), "weekends at {depth}");
    }
}
