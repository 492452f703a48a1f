//! `hmonitor-load`: a load generator for the hub. Simulated agents push realistic snapshots to
//! `/api/agent`; simulated browsers watch `/api/live` and measure how long each frame takes from
//! an agent's send to a browser's receipt. Agents and browsers live in this one process, so the
//! send time of every (agent, seq) is kept in memory and compared on receipt: no clock in the
//! frames, no skew between machines.
//!
//! What it reports: agents connected, frames sent per second achieved, the hub's CPU (share of
//! one core) and memory per agent from `/proc/<hub pid>` (with `--hub-pid`), this process's own
//! CPU (the hub's peer on the same machine), and per browser the frames received per second,
//! missing frames and latency percentiles.
//!
//! ```sh
//! hmonitor-load --hub ws://127.0.0.1:5000 --token T --agents 10000 --ramp 20 --duration 60 \
//!     --hub-pid "$(pidof hmonitor-hub)"
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hmonitor_proto::{
    agent_message, hub_message, unix_ms, AgentHello, AgentMessage, DiskInfo, GpuFact, GpuInfo,
    HostInfo, HubMessage, LoadAvg, ProcInfo, ProcKind, PushProtocol,
};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, Parser)]
#[command(
    name = "hmonitor-load",
    about = "Load generator for hmonitor-hub: simulated agents push snapshots, simulated browsers \
             measure frame → browser latency"
)]
struct Args {
    /// The hub's base URL (ws://IP:PORT; an IP address, so that --source-addrs can apply).
    #[arg(long, default_value = "ws://127.0.0.1:5000")]
    hub: String,
    /// Agent token (the hub's enrollment token).
    #[arg(long, env = "HMON_TOKEN", hide_env_values = true, default_value = "")]
    token: String,
    /// Viewer token for the browsers, when the hub wants one.
    #[arg(long)]
    viewer_token: Option<String>,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Frames per second per agent.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Simulated browsers on /api/live.
    #[arg(long, default_value_t = 0)]
    browsers: usize,
    /// Seconds measured, after the ramp and the warm-up.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds over which agent connections are spread.
    #[arg(long, default_value_t = 10)]
    ramp: u64,
    /// Seconds between the end of the ramp and the start of the measurement.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// GPUs per simulated host.
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// GPU processes per simulated host (spread over its GPUs).
    #[arg(long, default_value_t = 16)]
    procs: usize,
    /// Spread agent connections over source addresses 127.0.0.1 ..= 127.0.0.N, each with its
    /// own ephemeral port range (loopback hubs only).
    #[arg(long, value_name = "N")]
    source_addrs: Option<u8>,
    /// The hub's process id: its CPU and memory are read from /proc.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Browsers decode every LiveEvent in full (HostInfo included) instead of only its envelope
    /// (host id, seq): closer to a real viewer, but costs this process CPU that the hub then
    /// lacks on a small machine.
    #[arg(long)]
    full_decode: bool,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Send times kept per agent: a frame later than this many frames is counted as unmatched.
const RING: usize = 64;
/// Bits of a ring slot holding the send time (µs since the run's epoch: 12 days).
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Variants of the host template: frames change from one to the next like real readings do,
/// without building a report per frame.
const VARIANTS: usize = 16;

/// Counters shared by every simulated agent and browser.
struct Shared {
    epoch: Instant,
    /// True during the measured window: only then are frames and latencies counted.
    measuring: AtomicBool,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    agents_accepted: AtomicU64,
    agents_connected: AtomicU64,
    agents_refused: AtomicU64,
    agents_connect_errors: AtomicU64,
    /// The hub closed (or the connection broke) while the run was on.
    agents_closed: AtomicU64,
    browsers_connected: AtomicU64,
    browsers_connect_errors: AtomicU64,
    browsers_closed: AtomicU64,
    /// Per agent, `RING` slots of (seq, send time); empty when no browser watches.
    sent_at: Vec<[AtomicU64; RING]>,
}

impl Shared {
    fn record_send(&self, agent: usize, seq: u64) {
        if let Some(ring) = self.sent_at.get(agent) {
            let us = (self.epoch.elapsed().as_micros() as u64) & TIME_MASK;
            ring[(seq as usize) % RING].store((seq << TIME_BITS) | us, Ordering::Relaxed);
        }
    }

    /// Microseconds since agent `agent` sent frame `seq`, when still known.
    fn latency_us(&self, agent: usize, seq: u64) -> Option<u64> {
        let slot = self.sent_at.get(agent)?[(seq as usize) % RING].load(Ordering::Relaxed);
        // The tag keeps the seq's low bits: enough to tell a recycled slot.
        if slot >> TIME_BITS != seq & ((1 << (64 - TIME_BITS)) - 1) {
            return None;
        }
        let now = (self.epoch.elapsed().as_micros() as u64) & TIME_MASK;
        Some(now.saturating_sub(slot & TIME_MASK))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hmonitor-load: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmonitor-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-files limit to the hard one: 10,000 agents need 10,000 sockets.
fn raise_nofile(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    eprintln!("hmonitor-load: cannot raise the open-files limit: {e}");
                }
            }
            if hard < needed {
                eprintln!(
                    "hmonitor-load: warning: open-files hard limit {hard} < {needed} needed \
                     (run under `prlimit --nofile=N:N` or `ulimit -n N`)"
                );
            }
        }
        Err(e) => eprintln!("hmonitor-load: cannot read the open-files limit: {e}"),
    }
}

/// The hub's address from `ws://IP:PORT[/...]`.
fn hub_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .context("--hub must be ws://IP:PORT (TLS is not simulated)")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("--hub: {authority:?} is not IP:PORT"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be in (0, 1000] frames/s");
    }
    if args.gpus == 0 || args.gpus > 64 {
        bail!("--gpus must be 1 to 64");
    }
    let addr = hub_addr(&args.hub)?;
    if args.source_addrs.is_some() && !addr.ip().is_loopback() {
        bail!("--source-addrs only applies to a hub on loopback");
    }
    raise_nofile(args.agents as u64 + args.browsers as u64 + 64);

    let hub_fds = args.hub_pid.and_then(proc_nofile);
    if let Some(limit) = hub_fds {
        if limit < (args.agents + args.browsers + 16) as u64 {
            eprintln!(
                "hmonitor-load: warning: the hub's open-files limit is {limit}, fewer than \
                 {} connections",
                args.agents + args.browsers
            );
        }
    }
    // The hub's memory before any agent: per-agent memory is measured against it.
    let hub_rss_base = args.hub_pid.and_then(proc_rss_kib);

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let template = Template::new(args.gpus, args.procs);
    let sample = template.snapshot(0, "load-0", 1, unix_ms(SystemTime::now()));
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        measuring: AtomicBool::new(false),
        frames_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        agents_accepted: AtomicU64::new(0),
        agents_connected: AtomicU64::new(0),
        agents_refused: AtomicU64::new(0),
        agents_connect_errors: AtomicU64::new(0),
        agents_closed: AtomicU64::new(0),
        browsers_connected: AtomicU64::new(0),
        browsers_connect_errors: AtomicU64::new(0),
        browsers_closed: AtomicU64::new(0),
        sent_at: if args.browsers > 0 {
            (0..args.agents)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect()
        } else {
            Vec::new()
        },
    });
    if !args.json {
        eprintln!(
            "frame: {} bytes encoded (AgentMessage, {} GPUs, {} processes); {} agents × {}/s, \
             {} browsers",
            sample.len(),
            args.gpus,
            args.procs,
            args.agents,
            args.rate,
            args.browsers
        );
    }
    let template = Arc::new(template);
    let (stop_tx, stop_rx) = watch::channel(false);

    // Browsers first: they see every agent arrive, as a viewer left open would.
    let mut browsers = Vec::with_capacity(args.browsers);
    for b in 0..args.browsers {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        let (url, token, full) = (
            format!("ws://{addr}/api/live"),
            args.viewer_token.clone(),
            args.full_decode,
        );
        let n = args.agents;
        browsers.push(tokio::spawn(async move {
            browser(b, url, token, n, full, shared, stop).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = tokio::time::Instant::now();
    let ramp = Duration::from_secs(args.ramp);
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let a = AgentSpec {
            index: i,
            addr,
            token: args.token.clone(),
            source: args
                .source_addrs
                .map(|n| Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(n.max(1))) as u8)),
            // Connects spread evenly over the ramp; frames spread evenly over each period.
            connect_at: start + ramp.mul_f64(i as f64 / args.agents as f64),
            epoch: start,
            phase: period.mul_f64(i as f64 / args.agents as f64),
            period,
        };
        let (shared, stop, template) = (shared.clone(), stop_rx.clone(), template.clone());
        agents.push(tokio::spawn(agent(a, template, shared, stop)));
    }

    tokio::time::sleep_until(start + ramp + Duration::from_secs(args.warmup)).await;

    // The measured window.
    let hz = clock_ticks();
    let healthz0 = healthz(addr, args.viewer_token.as_deref()).await;
    let hub_t0 = args.hub_pid.and_then(proc_cpu_ticks);
    let self_t0 = proc_cpu_ticks(std::process::id());
    let machine0 = machine_busy_ticks();
    let sent0 = shared.frames_sent.load(Ordering::Relaxed);
    let bytes0 = shared.bytes_sent.load(Ordering::Relaxed);
    let w0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    let mut hub_rss_peak = 0u64;
    let mut agents_min = u64::MAX;
    let window = Duration::from_secs(args.duration);
    while w0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1).min(window.saturating_sub(w0.elapsed()))).await;
        if let Some(rss) = args.hub_pid.and_then(proc_rss_kib) {
            hub_rss_peak = hub_rss_peak.max(rss);
        }
        agents_min = agents_min.min(shared.agents_connected.load(Ordering::Relaxed));
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let secs = w0.elapsed().as_secs_f64();
    let sent1 = shared.frames_sent.load(Ordering::Relaxed);
    let bytes1 = shared.bytes_sent.load(Ordering::Relaxed);
    let hub_t1 = args.hub_pid.and_then(proc_cpu_ticks);
    let self_t1 = proc_cpu_ticks(std::process::id());
    let machine1 = machine_busy_ticks();
    let hub_rss_end = args.hub_pid.and_then(proc_rss_kib);
    let healthz1 = healthz(addr, args.viewer_token.as_deref()).await;
    let agents_at_end = shared.agents_connected.load(Ordering::Relaxed);
    let self_rss = proc_rss_kib(std::process::id());

    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(browsers.len());
    for b in browsers {
        if let Ok(r) = b.await {
            results.push(r);
        }
    }
    // Agents close their sockets; a few seconds at most, then they are left to exit with us.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for a in agents {
            let _ = a.await;
        }
    })
    .await;

    let cpu_pct = |t0: Option<u64>, t1: Option<u64>| match (t0, t1) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / hz / secs * 100.0),
        _ => None,
    };
    let hub_cpu = cpu_pct(hub_t0, hub_t1);
    let self_cpu = cpu_pct(self_t0, self_t1);
    let ticks_to_cores = |t: u64| t as f64 / hz / secs;
    let machine_busy = match (machine0, machine1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // What the rest of the machine did meanwhile: on a shared machine, the run's noise.
    let others = match (machine_busy, hub_t0, hub_t1, self_t0, self_t1) {
        (Some(m), Some(h0), Some(h1), Some(s0), Some(s1)) => Some(ticks_to_cores(
            m.saturating_sub(h1 - h0).saturating_sub(s1 - s0),
        )),
        (Some(m), None, None, Some(s0), Some(s1)) => {
            Some(ticks_to_cores(m.saturating_sub(s1 - s0)))
        }
        _ => None,
    };
    let per_agent_kib = match (hub_rss_base, hub_rss_end) {
        (Some(base), Some(end)) if agents_at_end > 0 => {
            Some((end.saturating_sub(base)) as f64 / agents_at_end as f64)
        }
        _ => None,
    };

    let mut all_lat: Vec<u32> = Vec::new();
    let mut per_browser = Vec::with_capacity(results.len());
    for r in &results {
        let mut lat = r.latencies_us.clone();
        lat.sort_unstable();
        per_browser.push(serde_json::json!({
            "browser": r.index,
            "frames_per_s": r.frames as f64 / secs,
            "bytes_per_s": r.bytes as f64 / secs,
            "missing": r.missing,
            "stale": r.stale,
            "unmatched": r.unmatched,
            "closed": r.closed,
            "latency_ms": percentiles(&lat),
        }));
        all_lat.extend_from_slice(&r.latencies_us);
    }
    all_lat.sort_unstable();
    let mut fps: Vec<f64> = results.iter().map(|r| r.frames as f64 / secs).collect();
    fps.sort_by(f64::total_cmp);
    let hub_delta = |key: &str| -> Option<i64> {
        let a = healthz0.as_ref()?.get(key)?.as_i64()?;
        let b = healthz1.as_ref()?.get(key)?.as_i64()?;
        Some(b - a)
    };

    let report = serde_json::json!({
        "window_s": secs,
        "frame_bytes": sample.len(),
        "agents": {
            "target": args.agents,
            "rate_per_agent": args.rate,
            "accepted": shared.agents_accepted.load(Ordering::Relaxed),
            "connected_at_end": agents_at_end,
            "connected_min_in_window": if agents_min == u64::MAX { 0 } else { agents_min },
            "refused": shared.agents_refused.load(Ordering::Relaxed),
            "connect_errors": shared.agents_connect_errors.load(Ordering::Relaxed),
            "closed": shared.agents_closed.load(Ordering::Relaxed),
            "frames_per_s_target": args.agents as f64 * args.rate,
            "frames_per_s": (sent1 - sent0) as f64 / secs,
            "mbytes_per_s": (bytes1 - bytes0) as f64 / secs / 1e6,
        },
        "hub": {
            "pid": args.hub_pid,
            "cpu_pct_of_one_core": hub_cpu,
            "rss_base_kib": hub_rss_base,
            "rss_end_kib": hub_rss_end,
            "rss_peak_kib": if hub_rss_peak > 0 { Some(hub_rss_peak) } else { None },
            "rss_per_agent_kib": per_agent_kib,
            "open_files_limit": hub_fds,
            "frames_in_per_s": hub_delta("frames_in").map(|d| d as f64 / secs),
            "browser_lagged": hub_delta("browser_lagged"),
            "browsers_dropped": hub_delta("browsers_dropped"),
            "frames_refused": hub_delta("frames_refused"),
        },
        "generator": {
            "cpu_pct_of_one_core": self_cpu,
            "rss_kib": self_rss,
        },
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "busy_cores": machine_busy.map(ticks_to_cores),
            "others_cores": others,
        },
        "browsers": {
            "target": args.browsers,
            "connected": shared.browsers_connected.load(Ordering::Relaxed),
            "connect_errors": shared.browsers_connect_errors.load(Ordering::Relaxed),
            "closed": shared.browsers_closed.load(Ordering::Relaxed),
            "frames_per_s_min": fps.first(),
            "frames_per_s_median": fps.get(fps.len() / 2),
            "frames_per_s_max": fps.last(),
            "missing": results.iter().map(|r| r.missing).sum::<u64>(),
            "stale": results.iter().map(|r| r.stale).sum::<u64>(),
            "unmatched": results.iter().map(|r| r.unmatched).sum::<u64>(),
            "latency_ms": percentiles(&all_lat),
            "worst_browser_p99_ms": per_browser
                .iter()
                .filter_map(|b| b["latency_ms"]["p99"].as_f64())
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
            "per_browser": per_browser,
        },
    });
    if args.json {
        println!("{report}");
    } else {
        print_human(&report);
    }
    Ok(())
}

fn percentiles(sorted_us: &[u32]) -> serde_json::Value {
    if sorted_us.is_empty() {
        return serde_json::Value::Null;
    }
    let at = |q: f64| {
        let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
        f64::from(sorted_us[i]) / 1000.0
    };
    serde_json::json!({
        "n": sorted_us.len(),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": at(1.0),
    })
}

fn print_human(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| match v.as_f64() {
        Some(x) => format!("{x:.1}"),
        None => "-".to_owned(),
    };
    let a = &r["agents"];
    let h = &r["hub"];
    let g = &r["generator"];
    let b = &r["browsers"];
    println!(
        "window: {} s, frame {} bytes",
        f(&r["window_s"]),
        r["frame_bytes"]
    );
    println!(
        "agents: {} target, {} accepted, {} connected at end (min {} in window), {} refused, \
         {} connect errors, {} closed",
        a["target"],
        a["accepted"],
        a["connected_at_end"],
        a["connected_min_in_window"],
        a["refused"],
        a["connect_errors"],
        a["closed"]
    );
    println!(
        "frames sent: {}/s (target {}/s), {} MB/s",
        f(&a["frames_per_s"]),
        f(&a["frames_per_s_target"]),
        f(&a["mbytes_per_s"])
    );
    println!(
        "hub: CPU {}% of one core, RSS {} KiB at start → {} KiB at end (peak {}), {} KiB per \
         agent; frames in {}/s; browser resyncs {}, browsers dropped {}",
        f(&h["cpu_pct_of_one_core"]),
        h["rss_base_kib"],
        h["rss_end_kib"],
        h["rss_peak_kib"],
        f(&h["rss_per_agent_kib"]),
        f(&h["frames_in_per_s"]),
        h["browser_lagged"],
        h["browsers_dropped"]
    );
    println!(
        "generator: CPU {}% of one core, RSS {} KiB; other processes {} cores of {}",
        f(&g["cpu_pct_of_one_core"]),
        g["rss_kib"],
        f(&r["machine"]["others_cores"]),
        r["machine"]["cores"]
    );
    if b["target"].as_u64().unwrap_or(0) > 0 {
        let l = &b["latency_ms"];
        println!(
            "browsers: {} connected, frames/s per browser min {} median {} max {}; missing {}, \
             stale {}, unmatched {}",
            b["connected"],
            f(&b["frames_per_s_min"]),
            f(&b["frames_per_s_median"]),
            f(&b["frames_per_s_max"]),
            b["missing"],
            b["stale"],
            b["unmatched"]
        );
        println!(
            "latency frame → browser (ms): p50 {} p90 {} p99 {} max {} (n {}); worst browser \
             p99 {}",
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["max"]),
            l["n"],
            f(&b["worst_browser_p99_ms"])
        );
    }
}

// --- the simulated host ---------------------------------------------------------------------

/// Tiny deterministic generator: readings vary, runs repeat.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A realistic host report, built once and encoded in [`VARIANTS`] versions whose readings
/// differ. A frame is a variant's bytes followed by a small `HostInfo` holding the per-agent and
/// per-frame fields: protobuf merges the two (a later scalar wins), so the hub decodes one
/// complete report without this process building one per frame.
struct Template {
    hello_gpus: Vec<GpuFact>,
    variants: Vec<Vec<u8>>,
}

const USERS: [&str; 8] = [
    "alice", "bchen", "cmartin", "dkumar", "eva.s", "fwang", "gpatel", "hlopez",
];
const NAMES: [&str; 6] = [
    "python3",
    "python",
    "torchrun",
    "pt_main_thread",
    "vllm",
    "deepspeed",
];

impl Template {
    fn new(gpus: usize, procs: usize) -> Self {
        const MIB: u64 = 1 << 20;
        let mem_total = 143_771 * MIB;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let uuids: Vec<String> = (0..gpus)
            .map(|_| {
                format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    rng.next() as u32,
                    rng.next() as u16,
                    rng.next() as u16,
                    rng.next() as u16,
                    rng.next() & 0xffff_ffff_ffff
                )
            })
            .collect();
        let buses: Vec<String> = (0..gpus)
            .map(|g| format!("00000000:{:02X}:00.0", 0x18 + 0x10 * g))
            .collect();
        let containers: Vec<String> = (0..procs)
            .map(|_| {
                format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next()
                )
            })
            .collect();
        let hello_gpus = (0..gpus)
            .map(|g| GpuFact {
                index: g as u32,
                uuid: uuids[g].clone(),
                name: "NVIDIA H200".into(),
                mem_total: Some(mem_total),
                pci_bus_id: buses[g].clone(),
            })
            .collect();
        let now = unix_ms(SystemTime::now());
        let variants = (0..VARIANTS)
            .map(|_| {
                let mut info = HostInfo {
                    disks: vec![
                        disk("/dev/nvme0n1p2", "/", "ext4", 1_800, 420),
                        disk("/dev/md0", "/data", "xfs", 30_000, 17_250),
                        disk("nfs.lab:/export/home", "/home", "nfs4", 200_000, 151_000),
                        disk("/dev/nvme1n1", "/scratch", "ext4", 7_000, 2_900),
                    ],
                    driver_version: Some("580.95.05".into()),
                    cuda_version: Some("13.0".into()),
                    cpu_util: Some(rng.below(10_000) as f64 / 100.0),
                    mem_used: Some((200 + rng.below(1500)) << 30),
                    mem_total: Some(2015 << 30),
                    load: Some(LoadAvg {
                        one: rng.below(20_000) as f64 / 100.0,
                        five: rng.below(20_000) as f64 / 100.0,
                        fifteen: rng.below(20_000) as f64 / 100.0,
                    }),
                    uptime_s: Some(3_456_789),
                    kernel: "6.8.0-60-generic".into(),
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    cpu_count: 224,
                    os: "Ubuntu 24.04.2 LTS".into(),
                    ..Default::default()
                };
                for g in 0..gpus {
                    let util = rng.below(101) as i32;
                    info.gpus.push(GpuInfo {
                        id: g as i32,
                        mem_used: Some((20_000 + rng.below(120_000)) * MIB),
                        mem_total: Some(mem_total),
                        utilization: Some(util),
                        temp: Some(35 + rng.below(45) as u32),
                        name: "NVIDIA H200".into(),
                        fanspeed: None,
                        procs: Vec::new(),
                        uuid: uuids[g].clone(),
                        pci_bus_id: buses[g].clone(),
                        mem_reserved: Some(519 * MIB),
                        mem_utilization: Some(rng.below(101) as i32),
                        power_draw_mw: Some(80_000 + rng.below(620_000) as u32),
                        power_limit_mw: Some(700_000),
                        pstate: Some(0),
                        clock_sm_mhz: Some(1_980),
                        clock_mem_mhz: Some(3_201),
                        ..Default::default()
                    });
                }
                for p in 0..procs {
                    let u = p % USERS.len();
                    info.gpus[p % gpus].procs.push(ProcInfo {
                        pid: 100_000 + p as u32 * 37,
                        uid: Some(1000 + u as i32),
                        username: Some(USERS[u].into()),
                        basename: Some(NAMES[p % NAMES.len()].into()),
                        expiration: Some(86_400 + rng.below(600_000)),
                        utilization: Some(rng.below(101) as i32),
                        mem: Some((1_000 + rng.below(60_000)) * MIB),
                        kind: ProcKind::Compute as i32,
                        container: Some(containers[p].clone()),
                        container_runtime: Some("docker".into()),
                        cmdline: None,
                        started_ms: Some(now - 86_400_000),
                        mem_utilization: Some(rng.below(101) as i32),
                    });
                }
                info.encode_to_vec()
            })
            .collect();
        Self {
            hello_gpus,
            variants,
        }
    }

    /// One encoded `AgentMessage{snapshot}` for agent `index` (host id `id`).
    fn snapshot(&self, index: usize, id: &str, seq: u64, now_ms: u64) -> Bytes {
        let variant = &self.variants[(index + seq as usize) % self.variants.len()];
        let overlay = HostInfo {
            id: id.to_owned(),
            hostname: id.to_owned(),
            ip: format!(
                "10.{}.{}.{}",
                (index >> 16) & 255,
                (index >> 8) & 255,
                index & 255
            ),
            timestamp_ms: now_ms,
            ..Default::default()
        }
        .encode_to_vec();
        let info_len = (variant.len() + overlay.len()) as u64;
        let snap_len = key_len(1)
            + encoded_len_varint(seq)
            + key_len(2)
            + encoded_len_varint(now_ms)
            + key_len(3)
            + encoded_len_varint(info_len)
            + info_len as usize;
        let mut buf =
            Vec::with_capacity(key_len(2) + encoded_len_varint(snap_len as u64) + snap_len);
        // AgentMessage.snapshot = 2
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(snap_len as u64, &mut buf);
        // Snapshot.seq = 1, .sample_ms = 2, .info = 3
        encode_key(1, WireType::Varint, &mut buf);
        encode_varint(seq, &mut buf);
        encode_key(2, WireType::Varint, &mut buf);
        encode_varint(now_ms, &mut buf);
        encode_key(3, WireType::LengthDelimited, &mut buf);
        encode_varint(info_len, &mut buf);
        buf.put_slice(variant);
        buf.put_slice(&overlay);
        Bytes::from(buf)
    }

    fn hello(&self, id: &str, interval_ms: u32) -> Bytes {
        Bytes::from(
            AgentMessage {
                msg: Some(agent_message::Msg::Hello(AgentHello {
                    protocol_version: PushProtocol::V1 as u32,
                    agent_version: concat!("hmonitor-load ", env!("CARGO_PKG_VERSION")).into(),
                    host_id: id.to_owned(),
                    hostname: id.to_owned(),
                    driver_version: Some("580.95.05".into()),
                    cuda_version: Some("13.0".into()),
                    gpus: self.hello_gpus.clone(),
                    interval_ms,
                    // A key per id, as real agents with a state directory send: each simulated
                    // host is pinned at its first connection, like a real fleet.
                    host_key: host_key(id),
                })),
            }
            .encode_to_vec(),
        )
    }
}

fn disk(device: &str, mount: &str, fstype: &str, total_gib: u64, used_gib: u64) -> DiskInfo {
    DiskInfo {
        device: device.into(),
        used: used_gib << 30,
        total: total_gib << 30,
        mount: mount.into(),
        fstype: fstype.into(),
        avail: (total_gib - used_gib) << 30,
    }
}

// --- agents ---------------------------------------------------------------------------------

struct AgentSpec {
    index: usize,
    addr: SocketAddr,
    token: String,
    source: Option<Ipv4Addr>,
    connect_at: tokio::time::Instant,
    /// Frames go out at `epoch + phase + k × period`, the same grid for every agent.
    epoch: tokio::time::Instant,
    phase: Duration,
    period: Duration,
}

/// Agents send a few KiB per frame and read almost nothing: small buffers keep 10,000 of them
/// cheap in this process (the hub's cost is what is measured).
fn agent_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

async fn dial(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    // Frames are whole messages: waiting for more (Nagle) would only add latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

type Ws = WebSocketStream<TcpStream>;

/// Completes once the run is over. (The guard `wait_for` returns is dropped here, so that no
/// task holds it across an await.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn agent(
    a: AgentSpec,
    template: Arc<Template>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(a.connect_at) => {}
        _ = stopped(&mut stop) => return,
    }
    let id = format!("load-{}", a.index);
    let mut ws = match connect_agent(&a, &template, &id).await {
        Ok(ws) => ws,
        Err(AgentFail::Refused) => {
            shared.agents_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(AgentFail::Connect(e)) => {
            if shared.agents_connect_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("hmonitor-load: agent {id}: {e}");
            }
            return;
        }
    };
    shared.agents_accepted.fetch_add(1, Ordering::Relaxed);
    shared.agents_connected.fetch_add(1, Ordering::Relaxed);

    // The first frame at the agent's slot in the period, so that N agents' frames are spread
    // evenly rather than all at the top of each second.
    let since = tokio::time::Instant::now().saturating_duration_since(a.epoch);
    let p = a.period.as_nanos().max(1);
    let k = since
        .as_nanos()
        .saturating_sub(a.phase.as_nanos())
        .div_ceil(p);
    let first = a.epoch + a.phase + Duration::from_nanos(u64::try_from(k * p).unwrap_or(u64::MAX));
    let mut tick = tokio::time::interval_at(first, a.period);
    // A generator that falls behind sends fewer frames (reported), not bursts.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let stopped = loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let frame = template.snapshot(a.index, &id, seq, unix_ms(SystemTime::now()));
                let len = frame.len() as u64;
                shared.record_send(a.index, seq);
                if ws.send(Message::Binary(frame)).await.is_err() {
                    break false;
                }
                shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            msg = ws.next() => match msg {
                // Acks and interval changes need no answer from a simulated agent.
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                _ => break false,
            },
            _ = stopped(&mut stop) => break true,
        }
    };
    shared.agents_connected.fetch_sub(1, Ordering::Relaxed);
    if stopped {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    } else {
        shared.agents_closed.fetch_add(1, Ordering::Relaxed);
    }
}

enum AgentFail {
    Refused,
    Connect(String),
}

async fn connect_agent(a: &AgentSpec, template: &Template, id: &str) -> Result<Ws, AgentFail> {
    let stream = dial(a.addr, a.source)
        .await
        .map_err(|e| AgentFail::Connect(format!("connect: {e}")))?;
    let mut req = format!("ws://{}/api/agent", a.addr)
        .into_client_request()
        .map_err(|e| AgentFail::Connect(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", a.token))
        .map_err(|e| AgentFail::Connect(format!("token: {e}")))?;
    req.headers_mut().insert("authorization", bearer);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(agent_ws_config()))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) if r.status().as_u16() == 401 => {
                    AgentFail::Refused
                }
                e => AgentFail::Connect(format!("upgrade: {e}")),
            })?;
    let interval_ms = u32::try_from(a.period.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    ws.send(Message::Binary(template.hello(id, interval_ms)))
        .await
        .map_err(|e| AgentFail::Connect(format!("hello: {e}")))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) => return HubMessage::decode(b.as_ref()).ok(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                _ => return None,
            }
        }
        None
    })
    .await;
    match answer {
        Ok(Some(HubMessage {
            msg: Some(hub_message::Msg::Accepted(_)),
        })) => Ok(ws),
        Ok(Some(HubMessage {
            msg: Some(hub_message::Msg::Refused(r)),
        })) => {
            eprintln!("hmonitor-load: agent {id} refused: {}", r.reason);
            Err(AgentFail::Refused)
        }
        Ok(_) => Err(AgentFail::Refused),
        Err(_) => Err(AgentFail::Connect("no answer to hello within 10 s".into())),
    }
}

// --- browsers -------------------------------------------------------------------------------

/// The parts of a `LiveEvent` a latency probe needs. Decoding this skips the report inside
/// (prost steps over unknown fields), which is all that a browser's own work would add.
#[derive(Clone, PartialEq, prost::Message)]
struct LiveEnvelope {
    #[prost(message, optional, tag = "1")]
    host: Option<HostEnvelope>,
    #[prost(uint64, tag = "4")]
    sent_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HostEnvelope {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint64, tag = "8")]
    seq: u64,
}

struct BrowserResult {
    index: usize,
    frames: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    /// Frames skipped: a seq more than one past the previous from the same agent.
    missing: u64,
    /// Frames not newer than one already seen (a resynchronisation resends the latest).
    stale: u64,
    /// Frames whose send time is no longer known (more than `RING` frames late) or not ours.
    unmatched: u64,
    closed: bool,
}

async fn browser(
    index: usize,
    url: String,
    token: Option<String>,
    agents: usize,
    full_decode: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> BrowserResult {
    let mut r = BrowserResult {
        index,
        frames: 0,
        bytes: 0,
        latencies_us: Vec::new(),
        missing: 0,
        stale: 0,
        unmatched: 0,
        closed: false,
    };
    let ws = async {
        let mut req = url.as_str().into_client_request()?;
        if let Some(t) = &token {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                req.headers_mut().insert("authorization", v);
            }
        }
        let addr = hub_addr(&url).map_err(|e| std::io::Error::other(e.to_string()))?;
        let stream = dial(addr, None).await?;
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
        Ok::<_, tokio_tungstenite::tungstenite::Error>(ws)
    }
    .await;
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            shared
                .browsers_connect_errors
                .fetch_add(1, Ordering::Relaxed);
            eprintln!("hmonitor-load: browser {index}: {e}");
            return r;
        }
    };
    shared.browsers_connected.fetch_add(1, Ordering::Relaxed);
    let mut last_seq = vec![0u64; agents];
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stopped(&mut stop) => break,
        };
        let bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(_)) => continue,
            _ => {
                r.closed = true;
                shared.browsers_closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let host = if full_decode {
            hmonitor_proto::LiveEvent::decode(bytes.as_ref())
                .ok()
                .and_then(|e| match e.event {
                    Some(hmonitor_proto::live_event::Event::Host(h)) => Some((h.id, h.seq)),
                    _ => None,
                })
        } else {
            LiveEnvelope::decode(bytes.as_ref())
                .ok()
                .and_then(|e| e.host)
                .map(|h| (h.id, h.seq))
        };
        let Some((id, seq)) = host else { continue };
        let Some(agent) = id
            .strip_prefix("load-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < agents)
        else {
            continue;
        };
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let last = last_seq[agent];
        if seq <= last {
            if measuring {
                r.stale += 1;
            }
            continue;
        }
        last_seq[agent] = seq;
        if !measuring {
            continue;
        }
        if last > 0 {
            r.missing += seq - last - 1;
        }
        r.frames += 1;
        r.bytes += bytes.len() as u64;
        match shared.latency_us(agent, seq) {
            Some(us) => r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX)),
            None => r.unmatched += 1,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    r
}

// --- measurements from /proc ----------------------------------------------------------------

fn clock_ticks() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine spent busy (all but idle and iowait), in clock ticks.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let t: Vec<u64> = cpu
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = t.iter().take(8).sum();
    Some(all.saturating_sub(*t.get(3)?).saturating_sub(*t.get(4)?))
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft open-files limit of a process.
fn proc_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The hub's own counters, from `/healthz` (plain HTTP/1.1, no client library needed).
async fn healthz(addr: SocketAddr, token: Option<&str>) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req =
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.take(1 << 20).read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        let json = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(json).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()?
}

/// A stable 32-byte key for a simulated host id (not secret: load runs are tests).
fn host_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    while key.len() < 32 {
        for b in id.bytes().chain(key.len().to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        key.extend_from_slice(&h.to_le_bytes());
    }
    key.truncate(32);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_as_one_complete_report() {
        let t = Template::new(8, 16);
        let frame = t.snapshot(42, "load-42", 7, 1_700_000_000_000);
        let msg = AgentMessage::decode(frame.as_ref()).expect("decodes");
        let Some(agent_message::Msg::Snapshot(s)) = msg.msg else {
            panic!("not a snapshot: {msg:?}");
        };
        assert_eq!(s.seq, 7);
        assert_eq!(s.sample_ms, 1_700_000_000_000);
        let info = s.info.expect("info");
        assert_eq!(info.id, "load-42");
        assert_eq!(info.ip, "10.0.0.42");
        assert_eq!(info.timestamp_ms, 1_700_000_000_000);
        assert_eq!(info.gpus.len(), 8);
        assert_eq!(info.gpus.iter().map(|g| g.procs.len()).sum::<usize>(), 16);
        assert_eq!(info.disks.len(), 4);
        assert!(info.gpus[0].procs[0].username.is_some());
        // "A few KiB", like a real 8-GPU host.
        assert!((2_000..8_000).contains(&frame.len()), "{}", frame.len());
    }

    #[test]
    fn send_times_are_found_by_agent_and_seq_until_recycled() {
        let s = Shared {
            epoch: Instant::now(),
            measuring: AtomicBool::new(true),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            agents_accepted: AtomicU64::new(0),
            agents_connected: AtomicU64::new(0),
            agents_refused: AtomicU64::new(0),
            agents_connect_errors: AtomicU64::new(0),
            agents_closed: AtomicU64::new(0),
            browsers_connected: AtomicU64::new(0),
            browsers_connect_errors: AtomicU64::new(0),
            browsers_closed: AtomicU64::new(0),
            sent_at: (0..2)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        };
        s.record_send(1, 5);
        assert!(s.latency_us(1, 5).is_some());
        assert!(s.latency_us(0, 5).is_none());
        s.record_send(1, 5 + RING as u64);
        assert!(s.latency_us(1, 5).is_none());
        assert!(s.latency_us(1, 5 + RING as u64).is_some());
        assert!(s.latency_us(9, 1).is_none());
    }

    #[test]
    fn the_envelope_reads_a_live_event_without_its_report() {
        let t = Template::new(2, 3);
        let Some(agent_message::Msg::Snapshot(s)) =
            AgentMessage::decode(t.snapshot(1, "load-1", 3, 1).as_ref())
                .expect("decodes")
                .msg
        else {
            panic!("snapshot");
        };
        let event = hmonitor_proto::LiveEvent {
            event: Some(hmonitor_proto::live_event::Event::Host(
                hmonitor_proto::HostState {
                    id: "load-1".into(),
                    seq: 3,
                    info: s.info,
                    ..Default::default()
                },
            )),
            sent_ms: 9,
        };
        let e = LiveEnvelope::decode(event.encode_to_vec().as_slice()).expect("decodes");
        let h = e.host.expect("host");
        assert_eq!((h.id.as_str(), h.seq, e.sent_ms), ("load-1", 3, 9));
    }

    #[test]
    fn proc_readers_parse_this_process() {
        let me = std::process::id();
        assert!(proc_cpu_ticks(me).is_some());
        assert!(proc_rss_kib(me).is_some_and(|k| k > 0));
        assert!(proc_nofile(me).is_some());
        assert!(machine_busy_ticks().is_some());
        assert_eq!(
            hub_addr("ws://127.0.0.1:5000/x").expect("addr"),
            "127.0.0.1:5000".parse::<SocketAddr>().expect("addr")
        );
        assert!(hub_addr("http://x").is_err());
    }
}
