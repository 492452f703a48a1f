//! `GET /api/gpus`: every GPU of the cluster with its free verdict, for `hmonitor status`,
//! `hmonitor free --anywhere`, `hmonitor wait --anywhere` and the page's "Free now" panel.
//! Viewers ask over HTTP; agents relay their users' questions over their connection
//! (`ClusterQuery`), and both get the same body from [`answer`].
//!
//! Parameters (all optional): `free=1` (only free GPUs, best first), `count=N` (with `free`:
//! only hosts with N free), `min_mem`, `max_util`, `free_mem`, `settle`, `model`, `host`,
//! `user`. Defaults: the page's (1 GiB, 5 %, the hub's `free_settle`).

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hmonitor_common::free::{GpuRow, Query};
use serde::Serialize;

use crate::state::Hub;
use crate::App;

/// The largest answer: 1,000 hosts of 8 GPUs with their processes take about 3 MiB.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

#[derive(Serialize)]
struct Body<'a> {
    generated_ms: u64,
    hosts: usize,
    gpus: &'a [GpuRow],
}

/// The JSON body for the query string `params`, or why not.
pub fn answer(hub: &Hub, params: &str) -> Result<Vec<u8>, String> {
    let mut q = Query::parse(params)?;
    if !params.split('&').any(|p| p.starts_with("settle=")) {
        q.criteria.settle = hub.default_criteria().settle;
    }
    let rows = hub.gpu_rows(&q);
    let body = Body {
        generated_ms: hmonitor_proto::unix_ms(std::time::SystemTime::now()),
        hosts: hub.len(),
        gpus: &rows,
    };
    let json = serde_json::to_vec(&body).map_err(|e| format!("cannot encode the answer: {e}"))?;
    if json.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "the answer is {} MiB (limit {} MiB): narrow it with host=, user= or free=1",
            json.len() >> 20,
            MAX_ANSWER_BYTES >> 20
        ));
    }
    Ok(json)
}

pub async fn gpus(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    // Off the async workers: over 10,000 hosts the answer takes tens of milliseconds.
    let hub = app.hub.clone();
    let built = tokio::task::spawn_blocking(move || answer(&hub, q.as_deref().unwrap_or(""))).await;
    match built {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(why)) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
