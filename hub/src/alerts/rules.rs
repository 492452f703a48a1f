//! The rules, judged against the hub's live map: which entities are past a threshold now
//! ([`evaluate`]), and whether an entity not found so can be judged at all ([`judgeable`]) —
//! a host that is down or a reading that is missing says nothing about a GPU's temperature,
//! so its alert neither resolves nor fires (unavailable is not zero).
//!
//! Cost: one pass over the map per cycle; nothing is allocated for an entity that raises no
//! alert.

use std::collections::HashMap;

use hmonitor_proto::{ErrorKind, GpuInfo, HostInfo, HostState, HostStatus};

use super::config::{Rule, RuleKind};
use super::model::{Labels, Level, Obs, Record};
use crate::state::Hub;

/// Hosts the alerts have seen, with their last report (kept in the store): after a restart,
/// one that never comes back is still noticed as down.
#[derive(Debug, Default)]
pub struct Known {
    hosts: HashMap<String, KnownHost>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct KnownHost {
    last_seen_ms: u64,
    generation: u64,
    /// Changed since last written to the store.
    dirty: bool,
}

impl Known {
    pub fn load(hosts: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            hosts: hosts
                .into_iter()
                .map(|(id, last_seen_ms)| {
                    (
                        id,
                        KnownHost {
                            last_seen_ms,
                            generation: 0,
                            dirty: false,
                        },
                    )
                })
                .collect(),
            generation: 0,
        }
    }

    fn see(&mut self, id: &str, last_seen_ms: u64) {
        let generation = self.generation;
        match self.hosts.get_mut(id) {
            // Only new hosts are written: what a restart needs is that the host existed (it
            // counts as down from the restart on), not its every report.
            Some(k) => {
                k.generation = generation;
                k.last_seen_ms = k.last_seen_ms.max(last_seen_ms);
            }
            None => {
                self.hosts.insert(
                    id.to_owned(),
                    KnownHost {
                        last_seen_ms,
                        generation,
                        dirty: true,
                    },
                );
            }
        }
    }

    pub fn forget(&mut self, id: &str) {
        self.hosts.remove(id);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.hosts.contains_key(id)
    }

    /// Hosts first seen since the last call: what to write to the store.
    pub fn take_dirty(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (id, k) in &mut self.hosts {
            if k.dirty {
                k.dirty = false;
                out.push((id.clone(), k.last_seen_ms));
            }
        }
        out
    }
}

/// Everything the rules find past their thresholds now. `started_ms`: when the hub started
/// (a known host absent since then counts as down from there, so it has `for` to come back).
/// `tracked`: host → rules with a record on it; only those need values in the hysteresis
/// band (which keep a firing alert firing), so nothing is built for the many that merely
/// come near a threshold.
pub fn evaluate(
    hub: &Hub,
    rules: &[Rule],
    known: &mut Known,
    tracked: &HashMap<String, Vec<usize>>,
    now_ms: u64,
    started_ms: u64,
) -> Vec<Obs> {
    let mut out = Vec::new();
    known.generation += 1;
    let any_host_down = rules.iter().any(|r| r.kind == RuleKind::HostDown);
    hub.visit_hosts(|h| {
        if h.last_seen_ms > 0 || h.status == HostStatus::NeverSeen as i32 {
            known.see(&h.id, h.last_seen_ms);
        }
        for (i, rule) in rules.iter().enumerate() {
            // The condition first, the scope only for what it found: patterns cost more
            // than the readings, and most cycles find nothing.
            let start = out.len();
            let band = tracked.get(&h.id).is_some_and(|r| r.contains(&i));
            judge_host(i, rule, h, band, now_ms, started_ms, &mut out);
            if out.len() > start && !rule.scope.hosts.allows(&[&h.id]) {
                out.truncate(start);
            }
        }
    });
    if any_host_down {
        let generation = known.generation;
        for (id, k) in &known.hosts {
            if k.generation == generation {
                continue;
            }
            // Known from before a restart and not back yet.
            for (i, rule) in rules.iter().enumerate() {
                if rule.kind == RuleKind::HostDown && rule.scope.hosts.allows(&[id]) {
                    out.push(down(i, id, k.last_seen_ms.max(started_ms), k.last_seen_ms));
                }
            }
        }
    }
    out
}

fn down(rule: usize, id: &str, since_ms: u64, last_seen_ms: u64) -> Obs {
    let summary = if last_seen_ms == 0 {
        format!("host {id} has never reported")
    } else {
        format!("host {id} stopped reporting")
    };
    Obs {
        rule,
        entity: id.to_owned(),
        level: Level::Active,
        since_ms: Some(since_ms),
        labels: Labels {
            host: id.to_owned(),
            ..Labels::default()
        },
        summary,
        value: None,
    }
}

fn judge_host(
    i: usize,
    rule: &Rule,
    h: &HostState,
    band: bool,
    now_ms: u64,
    started_ms: u64,
    out: &mut Vec<Obs>,
) {
    let up = h.status == HostStatus::Up as i32;
    if rule.kind == RuleKind::HostDown {
        // Connected (it has an address) but its first report not in yet: it is arriving, not
        // down. Seen on a loaded machine as a false "never reported" with `for = "0s"`.
        let arriving = h.status == HostStatus::NeverSeen as i32 && !h.addr.is_empty();
        if !up && !arriving {
            let since = if h.last_seen_ms == 0 {
                started_ms
            } else {
                h.last_seen_ms
            };
            out.push(down(i, &h.id, since.min(now_ms), h.last_seen_ms));
        }
        return;
    }
    let (true, Some(info)) = (up, h.info.as_ref()) else {
        return;
    };
    match rule.kind {
        RuleKind::HostDown => {}
        RuleKind::AgentStale => {
            if info.stale {
                let why = if info.err.is_empty() {
                    "a part of the report is late"
                } else {
                    &info.err
                };
                out.push(Obs {
                    rule: i,
                    entity: h.id.clone(),
                    level: Level::Active,
                    since_ms: None,
                    labels: Labels {
                        host: h.id.clone(),
                        ..Labels::default()
                    },
                    summary: format!("the report of {} is stale: {why}", h.id),
                    value: None,
                });
            }
        }
        RuleKind::DiskFull => disks(i, rule, h, info, band, out),
        RuleKind::GpuLost | RuleKind::GpuError | RuleKind::GpuTemp | RuleKind::IdleHog => {
            for g in &info.gpus {
                let start = out.len();
                gpu(i, rule, h, g, band, out);
                if out.len() > start && !gpu_in_scope(rule, g) {
                    out.truncate(start);
                }
            }
        }
    }
}

fn gpu_in_scope(rule: &Rule, g: &GpuInfo) -> bool {
    if rule.scope.gpus.is_any() {
        return true;
    }
    let index = g.id.to_string();
    rule.scope.gpus.allows(&[index.as_str(), &g.uuid, &g.name])
}

fn gpu_labels(h: &HostState, g: &GpuInfo) -> Labels {
    Labels {
        host: h.id.clone(),
        gpu: Some(g.id),
        gpu_uuid: g.uuid.clone(),
        ..Labels::default()
    }
}

fn gpu(i: usize, rule: &Rule, h: &HostState, g: &GpuInfo, band: bool, out: &mut Vec<Obs>) {
    // Only for an entity that raises an alert: formatting for every GPU of every host in
    // every cycle was most of a cycle's cost.
    let name = || {
        if g.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", g.name)
        }
    };
    match rule.kind {
        RuleKind::GpuLost | RuleKind::GpuError => {
            let (hit, what) = if rule.kind == RuleKind::GpuLost {
                (g.err_kind == ErrorKind::Lost as i32, "fell off the bus")
            } else {
                (gpu_error(g), "cannot be read")
            };
            if hit {
                out.push(Obs {
                    rule: i,
                    entity: format!("{}/gpu{}", h.id, g.id),
                    level: Level::Active,
                    since_ms: None,
                    labels: gpu_labels(h, g),
                    summary: format!("GPU {}{} of {} {what}: {}", g.id, name(), h.id, g.err),
                    value: None,
                });
            }
        }
        RuleKind::GpuTemp => {
            let Some(t) = g.temp.map(f64::from) else {
                return;
            };
            let Some(level) = level(t, rule.threshold, rule.clear, band) else {
                return;
            };
            out.push(Obs {
                rule: i,
                entity: format!("{}/gpu{}", h.id, g.id),
                level,
                since_ms: None,
                labels: gpu_labels(h, g),
                summary: format!(
                    "GPU {}{} of {} is at or above {} °C",
                    g.id,
                    name(),
                    h.id,
                    rule.threshold
                ),
                value: Some(t),
            });
        }
        RuleKind::IdleHog => {
            let Some(util) = g.utilization.map(f64::from) else {
                return;
            };
            // Idle is a threshold from above: at most max_util, clear 5 points over it.
            let Some(level) = level(-util, -rule.max_util, IDLE_CLEAR, band) else {
                return;
            };
            for p in &g.procs {
                let mem = p.mem.unwrap_or(0);
                if mem < rule.min_mem {
                    continue;
                }
                let user = p.username.clone().unwrap_or_else(|| {
                    p.uid
                        .map_or_else(|| "unknown user".to_owned(), |u| format!("uid {u}"))
                });
                if !rule.scope.users.is_any() && !rule.scope.users.allows(&[&user]) {
                    continue;
                }
                let process = p.basename.clone().unwrap_or_default();
                out.push(Obs {
                    rule: i,
                    entity: format!(
                        "{}/gpu{}/pid{}@{}",
                        h.id,
                        g.id,
                        p.pid,
                        p.started_ms.unwrap_or(0)
                    ),
                    level,
                    since_ms: None,
                    labels: Labels {
                        user: user.clone(),
                        pid: Some(p.pid),
                        process: process.clone(),
                        ..gpu_labels(h, g)
                    },
                    summary: format!(
                        "{user}'s {} (pid {}) holds {} on GPU {}{} of {}, which is idle (at most {}% busy)",
                        if process.is_empty() { "process" } else { &process },
                        p.pid,
                        hmonitor_common::free::human_bytes(mem),
                        g.id,
                        name(),
                        h.id,
                        rule.max_util
                    ),
                    value: Some(mem as f64),
                });
            }
        }
        _ => {}
    }
}

/// How far over the clear level an idle GPU's utilization may rise while its idle_hog alert
/// keeps firing (percentage points).
const IDLE_CLEAR: f64 = 5.0;

/// `value` against a threshold with hysteresis: at or over `threshold` is active; within
/// `clear` under it is the band, which only matters where a record exists (`band`).
fn level(value: f64, threshold: f64, clear: f64, band: bool) -> Option<Level> {
    if value >= threshold {
        Some(Level::Active)
    } else if band && value >= threshold - clear {
        Some(Level::Band)
    } else {
        None
    }
}

/// An error that is not a lost GPU or a reading the driver never offers.
fn gpu_error(g: &GpuInfo) -> bool {
    g.err_kind != ErrorKind::None as i32
        && g.err_kind != ErrorKind::Lost as i32
        && g.err_kind != ErrorKind::NotSupported as i32
}

/// Used share of a disk as `df` shows it: used / (used + available), so the blocks reserved
/// for root count as full.
fn disk_percent(used: u64, avail: u64, total: u64) -> Option<f64> {
    let base = if used + avail > 0 {
        used + avail
    } else {
        total
    };
    (base > 0).then(|| used as f64 * 100.0 / base as f64)
}

fn disks(i: usize, rule: &Rule, h: &HostState, info: &HostInfo, band: bool, out: &mut Vec<Obs>) {
    for d in &info.disks {
        let Some(pct) = disk_percent(d.used, d.avail, d.total) else {
            continue;
        };
        let Some(level) = level(pct, rule.threshold, rule.clear, band) else {
            continue;
        };
        if !rule.scope.mounts.allows(&[&d.mount]) {
            continue;
        }
        out.push(Obs {
            rule: i,
            entity: format!("{}/disk:{}", h.id, d.mount),
            level,
            since_ms: None,
            labels: Labels {
                host: h.id.clone(),
                mount: d.mount.clone(),
                ..Labels::default()
            },
            summary: format!("{} on {} is over {}% full", d.mount, h.id, rule.threshold),
            value: Some((pct * 10.0).round() / 10.0),
        });
    }
}

/// Whether `r`'s condition can be judged now: when it can, an alert the rules did not find
/// has ended; when it cannot (host down, reading missing), it stays as it is.
pub fn judgeable(hub: &Hub, rule: &Rule, r: &Record) -> bool {
    hub.with_host(&r.labels.host, |h| {
        if rule.kind == RuleKind::HostDown {
            return true;
        }
        let (true, Some(info)) = (h.status == HostStatus::Up as i32, h.info.as_ref()) else {
            return false;
        };
        match rule.kind {
            RuleKind::HostDown | RuleKind::AgentStale => true,
            // A stale report's disks are old readings: wait for fresh ones.
            RuleKind::DiskFull => !info.stale,
            RuleKind::GpuLost | RuleKind::GpuError => true,
            RuleKind::GpuTemp => {
                let gpu = info.gpus.iter().find(|g| Some(g.id) == r.labels.gpu);
                gpu.is_none_or(|g| g.temp.is_some())
            }
            RuleKind::IdleHog => {
                let gpu = info.gpus.iter().find(|g| Some(g.id) == r.labels.gpu);
                gpu.is_none_or(|g| g.utilization.is_some())
            }
        }
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_have_a_band_under_the_threshold_only_where_tracked() {
        assert_eq!(level(86.0, 85.0, 5.0, false), Some(Level::Active));
        assert_eq!(level(85.0, 85.0, 5.0, false), Some(Level::Active));
        assert_eq!(level(82.0, 85.0, 5.0, false), None);
        assert_eq!(level(82.0, 85.0, 5.0, true), Some(Level::Band));
        assert_eq!(level(79.0, 85.0, 5.0, true), None);
        // Idle: 3 % is at most 5 %; 8 % is within the 5-point band; 11 % is busy.
        assert_eq!(level(-3.0, -5.0, IDLE_CLEAR, true), Some(Level::Active));
        assert_eq!(level(-8.0, -5.0, IDLE_CLEAR, true), Some(Level::Band));
        assert_eq!(level(-11.0, -5.0, IDLE_CLEAR, true), None);
    }

    #[test]
    fn disk_share_counts_reserved_blocks_as_used() {
        assert_eq!(disk_percent(90, 10, 105), Some(90.0));
        assert_eq!(disk_percent(0, 0, 0), None);
        assert_eq!(disk_percent(50, 0, 100), Some(100.0));
    }
}
