//! How far each stream has got, in memory ([`Progress`]) and on disk ([`save`], [`load`]).
//!
//! The alerting stage records, per stream, the first window it has not judged yet and the
//! detector's state after the windows before it. The ingest stage saves a snapshot of that,
//! with the input samples it has journaled of each stream, after a journal sync; a journal
//! record is needed only while it holds samples of a window the *saved* snapshot has not
//! judged. After a crash, the next start resumes each stream from its snapshot: the detector
//! from the saved state, the windower at the saved window number, fed from the journal.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::detect::{DetectorState, Seeded};

/// The checkpoint file in the journal folder.
pub const FILE: &str = "checkpoint.json";

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
}

/// Judging progress of every stream, shared between the stages that finish windows (alerting,
/// learners) and the ingest stage that checkpoints it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<HashMap<String, Judged>>>);

impl Progress {
    /// Window `seq` of `stream` was judged; the detector is now `detector`.
    pub fn judged(&self, stream: &str, seq: u64, detector: DetectorState) {
        let now = Judged {
            next_seq: seq + 1,
            detector,
        };
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let j = all.entry(stream.to_owned()).or_default();
        j.next_seq = j.next_seq.max(seq + 1);
    }

    /// Calibrates a stream the checkpoint already tracks with `seeded` ([`DetectorState::seed`])
    /// before its first judged window, so a restart before that window keeps the calibration.
    /// A stream it does not track is left alone (its windows' progress is not known here).
    pub fn seeded(&self, stream: &str, seeded: Seeded) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(j) = all.get_mut(stream) {
            j.detector.seed(seeded);
        }
    }

    /// Forgets a stream (dropped from the stream table after going quiet; if it comes back it
    /// starts over).
    pub fn forget(&self, stream: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
    }

    /// Seeds the progress of streams from a checkpoint (at start-up).
    pub fn seed(&self, saved: &HashMap<String, Saved>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, s) in saved {
            all.insert(id.clone(), s.judged.clone());
        }
    }

    /// A copy of every stream's progress.
    pub fn snapshot(&self) -> HashMap<String, Judged> {
        self.0
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
}

/// Reads `dir/checkpoint.json`; empty when there is none.
///
/// # Errors
/// [`CheckpointError`] when it exists but cannot be read or parsed.
pub fn load(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let path = dir.join(FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    serde_json::from_slice(&text).map_err(|source| CheckpointError::Json { path, source })
}

/// Replaces `dir/checkpoint.json` atomically (temp file, fsync, rename, fsync of the folder).
///
/// # Errors
/// [`CheckpointError::Io`] when a step fails; the previous checkpoint is then still in place.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let path = dir.join(FILE);
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!("{FILE}.tmp"));
    let body = serde_json::to_vec(checkpoint).map_err(|source| CheckpointError::Json {
        path: path.clone(),
        source,
    })?;
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
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
                    },
                )
            })
            .collect();
        let saved = Checkpoint {
            streams,
            messages: vec![7, 8],
        };
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()).unwrap(), saved);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::Json { .. })
        ));
    }
}
