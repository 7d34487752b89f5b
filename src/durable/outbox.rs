//! The alert outbox: every alert is written to disk before it is published, and leaves the
//! outbox only when the broker has acknowledged it (PUBACK). Alerts raised while the broker
//! cannot be reached, or not yet acknowledged when the process dies, are published again by the
//! next start.
//!
//! One append-only file of JSON lines, `{"add":ID,"topic":T,"payload":ALERT}`, `{"done":ID}`,
//! `{"next":ID}` (the next id, so that ids are never reused) and `{"last":STREAM,"seq":N}` (the
//! window of each stream's last alert, so that a window judged again after a crash does not
//! alert twice; `{"forget":STREAM}` drops it when the stream is forgotten) and
//! `{"open":STREAM,"raise":ID,"at":TIME}` (a raise not cleared yet, so that its clear, even
//! after restarts, carries `raise_alert_id` and the incident's `duration_s`), fsynced after each
//! add and each forget; rewritten (temp file, fsync, rename) when mostly done lines. A torn
//! last line (a crash while appending) is skipped. Bounded: at `max` pending alerts, adding
//! waits until the broker acknowledges one (backpressure toward scoring, never a drop).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::warn;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The outbox file could not be read or written.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// At its bound: the caller waits for an acknowledgement.
    #[error("outbox full ({0} alerts waiting for the broker)")]
    Full(usize),
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Add {
        add: u64,
        topic: String,
        payload: Value,
    },
    Done {
        done: u64,
    },
    Next {
        next: u64,
    },
    Last {
        last: String,
        seq: u64,
    },
    Forget {
        forget: String,
    },
    /// A stream's raised alert not cleared yet: its id and time (kept across compactions).
    Open {
        open: String,
        raise: u64,
        at: String,
    },
}

/// An alert waiting for the broker's acknowledgement.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Outbox id, also the alert's `alert_id`.
    pub id: u64,
    /// Topic.
    pub topic: String,
    /// The alert's JSON.
    pub payload: Vec<u8>,
}

/// The outbox file and what in it is still pending.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: File,
    pending: BTreeMap<u64, (String, Value)>,
    next_id: u64,
    max: usize,
    lines: usize,
    /// Window number of each stream's last alert.
    last: BTreeMap<String, u64>,
    /// Each stream's raise not cleared yet: its alert id and time.
    open: BTreeMap<String, (u64, String)>,
    /// A write failed (a full disk) and may have left part of a line: the next append
    /// rewrites the file first ([`Outbox::compact`]), or its line would be glued to the part
    /// and skipped as unreadable at the next start.
    torn: bool,
}

/// Links an alert to the incident it belongs to: a raise opens one (`open` remembers its id and
/// time); a clear gets `raise_alert_id` and `duration_s` (between the two alerts' times) and
/// closes it.
fn link(open: &mut BTreeMap<String, (u64, String)>, id: u64, alert: &mut Value) {
    let Some(obj) = alert.as_object_mut() else {
        return;
    };
    let (Some(stream), Some(state)) = (
        obj.get("stream").and_then(Value::as_str).map(str::to_owned),
        obj.get("state").and_then(Value::as_str),
    ) else {
        return;
    };
    let time = obj.get("time").and_then(Value::as_str).unwrap_or_default();
    // Each kind of alert (a window's, a stale stream's) has its own incidents.
    let key = match obj.get("kind").and_then(Value::as_str) {
        Some(kind) => format!("{kind}:{stream}"),
        None => stream,
    };
    match state {
        "raised" => {
            open.insert(key, (id, time.to_owned()));
        }
        "cleared" => {
            let Some((raise, at)) = open.remove(&key) else {
                return;
            };
            let since = |t: &str| humantime::parse_rfc3339(t).ok();
            let duration = since(time)
                .zip(since(&at))
                .and_then(|(end, start)| end.duration_since(start).ok());
            obj.entry("raise_alert_id").or_insert(Value::from(raise));
            if let Some(d) = duration {
                obj.entry("duration_s")
                    .or_insert(Value::from(crate::detect::seconds(d)));
            }
        }
        _ => {}
    }
}

/// The stream and window number of an alert's JSON.
fn window_of(alert: &Value) -> Option<(String, u64)> {
    Some((alert["stream"].as_str()?.to_owned(), alert["seq"].as_u64()?))
}

impl Outbox {
    /// Opens `dir/outbox.jsonl` (creating it), keeping what was pending, and compacts it.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the folder or file cannot be created, read or rewritten.
    pub fn open(dir: &Path, max: usize) -> Result<Self, OutboxError> {
        let path = dir.join("outbox.jsonl");
        let io = |source| OutboxError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut pending = BTreeMap::new();
        let mut last = BTreeMap::new();
        let mut open = BTreeMap::new();
        let mut next_id = 1;
        if let Ok(f) = File::open(&path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(io)?;
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Add {
                        add,
                        topic,
                        payload,
                    }) => {
                        next_id = next_id.max(add + 1);
                        if let Some((stream, seq)) = window_of(&payload) {
                            last.insert(stream, seq);
                        }
                        // Stored already linked: this only replays what the raise opened.
                        let mut replayed = payload.clone();
                        link(&mut open, add, &mut replayed);
                        pending.insert(add, (topic, payload));
                    }
                    Ok(Line::Done { done }) => {
                        next_id = next_id.max(done + 1);
                        pending.remove(&done);
                    }
                    Ok(Line::Next { next }) => next_id = next_id.max(next),
                    Ok(Line::Last { last: stream, seq }) => {
                        last.insert(stream, seq);
                    }
                    Ok(Line::Forget { forget }) => {
                        last.remove(&forget);
                        open.remove(&forget);
                    }
                    Ok(Line::Open {
                        open: stream,
                        raise,
                        at,
                    }) => {
                        open.insert(stream, (raise, at));
                    }
                    Err(e) => {
                        warn!(path = %path.display(), line = n + 1, error = %e, "Outbox line unreadable (torn by a crash?); skipped.");
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut outbox = Self {
            file,
            path,
            pending,
            next_id,
            max: max.max(1),
            lines: 0,
            last,
            open,
            torn: false,
        };
        outbox.compact()?;
        Ok(outbox)
    }

    /// Rewrites the file with the pending alerts only (temp file, fsync, rename, fsync dir),
    /// and the next id.
    fn compact(&mut self) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        let mut text = String::new();
        for (id, (topic, payload)) in &self.pending {
            text.push_str(&line(&Line::Add {
                add: *id,
                topic: topic.clone(),
                payload: payload.clone(),
            }));
        }
        // A stream forgotten while one of its alerts is still pending: replaying that alert
        // would bring back its last alerted window, and a stream that comes back (numbered
        // from 0 again) would have its alerts taken for ones already stored.
        let forgotten: std::collections::BTreeSet<String> = self
            .pending
            .values()
            .filter_map(|(_, payload)| window_of(payload))
            .map(|(stream, _)| stream)
            .filter(|stream| !self.last.contains_key(stream))
            .collect();
        for stream in forgotten {
            text.push_str(&line(&Line::Forget { forget: stream }));
        }
        for (stream, seq) in &self.last {
            text.push_str(&line(&Line::Last {
                last: stream.clone(),
                seq: *seq,
            }));
        }
        for (stream, (raise, at)) in &self.open {
            text.push_str(&line(&Line::Open {
                open: stream.clone(),
                raise: *raise,
                at: at.clone(),
            }));
        }
        text.push_str(&line(&Line::Next { next: self.next_id }));
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        self.lines = self.pending.len() + self.last.len() + self.open.len() + 1;
        Ok(())
    }

    fn append(&mut self, l: &Line, sync: bool) -> Result<(), OutboxError> {
        if self.torn {
            self.compact()?;
            self.torn = false;
        }
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let written = self
            .file
            .write_all(line(l).as_bytes())
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        self.torn = written.is_err();
        written.map_err(io)?;
        self.lines += 1;
        Ok(())
    }

    /// Stores an alert (its JSON gets `"alert_id"`) durably; returns it, ready to publish.
    ///
    /// # Errors
    /// [`OutboxError::Full`] at the bound, [`OutboxError::Io`] when the write fails.
    pub fn add(&mut self, topic: &str, mut payload: Value) -> Result<Pending, OutboxError> {
        if self.pending.len() >= self.max {
            return Err(OutboxError::Full(self.pending.len()));
        }
        let id = self.next_id;
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("alert_id".into(), Value::from(id));
        }
        let mut open = self.open.clone();
        link(&mut open, id, &mut payload);
        self.append(
            &Line::Add {
                add: id,
                topic: topic.to_owned(),
                payload: payload.clone(),
            },
            true,
        )?;
        self.next_id += 1;
        self.open = open;
        if let Some((stream, seq)) = window_of(&payload) {
            self.last.insert(stream, seq);
        }
        let bytes = payload.to_string().into_bytes();
        self.pending.insert(id, (topic.to_owned(), payload));
        Ok(Pending {
            id,
            topic: topic.to_owned(),
            payload: bytes,
        })
    }

    /// The broker acknowledged alert `id`. Not fsynced: after a crash that loses this line the
    /// alert is published once more (at least once, never lost).
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the write or a compaction fails.
    pub fn done(&mut self, id: u64) -> Result<(), OutboxError> {
        if self.pending.remove(&id).is_none() {
            return Ok(());
        }
        self.append(&Line::Done { done: id }, false)?;
        if self.lines > 1024
            && self.lines > 4 * (self.pending.len() + self.last.len() + self.open.len())
        {
            self.compact()?;
        }
        Ok(())
    }

    /// Alerts waiting for an acknowledgement, oldest first.
    pub fn pending(&self) -> Vec<Pending> {
        self.pending
            .iter()
            .map(|(id, (topic, payload))| Pending {
                id: *id,
                topic: topic.clone(),
                payload: payload.to_string().into_bytes(),
            })
            .collect()
    }

    /// Forgets the last alerted window of `stream` (it went quiet; if it comes back its windows
    /// are numbered from 0 again and must not be taken for windows alerted before), and its
    /// open window alert. An open stale alert is kept: the stream is forgotten because it is
    /// silent, and when it speaks again that alert is cleared (as a replay of this line keeps
    /// it too). Fsynced, as an alert is: the checkpoint stops remembering that the stream is
    /// being forgotten once this is done, and a power loss that kept the checkpoint but lost
    /// this line would let the old window numbers silence the stream's next life.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the write fails.
    pub fn forget(&mut self, stream: &str) -> Result<(), OutboxError> {
        let was_open = self.open.remove(stream).is_some();
        if self.last.remove(stream).is_none() && !was_open {
            return Ok(());
        }
        self.append(
            &Line::Forget {
                forget: stream.to_owned(),
            },
            true,
        )
    }

    /// The streams with a raised alert of `kind` (e.g. `stale`) not cleared yet.
    pub fn open_incidents(&self, kind: &str) -> Vec<String> {
        let prefix = format!("{kind}:");
        self.open
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// The streams with a raised window alert (one with no `kind`) not cleared yet; `kinds`
    /// are the other kinds of alert there are, whose incidents are left out.
    pub fn open_window_incidents(&self, kinds: &[&str]) -> Vec<String> {
        self.open
            .keys()
            .filter(|k| {
                !kinds
                    .iter()
                    .any(|kind| k.strip_prefix(kind).is_some_and(|r| r.starts_with(':')))
            })
            .cloned()
            .collect()
    }

    /// The window number of each stream's last alert, as stored by this run or earlier ones.
    pub fn last_alerts(&self) -> &BTreeMap<String, u64> {
        &self.last
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn line(l: &Line) -> String {
    let mut s = serde_json::to_string(l).unwrap_or_default();
    s.push('\n');
    s
}

/// The outbox shared by the alerting stage (adds) and the publish loop (acknowledgements),
/// keeping the `pending` gauge in step with it.
#[derive(Debug, Clone)]
pub struct SharedOutbox {
    inner: Arc<Mutex<Outbox>>,
    freed: Arc<Notify>,
    pending: Gauge,
}

impl SharedOutbox {
    /// Shares an opened outbox; `pending` follows how many alerts wait in it.
    pub fn new(outbox: Outbox, pending: Gauge) -> Self {
        pending.set(outbox.len() as i64);
        Self {
            inner: Arc::new(Mutex::new(outbox)),
            freed: Arc::new(Notify::new()),
            pending,
        }
    }

    /// The outbox (a poisoned lock still holds consistent data: every method leaves the
    /// in-memory state and the file in step).
    pub fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Outbox::add`], waiting while the outbox is full.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the write fails.
    pub async fn add(&self, topic: &str, payload: Value) -> Result<Pending, OutboxError> {
        loop {
            let freed = self.freed.notified();
            let added = super::on_disk(|| {
                let mut outbox = self.lock();
                let r = outbox.add(topic, payload.clone());
                self.pending.set(outbox.len() as i64);
                r
            });
            match added {
                Err(OutboxError::Full(n)) => {
                    warn!(
                        pending = n,
                        "Alert outbox full; waiting for the broker to acknowledge."
                    );
                }
                other => return other,
            }
            freed.await;
        }
    }

    /// [`Outbox::done`], waking an add that waits for room.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the write fails.
    pub fn done(&self, id: u64) -> Result<(), OutboxError> {
        // Off the worker: now and then a done line triggers a compaction (two fsyncs).
        let r = super::on_disk(|| {
            let mut outbox = self.lock();
            let r = outbox.done(id);
            self.pending.set(outbox.len() as i64);
            r
        });
        self.freed.notify_waiters();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(n: u64) -> Value {
        serde_json::json!({ "stream": "s", "seq": n, "state": "raised" })
    }

    #[test]
    fn pending_alerts_survive_a_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        let a = o.add("p/alerts/s", alert(1)).unwrap();
        let b = o.add("p/alerts/s", alert(2)).unwrap();
        let c = o.add("p/alerts/s", alert(3)).unwrap();
        assert_eq!((a.id, b.id, c.id), (1, 2, 3));
        let json: Value = serde_json::from_slice(&b.payload).unwrap();
        assert_eq!(json["alert_id"], 2);
        o.done(1).unwrap();
        o.done(3).unwrap();
        drop(o);
        // A crash mid-append leaves a torn line: skipped.
        let path = dir.path().join("outbox.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"add\":9,\"topic\":\"p/al").unwrap();
        drop(f);
        drop(Outbox::open(dir.path(), 10).unwrap());
        // The compaction at each open must keep it, however often the process restarts.
        drop(Outbox::open(dir.path(), 10).unwrap());
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        let left = o.pending();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, 2);
        assert_eq!(left[0].payload, b.payload);
        o.done(2).unwrap();
        drop(o);
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.add("p/alerts/s", alert(4)).unwrap().id, 4);
    }

    #[test]
    fn each_streams_last_alerted_window_survives_acks_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        for (stream, seq) in [("a", 4), ("b", 9), ("a", 17)] {
            let p = o
                .add("t", serde_json::json!({ "stream": stream, "seq": seq }))
                .unwrap();
            o.done(p.id).unwrap();
        }
        drop(o);
        // Reopening compacts: the alerts are gone, their windows stay.
        drop(Outbox::open(dir.path(), 10).unwrap());
        let o = Outbox::open(dir.path(), 10).unwrap();
        assert!(o.is_empty());
        let last: Vec<(&str, u64)> = o
            .last_alerts()
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(last, vec![("a", 17), ("b", 9)]);
    }

    /// A stream forgotten while one of its alerts is still unacknowledged stays forgotten
    /// through the compactions after: the pending alert replayed does not bring its window
    /// back. Before, every reopen did.
    #[test]
    fn a_forgotten_streams_pending_alert_does_not_bring_its_window_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        o.add("t", serde_json::json!({ "stream": "s", "seq": 5000 }))
            .unwrap();
        o.forget("s").unwrap();
        drop(o);
        for _ in 0..2 {
            let o = Outbox::open(dir.path(), 10).unwrap();
            assert_eq!(o.len(), 1, "the alert is still to be published");
            assert!(o.last_alerts().get("s").is_none(), "{:?}", o.last_alerts());
        }
    }

    #[test]
    fn the_bound_refuses_until_one_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 2).unwrap();
        o.add("t", alert(1)).unwrap();
        o.add("t", alert(2)).unwrap();
        assert!(matches!(o.add("t", alert(3)), Err(OutboxError::Full(2))));
        o.done(1).unwrap();
        assert_eq!(o.add("t", alert(3)).unwrap().id, 3);
    }

    /// A failed write (a full disk) can leave part of a line. The next alert's line is not
    /// glued to it (and lost with it at the next start): the file is rewritten first. The
    /// part is written by hand; a read-only handle fails as the full disk would.
    #[test]
    fn an_alert_after_a_failed_write_is_not_lost_with_its_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        o.add("t", alert(1)).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"add\":2,\"topic")
            .unwrap();
        o.file = File::open(&path).unwrap();
        assert!(o.add("t", alert(2)).is_err());
        assert_eq!(o.add("t", alert(3)).unwrap().id, 2);
        drop(o);
        let o = Outbox::open(dir.path(), 10).unwrap();
        let ids: Vec<u64> = o.pending().iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn compaction_keeps_the_file_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        for n in 0..1100 {
            let p = o.add("t", alert(n)).unwrap();
            o.done(p.id).unwrap();
        }
        let size = fs::metadata(dir.path().join("outbox.jsonl")).unwrap().len();
        assert!(size < 200_000, "{size} bytes");
        drop(o);
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.add("t", alert(0)).unwrap().id, 1101);
    }

    #[test]
    fn a_clear_names_its_raise_and_the_incident_duration_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        // Adds an alert of stream pump/1; returns its id and stored JSON.
        let add = |o: &mut Outbox, state: &str, time: &str| {
            let alert =
                serde_json::json!({ "stream": "pump/1", "seq": 1, "state": state, "time": time });
            let p = o.add("p/alerts/pump/1", alert).unwrap();
            (p.id, serde_json::from_slice::<Value>(&p.payload).unwrap())
        };
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        add(&mut o, "raised", "2026-01-01T00:00:00.000Z");
        let (raise, _) = add(&mut o, "raised", "2026-11-30T10:00:00.250Z");
        o.done(raise).unwrap();
        drop(o);
        // Reopened (and compacted): the raise is acknowledged and gone, its incident is not.
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        let (_, json) = add(&mut o, "cleared", "2026-11-30T10:01:30.750Z");
        assert_eq!(json["raise_alert_id"], raise);
        assert_eq!(json["duration_s"], 90.5);
        // The incident is closed: a second clear names nothing.
        let (_, json) = add(&mut o, "cleared", "2026-11-30T10:02:00.000Z");
        assert!(json.get("raise_alert_id").is_none(), "{json}");
    }

    /// A stream forgotten while silent keeps its open stale alert, in memory and across a
    /// restart (its return clears it), and drops its window alert's incident and number.
    #[test]
    fn a_forgotten_stream_keeps_its_stale_alert_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        for kind in [None, Some("stale")] {
            let mut alert = serde_json::json!({ "stream": "s", "seq": 3, "state": "raised",
                "time": "2026-01-01T00:00:00Z" });
            if let Some(kind) = kind {
                alert["kind"] = kind.into();
            }
            let p = o.add("p/alerts/s", alert).unwrap();
            o.done(p.id).unwrap();
        }
        assert_eq!(o.last_alerts().get("s"), Some(&3));
        assert_eq!(o.open_window_incidents(&["stale"]), ["s"]);
        o.forget("s").unwrap();
        for o in [&o, &Outbox::open(dir.path(), 10).unwrap()] {
            assert_eq!(o.open_incidents("stale"), ["s"]);
            assert!(o.open_window_incidents(&["stale"]).is_empty());
            assert!(o.last_alerts().get("s").is_none());
        }
        // The window alert's incident is gone: its clear names no raise.
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        let clear = serde_json::json!({ "stream": "s", "seq": 0, "state": "cleared",
            "time": "2026-01-02T00:00:00Z" });
        let p = o.add("p/alerts/s", clear).unwrap();
        let json: Value = serde_json::from_slice(&p.payload).unwrap();
        assert!(json.get("raise_alert_id").is_none(), "{json}");
    }
}
