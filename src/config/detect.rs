//! `[detect]`'s checks: the calibration, the alert probability (also a stream's own), the
//! restless raise and a stream's own season.

use super::RawDetect;
use crate::detect::{Accept, Calibration};

/// `[detect]`'s calibration settings; `c` is what they make (`RawDetect::calibration`).
pub(super) fn validate_calibration(d: &RawDetect, c: &Calibration, errs: &mut Vec<String>) {
    check_window_counts(c, "detect.", errs);
    if !(d.tail_quantile > 0.5 && d.tail_quantile < 1.0) {
        errs.push(format!(
            "detect.tail_quantile: {} must be between 0.5 and 1 (exclusive)",
            d.tail_quantile
        ));
    }
    check_alert_probability(d.alert_probability, d.tail_quantile, "detect.", errs);
    if let Err(e) = acceptance(d.accept_after, d.accept_after_s, "detect.") {
        errs.push(e);
    }
    if d.learn_below != 0.0 && !(d.learn_below > 0.5 && d.learn_below <= d.alert_probability) {
        errs.push(format!(
            "detect.learn_below: {} must be 0 (learn every healthy window) or between 0.5 and alert_probability ({})",
            d.learn_below, d.alert_probability
        ));
    }
    if d.restless_probability != 0.0
        && !(d.restless_probability > 0.5 && d.restless_probability < d.alert_probability)
    {
        errs.push(format!(
            "detect.restless_probability: {} must be 0 (no restless raise) or between 0.5 and alert_probability ({}), exclusive",
            d.restless_probability, d.alert_probability
        ));
    }
    if !(d.restless_share > 0.0 && d.restless_share <= 1.0) {
        errs.push(format!(
            "detect.restless_share: {} must be over 0 and at most 1",
            d.restless_share
        ));
    }
    if !(d.quiet_probability >= d.alert_probability && d.quiet_probability <= 1.0) {
        errs.push(format!(
            "detect.quiet_probability: {} must be between alert_probability ({}) and 1",
            d.quiet_probability, d.alert_probability
        ));
    }
    let thin_bar = c.thin_bar(d.alert_probability);
    if !(d.thin_widen >= 1.0 && thin_bar > d.tail_quantile) {
        errs.push(format!(
            "detect.thin_widen: {} must be at least 1 (1: the same bar) and keep the bar of a stream judged after a short learning period (1 - (1 - alert_probability) x thin_widen = {thin_bar}) over tail_quantile ({})",
            d.thin_widen, d.tail_quantile
        ));
    }
    if !(d.season_acf == 0.0 || (d.season_acf > 0.0 && d.season_acf <= 1.0)) {
        errs.push(format!(
            "detect.season_acf: {} must be 0 (no seasons) or over 0 and at most 1",
            d.season_acf
        ));
    }
    if !(2..=4).contains(&d.season_weeks) {
        errs.push(format!(
            "detect.season_weeks: {} must be between 2 and 4 (a week's autocorrelation needs two; a stream holds at most {} values)",
            d.season_weeks,
            crate::detect::season::MAX_VALUES
        ));
    }
    if d.season_days != 0 && !(2..7 * d.season_weeks).contains(&d.season_days) {
        errs.push(format!(
            "detect.season_days: {} must be 0 (a day waits for the weeks) or at least 2 (a day's autocorrelation needs two) and fewer than season_weeks' {} days",
            d.season_days,
            7 * d.season_weeks
        ));
    }
    if !(d.season_teaches >= 0.0 && d.season_teaches < 1.0) {
        errs.push(format!(
            "detect.season_teaches: {} must be 0 (off) or a probability under 1",
            d.season_teaches
        ));
    }
    if !(1..=4).contains(&d.season_memory) {
        errs.push(format!(
            "detect.season_memory: {} must be between 1 and 4",
            d.season_memory
        ));
    }
    if d.season_zone != "local"
        && let Err(e) = jiff::tz::TimeZone::get(&d.season_zone)
    {
        errs.push(format!(
            "detect.season_zone: {:?} is not a time zone ({e}): a name of the time zone database such as \"Europe/Berlin\" (Debian's tzdata package installs it), \"UTC\", or \"local\" for the system's",
            d.season_zone
        ));
    }
    if !(d.restless_calm > 0.0 && d.restless_calm <= d.restless_share) {
        errs.push(format!(
            "detect.restless_calm: {} must be over 0 and at most restless_share ({}); over it, the rule would raise again while the stream is still restless",
            d.restless_calm, d.restless_share
        ));
    }
    if !matches!(d.judge.as_str(), "probability" | "threshold") {
        errs.push(format!(
            "detect.judge: {:?} must be \"probability\" (calibrated per stream) or \"threshold\" (the model's energy threshold)",
            d.judge
        ));
    }
    if !(d.stale_after == 0.0 || (d.stale_after >= 2.0 && d.stale_after.is_finite())) {
        errs.push(format!(
            "detect.stale_after: {} must be 0 (never) or at least 2 (times a stream's usual interval; less fires on ordinary jitter)",
            d.stale_after
        ));
    }
    if !(d.stale_min_s >= 0.0 && d.stale_min_s <= 1e9) {
        errs.push(format!(
            "detect.stale_min_s: {} must be a number of seconds, 0 or more",
            d.stale_min_s
        ));
    }
}

/// A stream's `season = true` (the default, said only where it cannot hold) under `[detect]`'s
/// `shared` calibration; `timestamped`: its samples carry their times. `at` names the stream.
pub(super) fn check_own_season(
    shared: &Calibration,
    timestamped: bool,
    at: &str,
    errs: &mut Vec<String>,
) {
    if !shared.seasons.on() {
        errs.push(format!(
            "{at}.season: true, but [detect] season_acf = 0 turns seasons off for every stream: set season_acf (0.8 by default), and season = false on the streams that should have none"
        ));
    }
    if !timestamped {
        errs.push(format!(
            "{at}.season: true needs the samples' times (format \"object\" with timestamp_field): a season follows the wall clock"
        ));
    }
}

/// The settings counted in windows of `c`: `[detect]`'s, or a stream's own with `[detect]`'s
/// in place of the ones it leaves alone; each message starts with `at` (`detect.`).
pub(super) fn check_window_counts(c: &Calibration, at: &str, errs: &mut Vec<String>) {
    if c.learn_windows < 16 {
        errs.push(format!(
            "{at}learn_windows: {} is below 16; a calibration needs windows to learn from",
            c.learn_windows
        ));
    }
    if c.warm_windows < 16 {
        errs.push(format!(
            "{at}warm_windows: {} is below 16; a new version's calibration needs windows to learn from",
            c.warm_windows
        ));
    }
    if c.memory_windows < c.learn_windows {
        errs.push(format!(
            "{at}memory_windows: {} must be at least learn_windows ({})",
            c.memory_windows, c.learn_windows
        ));
    }
    if c.restless.windows == 0 || c.restless.windows > 100_000 {
        errs.push(format!(
            "{at}restless_windows: {} must be between 1 and 100000",
            c.restless.windows
        ));
    }
    if c.quiet.windows > 1_000_000 {
        errs.push(format!(
            "{at}quiet_windows: {} must be at most 1000000 (0: no quiet after a clear)",
            c.quiet.windows
        ));
    }
}

/// The acceptance `accept_after` (windows) and `accept_after_s` (seconds of the stream's own
/// time) say, at `at` (`detect.`, a stream's `streams[i].`, or `score`'s flags): one of them,
/// or neither.
pub fn acceptance(windows: u32, seconds: f64, at: &str) -> Result<Accept, String> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!(
            "{at}accept_after_s: {seconds} must be a number of seconds, 0 (never) or more"
        ));
    }
    match (windows, seconds > 0.0) {
        (0, false) => Ok(Accept::Never),
        (n, false) => Ok(Accept::Windows(n)),
        (0, true) => Ok(Accept::Seconds(seconds)),
        (n, true) => Err(format!(
            "{at}accept_after ({n} windows) / accept_after_s ({seconds} s): give one, not both"
        )),
    }
}

pub(super) fn check_alert_probability(
    p: f64,
    tail_quantile: f64,
    at: &str,
    errs: &mut Vec<String>,
) {
    if !(p > tail_quantile && p < 1.0) {
        errs.push(format!(
            "{at}alert_probability: {p} must be above detect.tail_quantile ({tail_quantile}) and below 1"
        ));
    }
}
