//! `ebgand demo`: an embedded MQTT broker on loopback, a simulated machine that publishes a
//! healthy vibration signal and then a bearing fault, the daemon itself, and a console view of
//! energy against threshold with the alert events as they happen.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;

use crate::config::{DOCUMENTED_CONFIG, RawConfig};
use crate::pipeline::expected_windows;
use crate::signal::Signal;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::StateLabel;

/// The served default model, embedded so the demo runs from anywhere.
const MODEL_ONNX: &[u8] = include_bytes!("../models/vibration/ebgan-1/model.onnx");
const MODEL_MANIFEST: &str = include_str!("../models/vibration/ebgan-1/manifest.toml");

/// Arguments of `ebgand demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Broker port on 127.0.0.1 (0: a free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Seconds of healthy signal before the fault.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub healthy_s: f64,
    /// Seconds of fault.
    #[arg(long, default_value_t = 6.0, value_parser = seconds)]
    pub fault_s: f64,
    /// Seconds of healthy signal after the fault.
    #[arg(long, default_value_t = 6.0, value_parser = seconds)]
    pub recovery_s: f64,
    /// Playback speed (1 = real time at 1 kHz; up to 10000).
    #[arg(long, default_value_t = 1.0, value_parser = speed)]
    pub speed: f64,
}

/// A phase's length: 0 to a day of signal.
fn seconds(text: &str) -> Result<f64, String> {
    let s: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=86_400.0).contains(&s) {
        Ok(s)
    } else {
        Err("must be 0 to 86400 seconds".into())
    }
}

/// A playback speed: more than 0, at most 10,000 (a message every 3.2 µs).
fn speed(text: &str) -> Result<f64, String> {
    let s: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if s > 0.0 && s <= 10_000.0 {
        Ok(s)
    } else {
        Err("must be more than 0 and at most 10000".into())
    }
}

pub use crate::sim;

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts an embedded rumqttd broker on `127.0.0.1:port` in its own threads.
///
/// # Errors
/// When the broker thread cannot be spawned.
pub fn start_embedded_broker(port: u16) -> anyhow::Result<()> {
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = rumqttd::ServerSettings {
        name: "demo".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some([("demo".to_string(), server)].into_iter().collect()),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded broker stopped.");
            }
        })?;
    Ok(())
}

/// Runs the demo.
///
/// # Errors
/// When the broker, the model or the daemon cannot start.
pub fn run(args: &DemoArgs, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(args.clone(), config))
}

async fn demo(args: DemoArgs, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let port = if args.port == 0 {
        free_port()?
    } else {
        // The embedded broker reports a taken port only in its own thread: the demo would
        // then talk to whatever holds it (a real broker, whose retained status it would set).
        TcpListener::bind(("127.0.0.1", args.port)).with_context(|| {
            format!(
                "port {} on 127.0.0.1 is taken (a broker already?): choose another with \
                 --port, or --port 0 for a free one",
                args.port
            )
        })?;
        args.port
    };
    // Ctrl-C from here on ends the demo in order (the daemon drained, the temp folder gone),
    // whatever it is waiting for; a second one while it drains ends it at once (exit 130).
    // The listener ends with the runtime.
    let interrupt = tokio_util::sync::CancellationToken::new();
    let _listener = {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if interrupt.is_cancelled() {
                    println_flush("interrupted again: stopping now");
                    std::process::exit(130);
                }
                println_flush("\ninterrupted (again to stop at once)");
                interrupt.cancel();
            }
        })
    };
    start_embedded_broker(port)?;
    // Removed when the demo ends.
    let tmp = tempfile::tempdir()?;
    let model_dir = tmp.path();
    std::fs::write(model_dir.join("model.onnx"), MODEL_ONNX)?;
    std::fs::write(model_dir.join("manifest.toml"), MODEL_MANIFEST)?;

    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG)?;
    raw.node = "demo".into();
    raw.mqtt.port = port;
    raw.mqtt.publish_energy = true;
    raw.http.listen = String::new();
    raw.shutdown.grace_ms = 5_000;
    // 15 windows a second: the stream learns its first 4 s, so the default 10 s of healthy
    // signal leave it 6 s of judged healthy windows before the fault.
    raw.detect.learn_windows = 64;
    // The demo's registry and captures live in its temp folder: it always serves the embedded
    // model, whatever a local daemon left in ./state.
    raw.registry.dir = model_dir.join("registry").display().to_string();
    raw.learning.dir = model_dir.join("capture").display().to_string();
    raw.mqtt.outbox_dir = model_dir.join("outbox").display().to_string();
    raw.journal.dir = model_dir.join("journal").display().to_string();
    if let Some(m) = raw.models.get_mut("vibration") {
        m.path = model_dir.display().to_string();
    }
    // The runtime library is the one the config file (`--config`, ./config.toml, or an
    // installed package's) and the environment (EBGAND__RUNTIME__LIBRARY) name, if any.
    let local = RawConfig::load(crate::config::config_path(config), None).ok();
    if let Some(local) = local.filter(|e| !e.runtime.library.is_empty()) {
        raw.runtime.library = local.runtime.library;
    }
    let settings = raw.validate()?;
    let prefix = settings.mqtt.prefix.clone();
    let stream = settings
        .streams
        .first()
        .map(|s| (s.window.get() as u64, s.hop.get() as u64))
        .context("the documented config has no stream")?;

    println_flush(&format!(
        "\nebgand demo: embedded MQTT broker on 127.0.0.1:{port}\n\
         From another terminal:  mosquitto_sub -h 127.0.0.1 -p {port} -t '{prefix}/#' -v\n\
         Topics: {prefix}/alerts/<stream> (raise/clear), {prefix}/state/<stream> (retained), \
         {prefix}/energy/<stream>, {prefix}/status\n\
         Machine: sensors/machine-1/vibration, healthy {:.0} s, bearing fault {:.0} s, healthy {:.0} s\n",
        args.healthy_s, args.fault_s, args.recovery_s
    ));

    let metrics = Arc::new(Metrics::new());
    let (sig_tx, sig_rx) = mpsc::channel(4);
    let daemon = tokio::spawn(crate::run(settings, sig_rx, metrics.clone()));

    let console = tokio::spawn(console(port, prefix.clone()));
    // The machine starts once the daemon has subscribed: a broker keeps nothing published on a
    // topic before anyone subscribed to it, so the first windows would be lost.
    wait_until(Duration::from_secs(60), || {
        metrics.ready() || daemon.is_finished() || interrupt.is_cancelled()
    })
    .await;
    if daemon.is_finished() && !metrics.ready() {
        // Stopped before it got ready: its own error says why (a missing library, a folder).
        daemon.await.context("daemon task")??;
        anyhow::bail!("the daemon stopped before it got ready");
    }
    anyhow::ensure!(
        metrics.ready() || interrupt.is_cancelled(),
        "the daemon did not get ready: {}",
        metrics.not_ready().unwrap_or_default()
    );
    let machine = simulate(port, &args);
    let published = tokio::select! {
        r = machine, if !interrupt.is_cancelled() => Some(r?),
        () = interrupt.cancelled() => None,
    };
    // Every window of what the broker acknowledged is scored before the daemon drains.
    let expected = published.map(|samples| expected_windows(samples, stream.0, stream.1));
    if let Some(expected) = expected {
        wait_until(Duration::from_secs(30), || {
            metrics.windows_scored_total() >= expected || interrupt.is_cancelled()
        })
        .await;
    }
    // Interrupted, what was published need not all be scored.
    let expected = expected.filter(|_| !interrupt.is_cancelled());
    if sig_tx.send(Signal::Shutdown).await.is_err() {
        println_flush("the daemon had already stopped");
    }
    daemon.await.context("daemon task")??;
    console.abort();
    let alerts = |state| metrics.alerts.get_or_create(&StateLabel { state }).get();
    let (raised, cleared) = (alerts("raised"), alerts("cleared"));
    let scored = metrics.windows_scored_total();
    let of = expected.map_or_else(String::new, |n| format!(" of {n}"));
    println_flush(&format!(
        "\ndone: {scored}{of} windows scored, {raised} alert(s) raised, {cleared} cleared"
    ));
    if let Some(expected) = expected
        && scored != expected
    {
        anyhow::bail!("{scored} windows scored where {expected} were published");
    }
    Ok(())
}

/// Polls `done` every 20 ms until it holds or `limit` has passed.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::print_stdout)]
fn println_flush(s: &str) {
    println!("{s}");
    // A console that cannot be flushed has nowhere to report that either.
    std::io::stdout().flush().ok();
}

/// Publishes the machine's signal (QoS 1) and waits until the broker has acknowledged all of
/// it; the number of samples published.
async fn simulate(port: u16, args: &DemoArgs) -> anyhow::Result<u64> {
    let mut opts = MqttOptions::new("ebgand-demo-machine", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let acked = Arc::new(AtomicU64::new(0));
    // The embedded broker may still be starting: keep polling through connection errors.
    let pump = tokio::spawn({
        let acked = acked.clone();
        async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    });
    let mut published = 0u64;
    let mut machine = sim::Machine::new(1);
    const CHUNK: usize = 32;
    let period = Duration::from_secs_f64(CHUNK as f64 / sim::RATE / args.speed);
    let phases = [
        (args.healthy_s, false),
        (args.fault_s, true),
        (args.recovery_s, false),
    ];
    let mut tick = tokio::time::interval(period);
    for (seconds, fault) in phases {
        let chunks = (seconds * sim::RATE / CHUNK as f64).round() as usize;
        if fault {
            println_flush(">>> machine: bearing fault starts");
        }
        for _ in 0..chunks {
            tick.tick().await;
            let payload = serde_json::to_vec(&machine.samples(CHUNK, fault))?;
            client
                .publish(
                    "sensors/machine-1/vibration",
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await?;
            published += 1;
        }
        if fault {
            println_flush(">>> machine: fault repaired");
        }
    }
    // A DISCONNECT queued now could overtake publishes still waiting for an in-flight slot.
    let all_acked = || acked.load(Ordering::Relaxed) >= published;
    wait_until(Duration::from_secs(30), all_acked).await;
    anyhow::ensure!(
        all_acked(),
        "the embedded broker acknowledged {} of {published} messages",
        acked.load(Ordering::Relaxed)
    );
    client.disconnect().await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    pump.abort();
    Ok(published * CHUNK as u64)
}

async fn console(port: u16, prefix: String) {
    let mut opts = MqttOptions::new("ebgand-demo-console", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    if client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await
        .is_err()
    {
        return;
    }
    let mut n = 0u64;
    loop {
        let Ok(ev) = eventloop.poll().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Event::Incoming(Incoming::Publish(p)) = ev else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
            continue;
        };
        if p.topic.starts_with(&format!("{prefix}/energy/")) {
            n += 1;
            let (e, t) = (
                v["energy"].as_f64().unwrap_or(0.0),
                v["threshold"].as_f64().unwrap_or(1.0),
            );
            let state = match (v["learning"] == true, v["probability"].as_f64()) {
                (true, _) => "learning".to_owned(),
                (false, Some(p)) => format!("p {p:.5} {}", v["state"].as_str().unwrap_or("")),
                (false, None) => v["state"].as_str().unwrap_or("").to_owned(),
            };
            // Every 4th window keeps the screen readable at 15 windows/s.
            if n.is_multiple_of(4) || v["anomalous"] == true {
                println_flush(&bar(v["seq"].as_u64().unwrap_or(0), e, t, &state));
            }
        } else if p.topic.starts_with(&format!("{prefix}/alerts/")) {
            println_flush(&format!(
                "*** ALERT {}: {}",
                v["state"].as_str().unwrap_or("?").to_uppercase(),
                v
            ));
        }
    }
}

/// One console line: a log-scale bar of energy with the threshold marked.
fn bar(seq: u64, energy: f64, threshold: f64, state: &str) -> String {
    const WIDTH: usize = 40;
    // Log scale from threshold/10 to threshold*1000; the threshold sits at a quarter.
    let pos = |x: f64| -> usize {
        let r = ((x.max(1e-12) / (threshold / 10.0)).log10() / 4.0).clamp(0.0, 1.0);
        (r * WIDTH as f64).round() as usize
    };
    let (p, tp) = (pos(energy), pos(threshold));
    let line: String = (0..WIDTH)
        .map(|i| {
            if i == tp {
                '|'
            } else if i < p {
                '#'
            } else {
                ' '
            }
        })
        .collect();
    format!("window {seq:>5} [{line}] energy {energy:>9.4} threshold {threshold:.4} {state}")
}
