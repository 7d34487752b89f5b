//! The environment's overrides: read as strictly as the file, and checked as it is.

use super::*;

#[test]
fn env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, DOCUMENTED_CONFIG).unwrap();
    let raw = RawConfig::load(
        Some(&path),
        env(&[
            ("EBGAND__MQTT__HOST", "broker.local"),
            ("EBGAND__MQTT__PORT", "2883"),
        ]),
    )
    .unwrap();
    let s = raw.validate().unwrap();
    assert_eq!(
        s.mqtt.brokers,
        vec![Broker {
            host: "broker.local".into(),
            port: 2883
        }]
    );
}

#[test]
fn env_is_read_as_strictly_as_the_file_and_every_problem_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[mqtt]\nkeep_alive_s = 1.5\n").unwrap();
    let err = RawConfig::load(
        Some(&path),
        env(&[
            ("EBGAND__MQTT__PORT", "64.9"),
            ("EBGAND__MQTT__PUBLISH_ENERGY", "yes"),
            ("EBGAND__MQTT__PASSWROD", "hunter2"),
            ("EBGAND__MQTT__HOST", "10"),
            ("EBGAND__NODE", "true"),
            ("EBGAND__REGISTRY__MAX_FALSE_ALARM_RATE", "0.1"),
            ("EBGAND_LOG", "debug"),
        ]),
    )
    .unwrap_err()
    .to_string();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        err.contains("c.toml:2: invalid type: floating point `1.5`"),
        "{err}"
    );
    assert!(
        err.contains("EBGAND__MQTT__PORT: invalid type: floating point `64.9`, expected u16"),
        "{err}"
    );
    assert!(
        err.contains(
            "EBGAND__MQTT__PUBLISH_ENERGY: invalid type: string \"yes\", expected a boolean"
        ),
        "{err}"
    );
    assert!(
        err.contains("EBGAND__MQTT__PASSWROD: unknown field `passwrod`"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "a mistyped key's value may be a secret: {err}"
    );
    // The config crate takes the prefix in any case; so does the strict reading.
    for name in ["ebgand__mqtt__port", "Ebgand__Mqtt__Port"] {
        let err = RawConfig::load(None, env(&[(name, "on")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{name}: invalid type")), "{err}");
    }
    // Strings that look like numbers or booleans stay strings; numbers parse as numbers.
    let raw = RawConfig::load(
        None,
        env(&[
            ("EBGAND__MQTT__HOST", "10"),
            ("EBGAND__NODE", "true"),
            ("EBGAND__MQTT__PASSWORD", "007"),
            ("EBGAND__MQTT__PORT", "8883"),
            ("EBGAND__MQTT__PUBLISH_ENERGY", "true"),
            ("EBGAND__MQTT__CLIENT_ID", "1e3"),
            ("EBGAND__MQTT__USERNAME", "u"),
            ("EBGAND__REGISTRY__MAX_FALSE_ALARM_RATE", "0.1"),
        ]),
    )
    .unwrap();
    assert_eq!((raw.mqtt.host.as_str(), raw.node.as_str()), ("10", "true"));
    assert_eq!(raw.mqtt.password.expose(), "007");
    assert_eq!(
        (
            raw.mqtt.port,
            raw.mqtt.publish_energy,
            raw.mqtt.client_id.as_str()
        ),
        (8883, true, "1e3")
    );
    assert!((raw.registry.max_false_alarm_rate - 0.1).abs() < 1e-12);
}

/// A duration too long for the clock's arithmetic is refused by the check, not met as a
/// panic at start (which systemd would restart forever).
#[test]
fn durations_past_a_hundred_years_are_refused() {
    let err = RawConfig::load(
        None,
        env(&[
            ("EBGAND__LIMITS__STREAM_IDLE_S", "9223372036854775807"),
            ("EBGAND__LEARNING__RETRAIN_EVERY_S", "9223372036854775807"),
            ("EBGAND__SHUTDOWN__GRACE_MS", "18446744073709551615"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    for key in [
        "limits.stream_idle_s",
        "learning.retrain_every_s",
        "shutdown.grace_ms",
    ] {
        assert!(err.contains(&format!("{key}: ")), "{key}: {err}");
    }
}

/// The environment's keys are read in lower case: a model named with capitals in the file
/// cannot be set from it, and a variable that tries makes a second model. Told, not taken.
#[test]
fn a_model_named_with_capitals_is_not_silently_doubled_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[models.PumpA]\npath = \"models/vibration/fixture-1\"\n",
    )
    .unwrap();
    let err = RawConfig::load(
        Some(&path),
        env(&[("EBGAND__MODELS__PUMPA__PATH", "/elsewhere")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("models.PumpA and models.pumpa: names that differ only in case"),
        "{err}"
    );
    // A lower-case name is set from the environment as any other key.
    std::fs::write(
        &path,
        "[models.pumpa]\npath = \"models/vibration/fixture-1\"\n",
    )
    .unwrap();
    let raw = RawConfig::load(
        Some(&path),
        env(&[("EBGAND__MODELS__PUMPA__PATH", "/elsewhere")]),
    )
    .unwrap();
    assert_eq!(raw.models.len(), 1);
    assert_eq!(raw.models["pumpa"].path, "/elsewhere");
}
