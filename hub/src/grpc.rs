//! The seed's gRPC services as a facade over the hub: `HostMonitor.GetInfo`, with
//! `RequestInfo.reqtype` naming the host id, answers that host's latest report from the state
//! map, so a client written against one seed agent can read every host through the hub.
//!
//! Viewers' rules apply: the viewer allowlist is checked when a connection is accepted, before
//! anything is read from it, and the viewer token (when set) must be in `RequestInfo.token`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hmonitor_common::allow::{allowed_connections, Allowlist};
use hmonitor_common::auth::TokenGate;
use hmonitor_proto::host_monitor_server::{HostMonitor, HostMonitorServer};
use hmonitor_proto::{HostInfo, HostStatus, RequestInfo};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::history::grpc::HistoryFacade;
use crate::limits::ConnCounter;
use crate::state::Hub;
use hmonitor_proto::history_server::HistoryServer;

/// `HostMonitor` answered from the hub's state map.
pub struct Facade {
    hub: Arc<Hub>,
    viewers: TokenGate,
}

impl Facade {
    /// `viewer_token`: when set (and not empty), callers must send it as `RequestInfo.token`.
    pub fn new(hub: Arc<Hub>, viewer_token: Option<String>) -> Self {
        Self {
            hub,
            viewers: TokenGate::new(viewer_token),
        }
    }

    /// The latest report of host `id`, as GetInfo answers it.
    pub fn info(&self, token: &str, id: &str) -> Result<HostInfo, Status> {
        // The seed's callers send the token in RequestInfo.token.
        if !self.viewers.allows(Some(token)) {
            return Err(Status::unauthenticated(
                "viewer token missing or wrong (send it in RequestInfo.token)",
            ));
        }
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "RequestInfo.reqtype must name a host id (the hub serves many hosts)",
            ));
        }
        let Some(state) = self.hub.host(id) else {
            return Err(Status::not_found(format!(
                "no host {id:?} is known to this hub"
            )));
        };
        let Some(mut info) = state.info else {
            return Err(Status::not_found(format!(
                "host {id:?} has not reported yet"
            )));
        };
        if state.status != HostStatus::Up as i32 {
            // The last report of a host that is down: say so in the fields seed clients read.
            info.stale = true;
            if info.err.is_empty() {
                info.err = format!(
                    "host down: no report since {} (Unix ms)",
                    state.last_seen_ms
                );
            }
        }
        Ok(info)
    }
}

#[tonic::async_trait]
impl HostMonitor for Facade {
    async fn get_info(&self, req: Request<RequestInfo>) -> Result<Response<HostInfo>, Status> {
        let r = req.get_ref();
        self.info(&r.token, &r.reqtype).map(Response::new)
    }
}

/// Handshakes (TLS, or HTTP/2's connection preface) in progress at once; past it, accepting
/// waits. Each has [`crate::tls::HANDSHAKE_TIMEOUT`].
const MAX_HANDSHAKES: usize = 256;

/// The HTTP/2 connection preface every gRPC client sends first.
const H2_PREFACE_LEN: usize = 24;

/// Serves the facade on `listener` until `shutdown` completes. Connections from outside
/// `allow` are closed unread. `History` answers from the hub's history store. Each connection
/// must finish its TLS handshake (or, in plain text, send HTTP/2's preface) within 10 s, many at
/// once, so a caller that connects and says nothing holds neither a socket nor the others up.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    allow: Allowlist,
    conns_per_addr: usize,
    viewer_token: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // The allowlist first (a refused address is not counted), then each address's share.
    let counter = ConnCounter::new(conns_per_addr, hub.clone());
    let admitted = allowed_connections(listener, allow, "gRPC").filter_map(move |conn| {
        let admitted = match conn {
            Ok(stream) => match stream.peer_addr() {
                Ok(peer) => counter.admit(stream, peer),
                Err(_) => None, // gone already
            },
            // Accept errors (out of file descriptors) were logged by the allowlist.
            Err(_) => None,
        };
        std::future::ready(admitted)
    });
    let server = tonic::transport::Server::builder()
        // Bound what one caller can hold open.
        .timeout(Duration::from_secs(10))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .concurrency_limit_per_connection(16)
        .add_service(HostMonitorServer::new(Facade::new(
            hub.clone(),
            viewer_token.clone(),
        )))
        .add_service(HistoryServer::new(HistoryFacade::new(
            hub.history().cloned(),
            viewer_token,
        )));
    let timeout = crate::tls::HANDSHAKE_TIMEOUT;
    match tls {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let incoming = handshaken(admitted, move |stream| {
                let acceptor = acceptor.clone();
                async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Some(tls),
                        Ok(Err(e)) => {
                            tracing::debug!("gRPC TLS handshake failed: {e}");
                            None
                        }
                        Err(_) => {
                            tracing::debug!("gRPC TLS handshake timed out");
                            None
                        }
                    }
                }
            });
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = handshaken(admitted, move |stream| async move {
                match tokio::time::timeout(timeout, preface(&stream)).await {
                    Ok(true) => Some(stream),
                    Ok(false) => None,
                    Err(_) => {
                        tracing::debug!("gRPC connection sent no HTTP/2 preface within 10 s");
                        None
                    }
                }
            });
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// The connections whose `handshake` succeeded, [`MAX_HANDSHAKES`] handshaking at once, in the
/// order they finish (a slow one holds up nobody).
fn handshaken<S, F, Fut, T>(
    admitted: S,
    handshake: F,
) -> impl futures_util::Stream<Item = Result<T, std::io::Error>>
where
    S: futures_util::Stream<Item = crate::limits::Counted>,
    F: FnMut(crate::limits::Counted) -> Fut,
    Fut: Future<Output = Option<T>>,
{
    admitted
        .map(handshake)
        .buffer_unordered(MAX_HANDSHAKES)
        .filter_map(|done| std::future::ready(done.map(Ok)))
}

/// Waits until the HTTP/2 preface has arrived (peeked, so tonic still reads it); false when the
/// peer closed or failed first.
async fn preface(stream: &crate::limits::Counted) -> bool {
    let mut buf = [0u8; H2_PREFACE_LEN];
    loop {
        match stream.peek(&mut buf).await {
            Ok(n) if n >= H2_PREFACE_LEN => return true,
            Ok(0) | Err(_) => return false,
            // Part of it: wait for more to arrive (peek returns at once while data is queued).
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hmonitor_proto::host_monitor_client::HostMonitorClient;
    use hmonitor_proto::HostSource;
    use tonic::transport::{Channel, Endpoint};
    use tonic::Code;

    use super::*;
    use crate::state::Credential;

    /// A hub with host "gpu1" up, "gone" down (reported once, then released) and "later"
    /// expected but never seen.
    fn hub() -> Arc<Hub> {
        let hub = Hub::new(Duration::from_secs(1), &["later".to_owned()]);
        for (id, hostname) in [("gpu1", "gpu1.lab"), ("gone", "gone.lab")] {
            let c = hub.next_conn_id();
            hub.claim(
                id,
                c,
                Credential::Enrollment(None),
                HostSource::Push,
                "127.0.0.1:1",
                Duration::from_secs(1),
            )
            .expect("claim");
            let info = HostInfo {
                id: id.into(),
                hostname: hostname.into(),
                ..Default::default()
            };
            assert!(hub.ingest(id, c, 1, info));
            if id == "gone" {
                hub.release(id, c);
            }
        }
        hub
    }

    struct Server {
        addr: SocketAddr,
        _stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    }

    async fn start(allow: &str, token: Option<&str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            hub(),
            allow.parse().expect("allowlist"),
            crate::limits::DEFAULT_CONNS_PER_ADDR,
            token.map(Into::into),
            None,
            async {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            _stop: tx,
            task,
        }
    }

    async fn client(addr: SocketAddr) -> HostMonitorClient<Channel> {
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        HostMonitorClient::new(ch)
    }

    async fn ask(addr: SocketAddr, token: &str, id: &str) -> Result<HostInfo, Status> {
        client(addr)
            .await
            .get_info(RequestInfo {
                token: token.into(),
                reqtype: id.into(),
            })
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn get_info_by_host_id_answers_the_latest_report() {
        let s = start("127.0.0.1/8", None).await;
        let info = ask(s.addr, "", "gpu1").await.expect("gpu1");
        assert_eq!(info.hostname, "gpu1.lab");
        assert!(!info.stale);
        assert!(info.err.is_empty());

        let gone = ask(s.addr, "", "gone").await.expect("gone");
        assert_eq!(gone.hostname, "gone.lab");
        assert!(gone.stale, "a down host's last report is marked stale");
        assert!(gone.err.contains("down"), "{}", gone.err);
    }

    #[tokio::test]
    async fn unknown_never_seen_and_missing_ids_are_refused_by_name() {
        let s = start("127.0.0.1/8", None).await;
        let e = ask(s.addr, "", "nosuch").await.expect_err("unknown");
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("\"nosuch\""), "{}", e.message());
        let e = ask(s.addr, "", "later").await.expect_err("never seen");
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("\"later\""), "{}", e.message());
        let e = ask(s.addr, "", "").await.expect_err("no id");
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn the_viewer_token_is_required_when_set() {
        let s = start("127.0.0.1/8", Some("view-secret")).await;
        for wrong in ["", "view-secreT", "view-secret-and-more", "v"] {
            let e = ask(s.addr, wrong, "gpu1").await.expect_err("wrong token");
            assert_eq!(e.code(), Code::Unauthenticated, "{wrong:?}");
            assert!(!e.message().contains("view-secret"));
        }
        // Checked before the id: no way to probe which hosts exist without the token.
        let e = ask(s.addr, "", "nosuch").await.expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
        let info = ask(s.addr, "view-secret", "gpu1")
            .await
            .expect("right token");
        assert_eq!(info.hostname, "gpu1.lab");
    }

    #[tokio::test]
    async fn a_caller_outside_the_allowlist_is_cut_off_and_shutdown_stops_the_server() {
        let s = start("10.0.0.0/8", None).await;
        let e = ask(s.addr, "", "gpu1").await.expect_err("refused");
        // The connection is closed unread: the client sees it fail, never an answer.
        assert!(
            matches!(e.code(), Code::Unavailable | Code::Cancelled),
            "{e:?}"
        );
        drop(s._stop);
        tokio::time::timeout(Duration::from_secs(5), s.task)
            .await
            .expect("stops on shutdown")
            .expect("no panic")
            .expect("clean stop");
    }
}
