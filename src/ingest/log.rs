//! The ingest stage's crash safety: the journal it appends stream messages to, the checkpoint
//! of each stream's progress, and the records replayed at start-up. See
//! [`crate::durable::journal`] and [`crate::durable::checkpoint`] for the formats.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::streams::StreamTable;
use crate::alerting::Resumed;
use crate::config::JournalSettings;
use crate::durable::checkpoint::{self, Judged, Progress, Saved};
use crate::durable::journal::{Journal, JournalError, Record};
use crate::durable::on_disk;
use crate::faults::Faults;
use crate::mqtt::{Delivery, MessageId};
use crate::telemetry::{Metrics, RateLimit};

/// The last messages journaled, by [`MessageId`], saved in the checkpoint so that a message the
/// broker sends again after a crash is recognised. Far above the in-flight limit toward a
/// subscriber.
const JOURNALED_IDS: usize = 4096;

/// A journal sync at least this slow moves the next ones off the runtime worker. Handing the
/// worker's other tasks to another thread costs tens of microseconds: on a fast disk under
/// load (a sync every 16 messages) that was about 15 % more CPU per message (BENCHMARKS.md);
/// on a slow one (an SD card's fsync takes tens of milliseconds to seconds) it is what keeps
/// scoring, alerting and publishing going meanwhile. At 2 ms, syncs of a quarter millisecond
/// measured slow often enough on a busy 2-core machine (descheduled mid-fsync) to cost the
/// same; ten times a fast SSD's fsync does not.
const SLOW_SYNC: Duration = Duration::from_millis(10);

/// The journal, the checkpoint and the records to replay. Owned by the ingest stage, then
/// handed back by it for the last checkpoint.
pub struct IngestLog {
    journal: Journal,
    dir: PathBuf,
    progress: Progress,
    /// The last checkpoint written (or read at start-up), by stream id, without seasons.
    saved: HashMap<String, Saved>,
    /// The streams' seasons last written (or read at start-up), and when they were written.
    seasons: checkpoint::StreamSeasons,
    seasons_at: Instant,
    /// The last messages journaled (at most `JOURNALED_IDS`).
    ids: VecDeque<MessageId>,
    /// Records found at start-up, replayed before the first message is read.
    replay: Vec<Record>,
    /// [`checkpoint::Checkpoint::journal_pos`] of the checkpoint read at start-up.
    replay_known_before: u64,
    /// A stream was forgotten since the last checkpoint written: the next one is due even
    /// when nothing else changed (it is already gone from `saved`).
    forgot: bool,
    /// The same for the seasons file: a forgotten stream's season left in it would be joined
    /// to the stream's next life at a restart.
    forgot_season: bool,
    /// Streams forgotten whose forgetting the alerting stage has not finished, with how many
    /// times ([`checkpoint::Checkpoint::forgetting`]); read from the checkpoint at start-up.
    forgetting: std::collections::BTreeMap<String, usize>,
    pub(super) max_bytes: u64,
    pub(super) every: Duration,
    full_log: RateLimit,
    /// Whether the last sync took [`SLOW_SYNC`] or more (at first: not known, so yes).
    slow_disk: bool,
    faults: Faults,
    /// `partition.prefixes`, each with its '/': taken off a record's topic to find its stream.
    pub(super) prefixes: Vec<String>,
}

impl std::fmt::Debug for IngestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl IngestLog {
    /// Opens the journal and reads the checkpoint in `settings.dir`; `progress` is seeded with
    /// the checkpoint. A checkpoint that cannot be read is logged and ignored (every stream
    /// then starts from its first journaled record).
    ///
    /// # Errors
    /// [`JournalError`] when the journal cannot be opened.
    pub fn open(
        settings: &JournalSettings,
        progress: Progress,
        faults: Faults,
    ) -> Result<Self, JournalError> {
        let (journal, replay) = Journal::open(&settings.dir, settings.segment_bytes)?;
        let found = checkpoint::load(&settings.dir).unwrap_or_else(|e| {
            error!(error = %e, "Cannot read the ingest checkpoint; replaying the journal from its start.");
            checkpoint::Checkpoint::default()
        });
        let seasons = checkpoint::load_seasons(&settings.dir).unwrap_or_else(|e| {
            error!(error = %e, "Cannot read the streams' seasons; their streams watch for a season again.");
            checkpoint::StreamSeasons::default()
        });
        let replay_known_before = found.journal_pos;
        progress.keep_forgotten();
        let forgetting = found.forgetting.into_iter().map(|s| (s, 1)).collect();
        let mut saved = found.streams;
        checkpoint::join_seasons(&mut saved, seasons);
        progress.seed(&saved);
        let seasons = checkpoint::split_seasons(&mut saved);
        let mut ids: VecDeque<MessageId> = found
            .messages
            .into_iter()
            .map(MessageId::from_raw)
            .collect();
        ids.extend(replay.iter().map(|r| MessageId::of(&r.topic, &r.payload)));
        while ids.len() > JOURNALED_IDS {
            ids.pop_front();
        }
        if !replay.is_empty() {
            info!(
                records = replay.len(),
                streams = saved.len(),
                "Journal found; replaying what the last run did not judge."
            );
        }
        Ok(Self {
            journal,
            dir: settings.dir.clone(),
            progress,
            saved,
            seasons,
            // Due at the first checkpoint: a run that ends before ten minutes (a crash loop)
            // still saves what it watched.
            seasons_at: Instant::now()
                .checked_sub(checkpoint::SEASONS_EVERY)
                .unwrap_or_else(Instant::now),
            ids,
            replay,
            replay_known_before,
            forgot: false,
            forgot_season: false,
            forgetting,
            max_bytes: settings.max_bytes,
            every: settings.checkpoint,
            full_log: RateLimit::new(Duration::from_secs(10)),
            slow_disk: true,
            faults,
            prefixes: Vec::new(),
        })
    }

    /// Where the alerting stage carries on: each stream's detector as the last checkpoint
    /// saved it, and, from `last_alerts` (the outbox's last alerted window per stream), the
    /// alerts that windows judged again would repeat. Those are all the stream's stored alerts
    /// at or after its checkpoint, or all of them when the last run left a journal but no
    /// checkpoint of the stream; none when it left nothing (a fresh journal: numbering starts
    /// over, and old alerts must not silence new ones).
    pub fn resumed(&self, last_alerts: &std::collections::BTreeMap<String, u64>) -> Resumed {
        let found = !self.saved.is_empty() || !self.replay.is_empty();
        Resumed {
            detectors: self
                .saved
                .iter()
                .map(|(id, s)| {
                    let mut detector = s.judged.detector.clone();
                    detector.season = self.seasons.get(id).cloned();
                    (id.clone(), detector)
                })
                .collect(),
            alerted_through: last_alerts
                .iter()
                .filter(|(stream, seq)| {
                    self.saved
                        .get(*stream)
                        .map_or(found, |s| **seq >= s.judged.next_seq)
                })
                .map(|(stream, seq)| (stream.clone(), *seq))
                .collect(),
            raised: HashSet::new(),
        }
    }

    /// Messages journaled lately (by the last run, at start-up).
    pub fn message_ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.ids.iter().copied()
    }

    /// Where the stream `id` resumes, if the last checkpoint knew it.
    pub(super) fn saved(&self, id: &str) -> Option<super::streams::Resume> {
        self.saved.get(id).map(|s| super::streams::Resume {
            next_seq: s.judged.next_seq,
            samples: s.samples,
            drift: s.judged.detector.drift(),
        })
    }

    /// Whether `record` is of an earlier life of the stream `id`, forgotten since: the
    /// checkpoint read at start-up has the stream from a later position, or was taken after
    /// the record and does not have it. Replayed, it would bring the stream's past back,
    /// judged afresh on data long gone.
    pub(super) fn of_forgotten(&self, record: &Record, id: &str) -> bool {
        self.saved
            .get(id)
            .map_or(record.pos < self.replay_known_before, |s| {
                record.pos < s.since
            })
    }

    /// The streams the last run forgot without the alerting stage finishing it (read from the
    /// checkpoint at start-up): each is finished before anything is replayed.
    pub(super) fn forgetting(&self) -> Vec<String> {
        self.forgetting.keys().cloned().collect()
    }

    /// Where in the checkpoint read at start-up the stream `id` begins ([`Saved::since`]).
    pub(super) fn since(&self, id: &str) -> Option<u64> {
        self.saved.get(id).map(|s| s.since)
    }

    /// The position the next message journaled will have.
    pub(super) fn next_pos(&self) -> u64 {
        self.journal.next_pos()
    }

    /// The records to replay (once).
    pub(super) fn take_replay(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.replay)
    }

    /// Appends a windowed message.
    ///
    /// # Errors
    /// [`JournalError`] when the write fails.
    pub(super) fn append(
        &mut self,
        d: &Delivery,
        start: u64,
        samples: u64,
    ) -> Result<(), JournalError> {
        let rotates = self.journal.rotates_next();
        let mut append = || {
            self.journal
                .append(d.ack.pkid(), &d.topic, start, samples, &d.payload)
        };
        if rotates {
            // A new segment: the old one and the folder are fsynced, off the runtime's worker
            // as every other fsync of the journal is (an SD card's can take seconds).
            crate::durable::on_disk(append)?;
        } else {
            append()?;
        }
        if self.ids.len() == JOURNALED_IDS {
            self.ids.pop_front();
        }
        self.ids.push_back(d.id);
        Ok(())
    }

    /// Syncs the journal; `false` when it failed (logged and counted; the acks then go out
    /// anyway: scoring goes on, only crash safety is lost for these messages). The fsync runs
    /// off the runtime worker ([`on_disk`]) while the disk is slow: from the start until a
    /// sync takes under [`SLOW_SYNC`], and again after one that takes longer.
    pub(super) fn sync(&mut self, metrics: &Metrics) -> bool {
        if !self.journal.unsynced() {
            return true;
        }
        let (journal, faults) = (&mut self.journal, &self.faults);
        let mut sync = || {
            faults.hold_journal_sync();
            journal.sync()
        };
        let started = Instant::now();
        let synced = if self.slow_disk {
            on_disk(sync)
        } else {
            sync()
        };
        self.slow_disk = started.elapsed() >= SLOW_SYNC;
        metrics.journal_syncs.inc();
        match synced {
            Ok(()) => true,
            Err(e) => {
                metrics.journal_errors.inc();
                error!(error = %e, "Cannot sync the ingest journal.");
                false
            }
        }
    }

    /// Whether to stop reading: the journal is over its bound and windows cut from it are
    /// still being judged, whose checkpoint will retire records (logged, rate-limited).
    ///
    /// Over the bound with every window cut judged, the records are held by windows not
    /// complete yet, which only more messages complete: pausing then would stop every stream
    /// until the slow ones expired. Reading goes on (logged): the journal then holds at most
    /// each stream's one incomplete window beyond the bound.
    pub(super) fn full(&mut self, table: &StreamTable) -> bool {
        let bytes = self.journal.bytes();
        if bytes <= self.max_bytes {
            return false;
        }
        let judging = table
            .entries()
            .any(|e| self.progress.next_seq(&e.info().id) < e.cut());
        if let Some(suppressed) = self.full_log.allow(Instant::now()) {
            if judging {
                warn!(
                    bytes,
                    max_bytes = self.max_bytes,
                    suppressed,
                    "Ingest journal over its bound; reading paused until windows are judged."
                );
            } else {
                warn!(
                    bytes,
                    max_bytes = self.max_bytes,
                    suppressed,
                    "Ingest journal over its bound, held by windows not complete yet; reading goes on. Raise [journal] max_mb, or shorten the slow streams' windows."
                );
            }
        }
        judging
    }

    /// Forgets a stream dropped from the stream table: its checkpoint entry goes, and its
    /// journal records are no longer needed. (Its judging progress is the alerting stage's to
    /// forget; a checkpoint only takes progress for streams in the table.) With `told`, the
    /// alerting stage is told to forget it too, and the checkpoint keeps it under
    /// `forgetting` until it has.
    pub(super) fn forget(&mut self, id: &str, told: bool) {
        self.forgot |= self.saved.remove(id).is_some();
        if told {
            *self.forgetting.entry(id.to_owned()).or_default() += 1;
            self.forgot = true;
        }
        self.forgot_season |= self.seasons.remove(id).is_some();
    }

    /// Streams in the checkpoint that are not in `live`.
    pub(super) fn absent(&self, live: &std::collections::HashSet<&str>) -> Vec<String> {
        self.saved
            .keys()
            .filter(|id| !live.contains(id.as_str()))
            .cloned()
            .collect()
    }

    /// Saves a checkpoint of `table` and the judging progress, then retires the journal
    /// segments it no longer needs, off the runtime worker ([`on_disk`]); nothing when nothing
    /// changed. The streams' seasons are saved too, when they changed, at most every
    /// [`checkpoint::SEASONS_EVERY`], on the `last` checkpoint, or when one of them outruns
    /// its saved copy ([`Season::outruns`](crate::detect::Season::outruns)). Call after
    /// [`IngestLog::sync`].
    pub(super) fn checkpoint(&mut self, table: &StreamTable, metrics: &Metrics, last: bool) {
        let mut judged = self.progress.snapshot();
        let mut saved = self.saved.clone();
        for e in table.entries() {
            let id = &e.info().id;
            let entry = saved.entry(id.clone()).or_insert(Saved {
                judged: Judged::default(),
                samples: 0,
                since: 0,
            });
            entry.samples = e.received();
            entry.since = e.since();
            if let Some(j) = judged.remove(id) {
                entry.judged = j;
            }
        }
        let fresh = checkpoint::split_seasons(&mut saved);
        let mut seasons = None;
        // Also sooner when a restart from the seasons saved would lose more than it can make
        // up (a stream fed faster than real time, a replay, watches a day in seconds).
        let outrun = || {
            fresh
                .iter()
                .any(|(id, s)| s.outruns(self.seasons.get(id).map(|s| &**s)))
        };
        let due =
            last || self.forgot_season || self.seasons_at.elapsed() >= checkpoint::SEASONS_EVERY;
        if due || outrun() {
            // A stream without a season now (judged by threshold, or not judged since) keeps
            // the one saved, until it is forgotten.
            let mut all: checkpoint::StreamSeasons = self
                .seasons
                .iter()
                .filter(|(id, _)| saved.contains_key(*id) && !fresh.contains_key(*id))
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect();
            all.extend(fresh);
            if all == self.seasons && !self.forgot_season {
                self.seasons_at = Instant::now();
            } else {
                seasons = Some(all);
            }
        }
        for stream in self.progress.take_forgotten() {
            if let Some(n) = self.forgetting.get_mut(&stream) {
                *n -= 1;
                if *n == 0 {
                    self.forgetting.remove(&stream);
                }
                self.forgot = true;
            }
        }
        if saved == self.saved && !self.forgot && self.journal.segments() < 2 && seasons.is_none() {
            return;
        }
        let file = checkpoint::Checkpoint {
            streams: saved,
            messages: self.ids.iter().map(|id| id.raw()).collect(),
            journal_pos: self.journal.next_pos(),
            forgetting: self.forgetting.keys().cloned().collect(),
        };
        on_disk(|| self.save(file, seasons, table, metrics));
    }

    /// The disk work of [`IngestLog::checkpoint`]: writes `file` (and `seasons`), then
    /// retires segments.
    fn save(
        &mut self,
        file: checkpoint::Checkpoint,
        seasons: Option<checkpoint::StreamSeasons>,
        table: &StreamTable,
        metrics: &Metrics,
    ) {
        if let Some(seasons) = seasons {
            match checkpoint::save_seasons(&self.dir, &seasons) {
                Ok(()) => {
                    self.seasons = seasons;
                    self.seasons_at = Instant::now();
                    self.forgot_season = false;
                }
                Err(e) => {
                    metrics.journal_errors.inc();
                    error!(error = %e, "Cannot save the streams' seasons; the last saved stay.");
                }
            }
        }
        if let Err(e) = checkpoint::save(&self.dir, &file) {
            metrics.journal_errors.inc();
            error!(error = %e, "Cannot save the ingest checkpoint; the journal keeps its records.");
            return;
        }
        self.saved = file.streams;
        self.forgot = false;
        let saved = &self.saved;
        let needed = |r: &Record| {
            let topic = &r.topic[super::partition_prefix_len(&self.prefixes, &r.topic)..];
            // (A record of an earlier life of the stream is not: see `since`.)
            table.get(topic).is_some_and(|e| {
                let from = saved
                    .get(&e.info().id)
                    .map_or(0, |s| s.judged.next_seq.saturating_mul(e.unit()));
                r.pos >= e.since() && r.end() > from
            })
        };
        // The segments before the current one, counted first: records carried forward land in
        // the current segment (or one it rotates to), which must not be retired in this pass.
        for _ in 1..self.journal.segments() {
            match self.journal.retire_oldest(needed) {
                Ok(Some(carried)) => debug!(carried, "Journal segment retired."),
                Ok(None) => break,
                Err(e) => {
                    metrics.journal_errors.inc();
                    error!(error = %e, "Cannot retire a journal segment.");
                    break;
                }
            }
        }
        metrics.journal_bytes.set(self.journal.bytes() as i64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The journal and checkpoint in `dir`, with segments of `segment_bytes` and a bound of
    /// `max_bytes`, checkpointing `progress`.
    fn opened(
        dir: &std::path::Path,
        segment_bytes: u64,
        max_bytes: u64,
        progress: Progress,
    ) -> IngestLog {
        let settings = JournalSettings {
            dir: dir.to_path_buf(),
            segment_bytes,
            max_bytes,
            checkpoint: Duration::from_secs(1),
        };
        IngestLog::open(&settings, progress, Faults::default()).unwrap()
    }

    /// With partition.prefixes, records are journaled under the prefixed topic but the
    /// table is keyed by the topic without it; retiring a segment must still keep records
    /// whose windows are not judged.
    #[test]
    fn retiring_keeps_unjudged_records_of_prefixed_topics() {
        let routes = super::super::streams::tests::routes(64, 64);
        let dir = tempfile::tempdir().unwrap();
        let mut log = opened(dir.path(), 100, 1 << 20, Progress::default());
        log.prefixes = vec!["part/0/".to_owned()];
        let mut table = StreamTable::new(routes, 10, None);
        let now = Instant::now();
        // The ingest stage strips the partition prefix before the table, journals d.topic.
        table.route("sensors/a/vibration", now, |_| None);
        let payload = serde_json::to_vec(&[1.0f32, 2.0, 3.0]).unwrap();
        for i in 0..6u64 {
            table
                .window("sensors/a/vibration", &payload, None, now)
                .unwrap();
            log.journal
                .append(i as u16, "part/0/sensors/a/vibration", i * 3, 3, &payload)
                .unwrap();
        }
        let metrics = Metrics::new();
        assert!(log.sync(&metrics));
        assert!(log.journal.segments() >= 3);
        // Nothing judged yet (window 0 is still incomplete: 18 of 64 samples).
        log.checkpoint(&table, &metrics, false);
        drop(log);
        let (_, records) = Journal::open(dir.path(), 100).unwrap();
        assert_eq!(
            records.len(),
            6,
            "records of an incomplete window were retired"
        );
    }

    /// A forgotten stream's season leaves the seasons file at the next checkpoint. Before,
    /// the file was rewritten only when the seasons kept changed, and the forget had already
    /// taken it out of the copy kept: the file held it, and a restart joined it to the
    /// stream's next life (which is to start with a fresh detector).
    #[test]
    fn a_forgotten_streams_season_leaves_the_seasons_file() {
        let routes = super::super::streams::tests::routes(8, 8);
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::default();
        let mut log = opened(dir.path(), 1 << 20, 1 << 20, progress.clone());
        let mut table = StreamTable::new(routes, 10, None);
        let now = Instant::now();
        table.route("sensors/a/vibration", now, |_| None);
        let season: crate::detect::Season =
            serde_json::from_value(serde_json::json!({ "settled": true })).unwrap();
        let detector = crate::detect::DetectorState {
            season: Some(season.into()),
            ..crate::detect::DetectorState::default()
        };
        progress.judged("vib/a", 0, detector);
        let metrics = Metrics::new();
        log.checkpoint(&table, &metrics, true);
        let saved = || checkpoint::load_seasons(dir.path()).unwrap();
        assert!(saved().contains_key("vib/a"));
        let idle = Duration::from_secs(1);
        assert_eq!(table.expire(now + idle, idle).len(), 1);
        log.forget("vib/a", false);
        progress.forget("vib/a");
        log.checkpoint(&table, &metrics, false);
        assert!(!saved().contains_key("vib/a"), "{:?}", saved().keys());
    }

    /// Retiring segments does not carry forward the records of a stream's earlier life, the
    /// one before it was forgotten and came back (before its `since`): kept, the next start
    /// would replay them into its new life.
    #[test]
    fn retiring_drops_the_records_of_a_streams_earlier_life() {
        let routes = super::super::streams::tests::routes(64, 64);
        let dir = tempfile::tempdir().unwrap();
        let mut log = opened(dir.path(), 100, 1 << 20, Progress::default());
        let mut table = StreamTable::new(routes, 10, None);
        let (now, topic) = (Instant::now(), "sensors/a/vibration");
        let payload = serde_json::to_vec(&[1.0f32, 2.0, 3.0]).unwrap();
        let life = |log: &mut IngestLog, table: &mut StreamTable, n: u64| {
            table.route(topic, now, |_| None);
            table.begin_at(topic, log.next_pos());
            for i in 0..n {
                table.window(topic, &payload, None, now).unwrap();
                log.journal
                    .append(i as u16, topic, i * 3, 3, &payload)
                    .unwrap();
            }
        };
        life(&mut log, &mut table, 6);
        let idle = Duration::from_secs(1);
        assert_eq!(table.expire(now + idle, idle).len(), 1);
        log.forget("vib/a", false);
        let since = log.next_pos();
        life(&mut log, &mut table, 2);
        let metrics = Metrics::new();
        assert!(log.sync(&metrics));
        log.checkpoint(&table, &metrics, false);
        drop(log);
        let (_, records) = Journal::open(dir.path(), 100).unwrap();
        // Only the new life's two (its window is not complete); carried forward, the earlier
        // life's six would be there too, at new positions.
        let starts: Vec<u64> = records.iter().map(|r| r.start).collect();
        assert_eq!(starts, [0, 3]);
        assert!(records.iter().all(|r| r.pos >= since));
    }

    /// Over its bound, the journal pauses reading only while windows cut from it are being
    /// judged: records held by a window not complete yet would otherwise stop every stream
    /// until the slow one expired, since only more messages complete it.
    #[test]
    fn over_the_bound_pauses_only_while_windows_are_judged() {
        let routes = super::super::streams::tests::routes(8, 8);
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::default();
        let mut log = opened(dir.path(), 1 << 20, 40, progress.clone());
        let mut table = StreamTable::new(routes, 10, None);
        let (now, topic) = (Instant::now(), "sensors/a/vibration");
        table.route(topic, now, |_| None);
        let payload = serde_json::to_vec(&[1.0f32, 2.0, 3.0]).unwrap();
        let feed = |log: &mut IngestLog, table: &mut StreamTable, i: u64| {
            table.window(topic, &payload, None, now).unwrap();
            log.journal
                .append(i as u16, topic, i * 3, 3, &payload)
                .unwrap();
        };
        for i in 0..2 {
            feed(&mut log, &mut table, i);
        }
        assert!(log.journal.bytes() > 40);
        assert!(
            !log.full(&table),
            "paused on a window only more messages complete"
        );
        feed(&mut log, &mut table, 2);
        assert_eq!(table.get(topic).unwrap().cut(), 1);
        assert!(log.full(&table), "window 0 is being judged: reading waits");
        progress.passed("vib/a", 0);
        assert!(!log.full(&table));
    }
}
