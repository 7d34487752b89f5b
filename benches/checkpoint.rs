//! What a checkpoint costs with slow seasonal streams: the streams' seasons in the checkpoint
//! itself (as before `seasons.json`) against apart from it (every `checkpoint_ms` only the
//! checkpoint; the seasons at most every ten minutes).
//!
//! `cargo bench --bench checkpoint [-- STREAMS VALUES]` (default 1,000 streams, each watched
//! with 6,048 values held: three weeks of 5-minute samples, the most a watched one-channel
//! 5-minute stream holds with `season_weeks = 3`; the default two hold 4,032). Each way is timed seven times in turn, writing to a temporary
//! folder (the machine's disk, fsync included); prints the medians, their ratio and the bytes
//! written per checkpoint. Apart is the daemon's whole way: the judging progress snapshot,
//! the seasons taken out of it, the checkpoint saved.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ebgand::detect::{DetectorState, Season};
use ebgand::durable::checkpoint::{self, Checkpoint, Judged, Progress, Saved};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let streams: usize = args.next().map_or(1_000, |s| s.parse().unwrap());
    let values: usize = args.next().map_or(6_048, |s| s.parse().unwrap());
    // A watched season as the checkpoint holds it: the samples so far, one channel.
    let history: Vec<f32> = (0..values)
        .map(|i| 10.0 + (i as f32 * 0.37).sin() * 7.123_456)
        .collect();
    let season: Season = serde_json::from_value(serde_json::json!({
        "step_s": 300.0, "end_s": 1.4e9, "end_at": 1.4e9, "channels": 1, "history": history
    }))
    .unwrap();
    let saved = Saved {
        judged: Judged {
            next_seq: 6_000,
            detector: DetectorState {
                season: Some(season.into()),
                ..DetectorState::default()
            },
        },
        samples: 6_048,
        since: 0,
    };
    let whole = Checkpoint {
        streams: (0..streams)
            .map(|i| (format!("plant/pump-{i}"), saved.clone()))
            .collect::<HashMap<_, _>>(),
        messages: (0..4_096).collect(),
        journal_pos: 0,
        forgetting: Vec::new(),
    };
    // The judging progress the daemon snapshots at each checkpoint.
    let progress = Progress::default();
    progress.seed(&whole.streams);
    let dir = tempfile::tempdir().unwrap();
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
    let (mut inline, mut apart, mut snapshot) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        let t = Instant::now();
        checkpoint::save(dir.path(), &whole).unwrap();
        inline.push(t.elapsed());
        // The daemon's way: a snapshot of the progress, the seasons taken out of it, the
        // checkpoint saved.
        let t = Instant::now();
        let mut streams: HashMap<String, Saved> = progress
            .snapshot()
            .into_iter()
            .map(|(id, judged)| {
                let samples = 6_048;
                (
                    id,
                    Saved {
                        judged,
                        samples,
                        since: 0,
                    },
                )
            })
            .collect();
        let _seasons = checkpoint::split_seasons(&mut streams);
        snapshot.push(t.elapsed());
        let copy = Checkpoint {
            streams,
            messages: whole.messages.clone(),
            journal_pos: whole.journal_pos,
            forgetting: Vec::new(),
        };
        checkpoint::save(dir.path(), &copy).unwrap();
        apart.push(t.elapsed());
    }
    let inline_bytes = {
        checkpoint::save(dir.path(), &whole).unwrap();
        size(checkpoint::FILE)
    };
    let mut copy = whole.clone();
    let seasons = checkpoint::split_seasons(&mut copy.streams);
    checkpoint::save(dir.path(), &copy).unwrap();
    checkpoint::save_seasons(dir.path(), &seasons).unwrap();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b, c) = (
        median(&mut inline),
        median(&mut apart),
        median(&mut snapshot),
    );
    println!("{streams} watched streams, {values} values each; medians of 7, same run");
    println!(
        "seasons in the checkpoint: {a:?} and {:.1} MB per checkpoint",
        inline_bytes as f64 / 1e6
    );
    println!(
        "seasons apart:             {b:?} and {:.3} MB per checkpoint (+ {:.1} MB seasons.json at most every {} s)",
        size(checkpoint::FILE) as f64 / 1e6,
        size(checkpoint::SEASONS_FILE) as f64 / 1e6,
        checkpoint::SEASONS_EVERY.as_secs()
    );
    println!("  of which the progress snapshot and the seasons taken out: {c:?}");
    println!(
        "ratio (in / apart): {:.0}x the time",
        a.as_secs_f64() / b.as_secs_f64()
    );
}
