//! The seed's pull API: `HostMonitor.GetInfo` over gRPC.
//!
//! The allowlist is applied when a connection is accepted, before a single byte of it is read:
//! a refused peer's socket is closed at once and never reaches HTTP/2 or gRPC parsing.

use std::future::Future;
use std::time::Duration;

use hmonitor_proto::host_monitor_server::{HostMonitor, HostMonitorServer};
use hmonitor_proto::{HostInfo, RequestInfo};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use hmonitor_common::allow::{allowed_connections, Allowlist};
use hmonitor_common::auth::TokenGate;
use hmonitor_sampler::sampler::Sampler;

/// The gRPC service: answers from the sampler's latest snapshot, never from NVML directly.
pub struct PullService {
    sampler: Sampler,
    /// The seed's callers send the token in `RequestInfo.token`.
    token: TokenGate,
}

impl PullService {
    pub fn new(sampler: Sampler, token: Option<String>) -> Self {
        Self {
            sampler,
            token: TokenGate::new(token),
        }
    }
}

#[tonic::async_trait]
impl HostMonitor for PullService {
    async fn get_info(&self, req: Request<RequestInfo>) -> Result<Response<HostInfo>, Status> {
        if !self.token.allows(Some(&req.get_ref().token)) {
            return Err(Status::unauthenticated("token missing or wrong"));
        }
        Ok(Response::new(self.sampler.report()))
    }
}

/// Serves the pull API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    allow: Allowlist,
    service: PullService,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = allowed_connections(listener, allow, "pull");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        // Bound what one caller can hold open.
        .timeout(Duration::from_secs(10))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .concurrency_limit_per_connection(8)
        .add_service(HostMonitorServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
