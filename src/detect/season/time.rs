//! A season's clock: the time each sample was taken and what the zone's wall clock read then,
//! the step between samples, and how a window follows the last one (a gap, a clock changed).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{Calibrator, DAY_S, FILL_S, Season};
use crate::pipeline::{Mark, Seconds};

/// `step` as the whole number of seconds that divides a day within 0.5 % of it (a sensor's
/// nominal rate: 5 minutes, half an hour), when there is one; else as it is. A first window
/// whose last sample came 20 s late would otherwise hold 300.87 s for good (the windows after
/// are within 1 % of it), and a day of 287 samples would drift through the real one.
pub(super) fn nominal(step: f64) -> f64 {
    if !(1.0..=DAY_S).contains(&step) {
        return step;
    }
    let (lo, hi) = ((step * 0.995).ceil() as u32, (step * 1.005).floor() as u32);
    (lo..=hi)
        .filter(|&d| 86_400 % d == 0)
        .map(f64::from)
        .min_by(|a, b| (a - step).abs().total_cmp(&(b - step).abs()))
        .unwrap_or(step)
}

/// A sample's time: when it was taken, and what the season's zone's wall clock read then,
/// both in seconds since the epoch (the wall clock's as if it were UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Time {
    pub(super) at: f64,
    pub(super) wall: f64,
}

/// The time of a sample's mark ([`Mark::seconds`]): an instant is read on `zone`'s wall clock;
/// a time without a zone is the wall clock's reading already, and its instant too. `None` for
/// sample indices and anything else.
pub(super) fn time(mark: &Mark, zone: &TimeZone) -> Option<Time> {
    let Seconds { at, local } = mark.seconds()?;
    if local {
        return Some(Time { at, wall: at });
    }
    let instant = Timestamp::from_second(at.floor() as i64).ok()?;
    let offset = zone.to_offset(instant).seconds();
    Some(Time {
        at,
        wall: at + f64::from(offset),
    })
}

impl Season {
    /// The seconds between a window's samples, `span` over its `rows`: the step held when the
    /// window is at it (within 1 %, or within 1 % once an hour is taken off or added: a time
    /// without a zone skips or repeats an hour at a daylight-saving change) or on its grid
    /// (its span a whole number of held steps, within 1 % of a step: samples missing make it
    /// longer than its samples do, a time sent twice shorter; a sensor that skips a reading,
    /// or repeats one, keeps its rate), else its own ([`nominal`]). Only windows off the grid
    /// change it ([`Season::observe`]), so a first window with a gap in it (a step too long)
    /// is put right by the next whole one.
    pub(super) fn step(&self, span: f64, rows: usize) -> f64 {
        let held = self.step_s;
        let at = |span: f64| ((span / (rows - 1) as f64 - held) / held).abs() < 0.01;
        let steps = (span / held).round();
        let grid = steps >= 1.0 && (span - steps * held).abs() < 0.01 * held;
        if held > 0.0 && (grid || [span, span - 3_600.0, span + 3_600.0].into_iter().any(at)) {
            held
        } else {
            nominal(span / (rows - 1) as f64)
        }
    }

    /// How a window ending at `end` follows the last one: the moments the wall clock moved
    /// on by besides its new samples (a gap's, a daylight-saving change's; negative when the
    /// clock went back), and its samples not taken yet. `(0, 0)` for a window already seen
    /// (unless it is the last of a window's rows of them in a row: a clock set back);
    /// while watched, a gap of more than an hour beyond the window, or a change of rate or
    /// channels, starts the watch again (all its samples are new). (A season saved before a
    /// crash is at most [`SEASONS_EVERY`](crate::durable::checkpoint::SEASONS_EVERY) older
    /// than the rest of its stream's state, and, while watched, at most an hour of samples
    /// ([`Season::outruns`]): the windows between are such a gap.)
    pub(super) fn fresh(
        &mut self,
        end: Time,
        step: f64,
        rows: usize,
        channels: usize,
    ) -> (i64, usize) {
        if self.step_s == step && self.channels == channels && self.end_s > 0.0 {
            if self.end_at == 0.0 {
                // Saved before seasons had zones: its moments stay where they were.
                self.end_at = self.end_s;
                self.end_s += end.wall - end.at;
            }
            let ahead = (end.at - self.end_at) / step;
            // Not after the newest sample taken: the same window again (a redelivery), or a
            // clock set back (one set ahead, then put right). A window's rows of windows in a
            // row, each wholly before it, are the clock's change: read on from there, the
            // moments coming again as after a change back (while watched: watched again).
            self.behind = if ahead <= -(rows as f64) {
                self.behind + 1
            } else {
                0
            };
            if ahead < 0.5 {
                if self.behind < rows {
                    return (0, 0);
                }
                self.behind = 0;
                if self.settled {
                    let moved = ((end.wall - self.end_s) / step).round() as i64 - rows as i64;
                    return (moved, rows);
                }
            } else {
                let n = ahead.round() as usize;
                let moved = ((end.wall - self.end_s) / step).round() as i64 - n as i64;
                // A gap longer than the window: its moments pass (filled while watched).
                let gap = (moved + n.saturating_sub(rows) as i64, n.min(rows));
                if self.settled {
                    return gap;
                }
                // Read to the nearest step: a sample's time jitters (a sensor's clock, a
                // gateway's queue) without changing its rate.
                let hour = (FILL_S / step).round() as usize;
                if n <= rows + hour {
                    return gap;
                }
            }
        }
        *self = Self {
            step_s: step,
            channels,
            calibrator: Calibrator::new("season"),
            ..Self::default()
        };
        (0, rows)
    }
}
