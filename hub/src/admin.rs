//! `/api/admin/…`: actions that change what the hub knows, for admins only. They need the
//! admin token as `Authorization: Bearer` (never a cookie or `?token=`, so no web page can make
//! a browser send it), from an address the viewer allowlist admits.
//!
//! - `GET /api/admin/hosts`: every known or pinned host id, with its pin.
//! - `DELETE /api/admin/hosts/{id}`: forget a host: its pin (the next agent with the shared
//!   token pins the id anew), its live state, its place under `max_hosts`. History is kept.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmonitor_common::auth;

use crate::App;

/// Admits a request only with the admin token, from an allowed address.
pub async fn gate(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(refused) = crate::guard::outside_allowlist(&app, peer) {
        return refused;
    }
    if !app.admins.required() {
        return (
            StatusCode::FORBIDDEN,
            "admin actions are off: the hub has no admin token\n",
        )
            .into_response();
    }
    if !app.admins.allows(auth::bearer_header(req.headers())) {
        app.refusals.warn(&format!("admin:{}", peer.ip()), || {
            format!("admin request from {peer} refused: missing or wrong admin token")
        });
        return (
            StatusCode::UNAUTHORIZED,
            "admin token missing or wrong (Authorization: Bearer <admin token>)\n",
        )
            .into_response();
    }
    next.run(req).await
}

#[derive(serde::Serialize)]
struct HostRow {
    id: String,
    status: &'static str,
    /// When the id was pinned to an agent's host key, Unix ms; absent when not pinned.
    pinned_ms: Option<u64>,
    pinned_from: Option<String>,
    /// Reserved for a per-host token or pull target (the shared token cannot report as it).
    reserved: bool,
}

pub async fn hosts(State(app): State<App>) -> Response {
    let mut rows: std::collections::BTreeMap<String, HostRow> = app
        .hub
        .hosts()
        .into_iter()
        .map(|h| {
            let status =
                hmonitor_proto::HostStatus::try_from(h.status).map_or("unknown", |s| match s {
                    hmonitor_proto::HostStatus::Up => "up",
                    hmonitor_proto::HostStatus::Down => "down",
                    hmonitor_proto::HostStatus::NeverSeen => "never seen",
                    hmonitor_proto::HostStatus::Unspecified => "unknown",
                });
            let reserved = app.identity.is_reserved(&h.id);
            (
                h.id.clone(),
                HostRow {
                    id: h.id,
                    status,
                    pinned_ms: None,
                    pinned_from: None,
                    reserved,
                },
            )
        })
        .collect();
    for pin in app.identity.pins() {
        let row = rows.entry(pin.id.clone()).or_insert_with(|| HostRow {
            id: pin.id.clone(),
            status: "forgotten by the live view (pinned)",
            pinned_ms: None,
            pinned_from: None,
            reserved: false,
        });
        row.pinned_ms = Some(pin.pinned_ms);
        row.pinned_from = Some(pin.first_addr);
    }
    Json(rows.into_values().collect::<Vec<_>>()).into_response()
}

pub async fn forget(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let was_pinned = match app.identity.forget(&id) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("admin at {peer}: cannot forget host {id:?}: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
    };
    let was_known = app.hub.forget(&id);
    let alerts = app.alerts.clone();
    let host = id.clone();
    // Its alerts go too, untold (SQLite, so off the async workers).
    if let Err(e) = tokio::task::spawn_blocking(move || alerts.forget_host(&host)).await {
        tracing::error!("forgetting the alerts of {id:?}: {e}");
    }
    if !was_pinned && !was_known {
        return (StatusCode::NOT_FOUND, format!("no host {id:?}\n")).into_response();
    }
    tracing::info!(
        "admin at {peer} forgot host {id:?} (pinned: {was_pinned}, known: {was_known}); the next \
         agent with the shared token pins it anew"
    );
    Json(serde_json::json!({ "forgot": id, "was_pinned": was_pinned, "was_known": was_known }))
        .into_response()
}
