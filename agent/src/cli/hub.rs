//! The hub straight from the CLI, where no agent relays for it: the URL and viewer token from
//! `~/.config/hmonitor/cli.toml` (`hub = "https://hub:5000"`, `viewer_token` or
//! `viewer_token_file`), overridden by `HMON_HUB` and `HMON_VIEWER_TOKEN`; TLS as for the
//! agent's own connection (`HMON_CA`, `HMON_INSECURE_SKIP_VERIFY`, else the system's CA store).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::coord::wire::MAX_REPLY_BYTES;

/// How long one request to the hub may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The longest cli.toml read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliFile {
    hub: Option<String>,
    viewer_token: Option<String>,
    viewer_token_file: Option<PathBuf>,
}

/// Where the hub is and what to show it.
#[derive(Debug, Clone)]
pub struct HubTarget {
    /// `http(s)://host:port`, without a path.
    pub base: String,
    pub token: Option<String>,
    /// `HMON_CA` / `HMON_INSECURE_SKIP_VERIFY`, as for the agent's own connection.
    pub tls: crate::tls::ClientTls,
}

/// `~/.config/hmonitor/cli.toml` ($XDG_CONFIG_HOME first).
pub fn config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("hmonitor").join("cli.toml"))
}

fn read_file(path: &Path) -> Result<Option<CliFile>, String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("{}: longer than 64 KiB", path.display()));
    }
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The hub as configured; `hub_env` is the first `HMON_HUB` URL, if set.
pub fn target(
    hub_env: Option<String>,
    tls: crate::tls::ClientTls,
) -> Result<Option<HubTarget>, String> {
    let path = config_path();
    let file = match &path {
        Some(p) => read_file(p)?.unwrap_or_default(),
        None => CliFile::default(),
    };
    let Some(url) = hub_env.or(file.hub) else {
        return Ok(None);
    };
    let token = match std::env::var("HMON_VIEWER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        Some(t) => Some(t),
        None => match (file.viewer_token, file.viewer_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => hmonitor_common::auth::read_token_file(&p)
                .map_err(|e| format!("viewer_token_file {}: {e}", p.display()))?,
            (None, None) => None,
        },
    };
    Ok(Some(HubTarget {
        base: base_url(&url)?,
        token,
        tls,
    }))
}

/// `ws://hub:5000/api/agent` or `https://hub:5000/` → `http(s)://hub:5000`.
fn base_url(url: &str) -> Result<String, String> {
    let t = url.trim();
    let (scheme, rest) = t.split_once("://").ok_or_else(|| {
        format!("hub URL {url:?} has no scheme (http://, https://, ws://, wss://)")
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        other => return Err(format!("hub URL {url:?}: unknown scheme {other:?}")),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("hub URL {url:?} names no host"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// `GET <base><path_and_query>`: the body, or why not (naming the URL).
pub async fn get(t: &HubTarget, path_and_query: &str) -> Result<Vec<u8>, String> {
    let url = format!("{}{path_and_query}", t.base);
    match tokio::time::timeout(TIMEOUT, fetch(t, &url)).await {
        Ok(r) => r.map_err(|why| format!("hub {}: {why}", t.base)),
        Err(_) => Err(format!("hub {}: no answer within {TIMEOUT:?}", t.base)),
    }
}

async fn fetch(t: &HubTarget, url: &str) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let host = uri.host().ok_or("no host in the URL")?.to_owned();
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(
            hyper::header::USER_AGENT,
            concat!("hmonitor/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = &t.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    if tls {
        let config = crate::push::client_tls(&t.tls).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad TLS name {host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<S>(io: S, req: hyper::Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let hint = if status == hyper::StatusCode::UNAUTHORIZED {
            " (set HMON_VIEWER_TOKEN, or viewer_token in cli.toml)"
        } else {
            ""
        };
        return Err(format!("HTTP {status}: {}{hint}", text.trim()));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_of_either_kind_become_the_http_base() {
        assert_eq!(
            base_url("ws://hub:5000/api/agent").as_deref(),
            Ok("http://hub:5000")
        );
        assert_eq!(
            base_url("https://lab.example/").as_deref(),
            Ok("https://lab.example")
        );
        assert!(base_url("hub:5000").is_err_and(|e| e.contains("hub:5000")));
        assert!(base_url("ftp://hub").is_err_and(|e| e.contains("ftp")));
    }
}
