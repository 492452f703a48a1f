//! History over HTTP (the contract in HISTORY-API.md): `/api/history`, `/api/history/ids`,
//! `/api/usage`. Behind the viewer gate like every viewer route. Queries run on the blocking
//! pool with their own read connection: a long query never holds up the async workers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmonitor_proto::unix_ms;
use serde_json::json;

use crate::history::query::{self, QueryError};
use crate::history::History;
use crate::App;

/// How long one query may take before the caller gets an error (the query itself finishes on
/// the blocking pool).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn from_query_error(e: QueryError) -> Response {
    match e {
        QueryError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        QueryError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        QueryError::Store(e) => {
            tracing::error!("history query failed: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("history store: {e}"),
            )
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(unix_ms(SystemTime::now())).unwrap_or(i64::MAX)
}

/// A Unix-ms parameter: absent → `None`; anything but a non-negative integer → 400 naming it.
fn ms_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, QueryError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(QueryError::Invalid(format!(
                "{name}={v:?} is not a time in Unix milliseconds"
            ))),
        },
    }
}

/// `from`/`to` with their defaults: `to` = now, `from` = `to` − 1 h.
fn span(q: &HashMap<String, String>) -> Result<(i64, i64), QueryError> {
    let to = ms_param(q, "to")?.unwrap_or_else(now_ms);
    let from = ms_param(q, "from")?.unwrap_or(to.saturating_sub(3_600_000));
    Ok((from, to))
}

async fn run<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&History, i64) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, Response> {
    let Some(history) = app.hub.history().cloned() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this hub keeps no history",
        ));
    };
    let task = tokio::task::spawn_blocking(move || f(&history, now_ms()));
    match tokio::time::timeout(QUERY_TIMEOUT, task).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(from_query_error(e)),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query failed: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history query took longer than 10 s",
        )),
    }
}

/// `GET /api/history?id=&metric=&from=&to=`
pub async fn history(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (from, to) = match span(&q) {
        Ok(s) => s,
        Err(e) => return from_query_error(e),
    };
    let id = q.get("id").cloned().unwrap_or_default();
    let metric = q.get("metric").cloned().unwrap_or_default();
    let r = run(&app, move |h, now| {
        let retention = h.retention;
        h.read(|c| Ok(query::series(c, &id, &metric, from, to, now, &retention)))
            .map_err(QueryError::from)?
    })
    .await;
    match r {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/history/ids`
pub async fn ids(State(app): State<App>) -> Response {
    let r = run(&app, |h, _| {
        h.read(|c| Ok(query::ids(c))).map_err(QueryError::from)?
    })
    .await;
    match r {
        Ok(ids) => Json(ids).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/history/metrics`: every kind of id with its metrics (name, label, unit), from the
/// catalog; the page builds its charts from it.
pub async fn metrics() -> Response {
    Json(crate::history::catalog::all()).into_response()
}

/// `GET /api/usage?from=&to=[&format=csv]`
pub async fn usage(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (from, to) = match span(&q) {
        Ok(s) => s,
        Err(e) => return from_query_error(e),
    };
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("format={other:?}: use json or csv"),
            )
        }
    };
    let r = run(&app, move |h, now| {
        let retention = h.retention;
        h.read(|c| Ok(query::usage(c, from, to, now, &retention)))
            .map_err(QueryError::from)?
    })
    .await;
    let u = match r {
        Ok(u) => u,
        Err(r) => return r,
    };
    if csv {
        let name = format!("attachment; filename=\"hmonitor-usage-{from}-{to}.csv\"");
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, name),
            ],
            query::usage_csv(&u),
        )
            .into_response()
    } else {
        Json(u).into_response()
    }
}
