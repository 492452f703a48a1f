//! A plain HTTP/1.1 GET over a fresh connection, as a test needs it: the status, the head and
//! the body as text, with whatever headers the test adds (a token, a cookie). One request per
//! connection (`Connection: close`), so reading to the end reads the whole answer.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: String,
}

/// The request; `Host` is the address unless `headers` name one.
fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

fn parse(buf: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = match text.split_once("\r\n\r\n") {
        Some((h, b)) => (h.to_owned(), b.to_owned()),
        None => (text, String::new()),
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply { status, head, body }
}

/// Blocking; `None` when nothing listens (yet). Reads for at most 10 s.
pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request(addr, path, headers).as_bytes())
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Some(parse(&buf))
}

/// [`try_get`] that must connect.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_get(addr, path, headers).unwrap_or_else(|| panic!("nothing listens on {addr}"))
}

/// The same from async code (tokio).
pub async fn get_async(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(request(addr, path, headers).as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    parse(&buf)
}

/// `http://host:port/path` → the address and the path.
pub fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("an http:// url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    (host.parse().expect("host:port"), path)
}
