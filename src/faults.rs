//! Fault injection, for this crate's own tests only.
//!
//! The hooks are compiled in with the `fault-injection` feature, which only the crate's
//! dev-dependency on itself turns on (`cargo test`, `cargo clippy --all-targets`): `cargo
//! build`, `cargo build --release` and every installed binary have none of it. There,
//! [`Faults`] is an empty type and each hook is a constant `false` or `None`.
//!
//! In-process tests set faults on the [`Faults`] in their `Settings` and keep a clone to change
//! them while the daemon runs; the test binary of `ebgand run` reads `EBGAND_FAULTS` (see
//! `Faults::from_env`).

#[cfg(feature = "fault-injection")]
use std::collections::HashMap;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "fault-injection")]
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Faults to inject. Cheap to clone; clones share their state.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    state: Arc<Mutex<State>>,
    /// Set once any fault is; until then every hook returns without taking the lock (benches
    /// are built with the feature too).
    #[cfg(feature = "fault-injection")]
    armed: Arc<AtomicBool>,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
struct State {
    pause_scoring: bool,
    scorer_panics: HashMap<String, u32>,
    training_panics: HashMap<String, u32>,
    batcher_exits: HashMap<String, u32>,
    load_delay: Option<Duration>,
    activation_delay: Option<Duration>,
    activation_loads: u32,
    loads: u32,
    journal_syncs_held: bool,
    journal_sync_waiting: bool,
}

/// The longest one journal sync waits on [`Faults::hold_journal_syncs`]: code that blocks the
/// runtime's only worker with it then fails a test instead of hanging it.
#[cfg(feature = "fault-injection")]
const JOURNAL_HOLD_MAX: Duration = Duration::from_secs(20);

#[cfg(not(feature = "fault-injection"))]
impl Faults {
    /// Whether scorer threads should wait before their next batch.
    #[inline]
    pub fn scoring_paused(&self) -> bool {
        false
    }

    /// Whether `model`'s scorer thread should panic on this batch.
    #[inline]
    pub fn scorer_panics(&self, _model: &str) -> bool {
        false
    }

    /// Whether `model`'s batcher should stop now.
    #[inline]
    pub fn batcher_exits(&self, _model: &str) -> bool {
        false
    }

    /// Whether `model`'s training task should panic as it starts.
    #[inline]
    pub fn training_panics(&self, _model: &str) -> bool {
        false
    }

    /// How long loading a model should take at least (a slow TensorRT engine build).
    #[inline]
    pub fn load_delay(&self) -> Option<Duration> {
        None
    }

    /// How long loading a candidate for activation should take at least.
    #[inline]
    pub fn activation_delay(&self) -> Option<Duration> {
        None
    }

    /// Called by the ingest journal before each sync, in its blocking section.
    #[inline]
    pub fn hold_journal_sync(&self) {}
}

#[cfg(feature = "fault-injection")]
impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state to change: arms the hooks.
    fn arm(&self) -> std::sync::MutexGuard<'_, State> {
        self.armed.store(true, Ordering::Release);
        self.state()
    }

    /// The state to read, once any fault was set.
    fn armed(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.armed.load(Ordering::Acquire).then(|| self.state())
    }

    /// Whether scorer threads should wait before their next batch.
    pub fn scoring_paused(&self) -> bool {
        self.armed().is_some_and(|s| s.pause_scoring)
    }

    /// Whether `model`'s scorer thread should panic on this batch (one of those asked for).
    pub fn scorer_panics(&self, model: &str) -> bool {
        self.armed()
            .is_some_and(|mut s| take(&mut s.scorer_panics, model))
    }

    /// Whether `model`'s training task should panic as it starts (one of those asked for).
    pub fn training_panics(&self, model: &str) -> bool {
        self.armed()
            .is_some_and(|mut s| take(&mut s.training_panics, model))
    }

    /// Whether `model`'s batcher should stop now (one of those asked for).
    pub fn batcher_exits(&self, model: &str) -> bool {
        self.armed()
            .is_some_and(|mut s| take(&mut s.batcher_exits, model))
    }

    /// How long loading a model should take at least (a slow TensorRT engine build; counted:
    /// see [`Faults::loads`]).
    pub fn load_delay(&self) -> Option<Duration> {
        self.armed().and_then(|mut s| {
            s.loads += 1;
            s.load_delay
        })
    }

    /// Models loaded (not for activation) since a fault was first set.
    pub fn loads(&self) -> u32 {
        self.state().loads
    }

    /// How long loading a candidate for activation should take at least (counted: see
    /// [`Faults::activation_loads`]).
    pub fn activation_delay(&self) -> Option<Duration> {
        self.armed().and_then(|mut s| {
            s.activation_loads += 1;
            s.activation_delay.or(s.load_delay)
        })
    }

    /// Candidates loaded for activation since a fault was first set.
    pub fn activation_loads(&self) -> u32 {
        self.state().activation_loads
    }

    /// Called by the ingest journal before each sync, in its blocking section: while
    /// syncs are held, waits (a hung fsync), at most [`JOURNAL_HOLD_MAX`].
    pub fn hold_journal_sync(&self) {
        let since = std::time::Instant::now();
        while self.armed().is_some_and(|s| s.journal_syncs_held)
            && since.elapsed() < JOURNAL_HOLD_MAX
        {
            self.state().journal_sync_waiting = true;
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(mut s) = self.armed() {
            s.journal_sync_waiting = false;
        }
    }

    /// Journal syncs wait while `on`, as a hung fsync would (an SD card's can take seconds).
    pub fn hold_journal_syncs(&self, on: bool) {
        self.arm().journal_syncs_held = on;
    }

    /// Whether a journal sync is waiting on [`Faults::hold_journal_syncs`] now.
    pub fn journal_sync_waiting(&self) -> bool {
        self.armed().is_some_and(|s| s.journal_sync_waiting)
    }

    /// Scorer threads hold their next batch while `on`: the window queues fill up.
    pub fn pause_scoring(&self, on: bool) {
        self.arm().pause_scoring = on;
    }

    /// `model`'s scorer thread panics on its next `times` batches.
    pub fn panic_scorer(&self, model: &str, times: u32) {
        self.arm().scorer_panics.insert(model.to_owned(), times);
    }

    /// `model`'s next `times` training tasks panic as they start.
    pub fn panic_training(&self, model: &str, times: u32) {
        self.arm().training_panics.insert(model.to_owned(), times);
    }

    /// `model`'s batcher stops (returns) before its next batch.
    pub fn exit_batcher(&self, model: &str) {
        self.arm().batcher_exits.insert(model.to_owned(), 1);
    }

    /// Every model load takes at least `delay`.
    pub fn delay_loads(&self, delay: Duration) {
        self.arm().load_delay = Some(delay);
    }

    /// Loading a candidate for activation (SIGHUP, control, registry) takes at least `delay`;
    /// loads at start-up do not.
    pub fn delay_activations(&self, delay: Duration) {
        self.arm().activation_delay = Some(delay);
    }

    /// Faults from `EBGAND_FAULTS`, comma-separated: `pause_scoring`, `load_delay_ms=N`,
    /// `activation_delay_ms=N`, `panic_scorer=MODEL`, `exit_batcher=MODEL`. For the tests that
    /// run the binary.
    pub fn from_env() -> Self {
        let faults = Self::default();
        let spec = std::env::var("EBGAND_FAULTS").unwrap_or_default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                None if item == "pause_scoring" => faults.pause_scoring(true),
                Some(("load_delay_ms", ms)) => {
                    if let Ok(ms) = ms.parse() {
                        faults.delay_loads(Duration::from_millis(ms));
                    }
                }
                Some(("activation_delay_ms", ms)) => {
                    if let Ok(ms) = ms.parse() {
                        faults.delay_activations(Duration::from_millis(ms));
                    }
                }
                Some(("panic_scorer", model)) => faults.panic_scorer(model, u32::MAX),
                Some(("exit_batcher", model)) => faults.exit_batcher(model),
                _ => tracing::warn!(fault = item, "Unknown fault in EBGAND_FAULTS; ignored."),
            }
        }
        faults
    }
}

#[cfg(feature = "fault-injection")]
fn take(counts: &mut HashMap<String, u32>, model: &str) -> bool {
    match counts.get_mut(model) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}
