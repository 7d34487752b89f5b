//! `ebgand models`: list, import, activate, roll back, prune model versions in the registry,
//! and show its history. It reads the configuration the service reads (`--config`, else
//! `./config.toml`, else the installed `/etc/ebgand/ebgand.toml`), so it works on the registry
//! the service keeps. A running daemon notices a changed ACTIVE pointer within `[registry]
//! watch_ms`, runs the activation gate on recent healthy windows, and swaps the version in (or
//! refuses it and puts the pointer back, with the reason in the history).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::registry::Registry;
use crate::config::{RawConfig, Settings};

/// `ebgand models` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// List models and versions; `*` marks the active one.
    List,
    /// Copy a model version folder (model.onnx + manifest.toml) into the registry.
    Import {
        /// The folder.
        dir: PathBuf,
        /// Also make it the active version.
        #[arg(long)]
        activate: bool,
    },
    /// Make VERSION the active version (checked: manifest, hash, shapes, ONNX Runtime load).
    Activate {
        /// Version label.
        version: String,
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
    },
    /// Go back to the version served before the active one; again, to the one before that.
    Rollback {
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
    },
    /// Show a model's activation history: when, which version, the one it replaced, why.
    ///
    /// A table on a terminal; JSON lines (the HISTORY file's) when piped or with --json.
    History {
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Delete old versions, keeping the active one and the most recent others.
    ///
    /// Keeps the active version and the KEEP - 1 others activated or created most recently. A
    /// running daemon does this by itself after each training run (`[learning]
    /// keep_versions`).
    Prune {
        /// Versions to keep, the active one included (at least 1).
        #[arg(long, value_name = "KEEP", value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `ebgand models ...`.
///
/// # Errors
/// Registry errors, unknown versions, versions that do not fit the configured streams.
pub fn run(cmd: &ModelsCommand, config: Option<&Path>) -> anyhow::Result<()> {
    let config = crate::config::config_path(config);
    let settings = RawConfig::load(config, None)?.validate()?;
    let registry = Registry::open(&settings.registry.dir)?;
    tracing::debug!(config = ?config, registry = %registry.root().display(), "Model registry.");
    let out = |line: String| {
        #[allow(clippy::print_stdout)]
        {
            println!("{line}");
        }
    };
    match cmd {
        ModelsCommand::List => {
            for name in registry.names()? {
                let active = registry.active(&name)?;
                out(name.clone());
                for v in registry.versions(&name)? {
                    let mark = if Some(&v) == active.as_ref() {
                        "*"
                    } else {
                        " "
                    };
                    out(format!("  {mark} {v}"));
                }
            }
        }
        ModelsCommand::Import { dir, activate } => {
            let v = registry.import(dir)?;
            let (name, version) = (v.manifest.name.clone(), v.manifest.version.clone());
            out(format!("imported {name} {version}"));
            if *activate {
                check(&settings, &registry, &name, &version)?;
                registry.activate(&name, &version, "cli import")?;
                out(format!("{name}: active version {version}"));
            }
        }
        ModelsCommand::Activate { version, model } => {
            let name = model_name(&registry, model.as_deref())?;
            check(&settings, &registry, &name, version)?;
            let previous = registry.activate(&name, version, "cli")?;
            out(format!(
                "{name}: active version {version} (was {})",
                previous.unwrap_or_else(|| "none".into())
            ));
        }
        ModelsCommand::Rollback { model } => {
            let name = model_name(&registry, model.as_deref())?;
            let target = registry.rollback_target(&name)?;
            check(&settings, &registry, &name, &target)?;
            let previous = registry.activate(&name, &target, super::registry::ROLLBACK)?;
            out(format!(
                "{name}: rolled back to {target} (was {})",
                previous.unwrap_or_else(|| "none".into())
            ));
        }
        ModelsCommand::History { model, json } => {
            let name = model_name(&registry, model.as_deref())?;
            let history = registry.history(&name)?;
            if *json || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                for a in history {
                    out(serde_json::to_string(&a)?);
                }
            } else {
                out(format!(
                    "{name} ({} activations, registry {})",
                    history.len(),
                    registry.root().display()
                ));
                for a in &history {
                    out(for_people(a));
                }
            }
        }
        ModelsCommand::Prune {
            keep,
            model,
            dry_run,
        } => {
            let name = model_name(&registry, model.as_deref())?;
            let keep = usize::try_from(*keep)?;
            let gone = if *dry_run {
                registry.prunable(&name, keep, &[])?
            } else {
                registry.prune(&name, keep, &[])?
            };
            let verb = if *dry_run { "would delete" } else { "deleted" };
            if gone.is_empty() {
                out(format!("{name}: nothing to delete (keeping {keep})"));
            }
            for v in gone {
                out(format!("{name}: {verb} {v}"));
            }
        }
    }
    Ok(())
}

/// One activation for people: `2026-11-30 12:00:05  b  (was a)  cli`.
fn for_people(a: &super::registry::Activation) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(a.at);
    let at = humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC");
    let was = a
        .previous
        .as_deref()
        .map_or_else(|| "(first)".to_owned(), |p| format!("(was {p})"));
    let refused = a
        .refused
        .as_deref()
        .map_or_else(String::new, |r| format!("  [put back after refusing {r}]"));
    format!("{at}  {:<20} {was:<24} {}{refused}", a.version, a.reason)
}

fn model_name(registry: &Registry, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = given {
        return Ok(name.to_owned());
    }
    match registry.names()?.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("the registry at {} is empty", registry.root().display()),
        many => bail!("give --model (the registry holds {})", many.join(", ")),
    }
}

/// The static part of the activation gate: the version fits the configured streams and loads
/// in ONNX Runtime. The running daemon adds the false-alarm check on recent windows.
fn check(
    settings: &Settings,
    registry: &Registry,
    name: &str,
    version: &str,
) -> anyhow::Result<()> {
    let known = registry.versions(name)?;
    if !known.iter().any(|v| v == version) {
        bail!(super::RegistryError::UnknownVersion {
            name: name.into(),
            version: version.into(),
            known: known.join(", "),
        });
    }
    let path = registry.path(name, version);
    super::load_model(name, &path, &settings.streams, &settings.runtime)
        .with_context(|| format!("{name} {version} refused"))?;
    Ok(())
}
