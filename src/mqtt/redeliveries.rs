//! Recognising the broker's redeliveries of messages already handed over, by topic and
//! payload (sans-IO; the source keeps one [`Redeliveries`] per run).

use std::collections::{HashMap, VecDeque};

use crate::config::Duplicates;

/// Messages remembered from the last ones handed over on a connection, to recognise the
/// broker's redeliveries ([`Redeliveries`]): far above the in-flight limit toward a subscriber
/// (mosquitto's `max_inflight_messages`, NATS's `max_ack_pending`), which bounds the messages
/// that can be unacknowledged at once.
pub const RECENT_MESSAGES: usize = 4096;

/// What identifies a message across connections and brokers: CRC-32 of its topic and CRC-32
/// of its payload, side by side. Packet ids do not: a broker cluster numbers each connection's
/// messages afresh, so the same message comes back under another id from another node (NATS
/// does), and after 65,535 messages any broker reuses an id for another message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(u64);

impl MessageId {
    /// The id of a message on `topic` carrying `payload`.
    pub fn of(topic: &str, payload: &[u8]) -> Self {
        let t = crc32fast::hash(topic.as_bytes());
        let p = crc32fast::hash(payload);
        Self((u64::from(t) << 32) | u64::from(p))
    }

    /// As stored in the checkpoint.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// From the checkpoint.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// Which incoming messages are redeliveries of messages already handed over. Sans-IO.
///
/// A broker sends a QoS 1 message again, flagged DUP, while it has no acknowledgement for it:
/// after a lost connection (mosquitto at once, before anything new; a NATS cluster after its
/// `ack_wait`, with new messages already flowing, from whichever node the client reconnected
/// to and under a new packet id), or on the same connection when an ack is late (NATS, again
/// after `ack_wait`). So a message is recognised by [`MessageId`], not by packet id:
///
/// - against the last [`RECENT_MESSAGES`] messages handed over on this connection;
/// - against *suspects*: the messages handed over on earlier connections (and those the last
///   run journaled), each matched once, the oldest forgotten beyond [`SUSPECTS`]. A new
///   session (no session on the broker) drops them: the broker resends nothing.
///
/// Which messages are checked is [`Duplicates`]: those flagged DUP (the default), or every
/// one, for a cluster that also resends without the flag (NATS, when a node's loss moves a
/// consumer to another node) and streams whose payloads never repeat byte for byte.
///
/// What it cannot tell apart: two messages with the same topic and payload, one handed over and
/// one not, both checked (a sensor that repeats a payload byte for byte, one copy lost in
/// transit). The second is then taken for a redelivery of the first and acknowledged without
/// being windowed.
#[derive(Debug, Default)]
pub struct Redeliveries {
    recent: Fifo,
    suspects: Fifo,
    every: bool,
}

/// Suspects kept at most: the messages of a few lost connections in a row.
pub const SUSPECTS: usize = 4 * RECENT_MESSAGES;

impl Redeliveries {
    /// Checks the messages `which` says.
    pub fn new(which: Duplicates) -> Self {
        Self {
            every: which == Duplicates::Identical,
            ..Self::default()
        }
    }

    /// Messages the last run journaled: suspects (a redelivery of one is not windowed again).
    pub fn suspect(&mut self, ids: impl IntoIterator<Item = MessageId>) {
        for id in ids {
            self.suspects.push(id, SUSPECTS);
        }
    }

    /// A QoS 1 message arrived; `true` when it is the redelivery of one handed over before.
    pub fn arrived(&mut self, id: MessageId, dup: bool) -> bool {
        if (dup || self.every) && (self.suspects.take(id) || self.recent.contains(id)) {
            return true;
        }
        self.recent.push(id, RECENT_MESSAGES);
        false
    }

    /// The connection was lost: the messages handed over on it may come again.
    pub fn lost(&mut self) {
        for id in self.recent.drain() {
            self.suspects.push(id, SUSPECTS);
        }
    }

    /// Connected; without a session on the broker nothing will be sent again.
    pub fn connected(&mut self, session_present: bool) {
        if !session_present {
            self.suspects = Fifo::default();
        }
    }

    /// Suspects held (for tests and logs).
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }
}

/// Message ids in arrival order with a count per id, for constant-time lookups. An id taken
/// out ([`Fifo::take`]) stays in the order until it would be evicted, counted in `taken`: a
/// copy taken is always the id's oldest still held, so an eviction (oldest first) of that id
/// drops a taken copy before a held one.
#[derive(Debug, Default)]
struct Fifo {
    order: VecDeque<MessageId>,
    count: HashMap<MessageId, u32>,
    taken: HashMap<MessageId, u32>,
}

/// One fewer of `id` in `counts`; `false` when there is none.
fn decrement(counts: &mut HashMap<MessageId, u32>, id: MessageId) -> bool {
    match counts.get_mut(&id) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            counts.remove(&id);
            true
        }
        None => false,
    }
}

impl Fifo {
    fn push(&mut self, id: MessageId, cap: usize) {
        while self.order.len() >= cap {
            match self.order.pop_front() {
                Some(old) => {
                    if !decrement(&mut self.taken, old) {
                        decrement(&mut self.count, old);
                    }
                }
                None => break,
            }
        }
        self.order.push_back(id);
        *self.count.entry(id).or_default() += 1;
    }

    fn contains(&self, id: MessageId) -> bool {
        self.count.contains_key(&id)
    }

    /// Takes one `id` out; `false` when there is none.
    fn take(&mut self, id: MessageId) -> bool {
        let held = decrement(&mut self.count, id);
        if held {
            *self.taken.entry(id).or_default() += 1;
        }
        held
    }

    /// Every id held, oldest first, as many times as it is held; leaves the fifo empty.
    fn drain(&mut self) -> Vec<MessageId> {
        let order = std::mem::take(&mut self.order);
        let mut taken = std::mem::take(&mut self.taken);
        let ids = order
            .into_iter()
            .filter(|id| !decrement(&mut taken, *id) && decrement(&mut self.count, *id))
            .collect();
        self.count.clear();
        ids
    }

    fn len(&self) -> usize {
        self.count.values().map(|n| *n as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> MessageId {
        MessageId::of("sensors/m1/vibration", &n.to_le_bytes())
    }

    /// An id taken out stays in the order until evicted; evicting that copy must not take
    /// the count of a newer copy of the same id (identical payloads on one topic), which
    /// would then not be recognised when sent again.
    #[test]
    fn evicting_a_taken_copy_keeps_a_newer_one() {
        let mut f = Fifo::default();
        f.push(id(1), 3);
        assert!(f.take(id(1)));
        f.push(id(1), 3);
        f.push(id(2), 3);
        f.push(id(3), 3); // evicts the first copy of 1, the taken one
        assert!(f.contains(id(1)), "the newer copy is still held");
        assert_eq!(f.len(), 3);
        assert_eq!(f.drain(), [id(1), id(2), id(3)]);
    }

    #[test]
    fn redeliveries_are_recognised_after_a_lost_connection() {
        let mut r = Redeliveries::default();
        for n in 1..=5 {
            assert!(!r.arrived(id(n), false));
        }
        r.lost();
        r.connected(true);
        // The broker resends 4 and 5 (their acks were lost), then a new message.
        assert!(r.arrived(id(4), true));
        assert!(r.arrived(id(5), true));
        assert!(!r.arrived(id(6), false));
        // A DUP message the broker sends later was not handed over before: process it.
        r.lost();
        assert!(r.arrived(id(6), true));
        assert!(!r.arrived(id(7), true));
        // Each suspect matches once.
        assert!(!r.arrived(id(6), false));
        r.lost();
        assert!(r.arrived(id(6), true));
        assert!(r.arrived(id(7), true));
        assert!(!r.arrived(id(4), true), "4 was matched already");
    }

    #[test]
    fn a_cluster_resends_late_under_new_packet_ids_after_new_messages() {
        // NATS: the node died with messages 1..3 handed over (acks lost) and 4 in transit; the
        // next node sends new messages at once and the old ones after its ack_wait, each under
        // a packet id of the new connection.
        let mut r = Redeliveries::default();
        for n in 1..=3 {
            assert!(!r.arrived(id(n), false));
        }
        r.lost();
        r.connected(true);
        for n in 10..=5000 {
            assert!(!r.arrived(id(n), false));
        }
        for n in 1..=3 {
            assert!(r.arrived(id(n), true), "{n} is a redelivery");
        }
        assert!(!r.arrived(id(4), true), "4 never arrived: process it");
        // The same connection: an ack later than ack_wait brings the message again.
        assert!(r.arrived(id(4999), true));
    }

    #[test]
    fn identical_messages_are_duplicates_flagged_or_not_when_asked() {
        // NATS after a node's loss: the consumer's new leader sends again, unflagged, what the
        // old one had sent.
        let mut flagged = Redeliveries::new(Duplicates::Flagged);
        let mut identical = Redeliveries::new(Duplicates::Identical);
        for r in [&mut flagged, &mut identical] {
            for n in 1..=10 {
                assert!(!r.arrived(id(n), false));
            }
        }
        assert!(!flagged.arrived(id(9), false), "flagged only: taken again");
        assert!(identical.arrived(id(9), false));
        assert!(identical.arrived(id(10), true));
        assert!(!identical.arrived(id(11), false));
        // After a lost connection, each suspect once; the recent ones of the new connection
        // as often as they come.
        identical.lost();
        assert!(identical.arrived(id(3), false));
        assert!(
            !identical.arrived(id(3), false),
            "3 was a suspect once, now a new message"
        );
        assert!(
            identical.arrived(id(3), false),
            "and that new one is recent now"
        );
    }

    #[test]
    fn old_suspects_never_swallow_another_message_after_the_ids_wrap() {
        let mut r = Redeliveries::default();
        for n in 1..=100 {
            r.arrived(id(n), false);
        }
        // A broker restart: 1..100 become suspects; nothing is resent (all were acked).
        r.lost();
        r.connected(true);
        for n in 101..=70_000 {
            assert!(!r.arrived(id(n), false));
        }
        // Messages sent after the packet ids wrapped, lost in transit, resent: processed.
        r.lost();
        assert!(!r.arrived(id(70_001), true));
        assert!(!r.arrived(id(70_002), true));
        assert!(r.suspects() <= SUSPECTS);
    }

    #[test]
    fn a_new_session_resends_nothing_and_the_last_runs_messages_are_suspects() {
        let mut r = Redeliveries::default();
        r.suspect([id(7), id(8)]);
        r.connected(true);
        assert!(r.arrived(id(8), true));
        let mut r = Redeliveries::default();
        r.suspect([id(7), id(8)]);
        r.connected(false);
        assert!(!r.arrived(id(8), true));
    }
}
