//! Value parsers shared by flags, environment and file.

use hmonitor_common::auth::check_token;
use hmonitor_common::parse::parse_size;

use super::{MAX_MAX_FRAME, MIN_MAX_FRAME};

/// Tokens travel in an `Authorization` header: printable ASCII without spaces, not empty
/// (the one syntax of `hmonitor_common::auth`).
pub fn parse_token(s: &str) -> Result<String, String> {
    check_token(s)
}

/// [`parse_token`], except that an empty value means "not set" (as the agent reads an empty
/// HMON_TOKEN): environment files often carry `HMON_TOKEN=` as a placeholder.
pub(super) fn parse_flag_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        parse_token(s)
    }
}

/// "1048576", "512KiB", "1MiB" (also "K"/"KB"/"M"/"MB", binary as well), within
/// [`MIN_MAX_FRAME`]..=[`MAX_MAX_FRAME`].
pub fn parse_frame_bytes(s: &str) -> Result<usize, String> {
    parse_size(s, "max_frame_bytes", MIN_MAX_FRAME..=MAX_MAX_FRAME)
}

/// `host:port` (a name, an IPv4 address or a bracketed IPv6 address, and a port). Names are
/// not resolved here: a target whose name does not resolve yet is shown down, not refused.
pub fn check_pull_addr(addr: &str) -> Result<(), String> {
    let bad = || format!("{addr:?} is not host:port or https://host:port (e.g. 10.0.0.7:9203)");
    // https://: the agent's pull API serves TLS (see crate::tls::pull_endpoint).
    let plain = addr.strip_prefix("https://").unwrap_or(addr);
    let (host, port) = plain.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// An origin as a browser sends it: `http://host`, `https://host:port` (lower-cased; no path).
pub fn parse_origin(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let bad =
        || format!("{s:?} is not an origin (e.g. https://lab.example or http://10.0.0.5:5000)");
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    Ok(t)
}

/// A host name (or address) as it stands in a `Host` header, without the port; lower-cased.
pub fn parse_host_name(s: &str) -> Result<String, String> {
    let t = s.trim().to_ascii_lowercase();
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "{s:?} is not a host name (e.g. gpu-hub.lab or 10.0.0.5)"
        ))
    }
}
