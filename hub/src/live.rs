//! `/api/live`: the browser feed. On connect a browser gets every host's latest frame, then each
//! frame as it arrives and up/down events, as binary `LiveEvent` protobuf messages.
//!
//! `/api/live?batch=MS` sends the same events gathered over up to MS milliseconds in one
//! `LiveBatch` message each. A page showing 500 hosts then gets a few messages a second
//! instead of five hundred, and the browser's network stack and the page's feed worker
//! handle a few messages instead of a message per host (about half the worker's CPU at 500
//! hosts was per-message overhead).
//!
//! Every browser has its own task reading the hub's broadcast channel, so a slow browser only
//! delays itself. One that falls more than the channel's capacity behind is resynchronised from
//! the state map (latest frame per host wins); one that cannot take a frame within the write
//! deadline is dropped and may reconnect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use prost::encoding::{encode_key, encode_varint, WireType};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::App;

/// Browsers send nothing but control frames; anything larger is refused by the socket.
const BROWSER_MAX_MESSAGE: usize = 4 * 1024;

/// Most frames written to one browser at once: enough to absorb a burst, few enough that one
/// write (about 200 KiB of 8-GPU reports) stays far inside the write deadline.
const MAX_BATCH: usize = 64;

/// Longest time `?batch=` may gather events: beyond a second the page is no longer live.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// Most events in one `LiveBatch` (500 hosts' reports in 250 ms are about 125): one message
/// stays a few MiB at most, far inside the write deadline.
const MAX_BATCH_EVENTS: usize = 1024;

#[derive(Deserialize)]
pub struct LiveParams {
    /// Milliseconds over which to gather events into one `LiveBatch` message.
    batch: Option<u64>,
}

pub async fn upgrade(
    State(app): State<App>,
    Query(params): Query<LiveParams>,
    ws: WebSocketUpgrade,
) -> Response {
    let linger = match params.batch.map(Duration::from_millis) {
        Some(d) if d > MAX_LINGER => {
            let why = format!(
                "batch={} ms: at most {} ms",
                d.as_millis(),
                MAX_LINGER.as_millis()
            );
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
        other => other,
    };
    ws.max_message_size(BROWSER_MAX_MESSAGE)
        // tungstenite zeroes its whole read buffer (128 KiB by default) on every read attempt,
        // and this task polls the browser's side after each frame it sends: with the default,
        // that memset was a third of the hub's CPU at 1,000 frames/s to 50 browsers. Browsers
        // send only control frames.
        .read_buffer_size(BROWSER_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let framing = linger.map_or(Framing::Each, Framing::Batched);
            feed(app, socket, framing)
        })
}

/// How events go to one browser.
#[derive(Clone, Copy)]
enum Framing {
    /// A `LiveEvent` per message.
    Each,
    /// `LiveBatch` messages of the events of up to this long.
    Batched(Duration),
}

async fn feed(app: App, socket: WebSocket, framing: Framing) {
    let hub = app.hub.clone();
    let deadline = app.cfg.browser_write_timeout;
    hub.stats.browsers_connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    // Subscribe before taking the snapshot, so nothing falls between the two.
    let mut rx = hub.subscribe();
    let stopping = app.stop.wait();
    tokio::pin!(stopping);
    let reason = async {
        send(&mut sink, framing, hub.frames(), deadline).await?;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Batched: when the events waiting go out (`linger` after the oldest of them came).
        let mut due: Option<Instant> = None;
        loop {
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = rx.recv() => {
                    let mut lagged = false;
                    match event {
                        Ok(item) => batch.extend(hub.resolve(item)),
                        Err(RecvError::Lagged(_)) => lagged = true,
                        Err(RecvError::Closed) => return Ok::<(), &'static str>(()),
                    }
                    let now = match framing {
                        Framing::Each => {
                            // Frames already queued go out with this one: one write (one
                            // syscall, one deadline timer) per burst instead of one per frame.
                            // At 1,000 frames/s to 50 browsers that is most of the fan-out's cost.
                            while !lagged && batch.len() < MAX_BATCH {
                                match rx.try_recv() {
                                    Ok(item) => batch.extend(hub.resolve(item)),
                                    Err(TryRecvError::Lagged(_)) => lagged = true,
                                    // Empty; or Closed, which the next recv() reports.
                                    Err(_) => break,
                                }
                            }
                            true
                        }
                        Framing::Batched(linger) => {
                            due.get_or_insert_with(|| Instant::now() + linger);
                            batch.len() >= MAX_BATCH_EVENTS
                        }
                    };
                    if lagged {
                        // Fell behind the channel: what was waiting, then every host's latest
                        // frame from the state map.
                        hub.stats.browser_lagged.fetch_add(1, Ordering::Relaxed);
                        rx = rx.resubscribe();
                        batch.extend(hub.frames());
                    }
                    if (now || lagged) && !batch.is_empty() {
                        due = None;
                        send(&mut sink, framing, batch.drain(..), deadline).await?;
                    }
                }
                () = wait => {
                    due = None;
                    send(&mut sink, framing, batch.drain(..), deadline).await?;
                }
                // The hub is stopping: say so (1001), the page reconnects to the next one.
                () = &mut stopping => {
                    let bye = CloseFrame { code: 1001, reason: "the hub is stopping".into() };
                    let _ = tokio::time::timeout(deadline, sink.send(Message::Close(Some(bye)))).await;
                    return Ok(());
                }
                // The browser's side: only close (or an error) matters.
                msg = stream.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    .await;
    if let Err(why) = reason {
        hub.stats.browsers_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("browser dropped: {why}");
    }
    hub.stats.browsers_connected.fetch_sub(1, Ordering::Relaxed);
}

/// Writes `frames` (encoded `LiveEvent`s) to the browser as `framing` says.
async fn send<S>(
    sink: &mut S,
    framing: Framing,
    frames: impl IntoIterator<Item = Bytes>,
    deadline: Duration,
) -> Result<(), &'static str>
where
    S: SinkExt<Message> + Unpin,
{
    match framing {
        Framing::Each => send_all(sink, frames, deadline).await,
        Framing::Batched(_) => {
            // `LiveBatch` messages of MAX_BATCH_EVENTS at most (a snapshot of many hosts).
            let mut frames = frames.into_iter().peekable();
            let mut messages = Vec::new();
            while frames.peek().is_some() {
                messages.push(live_batch(frames.by_ref().take(MAX_BATCH_EVENTS)));
            }
            send_all(sink, messages, deadline).await
        }
    }
}

/// A `LiveBatch` from encoded `LiveEvent`s: each is field 1, length-delimited, as it is.
fn live_batch(frames: impl IntoIterator<Item = Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    for f in frames {
        out.reserve(f.len() + 11);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(f.len() as u64, &mut out);
        out.put_slice(&f);
    }
    out.freeze()
}

async fn send_all<S>(
    sink: &mut S,
    frames: impl IntoIterator<Item = Bytes>,
    deadline: Duration,
) -> Result<(), &'static str>
where
    S: SinkExt<Message> + Unpin,
{
    let write = async {
        for frame in frames {
            sink.feed(Message::Binary(frame))
                .await
                .map_err(|_| "send failed")?;
        }
        sink.flush().await.map_err(|_| "send failed")
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err("write deadline passed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmonitor_proto::{live_event, LiveBatch, LiveEvent};
    use prost::Message as _;

    #[test]
    fn a_batch_decodes_to_the_same_events_in_order() {
        let events: Vec<LiveEvent> = (0..300)
            .map(|i| LiveEvent {
                event: Some(live_event::Event::Removed(format!("host-{i}"))),
                sent_ms: i,
            })
            .collect();
        let bytes = live_batch(events.iter().map(|e| Bytes::from(e.encode_to_vec())));
        let batch = LiveBatch::decode(bytes).expect("a LiveBatch");
        assert_eq!(batch.events, events);
    }
}
