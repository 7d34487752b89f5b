//! Throughput benchmark: the daemon against the broker's own ceiling and a Python peer, in the
//! same run.
//!
//! `cargo bench --bench throughput` (or `make bench`). Starts mosquitto on a free port, then
//! for each of 3 rounds:
//! - ceiling: a publisher process sends N QoS 1 messages (a JSON array of 64 floats, one window
//!   each) that `mosquitto_sub -q 1 -C N > /dev/null` receives;
//! - ebgand: the same publisher, the same messages, received, windowed, scored and judged by the
//!   daemon (in this process; energy telemetry off), with its ingest journal on (the default:
//!   every message appended and fsynced before its ack) and off;
//! - Python peer: the same publisher, the same messages, received by `benches/peer.py`, what a
//!   user would write instead: paho-mqtt (QoS 1, clean session), one onnxruntime `session.run`
//!   per message (batch 1, one intra-op thread) and a threshold judgement per stream. Its
//!   interpreter is `.venv/peer/bin/python` (`make setup-peer`) or `EBGAND_PEER_PYTHON`.
//!
//! Each consumer's rate is N over the time from the first publish to its N-th message (the
//! subprocesses' exit, the daemon's N-th window scored). CPU per message: the daemon's from when
//! it is ready, the peer's from its "ready" line (after the SUBACK: interpreter start, imports
//! and model load left out), `mosquitto_sub`'s whole run. Prints medians, the ratios
//! ebgand / ceiling, ebgand / Python peer and Python peer / ceiling (throughput and CPU per
//! message). Then the scorer alone at batch 1, 64 and 512. Absolute numbers move with the
//! machine's load; compare the ratios.
//!
//! `-- --daemon-only` runs the daemon alone once (see [`daemon_only`]); `EBGAND_BENCH_MESSAGES`
//! sets the messages per run, `EBGAND_BENCH_POLL_MS` how often the daemon's scored count is
//! read (5 ms; under callgrind 500, so that the polling adds next to nothing to the count).
#![allow(
    clippy::let_underscore_must_use,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ebgand::config::RawConfig;
use support::{Broker, cpu_seconds, spawn_publisher};

mod support;

/// Messages per run: 40,000, or `EBGAND_BENCH_MESSAGES` (the publisher process inherits it).
static MESSAGES: std::sync::LazyLock<u64> =
    std::sync::LazyLock::new(|| support::env_or("EBGAND_BENCH_MESSAGES", 40_000));
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--publish") {
        let port: u16 = args[i + 1].parse().unwrap();
        let topic = args[i + 2].clone();
        return support::publish(port, &topic, *MESSAGES, &payloads());
    }
    let lib = support::ort_library();
    if args.iter().any(|a| a == "--daemon-only") {
        return daemon_only(&lib);
    }
    let python = peer_python();
    let rt = support::runtime();
    let broker = Broker::start();
    println!(
        "messages per run: {} (QoS 1, 64-float JSON arrays, one window each), rounds: {ROUNDS}",
        *MESSAGES
    );
    println!("broker: mosquitto, max_inflight_messages 100, max_queued_messages 0");
    let mut ceiling = Vec::new();
    let mut daemon = Vec::new();
    let mut unjournaled = Vec::new();
    let mut peer = Vec::new();
    for round in 0..ROUNDS {
        ceiling.push(run_ceiling(broker.port));
        daemon.push(rt.block_on(run_daemon(broker.port, &lib, round, true)));
        unjournaled.push(rt.block_on(run_daemon(broker.port, &lib, round, false)));
        peer.push(run_peer(broker.port, &python));
        println!(
            "round {round}: ceiling {:>8.0} msg/s ({:.1} us CPU/msg)   ebgand {:>8.0} msg/s ({:.1} us CPU/msg)   journal off {:>8.0} msg/s ({:.1} us CPU/msg)   Python peer {:>8.0} msg/s ({:.1} us CPU/msg)",
            ceiling[round].0,
            ceiling[round].1,
            daemon[round].0,
            daemon[round].1,
            unjournaled[round].0,
            unjournaled[round].1,
            peer[round].0,
            peer[round].1
        );
    }
    let (c_rate, c_cpu) = (
        median(ceiling.iter().map(|x| x.0)),
        median(ceiling.iter().map(|x| x.1)),
    );
    let (d_rate, d_cpu) = (
        median(daemon.iter().map(|x| x.0)),
        median(daemon.iter().map(|x| x.1)),
    );
    println!("\n| consumer | msg/s (median) | CPU us/msg (median) |");
    println!("|---|---|---|");
    println!("| mosquitto_sub > /dev/null (ceiling) | {c_rate:.0} | {c_cpu:.1} |");
    let (u_rate, u_cpu) = (
        median(unjournaled.iter().map(|x| x.0)),
        median(unjournaled.iter().map(|x| x.1)),
    );
    println!("| ebgand (journal, decode, window, score, judge) | {d_rate:.0} | {d_cpu:.1} |");
    println!("| ebgand, journal off | {u_rate:.0} | {u_cpu:.1} |");
    let (p_rate, p_cpu) = (
        median(peer.iter().map(|x| x.0)),
        median(peer.iter().map(|x| x.1)),
    );
    println!("| Python peer (paho-mqtt, onnxruntime batch 1, judge) | {p_rate:.0} | {p_cpu:.1} |");
    println!(
        "\nratio ebgand / ceiling: throughput {:.2}, CPU per message {:.2}",
        d_rate / c_rate,
        d_cpu / c_cpu
    );
    println!(
        "ratio ebgand / Python peer: throughput {:.2}, CPU per message {:.2}",
        d_rate / p_rate,
        d_cpu / p_cpu
    );
    println!(
        "ratio Python peer / ceiling: throughput {:.2}, CPU per message {:.2}",
        p_rate / c_rate,
        p_cpu / c_cpu
    );
    println!(
        "ratio journal on / off: throughput {:.2}, CPU per message {:.2}",
        d_rate / u_rate,
        d_cpu / u_cpu
    );
    scorer_bench(&lib);
}

/// `--daemon-only`: one run of the daemon alone (journal on), no ceiling, peer or scorer
/// bench: the workload to count instructions on (`valgrind --tool=callgrind`), which a noisy
/// machine does not move as it moves time. Two message counts (`EBGAND_BENCH_MESSAGES`) and
/// their difference give the instructions of one message, start-up left out
/// (`EBGAND_BENCH_POLL_MS=500`: the polling for the last window follows wall time).
fn daemon_only(lib: &str) {
    let rt = support::runtime();
    let broker = Broker::start();
    let (rate, cpu) = rt.block_on(run_daemon(broker.port, lib, 0, true));
    println!(
        "ebgand alone: {} messages, {rate:.0} msg/s, {cpu:.1} us CPU/msg",
        *MESSAGES
    );
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn payloads() -> Vec<Vec<u8>> {
    let mut m = ebgand::demo::sim::Machine::new(11);
    (0..256)
        .map(|_| serde_json::to_vec(&m.samples(64, false)).unwrap())
        .collect()
}

fn run_ceiling(port: u16) -> (f64, f64) {
    let topic = format!("bench/ceiling/{}", fastrand::u32(..));
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            &topic,
            "-C",
            &MESSAGES.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("mosquitto_sub missing: run `make setup`");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut publisher = spawn_publisher(port, &topic);
    let mut cpu = 0.0;
    loop {
        let now = cpu_seconds(sub.id());
        if now > 0.0 {
            cpu = now;
        }
        if sub.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.wait().unwrap();
    (*MESSAGES as f64 / secs, cpu * 1e6 / *MESSAGES as f64)
}

/// The peer's interpreter: `EBGAND_PEER_PYTHON`, else the venv `make setup-peer` makes.
fn peer_python() -> PathBuf {
    let python = std::env::var_os("EBGAND_PEER_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/peer/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "Python peer's interpreter {} missing: run `make setup-peer` (or set EBGAND_PEER_PYTHON)",
        python.display()
    );
    python
}

/// `benches/peer.py` on a fresh topic: rate from the first publish to its exit after N
/// messages, CPU per message from its "ready" (subscribed) line to its exit.
fn run_peer(port: u16, python: &Path) -> (f64, f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topic = format!("bench/peer/{}", fastrand::u32(..));
    let mut peer = Command::new(python)
        .arg(root.join("benches/peer.py"))
        .args(["--port", &port.to_string(), "--topic", &topic])
        .args(["--count", &MESSAGES.to_string()])
        .arg("--model")
        .arg(root.join("models/vibration/fixture-1"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("Python peer did not start: run `make setup-peer`");
    let mut out = std::io::BufReader::new(peer.stdout.take().unwrap()).lines();
    let ready = out.next().and_then(Result::ok);
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "Python peer did not subscribe"
    );
    let cpu0 = cpu_seconds(peer.id());
    let start = Instant::now();
    let mut publisher = spawn_publisher(port, &topic);
    let mut cpu = 0.0;
    let status = loop {
        let now = cpu_seconds(peer.id());
        if now > 0.0 {
            cpu = now;
        }
        if let Some(status) = peer.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    publisher.wait().unwrap();
    assert!(status.success(), "Python peer failed: {status}");
    let done = out.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        done.starts_with(&format!("done {} ", *MESSAGES)),
        "Python peer did not count {} messages: {done:?}",
        *MESSAGES
    );
    (
        *MESSAGES as f64 / secs,
        (cpu - cpu0) * 1e6 / *MESSAGES as f64,
    )
}

async fn run_daemon(port: u16, lib: &str, round: usize, journal: bool) -> (f64, f64) {
    let state = tempfile::tempdir().unwrap();
    let tag = format!("{round}{}", if journal { "j" } else { "n" });
    let mut raw = support::daemon_config(lib, state.path(), &tag);
    raw.mqtt.port = port;
    raw.journal.enabled = journal;
    let (secs, cpu, _) = support::scored_run(raw, &tag, port, *MESSAGES, &[]).await;
    (*MESSAGES as f64 / secs, cpu * 1e6 / *MESSAGES as f64)
}

fn scorer_bench(lib: &str) {
    let mut raw = RawConfig::from_toml(ebgand::config::DOCUMENTED_CONFIG).unwrap();
    raw.runtime.library = lib.to_string();
    let rt = raw.validate().unwrap().runtime;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vibration/fixture-1");
    let mut scorer =
        ebgand::model::Scorer::load(ebgand::model::ModelVersion::open(&dir).unwrap(), &rt).unwrap();
    println!("\nscorer alone (vibration fixture, 64x1 windows, 1 intra-op thread), medians of 5:");
    let mut base = 0.0;
    for batch in [1usize, 64, 512] {
        let data = vec![0.5f32; batch * 64];
        let mut rates = Vec::new();
        for _ in 0..5 {
            let calls = (200_000 / batch).max(50);
            let t = Instant::now();
            for _ in 0..calls {
                std::hint::black_box(scorer.score(&data, batch).unwrap());
            }
            rates.push((calls * batch) as f64 / t.elapsed().as_secs_f64());
        }
        let r = median(rates.into_iter());
        if batch == 1 {
            base = r;
        }
        println!(
            "  batch {batch:>3}: {r:>10.0} windows/s  ({:.1}x batch 1)",
            r / base
        );
    }
}
