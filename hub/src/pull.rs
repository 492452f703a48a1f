//! Pull targets: agents the hub polls with the seed's `HostMonitor.GetInfo`, for agents that
//! cannot dial out and for the seed's own agents.
//!
//! One task per target, so a slow or dead target never delays the others: each waits on its
//! own channel, bounded by its own connect and request timeouts.

use std::sync::Arc;
use std::time::Duration;

use hmonitor_proto::host_monitor_client::HostMonitorClient;
use hmonitor_proto::{HostSource, RequestInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

use crate::config::PullTarget;
use crate::state::{ConnId, Credential, Hub};

/// How long to wait for a TCP connection to a target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request never waits less than this, even with a short interval: an agent answers from its
/// latest snapshot, but a loaded network or host can still take a moment.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts one poller per target; each polls every `interval` until `shutdown` turns true (or
/// its sender is dropped). Answers larger than `max_frame_bytes` are refused like an oversized
/// pushed frame. Returns the tasks' handles so the caller can wait for them to end.
pub fn spawn_pollers(
    hub: Arc<Hub>,
    targets: Vec<PullTarget>,
    interval: Duration,
    max_frame_bytes: usize,
    ca: Option<tonic::transport::Certificate>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    targets
        .into_iter()
        .map(|target| {
            tokio::spawn(poll_target(
                hub.clone(),
                target,
                interval,
                max_frame_bytes,
                ca.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}

/// What the poller last saw, so that only changes are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    Up,
    Down,
}

async fn poll_target(
    hub: Arc<Hub>,
    target: PullTarget,
    interval: Duration,
    max_frame_bytes: usize,
    ca: Option<tonic::transport::Certificate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = target.id.as_str();
    let addr = target.addr.as_str();
    let endpoint = match crate::tls::pull_endpoint(addr, ca.as_ref()) {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(interval.max(MIN_REQUEST_TIMEOUT)),
        Err(e) => {
            // The configuration checks addresses, so this is not expected; keep the hub up.
            tracing::error!("pull target {id}: address {addr:?} is not usable: {e}");
            return;
        }
    };
    // Lazy: a target down at start is retried at every poll, not given up on.
    let channel: Channel = endpoint.connect_lazy();
    let mut client = HostMonitorClient::new(channel).max_decoding_message_size(max_frame_bytes);
    let request = RequestInfo {
        token: target.token.clone().unwrap_or_default(),
        reqtype: String::new(),
    };

    // One connection id for the poller's life: `claim` again after each outage with the same
    // id and credential, and a late `release` can never touch another connection's claim.
    let conn: ConnId = hub.next_conn_id();
    let mut claimed = false;
    let mut seen = Seen::Nothing;
    let mut seq: u64 = 0;
    let mut ticker = tokio::time::interval(interval);
    // A poll that took longer than the interval is followed by a full interval, not a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
                continue;
            }
        }
        let answer = tokio::select! {
            a = client.get_info(request.clone()) => a,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
                continue;
            }
        };
        match answer {
            Ok(resp) => {
                let mut info = resp.into_inner();
                // The hub's id for the host is the configured one (the seed's agents report no
                // id at all); what the agent calls itself stays visible as its hostname.
                info.id = target.id.clone();
                if !claimed {
                    match hub.claim(
                        id,
                        conn,
                        Credential::Internal,
                        HostSource::Pull,
                        addr,
                        interval,
                    ) {
                        Ok(()) => claimed = true,
                        Err(e) => {
                            // Another connection (a pushing agent) holds the id: keep polling,
                            // the id may be free later.
                            if seen != Seen::Down {
                                tracing::warn!("pull target {id} ({addr}) answers but: {e}");
                                seen = Seen::Down;
                            }
                            continue;
                        }
                    }
                }
                seq += 1;
                crate::history::record_unacked(hub.history(), id, interval, &info);
                if hub.ingest(id, conn, seq, info) {
                    if seen != Seen::Up {
                        tracing::info!("pull target {id} ({addr}) is up");
                        seen = Seen::Up;
                    }
                } else {
                    // Taken over by another connection since the claim: claim again next time.
                    claimed = false;
                }
            }
            Err(status) => {
                if claimed {
                    // Shown down, with the time of its last report.
                    hub.release(id, conn);
                    claimed = false;
                }
                if seen != Seen::Down {
                    tracing::warn!(
                        "pull target {id} ({addr}) does not answer: {}",
                        describe(&status)
                    );
                    seen = Seen::Down;
                } else {
                    tracing::debug!(
                        "pull target {id} ({addr}) still down: {}",
                        describe(&status)
                    );
                }
            }
        }
    }
}

/// A status in one line: the message, and the transport's cause when there is one (tonic's
/// message alone is often just "transport error").
fn describe(status: &tonic::Status) -> String {
    use std::error::Error;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use hmonitor_proto::host_monitor_server::{HostMonitor, HostMonitorServer};
    use hmonitor_proto::{HostInfo, HostStatus};
    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status};

    use super::*;

    /// A stand-in agent: answers a fixed report after `delay`, checking the token when set.
    struct FakeAgent {
        info: HostInfo,
        delay: Duration,
        token: Option<String>,
    }

    #[tonic::async_trait]
    impl HostMonitor for FakeAgent {
        async fn get_info(&self, req: Request<RequestInfo>) -> Result<Response<HostInfo>, Status> {
            if let Some(t) = &self.token {
                if req.get_ref().token != *t {
                    return Err(Status::unauthenticated("wrong token"));
                }
            }
            tokio::time::sleep(self.delay).await;
            Ok(Response::new(self.info.clone()))
        }
    }

    /// Serves `agent` on `listener` until the returned sender is dropped or sent to.
    fn serve(listener: TcpListener, agent: FakeAgent) -> tokio::sync::oneshot::Sender<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(HostMonitorServer::new(agent))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        tx
    }

    async fn fake(
        info: HostInfo,
        delay: Duration,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let stop = serve(
            l,
            FakeAgent {
                info,
                delay,
                token: None,
            },
        );
        (addr, stop)
    }

    /// An address nothing listens on (bound, then closed).
    async fn dead_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    }

    fn target(id: &str, addr: SocketAddr, token: Option<&str>) -> PullTarget {
        PullTarget {
            id: id.into(),
            addr: addr.to_string(),
            token: token.map(Into::into),
        }
    }

    async fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn status(hub: &Hub, id: &str) -> Option<i32> {
        hub.host(id).map(|h| h.status)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_target_is_up_with_its_report_and_a_dead_one_is_not() {
        let seed_report = HostInfo {
            hostname: "node7".into(),
            ..Default::default()
        };
        let (live, _stop) = fake(seed_report, Duration::ZERO).await;
        let dead = dead_addr().await;
        let hub = Hub::new(Duration::from_millis(200), &["dead".to_owned()]);
        let (tx, rx) = watch::channel(false);
        let tasks = spawn_pollers(
            hub.clone(),
            vec![target("node7", live, None), target("dead", dead, None)],
            Duration::from_millis(200),
            1 << 20,
            None,
            rx,
        );
        wait_for("node7 up", Duration::from_secs(10), || {
            hub.host("node7").is_some_and(|h| h.seq >= 2)
        })
        .await;
        let h = hub.host("node7").expect("node7");
        assert_eq!(h.status, HostStatus::Up as i32);
        assert_eq!(h.source, HostSource::Pull as i32);
        assert_eq!(h.addr, live.to_string());
        assert_eq!(h.interval_ms, 200);
        let info = h.info.expect("report");
        assert_eq!(info.hostname, "node7");
        // The seed's agents send no id: the target's id stands in.
        assert_eq!(info.id, "node7");
        assert_eq!(status(&hub, "dead"), Some(HostStatus::NeverSeen as i32));

        tx.send(true).expect("shutdown");
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("poller ends on shutdown")
                .expect("poller did not panic");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_target_does_not_delay_a_fast_one() {
        let (fast, _s1) = fake(HostInfo::default(), Duration::ZERO).await;
        let (slow, _s2) = fake(HostInfo::default(), Duration::from_secs(30)).await;
        let hub = Hub::new(Duration::from_millis(100), &[]);
        let (_tx, rx) = watch::channel(false);
        let start = Instant::now();
        let _tasks = spawn_pollers(
            hub.clone(),
            vec![target("slow", slow, None), target("fast", fast, None)],
            Duration::from_millis(100),
            1 << 20,
            None,
            rx,
        );
        wait_for("five reports from fast", Duration::from_secs(5), || {
            hub.host("fast").is_some_and(|h| h.seq >= 5)
        })
        .await;
        // Five polls at 100 ms, while the slow target has not answered once.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(hub.host("slow").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_that_stops_goes_down_and_one_that_starts_late_comes_up() {
        let (addr, stop) = fake(HostInfo::default(), Duration::ZERO).await;
        let late = dead_addr().await;
        let hub = Hub::new(Duration::from_millis(100), &[]);
        let (_tx, rx) = watch::channel(false);
        let _tasks = spawn_pollers(
            hub.clone(),
            vec![target("a", addr, None), target("late", late, None)],
            Duration::from_millis(100),
            1 << 20,
            None,
            rx,
        );
        wait_for("a up", Duration::from_secs(10), || {
            status(&hub, "a") == Some(HostStatus::Up as i32)
        })
        .await;
        drop(stop);
        wait_for("a down", Duration::from_secs(10), || {
            status(&hub, "a") == Some(HostStatus::Down as i32)
        })
        .await;
        let h = hub.host("a").expect("a");
        assert!(h.last_seen_ms > 0);
        assert!(h.info.is_some(), "the last report stays");

        // The late target's port was free; an agent starting on it is picked up.
        let listener = TcpListener::bind(late).await.expect("rebind the late port");
        let _stop_late = serve(
            listener,
            FakeAgent {
                info: HostInfo::default(),
                delay: Duration::ZERO,
                token: None,
            },
        );
        wait_for("late up", Duration::from_secs(10), || {
            status(&hub, "late") == Some(HostStatus::Up as i32)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_targets_token_is_sent_and_a_wrong_one_keeps_it_down() {
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..2 {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(l.local_addr().expect("addr"));
            stops.push(serve(
                l,
                FakeAgent {
                    info: HostInfo::default(),
                    delay: Duration::ZERO,
                    token: Some("right".into()),
                },
            ));
        }
        let hub = Hub::new(Duration::from_millis(100), &["wrong".to_owned()]);
        let (_tx, rx) = watch::channel(false);
        let _tasks = spawn_pollers(
            hub.clone(),
            vec![
                target("right", addrs[0], Some("right")),
                target("wrong", addrs[1], Some("nope")),
            ],
            Duration::from_millis(100),
            1 << 20,
            None,
            rx,
        );
        wait_for("right up", Duration::from_secs(10), || {
            status(&hub, "right") == Some(HostStatus::Up as i32)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(status(&hub, "wrong"), Some(HostStatus::NeverSeen as i32));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_answer_is_refused() {
        let big = HostInfo {
            err: "x".repeat(8192),
            ..Default::default()
        };
        let (addr, _stop) = fake(big, Duration::ZERO).await;
        let hub = Hub::new(Duration::from_millis(100), &["big".to_owned()]);
        let (_tx, rx) = watch::channel(false);
        let _tasks = spawn_pollers(
            hub.clone(),
            vec![target("big", addr, None)],
            Duration::from_millis(100),
            4096,
            None,
            rx,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(status(&hub, "big"), Some(HostStatus::NeverSeen as i32));
    }
}
