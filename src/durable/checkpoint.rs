//! How far each stream has got, in memory ([`Progress`]) and on disk ([`save`], [`load`]).
//!
//! The alerting stage records, per stream, the first window it has not judged yet and the
//! detector's state after the windows before it. The ingest stage saves a snapshot of that,
//! with the input samples it has journaled of each stream, after a journal sync; a journal
//! record is needed only while it holds samples of a window the *saved* snapshot has not
//! judged. After a crash, the next start resumes each stream from its snapshot: the detector
//! from the saved state, the windower at the saved window number, fed from the journal.
//!
//! Streams' seasons ([`Season`]: up to 32,768 values a stream while it is watched, one season
//! of values a channel after) are saved apart, in [`SEASONS_FILE`], at most every
//! [`SEASONS_EVERY`] and at shutdown: the checkpoint is rewritten whole every `checkpoint_ms`,
//! and with the seasons in it, a thousand slow streams would write about 60 MB a second. They
//! are saved sooner when a restart from the saved ones would lose more than it makes up
//! ([`Season::outruns`]: a season chosen since, or more than an hour of a watch; a stream
//! replayed faster than real time). A season saved before the rest of its stream's state sees
//! the windows between as a gap: their samples are in the next window it sees when the gap is
//! shorter than a window, and otherwise their moments pass (see [`Season`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::detect::{DetectorState, Season, Seeded};

/// The checkpoint file in the journal folder.
pub const FILE: &str = "checkpoint.json";

/// The streams' seasons, beside the checkpoint: stream id to season.
pub const SEASONS_FILE: &str = "seasons.json";

/// The most often the seasons are saved, unless one outruns its saved copy (and at shutdown).
pub const SEASONS_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Streams' seasons by stream id, as [`SEASONS_FILE`] holds them.
pub type StreamSeasons = HashMap<String, Arc<Season>>;

/// Errors of the checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing or renaming failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a checkpoint.
    #[error("checkpoint {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// A stream's judging progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// The first window not judged yet.
    pub next_seq: u64,
    /// The detector after window `next_seq - 1` (flattened: the file keeps its `state` and
    /// `run` keys).
    #[serde(flatten)]
    pub detector: DetectorState,
}

/// A stream's entry in the checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Judging progress.
    #[serde(flatten)]
    pub judged: Judged,
    /// Input samples of the stream journaled (and so acknowledged, or about to be) when the
    /// snapshot was taken: where the next message of the stream starts.
    pub samples: u64,
    /// The journal position of the stream's first message since it was last forgotten (0 in
    /// files of earlier versions): a record before it is of an earlier life of the stream,
    /// neither kept nor replayed.
    #[serde(default)]
    pub since: u64,
}

/// Judging progress of every stream, shared between the stages that finish windows (alerting,
/// learners) and the ingest stage that checkpoints it; and the streams whose forgetting the
/// alerting stage has finished. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    judged: Arc<Mutex<HashMap<String, Judged>>>,
    forgotten: Arc<Mutex<Vec<String>>>,
    /// Whether [`Progress::forgotten`] is kept: only a journal's checkpoint takes it.
    keeps_forgotten: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    /// Window `seq` of `stream` was judged; the detector is now `detector`.
    pub fn judged(&self, stream: &str, seq: u64, detector: DetectorState) {
        let now = Judged {
            next_seq: seq + 1,
            detector,
        };
        let mut all = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        // Looked up before inserting: no key allocation per window for a known stream.
        match all.get_mut(stream) {
            Some(j) if j.next_seq > seq => {}
            Some(j) => *j = now,
            None => {
                all.insert(stream.to_owned(), now);
            }
        }
    }

    /// Window `seq` of `stream` left the pipeline without being judged (captured by a learner,
    /// or its batch failed to score): the detector state stays as it was.
    pub fn passed(&self, stream: &str, seq: u64) {
        let mut all = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        let j = all.entry(stream.to_owned()).or_default();
        j.next_seq = j.next_seq.max(seq + 1);
    }

    /// Calibrates a stream the checkpoint already tracks with `seeded` ([`DetectorState::seed`])
    /// before its first judged window, so a restart before that window keeps the calibration.
    /// A stream it does not track is left alone (its windows' progress is not known here).
    pub fn seeded(&self, stream: &str, seeded: Seeded) {
        let mut all = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(j) = all.get_mut(stream) {
            j.detector.seed(seeded);
        }
    }

    /// Whether `stream` is tracked (seen this run or restored, and not forgotten since).
    pub fn tracks(&self, stream: &str) -> bool {
        self.judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(stream)
    }

    /// Forgets a stream (dropped from the stream table after going quiet; if it comes back it
    /// starts over).
    pub fn forget(&self, stream: &str) {
        self.judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
    }

    /// The alerting stage has finished forgetting `stream` (its clear, when it was raised, is
    /// in the outbox): the checkpoint no longer needs to remember it is being forgotten.
    pub fn forgotten(&self, stream: &str) {
        if !self
            .keeps_forgotten
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        self.forgotten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stream.to_owned());
    }

    /// Keeps what [`Progress::forgotten`] is told, for [`Progress::take_forgotten`] (set by
    /// the journal, whose checkpoint takes it: without one nothing would, and it would grow).
    pub fn keep_forgotten(&self) {
        self.keeps_forgotten
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The streams [`Progress::forgotten`] since the last call.
    pub fn take_forgotten(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .forgotten
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Seeds the progress of streams from a checkpoint (at start-up).
    pub fn seed(&self, saved: &HashMap<String, Saved>) {
        let mut all = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, s) in saved {
            all.insert(id.clone(), s.judged.clone());
        }
    }

    /// The first window of `stream` not judged (nor passed) yet; 0 for a stream not tracked.
    pub fn next_seq(&self, stream: &str) -> u64 {
        self.judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream)
            .map_or(0, |j| j.next_seq)
    }

    /// A copy of every stream's progress.
    pub fn snapshot(&self) -> HashMap<String, Judged> {
        self.judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The checkpoint file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every stream's place, by stream id.
    pub streams: HashMap<String, Saved>,
    /// The last messages journaled, oldest first, by their transport's identity (topic and
    /// payload checksums): a message the broker sends again after a crash (flagged DUP) with
    /// one of these was journaled already. (Files of earlier versions kept packet ids under
    /// `pkids`; those are ignored.)
    #[serde(default)]
    pub messages: Vec<u64>,
    /// The journal's next record position when the checkpoint was taken: a record before it
    /// of a stream not in `streams` belongs to a stream forgotten since, and is not replayed.
    /// (0 in files of earlier versions: every record is replayed.)
    #[serde(default)]
    pub journal_pos: u64,
    /// Streams forgotten whose forgetting the alerting stage had not finished (their clear
    /// may not be in the outbox): the next start finishes it, before anything is replayed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgetting: Vec<String>,
}

/// Reads `dir/checkpoint.json`; empty when there is none.
///
/// # Errors
/// [`CheckpointError`] when it exists but cannot be read or parsed.
pub fn load(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    Ok(read(dir, FILE)?.unwrap_or_default())
}

/// Reads `dir/seasons.json`; empty when there is none. Stream by stream: a stream whose
/// season cannot be read is logged and left out (it watches for its season again), the
/// others keep theirs.
///
/// # Errors
/// [`CheckpointError`] when it exists but cannot be read, or is not a JSON object.
pub fn load_seasons(dir: &Path) -> Result<StreamSeasons, CheckpointError> {
    let raw: HashMap<String, serde_json::Value> = read(dir, SEASONS_FILE)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(stream, value)| match serde_json::from_value(value) {
            Ok(season) => Some((stream, season)),
            Err(e) => {
                tracing::error!(stream = %stream, error = %e, "Cannot read the stream's season; it watches for a season again.");
                None
            }
        })
        .collect())
}

fn read<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, CheckpointError> {
    let path = dir.join(name);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    serde_json::from_slice(&text).map_err(|source| CheckpointError::Json { path, source })
}

/// Replaces `dir/checkpoint.json` atomically (temp file, fsync, rename, fsync of the folder).
/// Its streams' seasons, if any, are in it too: [`split_seasons`] takes them out first.
///
/// # Errors
/// [`CheckpointError::Io`] when a step fails; the previous checkpoint is then still in place.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    write(dir, FILE, checkpoint)
}

/// Replaces `dir/seasons.json` atomically, as [`save`] does the checkpoint.
///
/// # Errors
/// [`CheckpointError::Io`] when a step fails; the previous file is then still in place.
pub fn save_seasons(dir: &Path, seasons: &StreamSeasons) -> Result<(), CheckpointError> {
    write(dir, SEASONS_FILE, seasons)
}

/// Takes each stream's season out of `streams`, for [`SEASONS_FILE`].
pub fn split_seasons(streams: &mut HashMap<String, Saved>) -> StreamSeasons {
    streams
        .iter_mut()
        .filter_map(|(id, s)| Some((id.clone(), s.judged.detector.season.take()?)))
        .collect()
}

/// Puts `seasons` back into the streams they belong to (a season of a stream not in
/// `streams` is dropped: the stream was forgotten); a season already there (a checkpoint of
/// an earlier version kept them in it) is newer, and stays.
pub fn join_seasons(streams: &mut HashMap<String, Saved>, seasons: StreamSeasons) {
    for (id, season) in seasons {
        if let Some(s) = streams.get_mut(&id) {
            s.judged.detector.season.get_or_insert(season);
        }
    }
}

fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), CheckpointError> {
    let path = dir.join(name);
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!("{name}.tmp"));
    let body = serde_json::to_vec(value).map_err(|source| CheckpointError::Json {
        path: path.clone(),
        source,
    })?;
    super::write_synced(&tmp, &body).map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn progress_only_moves_forward_and_round_trips_through_the_file() {
        let p = Progress::default();
        use crate::detect::AlertState;
        let raised = DetectorState {
            state: AlertState::Raised,
            run: 0,
            ..DetectorState::default()
        };
        p.judged("s/a", 4, raised.clone());
        p.judged(
            "s/a",
            2,
            DetectorState {
                state: AlertState::Normal,
                run: 1,
                ..DetectorState::default()
            },
        );
        p.passed("s/b", 9);
        p.passed("s/a", 3);
        let snap = p.snapshot();
        assert_eq!(
            snap["s/a"],
            Judged {
                next_seq: 5,
                detector: raised
            }
        );
        assert_eq!(snap["s/b"].next_seq, 10);

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Checkpoint::default());
        let streams: HashMap<String, Saved> = snap
            .into_iter()
            .map(|(id, judged)| {
                (
                    id,
                    Saved {
                        judged,
                        samples: 640,
                        since: 12,
                    },
                )
            })
            .collect();
        let saved = Checkpoint {
            streams,
            messages: vec![7, 8],
            journal_pos: 41,
            forgetting: vec!["s/gone".into()],
        };
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()).unwrap(), saved);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::Json { .. })
        ));
    }

    /// Seasons go to their own file and come back to their streams; one of a stream no
    /// longer in the checkpoint is dropped, and one a checkpoint of an earlier version holds
    /// stays.
    #[test]
    fn seasons_are_saved_apart_and_joined_back() {
        let season = |settled: bool| -> Arc<Season> {
            Arc::new(serde_json::from_value(serde_json::json!({ "settled": settled })).unwrap())
        };
        let with = |s: Option<Arc<Season>>| Saved {
            judged: Judged {
                next_seq: 3,
                detector: DetectorState {
                    season: s,
                    ..DetectorState::default()
                },
            },
            samples: 48,
            since: 0,
        };
        let mut streams: HashMap<String, Saved> = [
            ("a".to_owned(), with(Some(season(true)))),
            ("b".to_owned(), with(None)),
        ]
        .into();
        let whole = streams.clone();
        let mut seasons = split_seasons(&mut streams);
        assert_eq!(seasons.len(), 1);
        assert!(streams.values().all(|s| s.judged.detector.season.is_none()));

        let dir = tempfile::tempdir().unwrap();
        assert!(load_seasons(dir.path()).unwrap().is_empty());
        seasons.insert("gone".to_owned(), season(true));
        save_seasons(dir.path(), &seasons).unwrap();
        let checkpoint = Checkpoint {
            streams,
            messages: vec![],
            journal_pos: 0,
            forgetting: Vec::new(),
        };
        save(dir.path(), &checkpoint).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("season"), "{text}");

        let mut back = load(dir.path()).unwrap().streams;
        join_seasons(&mut back, load_seasons(dir.path()).unwrap());
        assert_eq!(back, whole);

        // A stream whose season cannot be read loses only its own.
        let text = std::fs::read_to_string(dir.path().join(SEASONS_FILE)).unwrap();
        let mut raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        raw["broken"] = serde_json::json!({ "period": "not a number" });
        std::fs::write(dir.path().join(SEASONS_FILE), raw.to_string()).unwrap();
        let read = load_seasons(dir.path()).unwrap();
        assert_eq!(read.len(), 2, "{:?}", read.keys());
        assert!(read.contains_key("gone") && !read.contains_key("broken"));

        // An earlier version's checkpoint kept the season in it: that one stays.
        let mut inline = whole.clone();
        if let Some(a) = inline.get_mut("a") {
            a.judged.detector.season = Some(season(false));
        }
        let expected = inline.clone();
        join_seasons(&mut inline, load_seasons(dir.path()).unwrap());
        assert_eq!(inline, expected);
    }
}
