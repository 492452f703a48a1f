//! `/api/live`: the browser feed. On connect a browser gets every host's latest frame, then each
//! frame as it arrives and up/down events, as binary `LiveEvent` protobuf messages.
//!
//! Every browser has its own task reading the hub's broadcast channel, so a slow browser only
//! delays itself. One that falls more than the channel's capacity behind is resynchronised from
//! the state map (latest frame per host wins); one that cannot take a frame within the write
//! deadline is dropped and may reconnect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::App;

/// Browsers send nothing but control frames; anything larger is refused by the socket.
const BROWSER_MAX_MESSAGE: usize = 4 * 1024;

/// Most frames written to one browser at once: enough to absorb a burst, few enough that one
/// write (about 200 KiB of 8-GPU reports) stays far inside the write deadline.
const MAX_BATCH: usize = 64;

pub async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(BROWSER_MAX_MESSAGE)
        // tungstenite zeroes its whole read buffer (128 KiB by default) on every read attempt,
        // and this task polls the browser's side after each frame it sends: with the default,
        // that memset was a third of the hub's CPU at 1,000 frames/s to 50 browsers. Browsers
        // send only control frames.
        .read_buffer_size(BROWSER_MAX_MESSAGE)
        .on_upgrade(move |socket| feed(app, socket))
}

async fn feed(app: App, socket: WebSocket) {
    let hub = app.hub.clone();
    let deadline = app.cfg.browser_write_timeout;
    hub.stats.browsers_connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    // Subscribe before taking the snapshot, so nothing falls between the two.
    let mut rx = hub.subscribe();
    let reason = async {
        send_all(&mut sink, hub.frames(), deadline).await?;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let mut lagged = false;
                    match event {
                        Ok(frame) => batch.push(frame),
                        Err(RecvError::Lagged(_)) => lagged = true,
                        Err(RecvError::Closed) => return Ok::<(), &'static str>(()),
                    }
                    // Frames already queued go out with this one: one write (one syscall, one
                    // deadline timer) per burst instead of one per frame. At 1,000 frames/s
                    // to 50 browsers that is most of the fan-out's cost.
                    while !lagged && batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(TryRecvError::Lagged(_)) => lagged = true,
                            // Empty; or Closed, which the next recv() reports.
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        send_all(&mut sink, batch.drain(..), deadline).await?;
                    }
                    if lagged {
                        hub.stats.browser_lagged.fetch_add(1, Ordering::Relaxed);
                        rx = rx.resubscribe();
                        send_all(&mut sink, hub.frames(), deadline).await?;
                    }
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
