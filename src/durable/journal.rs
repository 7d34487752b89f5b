//! The ingest write-ahead journal: the ingest stage appends every stream message it windows
//! here, fsyncs (group commit: one [`Journal::sync`] for a batch), and only then acknowledges
//! the messages to the MQTT broker. After a SIGKILL the next start replays the records still
//! needed, so windows that were queued but not yet judged, and each stream's incomplete window,
//! are rebuilt.
//!
//! A folder of segment files, `{first_pos:020}.seg` (the position of the first record written
//! to it), each a run of records `[u32 LE body_len][u32 LE crc32(body)][body]`, with body
//! `u64 pos | u16 pkid | u64 start | u64 samples | u16 topic_len | topic | payload` (all LE).
//! Positions count records, +1 per append, across segments and restarts.
//!
//! Records no longer needed are retired segment by segment ([`Journal::retire_oldest`]): the
//! still-needed records of the oldest segment are copied forward to the head (new positions),
//! synced, and only then is the old file deleted. A crash between the two leaves both copies,
//! so a replay can see a message twice; the caller tolerates duplicates.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

/// Length and CRC in front of every body.
const FRAME: usize = 4 + 4;
/// The fixed part of a body: pos, pkid, start, samples, topic_len.
const FIXED: usize = 8 + 2 + 8 + 8 + 2;
/// A longer body is taken for corruption (and refused by [`Journal::append`]).
const MAX_BODY: usize = 64 << 20;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A journal file or the folder could not be read or written.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the folder's lock: two daemons must not share one journal.
    #[error(
        "journal {path} is in use by another process (each ebgand needs its own [journal] dir)"
    )]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
}

/// One journaled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the journal (unique, increasing in append order).
    pub pos: u64,
    /// The broker packet id it arrived with.
    pub pkid: u16,
    /// The topic it arrived on.
    pub topic: String,
    /// Index of its first input sample in its stream.
    pub start: u64,
    /// Input samples it carries.
    pub samples: u64,
    /// The message payload, as received.
    pub payload: Vec<u8>,
}

impl Record {
    /// Index one past its last input sample in its stream.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.samples)
    }
}

/// A segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Bytes in it, buffered ones included.
    bytes: u64,
    /// Records in it (a corrupt tail of an old segment not counted).
    records: usize,
}

/// The write-ahead journal: a folder of segments, appends going to the newest (current) one.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Segments before the current one, oldest first.
    closed: VecDeque<Segment>,
    /// The segment `writer` appends to.
    current: Segment,
    writer: BufWriter<File>,
    next_pos: u64,
    unsynced: bool,
    /// A write or sync failed (a full disk): the segment may end in a torn record. The next
    /// append starts a new segment, not after the tear, where reading back would stop.
    failed: bool,
    /// `dir/lock`, locked (flock) for as long as the journal is open; the kernel releases it
    /// when the process ends, however it ends.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("segments", &self.segments())
            .field("bytes", &self.bytes())
            .field("next_pos", &self.next_pos)
            .field("unsynced", &self.unsynced)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_path(dir: &Path, first_pos: u64) -> PathBuf {
    dir.join(format!("{first_pos:020}.seg"))
}

/// The first position in a segment file's name, `None` for other files.
fn segment_first_pos(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Journal {
    /// Opens (creating) `dir`; returns the journal and every record found, oldest first.
    ///
    /// A torn or corrupt record (short read, bad length, CRC mismatch) ends that segment's
    /// records: in the newest segment the file is truncated back to the last good record (a
    /// crash while appending); in an older segment the rest is skipped with a warning. Leftover
    /// `*.tmp` files are removed. Appends go to a new segment, never to an old one; appending
    /// rotates to a new segment once the current one holds `segment_bytes`.
    ///
    /// # Errors
    /// [`JournalError::Io`] when the folder or a segment cannot be read or written.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Journal, Vec<Record>), JournalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(JournalError::InUse { path: lock_path });
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(io_err(&path))?;
            } else if let Some(first_pos) = segment_first_pos(name) {
                found.push((first_pos, path));
            }
        }
        found.sort_unstable_by_key(|(first_pos, _)| *first_pos);

        let mut records = Vec::new();
        let mut closed = VecDeque::new();
        // Never below a segment's name, so that a new segment's name cannot clash with one.
        let mut next_pos = found.last().map_or(0, |(first_pos, _)| *first_pos);
        let newest = found.len().saturating_sub(1);
        for (i, (first_pos, path)) in found.into_iter().enumerate() {
            let buf = read_file(&path)?;
            let (mut recs, good, corrupt) = parse(&buf, first_pos);
            if let Some(why) = corrupt {
                if i == newest {
                    warn!(path = %path.display(), offset = good, why, "Journal segment torn (a crash while appending?); truncated to its last good record.");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(good as u64)
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(&path))?;
                } else {
                    warn!(path = %path.display(), offset = good, why, "Journal segment corrupt; the rest of it is skipped.");
                }
            }
            if i == newest && recs.is_empty() {
                // Nothing in it (rotated just before a crash, or torn at its first record).
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            if let Some(last) = recs.last() {
                // Saturating: a record is trusted for its CRC, not for sane values.
                next_pos = next_pos.max(last.pos.saturating_add(1));
            }
            let bytes = if i == newest { good } else { buf.len() } as u64;
            closed.push_back(Segment {
                path,
                bytes,
                records: recs.len(),
            });
            records.append(&mut recs);
        }

        let path = segment_path(dir, next_pos);
        let writer = BufWriter::new(create_segment(&path)?);
        sync_dir(dir)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            segment_bytes,
            closed,
            current: Segment {
                path,
                bytes: 0,
                records: 0,
            },
            writer,
            next_pos,
            unsynced: false,
            failed: false,
            _lock: lock,
        };
        Ok((journal, records))
    }

    /// Appends a record (buffered, durable only after [`Journal::sync`]); returns its position.
    /// Rotates first when the current segment has reached `segment_bytes` (flush and fsync the
    /// old one, create the new one, fsync the folder).
    ///
    /// # Errors
    /// [`JournalError::Io`] when a write fails, or (kind `InvalidInput`) when the topic is
    /// longer than 65535 bytes or the record longer than 64 MiB.
    pub fn append(
        &mut self,
        pkid: u16,
        topic: &str,
        start: u64,
        samples: u64,
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        let body_len = FIXED + topic.len() + payload.len();
        let topic_len = match u16::try_from(topic.len()) {
            Ok(len) if body_len <= MAX_BODY => len,
            _ => {
                return Err(JournalError::Io {
                    path: self.current.path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "record too large (topic {} bytes, body {body_len} bytes)",
                            topic.len()
                        ),
                    ),
                });
            }
        };
        if self.failed {
            self.start_over()?;
        } else if self.rotates_next() {
            self.rotate().inspect_err(|_| self.failed = true)?;
        }

        let pos = self.next_pos;
        let mut body = Vec::with_capacity(body_len);
        body.extend_from_slice(&pos.to_le_bytes());
        body.extend_from_slice(&pkid.to_le_bytes());
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&samples.to_le_bytes());
        body.extend_from_slice(&topic_len.to_le_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(payload);
        let mut frame = [0; FRAME];
        // body_len <= MAX_BODY, which fits a u32.
        frame[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        frame[4..].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());

        self.writer
            .write_all(&frame)
            .and_then(|()| self.writer.write_all(&body))
            .map_err(io_err(&self.current.path))
            .inspect_err(|_| self.failed = true)?;
        self.next_pos = self.next_pos.saturating_add(1);
        self.unsynced = true;
        self.current.bytes += (FRAME + body_len) as u64;
        self.current.records += 1;
        Ok(pos)
    }

    /// Flushes and fsyncs what was appended since the last sync; a cheap no-op when nothing
    /// was. After it returns, every appended record survives a crash.
    ///
    /// # Errors
    /// [`JournalError::Io`] when the flush or the fsync fails.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if !self.unsynced {
            return Ok(());
        }
        let path = &self.current.path;
        let synced = self
            .writer
            .flush()
            .and_then(|()| self.writer.get_ref().sync_data())
            .map_err(io_err(path));
        self.failed |= synced.is_err();
        synced?;
        self.unsynced = false;
        Ok(())
    }

    /// True when records were appended since the last sync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Bytes in all segments, including buffered bytes not yet written.
    pub fn bytes(&self) -> u64 {
        self.closed.iter().map(|s| s.bytes).sum::<u64>() + self.current.bytes
    }

    /// The position the next record appended will have: every record before it is written.
    pub fn next_pos(&self) -> u64 {
        self.next_pos
    }

    /// Segments, the current one included.
    pub fn segments(&self) -> usize {
        self.closed.len() + 1
    }

    /// Retires the oldest segment, unless it is the current one (then `Ok(None)`): reads it
    /// back, re-appends (new positions, same pkid, topic, start, samples and payload) each
    /// record for which `needed` is true, syncs, deletes the file and fsyncs the folder.
    /// Returns the number of records carried forward.
    ///
    /// A crash after the sync and before the delete leaves the carried records twice.
    ///
    /// # Errors
    /// [`JournalError::Io`] when reading, appending, syncing or deleting fails.
    pub fn retire_oldest(
        &mut self,
        mut needed: impl FnMut(&Record) -> bool,
    ) -> Result<Option<usize>, JournalError> {
        let Some(oldest) = self.closed.front() else {
            return Ok(None);
        };
        let path = oldest.path.clone();
        // Not the current segment, so flushed and fsynced at its rotation (or by a past run).
        // Read one record at a time: a retire must not hold a whole segment in memory.
        let mut reader = std::io::BufReader::new(File::open(&path).map_err(io_err(&path))?);
        let mut frame = Vec::new();
        let mut carried = 0;
        loop {
            let r = match next_record(&mut reader, &mut frame) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(why) => {
                    warn!(path = %path.display(), why, "Journal segment corrupt; the rest of it is not carried forward.");
                    break;
                }
            };
            if needed(&r) {
                // Appending may rotate, always to a newer segment: never into the oldest.
                self.append(r.pkid, &r.topic, r.start, r.samples, &r.payload)?;
                carried += 1;
            }
        }
        self.sync()?;
        fs::remove_file(&path).map_err(io_err(&path))?;
        self.closed.pop_front();
        sync_dir(&self.dir)?;
        Ok(Some(carried))
    }

    /// Whether the next append starts a new segment first (two fsyncs: the old segment's and
    /// the folder's).
    pub fn rotates_next(&self) -> bool {
        self.current.records > 0 && self.current.bytes >= self.segment_bytes
    }

    /// After a failed write or sync: a new segment, the old writer's buffer dropped
    /// unwritten (records never synced; written now, they could follow a tear).
    fn start_over(&mut self) -> Result<(), JournalError> {
        tracing::warn!(segment = %self.current.path.display(), "Journal write failed earlier; appending to a new segment.");
        self.failed = false;
        self.unsynced = false;
        self.open_next()
    }

    /// Flushes and fsyncs the current segment, then starts a new one at `next_pos`.
    fn rotate(&mut self) -> Result<(), JournalError> {
        let old = &self.current.path;
        self.writer.flush().map_err(io_err(old))?;
        self.writer.get_ref().sync_data().map_err(io_err(old))?;
        self.open_next()
    }

    /// Starts a new segment at `next_pos`, the current one closed; the old writer is dropped
    /// without writing what it still buffers (nothing, after a rotation's flush).
    fn open_next(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, self.next_pos);
        let fresh = BufWriter::new(create_segment(&path)?);
        let (_old, _unwritten) = std::mem::replace(&mut self.writer, fresh).into_parts();
        let new = Segment {
            path,
            bytes: 0,
            records: 0,
        };
        self.closed
            .push_back(std::mem::replace(&mut self.current, new));
        sync_dir(&self.dir)
    }
}

fn create_segment(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))
}

fn read_file(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(io_err(path))?;
    Ok(buf)
}

/// The next record of a segment being read, `None` at its end; `frame` is scratch space.
fn next_record(
    reader: &mut impl Read,
    frame: &mut Vec<u8>,
) -> Result<Option<Record>, &'static str> {
    frame.clear();
    frame.resize(FRAME, 0);
    match reader.read_exact(frame) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err("unreadable"),
    }
    let body_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if !(FIXED..=MAX_BODY).contains(&body_len) {
        return Err("bad length");
    }
    frame.resize(FRAME + body_len, 0);
    reader
        .read_exact(&mut frame[FRAME..])
        .map_err(|_| "short body")?;
    decode(frame).map(|(r, _)| Some(r))
}

/// The records of a segment whose first record is at `first_pos`, the length of its good
/// prefix, and why it ended early (if so). Positions must follow on from `first_pos` one by
/// one, as appending writes them: a record out of sequence is corruption, whatever its CRC
/// says (found by fuzzing: a CRC-valid record at position 2^64 - 1 left no name free for the
/// next segment, and the journal could not be opened again).
fn parse(buf: &[u8], first_pos: u64) -> (Vec<Record>, usize, Option<&'static str>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Ok((record, _)) if Some(record.pos) != first_pos.checked_add(records.len() as u64) => {
                return (records, at, Some("position out of sequence"));
            }
            Ok((record, used)) => {
                records.push(record);
                at += used;
            }
            Err(why) => return (records, at, Some(why)),
        }
    }
    (records, at, None)
}

/// Takes fixed-size fields off the front of a byte slice.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// One record off the front of `buf`, and the bytes it took.
fn decode(buf: &[u8]) -> Result<(Record, usize), &'static str> {
    let mut frame = Fields(buf);
    let body_len = frame
        .array()
        .map(u32::from_le_bytes)
        .ok_or("short header")? as usize;
    let crc = frame
        .array()
        .map(u32::from_le_bytes)
        .ok_or("short header")?;
    if !(FIXED..=MAX_BODY).contains(&body_len) {
        return Err("bad length");
    }
    let body = frame.take(body_len).ok_or("short body")?;
    if crc32fast::hash(body) != crc {
        return Err("CRC mismatch");
    }
    let mut f = Fields(body);
    let bad = "bad body";
    let pos = f.array().map(u64::from_le_bytes).ok_or(bad)?;
    let pkid = f.array().map(u16::from_le_bytes).ok_or(bad)?;
    let start = f.array().map(u64::from_le_bytes).ok_or(bad)?;
    let samples = f.array().map(u64::from_le_bytes).ok_or(bad)?;
    let topic_len = f.array().map(u16::from_le_bytes).ok_or(bad)?;
    let topic = f
        .take(usize::from(topic_len))
        .ok_or("topic overruns body")?;
    let topic = std::str::from_utf8(topic).map_err(|_| "topic not UTF-8")?;
    let record = Record {
        pos,
        pkid,
        topic: topic.to_owned(),
        start,
        samples,
        payload: f.0.to_vec(),
    };
    Ok((record, FRAME + body_len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
