//! `ebgand`: the command line. Parses arguments, starts tracing, loads and validates config,
//! and maps outcomes to exit codes (0 clean stop, 78 bad config, 1 runtime failure).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use ebgand::config::{ConfigError, DOCUMENTED_CONFIG, RawConfig, Settings};
use ebgand::telemetry::{self, Metrics};

/// `EX_CONFIG` from sysexits.h: bad configuration.
const EX_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "ebgand",
    version,
    about = "Streaming anomaly detection for machines: MQTT sensor windows scored by EBGAN energy.",
    long_about = "ebgand subscribes to sensor streams on an MQTT broker, cuts them into windows, scores \
each window by the energy (reconstruction error) of an autoencoder discriminator through ONNX \
Runtime, and publishes alerts on {prefix}/alerts/{stream} when the energy stays improbable under \
the stream's own recent healthy windows (a calibrated probability per stream, [detect] \
alert_probability; raised once, cleared once).\n\n\
Configuration: built-in defaults, then --config PATH (EBGAND_CONFIG), else ./config.toml, else \
/etc/ebgand/ebgand.toml, then EBGAND__SECTION__KEY environment variables (EBGAND__MQTT__HOST=broker.lan). `ebgand print-default-config` prints the \
documented file.\n\n\
Try it without a broker: `ebgand demo`.",
    after_help = "Exit codes: 0 clean stop, 78 bad configuration, 1 runtime failure.\n\
Signals (run): SIGTERM/SIGINT drain and stop (a second one stops at once), SIGHUP reloads the models."
)]
struct Cli {
    /// Config file (default: ./config.toml, else /etc/ebgand/ebgand.toml, when it exists).
    #[arg(long, short, global = true, env = "EBGAND_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default when no command is given).
    Run,
    /// Validate the configuration, list every problem, exit 78 if any (as `run` does at start).
    CheckConfig,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Score a recording offline through the daemon's decode/window/score/detect path.
    Score(ebgand::offline::ScoreArgs),
    /// Model registry: list, import, activate, rollback, history, prune.
    #[command(subcommand)]
    Models(ebgand::model::command::ModelsCommand),
    /// Train a model on a healthy recording (EBGAN or plain autoencoder) with the Python worker.
    Train(ebgand::train::TrainArgs),
    /// Publish a recording as an MQTT stream (real time or as fast as the broker takes it).
    Replay(ebgand::replay::ReplayArgs),
    /// Run an embedded broker, a simulated machine and the daemon, and show energy and alerts
    /// (on the built-in configuration; only `[runtime] library` is taken from `--config`).
    Demo(ebgand::demo::DemoArgs),
    /// Write the man pages (DIR/man/man1) and shell completions (DIR/bash-completion,
    /// DIR/zsh, DIR/fish) made from these definitions; the Debian package runs it.
    #[command(hide = true)]
    GenerateAssets {
        /// Usually a package's usr/share.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // ONNX Runtime's Linux builds start Microsoft's telemetry when their environment is created
    // (a device id and an event queue under ~/.cache/Microsoft/DeveloperTools, uploads to
    // mobile.events.data.microsoft.com), whatever the API later says, unless this variable is
    // set first. A daemon on a plant network sends nothing it was not asked to; an operator who
    // wants it sets ORT_DISABLE_TELEMETRY=0.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: the first statement of main, before any thread exists; nothing reads the
        // environment concurrently.
        #[allow(unsafe_code, clippy::disallowed_methods)]
        unsafe {
            std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
        }
    }
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => {
            #[allow(clippy::print_stdout)]
            {
                print!("{DOCUMENTED_CONFIG}");
            }
            ExitCode::SUCCESS
        }
        Command::CheckConfig => match load(cli.config.as_deref()) {
            Ok(s) => {
                eprintln!(
                    "configuration OK: {} stream(s), {} model(s), broker {}",
                    s.streams.len(),
                    s.models.len(),
                    s.mqtt.brokers_text()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Run => {
            #[allow(unused_mut)] // the fault-injection feature (tests only) sets faults
            let mut settings = match load(cli.config.as_deref()) {
                Ok(s) => s,
                Err(e) => return config_failure(&e),
            };
            #[cfg(feature = "fault-injection")]
            {
                settings.faults = ebgand::faults::Faults::from_env();
            }
            telemetry::init_tracing(settings.log_format);
            log_effective(&settings);
            runtime_exit(run_daemon(settings))
        }
        Command::Score(args) => {
            telemetry::init_tracing(ebgand::config::LogFormat::Plain);
            runtime_exit(ebgand::offline::score(&args, cli.config.as_deref()))
        }
        Command::Models(cmd) => {
            telemetry::init_tracing(ebgand::config::LogFormat::Plain);
            runtime_exit(ebgand::model::command::run(&cmd, cli.config.as_deref()))
        }
        Command::Train(args) => {
            let format = if std::io::stderr().is_terminal() {
                ebgand::config::LogFormat::Plain
            } else {
                ebgand::config::LogFormat::Json
            };
            telemetry::init_tracing(format);
            runtime_exit(ebgand::train::train(&args, cli.config.as_deref()))
        }
        Command::Replay(args) => {
            telemetry::init_tracing(ebgand::config::LogFormat::Plain);
            runtime_exit(ebgand::replay::replay(&args, cli.config.as_deref()))
        }
        Command::Demo(args) => {
            telemetry::init_tracing(ebgand::config::LogFormat::Plain);
            if let Some(path) = &cli.config {
                tracing::warn!(
                    config = %path.display(),
                    "the demo runs on the built-in configuration; only [runtime] library is read from this file"
                );
            }
            runtime_exit(ebgand::demo::run(&args, cli.config.as_deref()))
        }
        Command::GenerateAssets { dir } => runtime_exit(generate_assets(&dir)),
    }
}

/// The man pages, one per command (`ebgand.1`, `ebgand-score.1` ...), and the bash, zsh and
/// fish completions, in the folders Debian's packages put them under `dir` (`usr/share`).
fn generate_assets(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut cmd = Cli::command();
    cmd.build();
    let man = dir.join("man/man1");
    std::fs::create_dir_all(&man)?;
    fn pages(cmd: &clap::Command, name: &str, man: &Path) -> anyhow::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .title(name.to_uppercase())
            .render(&mut out)?;
        std::fs::write(man.join(format!("{name}.1")), out)?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            pages(sub, &format!("{name}-{}", sub.get_name()), man)?;
        }
        Ok(())
    }
    pages(&cmd, "ebgand", &man)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash-completion/completions", "ebgand"),
        (Shell::Zsh, "zsh/vendor-completions", "_ebgand"),
        (Shell::Fish, "fish/vendor_completions.d", "ebgand.fish"),
    ] {
        let folder = dir.join(sub);
        std::fs::create_dir_all(&folder)?;
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "ebgand", &mut out);
        std::fs::write(folder.join(file), out)?;
    }
    Ok(())
}

/// The settings, or every problem found at once: the file read strictly, the values checked,
/// and what `run` needs before it starts ([`ebgand::preflight`]).
fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let path = ebgand::config::config_path(path);
    let (raw, mut problems) = RawConfig::load_strict(path, None)?;
    // No streams is told beside the values' problems, not only once they are mended.
    let no_streams = raw
        .streams
        .is_empty()
        .then(|| ebgand::config::NO_STREAMS.to_owned());
    let settings = match raw.validate() {
        Ok(s) if no_streams.is_none() => s,
        Ok(_) => {
            problems.extend(no_streams);
            return Err(ConfigError::Invalid(problems));
        }
        Err(ConfigError::Invalid(more)) => {
            problems.extend(more);
            problems.extend(no_streams);
            return Err(ConfigError::Invalid(problems));
        }
        Err(e) => return Err(e),
    };
    problems.extend(ebgand::preflight::problems(&settings));
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    // Each problem on its own line; in the journal every line is an error.
    for line in format!("ebgand: {e}").lines() {
        eprintln!("{}{line}", fatal_priority());
    }
    ExitCode::from(EX_CONFIG)
}

fn runtime_exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`ebgand score ... | head`): what it wanted was written.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        // A bad configuration is 78 from every command, as `--help` says.
        Err(e) => match e.downcast::<ConfigError>() {
            Ok(config) => config_failure(&config),
            Err(e) => {
                // One line per fatal error, whatever the log settings (`EBGAND_LOG=off` included).
                eprintln!("{}ebgand: {}", fatal_priority(), describe(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The effective configuration as structured fields (filterable in the journal and in JSON
/// logs), the password masked; the whole of it, masked too, in `config`.
fn log_effective(s: &Settings) {
    let m = &s.mqtt;
    let models: Vec<String> = s
        .models
        .iter()
        .map(|(name, path)| match path {
            Some(p) => format!("{name}={}", p.display()),
            None => format!("{name}=(learns from its stream)"),
        })
        .collect();
    let streams: Vec<&str> = s.streams.iter().map(|st| st.name.as_str()).collect();
    tracing::info!(
        node = %s.node,
        mqtt.broker = %m.brokers_text(),
        mqtt.client_id = %m.client_id,
        mqtt.prefix = %m.prefix,
        mqtt.tls = m.tls.is_some(),
        mqtt.username = m.credentials.as_ref().map(|(u, _)| u.as_str()),
        mqtt.password = m.credentials.as_ref().map(|_| "***"),
        streams = ?streams,
        models = ?models,
        runtime.providers = ?s.runtime.providers,
        journal = ?s.journal.as_ref().map(|j| j.dir.display().to_string()),
        outbox = %m.outbox_dir.display(),
        registry = %s.registry.dir.display(),
        http = ?s.http_listen,
        homeassistant = ?m.homeassistant,
        detect.judging = ?s.streams.iter().map(|st| (st.name.as_str(), st.judging)).collect::<Vec<_>>(),
        detect.calibration = ?s.calibration,
        config = ?s,
        "Effective configuration."
    );
}

/// `<3>` (error) before a fatal line that goes to the journal, so that `journalctl -p err`
/// shows it (see `telemetry::init_tracing`); nothing on a terminal or in a file.
fn fatal_priority() -> &'static str {
    if telemetry::to_journal() {
        telemetry::priority(tracing::Level::ERROR)
    } else {
        ""
    }
}

/// Whether `e` comes from writing to a pipe whose reader has closed it.
fn closed_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(BrokenPipe)
    })
}

/// The error and its causes, each once: several error types already print their cause.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// How long the runtime waits, once the daemon has stopped, for blocking work still running
/// (a model load abandoned by the shutdown, a TensorRT engine build): not long, the drain
/// deadline has passed already.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(200);

fn run_daemon(settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ebgand")
        .build()?;
    let outcome = rt.block_on(async {
        let signals = ebgand::signal::listen()?;
        ebgand::run(settings, signals, Arc::new(Metrics::new())).await?;
        Ok(())
    });
    // Dropping the runtime would wait for every blocking task, however long it runs.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}
