//! Cluster questions the agent's users ask (`hmonitor status`, `free --anywhere`), relayed to
//! a hub over a connection the agent holds already: users need no token of their own, and
//! the hub sees them as asked by this enrolled host. Any accepted connection takes the next
//! question; its answer comes back by id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

/// Questions waiting for a connection at once; more are refused at once.
const QUEUE: usize = 64;
/// Questions relayed per second, for all users of the host together: what the hub answers
/// (more would be refused there, and count against the frames of the host's connection).
const PER_SEC: f64 = 4.0;
/// Questions that may come at once after a quiet spell.
const BURST: f64 = 8.0;

/// Why a relayed question got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("this agent does not push to a hub (HMON_HUB is not set)")]
    NoHub,
    #[error(
        "this agent is not connected to its hub right now (see its log: journalctl -u hmonitor)"
    )]
    NotConnected,
    #[error("the agent has too many questions for the hub queued; try again")]
    Busy,
    #[error("this host's users ask the hub more than 4 times a second; try again in a moment")]
    TooFast,
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the hub connection ended before the answer came")]
    Lost,
    #[error("the hub refused: {0}")]
    Refused(String),
}

pub(super) struct Asked {
    /// `ClusterQuery.kind`: empty for `GET /api/gpus`, "subscribe" for a subscription.
    pub(super) kind: &'static str,
    pub(super) params: String,
    /// The local user asking (for subscriptions).
    pub(super) user: String,
    pub(super) answer: oneshot::Sender<Result<Vec<u8>, String>>,
}

pub struct Relay {
    tx: mpsc::Sender<Asked>,
    rx: Mutex<mpsc::Receiver<Asked>>,
    connected: AtomicUsize,
    /// (tokens, when last counted): a token bucket of [`PER_SEC`].
    budget: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl Relay {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        Arc::new(Self {
            tx,
            rx: Mutex::new(rx),
            connected: AtomicUsize::new(0),
            budget: std::sync::Mutex::new((BURST, std::time::Instant::now())),
        })
    }

    /// Asks the hub `GET /api/gpus?<params>`; the JSON body, or why not.
    pub async fn ask(&self, params: String, within: Duration) -> Result<Vec<u8>, RelayError> {
        self.ask_as("", params, String::new(), within).await
    }

    /// Asks a question of `kind` for local user `user`; the hub's JSON answer, or why not.
    pub async fn ask_as(
        &self,
        kind: &'static str,
        params: String,
        user: String,
        within: Duration,
    ) -> Result<Vec<u8>, RelayError> {
        if self.connected.load(Ordering::Relaxed) == 0 {
            return Err(RelayError::NotConnected);
        }
        if !self.take_token() {
            return Err(RelayError::TooFast);
        }
        let (answer, rx) = oneshot::channel();
        self.tx
            .try_send(Asked {
                kind,
                params,
                user,
                answer,
            })
            .map_err(|_| RelayError::Busy)?;
        match tokio::time::timeout(within, rx).await {
            Err(_) => Err(RelayError::Timeout(within)),
            Ok(Err(_)) => Err(RelayError::Lost),
            Ok(Ok(Err(why))) => Err(RelayError::Refused(why)),
            Ok(Ok(Ok(body))) => Ok(body),
        }
    }

    fn take_token(&self) -> bool {
        let mut b = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * PER_SEC).min(BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// The next question, for an accepted connection to send (cancel-safe).
    pub(super) async fn next(&self) -> Option<Asked> {
        self.rx.lock().await.recv().await
    }

    /// Counts an accepted connection while the guard lives.
    pub(super) fn connected(self: &Arc<Self>) -> ConnectedGuard {
        self.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(self.clone())
    }
}

pub(super) struct ConnectedGuard(Arc<Relay>);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
