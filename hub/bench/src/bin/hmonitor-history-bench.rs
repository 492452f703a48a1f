//! `hmonitor-history-bench`: the history store's figures (BENCHMARKS.md, "History").
//!
//! - ingest: samples of 10,000 agents with 8 GPUs each (host, 8 GPUs, 2 users per sample) stored
//!   the way the hub's writer thread stores them (batches of 4,096 samples per transaction,
//!   `synchronous=FULL`), against the peer of one transaction per sample; then the 1-minute
//!   roll-up of what was stored.
//! - query: one GPU sampled every 2 s for 30 days, rolled up; a 30-day query as the API answers
//!   it (1-hour tier, JSON encoded), against the same span from the 1-minute tier and from raw
//!   samples (what it would cost without roll-ups). Median over many runs.
//! - size: 10 hosts × 8 GPUs for one simulated day at 2 s, rolled up; the database's bytes per
//!   GPU per day (host, user and cluster series included).
//!
//! ```sh
//! hmonitor-history-bench --dir /tmp/hb            # all three
//! hmonitor-history-bench --dir /tmp/hb ingest     # one
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hmonitor_hub::history::query::{self, Tier};
use hmonitor_hub::history::store::{Store, HOUR_MS};
use hmonitor_hub::history::{GpuRec, Record, Retention, UserRec};

#[derive(Parser)]
#[command(about = "History store benchmark: ingest rate, 30-day query, bytes per GPU per day")]
struct Args {
    /// Directory for the benchmark databases (emptied first).
    #[arg(long, default_value = "target/history-bench")]
    dir: PathBuf,
    /// Simulated agents for the ingest figure.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Samples per agent for the ingest figure.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Samples stored one per transaction (the peer).
    #[arg(long, default_value_t = 1_000)]
    unbatched: usize,
    /// Runs of each query.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// What to run: ingest, query, size (default: all).
    what: Vec<String>,
}

const T0: i64 = 1_793_491_200_000;
const GIB: u64 = 1 << 30;

/// A small, fast, deterministic generator (xorshift64*): realistic variety, reproducible runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One sample of an 8-GPU host as an agent would report it: busy GPUs, two users.
fn record(rng: &mut Rng, host: &str, t: i64, gpus: u32) -> Record {
    let gpus: Vec<GpuRec> = (0..gpus)
        .map(|i| {
            let busy = rng.below(4) != 0;
            GpuRec {
                index: i,
                uuid: format!("GPU-{host}-{i}"),
                name: "NVIDIA H200".into(),
                vals: [
                    Some(if busy { 60 + rng.below(41) } else { 0 } as f64),
                    Some((rng.below(140_000) * 1024 * 1024) as f64),
                    Some((35 + rng.below(45)) as f64),
                    Some((90_000 + rng.below(610_000)) as f64),
                ],
                held: busy,
            }
        })
        .collect();
    let held = gpus.iter().filter(|g| g.held).count() as u32;
    Record {
        host: host.to_owned(),
        t,
        dur_ms: 2_000,
        host_vals: [
            Some(rng.below(10_000) as f64),
            Some((rng.below(500) * GIB) as f64),
            Some(rng.below(6_400) as f64),
            Some((rng.below(4_000) * GIB) as f64),
        ],
        users: vec![
            UserRec {
                user: "alice".into(),
                gpus: held.div_ceil(2),
                gpu_mem: 40 * GIB,
                idle_gpus: held.div_ceil(2) / 2,
                util_sum: Some(f64::from(held.div_ceil(2)) * 45.0),
                power_w: Some(f64::from(held.div_ceil(2)) * 350.0),
            },
            UserRec {
                user: "bob".into(),
                gpus: held / 2,
                gpu_mem: 20 * GIB,
                idle_gpus: 0,
                util_sum: Some(f64::from(held / 2) * 80.0),
                power_w: Some(f64::from(held / 2) * 600.0),
            },
        ],
        gpus,
        ack: None,
    }
}

fn fresh(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    Ok(path)
}

fn ingest(a: &Args) -> anyhow::Result<()> {
    let path = fresh(&a.dir, "ingest.sqlite")?;
    let mut store = Store::open(&path, Retention::default())?;
    let hosts: Vec<String> = (0..a.agents).map(|i| format!("node{i:05}")).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Round 0 registers the series (a hub's first minute); the measured rounds follow.
    let first: Vec<Record> = hosts.iter().map(|h| record(&mut rng, h, T0, 8)).collect();
    for chunk in first.chunks(4096) {
        store.insert(chunk)?;
    }
    let rounds: Vec<Record> = (1..=a.rounds)
        .flat_map(|r| {
            let t = T0 + r as i64 * 2_000;
            hosts
                .iter()
                .map(|h| record(&mut rng, h, t, 8))
                .collect::<Vec<_>>()
        })
        .collect();
    let start = Instant::now();
    for chunk in rounds.chunks(4096) {
        store.insert(chunk)?;
    }
    let batched = start.elapsed();
    let n = rounds.len();
    let gpu_rate = (n * 8) as f64 / batched.as_secs_f64();
    println!(
        "ingest, batched (4,096 samples per transaction): {n} host samples of {} agents × 8 GPUs in {:.2} s = {:.0} host samples/s = {:.0} GPU-samples/s",
        a.agents,
        batched.as_secs_f64(),
        n as f64 / batched.as_secs_f64(),
        gpu_rate
    );
    // The peer: one transaction (and one fsync) per sample.
    let t = T0 + (a.rounds as i64 + 1) * 2_000;
    let single: Vec<Record> = hosts
        .iter()
        .take(a.unbatched)
        .map(|h| record(&mut rng, h, t, 8))
        .collect();
    let start = Instant::now();
    for r in &single {
        store.insert(std::slice::from_ref(r))?;
    }
    let unbatched = start.elapsed();
    let peer_rate = (single.len() * 8) as f64 / unbatched.as_secs_f64();
    println!(
        "ingest, unbatched (1 sample per transaction): {} host samples in {:.2} s = {:.0} GPU-samples/s; batched is {:.1}× faster",
        single.len(),
        unbatched.as_secs_f64(),
        peer_rate,
        gpu_rate / peer_rate
    );
    let start = Instant::now();
    store.rollup(T0 + HOUR_MS)?;
    println!(
        "roll-up of the minute just stored ({} agents × 10 series): {:.2} s",
        a.agents,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn query_bench(a: &Args) -> anyhow::Result<()> {
    let path = fresh(&a.dir, "query.sqlite")?;
    let days = 30;
    let retention = Retention {
        raw: Duration::from_secs(400 * 86_400),
        ..Retention::default()
    };
    let mut store = Store::open(&path, retention)?;
    let mut rng = Rng(7);
    let step = 2_000;
    let n = days * 86_400_000 / step;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        batch.push(record(&mut rng, "q", T0 + i * step, 1));
        if batch.len() == 4096 {
            store.insert(&batch)?;
            batch.clear();
            // Roll up as the writer does, a few minutes at a time.
            store.rollup(T0 + i * step)?;
        }
    }
    store.insert(&batch)?;
    let end = T0 + n * step;
    store.rollup(end + 2 * HOUR_MS)?;
    println!(
        "query: 30 days of one GPU at 2 s ({n} samples) stored and rolled up in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    let conn = hmonitor_hub::history::store::open_reader(&path)?;
    let from = end - days * 86_400_000;
    let target = query::resolve(&conn, "q/gpu0").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut results = Vec::new();
    for (label, tier, runs) in [
        ("1-hour tier (what the API picks)", None, a.runs),
        ("1-minute tier", Some(Tier::Minute), a.runs / 4),
        ("raw samples", Some(Tier::Raw), (a.runs / 40).max(5)),
    ] {
        let mut times = Vec::with_capacity(runs);
        let mut points = 0;
        let mut bytes = 0;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let s = match tier {
                None => query::series(
                    &conn,
                    "q/gpu0",
                    "util",
                    from,
                    end,
                    end,
                    &Retention::default(),
                ),
                Some(tier) => {
                    query::series_in_tier(&conn, "q/gpu0", &target, "util", from, end, tier)
                }
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let json = serde_json::to_vec(&s)?;
            times.push(t.elapsed());
            points = s.t.len();
            bytes = json.len();
        }
        let m = median(times);
        results.push(m);
        println!(
            "query 30 days of one GPU, {label}: median {:.2} ms over {} runs ({points} points, {bytes} bytes of JSON)",
            m.as_secs_f64() * 1000.0,
            runs.max(1)
        );
    }
    println!(
        "query ratios: 1-minute tier {:.0}× and raw {:.0}× the 1-hour tier's time",
        results[1].as_secs_f64() / results[0].as_secs_f64(),
        results[2].as_secs_f64() / results[0].as_secs_f64()
    );
    Ok(())
}

fn size(a: &Args) -> anyhow::Result<()> {
    let path = fresh(&a.dir, "size.sqlite")?;
    let mut store = Store::open(&path, Retention::default())?;
    let hosts: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    let mut rng = Rng(42);
    let step = 2_000;
    let n = 86_400_000 / step;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        for h in &hosts {
            batch.push(record(&mut rng, h, T0 + i * step, 8));
        }
        if batch.len() >= 4096 {
            store.insert(&batch)?;
            batch.clear();
            store.rollup(T0 + i * step)?;
        }
    }
    store.insert(&batch)?;
    store.rollup(T0 + 86_400_000 + 2 * HOUR_MS)?;
    store
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .context("checkpoint")?;
    let bytes = std::fs::metadata(&path)?.len();
    let count = |table: &str| -> anyhow::Result<i64> {
        Ok(store
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    let gpus = hosts.len() as u64 * 8;
    println!(
        "size: 1 simulated day, {} hosts × 8 GPUs at 2 s ({} raw, {} 1-minute, {} 1-hour rows) stored in {:.0} s: {:.1} MiB = {:.2} MiB per GPU per day (host, user and cluster series included)",
        hosts.len(),
        count("raw")?,
        count("m1")?,
        count("h1")?,
        start.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0,
        bytes as f64 / gpus as f64 / 1048576.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    let run = || -> anyhow::Result<()> {
        std::fs::create_dir_all(&a.dir)?;
        let all = a.what.is_empty();
        let want = |w: &str| all || a.what.iter().any(|x| x == w);
        if want("ingest") {
            ingest(&a)?;
        }
        if want("query") {
            query_bench(&a)?;
        }
        if want("size") {
            size(&a)?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmonitor-history-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
