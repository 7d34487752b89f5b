//! What a verdict is handed to ([`Output`]: the sink, with the node's name and the metrics),
//! and how the alerts of windows judged again after a restart are set right against what an
//! earlier run published ([`set_right`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use tracing::info;

use super::{AlertSink, ForgottenClear, ForgottenState, StateMessage};
use crate::detect::{AlertEvent, AlertState, Transition, Verdict};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::StateLabel;

/// What a verdict is handed to.
pub(super) struct Output<S> {
    pub(super) sink: S,
    pub(super) node: String,
    pub(super) metrics: Arc<Metrics>,
}

impl<S: AlertSink> Output<S> {
    /// Says `stream` was forgotten: its retained state (with `state`), and first the clear of
    /// its alert when it was `raised` (nothing else ever would clear it).
    pub(super) async fn say_forgotten(
        &self,
        stream: &str,
        raised: bool,
        state: bool,
    ) -> Result<(), S::Error> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let clear = raised.then(|| ForgottenClear {
            stream: stream.to_owned(),
            state: Transition::Cleared,
            reason: "forgotten",
            time: time.clone(),
            node: self.node.clone(),
        });
        let forgotten = ForgottenState {
            stream: stream.to_owned(),
            phase: "forgotten",
            state: AlertState::Normal,
            time,
            node: self.node.clone(),
        };
        self.sink
            .forgotten(clear.as_ref(), state.then_some(&forgotten))
            .await?;
        if raised {
            let cleared = StateLabel { state: "cleared" };
            self.metrics.alerts.get_or_create(&cleared).inc();
            info!(stream, state = "cleared", reason = "forgotten", "Alert.");
        }
        Ok(())
    }
}

impl<S: AlertSink> Output<S> {
    /// Energy telemetry, then the alert on a transition (unless an earlier run stored it), then
    /// the retained state on a transition or a stream's first window.
    pub(super) async fn hand_on(&self, v: &Verdict) -> Result<(), S::Error> {
        self.sink.energy(v).await?;
        if v.alerted_before && v.transition.is_some() {
            self.metrics.alerts_deduplicated.inc();
            info!(stream = %v.stream, seq = v.seq, "Alert already stored by an earlier run; not published again.");
        } else if let Some(event) = AlertEvent::from_verdict(v, &self.node, SystemTime::now()) {
            self.sink.alert(&event).await?;
            self.metrics
                .alerts
                .get_or_create(&StateLabel {
                    state: event.state.as_str(),
                })
                .inc();
            info!(stream = %v.stream, state = event.state.as_str(), energy = v.energy, threshold = v.threshold, seq = v.seq, "Alert.");
        }
        if v.transition.is_some() || v.first || v.season_chosen {
            let state = StateMessage {
                stream: &v.stream,
                phase: "monitoring",
                state: v.state,
                energy: v.energy,
                probability: v.probability,
                season_probability: v.season_probability,
                season: v.season,
                learning: v.learning,
                threshold: v.threshold,
                model: &v.model,
                seq: v.seq,
                node: &self.node,
                explanation: v.explanation.as_ref(),
            };
            self.sink.state(&state).await?;
        }
        Ok(())
    }
}

/// At a stream's first window past the last alert an earlier run stored (`alerted_through`),
/// sets what subscribers were told (raised, for the streams in `raised_before`, or not) right
/// against the windows judged again, which a season saved earlier, or a version activated
/// just before a crash, can judge otherwise: a raise left without its clear is cleared at
/// this window, a clear that the windows judged again did not reach is raised again, and a
/// transition to what they were told already is not published.
pub(super) fn set_right(
    alerted_through: &mut HashMap<String, u64>,
    raised_before: &mut HashSet<String>,
    verdict: &mut Verdict,
) {
    let Some(&last) = alerted_through.get(&verdict.stream) else {
        return;
    };
    if verdict.seq <= last {
        return;
    }
    alerted_through.remove(&verdict.stream);
    let told = raised_before.remove(&verdict.stream);
    let now = verdict.state == AlertState::Raised;
    match verdict.transition {
        Some(_) if told == now => verdict.alerted_before = true,
        None if told != now => {
            info!(stream = %verdict.stream, seq = verdict.seq, raised = now, "Windows judged again after a restart disagree with the alert stored for them; set right.");
            verdict.transition = Some(if now {
                Transition::Raised
            } else {
                Transition::Cleared
            });
        }
        _ => {}
    }
}
