//! The push client: the agent dials out to its hubs over WebSocket, so a hub sees agents behind
//! NAT and firewalls that would never let its polls in.
//!
//! One task per hub, each with its own connection, timers and backoff: a hub that is down, slow
//! or half-open never delays another. The frames follow the push protocol in `gpu.proto`: the
//! agent sends `AgentMessage{hello}`, waits for `HubMessage{accepted}` (or `refused`), then one
//! `AgentMessage{snapshot}` per sample, one protobuf message per binary frame. The token travels
//! in the upgrade request's `Authorization: Bearer` header only.
//!
//! Snapshots are made once per sample by one task and shared by every connection as the same
//! encoded bytes (a `watch` channel: it holds only the latest). A connection that cannot keep up
//! therefore skips to the newest snapshot instead of queueing old ones, and nothing a connection
//! does can hold up sampling.
//!
//! History: every sample also goes into each hub's [`Backlog`] until that hub acknowledges it.
//! A connection sends the newest sample live and, beside it, oldest first, every sample of the
//! backlog it has not sent (an outage's, or ones skipped while the hub was slow), marked
//! `backfill`. An `Ack{seq}` covers the sample `seq` and every sample sent before it on the same
//! connection.

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hmonitor_proto::{
    agent_message, hub_message, unix_ms, AgentHello, AgentMessage, GpuFact, GpuInfo, HostInfo,
    HubMessage, PushProtocol, Snapshot,
};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backlog::{self, Backlog, Entry};
use hmonitor_sampler::sampler::Sampler;

/// The hub's endpoint for agents, used when a hub URL names no path.
pub const DEFAULT_PATH: &str = "/api/agent";

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

/// Bounds on the send interval a hub may ask for. The lower bound matches the agent's own
/// shortest sampling interval; the upper one keeps the ping (sent every interval) frequent
/// enough for half-open connections to be noticed within minutes, not days.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// A connection is dead after 3 intervals without a frame from the hub, but never sooner than
/// this: with sub-second intervals a busy machine's scheduling delays alone could exceed
/// 3 intervals and tear down healthy connections.
const DEAD_FLOOR: Duration = Duration::from_secs(1);

/// Largest frame accepted from a hub. Hub messages are a few bytes; a bigger one is a bug or an
/// attack, and must not make the agent allocate.
const MAX_HUB_MESSAGE: usize = 64 * 1024;

/// While a hub stays unreachable, every this-many failed attempt is logged...
const LOG_EVERY_NTH_FAILURE: u32 = 10;
/// ...or the next one after this long, whichever comes first.
const LOG_FAILURE_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// Distinct refusal reasons remembered for "log once" per hub; a hub inventing a new reason
/// each time must not grow memory.
const REFUSALS_REMEMBERED: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("hub URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("hub URL {0} is given twice")]
    DuplicateHub(String),
    /// The token itself is never part of the message: it would end up in logs.
    #[error(
        "HMON_TOKEN cannot be sent in an HTTP header (it holds control or non-ASCII characters)"
    )]
    BadToken,
    #[error("wss:// needs CA certificates and none were found in the system's store{0}")]
    NoRootCertificates(String),
    #[error("cannot set up TLS: {0}")]
    Tls(rustls::Error),
    #[error(transparent)]
    TlsSettings(#[from] crate::tls::TlsError),
}

/// One hub's address: a `ws://` or `wss://` URL, with [`DEFAULT_PATH`] filled in when the URL
/// names no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUrl {
    uri: Uri,
    tls: bool,
}

impl HubUrl {
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl FromStr for HubUrl {
    type Err = PushError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: &str| PushError::BadUrl {
            url: s.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("ws") => false,
            Some(scheme) if scheme.eq_ignore_ascii_case("wss") => true,
            _ => return Err(bad("must start with ws:// or wss://")),
        };
        let Some(authority) = uri.authority() else {
            return Err(bad("names no host"));
        };
        if authority.host().is_empty() {
            return Err(bad("names no host"));
        }
        // Credentials in a URL end up in logs and process listings; the token has its own
        // variable and travels in a header.
        if authority.as_str().contains('@') {
            return Err(bad(
                "must not hold credentials; set HMON_TOKEN instead (sent as Authorization: Bearer)",
            ));
        }
        let path_and_query = match uri.path_and_query() {
            Some(pq) if pq.path() != "/" && !pq.path().is_empty() => pq.as_str().to_owned(),
            Some(pq) => match pq.query() {
                Some(q) => format!("{DEFAULT_PATH}?{q}"),
                None => DEFAULT_PATH.to_owned(),
            },
            None => DEFAULT_PATH.to_owned(),
        };
        let uri = Uri::builder()
            .scheme(if tls { "wss" } else { "ws" })
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self { uri, tls })
    }
}

impl std::fmt::Display for HubUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.uri)
    }
}

/// `HMON_HUB`: comma-separated hub URLs. Empty means "do not push" (so `HMON_HUB=` in a unit
/// file turns pushing off rather than failing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubList(pub Vec<HubUrl>);

impl FromStr for HubList {
    type Err = PushError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut hubs: Vec<HubUrl> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let hub: HubUrl = part.parse()?;
            // Two connections from one host id would look to the hub like a host that keeps
            // reconnecting.
            if hubs.contains(&hub) {
                return Err(PushError::DuplicateHub(hub.to_string()));
            }
            hubs.push(hub);
        }
        Ok(Self(hubs))
    }
}

/// What the push client needs to know.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub hubs: Vec<HubUrl>,
    /// Sent as `Authorization: Bearer <token>` in every upgrade request.
    pub token: Option<String>,
    /// The agent's sampling interval: announced in the hello, and each connection's send
    /// interval until its hub asks for another.
    pub interval: Duration,
    /// How long to wait for every source's first sample before the first snapshot (a hung
    /// source then shows up as stale instead of delaying the hello forever).
    pub first_sample_within: Duration,
    /// `HMON_CA` / `HMON_INSECURE_SKIP_VERIFY` for wss:// hubs.
    pub tls: crate::tls::ClientTls,
    /// Span of unacknowledged samples kept per hub for backfill; zero turns the backlog off.
    pub backlog: Duration,
    /// Where backlogs survive restarts (the state directory); none: memory only.
    pub backlog_dir: Option<std::path::PathBuf>,
}

/// How often a changed backlog is written to the state directory.
const BACKLOG_SAVE_EVERY: Duration = Duration::from_secs(5);
/// Backfill frames sent per turn of a connection's loop (pings and shutdown are served between
/// turns).
const BACKFILL_CHUNK: usize = 32;
/// Frames sent and not yet acknowledged on one connection before backfill pauses for acks: a
/// reconnecting agent never floods the hub's store queue.
const BACKFILL_WINDOW: usize = 512;

/// The push client, checked and ready to run (see [`Pusher::new`]).
pub struct Pusher {
    hubs: Vec<(HubUrl, Option<Arc<Backlog>>)>,
    shared: Arc<Shared>,
    first_sample_within: Duration,
}

/// What every hub task reads and nobody changes.
struct Shared {
    /// `Bearer <token>`, marked sensitive so that a `Debug` print of a request cannot show it.
    auth: Option<HeaderValue>,
    /// Present when some hub URL is `wss://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Certificates are not verified (HMON_INSECURE_SKIP_VERIFY): warned on every connect.
    insecure: bool,
    interval: Duration,
}

impl Pusher {
    /// Checks the configuration (token, TLS roots) so that mistakes stop the agent at start
    /// instead of failing every connection attempt later.
    pub fn new(cfg: PushConfig) -> Result<Self, PushError> {
        let auth = match cfg.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| PushError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let tls = if cfg.hubs.iter().any(HubUrl::is_tls) {
            match crate::tls::client_config(&cfg.tls)? {
                Some(custom) => Some(custom),
                None => Some(tls_config()?),
            }
        } else {
            None
        };
        let hubs = cfg
            .hubs
            .into_iter()
            .map(|hub| {
                let backlog = (!cfg.backlog.is_zero()).then(|| {
                    let file = cfg
                        .backlog_dir
                        .as_ref()
                        .map(|d| d.join(backlog::file_name(&hub.to_string())));
                    let b = Backlog::new(cfg.backlog, backlog::DEFAULT_MAX_BYTES, file);
                    match b.load() {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("hub {hub}: {n} unacknowledged samples read back"),
                        Err(e) => tracing::warn!("hub {hub}: {e}; starting with an empty backlog"),
                    }
                    Arc::new(b)
                });
                (hub, backlog)
            })
            .collect();
        Ok(Self {
            hubs,
            shared: Arc::new(Shared {
                auth,
                tls,
                insecure: cfg.tls.insecure,
                interval: cfg.interval,
            }),
            first_sample_within: cfg.first_sample_within,
        })
    }

    /// Pushes to every hub until `shutdown` completes, then sends each connected hub a Close
    /// frame and returns once every connection has ended (each bounded by a few seconds).
    pub async fn run(self, sampler: Sampler, shutdown: impl Future<Output = ()>) {
        let (samples_tx, samples_rx) = watch::channel::<Option<Arc<Sample>>>(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let backlogs: Vec<Arc<Backlog>> = self.hubs.iter().filter_map(|(_, b)| b.clone()).collect();
        // Sequence numbers go on after those read back, so one never names two samples.
        let first_seq = backlogs
            .iter()
            .filter_map(|b| b.newest_seq())
            .max()
            .unwrap_or(0)
            + 1;
        for (hub, backlog) in self.hubs {
            tracing::info!("pushing to hub {hub}");
            tasks.spawn(hub_task(
                hub,
                self.shared.clone(),
                samples_rx.clone(),
                stop_rx.clone(),
                backlog,
            ));
        }
        drop(samples_rx);
        let saver = async {
            let mut tick = tokio::time::interval(BACKLOG_SAVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                save_all(&backlogs).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = sequence(sampler, &samples_tx, self.first_sample_within, first_seq, &backlogs) => {
                tracing::warn!("the sampler stopped; no more snapshots to push");
            }
            () = saver => {}
        }
        // The sender (and with it the latest snapshot) stays alive until every task has
        // finished, so a connection never mistakes shutdown for the end of the samples.
        stop_tx.send_replace(true);
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::warn!("a hub connection task failed: {e}");
            }
        }
        // What no hub acknowledged is kept for the next start.
        save_all(&backlogs).await;
        drop(samples_tx);
    }
}

/// Writes every changed backlog to the state directory (off the async workers: it syncs).
async fn save_all(backlogs: &[Arc<Backlog>]) {
    let list = backlogs.to_vec();
    let r = tokio::task::spawn_blocking(move || {
        for b in list {
            if let Err(e) = b.save() {
                tracing::warn!("{e}");
            }
        }
    })
    .await;
    if let Err(e) = r {
        tracing::warn!("saving the backlog failed: {e}");
    }
}

/// Completes once shutdown has begun. (A function rather than `wait_for` inline: the guard
/// `wait_for` returns is not `Send` and must not live on in a `select!` branch.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One sample, encoded once for every hub.
struct Sample {
    seq: u64,
    /// The whole `AgentMessage{snapshot}` as sent.
    frame: Bytes,
    /// The report in it, for the next hello's facts.
    info: HostInfo,
}

/// Numbers each host sample and publishes it as an encoded snapshot. Returns only if the
/// sampler stops.
async fn sequence(
    mut sampler: Sampler,
    samples: &watch::Sender<Option<Arc<Sample>>>,
    first_within: Duration,
    first_seq: u64,
    backlogs: &[Arc<Backlog>],
) {
    // Consume the "changed" mark of the first sample, then give every source a bounded
    // moment, so the first snapshot (and the first hello's GPU facts) is complete.
    if !sampler.changed().await {
        return;
    }
    sampler.ready(first_within).await;
    let mut seq: u64 = first_seq.saturating_sub(1);
    let mut warned_full = false;
    loop {
        seq += 1;
        let info = sampler.report();
        let sample_ms = unix_ms(SystemTime::now());
        let msg = AgentMessage {
            msg: Some(agent_message::Msg::Snapshot(Snapshot {
                seq,
                sample_ms,
                info: Some(info.clone()),
                backfill: false,
            })),
        };
        let frame = Bytes::from(msg.encode_to_vec());
        for b in backlogs {
            let dropped = b.push(Entry {
                seq,
                sample_ms,
                frame: frame.clone(),
            });
            if dropped > 0 && !warned_full {
                warned_full = true;
                tracing::warn!(
                    "a hub has not acknowledged samples for longer than the backlog keeps \
                     (HMON_BACKLOG): the oldest are dropped and its history will have a gap"
                );
            }
        }
        samples.send_replace(Some(Arc::new(Sample { seq, frame, info })));
        if !sampler.changed().await {
            return;
        }
    }
}

/// The hello for a connection, with facts from the latest report.
fn hello(info: &HostInfo, interval: Duration) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(AgentHello {
            protocol_version: PushProtocol::V1 as u32,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            host_id: info.id.clone(),
            hostname: info.hostname.clone(),
            driver_version: info.driver_version.clone(),
            cuda_version: info.cuda_version.clone(),
            gpus: info.gpus.iter().map(gpu_fact).collect(),
            interval_ms: millis(interval),
        })),
    }
}

fn gpu_fact(g: &GpuInfo) -> GpuFact {
    GpuFact {
        // NVML indices are never negative; the field is only signed because the seed's is.
        index: u32::try_from(g.id).unwrap_or_default(),
        uuid: g.uuid.clone(),
        name: g.name.clone(),
        mem_total: g.mem_total,
        pci_bus_id: g.pci_bus_id.clone(),
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A send interval asked for by a hub, in milliseconds; 0 means the agent's own.
fn hub_interval(ms: u32, own: Duration) -> Duration {
    if ms == 0 {
        own
    } else {
        Duration::from_millis(u64::from(ms)).clamp(MIN_INTERVAL, MAX_INTERVAL)
    }
}

/// Why a connection ended or never started. Only ever logged.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Ws(#[from] tungstenite::Error),
    /// The hub's TLS certificate was refused; the hint says what to check.
    #[error("{0} ({1})")]
    Certificate(tungstenite::Error, &'static str),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {} s (waiting for the {what})", .after.as_secs())]
    Timeout { after: Duration, what: &'static str },
    #[error("the hub closed the connection{}", close_reason(.0))]
    Closed(Option<CloseFrame>),
    #[error("nothing from the hub for {} ms: the connection is presumed dead", .0.as_millis())]
    Silent(Duration),
    #[error("the hub sent a text frame; the protocol has binary frames only")]
    Text,
    #[error("malformed frame from the hub: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("the hub sent {0} before accepting the hello")]
    OutOfOrder(&'static str),
    #[error("the hub answered the upgrade with HTTP {0}")]
    Http(StatusCode),
    #[error("the connection's writer stopped: {0}")]
    Writer(tokio::task::JoinError),
    #[error("the snapshots stopped")]
    NoSamples,
}

fn close_reason(frame: &Option<CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!(" ({}: {})", f.code, f.reason),
        Some(f) => format!(" ({})", f.code),
        None => String::new(),
    }
}

/// How one connection attempt ended.
enum Ended {
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

/// Per-connection counts, reported when it ends. Shared with the writer task through atomics
/// so that they survive the writer being aborted.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    /// Samples skipped because the previous send was still in progress (a slow hub or
    /// network); not those skipped on purpose because the hub asked for a longer interval.
    dropped: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    sent: u64,
    dropped: u64,
}

impl Counters {
    fn stats(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Pushes to one hub for the life of the agent: connect, serve, back off, again.
async fn hub_task(
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
async fn session(
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

    let hello = Message::Binary(hello(&first.info, shared.interval).encode_to_vec().into());
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
        backlog.clone().map(|b| (b, inflight.clone())),
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
fn http_refusal(status: StatusCode) -> Ended {
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
async fn connect(hub: &HubUrl, shared: &Shared) -> Result<Ws, ConnError> {
    let request = request(hub, shared.auth.as_ref())?;
    let host = hub.uri.host().unwrap_or_default();
    // An IPv6 literal comes bracketed in a URL but not in a socket address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = hub.uri.port_u16().unwrap_or(if hub.tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnError::Connect)?;
    // Snapshots are whole messages: send each at once rather than waiting to fill a segment.
    let _ = tcp.set_nodelay(true);
    if hub.tls && shared.insecure {
        tracing::warn!("connecting to {hub}: {}", crate::tls::INSECURE_WARNING);
    }
    let connector = match (&shared.tls, hub.tls) {
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
    .map_err(|e| match crate::tls::hint(&e.to_string()) {
        Some(hint) => ConnError::Certificate(e, hint),
        None => ConnError::Ws(e),
    })?;
    Ok(ws)
}

fn request(hub: &HubUrl, auth: Option<&HeaderValue>) -> Result<Request<()>, ConnError> {
    let mut request = hub.uri.clone().into_client_request()?;
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

enum Reply {
    Accepted(hmonitor_proto::Accepted),
    Refused(hmonitor_proto::Refused),
}

/// Reads until the hub accepts or refuses the hello.
async fn wait_accepted(stream: &mut SplitStream<Ws>) -> Result<Reply, ConnError> {
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
            None => continue,
        }
    }
}

type WriteResult = Result<SplitSink<Ws, Message>, ConnError>;

/// Sends snapshots (at most one per interval, always the newest) and pings until told to
/// close, or until a send fails. Returns the sink after a clean Close so the caller can wait
/// for the hub's answer.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut samples: watch::Receiver<Option<Arc<Sample>>>,
    mut interval_rx: watch::Receiver<Duration>,
    mut close: oneshot::Receiver<()>,
    sampling: Duration,
    counters: Arc<Counters>,
    hub: String,
    backlog: Option<(Arc<Backlog>, Arc<InFlight>)>,
) -> WriteResult {
    let mut interval = *interval_rx.borrow_and_update();
    let mut ping = ping_timer(interval);
    let mut last_sent: Option<(u64, Instant)> = None;
    // The newest snapshot goes out at once: the hub has a full report as soon as it accepts.
    let mut pending = true;
    let mut next_send = Instant::now();
    // Backfill: every backlog sample older than the newest live one is sent once on this
    // connection, in order, `cursor` being the last one considered.
    let mut cursor: u64 = 0;
    let mut first_live: Option<u64> = None;
    let mut backfilling = false;
    let mut backfilled: u64 = 0;
    loop {
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
                if let Some((b, inflight)) = &backlog {
                    let first = *first_live.get_or_insert(sample.seq);
                    if interval != sampling {
                        // The hub asked for fewer samples: those skipped on purpose since this
                        // connection began are declined, not owed.
                        let declined: Vec<u64> = b
                            .between(first, sample.seq, usize::MAX)
                            .iter()
                            .map(|e| e.seq)
                            .filter(|s| !inflight.was_sent(*s))
                            .collect();
                        b.remove(&declined);
                    }
                    inflight.sent(sample.seq);
                    backfilling = true;
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
            () = inflight_room(backlog.as_ref()), if !backfilling && last_sent.is_some() => {
                backfilling = true;
            }
            () = std::future::ready(()), if backfilling => {
                let (Some((b, inflight)), Some((live, _))) = (&backlog, last_sent) else {
                    backfilling = false;
                    continue;
                };
                if inflight.len() >= BACKFILL_WINDOW {
                    // Wait for acknowledgements before sending more.
                    backfilling = false;
                    continue;
                }
                // At the agent's own interval every sample is owed; at one the hub asked for,
                // only those from before this connection.
                let upto = if interval == sampling { live } else { first_live.unwrap_or(live) };
                let chunk = b.between(cursor, upto, BACKFILL_CHUNK);
                if chunk.len() < BACKFILL_CHUNK {
                    backfilling = false;
                }
                for e in chunk {
                    cursor = e.seq;
                    if inflight.was_sent(e.seq) {
                        continue;
                    }
                    let Some(frame) = backlog::as_backfill(&e.frame) else { continue };
                    inflight.sent(e.seq);
                    sink.send(Message::Binary(frame)).await?;
                    backfilled += 1;
                }
                if !backfilling && backfilled > 0 {
                    tracing::info!("hub {hub}: {backfilled} samples sent as backfill");
                    backfilled = 0;
                }
            }
        }
    }
}

/// Completes when a connection with a backlog may send more backfill (acknowledgements made
/// room); never without a backlog.
async fn inflight_room(backlog: Option<&(Arc<Backlog>, Arc<InFlight>)>) {
    match backlog {
        Some((b, inflight)) if !b.is_empty() => inflight.room.notified().await,
        _ => std::future::pending().await,
    }
}

/// The samples sent on one connection and not yet acknowledged, in the order sent.
#[derive(Debug, Default)]
struct InFlight {
    sent: std::sync::Mutex<std::collections::VecDeque<u64>>,
    room: tokio::sync::Notify,
}

/// Most sequence numbers remembered per connection: a hub that never acknowledges must not
/// grow the agent's memory.
const INFLIGHT_MAX: usize = 1 << 20;

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<u64>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sent(&self, seq: u64) {
        let mut g = self.lock();
        if g.len() >= INFLIGHT_MAX {
            g.pop_front();
        }
        g.push_back(seq);
    }

    fn was_sent(&self, seq: u64) -> bool {
        self.lock().contains(&seq)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// `Ack{seq}`: `seq` and everything sent before it are stored; they leave the backlog.
    fn acked(&self, seq: u64, backlog: &Backlog) {
        let mut done = {
            let mut g = self.lock();
            let Some(pos) = g.iter().position(|s| *s == seq) else {
                return;
            };
            g.drain(..=pos).collect::<Vec<u64>>()
        };
        done.sort_unstable();
        backlog.remove(&done);
        self.room.notify_one();
    }
}

/// The shortest time between two sends. Samples come on the sampling clock, so a send interval
/// can only be met to the nearest sample: the gate opens half a sampling interval early, and the
/// first sample after it goes out. With the hub's interval equal to the agent's own, every
/// sample is sent as it comes, and jitter in the sampling clock never skips one.
fn send_gap(interval: Duration, sampling: Duration) -> Duration {
    interval.saturating_sub(sampling / 2)
}

fn ping_timer(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a long blocked send, one ping is enough; a burst of catch-up pings is not.
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Shutdown before the hello was accepted: send Close and wait briefly for the answer.
async fn close(mut sink: SplitSink<Ws, Message>, stream: SplitStream<Ws>) {
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
async fn close_answer(sink: SplitSink<Ws, Message>, mut stream: SplitStream<Ws>) {
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

/// The system's CA certificates with ring as the crypto provider. The provider is named here
/// rather than left to rustls' process default, which is ambiguous (and panics) when another
/// crate in the build enables a second provider.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, PushError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    if added == 0 {
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(": {}", errors.join("; "))
        };
        return Err(PushError::NoRootCertificates(detail));
    }
    if !errors.is_empty() {
        tracing::warn!(
            "some CA certificates could not be loaded: {}",
            errors.join("; ")
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PushError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Exponential backoff with equal jitter: each delay is between half and all of the current
/// step, so hundreds of agents that lost the same hub do not come back in one burst, and no
/// delay is ever near zero (which full jitter allows).
#[derive(Debug)]
struct Backoff {
    step: Duration,
    start: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(start: Duration, cap: Duration) -> Self {
        Self {
            step: start,
            start,
            cap,
        }
    }

    fn reset(&mut self) {
        self.step = self.start;
    }

    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        jitter(step, fastrand::f64())
    }

    /// Jumps to the longest delay, and stays there until a connection is stable.
    fn longest_delay(&mut self) -> Duration {
        self.step = self.cap;
        self.next_delay()
    }
}

/// Equal jitter: `step/2 + r × step/2`, `r` in [0, 1).
fn jitter(step: Duration, r: f64) -> Duration {
    let half = step / 2;
    half + half.mul_f64(r.clamp(0.0, 1.0))
}

/// A delay as a person reads it: "250 ms", "18 s".
fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Logging for one hub: one line per state change, and no flood while it stays down.
struct HubLog {
    hub: String,
    /// Failed attempts since the last accepted connection.
    failures: u32,
    last_failure_logged: Option<std::time::Instant>,
    refusals: HashSet<String>,
}

impl HubLog {
    fn new(hub: String) -> Self {
        Self {
            hub,
            failures: 0,
            last_failure_logged: None,
            refusals: HashSet::new(),
        }
    }

    fn accepted(&mut self, a: &hmonitor_proto::Accepted, interval: Duration) {
        let after = match self.failures {
            0 => String::new(),
            1 => " after 1 failed attempt".to_owned(),
            n => format!(" after {n} failed attempts"),
        };
        tracing::info!(
            "connected to hub {} (hub {}, host id {:?}, a snapshot every {} ms){after}",
            self.hub,
            if a.hub_version.is_empty() {
                "version unknown"
            } else {
                &a.hub_version
            },
            a.host_id,
            interval.as_millis()
        );
        self.failures = 0;
        self.last_failure_logged = None;
        self.refusals.clear();
    }

    fn lost(&mut self, accepted_for: Duration, why: &ConnError, stats: Stats, delay: Duration) {
        tracing::info!(
            "disconnected from hub {} after {} s: {why} ({} snapshots sent, {} dropped); \
             reconnecting in {}",
            self.hub,
            accepted_for.as_secs(),
            stats.sent,
            stats.dropped,
            human(delay)
        );
    }

    fn failed(&mut self, why: &ConnError, delay: Duration) {
        self.failures += 1;
        let due = self.failures == 1
            || self.failures.is_multiple_of(LOG_EVERY_NTH_FAILURE)
            || self
                .last_failure_logged
                .is_none_or(|t| t.elapsed() >= LOG_FAILURE_AT_LEAST_EVERY);
        if due {
            tracing::warn!(
                "cannot reach hub {}: {why} (attempt {}; retrying in {})",
                self.hub,
                self.failures,
                human(delay)
            );
            self.last_failure_logged = Some(std::time::Instant::now());
        } else {
            tracing::debug!("cannot reach hub {}: {why}", self.hub);
        }
    }

    fn refused(&mut self, reason: &str, retry: bool, delay: Duration) {
        self.failures += 1;
        let new = self.refusals.len() < REFUSALS_REMEMBERED && self.refusals.insert(reason.into());
        if new {
            let hint = if retry {
                ""
            } else {
                "; retrying will not help until a configuration changes"
            };
            tracing::warn!(
                "hub {} refused this agent: {reason}{hint} (next attempt in {})",
                self.hub,
                human(delay)
            );
        } else {
            tracing::debug!("hub {} refused this agent again: {reason}", self.hub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_get_the_default_path_and_bad_ones_are_named() {
        let u: HubUrl = "ws://hub:5000".parse().expect("parse");
        assert_eq!(u.to_string(), "ws://hub:5000/api/agent");
        let u: HubUrl = "ws://hub:5000/".parse().expect("parse");
        assert_eq!(u.to_string(), "ws://hub:5000/api/agent");
        let u: HubUrl = "WSS://hub.example/custom/path?site=b"
            .parse()
            .expect("parse");
        assert_eq!(u.to_string(), "wss://hub.example/custom/path?site=b");
        assert!(u.is_tls());
        let u: HubUrl = "ws://[::1]:9/x".parse().expect("parse");
        assert_eq!(u.uri().host(), Some("[::1]"));

        for bad in [
            "http://hub:5000",
            "hub:5000",
            "ws://",
            "ws://user:secret@hub/",
            "not a url",
        ] {
            let err = bad.parse::<HubUrl>().expect_err(bad).to_string();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn hub_lists_split_on_commas_and_refuse_duplicates() {
        let l: HubList = " ws://a:1 , wss://b/x,".parse().expect("parse");
        assert_eq!(l.0.len(), 2);
        assert_eq!(l.0[1].to_string(), "wss://b/x");
        assert_eq!("".parse::<HubList>().expect("empty").0, vec![]);
        let err = "ws://a:1,ws://a:1/api/agent"
            .parse::<HubList>()
            .expect_err("dup")
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = "ws://a:1,ftp://b"
            .parse::<HubList>()
            .expect_err("bad")
            .to_string();
        assert!(err.contains("ftp://b"), "{err}");
    }

    #[test]
    fn a_token_with_a_newline_is_refused_without_being_repeated() {
        let cfg = PushConfig {
            hubs: vec!["ws://a:1".parse().expect("parse")],
            token: Some("sec\nret".into()),
            interval: Duration::from_secs(2),
            first_sample_within: Duration::from_secs(1),
            tls: Default::default(),
            backlog: Duration::ZERO,
            backlog_dir: None,
        };
        let err = Pusher::new(cfg).err().expect("must fail").to_string();
        assert!(!err.contains("sec"), "{err}");
    }

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

    #[test]
    fn backoff_doubles_to_the_cap_with_equal_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut steps = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            steps.push(d);
        }
        assert!(steps[0] >= Duration::from_millis(250) && steps[0] <= Duration::from_millis(500));
        assert!(steps[1] >= Duration::from_millis(500) && steps[1] <= Duration::from_secs(1));
        assert!(steps[9] >= Duration::from_secs(15) && steps[9] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
        assert!(b.longest_delay() >= Duration::from_secs(15));
        assert_eq!(jitter(Duration::from_secs(2), 0.0), Duration::from_secs(1));
        assert_eq!(jitter(Duration::from_secs(2), 1.0), Duration::from_secs(2));
    }

    #[test]
    fn hub_intervals_are_bounded_and_zero_means_our_own() {
        let own = Duration::from_secs(2);
        assert_eq!(hub_interval(0, own), own);
        assert_eq!(hub_interval(10, own), MIN_INTERVAL);
        assert_eq!(hub_interval(500, own), Duration::from_millis(500));
        assert_eq!(hub_interval(u32::MAX, own), MAX_INTERVAL);
    }

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

    #[test]
    fn the_hello_carries_facts_from_the_report() {
        let info = HostInfo {
            id: "gpu-01".into(),
            hostname: "gpu-01.lab".into(),
            driver_version: Some("580.95.05".into()),
            gpus: vec![GpuInfo {
                id: 3,
                uuid: "GPU-x".into(),
                name: "NVIDIA H200".into(),
                mem_total: Some(1 << 30),
                pci_bus_id: "00000000:17:00.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let Some(agent_message::Msg::Hello(h)) = hello(&info, Duration::from_millis(1500)).msg
        else {
            panic!("not a hello");
        };
        assert_eq!(h.protocol_version, PushProtocol::V1 as u32);
        assert_eq!(h.host_id, "gpu-01");
        assert_eq!(h.hostname, "gpu-01.lab");
        assert_eq!(h.interval_ms, 1500);
        assert_eq!(h.cuda_version, None);
        assert_eq!(h.gpus.len(), 1);
        assert_eq!(h.gpus[0].index, 3);
        assert_eq!(h.gpus[0].mem_total, Some(1 << 30));
    }
}
