//! The readable table printed by `hmonitor --once`.

use std::fmt::Write;

use hmonitor_proto::{ErrorKind, GpuInfo, HostInfo};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes as GiB with one decimal ("12.3"), or "n/a".
fn gib(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".to_owned(), |b| format!("{:.1}", b as f64 / GIB))
}

fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v}{unit}"))
}

/// Running time in the page's human form: "45 s", "12 min", "3 h 12 min", "2 d 4 h".
pub fn human_duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

fn gpu_state(g: &GpuInfo) -> &'static str {
    match ErrorKind::try_from(g.err_kind).unwrap_or(ErrorKind::Unknown) {
        ErrorKind::None if g.procs.is_empty() => "free",
        ErrorKind::None => "in use",
        ErrorKind::Lost => "LOST",
        _ => "ERROR",
    }
}

pub fn table(h: &HostInfo) -> String {
    let mut out = String::new();
    let load = h.load.map_or_else(
        || "n/a".to_owned(),
        |l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen),
    );
    let _ = writeln!(
        out,
        "{} ({})  host {}  ip {}  {}  kernel {}",
        h.id,
        if h.stale { "STALE" } else { "live" },
        h.hostname,
        if h.ip.is_empty() { "n/a" } else { &h.ip },
        h.os,
        h.kernel
    );
    let _ = writeln!(
        out,
        "cpu {} of {} cores  mem {}/{} GiB  load {}  up {}  driver {}  CUDA {}",
        opt(h.cpu_util.map(|c| format!("{c:.0}")), "%"),
        h.cpu_count,
        gib(h.mem_used),
        gib(h.mem_total),
        load,
        h.uptime_s.map_or_else(|| "n/a".to_owned(), human_duration),
        h.driver_version.as_deref().unwrap_or("n/a"),
        h.cuda_version.as_deref().unwrap_or("n/a"),
    );
    if !h.err.is_empty() {
        let _ = writeln!(out, "error: {}", h.err);
    }
    if !h.gpus.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<4}{:<24}{:<8}{:>16}{:>6}{:>6}{:>6}{:>8}{:>14}",
            "GPU", "NAME", "STATE", "MEM GiB", "UTIL", "TEMP", "FAN", "PSTATE", "POWER W"
        );
    }
    for g in &h.gpus {
        let power = match (g.power_draw_mw, g.power_limit_mw) {
            (Some(d), Some(l)) => format!("{}/{}", d / 1000, l / 1000),
            (Some(d), None) => format!("{}", d / 1000),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<4}{:<24}{:<8}{:>16}{:>6}{:>6}{:>6}{:>8}{:>14}",
            g.id,
            g.name,
            gpu_state(g),
            format!("{}/{}", gib(g.mem_used), gib(g.mem_total)),
            opt(g.utilization, "%"),
            opt(g.temp, "C"),
            opt(g.fanspeed, "%"),
            opt(g.pstate.map(|p| format!("P{p}")), ""),
            power,
        );
        if !g.err.is_empty() {
            let _ = writeln!(out, "    error: {}", g.err);
        }
        for p in &g.procs {
            let _ = writeln!(
                out,
                "    pid {:<8} {:<12} {:<16} {:>8} GiB  sm {:>4}  {}{}",
                p.pid,
                p.username.as_deref().unwrap_or("?"),
                p.basename.as_deref().unwrap_or("?"),
                gib(p.mem),
                opt(p.utilization, "%"),
                p.expiration
                    .map_or_else(|| "n/a".to_owned(), human_duration),
                p.container
                    .as_deref()
                    .map(|c| format!("  container {}", &c[..c.len().min(12)]))
                    .unwrap_or_default(),
            );
        }
    }
    if !h.disks.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<32}{:<28}{:>12}{:>12}",
            "DISK", "MOUNT", "USED GiB", "TOTAL GiB"
        );
    }
    for d in &h.disks {
        let _ = writeln!(
            out,
            "{:<32}{:<28}{:>12}{:>12}",
            d.device,
            d.mount,
            gib(Some(d.used)),
            gib(Some(d.total))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(42), "42 s");
        assert_eq!(human_duration(12 * 60 + 5), "12 min");
        assert_eq!(human_duration(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600 + 59), "2 d 4 h");
    }

    #[test]
    fn unavailable_values_print_as_na_not_zero() {
        let h = HostInfo {
            gpus: vec![GpuInfo {
                name: "NVIDIA H200".into(),
                fanspeed: None,
                temp: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = table(&h);
        assert!(t.contains("n/a"), "{t}");
        assert!(t.contains("0C"), "{t}");
    }
}
