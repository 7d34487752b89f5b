//! The `ebgand` binary: exit codes, check-config, offline scoring, missing prerequisites.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::process::Output;

use common::*;
use ebgand::pipeline::expected_windows;

/// The per-window lines `ebgand score` prints (the clip's summary line comes last, apart).
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `check-config` on the file at `path`, with `env` set: it must refuse (exit 78). What it said.
fn refused_config(path: &std::path::Path, env: &[(&str, &str)]) -> String {
    let o = ebgand(&["check-config", "--config", path.to_str().unwrap()], env);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn check_config_accepts_the_documented_config() {
    let o = ebgand(&["check-config", "--config", "config.toml"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("configuration OK"));
    // `print-default-config` prints that same file, to start a config from.
    let o = ebgand(&["print-default-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        std::fs::read_to_string(root().join("config.toml")).unwrap()
    );
}

#[test]
fn check_config_reports_what_run_would_fail_on_all_at_once_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("five.toml");
    let journal_under_a_file = dir.path().join("five.toml/journal");
    std::fs::write(
        &path,
        format!(
            r#"[mqt]
host = "broker"
[mqtt]
port = 70000
publish_energy = "yes"
[runtime]
library = "/nowhere/libonnxruntime.so"
[journal]
dir = {journal:?}
[models.vibration]
path = "models/vibration/fixture-1"
[[streams]]
name = "vibration"
topic = "sensors/+/vibration"
model = "vibration"
format = "array"
window = 64
"#,
            journal = journal_under_a_file.display().to_string()
        ),
    )
    .unwrap();
    let file = path.display().to_string();
    let err = refused_config(&path, &[]);
    for problem in [
        format!("{file}:1: unknown field `mqt`"),
        format!("{file}:4: invalid value: integer `70000`, expected u16"),
        format!(r#"{file}:5: invalid type: string "yes", expected a boolean"#),
        "runtime.library: cannot load the ONNX Runtime library /nowhere/libonnxruntime.so".into(),
        format!(
            "journal.dir: {}: cannot be created",
            journal_under_a_file.display()
        ),
    ] {
        assert!(err.contains(&problem), "missing {problem:?} in:\n{err}");
    }
    // `run` refuses the same file with the same list, before connecting to anything.
    let o = ebgand(&["run", "--config", &file], &[]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("unknown field `mqt`"), "{}", stderr(&o));
}

/// What `run` would meet later is refused now: state folders that are links to nothing, and a
/// trainer that cannot run when the served models retrain (`retrain_seeded`).
#[test]
fn check_config_refuses_dangling_folders_and_a_missing_trainer_for_retraining() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::os::unix::fs::symlink(dir.path().join("gone"), &outbox).unwrap();
    let path = dir.path().join("c.toml");
    let text = std::fs::read_to_string(root().join("config.toml")).unwrap();
    std::fs::write(&path, text).unwrap();
    let err = refused_config(
        &path,
        &[
            ("EBGAND__MQTT__OUTBOX_DIR", outbox.to_str().unwrap()),
            ("EBGAND__LEARNING__RETRAIN_SEEDED", "true"),
            ("EBGAND__TRAIN__PYTHON", "/nowhere/python3"),
            ("EBGAND__TRAIN__WORKER", "/nowhere/trainer"),
        ],
    );
    for problem in [
        format!("mqtt.outbox_dir: {}: a link to nothing", outbox.display()),
        "train.python: /nowhere/python3: not found, or not executable ([learning] \
         retrain_seeded retrains"
            .to_owned(),
        "train.worker: /nowhere/trainer: no ebgand_trainer package there".to_owned(),
    ] {
        assert!(err.contains(&problem), "missing {problem:?} in:\n{err}");
    }
}

#[test]
fn check_config_lists_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[mqtt]
port = 0
[models.vibration]
path = "models/vibration/fixture-1"
[[streams]]
name = "v"
topic = "a/#/b"
model = "vibration"
format = "array"
window = 0
"#,
    )
    .unwrap();
    let err = refused_config(&path, &[]);
    for key in ["mqtt.port", ".topic", ".window"] {
        assert!(err.contains(key), "missing {key}: {err}");
    }
    // An environment override is validated too.
    let o = ebgand(
        &["check-config", "--config", "config.toml"],
        &[("EBGAND__MQTT__PORT", "0")],
    );
    assert_eq!(o.status.code(), Some(78));
    let o = ebgand(
        &["check-config", "--config", "config.toml"],
        &[("EBGAND__MQTT__NOPE", "1")],
    );
    assert_eq!(o.status.code(), Some(78), "unknown env key refused");
}

/// A password in a file every user can read, a value out of range and no streams: all three
/// in one run, not one at a time as each is mended.
#[test]
fn check_config_tells_the_password_and_the_missing_streams_beside_the_values() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[mqtt]\npassword = \"secret\"\n[detect]\nstale_after = 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_config(&path, &[]);
    for told in [
        "is readable by every user",
        "stale_after",
        "no [[streams]] configured",
    ] {
        assert!(err.contains(told), "missing {told:?}: {err}");
    }
    assert!(!err.contains("secret"), "the password was told: {err}");
}

#[test]
fn check_config_refuses_a_model_the_streams_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = std::fs::read_to_string(root().join("config.toml")).unwrap();
    std::fs::write(
        &path,
        text.replace("window = 64", "window = 32")
            .replace("hop = 64", "hop = 32"),
    )
    .unwrap();
    let err = refused_config(&path, &[]);
    assert!(
        err.contains("cuts windows of 32 samples x 1 channels; the model takes 64 x 1"),
        "{err}"
    );
}

/// `ebgand run` on the documented config (state in a temporary folder) with its health port
/// taken by another listener: it passes its preflight, starts, logs, and fails to bind.
/// Returns its output and the port's address.
fn run_on_a_taken_port(env: &[(&str, &str)]) -> (Output, String) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("journal").display().to_string();
    let outbox = state.path().join("outbox").display().to_string();
    let registry = state.path().join("models").display().to_string();
    let capture = state.path().join("capture").display().to_string();
    // Every state folder in the temporary one: runs of this helper share nothing (they run in
    // parallel), and none writes into the repository.
    let mut all = vec![
        ("EBGAND__HTTP__LISTEN", listen.as_str()),
        ("EBGAND__JOURNAL__DIR", journal.as_str()),
        ("EBGAND__MQTT__OUTBOX_DIR", outbox.as_str()),
        ("EBGAND__REGISTRY__DIR", registry.as_str()),
        ("EBGAND__LEARNING__DIR", capture.as_str()),
    ];
    all.extend_from_slice(env);
    let o = ebgand(&["run", "--config", "config.toml"], &all);
    (o, listen)
}

#[test]
fn secrets_never_reach_the_logs() {
    // A health port already taken: the daemon passes its preflight, logs its configuration,
    // then fails to start.
    let (o, listen) = run_on_a_taken_port(&[
        ("EBGAND__MQTT__USERNAME", "u"),
        ("EBGAND__MQTT__PASSWORD", "hunter2"),
        ("EBGAND__LOG__FORMAT", "json"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("Effective configuration"), "{err}");
    assert!(err.contains("***"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains(&listen), "the failure names the port: {err}");
    // A missing model is caught before the start (and named), with no secret either.
    let o = ebgand(
        &["run", "--config", "config.toml"],
        &[
            ("EBGAND__MODELS__VIBRATION__PATH", "/nonexistent"),
            ("EBGAND__MQTT__USERNAME", "u"),
            ("EBGAND__MQTT__PASSWORD", "hunter2"),
        ],
    );
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent") && !stderr(&o).contains("hunter2"));
}

/// The README's first command: the embedded broker, the simulated machine and the daemon.
/// Every window the machine published is scored, and its bearing fault is raised once and
/// cleared once.
#[test]
fn the_demo_scores_every_window_and_raises_and_clears_its_fault_once() {
    let o = ebgand(&["demo", "--speed", "20"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("ALERT RAISED"), "{out}");
    assert_eq!(
        out.lines().last().unwrap(),
        "done: 344 of 344 windows scored, 1 alert(s) raised, 1 cleared",
        "{out}"
    );
}

/// The demo finds ONNX Runtime where the config file names it (an installed package's
/// `/etc/ebgand/ebgand.toml`, or `--config`), refuses a port a broker already holds instead
/// of talking to that broker, and refuses speeds and lengths it cannot play.
#[test]
fn the_demo_takes_its_configs_library_and_refuses_a_taken_port_or_speed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlibrary = {:?}\n",
            ort_library().display().to_string()
        ),
    )
    .unwrap();
    let o = ebgand(
        &[
            "--config",
            config.to_str().unwrap(),
            "demo",
            "--speed",
            "50",
        ],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("1 alert(s) raised, 1 cleared"), "{out}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = ebgand(&["demo", "--port", &port], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("port {port} on 127.0.0.1 is taken")),
        "{}",
        stderr(&o)
    );
    for bad in [
        ["--speed", "0"],
        ["--speed", "1e12"],
        ["--healthy-s", "nan"],
    ] {
        let o = ebgand(&["demo", bad[0], bad[1]], &[]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

/// `score --report page.html | head`: the reader leaves after a line, and the page asked for
/// is still written, whole (before, the closed pipe ended the scoring quietly, exit 0, and no
/// page).
#[test]
fn a_report_is_written_when_the_reader_leaves_early() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args([
            "score",
            "--model",
            "models/vibration/fixture-1",
            "--key",
            "DE",
        ])
        .args(["--hop", "8", "--json", "--report", page.to_str().unwrap()])
        .arg(shared_data().join("cwru/1797_Normal.npz"))
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"seq\""), "{first}");
    // The reader is gone (its end of the pipe dropped): thousands of lines are still to come.
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let html = std::fs::read_to_string(&page).expect("the report written");
    assert!(html.trim_end().ends_with("</html>"), "the page is whole");
}

/// The page is made as any new file is: its mode follows the umask (before, the temporary file
/// it is renamed from kept 0600); and a target that is no plain file, standard output (as
/// `/proc/self/fd/1`: in some containers `/dev/stdout` is a plain file), is
/// written as it is (it cannot be renamed over).
#[test]
fn a_report_follows_the_umask_and_a_device_is_written_directly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    let bin = env!("CARGO_BIN_EXE_ebgand");
    let data = shared_data().join("cwru/1797_Normal.npz");
    let score = |umask: &str, report: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" score --model models/vibration/fixture-1 --key DE \
                 --hop 64 --json --report \"$1\" \"$2\""
            ))
            .args([bin, report, data.to_str().unwrap()])
            .current_dir(root())
            .env("ORT_DYLIB_PATH", ort_library())
            .output()
            .unwrap()
    };
    for (umask, mode) in [("022", 0o644), ("027", 0o640)] {
        let _ = std::fs::remove_file(&page);
        let o = score(umask, page.to_str().unwrap());
        assert!(o.status.success(), "{}", stderr(&o));
        let got = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}: mode {got:o}");
    }
    let o = score("022", "/proc/self/fd/1");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let page_at = out
        .find("<!doctype html>")
        .or_else(|| out.find("<!DOCTYPE html>"));
    let page_end = out.find("</html>");
    assert!(
        page_at.zip(page_end).is_some_and(|(a, b)| a < b),
        "the page on stdout"
    );
}

/// Ctrl-C ends the demo in order at any point: here while the machine runs at real time (its
/// windows on the console), and again while the daemon starts; it says so, drains and exits 0
/// (before the machine started it killed the demo, its temp folder left behind).
#[test]
fn ctrl_c_ends_the_demo_in_order() {
    use std::io::BufRead;
    for wait_for in ["window ", "ebgand demo:"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
            .arg("demo")
            .current_dir(root())
            .env("ORT_DYLIB_PATH", ort_library())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.contains(wait_for) {
            assert_ne!(out.read_line(&mut seen).unwrap(), 0, "{seen}");
        }
        let pid = child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        assert!(killed.unwrap().success());
        let status = child.wait().unwrap();
        std::io::Read::read_to_string(&mut out, &mut seen).unwrap();
        assert!(status.success(), "{status}: {seen}");
        assert!(
            seen.contains("interrupted") && seen.contains("done:"),
            "{seen}"
        );
    }
}

#[test]
fn missing_library_says_how_to_install_it() {
    let o = ebgand(
        &[
            "score",
            "--model",
            "models/vibration/fixture-1",
            "../shared/data/cwru/1797_Normal.npz",
            "--key",
            "DE",
        ],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("make setup"), "{}", stderr(&o));
    // A fatal error is one line.
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// `ebgand score` of a SKAB recording through the multichannel fixture, every window (hop 1),
/// reading `cols`; the file and further flags go after.
fn skab_score_args(cols: &str) -> Vec<&str> {
    vec![
        "score",
        "--model",
        "models/multichannel/fixture-1",
        "--delimiter",
        ";",
        "--timestamp-column",
        "datetime",
        "--columns",
        cols,
        "--hop",
        "1",
    ]
}

#[test]
fn score_csv_prints_one_verdict_per_window_through_the_daemon_path() {
    let csv = shared_data().join("skab/valve1/0.csv");
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() as u64 - 1;
    let cols = "Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,Voltage,Volume Flow RateRMS";
    let mut args = skab_score_args(cols);
    args.push(csv.to_str().unwrap());
    let o = ebgand(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = window_lines(&o);
    assert_eq!(lines.len() as u64, expected_windows(rows, 16, 1));
    // The default judging: the first 512 windows learn the recording's healthy start, the rest
    // are judged by their calibrated probability.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as u64);
        for k in [
            "start",
            "end",
            "energy",
            "threshold",
            "anomalous",
            "learning",
        ] {
            assert!(!l[k].is_null(), "{k} missing in {l}");
        }
        assert_eq!(l["alert_probability"], 0.9999);
        let learning = l["learning"].as_bool().unwrap();
        assert_eq!(learning, i < 512, "{l}");
        if learning {
            assert!(l["probability"].is_null() && !l["anomalous"].as_bool().unwrap());
        } else {
            let p = l["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{l}");
            assert_eq!(l["anomalous"].as_bool().unwrap(), p >= 0.9999, "{l}");
        }
        if let Some(alert) = l.get("alert") {
            assert_eq!(alert["state"], l["transition"]);
            assert_eq!(alert["seq"], l["seq"]);
        }
    }
    assert!(lines[0]["start"].as_str().unwrap().starts_with("2020-"));
    // The summary counts the learning windows and the raises, and nothing warned: most
    // windows were judged.
    let summary = json_lines(&o.stdout).pop().unwrap();
    schema::assert_valid("score.json", &summary);
    assert_eq!(summary["windows"], lines.len());
    assert_eq!(summary["learning"], 512);
    let raised = lines.iter().filter(|l| l["transition"] == "raised").count();
    assert_eq!(summary["raised"], raised);
    assert!(!stderr(&o).contains("learning"), "{}", stderr(&o));
}

#[test]
fn score_says_when_a_recording_ended_while_the_stream_learnt() {
    // The default hop is a whole window: the file's 70-odd windows all fall in the stream's
    // 512 learning windows, so nothing is judged, and `score` says so and what judges more.
    let csv = shared_data().join("skab/valve1/0.csv");
    let cols = "Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,Voltage,Volume Flow RateRMS";
    let mut args = skab_score_args(cols);
    args.truncate(args.len() - 2); // no --hop
    args.push(csv.to_str().unwrap());
    let o = ebgand(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = window_lines(&o);
    assert!(lines.iter().all(|l| l["learning"] == true));
    let summary = json_lines(&o.stdout).pop().unwrap();
    schema::assert_valid("score.json", &summary);
    assert_eq!(summary["learning"], lines.len());
    assert_eq!(summary["raised"], 0);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{n} of {n} windows were the stream's learning",
            n = lines.len()
        )) && err.contains("--hop")
            && err.contains("--seed-rows"),
        "{err}"
    );
}

/// The vibration rig's samples for `windows` windows, stepped up from window `from`, written
/// into `dir` as `v` alone (`step.csv`) and, 64 a second (a window a second), with each
/// sample's time in epoch seconds first (`t,v`, or `t,other,v` with a column of counters
/// when `other`; `step-timed.csv`).
fn step_recordings(
    dir: &std::path::Path,
    windows: usize,
    from: usize,
    other: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let step = vibration_signal(3, windows, |w| if w >= from { 0.5 } else { 0.0 });
    let csv = dir.join("step.csv");
    let text: String = step.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&csv, format!("v\n{text}")).unwrap();
    let timed = dir.join("step-timed.csv");
    let text: String = step
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = 1.7e9 + i as f64 / 64.0;
            if other {
                format!("{t},{},{v}\n", i % 7)
            } else {
                format!("{t},{v}\n")
            }
        })
        .collect();
    let header = if other { "t,other,v" } else { "t,v" };
    std::fs::write(&timed, format!("{header}\n{text}")).unwrap();
    (csv, timed)
}

/// `--accept-after` through `score`: a step held from window 300 stays raised by default; with
/// it, the held level is accepted after that many windows, learnt, and the clear says so; with
/// `--accept-after-s`, after that many seconds of the recording's own time.
#[test]
fn score_accept_after_accepts_a_held_step_and_the_clear_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, timed) = step_recordings(dir.path(), 1_000, 300, false);
    let score = |extra: &[&str], file: &std::path::Path| {
        let mut args = vec!["score", "--model", "models/vibration/fixture-1", "--json"];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        ebgand(&args, &[("EBGAND__DETECT__LEARN_WINDOWS", "64")])
    };
    let transitions = |extra: &[&str], file: &std::path::Path| {
        let o = score(extra, file);
        assert!(o.status.success(), "{}", stderr(&o));
        window_lines(&o)
            .into_iter()
            .filter_map(|l| l.get("alert").cloned())
            .map(|a| {
                (
                    a["seq"].as_u64().unwrap(),
                    a["state"].clone(),
                    a.get("accepted_after").cloned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let kept = transitions(&[], &csv);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((&kept[0].1, &kept[0].2), (&"raised".into(), &None));
    let accepted = transitions(&["--accept-after", "200"], &csv);
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!((300..310).contains(&accepted[0].0), "{accepted:?}");
    // 200 windows raised, 64 learning the new level, then clear_after (10) normal windows.
    let (seq, state, by) = &accepted[1];
    assert_eq!((state, by), (&"cleared".into(), &Some(200.into())));
    let cleared = accepted[0].0 + 200 + 64 + 10;
    assert!((cleared - 5..cleared + 5).contains(seq), "{accepted:?}");

    // `--accept-after-s` counts the recording's own time: accepted 200 s after the raise, 201
    // windows counting the raise's and the acceptance's.
    let in_seconds = transitions(
        &["--timestamp-column", "t", "--accept-after-s", "200"],
        &timed,
    );
    assert_eq!(in_seconds.len(), 2, "{in_seconds:?}");
    assert_eq!(in_seconds[0], accepted[0], "{in_seconds:?}");
    assert_eq!(
        (&in_seconds[1].1, &in_seconds[1].2),
        (&"cleared".into(), &Some(201.into()))
    );
    assert!(
        (cleared - 4..cleared + 6).contains(&in_seconds[1].0),
        "{in_seconds:?}"
    );
    // Rows without a time cannot count seconds; windows and seconds are one setting.
    let untimed = score(&["--accept-after-s", "200"], &csv);
    assert!(!untimed.status.success());
    let untimed = stderr(&untimed);
    assert!(
        untimed.contains("accept_after_s counts the recording's own time")
            && untimed.contains("--timestamp-column"),
        "{untimed}"
    );
    let both = score(&["--accept-after", "9", "--accept-after-s", "200"], &csv);
    assert!(!both.status.success());
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

/// `--stream NAME` judges a recording as the daemon judges that configured stream: its own
/// learning length and acceptance in place of `[detect]`'s, the flags still over them, and a
/// CSV export of an object stream read by its fields and timestamp field.
#[test]
fn score_stream_judges_as_the_daemon_judges_that_stream() {
    let dir = tempfile::tempdir().unwrap();
    // The timed one as an object stream's messages exported, beside a column the stream does
    // not read.
    let (csv, timed) = step_recordings(dir.path(), 1_200, 700, true);
    let config = dir.path().join("ebgand.toml");
    std::fs::write(
        &config,
        "[models.vibration]\npath = \"\"\n\
         [[streams]]\nname = \"pump\"\ntopic = \"pump/+\"\nmodel = \"vibration\"\n\
         format = \"array\"\nwindow = 64\nlearn_windows = 64\naccept_after = 200\n\
         [[streams]]\nname = \"fan\"\ntopic = \"fan/+\"\nmodel = \"vibration\"\n\
         format = \"array\"\nwindow = 64\n\
         [[streams]]\nname = \"press\"\ntopic = \"press/+\"\nmodel = \"vibration\"\n\
         format = \"object\"\nfields = [\"v\"]\ntimestamp_field = \"t\"\nwindow = 64\n\
         learn_windows = 64\naccept_after_s = 200\n\
         [[streams]]\nname = \"half\"\ntopic = \"half/+\"\nmodel = \"vibration\"\n\
         format = \"array\"\nwindow = 64\nhop = 32\n",
    )
    .unwrap();
    let score_file = |extra: &[&str], file: &std::path::Path| score_fixture(&config, extra, file);
    let score = |extra: &[&str]| score_file(extra, &csv);
    // (windows learning, alert transitions with what each clear says of an acceptance)
    let judged_file = |extra: &[&str], file: &std::path::Path| {
        let o = score_file(extra, file);
        assert!(o.status.success(), "{}", stderr(&o));
        let lines = window_lines(&o);
        let learning = lines.iter().filter(|l| l["learning"] == true).count();
        let alerts: Vec<_> = lines
            .iter()
            .filter_map(|l| l.get("alert"))
            .map(|a| (a["state"].clone(), a.get("accepted_after").cloned()))
            .collect();
        (learning, alerts)
    };
    let judged = |extra: &[&str]| judged_file(extra, &csv);
    let raised = ("raised".into(), None);
    // [detect]'s: 512 windows learnt, the held step kept raised; the same for a stream that
    // sets nothing of its own.
    let shared = (512, vec![raised.clone()]);
    assert_eq!(judged(&[]), shared);
    assert_eq!(judged(&["--stream", "fan"]), shared);
    // The pump's own: 64 windows learnt, the step accepted after 200 windows and its level
    // learnt in 64 more.
    let own = judged(&["--stream", "pump"]);
    assert_eq!(
        own,
        (
            64 + 64,
            vec![raised.clone(), ("cleared".into(), Some(200.into()))]
        )
    );
    // A flag still has the last word.
    assert_eq!(
        judged(&["--stream", "pump", "--accept-after", "0"]),
        (64, vec![raised.clone()])
    );
    // Its hop too: windows half a window apart, unless --hop says otherwise.
    let count = |extra: &[&str]| window_lines(&score(extra)).len();
    let (apart, half) = (count(&[]), count(&["--stream", "half"]));
    assert_eq!(
        half,
        2 * apart - 1,
        "{apart} windows apart, {half} half a window apart"
    );
    assert_eq!(count(&["--stream", "half", "--hop", "64"]), apart);
    let o = score(&["--stream", "pmup"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--stream pmup: the config (")
            && stderr(&o).contains("it has: pump, fan, press, half"),
        "{}",
        stderr(&o)
    );
    // The object stream's export: read by its field and its time, accepted 200 s after the
    // raise (201 windows at one a second, the raise's and the acceptance's counted).
    assert_eq!(
        judged_file(&["--stream", "press"], &timed),
        (64 + 64, vec![raised, ("cleared".into(), Some(201.into()))])
    );
    // Without the stream, every numeric column is a channel.
    let o = score_file(&[], &timed);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gives 3 channel(s)"), "{}", stderr(&o));
}

/// `--seed-rows` replays the daemon's cold start: the seed rows calibrate the stream, so the
/// rows after them are judged from the first window on, with the probabilities the same
/// windows get when the recording is scored from its start.
#[test]
fn score_seed_rows_judges_from_the_first_window_like_the_stream_s_start() {
    let csv = shared_data().join("skab/valve1/0.csv");
    let cols = "Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,Voltage,Volume Flow RateRMS";
    let score = |extra: &[&str]| {
        let mut args = skab_score_args(cols);
        args.extend_from_slice(extra);
        args.push(csv.to_str().unwrap());
        // Inputs scored as they arrive: the seed is scored before judging begins, so the level
        // drift the whole run takes off its windows after the first 512 is not taken off the
        // seed's (the daemon's seed is the same).
        let o = ebgand(&args, &[("EBGAND__DETECT__LEVEL_WINDOWS", "0")]);
        assert!(o.status.success(), "{}", stderr(&o));
        window_lines(&o)
    };
    // 800 seed rows: 785 windows, the first 512 learnt and the rest judged, as from the start.
    let whole = score(&[]);
    let seeded = score(&["--seed-rows", ":800", "--rows", "785:"]);
    assert!(!seeded.is_empty());
    assert!(
        seeded.iter().all(|l| l["learning"] == false),
        "a seeded window was learning"
    );
    // Window k of the seeded run is window 785 + k of the whole one: the same rows.
    for (k, l) in seeded.iter().enumerate().take(20) {
        let same = &whole[785 + k];
        assert_eq!(l["start"], same["start"]);
        let (p, q) = (
            l["probability"].as_f64().unwrap(),
            same["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-9, "window {k}: {p} against {q}");
    }
    // A seed the model cannot read is refused with the flag's name.
    let o = ebgand(
        &[
            "score",
            "--model",
            "models/multichannel/fixture-1",
            "--seed-rows",
            "x",
            csv.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--seed-rows"), "{}", stderr(&o));
}

#[test]
fn score_npz_raises_on_a_bearing_fault() {
    // CWRU inner-race fault at 12 kHz through the vibration fixture: not the signal it was
    // fitted on, so every window is far above threshold and one alert is raised, never cleared.
    // Judged by the model's threshold: a recording that is all fault has no healthy start to
    // calibrate on.
    let npz = shared_data().join("cwru/1797_IR_7_DE12.npz");
    let o = ebgand(
        &[
            "score",
            "--judge",
            "threshold",
            "--model",
            "models/vibration/fixture-1",
            "--key",
            "DE",
            npz.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = window_lines(&o);
    assert!(lines.len() > 100);
    let alerts: Vec<_> = lines.iter().filter_map(|l| l.get("alert")).collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["state"], "raised");
    assert_eq!(lines[0]["end"], 63);
}

/// `score` refuses flags it cannot honour, with what is wrong, rather than printing made-up
/// results; and a time that reads as infinity does not hang it.
#[test]
fn score_refuses_what_it_cannot_honour_and_reads_any_time() {
    let npz = shared_data().join("cwru/1797_IR_7_DE12.npz");
    let npz = npz.to_str().unwrap();
    // "inf" parses as a number of seconds; no time can be made of it.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("times.csv");
    let mut text = String::from("t,v\ninf,0.5\n");
    for i in 1..200 {
        text += &format!("{},{}\n", 1_700_000_000 + 300 * i, (i as f32 * 0.3).sin());
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.to_str().unwrap();
    let vibration = ["score", "--model", "models/vibration/fixture-1"];
    for (flags, says) in [
        (
            vec!["--key", "DE", "--labels", "DE", npz],
            "--labels needs a CSV",
        ),
        (
            vec!["--key", "DE", "--threshold", "NaN", npz],
            "positive energy",
        ),
        (
            vec!["--key", "DE", "--threshold=-1", npz],
            "positive energy",
        ),
        (
            vec!["--delimiter", "§", "--columns", "v", csv],
            "one ASCII character",
        ),
    ] {
        let o = ebgand(&[&vibration[..], &flags].concat(), &[]);
        assert!(!o.status.success(), "{flags:?} was taken");
        assert!(stderr(&o).contains(says), "{flags:?}: {}", stderr(&o));
    }
    let read = [
        "--columns",
        "v",
        "--timestamp-column",
        "t",
        "--hop",
        "1",
        csv,
    ];
    let o = ebgand(&[&vibration[..], &read].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(window_lines(&o).len(), 200 - 64 + 1);
    // A bad configuration is 78 from score too, as from run and check-config.
    let bad = [("EBGAND__MQTT__PORT", "64.9")];
    let o = ebgand(&[&vibration[..], &read].concat(), &bad);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("EBGAND__MQTT__PORT"), "{}", stderr(&o));
}

#[test]
fn models_import_list_activate_rollback_history() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let env = [("EBGAND__REGISTRY__DIR", reg.to_str().unwrap())];
    let version =
        |label: &str, edit: &dyn Fn(String) -> String| fixture_version(dir.path(), label, edit);
    let ok = |args: &[&str]| {
        let o = ebgand(args, &env);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    // The documented config's stream (64 x 1) is what versions are checked against.
    let a = version("a", &|m| m);
    let b = version("b", &|m| m);
    let wide = version("wide", &|m| m.replace("window = 64", "window = 32"));
    ok(&["models", "import", a.to_str().unwrap(), "--activate"]);
    ok(&["models", "import", b.to_str().unwrap()]);
    ok(&["models", "import", wide.to_str().unwrap()]);
    let list = ok(&["models", "list"]);
    assert!(
        list.contains("* a") && list.contains("  b") && list.contains("  wide"),
        "{list}"
    );
    assert!(ok(&["models", "activate", "b"]).contains("active version b (was a)"));
    let o = ebgand(&["models", "activate", "wide"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cuts windows of 64 samples x 1 channels; the model takes 32 x 1"),
        "{}",
        stderr(&o)
    );
    let o = ebgand(&["models", "activate", "nope"], &env);
    assert!(
        stderr(&o).contains("has no version \"nope\""),
        "{}",
        stderr(&o)
    );
    assert!(
        ok(&["models", "list"]).contains("* b"),
        "refusals leave the pointer alone"
    );
    assert!(ok(&["models", "rollback"]).contains("rolled back to a (was b)"));
    let history = ok(&["models", "history"]);
    let reasons: Vec<String> = history
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(reasons, ["cli import", "cli", "rollback"]);

    // `--config` names the file the service reads: its registry, not the working folder's.
    let service = dir.path().join("service.toml");
    let service_reg = dir.path().join("service-registry");
    std::fs::write(
        &service,
        std::fs::read_to_string(root().join("config.toml"))
            .unwrap()
            .replace("dir = \"state/models\"", &format!("dir = {service_reg:?}")),
    )
    .unwrap();
    let config = service.to_str().unwrap();
    let by_file = |args: &[&str]| {
        let o = ebgand(&[&["models", "--config", config], args].concat(), &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    by_file(&["import", a.to_str().unwrap(), "--activate"]);
    assert!(by_file(&["list"]).contains("* a"));
    assert!(service_reg.join("vibration/ACTIVE").is_file());
    assert!(
        !by_file(&["list"]).contains("  b"),
        "only what was imported through it"
    );
    assert!(
        ok(&["models", "list"]).contains("  b"),
        "the other registry is untouched"
    );
}

#[test]
fn score_into_a_closed_pipe_ends_quietly_and_logs_carry_no_colour_codes() {
    // `ebgand score big.npy | head -1`: the reader leaves after one line.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.npy");
    let samples: Vec<f32> = (0..640_000).map(|i| (i as f32 * 0.1).sin()).collect();
    ndarray_npy::write_npy(&big, &ndarray::Array1::from(samples)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
        .args(["score", "--model", "models/vibration/fixture-1"])
        .arg(&big)
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with('{'), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{:?}: {err}", o.status);
    assert!(
        !err.lines()
            .any(|l| l.starts_with("ebgand: ") || l.contains("ERROR")),
        "an error line: {err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    assert!(err.contains("Model session ready"), "{err}");
}

#[test]
fn score_on_a_terminal_speaks_to_people_and_json_on_request() {
    // `script` (util-linux, in every Debian) runs the command on a pseudo-terminal.
    let on_terminal = |extra: &str| {
        let cmd = format!(
            "{} score --model models/vibration/fixture-1 --key DE {extra} \
             ../shared/data/cwru/1797_Normal.npz 2>/dev/null",
            env!("CARGO_BIN_EXE_ebgand")
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(root())
            .env("ORT_DYLIB_PATH", ort_library())
            .env("EBGAND__DETECT__LEARN_WINDOWS", "64")
            .output()
            .expect("script (util-linux): apt install bsdutils");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let people = on_terminal("");
    assert!(people.contains("windows (64 learning)"), "{people}");
    assert!(
        people.contains("pipe the output or pass --json"),
        "{people}"
    );
    assert!(!people.contains("{\"stream\""), "{people}");
    let json = on_terminal("--json");
    assert!(
        json.lines().next().unwrap().starts_with("{\"stream\""),
        "{json}"
    );
    // Logs on a terminal are coloured, unless NO_COLOR is set (no-color.org).
    let logs = |no_color: bool| {
        let cmd = format!(
            "{} score --model models/vibration/fixture-1 --key DE \
             ../shared/data/cwru/1797_Normal.npz >/dev/null",
            env!("CARGO_BIN_EXE_ebgand")
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .current_dir(root())
            .env("ORT_DYLIB_PATH", ort_library())
            .env_remove("EBGAND_LOG")
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let o = c
            .output()
            .expect("script (util-linux): apt install bsdutils");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let coloured = logs(false);
    assert!(
        coloured.contains("INFO") && coloured.contains('\u{1b}'),
        "{coloured:?}"
    );
    let plain = logs(true);
    assert!(
        plain.contains("INFO") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}

#[test]
fn in_the_journal_every_line_carries_its_priority() {
    // systemd sets JOURNAL_STREAM when standard error goes to the journal; journald reads a
    // leading <N> as the line's priority, so `journalctl -p err` shows the errors.
    let o = ebgand(
        &["run", "--config", "config.toml"],
        &[("JOURNAL_STREAM", "8:1234"), ("EBGAND__MQTT__PORT", "0")],
    );
    assert_eq!(o.status.code(), Some(78));
    let err = stderr(&o);
    assert!(err.lines().count() >= 2, "{err}");
    for line in err.lines() {
        assert!(line.starts_with("<3>"), "{line:?} in:\n{err}");
    }
    // A daemon that starts logs its lines with theirs (info is <6>), then fails (<3>).
    let (o, listen) = run_on_a_taken_port(&[("JOURNAL_STREAM", "8:1234")]);
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("<6>") && l.contains("Effective configuration")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("<3>") && l.contains(&listen)),
        "{err}"
    );
    assert!(
        err.lines().all(|l| ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|p| l.starts_with(p))),
        "{err}"
    );
}

#[test]
fn models_rollback_walks_back_history_reads_for_people_and_prune_keeps_n() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let env = [("EBGAND__REGISTRY__DIR", reg.to_str().unwrap())];
    let ok = |args: &[&str]| {
        let o = ebgand(args, &env);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    for v in ["a", "b", "c"] {
        let path = fixture_version(dir.path(), v, |m| m);
        ok(&["models", "import", path.to_str().unwrap()]);
        ok(&["models", "activate", v]);
    }
    // Back, and back again: c -> b -> a, not c -> b -> c.
    assert!(ok(&["models", "rollback"]).contains("rolled back to b (was c)"));
    assert!(ok(&["models", "rollback"]).contains("rolled back to a (was b)"));
    let o = ebgand(&["models", "rollback"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no earlier version"), "{}", stderr(&o));

    // On a terminal (a pseudo-terminal from `script`), history is for people.
    let o = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} models history", env!("CARGO_BIN_EXE_ebgand")),
            "/dev/null",
        ])
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_library())
        .envs(env)
        .output()
        .expect("`script` (util-linux) runs the command on a pseudo-terminal");
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("vibration (5 activations"), "{table}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(
        rows[4].contains(" UTC  a ")
            && rows[4].contains("(was b)")
            && rows[4].ends_with("rollback"),
        "{table}"
    );
    assert!(!table.contains('{'), "JSON on a terminal: {table}");
    // Piped: the JSON lines.
    let piped = ok(&["models", "history"]);
    assert_eq!(piped.lines().count(), 5);
    assert!(
        piped
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    // Prune: the active version and the most recent other stay.
    let said = ok(&["models", "prune", "--keep", "2", "--dry-run"]);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("would delete"), "{said}");
    assert_eq!(
        ok(&["models", "list"]).lines().count(),
        4,
        "dry run deletes nothing"
    );
    let deleted = ok(&["models", "prune", "--keep", "2"]);
    assert_eq!(deleted.replace("deleted", "would delete"), said);
    let list = ok(&["models", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.contains("* a"), "{list}");
    let o = ebgand(&["models", "prune", "--keep", "0"], &env);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--keep 0 would delete the active version"
    );
}

#[test]
fn onnx_runtime_telemetry_stays_off_nothing_is_written_to_home() {
    // ONNX Runtime's Linux builds write a device id and an event queue under the user's cache
    // (and try to upload them) unless ORT_DISABLE_TELEMETRY is set before they load: ebgand
    // sets it.
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let o = ebgand(
        &[
            "score",
            "--judge",
            "threshold",
            "--model",
            "models/vibration/fixture-1",
            "--key",
            "DE",
            shared_data()
                .join("cwru/1797_IR_7_DE12.npz")
                .to_str()
                .unwrap(),
        ],
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(written.is_empty(), "written under HOME: {written:?}");
}

/// A state folder given relative to the working folder must be creatable there: in a working
/// folder nothing can be written to (`/proc`, read-only even for root), check-config refuses
/// it instead of passing any relative path untried.
#[test]
fn a_relative_state_folder_is_tried_in_the_working_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relative.toml");
    std::fs::write(
        &path,
        format!(
            r#"[journal]
dir = "ebgand-journal"
[models.vibration]
path = {model:?}
[[streams]]
name = "vibration"
topic = "sensors/+/vibration"
model = "vibration"
format = "array"
window = 64
"#,
            model = root()
                .join("models/vibration/fixture-1")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let file = path.display().to_string();
    let run = |cwd: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ebgand"))
            .args(["check-config", "--config", &file])
            .current_dir(cwd)
            .env("ORT_DYLIB_PATH", ort_library())
            .output()
            .unwrap()
    };
    let o = run(std::path::Path::new("/proc"));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("journal.dir: ebgand-journal: not writable"),
        "{}",
        stderr(&o)
    );
    // The same file from a working folder that takes it: the journal is no problem there.
    let o = run(dir.path());
    assert!(!stderr(&o).contains("journal.dir"), "{}", stderr(&o));
}
