//! Soak benchmark: the daemon under a steady paced load for a long time; memory must stay flat.
//!
//! `cargo bench --bench soak -- [--minutes 30] [--rate 20000] [--streams 1000] [--interval 10]`
//! (or `make soak`). Starts mosquitto on a free port (the README's high-rate settings), then the
//! daemon as its own process (`ebgand run --config <generated>`: one `soak/+` stream filter, so
//! each of the N topics is a stream; 16-float JSON arrays, window 64 = 4 messages; the served
//! default model; /metrics on a free port; energy telemetry off), then a publisher process
//! (this binary with `--publish`) that sends QoS 1 messages at the target aggregate rate,
//! round-robin over the topics, healthy signal. A probe stream (JSON objects carrying a send
//! timestamp, alternating faulty and healthy windows, raise/clear after 1) makes every probe
//! window an alert whose window end is the send time: end-to-end latency, publish to alert.
//!
//! Every interval it samples the daemon's RSS and CPU (from /proc), its /metrics (messages,
//! windows scored, queue depths, inference latency histogram), the publisher's achieved rate
//! and the broker's backlog; one line per sample, and a CSV in `target/soak/`. At the end a
//! summary; exit 1 when windows were lost or RSS left the +-10 % band after warm-up.
#![allow(
    clippy::let_underscore_must_use,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;

use ebgand::telemetry::metrics::sum_metric_where;
use support::{Broker, cpu_seconds, rss_mib};

/// Samples per soak message; the model's window is 64, so 4 messages make a window.
const SAMPLES: usize = 16;
const WINDOW: usize = 64;
/// Seconds between probe windows.
const PROBE_EVERY_S: f64 = 0.5;
const PREFIX: &str = "soakd";

#[derive(Debug, Clone)]
struct Args {
    minutes: f64,
    rate: f64,
    streams: usize,
    interval: u64,
}

fn parse_args(args: &[String]) -> Args {
    let mut a = Args {
        minutes: 30.0,
        rate: 20_000.0,
        streams: 1_000,
        interval: 10,
    };
    let mut it = args.iter().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value").clone();
        match k.as_str() {
            "--minutes" => a.minutes = v().parse().expect("--minutes"),
            "--rate" => a.rate = v().parse().expect("--rate"),
            "--streams" => a.streams = v().parse().expect("--streams"),
            "--interval" => a.interval = v().parse().expect("--interval"),
            // `cargo bench` passes `--bench`; anything else is a mistake.
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?} (known: --minutes, --rate, --streams, --interval)"
            ),
        }
    }
    assert!(a.minutes > 0.0 && a.rate > 0.0 && a.streams > 0 && a.interval > 0);
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--publish") {
        let n = |i: usize| argv[i].parse::<f64>().unwrap();
        return publish(n(2) as u16, n(3), n(4) as usize, n(5));
    }
    let args = parse_args(&argv);
    std::process::exit(soak(&args));
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

// ---------------------------------------------------------------------------------------------
// Publisher process
// ---------------------------------------------------------------------------------------------

/// Paced QoS 1 publisher. Prints `P <unix_us> <sent> <acked>` every 100 ms and, once every
/// message is acknowledged, `D <sent> <acked> <expected_windows> <probe_windows> <seconds>`.
fn publish(port: u16, rate: f64, streams: usize, minutes: f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = rumqttc::MqttOptions::new(
            format!("soak-pub-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_inflight(100).set_keep_alive(Duration::from_secs(30));
        // A short request queue: a probe's timestamp is taken before it waits in this queue,
        // so a long one (1000 messages = 50 ms at 20k msg/s) would count as the daemon's delay.
        let (client, mut ev) = rumqttc::AsyncClient::new(o, 32);
        let acked = Arc::new(AtomicU64::new(0));
        let acks = acked.clone();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = closing.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_))) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) if closed.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        eprintln!("publisher: connection error: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        // 4,000 consecutive healthy samples (a whole number of the 50 and 100 Hz periods, so
        // the wrap-around is seamless), 250 payloads of 16; stream k's j-th message is j % 250.
        let mut m = ebgand::demo::sim::Machine::new(11);
        let payloads: Vec<Vec<u8>> = (0..4000 / SAMPLES)
            .map(|_| serde_json::to_vec(&m.samples(SAMPLES, false)).unwrap())
            .collect();
        let topics: Vec<String> = (0..streams).map(|k| format!("soak/s{k:04}")).collect();
        let mut probe = ebgand::demo::sim::Machine::new(99);
        let (mut sent, mut probe_windows) = (0u64, 0u64);
        let chunk = (rate / 100.0).max(100.0) as u64;
        let duration = minutes * 60.0;
        let start = Instant::now();
        let mut next_probe = 1.0;
        let mut next_report = 0.0;
        loop {
            let el = start.elapsed().as_secs_f64();
            if el >= duration {
                break;
            }
            let due = (el * rate) as u64;
            let mut n = 0;
            while sent < due && n < chunk {
                let (k, j) = ((sent % streams as u64) as usize, sent / streams as u64);
                let p = payloads[(j % payloads.len() as u64) as usize].clone();
                client
                    .publish(&topics[k], rumqttc::QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
                sent += 1;
                n += 1;
            }
            if el >= next_probe {
                // One window in a burst: faulty and healthy in turn, so each one is an alert.
                for x in probe.samples(WINDOW, probe_windows % 2 == 0) {
                    let p = format!(r#"{{"x":{x},"t":{}}}"#, unix_us());
                    client
                        .publish("soak-probe", rumqttc::QoS::AtLeastOnce, false, p)
                        .await
                        .unwrap();
                }
                probe_windows += 1;
                next_probe += PROBE_EVERY_S;
            }
            if el >= next_report {
                let total = sent + probe_windows * WINDOW as u64;
                println!("P {} {total} {}", unix_us(), acked.load(Ordering::Relaxed));
                next_report += 0.1;
            }
            if sent >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let total = sent + probe_windows * WINDOW as u64;
        let wait = Instant::now();
        while acked.load(Ordering::Relaxed) < total && wait.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a = acked.load(Ordering::Relaxed);
        // Whole windows per stream: stream k got sent / streams messages, plus one when k is
        // below the remainder.
        let s = streams as u64;
        let per_window = (WINDOW / SAMPLES) as u64;
        let expected: u64 = (0..s)
            .map(|k| (sent / s + u64::from(k < sent % s)) / per_window)
            .sum::<u64>()
            + probe_windows;
        println!("P {} {total} {a}", unix_us());
        println!("D {total} {a} {expected} {probe_windows} {secs:.3}");
        closing.store(true, Ordering::Relaxed);
        let _ = client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}

#[derive(Debug, Default, Clone, Copy)]
struct PubState {
    /// Latest report: time, sent, acked; and the one before it (for extrapolation).
    last: (u64, u64, u64),
    prev: (u64, u64, u64),
    /// Final: sent, acked, expected windows, probe windows, seconds.
    done: Option<(u64, u64, u64, u64, f64)>,
}

impl PubState {
    /// Messages acknowledged by the broker, extrapolated to `now_us`.
    fn acked_at(&self, now_us: u64) -> f64 {
        let (t1, _, a1) = self.last;
        let (t0, _, a0) = self.prev;
        if self.done.is_some() || t1 <= t0 {
            return a1 as f64;
        }
        let rate = (a1 - a0.min(a1)) as f64 / (t1 - t0) as f64;
        a1 as f64 + rate * now_us.saturating_sub(t1) as f64
    }
}

fn spawn_publisher(port: u16, a: &Args) -> (Child, Arc<Mutex<PubState>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--publish", &port.to_string(), &a.rate.to_string()])
        .args([a.streams.to_string(), a.minutes.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let state = Arc::new(Mutex::new(PubState::default()));
    let st = state.clone();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            let mut s = st.lock().unwrap();
            match f.first() {
                Some(&"P") => {
                    s.prev = s.last;
                    s.last = (n(1), n(2), n(3));
                }
                Some(&"D") => {
                    let secs = f.get(5).and_then(|x| x.parse().ok()).unwrap_or(0.0);
                    s.done = Some((n(1), n(2), n(3), n(4), secs));
                }
                _ => {}
            }
        }
    });
    (child, state)
}

// ---------------------------------------------------------------------------------------------
// Broker, daemon, probe listener
// ---------------------------------------------------------------------------------------------

fn daemon_config(dir: &Path, port: u16, http: u16, lib: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let d = dir.display();
    format!(
        r#"node = "soak"
[mqtt]
port = {port}
client_id = "ebgand-soak"
prefix = "{PREFIX}"
publish_energy = false
[runtime]
library = "{lib}"
[http]
listen = "127.0.0.1:{http}"
[log]
format = "json"
[registry]
dir = "{d}/registry"
[learning]
dir = "{d}/capture"
[journal]
dir = "{d}/journal"
[models.vibration]
path = "{root}/models/vibration/ebgan-1"
[[streams]]
name = "soak"
topic = "soak/+"
model = "vibration"
format = "array"
channels = 1
window = {WINDOW}
hop = {WINDOW}
[[streams]]
name = "probe"
topic = "soak-probe"
model = "vibration"
format = "object"
fields = ["x"]
timestamp_field = "t"
channels = 1
window = {WINDOW}
hop = {WINDOW}
raise_after = 1
clear_after = 1
# The probe measures delivery latency, not judgment: an absolute energy threshold (the served
# model's calibrated one), so it alerts from its first window instead of learning first.
threshold = 0.025075
"#
    )
}

/// GET `path` from the daemon's HTTP endpoint: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[derive(Debug, Default)]
struct Alerts {
    /// End-to-end latencies of probe alerts not yet taken by a sample, milliseconds.
    probe_ms: Vec<f64>,
    probe_alerts: u64,
    /// Alerts on the soak streams (false alarms on a healthy signal).
    soak_alerts: u64,
}

/// Subscribes to the daemon's alerts; a probe alert's window end is its last message's send
/// time.
fn listen_alerts(port: u16) -> Arc<Mutex<Alerts>> {
    let alerts = Arc::new(Mutex::new(Alerts::default()));
    let a = alerts.clone();
    let mut o = rumqttc::MqttOptions::new("soak-alerts", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = rumqttc::Client::new(o, 100);
    client
        .subscribe(format!("{PREFIX}/alerts/#"), rumqttc::QoS::AtLeastOnce)
        .unwrap();
    std::thread::spawn(move || {
        let _client = client;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p))) => {
                    let now = unix_us();
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    let mut a = a.lock().unwrap();
                    if p.topic.ends_with("/probe") {
                        a.probe_alerts += 1;
                        if let Some(t) = v["window"]["end"].as_u64() {
                            a.probe_ms.push(now.saturating_sub(t) as f64 / 1e3);
                        }
                    } else {
                        a.soak_alerts += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    alerts
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

/// CPU seconds (user + system) and RSS in MiB of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, f64) {
    (cpu_seconds(pid), rss_mib(pid))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Cumulative histogram buckets `(le, count)` of `name`.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Quantile `q` of the observations between two scrapes of the same histogram, interpolated
/// linearly inside the bucket (the upper finite bound for the +Inf bucket).
fn quantile(now: &[(f64, f64)], before: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| (le, c - before.get(i).map_or(0.0, |b| b.1)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, c) in &delta {
        if c >= target {
            if le.is_infinite() {
                return Some(lo);
            }
            let frac = if c > below {
                (target - below) / (c - below)
            } else {
                1.0
            };
            return Some(lo + frac * (le - lo));
        }
        (lo, below) = (le, c);
    }
    Some(lo)
}

fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[((s.len() - 1) as f64 * q).round() as usize])
}

/// One sample of everything, and the raw readings the next one needs for its deltas.
#[derive(Debug, Default, Clone)]
struct Sample {
    t: f64,
    pub_acked: f64,
    pub_us: u64,
    msgs: f64,
    scored: f64,
    cpu: f64,
    rss: f64,
    broker_cpu: f64,
    broker_rss: f64,
    pub_cpu: f64,
    score_hist: Vec<(f64, f64)>,
    // Derived over the interval:
    pub_rate: f64,
    msg_rate: f64,
    win_rate: f64,
    cpu_us_msg: f64,
    cpu_pct: f64,
    broker_pct: f64,
    pub_pct: f64,
    backlog: f64,
    q_windows: f64,
    q_scored: f64,
    score_p50_us: Option<f64>,
    score_p99_us: Option<f64>,
    e2e_p50_ms: Option<f64>,
    e2e_max_ms: Option<f64>,
    soak_alerts: u64,
    fds: usize,
    /// Taken during the run (not after it, while draining).
    publishing: bool,
}

struct Procs {
    daemon: u32,
    broker: u32,
    publisher: u32,
    http: u16,
}

fn take_sample(
    p: &Procs,
    t0: Instant,
    before: &Sample,
    pubs: &Mutex<PubState>,
    alerts: &Mutex<Alerts>,
) -> Sample {
    let text = http_get(p.http, "/metrics")
        .map(|x| x.1)
        .unwrap_or_default();
    let now_us = unix_us();
    let t = t0.elapsed().as_secs_f64();
    // A process that has exited reads as 0: keep its last reading.
    let (cpu, rss) = proc_usage(p.daemon);
    let cpu = cpu.max(before.cpu);
    let (broker_cpu, broker_rss) = proc_usage(p.broker);
    let broker_cpu = broker_cpu.max(before.broker_cpu);
    let pub_cpu = proc_usage(p.publisher).0.max(before.pub_cpu);
    let ps = *pubs.lock().unwrap();
    let (probe_ms, soak_alerts) = {
        let mut a = alerts.lock().unwrap();
        (std::mem::take(&mut a.probe_ms), a.soak_alerts)
    };
    let msgs = sum_metric_where(&text, "ebgand_messages_total", "");
    let scored = sum_metric_where(&text, "ebgand_windows_scored_total", "");
    let score_hist = buckets(&text, "ebgand_scoring_seconds");
    let dt = (t - before.t).max(1e-3);
    let pub_dt = (ps.last.0.saturating_sub(before.pub_us)) as f64 / 1e6;
    let pub_acked = ps.last.2 as f64;
    let d_msgs = msgs - before.msgs;
    Sample {
        t,
        pub_acked,
        pub_us: ps.last.0,
        msgs,
        scored,
        cpu,
        rss,
        broker_cpu,
        broker_rss,
        pub_cpu,
        pub_rate: if pub_dt > 0.0 {
            (pub_acked - before.pub_acked) / pub_dt
        } else {
            0.0
        },
        msg_rate: d_msgs / dt,
        win_rate: (scored - before.scored) / dt,
        cpu_us_msg: if d_msgs > 0.0 {
            (cpu - before.cpu) * 1e6 / d_msgs
        } else {
            0.0
        },
        cpu_pct: (cpu - before.cpu) * 100.0 / dt,
        broker_pct: (broker_cpu - before.broker_cpu) * 100.0 / dt,
        pub_pct: (pub_cpu - before.pub_cpu) * 100.0 / dt,
        backlog: (ps.acked_at(now_us) - msgs).max(0.0),
        q_windows: sum_metric_where(&text, "ebgand_queue_depth", "queue=\"windows:"),
        q_scored: sum_metric_where(&text, "ebgand_queue_depth", "queue=\"scored\""),
        score_p50_us: quantile(&score_hist, &before.score_hist, 0.5).map(|s| s * 1e6),
        score_p99_us: quantile(&score_hist, &before.score_hist, 0.99).map(|s| s * 1e6),
        score_hist,
        e2e_p50_ms: percentile(&probe_ms, 0.5),
        e2e_max_ms: percentile(&probe_ms, 1.0),
        soak_alerts,
        fds: open_fds(p.daemon),
        publishing: true,
    }
}

const HEADER: &str = "   t_s    pub/s ebgand/s  win/s RSS_MiB us/msg  cpu%  brk%  pub% backlog q_win q_scr score_p50/p99_us e2e_p50/max_ms brkRSS fds";
const CSV_HEADER: &str = "t_s,pub_msg_s,ebgand_msg_s,windows_s,rss_mib,cpu_us_per_msg,daemon_cpu_pct,broker_cpu_pct,publisher_cpu_pct,broker_backlog_msgs,queue_windows,queue_scored,score_p50_us,score_p99_us,e2e_p50_ms,e2e_max_ms,messages_total,windows_scored_total,soak_alerts,broker_rss_mib,daemon_fds,publishing";

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn line(s: &Sample) -> String {
    format!(
        "{:>6.0} {:>8.0} {:>8.0} {:>6.0} {:>7.1} {:>6.1} {:>5.0} {:>5.0} {:>5.0} {:>7.0} {:>5.0} {:>5.0} {:>8}/{:<8} {:>6}/{:<7} {:>6.1} {:>3}",
        s.t,
        s.pub_rate,
        s.msg_rate,
        s.win_rate,
        s.rss,
        s.cpu_us_msg,
        s.cpu_pct,
        s.broker_pct,
        s.pub_pct,
        s.backlog,
        s.q_windows,
        s.q_scored,
        opt(s.score_p50_us, 0),
        opt(s.score_p99_us, 0),
        opt(s.e2e_p50_ms, 1),
        opt(s.e2e_max_ms, 1),
        s.broker_rss,
        s.fds,
    )
}

fn csv_row(s: &Sample) -> String {
    format!(
        "{:.1},{:.0},{:.0},{:.0},{:.2},{:.2},{:.1},{:.1},{:.1},{:.0},{},{},{},{},{},{},{},{},{},{:.2},{},{}",
        s.t,
        s.pub_rate,
        s.msg_rate,
        s.win_rate,
        s.rss,
        s.cpu_us_msg,
        s.cpu_pct,
        s.broker_pct,
        s.pub_pct,
        s.backlog,
        s.q_windows,
        s.q_scored,
        opt(s.score_p50_us, 1).replace('-', ""),
        opt(s.score_p99_us, 1).replace('-', ""),
        opt(s.e2e_p50_ms, 2).replace('-', ""),
        opt(s.e2e_max_ms, 2).replace('-', ""),
        s.msgs,
        s.scored,
        s.soak_alerts,
        s.broker_rss,
        s.fds,
        s.publishing,
    )
}

fn median(v: impl Iterator<Item = f64>) -> Option<f64> {
    percentile(&v.collect::<Vec<_>>(), 0.5)
}

fn target_dir() -> PathBuf {
    // The bench runs from target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

fn stamp() -> String {
    Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| unix_us().to_string(), |s| s.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[allow(clippy::too_many_lines)]
fn soak(a: &Args) -> i32 {
    let lib = support::ort_library();
    let lib = std::fs::canonicalize(&lib).unwrap().display().to_string();
    let out_dir = target_dir().join("soak");
    std::fs::create_dir_all(&out_dir).unwrap();
    let ts = stamp();
    let csv_path = out_dir.join(format!("soak-{ts}.csv"));
    let log_path = out_dir.join(format!("daemon-{ts}.log"));
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let http = ebgand::demo::free_port().unwrap();
    let conf = dir.path().join("ebgand.toml");
    std::fs::write(&conf, daemon_config(dir.path(), broker.port, http, &lib)).unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = Instant::now();
    while http_get(http, "/readyz").map(|r| r.0) != Some(200) {
        if daemon.try_wait().unwrap().is_some() || ready.elapsed() > Duration::from_secs(60) {
            let _ = daemon.kill();
            println!("daemon did not become ready; log: {}", log_path.display());
            return 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let alerts = listen_alerts(broker.port);
    std::thread::sleep(Duration::from_millis(300));

    let total_s = a.minutes * 60.0;
    // Warm-up: the first 2 minutes, or 10 % of a shorter run; rounded up to a sample.
    let warmup = (total_s * 0.1).min(120.0);
    println!(
        "soak: {:.1} min at {:.0} msg/s (QoS 1, {SAMPLES}-float JSON arrays, window {WINDOW}) over {} streams, plus a probe stream (1 window / {PROBE_EVERY_S} s); sample every {} s; warm-up {warmup:.0} s",
        a.minutes, a.rate, a.streams, a.interval
    );
    println!(
        "broker: mosquitto :{} (max_inflight_messages 100, max_queued_messages 0); daemon: {} run (pid {}), /metrics on :{http}",
        broker.port,
        env!("CARGO_BIN_EXE_ebgand"),
        daemon.id()
    );
    println!(
        "ready after {:.1} s; CSV {}; daemon log {}",
        ready.elapsed().as_secs_f64(),
        csv_path.display(),
        log_path.display()
    );
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(csv, "{CSV_HEADER}").unwrap();

    let t0 = Instant::now();
    let (mut publisher, pubs) = spawn_publisher(broker.port, a);
    let procs = Procs {
        daemon: daemon.id(),
        broker: broker.pid(),
        publisher: publisher.id(),
        http,
    };
    let start = Sample {
        pub_us: unix_us(),
        ..Sample::default()
    };
    let mut before = take_sample(&procs, t0, &start, &pubs, &alerts);
    before.t = 0.0;
    before.pub_us = start.pub_us;
    let mut samples: Vec<Sample> = Vec::new();
    println!("{HEADER}");
    let mut record = |s: Sample, samples: &mut Vec<Sample>| {
        println!("{}", line(&s));
        writeln!(csv, "{}", csv_row(&s)).unwrap();
        samples.push(s);
    };
    // A sample every interval; the one at or after the end of the run waits for the
    // publisher's final report (every message acknowledged by the broker).
    let interval = Duration::from_secs(a.interval);
    let end = t0 + Duration::from_secs_f64(total_s);
    let mut next = t0 + interval;
    let mut failed = None;
    loop {
        while Instant::now() < next && failed.is_none() {
            std::thread::sleep(Duration::from_millis(50));
            if daemon.try_wait().unwrap().is_some() {
                failed = Some("the daemon exited during the run");
            } else if publisher.try_wait().unwrap().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                if pubs.lock().unwrap().done.is_none() {
                    failed = Some("the publisher exited without its final report");
                }
            }
        }
        if failed.is_some() {
            break;
        }
        let last = next >= end;
        while last && pubs.lock().unwrap().done.is_none() && publisher.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = take_sample(&procs, t0, &before, &pubs, &alerts);
        before = s.clone();
        record(s, &mut samples);
        if last {
            break;
        }
        next += interval;
    }
    if failed.is_some() {
        let _ = publisher.kill();
    }
    let _ = publisher.wait();
    // Drain: until every expected window is scored, or 30 s without progress.
    let fin = pubs.lock().unwrap().done;
    let expected = fin.map_or(0.0, |d| d.2 as f64);
    let drain = Instant::now();
    let (mut last, mut progress) = (before.scored, Instant::now());
    while failed.is_none() {
        let text = http_get(http, "/metrics").map(|x| x.1).unwrap_or_default();
        let scored = sum_metric_where(&text, "ebgand_windows_scored_total", "");
        if scored >= expected || progress.elapsed() > Duration::from_secs(30) {
            break;
        }
        if scored > last {
            (last, progress) = (scored, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain_s = drain.elapsed().as_secs_f64();
    // After a drain that took a while, one more row; else the last row already has the totals.
    let final_sample = if drain_s > 1.0 {
        let mut s = take_sample(&procs, t0, &before, &pubs, &alerts);
        s.publishing = false;
        record(s.clone(), &mut samples);
        s
    } else {
        let text = http_get(http, "/metrics").map(|x| x.1).unwrap_or_default();
        Sample {
            msgs: sum_metric_where(&text, "ebgand_messages_total", ""),
            scored: sum_metric_where(&text, "ebgand_windows_scored_total", ""),
            ..before.clone()
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stop = Instant::now();
    while daemon.try_wait().unwrap().is_none() && stop.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = daemon.try_wait().unwrap();
    if exit.is_none() {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    drop(broker);

    // Summary.
    println!("\nsummary (samples: {}):", samples.len());
    let Some((sent, acked, expected_w, probe_windows, pub_secs)) = fin else {
        println!(
            "  FAILED: {}",
            failed.unwrap_or("no final report from the publisher")
        );
        return 1;
    };
    let achieved = acked as f64 / pub_secs;
    println!(
        "  rate: target {:.0} msg/s (+ probe {:.0}), achieved {achieved:.0} msg/s over {pub_secs:.0} s ({:.0} % of target); {sent} sent, {acked} acknowledged by the broker",
        a.rate,
        WINDOW as f64 / PROBE_EVERY_S,
        100.0 * achieved / (a.rate + WINDOW as f64 / PROBE_EVERY_S)
    );
    let received = final_sample.msgs as u64;
    let scored = final_sample.scored as u64;
    let lost = expected_w.saturating_sub(scored);
    println!(
        "  daemon: {received} messages received, {scored} windows scored of {expected_w} expected (lost {lost}; drain {drain_s:.1} s after the last publish)",
    );
    let warm_i = samples
        .iter()
        .position(|s| s.t >= warmup)
        .unwrap_or(samples.len().saturating_sub(1));
    let after: Vec<&Sample> = samples[warm_i..].iter().collect();
    let rss_warm = samples.get(warm_i).map_or(0.0, |s| s.rss);
    let rss_max = after.iter().map(|s| s.rss).fold(0.0, f64::max);
    let rss_min = after.iter().map(|s| s.rss).fold(f64::INFINITY, f64::min);
    let rss_last = final_sample.rss;
    let dev = ((rss_max - rss_warm).max(rss_warm - rss_min)) / rss_warm.max(1e-9);
    let rss_flat = dev <= 0.10;
    println!(
        "  RSS: {rss_warm:.1} MiB at warm-up end (t={:.0} s), min {rss_min:.1}, max {rss_max:.1}, last {rss_last:.1} MiB: largest deviation {:.1} %, {} (band +-10 %)",
        samples.get(warm_i).map_or(0.0, |s| s.t),
        dev * 100.0,
        if rss_flat { "flat" } else { "NOT FLAT" }
    );
    let busy: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.publishing && s.msg_rate > 0.0)
        .collect();
    println!(
        "  CPU per message (daemon, median of publishing intervals): {} us; daemon CPU median {} %",
        opt(median(busy.iter().map(|s| s.cpu_us_msg)), 1),
        opt(median(busy.iter().map(|s| s.cpu_pct)), 0)
    );
    println!(
        "  inference call latency (median over intervals): p50 {} us, p99 {} us",
        opt(median(busy.iter().filter_map(|s| s.score_p50_us)), 0),
        opt(median(busy.iter().filter_map(|s| s.score_p99_us)), 0)
    );
    let (probe_alerts, soak_alerts) = {
        let al = alerts.lock().unwrap();
        (al.probe_alerts, al.soak_alerts)
    };
    println!(
        "  end-to-end (probe publish -> alert received), median over intervals: p50 {} ms; worst interval max {} ms; {probe_alerts} probe alerts of {probe_windows} probe windows",
        opt(median(busy.iter().filter_map(|s| s.e2e_p50_ms)), 1),
        opt(busy.iter().filter_map(|s| s.e2e_max_ms).reduce(f64::max), 1),
    );
    let maxf = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    println!(
        "  queues, max sampled: windows {:.0}, scored {:.0}; broker backlog (est.) max {:.0} messages",
        maxf(|s| s.q_windows),
        maxf(|s| s.q_scored),
        maxf(|s| s.backlog)
    );
    println!(
        "  alerts on the healthy soak streams: {soak_alerts}; daemon exit after SIGTERM: {}",
        exit.map_or_else(|| "killed (no exit in 30 s)".into(), |e| e.to_string())
    );
    println!("  CSV: {}", csv_path.display());
    let mut bad = Vec::new();
    if let Some(f) = failed {
        bad.push(f.to_string());
    }
    if acked < sent {
        bad.push(format!(
            "{} messages not acknowledged by the broker",
            sent - acked
        ));
    }
    if received < acked {
        bad.push(format!(
            "{} acknowledged messages never reached the daemon",
            acked - received
        ));
    }
    if lost > 0 {
        bad.push(format!("{lost} windows lost"));
    }
    if !rss_flat {
        bad.push("RSS outside the +-10 % band after warm-up".into());
    }
    if bad.is_empty() {
        println!("  RESULT: pass (nothing lost, RSS flat)");
        0
    } else {
        println!("  RESULT: FAIL: {}", bad.join("; "));
        1
    }
}
