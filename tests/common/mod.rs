//! Test harness: a real `mosquitto` on a free port in a temp dir, the daemon run in-process
//! through `ebgand::run`, and MQTT helpers that publish and observe over real connections.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebgand::config::{RawConfig, Settings};
use ebgand::signal::Signal;
use ebgand::telemetry::Metrics;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::mpsc;

pub mod nats;

pub mod schema;

/// xorshift noise, uniform in +-0.1.
pub fn noise(s: &mut u64) -> f32 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s % 2_001) as f32 / 10_000.0 - 0.1
}

/// `windows` windows of 64 samples of a vibration sensor as the vibration fixture learnt it (a
/// sine of period 16 around 1.0, with [`noise`] from `seed`), plus `offset(window)`.
pub fn vibration_signal(seed: u64, windows: usize, offset: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut s = seed;
    (0..windows * 64)
        .map(|t| {
            let phase = 2.0 * std::f32::consts::PI * (t % 16) as f32 / 16.0;
            1.0 + 0.5 * phase.sin() + noise(&mut s) + offset(t / 64)
        })
        .collect()
}

/// Columns of the SKAB pump recordings, in the files' order.
pub const SKAB_FIELDS: [&str; 8] = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
];

/// `ebgand score`'s output, one JSON value per line (the verdicts, then the summary).
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `ebgand score`'s window lines (those with a `seq`; not the summary).
pub fn window_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    let mut lines = json_lines(&o.stdout);
    lines.retain(|l| l.get("seq").is_some());
    lines
}

/// `ebgand score --config CONFIG --model (the vibration fixture) --json ARGS FILE`.
pub fn score_fixture(config: &Path, args: &[&str], file: &Path) -> std::process::Output {
    let mut all = vec![
        "score",
        "--config",
        config.to_str().unwrap(),
        "--model",
        "models/vibration/fixture-1",
        "--json",
    ];
    all.extend_from_slice(args);
    all.push(file.to_str().unwrap());
    ebgand(&all, &[])
}

/// Runs the `ebgand` binary from the repository root, with the ONNX Runtime library and `env`.
pub fn ebgand(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args(args)
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ONNX Runtime library; fails with the command that installs it.
pub fn ort_library() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/onnxruntime/libonnxruntime.so"));
    assert!(
        path.exists(),
        "ONNX Runtime library not found at {}: run `make setup` (installs it from the \
         onnxruntime==1.31.1 wheel) or set ORT_DYLIB_PATH",
        path.display()
    );
    path
}

/// `GET path` on the daemon's HTTP listener at `port`: the whole response, status line first.
pub fn http_get(port: u16, path: &str) -> String {
    try_http_get(port, path).unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// [`http_get`], or `None` while nothing answers (a daemon starting or down).
pub fn try_http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Trains `pump` version `v1` with the real trainer (`ebgand train`: window 16, 300 steps) on
/// `rows` (e.g. `:400`) of a SKAB recording's eight sensor columns, into `dir/pump`, with
/// `extra` flags; returns the folder.
pub fn train_skab(dir: &Path, csv: &Path, rows: &str, extra: &[&str]) -> PathBuf {
    let model = dir.join("pump");
    let columns = SKAB_FIELDS.join(",");
    let mut args = vec![
        "train",
        csv.to_str().unwrap(),
        "--delimiter",
        ";",
        "--timestamp-column",
        "datetime",
        "--columns",
        &columns,
        "--rows",
        rows,
        "--window",
        "16",
        "--steps",
        "300",
        "--name",
        "pump",
        "--version",
        "v1",
        "--out",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = ebgand(&args, &[]);
    assert!(
        o.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    model
}

/// `../shared/data`; fails with a clear message when missing.
pub fn shared_data() -> PathBuf {
    let p = root().join("../shared/data");
    assert!(
        p.is_dir(),
        "test data not found at {}: the shared data folder must sit beside the repository",
        p.display()
    );
    p
}

fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "mosquitto not found: install it with `sudo apt-get install mosquitto mosquitto-clients` (or `make setup`)"
    );
}

/// A mosquitto broker owned by a test; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Lines after the plain listener: authentication, more listeners.
    extra: String,
}

impl Mosquitto {
    /// Starts a broker with persistence, no per-client queue limit, anonymous clients allowed.
    pub async fn start() -> Self {
        Self::start_with(|_| "allow_anonymous true\n".into()).await
    }

    /// Starts a broker whose configuration ends with what `extra` returns for its folder
    /// (where it may also write certificates, a password file, an ACL).
    pub async fn start_with(extra: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // mosquitto started as root drops to the `mosquitto` user: let it write its
        // persistence file and log here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = ebgand::demo::free_port().unwrap();
        let extra = extra(dir.path());
        let mut m = Self {
            port,
            dir,
            child: None,
            extra,
        };
        // The port was free when asked for, but another test's broker may take it first: this
        // one then exits (address in use), and it tries another.
        for _ in 0..5 {
            if m.spawn().await {
                return m;
            }
            m.port = ebgand::demo::free_port().unwrap();
        }
        panic!(
            "mosquitto did not start on five free ports: see its log in {:?}",
            m.dir
        );
    }

    /// Starts mosquitto on `self.port` and waits until its log says it runs; `false` when it
    /// exited first (the port taken).
    async fn spawn(&mut self) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence true\n\
                 persistence_location {dir}/\nautosave_interval 1\nmax_inflight_messages 100\n\
                 max_queued_messages 0\nlog_dest file {dir}/mosquitto.log\n{extra}",
                port = self.port,
                dir = self.dir.path().display(),
                extra = self.extra
            ),
        )
        .unwrap();
        // Its log: "mosquitto version ... running" once its listener is bound, one per start.
        let log = self.dir.path().join("mosquitto.log");
        let runs = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(" running")
                .count()
        };
        let before = runs();
        let mut child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let since = std::time::Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if runs() > before {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "mosquitto did not start in 10 s: see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "mosquitto accepts connections",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )
        .await;
        true
    }

    /// Stops the broker gracefully (SIGTERM: it saves its persistence file).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..100 {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's folder (configuration, persistence, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts it again on the same port with the same persistence.
    pub async fn restart(&mut self) {
        assert!(
            self.spawn().await,
            "mosquitto did not start again on its port"
        );
    }

    /// SIGKILLs it and starts it again on the same port with nothing of what it had: no
    /// sessions, no queued or retained messages (a broker run without persistence, or one
    /// whose disk was lost).
    pub async fn restart_forgetting(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("mosquitto.db"));
        assert!(
            self.spawn().await,
            "mosquitto did not start again on its port"
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The users of the tests' password-protected brokers: the tests' own clients, and the daemon.
pub const ADMIN: (&str, &str) = ("admin", "admin-pw");
pub const DAEMON: (&str, &str) = ("ebgand", "daemon-pw");

/// Writes a mosquitto password file for `users` (world-readable: the broker drops to its own
/// user, and the folder is a throwaway one).
pub fn mosquitto_passwd(path: &Path, users: &[(&str, &str)]) {
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(path)
            .args([user, pass])
            .status()
            .expect("mosquitto_passwd not found: install it with `sudo apt-get install mosquitto`")
            .success();
        assert!(ok, "mosquitto_passwd failed");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settings for a test: the given TOML (models and streams) plus a broker port, a unique
/// prefix and client id, energy telemetry at QoS 1, no HTTP listener, the test library.
pub fn settings(port: u16, prefix: &str, toml: &str) -> Settings {
    let mut raw = RawConfig::from_toml(toml).unwrap();
    if !toml.contains("stale_after") {
        // A pause in a test that is not about stale streams must not raise a stale alert.
        raw.detect.stale_after = 0.0;
    }
    raw.node = "test-node".into();
    raw.mqtt.port = port;
    raw.mqtt.prefix = prefix.into();
    raw.mqtt.client_id = format!("ebgand-{prefix}");
    raw.mqtt.publish_energy = true;
    raw.mqtt.energy_qos = 1;
    raw.mqtt.reconnect_min_ms = 50;
    raw.mqtt.reconnect_max_ms = 1000;
    raw.http.listen = String::new();
    raw.runtime.library = ort_library().display().to_string();
    // Each daemon gets its own registry, kept until the test process ends.
    let state = tempfile::tempdir().unwrap().keep();
    raw.registry.dir = state.join("models").display().to_string();
    raw.learning.dir = state.join("capture").display().to_string();
    raw.mqtt.outbox_dir = state.join("outbox").display().to_string();
    raw.journal.dir = state.join("journal").display().to_string();
    raw.registry.watch_ms = 100;
    for m in raw.models.values_mut() {
        if !m.path.is_empty() && Path::new(&m.path).is_relative() {
            m.path = root().join(&m.path).display().to_string();
        }
    }
    raw.validate().unwrap()
}

/// The daemon running in-process.
pub struct TestDaemon {
    pub metrics: Arc<Metrics>,
    signals: mpsc::Sender<Signal>,
    handle: tokio::task::JoinHandle<Result<(), ebgand::app::AppError>>,
}

impl TestDaemon {
    /// Starts `ebgand::run` and waits until both connections are up.
    pub async fn start(settings: Settings) -> Self {
        let daemon = Self::spawn(settings);
        let (m, handle) = (daemon.metrics.clone(), &daemon.handle);
        eventually(Duration::from_secs(20), "daemon ready", || {
            m.ready() || handle.is_finished()
        })
        .await;
        assert!(
            !daemon.handle.is_finished(),
            "daemon stopped during start-up"
        );
        daemon
    }

    /// Starts `ebgand::run` without waiting for anything.
    pub fn spawn(settings: Settings) -> Self {
        // Logs go through the test harness's capture: shown when a test fails. TEST_LOG takes
        // an EnvFilter ("info,ebgand::mqtt=debug") to see more of a flaky run.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
            )
            .try_init();
        let metrics = Arc::new(Metrics::new());
        let (signals, rx) = mpsc::channel(4);
        let handle = tokio::spawn(ebgand::run(settings, rx, metrics.clone()));
        Self {
            metrics,
            signals,
            handle,
        }
    }

    /// Sends a signal.
    pub async fn signal(&self, s: Signal) {
        self.signals.send(s).await.unwrap();
    }

    /// SIGTERM-equivalent; waits for the drain and returns the outcome.
    pub async fn shutdown(self) -> Result<(), ebgand::app::AppError> {
        let _ = self.signals.send(Signal::Shutdown).await;
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("drain in time")
            .unwrap()
    }

    /// SIGTERM-equivalent; the daemon must stop within `limit` (a bound far above the drain
    /// deadline it was given, and far below what an uninterruptible wait would take).
    pub async fn shutdown_within(self, limit: Duration) -> Result<(), ebgand::app::AppError> {
        let _ = self.signals.send(Signal::Shutdown).await;
        tokio::time::timeout(limit, self.handle)
            .await
            .unwrap_or_else(|_| panic!("the daemon did not stop within {limit:?} of SIGTERM"))
            .unwrap()
    }

    /// Waits (at most `limit`) for `ebgand::run` to end by itself; returns its outcome.
    pub async fn exited(self, limit: Duration) -> Result<(), ebgand::app::AppError> {
        tokio::time::timeout(limit, self.handle)
            .await
            .expect("the daemon stopped by itself")
            .unwrap()
    }

    /// Whether `ebgand::run` is still running.
    pub fn running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Sum of a metric in the Prometheus exposition.
    pub fn metric(&self, name: &str) -> u64 {
        ebgand::telemetry::metrics::sum_metric(&self.metrics.encode(), name)
    }

    /// Sum of a metric's samples whose labels contain `label`, e.g. `reason="tls"`.
    pub fn metric_where(&self, name: &str, label: &str) -> u64 {
        ebgand::telemetry::metrics::sum_metric_where(&self.metrics.encode(), name, label) as u64
    }
}

/// A message observed by [`Observer`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub retain: bool,
    pub json: serde_json::Value,
}

/// Subscribes to a filter (QoS 1, persistent session, reconnecting) and records what arrives.
pub struct Observer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    client: AsyncClient,
    filter: String,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    pub async fn start(port: u16, filter: &str) -> Self {
        Self::start_with(port, filter, |_| {}).await
    }

    /// [`Observer::start`] with client options adjusted by `configure` (e.g. credentials).
    pub async fn start_with(
        port: u16,
        filter: &str,
        configure: impl FnOnce(&mut MqttOptions),
    ) -> Self {
        let mut opts =
            MqttOptions::new(format!("observer-{}", fastrand::u64(..)), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_inflight(1000);
        configure(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut subscribed) = mpsc::channel(1);
        let store = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = tx.try_send(());
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let json =
                            serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                        store.lock().unwrap().push(Seen {
                            topic: p.topic.clone(),
                            retain: p.retain,
                            json,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.recv())
            .await
            .expect("observer subscribed");
        Self {
            seen,
            client,
            filter: filter.to_owned(),
            task,
        }
    }

    /// Waits until everything the broker had accepted for this observer before the call has
    /// arrived, so that a test can assert what did *not* come without sleeping on the clock:
    /// publishes a marker on `{filter's base}/_barrier` and waits for it. Mosquitto routes
    /// messages in the order it accepts them and a session delivers its queue in order, so
    /// whatever a daemon published (and had acknowledged) before, e.g. everything an
    /// [`TestDaemon::shutdown`] drained, is in [`Observer::seen`] when this returns. The
    /// marker is left out of `seen`. Needs a filter ending in `#`.
    pub async fn settled(&self) {
        let base = self
            .filter
            .strip_suffix('#')
            .expect("settled() needs an observer whose filter ends in '#'");
        let topic = format!("{base}_barrier");
        let marker = fastrand::u64(..);
        self.client
            .publish(&topic, QoS::AtLeastOnce, false, marker.to_string())
            .await
            .unwrap();
        let seen = self.seen.clone();
        eventually(Duration::from_secs(20), "the observer's barrier", || {
            let mut seen = seen.lock().unwrap();
            let at = seen
                .iter()
                .position(|s| s.topic == topic && s.json.as_u64() == Some(marker));
            at.map(|i| seen.remove(i)).is_some()
        })
        .await;
    }

    /// Messages whose topic starts with `prefix`.
    pub fn on(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The events (`{prefix}/events`) named `event`, oldest first.
    pub fn events(&self, prefix: &str, event: &str) -> Vec<serde_json::Value> {
        self.on(&format!("{prefix}/events"))
            .into_iter()
            .map(|e| e.json)
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Count of messages whose topic starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic.starts_with(prefix))
            .count()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A QoS 1 publisher that can wait until the broker has acknowledged everything it sent.
pub struct Sender {
    client: AsyncClient,
    acked: Arc<Mutex<u64>>,
    sent: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    pub async fn start(port: u16) -> Self {
        Self::start_with(port, |_| {}).await
    }

    /// [`Sender::start`] with client options adjusted by `configure` (e.g. credentials).
    pub async fn start_with(port: u16, configure: impl FnOnce(&mut MqttOptions)) -> Self {
        let mut opts = MqttOptions::new(format!("sender-{}", fastrand::u64(..)), "127.0.0.1", port);
        // Packet ids never wrap within a test: rumqttc 0.25 reuses the next id even when it is
        // still unacknowledged (a NATS cluster acknowledges out of order while it elects new
        // leaders), holds that publish aside, and after a reconnect drops the one held aside
        // (rumqtt issues 1014 and 1056); ebgand's own publisher takes such publishes back
        // (`mqtt::sink`), a test's sensors need not.
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(u16::MAX)
            .set_clean_session(false);
        configure(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let acked = Arc::new(Mutex::new(0u64));
        let count = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => *count.lock().unwrap() += 1,
                    Ok(Event::Outgoing(Outgoing::Publish(0))) => *count.lock().unwrap() += 1,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            client,
            acked,
            sent: 0,
            task,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, false, payload.into()).await;
    }

    /// A retained QoS 1 publish.
    pub async fn publish_retained(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, true, payload.into()).await;
    }

    async fn send(&mut self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Waits until the broker has acknowledged every publish.
    pub async fn flushed(&self) {
        let (acked, sent) = (self.acked.clone(), self.sent);
        eventually(
            Duration::from_secs(60),
            "broker acked every publish",
            || *acked.lock().unwrap() >= sent,
        )
        .await;
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Energy messages per stream: seq -> how many times seen.
pub fn seqs_by_stream(energy: &[Seen]) -> HashMap<String, HashMap<u64, usize>> {
    let mut out: HashMap<String, HashMap<u64, usize>> = HashMap::new();
    for s in energy {
        let stream = s.json["stream"].as_str().unwrap().to_owned();
        *out.entry(stream)
            .or_default()
            .entry(s.json["seq"].as_u64().unwrap())
            .or_default() += 1;
    }
    out
}

/// Asserts each stream saw seq 0..n exactly once.
pub fn assert_exactly_once(energy: &[Seen], expected: &HashMap<String, u64>) {
    let got = seqs_by_stream(energy);
    for (stream, &n) in expected {
        let seqs = got
            .get(stream)
            .unwrap_or_else(|| panic!("no windows for {stream}"));
        let dup: Vec<_> = seqs
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(s, _)| *s)
            .collect();
        assert!(dup.is_empty(), "{stream}: windows scored twice: {dup:?}");
        let missing: Vec<u64> = (0..n).filter(|s| !seqs.contains_key(s)).collect();
        assert!(
            missing.is_empty(),
            "{stream}: windows never scored: {missing:?}"
        );
        assert_eq!(seqs.len() as u64, n, "{stream}: unexpected extra windows");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected streams: {:?}",
        got.keys().collect::<Vec<_>>()
    );
}

/// One healthy window of the simulated machine (64 samples) as the vibration stream's payload,
/// a JSON array.
pub fn healthy_window(m: &mut ebgand::sim::Machine) -> Vec<u8> {
    serde_json::to_vec(&m.samples(64, false)).unwrap()
}

/// The committed vibration fixture config (W=64, C=1, JSON arrays on sensors/+/vibration).
/// Judged by the model's energy threshold: the tests that use it are about delivery (every
/// window once, alerts once), which must not depend on a stream's learning phase. Judgment by
/// calibrated probability has its own tests (`tests/judgment.rs`).
pub const VIBRATION: &str = r#"
[detect]
judge = "threshold"
[models.vibration]
path = "models/vibration/fixture-1"
[[streams]]
name = "vibration"
topic = "sensors/+/vibration"
model = "vibration"
format = "array"
window = 64
raise_after = 3
clear_after = 3
"#;

/// A copy of the vibration fixture (`models/vibration/fixture-1`) as version `version` in
/// `dir/<version>`, with `edit` applied to its manifest; returns the folder.
pub fn fixture_version(dir: &Path, version: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let src = root().join("models/vibration/fixture-1");
    let out = dir.join(version);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(src.join("model.onnx"), out.join("model.onnx")).unwrap();
    let m = std::fs::read_to_string(src.join("manifest.toml")).unwrap();
    let m = m.replace(
        "version = \"fixture-1\"",
        &format!("version = \"{version}\""),
    );
    std::fs::write(out.join("manifest.toml"), edit(m)).unwrap();
    out
}

/// A manifest with its calibrated threshold replaced.
pub fn with_threshold(manifest: String, value: &str) -> String {
    let line = manifest
        .lines()
        .find(|l| l.starts_with("value = "))
        .unwrap()
        .to_owned();
    manifest.replace(&line, &format!("value = {value}"))
}

/// The real binary, `ebgand run`, with its registry, captures and outbox under `dir`, the
/// vibration fixture, and `mqtt_extra` added to its `[mqtt]` table.
pub fn spawn_daemon(port: u16, prefix: &str, dir: &Path, mqtt_extra: &str) -> DaemonProcess {
    spawn_daemon_with(port, prefix, dir, mqtt_extra, &[])
}

/// [`spawn_daemon`] with settings overridden by `EBGAND__SECTION__KEY` environment variables.
pub fn spawn_daemon_with(
    port: u16,
    prefix: &str,
    dir: &Path,
    mqtt_extra: &str,
    env: &[(&str, &str)],
) -> DaemonProcess {
    let config = dir.join("ebgand.toml");
    std::fs::write(
        &config,
        format!(
            r#"node = "proc-test"
[mqtt]
port = {port}
prefix = "{prefix}"
client_id = "ebgand-{prefix}"
keep_alive_s = 5
outbox_dir = "{outbox}"
{mqtt_extra}
[http]
listen = ""
{state}"#,
            outbox = dir.join("outbox").display(),
            state = state_toml(dir),
        ),
    )
    .unwrap();
    // A pause in a test that is not about stale streams must not raise a stale alert.
    let mut env = env.to_vec();
    env.insert(0, ("EBGAND__DETECT__STALE_AFTER", "0"));
    run_binary(&config, &env, Stdio::piped())
}

/// The real binary, `ebgand run --config CONFIG`, on the test library with `env` set; its log
/// goes to `stderr` (EBGAND_TEST_LOGS=1 shows it instead, with `--nocapture`).
pub fn run_binary(config: &Path, env: &[(&str, &str)], stderr: Stdio) -> DaemonProcess {
    Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("ORT_DYLIB_PATH", ort_library())
        .env("EBGAND_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("EBGAND_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            stderr
        })
        .spawn()
        .map(DaemonProcess)
        .unwrap()
}

/// The end of a spawned daemon's config: its registry, captures and journal under `dir`, the
/// vibration fixture, and the vibration stream (JSON arrays on `sensors/+/vibration`, windows of
/// 64), to which keys may be appended.
pub fn state_toml(dir: &Path) -> String {
    format!(
        r#"[registry]
dir = "{registry}"
[learning]
dir = "{capture}"
[journal]
dir = "{journal}"
[models.vibration]
path = "{model}"
[[streams]]
name = "vibration"
topic = "sensors/+/vibration"
model = "vibration"
format = "array"
window = 64
"#,
        model = root().join("models/vibration/fixture-1").display(),
        registry = dir.join("registry").display(),
        capture = dir.join("capture").display(),
        journal = dir.join("journal").display(),
    )
}

/// A daemon process, killed (SIGKILL) when dropped: a failing test leaves none behind.
pub struct DaemonProcess(pub Child);

impl std::ops::Deref for DaemonProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for DaemonProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends `signal` (`-KILL`, `-TERM` ...) to the process.
pub fn kill(child: &Child, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits (at most 15 s) for the process to exit.
pub async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon did not exit");
}

/// A TCP proxy in front of a broker that can hold what the broker sends (as a network that
/// delays it) and cut every connection through it, dropping what it holds (as a pulled cable):
/// the broker then counts the messages it sent as in flight and sends them again, flagged DUP,
/// when the client reconnects. It can also hold what one client sends (picked by a piece of its
/// CONNECT packet, e.g. its client id), and refuse new connections.
pub struct Proxy {
    pub port: u16,
    switches: Arc<Switches>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// What the proxy is told to do, read by every connection's pump.
#[derive(Default)]
struct Switches {
    /// Keep bytes from the broker.
    hold: std::sync::atomic::AtomicBool,
    /// Keep bytes from clients whose CONNECT contains this.
    hold_from: Mutex<Option<Vec<u8>>>,
    /// Close new connections at once.
    refuse: std::sync::atomic::AtomicBool,
    /// The packet id of every QoS 1 or 2 PUBLISH the broker sent, in order.
    publish_ids: Mutex<Vec<u16>>,
}

impl Switches {
    fn holds_from(&self, hello: &[u8]) -> bool {
        self.hold_from
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| hello.windows(p.len()).any(|w| w == p.as_slice()))
    }
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let switches = Arc::new(Switches::default());
        let (generation, cuts) = tokio::sync::watch::channel(0u64);
        let on = switches.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if on.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(pump(down, up, on.clone(), cuts));
            }
        });
        Self {
            port,
            switches,
            generation,
            task,
        }
    }

    /// While on, bytes from the broker are kept, not forwarded.
    pub fn hold(&self, on: bool) {
        self.switches
            .hold
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// While set, bytes from a client whose CONNECT packet contains `client` (its client id) are
    /// kept, not forwarded: what it publishes never reaches the broker.
    pub fn hold_from(&self, client: Option<&str>) {
        *self.switches.hold_from.lock().unwrap() = client.map(|c| c.as_bytes().to_vec());
    }

    /// While on, new connections are closed at once.
    pub fn refuse(&self, on: bool) {
        self.switches
            .refuse
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The packet id of every QoS 1 or 2 PUBLISH the broker sent through the proxy, in order
    /// (held or forwarded).
    pub fn publish_ids(&self) -> Vec<u16> {
        self.switches.publish_ids.lock().unwrap().clone()
    }

    /// Closes every connection through the proxy, dropping what it holds.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps `bytes` while `holding`; otherwise writes what was kept, then `bytes`. `false` when
/// the connection is gone.
async fn pass(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    kept: &mut Vec<u8>,
    bytes: &[u8],
    holding: bool,
) -> bool {
    use tokio::io::AsyncWriteExt;
    if holding {
        kept.extend_from_slice(bytes);
        return true;
    }
    let written = w.write_all(kept).await.is_ok() && w.write_all(bytes).await.is_ok();
    kept.clear();
    written
}

/// Takes each whole MQTT packet off the front of `stream` and notes a PUBLISH's packet id (QoS
/// 1 or 2: after the topic) in `ids`; a packet cut short stays for the next bytes.
fn note_publish_ids(stream: &mut Vec<u8>, ids: &Mutex<Vec<u16>>) {
    loop {
        // The remaining length: up to four bytes of seven bits each, after the first byte.
        let (mut len, mut at) = (0usize, 1usize);
        loop {
            let Some(&b) = stream.get(at) else { return };
            len |= usize::from(b & 0x7f) << (7 * (at - 1));
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = at + len;
        if stream.len() < end {
            return;
        }
        let (kind, qos) = (stream[0] >> 4, (stream[0] >> 1) & 3);
        if kind == 3 && qos > 0 {
            let topic = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
            let id = at + 2 + topic;
            ids.lock()
                .unwrap()
                .push(u16::from_be_bytes([stream[id], stream[id + 1]]));
        }
        stream.drain(..end);
    }
}

async fn pump(
    down: tokio::net::TcpStream,
    up: tokio::net::TcpStream,
    switches: Arc<Switches>,
    mut cuts: tokio::sync::watch::Receiver<u64>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::AsyncReadExt;
    let (mut down_r, mut down_w) = down.into_split();
    let (mut up_r, mut up_w) = up.into_split();
    let (mut from_client, mut from_broker) = (vec![0u8; 65536], vec![0u8; 65536]);
    // The client's first bytes (its CONNECT), to tell which client this is.
    let mut hello: Vec<u8> = Vec::new();
    let (mut held, mut held_up): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut sent: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = cuts.changed() => return,
            n = down_r.read(&mut from_client) => match n {
                Ok(n) if n > 0 => {
                    if hello.is_empty() {
                        hello.extend_from_slice(&from_client[..n]);
                    }
                    let holding = switches.holds_from(&hello);
                    if !pass(&mut up_w, &mut held_up, &from_client[..n], holding).await {
                        return;
                    }
                }
                _ => return,
            },
            n = up_r.read(&mut from_broker) => match n {
                Ok(n) if n > 0 => {
                    sent.extend_from_slice(&from_broker[..n]);
                    note_publish_ids(&mut sent, &switches.publish_ids);
                    let holding = switches.hold.load(SeqCst);
                    if !pass(&mut down_w, &mut held, &from_broker[..n], holding).await {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}
