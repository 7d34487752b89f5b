//! Where stages meet: the MQTT publisher as the alerting stage's sink and the learners' phase
//! sink, and the activation gate plus retraining capture as the alerting stage's tap.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;

use crate::alerting::{AlertSink, ForgottenClear, ForgottenState, StaleAlert, StateMessage, Tap};
use crate::detect::{AlertEvent, Verdict};
use crate::model::gate::RecentWindows;
use crate::mqtt::{MqttError, Publisher};
use crate::train::capture::Capture;
use crate::train::learn::PhaseSink;

/// The alerting stage's output over MQTT: energy on `{prefix}/energy/...`, alerts through the
/// outbox on `{prefix}/alerts/...`, retained state on `{prefix}/state/...`, and the retained
/// `offline` status at the end.
#[derive(Debug, Clone)]
pub(crate) struct MqttAlerts(pub(crate) Publisher);

impl AlertSink for MqttAlerts {
    type Error = MqttError;

    async fn energy(&self, v: &Verdict) -> Result<(), MqttError> {
        if !self.0.publishes_energy() {
            return Ok(());
        }
        self.0.energy(&v.stream, serde_json::to_vec(v)?).await
    }

    async fn alert(&self, e: &AlertEvent) -> Result<(), MqttError> {
        self.0.alert(&e.stream, serde_json::to_value(e)?).await?;
        Ok(())
    }

    async fn stale(&self, a: &StaleAlert) -> Result<(), MqttError> {
        self.0.alert(&a.stream, serde_json::to_value(a)?).await?;
        Ok(())
    }

    async fn state(&self, s: &StateMessage<'_>) -> Result<(), MqttError> {
        self.0.state(s.stream, serde_json::to_vec(s)?).await
    }

    async fn forgotten(
        &self,
        clear: Option<&ForgottenClear>,
        state: Option<&ForgottenState>,
    ) -> Result<(), MqttError> {
        if let Some(c) = clear {
            self.0.alert(&c.stream, serde_json::to_value(c)?).await?;
        }
        match state {
            Some(s) => self.0.state(&s.stream, serde_json::to_vec(s)?).await,
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), MqttError> {
        self.0.close().await
    }

    fn forget(&self, stream: &str) {
        self.0.forget(stream);
    }
}

impl PhaseSink for Publisher {
    async fn phase(&self, stream: &str, model: &str, phase: &'static str, captured: usize) {
        let state = serde_json::json!({
            "stream": stream, "phase": phase, "model": { "name": model }, "captured": captured,
            "node": self.node(),
        });
        let sent = match serde_json::to_vec(&state) {
            Ok(json) => self.state(stream, json).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = sent {
            warn!(stream, error = %e, "Cannot publish the stream's phase.");
        }
    }
}

/// Healthy windows feed each model's activation gate (the recent windows a candidate is
/// scored on) and its retraining capture.
pub(crate) struct HealthyWindows {
    pub(crate) recent: HashMap<String, Arc<RecentWindows>>,
    pub(crate) captures: HashMap<String, Capture>,
}

impl Tap for HealthyWindows {
    fn healthy(&mut self, model: &str, window: &[f32]) {
        if let Some(r) = self.recent.get(model) {
            r.push(window);
        }
        if let Some(c) = self.captures.get_mut(model)
            && let Err(e) = c.push(window)
        {
            warn!(model, error = %e, "Cannot capture healthy windows.");
        }
    }

    fn flush(&mut self) {
        for (model, c) in &mut self.captures {
            if let Err(e) = c.flush() {
                warn!(model = %model, error = %e, "Cannot write captured windows.");
            }
        }
    }

    fn tick(&mut self) {
        for (model, c) in &mut self.captures {
            if let Err(e) = c.write_due() {
                warn!(model = %model, error = %e, "Cannot write captured windows.");
            }
        }
    }
}
