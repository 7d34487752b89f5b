//! What survives a crash: the ingest journal and its checkpoint, and the alert outbox.
//!
//! On-disk formats only: nothing here knows MQTT. The ingest stage appends stream messages to
//! the [`journal`] and records judging progress in the [`checkpoint`]; the alerting stage puts
//! every alert in the [`outbox`] before it is published.

pub mod checkpoint;
pub mod journal;
pub mod outbox;

/// Writes `bytes` to `tmp` whole and synced, for the caller to rename over the file it
/// replaces: a power cut never leaves the renamed file empty or cut short. On a failed write
/// `tmp` is removed (best effort).
///
/// # Errors
/// The write's or the sync's.
pub fn write_synced(tmp: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let written = std::fs::File::create(tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if written.is_err() {
        std::fs::remove_file(tmp).ok();
    }
    written
}

/// Runs disk work that blocks (an fsync; a checkpoint; copying a journal segment's live records
/// forward) without holding up the runtime's other tasks: on a multi-threaded runtime (the
/// daemon's) the calling worker first hands them to another thread (`block_in_place`), so
/// scoring, alerting and publishing keep running through a slow fsync (an SD card's can take
/// seconds). A current-thread runtime (unit tests, `replay`) has no other worker and runs it in
/// place, as does a caller outside any runtime. The caller itself waits, as it must: what it
/// writes is acknowledged or published only once it is on disk.
pub fn on_disk<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
