//! Shared checks for the fuzz targets in `fuzz_targets/`. Each target feeds untrusted bytes to
//! one of ebgand's parsers the way the daemon does and asserts what must hold of the result;
//! a panic (in ebgand or in an assertion here) is a finding. `docs/FUZZING.md` has the commands.

use std::path::Path;

use ebgand::control::{Command, ControlMessage};
use ebgand::pipeline::{DecodeError, PayloadFormat, decode_into};

/// Channel counts tried for the payload formats that take any count. 0 is included on purpose:
/// config validation refuses it, but the decoder must not panic on it either.
pub const MAX_CHANNELS: usize = 16;

/// Splits `data` into a channel count (first byte) and the payload (the rest).
pub fn channels_and_payload(data: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, payload) = data.split_first()?;
    Some((usize::from(first) % (MAX_CHANNELS + 1), payload))
}

/// Decodes `payload` and checks the result against the decoder's contract.
pub fn check_decode(format: &PayloadFormat, channels: usize, payload: &[u8]) {
    // Stale content from an earlier payload must never leak into the result.
    let mut out = vec![f32::NAN, 7.0];
    match decode_into(format, channels, payload, &mut out) {
        Ok(timestamp) => {
            assert!(!out.is_empty(), "Ok with no samples");
            assert!(channels > 0, "Ok with zero channels");
            assert_eq!(out.len() % channels, 0, "Ok with a partial sample");
            assert!(
                out.iter().all(|v| v.is_finite()),
                "Ok with a non-finite value"
            );
            match format {
                PayloadFormat::Number => {
                    assert_eq!(out.len(), 1);
                    assert!(timestamp.is_none());
                    let v: f64 = serde_json::from_slice(payload).expect("Ok but not a number");
                    assert_eq!(out[0].to_bits(), (v as f32).to_bits());
                }
                PayloadFormat::Array => assert!(timestamp.is_none()),
                PayloadFormat::Object {
                    fields,
                    timestamp_field,
                } => {
                    assert_eq!(out.len(), fields.len());
                    assert_eq!(timestamp.is_some(), timestamp_field.is_some());
                    if let Some(ts) = timestamp {
                        assert!(ts.is_string() || ts.is_number(), "timestamp {ts:?}");
                    }
                }
                PayloadFormat::F32Le => {
                    assert!(timestamp.is_none());
                    assert_eq!(out.len() * 4, payload.len());
                    for (v, b) in out.iter().zip(payload.chunks_exact(4)) {
                        assert_eq!(v.to_bits(), u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                PayloadFormat::I16Le => {
                    assert!(timestamp.is_none());
                    assert_eq!(out.len() * 2, payload.len());
                    assert!(out.iter().all(|v| (-1.0..1.0).contains(v)));
                }
            }
        }
        Err(e) => {
            // The message is logged and published; building it must not panic either.
            assert!(!e.to_string().is_empty());
            match e {
                DecodeError::WrongLength { channels: c, .. } => assert_eq!(c, channels),
                DecodeError::NotFinite { index } => assert!(index < out.len()),
                DecodeError::Json(_) | DecodeError::Field { .. } | DecodeError::Empty => {}
            }
        }
    }
}

/// Field names an object stream may list: ordinary, duplicated, empty and non-ASCII.
const FIELDS: [&str; 8] = ["a", "b", "x", "a", "", "t", "é", "value"];

/// The object format and channel count taken from the first byte of `data`: bits 0-2 the number
/// of fields, bit 3 whether a timestamp field `t` is named, bit 4 whether channels equals the
/// field count (as validation requires) or bits 5-7 give it.
pub fn object_format(data: &[u8]) -> Option<(PayloadFormat, usize, &[u8])> {
    let (&first, payload) = data.split_first()?;
    let n = usize::from(first & 7);
    let fields = FIELDS[..n].iter().map(|f| (*f).to_owned()).collect();
    let timestamp_field = (first & 8 != 0).then(|| "t".to_owned());
    let channels = if first & 16 != 0 {
        n
    } else {
        usize::from(first >> 5)
    };
    Some((
        PayloadFormat::Object {
            fields,
            timestamp_field,
        },
        channels,
        payload,
    ))
}

/// Parses a config file's text and validates it, as `ebgand` does at start-up.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw = match ebgand::config::RawConfig::from_toml(text) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    match raw.validate() {
        Ok(settings) => {
            for s in &settings.streams {
                assert!(s.window.get() >= s.hop.get(), "hop > window accepted");
                assert!(!s.name.is_empty());
            }
            let _ = settings.require_streams();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// The folder the manifest target writes a version into (one per process).
fn version_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ebgand-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The committed fixture's model, so that a manifest naming its SHA-256 can open.
        std::fs::write(
            dir.join("model.onnx"),
            include_bytes!("../../models/vibration/fixture-1/model.onnx"),
        )
        .expect("model.onnx");
        dir
    })
}

/// Parses manifest text; when it parses, also opens it as a model version (the value checks
/// and the content hash) from a scratch folder holding the fixture's `model.onnx`.
pub fn check_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("manifest.toml");
    let manifest = match ebgand::model::Manifest::from_toml(text, path) {
        Ok(m) => m,
        Err(e) => {
            assert!(
                matches!(e, ebgand::model::ModelError::Manifest { .. }),
                "{e:?}"
            );
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let dir = version_dir();
    std::fs::write(dir.join("manifest.toml"), text).expect("write manifest");
    match ebgand::model::ModelVersion::open(dir) {
        Ok(v) => {
            assert_eq!(v.manifest.format, ebgand::model::manifest::FORMAT);
            assert_eq!(v.manifest.input, manifest.input);
            assert!(v.manifest.input.window > 0 && v.manifest.input.channels > 0);
            assert!(v.manifest.threshold.value.is_finite() && v.manifest.threshold.value > 0.0);
            assert!(matches!(
                v.manifest.input.kind.as_str(),
                "window" | "logmel"
            ));
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    ebgand::model::ModelError::Manifest { .. }
                        | ebgand::model::ModelError::Hash { .. }
                ),
                "{e:?}"
            );
        }
    }
}

/// The control commands; the first byte of the input picks one, or (>= 6) takes the command
/// name from the input up to the first newline.
const COMMANDS: [&str; 6] = [
    "reload", "activate", "rollback", "train", "shadow", "promote",
];

/// Parses a control message as the daemon does for `{prefix}/control/<command>`.
pub fn check_control(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (command, payload) = match COMMANDS.get(usize::from(first)) {
        Some(c) => ((*c).to_owned(), rest),
        None => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let Ok(name) = std::str::from_utf8(&rest[..end]) else {
                return;
            };
            (name.to_owned(), rest.get(end + 1..).unwrap_or_default())
        }
    };
    let name_ok = |s: &str| {
        !s.is_empty() && s.len() <= 128 && !s.contains(['/', '\\']) && !s.starts_with('.')
    };
    match ebgand::control::parse(&command, payload) {
        ControlMessage::Command(c) => {
            assert_eq!(c.name(), command);
            match &c {
                Command::Reload => {}
                Command::Activate { model, version } | Command::Shadow { model, version } => {
                    assert!(name_ok(model) && name_ok(version), "{c:?}");
                }
                Command::Rollback { model }
                | Command::Train { model }
                | Command::Promote { model } => assert!(name_ok(model), "{c:?}"),
            }
        }
        ControlMessage::Refused {
            command: echoed,
            reason,
        } => {
            assert!(echoed.chars().count() <= 64);
            assert!(command.starts_with(&echoed));
            assert!(!reason.is_empty());
        }
    }
}

/// FFT sizes the log-mel target picks from: small, so that inputs of a few KiB hold frames.
const N_FFTS: [usize; 8] = [2, 3, 4, 7, 16, 64, 128, 256];
/// Sample rates the log-mel target picks from.
const RATES: [u32; 4] = [8_000, 16_000, 22_050, 44_100];

/// An audio stream (`logmel = {...}`): log-mel parameters from the first three bytes, then
/// payloads, each a length byte (in samples) and that many `i16le` samples, decoded as the
/// ingest does (one channel) and pushed through the stream's [`Framer`]. Checks that the frames
/// out are exactly those a stream of the decoded samples holds.
///
/// [`Framer`]: ebgand::pipeline::features::Framer
pub fn check_logmel(data: &[u8]) {
    use ebgand::pipeline::features::{Framer, LogMelParams};
    let [b0, b1, b2, rest @ ..] = data else {
        return;
    };
    let n_fft = N_FFTS[usize::from(b0 & 7)];
    let params = LogMelParams {
        sample_rate: RATES[usize::from(b0 >> 6)],
        n_fft,
        // Up to four times n_fft: hops longer than the frame skip samples between frames.
        hop: 1 + usize::from(*b1) % (4 * n_fft),
        n_mels: 1 + usize::from(b2 & 31),
        frames: 1,
        fmin: 0.0,
        fmax: None,
    };
    // Config validation refuses what `Framer::new` refuses (an empty mel band, mostly).
    let Ok(mut framer) = Framer::new(params.clone()) else {
        return;
    };
    let (mut samples, mut frames, mut total) = (Vec::new(), Vec::new(), 0usize);
    let mut rest = rest;
    while let [len, tail @ ..] = rest {
        let bytes = (2 * usize::from(*len)).min(tail.len());
        let (payload, next) = tail.split_at(bytes);
        rest = next;
        if decode_into(&PayloadFormat::I16Le, 1, payload, &mut samples).is_ok() {
            total += samples.len();
            framer.push(&samples, &mut frames);
        }
    }
    let expected = if total >= n_fft {
        1 + (total - n_fft) / params.hop
    } else {
        0
    };
    assert_eq!(
        frames.len(),
        expected * params.n_mels,
        "{total} samples, {params:?}"
    );
    assert!(frames.iter().all(|v| v.is_finite()));
}

/// A scratch folder for the journal target, emptied before each run (on tmpfs when there is
/// one: the journal fsyncs, which is free there).
fn journal_dir() -> std::path::PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("ebgand-fuzz-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("journal scratch folder");
    dir
}

/// `data` as journal records: chunks `[u16 LE length][body]`, each framed with its length and
/// correct CRC (so the body decoder is reached), then whatever is left, unframed.
fn framed(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len));
        let Some((body, rest)) = rest.split_at_checked(len) else {
            break;
        };
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        data = rest;
    }
    out.extend_from_slice(data);
    out
}

/// A journal segment as a crash or a bad disk may leave it (first byte even: the bytes as
/// given; odd: framed with valid CRCs, see [`framed`]). `Journal::open` must recover the good
/// records and cut the rest, and the journal must stay appendable: a record appended after the
/// recovery reads back after the recovered ones.
pub fn check_journal(data: &[u8]) {
    use ebgand::durable::journal::Journal;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let segment = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        framed(rest)
    };
    let dir = journal_dir();
    std::fs::write(dir.join(format!("{:020}.seg", 0)), &segment).expect("write segment");
    let (mut journal, found) = Journal::open(&dir, 1 << 20).expect("open");
    for r in &found {
        assert!(r.end() >= r.start);
    }
    let pos = journal
        .append(7, "sensors/m1/vibration", 3, 2, b"[1,2]")
        .expect("append");
    journal.sync().expect("sync");
    drop(journal);
    let (_, again) = Journal::open(&dir, 1 << 20).expect("reopen");
    assert_eq!(again.len(), found.len() + 1, "records lost or invented");
    assert_eq!(
        &again[..found.len()],
        &found[..],
        "recovered records changed"
    );
    let last = again.last().expect("the appended record");
    assert_eq!(
        (
            last.pos,
            last.pkid,
            last.topic.as_str(),
            last.start,
            last.samples
        ),
        (pos, 7, "sensors/m1/vibration", 3, 2)
    );
    assert_eq!(last.payload, b"[1,2]");
    let _ = std::fs::remove_dir_all(&dir);
}
