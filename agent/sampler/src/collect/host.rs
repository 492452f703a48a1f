//! Host facts: name, primary address, CPU, memory, load, uptime, kernel and OS.
//!
//! Parsing: /proc/uptime through procfs (`Uptime`). The rest by hand, each for a reason:
//! procfs's `Meminfo` requires seventeen fields (gVisor and some container /proc views have
//! fewer) where we need two; its `LoadAverage` gives `f32`, which turns "0.10" into
//! 0.10000000149 on the wire; its `KernelStats` needs a `SystemInfo` and parses every per-CPU
//! line to give us one; and it has no parser for /proc/net/ipv6_route.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use hmonitor_proto::LoadAvg;
use procfs::FromRead;

/// Why a /proc or /etc text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no {0} in the text")]
    Missing(&'static str),
    #[error("{what}: cannot parse {value:?}")]
    Invalid { what: &'static str, value: String },
}

/// One sample of host facts. `None` (or, for the strings, the fallback documented on the field)
/// means the value could not be read; it never stands for 0.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// gethostname(2); empty only if both it and uname(2) failed.
    pub hostname: String,
    /// Primary address: `HMON_IP` when set, else the address of the interface holding the
    /// default route (IPv4, else IPv6).
    pub ip: Option<String>,
    /// Percent busy across all cores since the previous sample; `None` on the first sample
    /// (it takes two), or when no time passed between the two.
    pub cpu_util: Option<f64>,
    /// Online CPUs (the `cpuN` lines of /proc/stat, the same CPUs `cpu_util` covers); 0 only if
    /// neither /proc/stat nor the OS could say.
    pub cpu_count: u32,
    /// MemTotal − MemAvailable, bytes.
    pub mem_used: Option<u64>,
    /// MemTotal, bytes.
    pub mem_total: Option<u64>,
    pub load: Option<LoadAvg>,
    /// Whole seconds since boot.
    pub uptime_s: Option<u64>,
    /// Kernel release (uname -r); empty if unknown.
    pub kernel: String,
    /// PRETTY_NAME of /etc/os-release; "Linux" when there is none.
    pub os: String,
}

/// Cumulative CPU time of all cores, in clock ticks, from the `cpu ` line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + idle + iowait + irq + softirq + steal. guest and guest_nice are
    /// already counted in user and nice.
    pub total: u64,
    /// total − idle − iowait.
    pub busy: u64,
}

/// Samples [`HostFacts`]; keeps the previous CPU times, since utilization is a difference.
#[derive(Debug)]
pub struct HostReader {
    prev_cpu: Option<CpuTimes>,
    ip_override: Option<String>,
    /// Fixed until a reboot, which restarts the agent: read once.
    kernel: String,
    os: String,
}

impl HostReader {
    /// `ip_override` (HMON_IP) replaces the detected primary address when set and not empty.
    pub fn new(ip_override: Option<String>) -> Self {
        Self {
            prev_cpu: None,
            ip_override: ip_override.filter(|ip| !ip.is_empty()),
            kernel: kernel_release(),
            os: os_name(),
        }
    }

    /// Reads every fact now. Never fails: each fact that cannot be read is `None`.
    pub fn sample(&mut self) -> HostFacts {
        let stat = read_text("/proc/stat");
        let cpu = stat.as_deref().and_then(|text| {
            parse_cpu_line(text)
                .map_err(|e| tracing::debug!("/proc/stat: {e}"))
                .ok()
        });
        let cpu_util = match (self.prev_cpu, cpu) {
            (Some(prev), Some(cur)) => cpu_util(prev, cur),
            _ => None,
        };
        // When this read failed the old times stay: the next sample then averages over both
        // intervals, which is still a true figure.
        if cpu.is_some() {
            self.prev_cpu = cpu;
        }
        let cpu_count = stat
            .as_deref()
            .and_then(count_cpus)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(0);

        let mem = read_text("/proc/meminfo").and_then(|text| {
            parse_meminfo(&text)
                .map_err(|e| tracing::debug!("/proc/meminfo: {e}"))
                .ok()
        });
        let load = read_text("/proc/loadavg").and_then(|text| {
            parse_loadavg(&text)
                .map_err(|e| tracing::debug!("/proc/loadavg: {e}"))
                .ok()
        });

        HostFacts {
            hostname: hostname(),
            ip: self.ip_override.clone().or_else(primary_ip),
            cpu_util,
            cpu_count,
            mem_used: mem.and_then(|m| m.used()),
            mem_total: mem.map(|m| m.total),
            load,
            uptime_s: uptime_s(),
            kernel: self.kernel.clone(),
            os: self.os.clone(),
        }
    }
}

/// The `cpu ` (all cores) line of /proc/stat text, whole file or that line alone.
pub fn parse_cpu_line(stat_text: &str) -> Result<CpuTimes, ParseError> {
    let line = stat_text
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .ok_or(ParseError::Missing("`cpu ` line"))?;
    let mut values = Vec::with_capacity(10);
    for raw in line.split_whitespace() {
        values.push(raw.parse::<u64>().map_err(|_| ParseError::Invalid {
            what: "cpu time",
            value: raw.to_string(),
        })?);
    }
    // user nice system idle are there since Linux 1.0; iowait, irq, softirq and steal came
    // later, and a kernel without them spends no time in them.
    if values.len() < 4 {
        return Err(ParseError::Missing("user, nice, system and idle times"));
    }
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    let total = (0..8).map(at).fold(0u64, u64::saturating_add);
    let idle = at(3).saturating_add(at(4));
    Ok(CpuTimes {
        total,
        busy: total.saturating_sub(idle),
    })
}

/// Percent busy between two samples; `None` when no time passed or a counter went back (iowait
/// can, on some kernels).
pub fn cpu_util(prev: CpuTimes, cur: CpuTimes) -> Option<f64> {
    let total = cur.total.checked_sub(prev.total).filter(|&t| t > 0)?;
    let busy = cur.busy.checked_sub(prev.busy)?;
    Some((busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// The number of `cpuN` lines of /proc/stat: the online CPUs.
pub fn count_cpus(stat_text: &str) -> Option<u32> {
    let n = stat_text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// MemTotal and MemAvailable of /proc/meminfo, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    /// Absent before Linux 3.14.
    pub available: Option<u64>,
}

impl Memory {
    /// total − available.
    pub fn used(&self) -> Option<u64> {
        self.available.map(|a| self.total.saturating_sub(a))
    }
}

/// Parses /proc/meminfo. Values are in kB (KiB, in fact) there.
pub fn parse_meminfo(text: &str) -> Result<Memory, ParseError> {
    let field = |name: &'static str| -> Result<Option<u64>, ParseError> {
        let Some(rest) = text.lines().find_map(|l| l.strip_prefix(name)) else {
            return Ok(None);
        };
        let mut parts = rest.split_whitespace();
        let raw = parts.next().unwrap_or("");
        let value: u64 = raw.parse().map_err(|_| ParseError::Invalid {
            what: name,
            value: raw.to_string(),
        })?;
        let scale = match parts.next() {
            None => 1,
            Some("kB") => 1024,
            Some(unit) => {
                return Err(ParseError::Invalid {
                    what: name,
                    value: unit.to_string(),
                })
            }
        };
        Ok(Some(value.saturating_mul(scale)))
    };
    Ok(Memory {
        total: field("MemTotal:")?.ok_or(ParseError::Missing("MemTotal"))?,
        available: field("MemAvailable:")?,
    })
}

/// The three load averages of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut parts = text.split_whitespace();
    let mut next = |what: &'static str| -> Result<f64, ParseError> {
        let raw = parts.next().ok_or(ParseError::Missing(what))?;
        raw.parse().map_err(|_| ParseError::Invalid {
            what,
            value: raw.to_string(),
        })
    };
    Ok(LoadAvg {
        one: next("1-minute load")?,
        five: next("5-minute load")?,
        fifteen: next("15-minute load")?,
    })
}

/// PRETTY_NAME of os-release(5) text, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let value = match raw.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) => {
            let q = char::from(*q);
            let inner = raw.strip_prefix(q)?;
            unescape_shell(inner.strip_suffix(q).unwrap_or(inner))
        }
        _ => raw.to_string(),
    };
    (!value.is_empty()).then_some(value)
}

/// Undoes os-release's shell-style backslash escapes (`\"`, `\\`, `\$`, `` \` ``).
fn unescape_shell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The interface of the IPv4 default route in /proc/net/route text: destination and mask
/// 0.0.0.0, up, not a reject route; of several, the lowest metric (the first of equals, as the
/// kernel would pick).
pub fn default_route_iface_v4(text: &str) -> Option<String> {
    text.lines()
        .skip(1) // header
        .filter_map(|line| {
            // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT;
            // Flags and Mask in hex, Metric in decimal.
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let metric: u32 = f.get(6)?.parse().ok()?;
            let default = *f.get(1)? == "00000000" && *f.get(7)? == "00000000";
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            (default && usable).then(|| (metric, f[0]))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface.to_string())
}

/// The interface of the IPv6 default route in /proc/net/ipv6_route text: destination ::/0, up,
/// not a reject route (the kernel lists an unreachable ::/0 on `lo`); lowest metric wins.
pub fn default_route_iface_v6(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            // dest dest_plen src src_plen next_hop metric refcnt use flags iface, all hex.
            let f: Vec<&str> = line.split_whitespace().collect();
            let metric = u32::from_str_radix(f.get(5)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let iface = *f.get(9)?;
            let default = f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && iface != "lo";
            (default && usable).then_some((metric, iface))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface.to_string())
}

/// The address to report for `iface` out of (interface, address) pairs in getifaddrs order:
/// its first IPv4 address, or for `v6` its first global IPv6 address, a public one before a
/// unique-local (fc00::/7) one. Link-local, loopback and multicast addresses never count.
pub fn pick_address(addrs: &[(String, IpAddr)], iface: &str, v6: bool) -> Option<IpAddr> {
    let mut on_iface = addrs
        .iter()
        .filter(|(name, _)| name == iface)
        .map(|(_, a)| *a);
    if !v6 {
        return on_iface.find(IpAddr::is_ipv4);
    }
    let candidates: Vec<Ipv6Addr> = on_iface
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
        .filter(|a| {
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || link_local)
        })
        .collect();
    let unique_local = |a: &Ipv6Addr| a.segments()[0] & 0xfe00 == 0xfc00;
    candidates
        .iter()
        .find(|a| !unique_local(a))
        .or_else(|| candidates.first())
        .map(|a| IpAddr::V6(*a))
}

/// The primary address: that of the interface holding the default route.
fn primary_ip() -> Option<String> {
    let (iface, v6) = match read_text("/proc/net/route")
        .as_deref()
        .and_then(default_route_iface_v4)
    {
        Some(iface) => (iface, false),
        None => (
            read_text("/proc/net/ipv6_route")
                .as_deref()
                .and_then(default_route_iface_v6)?,
            true,
        ),
    };
    let addrs: Vec<(String, IpAddr)> = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|ifa| {
                let addr = ifa.address?;
                let ip = if let Some(a) = addr.as_sockaddr_in() {
                    IpAddr::V4(a.ip())
                } else {
                    IpAddr::V6(addr.as_sockaddr_in6()?.ip())
                };
                Some((ifa.interface_name, ip))
            })
            .collect(),
        Err(e) => {
            tracing::debug!("getifaddrs: {e}");
            return None;
        }
    };
    pick_address(&addrs, &iface, v6).map(|a| a.to_string())
}

fn hostname() -> String {
    match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(e) => {
            tracing::debug!("gethostname: {e}");
            nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_default()
        }
    }
}

fn kernel_release() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(e) => {
            tracing::debug!("uname: {e}");
            String::new()
        }
    }
}

/// os-release(5): /etc/os-release, else /usr/lib/os-release.
fn os_name() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .into_iter()
        .find_map(|path| read_text(path).as_deref().and_then(parse_os_release))
        .unwrap_or_else(|| "Linux".to_string())
}

fn uptime_s() -> Option<u64> {
    let bytes = std::fs::read("/proc/uptime")
        .map_err(|e| tracing::debug!("/proc/uptime: {e}"))
        .ok()?;
    let uptime = procfs::Uptime::from_read(bytes.as_slice())
        .map_err(|e| tracing::debug!("/proc/uptime: {e}"))
        .ok()?
        .uptime;
    // `as` would turn NaN or a negative into 0, a false reading.
    (uptime.is_finite() && uptime >= 0.0).then(|| uptime.floor() as u64)
}

fn read_text(path: impl AsRef<Path>) -> Option<String> {
    let path = path.as_ref();
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            tracing::debug!("{}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  22411 15 5502 48715 1179 3 61 864 100 0
cpu0 10384 0 2538 25887 114 0 15 418 0 0
cpu1 12027 15 2963 22827 1065 3 46 446 100 0
intr 2395316 28 9 0 0
ctxt 4512345
btime 1700000000
processes 12345
procs_running 2
procs_blocked 0
";

    #[test]
    fn cpu_line() {
        let t = parse_cpu_line(STAT).expect("parse");
        let total = 22411 + 15 + 5502 + 48715 + 1179 + 3 + 61 + 864;
        assert_eq!(
            t,
            CpuTimes {
                total,
                busy: total - 48715 - 1179,
            }
        );
        // An old kernel with four columns only.
        assert_eq!(
            parse_cpu_line("cpu  10 0 10 80\n"),
            Ok(CpuTimes {
                total: 100,
                busy: 20
            })
        );
        assert!(parse_cpu_line("cpu0 1 2 3 4\n").is_err());
        assert!(parse_cpu_line("cpu  1 2 x 4\n").is_err());
        assert!(parse_cpu_line("cpu  1 2\n").is_err());
    }

    #[test]
    fn utilization_between_samples() {
        let a = CpuTimes {
            total: 1000,
            busy: 100,
        };
        let b = CpuTimes {
            total: 1200,
            busy: 150,
        };
        assert_eq!(cpu_util(a, b), Some(25.0));
        assert_eq!(cpu_util(a, a), None);
        assert_eq!(cpu_util(b, a), None);
        // All idle is a real 0.
        let idle = CpuTimes {
            total: 1100,
            busy: 100,
        };
        assert_eq!(cpu_util(a, idle), Some(0.0));
    }

    #[test]
    fn cpu_count() {
        assert_eq!(count_cpus(STAT), Some(2));
        assert_eq!(count_cpus("cpu  1 2 3 4\n"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24684092 kB\nMemFree:        23856496 kB\n\
                    MemAvailable:   24299040 kB\nBuffers:            8472 kB\n";
        let m = parse_meminfo(text).expect("parse");
        assert_eq!(m.total, 24684092 * 1024);
        assert_eq!(m.used(), Some((24684092 - 24299040) * 1024));
        let old = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n").expect("parse");
        assert_eq!(old.used(), None);
        assert_eq!(
            parse_meminfo("MemFree: 10 kB\n"),
            Err(ParseError::Missing("MemTotal"))
        );
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("0.10 1.25 12.00 3/812 44120\n"),
            Ok(LoadAvg {
                one: 0.10,
                five: 1.25,
                fifteen: 12.0,
            })
        );
        assert!(parse_loadavg("0.10 1.25\n").is_err());
    }

    #[test]
    fn os_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n";
        assert_eq!(
            parse_os_release(debian).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("NAME=Arch\nPRETTY_NAME=Arch Linux\n").as_deref(),
            Some("Arch Linux")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME='Rocky Linux 9.3 (Blue Onyx)'\n").as_deref(),
            Some("Rocky Linux 9.3 (Blue Onyx)")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME=\"Say \\\"hi\\\" \\\\o/\"\n").as_deref(),
            Some("Say \"hi\" \\o/")
        );
        assert_eq!(parse_os_release("NAME=x\n"), None);
        assert_eq!(parse_os_release("PRETTY_NAME=\"\"\n"), None);
    }

    const ROUTE_HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn v4_default_route() {
        // This machine's own table: a default route through eth0.
        let text = format!(
            "{ROUTE_HEADER}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(default_route_iface_v4(&text).as_deref(), Some("eth0"));
    }

    #[test]
    fn v4_two_default_routes_lowest_metric_wins() {
        let text = format!(
            "{ROUTE_HEADER}wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eno1\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eno1\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
             wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(default_route_iface_v4(&text).as_deref(), Some("eno1"));
    }

    #[test]
    fn v4_no_default_route() {
        // Only docker0's network and a host route: no default.
        let text = format!(
            "{ROUTE_HEADER}docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
             eth0\t0100000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"
        );
        assert_eq!(default_route_iface_v4(&text), None);
        assert_eq!(default_route_iface_v4(ROUTE_HEADER), None);
        assert_eq!(default_route_iface_v4(""), None);
        // A reject ("unreachable") default route and one that is down do not count.
        let text = format!(
            "{ROUTE_HEADER}lo\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth1\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_route_iface_v4(&text), None);
    }

    /// This machine's /proc/net/ipv6_route: a default via eth0, and the kernel's unreachable
    /// ::/0 on lo (flags 00200200: RTF_REJECT, not up).
    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn v6_default_route() {
        assert_eq!(default_route_iface_v6(IPV6_ROUTE).as_deref(), Some("eth0"));
        // Without the eth0 default only the unreachable route on lo is left: no default.
        let without: String = IPV6_ROUTE
            .lines()
            .filter(|l| !l.contains("00000400"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(default_route_iface_v6(&without), None);
    }

    #[test]
    fn v6_only_host_two_defaults() {
        let text = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003     wlan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000064 00000001 00000000 00450003     enp5s0
";
        assert_eq!(default_route_iface_v6(text).as_deref(), Some("enp5s0"));
        // An IPv6-only host has no IPv4 default.
        assert_eq!(default_route_iface_v4(ROUTE_HEADER), None);
    }

    fn addr(iface: &str, ip: &str) -> (String, IpAddr) {
        (iface.to_string(), ip.parse().expect("ip"))
    }

    #[test]
    fn address_of_the_route_interface() {
        let addrs = [
            addr("lo", "127.0.0.1"),
            addr("docker0", "10.17.0.1"),
            addr("eno1", "192.168.1.20"),
            addr("eno1", "192.168.1.21"),
            addr("eno1", "fe80::1"),
            addr("eno1", "fd00::20"),
            addr("eno1", "2001:db8::20"),
        ];
        let v4 = pick_address(&addrs, "eno1", false);
        assert_eq!(v4, Some("192.168.1.20".parse().expect("ip")));
        let v6 = pick_address(&addrs, "eno1", true);
        assert_eq!(v6, Some("2001:db8::20".parse().expect("ip")));
        let ula_only = [addr("eth0", "fe80::2"), addr("eth0", "fd00::2")];
        let v6 = pick_address(&ula_only, "eth0", true);
        assert_eq!(v6, Some("fd00::2".parse().expect("ip")));
        assert_eq!(pick_address(&addrs, "wlan0", false), None);
        assert_eq!(pick_address(&[addr("eth0", "fe80::2")], "eth0", true), None);
    }

    #[test]
    fn sample_on_this_machine() {
        let mut reader = HostReader::new(None);
        let first = reader.sample();
        assert_eq!(first.cpu_util, None, "the first sample has no utilization");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = reader.sample();
        let util = second.cpu_util.expect("cpu_util on the second sample");
        assert!((0.0..=100.0).contains(&util));
        assert!(second.cpu_count >= 1);
        let (used, total) = (
            second.mem_used.expect("mem_used"),
            second.mem_total.expect("mem_total"),
        );
        assert!(used <= total && total > 0);
        assert!(second.load.is_some());
        assert!(second.uptime_s.is_some());
        assert!(!second.kernel.is_empty());
        assert!(!second.os.is_empty());
        assert!(!second.hostname.is_empty());
        if let Some(ip) = &second.ip {
            assert!(ip.parse::<IpAddr>().is_ok(), "{ip}");
        }
    }

    #[test]
    fn ip_override_wins() {
        let facts = HostReader::new(Some("10.9.8.7".to_string())).sample();
        assert_eq!(facts.ip.as_deref(), Some("10.9.8.7"));
        // An empty HMON_IP is no override.
        let reader = HostReader::new(Some(String::new()));
        assert_eq!(reader.ip_override, None);
    }
}
