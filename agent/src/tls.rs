//! TLS settings of the agent: which CA the push client trusts for `wss://` hubs (`HMON_CA`, or
//! the system's store), the one explicit way to skip verification, and the pull API's own
//! certificate (`HMON_TLS_CERT`/`HMON_TLS_KEY`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_tungstenite::tungstenite;

use hmonitor_common::parse::parse_bool;

/// The warning logged at start and before every connection when verification is off.
pub const INSECURE_WARNING: &str = "HMON_INSECURE_SKIP_VERIFY is set: the hub's TLS certificate \
     is NOT verified; anyone on the path can impersonate the hub and read the token";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate(s) (PEM) that wss:// hubs' certificates must chain to, instead of the
    /// system's store.
    #[arg(long = "ca", env = "HMON_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,

    /// Accept any certificate from wss:// hubs. For a first test only: the token is then
    /// sent to whoever answers. Logged as a warning at start and on every connection.
    #[arg(
        long,
        env = "HMON_INSECURE_SKIP_VERIFY",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool,
        value_name = "BOOL"
    )]
    pub insecure_skip_verify: bool,

    /// Serve the pull API over TLS with this certificate chain (PEM).
    #[arg(long, env = "HMON_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "HMON_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {err}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("HMON_CA {}: {why}", .path.display())]
    BadCa { path: PathBuf, why: String },
    #[error("HMON_CA and HMON_INSECURE_SKIP_VERIFY are both set: choose one")]
    CaAndInsecure,
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What to check when a hub's certificate is refused: rustls' `CertificateError`, found by
/// type in a WebSocket connection error (tungstenite's TLS error, or the I/O error tokio-rustls
/// wraps a handshake failure in), never by its wording. `None` for anything that is not a
/// refused certificate.
pub fn hint(error: &tungstenite::Error) -> Option<&'static str> {
    let rustls_error = match error {
        tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(e)) => Some(e.as_ref()),
        tungstenite::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }?;
    certificate_hint(rustls_error)
}

fn certificate_hint(e: &rustls::Error) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = e else {
        return None;
    };
    Some(match cert {
        C::UnknownIssuer => {
            "the hub's certificate is not signed by a CA this agent trusts: set HMON_CA to the \
             CA's PEM file, or install the CA in the system's store"
        }
        C::Expired | C::ExpiredContext { .. } => "the hub's certificate has expired: renew it",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the hub's certificate is not valid yet: check both machines' clocks"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the hub's certificate does not name the host in HMON_HUB: use a name it lists"
        }
        _ => "the hub's TLS certificate was refused",
    })
}

/// How the push client checks hubs' certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub insecure: bool,
}

impl TlsArgs {
    pub fn client(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            insecure: self.insecure_skip_verify,
        }
    }

    /// The pull API's TLS configuration, when a certificate is configured.
    pub fn pull_server(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let cert = read(cert, "HMON_TLS_CERT")?;
        let key = read(key, "HMON_TLS_KEY")?;
        Ok(Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        ))
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        what,
        path: path.to_owned(),
        err,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for `HMON_CA` or for skipping verification; `None` when neither is
/// set (the caller then uses the system's store).
pub fn client_config(tls: &ClientTls) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    match (&tls.ca, tls.insecure) {
        (Some(_), true) => Err(TlsError::CaAndInsecure),
        (None, false) => Ok(None),
        (None, true) => {
            tracing::warn!("{INSECURE_WARNING}");
            let cfg = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth();
            Ok(Some(Arc::new(cfg)))
        }
        (Some(path), false) => {
            let pem = read(path, "HMON_CA")?;
            let bad = |why: String| TlsError::BadCa {
                path: path.clone(),
                why,
            };
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!(
                    "no usable CA certificate in it ({ignored} unparsable)"
                )));
            }
            let cfg = builder.with_root_certificates(roots).with_no_client_auth();
            Ok(Some(Arc::new(cfg)))
        }
    }
}

/// Accepts every certificate (signatures are still checked, so the handshake itself is sound).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_certificates_get_a_hint_by_type_and_other_errors_none() {
        use rustls::CertificateError as C;
        // As tokio-rustls hands a failed handshake over: an I/O error around rustls' own.
        let wrapped = |c: C| {
            tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            ))
        };
        let h = |e: tungstenite::Error| hint(&e).unwrap_or("");
        assert!(h(wrapped(C::UnknownIssuer)).contains("HMON_CA"));
        assert!(h(wrapped(C::Expired)).contains("renew"));
        assert!(h(wrapped(C::NotValidForName)).contains("HMON_HUB"));
        assert!(h(wrapped(C::NotValidYet)).contains("clocks"));
        let direct = tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(Box::new(
            rustls::Error::InvalidCertificate(C::Revoked),
        )));
        assert_eq!(h(direct), "the hub's TLS certificate was refused");
        // A message that merely mentions certificates is not a refused one.
        let io = std::io::Error::other("certificate expired: UnknownIssuer");
        assert_eq!(hint(&tungstenite::Error::Io(io)), None);
        assert_eq!(
            hint(&tungstenite::Error::ConnectionClosed),
            None,
            "not a certificate"
        );
    }
}
