//! Telemetry: tracing subscriber, Prometheus metrics, HTTP health endpoints, systemd notify.

pub mod health;
pub mod metrics;
pub mod process;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
pub use health::{Exits, StageGuard, Stages, stages};
pub use metrics::Metrics;

/// Default log filter; `EBGAND_LOG` or `RUST_LOG` override it. The embedded broker of the
/// demo (rumqttd) logs client disconnects as errors: silenced.
pub const DEFAULT_FILTER: &str = "info,ort=warn,rumqttd=off";

/// Installs the global tracing subscriber: plain text on a terminal, JSON lines otherwise
/// (journald). Does nothing if one is already installed (tests).
pub fn init_tracing(format: LogFormat) {
    let filter = std::env::var("EBGAND_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Plain => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(Stderr {
            journal: to_journal(),
        });
    // try_init fails only when a subscriber exists already, which is fine.
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    drop(installed);
}

/// Standard error, each event prefixed with its syslog priority (`<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug) when it goes to the journal: journald reads the prefix
/// (`SyslogLevelPrefix=`, on by default), so `journalctl -p err -u ebgand` shows the errors.
/// systemd sets `JOURNAL_STREAM` when standard error is connected to the journal.
#[derive(Clone, Copy)]
struct Stderr {
    journal: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Prefixed;

    fn make_writer(&'a self) -> Self::Writer {
        Prefixed(None)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Prefixed(self.journal.then(|| priority(*meta.level())))
    }
}

/// Whether standard error goes to the journal (systemd sets `JOURNAL_STREAM` then).
pub fn to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The syslog priority prefix journald reads for `level`.
pub fn priority(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "<3>",
        tracing::Level::WARN => "<4>",
        tracing::Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// Standard error with a priority to write before the event's first bytes.
struct Prefixed(Option<&'static str>);

impl std::io::Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if let Some(p) = self.0.take() {
            err.write_all(p.as_bytes())?;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether logs may carry colour codes: only on a terminal, and not when `NO_COLOR` is set
/// (<https://no-color.org>), so a log file or a pipe gets plain text.
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Errors of the telemetry stage.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the HTTP listener for `/metrics`, `/healthz`, `/readyz`.
///
/// # Errors
/// [`TelemetryError::Bind`] when the address is taken.
pub async fn bind_http(addr: SocketAddr) -> Result<tokio::net::TcpListener, TelemetryError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })
}

/// Serves the HTTP endpoints until `token` is cancelled.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(metrics);
    if let Ok(addr) = listener.local_addr() {
        info!(http.listen = %addr, "HTTP endpoints up: /metrics /healthz /readyz");
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "HTTP server stopped with an error.");
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            // What prometheus-client writes is OpenMetrics (counter families named without
            // `_total`, a closing `# EOF`), so it is served as such.
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn ready_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Allows one log line per interval and counts what it held back.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one allowed)` when a line may be logged now.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// systemd notifications; all no-ops outside systemd (no `NOTIFY_SOCKET`).
#[derive(Debug, Clone, Copy)]
pub struct Systemd;

impl Systemd {
    /// `READY=1`.
    pub fn ready(self) {
        notify(&[sd_notify::NotifyState::Ready]);
    }
    /// `STOPPING=1`.
    pub fn stopping(self) {
        notify(&[sd_notify::NotifyState::Stopping]);
    }
    /// `RELOADING=1` with the monotonic time systemd expects since v253.
    pub fn reloading(self) {
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
            Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
        }
    }
    /// The watchdog interval systemd asked for (`WatchdogSec`), if any.
    pub fn watchdog_interval(self) -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "systemd notify failed.");
    }
}

/// How long a stage may hold work without progress when systemd sets no watchdog interval.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Watches the stages' progress until `token` is cancelled, and pets the systemd watchdog
/// (`systemd`: its interval) only while no stage holds work without progress for longer than
/// half the interval ([`STALL_LIMIT`] without systemd): a scorer stuck in an inference, or a
/// stage waiting on a stalled one, stops the petting, and systemd restarts the service. A wedged
/// runtime stops it too (this runs on it). While a broker connection is down the stages may
/// wait on the network; that is the reconnect logic's to handle, not a restart's, so the
/// watchdog is fed. Stalled stages are logged, shown in `/readyz` and in
/// `ebgand_stage_stalled`.
pub async fn watchdog(
    systemd: Option<Duration>,
    stages: health::Stages,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    // `WATCHDOG_USEC=0` is no interval systemd would set: no watchdog then, not a zero tick.
    let systemd = systemd.filter(|i| !i.is_zero());
    let limit = stall_limit(systemd);
    let mut tick = tokio::time::interval((limit / 2).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stalled = if metrics.connected() {
            stages.stalled(limit)
        } else {
            Vec::new()
        };
        metrics.set_stalled(&stalled);
        let names: Vec<String> = stalled.iter().map(|(s, _)| s.clone()).collect();
        if stalled.is_empty() {
            if !reported.is_empty() {
                info!(stages = ?reported, "Stages make progress again; the watchdog is fed.");
            }
            if systemd.is_some() {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        } else if names != reported {
            let held: Vec<String> = stalled
                .iter()
                .map(|(s, d)| format!("{s} ({} s)", d.as_secs()))
                .collect();
            error!(stages = ?held, limit_s = limit.as_secs_f64(), systemd = systemd.is_some(), "Stages hold work without progress; the watchdog is no longer fed.");
        }
        reported = names;
    }
}

/// How long a stage may hold work without progress: half systemd's watchdog interval, or
/// [`STALL_LIMIT`] without one.
fn stall_limit(systemd: Option<Duration>) -> Duration {
    systemd.map_or(STALL_LIMIT, |i| i / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let mut r = RateLimit::new(Duration::from_secs(5));
        let t0 = std::time::Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(6)), Some(2));
    }

    #[test]
    fn a_stage_may_hold_work_for_half_the_interval() {
        assert_eq!(
            stall_limit(Some(Duration::from_secs(30))),
            Duration::from_secs(15)
        );
        assert_eq!(stall_limit(None), STALL_LIMIT);
    }

    /// `WATCHDOG_USEC=0` is taken as no systemd watchdog: the limit is [`STALL_LIMIT`], not
    /// zero (which reported every busy stage, and once panicked the task).
    #[tokio::test]
    async fn a_zero_interval_does_not_report_a_busy_stage() {
        let token = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        metrics.set_connected("ingest", true);
        metrics.set_connected("publish", true);
        let (stages, _exits) = health::stages(metrics.clone(), 1);
        let guard = stages.guard("scorer:a".to_owned());
        guard.pulse().progress();
        let dog = tokio::spawn(watchdog(
            Some(Duration::ZERO),
            stages,
            metrics.clone(),
            token.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let why = metrics.not_ready().unwrap_or_default();
        assert!(
            !why.contains("stalled"),
            "a busy stage reported at once: {why}"
        );
        token.cancel();
        dog.await.unwrap();
        drop(guard);
    }
}
