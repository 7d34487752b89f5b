//! The journal's unit tests.

use super::*;

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    // The newest is the (empty) segment this run appends to; the one before holds data.
    segs.into_iter()
        .rev()
        .find(|p| fs::metadata(p).unwrap().len() > 0)
        .unwrap()
}

fn add(j: &mut Journal, n: u64) -> u64 {
    let payload = format!("payload {n}");
    j.append(n as u16, &format!("s/{n}"), n * 10, 10, payload.as_bytes())
        .unwrap()
}

fn check(r: &Record, n: u64) {
    assert_eq!(r.pkid, n as u16);
    assert_eq!(r.topic, format!("s/{n}"));
    assert_eq!((r.start, r.samples, r.end()), (n * 10, 10, n * 10 + 10));
    assert_eq!(r.payload, format!("payload {n}").into_bytes());
}

/// A record past BufWriter's buffer goes to the file directly: a full disk can leave half
/// of it there. Records synced after the failure go to a new segment and are read back
/// (before, they followed the tear, where reading stops). The tear is written by hand; a
/// read-only handle fails as the full disk would.
#[test]
fn records_after_a_failed_write_are_not_lost_behind_its_tear() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    add(&mut j, 0);
    j.sync().unwrap();
    let seg = j.current.path.clone();
    let mut torn = OpenOptions::new().append(true).open(&seg).unwrap();
    torn.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
    let full = BufWriter::new(File::open(&seg).unwrap());
    drop(std::mem::replace(&mut j.writer, full).into_parts());
    add(&mut j, 1);
    assert!(j.sync().is_err());
    add(&mut j, 2);
    j.sync().unwrap();
    drop(j);
    let (_, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    let pkids: Vec<u16> = got.iter().map(|r| r.pkid).collect();
    assert_eq!(pkids, [0, 2], "record 1 was never synced");
}

#[test]
fn records_survive_a_reopen_and_positions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, old) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert!(old.is_empty());
    let positions: Vec<_> = (0..5).map(|n| add(&mut j, n)).collect();
    assert!(j.unsynced());
    j.sync().unwrap();
    assert!(!j.unsynced());
    let bytes = j.bytes();
    drop(j);

    let (mut j, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(got.len(), 5);
    for (n, r) in got.iter().enumerate() {
        check(r, n as u64);
        assert_eq!(r.pos, positions[n]);
    }
    assert_eq!(j.bytes(), bytes);
    assert_eq!(j.segments(), 2);
    let pos = add(&mut j, 5);
    assert!(pos > *positions.iter().max().unwrap());
    j.sync().unwrap();
    drop(j);

    let (_, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(got.len(), 6);
    check(&got[5], 5);
    assert!(got.windows(2).all(|w| w[0].pos < w[1].pos));
}

#[test]
fn a_torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    for n in 0..3 {
        add(&mut j, n);
    }
    j.sync().unwrap();
    drop(j);
    let seg = newest_segment(dir.path());
    let good_len = fs::metadata(&seg).unwrap().len();
    // Half of a fourth record, as a crash while appending leaves it.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    drop(f);

    let (mut j, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    add(&mut j, 3);
    j.sync().unwrap();
    drop(j);

    let (_, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(got.len(), 4);
    for (n, r) in got.iter().enumerate() {
        check(r, n as u64);
    }
}

#[test]
fn a_crc_mismatch_drops_the_rest_of_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    for n in 0..4 {
        add(&mut j, n);
    }
    j.sync().unwrap();
    drop(j);
    let seg = newest_segment(dir.path());
    let mut buf = fs::read(&seg).unwrap();
    let record_len = buf.len() / 4; // all four records have the same length
    buf[record_len + FRAME + 3] ^= 0xff; // in the second record's body
    fs::write(&seg, &buf).unwrap();

    let (_, got) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(got.len(), 1);
    check(&got[0], 0);
    assert_eq!(fs::metadata(&seg).unwrap().len(), record_len as u64);
}

#[test]
fn rotation_and_retiring_carry_needed_records_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 200).unwrap();
    // A single segment, the current one, is never retired.
    assert_eq!(j.segments(), 1);
    assert_eq!(j.retire_oldest(|_| true).unwrap(), None);
    for n in 0..12 {
        // Said before the append that starts a new segment (its caller fsyncs off the
        // runtime's worker then).
        let (rotates, segments) = (j.rotates_next(), j.segments());
        add(&mut j, n);
        assert_eq!(j.segments() > segments, rotates, "record {n}");
    }
    j.sync().unwrap();
    assert!(j.segments() >= 3, "{j:?}");
    let before = j.segments();
    let bytes = j.bytes();

    let oldest = fs::read(segment_path(dir.path(), 0)).unwrap();
    let (in_oldest, _, _) = parse(&oldest, 0);
    assert!(in_oldest.len() > 1);
    let carried = j.retire_oldest(|r| r.pkid == 1).unwrap();
    assert_eq!(carried, Some(1));
    assert!(!segment_path(dir.path(), 0).exists());
    assert!(j.segments() < before + 1);
    assert!(j.bytes() < bytes);
    drop(j);

    let (mut j, got) = Journal::open(dir.path(), 200).unwrap();
    let kept: Vec<_> = got.iter().filter(|r| r.pkid == 1).collect();
    assert_eq!(kept.len(), 1);
    check(kept[0], 1);
    assert!(kept[0].pos >= 12);
    for r in &in_oldest {
        if r.pkid != 1 {
            assert!(got.iter().all(|g| g.pkid != r.pkid), "{r:?} not retired");
        }
    }
    let expected = 12 - in_oldest.len() + 1;
    assert_eq!(got.len(), expected);

    // Retiring everything but the current segment, keeping nothing.
    while j.retire_oldest(|_| false).unwrap().is_some() {}
    assert_eq!(j.segments(), 1);
    drop(j);
    let (_, got) = Journal::open(dir.path(), 200).unwrap();
    assert!(got.is_empty());
}

#[test]
fn a_journal_in_use_is_refused_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), 1 << 20),
        Err(JournalError::InUse { .. })
    ));
    drop(first);
    Journal::open(dir.path(), 1 << 20).unwrap();
}

#[test]
fn a_record_out_of_position_sequence_is_corruption() {
    // Fuzzing found it: a CRC-valid record at position 2^64 - 1 made the next segment's
    // name that of an existing one, and the journal could not be opened a second time.
    let dir = tempfile::tempdir().unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    body.extend_from_slice(&7u16.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(b"t[1]");
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    fs::write(segment_path(dir.path(), 0), &frame).unwrap();
    for round in 0..3 {
        let (mut j, got) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(got.len(), round, "round {round}");
        add(&mut j, round as u64);
        j.sync().unwrap();
    }
}

#[test]
fn sync_without_appends_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    assert!(!j.unsynced());
    j.sync().unwrap();
    assert!(!j.unsynced());
    assert_eq!(j.bytes(), 0);
}

#[test]
fn leftover_tmp_files_and_empty_newest_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x.tmp"), b"junk").unwrap();
    let (j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
    drop(j);
    assert!(!dir.path().join("x.tmp").exists());
    // Reopening without appends does not pile up empty segments.
    for _ in 0..3 {
        let (j, got) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert!(got.is_empty());
        assert_eq!(j.segments(), 1);
    }
    // One segment, and the lock file.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}
