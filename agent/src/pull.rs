//! The seed's pull API: `HostMonitor.GetInfo` over gRPC.
//!
//! The allowlist is applied when a connection is accepted, before a single byte of it is read:
//! a refused peer's socket is closed at once and never reaches HTTP/2 or gRPC parsing.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmonitor_proto::host_monitor_server::{HostMonitor, HostMonitorServer};
use hmonitor_proto::{HostInfo, RequestInfo};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};

use crate::allow::Allowlist;
use crate::sampler::Sampler;

/// At most this many refused addresses are remembered for "log once"; past it, refusals are
/// no longer logged (a scan from many addresses must not grow memory or flood the log).
const REFUSED_REMEMBERED: usize = 1024;

/// The gRPC service: answers from the sampler's latest snapshot, never from NVML directly.
pub struct PullService {
    sampler: Sampler,
    token: Option<String>,
}

impl PullService {
    pub fn new(sampler: Sampler, token: Option<String>) -> Self {
        Self {
            sampler,
            token: token.filter(|t| !t.is_empty()),
        }
    }
}

#[tonic::async_trait]
impl HostMonitor for PullService {
    async fn get_info(&self, req: Request<RequestInfo>) -> Result<Response<HostInfo>, Status> {
        if let Some(expected) = &self.token {
            let given = req.get_ref().token.as_bytes();
            if !bool::from(given.ct_eq(expected.as_bytes())) {
                return Err(Status::unauthenticated("token missing or wrong"));
            }
        }
        Ok(Response::new(self.sampler.report()))
    }
}

/// Serves the pull API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    allow: Allowlist,
    service: PullService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = allowed_connections(listener, allow);
    tonic::transport::Server::builder()
        // Bound what one caller can hold open.
        .timeout(Duration::from_secs(10))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .concurrency_limit_per_connection(8)
        .add_service(HostMonitorServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The accepted connections whose peer is in `allow`; the others are closed unread.
fn allowed_connections(
    listener: TcpListener,
    allow: Allowlist,
) -> impl tokio_stream::Stream<Item = Result<TcpStream, std::io::Error>> {
    let refused: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
    futures_util::stream::unfold(
        (listener, allow, refused),
        |(listener, allow, refused)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if allow.allows(peer.ip()) {
                            return Some((Ok(stream), (listener, allow, refused)));
                        }
                        drop(stream);
                        log_refusal(&refused, peer.ip(), &allow);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        },
    )
}

fn log_refusal(refused: &Mutex<HashSet<IpAddr>>, ip: IpAddr, allow: &Allowlist) {
    // A std Mutex: nothing awaits while it is held.
    let mut seen = match refused.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if seen.len() < REFUSED_REMEMBERED && seen.insert(ip) {
        tracing::warn!("refused pull connection from {ip}: not in the allowlist ({allow})");
    }
}
