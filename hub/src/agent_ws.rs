//! `/api/agent`: agents dial out to the hub and push `AgentMessage` frames.
//!
//! The token is checked on the upgrade request, before any WebSocket exists: a wrong or
//! missing token is a plain 401 with one log line and no state. After the upgrade, the first
//! frame must be a hello; every later frame a snapshot. A frame that is too large, malformed,
//! or of the wrong kind closes that one connection with a reason; the hub and every other
//! connection carry on.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmonitor_common::auth;
use hmonitor_proto::{
    agent_message, hub_message, Accepted, Ack, AgentHello, AgentMessage, ClusterAnswer,
    ClusterQuery, HostSource, HubMessage, PushProtocol, Refused,
};
use prost::Message as _;

use crate::close::Close;
use crate::history;
use crate::identity::{Identity, IdentityError, Verdict};
use crate::state::{ClaimError, ConnId, Credential, DOWN_AFTER_INTERVALS};
use crate::App;

/// Backfill frames allowed per second, as a multiple of the live frame limit.
const BACKFILL_RATE_FACTOR: u32 = 20;

/// Cluster queries one agent may relay per second (each one reads every host).
const QUERIES_PER_SEC: u32 = 4;

/// How long a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent credentials the hub accepts.
#[derive(Debug, Clone, Default)]
pub struct AgentAuth {
    pub enrollment: Option<String>,
    /// (host id, token)
    pub hosts: Vec<(String, String)>,
}

impl AgentAuth {
    /// Which credential `Authorization: Bearer <token>` presents, if any. Every token is
    /// compared in constant time, and all of them are compared, so timing tells nothing.
    pub fn check(&self, headers: &HeaderMap) -> Option<Credential> {
        let given = auth::bearer_header(headers)?.as_bytes();
        let hosts = self
            .hosts
            .iter()
            .map(|(id, token)| (id.as_str(), token.as_str()));
        let host = auth::find_token(given, hosts).map(|id| Credential::Host(id.to_owned()));
        // Compared even when a host token matched, so timing does not tell which kind it was.
        let enrolled = self
            .enrollment
            .as_deref()
            .is_some_and(|e| auth::token_matches(given, e.as_bytes()));
        host.or(enrolled.then_some(Credential::Enrollment(None)))
    }
}

pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(credential) = app.auth.check(&headers) else {
        app.hub
            .stats
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        app.refusals.warn(&format!("token:{}", peer.ip()), || {
            format!("agent connection from {peer} refused: missing or wrong token")
        });
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong agent token (send Authorization: Bearer <HMON_TOKEN>)\n",
        )
            .into_response();
    };
    let max = app.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        // Agents send a few KiB per second: small buffers keep 10,000 connections cheap.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            session(app, socket, peer, credential).await;
        })
}

async fn send(socket: &mut WebSocket, msg: hub_message::Msg) -> bool {
    let bytes = HubMessage { msg: Some(msg) }.encode_to_vec();
    socket.send(Message::Binary(bytes.into())).await.is_ok()
}

/// A close frame's reason holds at most 123 bytes (RFC 6455); a longer one would make the
/// close itself fail. The whole reason travels in the `Refused` frame before it.
const MAX_CLOSE_REASON: usize = 123;

async fn close(socket: &mut WebSocket, why: &Close) {
    let Some(code) = why.code() else { return };
    let mut reason = why.to_string();
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON - 3;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Refuses the connection with a reason the agent logs, then closes it.
async fn refuse(socket: &mut WebSocket, reason: &str, retry: bool) {
    send(
        socket,
        hub_message::Msg::Refused(Refused {
            reason: reason.to_owned(),
            retry,
        }),
    )
    .await;
    close(socket, &Close::Policy(reason.to_owned())).await;
}

/// Reads one agent message; `Err` says why to close (`Close::Clean` when the agent closed).
fn decode(msg: Message, max: usize) -> Result<Option<agent_message::Msg>, Close> {
    match msg {
        Message::Binary(bytes) => {
            if bytes.len() > max {
                return Err(Close::TooBig { limit: max });
            }
            AgentMessage::decode(bytes.as_ref())
                .map(|m| m.msg)
                .map_err(|e| Close::Invalid(format!("malformed frame: {e}")))
        }
        Message::Text(_) => Err(Close::Protocol(
            "text frame: agents send binary protobuf AgentMessage frames".to_owned(),
        )),
        // Pings are answered by the WebSocket layer itself.
        Message::Ping(_) | Message::Pong(_) => Ok(None),
        Message::Close(_) => Err(Close::Clean),
    }
}

async fn session(app: App, mut socket: WebSocket, peer: SocketAddr, credential: Credential) {
    let hub = app.hub.clone();
    let max = app.cfg.max_frame_bytes;
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(msg))) => match decode(msg, max) {
            Ok(Some(agent_message::Msg::Hello(h))) => h,
            Ok(_) => {
                refuse(&mut socket, "the first frame must be a hello", true).await;
                return;
            }
            Err(Close::Clean) => return,
            Err(why) => {
                tracing::warn!("agent {peer}: {why}");
                hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                close(&mut socket, &why).await;
                return;
            }
        },
        Ok(Some(Err(e))) => {
            let why = Close::from_read_error(e, max);
            tracing::warn!("agent {peer}: {why}");
            hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
            close(&mut socket, &why).await;
            return;
        }
        Ok(None) => return,
        Err(_) => {
            refuse(&mut socket, "no hello within 10 s", true).await;
            return;
        }
    };

    let conn = hub.next_conn_id();
    let Some(id) = admit(&app, &mut socket, &hello, credential, conn, peer).await else {
        return;
    };
    hub.stats.agents_connected.fetch_add(1, Ordering::Relaxed);
    tracing::info!("agent {id} connected from {peer}");
    let rate = app.cfg.limits.agent_frames_per_sec;
    let why = stream(&app, &mut socket, &id, conn, max, rate).await;
    hub.release(&id, conn);
    hub.stats.agents_connected.fetch_sub(1, Ordering::Relaxed);
    match why {
        Close::Clean => tracing::info!("agent {id} ({peer}) disconnected"),
        Close::GoingAway => {
            tracing::debug!("agent {id} ({peer}): the hub is stopping");
            close(&mut socket, &why).await;
        }
        why => {
            tracing::warn!("agent {id} ({peer}) closed: {why}");
            close(&mut socket, &why).await;
        }
    }
}

/// Checks the hello and claims the host id; returns it, or refuses the connection.
async fn admit(
    app: &App,
    socket: &mut WebSocket,
    hello: &AgentHello,
    credential: Credential,
    conn: ConnId,
    peer: SocketAddr,
) -> Option<String> {
    let hub = &app.hub;
    if hello.protocol_version != PushProtocol::V1 as u32 {
        let reason = format!(
            "unsupported protocol version {} (this hub speaks {})",
            hello.protocol_version,
            PushProtocol::V1 as u32
        );
        tracing::warn!("agent {peer}: {reason}");
        refuse(socket, &reason, false).await;
        return None;
    }
    let id = hello.host_id.clone();
    if let Credential::Host(owner) = &credential {
        if *owner != id {
            let reason = format!("this token belongs to host {owner:?}, not {id:?}");
            tracing::warn!("agent {peer}: {reason}");
            refuse(socket, &reason, false).await;
            return None;
        }
    }
    if let Err(reason) = hmonitor_proto::limits::check_hello(hello) {
        hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
        app.refusals.warn(&format!("hello:{}", peer.ip()), || {
            format!("agent {peer} refused: {reason}")
        });
        refuse(socket, &reason, false).await;
        return None;
    }
    // With the shared token, the id must not be reserved, and must be pinned to this agent's
    // host key (or be pinned to it now: trust on first use).
    let (credential, to_pin) = match credential {
        Credential::Enrollment(_) => {
            let checked = Identity::digest(&hello.host_key).and_then(|digest| {
                app.identity
                    .check_enrolled(&id, digest)
                    .map(|verdict| (digest, verdict))
            });
            match checked {
                Ok((digest, verdict)) => (
                    Credential::Enrollment(digest),
                    match verdict {
                        Verdict::New(d) => Some(d),
                        Verdict::Known | Verdict::Unpinned => None,
                    },
                ),
                Err(e) => {
                    hub.stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    // One line per id (and per minute): an impostor retrying does not flood
                    // the journal.
                    app.refusals
                        .warn(&format!("id:{id}"), || format!("agent {peer} refused: {e}"));
                    refuse(socket, &e.to_string(), false).await;
                    return None;
                }
            }
        }
        other => (other, None),
    };
    let interval = hmonitor_proto::limits::clamp_interval(hello.interval_ms);
    let addr = peer.to_string();
    match hub.claim(
        &id,
        conn,
        credential.clone(),
        HostSource::Push,
        &addr,
        interval,
    ) {
        Ok(()) => {}
        Err(e) => {
            hub.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            app.refusals.warn(&format!("claim:{id}"), || {
                format!("agent {peer} refused: {e}")
            });
            // Taken: the other connection may go. Full: an admin must act first, so the agent
            // waits its longest delay.
            let retry = matches!(e, ClaimError::Taken(_));
            refuse(socket, &e.to_string(), retry).await;
            return None;
        }
    }
    if let Some(digest) = to_pin {
        if let Err(e) = app.identity.pin(&id, digest, &addr) {
            hub.release(&id, conn);
            tracing::warn!("agent {peer} refused: {e}");
            let retry = !matches!(e, IdentityError::Pinned(_));
            refuse(socket, &e.to_string(), retry).await;
            return None;
        }
    }
    let accepted = hub_message::Msg::Accepted(Accepted {
        host_id: id.clone(),
        hub_version: env!("CARGO_PKG_VERSION").to_owned(),
        interval_ms: 0,
    });
    if !send(socket, accepted).await {
        hub.release(&id, conn);
        return None;
    }
    Some(id)
}

/// A sample's time must be within `skew` of the hub's clock (backfill may be older, never
/// newer). Live samples also record the agent's clock skew for the page and `/metrics`.
fn check_sample_time(
    hub: &crate::state::Hub,
    id: &str,
    sample_ms: u64,
    backfill: bool,
    skew: Duration,
) -> Result<(), String> {
    if sample_ms == 0 {
        // Not stamped (a hand-made client): history uses the arrival time instead.
        return Ok(());
    }
    let now = hmonitor_proto::unix_ms(std::time::SystemTime::now());
    let diff = i64::try_from(sample_ms)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(now).unwrap_or(i64::MAX));
    if !backfill {
        hub.note_clock_skew(id, diff);
    }
    let limit = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
    let too_far = if backfill {
        diff > limit
    } else {
        diff.abs() > limit
    };
    if too_far {
        let (how, dir) = if diff > 0 {
            (diff, "ahead of")
        } else {
            (-diff, "behind")
        };
        let how = humantime::format_duration(Duration::from_secs(how.unsigned_abs() / 1000));
        return Err(format!(
            "sample_ms is {how} {dir} the hub's clock (limit ±{}); set the host's clock (NTP)",
            humantime::format_duration(skew)
        ));
    }
    Ok(())
}

/// Receives snapshots until the connection ends, or the hub stops; returns why it ended.
async fn stream(
    app: &App,
    socket: &mut WebSocket,
    id: &str,
    conn: ConnId,
    max: usize,
    rate: u32,
) -> Close {
    let hub = &app.hub;
    let stopping = app.stop.wait();
    tokio::pin!(stopping);
    // As claimed: the agent's own interval, clamped to the contract's range.
    let interval = hub.interval_of(id);
    let skew = app.cfg.max_clock_skew;
    // The agent pings every interval: silence for 3 intervals means a dead (half-open) peer.
    let silence = interval * DOWN_AFTER_INTERVALS;
    let mut bucket = crate::limits::TokenBucket::per_second(rate);
    let mut backfill_bucket =
        crate::limits::TokenBucket::per_second(rate.saturating_mul(BACKFILL_RATE_FACTOR));
    let mut query_bucket = crate::limits::TokenBucket::per_second(QUERIES_PER_SEC);
    // The writer raises this to the newest seq it has committed; each rise is acknowledged.
    let (committed, mut acks) = tokio::sync::watch::channel(history::Committed::default());
    let committed = Arc::new(committed);
    let recoveries = || {
        hub.history()
            .map_or(0, |h| h.stats.recoveries.load(Ordering::Relaxed))
    };
    // Set when a sample of this connection could not be stored: the store's recovery count then.
    let mut failed_at: Option<u64> = None;
    loop {
        if failed_at.is_some_and(|r| recoveries() > r) {
            return Close::TryAgain(
                "history is writing again: send the unacknowledged samples again".into(),
            );
        }
        let msg = tokio::select! {
            r = tokio::time::timeout(silence, socket.recv()) => r,
            () = &mut stopping => return Close::GoingAway,
            changed = acks.changed() => {
                if changed.is_ok() {
                    let c = *acks.borrow_and_update();
                    if c.failed {
                        // Nothing after the failed sample may be acknowledged, but live
                        // monitoring goes on: the agent keeps every unacknowledged sample in
                        // its backlog, and is asked to reconnect (and send them again) once
                        // the store writes again.
                        if failed_at.is_none() {
                            failed_at = Some(recoveries());
                        }
                        continue;
                    }
                    if !send(socket, hub_message::Msg::Ack(Ack { seq: c.seq })).await {
                        return Close::Clean;
                    }
                }
                continue;
            }
        };
        let msg = match msg {
            Err(_) => return Close::Policy("nothing received for 3 intervals".into()),
            Ok(None) => return Close::Clean,
            Ok(Some(Err(e))) => {
                hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                return Close::from_read_error(e, max);
            }
            Ok(Some(Ok(msg))) => msg,
        };
        let len = match &msg {
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        let decoded = decode(msg, max);
        // Every message counts, pings included: a flood of either costs the hub the same.
        // Backfill after an outage (up to an hour of samples, paced by the agent's window of
        // unacknowledged frames) draws on its own, larger budget, so catching up never trips
        // the limit meant for live frames.
        let is_backfill =
            matches!(&decoded, Ok(Some(agent_message::Msg::Snapshot(s))) if s.backfill);
        // A relayed question draws on its own budget first (its answer is the work), so a
        // host's users asking never use up the budget its live frames need.
        let is_query = matches!(&decoded, Ok(Some(agent_message::Msg::Query(_))));
        let allowed = if is_backfill {
            backfill_bucket.take()
        } else if is_query {
            true
        } else {
            bucket.take()
        };
        if !allowed {
            hub.stats
                .frames_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            let (what, limit) = if is_backfill {
                ("backfill frames", rate.saturating_mul(BACKFILL_RATE_FACTOR))
            } else {
                ("frames", rate)
            };
            return Close::Policy(format!("too many {what} (limit {limit}/s per agent)"));
        }
        match decoded {
            Ok(Some(agent_message::Msg::Snapshot(s))) => {
                hub.stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
                let mut info = s.info.unwrap_or_default();
                if let Err(reason) = hmonitor_proto::limits::check_host_info(&info) {
                    hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                    return Close::Policy(format!("frame refused: {reason}"));
                }
                if let Err(reason) = check_sample_time(hub, id, s.sample_ms, s.backfill, skew) {
                    hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                    return Close::Policy(reason);
                }
                info.id = id.to_owned();
                if let Some(reason) = history::record_pushed(
                    hub.history(),
                    id,
                    s.seq,
                    s.sample_ms,
                    interval,
                    &info,
                    &committed,
                ) {
                    return Close::TryAgain(reason);
                }
                // Backfilled samples are for history, never for live views.
                if s.backfill {
                    continue;
                }
                if !hub.ingest(id, conn, s.seq, info) {
                    return Close::Policy(
                        "this connection no longer holds the host id (a newer connection took \
                         it, or an admin forgot the host)"
                            .into(),
                    );
                }
            }
            Ok(Some(agent_message::Msg::Query(q))) => {
                let answer = if query_bucket.take() {
                    relay_answer(app, id, q).await
                } else if !bucket.take() {
                    hub.stats
                        .frames_rate_limited
                        .fetch_add(1, Ordering::Relaxed);
                    return Close::Policy(format!(
                        "too many cluster queries (limit {QUERIES_PER_SEC}/s per agent)"
                    ));
                } else {
                    ClusterAnswer {
                        id: q.id,
                        error: format!(
                            "too many cluster queries (limit {QUERIES_PER_SEC}/s per host)"
                        ),
                        ..Default::default()
                    }
                };
                if !send(socket, hub_message::Msg::Answer(answer)).await {
                    return Close::Clean;
                }
            }
            Ok(Some(agent_message::Msg::Hello(_))) => {
                hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                return Close::Protocol("a second hello on one connection".into());
            }
            Ok(None) => {}
            Err(Close::Clean) => return Close::Clean,
            Err(why) => {
                hub.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                return why;
            }
        }
    }
}

/// What `hmonitor wait --notify` sends (through its agent).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyParams {
    count: u32,
    #[serde(default)]
    min_mem: u64,
    #[serde(default)]
    anywhere: bool,
    expires_s: u64,
}

/// A gpus_free subscription for `user` of `host`, as its agent attests: told at the user's
/// contacts in `[users]`, for GPUs on `host` (or anywhere).
fn relayed_subscription(
    alerts: &crate::alerts::Alerts,
    host: &str,
    user: &str,
    params: &str,
) -> Result<Vec<u8>, String> {
    let p: NotifyParams =
        serde_json::from_str(params).map_err(|e| format!("bad subscription: {e}"))?;
    if user.is_empty() || user.len() > 64 || user.chars().any(char::is_control) {
        return Err("the agent named no valid user".to_owned());
    }
    let (sub, token) = alerts
        .subscribe(crate::alerts::NewSubscription {
            count: p.count,
            min_mem: p.min_mem,
            host: (!p.anywhere).then(|| host.to_owned()),
            target: crate::alerts::model::Target::User(user.to_owned()),
            expires: std::time::Duration::from_secs(p.expires_s),
            by: format!("{user}@{host} (hmonitor wait --notify)"),
        })
        .map_err(|e| e.to_string())?;
    let contacts = alerts.contact_names(user);
    serde_json::to_vec(&serde_json::json!({
        "id": sub.id,
        "cancel_token": token,
        "expires_ms": hmonitor_proto::unix_ms(std::time::SystemTime::now()) + p.expires_s * 1000,
        "contacts": contacts,
    }))
    .map_err(|e| e.to_string())
}

/// Answers a cluster query an agent relays for one of its users: the body `GET /api/gpus`
/// gives a viewer. Built off the connection's task (it reads every host).
async fn relay_answer(app: &App, host: &str, q: ClusterQuery) -> ClusterAnswer {
    let hub = app.hub.clone();
    let params = q.params;
    let built = match q.kind.as_str() {
        "" => tokio::task::spawn_blocking(move || crate::gpus_api::answer(&hub, &params)).await,
        "subscribe" => {
            let (alerts, host, user) = (app.alerts.clone(), host.to_owned(), q.user);
            tokio::task::spawn_blocking(move || {
                relayed_subscription(&alerts, &host, &user, &params)
            })
            .await
        }
        other => Ok(Err(format!(
            "unknown question kind {other:?} (a newer agent?)"
        ))),
    };
    match built {
        Ok(Ok(json)) => ClusterAnswer {
            id: q.id,
            json,
            error: String::new(),
        },
        Ok(Err(error)) => ClusterAnswer {
            id: q.id,
            error,
            ..Default::default()
        },
        Err(e) => ClusterAnswer {
            id: q.id,
            error: format!("the hub failed to answer: {e}"),
            ..Default::default()
        },
    }
}
