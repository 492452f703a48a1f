//! Limits on what one untrusted peer may cost the hub: concurrent connections per source
//! address (counted at accept, before TLS or HTTP), and frames per second per agent connection
//! (a token bucket). Frame size, hello timeout and browser message size are enforced where the
//! frames are read (agent_ws.rs, live.rs); HTTP header sizes by hyper (see README, "Limits").

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::state::Hub;

/// Concurrent connections one address may hold by default. Generous: a lab's NAT gateway may
/// carry a few hundred agents; one address with more is rarely anything but a misbehaving or
/// hostile client.
pub const DEFAULT_CONNS_PER_ADDR: usize = 512;

/// Frames per second one agent connection may send on average by default. An agent sends one
/// per interval (0.5/s at 2 s) plus pings; the margin is for backfill after a reconnect.
pub const DEFAULT_AGENT_FRAMES_PER_SEC: u32 = 50;

/// Burst allowance, in seconds of the rate.
pub const BURST_SECONDS: u32 = 10;

/// The deploy issue's hub flags (flattened into the hub's `Args`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployArgs {
    /// TLS certificate chain (PEM): serve HTTPS/WSS and TLS gRPC [default: plain TCP].
    #[arg(long, env = "HMON_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, env = "HMON_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that https:// pull targets must chain to, instead of the
    /// system's store.
    #[arg(long, env = "HMON_PULL_CA", value_name = "PATH")]
    pub pull_ca: Option<PathBuf>,

    /// Most concurrent connections (agents, browsers, API) from one address; 0 = no limit
    /// [default: 512].
    #[arg(long, env = "HMON_MAX_CONNS_PER_ADDR", value_name = "N")]
    pub max_conns_per_addr: Option<usize>,

    /// Most frames per second one agent connection may send on average (bursts of 10 s of it
    /// are allowed); a connection over it is closed with 1008 [default: 50].
    #[arg(long, env = "HMON_MAX_AGENT_FRAMES_PER_SEC", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_agent_frames_per_sec: Option<u32>,
}

/// The resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// 0: no limit.
    pub conns_per_addr: usize,
    pub agent_frames_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            conns_per_addr: DEFAULT_CONNS_PER_ADDR,
            agent_frames_per_sec: DEFAULT_AGENT_FRAMES_PER_SEC,
        }
    }
}

impl Limits {
    /// Flags and environment beat the file's values, which beat the defaults.
    pub fn resolve(args: &DeployArgs, file_conns: Option<usize>, file_rate: Option<u32>) -> Self {
        let d = Self::default();
        Self {
            conns_per_addr: args
                .max_conns_per_addr
                .or(file_conns)
                .unwrap_or(d.conns_per_addr),
            agent_frames_per_sec: args
                .max_agent_frames_per_sec
                .or(file_rate)
                .unwrap_or(d.agent_frames_per_sec)
                .max(1),
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_second(rate: u32) -> Self {
        let burst = f64::from(rate) * f64::from(BURST_SECONDS);
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    pub fn take_at(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct AddrCount {
    open: usize,
    /// Refusals logged since the address last went under the limit (one line per episode).
    warned: bool,
}

type Counts = Arc<Mutex<HashMap<IpAddr, AddrCount>>>;

/// What one "address" is for the per-address cap: an IPv4 address, or an IPv6 /64 (one host or
/// site usually holds a whole /64, and could otherwise open `limit` connections from each of its
/// 2^64 addresses). IPv4-mapped IPv6 peers count as their IPv4 address.
pub fn cap_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts each address's open connections and refuses one over `limit` (0: no limit).
#[derive(Clone)]
pub struct ConnCounter {
    limit: usize,
    counts: Counts,
    hub: Arc<Hub>,
}

impl ConnCounter {
    pub fn new(limit: usize, hub: Arc<Hub>) -> Self {
        Self {
            limit,
            counts: Arc::default(),
            hub,
        }
    }

    /// The connection, counted against `peer` until dropped; None (and the connection
    /// dropped, so closed) when `peer` already holds `limit`.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Counted> {
        if self.limit == 0 {
            return Some(Counted {
                stream,
                release: None,
            });
        }
        let ip = cap_key(peer.ip());
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = counts.entry(ip).or_default();
        if entry.open >= self.limit {
            self.hub
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if !entry.warned {
                entry.warned = true;
                let what = if ip.is_ipv6() {
                    format!("{ip}/64")
                } else {
                    ip.to_string()
                };
                tracing::warn!(
                    "connections from {what} refused: it holds {} (limit {}, --max-conns-per-addr); \
                     further refusals are not logged until it drops below the limit",
                    entry.open,
                    self.limit
                );
            }
            return None;
        }
        entry.open += 1;
        Some(Counted {
            stream,
            release: Some((self.counts.clone(), ip)),
        })
    }
}

/// A TCP listener that closes, on accept, a connection from an address already holding
/// `limit` connections. Nothing is read from such a connection, so it costs one accept.
pub struct PerAddrListener {
    inner: TcpListener,
    counter: ConnCounter,
}

impl PerAddrListener {
    pub fn new(inner: TcpListener, limit: usize, hub: Arc<Hub>) -> Self {
        Self {
            inner,
            counter: ConnCounter::new(limit, hub),
        }
    }

    /// Accepts the next connection within the limit.
    pub async fn accept_limited(&mut self) -> (Counted, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Some(stream) = self.counter.admit(stream, peer) {
                return (stream, peer);
            }
        }
    }
}

impl axum::serve::Listener for PerAddrListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_limited().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that counts against its address until dropped.
pub struct Counted {
    stream: TcpStream,
    release: Option<(Counts, IpAddr)>,
}

impl Counted {
    /// Reads without consuming (what a protocol sniffer needs before handing the stream on).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.peek(buf).await
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.release.take() {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = counts.get_mut(&ip) {
                e.open = e.open.saturating_sub(1);
                e.warned = false;
                if e.open == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// For tonic (the gRPC listener): the peer's address, as for a plain `TcpStream`.
impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ones_as_ipv4() {
        let k = |s: &str| cap_key(s.parse().expect("ip"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::");
        assert_eq!(k("::ffff:10.0.0.7"), k("10.0.0.7"));
        assert_ne!(k("10.0.0.7"), k("10.0.0.8"));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::per_second(10);
        let t0 = b.last;
        let burst = (0..1000).take_while(|_| b.take_at(t0)).count();
        assert_eq!(burst, 100);
        // Half a second later: 5 more.
        let t1 = t0 + Duration::from_millis(500);
        let more = (0..1000).take_while(|_| b.take_at(t1)).count();
        assert_eq!(more, 5);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..1000).take_while(|_| b.take_at(t2)).count(), 100);
    }
}
