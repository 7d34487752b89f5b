//! What carried a window's energy: each channel's share, by name, and the part of the window.
//!
//! The model's `residual` output is the reconstruction error of every value of the window in
//! normalised units (each channel divided by its own healthy spread), and the energy is the
//! mean of its squares. So the energy splits exactly into per-channel parts, and into parts of
//! the window in time, with no second inference: the scorer hands each batch's residual on,
//! [`Carried::of`] sums the squares per channel and per quarter of the window for the windows
//! that publish an explanation (an alert, a state message, a `score` line), and
//! [`Explanation`] names them. [`energy_parts`] splits every window's energy per channel the
//! same way, for the calibration of each part (`Calibration::per_channel`).

use serde::Serialize;
use serde::ser::SerializeMap;

/// Parts of the window in time that the energy is split into.
pub const PARTS: usize = 4;

/// Channels named in [`Explanation::top`] at most.
pub const TOP: usize = 3;

/// Each channel's part of a window's energy (each group's of `group` consecutive channels):
/// the mean over the window's values of its squared residual, so the parts sum to the energy.
/// Written into `out`, cleared first; empty for no residual, and for a single part (one
/// channel, or one group of them), which would be the energy again: the calibration reads
/// parts only when there are several, and this runs for every window.
pub fn energy_parts(residual: &[f32], channels: usize, group: usize, out: &mut Vec<f32>) {
    if residual.is_empty() || channels <= group.max(1) {
        out.clear();
        return;
    }
    sum_squares(residual, channels, group, out);
    let n = residual.len() as f32;
    out.iter_mut().for_each(|p| *p /= n);
}

/// `residual` (W x C values, sample-major) squared and summed per channel, `group`
/// consecutive channels together, into `out` (cleared first; empty for no channels).
fn sum_squares(residual: &[f32], channels: usize, group: usize, out: &mut Vec<f32>) {
    let group = group.max(1);
    out.clear();
    out.resize(channels.div_ceil(group), 0.0);
    if channels == 0 {
        return;
    }
    for row in residual.chunks_exact(channels) {
        for (c, &v) in row.iter().enumerate() {
            out[c / group] += v * v;
        }
    }
}

/// Groups an audio stream's mel bands are explained in.
pub const MEL_GROUPS: usize = 8;

/// Share of the energy that the top channels must together reach before the list stops.
pub const TOP_SHARE: f32 = 0.8;

/// A window's squared residual summed per channel (or band group) and per part of the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carried {
    /// Per channel, or per group of channels (see [`Names`]).
    pub channels: Vec<f32>,
    /// Per quarter of the window's rows, oldest first.
    pub parts: [f32; PARTS],
}

impl Carried {
    /// Sums `residual` (one window, W x C values, sample-major) per channel, grouping
    /// consecutive channels `group` at a time (1: every channel alone), and per quarter of the
    /// rows.
    pub fn of(residual: &[f32], channels: usize, group: usize) -> Self {
        let mut out = Self::default();
        sum_squares(residual, channels, group, &mut out.channels);
        if channels == 0 {
            return out;
        }
        let rows = residual.len() / channels;
        for (r, row) in residual.chunks_exact(channels).enumerate() {
            let sum: f32 = row.iter().map(|v| v * v).sum();
            out.parts[(r * PARTS / rows.max(1)).min(PARTS - 1)] += sum;
        }
        out
    }
}

/// The names a stream's energy is explained by: its channels' (the stream's `fields`, a CSV's
/// columns, or `ch0`, `ch1`, ...), or for audio the groups of mel bands with their frequencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// One per channel, or per group.
    pub names: Vec<String>,
    /// Consecutive channels per name (1, or the mel bands per group).
    pub group: usize,
}

impl Names {
    /// `names` when there is one per channel, else `ch0 ..`.
    pub fn channels(names: &[String], channels: usize) -> Self {
        let names = if names.len() == channels {
            names.to_vec()
        } else {
            (0..channels).map(|c| format!("ch{c}")).collect()
        };
        Self { names, group: 1 }
    }

    /// Mel bands in about [`MEL_GROUPS`] groups: `edges_hz` are the filterbank's `n_mels + 2`
    /// edges (`LogMelParams::band_edges_hz`).
    pub fn mel_groups(edges_hz: &[f32]) -> Self {
        Self::mel_bands(
            edges_hz,
            edges_hz.len().saturating_sub(2).div_ceil(MEL_GROUPS),
        )
    }

    /// Mel bands in groups of `group`: `edges_hz` are the filterbank's `n_mels + 2` edges, band
    /// `i` spanning `edges_hz[i] .. edges_hz[i + 2]`.
    pub fn mel_bands(edges_hz: &[f32], group: usize) -> Self {
        let n_mels = edges_hz.len().saturating_sub(2);
        let group = group.clamp(1, n_mels.max(1));
        let names = (0..n_mels)
            .step_by(group)
            .map(|a| {
                let b = (a + group).min(n_mels) - 1;
                format!("mel {a}-{b} ({:.0}-{:.0} Hz)", edges_hz[a], edges_hz[b + 2])
            })
            .collect();
        Self { names, group }
    }
}

/// What carried one window's energy, for people: see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Each channel's (or band group's) share of the energy, by name, in channel order; the
    /// shares sum to 1.
    #[serde(serialize_with = "as_map")]
    pub channels: Vec<(String, f64)>,
    /// The channels that carried the most, largest first: as many as it takes to reach 80 % of
    /// the energy, at most three.
    pub top: Vec<String>,
    /// The quarter of the window that carried the most: its first and last row within the
    /// window (0-based; frames for audio).
    pub rows: [usize; 2],
    /// That quarter's share of the energy.
    pub rows_share: f64,
    /// Where each channel's part is calibrated (`[detect] per_channel`): the channel whose part
    /// was the most unusual for that channel, which may carry little of the energy (a
    /// temperature that is normally quiet in the residual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unusual: Option<UnusualChannel>,
}

/// The channel whose part of the energy was the most unusual for it ([`Explanation::unusual`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusualChannel {
    /// Its name, as in [`Explanation::channels`].
    pub channel: String,
    /// The probability of its part under its own calibration alone (not corrected for the
    /// number of channels).
    pub probability: f64,
}

fn as_map<S: serde::Serializer>(v: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

/// Rounds a share to three decimals (what people read; the sum stays within 0.005 of 1), in
/// f64 so that JSON carries `0.041`, not the f32's `0.04100000113248825`.
fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}

impl Explanation {
    /// Names what `carried` holds (`ch0`, `ch1`, ... where `names` does not fit it); `rows` is
    /// the window's length in rows. `None` when nothing was carried (a window reconstructed
    /// exactly) or the residual was not finite.
    pub fn new(carried: &Carried, names: &Names, rows: usize) -> Option<Self> {
        let total: f32 = carried.channels.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return None;
        }
        let fallback;
        let names = if names.names.len() == carried.channels.len() {
            names
        } else {
            fallback = Names::channels(&[], carried.channels.len());
            &fallback
        };
        let shares: Vec<f32> = carried.channels.iter().map(|c| c / total).collect();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by(|&a, &b| shares[b].total_cmp(&shares[a]));
        let mut top = Vec::new();
        let mut held = 0.0;
        for &i in order.iter().take(TOP) {
            top.push(names.names[i].clone());
            held += shares[i];
            if held >= TOP_SHARE {
                break;
            }
        }
        let (part, &most) = carried
            .parts
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        // The rows [`Carried::of`] put in that part: row r is in part r * PARTS / rows.
        let first = (part * rows).div_ceil(PARTS);
        let last = ((part + 1) * rows).div_ceil(PARTS).max(first + 1) - 1;
        Some(Self {
            channels: names
                .names
                .iter()
                .cloned()
                .zip(shares.iter().map(|&s| round3(s)))
                .collect(),
            top,
            rows: [first, last],
            rows_share: round3(most / total),
            unusual: None,
        })
    }

    /// Names the part the calibration found most unusual (`Verdict::unusual`), if any.
    #[must_use]
    pub fn with_unusual(mut self, unusual: Option<super::Unusual>) -> Self {
        self.unusual = unusual.and_then(|u| {
            let (name, _) = self.channels.get(u.channel)?;
            Some(UnusualChannel {
                channel: name.clone(),
                probability: u.probability,
            })
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_splits_by_channel_and_by_quarter() {
        // 8 rows x 2 channels; channel 1 carries 3 times channel 0's energy, all in rows 6-7.
        let mut r = vec![0.0f32; 16];
        r[12] = 1.0; // row 6, ch 0
        r[13] = 1.0; // row 6, ch 1
        r[15] = 2.0f32.sqrt(); // row 7, ch 1
        let c = Carried::of(&r, 2, 1);
        assert_eq!(c.channels, vec![1.0, 3.0]);
        assert_eq!(c.parts, [0.0, 0.0, 0.0, 4.0]);
        let names = Names::channels(&["Temperature".into(), "Pressure".into()], 2);
        let e = Explanation::new(&c, &names, 8).unwrap();
        assert_eq!(
            e.channels,
            vec![("Temperature".into(), 0.25), ("Pressure".into(), 0.75)]
        );
        assert_eq!(e.top, ["Pressure", "Temperature"]);
        assert_eq!((e.rows, e.rows_share), ([6, 7], 1.0));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["channels"]["Pressure"], 0.75);
    }

    #[test]
    fn the_most_unusual_part_is_named_even_when_it_carries_little() {
        let c = Carried {
            channels: vec![0.05, 0.9, 0.05],
            parts: [1.0, 0.0, 0.0, 0.0],
        };
        let names = Names::channels(
            &["Temperature".into(), "Vibration".into(), "Flow".into()],
            3,
        );
        let e = Explanation::new(&c, &names, 16).unwrap();
        assert_eq!(e.unusual, None);
        let e = e.with_unusual(Some(crate::detect::Unusual {
            channel: 0,
            probability: 0.99999,
        }));
        assert_eq!(e.top, ["Vibration"]);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["unusual"]["channel"], "Temperature");
        assert_eq!(json["unusual"]["probability"], 0.99999);
        // An index past the channels names nothing.
        let e = e.with_unusual(Some(crate::detect::Unusual {
            channel: 7,
            probability: 0.9,
        }));
        assert_eq!(e.unusual, None);
    }

    #[test]
    fn one_dominant_channel_is_named_alone() {
        let c = Carried {
            channels: vec![0.05, 0.9, 0.05],
            parts: [1.0, 0.0, 0.0, 0.0],
        };
        let e = Explanation::new(&c, &Names::channels(&[], 3), 64).unwrap();
        assert_eq!(e.top, ["ch1"]);
        assert_eq!(e.rows, [0, 15]);
    }

    /// Rows not a multiple of four: the rows named are those the part holds.
    #[test]
    fn the_rows_named_are_the_parts_own() {
        for rows in 1..=13 {
            for hot in 0..rows {
                let mut r = vec![0.0f32; rows];
                r[hot] = 1.0;
                let e = Explanation::new(&Carried::of(&r, 1, 1), &Names::channels(&[], 1), rows)
                    .unwrap();
                assert!(
                    (e.rows[0]..=e.rows[1]).contains(&hot),
                    "{rows} rows, energy in row {hot}, named {:?}",
                    e.rows
                );
            }
        }
    }

    #[test]
    fn mel_bands_are_grouped_with_their_frequencies() {
        let edges: Vec<f32> = (0..10).map(|i| i as f32 * 100.0).collect(); // 8 bands
        let n = Names::mel_bands(&edges, 4);
        assert_eq!(n.names, ["mel 0-3 (0-500 Hz)", "mel 4-7 (400-900 Hz)"]);
        let c = Carried::of(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], 8, 4);
        assert_eq!(c.channels, vec![0.0, 1.0]);
    }

    #[test]
    fn nothing_carried_or_not_finite_explains_nothing() {
        let names = Names::channels(&[], 2);
        assert!(Explanation::new(&Carried::of(&[0.0; 4], 2, 1), &names, 2).is_none());
        assert!(Explanation::new(&Carried::of(&[f32::NAN, 1.0], 2, 1), &names, 1).is_none());
    }
}
