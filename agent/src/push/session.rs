//! One hub: connect (TCP, TLS, WebSocket upgrade with the token), hello, accepted, then
//! snapshots until the connection ends; then back off and connect again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hmonitor_proto::{agent_message, hub_message, AgentMessage, ClusterQuery, HubMessage};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::Connector;

use super::backoff::Backoff;
use super::conn::{ConnError, Counters, Stats, Ws};
use super::hub_log::HubLog;
use super::window::{InFlight, Window};
use super::writer::write_loop;
use super::{hello, hub_interval, stopped, HubUrl, Sample, Shared};
use crate::backlog::Backlog;

/// TCP connect, TLS and the WebSocket upgrade together: a hub that accepts TCP but never
/// answers must not hold the connection attempt forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// From the hello to the hub's Accepted or Refused.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending the Close frame at shutdown, and waiting for the hub's answer to it. Bounded so a
/// hub that stopped reading cannot hold up the agent's exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection accepted for this long counts as healthy: the next failure starts the backoff
/// from its shortest delay again. Shorter-lived connections (a hub that accepts and then drops
/// every agent) keep the delay growing.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A connection is dead after 3 intervals without a frame from the hub, but never sooner than
/// this: with sub-second intervals a busy machine's scheduling delays alone could exceed
/// 3 intervals and tear down healthy connections.
const DEAD_FLOOR: Duration = Duration::from_secs(1);

/// Largest frame accepted from a hub. Hub messages are a few bytes; a bigger one is a bug or an
/// attack, and must not make the agent allocate.
const MAX_HUB_MESSAGE: usize = 16 * 1024 * 1024 + 64 * 1024;

/// How one connection attempt ended.
pub(super) enum Ended {
    /// Shutdown: the Close frame went out (or could not, within its bound).
    Stopped,
    /// Never accepted.
    Failed(ConnError),
    Refused {
        reason: String,
        retry: bool,
    },
    /// Was accepted, then ended.
    Lost {
        accepted_for: Duration,
        why: ConnError,
        stats: Stats,
    },
}

/// Pushes to one hub for the life of the agent: connect, serve, back off, again.
pub(super) async fn hub_task(
    hub: HubUrl,
    shared: Arc<Shared>,
    samples: watch::Receiver<Option<Arc<Sample>>>,
    mut stop: watch::Receiver<bool>,
    backlog: Option<Arc<Backlog>>,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP);
    let mut log = HubLog::new(hub.to_string());
    loop {
        let delay = match session(
            &hub,
            &shared,
            samples.clone(),
            stop.clone(),
            &mut log,
            backlog.clone(),
        )
        .await
        {
            Ended::Stopped => return,
            Ended::Failed(why) => {
                let delay = backoff.next_delay();
                log.failed(&why, delay);
                delay
            }
            Ended::Refused { reason, retry } => {
                // A refusal that retrying cannot fix (bad token, unsupported protocol) waits
                // the longest delay: someone has to change a configuration first.
                let delay = if retry {
                    backoff.next_delay()
                } else {
                    backoff.longest_delay()
                };
                log.refused(&reason, retry, delay);
                delay
            }
            Ended::Lost {
                accepted_for,
                why,
                stats,
            } => {
                if accepted_for >= STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                log.lost(accepted_for, &why, stats, delay);
                delay
            }
        };
        tokio::select! {
            () = sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One connection: handshake, hello, accepted, then snapshots until it ends.
pub(super) async fn session(
    hub: &HubUrl,
    shared: &Shared,
    mut samples: watch::Receiver<Option<Arc<Sample>>>,
    mut stop: watch::Receiver<bool>,
    log: &mut HubLog,
    backlog: Option<Arc<Backlog>>,
) -> Ended {
    // The hello carries facts from a report: wait for the first one.
    let first = tokio::select! {
        r = samples.wait_for(Option::is_some) => match r {
            Ok(s) => s.clone(),
            Err(_) => return Ended::Failed(ConnError::NoSamples),
        },
        () = stopped(&mut stop) => return Ended::Stopped,
    };
    let Some(first) = first else {
        return Ended::Failed(ConnError::NoSamples);
    };

    let ws = tokio::select! {
        r = timeout(HANDSHAKE_TIMEOUT, connect(hub, shared)) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(ConnError::Ws(tungstenite::Error::Http(resp)))) => {
                return http_refusal(resp.status());
            }
            Ok(Err(e)) => return Ended::Failed(e),
            Err(_) => {
                let what = "WebSocket upgrade";
                return Ended::Failed(ConnError::Timeout { after: HANDSHAKE_TIMEOUT, what });
            }
        },
        () = stopped(&mut stop) => return Ended::Stopped,
    };
    let (mut sink, mut stream) = ws.split();

    let hello = Message::Binary(
        hello(&first.info, shared.interval, &shared.host_key)
            .encode_to_vec()
            .into(),
    );
    let handshake = async {
        sink.send(hello).await?;
        wait_accepted(&mut stream).await
    };
    let accepted = tokio::select! {
        r = timeout(ACCEPT_TIMEOUT, handshake) => match r {
            Ok(Ok(Reply::Accepted(a))) => a,
            Ok(Ok(Reply::Refused(r))) => {
                return Ended::Refused { reason: r.reason, retry: r.retry };
            }
            Ok(Err(e)) => return Ended::Failed(e),
            Err(_) => {
                let what = "hub's Accepted";
                return Ended::Failed(ConnError::Timeout { after: ACCEPT_TIMEOUT, what });
            }
        },
        () = stopped(&mut stop) => {
            close(sink, stream).await;
            return Ended::Stopped;
        }
    };
    let accepted_at = Instant::now();
    let mut interval = hub_interval(accepted.interval_ms, shared.interval);
    log.accepted(&accepted, interval);

    let (interval_tx, interval_rx) = watch::channel(interval);
    let (close_tx, close_rx) = oneshot::channel();
    // Relayed questions go out through the writer, which owns the socket.
    let (extra_tx, extra_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let _connected = shared.relay.connected();
    let mut pending: std::collections::HashMap<
        u64,
        tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    > = std::collections::HashMap::new();
    let mut next_query: u64 = 0;
    let counters = Arc::new(Counters::default());
    let inflight = Arc::new(InFlight::default());
    // The writer is a task of its own: a send blocked on a full socket must not stop this
    // loop from reading the hub's frames or from noticing that the hub went silent.
    let mut writer = tokio::spawn(write_loop(
        sink,
        samples,
        interval_rx,
        close_rx,
        shared.interval,
        counters.clone(),
        log.hub.clone(),
        backlog.clone().map(|b| Window::new(b, inflight.clone())),
        extra_rx,
    ));
    let mut last_heard = Instant::now();
    let why = loop {
        let dead_after = (interval * 3).max(DEAD_FLOOR);
        tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                let _ = close_tx.send(());
                if let Ok(Ok(Ok(sink))) = timeout(CLOSE_TIMEOUT, &mut writer).await {
                    close_answer(sink, stream).await;
                } else {
                    writer.abort();
                }
                return Ended::Stopped;
            }
            done = &mut writer => {
                break match done {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => ConnError::NoSamples,
                    Err(e) => ConnError::Writer(e),
                };
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                let msg = match frame {
                    Some(Ok(Message::Binary(bytes))) => match HubMessage::decode(bytes) {
                        Ok(m) => m,
                        Err(e) => break ConnError::Malformed(e),
                    },
                    Some(Ok(Message::Text(_))) => break ConnError::Text,
                    Some(Ok(Message::Close(frame))) => break ConnError::Closed(frame),
                    // Pings are answered by tungstenite; pongs and pings only prove liveness.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Err(e)) => break ConnError::Ws(e),
                    None => break ConnError::Closed(None),
                };
                match msg.msg {
                    Some(hub_message::Msg::SetInterval(s)) => {
                        let asked = hub_interval(s.interval_ms, shared.interval);
                        if asked != interval {
                            interval = asked;
                            let ms = interval.as_millis();
                            tracing::info!("hub {} asks for a snapshot every {ms} ms", log.hub);
                            interval_tx.send_replace(interval);
                        }
                    }
                    Some(hub_message::Msg::Ack(a)) => {
                        if let Some(b) = &backlog {
                            inflight.acked(a.seq, b);
                        }
                    }
                    Some(hub_message::Msg::Answer(a)) => {
                        if let Some(tx) = pending.remove(&a.id) {
                            let _ = tx.send(if a.error.is_empty() { Ok(a.json) } else { Err(a.error) });
                        }
                    }
                    Some(hub_message::Msg::Accepted(_)) => {
                        tracing::debug!("hub {} sent Accepted twice; ignored", log.hub);
                    }
                    Some(hub_message::Msg::Refused(r)) => {
                        writer.abort();
                        return Ended::Refused { reason: r.reason, retry: r.retry };
                    }
                    // A newer hub may send messages this agent does not know: skip them.
                    None => tracing::debug!("hub {} sent a message unknown here", log.hub),
                }
            }
            asked = shared.relay.next() => {
                let Some(asked) = asked else { continue };
                next_query += 1;
                let frame = AgentMessage {
                    msg: Some(agent_message::Msg::Query(ClusterQuery {
                        id: next_query,
                        params: asked.params,
                        kind: asked.kind.to_owned(),
                        user: asked.user,
                    })),
                };
                // Askers that gave up (or a hub that never answers) leave nothing behind.
                pending.retain(|_, tx| !tx.is_closed());
                if extra_tx.try_send(Bytes::from(frame.encode_to_vec())).is_ok() {
                    pending.insert(next_query, asked.answer);
                } else {
                    let _ = asked.answer.send(Err("the agent's connection is busy".into()));
                }
            }
            () = sleep_until(last_heard + dead_after) => {
                break ConnError::Silent(dead_after);
            }
        }
    };
    // The connection is being dropped; a writer still blocked in a send goes with it.
    writer.abort();
    Ended::Lost {
        accepted_for: accepted_at.elapsed(),
        why,
        stats: counters.stats(),
    }
}

/// An HTTP answer instead of the upgrade. A hub (or a proxy in front of it) may refuse a bad
/// token before the WebSocket exists.
pub(super) fn http_refusal(status: StatusCode) -> Ended {
    let why = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "the token was refused",
        StatusCode::NOT_FOUND => "no agent endpoint at this path",
        _ => return Ended::Failed(ConnError::Http(status)),
    };
    // Retrying cannot help until someone changes the agent's or the hub's configuration.
    Ended::Refused {
        reason: format!("HTTP {status} at the WebSocket upgrade: {why}"),
        retry: false,
    }
}

/// TCP, TLS (for wss://) and the WebSocket upgrade with the token header.
pub(super) async fn connect(hub: &HubUrl, shared: &Shared) -> Result<Ws, ConnError> {
    let request = request(hub, shared.auth.as_ref())?;
    let host = hub.uri().host().unwrap_or_default();
    // An IPv6 literal comes bracketed in a URL but not in a socket address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = hub
        .uri()
        .port_u16()
        .unwrap_or(if hub.is_tls() { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnError::Connect)?;
    // Snapshots are whole messages: send each at once rather than waiting to fill a segment.
    let _ = tcp.set_nodelay(true);
    if hub.is_tls() && shared.insecure {
        tracing::warn!("connecting to {hub}: {}", crate::tls::INSECURE_WARNING);
    }
    let connector = match (&shared.tls, hub.is_tls()) {
        (Some(cfg), true) => Connector::Rustls(cfg.clone()),
        _ => Connector::Plain,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_HUB_MESSAGE))
        .max_frame_size(Some(MAX_HUB_MESSAGE));
    let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(config),
        Some(connector),
    )
    .await
    .map_err(|e| match crate::tls::hint(&e) {
        Some(hint) => ConnError::Certificate(e, hint),
        None => ConnError::Ws(e),
    })?;
    Ok(ws)
}

pub(super) fn request(hub: &HubUrl, auth: Option<&HeaderValue>) -> Result<Request<()>, ConnError> {
    let mut request = hub.uri().clone().into_client_request()?;
    let headers = request.headers_mut();
    if let Some(auth) = auth {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("hmonitor/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(request)
}

pub(super) enum Reply {
    Accepted(hmonitor_proto::Accepted),
    Refused(hmonitor_proto::Refused),
}

/// Reads until the hub accepts or refuses the hello.
pub(super) async fn wait_accepted(stream: &mut SplitStream<Ws>) -> Result<Reply, ConnError> {
    loop {
        let bytes = match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => return Err(ConnError::Text),
            Some(Ok(Message::Close(frame))) => return Err(ConnError::Closed(frame)),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ConnError::Closed(None)),
        };
        match HubMessage::decode(bytes)?.msg {
            Some(hub_message::Msg::Accepted(a)) => return Ok(Reply::Accepted(a)),
            Some(hub_message::Msg::Refused(r)) => return Ok(Reply::Refused(r)),
            Some(hub_message::Msg::SetInterval(_)) => {
                return Err(ConnError::OutOfOrder("SetInterval"))
            }
            Some(hub_message::Msg::Ack(_)) => return Err(ConnError::OutOfOrder("Ack")),
            Some(hub_message::Msg::Answer(_)) => return Err(ConnError::OutOfOrder("Answer")),
            None => continue,
        }
    }
}

/// Shutdown before the hello was accepted: send Close and wait briefly for the answer.
pub(super) async fn close(mut sink: SplitSink<Ws, Message>, stream: SplitStream<Ws>) {
    let frame = Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "agent stopping".into(),
    }));
    if let Ok(Ok(())) = timeout(CLOSE_TIMEOUT, sink.send(frame)).await {
        close_answer(sink, stream).await;
    }
}

/// After our Close frame: the hub answers with its own and closes the TCP connection (the
/// server closes first, so the agent's side does not linger in TIME_WAIT). Bounded.
pub(super) async fn close_answer(sink: SplitSink<Ws, Message>, mut stream: SplitStream<Ws>) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    drop(sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_header_is_bearer_and_sensitive_and_the_url_is_untouched() {
        let hub: HubUrl = "ws://h:1/api/agent".parse().expect("parse");
        let mut auth = HeaderValue::from_static("Bearer s3cret");
        auth.set_sensitive(true);
        let req = request(&hub, Some(&auth)).expect("request");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer s3cret");
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{req:?}").contains("s3cret"));
        assert_eq!(req.uri().to_string(), "ws://h:1/api/agent");
    }
}
