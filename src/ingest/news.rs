//! What ingest tells the alerting stage besides windows: streams gone stale or heard from
//! again, streams forgotten after going quiet, and streams an earlier run alerted on that this
//! run does not carry on. News wait in a bounded queue of their own while the alerting stage
//! has no room ([`MAX_UNSENT`]: the oldest is dropped, logged).

use std::collections::HashSet;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::log::IngestLog;
use super::{Ingest, MAX_UNSENT};
use crate::alerting::StreamNews;
use crate::detect::Transition;
use crate::telemetry::metrics::StreamLabel;

impl Ingest {
    /// Queues `news` for the alerting stage and sends what it has room for, in order.
    pub(super) fn tell(&mut self, news: StreamNews) {
        if self.news.is_none() {
            return;
        }
        if self.unsent.len() >= MAX_UNSENT
            && let Some(dropped) = self.unsent.pop_front()
        {
            error!(news = ?dropped, waiting = MAX_UNSENT, "Alerting stage stalled; oldest stream news dropped.");
        }
        self.unsent.push_back(news);
        self.send_news();
    }

    /// Sends queued news while the alerting stage has room.
    pub(super) fn send_news(&mut self) {
        let Some((tx, _)) = &self.news else { return };
        while let Some(news) = self.unsent.pop_front() {
            if let Err(e) = tx.try_send(news) {
                match e {
                    mpsc::error::TrySendError::Full(news) => self.unsent.push_front(news),
                    mpsc::error::TrySendError::Closed(_) => self.unsent.clear(),
                }
                return;
            }
        }
    }

    /// Tells the alerting stage of each stream the last run forgot without the alerting stage
    /// finishing it (the checkpoint remembers: a crash came between), before anything is
    /// replayed: the stream's raise is cleared, and its window numbers go, before a window of
    /// a new life of it is judged. Not told again as an orphan.
    pub(super) async fn finish_forgetting(&mut self) {
        let streams = self
            .log
            .as_ref()
            .map(IngestLog::forgetting)
            .unwrap_or_default();
        if streams.is_empty() || self.news.is_none() {
            return;
        }
        let raised: HashSet<String> = self
            .alerted_before
            .iter()
            .filter(|(_, raised)| *raised)
            .map(|(s, _)| s.clone())
            .collect();
        self.alerted_before.retain(|(s, _)| !streams.contains(s));
        let news = streams
            .into_iter()
            .map(|stream| {
                info!(
                    stream,
                    "Stream forgotten by the last run, its forgetting finished now."
                );
                let raised = raised.contains(&stream);
                StreamNews::ForgottenBefore { stream, raised }
            })
            .collect();
        self.hand_over(news).await;
    }

    /// Tells the alerting stage of each stream an earlier run alerted on that this run does
    /// not carry on: not in the checkpoint (which resumes it when it speaks), nor windowed
    /// by the replay. A live window of such a stream must come after its news.
    pub(super) async fn tell_orphans(&mut self) {
        let live: HashSet<&str> = self.table.entries().map(|e| e.info().id.as_str()).collect();
        let orphans: Vec<StreamNews> = std::mem::take(&mut self.alerted_before)
            .into_iter()
            .filter(|(stream, _)| {
                !live.contains(stream.as_str())
                    && self.log.as_ref().is_none_or(|l| l.since(stream).is_none())
            })
            .map(|(stream, raised)| StreamNews::Orphaned { stream, raised })
            .collect();
        self.hand_over(orphans).await;
    }

    /// Hands `news` to the alerting stage in order, waiting while its queue is full: at
    /// start-up, before ingest reads a live message (the only time ingest waits on that queue;
    /// it is idle meanwhile, waiting on another stage, not stuck).
    async fn hand_over(&mut self, news: Vec<StreamNews>) {
        let Some((tx, _)) = &self.news else { return };
        let tx = tx.clone();
        self.pulse.idle();
        for n in news {
            if tx.send(n).await.is_err() {
                return;
            }
        }
    }

    /// Tells the alerting stage of streams gone stale; drops the streams quiet for longer than
    /// the idle horizon, from the table, the journal's checkpoint and the alerting stage.
    pub(super) fn sweep(&mut self) {
        self.send_news();
        let now = Instant::now();
        for e in self.table.entries() {
            let silent = now.saturating_duration_since(e.last_seen());
            self.metrics
                .stream_silence
                .get_or_create(&StreamLabel {
                    stream: e.info().id.clone(),
                })
                .set(silent.as_secs_f64());
        }
        if let Some(st) = self.stale {
            for s in self.table.stale(Instant::now(), st.multiple, st.floor) {
                warn!(stream = %s.id, silent_s = s.silent.as_secs_f64(), usual_interval_s = s.usual.map(|u| u.as_secs_f64()), "Stream silent for many times its usual interval: stale.");
                self.metrics.streams_stale.inc();
                self.tell(StreamNews::Stale {
                    stream: s.id,
                    state: Transition::Raised,
                    silent: Some(s.silent),
                    usual: s.usual,
                });
            }
        }
        let Some(idle) = self.idle else { return };
        self.prune_saved();
        let expired = self.table.expire(Instant::now(), idle);
        if expired.is_empty() {
            return;
        }
        for e in expired {
            info!(stream = %e.id, topic = %e.topic, partial_samples = e.partial, idle_s = idle.as_secs(), "Stream quiet; forgotten (its incomplete window is dropped; it starts over if it comes back).");
            self.metrics.streams_expired.inc();
            if e.stale {
                // Its stale alert stays raised until it speaks again, as after a restart.
                self.stale_open.insert(e.id.clone());
            }
            self.forget_stream(e.id);
        }
        self.metrics.streams_active.set(self.table.len() as i64);
    }

    /// Forgets a stream everywhere but the table: the checkpoint, the judging progress, and
    /// (told through the forget queue) the alerting stage.
    pub(super) fn forget_stream(&mut self, id: String) {
        if let Some(log) = &mut self.log {
            log.forget(&id, self.news.is_some());
        }
        if let Some((_, progress)) = &self.news {
            progress.forget(&id);
        }
        self.tell(StreamNews::Forget(id));
    }

    /// Drops, once the idle horizon has passed since the start, the checkpoint entries of
    /// streams the last run knew and this one has not seen.
    pub(super) fn prune_saved(&mut self) {
        if self.prune_saved_at.is_none_or(|at| Instant::now() < at) {
            return;
        }
        self.prune_saved_at = None;
        let live: std::collections::HashSet<&str> =
            self.table.entries().map(|e| e.info().id.as_str()).collect();
        let absent = self
            .log
            .as_ref()
            .map(|l| l.absent(&live))
            .unwrap_or_default();
        for id in absent {
            info!(stream = %id, "Stream of the last run not seen again; forgotten.");
            self.forget_stream(id);
        }
    }
}
