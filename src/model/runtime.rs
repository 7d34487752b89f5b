//! The ONNX Runtime environment (loaded once per process from a shared library), execution
//! provider selection, and [`Scorer`]: one session and the code that scores a batch.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayView3;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use tracing::{info, warn};

use super::{ModelError, ModelVersion};
use crate::config::{Provider, RuntimeSettings};

/// Where `make setup` puts the library, relative to the working directory.
pub const SETUP_LIBRARY: &str = ".cache/onnxruntime/libonnxruntime.so";

/// The library path: the configured one, else `ORT_DYLIB_PATH`, else [`SETUP_LIBRARY`].
pub fn library_path(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(SETUP_LIBRARY))
}

static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process-wide ONNX Runtime environment, loading the library on first use. The library
/// is loaded once per process; a later call naming another path gets the first one (logged).
///
/// # Errors
/// [`ModelError::Library`] when the library is missing or not an ONNX Runtime >= 1.19.
pub fn ort_environment(configured: Option<&Path>) -> Result<Environment, ModelError> {
    let path = library_path(configured);
    if let Some((loaded, env)) = ENVIRONMENT.get() {
        if loaded != &path {
            warn!(loaded = %loaded.display(), requested = %path.display(), "ONNX Runtime is already loaded from another path; using it.");
        }
        return Ok(env.clone());
    }
    // Serialise the first load: init_from is process-global.
    let _guard = INIT
        .lock()
        .map_err(|_| ModelError::Ort("environment lock poisoned".into()))?;
    if let Some((_, env)) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let lib_err = |reason: String| ModelError::Library {
        path: path.clone(),
        reason,
    };
    if !path.exists() {
        return Err(lib_err("no such file".into()));
    }
    let builder = ort::init_from(&path).map_err(|e| lib_err(e.to_string()))?;
    // ONNX Runtime's telemetry is on unless turned off; a daemon on a plant network sends
    // nothing it was not asked to.
    let env = builder
        .with_name("ebgand")
        .with_telemetry(false)
        .build()
        .map_err(|e| lib_err(e.message().to_string()))?;
    info!(library = %path.display(), "ONNX Runtime loaded.");
    Ok(ENVIRONMENT.get_or_init(|| (path, env)).1.clone())
}

/// One loaded model: an ONNX Runtime session plus what is needed to feed it and read it.
/// `Session::run` takes `&mut self`, so a `Scorer` lives on one thread (see `worker`).
pub struct Scorer {
    session: Session,
    version: ModelVersion,
    provider: Provider,
    input: String,
    energy: String,
    residual: String,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("model", &self.label())
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// Builds a session for `version` with the first execution provider that registers,
    /// checks the graph's inputs and outputs against the manifest, and scores one window.
    ///
    /// # Errors
    /// [`ModelError::Library`] when ONNX Runtime cannot load, [`ModelError::Mismatch`] when the
    /// graph does not fit the manifest, [`ModelError::Ort`] when no provider can build it.
    pub fn load(mut version: ModelVersion, rt: &RuntimeSettings) -> Result<Self, ModelError> {
        let env = ort_environment(rt.library.as_deref())?;
        let mut last_err = None;
        for &provider in &rt.providers {
            match build_session(&env, &version.model_path(), provider, rt) {
                Ok(session) => {
                    info!(model.name = %version.manifest.name, model.version = %version.manifest.version, provider = provider.as_str(), "Model session ready.");
                    let m = &version.manifest;
                    let mut scorer = Self {
                        input: m.input.name.clone(),
                        energy: m.output.energy.clone(),
                        residual: m.output.residual.clone(),
                        session,
                        version,
                        provider,
                    };
                    scorer.check_graph()?;
                    let probe = vec![0.0; scorer.window_len()];
                    // Some providers build at the first run (TensorRT its engine, for a
                    // dynamic batch), and again for a batch past the sizes seen: one window,
                    // then the largest batch the scorer gives, so that the build happens here.
                    // A failure there is the provider's, or a graph that takes no batch of
                    // that size (a fixed batch dimension); the next provider is tried.
                    let warm = rt.warm_batch.max(super::BULK_BATCH);
                    let warmed = scorer.score(&probe, 1).and_then(|e| {
                        if warm > 1 {
                            scorer
                                .score(&vec![0.0; scorer.window_len() * warm], warm)
                                .map_err(|w| {
                                    scorer.mismatch(format!("a batch of {warm} windows: {w}"))
                                })?;
                        }
                        Ok(e)
                    });
                    let energies = match warmed {
                        Ok(e) => e,
                        Err(e) => {
                            warn!(provider = provider.as_str(), reason = %e, "Execution provider failed its first windows; trying the next.");
                            last_err = Some(e);
                            version = scorer.version;
                            continue;
                        }
                    };
                    if energies.len() != 1 {
                        return Err(
                            scorer.mismatch(format!("one window gave {} energies", energies.len()))
                        );
                    }
                    if !energies[0].is_finite() {
                        // NaN weights: every window would read as anomalous, for good.
                        return Err(scorer.mismatch(format!(
                            "an all-zero window's energy is {} (not finite)",
                            energies[0]
                        )));
                    }
                    return Ok(scorer);
                }
                Err(e) => {
                    warn!(provider = provider.as_str(), reason = %e, "Execution provider not used; trying the next.");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ModelError::Ort("no execution provider configured".into())))
    }

    /// The model version served.
    pub fn version(&self) -> &ModelVersion {
        &self.version
    }

    /// The execution provider in use.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!(
            "{}@{}",
            self.version.manifest.name, self.version.manifest.version
        )
    }

    /// Values in one window: W x C.
    pub fn window_len(&self) -> usize {
        self.version.manifest.input.window * self.version.manifest.input.channels
    }

    /// Scores `batch` windows laid end to end in `data` (`batch * W * C` values).
    ///
    /// # Errors
    /// [`ModelError::Mismatch`] for a wrong data length or output shape, [`ModelError::Ort`] when
    /// inference fails.
    pub fn score(&mut self, data: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        self.score_explained(data, batch, None)
    }

    /// [`Scorer::score`], also appending each window's residual (W x C values per window, the
    /// same inference) to `residual` when given.
    ///
    /// # Errors
    /// As [`Scorer::score`].
    pub fn score_explained(
        &mut self,
        data: &[f32],
        batch: usize,
        residual: Option<&mut Vec<f32>>,
    ) -> Result<Vec<f32>, ModelError> {
        let (w, c) = (
            self.version.manifest.input.window,
            self.version.manifest.input.channels,
        );
        let view = ArrayView3::from_shape((batch, w, c), data)
            .map_err(|e| self.mismatch(format!("batch of {} values: {e}", data.len())))?;
        let input = TensorRef::from_array_view(view)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => input])?;
        let energy = outputs
            .get(self.energy.as_str())
            .ok_or_else(|| ModelError::Ort(format!("no output named {:?}", self.energy)))?
            .try_extract_array::<f32>()?;
        if energy.len() != batch {
            return Err(ModelError::Mismatch {
                model: format!(
                    "{}@{}",
                    self.version.manifest.name, self.version.manifest.version
                ),
                reason: format!("{} energies for {batch} windows", energy.len()),
            });
        }
        if let Some(out) = residual {
            let r = outputs
                .get(self.residual.as_str())
                .ok_or_else(|| ModelError::Ort(format!("no output named {:?}", self.residual)))?
                .try_extract_array::<f32>()?;
            if r.len() != batch * w * c {
                return Err(ModelError::Mismatch {
                    model: format!(
                        "{}@{}",
                        self.version.manifest.name, self.version.manifest.version
                    ),
                    reason: format!("{} residual values for {batch} windows", r.len()),
                });
            }
            // One copy of the batch's residual (a standard-layout output), not a value at a time.
            match r.as_slice() {
                Some(values) => out.extend_from_slice(values),
                None => out.extend(r.iter().copied()),
            }
        }
        Ok(energy.iter().copied().collect())
    }

    fn mismatch(&self, reason: String) -> ModelError {
        ModelError::Mismatch {
            model: self.label(),
            reason,
        }
    }

    /// Checks names, element types and shapes of the graph against the manifest.
    fn check_graph(&self) -> Result<(), ModelError> {
        let m = &self.version.manifest;
        let (w, c) = (m.input.window as i64, m.input.channels as i64);
        let inputs = self.session.inputs();
        let input = inputs
            .iter()
            .find(|o| o.name() == m.input.name)
            .ok_or_else(|| {
                self.mismatch(format!(
                    "input {:?} not in the graph (it has: {})",
                    m.input.name,
                    inputs
                        .iter()
                        .map(|o| o.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if inputs.len() != 1 {
            return Err(self.mismatch(format!("graph has {} inputs; expected 1", inputs.len())));
        }
        expect_f32(input.dtype(), &[-1, w, c], &m.input.name).map_err(|r| self.mismatch(r))?;
        let outputs = self.session.outputs();
        for (name, dims) in [
            (&m.output.energy, vec![-1]),
            (&m.output.residual, vec![-1, w * c]),
        ] {
            let out = outputs
                .iter()
                .find(|o| o.name() == name.as_str())
                .ok_or_else(|| self.mismatch(format!("output {name:?} not in the graph")))?;
            expect_f32(out.dtype(), &dims, name).map_err(|r| self.mismatch(r))?;
        }
        Ok(())
    }
}

/// Checks a tensor type: f32, the given rank, and each dimension equal where both sides are
/// known (-1 is dynamic).
fn expect_f32(ty: &ValueType, dims: &[i64], name: &str) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = ty else {
        return Err(format!("{name:?} is not a tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!("{name:?} is {ty:?}; expected float32"));
    }
    let ok = shape.len() == dims.len()
        && shape
            .iter()
            .zip(dims)
            .all(|(&a, &b)| a < 0 || b < 0 || a == b);
    if !ok {
        return Err(format!(
            "{name:?} has shape {:?}; expected {dims:?} (-1: any)",
            &shape[..]
        ));
    }
    Ok(())
}

fn build_session(
    env: &Environment,
    model: &Path,
    provider: Provider,
    rt: &RuntimeSettings,
) -> Result<Session, ModelError> {
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(rt.intra_threads)?;
    let not_in_build = |name: &str| {
        ModelError::Ort(format!(
            "{name} is not in this ONNX Runtime build (a GPU build such as onnxruntime-gpu has it)"
        ))
    };
    match provider {
        Provider::TensorRt => {
            if !ep::TensorRT::is_available()? {
                return Err(not_in_build("TensorRT"));
            }
            let mut trt = ep::TensorRT::default()
                .with_device_id(rt.device_id)
                .with_fp16(rt.tensorrt_fp16);
            if let Some(cache) = &rt.tensorrt_engine_cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache.display())
                    .with_timing_cache(true);
            }
            builder = builder.with_execution_providers([trt.build().error_on_failure()])?;
        }
        Provider::Cuda => {
            if !ep::CUDA::is_available()? {
                return Err(not_in_build("CUDA"));
            }
            let cuda = ep::CUDA::default().with_device_id(rt.device_id);
            builder = builder.with_execution_providers([cuda.build().error_on_failure()])?;
        }
        Provider::Cpu => {}
    }
    Ok(builder.commit_from_file(model)?)
}
