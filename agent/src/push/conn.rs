//! What one connection to a hub is and how it ends: the socket type, why it ended (only ever
//! logged), and its counts. Shared by the session, its writer and the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a connection ended or never started. Only ever logged.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("{0}")]
    Ws(#[from] tungstenite::Error),
    /// The hub's TLS certificate was refused; the hint says what to check.
    #[error("{0} ({1})")]
    Certificate(tungstenite::Error, &'static str),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {} s (waiting for the {what})", .after.as_secs())]
    Timeout { after: Duration, what: &'static str },
    #[error("the hub closed the connection{}", close_reason(.0))]
    Closed(Option<CloseFrame>),
    #[error("nothing from the hub for {} ms: the connection is presumed dead", .0.as_millis())]
    Silent(Duration),
    #[error("the hub sent a text frame; the protocol has binary frames only")]
    Text,
    #[error("malformed frame from the hub: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("the hub sent {0} before accepting the hello")]
    OutOfOrder(&'static str),
    #[error("the hub answered the upgrade with HTTP {0}")]
    Http(StatusCode),
    #[error("the connection's writer stopped: {0}")]
    Writer(tokio::task::JoinError),
    #[error("the snapshots stopped")]
    NoSamples,
}

pub(super) fn close_reason(frame: &Option<CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!(" ({}: {})", f.code, f.reason),
        Some(f) => format!(" ({})", f.code),
        None => String::new(),
    }
}

/// Per-connection counts, reported when it ends. Shared with the writer task through atomics
/// so that they survive the writer being aborted.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    /// Samples skipped because the previous send was still in progress (a slow hub or
    /// network); not those skipped on purpose because the hub asked for a longer interval.
    pub(super) dropped: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) dropped: u64,
}

impl Counters {
    pub(super) fn stats(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
