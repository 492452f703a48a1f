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
use tokio::sync::broadcast::error::RecvError;

use crate::App;

/// Browsers send nothing but control frames; anything larger is refused by the socket.
const BROWSER_MAX_MESSAGE: usize = 4 * 1024;

pub async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(BROWSER_MAX_MESSAGE)
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
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Ok(frame) => send_all(&mut sink, [frame], deadline).await?,
                    Err(RecvError::Lagged(_)) => {
                        hub.stats.browser_lagged.fetch_add(1, Ordering::Relaxed);
                        rx = rx.resubscribe();
                        send_all(&mut sink, hub.frames(), deadline).await?;
                    }
                    Err(RecvError::Closed) => return Ok::<(), &'static str>(()),
                },
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
