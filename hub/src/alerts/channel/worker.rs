//! One task per channel: its own queue, its own rate limit, its own retries. A channel that
//! is down or slow holds up only its own queue; what waits is merged into one digest per
//! recipient, so a flood becomes a few messages, and the queue is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Sender;
use crate::alerts::message::Delivery;

/// Deliveries a channel's queue holds; past it new ones are dropped (and counted) rather
/// than letting a dead channel grow the hub's memory.
const QUEUE: usize = 1024;
/// Waits between attempts grow from this, doubling, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a channel did, for `/metrics` and `/api/alerts`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    /// Messages that carried more than one alert.
    pub digests: AtomicU64,
    /// Last error, in words (empty: the last send worked).
    pub last_error: std::sync::Mutex<String>,
}

/// The engine's end of a channel.
#[derive(Clone)]
pub struct Outbox {
    pub name: String,
    tx: mpsc::Sender<Delivery>,
    pub counters: Arc<Counters>,
}

impl Outbox {
    /// Queues `d` without waiting; false (and counted) when the queue is full.
    pub fn push(&self, d: Delivery) -> bool {
        match self.tx.try_send(d) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "alert channel {}: queue full, a message was dropped",
                    self.name
                );
                false
            }
        }
    }
}

/// Starts `sender`'s task; it ends once every [`Outbox`] is dropped and its queue is sent.
pub fn spawn(sender: Sender) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let counters = Arc::new(Counters::default());
    let outbox = Outbox {
        name: sender.config().name.clone(),
        tx,
        counters: counters.clone(),
    };
    let task = tokio::spawn(run(sender, rx, counters));
    (outbox, task)
}

/// A token bucket: `n` messages per `per`, starting full.
struct Bucket {
    tokens: f64,
    cap: f64,
    per_token: Duration,
    last: Instant,
}

impl Bucket {
    fn new(n: u32, per: Duration) -> Self {
        Self {
            tokens: f64::from(n),
            cap: f64::from(n),
            per_token: per / n.max(1),
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let gained = now.duration_since(self.last).as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + gained).min(self.cap);
        self.last = now;
    }

    /// When the next token is there (now, if one is).
    fn ready_at(&mut self) -> Instant {
        self.refill();
        if self.tokens >= 1.0 {
            self.last
        } else {
            self.last + self.per_token.mul_f64(1.0 - self.tokens)
        }
    }

    fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }
}

/// Puts `d` into `pending`, merged with a waiting delivery for the same recipient.
fn add(pending: &mut Vec<Delivery>, d: Delivery) {
    match pending.iter_mut().find(|p| p.to == d.to) {
        Some(p) => p.merge(d),
        None => pending.push(d),
    }
}

async fn run(sender: Sender, mut rx: mpsc::Receiver<Delivery>, counters: Arc<Counters>) {
    let cfg = sender.config().clone();
    let mut bucket = Bucket::new(cfg.rate.0, cfg.rate.1);
    let mut pending: Vec<Delivery> = Vec::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(d) => add(&mut pending, d),
                None => return,
            }
        }
        while let Ok(d) = rx.try_recv() {
            add(&mut pending, d);
        }
        // Wait for a token, taking in what arrives meanwhile (it joins the digest).
        let ready = bucket.ready_at();
        if ready > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(ready) => {}
                d = rx.recv(), if open => match d {
                    Some(d) => { add(&mut pending, d); continue; }
                    None => open = false,
                },
            }
            continue;
        }
        bucket.take();
        let d = pending.remove(0);
        if d.len() > 1 {
            counters.digests.fetch_add(1, Ordering::Relaxed);
        }
        deliver(&sender, &d, &counters).await;
    }
}

/// Sends with retries and backoff; the outcome is counted and logged, never returned (there
/// is nobody to return it to).
async fn deliver(sender: &Sender, d: &Delivery, counters: &Counters) {
    let cfg = sender.config();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=cfg.retries {
        // The sender's own timeouts cover connect and transfer; this one covers the whole
        // exchange (a server that trickles its answer).
        let deadline = cfg.timeout * 2;
        let result = match tokio::time::timeout(deadline, sender.send(d)).await {
            Ok(r) => r,
            Err(_) => Err(super::SendError::Timeout(deadline)),
        };
        match result {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                set_error(counters, String::new());
                return;
            }
            Err(e) => {
                let e = e.to_string();
                set_error(counters, e.clone());
                if attempt == cfg.retries {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "alert channel {}: giving up on a message about {} alert(s) after {} attempt(s): {e}",
                        cfg.name,
                        d.items.len(),
                        attempt + 1
                    );
                    return;
                }
                counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "alert channel {}: attempt {} failed ({e}); retrying in {backoff:?}",
                    cfg.name,
                    attempt + 1
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn set_error(c: &Counters, e: String) {
    *c.last_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
}
