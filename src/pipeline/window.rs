//! Per-stream windowing: a ring buffer of the last W samples, a window every H samples.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::Value;

/// A position in a stream: the payload's timestamp when it carries one, else the sample index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Mark {
    /// Sample index (0-based, counted since the stream was first seen).
    Index(u64),
    /// Timestamp copied from the payload.
    Time(Value),
}

/// A mark read as a time ([`Mark::seconds`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds {
    /// Seconds since the Unix epoch; for a `local` time, since the epoch of its own wall clock.
    pub at: f64,
    /// The mark was a wall-clock time with no zone (`2020-02-08 13:30:47`).
    pub local: bool,
}

impl Mark {
    /// The mark as a time: a number since the epoch, or its text (seconds, or milliseconds,
    /// microseconds or nanoseconds, told apart by size: no time in seconds reaches 10^11, the
    /// year 5138), an RFC 3339 time with a zone (`Z`, `+02:00`, `-0530`), or a wall-clock time
    /// without one (the `T` may be a space; read as if it were UTC, and said to be `local`).
    /// `None` for sample indices and anything else.
    pub fn seconds(&self) -> Option<Seconds> {
        let epoch = |mut at: f64| {
            if !at.is_finite() {
                return None; // "inf" parses as a number, and no division brings it down
            }
            while at.abs() >= 1e11 {
                at /= 1e3;
            }
            Some(Seconds { at, local: false })
        };
        let text = match self {
            Self::Time(Value::Number(n)) => return epoch(n.as_f64()?),
            Self::Time(Value::String(s)) => s.trim(),
            _ => return None,
        };
        // A CSV's column, or a payload's field, may hold the number as text.
        if let Ok(n) = text.parse::<f64>() {
            return epoch(n);
        }
        if let Ok(t) = text.parse::<jiff::Timestamp>() {
            return Some(Seconds {
                at: t.as_duration().as_secs_f64(),
                local: false,
            });
        }
        let wall: jiff::civil::DateTime = text.parse().ok()?;
        let at = jiff::tz::TimeZone::UTC.to_timestamp(wall).ok()?;
        Some(Seconds {
            at: at.as_duration().as_secs_f64(),
            local: true,
        })
    }
}

/// One complete window of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWindow {
    /// Window number in its stream, from 0.
    pub seq: u64,
    /// First sample.
    pub start: Mark,
    /// Last sample.
    pub end: Mark,
    /// W x C values, sample-major (interleaved by channel).
    pub data: Vec<f32>,
}

/// Window length W, hop H (both in samples) and channel count C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// W.
    pub window: usize,
    /// H.
    pub hop: usize,
    /// C.
    pub channels: usize,
}

/// Cuts one stream into windows. Sans-IO: push samples, get windows back.
#[derive(Debug)]
pub struct Windower {
    spec: WindowSpec,
    buf: VecDeque<f32>,
    /// Timestamps of the samples in `buf`, for streams whose payloads carry them (object
    /// payloads with a timestamp field: then every sample has one, else none does).
    stamps: VecDeque<Value>,
    samples_seen: u64,
    next_end: u64,
    next_seq: u64,
}

impl Windower {
    /// A windower for `spec` (W, H, C all at least 1; checked by config validation).
    pub fn new(spec: WindowSpec) -> Self {
        Self {
            spec,
            buf: VecDeque::with_capacity(spec.window * spec.channels),
            stamps: VecDeque::new(),
            samples_seen: 0,
            next_end: spec.window as u64,
            next_seq: 0,
        }
    }

    /// A windower that carries on a stream at window `next_seq`: the next sample pushed is
    /// sample `next_seq * hop`, the first of that window (a restart that replays the stream from
    /// there). Windows keep their boundaries and their numbers.
    pub fn resume(spec: WindowSpec, next_seq: u64) -> Self {
        let first = next_seq.saturating_mul(spec.hop as u64);
        Self {
            samples_seen: first,
            next_end: first.saturating_add(spec.window as u64),
            next_seq,
            ..Self::new(spec)
        }
    }

    /// The number the next window will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Samples pushed so far.
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// Pushes interleaved `values` (a whole number of samples; the decoder guarantees it) with
    /// the payload's timestamp, calling `emit` for each window completed.
    pub fn push(
        &mut self,
        values: &[f32],
        timestamp: Option<&Value>,
        mut emit: impl FnMut(RawWindow),
    ) {
        let WindowSpec {
            window,
            hop,
            channels,
        } = self.spec;
        for sample in values.chunks_exact(channels) {
            if self.buf.len() == window * channels {
                self.buf.drain(..channels);
            }
            self.buf.extend(sample.iter().copied());
            if let Some(t) = timestamp {
                if self.stamps.len() == window {
                    self.stamps.pop_front();
                }
                self.stamps.push_back(t.clone());
            }
            self.samples_seen += 1;
            if self.samples_seen == self.next_end {
                self.next_end += hop as u64;
                let (a, b) = self.buf.as_slices();
                let mut data = Vec::with_capacity(window * channels);
                data.extend_from_slice(a);
                data.extend_from_slice(b);
                let (start, end) = match (self.stamps.front(), self.stamps.back()) {
                    (Some(first), Some(last)) if self.stamps.len() == window => {
                        (Mark::Time(first.clone()), Mark::Time(last.clone()))
                    }
                    _ => (
                        Mark::Index(self.samples_seen - window as u64),
                        Mark::Index(self.samples_seen - 1),
                    ),
                };
                emit(RawWindow {
                    seq: self.next_seq,
                    start,
                    end,
                    data,
                });
                self.next_seq += 1;
            }
        }
    }
}

/// Windows that `samples` samples yield with window `w` and hop `h`.
///
/// ```
/// use ebgand::pipeline::expected_windows;
/// assert_eq!(expected_windows(100, 64, 64), 1);
/// assert_eq!(expected_windows(128, 64, 32), 3);
/// assert_eq!(expected_windows(10, 64, 64), 0);
/// ```
pub fn expected_windows(samples: u64, w: u64, h: u64) -> u64 {
    if samples < w {
        0
    } else {
        (samples - w) / h + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_as_seconds() {
        let at = |v: Value| Mark::Time(v).seconds().map(|s| (s.at, s.local));
        let utc = Some((1_700_000_000.5, false));
        assert_eq!(at(serde_json::json!(1_700_000_000.5)), utc);
        assert_eq!(
            at(serde_json::json!(1_700_000_000_500_u64)),
            utc,
            "milliseconds"
        );
        assert_eq!(
            at(serde_json::json!(1_700_000_000_500_000_000_u64)),
            utc,
            "nanoseconds"
        );
        assert_eq!(
            at(" 1700000000.5 ".into()),
            utc,
            "a number as text (a CSV column)"
        );
        assert_eq!(at("2023-11-14T22:13:20.5Z".into()), utc);
        assert_eq!(at("2023-11-15T00:13:20.5+02:00".into()), utc);
        // Without a zone: the wall clock's reading, as if it were UTC.
        assert_eq!(
            at("2023-11-14 22:13:20.5".into()),
            Some((1_700_000_000.5, true))
        );
        for none in [
            Mark::Index(7),
            Mark::Time("NaN".into()),
            Mark::Time("soon".into()),
            // Numbers as text that are no time: they must not be scaled down forever.
            Mark::Time("inf".into()),
            Mark::Time("-infinity".into()),
            Mark::Time("1e400".into()),
        ] {
            assert_eq!(none.seconds(), None, "{none:?}");
        }
        assert_eq!(Mark::Time(serde_json::json!(null)).seconds(), None);
    }

    fn run(spec: WindowSpec, pushes: &[&[f32]]) -> Vec<RawWindow> {
        let mut w = Windower::new(spec);
        let mut out = Vec::new();
        for p in pushes {
            w.push(p, None, |win| out.push(win));
        }
        out
    }

    #[test]
    fn tumbling_windows_across_payload_edges() {
        let spec = WindowSpec {
            window: 3,
            hop: 3,
            channels: 1,
        };
        let out = run(spec, &[&[0., 1.], &[2., 3., 4., 5., 6.]]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, vec![0., 1., 2.]);
        assert_eq!(out[1].data, vec![3., 4., 5.]);
        assert_eq!(
            (out[1].seq, &out[1].start, &out[1].end),
            (1, &Mark::Index(3), &Mark::Index(5))
        );
        assert_eq!(expected_windows(7, 3, 3), 2);
    }

    #[test]
    fn overlapping_windows_with_channels() {
        let spec = WindowSpec {
            window: 2,
            hop: 1,
            channels: 2,
        };
        let out = run(spec, &[&[0., 10., 1., 11., 2., 12.]]);
        assert_eq!(
            out.iter().map(|w| w.data.clone()).collect::<Vec<_>>(),
            vec![vec![0., 10., 1., 11.], vec![1., 11., 2., 12.]]
        );
        assert_eq!(expected_windows(3, 2, 1), 2);
        assert_eq!(expected_windows(1, 2, 1), 0);
    }

    #[test]
    fn timestamps_mark_window_edges() {
        let mut w = Windower::new(WindowSpec {
            window: 2,
            hop: 2,
            channels: 1,
        });
        let mut out = Vec::new();
        for t in 0..4 {
            w.push(&[t as f32], Some(&Value::from(100 + t)), |x| out.push(x));
        }
        assert_eq!(out[1].start, Mark::Time(Value::from(102)));
        assert_eq!(out[1].end, Mark::Time(Value::from(103)));
    }

    #[test]
    fn resume_keeps_window_boundaries_and_numbers() {
        let spec = WindowSpec {
            window: 4,
            hop: 2,
            channels: 1,
        };
        let data: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let whole = run(spec, &[&data]);
        // Carry on at window 3: its first sample is 3 * hop = 6.
        let mut w = Windower::resume(spec, 3);
        let mut resumed = Vec::new();
        w.push(&data[6..], None, |x| resumed.push(x));
        assert_eq!(resumed, whole[3..].to_vec());
        assert_eq!(w.samples_seen(), 20);
    }

    #[test]
    fn count_matches_formula_for_many_shapes() {
        for (w, h) in [(1, 1), (4, 1), (4, 3), (5, 5), (64, 32)] {
            for n in [0u64, 1, 3, 4, 5, 100, 257] {
                let spec = WindowSpec {
                    window: w,
                    hop: h,
                    channels: 1,
                };
                let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
                let out = run(spec, &[&data]);
                assert_eq!(
                    out.len() as u64,
                    expected_windows(n, w as u64, h as u64),
                    "w{w} h{h} n{n}"
                );
            }
        }
    }
}
