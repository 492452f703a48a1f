//! The alerts over HTTP.
//!
//! Viewers (behind the viewer gate):
//! - `GET /api/alerts`: firing and pending alerts, the recent log, subscriptions, silences,
//!   channels with their counters, rules, and the users a subscription can name;
//! - `POST /api/alerts/subscriptions` `{count, min_mem, host?, user? | channel?, expires?}`:
//!   "tell me when N GPUs with SIZE free are free"; answers the id and a cancel token (the one
//!   thing that makes it "yours": the page keeps it);
//! - `DELETE /api/alerts/subscriptions/{id}` with `X-Cancel-Token`.
//!
//! Admins (behind the admin gate): `POST /api/admin/alerts/silences` `{rule?, host?, gpu?,
//! for, comment?}`, `DELETE /api/admin/alerts/silences/{id}`, and
//! `DELETE /api/admin/alerts/subscriptions/{id}` (anyone's).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::alerts::model::{Silence, Target};
use crate::alerts::{AlertsError, NewSubscription};
use crate::App;

/// Request bodies of these routes are small; anything larger is refused unread.
pub const MAX_BODY: usize = 16 * 1024;
/// Log entries `/api/alerts` lists.
const RECENT: usize = 200;
/// A subscription's default life.
const DEFAULT_EXPIRES: Duration = Duration::from_secs(4 * 3600);

fn error(e: &AlertsError) -> Response {
    let status = match e {
        AlertsError::Invalid(_) => StatusCode::BAD_REQUEST,
        AlertsError::NotFound(_) => StatusCode::NOT_FOUND,
        AlertsError::Forbidden => StatusCode::FORBIDDEN,
        AlertsError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
        AlertsError::Store(_) | AlertsError::Channel(..) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

pub async fn overview(State(app): State<App>) -> Response {
    let alerts = app.alerts.clone();
    match tokio::task::spawn_blocking(move || alerts.overview(RECENT)).await {
        Ok(Ok(o)) => Json(o).into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// A size as a number of bytes or a string ("20GiB").
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    count: Option<u32>,
    min_mem: Option<Size>,
    host: Option<String>,
    user: Option<String>,
    channel: Option<String>,
    expires: Option<String>,
    by: Option<String>,
}

pub async fn subscribe(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<SubscribeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{}\n", e.body_text())).into_response(),
    };
    let bad = |m: String| (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response();
    let min_mem = match b.min_mem {
        None => 0,
        Some(Size::Bytes(n)) => n,
        Some(Size::Text(s)) => match hmonitor_common::parse::parse_bytes(&s) {
            Ok(n) => n,
            Err(e) => return bad(format!("min_mem: {e}")),
        },
    };
    let expires = match b.expires.as_deref().map(hmonitor_common::parse::parse_span) {
        None => DEFAULT_EXPIRES,
        Some(Ok(d)) => d,
        Some(Err(e)) => return bad(format!("expires: {e}")),
    };
    let target = match (b.user, b.channel) {
        (Some(u), None) => Target::User(u),
        (None, Some(c)) => Target::Channel(c),
        _ => return bad("give one of user (a lab member with contacts) or channel".to_owned()),
    };
    let by = format!("{} from {}", b.by.as_deref().unwrap_or("page"), peer.ip());
    let req = NewSubscription {
        count: b.count.unwrap_or(1),
        min_mem,
        host: b.host.filter(|h| !h.is_empty()),
        target,
        expires,
        by,
    };
    let alerts = app.alerts.clone();
    match tokio::task::spawn_blocking(move || alerts.subscribe(req)).await {
        Ok(Ok((sub, token))) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": sub.id, "cancel_token": token, "subscription": sub })),
        )
            .into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

pub async fn unsubscribe(
    State(app): State<App>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("x-cancel-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    cancel(app, id, token, false).await
}

pub async fn admin_unsubscribe(State(app): State<App>, Path(id): Path<u64>) -> Response {
    cancel(app, id, None, true).await
}

async fn cancel(app: App, id: u64, token: Option<String>, admin: bool) -> Response {
    let alerts = app.alerts.clone();
    match tokio::task::spawn_blocking(move || alerts.unsubscribe(id, token.as_deref(), admin)).await
    {
        Ok(Ok(())) => Json(serde_json::json!({ "cancelled": id })).into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    rule: Option<String>,
    host: Option<String>,
    gpu: Option<i32>,
    #[serde(rename = "for")]
    span: String,
    comment: Option<String>,
}

pub async fn silence(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<SilenceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{}\n", e.body_text())).into_response(),
    };
    let span = match hmonitor_common::parse::parse_span(&b.span) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("for: {e}\n")).into_response(),
    };
    let s = Silence {
        id: 0,
        rule: b.rule.filter(|r| !r.is_empty()),
        host: b.host.filter(|h| !h.is_empty()),
        gpu: b.gpu,
        until_ms: 0,
        comment: b.comment.unwrap_or_default(),
        created_ms: 0,
    };
    let alerts = app.alerts.clone();
    match tokio::task::spawn_blocking(move || alerts.silence(s, span)).await {
        Ok(Ok(id)) => {
            tracing::info!("admin at {peer} added silence {id} for {span:?}");
            (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response()
        }
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

pub async fn unsilence(State(app): State<App>, Path(id): Path<u64>) -> Response {
    let alerts = app.alerts.clone();
    match tokio::task::spawn_blocking(move || alerts.unsilence(id)).await {
        Ok(Ok(())) => Json(serde_json::json!({ "removed": id })).into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
