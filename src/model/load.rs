//! Opening a model version and checking it against the streams configured for it, with and
//! without building its ONNX Runtime session.

use std::path::{Path, PathBuf};

use super::{ModelError, ModelVersion, Scorer};
use crate::config::{RuntimeSettings, Settings, StreamSettings};
use crate::pipeline::PayloadFormat;

/// Opens a model version folder (manifest, content hash) and checks it against the streams
/// that use it, without loading ONNX Runtime. `ebgand check-config` runs this for every model.
///
/// # Errors
/// [`ModelError`] for a missing or corrupt folder, or a shape the streams do not cut.
pub fn open_model(
    name: &str,
    path: &Path,
    streams: &[StreamSettings],
) -> Result<ModelVersion, ModelError> {
    let version = ModelVersion::open(path)?;
    let m = &version.manifest;
    let label = format!("{}@{} ({})", m.name, m.version, path.display());
    if m.name != name {
        return Err(ModelError::Mismatch {
            model: label,
            reason: format!(
                "manifest names model {:?}, configured as [models.{name}]",
                m.name
            ),
        });
    }
    for s in streams.iter().filter(|s| s.model == name) {
        if s.logmel != m.features {
            return Err(ModelError::Mismatch {
                model: label,
                reason: format!(
                    "stream {:?} features {:?} differ from the model's {:?} (manifest [features])",
                    s.name, s.logmel, m.features
                ),
            });
        }
        if (s.window.get(), s.channels.get()) != (m.input.window, m.input.channels) {
            return Err(ModelError::Mismatch {
                model: label,
                reason: format!(
                    "stream {:?} cuts windows of {} samples x {} channels; the model takes {} x {}",
                    s.name, s.window, s.channels, m.input.window, m.input.channels
                ),
            });
        }
        if let PayloadFormat::Object { fields, .. } = &s.format {
            let what = format!("stream {:?} (its fields)", s.name);
            m.input
                .check_names(fields, &what)
                .map_err(|reason| ModelError::Mismatch {
                    model: label.clone(),
                    reason,
                })?;
        }
    }
    Ok(version)
}

/// Opens and checks a model ([`open_model`]) and builds its ONNX Runtime session. Blocking:
/// call it off the async runtime.
///
/// # Errors
/// [`ModelError`] for a missing, corrupt or mismatched model, or a library that cannot load.
pub fn load_model(
    name: &str,
    path: &Path,
    streams: &[StreamSettings],
    rt: &RuntimeSettings,
) -> Result<Scorer, ModelError> {
    Scorer::load(open_model(name, path, streams)?, rt)
}

/// [`load_model`] on the blocking pool: building a session takes milliseconds to seconds
/// (TensorRT), which must not stall the runtime's workers.
pub async fn load_off_runtime(
    settings: &Settings,
    name: &str,
    path: PathBuf,
) -> Result<Scorer, ModelError> {
    let (name, streams, rt, faults) = (
        name.to_owned(),
        settings.streams.clone(),
        settings.runtime.clone(),
        settings.faults.clone(),
    );
    tokio::task::spawn_blocking(move || {
        injected_load_delay(&faults, false);
        load_model(&name, &path, &streams, &rt)
    })
    .await
    .unwrap_or_else(|e| Err(ModelError::Ort(format!("model loading task failed: {e}"))))
}

/// Checks every configured model that a stream uses; one message per problem.
pub fn check_models(settings: &Settings) -> Vec<String> {
    settings
        .models
        .iter()
        .filter(|(name, _)| settings.streams.iter().any(|s| &s.model == *name))
        .filter_map(|(name, path)| open_model(name, path.as_deref()?, &settings.streams).err())
        .map(|e| format!("models: {e}"))
        .collect()
}

/// Tests only: a model load that takes as long as a TensorRT engine build (`activation`: a
/// candidate loaded for activation). Blocking; call it on the blocking pool. Nothing outside
/// the `fault-injection` feature.
pub fn injected_load_delay(faults: &crate::faults::Faults, activation: bool) {
    let delay = if activation {
        faults.activation_delay()
    } else {
        faults.load_delay()
    };
    if let Some(d) = delay {
        #[allow(clippy::disallowed_methods)] // on the blocking pool, not async code
        std::thread::sleep(d);
    }
}
