use super::*;
use crate::pipeline::Mark;
use jiff::tz::TimeZone;
use serde_json::Value;
use std::time::UNIX_EPOCH;

mod clock;
mod early;
mod robust;
mod step;

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

/// Sample `i` of a daily hump at `hour`, `height` times as high as a weekday's, with noise.
fn humped(hour: f32, height: f32, i: u64) -> f32 {
    let hump = (std::f32::consts::PI * hour / 24.0).sin().powi(2);
    10.0 + 20.0 * hump * height + noise(i)
}

/// Taxi-like demand: a daily hump, half as high on Saturdays and Sundays (`sunday` lists other
/// days, counted from the first, that look like a Sunday: holidays).
fn demand(i: u64, sunday: &[u64]) -> f32 {
    let day = i / 48;
    let hour = (i % 48) as f32 / 2.0;
    let weekend = day % 7 >= 5 || sunday.contains(&day);
    humped(hour, if weekend { 0.5 } else { 1.0 }, i)
}

/// An RFC 3339-like time the way NAB's CSV files write them, from 2014-07-07 (a Monday).
fn stamp(i: u64) -> Mark {
    stamp_at(i * STEP_S)
}

/// [`stamp`]'s time `seconds` after its first sample.
fn stamp_at(seconds: u64) -> Mark {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(1_404_691_200 + seconds);
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
    feed(s, from, to, series, false)
}

/// [`run`], keeping every window in what its moments are expected to be with `keep_all`
/// (otherwise only those under the alert bar, as the judge does).
fn feed(
    s: &mut Season,
    from: u64,
    to: u64,
    series: &impl Fn(u64) -> f32,
    keep_all: bool,
) -> Vec<Option<f64>> {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    (from..to)
        .map(|i| read(s, &window(i, series), &seasons, &cal, keep_all))
        .collect()
}

/// Reads one window of a one-channel stream as the judge does: its seasonal probability
/// (`None`: no seasonal energy), learnt when under `learn_below`, and the window kept in what
/// its moments are expected to be when under the alert bar (or with `keep_all`).
fn read(
    s: &mut Season,
    w: &RawWindow,
    seasons: &Seasons,
    cal: &Calibration,
    keep_all: bool,
) -> Option<f64> {
    let Some(e) = s.observe(w, 1, seasons, cal) else {
        s.keep(true, seasons);
        return None;
    };
    let p = s.probability(e, cal);
    s.learn(e, Some(p), cal);
    s.keep(keep_all || p < 0.9999, seasons);
    Some(p)
}

#[test]
fn a_weekly_stream_finds_its_week_and_flags_a_holiday() {
    let weeks = |n: u64| n * 336;
    let w = u64::from(Seasons::default().weeks);
    let mut s = Season::default();
    // A holiday on the Thursday of the fifth week.
    let series = |i| demand(i, &[4 * 7 + 3]);
    let watched = run(&mut s, W as u64 - 1, weeks(w) - 1, &series);
    // Read by a day from the end of its first week (its weekdays and weekend alike a day
    // apart, by their autocorrelation), the week still watched.
    let day = Seasons::default().days as usize * 48 - W;
    assert!(
        watched[..day].iter().all(Option::is_none),
        "read before the days watched"
    );
    assert!(
        watched[day..].iter().all(Option::is_some),
        "not read by the day"
    );
    assert_eq!((s.period(), s.phase()), (None, Phase::Day));
    let week4 = run(&mut s, weeks(w) - 1, weeks(4), &series);
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
    assert_only_the_holiday(&flagged, thursday, W as u64);
}

/// Asserts that windows ending at the samples `flagged` include the holiday's (a day from
/// sample `thursday`) and none else: none ending before it, nor `slack` samples after its day.
fn assert_only_the_holiday(flagged: &[u64], thursday: u64, slack: u64) {
    assert!(!flagged.is_empty(), "the holiday was not flagged");
    assert!(
        flagged
            .iter()
            .all(|&i| i >= thursday && i < thursday + 48 + slack),
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

    // Samples a second apart: two weeks would not fit, so it settles at once.
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

/// The energy a model gives an ordinary window of sample `i`: the same small spread
/// everywhere.
fn ordinary(i: u64) -> f32 {
    1.0 + 0.1 * noise(i + 7_000_000).abs()
}

/// Judges `series` through a [`Judge`](crate::detect::Judge) under `calibration`, as a
/// one-channel stream judged at 0.9999 (raise after 3, clear after 10, accepted by `accept`):
/// every window ending at samples `W - 1..to`, the model's energy of the one ending at sample
/// `i` being `energy(i)`. Each window's verdict (its `seq` is its last sample).
fn judge_series(
    calibration: Calibration,
    accept: crate::detect::Accept,
    series: &impl Fn(u64) -> f32,
    to: u64,
    energy: impl Fn(u64) -> f32,
) -> Vec<crate::detect::Verdict> {
    let tuning = crate::detect::StreamTuning::default();
    judge_tuned(calibration, tuning, accept, series, to, energy)
}

/// [`judge_series`] for a stream with `[detect]` settings of its own.
fn judge_tuned(
    calibration: Calibration,
    tuning: crate::detect::StreamTuning,
    accept: crate::detect::Accept,
    series: &impl Fn(u64) -> f32,
    to: u64,
    energy: impl Fn(u64) -> f32,
) -> Vec<crate::detect::Verdict> {
    use crate::detect::{Hysteresis, Judge, Judging, ModelRef, StreamInfo};
    let model = ModelRef {
        name: "m".into(),
        version: "v1".into(),
    };
    let hysteresis = Hysteresis {
        raise_after: 3,
        clear_after: 10,
        accept,
    };
    let stream =
        StreamInfo::new("plant", Judging::Probability(0.9999), hysteresis, 1).tuned_by(tuning);
    let mut judge = Judge::new(calibration);
    (W as u64 - 1..to)
        .map(|i| judge.judge(&stream, &model, 1.0, &window(i, series), energy(i).into()))
        .collect()
}

/// The windows of `verdicts` that made `transition`, by their last sample over `per` (48:
/// the day; 336: the week).
fn when(
    verdicts: &[crate::detect::Verdict],
    transition: crate::detect::Transition,
    per: u64,
) -> Vec<u64> {
    verdicts
        .iter()
        .filter(|v| v.transition == Some(transition))
        .map(|v| v.seq / per)
        .collect()
}

/// Through the judge: a stream whose model finds every window ordinary is raised on its
/// holiday by its season alone, once, and not without seasons, nor when the stream turns
/// its own season off (`[[streams]] season = false`).
#[test]
fn the_judge_raises_a_holiday_by_its_season() {
    use crate::detect::{Accept, AlertEvent, StreamTuning, Transition};
    let series = |i| demand(i, &[4 * 7 + 3]);
    let judged = |seasons: Seasons, tuning: StreamTuning| {
        let calibration = Calibration {
            seasons,
            ..Calibration::default()
        };
        judge_tuned(
            calibration,
            tuning,
            Accept::Never,
            &series,
            5 * 336,
            ordinary,
        )
    };
    let raises = |seasons: Seasons| {
        let verdicts = judged(seasons, StreamTuning::default());
        for v in verdicts
            .iter()
            .filter(|v| v.transition == Some(Transition::Raised))
        {
            // The alert says the season carried it.
            let q = v.season_probability.expect("a season's probability");
            assert!(q >= 0.9999 && v.probability == Some(q), "{v:?}");
            let alert = AlertEvent::from_verdict(v, "n", UNIX_EPOCH).expect("an alert");
            let json = serde_json::to_value(alert).expect("serialises");
            assert_eq!(json["season_probability"], q);
        }
        when(&verdicts, Transition::Raised, 1)
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
    // Its own season off: never watched for one, never raised.
    let own = judged(
        Seasons::default(),
        StreamTuning {
            no_season: true,
            ..StreamTuning::default()
        },
    );
    assert!(
        own.iter()
            .all(|v| v.season.is_none() && v.transition.is_none())
    );
}

/// A weekend the learning period never showed (two weekdays learnt) has energies the model
/// finds unusual, and without its season's word the calibration never learns them: every
/// weekend of twelve is raised. Once the week is chosen (after two watched), a window ordinary for its
/// moment is learnt whatever its energy while no alert is up ([`Seasons::teaches`]): here,
/// a weekend wholly unusual to the model, only the windows before each raise, so it takes
/// four weekends judged by the season before the weekends are quiet.
#[test]
fn weekends_the_season_vouches_for_are_learnt_and_no_longer_raised() {
    use crate::detect::{Accept, Transition};
    let series = |i| demand(i, &[]);
    // The model learnt weekdays: a weekend window's energy is four times theirs.
    let energy = |i: u64| {
        let weekend = (i / 48) % 7 >= 5;
        (if weekend { 4.0 } else { 1.0 }) + 0.1 * noise(i + 7_000_000).abs()
    };
    let weeks_raised = |teaches: f64| {
        let calibration = Calibration {
            learn_windows: 96,
            seasons: Seasons {
                teaches,
                ..Seasons::default()
            },
            ..Calibration::default()
        };
        let verdicts = judge_series(calibration, Accept::Never, &series, 12 * 336, energy);
        when(&verdicts, Transition::Raised, 336)
    };
    let without = weeks_raised(0.0);
    assert_eq!(without, (0..12).collect::<Vec<_>>(), "every weekend");
    // Raised in the two weeks watched and on the four weekends the season teaches; quiet
    // from then on.
    let with = weeks_raised(Seasons::default().teaches);
    assert_eq!(with, (0..6).collect::<Vec<_>>());
}

/// A weekly stream whose level climbs (traffic that grows, a plant that warms over the
/// spring) is not raised by its season: each moment is read as its departure from the mean of
/// the season before, so the drift is not the season (read as they are, the moments of each
/// week are further from the mean of the last four than the weeks watched were, and the
/// drifting stream is raised). Its holiday still is.
#[test]
fn a_drifting_level_is_not_the_season() {
    use crate::detect::{Accept, Transition};
    // Up by the day's swing (20) every four weeks.
    let series = |i: u64| demand(i, &[6 * 7 + 3]) + 20.0 * i as f32 / (4.0 * 336.0);
    // An ordinary energy for the model: its level follows the drift.
    let verdicts = judge_series(
        Calibration::default(),
        Accept::Never,
        &series,
        10 * 336,
        ordinary,
    );
    let raised = when(&verdicts, Transition::Raised, 48);
    assert_eq!(raised, vec![6 * 7 + 3], "raised on days {raised:?}");
}

/// A level that climbs and wanders, with no day or week in it, has no season: a climb
/// correlates with itself at every lag, so the season is chosen on each sample's departure
/// from the season before it (chosen on the samples as they are, it found one here, and
/// each wander from it was raised: `drift_climb_walk`, docs/EVALUATION-ROUNDS.md round
/// twenty-nine).
#[test]
fn a_climbing_wandering_level_has_no_season() {
    let n = 3 * 336 + 100;
    // 10 a week, a slow random walk, and noise: scripts/eval_judgment.py's drift_climb_walk.
    let walk: Vec<f32> = (0..n)
        .scan(0.0, |level, i| {
            *level += 0.1 * noise(i + 1_000_000);
            Some(*level)
        })
        .collect();
    let series = |i: u64| 50.0 + 10.0 * i as f32 / 336.0 + walk[i as usize] + 0.5 * noise(i);
    let mut s = Season::default();
    assert!(
        run(&mut s, W as u64 - 1, n, &series)
            .iter()
            .all(Option::is_none)
    );
    assert_eq!(s.phase(), Phase::None);
}

/// A week's shutdown is raised, and the week after it is ordinary: the level samples depart
/// from counts each sample of the shutdown as what its moment was expected to be (taken as it
/// came, the idle week would lower the level, and the ordinary week after it would look busy).
#[test]
fn the_week_after_a_shutdown_is_ordinary() {
    use crate::detect::{Accept, Transition};
    let holidays: Vec<u64> = (5 * 7..6 * 7).collect();
    let series = |i: u64| {
        if holidays.contains(&(i / 48)) {
            10.0 + noise(i)
        } else {
            demand(i, &[])
        }
    };
    let verdicts = judge_series(
        Calibration::default(),
        Accept::Never,
        &series,
        8 * 336,
        ordinary,
    );
    let raised = when(&verdicts, Transition::Raised, 48);
    let cleared = when(&verdicts, Transition::Cleared, 48);
    assert_eq!(raised, vec![5 * 7], "raised on days {raised:?}");
    assert_eq!(cleared, vec![6 * 7], "cleared on days {cleared:?}");
}

/// A holiday is not expected a season later: its samples never go into what its moments are
/// expected to be (taken in anyway, the next Thursday would look like a fault).
#[test]
fn the_week_after_a_holiday_is_ordinary() {
    let series = |i| demand(i, &[4 * 7 + 3]);
    let next_thursday = |keep_all: bool| {
        let first = W as u64 - 1;
        let p = feed(&mut Season::default(), first, 6 * 336, &series, keep_all);
        let thursday = ((5 * 7 + 3) * 48 - first) as usize..((5 * 7 + 4) * 48 - first) as usize;
        p[thursday].iter().flatten().fold(0.0_f64, |a, &b| a.max(b))
    };
    let top = next_thursday(false);
    assert!(top < 0.9999, "the Thursday after the holiday reached {top}");
    let echo = next_thursday(true);
    assert!(echo >= 0.9999, "taken in, the holiday would echo: {echo}");
}

/// A new schedule (from day 29 every day's hump three hours later), raised by the season
/// alone: kept raised to the end by default. With `accept_after` it is accepted: each time the
/// alert has been up that long the stream learns again, and its learning windows (two days'
/// here) move what their moments are expected to be, until the whole week has; the alert,
/// raised once, clears, and the new schedule is ordinary from then on.
#[test]
fn a_new_schedule_is_accepted_when_configured() {
    use crate::detect::{Accept, AlertState, Transition};
    let series = |i: u64| {
        let later = if i >= 29 * 48 { 6 } else { 0 };
        demand((i + 48 * 7 * 100 - later) % (48 * 7 * 100), &[])
    };
    let end = 9 * 336;
    let run = |accept_after: u32| {
        let calibration = Calibration {
            learn_windows: 96,
            ..Calibration::default()
        };
        let mut verdicts = judge_series(
            calibration,
            Accept::Windows(accept_after),
            &series,
            end,
            ordinary,
        );
        let raised = when(&verdicts, Transition::Raised, 48);
        (raised, verdicts.pop().expect("judged"))
    };
    let (raised, last) = run(0);
    assert_eq!(raised.len(), 1, "raised on days {raised:?}");
    assert!(raised[0] >= 29, "{raised:?}");
    assert_eq!(last.state, AlertState::Raised, "kept raised: {last:?}");
    let (raised, last) = run(48);
    assert_eq!(raised.len(), 1, "raised on days {raised:?}");
    assert_eq!(last.state, AlertState::Normal, "{last:?}");
    let q = last
        .season_probability
        .expect("the season chosen again and read");
    assert!(q < 0.9999, "{last:?}");
}

/// While watched, a gap of up to an hour beyond a window (a season saved up to ten minutes
/// before a crash sees one) is filled with the sample before it; a longer one starts the
/// watch again.
#[test]
fn a_short_gap_in_the_watch_is_filled() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[]);
    // Half-hourly: an hour is two samples; windows ending at 500..500 + skipped are lost.
    // Filled: every sample up to 600; watched again: the window after the gap's and on.
    let again = W + (600 - (500 + W as u64 + 2) - 1) as usize;
    for (skipped, kept) in [(W as u64 + 1, 600), (W as u64 + 2, again)] {
        let mut s = Season::default();
        for i in (W as u64 - 1..600).filter(|i| !(500..500 + skipped).contains(i)) {
            s.observe(&window(i, &series), 1, &seasons, &cal);
            s.keep(true, &seasons);
        }
        assert_eq!(s.history.len(), kept, "{skipped} windows lost");
    }
}

/// A watch saved a window before comes back whole, and an hour beyond that goes on (a restart
/// fills the gap); `outruns` says when the saved copy may not (conservatively, an hour), and
/// when a choice was made since.
#[test]
fn a_season_outruns_its_saved_copy_by_its_choice_or_an_hours_watch() {
    let series = |i| demand(i, &[]);
    let at = 400;
    let mut saved = Season::default();
    run(&mut saved, W as u64 - 1, at, &series);
    assert!(saved.outruns(None), "never saved");
    assert!(!saved.outruns(Some(&saved)));
    for ahead in 1..=40 {
        let mut live = saved.clone();
        run(&mut live, at, at + ahead, &series);
        // Half-hourly: two samples are an hour.
        assert_eq!(live.outruns(Some(&saved)), ahead > 2, "{ahead} ahead");
        let mut back = saved.clone();
        let next = at + ahead;
        run(&mut live, next, next + 1, &series);
        run(&mut back, next, next + 1, &series);
        // The window after the restart holds W samples (all there), and fills two more with
        // the sample before them (the watch goes on); after more, the watch starts again.
        assert_eq!(
            back.history == live.history,
            ahead < W as u64,
            "{ahead} ahead"
        );
        let kept = back.history.len() == live.history.len();
        assert_eq!(kept, ahead < W as u64 + 2, "{ahead} ahead");
    }
    // The choice made since a save outruns it; a chosen season saved a week before does not.
    let mut live = saved.clone();
    run(&mut live, at, 3 * 336 + 10, &series);
    assert_eq!(live.phase(), Phase::Week);
    assert!(live.outruns(Some(&saved)));
    let chosen = live.clone();
    run(&mut live, 3 * 336 + 10, 4 * 336 + 10, &series);
    assert!(!live.outruns(Some(&chosen)));
}

/// A constant channel beside a seasonal one (a set point) is left out: the stream still has
/// its week, and the holiday is as unusual as on the seasonal channel alone.
#[test]
fn a_constant_channel_is_left_out() {
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let series = |i| demand(i, &[4 * 7 + 3]);
    let mut s = Season::default();
    let mut top = 0.0_f64;
    for i in W as u64 - 1..5 * 336 {
        let mut w = window(i, &series);
        w.data = w.data.iter().flat_map(|&x| [x, 5.0]).collect();
        let Some(e) = s.observe(&w, 2, &seasons, &cal) else {
            s.keep(true, &seasons);
            continue;
        };
        let p = s.probability(e, &cal);
        s.learn(e, Some(p), &cal);
        s.keep(p < 0.9999, &seasons);
        if i / 48 == 4 * 7 + 3 {
            top = top.max(p);
        }
    }
    assert_eq!(s.period(), Some(336));
    assert_eq!(s.scale[1], 0.0);
    assert!(top >= 0.9999, "the holiday reached {top}");
}

/// A window recurs when it is no more unusual than its moment was a season before: the first
/// season after the choice is compared with the last one watched, and what each moment was
/// survives a restart.
#[test]
fn a_moment_recurs_when_no_more_unusual_than_a_season_before() {
    let series = |i| demand(i, &[]);
    let (seasons, cal) = (Seasons::default(), Calibration::default());
    let mut s = Season::default();
    // Each window's energy's probability, and whether it recurred.
    let judged = |s: &mut Season, from: u64, to: u64, p: &dyn Fn(u64) -> f64| -> Vec<bool> {
        (from..to)
            .map(|i| {
                s.observe(&window(i, &series), 1, &seasons, &cal);
                let r = s.recurs(p(i));
                s.keep(true, &seasons);
                r
            })
            .collect()
    };
    // The weeks watched, then the first and second weeks after them.
    let w = u64::from(seasons.weeks) * 336;
    let watched = judged(&mut s, W as u64 - 1, w, &|_| 0.999);
    assert_eq!(s.period(), Some(336));
    assert!(watched.iter().all(|r| !r), "nothing recurs while watched");
    // The first week after: as unusual as the last watched at even samples, more at odd ones.
    let fourth = judged(&mut s, w, w + 336, &|i| {
        if i.is_multiple_of(2) { 0.999 } else { 0.9999 }
    });
    assert!(fourth.iter().step_by(2).all(|&r| r), "as unusual recurs");
    assert!(
        fourth.iter().skip(1).step_by(2).all(|&r| !r),
        "more unusual does not"
    );
    // The second, at 0.9995 everywhere, half of it after a restart: it recurs where the
    // first was more unusual.
    let mut recurred = judged(&mut s, w + 336, w + 336 + 168, &|_| 0.9995);
    let json = serde_json::to_string(&s).expect("serialises");
    let mut back: Season = serde_json::from_str(&json).expect("deserialises");
    recurred.extend(judged(&mut back, w + 336 + 168, w + 2 * 336, &|_| 0.9995));
    for (j, r) in recurred.into_iter().enumerate() {
        assert_eq!(r, j % 2 == 1, "sample {}", w + 336 + j as u64);
    }
}

/// A fault growing slowly from the sixth week, on a weekly stream whose weekends are taught,
/// is raised when it would be without teaching, whether the season sees it (a new vibration
/// under an unchanged mean: each sample off its moment by a growing amount) or not (the
/// model's energy climbs, each moment's values stay where they were). The season teaches
/// only a window no more unusual than its moment was a season before ([`Season::recurs`]): a
/// weekend the model never learnt comes back as unusual, a fault that grows is more unusual
/// each season. (Taught on the season's word alone, these three were raised one to seven
/// days later; with weekends no more unusual than weekdays, the slowest unseen one was not
/// raised in the seven weeks after its onset.)
#[test]
fn a_growing_fault_is_not_taught() {
    use crate::detect::{Accept, Transition};
    let onset = 5 * 336;
    // (growth of the fault's amplitude a day, in the noise's; the model's energy over its
    // squared amplitude; whether the samples show it)
    for (rate, k, seen) in [(0.05, 2.0, false), (0.25, 32.0, false), (0.25, 8.0, true)] {
        let amplitude = move |i: u64| rate * i.saturating_sub(onset) as f32 / 48.0;
        let series = move |i: u64| {
            let sign = if i.is_multiple_of(2) { 1.0 } else { -1.0 };
            demand(i, &[]) + if seen { sign * amplitude(i) } else { 0.0 }
        };
        // The model learnt weekdays: weekends are twice as unusual to it.
        let energy = |i: u64| {
            let weekend = (i / 48) % 7 >= 5;
            (if weekend { 2.0 } else { 1.0 })
                + 0.1 * noise(i + 7_000_000).abs()
                + k * amplitude(i).powi(2)
        };
        let first_raise = |teaches: f64| {
            let calibration = Calibration {
                seasons: Seasons {
                    teaches,
                    ..Seasons::default()
                },
                ..Calibration::default()
            };
            let verdicts = judge_series(calibration, Accept::Never, &series, 12 * 336, energy);
            (when(&verdicts, Transition::Raised, 1).into_iter()).find(|&i| i >= onset)
        };
        let untaught = first_raise(0.0).expect("raised without teaching");
        let taught = first_raise(Seasons::default().teaches);
        assert_eq!(taught, Some(untaught), "rate {rate}, k {k}, seen {seen}");
    }
}

/// A gap of a day, a week or two in a weekly stream (a sensor offline): the week after it is
/// as ordinary as without one. The moments passed count in the level as what they were expected
/// to be (left out, the level was the mean of part of a week: the day's gap took the highest
/// seasonal probability of the week after from 0.91 to 0.99999).
#[test]
fn the_week_after_a_gap_is_ordinary() {
    let seasons = Seasons::default();
    let series = |i| demand(i, &[]);
    let w = u64::from(seasons.weeks) * 336;
    for gap in [0, 48, 336, 2 * 336 + 100] {
        let mut s = Season::default();
        run(&mut s, W as u64 - 1, w + 10, &series);
        let from = w + 10 + gap;
        let after = run(&mut s, from, from + 336, &series);
        let top = after
            .iter()
            .map(|p| p.expect("read at once"))
            .fold(0.0, f64::max);
        assert!(top < 0.999, "the week after a gap of {gap} reached {top}");
    }
}

/// A moment's expected value is the mean of the seasons it holds, not of the seasons passed:
/// a moment a gap skipped (or a window not healthy) holds one fewer, and its next sample
/// weighs a third (two held), not a quarter. A season saved before the counts were kept
/// weighs by the seasons passed.
#[test]
fn a_moment_weighs_by_the_seasons_it_holds() {
    let seasons = Seasons::default();
    let held = |folded: Vec<u8>| {
        let mut s = Season {
            period: 1,
            channels: 1,
            profile: vec![0.0],
            folded,
            ..Season::default()
        };
        // The sixth season passed.
        s.fold(5, &[3.0], &seasons);
        (s.profile[0], s.folded)
    };
    assert_eq!(held(vec![2]), (1.0, vec![3]));
    assert_eq!(held(vec![4]), (0.75, vec![4]), "at most memory");
    assert_eq!(held(Vec::new()), (0.75, Vec::new()), "saved before");

    // Through the stream: chosen after two weeks, every moment holds both; a gap in the
    // third leaves the moments it skipped one season behind the rest, and a restart keeps
    // the counts.
    let mut s = Season::default();
    let series = |i| demand(i, &[]);
    let gap = 2 * 336 + 100;
    feed(&mut s, W as u64 - 1, gap, &series, true);
    assert_eq!(s.period(), Some(336));
    let json = serde_json::to_string(&s).expect("serialises");
    let mut s: Season = serde_json::from_str(&json).expect("deserialises");
    feed(&mut s, gap + 100, 3 * 336, &series, true);
    // The window after the gap brings its last W - 1 samples before it.
    let behind = s.folded.iter().filter(|&&n| n == 2).count();
    assert_eq!(behind, 100 - (W - 1));
    assert!(s.folded.iter().all(|&n| n == 2 || n == 3), "{:?}", s.folded);
}

/// A garbled sample (1e25, from a raw register read wrong) squares past f32. Its residual is
/// capped: the window is plainly unusual, and the season is still saved as numbers (an
/// infinite residual was saved as null, and the seasons file could not be read back).
#[test]
fn a_garbled_sample_is_unusual_and_the_season_still_saves() {
    let mut s = Season::default();
    let series = |i| demand(i, &[]);
    run(&mut s, W as u64 - 1, 3 * 336 + 10, &series);
    assert_eq!(s.period(), Some(336));
    let next = 3 * 336 + 10;
    let glitch = |i: u64| if i == next { 1e25_f32 } else { series(i) };
    let p = run(&mut s, next, next + 1, &glitch);
    assert!(p[0].is_some_and(|p| p > 0.9999), "{p:?}");
    for _ in 0..2 {
        let json = serde_json::to_string(&s).expect("serialises");
        assert!(!json.contains("null"), "{json}");
        let back: Season = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back.residuals, s.residuals);
        // The glitch stays in the window's residuals for W samples.
        run(&mut s, next + 1, next + W as u64 - 1, &glitch);
    }
}
