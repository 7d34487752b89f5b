//! Models: manifests, the ONNX Runtime environment and execution providers, and the scorer
//! worker that owns a session.

pub mod command;
pub mod gate;
mod load;
pub mod manifest;
pub mod registry;
pub mod runtime;
pub mod worker;

use std::path::PathBuf;

/// The batch of the daemon's own passes over many windows (the activation gate, a first
/// version's calibration on its learning windows). A session is warmed at the larger of it and
/// `scoring.max_batch` ([`crate::config::RuntimeSettings::warm_batch`]) as it loads.
pub const BULK_BATCH: usize = 256;

pub use load::{check_models, injected_load_delay, load_model, load_off_runtime, open_model};
pub use manifest::{Manifest, ModelVersion};
pub use registry::{Registry, RegistryError};
pub use runtime::{Scorer, ort_environment};
pub use worker::{ScoredBatch, ScorerContext, ScorerHandle, ShadowScored, Window, spawn_scorer};

/// Errors from loading, checking or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest does not parse or holds a bad value.
    #[error("bad manifest {path}: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `model.onnx` does not match the manifest's SHA-256.
    #[error("{path}: SHA-256 {actual} does not match the manifest's {expected}")]
    Hash {
        /// The model file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The ONNX Runtime library could not be loaded.
    #[error(
        "cannot load the ONNX Runtime library {path}: {reason}. Install it with `make setup` \
         (extracts libonnxruntime.so from the onnxruntime==1.31.1 wheel into .cache/onnxruntime), \
         or point [runtime] library / EBGAND__RUNTIME__LIBRARY / ORT_DYLIB_PATH at a libonnxruntime.so"
    )]
    Library {
        /// The path tried.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// ONNX Runtime returned an error.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The model does not fit its manifest or the streams configured for it.
    #[error("model {model} refused: {reason}")]
    Mismatch {
        /// Model name and version.
        model: String,
        /// What does not fit.
        reason: String,
    },
    /// The activation gate refused a candidate.
    #[error("model {model} refused by the activation gate: {reason}")]
    Refused {
        /// Model name and version.
        model: String,
        /// Why.
        reason: String,
    },
    /// The scorer's session is down (it panicked and is being rebuilt): batches fail at once.
    #[error("scorer for {model} is down: {reason}")]
    ScorerDown {
        /// Model name.
        model: String,
        /// Why.
        reason: String,
    },
    /// The scorer worker thread is gone.
    #[error("scorer worker for {model} has stopped")]
    WorkerGone {
        /// Model name.
        model: String,
    },
}

impl<R> From<ort::Error<R>> for ModelError {
    fn from(e: ort::Error<R>) -> Self {
        // ort::Error<R> carries the failed builder as `R`, which we have no use for; keep the
        // code and message.
        Self::Ort(format!("{:?}: {}", e.code(), e.message()))
    }
}
