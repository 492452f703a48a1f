//! `hmonitor-hub hosts …` and `hmonitor-hub enroll-line`: what an admin types on the hub's
//! machine. `hosts` talks to the running hub's admin API (so the live hub forgets at once);
//! `enroll-line` only reads the configuration and the data directory.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::config::{HostsAction, HubConfig};
use crate::enrollment;

/// The largest answer read from the hub.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The whole exchange with the hub, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The add-a-host line for this hub's configuration, or why there is none.
pub fn enroll_line(cfg: &HubConfig) -> anyhow::Result<String> {
    let token = match &cfg.enrollment_token {
        Some(t) => t.clone(),
        None => {
            let path = cfg.data_dir.join(enrollment::TOKEN_FILE);
            match enrollment::read_token_file(&path)? {
                Some(t) => t,
                None if !cfg.host_tokens.is_empty() => bail!(
                    "this hub has per-host tokens only ([hosts] in its configuration): add a \
                     host with its own token, HMON_TOKEN=<its token>"
                ),
                None => bail!(
                    "no enrollment token yet: {} does not exist (the hub makes it on first start)",
                    path.display()
                ),
            }
        }
    };
    let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
    let host = if cfg.listen.ip().is_unspecified() {
        "<this host>".to_owned()
    } else if cfg.listen.is_ipv6() {
        format!("[{}]", cfg.listen.ip())
    } else {
        cfg.listen.ip().to_string()
    };
    Ok(format!(
        "HMON_HUB={scheme}://{host}:{port}/api/agent HMON_TOKEN={token} hmonitor",
        port = cfg.listen.port()
    ))
}

/// Runs `hmonitor-hub hosts ACTION` against the hub at `url` (default: this machine's).
pub async fn hosts(cfg: &HubConfig, url: Option<&str>, action: &HostsAction) -> anyhow::Result<()> {
    let token = match &cfg.admin_token {
        Some(t) => t.clone(),
        None => {
            let path = cfg.data_dir.join(enrollment::ADMIN_TOKEN_FILE);
            enrollment::read_token_file(&path)?.with_context(|| {
                format!(
                    "no admin token: give --admin-token-file (or HMON_ADMIN_TOKEN_FILE), or run \
                     where {} is readable",
                    path.display()
                )
            })?
        }
    };
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
            let host = if cfg.listen.is_ipv6() {
                "[::1]"
            } else {
                "127.0.0.1"
            };
            format!("{scheme}://{host}:{}", cfg.listen.port())
        }
    };
    let (method, path) = match action {
        HostsAction::List => ("GET", "/api/admin/hosts".to_owned()),
        HostsAction::Forget { id } => {
            let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
            ("DELETE", format!("/api/admin/hosts/{id}"))
        }
    };
    let (status, body) =
        tokio::time::timeout(REQUEST_TIMEOUT, request(cfg, &base, method, &path, &token))
            .await
            .with_context(|| {
                format!("{base}: no answer within {}s", REQUEST_TIMEOUT.as_secs())
            })??;
    if !status.is_success() {
        bail!("{base}{path}: {status}: {}", body.trim());
    }
    match action {
        HostsAction::List => {
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("the hub's answer is not a host list")?;
            println!(
                "{:<40} {:<12} {:<10} PINNED FROM",
                "ID", "STATUS", "RESERVED"
            );
            for r in rows {
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                let reserved = r.get("reserved").and_then(serde_json::Value::as_bool);
                println!(
                    "{:<40} {:<12} {:<10} {}",
                    s("id"),
                    s("status"),
                    if reserved == Some(true) { "yes" } else { "no" },
                    s("pinned_from")
                );
            }
        }
        HostsAction::Forget { id } => println!(
            "forgot {id}: the next agent that reports as {id} with the shared token pins it anew"
        ),
    }
    Ok(())
}

async fn request(
    cfg: &HubConfig,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let uri: hyper::Uri = format!("{base}{path}")
        .parse()
        .with_context(|| format!("bad hub URL {base:?}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("hub URL {base:?}: use http:// or https://"),
    };
    let host = uri.host().context("hub URL without a host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot connect to {base}"))?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    if tls {
        let stream = tls_connect(cfg, &host, tcp).await?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<T>(io: T, req: Request<Empty<Bytes>>) -> anyhow::Result<(hyper::StatusCode, String)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    // Bounded: the host list of a full hub (20,000 ids) is a few MiB.
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the hub's answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// TLS to the hub, trusting the certificate it serves (`tls_cert` of this configuration): the
/// admin runs this on the hub's machine.
async fn tls_connect(
    cfg: &HubConfig,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let files = cfg
        .tls
        .as_ref()
        .context("https:// needs the hub's tls_cert in this configuration to trust")?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&files.cert).with_context(|| files.cert.display().to_string())?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?,
    )
}
