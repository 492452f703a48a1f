//! A connection's writer: the newest snapshot at most once per interval, pings, and the
//! backlog's samples as backfill within a window of unacknowledged frames.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::conn::{ConnError, Counters, Ws};
use super::window::Window;
use super::Sample;

pub(super) type WriteResult = Result<SplitSink<Ws, Message>, ConnError>;

/// Sends snapshots (at most one per interval, always the newest) and pings until told to
/// close, or until a send fails. Returns the sink after a clean Close so the caller can wait
/// for the hub's answer.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut samples: watch::Receiver<Option<Arc<Sample>>>,
    mut interval_rx: watch::Receiver<Duration>,
    mut close: oneshot::Receiver<()>,
    sampling: Duration,
    counters: Arc<Counters>,
    hub: String,
    mut window: Option<Window>,
    mut extra: tokio::sync::mpsc::Receiver<Bytes>,
) -> WriteResult {
    let mut interval = *interval_rx.borrow_and_update();
    let mut ping = ping_timer(interval);
    let mut last_sent: Option<(u64, Instant)> = None;
    // The newest snapshot goes out at once: the hub has a full report as soon as it accepts.
    let mut pending = true;
    let mut next_send = Instant::now();
    loop {
        let room = window.as_ref().filter(|w| w.paused()).map(Window::room);
        tokio::select! {
            biased;
            _ = &mut close => {
                sink.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "agent stopping".into(),
                })))
                .await?;
                return Ok(sink);
            }
            changed = interval_rx.changed() => {
                if changed.is_err() {
                    // The reader is gone, and with it the connection.
                    return Ok(sink);
                }
                interval = *interval_rx.borrow_and_update();
                ping = ping_timer(interval);
                // The new gap counts from the last send.
                let gap = send_gap(interval, sampling);
                next_send = last_sent.map_or_else(Instant::now, |(_, at)| at + gap);
            }
            _ = ping.tick() => {
                sink.send(Message::Ping(Bytes::new())).await?;
            }
            Some(frame) = extra.recv() => {
                sink.send(Message::Binary(frame)).await?;
            }
            changed = samples.changed(), if !pending => {
                changed.map_err(|_| ConnError::NoSamples)?;
                pending = true;
            }
            () = sleep_until(next_send), if pending => {
                pending = false;
                let sample = samples.borrow_and_update().clone();
                let Some(sample) = sample else { continue };
                if last_sent.is_some_and(|(seq, _)| seq >= sample.seq) {
                    continue;
                }
                let started = Instant::now();
                if let Some(w) = &mut window {
                    w.live(sample.seq, interval == sampling);
                }
                sink.send(Message::Binary(sample.frame.clone())).await?;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                last_sent = Some((sample.seq, started));
                // Samples that came and went while this send was in progress are lost to this
                // hub (only the newest is kept): count them.
                let newest = samples.borrow().as_ref().map_or(sample.seq, |s| s.seq);
                let missed = newest.saturating_sub(sample.seq + 1);
                if missed > 0 && counters.dropped.fetch_add(missed, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "hub {hub} is slow to take snapshots: dropping old ones, \
                         sending only the newest"
                    );
                }
                next_send = started + send_gap(interval, sampling);
            }
            () = async { match room { Some(r) => r.await, None => std::future::pending().await } },
                if last_sent.is_some() =>
            {
                if let Some(w) = &mut window {
                    w.resume();
                }
            }
            () = std::future::ready(()), if window.as_ref().is_some_and(Window::active) => {
                let (Some(w), Some((live, _))) = (&mut window, last_sent) else { continue };
                for frame in w.next(live, interval == sampling) {
                    sink.send(Message::Binary(frame)).await?;
                }
                if let Some(n) = w.finished_run() {
                    tracing::info!("hub {hub}: {n} samples sent as backfill");
                }
            }
        }
    }
}

/// The shortest time between two sends. Samples come on the sampling clock, so a send interval
/// can only be met to the nearest sample: the gate opens half a sampling interval early, and the
/// first sample after it goes out. With the hub's interval equal to the agent's own, every
/// sample is sent as it comes, and jitter in the sampling clock never skips one.
pub(super) fn send_gap(interval: Duration, sampling: Duration) -> Duration {
    interval.saturating_sub(sampling / 2)
}

pub(super) fn ping_timer(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a long blocked send, one ping is enough; a burst of catch-up pings is not.
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_follow_the_nearest_sample_to_the_asked_interval() {
        let sampling = Duration::from_millis(200);
        // Same as the sampling interval: every sample, even one that comes a little early.
        assert_eq!(send_gap(sampling, sampling), Duration::from_millis(100));
        // Three samples' worth: the third sample after a send opens the gate.
        assert_eq!(
            send_gap(Duration::from_millis(600), sampling),
            Duration::from_millis(500)
        );
        // Faster than sampling: every sample as it comes.
        assert_eq!(
            send_gap(Duration::from_millis(100), sampling),
            Duration::ZERO
        );
    }
}
