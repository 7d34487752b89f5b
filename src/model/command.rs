//! `ebgand models`: list, import, activate and roll back model versions in the registry.
//! A running daemon notices a changed ACTIVE pointer within `[registry] watch_ms`, runs the
//! activation gate on recent healthy windows, and swaps the version in (or refuses it and puts
//! the pointer back, with the reason in the history).

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
    /// Go back to the previously active version.
    Rollback {
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
    },
    /// Show a model's activation history.
    History {
        /// Model name (needed when the registry holds more than one model).
        #[arg(long)]
        model: Option<String>,
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
            let previous = registry.activate(&name, &target, "rollback")?;
            out(format!(
                "{name}: rolled back to {target} (was {})",
                previous.unwrap_or_else(|| "none".into())
            ));
        }
        ModelsCommand::History { model } => {
            let name = model_name(&registry, model.as_deref())?;
            for a in registry.history(&name)? {
                out(serde_json::to_string(&a)?);
            }
        }
    }
    Ok(())
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
