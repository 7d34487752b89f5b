//! Control commands arriving on `{prefix}/control/<command>`: refused when retained or over
//! the budget, parsed strictly otherwise, and queued for the control loop.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::control::{Budget, ControlMessage, RATE_LIMIT_REPORT_EVERY, RETAINED, topic_prefix};
use crate::telemetry::RateLimit;

/// The control topics' handler, owned by the ingest stage.
#[derive(Debug)]
pub(super) struct ControlInput {
    /// `{prefix}/control/`.
    pub(super) prefix: String,
    /// To the control loop; bounded, and full only if the loop is stuck (then: dropped).
    tx: mpsc::Sender<ControlMessage>,
    budget: Budget,
    /// One published refusal per interval for commands over the budget.
    rate_report: RateLimit,
}

impl ControlInput {
    pub(super) fn new(prefix: &str, tx: mpsc::Sender<ControlMessage>, per_minute: u32) -> Self {
        Self {
            prefix: topic_prefix(prefix),
            tx,
            budget: Budget::new(per_minute, Instant::now()),
            rate_report: RateLimit::new(RATE_LIMIT_REPORT_EVERY),
        }
    }

    /// Checks and queues one command (`command` is the topic after the prefix); returns the
    /// outcome label.
    pub(super) fn handle(&mut self, command: &str, payload: &[u8], retain: bool) -> &'static str {
        let command_name = || command.chars().take(64).collect::<String>();
        let (message, outcome) = if retain {
            let refused = ControlMessage::Refused {
                command: command_name(),
                reason: RETAINED.into(),
            };
            (Some(refused), "retained")
        } else if !self.budget.take(Instant::now()) {
            // Over the budget the command is not even parsed; a flood is reported once a minute.
            let report =
                self.rate_report
                    .allow(Instant::now())
                    .map(|held_back| ControlMessage::Refused {
                        command: command_name(),
                        reason: format!(
                            "rate limit: at most {} commands a minute ({held_back} more refused \
                         without a reply since the last one)",
                            self.budget.per_minute()
                        ),
                    });
            if report.is_none() {
                debug!(command, "Control command over the rate limit; refused.");
            }
            (report, "rate_limited")
        } else {
            let message = crate::control::parse(command, payload);
            let outcome = match message {
                ControlMessage::Command(_) | ControlMessage::Learnt { .. } => "accepted",
                ControlMessage::Refused { .. } => "refused",
            };
            (Some(message), outcome)
        };
        if let Some(m) = message
            && self.tx.try_send(m).is_err()
        {
            warn!(command, "Control queue full; command dropped.");
            return "dropped";
        }
        outcome
    }
}
