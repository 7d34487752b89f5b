//! `ebgand replay` against a real mosquitto that wants a password: the broker's address and
//! credentials come from the daemon's config, messages larger than rumqttc's default packet
//! limit go out whole, and the object format names its fields after the CSV's columns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A broker that refuses anonymous clients, and a config (mode 600, as one holding a
/// password must be) that reaches it as the daemon's user.
async fn password_broker(dir: &Path) -> (Mosquitto, String) {
    let broker = Mosquitto::start_with(|d| {
        mosquitto_passwd(&d.join("passwd"), &[ADMIN, DAEMON]);
        format!(
            "allow_anonymous false\npassword_file {}/passwd\n",
            d.display()
        )
    })
    .await;
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{}\"\npassword = \"{}\"\n\
             max_packet_bytes = 16384\n",
            broker.port, DAEMON.0, DAEMON.1
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    (broker, config.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reaches_the_configs_broker_with_its_credentials_and_large_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, config) = password_broker(dir.path()).await;
    let obs = Observer::start_with(broker.port, "rp/#", |o| {
        o.set_credentials(ADMIN.0, ADMIN.1);
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await;
    // Two named columns and a timestamp: one object per row, fields named as the header.
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "t,vib,temp\n0,0.5,20\n1,0.25,21\n2,0.125,22\n").unwrap();
    let o = ebgand(
        &[
            "replay",
            csv.to_str().unwrap(),
            "--topic",
            "rp/object",
            "--format",
            "object",
            "--rate",
            "max",
            "--timestamp-column",
            "t",
            "--config",
            &config,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 9,000 samples in one JSON array: about 40 KiB, four times rumqttc's default limit and
    // more than the config's max_packet_bytes (the daemon's limit for what it reads).
    let long = dir.path().join("long.csv");
    let rows: String = (0..9_000)
        .map(|i| format!("{}\n", i as f32 / 7.0))
        .collect();
    std::fs::write(&long, format!("x\n{rows}")).unwrap();
    let o = ebgand(
        &[
            "replay",
            long.to_str().unwrap(),
            "--topic",
            "rp/array",
            "--chunk",
            "9000",
            "--rate",
            "max",
            "--config",
            &config,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    obs.settled().await;
    let objects: Vec<_> = obs.on("rp/object").into_iter().map(|s| s.json).collect();
    assert_eq!(objects.len(), 3, "{objects:?}");
    assert_eq!(
        objects[1],
        serde_json::json!({"vib": 0.25, "temp": 21.0, "t": "1"})
    );
    let arrays = obs.on("rp/array");
    assert_eq!(arrays.len(), 1);
    assert_eq!(arrays[0].json.as_array().unwrap().len(), 9_000);
}

/// Field names that do not fit the channels are refused, not zipped short.
#[test]
fn replay_refuses_field_names_that_do_not_fit_the_channels() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n4,5,6\n").unwrap();
    let o = ebgand(
        &[
            "replay",
            csv.to_str().unwrap(),
            "--topic",
            "x/y",
            "--format",
            "object",
            "--columns",
            "a,b,c",
            "--port",
            "1",
        ],
        &[],
    );
    // Three columns named three times reads fine, and fails only at the broker (port 1).
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let npy = dir.path().join("x.npy");
    let arr = ndarray::Array2::<f32>::zeros((4, 3));
    ndarray_npy::write_npy(&npy, &arr).unwrap();
    let o = ebgand(
        &[
            "replay",
            npy.to_str().unwrap(),
            "--topic",
            "x/y",
            "--format",
            "object",
            "--columns",
            "vib,temp",
        ],
        &[],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--columns names 2 field(s); the recording has 3 channel(s)"),
        "{err}"
    );
    // A rate that makes the recording last past any clock is refused before connecting.
    let o = ebgand(
        &[
            "replay",
            csv.to_str().unwrap(),
            "--topic",
            "x/y",
            "--sample-rate",
            "1e-300",
        ],
        &[],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("longer than any clock can wait"), "{err}");
}
