//! `hmonitor-alerts-bench`: what one alert evaluation cycle costs the hub (BENCHMARKS.md,
//! "Alerts"): the live map of 10,000 hosts × 8 GPUs (4 processes each on half the GPUs), and
//! 20 rules of every kind with scopes, judged as the hub judges them once per
//! `alerts.interval` (1 s by default). The peer, measured in the same run over the same map,
//! is one pass that only reads every host's GPUs (what any evaluation must at least do), and
//! the cycle with no rule. Median and p95 over the runs; the share of a core is the median
//! over the interval.
//!
//! ```sh
//! cargo run --release -p hmonitor-bench --bin hmonitor-alerts-bench -- --hosts 10000
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use hmonitor_hub::alerts::Alerts;
use hmonitor_hub::config::{self, ConfigFile};
use hmonitor_hub::state::{Credential, Hub};
use hmonitor_proto::{unix_ms, DiskInfo, GpuInfo, HostInfo, HostSource, ProcInfo};

#[derive(Parser)]
#[command(about = "Alert rule evaluation: one cycle over N hosts × 8 GPUs with 20 rules")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// Cycles measured (after 3 warm-up cycles).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Where the alerts store goes (emptied first).
    #[arg(long, default_value = "target/alerts-bench")]
    dir: PathBuf,
}

/// Twenty rules of every kind, with scopes, thresholds no healthy host meets (the usual
/// case: most cycles find nothing), over a channel that is never called; the same file the
/// hub's load benchmark gives the hub (`bench-hub.sh alerts`).
const RULES: &str = include_str!("../../../scripts/alerts-20.toml");

fn host(i: usize, gpus: usize) -> HostInfo {
    let g = (0..gpus)
        .map(|k| GpuInfo {
            id: i32::try_from(k).unwrap_or(0),
            uuid: format!("GPU-{i:05}-{k}"),
            name: "NVIDIA H200".into(),
            mem_total: Some(150 << 30),
            mem_used: Some(if k % 2 == 0 { 41 << 30 } else { 1 << 28 }),
            utilization: Some(if k % 2 == 0 { 60 } else { 0 }),
            temp: Some(40 + u32::try_from(k).unwrap_or(0)),
            power_draw_mw: Some(300_000),
            procs: if k % 2 == 0 {
                (0..4)
                    .map(|p| ProcInfo {
                        pid: 1000 + p,
                        uid: Some(1000 + i32::try_from(p).unwrap_or(0)),
                        username: Some(format!("user{p}")),
                        basename: Some("python".into()),
                        mem: Some(10 << 30),
                        ..Default::default()
                    })
                    .collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    HostInfo {
        id: format!("node-{i:05}"),
        gpus: g,
        disks: vec![
            DiskInfo {
                mount: "/".into(),
                used: 50 << 30,
                avail: 150 << 30,
                total: 200 << 30,
                ..Default::default()
            },
            DiskInfo {
                mount: "/data".into(),
                used: 5 << 40,
                avail: 3 << 40,
                total: 8 << 40,
                ..Default::default()
            },
        ],
        timestamp_ms: unix_ms(SystemTime::now()),
        ..Default::default()
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (p(0.5), p(0.95))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let hub = Hub::new(Duration::from_secs(1), &[]);
    for i in 0..args.hosts {
        let info = host(i, args.gpus);
        let id = info.id.clone();
        let conn = hub.next_conn_id();
        hub.claim(
            &id,
            conn,
            Credential::Internal,
            HostSource::Push,
            "127.0.0.1:1",
            Duration::from_secs(1),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        hub.ingest(&id, conn, 1, info);
    }
    let file = ConfigFile::parse(&args.dir.join("hub.toml"), RULES.to_owned())?;
    let a = config::Args::try_parse_from([
        std::ffi::OsStr::new("hmonitor-hub"),
        std::ffi::OsStr::new("--data-dir"),
        args.dir.as_os_str(),
    ])?;
    let cfg = config::resolve(&a, Some(&file), None)?;
    assert_eq!(cfg.alerts.rules.len(), 20, "20 rules");
    let with_rules = Alerts::open(cfg.alerts.clone(), &args.dir.join("with"))?;
    let none = Alerts::open(Default::default(), &args.dir.join("none"))?;

    let time = |f: &dyn Fn()| -> Vec<Duration> {
        for _ in 0..3 {
            f();
        }
        (0..args.runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect()
    };
    let read_only = time(&|| {
        let mut n = 0u64;
        hub.visit_hosts(|h| {
            if let Some(i) = &h.info {
                for g in &i.gpus {
                    n += u64::from(g.temp.unwrap_or(0)) + g.procs.len() as u64;
                }
            }
        });
        std::hint::black_box(n);
    });
    let empty = time(&|| {
        let _ = none.cycle(&hub);
    });
    let full = time(&|| {
        if let Err(e) = with_rules.cycle(&hub) {
            eprintln!("cycle: {e}");
        }
    });
    let (r50, r95) = stats(read_only);
    let (e50, e95) = stats(empty);
    let (f50, f95) = stats(full);
    println!(
        "{} hosts × {} GPUs, {} runs: read every GPU {r50:.2} ms (p95 {r95:.2}); cycle without rules {e50:.2} ms (p95 {e95:.2}); \
         cycle with 20 rules {f50:.2} ms (p95 {f95:.2}) = {:.1} % of a core at a 1 s interval, {:.1}× the read pass",
        args.hosts,
        args.gpus,
        args.runs,
        f50 / 10.0,
        f50 / r50
    );
    println!(
        "{{\"hosts\":{},\"gpus\":{},\"read_ms\":{r50:.3},\"empty_ms\":{e50:.3},\"rules20_ms\":{f50:.3},\"rules20_p95_ms\":{f95:.3}}}",
        args.hosts, args.gpus
    );
    Ok(())
}
