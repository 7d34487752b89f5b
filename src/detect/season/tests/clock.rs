//! The season on the wall clock: times read with their zone, moments that follow the zone's
//! clock across daylight-saving changes, and a watch kept in the clock's order.

use super::*;
use jiff::Timestamp;

/// Times with a numeric zone are read as the instant they name; without one, as UTC.
#[test]
fn times_are_read_with_their_zone() {
    let at = |s: &str| time(&Mark::Time(Value::String(s.into())), &TimeZone::UTC).map(|t| t.at);
    let utc = at("2014-07-07 00:00:00").expect("reads");
    assert_eq!(at("2014-07-07T00:00:00Z"), Some(utc));
    assert_eq!(at("2014-07-07T02:00:00+02:00"), Some(utc));
    assert_eq!(at("2014-07-06T18:30:00.000-0530"), Some(utc));
    assert_eq!(at("2014-07-07T00:00:00+2"), None, "not a zone");
    // Seconds since the epoch, or milliseconds, microseconds, nanoseconds.
    for n in [
        1_404_691_200,
        1_404_691_200_000,
        1_404_691_200_000_000,
        1_404_691_200_000_000_000_u64,
    ] {
        let epoch = Mark::Time(Value::from(n));
        assert_eq!(time(&epoch, &TimeZone::UTC).map(|t| t.at), Some(utc), "{n}");
    }
    assert_eq!(time(&Mark::Index(3), &TimeZone::UTC), None);
}

/// An instant is read on the season's zone's wall clock, daylight saving included; a time
/// without a zone is the wall clock's reading as it is.
#[test]
fn the_wall_clock_is_the_zones() {
    let berlin = TimeZone::get("Europe/Berlin")
        .expect("the time zone database (Debian: apt-get install tzdata)");
    let read = |mark: Mark| time(&mark, &berlin).expect("reads");
    // 2014-07-07 00:00 UTC is 02:00 in Berlin in summer, 2014-12-01 00:00 UTC 01:00 in winter.
    let summer = read(Mark::Time(Value::from(1_404_691_200)));
    assert_eq!(summer.wall - summer.at, 7_200.0);
    let winter = read(Mark::Time(Value::String("2014-12-01T00:00:00Z".into())));
    assert_eq!(winter.wall - winter.at, 3_600.0);
    let naive = read(Mark::Time(Value::String("2014-07-07 00:00:00".into())));
    assert_eq!((naive.at, naive.wall), (1_404_691_200.0, 1_404_691_200.0));
}

/// The window ending at sample `i` of a day's pattern kept by Berlin's wall clock,
/// half-hourly from the Monday at midnight `first` (seconds since the epoch, the times sent).
fn berlin_window(first: i64, i: u64) -> RawWindow {
    let berlin = TimeZone::get("Europe/Berlin")
        .expect("the time zone database (Debian: apt-get install tzdata)");
    let at = |i: u64| first + i as i64 * STEP_S as i64;
    let series = |i: u64| {
        let local = Timestamp::from_second(at(i))
            .expect("in range")
            .to_zoned(berlin.clone());
        let hour = f32::from(local.hour()) + f32::from(local.minute()) / 60.0;
        let weekend = local.weekday().to_monday_zero_offset() >= 5;
        humped(hour, if weekend { 0.5 } else { 1.0 }, i)
    };
    let from = i + 1 - W as u64;
    RawWindow {
        seq: i,
        start: Mark::Time(Value::from(at(from))),
        end: Mark::Time(Value::from(at(i))),
        data: (from..=i).map(series).collect(),
    }
}

/// Feeds six weeks of [`berlin_window`]s read on `zone`'s clock; returns the days with a
/// window at 0.9999 and checks that the season is a week and reads every window of the last
/// two weeks.
fn days_raised(first: i64, zone: &TimeZone) -> std::collections::BTreeSet<u64> {
    let (seasons, cal) = (
        Seasons {
            zone: zone.clone(),
            ..Seasons::default()
        },
        Calibration::default(),
    );
    let mut s = Season::default();
    let (mut days, mut judged) = (std::collections::BTreeSet::new(), 0);
    for i in W as u64 - 1..6 * 336 {
        let Some(p) = read(&mut s, &berlin_window(first, i), &seasons, &cal, false) else {
            continue;
        };
        if p >= 0.9999 {
            days.insert(i / 48);
        }
        judged += usize::from(i >= 4 * 336);
    }
    assert_eq!(s.period(), Some(336));
    assert_eq!(judged, 2 * 336, "windows of the last two weeks read");
    days
}

/// On the season's zone's clock a daylight-saving change is ordinary, whether it comes while
/// the stream is watched (spring) or after its season is chosen (autumn: the night the clocks
/// go back, and every day after it). On UTC's clock every day after it is an hour off, and
/// stays so: its windows are not healthy, so what their moments are expected to be never
/// follows.
#[test]
fn a_daylight_saving_change_moves_the_day_with_the_clock() {
    let berlin = TimeZone::get("Europe/Berlin")
        .expect("the time zone database (Debian: apt-get install tzdata)");
    // Monday 2014-09-29 00:00 in Berlin: the clocks go back on day 27 (Sunday 2014-10-26).
    let autumn = 1_411_941_600;
    // Monday 2015-03-16 00:00 in Berlin: they go forward on day 13 (Sunday 2015-03-29).
    let spring = 1_426_460_400;
    for first in [autumn, spring] {
        let on_berlin = days_raised(first, &berlin);
        assert!(
            on_berlin.is_empty(),
            "on Berlin's clock, days {on_berlin:?}"
        );
    }
    let on_utc = days_raised(autumn, &TimeZone::UTC);
    assert!(
        on_utc.iter().all(|&d| d >= 27) && on_utc.len() >= 10,
        "on UTC's clock, days {on_utc:?}"
    );
}

/// While a stream is watched its samples are kept in the wall clock's order: the hour the
/// clocks skip is filled, the hour they repeat is kept once.
#[test]
fn the_watch_keeps_the_wall_clocks_order() {
    let berlin = TimeZone::get("Europe/Berlin")
        .expect("the time zone database (Debian: apt-get install tzdata)");
    let seasons = Seasons {
        zone: berlin,
        weeks: 3,
        ..Seasons::default()
    };
    let cal = Calibration::default();
    // Twenty days of three weeks watched, from a Monday two weeks before a change (two
    // half-hours, on day 13).
    for (first, to, moments) in [
        (1_426_460_400, 20 * 48, 20 * 48 + 2),
        (1_413_151_200, 20 * 48, 20 * 48 - 2),
    ] {
        let mut s = Season::default();
        for i in W as u64 - 1..to {
            s.observe(&berlin_window(first, i), 1, &seasons, &cal);
            s.keep(true, &seasons);
        }
        assert!(!s.settled);
        assert_eq!(s.history.len(), moments as usize);
    }
}

/// A sensor that booted at the epoch and then synced its clock while watched: the window
/// across the jump is too slow to be the stream's rate. The watch starts again after it, and
/// the stream finds its week; it is not settled on "none" for good. Nor by a window whose
/// newest time does not read as one.
#[test]
fn a_clock_synced_during_the_watch_starts_it_again() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let synced = 3 * 48; // three days on the boot clock
    let at = |i: u64| {
        if i < synced {
            1_000 + i * STEP_S
        } else {
            1_404_691_200 + i * STEP_S
        }
    };
    let series = |i: u64| demand(i, &[]);
    let mut s = Season::default();
    for i in W as u64 - 1..synced + 5 * 336 {
        let first = i + 1 - W as u64;
        let w = RawWindow {
            seq: i,
            start: Mark::Time(Value::from(at(first))),
            end: if i == synced + 100 {
                Mark::Time("inf".into())
            } else {
                Mark::Time(Value::from(at(i)))
            },
            data: (first..=i).map(series).collect(),
        };
        read(&mut s, &w, &seasons, &cal, false);
        if i == synced {
            assert_eq!(s.phase(), Phase::Watching, "the window across the jump");
        }
    }
    assert_eq!(s.phase(), Phase::Week);
}

/// A clock set a week ahead for ten windows, then put right (a gateway's clock, an NTP fix):
/// the windows after the correction are before the newest sample taken. A window's rows of
/// them in a row are the clock's change, and the season reads on from there, its moments
/// coming again as after a daylight-saving change back. Before, they were taken for windows
/// seen already until the clock caught up: a week without a season, unsaid.
#[test]
fn a_clock_set_ahead_then_put_right_is_read_on_after_a_window_of_windows() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[]);
    let mut s = Season::default();
    let settled = (u64::from(seasons.weeks) + 1) * 336;
    run(&mut s, W as u64 - 1, settled, &series);
    assert_eq!(s.phase(), Phase::Week);
    let week = 336 * STEP_S;
    for i in settled..settled + 10 {
        let mut w = window(i, &series);
        (w.start, w.end) = (
            stamp_at((i + 1 - W as u64) * STEP_S + week),
            stamp_at(i * STEP_S + week),
        );
        read(&mut s, &w, &seasons, &cal, false);
    }
    let after: Vec<Option<f64>> = (settled + 10..settled + 10 + 2 * 336)
        .map(|i| read(&mut s, &window(i, &series), &seasons, &cal, false))
        .collect();
    let passed = after.iter().filter(|p| p.is_none()).count();
    assert!(
        passed < W,
        "{passed} windows passed after the clock was put right"
    );
    assert_eq!(s.phase(), Phase::Week);
    let flagged = after.iter().flatten().filter(|&&p| p >= 0.9999).count();
    assert!(flagged <= 2, "{flagged} windows flagged after it");
}

/// A source that sends two days of its past again (a gateway's buffer after a reboot) looks
/// like a clock set back: each moment is read again, but not learnt twice. Learning goes on
/// once the stream is past what was taken.
#[test]
fn a_past_sent_again_is_read_not_learnt_twice() {
    let series = |i| demand(i, &[]);
    let mut s = Season::default();
    let settled = (u64::from(Seasons::default().weeks) + 1) * 336;
    run(&mut s, W as u64 - 1, settled, &series);
    assert_eq!(s.phase(), Phase::Week);
    let profile = s.profile.clone();
    let again = run(&mut s, settled - 2 * 48, settled, &series);
    assert!(again.iter().any(Option::is_some), "read again");
    assert_eq!(s.profile, profile, "learnt twice");
    run(&mut s, settled, settled + 48, &series);
    assert_ne!(s.profile, profile, "learning stopped");
}
