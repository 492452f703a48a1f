//! The push client: the real `hmonitor` binary on the NVML stand-in, dialling out to a small
//! fake hub (tokio-tungstenite on loopback) that records what it is sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hmonitor_proto::{
    agent_message, hub_message, AgentHello, AgentMessage, HubMessage, PushProtocol, Snapshot,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// How the fake hub answers a hello.
#[derive(Debug, Clone)]
enum Mode {
    Accept {
        interval_ms: u32,
    },
    Refuse {
        reason: &'static str,
        retry: bool,
    },
    /// Accepts, then never reads again (nor answers pings) and never closes: a half-open
    /// connection as a dead NAT mapping or a frozen hub leaves it.
    AcceptThenHang,
}

/// One connection as the fake hub saw it.
struct Conn {
    authorization: Option<String>,
    /// Path and query of the upgrade request.
    target: String,
    accepted_at: Instant,
    frames: Vec<(Instant, AgentMessage)>,
    /// The agent's Close frame arrived.
    closed_by_agent: bool,
    to_agent: mpsc::UnboundedSender<HubMessage>,
}

impl Conn {
    fn hello(&self) -> Option<&AgentHello> {
        match &self.frames.first()?.1.msg {
            Some(agent_message::Msg::Hello(h)) => Some(h),
            _ => None,
        }
    }

    fn snapshots(&self) -> Vec<(Instant, &Snapshot)> {
        self.frames
            .iter()
            .filter_map(|(at, m)| match &m.msg {
                Some(agent_message::Msg::Snapshot(s)) => Some((*at, s)),
                _ => None,
            })
            .collect()
    }
}

#[derive(Default)]
struct HubLog {
    conns: Vec<Conn>,
}

struct FakeHub {
    addr: SocketAddr,
    log: Arc<Mutex<HubLog>>,
    mode: Arc<Mutex<Mode>>,
    task: JoinHandle<()>,
}

impl FakeHub {
    async fn start(mode: Mode) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), mode).await
    }

    async fn start_on(addr: SocketAddr, mode: Mode) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind fake hub");
        let addr = listener.local_addr().expect("addr");
        let log: Arc<Mutex<HubLog>> = Arc::default();
        let mode = Arc::new(Mutex::new(mode));
        let (l, m) = (log.clone(), mode.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection with it.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(serve(tcp, l.clone(), m.clone()));
            }
        });
        Self {
            addr,
            log,
            mode,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// The hub goes away: listener and every connection closed.
    async fn stop(self) -> Arc<Mutex<HubLog>> {
        self.task.abort();
        let _ = self.task.await;
        self.log
    }

    fn conns(&self) -> usize {
        self.log.lock().expect("log").conns.len()
    }

    /// `f` on the log, polled until it returns `Some` or `limit` passes.
    async fn until<T>(&self, limit: Duration, mut f: impl FnMut(&HubLog) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(&self.log.lock().expect("log")) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "fake hub: condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn send(&self, conn: usize, msg: HubMessage) {
        let log = self.log.lock().expect("log");
        log.conns[conn].to_agent.send(msg).expect("connection gone");
    }
}

type UpgradeRequest = (Option<String>, String);

async fn serve(tcp: tokio::net::TcpStream, log: Arc<Mutex<HubLog>>, mode: Arc<Mutex<Mode>>) {
    // The mode when the connection arrives holds for its whole life.
    let mode = mode.lock().expect("mode").clone();
    // The upgrade request's Authorization header and target, as the callback saw them.
    let seen: Arc<Mutex<Option<UpgradeRequest>>> = Arc::default();
    let s = seen.clone();
    // The error type is tungstenite's, as its callback signature demands.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        *s.lock().expect("seen") = Some((auth, target));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let Some((authorization, target)) = seen.lock().expect("seen").take() else {
        return;
    };
    let (to_agent, mut from_test) = mpsc::unbounded_channel();
    let idx = {
        let mut log = log.lock().expect("log");
        log.conns.push(Conn {
            authorization,
            target,
            accepted_at: Instant::now(),
            frames: Vec::new(),
            closed_by_agent: false,
            to_agent,
        });
        log.conns.len() - 1
    };
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            Some(msg) = from_test.recv() => {
                if sink.send(Message::Binary(msg.encode_to_vec().into())).await.is_err() {
                    return;
                }
            }
            frame = stream.next() => {
                let bytes = match frame {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) => {
                        log.lock().expect("log").conns[idx].closed_by_agent = true;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                let msg = AgentMessage::decode(bytes).expect("agent frame decodes");
                let is_hello = matches!(msg.msg, Some(agent_message::Msg::Hello(_)));
                let host_id = match &msg.msg {
                    Some(agent_message::Msg::Hello(h)) => h.host_id.clone(),
                    _ => String::new(),
                };
                {
                    let mut log = log.lock().expect("log");
                    log.conns[idx].frames.push((Instant::now(), msg));
                    if is_hello {
                        log.conns[idx].accepted_at = Instant::now();
                    }
                }
                if !is_hello {
                    continue;
                }
                let accepted = |interval_ms| hub_message::Msg::Accepted(hmonitor_proto::Accepted {
                    host_id: host_id.clone(),
                    hub_version: "fake-1".into(),
                    interval_ms,
                });
                let answer = match &mode {
                    Mode::Accept { interval_ms } => accepted(*interval_ms),
                    Mode::AcceptThenHang => accepted(0),
                    Mode::Refuse { reason, retry } => {
                        hub_message::Msg::Refused(hmonitor_proto::Refused {
                            reason: (*reason).into(),
                            retry: *retry,
                        })
                    }
                };
                let frame = HubMessage { msg: Some(answer) }.encode_to_vec();
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    return;
                }
                match mode {
                    Mode::Accept { .. } => {}
                    Mode::Refuse { .. } => {
                        let _ = sink.close().await;
                        return;
                    }
                    Mode::AcceptThenHang => {
                        // Hold both halves, read nothing, answer nothing, until aborted.
                        let _keep = (sink, stream);
                        std::future::pending::<()>().await;
                        return;
                    }
                }
            }
        }
    }
}

/// An agent pushing to `hubs` on a 200 ms interval, on eight stand-in GPUs.
struct Setup {
    _dir: tempfile::TempDir,
    _children: Children,
    scenario: std::path::PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempdir();
        let children = Children::spawn(16);
        let scenario = write_scenario(dir.path(), &eight_gpus(&children));
        Self {
            _dir: dir,
            _children: children,
            scenario,
        }
    }

    fn agent(&self, hubs: &str) -> std::process::Command {
        let mut cmd = hmonitor_on(&self.scenario);
        cmd.env("HMON_HUB", hubs)
            .env("HMON_INTERVAL", "200ms")
            .env("HMON_ID", "push-test-host");
        cmd
    }
}

fn seqs(snaps: &[(Instant, &Snapshot)]) -> Vec<u64> {
    snaps.iter().map(|(_, s)| s.seq).collect()
}

/// A port on which nothing listens (bound, then released).
fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_then_snapshots_with_the_token_in_the_header_only() {
    let setup = Setup::new();
    let hub = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    let mut cmd = setup.agent(&hub.url());
    cmd.env("HMON_TOKEN", "s3cret-push-token");
    let mut agent = Pushing::start(cmd);

    hub.until(Duration::from_secs(15), |log| {
        (log.conns.first()?.snapshots().len() >= 5).then_some(())
    })
    .await;
    {
        let log = hub.log.lock().expect("log");
        let conn = &log.conns[0];
        assert_eq!(
            conn.authorization.as_deref(),
            Some("Bearer s3cret-push-token")
        );
        // The URL had no path: the default one is used, and the token is not in it.
        assert_eq!(conn.target, "/api/agent");

        let hello = conn.hello().expect("first frame is the hello");
        assert_eq!(hello.protocol_version, PushProtocol::V1 as u32);
        assert_eq!(hello.host_id, "push-test-host");
        assert!(!hello.hostname.is_empty());
        assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(hello.driver_version.as_deref(), Some("580.95.05"));
        assert_eq!(hello.cuda_version.as_deref(), Some("13.0"));
        assert_eq!(hello.interval_ms, 200);
        assert_eq!(hello.gpus.len(), 8);
        for (i, g) in hello.gpus.iter().enumerate() {
            assert_eq!(g.index, i as u32);
            assert_eq!(g.name, "NVIDIA H200");
            assert_eq!(g.uuid, format!("GPU-{i:08x}-1111-2222-3333-444455556666"));
            assert_eq!(g.mem_total, Some(150_754_820_096));
        }

        let snaps = conn.snapshots();
        let seqs = seqs(&snaps);
        // One more per sample, from the first.
        assert_eq!(seqs[0], 1, "{seqs:?}");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        for (_, s) in &snaps {
            let info = s.info.as_ref().expect("info");
            assert_eq!(info.id, "push-test-host");
            assert_eq!(info.gpus.len(), 8);
            assert!(!s.backfill);
            assert!(s.sample_ms > 0);
        }
        let info = snaps[snaps.len() - 1].1.info.as_ref().expect("info");
        assert_eq!(info.gpus[3].utilization, Some(30));
        assert_eq!(info.gpus[7].fanspeed, None);
        assert_eq!(info.gpus[0].procs.len(), 2);
    }

    // SIGTERM: the hub gets a Close frame, the agent exits cleanly.
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", agent.whole_log());
    hub.until(Duration::from_secs(5), |log| {
        log.conns[0].closed_by_agent.then_some(())
    })
    .await;
    assert_eq!(agent.log_lines("connected to hub").len(), 1);
    assert!(
        agent.log_lines("s3cret").is_empty(),
        "token logged: {}",
        agent.whole_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_hub_does_not_delay_another() {
    let setup = Setup::new();
    let good = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    let dead = dead_port();
    // Accepts TCP, never answers the upgrade: the agent's attempt hangs until its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let agent = Pushing::start(setup.agent(&format!(
        "ws://{dead},{},ws://{silent_addr}/api/agent",
        good.url()
    )));

    let first = good
        .until(Duration::from_secs(15), |log| {
            let snaps = log.conns.first()?.snapshots();
            (snaps.len() >= 2).then(|| snaps[0].0)
        })
        .await;
    // Three seconds of a 200 ms interval: about 15 snapshots, none held up by the others.
    tokio::time::sleep_until((first + Duration::from_secs(3)).into()).await;
    {
        let log = good.log.lock().expect("log");
        assert_eq!(log.conns.len(), 1, "the good hub's connection was dropped");
        let snaps: Vec<_> = log.conns[0]
            .snapshots()
            .into_iter()
            .filter(|(at, _)| *at <= first + Duration::from_secs(3))
            .collect();
        assert!(snaps.len() >= 10, "only {} snapshots in 3 s", snaps.len());
        let worst = snaps
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        assert!(worst < Duration::from_millis(1200), "a gap of {worst:?}");
    }
    // The dead hub is reported, but not once per attempt.
    let dead_lines = agent.log_lines(&format!("cannot reach hub ws://{dead}"));
    assert!(!dead_lines.is_empty(), "{}", agent.whole_log());
    assert!(dead_lines.len() <= 2, "{dead_lines:#?}");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_when_the_hub_comes_back() {
    let setup = Setup::new();
    let hub = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    let addr = hub.addr;
    let agent = Pushing::start(setup.agent(&hub.url()));
    hub.until(Duration::from_secs(15), |log| {
        (log.conns.first()?.snapshots().len() >= 2).then_some(())
    })
    .await;

    let old = hub.stop().await;
    let last_seq = {
        let log = old.lock().expect("log");
        *seqs(&log.conns[0].snapshots()).last().expect("a snapshot")
    };
    // Down for a second: the agent retries on its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = FakeHub::start_on(addr, Mode::Accept { interval_ms: 0 }).await;
    let back_at = Instant::now();
    let first_seq = back
        .until(Duration::from_secs(10), |log| {
            let s = log.conns.first()?.snapshots();
            (s.len() >= 2).then(|| s[0].1.seq)
        })
        .await;
    let reconnected_after = back.log.lock().expect("log").conns[0].accepted_at - back_at;
    assert!(
        reconnected_after < Duration::from_secs(5),
        "took {reconnected_after:?}"
    );
    // The sequence goes on: it counts samples for the life of the process.
    assert!(first_seq > last_seq, "{first_seq} after {last_seq}");
    assert_eq!(
        back.log.lock().expect("log").conns[0]
            .hello()
            .expect("hello")
            .host_id,
        "push-test-host"
    );
    assert_eq!(agent.log_lines("disconnected from hub").len(), 1);
    assert_eq!(
        agent.log_lines("connected to hub").len(),
        2,
        "{}",
        agent.whole_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_hub_is_dropped_within_three_intervals() {
    let setup = Setup::new();
    let hub = FakeHub::start(Mode::AcceptThenHang).await;
    let mut cmd = setup.agent(&hub.url());
    // 3 intervals = 1.5 s, above the agent's 1 s floor.
    cmd.env("HMON_INTERVAL", "500ms");
    let agent = Pushing::start(cmd);
    hub.until(Duration::from_secs(15), |log| {
        (!log.conns.is_empty()).then_some(())
    })
    .await;
    hub.set_mode(Mode::Accept { interval_ms: 0 });
    let (first, second) = hub
        .until(Duration::from_secs(15), |log| {
            (log.conns.len() >= 2).then(|| (log.conns[0].accepted_at, log.conns[1].accepted_at))
        })
        .await;
    let took = second - first;
    // 1.5 s of silence, then a backoff of at most 0.5 s; generous for a loaded machine.
    assert!(
        took >= Duration::from_millis(1400),
        "gave up after {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_eq!(
        agent.log_lines("presumed dead").len(),
        1,
        "{}",
        agent.whole_log()
    );
    // And the new connection works.
    hub.until(Duration::from_secs(10), |log| {
        (log.conns[1].snapshots().len() >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_once_and_backed_off() {
    let setup = Setup::new();
    let final_no = FakeHub::start(Mode::Refuse {
        reason: "unknown token (test)",
        retry: false,
    })
    .await;
    let busy = FakeHub::start(Mode::Refuse {
        reason: "hub is starting (test)",
        retry: true,
    })
    .await;
    let agent = Pushing::start(setup.agent(&format!("{},{}", final_no.url(), busy.url())));
    final_no
        .until(Duration::from_secs(15), |log| {
            (!log.conns.is_empty()).then_some(())
        })
        .await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // retry=false: the longest delay (15–30 s), so no second attempt in 4 s.
    assert_eq!(final_no.conns(), 1);
    // retry=true: the normal backoff (0.25–0.5 s, 0.5–1 s, 1–2 s, ...).
    assert!(
        busy.conns() >= 3,
        "{} attempts in {:?}",
        busy.conns(),
        start.elapsed()
    );
    assert!(busy.conns() <= 8, "{} attempts: hammering", busy.conns());
    assert_eq!(
        agent.log_lines("unknown token (test)").len(),
        1,
        "{}",
        agent.whole_log()
    );
    assert_eq!(agent.log_lines("hub is starting (test)").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_interval_changes_the_cadence_of_that_connection_only() {
    let setup = Setup::new();
    let hub = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    // Another hub asks for 600 ms in its Accepted.
    let slow = FakeHub::start(Mode::Accept { interval_ms: 600 }).await;
    let _agent = Pushing::start(setup.agent(&format!("{},{}", hub.url(), slow.url())));
    hub.until(Duration::from_secs(15), |log| {
        (log.conns.first()?.snapshots().len() >= 3).then_some(())
    })
    .await;

    hub.send(
        0,
        HubMessage {
            msg: Some(hub_message::Msg::SetInterval(hmonitor_proto::SetInterval {
                interval_ms: 1000,
            })),
        },
    );
    let changed_at = Instant::now();
    // Skip what was in flight when the change arrived, then look at 4 snapshots.
    let slowed = hub
        .until(Duration::from_secs(10), |log| {
            let snaps: Vec<(Instant, u64)> = log.conns[0]
                .snapshots()
                .into_iter()
                .filter(|(at, _)| *at > changed_at + Duration::from_millis(300))
                .map(|(at, s)| (at, s.seq))
                .collect();
            (snaps.len() >= 4).then_some(snaps)
        })
        .await;
    for w in slowed.windows(2) {
        let (gap, seq_gap) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        assert!(seq_gap >= 4, "{slowed:?}");
        assert!(gap >= Duration::from_millis(700), "{gap:?}");
    }

    // Back to the agent's own interval: every sample again.
    hub.send(
        0,
        HubMessage {
            msg: Some(hub_message::Msg::SetInterval(hmonitor_proto::SetInterval {
                interval_ms: 0,
            })),
        },
    );
    let reset_at = Instant::now();
    let fast = hub
        .until(Duration::from_secs(10), |log| {
            let snaps: Vec<u64> = log.conns[0]
                .snapshots()
                .into_iter()
                .filter(|(at, _)| *at > reset_at + Duration::from_millis(1200))
                .map(|(_, s)| s.seq)
                .collect();
            (snaps.len() >= 4).then_some(snaps)
        })
        .await;
    assert!(fast.windows(2).all(|w| w[1] == w[0] + 1), "{fast:?}");

    // The other hub kept its own 600 ms all along.
    let log = slow.log.lock().expect("log");
    let seqs = seqs(&log.conns[0].snapshots());
    assert!(seqs.len() >= 4, "{seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] - w[0] >= 2),
        "the 600 ms hub got every sample: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_id_is_kept_in_the_state_dir() {
    let setup = Setup::new();
    let state = tempdir();
    let dir = state.path().join("hmonitor");

    // First start: the id is created from the hostname and kept.
    let mut cmd = hmonitor_on(&setup.scenario);
    cmd.env("HMON_STATE_DIR", &dir);
    let agent = Agent::start(cmd);
    let kept = std::fs::read_to_string(dir.join("host-id")).expect("host-id written at start");
    drop(agent);
    let hostname = once_json(hmonitor_on(&setup.scenario))["hostname"]
        .as_str()
        .expect("hostname")
        .to_owned();
    assert_eq!(kept.trim(), hostname);

    // The machine is renamed (here: the file says otherwise): the kept id wins, in hellos
    // and snapshots alike.
    std::fs::write(dir.join("host-id"), "lab-gpu-07\n").expect("write");
    let hub = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    let mut cmd = hmonitor_on(&setup.scenario);
    cmd.env("HMON_HUB", hub.url())
        .env("HMON_INTERVAL", "200ms")
        .env("HMON_STATE_DIR", &dir);
    let _agent = Pushing::start(cmd);
    let (hello_id, info_id) = hub
        .until(Duration::from_secs(15), |log| {
            let c = log.conns.first()?;
            let s = c.snapshots();
            let info = s.first()?.1.info.as_ref()?;
            Some((c.hello()?.host_id.clone(), info.id.clone()))
        })
        .await;
    assert_eq!(hello_id, "lab-gpu-07");
    assert_eq!(info_id, "lab-gpu-07");

    // HMON_ID beats the kept id, and leaves the file alone.
    let mut cmd = hmonitor_on(&setup.scenario);
    cmd.env("HMON_STATE_DIR", &dir).env("HMON_ID", "explicit");
    assert_eq!(once_json(cmd)["id"], "explicit");
    assert_eq!(
        std::fs::read_to_string(dir.join("host-id")).expect("read"),
        "lab-gpu-07\n"
    );

    // Under systemd, $STATE_DIRECTORY is the default.
    let mut cmd = hmonitor_on(&setup.scenario);
    cmd.env("STATE_DIRECTORY", &dir);
    assert_eq!(once_json(cmd)["id"], "lab-gpu-07");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_api_and_push_run_together() {
    use hmonitor_proto::host_monitor_client::HostMonitorClient;

    let setup = Setup::new();
    let hub = FakeHub::start(Mode::Accept { interval_ms: 0 }).await;
    let mut cmd = setup.agent(&hub.url());
    cmd.env("HMON_TOKEN", "both-ways");
    let agent = Agent::start(cmd);

    hub.until(Duration::from_secs(15), |log| {
        (log.conns.first()?.snapshots().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        hub.log.lock().expect("log").conns[0]
            .authorization
            .as_deref(),
        Some("Bearer both-ways")
    );
    let mut client = HostMonitorClient::connect(agent.url())
        .await
        .expect("connect");
    let info = client
        .get_info(hmonitor_proto::RequestInfo {
            token: "both-ways".into(),
            reqtype: String::new(),
        })
        .await
        .expect("GetInfo")
        .into_inner();
    assert_eq!(info.id, "push-test-host");
    assert_eq!(info.gpus.len(), 8);
    // Pushing went on while the pull API answered.
    let before = hub.log.lock().expect("log").conns[0].snapshots().len();
    hub.until(Duration::from_secs(5), |log| {
        (log.conns[0].snapshots().len() >= before + 2).then_some(())
    })
    .await;
}

#[test]
fn bad_hub_urls_and_nothing_to_do_are_refused_with_the_reason() {
    let out = hmonitor()
        .env("HMON_HUB", "ws://ok:1,http://hub.example:5000")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://hub.example:5000"), "{err}");

    let out = hmonitor().output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing to do") && err.contains("HMON_HUB"),
        "{err}"
    );

    let out = hmonitor().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in ["HMON_HUB", "HMON_STATE_DIR", "/api/agent"] {
        assert!(help.contains(var), "--help does not name {var}:\n{help}");
    }
}
