//! SKAB rows published as JSON objects at full speed: every row windowed, every window scored
//! exactly once, window marks taken from the rows' timestamps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use ebgand::pipeline::expected_windows;

const FIELDS: [&str; 8] = SKAB_FIELDS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skab_valve1_rows_are_all_scored_once() {
    let dir = shared_data().join("skab/valve1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the SKAB valve1 files in {}",
        dir.display()
    );

    let broker = Mosquitto::start().await;
    let prefix = "skab";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let toml = format!(
        r#"
[models.multichannel]
path = "models/multichannel/fixture-1"
[[streams]]
name = "skab"
topic = "pump/+"
model = "multichannel"
format = "object"
fields = {fields:?}
timestamp_field = "datetime"
channels = 8
window = 16
hop = 16
"#,
        fields = FIELDS
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let mut tx = Sender::start(broker.port).await;

    let mut expected = HashMap::new();
    let mut stamps: HashMap<String, Vec<String>> = HashMap::new();
    let mut rows_total = 0;
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let topic = format!("pump/valve1-{name}");
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .from_path(file)
            .unwrap();
        let headers = reader.headers().unwrap().clone();
        let mut n = 0u64;
        for rec in reader.records() {
            let rec = rec.unwrap();
            let mut obj = serde_json::Map::new();
            for (h, v) in headers.iter().zip(rec.iter()) {
                let value = if h == "datetime" {
                    serde_json::Value::String(v.to_owned())
                } else {
                    serde_json::json!(v.parse::<f64>().unwrap())
                };
                obj.insert(h.to_owned(), value);
            }
            stamps
                .entry(format!("skab/valve1-{name}"))
                .or_default()
                .push(rec[0].to_owned());
            tx.publish(&topic, serde_json::Value::Object(obj).to_string())
                .await;
            n += 1;
        }
        rows_total += n;
        expected.insert(format!("skab/valve1-{name}"), expected_windows(n, 16, 16));
    }
    tx.flushed().await;
    let windows: u64 = expected.values().sum();
    eventually(
        Duration::from_secs(120),
        "every SKAB window's energy",
        || obs.count(&format!("{prefix}/energy/")) as u64 >= windows,
    )
    .await;
    let energy = obs.on(&format!("{prefix}/energy/"));
    assert_exactly_once(&energy, &expected);
    assert_eq!(daemon.metric("ebgand_messages_total"), rows_total);
    assert_eq!(daemon.metric("ebgand_malformed_total"), 0);
    assert_eq!(daemon.metric("ebgand_windows_scored_total"), windows);
    // Marks are the rows' own timestamps: window k spans rows 16k .. 16k+15.
    for e in &energy {
        let rows = &stamps[e.json["stream"].as_str().unwrap()];
        let k = e.json["seq"].as_u64().unwrap() as usize;
        assert_eq!(e.json["start"], rows[16 * k].as_str());
        assert_eq!(e.json["end"], rows[16 * k + 15].as_str());
        assert!(e.json["energy"].as_f64().unwrap().is_finite());
    }
    eprintln!(
        "SKAB valve1: {} files, {rows_total} rows, {windows} windows scored once each",
        files.len()
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgand_replay_publishes_a_recording_the_daemon_scores_whole() {
    let csv = shared_data().join("skab/valve1/3.csv");
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() as u64 - 1;
    let broker = Mosquitto::start().await;
    let prefix = "replay";
    let obs = Observer::start(broker.port, &format!("{prefix}/energy/#")).await;
    let toml = format!(
        "[models.multichannel]\npath = \"models/multichannel/fixture-1\"\n[[streams]]\nname = \"skab\"\n\
         topic = \"pump/+\"\nmodel = \"multichannel\"\nformat = \"object\"\nfields = {FIELDS:?}\n\
         timestamp_field = \"datetime\"\nchannels = 8\nwindow = 16\n"
    );
    let daemon = TestDaemon::start(settings(broker.port, prefix, &toml)).await;
    let port = broker.port.to_string();
    let columns = FIELDS.join(",");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args([
            "replay",
            csv.to_str().unwrap(),
            "--topic",
            "pump/valve1-3",
            "--rate",
            "max",
        ])
        .args([
            "--format",
            "object",
            "--delimiter",
            ";",
            "--timestamp-column",
            "datetime",
        ])
        .args([
            "--columns",
            &columns,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let windows = expected_windows(rows, 16, 16);

    eventually(
        Duration::from_secs(30),
        "every replayed window scored",
        || obs.count(&format!("{prefix}/energy/")) as u64 >= windows,
    )
    .await;
    assert_exactly_once(
        &obs.on(&format!("{prefix}/energy/")),
        &HashMap::from([("skab/valve1-3".to_string(), windows)]),
    );
    assert_eq!(daemon.metric("ebgand_messages_total"), rows);
    daemon.shutdown().await.unwrap();
}
