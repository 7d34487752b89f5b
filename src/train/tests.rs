//! Unit tests of the training worker's runner and the kinds of version it is asked for.

use super::*;

#[test]
fn a_retrained_version_is_trained_as_the_served_one_was() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vibration/fixture-1");
    let mut m = crate::model::Manifest::read(&dir).unwrap();
    // The fixture names no mode: the worker's default, with its code size and quantile.
    assert_eq!(same_kind(&m), ["--latent", "8", "--quantile", "0.995"]);
    // Every setting the worker records goes with it, and the channels' names and units.
    m.training = Some(
        "mode = \"ebgan\"\nhidden = 128\nlatent = 16\nlr = 0.0005\nmargin = 2.0\n\
         margin_mode = \"relative\"\nsteps = 999\nseed = 3"
            .parse()
            .unwrap(),
    );
    m.input.channel_names = vec!["flow".into(), "temp".into()];
    m.input.channel_units = vec!["l/min".into(), "°C".into()];
    assert_eq!(
        same_kind(&m),
        [
            "--mode",
            "ebgan",
            "--hidden",
            "128",
            "--latent",
            "16",
            "--lr",
            "0.0005",
            "--margin",
            "2",
            "--margin-mode",
            "relative",
            "--quantile",
            "0.995",
            "--channel-names",
            r#"["flow","temp"]"#,
            "--channel-units",
            r#"["l/min","°C"]"#,
        ]
    );
    m.input.channel_names.clear();
    m.input.channel_units.clear();
    m.threshold.quantile = 0.0;
    let table = |t: &str| Some(t.parse::<toml::Table>().unwrap());
    m.training = table("mode = \"ae\"\ndiscriminator = \"conv\"");
    assert_eq!(same_kind(&m), ["--mode", "ae", "--discriminator", "conv"]);
    m.training = table("mode = \"ebgan\"\ndiscriminator = \"mlp\"");
    assert_eq!(same_kind(&m), ["--mode", "ebgan"]);
    // Before manifests named it, the method did.
    m.training =
        table("mode = \"ebgan\"\nmethod = \"EBGAN: D = temporal convolutional autoencoder: ...\"");
    assert_eq!(
        same_kind(&m),
        ["--mode", "ebgan", "--discriminator", "conv"]
    );
    // An audio version: its log-mel parameters go with it.
    m.training = table("mode = \"ae\"");
    m.features = Some(crate::pipeline::features::LogMelParams::default());
    let args = same_kind(&m);
    assert_eq!(args[..3], ["--mode", "ae", "--features"]);
    let back: crate::pipeline::features::LogMelParams = serde_json::from_str(&args[3]).unwrap();
    assert_eq!(Some(back), m.features);
}

#[test]
fn a_first_version_is_the_default_kind_for_its_input() {
    assert_eq!(first_kind(None, 1), ["--mode", "ebgan"], "a metric");
    assert_eq!(first_kind(None, 8), ["--mode", "ae"], "a pump's sensors");
    let audio = crate::pipeline::features::LogMelParams::default();
    let args = first_kind(Some(&audio), 64);
    assert_eq!(args[..3], ["--mode", "ae", "--features"]);
    assert_eq!(
        serde_json::from_str::<crate::pipeline::features::LogMelParams>(&args[3]).unwrap(),
        audio
    );
}

#[test]
fn progress_lines_parse() {
    let ev: WorkerEvent = serde_json::from_str(
        r#"{"event":"step","step":20,"steps":600,"d_loss":0.5,"g_loss":null,"val_energy":0.1}"#,
    )
    .unwrap();
    assert_eq!(
        ev,
        WorkerEvent::Step {
            step: 20,
            steps: 600,
            d_loss: Some(0.5),
            g_loss: None,
            val_energy: Some(0.1)
        }
    );
    let done: WorkerEvent = serde_json::from_str(
        r#"{"event":"done","dir":"m/v","threshold":0.1,"steps":600,"seconds":1.5,"peak_rss_mb":90.0}"#,
    )
    .unwrap();
    assert!(matches!(done, WorkerEvent::Done { steps: 600, .. }));
    assert!(serde_json::from_str::<WorkerEvent>(r#"{"event":"nope"}"#).is_err());
}

/// A worker that closes its output and never exits is stopped once the run's deadline has
/// passed: its reported result stands (an error's message; a `done`, whose version is
/// written), and one that reported nothing timed out.
#[tokio::test]
async fn a_worker_that_closes_its_output_but_lingers_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &'static str, said: &'static str| {
        let dir = dir.path().to_owned();
        async move {
            let python = dir.join(name);
            std::fs::write(
                &python,
                format!("#!/bin/sh\necho '{said}'\nexec >&- 2>&-\nexec sleep 600\n"),
            )
            .unwrap();
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(&python, mode).unwrap();
            let settings = TrainSettings {
                python,
                worker: dir.clone(),
                device: "cpu".into(),
                nice: 0,
                timeout: Duration::from_secs(2),
                cache: None,
                models_dir: dir.clone(),
            };
            let job = TrainJob {
                data: dir.join("data.npy"),
                out: dir.join("out"),
                name: "m".into(),
                version: "v".into(),
                args: Vec::new(),
                command: String::new(),
                source: String::new(),
            };
            let run = run_worker(&settings, &job, |_| {}, CancellationToken::new());
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("the run ends")
        }
    };
    let (error, done, nothing) = tokio::join!(
        run("error", r#"{"event":"error","message":"x"}"#),
        run(
            "done",
            r#"{"event":"done","dir":"m/v","threshold":0.1,"steps":6,"seconds":1.0}"#
        ),
        run("nothing", ""),
    );
    assert!(
        matches!(&error, Err(TrainError::Worker { message, .. }) if message == "x"),
        "{error:?}"
    );
    assert!(
        matches!(done, Ok(WorkerEvent::Done { steps: 6, .. })),
        "{done:?}"
    );
    assert!(
        matches!(nothing, Err(TrainError::Timeout(_))),
        "{nothing:?}"
    );
}

#[test]
fn utc_version_is_well_formed() {
    let v = utc_version();
    assert_eq!(v.len(), 16, "{v}");
    assert!(
        v.starts_with("20") && v.ends_with('Z') && v.as_bytes()[8] == b'T',
        "{v}"
    );
}

#[test]
fn leftover_staging_of_the_model_goes_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let names = [
        ".train-pump-20261205T010203Z",
        ".train-pump-20261205T010203Z-2",
        ".train-pump-2-20261205T010203Z",
        ".train-pump-mine",
        "pump",
    ];
    for n in names {
        std::fs::create_dir_all(root.path().join(n).join("x")).unwrap();
    }
    remove_stale_staging(root.path(), "pump");
    let mut left: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    // Another model's ("pump-2"), a folder not named by a run, and the registry's own stay.
    assert_eq!(
        left,
        [".train-pump-2-20261205T010203Z", ".train-pump-mine", "pump"]
    );
    assert!(is_version_label(&utc_version()));
    assert!(!is_version_label("20261205T010203Z-"));
}
