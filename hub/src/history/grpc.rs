//! The seed's `History.GetHistory` on the hub's gRPC address.
//!
//! `HistReq.id` takes the same ids as `/api/history` (`<host>`, `<host>/gpu<N>`, a GPU UUID,
//! `user:<name>`, `cluster`), `type` the metric, `timestamp` the start (Unix ms; 0 = one hour
//! ago); the end is now. The answer comes from the tier that fits the span: `t` holds the
//! points' times (Unix ms), `v` their means rounded to whole units of the metric (the seed's
//! field is an integer); a point without a reading is left out, never sent as 0.
//!
//! `HistReq` has no token field: when the hub has a viewer token, callers send it as gRPC
//! metadata `authorization: Bearer <token>`.

use std::sync::Arc;
use std::time::SystemTime;

use hmonitor_common::auth::{self, TokenGate};
use hmonitor_proto::history_server::History as HistoryService;
use hmonitor_proto::{unix_ms, HistReq, HistResp};
use tonic::{Request, Response, Status};

use super::query::{self, QueryError};
use super::History;

pub struct HistoryFacade {
    /// `None`: this hub keeps no history.
    history: Option<Arc<History>>,
    viewers: TokenGate,
}

impl HistoryFacade {
    pub fn new(history: Option<Arc<History>>, viewer_token: Option<String>) -> Self {
        Self {
            history,
            viewers: TokenGate::new(viewer_token),
        }
    }
}

fn status(e: QueryError) -> Status {
    match e {
        QueryError::NotFound(m) => Status::not_found(m),
        QueryError::Invalid(m) => Status::invalid_argument(m),
        QueryError::Store(e) => Status::internal(format!("history store: {e}")),
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryFacade {
    async fn get_history(&self, req: Request<HistReq>) -> Result<Response<HistResp>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer);
        if !self.viewers.allows(given) {
            return Err(Status::unauthenticated(
                "viewer token missing or wrong (send metadata authorization: Bearer <token>)",
            ));
        }
        let Some(history) = self.history.clone() else {
            return Err(Status::unavailable("this hub keeps no history"));
        };
        let r = req.into_inner();
        let now = i64::try_from(unix_ms(SystemTime::now())).unwrap_or(i64::MAX);
        let from = if r.timestamp == 0 {
            now - 3_600_000
        } else {
            i64::try_from(r.timestamp).map_err(|_| {
                Status::invalid_argument(format!(
                    "timestamp {} is not a time in Unix milliseconds",
                    r.timestamp
                ))
            })?
        };
        if from >= now {
            return Err(Status::invalid_argument(format!(
                "timestamp {from} is not in the past (Unix milliseconds; now is {now})"
            )));
        }
        let (id, metric) = (r.id, r.r#type);
        let retention = history.retention;
        let series = tokio::task::spawn_blocking(move || {
            history
                .read(|c| Ok(query::series(c, &id, &metric, from, now, now, &retention)))
                .map_err(QueryError::from)?
        })
        .await
        .map_err(|e| Status::internal(format!("query failed: {e}")))?
        .map_err(status)?;
        let mut out = HistResp::default();
        for (t, v) in series.t.iter().zip(&series.mean) {
            if let Some(v) = v {
                out.t.push(u64::try_from(*t).unwrap_or_default());
                out.v.push(v.max(0.0).round() as u64);
            }
        }
        Ok(Response::new(out))
    }
}
