//! Unit tests of loading and validation.

use super::*;
use crate::detect::Accept;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

mod env;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn documented_config_is_valid_and_matches_builtin_defaults() {
    let doc = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    let settings = doc.validate().unwrap();
    assert!(!settings.streams.is_empty());
    // Every scalar the documented file sets must equal the built-in default, so that the
    // file documents the defaults truthfully.
    let d = RawConfig::default();
    assert_eq!(format!("{:?}", doc.mqtt), format!("{:?}", d.mqtt));
    assert_eq!(format!("{:?}", doc.runtime), format!("{:?}", d.runtime));
    assert_eq!(format!("{:?}", doc.scoring), format!("{:?}", d.scoring));
    assert_eq!(format!("{:?}", doc.detect), format!("{:?}", d.detect));
    assert_eq!(format!("{:?}", doc.limits), format!("{:?}", d.limits));
    assert_eq!(format!("{:?}", doc.http), format!("{:?}", d.http));
    assert_eq!(format!("{:?}", doc.shutdown), format!("{:?}", d.shutdown));
    assert_eq!(format!("{:?}", doc.train), format!("{:?}", d.train));
    assert_eq!(format!("{:?}", doc.registry), format!("{:?}", d.registry));
    assert_eq!(format!("{:?}", doc.control), format!("{:?}", d.control));
    assert_eq!(format!("{:?}", doc.learning), format!("{:?}", d.learning));
    assert_eq!(format!("{:?}", doc.journal), format!("{:?}", d.journal));
    assert_eq!(
        format!("{:?}", doc.homeassistant),
        format!("{:?}", d.homeassistant)
    );
}

#[test]
fn home_assistant_discovery_is_checked() {
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    assert_eq!(raw.clone().validate().unwrap().mqtt.homeassistant, None);
    raw.homeassistant.enabled = true;
    assert_eq!(
        raw.clone()
            .validate()
            .unwrap()
            .mqtt
            .homeassistant
            .as_deref(),
        Some("homeassistant")
    );
    raw.homeassistant.discovery_prefix = "ha/#".into();
    let e = raw.clone().validate().unwrap_err().to_string();
    assert!(e.contains("homeassistant.discovery_prefix"), "{e}");
    // A stream filter that would take the discovery configs as sensor data is refused.
    raw.homeassistant.discovery_prefix = "homeassistant".into();
    raw.streams[0].topic = "homeassistant/#".into();
    let e = raw.validate().unwrap_err().to_string();
    assert!(e.contains("also matches ebgand's own topic"), "{e}");
}

#[test]
fn several_brokers_parse_in_order_with_the_default_port() {
    let raw = RawConfig::from_toml(
        "[mqtt]\nport = 1884\nhosts = [\"a.lan:1883\", \"b.lan\", \"[fd00::3]:8883\"]\n",
    )
    .unwrap();
    let s = raw.validate().unwrap();
    let got: Vec<String> = s.mqtt.brokers.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["a.lan:1883", "b.lan:1884", "[fd00::3]:8883"]);
    assert_eq!(
        s.mqtt.brokers_text(),
        "a.lan:1883, b.lan:1884, [fd00::3]:8883"
    );
}

#[test]
fn bad_broker_lists_and_partition_prefixes_are_each_reported() {
    let raw = RawConfig::from_toml(
        "[mqtt]\nhosts = [\"a:0\", \":1883\", \"fd00::3:1883\", \"b:1\", \"b:1\"]\n\
         [partition]\ncount = 2\nprefixes = [\"part/0/\", \"part/+\", \"part/1\", \"part/1\"]\n",
    )
    .unwrap();
    let ConfigError::Invalid(errs) = raw.validate().unwrap_err() else {
        panic!("not a validation error");
    };
    let all = errs.join("\n");
    for expected in [
        "\"a:0\": port must be 1-65535",
        "\":1883\": no host",
        "write an IPv6 address as [addr]:port",
        "mqtt.hosts: b:1 is listed twice",
        "\"part/0/\" must be non-empty",
        "\"part/+\" must be non-empty",
        "\"part/1\" is listed twice",
        "use one",
    ] {
        assert!(all.contains(expected), "{expected:?} not in:\n{all}");
    }
}

#[test]
fn unknown_key_is_refused() {
    let err = RawConfig::from_toml("[mqtt]\nhots = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("hots"), "{err}");
}

#[test]
fn missing_file_is_named() {
    let err = RawConfig::load(Some(Path::new("/nonexistent/e.toml")), env(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }));
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let text = r#"
        [mqtt]
        port = 0
        prefix = "a/#"
        username = "u"
        reconnect_min_ms = 0
        energy_qos = 2
        keep_alive_s = 70000
        [runtime]
        providers = ["tpu"]
        [scoring]
        max_batch = 0
        [models.m]
        path = "x"
        [[streams]]
        name = "s"
        topic = "a/#/b"
        model = "nope"
        format = "object"
        channels = 2
        window = 4
        hop = 8
        threshold = -1.0
    "#;
    let err = RawConfig::from_toml(text).unwrap().validate().unwrap_err();
    let ConfigError::Invalid(list) = err else {
        panic!("expected Invalid")
    };
    let all = list.join("\n");
    for key in [
        "mqtt.port",
        "mqtt.prefix",
        "mqtt.username",
        "mqtt.reconnect_min_ms",
        "mqtt.energy_qos",
        "mqtt.keep_alive_s",
        "runtime.providers",
        "scoring.max_batch",
        ".topic",
        ".model",
        ".fields",
        ".hop",
        ".threshold",
    ] {
        assert!(all.contains(key), "missing {key} in:\n{all}");
    }
}

#[test]
fn size_limits_and_the_idle_horizon_are_checked() {
    for (bytes, ok) in [
        (512, false),
        (1024, true),
        (32 << 20, true),
        ((32 << 20) + 1, false),
    ] {
        let text = format!("[mqtt]\nmax_packet_bytes = {bytes}\n");
        let r = RawConfig::from_toml(&text).unwrap().validate();
        match r {
            Ok(_) => assert!(ok, "{bytes} accepted"),
            Err(e) => {
                assert!(!ok, "{bytes} refused: {e}");
                assert!(e.to_string().contains("mqtt.max_packet_bytes"), "{e}");
            }
        }
    }
    let never = RawConfig::from_toml("[limits]\nstream_idle_s = 0\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(never.stream_idle, None);
    let doc = RawConfig::from_toml(DOCUMENTED_CONFIG)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(doc.stream_idle, Some(Duration::from_secs(7 * 24 * 3600)));
}

#[test]
fn a_stream_cannot_subscribe_to_ebgands_own_topics() {
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    raw.streams[0].topic = "ebgand/+".into();
    let err = raw.clone().validate().unwrap_err().to_string();
    assert!(
        err.contains("also matches ebgand's own topics ebgand/events"),
        "{err}"
    );
    // Stream ids have several levels: `vibration/m1` alerts on ebgand/alerts/vibration/m1.
    for topic in ["+/alerts/+/+", "+/+/+/+", "ebgand/energy/#"] {
        raw.streams[0].topic = topic.into();
        let err = raw.clone().validate().unwrap_err().to_string();
        assert!(
            err.contains("also matches ebgand's own topics"),
            "{topic}: {err}"
        );
    }
    // And a status topic of the operator's choosing.
    raw.streams[0].topic = "plant/+/vibration".into();
    raw.mqtt.status_topic = "plant/ebgand/vibration".into();
    let err = raw.clone().validate().unwrap_err().to_string();
    assert!(err.contains("plant/ebgand/vibration"), "{err}");
    raw.mqtt.status_topic = "plant/ebgand/status".into();
    raw.validate().unwrap();
}

/// Streams that learn one model from themselves feed one capture: windows of two shapes are
/// refused at once (before, the second stream's windows were dropped from the capture and the
/// trained version refused on it, for good). A model given by its path is checked at load.
#[test]
fn streams_learning_one_model_must_cut_windows_alike() {
    let raw = RawConfig::from_toml(
        r#"
[models.learnt]
path = ""
[[streams]]
name = "a"
topic = "a/+"
model = "learnt"
format = "number"
window = 64
[[streams]]
name = "b"
topic = "b/+"
model = "learnt"
format = "array"
channels = 3
window = 32
"#,
    )
    .unwrap();
    let err = invalid(&raw);
    assert!(
        err.contains("streams \"a\" and \"b\" both learn model \"learnt\"")
            && err.contains("64 x 1 against 32 x 3"),
        "{err}"
    );
}

/// Two streams whose filters can match one topic are refused: routing takes the first, so
/// the other would lose those messages without a word.
#[test]
fn streams_whose_topics_overlap_are_refused() {
    let stream = |name: &str, topic: &str| {
        format!(
            "[[streams]]\nname = \"{name}\"\ntopic = \"{topic}\"\nmodel = \"m\"\nformat = \"number\"\nwindow = 8\n"
        )
    };
    let raw = |streams: String| {
        RawConfig::from_toml(&format!("[models.m]\npath = \"\"\n{streams}")).unwrap()
    };
    let err = invalid(&raw(
        stream("vib", "plant/+/vib") + &stream("all", "plant/#")
    ));
    assert!(
        err.contains("streams \"vib\" and \"all\": topics \"plant/+/vib\" and \"plant/#\""),
        "{err}"
    );
    raw(stream("vib", "plant/+/vib") + &stream("temp", "plant/+/temp"))
        .validate()
        .unwrap();
}

#[test]
fn secrets_do_not_print() {
    let raw = RawConfig::from_toml("[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
    assert!(!format!("{raw:?}").contains("hunter2"));
}

fn invalid(raw: &RawConfig) -> String {
    match raw.validate() {
        Err(ConfigError::Invalid(errs)) => errs.join("\n"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn password_file_is_read_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    raw.mqtt.username = "ebgand".into();
    raw.mqtt.password_file = file.display().to_string();
    let s = raw.validate().unwrap();
    let (user, pass) = s.mqtt.credentials.unwrap();
    assert_eq!((user.as_str(), pass.expose()), ("ebgand", "s3cret"));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let errs = invalid(&raw);
    assert!(errs.contains("readable by every user"), "{errs}");
    assert!(!errs.contains("s3cret"), "{errs}");

    raw.mqtt.password = Secret::new("other");
    assert!(invalid(&raw).contains("give one, not both"));
}

#[test]
fn world_readable_config_must_not_hold_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ebgand.toml");
    std::fs::write(&file, "[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = RawConfig::load(Some(&file), Some(HashMap::new())).unwrap_err();
    assert!(err.to_string().contains("readable by every user"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let raw = RawConfig::load(Some(&file), Some(HashMap::new())).unwrap();
    assert_eq!(raw.mqtt.password.expose(), "hunter2");
}

#[test]
fn an_enormous_window_is_a_config_error() {
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    raw.streams = RawConfig::from_toml(
        "[[streams]]\nname = \"s\"\ntopic = \"a/+\"\nmodel = \"m\"\nformat = \"array\"\nwindow = 4000000000\n",
    )
    .unwrap()
    .streams;
    assert!(invalid(&raw).contains("over the limit"));
    // An audio stream's window counts frames of 64 mel bands each.
    raw.streams = RawConfig::from_toml(
        "[[streams]]\nname = \"s\"\ntopic = \"a/+\"\nmodel = \"m\"\nformat = \"i16le\"\nwindow = 1000000\nlogmel = {}\n",
    )
    .unwrap()
    .streams;
    assert!(invalid(&raw).contains("1000000 x 64 is over the limit"));
    // A model of log-mel windows takes `frames` of them: another window could never load.
    raw.streams = RawConfig::from_toml(
        "[[streams]]\nname = \"s\"\ntopic = \"a/+\"\nmodel = \"m\"\nformat = \"i16le\"\nwindow = 10\nhop = 10\nlogmel = {}\n",
    )
    .unwrap()
    .streams;
    assert!(invalid(&raw).contains("window: 10 must be logmel.frames (5)"));
}

#[test]
fn tls_settings_are_checked() {
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    raw.mqtt.tls.ca_file = "/nonexistent/ca.pem".into();
    assert!(invalid(&raw).contains("enabled = false"));
    raw.mqtt.tls.enabled = true;
    let errs = invalid(&raw);
    assert!(errs.contains("mqtt.tls: /nonexistent/ca.pem"), "{errs}");
    raw.mqtt.tls.client_cert_file = "/nonexistent/client.pem".into();
    assert!(invalid(&raw).contains("give both or neither"));
}

#[test]
fn cpu_is_always_the_last_resort() {
    let mut raw = RawConfig::from_toml(DOCUMENTED_CONFIG).unwrap();
    raw.runtime.providers = vec!["tensorrt".into(), "cuda".into()];
    let s = raw.validate().unwrap();
    assert_eq!(
        s.runtime.providers,
        vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
    );
}

#[test]
fn judgment_settings_are_checked_and_reach_the_streams() {
    use crate::detect::Judging;
    let bad = RawConfig::from_toml(
        "[detect]\njudge = \"probabilty\"\nalert_probability = 0.97\nlearn_windows = 4\n\
         warm_windows = 8\nmemory_windows = 2\nlearn_below = 0.9999\ntail_quantile = 1.0\nstale_after = 1.5\n\
         stale_min_s = -1\nrestless_probability = 0.99995\nrestless_windows = 0\nrestless_share = 1.5\n\
         restless_calm = 0\nquiet_probability = 0.5\nquiet_windows = 2000000\nthin_widen = 0.5\n\
         season_acf = 1.5\nseason_weeks = 1\nseason_days = 1\nseason_memory = 0\nseason_teaches = 1.5\n\
         season_zone = \"Europe/Berln\"\n",
    )
    .unwrap();
    let errs = invalid(&bad);
    for key in [
        "detect.restless_probability",
        "detect.restless_windows",
        "detect.restless_share",
        "detect.restless_calm",
        "detect.quiet_probability",
        "detect.quiet_windows",
        "detect.thin_widen",
        "detect.season_acf",
        "detect.season_weeks",
        "detect.season_days",
        "detect.season_memory",
        "detect.season_teaches",
        "detect.season_zone",
        "detect.judge",
        "detect.alert_probability",
        "detect.learn_windows",
        "detect.warm_windows",
        "detect.memory_windows",
        "detect.learn_below",
        "detect.tail_quantile",
        "detect.stale_after",
        "detect.stale_min_s",
    ] {
        assert!(errs.contains(key), "missing {key} in:\n{errs}");
    }
    let streams = "[models.m]\npath = \"\"\n[[streams]]\nname = \"a\"\ntopic = \"a/+\"\n\
                   model = \"m\"\nformat = \"array\"\nwindow = 8\n";
    let judged = |extra: &str, detect: &str| {
        let text = format!("[detect]\n{detect}\n{streams}{extra}\n");
        RawConfig::from_toml(&text).unwrap().validate()
    };
    let s = judged("", "").unwrap();
    assert_eq!(s.streams[0].judging, Judging::Probability(0.9999));
    assert_eq!(s.calibration.learn_windows, 512);
    assert_eq!(s.calibration.warm_windows, 2016);
    assert_eq!(s.calibration.shadow().learn_windows, 2016);
    assert!(s.calibration.per_channel);
    let r = s.calibration.restless;
    assert_eq!(
        (r.probability, r.windows, r.share, r.calm, r.hold),
        (0.99, 100, 0.9, 0.5, false)
    );
    assert_eq!(
        (s.calibration.quiet.windows, s.calibration.quiet.probability),
        (200, 0.999_999)
    );
    let calm = judged("", "restless_share = 0.6\nrestless_calm = 0.7").unwrap_err();
    assert!(calm.to_string().contains("detect.restless_calm"), "{calm}");
    let s = judged("", "restless_probability = 0\nrestless_hold = true").unwrap();
    assert!(!s.calibration.restless.on() && s.calibration.restless.hold);
    let s = judged("alert_probability = 0.999", "per_channel = false").unwrap();
    assert_eq!(s.streams[0].judging, Judging::Probability(0.999));
    assert!(!s.calibration.per_channel);
    let s = judged("threshold = 0.5", "").unwrap();
    assert_eq!(s.streams[0].judging, Judging::Energy(Some(0.5)));
    let s = judged("", "judge = \"threshold\"").unwrap();
    assert_eq!(s.streams[0].judging, Judging::Energy(None));
    let both = judged("threshold = 0.5\nalert_probability = 0.9999", "").unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
    let low = judged("alert_probability = 0.5", "").unwrap_err();
    assert!(low.to_string().contains("alert_probability"), "{low}");
    // Accepting a held level: kept raised by default, `[detect]` for every stream, a stream's
    // own over it.
    let accept = |extra: &str, detect: &str| judged(extra, detect).unwrap().streams[0].accept;
    assert_eq!(accept("", ""), Accept::Never);
    assert_eq!(accept("", "accept_after = 1000"), Accept::Windows(1000));
    assert_eq!(
        accept("accept_after = 0", "accept_after = 1000"),
        Accept::Never
    );
    assert_eq!(accept("accept_after = 3600", ""), Accept::Windows(3600));
    // In seconds of the stream's own time: only for a stream whose samples carry it.
    let timed = "[models.m]\npath = \"\"\n[[streams]]\nname = \"a\"\ntopic = \"a/+\"\n\
                 model = \"m\"\nformat = \"object\"\nfields = [\"x\"]\nwindow = 8\n\
                 timestamp_field = \"t\"\n";
    let timed = |extra: &str, detect: &str| {
        let text = format!("[detect]\n{detect}\n{timed}{extra}\n");
        RawConfig::from_toml(&text).unwrap().validate()
    };
    let accept = |extra: &str, detect: &str| timed(extra, detect).unwrap().streams[0].accept;
    assert_eq!(accept("", "accept_after_s = 7200"), Accept::Seconds(7200.0));
    // A stream's own pair replaces [detect]'s, whichever it sets.
    assert_eq!(
        accept("accept_after = 50", "accept_after_s = 7200"),
        Accept::Windows(50)
    );
    assert_eq!(
        accept("accept_after_s = 60.5", "accept_after = 9"),
        Accept::Seconds(60.5)
    );
    assert_eq!(
        accept("accept_after_s = 0", "accept_after_s = 7200"),
        Accept::Never
    );
    for (extra, detect, says) in [
        (
            "",
            "accept_after = 10\naccept_after_s = 60",
            "detect.accept_after (10 windows) / accept_after_s (60 s): give one, not both",
        ),
        (
            "accept_after = 10\naccept_after_s = 60",
            "",
            "streams[0] (a).accept_after (10 windows)",
        ),
        (
            "",
            "accept_after_s = -1",
            "detect.accept_after_s: -1 must be",
        ),
        (
            "accept_after_s = nan",
            "",
            "streams[0] (a).accept_after_s: NaN must be",
        ),
    ] {
        let e = timed(extra, detect).unwrap_err().to_string();
        assert!(e.contains(says), "{extra} / {detect}: {e}");
    }
    // A stream whose samples carry no time cannot count seconds, [detect]'s or its own.
    let e = judged("", "accept_after_s = 7200").unwrap_err().to_string();
    assert!(
        e.contains("streams[0] (a): [detect] accept_after_s counts the stream's own time"),
        "{e}"
    );
    let e = judged("accept_after_s = 60", "").unwrap_err().to_string();
    assert!(e.contains("streams[0] (a).accept_after_s counts"), "{e}");
    assert_eq!(
        judged("accept_after = 60", "accept_after_s = 7200")
            .unwrap()
            .streams[0]
            .accept,
        Accept::Windows(60)
    );
}

#[test]
fn a_stream_s_own_settings_are_checked_with_detect_s_and_reach_it() {
    use crate::detect::StreamTuning;
    let streams = "[models.m]\npath = \"\"\n\
                   [[streams]]\nname = \"fast\"\ntopic = \"a/+\"\nmodel = \"m\"\nformat = \"array\"\nwindow = 8\n\
                   [[streams]]\nname = \"slow\"\ntopic = \"b/+\"\nmodel = \"m\"\nformat = \"array\"\nwindow = 8\n";
    let judged = |slow: &str, detect: &str| {
        let text = format!("[detect]\n{detect}\n{streams}{slow}\n");
        RawConfig::from_toml(&text).unwrap().validate()
    };
    let s = judged("", "").unwrap();
    assert!(s.streams.iter().all(|s| s.tuning.is_empty()));
    assert_eq!(s.learn_windows("m"), 512);
    let s = judged(
        "learn_windows = 1000\nwarm_windows = 20\nmemory_windows = 1000\ndrift_windows = 5\n\
         level_windows = 0\nrestless_windows = 10\nquiet_windows = 0\nseason = false",
        "",
    )
    .unwrap();
    assert!(s.streams[0].tuning.is_empty());
    assert_eq!(
        s.streams[1].tuning,
        StreamTuning {
            learn_windows: Some(1000),
            warm_windows: Some(20),
            memory_windows: Some(1000),
            drift_windows: Some(5),
            level_windows: Some(0),
            restless_windows: Some(10),
            quiet_windows: Some(0),
            no_season: true,
        }
    );
    // The cold start keeps what the longest-learning stream of a model needs.
    assert_eq!(s.learn_windows("m"), 1000);
    assert_eq!(s.learn_windows("other"), 512);
    // Checked as [detect]'s are, against [detect]'s for the ones the stream leaves alone,
    // and said to be the stream's.
    for (slow, detect, says) in [
        (
            "learn_windows = 9000",
            "",
            "streams[1] (slow).memory_windows: 8640 must be at least learn_windows (9000)",
        ),
        (
            "memory_windows = 100",
            "learn_windows = 200",
            "streams[1] (slow).memory_windows: 100 must be at least learn_windows (200)",
        ),
        (
            "warm_windows = 4",
            "",
            "streams[1] (slow).warm_windows: 4 is below 16",
        ),
        (
            "restless_windows = 0",
            "",
            "streams[1] (slow).restless_windows: 0 must be between 1 and 100000",
        ),
        (
            "quiet_windows = 2000000",
            "",
            "streams[1] (slow).quiet_windows: 2000000 must be at most 1000000",
        ),
        // true is the default: said only where it cannot hold.
        (
            "season = true",
            "",
            "streams[1] (slow).season: true needs the samples' times",
        ),
        (
            "season = true",
            "season_acf = 0",
            "streams[1] (slow).season: true, but [detect] season_acf = 0 turns seasons off",
        ),
    ] {
        let e = judged(slow, detect).unwrap_err().to_string();
        assert!(e.contains(says), "{slow} / {detect}: {e}");
        assert!(!e.contains("streams[0]"), "{e}");
    }
    // What is wrong with [detect]'s alone is said once, of [detect], whatever a stream sets
    // (its own learn_windows does not excuse [detect]'s).
    let e = judged("learn_windows = 100", "learn_windows = 10")
        .unwrap_err()
        .to_string();
    assert!(e.contains("detect.learn_windows: 10 is below 16"), "{e}");
    let e = judged(
        "level_windows = 50",
        "learn_windows = 200\nmemory_windows = 100",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("detect.memory_windows: 100 must be"), "{e}");
    assert!(!e.contains("streams[1]"), "{e}");
}

#[test]
fn stale_streams_are_on_by_default_and_off_at_zero() {
    let doc = RawConfig::default().validate().unwrap();
    assert_eq!(
        doc.stale,
        Some(Staleness {
            multiple: 10.0,
            floor: Duration::from_secs(10),
        })
    );
    let off = RawConfig::from_toml("[detect]\nstale_after = 0\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(off.stale, None);
}

#[test]
fn listen_addresses_are_read_as_people_write_them() {
    let at = |listen: &str| {
        RawConfig::from_toml(&format!("[http]\nlisten = {listen:?}\n"))
            .unwrap()
            .validate()
            .map(|s| s.http_listen)
    };
    assert_eq!(at(":9898").unwrap(), Some("0.0.0.0:9898".parse().unwrap()));
    assert_eq!(
        at("127.0.0.1:9").unwrap(),
        Some("127.0.0.1:9".parse().unwrap())
    );
    assert!(at("localhost:9898").unwrap().unwrap().ip().is_loopback());
    assert!(
        invalid(&RawConfig::from_toml("[http]\nlisten = \":99999\"\n").unwrap())
            .contains("http.listen")
    );
    assert!(
        invalid(&RawConfig::from_toml("[http]\nlisten = \"9898\"\n").unwrap())
            .contains("http.listen")
    );
}

#[test]
fn a_file_is_read_strictly_with_its_lines() {
    let text = "[mqtt]\nport = 1883.9\npublish_energy = \"yes\"\n[oops]\na = 1\nb = 2\n[detect]\nraise_after = 2\n";
    let (problems, known, rest) = super::strict(Path::new("c.toml"), text);
    assert_eq!(
        problems,
        [
            "c.toml:2: invalid type: floating point `1883.9`, expected u16",
            "c.toml:3: invalid type: string \"yes\", expected a boolean",
            "c.toml:4: unknown field `oops`, expected one of `node`, `mqtt`, `runtime`, `models`, `scoring`, `detect`, `limits`, `partition`, `http`, `log`, `shutdown`, `train`, `registry`, `control`, `learning`, `journal`, `homeassistant`, `streams`",
        ]
    );
    // The unknown section goes with its keys; values of another type stay for a lenient read.
    assert_eq!(known.lines().nth(1), Some("port = 1883.9"));
    assert!(!known.contains("oops") && !known.contains("b = 2"));
    assert!(rest.contains("raise_after = 2") && !rest.contains("1883.9"));
}

#[test]
fn an_object_stream_has_a_channel_per_field_unless_it_says_otherwise() {
    let stream = |channels: &str| {
        format!(
            "[models.m]\npath = \"x\"\n[[streams]]\nname = \"pump\"\ntopic = \"plant/+/pump\"\n\
             model = \"m\"\nformat = \"object\"\nfields = [\"vibration\", \"current\", \"pressure\"]\n\
             {channels}window = 64\n"
        )
    };
    let s = RawConfig::from_toml(&stream(""))
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(s.streams[0].channels.get(), 3);
    let s = RawConfig::from_toml(&stream("channels = 3\n"))
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(s.streams[0].channels.get(), 3);
    let err = RawConfig::from_toml(&stream("channels = 2\n"))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels: 2 but 3 fields are listed"), "{err}");
}
