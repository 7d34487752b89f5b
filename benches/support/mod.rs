//! What the process-level benchmarks share: the broker they run against and /proc readings.
// Each bench is its own crate and uses part of this module.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A number from the environment variable `name`, else `default` (the benches' knobs).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The runtime a bench runs the daemon on: two workers, as many as this machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// mosquitto on a free port with the README's high-rate settings; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = ebgand::demo::free_port().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\nmax_queued_messages 0\n"),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto missing: run `make setup`");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A publisher's work, in its own process: `count` QoS 1 messages on `topic`, as fast as the
/// broker takes them (100 in flight), cycling through `payloads`; returns once every one is
/// acknowledged.
pub fn publish(port: u16, topic: &str, count: u64, payloads: &[Vec<u8>]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = rumqttc::MqttOptions::new(
            format!("bench-pub-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_inflight(100).set_keep_alive(Duration::from_secs(30));
        let (client, mut ev) = rumqttc::AsyncClient::new(o, 1000);
        let acked = tokio::spawn(async move {
            let mut n = 0;
            while n < count {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_))) = ev.poll().await
                {
                    n += 1;
                }
            }
        });
        for i in 0..count as usize {
            client
                .publish(
                    topic,
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payloads[i % payloads.len()].clone(),
                )
                .await
                .unwrap();
        }
        acked.await.unwrap();
    });
}

/// This bench binary again, as a publisher process (`--publish PORT TOPIC`).
pub fn spawn_publisher(port: u16, topic: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--publish", &port.to_string(), topic])
        .spawn()
        .unwrap()
}

/// The documented config for a bench daemon: ONNX Runtime from `lib`, its state under `state`,
/// the vibration fixture, no HTTP; client id, prefix (and so the stream topic, see
/// [`scored_run`]) named by `tag`. A broker keeps each run's persistent session, which must
/// not queue the next run's messages: give every run its own tag.
pub fn daemon_config(lib: &str, state: &std::path::Path, tag: &str) -> ebgand::config::RawConfig {
    let mut raw = ebgand::config::RawConfig::from_toml(ebgand::config::DOCUMENTED_CONFIG).unwrap();
    raw.mqtt.client_id = format!("bench-{tag}-{}", fastrand::u32(..));
    raw.mqtt.prefix = format!("bench{tag}");
    raw.http.listen = String::new();
    raw.runtime.library = lib.to_string();
    raw.journal.dir = state.join("journal").display().to_string();
    raw.mqtt.outbox_dir = state.join("outbox").display().to_string();
    raw.registry.dir = state.join("registry").display().to_string();
    raw.learning.dir = state.join("capture").display().to_string();
    raw.models.get_mut("vibration").unwrap().path =
        format!("{}/models/vibration/fixture-1", env!("CARGO_MANIFEST_DIR"));
    raw
}

/// Runs the daemon in this process with `raw` (from [`daemon_config`] with `tag`), has a
/// publisher process send `count` messages to the broker on `publish_to`, and waits for the
/// `count`-th window scored. Returns the seconds from the first publish, and the CPU seconds
/// this process and the processes `others` spent meanwhile.
pub async fn scored_run(
    raw: ebgand::config::RawConfig,
    tag: &str,
    publish_to: u16,
    count: u64,
    others: &[u32],
) -> (f64, f64, f64) {
    let metrics = std::sync::Arc::new(ebgand::telemetry::Metrics::new());
    // The scored count is polled from the counters themselves, every 5 ms or
    // `EBGAND_BENCH_POLL_MS`: encoding the whole registry (`Metrics::windows_scored_total`)
    // would cost in proportion to wall time and to the registry's size, not to the messages,
    // and bias CPU per message against a build with more metrics. Under callgrind, where a
    // message takes fifty times as long, a long poll keeps the count to the messages' own.
    let poll = Duration::from_millis(env_or("EBGAND_BENCH_POLL_MS", 5));
    let counters: Vec<_> = raw
        .models
        .keys()
        .map(|name| {
            let label = ebgand::telemetry::metrics::ModelLabel {
                model: name.clone(),
            };
            metrics.windows_scored.get_or_create(&label).clone()
        })
        .collect();
    let scored = || counters.iter().map(|c| c.get()).sum::<u64>();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let daemon = tokio::spawn(ebgand::run(raw.validate().unwrap(), rx, metrics.clone()));
    while !metrics.ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let topic = format!("sensors/bench{tag}/vibration");
    let others_cpu = || others.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (cpu0, others0) = (cpu_seconds(std::process::id()), others_cpu());
    let start = std::time::Instant::now();
    let mut publisher = spawn_publisher(publish_to, &topic);
    while scored() < count {
        tokio::time::sleep(poll).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    let others = others_cpu() - others0;
    publisher.wait().unwrap();
    tx.send(ebgand::signal::Signal::Shutdown).await.unwrap();
    daemon.await.unwrap().unwrap();
    (secs, cpu, others)
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH`, else what `make setup` installs.
pub fn ort_library() -> String {
    let lib = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
        format!(
            "{}/.cache/onnxruntime/libonnxruntime.so",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    assert!(
        std::path::Path::new(&lib).exists(),
        "ONNX Runtime library missing: run `make setup`"
    );
    lib
}

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident memory of a process in MiB (`VmRSS`), from /proc.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    rss_kb / 1024.0
}
