//! Seeds: the windows a stream sent while its model learnt from it, scored by the model's
//! first version, which calibrate the stream before that version judges it
//! ([`super::Judge::seed`]).

use super::{Calibration, Calibrator, Level, Scored};

/// The windows a stream sent while its model learnt from it (the learner's last ones), scored
/// by the model's first version: they calibrate the stream before that version judges it, so
/// the stream is judged from the version's first window on instead of learning for
/// [`Calibration::learn_windows`] more (NAB's rule: learn on the probationary period, then
/// judge). Given to [`super::Judge::seed`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seed {
    /// The model version that scored them.
    pub version: String,
    /// In stream order.
    pub windows: Vec<SeedWindow>,
}

/// One window of a [`Seed`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedWindow {
    /// Its samples (W x C, sample-major), for the input level.
    pub data: Vec<f32>,
    /// Its energy under the seed's version.
    pub energy: f32,
    /// Each channel's part of the energy ([`super::energy_parts`]; empty when unknown).
    pub parts: Vec<f32>,
}

/// Takes a [`Seed`]'s windows as a stream's first windows under its version: the first
/// [`Calibration::learn_windows`] learnt, the later ones read and taken while healthy, never
/// alerted on, the level settling where judging would have begun. The calibration of a stream
/// judged from its first window on, but for what its alerts would have kept out.
pub(super) fn calibrate(
    c: &mut Calibrator,
    level: &mut Option<Level>,
    seed: &Seed,
    channels: usize,
    cal: &Calibration,
) {
    for w in &seed.windows {
        let scored = Scored {
            energy: w.energy,
            parts: &w.parts,
        };
        if c.learning(cal) {
            super::take(c, level, &w.data, channels, scored, None, cal);
            continue;
        }
        if let Some(l) = level {
            l.settle();
        }
        let reading = c.read(w.energy, &w.parts, cal);
        super::take(c, level, &w.data, channels, scored, Some(&reading), cal);
    }
}
