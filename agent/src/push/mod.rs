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

mod backoff;
mod conn;
mod hub_log;
mod relay;
mod session;
mod url;
mod window;
mod writer;

pub use relay::{Relay, RelayError};
pub use url::{HubList, HubUrl, DEFAULT_PATH};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmonitor_proto::{
    agent_message, unix_ms, AgentHello, AgentMessage, GpuFact, GpuInfo, HostInfo, PushProtocol,
    Snapshot,
};
use hmonitor_sampler::Sampler;
use prost::Message as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Bytes;

use crate::backlog::{self, Backlog, Entry};
use session::hub_task;
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

/// Bounds on the send interval a hub may ask for. The lower bound matches the agent's own
/// shortest sampling interval; the upper one keeps the ping (sent every interval) frequent
/// enough for half-open connections to be noticed within minutes, not days.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(600);

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
    /// The host key kept in the state directory, sent in every hello so the hub can pin this
    /// host id to this agent; none without a state directory.
    pub host_key: Option<[u8; hmonitor_common::auth::HOST_KEY_LEN]>,
}

/// How often a changed backlog is written to the state directory.
const BACKLOG_SAVE_EVERY: Duration = Duration::from_secs(5);

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
    host_key: Vec<u8>,
    /// Cluster questions of the agent's users, for whichever connection is up.
    relay: Arc<Relay>,
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
            Some(client_tls(&cfg.tls)?)
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
                        .map(|d| backlog_file(d, &hub.to_string()));
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
                host_key: cfg.host_key.map(|k| k.to_vec()).unwrap_or_default(),
                relay: Relay::new(),
            }),
            first_sample_within: cfg.first_sample_within,
        })
    }

    /// Where the agent's users' cluster questions go.
    pub fn relay(&self) -> Arc<Relay> {
        self.shared.relay.clone()
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

/// Where one hub's backlog is kept in `dir`; a file under the name earlier versions gave it
/// (which two hub URLs could share) is renamed to it, so an upgrade loses no samples.
fn backlog_file(dir: &std::path::Path, hub: &str) -> std::path::PathBuf {
    let path = dir.join(backlog::file_name(hub));
    let legacy = dir.join(backlog::legacy_file_name(hub));
    if !path.exists() && legacy.exists() {
        match std::fs::rename(&legacy, &path) {
            Ok(()) => tracing::info!("hub {hub}: backlog file renamed to {}", path.display()),
            Err(e) => tracing::warn!("hub {hub}: cannot rename {}: {e}", legacy.display()),
        }
    }
    path
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
fn hello(info: &HostInfo, interval: Duration, host_key: &[u8]) -> AgentMessage {
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
            host_key: host_key.to_vec(),
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

/// The TLS client configuration for a hub: `HMON_CA` / `HMON_INSECURE_SKIP_VERIFY` when set,
/// else the system's CA store. The push client and the CLI's own hub requests share it.
pub fn client_tls(tls: &crate::tls::ClientTls) -> Result<Arc<rustls::ClientConfig>, PushError> {
    match crate::tls::client_config(tls)? {
        Some(custom) => Ok(custom),
        None => tls_config(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            host_key: None,
        };
        let err = Pusher::new(cfg).err().expect("must fail").to_string();
        assert!(!err.contains("sec"), "{err}");
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
        let Some(agent_message::Msg::Hello(h)) =
            hello(&info, Duration::from_millis(1500), &[7; 32]).msg
        else {
            panic!("not a hello");
        };
        assert_eq!(h.protocol_version, PushProtocol::V1 as u32);
        assert_eq!(h.host_id, "gpu-01");
        assert_eq!(h.hostname, "gpu-01.lab");
        assert_eq!(h.host_key, vec![7; 32]);
        assert_eq!(h.interval_ms, 1500);
        assert_eq!(h.cuda_version, None);
        assert_eq!(h.gpus.len(), 1);
        assert_eq!(h.gpus[0].index, 3);
        assert_eq!(h.gpus[0].mem_total, Some(1 << 30));
    }
}
