//! Helpers for the hub's integration tests: the real `hmonitor-hub` and `hmonitor` binaries as
//! child processes on loopback, the NVML stand-in, and a browser-like WebSocket client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hmonitor_proto::{
    agent_message, live_event, AgentHello, AgentMessage, HostState, HostStatus, LiveBatch,
    LiveEvent, PushProtocol,
};
use prost::Message;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub use hmonitor_testkit::{clean, eventually, stub_lib, Proc, Scenario};

pub const TOKEN: &str = "test-enrollment-token";

/// The agent binary beside the hub's.
pub fn agent_bin() -> PathBuf {
    hmonitor_testkit::bin("hmonitor")
}

/// Starts `cmd` and waits (30 s at most) for a stderr line holding `ready`; returns the word
/// after it.
pub fn spawn(cmd: Command, ready: &str) -> (Proc, String) {
    Proc::spawn_ready(cmd, ready, Duration::from_secs(30))
}

pub struct Hub {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub grpc: Option<SocketAddr>,
    pub data: tempfile::TempDir,
}

pub struct HubOpts<'a> {
    pub listen: &'a str,
    pub interval: &'a str,
    pub extra: Vec<String>,
    pub data: Option<tempfile::TempDir>,
}

impl Default for HubOpts<'_> {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0",
            interval: "300ms",
            extra: Vec::new(),
            data: None,
        }
    }
}

impl Hub {
    pub fn start() -> Self {
        Self::start_with(HubOpts::default())
    }

    pub fn start_with(opts: HubOpts<'_>) -> Self {
        let data = opts
            .data
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let mut cmd = clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")));
        cmd.args(["--listen", opts.listen, "--grpc-listen", "127.0.0.1:0"])
            .args(["--interval", opts.interval])
            .arg("--data-dir")
            .arg(data.path())
            .env("HMON_TOKEN", TOKEN)
            .args(&opts.extra);
        let (proc, addr) = spawn(cmd, "hub listening on ");
        let grpc = crate::harness::eventually(Duration::from_secs(5), || {
            proc.lines("gRPC listening on ")
                .first()
                .and_then(|l| l.split("gRPC listening on ").nth(1))
                .and_then(|r| r.split([' ', ',']).next())
                .and_then(|a| a.parse().ok())
        });
        Self {
            proc,
            addr: addr.parse().expect("hub address"),
            grpc: Some(grpc),
            data,
        }
    }

    pub fn agent_url(&self) -> String {
        format!("ws://{}/api/agent", self.addr)
    }

    pub fn live_url(&self) -> String {
        format!("ws://{}/api/live", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// One GPU whose utilization identifies the scenario's version.
pub fn one_gpu(name: &str, util: u32) -> Value {
    json!({ "gpus": [{ "name": name, "utilization_gpu": util, "memory_total": 85_899_345_920u64 }] })
}

/// Starts an agent pushing to `hub_url` as `id`.
pub fn agent(id: &str, hub_url: &str, scenario: &Scenario, interval: &str) -> Proc {
    agent_with(id, hub_url, scenario, interval, TOKEN, &[])
}

pub fn agent_with(
    id: &str,
    hub_url: &str,
    scenario: &Scenario,
    interval: &str,
    token: &str,
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = clean(Command::new(agent_bin()));
    cmd.env("HMON_HUB", hub_url)
        .env("HMON_TOKEN", token)
        .env("HMON_ID", id)
        .env("HMON_INTERVAL", interval)
        .env("HMON_NVML_LIB", stub_lib())
        .env("HMON_STUB_SCENARIO", &scenario.path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Ready as soon as it runs; connection is awaited through the hub or the browser.
    Proc::start(cmd)
}

/// What a browser has seen on `/api/live`: each host's latest state and when each event came.
#[derive(Default)]
pub struct Seen {
    pub hosts: HashMap<String, HostState>,
    /// (host id, utilization of GPU 0, status, received at)
    pub events: Vec<(String, Option<i32>, i32, Instant)>,
    /// WebSocket messages received (batched browsers only).
    pub messages: usize,
}

impl Seen {
    fn record(&mut self, ev: LiveEvent, now: Instant) {
        match ev.event {
            Some(live_event::Event::Host(h)) => {
                let util = h
                    .info
                    .as_ref()
                    .and_then(|i| i.gpus.first())
                    .and_then(|g| g.utilization);
                self.events.push((h.id.clone(), util, h.status, now));
                self.hosts.insert(h.id.clone(), h);
            }
            Some(live_event::Event::Status(c)) => {
                self.events.push((c.id.clone(), None, c.status, now));
                if let Some(h) = self.hosts.get_mut(&c.id) {
                    h.status = c.status;
                    h.last_seen_ms = c.last_seen_ms;
                }
            }
            _ => {}
        }
    }
}

pub struct Browser {
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Browser {
    pub async fn connect(url: &str) -> Self {
        Self::open(url, false).await
    }

    /// A browser on `/api/live?batch=…`: each message a `LiveBatch`.
    pub async fn connect_batched(url: &str) -> Self {
        Self::open(url, true).await
    }

    async fn open(url: &str, batched: bool) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("browser connect");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let (_w, mut r) = ws.split();
            while let Some(Ok(msg)) = r.next().await {
                let tokio_tungstenite::tungstenite::Message::Binary(b) = msg else {
                    continue;
                };
                let events = if batched {
                    let batch = LiveBatch::decode(b.as_ref()).expect("LiveBatch");
                    let mut s = sink.lock().expect("seen");
                    s.messages += 1;
                    batch.events
                } else {
                    vec![LiveEvent::decode(b.as_ref()).expect("LiveEvent")]
                };
                let now = Instant::now();
                let mut s = sink.lock().expect("seen");
                for ev in events {
                    s.record(ev, now);
                }
            }
        });
        Self { seen, task }
    }

    pub fn status(&self, id: &str) -> Option<HostStatus> {
        self.seen
            .lock()
            .expect("seen")
            .hosts
            .get(id)
            .and_then(|h| HostStatus::try_from(h.status).ok())
    }

    pub fn util(&self, id: &str) -> Option<i32> {
        self.seen
            .lock()
            .expect("seen")
            .hosts
            .get(id)
            .and_then(|h| h.info.as_ref())
            .and_then(|i| i.gpus.first())
            .and_then(|g| g.utilization)
    }

    pub fn frames_of(&self, id: &str) -> usize {
        self.seen
            .lock()
            .expect("seen")
            .events
            .iter()
            .filter(|e| e.0 == id)
            .count()
    }

    /// Waits until `f` holds, polling every 20 ms; returns the time it took.
    pub async fn until(&self, limit: Duration, what: &str, f: impl Fn(&Self) -> bool) -> Duration {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < limit,
                "browser did not see {what} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw agent connection, to send what a real agent never would.
pub async fn raw_agent(
    hub: &Hub,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = hub.agent_url().into_client_request().expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

pub fn hello(id: &str) -> Vec<u8> {
    hello_with_key(id, &[])
}

/// A hello presenting `key` as its host key (empty: none).
pub fn hello_with_key(id: &str, key: &[u8]) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(AgentHello {
            protocol_version: PushProtocol::V1 as u32,
            host_id: id.into(),
            interval_ms: 500,
            host_key: key.to_vec(),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// Reads until the server closes; returns the close reason.
pub async fn close_reason(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    use futures_util::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(Some(f))))) => return f.reason.to_string(),
            Ok(Some(Ok(_))) => continue,
            _ => return String::new(),
        }
    }
    String::new()
}

/// A raw agent connection for `id` that has sent its hello and one snapshot of `gpus`: a host
/// the hub shows as up for as long as the connection is open.
pub async fn raw_host(
    hub: &Hub,
    id: &str,
    gpus: Vec<hmonitor_proto::GpuInfo>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    use hmonitor_proto::{HostInfo, Snapshot};
    let mut ws = raw_agent(hub, Some(TOKEN)).await.expect("connect");
    ws.send(WsMessage::Binary(hello(id).into()))
        .await
        .expect("hello");
    let snap = AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(Snapshot {
            seq: 1,
            sample_ms: hmonitor_proto::unix_ms(std::time::SystemTime::now()),
            info: Some(HostInfo {
                id: id.to_owned(),
                hostname: id.to_owned(),
                gpus,
                ..Default::default()
            }),
            backfill: false,
        })),
    };
    ws.send(WsMessage::Binary(snap.encode_to_vec().into()))
        .await
        .expect("snapshot");
    ws
}

/// An agent with its CLI socket and state directory, each in a directory of its own.
pub struct SocketAgent {
    pub proc: Proc,
    pub socket: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Starts an agent pushing to `hub_url` as `id` with a CLI socket (`hmonitor free`, `wait`…).
pub fn agent_with_socket(id: &str, hub_url: &str, scenario: &Scenario) -> SocketAgent {
    let sock = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let socket = sock.path().join("agent.sock");
    let proc = agent_with(
        id,
        hub_url,
        scenario,
        "300ms",
        TOKEN,
        &[
            ("HMON_SOCKET", socket.to_str().expect("utf-8")),
            ("HMON_STATE_DIR", state.path().to_str().expect("utf-8")),
        ],
    );
    SocketAgent {
        proc,
        socket,
        _dirs: (sock, state),
    }
}
