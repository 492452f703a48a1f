//! The live page (frontend/, built by Vite into frontend/dist) embedded in the binary, so one
//! binary serves everything and the page works in a lab without internet.
//!
//! Vite names assets by content hash, so they never change under a name: `Cache-Control:
//! immutable`. The index names the current assets, so browsers must revalidate it: `no-cache`.
//! The build writes a gzip copy (`name.gz`) of each text asset; it is served to browsers that
//! accept gzip. Without `frontend/dist` the hub still builds, and `/` says how to build the page.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use hmonitor_common::auth;
use rust_embed::RustEmbed;

use crate::App;

#[derive(RustEmbed)]
#[folder = "../frontend/dist/"]
#[allow_missing = true]
struct Dist;

/// Shown at `/` when the page was not built before the hub was compiled.
const NOT_BUILT: &str = include_str!("index.html");

/// `/`: the live page, or the notice that it is not built. Opened with `?token=` (the viewer
/// gate has checked it), the token is exchanged for an `HttpOnly` cookie and the browser sent to
/// the same URL without it, so the address bar, history and shared links never carry it.
pub async fn index(State(app): State<App>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(q) = uri.query() {
        if let Some(token) = auth::query_token(q) {
            let rest = auth::without_token(q);
            let to = if rest.is_empty() {
                uri.path().to_owned()
            } else {
                format!("{}?{rest}", uri.path())
            };
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            if app.viewers.required() {
                let cookie = auth::set_cookie(&token, app.cfg.tls.is_some());
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
    }
    match serve("index.html", &headers, "no-cache") {
        Some(r) => r,
        None => Html(NOT_BUILT).into_response(),
    }
}

/// `/assets/{*path}`: the page's scripts and styles.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let name = format!("assets/{path}");
    serve(&name, &headers, "public, max-age=31536000, immutable")
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "no such asset\n").into_response())
}

/// Whether the page is embedded (false: the hub was built before `make frontend`).
pub fn page_built() -> bool {
    Dist::get("index.html").is_some()
}

fn serve(name: &str, headers: &HeaderMap, cache: &'static str) -> Option<Response> {
    // Only the build's own files: the `.gz` copies are an encoding, not names of their own.
    if name.ends_with(".gz") {
        return None;
    }
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (file, gzipped) = match gzip_ok.then(|| Dist::get(&format!("{name}.gz"))).flatten() {
        Some(f) => (f, true),
        None => (Dist::get(name)?, false),
    };
    let mut resp = file.data.into_owned().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Some(resp)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("weird"), "application/octet-stream");
    }

    #[test]
    fn gz_copies_are_not_addressable() {
        assert!(serve("index.html.gz", &HeaderMap::new(), "no-cache").is_none());
    }
}
