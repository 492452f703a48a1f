//! The HTTP server loop: what `axum::serve` does, plus what it cannot be told. Each connection
//! must deliver a request head within `head_timeout`, from its start and again whenever it
//! waits idle for the next request (hyper's header-read timer runs in both cases), so a peer
//! that sends half a request, or opens a connection and says nothing, is closed instead of
//! holding a socket forever. Upgraded connections (agent and browser WebSockets) leave hyper and
//! keep their own timeouts. At the stop, connections still serving a request finish it (for at
//! most `drain`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hmonitor_common::run::Stop;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Serves `router` on `listener` until `stop`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    stop: Stop,
    head_timeout: Duration,
    drain: Duration,
) where
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
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` would add: handlers read the peer.
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let res = router.oneshot(req.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(match res {
                    Ok(r) => r,
                    Err(never) => match never {},
                })
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.wait() => {
                    // A request in progress finishes; an idle keep-alive closes now.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(drain, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
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
