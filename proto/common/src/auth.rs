//! The one place a token is taken from a request and compared: the hub's agent upgrade, its
//! viewer pages, WebSocket and JSON, its gRPC facades, and the agent's pull API all call this
//! module, so every entry point reads tokens the same way and compares them in constant time.
//!
//! A request may present a token as `Authorization: Bearer <token>`, as `?token=` in the query
//! or as the `hmon_token` cookie (what a browser can send on a WebSocket upgrade). The query
//! and the cookie are percent-decoded, so a token holding `+ / = % & ;` works when the page
//! encodes it with `encodeURIComponent`. A `+` stays a `+`: tokens cannot hold spaces, so it
//! can never have meant one.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

/// The cookie the live page stores the viewer token in.
pub const COOKIE_NAME: &str = "hmon_token";

/// Longest token accepted from a request, in bytes: a token is compared against every
/// configured one, so an attacker's megabyte header must not be.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Tokens travel in an `Authorization` header: printable ASCII without spaces, not empty, at
/// most [`MAX_TOKEN_BYTES`]. The value is never echoed: it is a secret, maybe mistyped by one
/// character.
pub fn check_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a token may not be empty".to_owned());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token must be printable ASCII without spaces".to_owned());
    }
    if s.len() > MAX_TOKEN_BYTES {
        return Err(format!("a token may hold at most {MAX_TOKEN_BYTES} bytes"));
    }
    Ok(s.to_owned())
}

/// `true` when `given` is `expected`, in time that depends only on the lengths: a caller
/// learns nothing about how much of a guess was right.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    bool::from(given.ct_eq(expected))
}

/// A token file is a few dozen bytes; anything longer is not a token file.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096 + 2;

/// The token in `path` (`--token-file`, `*_FILE`, a systemd credential): its content without
/// surrounding white space; `Ok(None)` when there is no such file. Warns when group or others
/// may read it. `Err` says what is wrong, never what the file holds.
pub fn read_token_file(path: &std::path::Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} is readable or writable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let mut buf = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!("is larger than a token ({MAX_TOKEN_BYTES} bytes)"));
    }
    let token = buf.trim();
    if token.is_empty() {
        return Err("is empty".to_owned());
    }
    check_token(token).map(Some)
}

/// Length of an agent's host key (`AgentHello.host_key`).
pub const HOST_KEY_LEN: usize = 32;

/// What the hub keeps of a host key: its SHA-256 digest, so a copy of the hub's files does
/// not hold the keys themselves.
pub type HostKeyDigest = [u8; 32];

/// The digest of a host key the hub keeps and compares; `Err` names what is wrong with it.
pub fn host_key_digest(key: &[u8]) -> Result<HostKeyDigest, String> {
    use sha2::Digest as _;
    if key.len() != HOST_KEY_LEN {
        return Err(format!(
            "a host key has {HOST_KEY_LEN} bytes, this one {}",
            key.len()
        ));
    }
    let digest = sha2::Sha256::digest(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    Ok(out)
}

/// `true` when two host-key digests are the same, in constant time.
pub fn host_key_matches(a: &HostKeyDigest, b: &HostKeyDigest) -> bool {
    bool::from(a.ct_eq(b))
}

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme in any case, as
/// RFC 9110 has it).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `Authorization: Bearer` from `headers`.
pub fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    bearer(headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// `token=` of a query string, percent-decoded.
pub fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(decode)
}

/// The `hmon_token` cookie of `headers`, percent-decoded.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
        .and_then(decode)
}

/// The token a request presents: the `Authorization` header, else `?token=`, else the cookie.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(b) = bearer_header(headers) {
        return Some(b.to_owned());
    }
    if let Some(t) = query.and_then(query_token) {
        return Some(t);
    }
    cookie_token(headers)
}

/// The `Set-Cookie` value that hands a viewer token to the browser once: percent-encoded,
/// `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's request carries it),
/// `Secure` when served over TLS.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let value = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// `query` without its `token=` pairs (what a page URL keeps once the token is a cookie).
pub fn without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

fn decode(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_TOKEN_BYTES * 3 {
        return None;
    }
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// One required token, or none: what a listener demands of its callers. An empty configured
/// token means none (environment files carry `HMON_TOKEN=` as a placeholder).
#[derive(Clone, Default)]
pub struct TokenGate {
    expected: Option<String>,
}

impl std::fmt::Debug for TokenGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.expected.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("TokenGate")
            .field("expected", &shown)
            .finish()
    }
}

impl TokenGate {
    pub fn new(expected: Option<String>) -> Self {
        Self {
            expected: expected.filter(|t| !t.is_empty()),
        }
    }

    /// Whether a token is needed at all.
    pub fn required(&self) -> bool {
        self.expected.is_some()
    }

    /// Whether `given` opens the gate: anything does when no token is required.
    pub fn allows(&self, given: Option<&str>) -> bool {
        match &self.expected {
            None => true,
            Some(expected) => {
                given.is_some_and(|g| token_matches(g.as_bytes(), expected.as_bytes()))
            }
        }
    }

    /// [`Self::allows`] for an HTTP request (Bearer, `?token=` or cookie).
    pub fn allows_request(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        !self.required() || self.allows(presented(headers, query).as_deref())
    }
}

/// Which of `candidates` (label, token) `given` is. Every candidate is compared, in constant
/// time, whether or not an earlier one matched, so timing tells nothing about which one or how
/// many there are that share a prefix.
pub fn find_token<'a, L>(
    given: &[u8],
    candidates: impl IntoIterator<Item = (&'a L, &'a str)>,
) -> Option<&'a L>
where
    L: ?Sized + 'a,
{
    let mut found = None;
    for (label, token) in candidates {
        if token_matches(given, token.as_bytes()) && found.is_none() {
            found = Some(label);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const AWKWARD: &str = "a+b/c=d%e&f;g";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn encode(s: &str) -> String {
        // What the page's encodeURIComponent makes of it.
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn bearer_scheme_any_case_and_nothing_else() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn a_token_with_reserved_characters_survives_query_and_cookie() {
        let q = format!("x=1&token={}", encode(AWKWARD));
        assert_eq!(query_token(&q).as_deref(), Some(AWKWARD));
        let h = headers(&[("cookie", &format!("a=b; hmon_token={}", encode(AWKWARD)))]);
        assert_eq!(cookie_token(&h).as_deref(), Some(AWKWARD));
        // A literal '+' is a '+', not a space.
        assert_eq!(query_token("token=a+b").as_deref(), Some("a+b"));
        // Another cookie whose name only starts the same is not ours.
        let h = headers(&[("cookie", "hmon_token_old=zzz")]);
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn the_header_beats_the_query_which_beats_the_cookie() {
        let h = headers(&[("authorization", "Bearer H"), ("cookie", "hmon_token=C")]);
        assert_eq!(presented(&h, Some("token=Q")).as_deref(), Some("H"));
        let h = headers(&[("cookie", "hmon_token=C")]);
        assert_eq!(presented(&h, Some("token=Q")).as_deref(), Some("Q"));
        assert_eq!(presented(&h, None).as_deref(), Some("C"));
        assert_eq!(presented(&HeaderMap::new(), Some("other=1")), None);
    }

    #[test]
    fn a_gate_with_and_without_a_token() {
        let open = TokenGate::new(Some(String::new()));
        assert!(!open.required());
        assert!(open.allows(None));
        let gate = TokenGate::new(Some(AWKWARD.to_owned()));
        assert!(gate.allows(Some(AWKWARD)));
        assert!(!gate.allows(Some("a+b/c=d%e&f;")));
        assert!(!gate.allows(None));
        let h = headers(&[("cookie", &format!("hmon_token={}", encode(AWKWARD)))]);
        assert!(gate.allows_request(&h, None));
        assert!(!gate.allows_request(&HeaderMap::new(), Some("token=a+b")));
        assert!(!format!("{gate:?}").contains("a+b"));
    }

    #[test]
    fn the_cookie_round_trips_and_the_url_loses_the_token() {
        let c = set_cookie(AWKWARD, false);
        assert!(c.ends_with("; Path=/; HttpOnly; SameSite=Strict"), "{c}");
        assert!(set_cookie("t", true).ends_with("; Secure"));
        let value = c.split(';').next().expect("pair");
        let h = headers(&[("cookie", value)]);
        assert_eq!(cookie_token(&h).as_deref(), Some(AWKWARD));
        assert_eq!(
            without_token("host=a&token=x%2B&view=table"),
            "host=a&view=table"
        );
        assert_eq!(without_token("token=x"), "");
    }

    #[test]
    fn token_syntax() {
        assert!(check_token("").is_err());
        assert!(check_token("has space").is_err());
        assert!(check_token(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert_eq!(check_token(AWKWARD).as_deref(), Ok(AWKWARD));
        let err = check_token("secret\n").expect_err("newline");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn find_token_names_the_match() {
        let c = [("host-a", "aaa"), ("host-b", "bbb")];
        let found = find_token(b"bbb", c.iter().map(|(l, t)| (l, *t)));
        assert_eq!(found, Some(&"host-b"));
        assert_eq!(find_token(b"ccc", c.iter().map(|(l, t)| (l, *t))), None);
    }
}
