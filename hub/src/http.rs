//! The HTTP side: routes, the viewer gate (CIDR allowlist and optional token), JSON API.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::{admin, agent_ws, alerts_api, assets, history_api, live, App};

pub fn router(app: App) -> Router {
    let viewers = Router::new()
        .route("/", get(assets::index))
        .route("/api/hosts", get(hosts))
        .route("/api/gpus", get(crate::gpus_api::gpus))
        .route("/api/live", get(live::upgrade))
        .route("/api/history", get(history_api::history))
        .route("/api/history/ids", get(history_api::ids))
        .route("/api/history/metrics", get(history_api::metrics))
        .route("/api/usage", get(history_api::usage))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler))
        .route("/api/alerts", get(alerts_api::overview))
        .route(
            "/api/alerts/subscriptions",
            axum::routing::post(alerts_api::subscribe),
        )
        .route(
            "/api/alerts/subscriptions/{id}",
            axum::routing::delete(alerts_api::unsubscribe),
        )
        .layer(axum::extract::DefaultBodyLimit::max(alerts_api::MAX_BODY))
        .layer(middleware::from_fn_with_state(app.clone(), viewer_gate));
    let admin = Router::new()
        .route("/api/admin/hosts", get(admin::hosts))
        .route(
            "/api/admin/hosts/{id}",
            axum::routing::delete(admin::forget),
        )
        .route(
            "/api/admin/alerts/silences",
            axum::routing::post(alerts_api::silence),
        )
        .route(
            "/api/admin/alerts/silences/{id}",
            axum::routing::delete(alerts_api::unsilence),
        )
        .route(
            "/api/admin/alerts/subscriptions/{id}",
            axum::routing::delete(alerts_api::admin_unsubscribe),
        )
        .layer(axum::extract::DefaultBodyLimit::max(alerts_api::MAX_BODY))
        .layer(middleware::from_fn_with_state(app.clone(), admin::gate));
    Router::new()
        // Agents authenticate with their own tokens; the viewer gate does not apply.
        .route("/api/agent", get(agent_ws::upgrade))
        // The page's scripts and styles hold no data (the page fetches everything behind the
        // gate), and a browser sends no `?token=` with them.
        .route("/assets/{*path}", get(assets::asset))
        .merge(viewers)
        .merge(admin)
        // Outermost first: every response gets the headers, every request the origin check.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::guard::origin_and_host,
        ))
        .layer(middleware::from_fn(crate::guard::security_headers))
        .with_state(app)
}

async fn viewer_gate(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(refused) = crate::guard::outside_allowlist(&app, peer) {
        return refused;
    }
    // Bearer, `?token=` or the `hmon_token` cookie (what a browser can send on a WebSocket
    // upgrade), percent-decoded and compared in constant time by the one auth module.
    if !app.viewers.allows_request(req.headers(), req.uri().query()) {
        return (
            StatusCode::UNAUTHORIZED,
            "viewer token missing or wrong (Authorization: Bearer, ?token= or hmon_token cookie)\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn hosts(State(app): State<App>) -> Response {
    Json(app.hub.hosts()).into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    let s = &app.hub.stats;
    let history = app.hub.history().map(|h| h.stats.json());
    // Live monitoring works without history; the status says what is missing.
    let unavailable = app.hub.history().and_then(|h| h.stats.unavailable());
    let status = match &unavailable {
        Some(why) => format!("degraded: history unavailable: {why}"),
        None => "ok".to_owned(),
    };
    Json(serde_json::json!({
        "history": history,
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.hub.started.elapsed().as_secs(),
        "hosts": app.hub.len(),
        "hosts_up": app.hub.up_count(),
        "agents_connected": s.agents_connected.load(Ordering::Relaxed),
        "browsers_connected": s.browsers_connected.load(Ordering::Relaxed),
        "frames_in": s.frames_in.load(Ordering::Relaxed),
        "frames_refused": s.frames_refused.load(Ordering::Relaxed),
        "connections_refused": s.connections_refused.load(Ordering::Relaxed),
        "browsers_dropped": s.browsers_dropped.load(Ordering::Relaxed),
        "browser_lagged": s.browser_lagged.load(Ordering::Relaxed),
        "alerts": {
            "firing": app.alerts.firing().len(),
            // Channels whose last send failed (after its retries): an alert nobody hears.
            "channels_failing": app.alerts.failing_channels(),
        },
    }))
    .into_response()
}
