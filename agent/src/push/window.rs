//! A connection's share of the backlog, decided without a socket: which samples it owes its
//! hub as backfill, in order and each once, paced by a window of frames not yet acknowledged
//! (a reconnecting agent never floods the hub's store queue), and which it may forget because
//! the hub asked for fewer samples.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Bytes;

use crate::backlog::{self, Backlog};

/// Backfill frames handed out per turn of a connection's loop (pings and shutdown are served
/// between turns).
pub(super) const BACKFILL_CHUNK: usize = 32;
/// Frames sent and not yet acknowledged on one connection before backfill pauses for acks.
pub(super) const BACKFILL_WINDOW: usize = 512;

/// One connection's backfill state over its hub's backlog.
pub(super) struct Window {
    backlog: Arc<Backlog>,
    inflight: Arc<InFlight>,
    /// The last backlog sample considered; every one after it and older than the newest live
    /// one is still owed.
    cursor: u64,
    /// The first live sample of this connection.
    first_live: Option<u64>,
    /// More backfill may go out now (not paused for acknowledgements, not caught up).
    active: bool,
    /// Backfill frames handed out in the current run, for the log.
    run: u64,
}

impl Window {
    pub(super) fn new(backlog: Arc<Backlog>, inflight: Arc<InFlight>) -> Self {
        Self {
            backlog,
            inflight,
            cursor: 0,
            first_live: None,
            active: false,
            run: 0,
        }
    }

    pub(super) fn active(&self) -> bool {
        self.active
    }

    /// The live sample `seq` goes out now. At an interval the hub asked for (not the agent's
    /// own), the samples skipped on purpose since this connection began are declined, not
    /// owed: they leave the backlog.
    pub(super) fn live(&mut self, seq: u64, at_own_interval: bool) {
        let first = *self.first_live.get_or_insert(seq);
        if !at_own_interval {
            let declined: Vec<u64> = self
                .backlog
                .between(first, seq, usize::MAX)
                .iter()
                .map(|e| e.seq)
                .filter(|s| !self.inflight.was_sent(*s))
                .collect();
            self.backlog.remove(&declined);
        }
        self.inflight.sent(seq);
        self.active = true;
    }

    /// The next backfill frames (marked `backfill`), oldest first, each marked in flight; at
    /// most [`BACKFILL_CHUNK`]. Pauses (empty, and not [`Self::active`]) while
    /// [`BACKFILL_WINDOW`] frames await acknowledgement or when nothing older than `live` is
    /// owed. At the agent's own interval every sample before `live` is owed; at one the hub
    /// asked for, only those from before this connection.
    pub(super) fn next(&mut self, live: u64, at_own_interval: bool) -> Vec<Bytes> {
        if self.inflight.len() >= BACKFILL_WINDOW {
            self.active = false;
            return Vec::new();
        }
        let upto = if at_own_interval {
            live
        } else {
            self.first_live.unwrap_or(live)
        };
        let chunk = self.backlog.between(self.cursor, upto, BACKFILL_CHUNK);
        if chunk.len() < BACKFILL_CHUNK {
            self.active = false;
        }
        let mut frames = Vec::with_capacity(chunk.len());
        for e in chunk {
            self.cursor = e.seq;
            if self.inflight.was_sent(e.seq) {
                continue;
            }
            let Some(frame) = backlog::as_backfill(&e.frame) else {
                continue;
            };
            self.inflight.sent(e.seq);
            frames.push(frame);
        }
        self.run += frames.len() as u64;
        frames
    }

    /// When a run of backfill has just paused or caught up: how many frames it sent (once).
    pub(super) fn finished_run(&mut self) -> Option<u64> {
        if self.active || self.run == 0 {
            return None;
        }
        Some(std::mem::take(&mut self.run))
    }

    /// Paused with something still owed: waiting for acknowledgements to make room.
    pub(super) fn paused(&self) -> bool {
        !self.active && !self.backlog.is_empty()
    }

    /// Completes when acknowledgements make room for more backfill (then [`Self::resume`]).
    /// Owns what it waits on, so the caller may change the window meanwhile.
    pub(super) fn room(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inflight = self.inflight.clone();
        async move { inflight.room.notified().await }
    }

    pub(super) fn resume(&mut self) {
        self.active = true;
    }
}

/// The samples sent on one connection and not yet acknowledged, in the order sent.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    pub(super) sent: std::sync::Mutex<std::collections::VecDeque<u64>>,
    pub(super) room: tokio::sync::Notify,
}

/// Most sequence numbers remembered per connection: a hub that never acknowledges must not
/// grow the agent's memory.
pub(super) const INFLIGHT_MAX: usize = 1 << 20;

impl InFlight {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<u64>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn sent(&self, seq: u64) {
        let mut g = self.lock();
        if g.len() >= INFLIGHT_MAX {
            g.pop_front();
        }
        g.push_back(seq);
    }

    pub(super) fn was_sent(&self, seq: u64) -> bool {
        self.lock().contains(&seq)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// `Ack{seq}`: `seq` and everything sent before it are stored; they leave the backlog.
    pub(super) fn acked(&self, seq: u64, backlog: &Backlog) {
        let mut done = {
            let mut g = self.lock();
            let Some(pos) = g.iter().position(|s| *s == seq) else {
                return;
            };
            g.drain(..=pos).collect::<Vec<u64>>()
        };
        done.sort_unstable();
        backlog.remove(&done);
        self.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use hmonitor_proto::{agent_message, unix_ms, AgentMessage};
    use prost::Message as _;

    use super::*;

    fn backlog(seqs: std::ops::RangeInclusive<u64>) -> Arc<Backlog> {
        let b = Arc::new(Backlog::new(Duration::from_secs(3600), 64 << 20, None));
        for seq in seqs {
            push(&b, seq);
        }
        b
    }

    fn push(b: &Backlog, seq: u64) {
        b.push(backlog::test_entry(seq, unix_ms(SystemTime::now())));
    }

    /// The seq of a backfill frame; panics unless it is one.
    fn seq_of(frame: &Bytes) -> u64 {
        match AgentMessage::decode(frame.as_ref()).expect("decodes").msg {
            Some(agent_message::Msg::Snapshot(s)) if s.backfill => s.seq,
            other => panic!("not a backfill snapshot: {other:?}"),
        }
    }

    #[test]
    fn an_outage_is_sent_once_oldest_first_in_chunks_then_the_run_is_reported() {
        let b = backlog(1..=100);
        let inflight = Arc::new(InFlight::default());
        let mut w = Window::new(b.clone(), inflight.clone());
        assert!(!w.active());
        push(&b, 101);
        w.live(101, true);
        let mut sent = Vec::new();
        while w.active() {
            let frames = w.next(101, true);
            assert!(frames.len() <= BACKFILL_CHUNK);
            sent.extend(frames.iter().map(seq_of));
        }
        assert_eq!(sent, (1..=100).collect::<Vec<_>>());
        assert_eq!(w.finished_run(), Some(100));
        assert_eq!(w.finished_run(), None, "reported once");
        // Nothing is owed twice on one connection.
        w.live(102, true);
        assert!(w.next(102, true).is_empty());
        // Acknowledged samples leave the backlog: the hub has stored them. The live 101 went
        // out before 100 on this connection, so the ack of 100 covers it too.
        inflight.acked(99, &b);
        let left: Vec<u64> = b
            .between(0, 102, usize::MAX)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, [100]);
        inflight.acked(100, &b);
        assert!(b.is_empty());
    }

    #[test]
    fn backfill_pauses_at_the_window_and_resumes_when_acks_make_room() {
        let total = BACKFILL_WINDOW as u64 + 200;
        let b = backlog(1..=total);
        let inflight = Arc::new(InFlight::default());
        let mut w = Window::new(b.clone(), inflight.clone());
        let live = total + 1;
        push(&b, live);
        w.live(live, true);
        let mut sent = Vec::new();
        while w.active() {
            sent.extend(w.next(live, true).iter().map(seq_of));
        }
        // The window is checked before each chunk, so it is met to within one chunk; the live
        // sample counts against it too.
        assert!(
            (BACKFILL_WINDOW..BACKFILL_WINDOW + BACKFILL_CHUNK).contains(&inflight.len()),
            "{} in flight",
            inflight.len()
        );
        assert_eq!(sent.len(), inflight.len() - 1);
        assert!(w.paused(), "owed samples are left, waiting for acks");
        let room = w.room();
        inflight.acked(*sent.last().expect("sent"), &b);
        // The ack's notification is kept for the waiter, even one that starts late.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), room).await })
            .expect("room was made");
        w.resume();
        while w.active() {
            sent.extend(w.next(live, true).iter().map(seq_of));
        }
        assert_eq!(sent, (1..=total).collect::<Vec<_>>());
    }

    #[test]
    fn at_an_interval_the_hub_asked_for_skipped_samples_are_declined_not_owed() {
        let b = backlog(1..=10);
        let inflight = Arc::new(InFlight::default());
        let mut w = Window::new(b.clone(), inflight.clone());
        push(&b, 11);
        w.live(11, false);
        for seq in 12..=20 {
            push(&b, seq);
        }
        w.live(20, false);
        // 12..=19 came while the hub wanted fewer samples: forgotten.
        let left: Vec<u64> = b.between(0, 21, usize::MAX).iter().map(|e| e.seq).collect();
        assert_eq!(left, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20]);
        // What is owed is what came before this connection.
        let mut sent = Vec::new();
        while w.active() {
            sent.extend(w.next(20, false).iter().map(seq_of));
        }
        assert_eq!(sent, (1..=10).collect::<Vec<_>>());
    }
}
