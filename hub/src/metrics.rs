//! `/metrics`: every host's latest readings and the hub's own health in the Prometheus /
//! OpenMetrics text format, for labs that keep long-term series in Prometheus (or anything that
//! scrapes it).
//!
//! The registry is built afresh from the live state on each scrape: the state map already is
//! the source of truth, and a scrape every 15 s costs far less than keeping a second copy of
//! every reading up to date on each frame.
//!
//! A reading the agent could not take is absent from the output, never 0, as in the reports.
//! Readings of hosts that are not up are left out as well (their last values would be recorded
//! as current); `hmonitor_host_up` says which hosts are up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hmonitor_proto::{GpuInfo, HostInfo, HostState, HostStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::alerts::Alerts;
use crate::state::Hub;
use crate::App;

type Labels = Vec<(&'static str, String)>;
type G = Family<Labels, Gauge<f64, AtomicU64>>;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A gauge family registered under `name`; set through [`Gauges::set`].
struct Gauges {
    families: BTreeMap<&'static str, G>,
}

impl Gauges {
    fn new(reg: &mut Registry, specs: &[(&'static str, &'static str)]) -> Self {
        let mut families = BTreeMap::new();
        for (name, help) in specs {
            let f = G::default();
            reg.register(*name, *help, f.clone());
            families.insert(*name, f);
        }
        Self { families }
    }

    /// Sets `name{labels}` when the reading exists.
    fn set(&self, name: &str, labels: &Labels, value: Option<f64>) {
        if let (Some(f), Some(v)) = (self.families.get(name), value) {
            f.get_or_create(labels).set(v);
        }
    }
}

const HOST_GAUGES: &[(&str, &str)] = &[
    (
        "host_up",
        "1 while the host reports, 0 when it is down or never seen",
    ),
    (
        "host_last_seen_timestamp_seconds",
        "When the hub last received a report from the host",
    ),
    (
        "host_clock_skew_seconds",
        "The host's clock minus the hub's, from its last live sample (network delay included)",
    ),
    ("host_info", "Host facts as labels; always 1"),
    (
        "host_cpu_utilization_percent",
        "CPU utilization of the host",
    ),
    ("host_cpus", "Logical CPUs of the host"),
    ("host_memory_used_bytes", "Memory in use on the host"),
    ("host_memory_total_bytes", "Memory of the host"),
    ("host_load1", "Load average over 1 minute"),
    ("host_load5", "Load average over 5 minutes"),
    ("host_load15", "Load average over 15 minutes"),
    ("host_uptime_seconds", "Time since the host booted"),
    (
        "host_stale",
        "1 when part of the host's report is older than its stale limit",
    ),
    ("host_disk_used_bytes", "Space used on a filesystem"),
    ("host_disk_avail_bytes", "Space available to ordinary users"),
    ("host_disk_total_bytes", "Size of a filesystem"),
    ("gpu_utilization_percent", "GPU (SM) utilization"),
    (
        "gpu_memory_utilization_percent",
        "GPU memory controller utilization",
    ),
    ("gpu_memory_used_bytes", "GPU memory in use"),
    (
        "gpu_memory_reserved_bytes",
        "GPU memory reserved by the driver",
    ),
    ("gpu_memory_total_bytes", "GPU memory"),
    ("gpu_temperature_celsius", "GPU core temperature"),
    ("gpu_power_draw_watts", "GPU power draw"),
    ("gpu_power_limit_watts", "GPU power limit"),
    (
        "gpu_fan_speed_percent",
        "GPU fan speed (absent on fanless cards)",
    ),
    ("gpu_clock_sm_hertz", "GPU SM clock"),
    ("gpu_clock_memory_hertz", "GPU memory clock"),
    (
        "gpu_performance_state",
        "GPU performance state (0 = P0, fastest)",
    ),
    ("gpu_processes", "Processes on the GPU"),
    (
        "gpu_error",
        "1 when the GPU could not be read (err_kind says why)",
    ),
    (
        "gpu_user_memory_bytes",
        "GPU memory held by a user's processes, over all GPUs of the host",
    ),
    (
        "gpu_free",
        "1 when the GPU is free by the hub's default definition (what the page shows)",
    ),
    (
        "gpu_held",
        "1 while someone holds the GPU through hmonitor wait/hold (advisory)",
    ),
    (
        "gpu_held_remaining_seconds",
        "How long the GPU's hold lasts still",
    ),
];

/// The hub's counters and gauges, and every host's readings, as OpenMetrics text.
pub fn render(hub: &Hub, alerts: &Alerts) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("hmonitor");
    hub_health(&mut reg, hub);
    alert_metrics(&mut reg, alerts);
    let g = Gauges::new(&mut reg, HOST_GAUGES);
    for state in hub.hosts() {
        host(&g, &state);
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

fn hub_health(reg: &mut Registry, hub: &Hub) {
    let s = &hub.stats;
    let counters: [(&str, &str, &AtomicU64); 7] = [
        (
            "hub_frames_received",
            "Agent frames received and stored (rate() gives frames/s)",
            &s.frames_in,
        ),
        (
            "hub_bytes_received",
            "Bytes of agent frames received",
            &s.bytes_in,
        ),
        (
            "hub_frames_refused",
            "Agent frames refused (too large, malformed, out of order, over the rate limit)",
            &s.frames_refused,
        ),
        (
            "hub_connections_refused",
            "Agent and browser connections refused (token, id taken, per-address limit)",
            &s.connections_refused,
        ),
        (
            "hub_browsers_dropped",
            "Browsers dropped for not taking frames within the write deadline",
            &s.browsers_dropped,
        ),
        (
            "hub_browser_resyncs",
            "Browsers that fell behind and were resynchronised from the latest state",
            &s.browser_lagged,
        ),
        (
            "hub_frames_rate_limited",
            "Agent connections closed for sending frames faster than the per-agent limit",
            &s.frames_rate_limited,
        ),
    ];
    for (name, help, value) in counters {
        let c: Counter<u64> = Counter::default();
        c.inc_by(value.load(Ordering::Relaxed));
        reg.register(name, help, c);
    }
    let gauges: [(&str, &str, f64); 5] = [
        (
            "hub_agents_connected",
            "Agents connected over WebSocket",
            s.agents_connected.load(Ordering::Relaxed) as f64,
        ),
        (
            "hub_browsers_connected",
            "Browsers on the live feed",
            s.browsers_connected.load(Ordering::Relaxed) as f64,
        ),
        ("hub_hosts", "Hosts known to the hub", hub.len() as f64),
        ("hub_hosts_up", "Hosts reporting", hub.up_count() as f64),
        (
            "hub_uptime_seconds",
            "Time since the hub started",
            hub.started.elapsed().as_secs_f64(),
        ),
    ];
    for (name, help, value) in gauges {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        reg.register(name, help, g);
    }
}

/// `alert_firing{rule,kind,host,gpu,user,entity}` = 1 per firing alert (for labs that route
/// through Alertmanager), and each channel's message counts.
fn alert_metrics(reg: &mut Registry, alerts: &Alerts) {
    let firing = G::default();
    reg.register(
        "alert_firing",
        "1 for each alert that fires now (rule, kind, host, gpu, user, entity)",
        firing.clone(),
    );
    for r in alerts.firing() {
        let labels: Labels = vec![
            ("rule", r.rule.clone()),
            ("kind", r.kind.clone()),
            ("host", r.labels.host.clone()),
            (
                "gpu",
                r.labels.gpu.map(|g| g.to_string()).unwrap_or_default(),
            ),
            ("user", r.labels.user.clone()),
            ("entity", r.entity.clone()),
        ];
        firing.get_or_create(&labels).set(1.0);
    }
    let sent: Family<Labels, Counter<u64>> = Family::default();
    reg.register(
        "alert_messages",
        "Alert messages per channel and result (sent, failed after retries, retried, dropped with a full queue)",
        sent.clone(),
    );
    for c in alerts.channel_counters() {
        for (result, n) in [
            ("sent", c.1),
            ("failed", c.2),
            ("retried", c.3),
            ("dropped", c.4),
        ] {
            sent.get_or_create(&vec![
                ("channel", c.0.clone()),
                ("result", result.to_owned()),
            ])
            .inc_by(n);
        }
    }
}

fn opt<T: Into<f64>>(v: Option<T>) -> Option<f64> {
    v.map(Into::into)
}

fn u64f(v: Option<u64>) -> Option<f64> {
    // Byte counts below 2^53 are exact; larger ones (8 PiB) lose only low bits.
    v.map(|v| v as f64)
}

fn host(g: &Gauges, state: &HostState) {
    let host = vec![("host", state.id.clone())];
    let up = state.status == HostStatus::Up as i32;
    g.set("host_up", &host, Some(if up { 1.0 } else { 0.0 }));
    if state.last_seen_ms > 0 {
        g.set(
            "host_last_seen_timestamp_seconds",
            &host,
            Some(state.last_seen_ms as f64 / 1000.0),
        );
    }
    if let Some(skew) = state.clock_skew_ms {
        g.set("host_clock_skew_seconds", &host, Some(skew as f64 / 1000.0));
    }
    let Some(info) = state.info.as_ref().filter(|_| up) else {
        return;
    };
    let mut facts = host.clone();
    facts.extend([
        ("hostname", info.hostname.clone()),
        ("ip", info.ip.clone()),
        ("kernel", info.kernel.clone()),
        (
            "driver_version",
            info.driver_version.clone().unwrap_or_default(),
        ),
        (
            "cuda_version",
            info.cuda_version.clone().unwrap_or_default(),
        ),
        ("agent_version", info.agent_version.clone()),
    ]);
    g.set("host_info", &facts, Some(1.0));
    host_readings(g, &host, info);
    let now = hmonitor_proto::unix_ms(std::time::SystemTime::now());
    for gpu in &info.gpus {
        gpu_readings(g, &state.id, gpu);
        let labels = vec![("host", state.id.clone()), ("gpu", gpu.id.to_string())];
        let free = state.free_gpus.contains(&gpu.id);
        g.set("gpu_free", &labels, Some(if free { 1.0 } else { 0.0 }));
        if let Some(h) = gpu.hold.as_ref().filter(|h| h.until_ms > now) {
            let user = if h.username.is_empty() {
                format!("uid {}", h.uid)
            } else {
                h.username.clone()
            };
            let mut held = labels.clone();
            held.push(("user", user));
            g.set("gpu_held", &held, Some(1.0));
            let left = h.until_ms.saturating_sub(now) as f64 / 1000.0;
            g.set("gpu_held_remaining_seconds", &held, Some(left));
        }
    }
    // Memory per user over all GPUs; processes whose owner could not be read are "unknown".
    let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
    for p in info.gpus.iter().flat_map(|g| &g.procs) {
        if let Some(mem) = p.mem {
            let user = match (&p.username, p.uid) {
                (Some(u), _) => u.clone(),
                (None, Some(uid)) => format!("uid {uid}"),
                (None, None) => "unknown".to_owned(),
            };
            *per_user.entry(user).or_default() += mem;
        }
    }
    for (user, mem) in per_user {
        let labels = vec![("host", state.id.clone()), ("user", user)];
        g.set("gpu_user_memory_bytes", &labels, Some(mem as f64));
    }
}

fn host_readings(g: &Gauges, host: &Labels, info: &HostInfo) {
    g.set("host_cpu_utilization_percent", host, info.cpu_util);
    if info.cpu_count > 0 {
        g.set("host_cpus", host, Some(f64::from(info.cpu_count)));
    }
    g.set("host_memory_used_bytes", host, u64f(info.mem_used));
    g.set("host_memory_total_bytes", host, u64f(info.mem_total));
    if let Some(l) = &info.load {
        g.set("host_load1", host, Some(l.one));
        g.set("host_load5", host, Some(l.five));
        g.set("host_load15", host, Some(l.fifteen));
    }
    g.set("host_uptime_seconds", host, u64f(info.uptime_s));
    g.set("host_stale", host, Some(if info.stale { 1.0 } else { 0.0 }));
    for d in &info.disks {
        let mut labels = host.clone();
        labels.extend([
            ("mount", d.mount.clone()),
            ("device", d.device.clone()),
            ("fstype", d.fstype.clone()),
        ]);
        // The proto's disk sizes are plain (not optional): a disk is listed only when read.
        g.set("host_disk_used_bytes", &labels, Some(d.used as f64));
        g.set("host_disk_avail_bytes", &labels, Some(d.avail as f64));
        g.set("host_disk_total_bytes", &labels, Some(d.total as f64));
    }
}

fn gpu_readings(g: &Gauges, host: &str, gpu: &GpuInfo) {
    let labels = vec![
        ("host", host.to_owned()),
        ("gpu", gpu.id.to_string()),
        ("uuid", gpu.uuid.clone()),
        ("name", gpu.name.clone()),
    ];
    let mhz = |v: Option<u32>| v.map(|v| f64::from(v) * 1e6);
    let watts = |v: Option<u32>| v.map(|v| f64::from(v) / 1000.0);
    g.set("gpu_utilization_percent", &labels, opt(gpu.utilization));
    g.set(
        "gpu_memory_utilization_percent",
        &labels,
        opt(gpu.mem_utilization),
    );
    g.set("gpu_memory_used_bytes", &labels, u64f(gpu.mem_used));
    g.set("gpu_memory_reserved_bytes", &labels, u64f(gpu.mem_reserved));
    g.set("gpu_memory_total_bytes", &labels, u64f(gpu.mem_total));
    g.set("gpu_temperature_celsius", &labels, opt(gpu.temp));
    g.set("gpu_power_draw_watts", &labels, watts(gpu.power_draw_mw));
    g.set("gpu_power_limit_watts", &labels, watts(gpu.power_limit_mw));
    g.set("gpu_fan_speed_percent", &labels, opt(gpu.fanspeed));
    g.set("gpu_clock_sm_hertz", &labels, mhz(gpu.clock_sm_mhz));
    g.set("gpu_clock_memory_hertz", &labels, mhz(gpu.clock_mem_mhz));
    g.set("gpu_performance_state", &labels, opt(gpu.pstate));
    g.set("gpu_processes", &labels, Some(gpu.procs.len() as f64));
    let failed = gpu.err_kind != 0 || !gpu.err.is_empty();
    g.set("gpu_error", &labels, Some(if failed { 1.0 } else { 0.0 }));
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4), for clients that do not
/// ask for OpenMetrics (promtool, curl, older scrapers). The two differ here only in how
/// counters are named: OpenMetrics names the family `x` and its sample `x_total`; the classic
/// format names both `x_total`. `# EOF` and `# UNIT` exist only in OpenMetrics.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `GET /metrics` (behind the viewer gate, like `/api/hosts`): OpenMetrics when the client
/// accepts it (Prometheus does), else the classic text format.
pub async fn handler(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match render(&app.hub, &app.alerts) {
        Ok(body) if openmetrics => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_004)], to_text_004(&body)).into_response(),
        Err(e) => {
            tracing::error!("cannot encode /metrics: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_for_the_classic_format_and_the_rest_is_kept() {
        let om = "# HELP a_frames Frames.\n# TYPE a_frames counter\na_frames_total 3\n\
                  # HELP b Gauge.\n# TYPE b gauge\nb{host=\"x\"} 1.0\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_frames_total Frames.\n# TYPE a_frames_total counter\na_frames_total 3\n\
             # HELP b Gauge.\n# TYPE b gauge\nb{host=\"x\"} 1.0\n"
        );
    }
}
