//! Regression tests from fuzzing (`make fuzz`, `docs/FUZZING.md`): the inputs that crashed a
//! target, and the edge inputs that decide a parser's contract, each fed to the same entry point
//! the fuzz target drives (`fuzz/fuzz_targets/`) with the exact outcome asserted. They double as
//! the seed ideas for a fresh corpus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ebgand::config::{ConfigError, RawConfig};
use ebgand::control::{self, Command, ControlMessage};
use ebgand::model::{Manifest, ModelError, ModelVersion};
use ebgand::pipeline::features::{Framer, LogMel, LogMelParams};
use ebgand::pipeline::{DecodeError, PayloadFormat, decode_into};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Payload decoders (fuzz targets decode_number, decode_array, decode_object, decode_f32le,
// decode_i16le)
// ---------------------------------------------------------------------------------------------

fn dec(format: &PayloadFormat, channels: usize, payload: &[u8]) -> Result<Vec<f32>, DecodeError> {
    // Stale values must not survive into the result.
    let mut out = vec![f32::NAN; 3];
    decode_into(format, channels, payload, &mut out).map(|_| out)
}

fn wrong_length(len: usize, channels: usize) -> DecodeError {
    DecodeError::WrongLength { len, channels }
}

#[test]
fn number_payloads() {
    let n = PayloadFormat::Number;
    assert_eq!(dec(&n, 1, b" 7\n"), Ok(vec![7.0]));
    assert_eq!(
        dec(&n, 1, b"-0").map(|v| v[0].to_bits()),
        Ok((-0.0f32).to_bits())
    );
    // Below f32's range rounds to zero; the largest f32 stays finite; beyond it is infinite.
    assert_eq!(dec(&n, 1, b"1e-50"), Ok(vec![0.0]));
    assert_eq!(dec(&n, 1, b"3.4028235e38"), Ok(vec![f32::MAX]));
    assert_eq!(
        dec(&n, 1, b"3.5e38"),
        Err(DecodeError::NotFinite { index: 0 })
    );
    // Beyond f64's range is a JSON error, not infinity.
    assert!(matches!(dec(&n, 1, b"1e400"), Err(DecodeError::Json(_))));
    for bad in [&b""[..], b"1 2", b"Infinity", b"[1]", b"\xff"] {
        assert!(
            matches!(dec(&n, 1, bad), Err(DecodeError::Json(_))),
            "{bad:?}"
        );
    }
    // One value is never a whole sample of two channels, nor of zero.
    assert_eq!(dec(&n, 2, b"1"), Err(wrong_length(1, 2)));
    assert_eq!(dec(&n, 0, b"1"), Err(wrong_length(1, 0)));
}

#[test]
fn array_payloads() {
    let a = PayloadFormat::Array;
    assert_eq!(
        dec(&a, 3, b"[1,2,3,4,5,6]"),
        Ok(vec![1., 2., 3., 4., 5., 6.])
    );
    assert_eq!(dec(&a, 1, b"[[1],[2]]"), Ok(vec![1., 2.]));
    // Zero channels (config refuses it) decodes to an error, never a division by zero.
    assert_eq!(dec(&a, 0, b"[1]"), Err(wrong_length(1, 0)));
    assert_eq!(dec(&a, 0, b"[[]]"), Err(DecodeError::Empty));
    assert_eq!(dec(&a, 0, b"[[],[]]"), Err(DecodeError::Empty));
    assert_eq!(dec(&a, 1, b"[[1],[]]"), Err(wrong_length(0, 1)));
    assert_eq!(dec(&a, 2, b"[[1,2],[3,4,5]]"), Err(wrong_length(3, 2)));
    assert_eq!(
        dec(&a, 1, b"[[1],[1e39]]"),
        Err(DecodeError::NotFinite { index: 1 })
    );
    // Mixed nesting is neither form.
    for bad in [
        &b"[[1,2],3]"[..],
        b"[1,[2]]",
        b"[[[1]]]",
        b"[null]",
        b"[\"1\"]",
    ] {
        assert!(
            matches!(dec(&a, 1, bad), Err(DecodeError::Json(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Deep nesting is refused at the first level that is not a number (typed, no recursion).
    let deep = "[".repeat(100_000);
    assert!(matches!(
        dec(&a, 1, deep.as_bytes()),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn object_payloads() {
    let f = |fields: &[&str], ts: Option<&str>| PayloadFormat::Object {
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        timestamp_field: ts.map(str::to_owned),
    };
    let ab_t = f(&["a", "b"], Some("t"));
    let mut out = Vec::new();
    let ts = decode_into(&ab_t, 2, br#"{"t":1700000000,"b":2,"a":1}"#, &mut out);
    assert_eq!(ts, Ok(Some(Value::from(1_700_000_000))));
    assert_eq!(out, vec![1.0, 2.0]);
    // A duplicated key: the last value wins, as in serde_json's map.
    assert_eq!(dec(&f(&["a"], None), 1, br#"{"a":1,"a":2}"#), Ok(vec![2.0]));
    // The same field twice, and the empty field name, are plain fields.
    assert_eq!(
        dec(&f(&["a", "a"], None), 2, br#"{"a":3}"#),
        Ok(vec![3.0, 3.0])
    );
    assert_eq!(dec(&f(&[""], None), 1, br#"{"":5}"#), Ok(vec![5.0]));
    let field = |name: &str| Err(DecodeError::Field { field: name.into() });
    assert_eq!(dec(&ab_t, 2, br#"{"a":1,"b":"2","t":0}"#), field("b"));
    assert_eq!(dec(&ab_t, 2, br#"{"a":1,"b":2,"t":true}"#), field("t"));
    assert_eq!(dec(&ab_t, 2, br#"{"a":1,"b":2,"t":null}"#), field("t"));
    assert_eq!(dec(&ab_t, 2, br#"{"a":1,"b":2,"t":{}}"#), field("t"));
    assert_eq!(dec(&ab_t, 2, br#"{"a":1,"b":2}"#), field("t"));
    assert_eq!(
        dec(&ab_t, 2, br#"{"a":1,"b":1e39,"t":0}"#),
        Err(DecodeError::NotFinite { index: 1 })
    );
    // Fields and channels that disagree (config refuses it) are an error, not a bad window.
    assert_eq!(
        dec(&f(&["a", "b"], None), 3, br#"{"a":1,"b":2}"#),
        Err(wrong_length(2, 3))
    );
    // No fields: no samples.
    assert_eq!(dec(&f(&[], None), 0, b"{}"), Err(DecodeError::Empty));
    // An object is parsed whole, as JSON values: deep nesting in an unused field hits
    // serde_json's recursion limit instead of the stack's.
    let deep = format!(r#"{{"a":1,"x":{}"#, "[".repeat(100_000));
    match dec(&f(&["a"], None), 1, deep.as_bytes()) {
        Err(DecodeError::Json(m)) => assert!(m.contains("recursion limit exceeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    for bad in [&b"[1]"[..], b"1", b"{\"a\":1", b"{\"a\":1}x"] {
        assert!(
            matches!(dec(&f(&["a"], None), 1, bad), Err(DecodeError::Json(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn raw_payloads() {
    let (f, i) = (PayloadFormat::F32Le, PayloadFormat::I16Le);
    // Zero channels: nothing is a whole sample; empty is empty.
    assert_eq!(dec(&f, 0, b""), Err(DecodeError::Empty));
    assert_eq!(dec(&f, 0, &[0; 4]), Err(wrong_length(4, 0)));
    assert_eq!(dec(&i, 0, &[0; 2]), Err(wrong_length(2, 0)));
    assert_eq!(dec(&f, 2, &[0; 4]), Err(wrong_length(4, 2)));
    assert_eq!(dec(&i, 2, &[0; 6]), Err(wrong_length(6, 2)));
    assert_eq!(dec(&f, 1, &1u32.to_le_bytes()), Ok(vec![f32::from_bits(1)]));
    assert_eq!(
        dec(
            &f,
            1,
            &[1.0f32.to_le_bytes(), f32::INFINITY.to_le_bytes()].concat()
        ),
        Err(DecodeError::NotFinite { index: 1 })
    );
    assert_eq!(
        dec(&i, 2, &[0x00, 0x80, 0xff, 0x7f]),
        Ok(vec![-1.0, 32_767.0 / 32_768.0])
    );
}

// ---------------------------------------------------------------------------------------------
// Audio payloads through the log-mel framer (fuzz target decode_logmel)
// ---------------------------------------------------------------------------------------------

fn tiny_logmel(hop: usize) -> LogMelParams {
    LogMelParams {
        sample_rate: 8_000,
        n_fft: 3,
        hop,
        n_mels: 1,
        frames: 1,
        fmin: 0.0,
        fmax: None,
    }
}

/// Decodes each `i16le` payload as the ingest does and pushes it through `framer`.
fn frame_payloads(framer: &mut Framer, payloads: &[&[u8]]) -> Vec<f32> {
    let (mut samples, mut frames) = (Vec::new(), Vec::new());
    for p in payloads {
        if decode_into(&PayloadFormat::I16Le, 1, p, &mut samples).is_ok() {
            framer.push(&samples, &mut frames);
        }
    }
    frames
}

/// Crash `decode_logmel/crash-05b7f951`: a hop longer than the frame (`logmel.hop` > `n_fft`,
/// which config accepts) made `Framer::push` subtract past the samples it held and panic.
#[test]
fn logmel_hop_longer_than_the_frame_does_not_panic() {
    let mut framer = Framer::new(tiny_logmel(9)).unwrap();
    let frames = frame_payloads(&mut framer, &[b"", &[0x94, 0x94, 0x94, 0x94, 0x00, 0x01]]);
    assert_eq!(frames.len(), 1);
}

/// Found against the first fix (`decode_logmel/crash-97fe9beb`): the samples still to skip
/// before the next frame must carry over more than one payload. 4 + 2 + 3 samples with
/// `n_fft` 3 and hop 12 hold one frame; the second starts at sample 12.
#[test]
fn logmel_skip_carries_across_payloads() {
    let payloads: [&[u8]; 5] = [
        &[0x04, 0x04, 0, 0, 0, 0, 0, 0],
        b"",
        &[0x04, 0x06, 0x2b, 0x00],
        &[0x94, 0xa6, 0x00, 0x01, 0xff, 0xff],
        &[
            0x10, 0x00, 0x00, 0x40, 0x00, 0xc0, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00,
        ],
    ];
    let mut framer = Framer::new(tiny_logmel(12)).unwrap();
    assert_eq!(frame_payloads(&mut framer, &payloads[..4]).len(), 1);
    let mut framer = Framer::new(tiny_logmel(12)).unwrap();
    let frames = frame_payloads(&mut framer, &payloads);
    // 15 samples: frames at 0 and 12.
    assert_eq!(frames.len(), 2);
    let mut all = Vec::new();
    let mut samples = Vec::new();
    for p in &payloads {
        if decode_into(&PayloadFormat::I16Le, 1, p, &mut samples).is_ok() {
            all.extend_from_slice(&samples);
        }
    }
    assert_eq!(all.len(), 15);
    let mut expected = [0.0f32; 2];
    let mut logmel = LogMel::new(tiny_logmel(12)).unwrap();
    logmel.frame_into(&all[0..3], &mut expected[..1]);
    logmel.frame_into(&all[12..15], &mut expected[1..]);
    assert_eq!(frames, expected);
}

// ---------------------------------------------------------------------------------------------
// Config (fuzz target config)
// ---------------------------------------------------------------------------------------------

fn invalid(text: &str) -> Vec<String> {
    match RawConfig::from_toml(text).unwrap().validate() {
        Err(ConfigError::Invalid(errs)) => errs,
        other => panic!("{other:?}"),
    }
}

fn audio_stream(logmel: &str) -> String {
    format!(
        "[models.m]\npath = \"x\"\n[[streams]]\nname = \"a\"\ntopic = \"a/+\"\nmodel = \"m\"\n\
         format = \"i16le\"\nwindow = 5\nlogmel = {logmel}\n"
    )
}

/// Out-of-memory in `config` (found by reading the log-mel extractor, confirmed on the fuzz
/// binary): validation builds the stream's log-mel extractor, whose window, FFT buffers and
/// dense `n_mels x (n_fft / 2 + 1)` filterbank grew with the values given: tens of GiB, and an
/// abort instead of a config error.
#[test]
fn oversized_logmel_parameters_are_config_errors() {
    for (logmel, err) in [
        (
            "{ n_fft = 4000000000, n_mels = 64 }",
            "n_fft must be 2 to 65536, got 4000000000",
        ),
        (
            "{ n_fft = 9223372036854775807 }",
            "n_fft must be 2 to 65536, got 9223372036854775807",
        ),
        ("{ n_fft = 65537 }", "n_fft must be 2 to 65536, got 65537"),
        (
            "{ n_fft = 1000000, n_mels = 100000, sample_rate = 4000000000 }",
            "n_fft must be 2 to 65536, got 1000000",
        ),
        ("{ n_mels = 100000 }", "n_mels must be 1 to 512"),
        ("{ frames = 1099511627776 }", "frames must be 1 to 1024"),
    ] {
        assert_eq!(
            invalid(&audio_stream(logmel)),
            vec![format!("streams[0] (a).logmel: {err}")],
            "{logmel}"
        );
    }
    // The bounds themselves are accepted.
    let settings = RawConfig::from_toml(&audio_stream("{ n_fft = 65536, hop = 65536 }"))
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(settings.streams[0].channels.get(), 64);
}

#[test]
fn config_edges() {
    // The empty file is the defaults: valid, but the daemon needs a stream.
    let settings = RawConfig::from_toml("").unwrap().validate().unwrap();
    assert!(settings.streams.is_empty());
    match settings.require_streams() {
        Err(ConfigError::Invalid(errs)) => {
            assert_eq!(
                errs,
                ["streams: no [[streams]] configured; nothing to score"]
            );
        }
        other => panic!("{other:?}"),
    }
    for bad in ["nodes = 1", "[mqtt]\nport = 70000", "[mqtt", "\u{0}"] {
        assert!(
            matches!(RawConfig::from_toml(bad), Err(ConfigError::Load(_))),
            "{bad:?}"
        );
    }
    let ok = RawConfig::from_toml(ebgand::config::DOCUMENTED_CONFIG).unwrap();
    assert!(ok.validate().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Manifest (fuzz target manifest)
// ---------------------------------------------------------------------------------------------

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vibration/fixture-1")
}

fn fixture_manifest() -> String {
    std::fs::read_to_string(fixture().join("manifest.toml")).unwrap()
}

fn manifest_reason(text: &str) -> String {
    let path = Path::new("m/manifest.toml");
    match Manifest::from_toml(text, path) {
        Err(ModelError::Manifest { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        other => panic!("{other:?}"),
    }
}

/// Opens `text` as a model version next to the fixture's `model.onnx`.
fn open(text: &str) -> Result<ModelVersion, ModelError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture().join("model.onnx"), dir.path().join("model.onnx")).unwrap();
    std::fs::write(dir.path().join("manifest.toml"), text).unwrap();
    ModelVersion::open(dir.path())
}

#[test]
fn manifest_parse_edges() {
    let text = fixture_manifest();
    let m = Manifest::from_toml(&text, Path::new("manifest.toml")).unwrap();
    assert_eq!((m.input.window, m.input.channels), (64, 1));
    // Tables this build does not know are kept free-form; keys inside [input] are not.
    assert!(Manifest::from_toml(&format!("{text}\n[extra]\nx = 1\n"), Path::new("m")).is_ok());
    let reason = manifest_reason(&text.replace("dtype = ", "colour = 1\ndtype = "));
    assert!(reason.contains("unknown field `colour`"), "{reason}");
    assert!(!manifest_reason("name = 1").is_empty());
    assert!(!manifest_reason(&text.replace("window = 64", "window = -1")).is_empty());
    assert!(
        !manifest_reason(&text.replace("window = 64", "window = 18446744073709551616")).is_empty()
    );
    assert!(!manifest_reason("\u{feff}\u{0}").is_empty());
}

#[test]
fn manifest_values_refused_on_open() {
    let text = fixture_manifest();
    assert!(open(&text).is_ok());
    let value = text
        .lines()
        .find(|l| l.starts_with("value = "))
        .expect("the fixture's threshold line");
    for (edit, needle) in [
        // NaN and a float beyond f32 (which parses to infinity) are thresholds no window passes.
        (
            text.replace(value, "value = nan"),
            "must be a positive finite number",
        ),
        (
            text.replace(value, "value = 1e39"),
            "must be a positive finite number",
        ),
        (
            text.replace(value, "value = -0.0"),
            "must be a positive finite number",
        ),
        (text.replace("window = 64", "window = 0"), "at least 1"),
        (
            text.replace("kind = \"window\"", "kind = \"logmel\""),
            "needs a [features] table",
        ),
        (
            text.replace("format = 1", "format = 4294967295"),
            "format 4294967295",
        ),
    ] {
        match open(&edit) {
            Err(ModelError::Manifest { reason, .. }) => {
                assert!(reason.contains(needle), "{needle}: {reason}")
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    // The hash is compared without regard to case or surrounding blanks.
    let sha = "5668fe2e04bf368fcf2166f7f27d69bae8df92d57837ce4c7c3e7dc8bba8620f";
    assert!(open(&text.replace(sha, &format!(" {} ", sha.to_uppercase()))).is_ok());
    assert!(matches!(
        open(&text.replace(sha, "")),
        Err(ModelError::Hash { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Control commands (fuzz target control)
// ---------------------------------------------------------------------------------------------

fn refused(command: &str, payload: &[u8]) -> (String, String) {
    match control::parse(command, payload) {
        ControlMessage::Refused { command, reason } => (command, reason),
        other => panic!("{command} {payload:?}: {other:?}"),
    }
}

#[test]
fn control_edges() {
    // A blank payload is no arguments.
    assert_eq!(
        control::parse("reload", b" \r\n\t"),
        ControlMessage::Command(Command::Reload)
    );
    let (_, reason) = refused("rollback", b" \n");
    assert!(reason.contains("missing field `model`"), "{reason}");
    // serde would take a struct from a JSON array of its fields; arguments must be an object.
    for (cmd, payload) in [
        ("activate", &br#"["vib","v2"]"#[..]),
        ("reload", b"[]"),
        ("activate", br#"["vib",".."]"#),
    ] {
        let (_, reason) = refused(cmd, payload);
        assert!(reason.ends_with("must be a JSON object"), "{reason}");
    }
    // Name checks: non-empty, at most 128 bytes, no separators, no leading dot.
    let long = "m".repeat(128);
    assert_eq!(
        control::parse("train", format!(r#"{{"model":"{long}"}}"#).as_bytes()),
        ControlMessage::Command(Command::Train { model: long })
    );
    for model in ["", ".hidden", "..", "a/b", "a\\\\b", &"m".repeat(129)] {
        let payload = format!(r#"{{"model":"{model}"}}"#);
        let (_, reason) = refused("promote", payload.as_bytes());
        assert_eq!(reason, "model must be a plain name", "{model}");
    }
    // An escaped separator is still a separator.
    refused("rollback", br#"{"model":"a\u002fb"}"#);
    // Not UTF-8, not JSON, JSON of another shape.
    for payload in [&b"\xff\xfe"[..], b"{", b"null", b"1", br#"{"model":1}"#] {
        let (_, reason) = refused("rollback", payload);
        assert!(
            reason.starts_with("bad payload for \"rollback\""),
            "{reason}"
        );
    }
    // The echoed command is cut to 64 characters (on a char boundary).
    let (echoed, reason) = refused(&"é".repeat(100), b"{}");
    assert_eq!(echoed, "é".repeat(64));
    assert!(reason.starts_with("unknown command"), "{reason}");
    // ... in the reason too.
    assert!(
        reason.contains(&"é".repeat(64)) && !reason.contains(&"é".repeat(65)),
        "{reason}"
    );
    let (echoed, _) = refused("", b"");
    assert_eq!(echoed, "");
}
