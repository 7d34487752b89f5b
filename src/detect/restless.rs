//! The restless raise: a second way to raise an alert, for a stream that spends most of a
//! stretch in its tail without ever reaching the alert probability three windows in a row.
//!
//! The ordinary rule raises on a few windows in a row at or over `alert_probability` (0.9999):
//! a spike, a step, a fault that climbs. A stream that turns restless for hours (a load that
//! oscillates, a level that wanders, a knock diluted in the sum of eight channels) can sit at
//! 0.99-0.9999 the whole time and never trip it. This rule counts, over the last
//! [`Restless::windows`] judged windows, those at or over [`Restless::probability`], and raises
//! when at least [`Restless::share`] of them are. On NAB dev it raised 19 windows of 23
//! against 17.7 (docs/EVALUATION-ROUNDS.md, round sixteen).
//!
//! It pages a restless spell once. Any raise spends it, and it is armed again only once the
//! stream has calmed with no alert up: fewer than [`Restless::calm`] of the last windows in the
//! tail. Without
//! that, a spell of hundreds of windows is raised, cleared by the ordinary rule (ten windows
//! under the alert probability) and raised again every `windows` windows. With
//! [`Restless::hold`], an alert the rule raised also stays up until the stream has calmed.
//!
//! Pure: its state (a ring of one bit per window) serialises into the checkpoint.

use serde::{Deserialize, Serialize};

/// The restless raise's settings (`[detect] restless_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restless {
    /// A judged window at or over this probability counts as restless. 0: the rule is off.
    pub probability: f64,
    /// How many of the newest judged windows are counted.
    pub windows: u32,
    /// The alert is raised when at least this share of them are restless.
    pub share: f64,
    /// Under this share the stream has calmed: the rule is armed again (and, with `hold`, an
    /// alert it raised may clear).
    pub calm: f64,
    /// An alert the rule raised stays up until the stream has calmed, whatever the ordinary
    /// clearing rule says.
    pub hold: bool,
}

impl Default for Restless {
    fn default() -> Self {
        Self {
            probability: 0.99,
            windows: 100,
            share: 0.9,
            calm: 0.5,
            hold: false,
        }
    }
}

impl Restless {
    /// Whether the rule is on.
    pub fn on(&self) -> bool {
        self.probability > 0.0 && self.windows > 0
    }

    /// Restless windows (of the last `windows`) at or over which the rule raises.
    fn raise_at(&self) -> u32 {
        ((self.share * f64::from(self.windows)).ceil() as u32).max(1)
    }

    /// Restless windows under which the stream has calmed.
    fn calm_under(&self) -> u32 {
        (self.calm * f64::from(self.windows)).ceil() as u32
    }
}

/// Why the restless rule raised an alert (in the alert, as `"restless"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Raise {
    /// The probability a window counted as restless at.
    pub probability: f64,
    /// The windows counted (the last `windows`, fewer early on).
    pub windows: u32,
    /// How many of them were restless.
    pub restless: u32,
}

/// One stream's count of restless windows (in the detector's checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spell {
    /// One bit per judged window, window `i` at bit `i % windows` (its word `/ 64`).
    bits: Vec<u64>,
    /// Judged windows counted since the ring began.
    seen: u64,
    /// The rule has raised (or an alert was raised) since the stream last calmed.
    #[serde(default)]
    spent: bool,
    /// The alert up now was raised by this rule.
    #[serde(default)]
    raised: bool,
}

/// What one window did to a stream's spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The rule raises now (it is armed and the share is reached).
    pub raise: bool,
    /// The stream has calmed (fewer than `calm` of the last windows restless).
    pub calm: bool,
}

impl Spell {
    /// Whether nothing was counted yet (nothing to save).
    pub fn is_empty(&self) -> bool {
        self.seen == 0 && !self.spent
    }

    /// Counts one judged window of `probability`, judged while an alert is up (`alert_up`) or
    /// not. The rule is armed again only by calm with no alert up: an alert raised early in a
    /// spell, while few windows were yet restless, still spends it.
    pub fn push(&mut self, probability: f64, rule: &Restless, alert_up: bool) -> Step {
        let n = u64::from(rule.windows.max(1));
        let words = n.div_ceil(64) as usize;
        // Bits past the ring's end: it was longer before a restart, within the same words.
        let beyond = n % 64 != 0 && self.bits.last().is_some_and(|w| w >> (n % 64) != 0);
        if self.bits.len() != words || beyond {
            // A first window, or `windows` changed across a restart: count again.
            *self = Self {
                bits: vec![0; words],
                ..Self::default()
            };
        }
        let i = self.seen % n;
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if probability >= rule.probability {
            self.bits[word] |= bit;
        } else {
            self.bits[word] &= !bit;
        }
        self.seen += 1;
        let count = self.count();
        let calm = count < rule.calm_under();
        if calm && !alert_up {
            self.spent = false;
        }
        Step {
            raise: !self.spent && count >= rule.raise_at(),
            calm,
        }
    }

    /// Restless windows in the ring (its set bits: at most `windows`, so a damaged checkpoint
    /// cannot make it disagree with them).
    fn count(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// An alert was raised (`by_rule`: by this one): the rule waits for the stream to calm.
    pub fn raised(&mut self, by_rule: bool) {
        self.spent = true;
        self.raised = by_rule;
    }

    /// Whether the alert up now was raised by this rule.
    pub fn raised_it(&self) -> bool {
        self.raised
    }

    /// The count behind a raise by this rule.
    pub fn raise(&self, rule: &Restless) -> Raise {
        Raise {
            probability: rule.probability,
            windows: self.seen.min(u64::from(rule.windows)) as u32,
            restless: self.count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Restless {
        Restless {
            probability: 0.99,
            windows: 10,
            share: 0.8,
            calm: 0.5,
            ..Restless::default()
        }
    }

    #[test]
    fn raises_once_a_share_of_the_last_windows_is_restless() {
        let (mut s, r) = (Spell::default(), rule());
        // 0.995 on seven of every ten: under the share of 8.
        let mut raised = 0;
        for i in 0..100 {
            raised += u32::from(
                s.push(if i % 10 < 7 { 0.995 } else { 0.5 }, &r, false)
                    .raise,
            );
        }
        assert_eq!(raised, 0);
        // Eight of ten: raises at the eighth restless window in the ring.
        let at: Vec<_> = (0..10)
            .filter(|&i| s.push(if i < 2 { 0.5 } else { 0.995 }, &r, false).raise)
            .collect();
        assert!(at.contains(&9), "{at:?}");
    }

    #[test]
    fn a_spell_is_raised_once_until_the_stream_calms() {
        let (mut s, r) = (Spell::default(), rule());
        let mut raises = Vec::new();
        for i in 0..200 {
            // Restless for 100 windows, calm for 50, restless again.
            let p = if (100..150).contains(&i) { 0.1 } else { 0.999 };
            let step = s.push(p, &r, false);
            if step.raise {
                raises.push(i);
                s.raised(true);
            }
        }
        assert_eq!(raises, [7, 157], "once per spell");
    }

    #[test]
    fn any_raise_spends_it_and_calm_arms_it_again() {
        let (mut s, r) = (Spell::default(), rule());
        // An ordinary alert raised on the third window of a spell and up for ten.
        for _ in 0..3 {
            assert!(s.push(0.999, &r, false).calm);
        }
        s.raised(false);
        assert!(!s.raised_it());
        for i in 0..20 {
            assert!(
                !s.push(0.999, &r, i < 10).raise,
                "spent by the ordinary raise"
            );
        }
        // Calm: under half of the last ten restless.
        let calm: Vec<_> = (0..10).map(|_| s.push(0.1, &r, false).calm).collect();
        assert_eq!(
            calm,
            [
                false, false, false, false, false, true, true, true, true, true
            ]
        );
        let raised = (0..10).any(|_| s.push(0.999, &r, false).raise);
        assert!(raised, "armed again");
    }

    #[test]
    fn a_changed_length_counts_again_and_the_state_round_trips() {
        let (mut s, r) = (Spell::default(), rule());
        for _ in 0..9 {
            s.push(0.999, &r, false);
        }
        let back: Spell = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let longer = Restless { windows: 100, ..r };
        s.push(0.999, &longer, false);
        assert_eq!((s.seen, s.count()), (1, 1));
        // Longer than one word of bits.
        for _ in 0..150 {
            s.push(0.999, &longer, false);
        }
        assert_eq!(s.count(), 100);
        assert!(!s.is_empty());
        assert!(Spell::default().is_empty());
    }

    /// A ring made shorter across a restart, within the same 64-bit words, counts only its
    /// own windows: none left over from the longer ring.
    #[test]
    fn a_shorter_ring_counts_only_its_own_windows() {
        let long = Restless {
            windows: 120,
            ..Restless::default()
        };
        let short = Restless {
            windows: 100,
            ..Restless::default()
        };
        let mut s = Spell::default();
        for _ in 0..120 {
            s.push(0.999, &long, false);
        }
        assert_eq!(s.count(), 120);
        for _ in 0..100 {
            s.push(0.1, &short, false);
        }
        assert_eq!(s.count(), 0);
    }
}
