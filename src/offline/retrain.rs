//! `ebgand score --retrain-every N`: the daemon's continual learning, replayed in stream order.
//!
//! As in the daemon: windows the active version judges healthy (`Verdict::healthy`) are
//! captured, every one of the first `[learning] windows` (the daemon's learner captures its
//! whole learning period) and then one in `capture_every`, the newest `shard_windows ×
//! max_shards` kept; every N windows they are trained on by the daemon's own run
//! ([`TrainFromCapture`]: `[learning] steps`, the served version's kind, and here its seed,
//! so a replay is reproducible); the result scores beside the served version as a shadow whose
//! calibration learns only windows the served one found healthy; once it has learnt
//! (`[detect] warm_windows`), it is promoted and the stream's judge carries on with its calibration.
//! No run starts while a retrained version still warms. Differences from the daemon: runs are
//! counted in windows rather than seconds; a run trains on every window captured so far,
//! while the daemon's misses those of about the last [`FLUSH_EVERY`] (when its capture writes
//! them); training blocks the replay (the daemon scores on meanwhile, the served version
//! judging either way); and the activation gate is not replayed (a version that fails to train
//! or load is an error here).
//!
//! [`FLUSH_EVERY`]: crate::train::capture::FLUSH_EVERY

use std::collections::VecDeque;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{LearningSettings, Settings};
use crate::detect::{Judge, ModelRef, Scored, StreamInfo, Verdict, energy_parts};
use crate::model::{ModelVersion, Registry, Scorer};
use crate::pipeline::RawWindow;
use crate::train::TrainFromCapture;
use crate::train::capture::Capture;

/// A retrained version scoring in shadow while its calibration learns.
struct Warming {
    scorer: Scorer,
    model: ModelRef,
    threshold: f32,
    judge: Judge,
}

/// What one replayed run did, for the summary line.
#[derive(Debug, serde::Serialize)]
pub struct Run {
    pub version: String,
    /// Healthy windows it was trained on.
    pub windows: usize,
    /// Window at which it started warming in shadow.
    pub trained_at: u64,
    /// Window from which it served, if it was promoted before the recording ended.
    pub promoted_at: Option<u64>,
}

/// The replayed learner of one recording.
pub struct Retrainer {
    every: u64,
    since_run: u64,
    /// Healthy windows seen, for the one-in-`capture_every` sample.
    healthy: u64,
    capture_every: u64,
    /// Healthy windows captured whole, as a learner's learning period is.
    learning_windows: u64,
    capacity: usize,
    captured: VecDeque<Vec<f32>>,
    window: usize,
    channels: usize,
    steps: u64,
    worker_args: Vec<String>,
    base_version: String,
    name: String,
    /// Holds the captures of runs and the registry of retrained versions.
    dir: tempfile::TempDir,
    registry: Registry,
    runtime: tokio::runtime::Runtime,
    pub runs: Vec<Run>,
    warming: Option<Warming>,
}

impl Retrainer {
    /// A learner that starts a run every `every` windows, training like `version` was trained.
    ///
    /// # Errors
    /// The temporary folder or the runtime cannot be made.
    pub fn new(
        every: u64,
        learning: &LearningSettings,
        version: &ModelVersion,
    ) -> anyhow::Result<Self> {
        let m = &version.manifest;
        let mut worker_args = crate::train::same_kind(m);
        // Seeded like the served version, so a replay is reproducible.
        if let Some(seed) = m
            .training
            .as_ref()
            .and_then(|t| t.get("seed"))
            .and_then(toml::Value::as_integer)
        {
            worker_args.extend(["--seed".into(), seed.to_string()]);
        }
        let dir = tempfile::tempdir().context("a folder for retrained versions")?;
        Ok(Self {
            every,
            since_run: 0,
            healthy: 0,
            capture_every: learning.capture_every.max(1) as u64,
            learning_windows: learning.period.windows as u64,
            capacity: learning.shard_windows * learning.max_shards,
            captured: VecDeque::new(),
            window: m.input.window,
            channels: m.input.channels,
            steps: learning.steps,
            worker_args,
            base_version: m.version.clone(),
            name: m.name.clone(),
            registry: Registry::open(&dir.path().join("models"))?,
            dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            runs: Vec::new(),
            warming: None,
        })
    }

    /// Takes the windows the stream sent while the served version learnt from it (`score
    /// --seed-rows`): captured whole, as the daemon's learner captures its learning period,
    /// and the windows judged after them are sampled (one in `capture_every`).
    pub fn learnt<'a>(&mut self, windows: impl IntoIterator<Item = &'a [f32]>) {
        let mut n = 0u64;
        for w in windows {
            if self.captured.len() == self.capacity {
                self.captured.pop_front();
            }
            self.captured.push_back(w.to_vec());
            n += 1;
        }
        self.healthy = self.learning_windows.max(self.healthy + n);
    }

    /// Sees the served version's verdict on `window`: captures it when healthy (all of the
    /// first `learning_windows`, then one in `capture_every`), and says whether the schedule
    /// ticks (every `every` windows, as the daemon's timer does; the caller skips a tick while
    /// a version warms).
    fn observe(&mut self, verdict: &Verdict, window: &RawWindow) -> bool {
        if verdict.healthy() {
            let after = self.healthy.saturating_sub(self.learning_windows);
            if self.healthy < self.learning_windows || after.is_multiple_of(self.capture_every) {
                if self.captured.len() == self.capacity {
                    self.captured.pop_front();
                }
                self.captured.push_back(window.data.clone());
            }
            self.healthy += 1;
        }
        self.since_run += 1;
        if self.since_run < self.every {
            return false;
        }
        self.since_run = 0;
        !self.captured.is_empty()
    }

    /// Trains on the captured windows and starts the result warming in shadow at window `seq`.
    ///
    /// # Errors
    /// The worker fails, or its result does not load.
    fn train(&mut self, settings: &Settings, seq: u64) -> anyhow::Result<()> {
        let k = self.runs.len() + 1;
        let n = self.captured.len();
        // The captured windows as one shard, trained and imported as the daemon's retraining
        // runs are.
        let shards = self.dir.path().join(format!("capture-{k}"));
        let mut capture = Capture::open(&shards, self.window, self.channels, n, 1)?;
        for w in &self.captured {
            capture.push(w)?;
        }
        capture.flush()?;
        let run = TrainFromCapture {
            model: self.name.clone(),
            capture: shards.clone(),
            window: self.window,
            channels: self.channels,
            steps: self.steps,
            like: self.worker_args.clone(),
            version: Some(format!("{}-retrained-{k}", self.base_version)),
            train: settings.train.clone(),
            registry: self.registry.clone(),
        };
        let version = self.runtime.block_on(run.run(CancellationToken::new()))?;
        std::fs::remove_dir_all(&shards)?;
        let scorer = load(&self.registry.path(&self.name, &version), settings)?;
        info!(version = %version, windows = n, at = seq, "Retrained; warming in shadow.");
        let m = &scorer.version().manifest;
        self.warming = Some(Warming {
            model: ModelRef {
                name: m.name.clone(),
                version: m.version.clone(),
            },
            threshold: m.threshold.value,
            scorer,
            // Warming as in the daemon: for `warm_windows`, following no input level.
            judge: Judge::shadowing(settings.calibration.clone()),
        });
        self.runs.push(Run {
            version,
            windows: n,
            trained_at: seq,
            promoted_at: None,
        });
        Ok(())
    }

    /// Starts a batch: the warming version, if any, scores its windows (raw, as the daemon's
    /// shadow does: it was trained on them as they are).
    ///
    /// # Errors
    /// The shadow's inference fails.
    pub fn begin(&mut self, chunk: &[RawWindow], buf: &mut Vec<f32>) -> anyhow::Result<Pass> {
        let mut warming = self.warming.take();
        let mut residual = Vec::new();
        let energies = match &mut warming {
            Some(s) => {
                buf.clear();
                for w in chunk {
                    buf.extend_from_slice(&w.data);
                }
                s.scorer
                    .score_explained(buf, chunk.len(), Some(&mut residual))?
            }
            None => Vec::new(),
        };
        Ok(Pass {
            warming,
            energies,
            residual,
            parts: Vec::new(),
            due: false,
            warm: false,
        })
    }

    /// The served version judged the batch's window `i`: the shadow judges it too (learning it
    /// only if the served verdict is healthy), and it is captured.
    pub fn judged(
        &mut self,
        pass: &mut Pass,
        i: usize,
        stream: &StreamInfo,
        verdict: &Verdict,
        window: &RawWindow,
    ) {
        if let (Some(w), Some(&energy)) = (&mut pass.warming, pass.energies.get(i)) {
            let len = window.data.len();
            let residual = pass.residual.get(i * len..(i + 1) * len);
            energy_parts(
                residual.unwrap_or_default(),
                stream.channels,
                stream.names.group,
                &mut pass.parts,
            );
            let scored = Scored {
                energy,
                parts: &pass.parts,
            };
            let v = w.judge.judge_guided(
                stream,
                &w.model,
                w.threshold,
                window,
                scored,
                verdict.healthy(),
            );
            pass.warm = !v.learning;
        }
        // A tick while a version warms is skipped, as the daemon's schedule is.
        pass.due |= self.observe(verdict, window) && pass.warming.is_none();
    }

    /// Ends a batch whose windows after it start at `next`: a warm shadow is promoted (its
    /// calibrations handed to `judge`; returned for the caller to serve), and a due run trains.
    ///
    /// # Errors
    /// The run fails.
    pub fn end(
        &mut self,
        pass: Pass,
        judge: &mut Judge,
        settings: &Settings,
        next: u64,
    ) -> anyhow::Result<Option<(Scorer, ModelRef, f32)>> {
        let promoted = match pass.warming {
            Some(s) if pass.warm => {
                judge.adopt_calibrations(s.judge, &s.model.version);
                if let Some(run) = self.runs.last_mut() {
                    run.promoted_at = Some(next);
                }
                info!(at = next, version = %s.model.version, "Retrained version promoted.");
                Some((s.scorer, s.model, s.threshold))
            }
            other => {
                self.warming = other;
                None
            }
        };
        if pass.due && self.warming.is_none() {
            self.train(settings, next)?;
        }
        Ok(promoted)
    }
}

/// One batch's view of the warming version.
pub struct Pass {
    warming: Option<Warming>,
    /// Its energies for the batch's windows.
    energies: Vec<f32>,
    /// Its residuals for them, end to end (for each channel's part of the energy).
    residual: Vec<f32>,
    /// The window's parts, reused.
    parts: Vec<f32>,
    /// The schedule ticked in the batch with no version warming.
    due: bool,
    /// Its calibration has learnt: it can serve.
    warm: bool,
}

fn load(dir: &Path, settings: &Settings) -> anyhow::Result<Scorer> {
    Scorer::load(ModelVersion::open(dir)?, &settings.runtime)
        .with_context(|| format!("the retrained model in {} does not load", dir.display()))
}
