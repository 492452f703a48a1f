//! The HTTP server loop: what `axum::serve` does, plus what it cannot be told. Each connection
//! must deliver a request head within `head_timeout` of its start, and of the first byte of
//! each later request; a keep-alive connection idle between requests is closed after
//! `idle_timeout`. So a peer that sends half a request, or opens a connection and says
//! nothing, is closed instead of holding a socket forever. (hyper's own header-read timer runs
//! while idle too, so it cannot give the two different lengths: a watchdog per connection does,
//! fed by the connection's reads and writes.) Upgraded connections (agent and browser
//! WebSockets) leave hyper and keep their own timeouts. At the stop, connections still serving a
//! request finish it (for at most `drain`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hmonitor_common::run::Stop;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long a connection may take for what it is doing.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the connection's start, or a request's first byte, to its whole head.
    pub head: Duration,
    /// Between requests on a keep-alive connection (from the last byte written).
    pub idle: Duration,
    /// At the stop, for requests still being served.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve<L>(mut listener: L, router: Router, stop: Stop, timeouts: Timeouts)
where
    L: Listener<Addr = SocketAddr>,
{
    let mut conns = JoinSet::new();
    let stopping = stop.wait();
    tokio::pin!(stopping);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopping => break,
        };
        // Connections that ended are forgotten as new ones come.
        while conns.try_join_next().is_some() {}
        let router = router.clone();
        let phase = Arc::new(Mutex::new(Phase::Head(Instant::now())));
        let in_service = phase.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` would add: handlers read the peer.
            req.extensions_mut().insert(ConnectInfo(peer));
            set(&in_service, Phase::Busy);
            let router = router.clone();
            let phase = in_service.clone();
            async move {
                let res = router.oneshot(req.map(axum::body::Body::new)).await;
                // The response is being written: idle from here, renewed by every write.
                set(&phase, Phase::Idle(Instant::now()));
                Ok::<_, Infallible>(match res {
                    Ok(r) => r,
                    Err(never) => match never {},
                })
            }
        });
        let io = Watched {
            inner: io,
            phase: phase.clone(),
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            let stopping = stop.wait();
            tokio::pin!(stopping);
            let result = loop {
                let due = deadline(&phase, &timeouts);
                tokio::select! {
                    r = conn.as_mut() => break r,
                    () = tokio::time::sleep_until(due.into()) => {
                        // The phase may have moved on while we slept: only its own deadline counts.
                        if deadline(&phase, &timeouts) <= Instant::now() {
                            tracing::debug!("HTTP connection from {peer}: closed, timed out");
                            break Ok(());
                        }
                    }
                    () = &mut stopping => {
                        // A request in progress finishes; an idle keep-alive closes now.
                        conn.as_mut().graceful_shutdown();
                        break match tokio::time::timeout(timeouts.drain, conn.as_mut()).await {
                            Ok(r) => r,
                            Err(_) => Ok(()),
                        };
                    }
                }
            };
            if let Err(e) = result {
                // A peer that timed out or went away: routine, and anyone can cause it.
                tracing::debug!("HTTP connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// What a connection is doing, for its watchdog.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head whose wait began then.
    Head(Instant),
    /// A request is being served: no deadline of ours.
    Busy,
    /// Between requests since then (the last write).
    Idle(Instant),
}

fn set(phase: &Mutex<Phase>, to: Phase) {
    *phase
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
}

fn deadline(phase: &Mutex<Phase>, t: &Timeouts) -> Instant {
    match *phase
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Phase::Head(since) => since + t.head,
        Phase::Idle(since) => since + t.idle,
        // Looked at again after an idle period; a request that takes longer is fine.
        Phase::Busy => Instant::now() + t.idle,
    }
}

/// The connection's socket, telling its watchdog when a new request begins (a byte read while
/// idle) and when a response is still being written (a write while idle).
struct Watched<T> {
    inner: T,
    phase: Arc<Mutex<Phase>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut p = self
                .phase
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*p, Phase::Idle(_)) {
                *p = Phase::Head(Instant::now());
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            let mut p = self
                .phase
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*p, Phase::Idle(_)) {
                *p = Phase::Idle(Instant::now());
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
