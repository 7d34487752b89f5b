//! Log-mel features for audio streams (sans-IO): samples in, `ndarray` matrices out.
//!
//! The definition is the DCASE 2020 Task 2 baseline's feature on librosa >= 0.10 defaults, and
//! `models/audio/logmel_reference.py` restates it in numpy; `tests/features.rs` holds the two
//! within 1e-3 dB of each other on real clips. For a clip of `len` samples:
//!
//! 1. **Centred frames.** Pad `n_fft / 2` zeros at both ends (librosa `center=True,
//!    pad_mode="constant"`). Frame `t` starts at `t * hop` in the padded signal, and there are
//!    `1 + (len + 2 * (n_fft / 2) - n_fft) / hop` frames (none if the padded clip is shorter
//!    than `n_fft`, which only an empty clip with an odd `n_fft` is).
//! 2. **Periodic Hann window** of length `n_fft`: `w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)`.
//! 3. **Power spectrum** `|X[k]|^2` of the one-sided FFT, `k = 0 ..= n_fft / 2`.
//! 4. **Mel filterbank** as `librosa.filters.mel(htk=False, norm="slaney")`: Slaney mel scale
//!    (`f / (200/3)` below 1 kHz, `15 + ln(f / 1000) / (ln 6.4 / 27)` above), `n_mels + 2` band
//!    edges evenly spaced in mel between `fmin` and `fmax`, triangular weights over the bin
//!    frequencies `k * sr / n_fft`, each triangle scaled by `2 / (f_upper - f_lower)`.
//! 5. **Decibels:** `10 * log10(mel + f64::EPSILON)`, the baseline's
//!    `20 / power * log10(mel + sys.float_info.epsilon)` with `power = 2`.
//!
//! [`LogMel::vectors`] then stacks `frames` consecutive rows as the baseline does: vector `t` is
//! `concat(frame t, frame t + 1, ..., frame t + frames - 1)`.
//!
//! Everything is computed in `f64` and rounded to `f32` once at the end: an `f32` FFT loses
//! quiet bands (60-80 dB below a frame's loudest) to round-off well past the tolerance.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, Axis, Slice};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

/// Largest `n_fft` accepted (4 s at 16 kHz). The window, FFT buffers and filterbank are built
/// up front, so an unbounded size would exhaust memory while a config is validated.
pub const MAX_N_FFT: usize = 1 << 16;
/// Most mel bands accepted (the dense filterbank is `n_mels x (n_fft / 2 + 1)`).
pub const MAX_N_MELS: usize = 512;
/// Most frames stacked into one vector (`n_mels * frames` values).
pub const MAX_FRAMES: usize = 1024;

/// Parameters of a log-mel extractor; [`Default`] is the DCASE 2020 Task 2 baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMelParams {
    /// Sample rate of the input, in Hz.
    pub sample_rate: u32,
    /// FFT size and window length, in samples.
    pub n_fft: usize,
    /// Hop between frames, in samples.
    pub hop: usize,
    /// Mel bands per frame.
    pub n_mels: usize,
    /// Consecutive frames stacked into one vector by [`LogMel::vectors`].
    pub frames: usize,
    /// Lowest band edge, in Hz.
    pub fmin: f32,
    /// Highest band edge, in Hz; `None` means the Nyquist frequency.
    pub fmax: Option<f32>,
}

impl Default for LogMelParams {
    /// 16 kHz, `n_fft` 1024, hop 512, 64 mels, 5 frames (320-dim vectors), 0 Hz to Nyquist.
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            n_fft: 1024,
            hop: 512,
            n_mels: 64,
            frames: 5,
            fmin: 0.0,
            fmax: None,
        }
    }
}

impl LogMelParams {
    /// Length of one stacked vector: `n_mels * frames`.
    pub fn vector_dim(&self) -> usize {
        self.n_mels * self.frames
    }

    /// The upper band edge in Hz (`fmax`, or the Nyquist frequency when unset).
    pub fn fmax_hz(&self) -> f64 {
        self.fmax
            .map_or(f64::from(self.sample_rate) / 2.0, f64::from)
    }

    /// The `n_mels + 2` mel band edges in Hz: band `m` spans `edges[m] .. edges[m + 2]`.
    pub fn band_edges_hz(&self) -> Vec<f32> {
        mel_edges(self.n_mels, f64::from(self.fmin), self.fmax_hz())
            .into_iter()
            .map(|e| e as f32)
            .collect()
    }
}

/// Why a [`LogMelParams`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// The sample rate is zero.
    #[error("sample_rate must be at least 1 Hz")]
    SampleRate,
    /// The FFT is too short to have a spectrum, or longer than [`MAX_N_FFT`].
    #[error("n_fft must be 2 to {MAX_N_FFT}, got {n_fft}")]
    FftSize {
        /// The size given.
        n_fft: usize,
    },
    /// The hop is zero.
    #[error("hop must be at least 1 sample")]
    Hop,
    /// No mel bands asked for, or more than [`MAX_N_MELS`].
    #[error("n_mels must be 1 to {MAX_N_MELS}")]
    Mels,
    /// No frames per vector asked for, or more than [`MAX_FRAMES`].
    #[error("frames must be 1 to {MAX_FRAMES}")]
    Frames,
    /// The band edges are not `0 <= fmin < fmax <= sample_rate / 2` (or not finite).
    #[error(
        "need 0 <= fmin < fmax <= {nyquist} Hz (sample_rate / 2), got fmin {fmin}, fmax {fmax}"
    )]
    FrequencyRange {
        /// Lower edge given.
        fmin: f32,
        /// Upper edge given, or the Nyquist frequency when unset.
        fmax: f32,
        /// Half the sample rate.
        nyquist: f32,
    },
    /// A mel band falls between two FFT bins and would always read `10 log10(eps)`.
    #[error(
        "mel band {band} of {n_mels} covers no FFT bin: use fewer mels, a larger n_fft or a wider band"
    )]
    EmptyMelBand {
        /// Index of the first empty band.
        band: usize,
        /// Bands asked for.
        n_mels: usize,
    },
}

/// One triangular mel filter: its non-zero weights, from FFT bin `start`.
#[derive(Debug, Clone)]
struct MelBand {
    start: usize,
    weights: Vec<f64>,
}

/// A log-mel extractor: the FFT plan, window, filterbank and work buffers, built once.
///
/// Sans-IO and single-threaded: `&mut self` only because the FFT buffers are reused.
pub struct LogMel {
    params: LogMelParams,
    fft: Arc<dyn Fft<f64>>,
    window: Vec<f64>,
    bands: Vec<MelBand>,
    buf: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// Validates `params`, plans the FFT and builds the window and mel filterbank.
    ///
    /// # Errors
    /// [`FeatureError`] when a parameter is out of range, or when a mel band would cover no FFT
    /// bin (librosa only warns there; a band that always reads the floor is a config mistake).
    pub fn new(params: LogMelParams) -> Result<Self, FeatureError> {
        validate(&params)?;
        let n_fft = params.n_fft;
        let fft = FftPlanner::new().plan_fft_forward(n_fft);
        let window = (0..n_fft)
            .map(|n| 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / n_fft as f64).cos())
            .collect();
        let dense = mel_filterbank(
            f64::from(params.sample_rate),
            n_fft,
            params.n_mels,
            f64::from(params.fmin),
            params.fmax_hz(),
        );
        let mut bands = Vec::with_capacity(params.n_mels);
        for (band, row) in dense.rows().into_iter().enumerate() {
            let Some(start) = row.iter().position(|&w| w > 0.0) else {
                return Err(FeatureError::EmptyMelBand {
                    band,
                    n_mels: params.n_mels,
                });
            };
            let end = row.iter().rposition(|&w| w > 0.0).map_or(start, |e| e + 1);
            bands.push(MelBand {
                start,
                weights: row.iter().skip(start).take(end - start).copied().collect(),
            });
        }
        let scratch = vec![Complex::default(); fft.get_inplace_scratch_len()];
        Ok(Self {
            fft,
            window,
            bands,
            buf: vec![Complex::default(); n_fft],
            scratch,
            power: vec![0.0; n_fft / 2 + 1],
            params,
        })
    }

    /// The parameters this extractor was built with.
    pub fn params(&self) -> &LogMelParams {
        &self.params
    }

    /// Frames [`LogMel::frames`] yields for a clip of `n_samples` samples.
    pub fn frame_count(&self, n_samples: usize) -> usize {
        let padded = n_samples + 2 * (self.params.n_fft / 2);
        if padded < self.params.n_fft {
            0
        } else {
            1 + (padded - self.params.n_fft) / self.params.hop
        }
    }

    /// Vectors [`LogMel::vectors`] yields for a clip of `n_samples` samples.
    pub fn vector_count(&self, n_samples: usize) -> usize {
        (self.frame_count(n_samples) + 1).saturating_sub(self.params.frames)
    }

    /// The log-mel spectrogram of a whole clip, `[n_frames, n_mels]`, in dB.
    ///
    /// `n_frames` is [`LogMel::frame_count`]; the module docs give the definition.
    pub fn frames(&mut self, samples: &[f32]) -> Array2<f32> {
        let n_frames = self.frame_count(samples.len());
        let mut out = Array2::zeros((n_frames, self.params.n_mels));
        for (t, mut row) in out.rows_mut().into_iter().enumerate() {
            self.power_spectrum(samples, t);
            self.log_mel(row.iter_mut());
        }
        out
    }

    /// Mel band energies of `self.power`, in dB, into `out`.
    fn log_mel<'a>(&self, out: impl Iterator<Item = &'a mut f32>) {
        for (cell, band) in out.zip(&self.bands) {
            let energy: f64 = band
                .weights
                .iter()
                .zip(&self.power[band.start..])
                .map(|(w, p)| w * p)
                .sum();
            *cell = (10.0 * (energy + f64::EPSILON).log10()) as f32;
        }
    }

    /// The log-mel of one frame of exactly `n_fft` samples (no padding), into `out` (`n_mels`
    /// values). The streaming path: a live stream has no clip edges to centre on.
    pub fn frame_into(&mut self, frame: &[f32], out: &mut [f32]) {
        for ((b, &x), &w) in self.buf.iter_mut().zip(frame).zip(&self.window) {
            *b = Complex::new(f64::from(x) * w, 0.0);
        }
        self.fft
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        for (p, x) in self.power.iter_mut().zip(&self.buf) {
            *p = x.norm_sqr();
        }
        self.log_mel(out.iter_mut());
    }

    /// Stacked log-mel vectors of a whole clip, `[n_frames - frames + 1, n_mels * frames]`.
    ///
    /// Row `t` is frames `t, t + 1, ..., t + frames - 1` of [`LogMel::frames`] side by side, as
    /// the DCASE 2020 baseline builds its autoencoder input. A clip shorter than `frames` frames
    /// yields no rows.
    pub fn vectors(&mut self, samples: &[f32]) -> Array2<f32> {
        let frames = self.frames(samples);
        stack_frames(frames.view(), self.params.frames)
    }

    /// Fills `self.power` with `|X[k]|^2` of frame `t` of the centred, zero-padded clip.
    fn power_spectrum(&mut self, samples: &[f32], t: usize) {
        let n_fft = self.params.n_fft;
        // Index of the frame's first value in `samples`, before padding is accounted for:
        // the frame covers padded[t * hop ..][..n_fft] = samples[t * hop - n_fft / 2 ..].
        let origin = t * self.params.hop;
        let pad = n_fft / 2;
        // Window positions i whose sample origin + i - pad lies inside the clip.
        let lo = pad.saturating_sub(origin).min(n_fft);
        let hi = (samples.len() + pad)
            .saturating_sub(origin)
            .min(n_fft)
            .max(lo);
        self.buf[..lo].fill(Complex::default());
        self.buf[hi..].fill(Complex::default());
        let first = origin + lo - pad;
        for ((b, &x), &w) in self.buf[lo..hi]
            .iter_mut()
            .zip(&samples[first..first + (hi - lo)])
            .zip(&self.window[lo..hi])
        {
            *b = Complex::new(f64::from(x) * w, 0.0);
        }
        self.fft
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        for (p, x) in self.power.iter_mut().zip(&self.buf) {
            *p = x.norm_sqr();
        }
    }
}

/// Log-mel frames of a live audio stream: samples in, one frame of `n_mels` values out every
/// `hop` samples once `n_fft` samples are there (frames are not centred: a stream has no start
/// to pad).
#[derive(Debug)]
pub struct Framer {
    logmel: LogMel,
    pending: Vec<f32>,
    frame: Vec<f32>,
    /// Samples still to drop before the next frame starts (a hop longer than `n_fft` skips
    /// samples between frames, possibly past the end of what has arrived).
    skip: usize,
}

impl Framer {
    /// A framer for `params`.
    ///
    /// # Errors
    /// As [`LogMel::new`].
    pub fn new(params: LogMelParams) -> Result<Self, FeatureError> {
        let n_mels = params.n_mels;
        Ok(Self {
            logmel: LogMel::new(params)?,
            pending: Vec::new(),
            frame: vec![0.0; n_mels],
            skip: 0,
        })
    }

    /// Pushes samples; appends each completed frame's `n_mels` values to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let (n_fft, hop) = (self.logmel.params.n_fft, self.logmel.params.hop);
        let skipped = self.skip.min(samples.len());
        self.skip -= skipped;
        self.pending.extend_from_slice(&samples[skipped..]);
        let mut start = 0;
        while start + n_fft <= self.pending.len() {
            let (logmel, frame) = (&mut self.logmel, &mut self.frame);
            logmel.frame_into(&self.pending[start..start + n_fft], frame);
            out.extend_from_slice(frame);
            start += hop;
        }
        let drained = start.min(self.pending.len());
        self.skip += start - drained;
        self.pending.drain(..drained);
    }
}

/// Rows `t .. t + frames` of `spec` side by side, for every `t` that fits.
fn stack_frames(spec: ArrayView2<'_, f32>, frames: usize) -> Array2<f32> {
    let (n_frames, n_mels) = spec.dim();
    let rows = (n_frames + 1).saturating_sub(frames);
    let mut out = Array2::zeros((rows, n_mels * frames));
    if rows == 0 {
        return out; // fewer frames than one vector needs
    }
    for k in 0..frames {
        // ndarray's `s!` expands to `#[allow(unsafe_code)]`, which the crate's forbid rejects.
        out.slice_axis_mut(Axis(1), Slice::from(k * n_mels..(k + 1) * n_mels))
            .assign(&spec.slice_axis(Axis(0), Slice::from(k..k + rows)));
    }
    out
}

fn validate(p: &LogMelParams) -> Result<(), FeatureError> {
    if p.sample_rate == 0 {
        return Err(FeatureError::SampleRate);
    }
    if !(2..=MAX_N_FFT).contains(&p.n_fft) {
        return Err(FeatureError::FftSize { n_fft: p.n_fft });
    }
    if p.hop == 0 {
        return Err(FeatureError::Hop);
    }
    if !(1..=MAX_N_MELS).contains(&p.n_mels) {
        return Err(FeatureError::Mels);
    }
    if !(1..=MAX_FRAMES).contains(&p.frames) {
        return Err(FeatureError::Frames);
    }
    let nyquist = p.sample_rate as f32 / 2.0;
    let fmax = p.fmax.unwrap_or(nyquist);
    // Written so that NaN fails too.
    let ordered = p.fmin >= 0.0 && p.fmin < fmax && fmax <= nyquist;
    if !ordered {
        return Err(FeatureError::FrequencyRange {
            fmin: p.fmin,
            fmax,
            nyquist,
        });
    }
    Ok(())
}

// Slaney mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, log above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4_f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// The `n_mels + 2` band edges in Hz, evenly spaced in mel: band `m` spans `edges[m] ..
/// edges[m + 2]` and peaks at `edges[m + 1]`.
fn mel_edges(n_mels: usize, fmin: f64, fmax: f64) -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    // numpy.linspace(lo, hi, n_mels + 2), whose last point is exactly `hi`.
    let step = (hi - lo) / (n_mels + 1) as f64;
    (0..n_mels + 2)
        .map(|i| {
            let m = if i == n_mels + 1 {
                hi
            } else {
                lo + i as f64 * step
            };
            mel_to_hz(m)
        })
        .collect()
}

/// `[n_mels, n_fft / 2 + 1]` weights, as `librosa.filters.mel(htk=False, norm="slaney")`.
fn mel_filterbank(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Array2<f64> {
    let n_bins = n_fft / 2 + 1;
    let edges = mel_edges(n_mels, fmin, fmax);
    let bin_hz = sr / n_fft as f64;
    Array2::from_shape_fn((n_mels, n_bins), |(m, k)| {
        let f = k as f64 * bin_hz;
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let rising = (f - left) / (centre - left);
        let falling = (right - f) / (right - centre);
        rising.min(falling).max(0.0) * 2.0 / (right - left)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LogMelParams {
        LogMelParams::default()
    }

    /// A clip of fewer frames than one vector stacks gives no rows (it panicked).
    #[test]
    fn a_clip_too_short_for_one_vector_gives_none() {
        let mut m = LogMel::new(params()).unwrap();
        for len in [0, 1, 511, 2047] {
            let v = m.vectors(&vec![0.1; len]);
            assert_eq!(v.dim(), (0, 64 * 5), "{len} samples");
        }
        assert_eq!(m.vectors(&[0.1; 2048]).nrows(), 1);
    }

    #[test]
    fn default_is_the_dcase_baseline() {
        let p = params();
        assert_eq!(
            (p.sample_rate, p.n_fft, p.hop, p.n_mels, p.frames),
            (16_000, 1024, 512, 64, 5)
        );
        assert_eq!(p.vector_dim(), 320);
        assert_eq!(p.fmax_hz(), 8000.0);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LogMelParams>(&json).unwrap(), p);
    }

    #[test]
    fn mel_scale_round_trips_and_is_slaney() {
        // Slaney: 1 kHz is mel 15, linear below; 2 kHz is 15 + ln 2 / (ln 6.4 / 27).
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        assert!((hz_to_mel(2000.0) - (15.0 + 27.0 * 2f64.ln() / 6.4f64.ln())).abs() < 1e-12);
        for hz in [0.0, 60.0, 999.0, 1000.0, 4321.0, 8000.0, 22_050.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
    }

    #[test]
    fn filterbank_triangles_have_slaney_area_and_peak_at_centres() {
        let (sr, n_fft, n_mels) = (16_000.0, 1024, 64);
        let fb = mel_filterbank(sr, n_fft, n_mels, 0.0, 8000.0);
        assert_eq!(fb.dim(), (64, 513));
        let bin_hz = sr / n_fft as f64;
        let mel_step = hz_to_mel(8000.0) / 65.0;
        let edge = |i: usize| mel_to_hz(i as f64 * mel_step);
        for (m, row) in fb.rows().into_iter().enumerate() {
            let (left, centre, right) = (edge(m), edge(m + 1), edge(m + 2));
            // Slaney norm: peak height 2 / (right - left), so each triangle's area is 1 (Hz).
            // Sampled at bin spacing, the sum times bin_hz approximates that area.
            let area = row.sum() * bin_hz;
            assert!((area - 1.0).abs() < 0.15, "band {m} area {area}");
            let (peak_bin, &peak) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            assert!(peak <= 2.0 / (right - left) + 1e-12, "band {m}");
            assert!(
                (peak_bin as f64 * bin_hz - centre).abs() <= bin_hz,
                "band {m}"
            );
            for (k, &w) in row.iter().enumerate() {
                let f = k as f64 * bin_hz;
                // A bin on an edge (Nyquist, for the last band) may round either way.
                if (f - left).abs() < 1e-6 || (f - right).abs() < 1e-6 {
                    assert!(w < 1e-12, "band {m} bin {k}");
                } else if f < left || f > right {
                    assert_eq!(w, 0.0, "band {m} bin {k}");
                } else {
                    assert!(w > 0.0, "band {m} bin {k}");
                }
            }
        }
        // Known librosa value: librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64,
        // dtype=np.float64).max() (checked against librosa 0.11).
        let max = fb.iter().copied().fold(0.0, f64::max);
        assert!((max - 0.021_331_152_321_304_517).abs() < 1e-15, "{max}");
    }

    #[test]
    fn frame_and_vector_counts_follow_centred_framing() {
        let mel = LogMel::new(params()).unwrap();
        assert_eq!(mel.frame_count(160_000), 313);
        assert_eq!(mel.vector_count(160_000), 309);
        assert_eq!(mel.frame_count(0), 1);
        assert_eq!(mel.frame_count(511), 1);
        assert_eq!(mel.frame_count(512), 2);
        assert_eq!(mel.vector_count(1000), 0);
        let odd = LogMel::new(LogMelParams {
            n_fft: 1023,
            hop: 100,
            n_mels: 16,
            ..params()
        })
        .unwrap();
        assert_eq!(odd.frame_count(0), 0);
        assert_eq!(odd.frame_count(1), 1);
        assert_eq!(odd.frame_count(1000), 10);
    }

    #[test]
    fn pure_tone_lands_in_its_mel_band() {
        let mut mel = LogMel::new(params()).unwrap();
        let fb = mel_filterbank(16_000.0, 1024, 64, 0.0, 8000.0);
        for hz in [250.0, 1000.0, 3000.0, 6500.0] {
            let tone: Vec<f32> = (0..16_000)
                .map(|n| (0.5 * (std::f64::consts::TAU * hz * n as f64 / 16_000.0).sin()) as f32)
                .collect();
            let spec = mel.frames(&tone);
            assert_eq!(spec.dim(), (32, 64));
            // The band whose filter weighs the tone's bin most, read in a middle frame.
            let bin = (hz * 1024.0 / 16_000.0).round() as usize;
            let expected = (0..64)
                .max_by(|&a, &b| fb[[a, bin]].total_cmp(&fb[[b, bin]]))
                .unwrap();
            let row = spec.row(16);
            let loudest = (0..64).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(loudest, expected, "{hz} Hz");
            // Far bands see only window leakage.
            assert!(row[loudest] - row[(loudest + 32) % 64] > 60.0, "{hz} Hz");
        }
    }

    #[test]
    fn silence_reads_the_epsilon_floor() {
        let mut mel = LogMel::new(params()).unwrap();
        let spec = mel.frames(&[0.0; 4096]);
        let floor = (10.0 * f64::EPSILON.log10()) as f32;
        assert!(spec.iter().all(|&v| v == floor));
    }

    #[test]
    fn vectors_stack_consecutive_frames() {
        let mut mel = LogMel::new(LogMelParams {
            n_mels: 8,
            frames: 3,
            ..params()
        })
        .unwrap();
        let clip: Vec<f32> = (0..8000)
            .map(|n| ((n * 7919) % 101) as f32 / 101.0)
            .collect();
        let frames = mel.frames(&clip);
        let vectors = mel.vectors(&clip);
        assert_eq!(frames.nrows(), 16);
        assert_eq!(vectors.dim(), (14, 24));
        for t in 0..14 {
            for k in 0..3 {
                assert_eq!(
                    vectors
                        .row(t)
                        .slice_axis(Axis(0), Slice::from(k * 8..(k + 1) * 8)),
                    frames.row(t + k),
                    "vector {t} part {k}"
                );
            }
        }
        assert_eq!(mel.vectors(&clip[..1000]).dim(), (0, 24));
    }

    #[test]
    fn streaming_frames_equal_the_clip_frames_away_from_the_edges() {
        let p = params();
        let mut clip = LogMel::new(p.clone()).unwrap();
        let samples: Vec<f32> = (0..16_000)
            .map(|i| ((i as f32) * 0.05).sin() * 0.3)
            .collect();
        let whole = clip.frames(&samples);
        let mut framer = Framer::new(p.clone()).unwrap();
        let mut out = Vec::new();
        for chunk in samples.chunks(333) {
            framer.push(chunk, &mut out);
        }
        // Streaming frame k starts at sample k * hop; centred frame k + 1 starts at
        // (k + 1) * hop - n_fft / 2 = k * hop when hop = n_fft / 2.
        let n = out.len() / p.n_mels;
        assert_eq!(n, 1 + (16_000 - p.n_fft) / p.hop);
        for k in 0..n {
            for m in 0..p.n_mels {
                let (a, b) = (out[k * p.n_mels + m], whole[[k + 1, m]]);
                assert!((a - b).abs() < 1e-4, "frame {k} band {m}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_bad_parameter_is_refused() {
        let cases = [
            (
                LogMelParams {
                    sample_rate: 0,
                    ..params()
                },
                FeatureError::SampleRate,
            ),
            (
                LogMelParams {
                    n_fft: 1,
                    ..params()
                },
                FeatureError::FftSize { n_fft: 1 },
            ),
            (LogMelParams { hop: 0, ..params() }, FeatureError::Hop),
            (
                LogMelParams {
                    n_mels: 0,
                    ..params()
                },
                FeatureError::Mels,
            ),
            (
                LogMelParams {
                    frames: 0,
                    ..params()
                },
                FeatureError::Frames,
            ),
            (
                LogMelParams {
                    fmax: Some(9000.0),
                    ..params()
                },
                FeatureError::FrequencyRange {
                    fmin: 0.0,
                    fmax: 9000.0,
                    nyquist: 8000.0,
                },
            ),
            (
                LogMelParams {
                    fmin: 4000.0,
                    fmax: Some(4000.0),
                    ..params()
                },
                FeatureError::FrequencyRange {
                    fmin: 4000.0,
                    fmax: 4000.0,
                    nyquist: 8000.0,
                },
            ),
            (
                LogMelParams {
                    fmin: -1.0,
                    ..params()
                },
                FeatureError::FrequencyRange {
                    fmin: -1.0,
                    fmax: 8000.0,
                    nyquist: 8000.0,
                },
            ),
            (
                LogMelParams {
                    n_fft: 256,
                    n_mels: 128,
                    ..params()
                },
                FeatureError::EmptyMelBand {
                    band: 0,
                    n_mels: 128,
                },
            ),
        ];
        for (p, want) in cases {
            assert_eq!(LogMel::new(p.clone()).unwrap_err(), want, "{p:?}");
        }
        let nan = LogMel::new(LogMelParams {
            fmin: f32::NAN,
            ..params()
        });
        assert!(matches!(nan, Err(FeatureError::FrequencyRange { .. })));
        // Not a power of two, odd, tiny: all fine for rustfft.
        for n_fft in [4, 1000, 1023] {
            let p = LogMelParams {
                n_fft,
                n_mels: 1,
                ..params()
            };
            assert!(LogMel::new(p).is_ok(), "n_fft {n_fft}");
        }
    }
}
