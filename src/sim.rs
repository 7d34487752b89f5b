//! A simulated machine: the healthy vibration the default model was fitted on, and a bearing
//! fault (a 160 Hz defect tone plus periodic impacts).
//! Used by `ebgand demo`, `ebgand train --simulate` and the tests.

use std::f64::consts::TAU;

/// Sample rate, Hz.
pub const RATE: f64 = 1000.0;

/// A vibration source with continuous phase.
#[derive(Debug)]
pub struct Machine {
    t: u64,
    rng: fastrand::Rng,
}

impl Machine {
    /// A machine with a seeded noise source.
    pub fn new(seed: u64) -> Self {
        Self {
            t: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn gauss(&mut self) -> f64 {
        // Box-Muller; 1 - f64() keeps the log argument in (0, 1].
        let (u, v) = (1.0 - self.rng.f64(), self.rng.f64());
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }

    /// The next `n` samples; `fault` adds the bearing defect.
    pub fn samples(&mut self, n: usize, fault: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let t = self.t as f64 / RATE;
                self.t += 1;
                let mut x = 1.0
                    + 0.5 * (TAU * 50.0 * t).sin()
                    + 0.2 * (TAU * 100.0 * t + 1.0).sin()
                    + 0.05 * self.gauss();
                if fault {
                    x += 0.4 * (TAU * 160.0 * t).sin();
                    if self.t.is_multiple_of(37) {
                        x += 3.0;
                    }
                }
                x as f32
            })
            .collect()
    }
}
