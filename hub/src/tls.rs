//! TLS for the hub: HTTPS and WSS on the HTTP listener, and TLS on the gRPC facade, from one PEM
//! certificate chain and key (rustls with the ring provider).
//!
//! Handshakes run in tasks of their own, so a client that opens a connection and sends nothing
//! delays only itself; each has [`HANDSHAKE_TIMEOUT`] to finish.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::limits::{Counted, DeployArgs, PerAddrListener};

/// A TLS setting that cannot be used: the message names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// A TLS handshake not finished within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; beyond this, accepting waits.
const MAX_HANDSHAKES: usize = 1024;

/// The certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `--tls-cert`/`--tls-key` (or the environment) beat the file's `tls_cert`/`tls_key`; one
    /// without the other is an error.
    pub fn resolve(
        args: &DeployArgs,
        file_cert: Option<PathBuf>,
        file_key: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        let cert = args.tls_cert.clone().or(file_cert);
        let key = args.tls_key.clone().or(file_key);
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError(
                "tls_cert is set but tls_key is not: both or neither".into(),
            )),
            (None, Some(_)) => Err(TlsError(
                "tls_key is set but tls_cert is not: both or neither".into(),
            )),
        }
    }

    fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
    }

    /// The rustls server configuration (HTTP/1.1 only: WebSockets upgrade over HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.config_for(b"http/1.1")
    }

    /// The gRPC facade's TLS (HTTP/2), handshaken by the hub itself so that it is bounded in
    /// time like the HTTP side's.
    pub fn grpc_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.config_for(b"h2")
    }

    fn config_for(&self, alpn: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let (certs, key) = self.parse()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                TlsError(format!(
                    "{} and {} do not make a usable certificate: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        let mut cfg = cfg;
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(cfg))
    }

    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let pem = Self::read(&self.cert, "certificate")?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("certificate {}: {e}", self.cert.display())))?;
        if certs.is_empty() {
            return Err(TlsError(format!(
                "certificate {}: no PEM CERTIFICATE block",
                self.cert.display()
            )));
        }
        let pem = Self::read(&self.key, "key")?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            TlsError(format!(
                "key {}: {e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)",
                self.key.display()
            ))
        })?;
        Ok((certs, key))
    }
}

/// Accepts TCP connections (within the per-address limit) and hands out those whose TLS
/// handshake succeeded.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<Counted>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(mut inner: PerAddrListener, cfg: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = axum::serve::Listener::local_addr(&inner)?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Ends with the server (its listener dropped), not at the next connection after
                // it: the port is free once the hub has stopped.
                let (stream, peer) = tokio::select! {
                    accepted = inner.accept_limited() => accepted,
                    () = tx.closed() => return,
                };
                let (acceptor, done) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        // Scanners and clients that distrust the certificate end here; debug,
                        // since anyone can cause any number of them.
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Counted>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (it cannot, short of a closed semaphore): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Reads the CA for https:// pull targets (`--pull-ca`) once, at start, so that a bad file
/// stops the hub with a clear message; `None`: the system's store.
pub fn read_pull_ca(
    path: Option<&Path>,
) -> Result<Option<tonic::transport::Certificate>, TlsError> {
    let Some(path) = path else { return Ok(None) };
    let pem = TlsFiles::read(path, "pull CA")?;
    let n = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("pull CA {}: {e}", path.display())))?
        .len();
    if n == 0 {
        return Err(TlsError(format!(
            "pull CA {}: no PEM CERTIFICATE block",
            path.display()
        )));
    }
    Ok(Some(tonic::transport::Certificate::from_pem(pem)))
}

/// The gRPC endpoint of a pull target: `host:port` in plain HTTP/2, `https://host:port` over
/// TLS, checked against `ca` (`--pull-ca`) or the system's store.
pub fn pull_endpoint(
    addr: &str,
    ca: Option<&tonic::transport::Certificate>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    if !addr.starts_with("https://") {
        return tonic::transport::Endpoint::from_shared(format!("http://{addr}"));
    }
    let tls = match ca {
        Some(ca) => tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone()),
        None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
    };
    tonic::transport::Endpoint::from_shared(addr.to_owned())?.tls_config(tls)
}
