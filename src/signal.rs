//! Process signals as daemon commands: SIGTERM/SIGINT drain and stop (a second one stops at
//! once), SIGHUP reloads the models.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::info;

/// What the daemon is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Drain: score what was received, publish its alerts, then stop.
    Shutdown,
    /// Reload every model's active registry version (`ACTIVE`) through the activation gate
    /// (hot swap; the old one keeps serving if the new one is refused).
    Reload,
    /// Stop now, skipping the rest of the drain.
    Quit,
}

/// Listens for Unix signals and forwards them as [`Signal`]s.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn listen() -> std::io::Result<mpsc::Receiver<Signal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(8);
    // Not tracked by the app's TaskTracker on purpose: it must outlive the drain so that a
    // second signal can cut it short. It ends when the receiver is dropped.
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let sig = tokio::select! {
                Some(()) = term.recv() => if stopping { Signal::Quit } else { Signal::Shutdown },
                Some(()) = int.recv() => if stopping { Signal::Quit } else { Signal::Shutdown },
                Some(()) = hup.recv() => Signal::Reload,
                else => return,
            };
            stopping |= sig == Signal::Shutdown;
            info!(signal = ?sig, "Signal received.");
            if tx.send(sig).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
