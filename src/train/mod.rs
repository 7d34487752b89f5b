//! Training: the supervisor of the Python training worker (`models/trainer`, ONNX Runtime's
//! training API), and `ebgand train`.
//!
//! The contract with the worker is small and written down in `models/trainer/README.md`:
//! arguments in; JSON lines of progress on its stdout (`start`, `step`, `done`, `error`); a
//! model version folder as the result; exit 0 on success, 2 for bad input, 143 after SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::TrainSettings;

pub mod capture;
pub mod command;
pub mod learn;
pub mod recent;
pub use command::{TrainArgs, train};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The worker could not be started.
    #[error(
        "cannot start the training worker {python}: {source}. Install its venv with `make setup` \
         (creates .venv/trainer from models/trainer/requirements.txt) or set [train] python"
    )]
    Spawn {
        /// The interpreter tried.
        python: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The worker reported an error or exited non-zero.
    #[error("training failed (worker exit {code:?}): {message}")]
    Worker {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// The worker's error event, or the tail of its stderr.
        message: String,
    },
    /// Stopped by a signal, forwarded to the worker.
    #[error("training interrupted")]
    Interrupted,
    /// The worker ran past `[train] timeout_s`.
    #[error("training timed out after {0:?}")]
    Timeout(Duration),
    /// Reading the worker's output failed.
    #[error("worker I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One line of the worker's progress.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum WorkerEvent {
    /// Training begins.
    Start {
        /// `ebgan` or `ae`.
        mode: String,
        /// Planned steps.
        steps: u64,
        /// Windows the worker was given (its hold-out included).
        windows: u64,
    },
    /// Progress.
    Step {
        /// Step number.
        step: u64,
        /// Planned steps.
        steps: u64,
        /// Discriminator loss.
        d_loss: Option<f64>,
        /// Generator loss (none for the plain autoencoder).
        g_loss: Option<f64>,
        /// Validation energy, when measured since the last step event.
        #[serde(default)]
        val_energy: Option<f64>,
    },
    /// The model version folder is written.
    Done {
        /// The folder.
        dir: PathBuf,
        /// Calibrated threshold.
        threshold: f64,
        /// Steps run.
        steps: u64,
        /// Wall seconds.
        seconds: f64,
        /// Peak resident memory of the worker, MiB.
        #[serde(default)]
        peak_rss_mb: Option<f64>,
    },
    /// The worker failed.
    Error {
        /// Why.
        message: String,
    },
}

/// What the worker is asked to do.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// `.npy` of healthy windows `[N, W, C]` float32.
    pub data: PathBuf,
    /// Output model version folder (must not exist).
    pub out: PathBuf,
    /// Model name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Further worker arguments (`--mode`, `--steps`, ...).
    pub args: Vec<String>,
    /// The command line recorded in the manifest.
    pub command: String,
    /// What the windows were cut from, recorded in the manifest.
    pub source: String,
}

/// How long a worker that closed its output has to exit (at most the run's timeout).
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// Runs the worker to completion, calling `progress` for every event it prints, forwarding
/// cancellation as SIGTERM and enforcing the timeout.
///
/// # Errors
/// [`TrainError`] when the worker cannot start, fails, is interrupted or times out.
pub async fn run_worker(
    settings: &TrainSettings,
    job: &TrainJob,
    mut progress: impl FnMut(&WorkerEvent),
    cancel: CancellationToken,
) -> Result<WorkerEvent, TrainError> {
    let mut cmd = if settings.nice > 0 {
        let mut c = Command::new("nice");
        c.arg("-n")
            .arg(settings.nice.to_string())
            .arg(&settings.python);
        c
    } else {
        Command::new(&settings.python)
    };
    // The worker's onnxruntime-training would otherwise start Microsoft's telemetry (see
    // main.rs).
    cmd.env("ORT_DISABLE_TELEMETRY", "1")
        .args(["-m", "ebgand_trainer", "--data"])
        .arg(&job.data)
        .arg("--out")
        .arg(&job.out)
        .args([
            "--name",
            &job.name,
            "--version",
            &job.version,
            "--command",
            &job.command,
            "--source",
            &job.source,
        ])
        .args(["--device", &settings.device])
        .args(&job.args)
        .env("PYTHONPATH", &settings.worker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cache) = &settings.cache {
        cmd.arg("--cache").arg(cache);
    }
    // A path, or a bare name looked up in PATH (`python3`), as the preflight checks it; a
    // missing one fails here with NotFound.
    let mut child = cmd.spawn().map_err(|source| TrainError::Spawn {
        python: settings.python.clone(),
        source,
    })?;
    info!(pid = child.id(), out = %job.out.display(), "Training worker started.");
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no worker stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no worker stderr"))?;
    // The worker's stderr is its log: keep the tail for the error message; its warnings (a
    // constant channel, a threshold from few held-out windows) are the user's to see, the rest
    // is logged at debug.
    let mut stderr_tail = tokio::spawn(async move {
        let mut tail: Vec<String> = Vec::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.strip_prefix("ebgand-trainer WARNING ") {
                Some(warning) => warn!(worker = %warning, "Trainer warning."),
                None => debug!(worker = %line, "Trainer log."),
            }
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        tail.join("\n")
    });

    let mut lines = BufReader::new(stdout).lines();
    let mut last: Option<WorkerEvent> = None;
    let deadline = tokio::time::sleep(settings.timeout);
    tokio::pin!(deadline);
    let outcome = loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => match serde_json::from_str::<WorkerEvent>(&line) {
                    Ok(ev) => {
                        progress(&ev);
                        if matches!(ev, WorkerEvent::Done { .. } | WorkerEvent::Error { .. }) {
                            last = Some(ev);
                        }
                    }
                    Err(e) => warn!(line = %line, error = %e, "Unreadable progress line from the worker."),
                },
                None => break None,
            },
            () = cancel.cancelled() => break Some(TrainError::Interrupted),
            () = &mut deadline => break Some(TrainError::Timeout(settings.timeout)),
        }
    };
    // A worker that closed its output is not done until it exits: the run's deadline and the
    // cancellation hold (a hang at the interpreter's exit would keep the run open for good,
    // and every later run of the model refused as in progress); but it gets at least
    // EXIT_GRACE (no more than the run's timeout) to exit, and one that lingers past it is
    // stopped with its reported result standing (a `done` comes once its version is written).
    let grace = EXIT_GRACE.min(settings.timeout);
    let exit_by = deadline.deadline().max(tokio::time::Instant::now() + grace);
    let ended = match outcome {
        Some(err) => Err(err),
        None => tokio::select! {
            status = child.wait() => Ok(Some(status)),
            () = cancel.cancelled() => Err(TrainError::Interrupted),
            () = tokio::time::sleep_until(exit_by) => Ok(None),
        },
    };
    let status = match ended {
        Ok(Some(status)) => Some(status?),
        Ok(None) => {
            warn!("The training worker closed its output but did not exit; stopped.");
            stop(&mut child).await;
            None
        }
        Err(err) => {
            stop(&mut child).await;
            stderr_tail.abort();
            return Err(err);
        }
    };
    // A process the worker left behind may hold its stderr open: the tail is what came.
    let tail = match tokio::time::timeout(Duration::from_secs(5), &mut stderr_tail).await {
        Ok(tail) => tail.unwrap_or_default(),
        Err(_) => {
            stderr_tail.abort();
            warn!("The training worker ended, but something it started holds its stderr open.");
            String::new()
        }
    };
    let code = status.and_then(|s| s.code());
    match (status.map(|s| s.success()), last) {
        (Some(true) | None, Some(done @ WorkerEvent::Done { .. })) => Ok(done),
        (_, Some(WorkerEvent::Error { message })) => Err(TrainError::Worker { code, message }),
        (None, _) => Err(TrainError::Timeout(settings.timeout)),
        (Some(_), _) => Err(TrainError::Worker {
            code,
            message: if tail.is_empty() {
                "no result reported".into()
            } else {
                tail
            },
        }),
    }
}

/// SIGTERM (the worker stops at a step boundary and removes partial output), then SIGKILL.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            warn!(pid, "Could not send SIGTERM to the training worker.");
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        warn!("Training worker ignored SIGTERM for 10 s; killing it.");
        if let Err(e) = child.kill().await {
            warn!(error = %e, "Could not kill the training worker.");
        }
    }
}

/// The mode a model is trained in when nobody chose one, from what its windows hold. EBGAN for
/// windows of one channel (NAB dev: 67.4 against the autoencoder's 57.2). The plain
/// autoencoder for several channels: on SKAB valve1 (8 channels) over twelve seeds its false
/// alarms are 7.5 +- 1.1 % against EBGAN's 11.7 +- 3.3 % at the same F1, and it meets the
/// SKAB target in 11 seeds of 12 against 7 (docs/EVALUATION-ROUNDS.md, round thirty-two).
/// And for log-mel audio: under another machine's sound at -6 dB it ranked the dev fan's
/// faults 0.861 +- 0.005 against EBGAN's 0.823 +- 0.016, level on the clean fan, at 0 dB and
/// on DCASE's synthetic faults (round eighteen).
pub fn default_mode(logmel: bool, channels: usize) -> &'static str {
    if logmel || channels > 1 {
        "ae"
    } else {
        "ebgan"
    }
}

/// Worker arguments for a model's first version, trained from its streams' captured windows
/// of `channels` values per sample: the default mode, and for audio the streams' log-mel
/// parameters (the manifest records them, and a stream takes only a model made with its own).
pub fn first_kind(
    logmel: Option<&crate::pipeline::features::LogMelParams>,
    channels: usize,
) -> Vec<String> {
    let mut args = vec![
        "--mode".to_owned(),
        default_mode(logmel.is_some(), channels).to_owned(),
    ];
    args.extend(features_args(logmel));
    args
}

/// `--features` with the log-mel parameters as JSON, when there are some (what the worker
/// records as the manifest's `[features]`).
pub(crate) fn features_args(
    logmel: Option<&crate::pipeline::features::LogMelParams>,
) -> Vec<String> {
    // A struct of numbers (and an optional one) always serialises.
    logmel
        .and_then(|p| serde_json::to_string(p).ok())
        .map(|json| vec!["--features".to_owned(), json])
        .unwrap_or_default()
}

/// Settings of `[training]` a retrained version takes from the served one, with the worker
/// flag of each: its sizes and the training settings an operator may have chosen with
/// `ebgand train -- ...`. Keys a manifest lacks (an older one; one the mode has no use for)
/// leave the worker's default.
const CARRIED: [(&str, &str); 13] = [
    ("hidden", "--hidden"),
    ("latent", "--latent"),
    ("kernel", "--kernel"),
    ("batch", "--batch"),
    ("lr", "--lr"),
    ("margin", "--margin"),
    ("margin_decay", "--margin-decay"),
    ("pt_weight", "--pt-weight"),
    ("g_target", "--g-target"),
    ("target_quantile", "--target-quantile"),
    ("margin_mode", "--margin-mode"),
    ("eval_every", "--eval-every"),
    ("patience", "--patience"),
];

/// Worker arguments that train the same kind of model as `manifest` describes: its mode
/// (`ebgan` or `ae`), its discriminator (MLP or temporal convolutional), its sizes and
/// training settings (`CARRIED`), its threshold quantile, its channels' names and units
/// and, for audio, its log-mel parameters, so a retrained version is the model an operator
/// chose and takes the same input. Older manifests name the discriminator only in their
/// method. The steps, seed and hold-out share are not carried: the steps are `[learning]
/// steps`, the seed the worker's, and the share is not recorded.
pub fn same_kind(manifest: &crate::model::Manifest) -> Vec<String> {
    let training = manifest.training.as_ref();
    let value = |key: &str| {
        training.and_then(|t| t.get(key)).and_then(|v| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            _ => None,
        })
    };
    let mut args = Vec::new();
    if let Some(mode) = value("mode") {
        args.extend(["--mode".to_owned(), mode]);
    }
    let conv = value("discriminator").map_or_else(
        || value("method").is_some_and(|m| m.contains("convolutional")),
        |d| d == "conv",
    );
    if conv {
        args.extend(["--discriminator".to_owned(), "conv".to_owned()]);
    }
    for (key, flag) in CARRIED {
        if let Some(v) = value(key) {
            args.extend([flag.to_owned(), v]);
        }
    }
    let quantile = manifest.threshold.quantile;
    if quantile > 0.0 && quantile < 1.0 {
        args.extend(["--quantile".to_owned(), quantile.to_string()]);
    }
    let input = &manifest.input;
    for (flag, list) in [
        ("--channel-names", &input.channel_names),
        ("--channel-units", &input.channel_units),
    ] {
        if !list.is_empty()
            && let Ok(json) = serde_json::to_string(list)
        {
            args.extend([flag.to_owned(), json]);
        }
    }
    args.extend(features_args(manifest.features.as_ref()));
    args
}

/// A training run the daemon starts by itself (learning from the stream, retraining): the
/// model's captured healthy windows in, a new version in the registry out.
#[derive(Debug, Clone)]
pub struct TrainFromCapture {
    /// Model name.
    pub model: String,
    /// The model's capture folder (`shard-*.npy`).
    pub capture: PathBuf,
    /// W.
    pub window: usize,
    /// C.
    pub channels: usize,
    /// Training steps.
    pub steps: u64,
    /// Further worker arguments: [`same_kind`] as the served version, when there is one.
    pub like: Vec<String>,
    /// Version label (`None`: the UTC time, with a suffix when that one exists).
    pub version: Option<String>,
    /// Worker settings.
    pub train: TrainSettings,
    /// Where the result is imported.
    pub registry: crate::model::Registry,
}

impl TrainFromCapture {
    /// Runs the worker on the captured windows and imports the result; returns its version.
    ///
    /// # Errors
    /// No captured windows, a failed or cancelled worker, or an import error.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let capture = self.capture.clone();
        let data = tokio::task::spawn_blocking(move || capture::Capture::load(&capture)).await??;
        let (n, w, c) = data.dim();
        anyhow::ensure!(
            (w, c) == (self.window, self.channels),
            "captured windows are {w} x {c}; the streams cut {} x {}",
            self.window,
            self.channels
        );
        let tmp = tempfile::tempdir()?;
        let data_path = tmp.path().join("windows.npy");
        let to = data_path.clone();
        // Disk work (here, the import and the clean-up below) runs off the runtime's worker:
        // a capture can hold hundreds of megabytes, and an edge box's card is slow.
        tokio::task::spawn_blocking(move || ndarray_npy::write_npy(&to, &data)).await??;
        // Labels have one-second resolution: a second run within the same second gets a suffix.
        let base = self.version.clone().unwrap_or_else(utc_version);
        let version = (1..)
            .map(|i| {
                if i == 1 {
                    base.clone()
                } else {
                    format!("{base}-{i}")
                }
            })
            .find(|v| !self.registry.path(&self.model, v).exists())
            .unwrap_or(base);
        // Staged as <registry>/.train-NAME-VERSION/NAME/VERSION: hidden from the registry
        // until imported, and in the NAME/VERSION layout the worker checks its output against.
        let staging = self
            .registry
            .root()
            .join(format!(".train-{}-{version}", self.model));
        let out = staging.join(&self.model).join(&version);
        let (root, model) = (self.registry.root().to_owned(), self.model.clone());
        tokio::task::spawn_blocking(move || remove_stale_staging(&root, &model)).await?;
        let job = TrainJob {
            data: data_path,
            out: out.clone(),
            name: self.model.clone(),
            version: version.clone(),
            args: [
                vec!["--steps".into(), self.steps.to_string()],
                self.like.clone(),
            ]
            .concat(),
            command: "ebgand (training from captured stream windows)".into(),
            source: format!(
                "{n} healthy windows captured from the stream ({})",
                self.capture.display()
            ),
        };
        let done = run_worker(
            &self.train,
            &job,
            |ev| debug!(event = ?ev, "Trainer progress."),
            stop,
        )
        .await;
        let registry = self.registry.clone();
        let imported = tokio::task::spawn_blocking(move || {
            let imported = match done {
                Ok(WorkerEvent::Done { dir, .. }) => registry
                    .import(&dir)
                    .map(drop)
                    .context("importing the trained version"),
                Ok(_) => Err(anyhow::anyhow!("the worker reported no result")),
                Err(e) => Err(e.into()),
            };
            // Whatever the run left (a failed or cancelled one, its partial output) goes too.
            if staging.exists()
                && let Err(e) = std::fs::remove_dir_all(&staging)
            {
                warn!(dir = %staging.display(), error = %e, "Cannot remove the training output.");
            }
            imported
        })
        .await?;
        imported?;
        Ok(version)
    }
}

/// Removes the staging folders `<registry>/.train-MODEL-*` that runs of `model` ended
/// abnormally left (a crash, a power cut: a run that ends removes its own). A daemon runs one
/// training run per model at a time, so at the start of one, any such folder is a leftover.
/// Failures are logged: a leftover costs disk, not correctness.
fn remove_stale_staging(root: &Path, model: &str) {
    let prefix = format!(".train-{model}-");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.strip_prefix(&prefix).is_some_and(is_version_label));
        if stale && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            warn!(dir = %entry.path().display(), error = %e, "Cannot remove a training run's leftover staging folder.");
        } else if stale {
            info!(dir = %entry.path().display(), "Removed a training run's leftover staging folder.");
        }
    }
}

/// Whether `s` is a label [`utc_version`] gives, with the `-N` suffix a second run in the
/// same second gets: what follows `.train-MODEL-` in a staging folder of `MODEL` (and not of
/// a model whose name starts with `MODEL-`).
fn is_version_label(s: &str) -> bool {
    let (label, suffix) = s.split_once('-').unwrap_or((s, "1"));
    let b = label.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && !suffix.is_empty()
        && suffix.bytes().all(|c| c.is_ascii_digit())
}

/// A version label from the current UTC time, `YYYYMMDDTHHMMSSZ`.
pub fn utc_version() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The model folder a run writes by default: `<models_dir>/<name>/<version>`.
pub fn default_out(models_dir: &Path, name: &str, version: &str) -> PathBuf {
    models_dir.join(name).join(version)
}

#[cfg(test)]
mod tests;
