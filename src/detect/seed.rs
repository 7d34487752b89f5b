//! Seeds: the windows a stream sent while its model learnt from it, scored by the model's
//! first version, which calibrate the stream before that version judges it
//! ([`Seed::calibrated`], then [`super::Judge::seed`] and the checkpoint's progress).

use super::{Calibration, Calibrator, DetectorState, Level, Scored};

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

/// A stream's calibration under a model version, made from its [`Seed`]: what the stream is
/// judged by from that version's first window on.
#[derive(Debug, Clone, PartialEq)]
pub struct Seeded {
    /// The calibration (of the seed's version).
    pub calibrator: Calibrator,
    /// The input level (with [`Calibration::level_windows`]).
    pub level: Option<Level>,
}

impl Seed {
    /// Takes the seed's windows (of a stream of `channels` channels) as the stream's first
    /// windows under its version: the first [`Calibration::learn_windows`] learnt, the later
    /// ones read and taken while healthy, never alerted on, the level settling where judging
    /// would have begun. The calibration of a stream judged from its first window on, but for
    /// what its alerts would have kept out. With fewer windows than `learn_windows`, all are
    /// learnt and the stream is judged from the next one, when they are at least a quarter of
    /// it; a stream with fewer (it joined the learning period late) learns the rest when
    /// judged ([`Calibrator::learnt_from_seed`]).
    pub fn calibrated(&self, channels: usize, cal: &Calibration) -> Seeded {
        let mut calibrator = Calibrator::new(&self.version);
        let mut level = (cal.level_windows > 0).then(|| Level::new(&self.version));
        calibrate(&mut calibrator, &mut level, self, channels, cal);
        Seeded { calibrator, level }
    }
}

impl Seeded {
    /// Puts the calibration in a stream's `calibrator` and `level`, unless it already has one
    /// of the same version (a restart resumed it). Says whether it did.
    pub(super) fn install(
        self,
        calibrator: &mut Option<Calibrator>,
        level: &mut Option<Level>,
    ) -> bool {
        if calibrator
            .as_ref()
            .is_some_and(|c| c.version == self.calibrator.version)
        {
            return false;
        }
        *calibrator = Some(self.calibrator);
        *level = self.level;
        true
    }
}

impl DetectorState {
    /// The saved state of a stream, calibrated by `seeded` unless it already has a calibration
    /// of the same version (says whether it was): how the checkpoint keeps a seeded stream
    /// before its first judged window.
    pub fn seed(&mut self, seeded: Seeded) -> bool {
        seeded.install(&mut self.calibrator, &mut self.level)
    }
}

fn calibrate(
    c: &mut Calibrator,
    level: &mut Option<Level>,
    seed: &Seed,
    channels: usize,
    cal: &Calibration,
) {
    c.learnt_from_seed(seed.windows.len(), cal);
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
