//! `ebgand replay`: publishes a recording (CSV, `.npy`, `.npz`) as an MQTT stream, in real time
//! or as fast as the broker takes it, for demos, tests and benchmarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, Incoming, QoS};

use crate::config::{Broker, MqttSettings, RawConfig};
use crate::recording::{InputArgs, Recording};

/// How each message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// A JSON array of the chunk's samples, interleaved by channel.
    Array,
    /// One JSON object per sample, a field per column (plus the timestamp column, if given).
    Object,
    /// Raw little-endian f32, interleaved by channel.
    F32le,
    /// Raw little-endian 16-bit PCM (samples in [-1, 1) scaled by 32768), for audio.
    I16le,
}

/// Arguments of `ebgand replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Recording: .csv, .npy, .npz (with --key) or .wav (16-bit PCM or 32-bit float).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// How to read it.
    #[command(flatten)]
    pub input: InputArgs,
    /// Topic to publish on.
    #[arg(long)]
    pub topic: String,
    /// `realtime` (paced by --sample-rate) or `max` (as fast as the broker acknowledges).
    #[arg(long, default_value = "realtime", value_parser = ["realtime", "max"])]
    pub rate: String,
    /// Samples per second of the recording, for --rate realtime (default: the WAV's rate, else 1).
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Samples per message (object format: always 1).
    #[arg(long, default_value_t = 1)]
    pub chunk: usize,
    /// Message encoding.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Array)]
    pub format: ReplayFormat,
    /// Broker host (default: the config's `[mqtt] host`, or the first of its `hosts`; its
    /// credentials and TLS apply either way).
    #[arg(long)]
    pub host: Option<String>,
    /// Broker port (default: the config's `[mqtt] port`).
    #[arg(long)]
    pub port: Option<u16>,
}

/// Runs `ebgand replay`.
///
/// # Errors
/// Unreadable input, or a broker that cannot be reached.
pub fn replay(args: &ReplayArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let raw = RawConfig::load(crate::config::config_path(config), None)?;
    // The daemon's broker as its config reaches it: credentials, TLS, the first of `hosts`.
    let mqtt = raw.mqtt_alone()?;
    let first = mqtt.brokers.first();
    let broker = Broker {
        host: args
            .host
            .clone()
            .or_else(|| first.map(|b| b.host.clone()))
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: args.port.or(first.map(|b| b.port)).unwrap_or(1883),
    };
    let rec = crate::recording::read(&args.file, &args.input)?;
    let rate = args
        .sample_rate
        .or(rec.sample_rate.map(f64::from))
        .unwrap_or(1.0);
    if args.chunk == 0 || rate.is_nan() || rate <= 0.0 {
        bail!("--chunk and --sample-rate must be positive");
    }
    // Paced by the last message's time: one that cannot be a duration is no pace at all.
    let last = rec.samples.nrows().saturating_sub(1) as f64;
    if args.rate == "realtime" && Duration::try_from_secs_f64(last / rate).is_err() {
        bail!("--sample-rate {rate}: the recording would last longer than any clock can wait");
    }
    let columns = field_names(&rec, args)?;
    let messages = encode(&rec, args, &columns)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(publish(&mqtt, &broker, args, rate, messages))
}

/// The object format's field names: `--columns` when given (one per channel), else a CSV's
/// own column names, else `c0`, `c1`, ...
fn field_names(rec: &Recording, args: &ReplayArgs) -> anyhow::Result<Vec<String>> {
    let channels = rec.samples.ncols();
    let names = if !args.input.columns.is_empty() {
        args.input.columns.clone()
    } else if rec.names.len() == channels {
        rec.names.clone()
    } else {
        (0..channels).map(|c| format!("c{c}")).collect()
    };
    if args.format == ReplayFormat::Object && names.len() != channels {
        bail!(
            "--columns names {} field(s); the recording has {channels} channel(s)",
            names.len()
        );
    }
    Ok(names)
}

/// The payloads, in order, with the sample index each one starts at.
fn encode(
    rec: &Recording,
    args: &ReplayArgs,
    columns: &[String],
) -> anyhow::Result<Vec<(usize, Vec<u8>)>> {
    let rows = rec.samples.nrows();
    let chunk = if args.format == ReplayFormat::Object {
        1
    } else {
        args.chunk
    };
    let mut out = Vec::with_capacity(rows.div_ceil(chunk));
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        let values: Vec<f32> = (start..end)
            .flat_map(|r| rec.samples.row(r).to_vec())
            .collect();
        let payload = match args.format {
            ReplayFormat::Array => serde_json::to_vec(&values)?,
            ReplayFormat::F32le => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ReplayFormat::I16le => values
                .iter()
                .flat_map(|v| {
                    ((v * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16).to_le_bytes()
                })
                .collect(),
            ReplayFormat::Object => {
                let mut obj = serde_json::Map::new();
                for (name, v) in columns.iter().zip(&values) {
                    obj.insert(name.clone(), serde_json::json!(v));
                }
                if let (Some(col), Some(stamps)) = (&args.input.timestamp_column, &rec.stamps) {
                    obj.insert(col.clone(), stamps[start].clone());
                }
                serde_json::to_vec(&obj)?
            }
        };
        out.push((start, payload));
    }
    Ok(out)
}

async fn publish(
    mqtt: &MqttSettings,
    broker: &Broker,
    args: &ReplayArgs,
    rate: f64,
    messages: Vec<(usize, Vec<u8>)>,
) -> anyhow::Result<()> {
    let id = format!("ebgand-replay-{}", std::process::id());
    let mut opts = crate::mqtt::client_options(mqtt, id, broker);
    // What this replay sends, whatever the daemon's limit for what it reads: a message larger
    // than that is the daemon's to count as oversize, not this tool's to refuse.
    let largest = messages.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    let packet = largest + args.topic.len() + 64;
    // (incoming, outgoing)
    opts.set_max_packet_size(mqtt.max_packet_bytes, packet.max(mqtt.max_packet_bytes))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let topic = args.topic.clone();
    let realtime = args.rate == "realtime";
    let closer = client.clone();
    let mut sender = tokio::spawn(async move {
        let started = Instant::now();
        for (sample, payload) in messages {
            if realtime {
                // Checked before the start: the last message's time is a duration.
                let due = Duration::try_from_secs_f64(sample as f64 / rate).unwrap_or_default();
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(())
    });
    let started = Instant::now();
    let mut acked = 0usize;
    let mut sent = false;
    if total == 0 {
        closer.try_disconnect()?;
    }
    let (host, port) = (&broker.host, broker.port);
    loop {
        let polled = tokio::select! {
            // A sender that stops early (its client gone) ends the replay, never hangs it.
            done = &mut sender, if !sent => {
                sent = true;
                done.context("publisher task")?
                    .with_context(|| format!("MQTT {host}:{port}: publishing stopped"))?;
                continue;
            }
            ev = eventloop.poll() => ev,
        };
        match polled {
            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                acked += 1;
                // Disconnect only once the broker has every message: a DISCONNECT queued
                // behind publishes still waiting for an in-flight slot would drop them.
                if acked == total {
                    closer.try_disconnect()?;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => bail!("MQTT {host}:{port}: {e}"),
        }
    }
    if !sent {
        sender.await.context("publisher task")??;
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(messages = total, acked, seconds = secs, topic = %args.topic, "Replay done.");
    Ok(())
}
