//! Commands to the running daemon, from signals, the registry watch and MQTT control topics
//! (`{prefix}/control/<command>`). Parsing is strict: an unknown command, unknown field or bad
//! JSON is refused with a reason, which the daemon publishes on `{prefix}/events`.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// A command for the daemon's control loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Rebuild every model's session from its active registry version.
    Reload,
    /// Validate and activate a version.
    Activate {
        /// Model name.
        model: String,
        /// Version label.
        version: String,
    },
    /// Go back to the previously active version.
    Rollback {
        /// Model name.
        model: String,
    },
    /// Train a new version from the healthy windows captured for the model.
    Train {
        /// Model name.
        model: String,
    },
    /// Score beside the active version without alerting, to compare alert rates.
    Shadow {
        /// Model name.
        model: String,
        /// Candidate version.
        version: String,
    },
    /// Report the shadow's and the active version's rates, then activate the shadow.
    Promote {
        /// Model name.
        model: String,
    },
}

impl Command {
    /// The command's name, as in the control topic.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Reload => "reload",
            Self::Activate { .. } => "activate",
            Self::Rollback { .. } => "rollback",
            Self::Train { .. } => "train",
            Self::Shadow { .. } => "shadow",
            Self::Promote { .. } => "promote",
        }
    }
}

/// A control message as received: a command, or the reason it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// A valid command.
    Command(Command),
    /// A learner's period is over: train the model's first version, unless a version was
    /// chosen by hand meanwhile (the model no longer learns; training would replace it).
    Learnt {
        /// Model name.
        model: String,
    },
    /// A refused message: what was asked, and why not.
    Refused {
        /// The topic's last level.
        command: String,
        /// Why.
        reason: String,
    },
}

/// A token bucket: `per_minute` commands at once, refilled evenly over a minute.
#[derive(Debug, Clone)]
pub struct Budget {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// A full bucket.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute,
            tokens: f64::from(per_minute),
            last: now,
        }
    }

    /// Takes one command's token; `false` when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() / 60.0;
        let cap = f64::from(self.per_minute);
        self.tokens = (self.tokens + refill * cap).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Commands allowed per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

/// The refusal of a retained command: it would run again at every reconnect.
pub const RETAINED: &str = "retained control messages are refused (they would run again at every \
     reconnect); publish commands with retain = false";

/// How often a rate-limit refusal is published back (the rest are counted and logged).
pub const RATE_LIMIT_REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelVersionArgs {
    model: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelArgs {
    model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// `{prefix}/control/`: what a control topic starts with (subscribed as `{prefix}/control/+`).
pub fn topic_prefix(prefix: &str) -> String {
    format!("{prefix}/control/")
}

/// Parses the command named by the topic's last level and its JSON payload.
pub fn parse(command: &str, payload: &[u8]) -> ControlMessage {
    let result = parse_inner(command, payload);
    match result {
        Ok(c) => ControlMessage::Command(c),
        Err(reason) => ControlMessage::Refused {
            command: short(command),
            reason,
        },
    }
}

fn parse_inner(command: &str, payload: &[u8]) -> Result<Command, String> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    // serde would also take a struct from a JSON array of its fields; only objects are valid.
    if !payload.trim_ascii_start().starts_with(b"{") {
        return Err(format!(
            "bad payload for {:?}: must be a JSON object",
            short(command)
        ));
    }
    let bad = |e: serde_json::Error| format!("bad payload for {:?}: {e}", short(command));
    let name_ok = |s: &str| {
        !s.is_empty() && s.len() <= 128 && !s.contains(['/', '\\']) && !s.starts_with('.')
    };
    match command {
        "reload" => serde_json::from_slice::<NoArgs>(payload)
            .map(|_| Command::Reload)
            .map_err(bad),
        "activate" | "shadow" => {
            let a: ModelVersionArgs = serde_json::from_slice(payload).map_err(bad)?;
            if !name_ok(&a.model) || !name_ok(&a.version) {
                return Err("model and version must be plain names".into());
            }
            let (model, version) = (a.model, a.version);
            Ok(if command == "shadow" {
                Command::Shadow { model, version }
            } else {
                Command::Activate { model, version }
            })
        }
        "rollback" | "train" | "promote" => {
            let a: ModelArgs = serde_json::from_slice(payload).map_err(bad)?;
            if !name_ok(&a.model) {
                return Err("model must be a plain name".into());
            }
            let model = a.model;
            Ok(match command {
                "train" => Command::Train { model },
                "promote" => Command::Promote { model },
                _ => Command::Rollback { model },
            })
        }
        other => Err(format!(
            "unknown command {:?} (known: reload, activate, rollback, train, shadow, promote)",
            short(other)
        )),
    }
}

/// A command name as echoed in a refusal: at most 64 characters.
fn short(command: &str) -> String {
    command.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_commands() {
        assert_eq!(
            parse("reload", b""),
            ControlMessage::Command(Command::Reload)
        );
        assert_eq!(
            parse("activate", br#"{"model":"vib","version":"v2"}"#),
            ControlMessage::Command(Command::Activate {
                model: "vib".into(),
                version: "v2".into()
            })
        );
        assert_eq!(
            parse("rollback", br#"{"model":"vib"}"#),
            ControlMessage::Command(Command::Rollback {
                model: "vib".into()
            })
        );
        assert_eq!(
            parse("train", br#"{"model":"vib"}"#),
            ControlMessage::Command(Command::Train {
                model: "vib".into()
            })
        );
    }

    #[test]
    fn budget_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 20 s refill one of three a minute.
        assert!(b.take(t0 + Duration::from_secs(20)));
        assert!(!b.take(t0 + Duration::from_secs(21)));
        // Never more than the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn refusals_carry_a_reason() {
        for (cmd, payload, needle) in [
            ("explode", b"{}".as_slice(), "unknown command"),
            ("activate", br#"{"model":"vib"}"#, "missing field `version`"),
            (
                "activate",
                br#"{"model":"vib","version":"../../etc"}"#,
                "plain names",
            ),
            ("rollback", br#"{"model":"vib","extra":1}"#, "unknown field"),
            ("reload", b"{not json", "bad payload"),
        ] {
            match parse(cmd, payload) {
                ControlMessage::Refused { reason, .. } => {
                    assert!(reason.contains(needle), "{cmd}: {reason}")
                }
                other => panic!("{cmd} accepted: {other:?}"),
            }
        }
    }
}
