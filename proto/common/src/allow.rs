//! CIDR allowlists (`GOHM_ALLOW`): which peers may talk to a listener at all.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::net::{TcpListener, TcpStream};

/// At most this many refused addresses are remembered for "log once"; past it, refusals are
/// no longer logged (a scan from many addresses must not grow memory or flood the log).
const REFUSED_REMEMBERED: usize = 1024;

/// The connections accepted on `listener` whose peer is in `allow`, for a tonic server's
/// `serve_with_incoming`. Others are closed at once, before a byte of them is read, and each
/// refused address is logged once, naming `what` the listener serves.
pub fn allowed_connections(
    listener: TcpListener,
    allow: Allowlist,
    what: &'static str,
) -> impl tokio_stream::Stream<Item = Result<TcpStream, std::io::Error>> {
    let refused: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
    futures_util::stream::unfold(
        (listener, allow, refused),
        move |(listener, allow, refused)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if allow.allows(peer.ip()) {
                            // Small request/response exchanges: do not wait to fill packets.
                            let _ = stream.set_nodelay(true);
                            return Some((Ok(stream), (listener, allow, refused)));
                        }
                        drop(stream);
                        log_refusal(&refused, peer.ip(), &allow, what);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("{what}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        },
    )
}

fn log_refusal(refused: &Mutex<HashSet<IpAddr>>, ip: IpAddr, allow: &Allowlist, what: &str) {
    // A std Mutex: nothing awaits while it is held.
    let mut seen = match refused.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if seen.len() < REFUSED_REMEMBERED && seen.insert(ip) {
        tracing::warn!("refused {what} connection from {ip}: not in the allowlist ({allow})");
    }
}

/// A set of networks; a peer is allowed when its address lies in any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist(Vec<IpNet>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowlistError {
    #[error("{0:?} is not a CIDR network (expected e.g. 10.1.2.3/32 or 192.168.0.0/16)")]
    BadCidr(String),
    #[error("the allowlist is empty: no caller could ever connect")]
    Empty,
}

impl Allowlist {
    /// Loopback only: the safe default when nothing is configured.
    pub fn loopback() -> Self {
        Self(vec![
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 8)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        ])
    }

    /// Every address (`0.0.0.0/0,::/0`).
    pub fn everyone() -> Self {
        Self(vec![
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0)),
        ])
    }

    pub fn allows(&self, addr: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

impl FromStr for Allowlist {
    type Err = AllowlistError;

    /// Comma-separated CIDRs; a bare address means that address alone (/32 or /128).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = IpNet::from_str(part)
                .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                .map_err(|_| AllowlistError::BadCidr(part.to_owned()))?;
            nets.push(net);
        }
        if nets.is_empty() {
            return Err(AllowlistError::Empty);
        }
        Ok(Self(nets))
    }
}

impl std::fmt::Display for Allowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn seed_examples() {
        let one: Allowlist = "10.1.2.3/32".parse().expect("parse");
        assert!(one.allows(ip("10.1.2.3")));
        assert!(!one.allows(ip("10.1.2.4")));
        let local: Allowlist = "127.0.0.1/8".parse().expect("parse");
        assert!(local.allows(ip("127.5.6.7")));
        assert!(!local.allows(ip("128.0.0.1")));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let l: Allowlist = "127.0.0.2/32, ::1".parse().expect("parse");
        assert!(l.allows(ip("::ffff:127.0.0.2")));
        assert!(l.allows(ip("::1")));
        assert!(!l.allows(ip("127.0.0.1")));
    }

    #[test]
    fn bad_input_names_the_bad_part() {
        assert_eq!(
            "10.0.0.0/8,10.0.0/33".parse::<Allowlist>(),
            Err(AllowlistError::BadCidr("10.0.0/33".into()))
        );
        assert_eq!(" , ".parse::<Allowlist>(), Err(AllowlistError::Empty));
    }
}
