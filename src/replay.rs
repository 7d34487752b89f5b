//! `ebgand replay`: publishes a recording (CSV, `.npy`, `.npz`) as an MQTT stream, in real time
//! or as fast as the broker takes it, for demos, tests and benchmarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use crate::config::RawConfig;
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
    /// Broker host (default: the config's `[mqtt] host`).
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
    let host = args.host.clone().unwrap_or(raw.mqtt.host);
    let port = args.port.unwrap_or(raw.mqtt.port);
    let rec = crate::recording::read(&args.file, &args.input)?;
    let rate = args
        .sample_rate
        .or(rec.sample_rate.map(f64::from))
        .unwrap_or(1.0);
    if args.chunk == 0 || rate.is_nan() || rate <= 0.0 {
        bail!("--chunk and --sample-rate must be positive");
    }
    let columns = if args.input.columns.is_empty() {
        (0..rec.samples.ncols()).map(|c| format!("c{c}")).collect()
    } else {
        args.input.columns.clone()
    };
    let messages = encode(&rec, args, &columns)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(publish(&host, port, args, rate, messages))
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
    host: &str,
    port: u16,
    args: &ReplayArgs,
    rate: f64,
    messages: Vec<(usize, Vec<u8>)>,
) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(format!("ebgand-replay-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let topic = args.topic.clone();
    let realtime = args.rate == "realtime";
    let closer = client.clone();
    let sender = tokio::spawn(async move {
        let started = Instant::now();
        for (sample, payload) in messages {
            if realtime {
                let due = Duration::from_secs_f64(sample as f64 / rate);
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
    if total == 0 {
        closer.try_disconnect()?;
    }
    loop {
        match eventloop.poll().await {
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
    sender.await.context("publisher task")??;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(messages = total, acked, seconds = secs, topic = %args.topic, "Replay done.");
    Ok(())
}
