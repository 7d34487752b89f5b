//! The stream table: which configured stream a topic belongs to, this daemon's partition and
//! the stream cap, each stream's decoder, framer and windower, where a stream resumes after a
//! restart, and which streams have gone quiet.
//!
//! Sans-IO: no channels, no logging, and the clock is an argument. The ingest stage feeds it
//! messages and journal records, takes the windows it cuts, and reports what it says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::StreamSettings;
use crate::detect::{Hysteresis, Names, StreamInfo};
use crate::pipeline::features::{Framer, LogMelParams};
use crate::pipeline::topic::{partition_of, stream_id};
use crate::pipeline::{DecodeError, PayloadFormat, RawWindow, WindowSpec, Windower, decode_into};

/// What [`StreamTable::route`] found for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// A stream already in the table.
    Known,
    /// A stream added now; `resumed_at` is the window it carries on at when the last run's
    /// checkpoint knew it.
    New {
        /// Stream id.
        id: String,
        /// The first window not judged by the last run, if it knew the stream.
        resumed_at: Option<u64>,
    },
    /// A stream of another daemon's partition.
    OtherPartition,
    /// No configured stream matches the topic.
    NoMatch,
    /// A new stream, refused: the table holds `max_streams` already.
    Refused,
}

/// Where a stream carries on, from the last run's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The first window not judged.
    pub next_seq: u64,
    /// Input samples received: where the next message starts.
    pub samples: u64,
    /// The drift its windows were scored with (see [`crate::detect::level`]).
    pub drift: Vec<f32>,
}

/// What one message did to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Samples windowed (some may have been skipped as judged before a restart).
    Windowed,
    /// Every sample was judged before (a replayed record the checkpoint already covers).
    Covered,
    /// Samples were missing before this message; windowing went on at the next window
    /// boundary after the gap, whose length in input samples is given.
    Gap(u64),
}

/// A message windowed by [`StreamTable::window`]: what it did, and where it sits in its
/// stream (input samples `start .. start + samples`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowed {
    /// What it did.
    pub fed: Fed,
    /// Its first input sample.
    pub start: u64,
    /// Its input samples.
    pub samples: u64,
}

/// Why a message could not be windowed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The topic is not a stream of the table ([`StreamTable::route`] it first).
    #[error("no stream for topic {0:?}")]
    Unknown(String),
    /// The payload does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A stream dropped by [`StreamTable::expire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its topic.
    pub topic: String,
    /// Its id.
    pub id: String,
    /// Input samples received after its last complete window (dropped with it).
    pub partial: u64,
    /// Whether its stale alert was raised (it stays open: cleared when the stream is back).
    pub stale: bool,
}

/// One stream: its place in its signal and its windower.
#[derive(Debug)]
pub struct StreamEntry {
    route: usize,
    info: Arc<StreamInfo>,
    spec: WindowSpec,
    windower: Windower,
    /// Audio streams: PCM samples to log-mel frames, which are what gets windowed.
    framer: Option<Framer>,
    logmel: Option<LogMelParams>,
    /// Input samples (PCM samples for audio) from one window's start to the next one's.
    unit: u64,
    /// Input samples received so far: where the next message of the stream starts.
    received: u64,
    /// Input samples fed to the windower (or skipped as already judged) so far.
    fed: u64,
    /// The journal position of its first message (of this life: since it was last forgotten).
    since: u64,
    last_seen: Instant,
    /// Its live messages' timing, for telling a stale stream.
    pulse: Pulse,
}

/// When a stream's live messages arrive: its usual interval between them (replayed journal
/// records do not count), and whether it has been reported stale.
#[derive(Debug, Default)]
struct Pulse {
    last: Option<Instant>,
    /// Gaps measured, up to [`Pulse::SETTLED`].
    gaps: u32,
    /// Mean gap in seconds: plain over the first gaps, then a moving average.
    interval: f64,
    /// Reported stale, and since when it was silent.
    stale_since: Option<Instant>,
}

impl Pulse {
    /// Gaps before the interval is trusted; after it, each gap weighs 1/[`Pulse::SETTLED`].
    const SETTLED: u32 = 16;

    /// A live message at `now`; returns how long the stream was silent if it was stale.
    fn beat(&mut self, now: Instant) -> Option<Duration> {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            self.gaps = (self.gaps + 1).min(Self::SETTLED);
            self.interval += (gap - self.interval) / f64::from(self.gaps);
        }
        self.last = Some(now);
        self.stale_since
            .take()
            .map(|since| now.saturating_duration_since(since))
    }

    /// The usual interval, once enough gaps were measured.
    fn usual(&self) -> Option<Duration> {
        (self.gaps >= Self::SETTLED / 4).then(|| Duration::from_secs_f64(self.interval.max(0.0)))
    }
}

/// A stream that went stale, or came back: see [`StreamTable::stale`] and
/// [`StreamTable::take_fresh`].
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Stream id.
    pub id: String,
    /// How long it has been (or was) silent.
    pub silent: Duration,
    /// Its usual interval between messages.
    pub usual: Option<Duration>,
}

impl StreamEntry {
    fn new(route: usize, id: String, s: &StreamSettings, now: Instant) -> Self {
        let spec = WindowSpec {
            window: s.window.get(),
            hop: s.hop.get(),
            channels: s.channels.get(),
        };
        Self {
            route,
            info: Arc::new(
                StreamInfo::new(
                    id,
                    s.judging,
                    Hysteresis {
                        raise_after: s.raise_after,
                        clear_after: s.clear_after,
                        accept: s.accept,
                    },
                    spec.channels,
                )
                .named(match &s.logmel {
                    Some(p) => Names::mel_groups(&p.band_edges_hz()),
                    None => match &s.format {
                        PayloadFormat::Object { fields, .. } => {
                            Names::channels(fields, spec.channels)
                        }
                        _ => Names::channels(&[], spec.channels),
                    },
                })
                .tuned_by(s.tuning),
            ),
            spec,
            windower: Windower::new(spec),
            // Parameters were checked when the config was validated.
            framer: s.logmel.clone().and_then(|p| Framer::new(p).ok()),
            logmel: s.logmel.clone(),
            unit: spec.hop as u64 * s.logmel.as_ref().map_or(1, |p| p.hop as u64),
            received: 0,
            fed: 0,
            since: 0,
            last_seen: now,
            pulse: Pulse::default(),
        }
    }

    /// The journal position of the stream's first message since it was (last) forgotten.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// What the detect stage knows of the stream.
    pub fn info(&self) -> &Arc<StreamInfo> {
        &self.info
    }

    /// When its last message arrived.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// The number the next window cut will get: windows below it have left ingest.
    pub fn cut(&self) -> u64 {
        self.windower.next_seq()
    }

    /// Input samples received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Input samples from one window's start to the next one's: window `n` starts at input
    /// sample `n * unit`.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// Carries on at window `seq`: the next input sample fed is `seq * unit`.
    fn restart_at(&mut self, seq: u64) {
        self.windower = Windower::resume(self.spec, seq);
        self.framer = self.logmel.clone().and_then(|p| Framer::new(p).ok());
        self.fed = seq.saturating_mul(self.unit);
    }

    /// Feeds the input samples `start ..` of one message (`values`, interleaved by `channels`),
    /// skipping those fed before; windows completed go to `out`.
    fn feed(
        &mut self,
        start: u64,
        values: &[f32],
        channels: usize,
        timestamp: Option<&Value>,
        frames: &mut Vec<f32>,
        out: &mut Vec<RawWindow>,
    ) -> Fed {
        let end = start + (values.len() / channels) as u64;
        let mut outcome = Fed::Windowed;
        if start > self.fed {
            outcome = Fed::Gap(start - self.fed);
            self.restart_at(start.div_ceil(self.unit));
        }
        if end <= self.fed {
            return if outcome == Fed::Windowed {
                Fed::Covered
            } else {
                outcome
            };
        }
        let values = &values[(self.fed - start) as usize * channels..];
        if let Some(framer) = &mut self.framer {
            frames.clear();
            framer.push(values, frames);
            self.windower.push(frames, None, |w| out.push(w));
        } else {
            self.windower.push(values, timestamp, |w| out.push(w));
        }
        self.fed = end;
        outcome
    }

    /// Input samples fed since the last complete window's start (what an incomplete window
    /// holds).
    fn partial(&self) -> u64 {
        self.fed
            .saturating_sub(self.windower.next_seq().saturating_mul(self.unit))
    }
}

/// Every stream this daemon windows, by topic. See the module docs.
#[derive(Debug)]
pub struct StreamTable {
    routes: Vec<StreamSettings>,
    streams: HashMap<String, StreamEntry>,
    /// Topics known to belong to another daemon's partition, with when each was last seen, so
    /// their messages skip matching and hashing. Bounded like the streams.
    others: HashMap<String, Instant>,
    max_streams: usize,
    /// `(index, count)`: only streams whose [`partition_of`] is `index` are windowed.
    partition: Option<(u32, u32)>,
    scratch: Vec<f32>,
    frames: Vec<f32>,
    /// The windows cut by the last [`StreamTable::window`] call, and their stream's route and
    /// info, for [`StreamTable::take_windows`] (no second lookup).
    windows: Vec<RawWindow>,
    windowed: Option<(usize, Arc<StreamInfo>)>,
    /// Stale streams heard from again, for [`StreamTable::take_fresh`].
    fresh: Vec<Silence>,
}

impl StreamTable {
    /// A table for the configured streams (`routes`, matched in order), holding at most
    /// `max_streams` streams at once, and only those of `partition` when given.
    pub fn new(
        routes: Vec<StreamSettings>,
        max_streams: usize,
        partition: Option<(u32, u32)>,
    ) -> Self {
        Self {
            routes,
            streams: HashMap::new(),
            others: HashMap::new(),
            max_streams,
            partition,
            scratch: Vec::new(),
            frames: Vec::new(),
            windows: Vec::new(),
            windowed: None,
            fresh: Vec::new(),
        }
    }

    /// Most streams held at once.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Streams in the table.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The stream on `topic`, if it is in the table.
    pub fn get(&self, topic: &str) -> Option<&StreamEntry> {
        self.streams.get(topic)
    }

    /// Every stream in the table.
    pub fn entries(&self) -> impl Iterator<Item = &StreamEntry> {
        self.streams.values()
    }

    /// Marks the stream on `topic` as begun at journal position `since` (see
    /// [`StreamEntry::since`]).
    pub fn begin_at(&mut self, topic: &str, since: u64) {
        if let Some(e) = self.streams.get_mut(topic) {
            e.since = since;
        }
    }

    /// The route matching `topic` (first match wins) and the stream id it gives.
    pub fn route_of(&self, topic: &str) -> Option<(usize, String)> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            r.topic
                .captures(topic)
                .map(|cap| (i, stream_id(&r.name, &cap)))
        })
    }

    /// Finds the stream of `topic`, adding it when it is new and there is room; a new stream
    /// the last run's checkpoint knew (`saved`, by stream id) carries on where it was. `now`
    /// marks the stream as active.
    pub fn route(
        &mut self,
        topic: &str,
        now: Instant,
        saved: impl FnOnce(&str) -> Option<Resume>,
    ) -> Routed {
        if let Some(entry) = self.streams.get_mut(topic) {
            entry.last_seen = now;
            return Routed::Known;
        }
        if let Some(seen) = self.others.get_mut(topic) {
            *seen = now;
            return Routed::OtherPartition;
        }
        let Some((route, id)) = self.route_of(topic) else {
            return Routed::NoMatch;
        };
        if let Some((index, count)) = self.partition
            && partition_of(&id, count) != index
        {
            // Another daemon's stream: it receives the same message through its own session.
            if self.others.len() < self.max_streams {
                self.others.insert(topic.to_owned(), now);
            }
            return Routed::OtherPartition;
        }
        if self.streams.len() >= self.max_streams {
            return Routed::Refused;
        }
        let mut entry = StreamEntry::new(route, id.clone(), &self.routes[route], now);
        let resume = saved(&id);
        if let Some(r) = &resume {
            entry.restart_at(r.next_seq);
            entry.received = r.samples;
            entry.info.drift.set(r.drift.clone());
        }
        self.streams.insert(topic.to_owned(), entry);
        Routed::New {
            id,
            resumed_at: resume.map(|r| r.next_seq),
        }
    }

    /// Decodes a payload of the stream on `topic` and windows it; the windows cut are taken
    /// with [`StreamTable::take_windows`]. A live message (`start: None`) starts where the
    /// stream's last one ended; a replayed journal record says where it starts. `now` marks
    /// the stream as active. One lookup: [`StreamTable::route`] is only needed for a topic not
    /// in the table yet.
    ///
    /// # Errors
    /// [`StreamError`] for a topic not in the table or a payload that does not decode; the
    /// stream's samples are unchanged (a live message that does not decode still counts as
    /// the sensor heard from: its time and staleness are updated first).
    pub fn window(
        &mut self,
        topic: &str,
        payload: &[u8],
        start: Option<u64>,
        now: Instant,
    ) -> Result<Windowed, StreamError> {
        self.windows.clear();
        self.windowed = None;
        let entry = self
            .streams
            .get_mut(topic)
            .ok_or_else(|| StreamError::Unknown(topic.to_owned()))?;
        entry.last_seen = now;
        if start.is_none()
            && let Some(silent) = entry.pulse.beat(now)
        {
            self.fresh.push(Silence {
                id: entry.info.id.clone(),
                silent,
                usual: entry.pulse.usual(),
            });
        }
        let s = &self.routes[entry.route];
        let channels = if s.logmel.is_some() {
            1
        } else {
            s.channels.get()
        };
        let ts = decode_into(&s.format, channels, payload, &mut self.scratch)?;
        let start = start.unwrap_or(entry.received);
        let n = (self.scratch.len() / channels) as u64;
        entry.received = entry.received.max(start + n);
        let fed = entry.feed(
            start,
            &self.scratch,
            channels,
            ts.as_ref(),
            &mut self.frames,
            &mut self.windows,
        );
        self.windowed = Some((entry.route, entry.info.clone()));
        Ok(Windowed {
            fed,
            start,
            samples: n,
        })
    }

    /// The windows cut by the last successful [`StreamTable::window`] call, with their
    /// stream and its route (the index of its configured stream in the `routes` given to
    /// [`StreamTable::new`]).
    pub fn take_windows(
        &mut self,
    ) -> Option<(usize, Arc<StreamInfo>, std::vec::Drain<'_, RawWindow>)> {
        let (route, info) = self.windowed.take()?;
        Some((route, info, self.windows.drain(..)))
    }

    /// The next window `topic`'s stream will cut (for logs).
    pub fn next_seq(&self, topic: &str) -> Option<u64> {
        self.streams.get(topic).map(|e| e.windower.next_seq())
    }

    /// Marks stale, and returns, the streams whose usual interval is known and that have sent
    /// no live message for `multiple` times it and at least `floor`. Each is returned once,
    /// until it is heard from again ([`StreamTable::take_fresh`]).
    pub fn stale(&mut self, now: Instant, multiple: f64, floor: Duration) -> Vec<Silence> {
        let mut out = Vec::new();
        for e in self.streams.values_mut() {
            let p = &mut e.pulse;
            let (Some(last), Some(usual), None) = (p.last, p.usual(), p.stale_since) else {
                continue;
            };
            let silent = now.saturating_duration_since(last);
            if silent >= floor.max(usual.mul_f64(multiple)) {
                p.stale_since = Some(last);
                out.push(Silence {
                    id: e.info.id.clone(),
                    silent,
                    usual: Some(usual),
                });
            }
        }
        out
    }

    /// The stale streams heard from again since the last call, with how long each was silent.
    pub fn take_fresh(&mut self) -> Vec<Silence> {
        std::mem::take(&mut self.fresh)
    }

    /// Drops the streams (and other-partition topics) not seen for `idle` or longer, so that
    /// `max_streams` bounds the streams active at once, not every stream ever seen. Returns
    /// the streams dropped; each one that comes back starts over as a new stream.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> Vec<Expired> {
        let quiet = |seen: Instant| now.saturating_duration_since(seen) >= idle;
        self.others.retain(|_, seen| !quiet(*seen));
        let gone: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, e)| quiet(e.last_seen))
            .map(|(t, _)| t.clone())
            .collect();
        gone.into_iter()
            .filter_map(|topic| {
                let e = self.streams.remove(&topic)?;
                Some(Expired {
                    id: e.info.id.clone(),
                    partial: e.partial(),
                    stale: e.pulse.stale_since.is_some(),
                    topic,
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::RawConfig;

    /// One array stream, `vib` on `sensors/+/vibration`, of model `m` learnt from itself.
    pub(in crate::ingest) fn routes(window: usize, hop: usize) -> Vec<StreamSettings> {
        let raw = RawConfig::from_toml(&format!(
            r#"
[models.m]
path = ""
[[streams]]
name = "vib"
topic = "sensors/+/vibration"
model = "m"
format = "array"
window = {window}
hop = {hop}
"#
        ))
        .unwrap();
        raw.validate().unwrap().streams
    }

    fn payload(values: &[f32]) -> Vec<u8> {
        serde_json::to_vec(values).unwrap()
    }

    /// Windows `(seq, data)` from feeding `values` at `start`.
    fn feed(t: &mut StreamTable, start: u64, values: &[f32]) -> (Fed, Vec<(u64, Vec<f32>)>) {
        let fed = t
            .window(
                "sensors/a/vibration",
                &payload(values),
                Some(start),
                Instant::now(),
            )
            .unwrap()
            .fed;
        let (_, _, w) = t.take_windows().unwrap();
        (fed, w.map(|w| (w.seq, w.data)).collect())
    }

    fn table_at(window: usize, hop: usize, resume: Option<Resume>) -> StreamTable {
        let mut t = StreamTable::new(routes(window, hop), 10, None);
        let routed = t.route("sensors/a/vibration", Instant::now(), |_| resume);
        assert!(matches!(routed, Routed::New { .. }));
        t
    }

    #[test]
    fn a_resumed_stream_skips_what_was_judged_and_rebuilds_the_open_window() {
        // Window 4, hop 2; the checkpoint says windows 0 and 1 were judged: window 2 starts at
        // sample 4. The journal replays messages of 3 samples from sample 3.
        let mut t = table_at(
            4,
            2,
            Some(Resume {
                next_seq: 2,
                samples: 12,
                drift: vec![0.5],
            }),
        );
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (fed, w) = feed(&mut t, 0, &x[0..3]);
        assert_eq!((fed, w.len()), (Fed::Covered, 0));
        let (fed, w) = feed(&mut t, 3, &x[3..6]);
        assert_eq!((fed, w), (Fed::Windowed, vec![]));
        let (_, w) = feed(&mut t, 6, &x[6..9]);
        assert_eq!(w, vec![(2, vec![4., 5., 6., 7.])]);
        // The drift its windows were scored with carries on too.
        let entry = t.get("sensors/a/vibration").expect("stream");
        assert_eq!(entry.info().drift.get(), vec![0.5]);
        // A copy of a record already fed (a retired segment carried forward twice) is ignored.
        assert_eq!(feed(&mut t, 6, &x[6..9]).0, Fed::Covered);
        let (_, w) = feed(&mut t, 9, &x[9..12]);
        assert_eq!(
            w,
            vec![(3, vec![6., 7., 8., 9.]), (4, vec![8., 9., 10., 11.])]
        );
        assert_eq!(t.get("sensors/a/vibration").unwrap().received(), 12);
    }

    #[test]
    fn missing_samples_restart_windowing_at_the_next_boundary() {
        let mut t = table_at(4, 4, None);
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert_eq!(feed(&mut t, 0, &x[0..2]).1, vec![]);
        // Samples 2..6 never arrive: window 0 is lost, window 1 (samples 4..8) too (its first
        // samples are missing); windowing goes on with window 2 at sample 8.
        let (fed, w) = feed(&mut t, 6, &x[6..12]);
        assert_eq!(fed, Fed::Gap(4));
        assert_eq!(w, vec![(2, vec![8., 9., 10., 11.])]);
    }

    #[test]
    fn live_messages_continue_where_the_stream_ended() {
        let mut t = table_at(4, 4, None);
        for chunk in [[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]] {
            let w = t
                .window(
                    "sensors/a/vibration",
                    &payload(&chunk),
                    None,
                    Instant::now(),
                )
                .unwrap();
            assert_eq!(w.fed, Fed::Windowed);
        }
        let (route, info, w) = t.take_windows().unwrap();
        assert_eq!((route, info.id.as_str()), (0, "vib/a"));
        assert_eq!(
            w.map(|w| w.data).collect::<Vec<_>>(),
            vec![vec![1.0, 2.0, 3.0, 4.0]]
        );
        let bad = t.window("sensors/a/vibration", b"[1, \"x\"]", None, Instant::now());
        assert!(matches!(bad, Err(StreamError::Decode(_))));
        assert_eq!(t.get("sensors/a/vibration").unwrap().received(), 6);
    }

    #[test]
    fn routing_matches_partitions_and_caps() {
        let now = Instant::now();
        let mut t = StreamTable::new(routes(4, 4), 2, None);
        assert_eq!(t.route("other/a", now, |_| None), Routed::NoMatch);
        assert!(matches!(
            t.route("sensors/a/vibration", now, |_| None),
            Routed::New { .. }
        ));
        assert_eq!(t.route("sensors/a/vibration", now, |_| None), Routed::Known);
        t.route("sensors/b/vibration", now, |_| None);
        assert_eq!(
            t.route("sensors/c/vibration", now, |_| None),
            Routed::Refused
        );

        // Of two daemons, each windows only its own streams.
        let mut mine = StreamTable::new(routes(4, 4), 100, Some((0, 2)));
        let mut theirs = StreamTable::new(routes(4, 4), 100, Some((1, 2)));
        for i in 0..20 {
            let topic = format!("sensors/m{i}/vibration");
            let a = matches!(mine.route(&topic, now, |_| None), Routed::New { .. });
            let b = matches!(theirs.route(&topic, now, |_| None), Routed::New { .. });
            assert!(a != b, "{topic}: exactly one daemon owns it");
            if !a {
                assert_eq!(mine.route(&topic, now, |_| None), Routed::OtherPartition);
            }
        }
    }

    #[test]
    fn quiet_streams_expire_and_free_their_place_under_the_cap() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut t = StreamTable::new(routes(4, 4), 2, None);
        t.route("sensors/a/vibration", t0, |_| None);
        t.route("sensors/b/vibration", t0, |_| None);
        t.window(
            "sensors/a/vibration",
            &payload(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            None,
            t0,
        )
        .unwrap();
        let t1 = t0 + Duration::from_secs(50);
        t.route("sensors/b/vibration", t1, |_| None);
        assert_eq!(
            t.route("sensors/c/vibration", t1, |_| None),
            Routed::Refused
        );
        let gone = t.expire(t0 + idle, idle);
        assert_eq!(
            gone,
            vec![Expired {
                topic: "sensors/a/vibration".into(),
                id: "vib/a".into(),
                partial: 1,
                stale: false,
            }]
        );
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.route("sensors/c/vibration", t0 + idle, |_| None),
            Routed::New { .. }
        ));
        // A stream that comes back starts over.
        t.expire(t1 + idle, idle);
        assert!(matches!(
            t.route("sensors/a/vibration", t1 + idle, |_| None),
            Routed::New {
                resumed_at: None,
                ..
            }
        ));
        assert_eq!(t.next_seq("sensors/a/vibration"), Some(0));
    }

    #[test]
    fn a_stream_silent_for_many_intervals_is_stale_once_then_fresh_again() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let payload = serde_json::to_vec(&[1.0f32, 2.0]).unwrap();
        let send = |t: &mut StreamTable, start: Option<u64>, s: f64| {
            t.window("sensors/a/vibration", &payload, start, at(s))
                .unwrap();
        };
        // A message every second: the usual interval is learnt.
        let beating = || {
            let mut t = table_at(4, 4, None);
            for i in 0..10 {
                send(&mut t, None, f64::from(i));
            }
            t
        };
        let mut t = beating();
        assert!(t.take_fresh().is_empty());
        // 5 s later: silent 6 intervals, under 10.
        assert!(t.stale(at(14.0), 10.0, Duration::ZERO).is_empty());
        let s = t.stale(at(19.5), 10.0, Duration::ZERO);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id, "vib/a");
        assert_eq!(s[0].usual, Some(Duration::from_secs(1)));
        // Reported once; a floor holds it back.
        assert!(t.stale(at(30.0), 10.0, Duration::ZERO).is_empty());
        // A replayed record is not the sensor: only a live message makes it fresh.
        send(&mut t, Some(20), 31.0);
        assert!(t.take_fresh().is_empty());
        send(&mut t, None, 40.0);
        let f = t.take_fresh();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].silent, Duration::from_secs(31));
        let mut t = beating();
        assert!(t.stale(at(19.5), 10.0, Duration::from_secs(60)).is_empty());
    }
}
