//! What every response carries and every request must pass before a route sees it, against
//! hostile pages: security headers (a Content-Security-Policy without inline script, no
//! framing, no MIME sniffing, no referrer), a cross-site `Origin` refused (the live feed and
//! the API must not be readable by whatever page a lab member has open), and, when configured,
//! a `Host` allowlist against DNS rebinding.

use axum::extract::{Request, State};
use axum::http::header::{HeaderName, HeaderValue, HOST, ORIGIN};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::App;

/// The page's own scripts, styles, worker and WebSocket only; nothing inline, nothing framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    // For browsers that predate frame-ancestors.
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Adds the security headers to every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    res
}

/// Refuses a request from another site's page, or for a host name not on the allowlist.
pub async fn origin_and_host(State(app): State<App>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !app.cfg.allowed_hosts.is_empty() && !host_allowed(&host, &app.cfg.allowed_hosts) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this hub does not answer for that host name (allowed_hosts)\n",
        )
            .into_response();
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").to_ascii_lowercase();
        if !origin_allowed(&origin, &host, &app.cfg.allowed_origins) {
            app.hub
                .stats
                .connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (
                StatusCode::FORBIDDEN,
                "cross-site request refused: this page's origin is not the hub's own nor in \
                 allowed_origins\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The hub's own origin (the same `host[:port]` the request was sent to) or one configured.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!(authority, Some(a) if !a.is_empty() && a == host)
}

/// `host` (`name[:port]`, `[v6][:port]`) names one of `allowed`.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|v6| format!("[{v6}]"))
    } else {
        host.split(':').next().map(str::to_owned)
    };
    name.is_some_and(|n| {
        !n.is_empty()
            && allowed
                .iter()
                .any(|a| *a == n || a.trim_matches(['[', ']']) == n.trim_matches(['[', ']']))
    })
}

/// A 403 for a peer outside `viewer_allow` (viewers and admins alike); `None` for one inside.
pub fn outside_allowlist(app: &App, peer: std::net::SocketAddr) -> Option<Response> {
    (!app.cfg.viewer_allow.allows(peer.ip()))
        .then(|| (StatusCode::FORBIDDEN, "not in the viewer allowlist\n").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_own_origin_or_a_configured_one() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed("http://hub.lab:5000", "hub.lab:5000", &none));
        assert!(!origin_allowed(
            "http://evil.example",
            "hub.lab:5000",
            &none
        ));
        // Same name, other port: another origin.
        assert!(!origin_allowed(
            "http://hub.lab:8080",
            "hub.lab:5000",
            &none
        ));
        assert!(!origin_allowed("null", "hub.lab:5000", &none));
        assert!(!origin_allowed("http://", "", &none));
        let allowed = vec!["https://grafana.lab".to_owned()];
        assert!(origin_allowed(
            "https://grafana.lab",
            "hub.lab:5000",
            &allowed
        ));
        assert!(!origin_allowed(
            "http://grafana.lab",
            "hub.lab:5000",
            &allowed
        ));
    }

    #[test]
    fn host_names_with_and_without_ports() {
        let allowed = vec![
            "hub.lab".to_owned(),
            "10.0.0.5".to_owned(),
            "[::1]".to_owned(),
        ];
        assert!(host_allowed("hub.lab:5000", &allowed));
        assert!(host_allowed("hub.lab", &allowed));
        assert!(host_allowed("10.0.0.5:5000", &allowed));
        assert!(host_allowed("[::1]:5000", &allowed));
        assert!(!host_allowed("evil.example:5000", &allowed));
        assert!(!host_allowed("", &allowed));
        assert!(!host_allowed("hub.lab.evil.example", &allowed));
    }
}
