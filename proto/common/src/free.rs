//! What "free" means, in one place: `hmonitor free` and `hmonitor wait` (judged by the agent
//! for its own GPUs), the hub's `GET /api/gpus` and the page (judged by the hub for every host)
//! all call [`judge`] through [`rows`].
//!
//! A GPU is free for a caller when its host reports, the GPU is readable (not lost, in error
//! or stale), no compute process is on it (the caller's own are allowed with `mine_ok`), the
//! memory in use (by others) is under `free_mem` and at least `min_mem` is free, its
//! utilization stayed at or under `max_util` throughout the last `settle` (judged from samples
//! already held in a [`Recent`] ring, never by waiting), and nobody else holds it.

use std::collections::VecDeque;
use std::time::Duration;

use hmonitor_proto::{ErrorKind, GpuHold, GpuInfo, HostInfo, ProcKind};
use serde::{Deserialize, Serialize};

use crate::parse::{parse_bytes, parse_span};

/// Memory in use under which a GPU can be free (the page's default threshold).
pub const DEFAULT_FREE_MEM: u64 = 1 << 30;
/// Utilization, percent, at or under which a GPU can be free.
pub const DEFAULT_MAX_UTIL: u32 = 5;
/// How long the utilization must have stayed low.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);
/// The longest settle anyone may ask for: what a [`Recent`] ring is sized to cover.
pub const MAX_SETTLE: Duration = Duration::from_secs(600);

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    /// At least this much memory free, bytes.
    pub min_mem: u64,
    /// Utilization at or under this, percent.
    pub max_util: u32,
    /// Memory in use (by others) under this, bytes.
    pub free_mem: u64,
    /// Utilization low for this long; zero: only the latest sample counts.
    pub settle: Duration,
    /// Case-insensitive part of the GPU's name, e.g. "A100".
    pub model: Option<String>,
    /// Who asks (a uid): with `mine_ok`, their processes and holds do not make a GPU busy.
    pub caller: Option<i32>,
    pub mine_ok: bool,
}

impl Default for Criteria {
    fn default() -> Self {
        Self {
            min_mem: 0,
            max_util: DEFAULT_MAX_UTIL,
            free_mem: DEFAULT_FREE_MEM,
            settle: DEFAULT_SETTLE,
            model: None,
            caller: None,
            mine_ok: false,
        }
    }
}

/// A GPU's state for someone looking for a free one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Free,
    /// Someone holds it (`hmonitor wait` / `hold`).
    Held,
    /// A process, memory in use or utilization says someone uses it.
    Busy,
    /// Idle now, but not for the whole settle time yet.
    Settling,
    /// Idle, but not what was asked for (too little memory, another model).
    Unsuitable,
    /// Fell off the bus (NVML_ERROR_GPU_IS_LOST).
    Lost,
    Error,
    /// Its readings are missing or stale.
    Unavailable,
    /// Its host does not report.
    Down,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Free,
        State::Held,
        State::Busy,
        State::Settling,
        State::Unsuitable,
        State::Lost,
        State::Error,
        State::Unavailable,
        State::Down,
    ];

    pub fn parse(name: &str) -> Option<State> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Held => "held",
            State::Busy => "busy",
            State::Settling => "settling",
            State::Unsuitable => "unsuitable",
            State::Lost => "lost",
            State::Error => "error",
            State::Unavailable => "unavailable",
            State::Down => "down",
        }
    }
}

/// One process on a GPU, as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowProc {
    pub pid: u32,
    pub uid: Option<i32>,
    pub user: Option<String>,
    pub name: Option<String>,
    pub mem: Option<u64>,
    pub running_s: Option<u64>,
}

/// One GPU of one host with its verdict: what `hmonitor free --json`, `status --json` and
/// `GET /api/gpus` print (the first seven fields are the documented minimum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRow {
    pub host: String,
    pub index: i32,
    pub uuid: String,
    pub name: String,
    pub mem_total: Option<u64>,
    pub mem_used: Option<u64>,
    pub util: Option<i32>,
    pub temp: Option<u32>,
    pub state: State,
    /// Why it is not free, in words; empty when it is.
    pub reason: String,
    /// Users of its compute processes, each once, in the order they appear.
    pub users: Vec<String>,
    pub procs: Vec<RowProc>,
    pub held_by: Option<GpuHold>,
    pub host_up: bool,
}

impl GpuRow {
    pub fn is_free(&self) -> bool {
        self.state == State::Free
    }

    /// Memory free, bytes, when both figures are known.
    pub fn mem_free(&self) -> Option<u64> {
        Some(self.mem_total?.saturating_sub(self.mem_used?))
    }
}

/// Best first: most memory free, then least busy, then host and index (stable output).
pub fn rank(rows: &mut [GpuRow]) {
    rows.sort_by(|a, b| {
        b.mem_free()
            .cmp(&a.mem_free())
            .then(a.util.cmp(&b.util))
            .then_with(|| a.host.cmp(&b.host))
            .then(a.index.cmp(&b.index))
    });
}

/// A host's recent utilization per GPU: the samples the settle time is judged from. Samples
/// closer together than `width` share one bucket (keeping the highest value), so a ring covers
/// [`MAX_SETTLE`] in a bounded number of buckets whatever the interval; judging from buckets
/// can only make a GPU wait longer, never count as free too early.
#[derive(Debug, Clone)]
pub struct Recent {
    width_ms: u64,
    cap: usize,
    /// GPU ids tracked per bucket (the highest id seen plus one).
    stride: usize,
    /// Each bucket's start, oldest first.
    starts: VecDeque<u64>,
    /// `stride` peaks per bucket, in the order of `starts`: the highest utilization of each
    /// GPU id in the bucket ([`UNKNOWN`]: unreadable, or absent, in some sample). One flat ring,
    /// so a host costs a few hundred bytes and a sample allocates nothing.
    peaks: VecDeque<u8>,
}

/// A utilization that could not be read: never counts as idle.
const UNKNOWN: u8 = u8::MAX;
/// GPU ids past this are not tracked (the contract allows 128 GPUs a host).
const MAX_TRACKED: usize = hmonitor_proto::limits::MAX_GPUS;

impl Recent {
    /// A ring of buckets `width` wide (at least 100 ms) covering [`MAX_SETTLE`].
    pub fn new(width: Duration) -> Self {
        let width_ms = u64::try_from(width.as_millis())
            .unwrap_or(u64::MAX)
            .max(100);
        let span = u64::try_from(MAX_SETTLE.as_millis()).unwrap_or(u64::MAX);
        let cap = usize::try_from(span / width_ms + 2).unwrap_or(usize::MAX);
        Self {
            width_ms,
            cap,
            stride: 0,
            starts: VecDeque::new(),
            peaks: VecDeque::new(),
        }
    }

    /// Takes one sample of `gpus` taken at `at_ms`; `stale`: the readings are old (a hung
    /// driver call repeats its last answer), so they count as unreadable, never as idle.
    pub fn push(&mut self, at_ms: u64, gpus: &[GpuInfo], stale: bool) {
        let ids = gpus
            .iter()
            .filter_map(|g| usize::try_from(g.id).ok())
            .filter(|&i| i < MAX_TRACKED);
        let stride = ids.clone().max().map_or(0, |m| m + 1);
        let last = self.starts.back().copied();
        if stride > self.stride || last.is_some_and(|s| at_ms < s) {
            // A GPU id never seen (or the clock went back): what came before cannot be
            // placed any more.
            self.starts.clear();
            self.peaks.clear();
            self.stride = self.stride.max(stride);
        }
        let fresh = match self.starts.back() {
            Some(&s) => at_ms >= s.saturating_add(self.width_ms),
            None => true,
        };
        if fresh {
            if self.starts.is_empty() {
                // Sized once for the whole span: growth by doubling would leave up to half
                // the ring's memory unused on every host.
                self.starts.reserve_exact(self.cap);
                self.peaks.reserve_exact(self.cap * self.stride);
            }
            if self.starts.len() >= self.cap {
                self.starts.pop_front();
                self.peaks.drain(..self.stride);
            }
            self.starts.push_back(at_ms);
            self.peaks.extend(std::iter::repeat_n(UNKNOWN, self.stride));
        }
        let base = self.peaks.len() - self.stride;
        for g in gpus {
            let Some(i) = usize::try_from(g.id).ok().filter(|&i| i < MAX_TRACKED) else {
                continue;
            };
            let u = match (
                g.utilization,
                g.err_kind == ErrorKind::None as i32 && !stale,
            ) {
                (Some(u), true) => u8::try_from(u.clamp(0, 100)).unwrap_or(100),
                _ => UNKNOWN,
            };
            let slot = &mut self.peaks[base + i];
            // The bucket's first sample sets it; later ones can only raise it.
            *slot = if fresh { u } else { (*slot).max(u) };
        }
    }

    /// The highest utilization of GPU `id` in the samples since `since_ms`, and whether the
    /// ring reaches back that far; `None` for the peak when some sample could not read it.
    fn peak_since(&self, id: i32, since_ms: u64) -> (Option<u8>, bool) {
        let covered = self.starts.front().is_some_and(|&s| s <= since_ms);
        let Some(i) = usize::try_from(id).ok().filter(|&i| i < self.stride) else {
            return (None, covered);
        };
        let mut peak = 0u8;
        // Samples further apart than this leave a stretch nobody watched (the host was down,
        // or not sampled): the window is not covered.
        let gap = self.width_ms.saturating_mul(2);
        let mut later: Option<u64> = None;
        for (n, &start) in self.starts.iter().enumerate().rev() {
            if later.is_some_and(|l| l.saturating_sub(start) > gap) {
                return (Some(peak), false);
            }
            // A bucket that ends after `since_ms` holds samples inside the window.
            if start.saturating_add(self.width_ms) <= since_ms {
                break;
            }
            match self.peaks[n * self.stride + i] {
                UNKNOWN => return (None, covered),
                u => peak = peak.max(u),
            }
            later = Some(start);
        }
        (Some(peak), covered)
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// Why a GPU is not free, with what the words need borrowed from the report: judging
/// allocates nothing (the hub judges every GPU of every frame); the words are made only where
/// they are shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Why<'a> {
    /// It is free.
    Nothing,
    HostDown,
    Lost,
    Error(&'a str),
    Stale,
    Unreadable,
    Held {
        by: &'a GpuHold,
        mins_left: u64,
    },
    Process {
        user: Option<&'a str>,
        uid: Option<i32>,
        name: Option<&'a str>,
        pid: u32,
        more: usize,
    },
    MemInUse {
        used: u64,
        limit: u64,
    },
    Util {
        util: i32,
        max: u32,
    },
    SettleBusy {
        peak: u8,
        settle_s: u64,
    },
    SettleUnreadable {
        settle_s: u64,
    },
    SettleShort {
        settle_s: u64,
    },
    TooLittleMem {
        free: u64,
        asked: u64,
    },
    OtherModel {
        name: &'a str,
        model: &'a str,
    },
}

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Nothing => Ok(()),
            Why::HostDown => f.write_str("the host does not report"),
            Why::Lost => f.write_str("fell off the bus (lost)"),
            Why::Error("") => f.write_str("cannot be read"),
            Why::Error(e) => f.write_str(e),
            Why::Stale => f.write_str("the host's report is stale"),
            Why::Unreadable => f.write_str("memory or utilization unreadable"),
            Why::Held { by, mins_left } => {
                write!(f, "held by {} for {mins_left} more min", holder_name(by))
            }
            Why::Process {
                user,
                uid,
                name,
                pid,
                more,
            } => {
                match (user, uid) {
                    (Some(u), _) => f.write_str(u)?,
                    (None, Some(uid)) => write!(f, "uid {uid}")?,
                    (None, None) => f.write_str("someone")?,
                }
                write!(f, " runs {} (pid {pid})", name.unwrap_or("a process"))?;
                if *more > 0 {
                    write!(f, " and {more} more")?;
                }
                Ok(())
            }
            Why::MemInUse { used, limit } => write!(
                f,
                "{} in use (free under {})",
                human_bytes(*used),
                human_bytes(*limit)
            ),
            Why::Util { util, max } => write!(f, "{util} % busy (free at ≤ {max} %)"),
            Why::SettleBusy { peak, settle_s } => {
                write!(f, "{peak} % busy within the last {settle_s} s (settle)")
            }
            Why::SettleUnreadable { settle_s } => {
                write!(
                    f,
                    "utilization unreadable within the last {settle_s} s (settle)"
                )
            }
            Why::SettleShort { settle_s } => {
                write!(f, "watched for less than the settle time ({settle_s} s)")
            }
            Why::TooLittleMem { free, asked } => write!(
                f,
                "{} free (asked for {})",
                human_bytes(*free),
                human_bytes(*asked)
            ),
            Why::OtherModel { name, model } => write!(f, "{name} is not a {model}"),
        }
    }
}

/// Whether `gpu` is free for `c`, and why not, in words. `now_ms` is on the clock of
/// `recent`'s samples.
pub fn judge(
    gpu: &GpuInfo,
    host_up: bool,
    host_stale: bool,
    recent: Option<&Recent>,
    now_ms: u64,
    c: &Criteria,
) -> (State, String) {
    let (state, why) = verdict(gpu, host_up, host_stale, recent, now_ms, c);
    (state, why.to_string())
}

/// [`judge`] without the words: what the hub computes for every GPU of every frame.
pub fn verdict<'a>(
    gpu: &'a GpuInfo,
    host_up: bool,
    host_stale: bool,
    recent: Option<&Recent>,
    now_ms: u64,
    c: &'a Criteria,
) -> (State, Why<'a>) {
    if !host_up {
        return (State::Down, Why::HostDown);
    }
    if gpu.err_kind == ErrorKind::Lost as i32 {
        return (State::Lost, Why::Lost);
    }
    if gpu.err_kind != ErrorKind::None as i32 {
        return (State::Error, Why::Error(&gpu.err));
    }
    if host_stale {
        return (State::Unavailable, Why::Stale);
    }
    let (Some(used), Some(total), Some(util)) = (gpu.mem_used, gpu.mem_total, gpu.utilization)
    else {
        return (State::Unavailable, Why::Unreadable);
    };
    let mine = |uid: Option<i32>| c.mine_ok && c.caller.is_some() && uid == c.caller;
    if let Some(h) = &gpu.hold {
        if h.until_ms > now_ms && !mine(Some(h.uid)) {
            let mins_left = h.until_ms.saturating_sub(now_ms).div_ceil(60_000);
            return (State::Held, Why::Held { by: h, mins_left });
        }
    }
    let mut others = gpu
        .procs
        .iter()
        .filter(|p| p.kind != ProcKind::Graphics as i32 && !mine(p.uid));
    if let Some(p) = others.next() {
        let why = Why::Process {
            user: p.username.as_deref(),
            uid: p.uid,
            name: p.basename.as_deref(),
            pid: p.pid,
            more: others.count(),
        };
        return (State::Busy, why);
    }
    let own: u64 = gpu
        .procs
        .iter()
        .filter(|p| mine(p.uid))
        .filter_map(|p| p.mem)
        .sum();
    let by_others = used.saturating_sub(own);
    if by_others >= c.free_mem {
        let why = Why::MemInUse {
            used: by_others,
            limit: c.free_mem,
        };
        return (State::Busy, why);
    }
    // The caller's own job explains its utilization.
    let own_job = gpu.procs.iter().any(|p| mine(p.uid));
    if !own_job {
        let max = i32::try_from(c.max_util).unwrap_or(i32::MAX);
        if util > max {
            return (
                State::Busy,
                Why::Util {
                    util,
                    max: c.max_util,
                },
            );
        }
        if !c.settle.is_zero() {
            let settle_ms = u64::try_from(c.settle.as_millis()).unwrap_or(u64::MAX);
            let settle_s = c.settle.as_secs();
            // Before the clock's start plus the settle time nothing can have been watched.
            let peak = match (recent, now_ms.checked_sub(settle_ms)) {
                (Some(r), Some(since)) => Some(r.peak_since(gpu.id, since)),
                _ => None,
            };
            match peak {
                Some((Some(peak), true)) if u32::from(peak) <= c.max_util => {}
                Some((Some(peak), _)) if u32::from(peak) > c.max_util => {
                    return (State::Settling, Why::SettleBusy { peak, settle_s });
                }
                Some((None, _)) => return (State::Settling, Why::SettleUnreadable { settle_s }),
                _ => return (State::Settling, Why::SettleShort { settle_s }),
            }
        }
    }
    let free = total.saturating_sub(used);
    if free < c.min_mem {
        let why = Why::TooLittleMem {
            free,
            asked: c.min_mem,
        };
        return (State::Unsuitable, why);
    }
    if let Some(model) = &c.model {
        if !gpu.name.to_lowercase().contains(&model.to_lowercase()) {
            let why = Why::OtherModel {
                name: &gpu.name,
                model,
            };
            return (State::Unsuitable, why);
        }
    }
    (State::Free, Why::Nothing)
}

fn holder_name(h: &GpuHold) -> String {
    if h.username.is_empty() {
        format!("uid {}", h.uid)
    } else {
        h.username.clone()
    }
}

/// Every GPU of one host's report as rows, judged for `c`.
pub fn rows(
    host: &str,
    info: &HostInfo,
    host_up: bool,
    recent: Option<&Recent>,
    now_ms: u64,
    c: &Criteria,
) -> Vec<GpuRow> {
    info.gpus
        .iter()
        .map(|g| {
            let (state, reason) = judge(g, host_up, info.stale, recent, now_ms, c);
            let mut users: Vec<String> = Vec::new();
            for p in &g.procs {
                if let Some(u) = p
                    .username
                    .clone()
                    .or_else(|| p.uid.map(|u| format!("uid {u}")))
                {
                    if !users.contains(&u) {
                        users.push(u);
                    }
                }
            }
            GpuRow {
                host: host.to_owned(),
                index: g.id,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                mem_total: g.mem_total,
                mem_used: g.mem_used,
                util: g.utilization,
                temp: g.temp,
                state,
                reason,
                users,
                procs: g
                    .procs
                    .iter()
                    .map(|p| RowProc {
                        pid: p.pid,
                        uid: p.uid,
                        user: p.username.clone(),
                        name: p.basename.clone(),
                        mem: p.mem,
                        running_s: p.expiration,
                    })
                    .collect(),
                held_by: g.hold.clone().filter(|h| h.until_ms > now_ms),
                host_up,
            }
        })
        .collect()
}

/// What `GET /api/gpus` (and a relayed `ClusterQuery`) asks: the criteria, which rows, and
/// how many free GPUs on one host are wanted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub criteria: Criteria,
    /// Only free GPUs, best first.
    pub free_only: bool,
    /// Only hosts whose id contains this.
    pub host: Option<String>,
    /// Only GPUs this user has a process on (or holds).
    pub user: Option<String>,
    /// With `free_only`: only hosts with at least this many free GPUs.
    pub count: usize,
    /// Only GPUs in one of these states (none: any), e.g. `state=free,held` for the page's
    /// "Free now" panel.
    pub states: Vec<State>,
}

/// The longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 1024;

impl Query {
    /// Reads `min_mem=20GiB&max_util=5&free_mem=1GiB&settle=30s&model=A100&host=gpu&user=alice
    /// &free=1&count=2`; an unknown key or a bad value is an error naming it.
    pub fn parse(q: &str) -> Result<Self, String> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(format!(
                "query is {} bytes (limit {MAX_QUERY_BYTES})",
                q.len()
            ));
        }
        let mut out = Query::default();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .map_err(|_| format!("{k}: not UTF-8"))?
                .into_owned();
            let c = &mut out.criteria;
            match k {
                "min_mem" => c.min_mem = parse_bytes(&v).map_err(|e| format!("min_mem: {e}"))?,
                "free_mem" => c.free_mem = parse_bytes(&v).map_err(|e| format!("free_mem: {e}"))?,
                "max_util" => c.max_util = parse_percent(&v)?,
                "settle" => c.settle = parse_settle(&v)?,
                "model" => c.model = Some(v).filter(|m| !m.is_empty()),
                "host" => out.host = Some(v).filter(|m| !m.is_empty()),
                "user" => out.user = Some(v).filter(|m| !m.is_empty()),
                "free" => out.free_only = crate::parse::parse_bool(&v)?,
                "count" => {
                    out.count = v
                        .parse()
                        .map_err(|_| format!("count: {v:?} is not a number"))?
                }
                "state" => {
                    for name in v.split(',').filter(|n| !n.is_empty()) {
                        out.states.push(State::parse(name).ok_or_else(|| {
                            format!("state: unknown state {name:?} (free, held, busy, settling, unsuitable, lost, error, unavailable, down)")
                        })?);
                    }
                }
                "token" => {} // the viewer gate's; not a criterion
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(out)
    }

    /// The query string [`Query::parse`] reads back (`caller` and `mine_ok` stay out: they
    /// are the asker's, known only where the uid is). Defaults are left out, so a hub applies
    /// its own (its `free_settle`).
    pub fn to_query_string(&self) -> String {
        let c = &self.criteria;
        let d = Criteria::default();
        let mut parts = Vec::new();
        if c.min_mem != d.min_mem {
            parts.push(format!("min_mem={}", c.min_mem));
        }
        if c.max_util != d.max_util {
            parts.push(format!("max_util={}", c.max_util));
        }
        if c.free_mem != d.free_mem {
            parts.push(format!("free_mem={}", c.free_mem));
        }
        if c.settle != d.settle {
            parts.push(format!("settle={}ms", c.settle.as_millis()));
        }
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        if let Some(m) = &c.model {
            parts.push(format!("model={}", enc(m)));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host={}", enc(h)));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={}", enc(u)));
        }
        if self.free_only {
            parts.push("free=1".into());
        }
        if self.count > 0 {
            parts.push(format!("count={}", self.count));
        }
        if !self.states.is_empty() {
            let names: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            parts.push(format!("state={}", names.join(",")));
        }
        parts.join("&")
    }

    /// Whether a row passes the host and user filters.
    pub fn keeps(&self, row: &GpuRow) -> bool {
        if let Some(h) = &self.host {
            if !row.host.contains(h.as_str()) {
                return false;
            }
        }
        if let Some(u) = &self.user {
            let holds = row.held_by.as_ref().is_some_and(|h| &h.username == u);
            if !holds && !row.users.iter().any(|x| x == u) {
                return false;
            }
        }
        if !self.states.is_empty() && !self.states.contains(&row.state) {
            return false;
        }
        !self.free_only || row.is_free()
    }
}

/// A utilization threshold: 0 to 100, "%" allowed.
pub fn parse_percent(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<u32>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(format!("{s:?} is not a percentage (0 to 100)")),
    }
}

/// A settle time: 0 to [`MAX_SETTLE`].
pub fn parse_settle(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d > MAX_SETTLE {
        return Err(format!("settle {s:?} is too long: at most 10m"));
    }
    Ok(d)
}

/// 1073741824 → "1.0 GiB"; what the views print for memory.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmonitor_proto::ProcInfo;

    const GIB: u64 = 1 << 30;

    fn gpu(id: i32, used: u64, util: i32) -> GpuInfo {
        GpuInfo {
            id,
            name: "NVIDIA A100-SXM4-80GB".into(),
            uuid: format!("GPU-{id}"),
            mem_total: Some(80 * GIB),
            mem_used: Some(used),
            utilization: Some(util),
            ..Default::default()
        }
    }

    fn proc_of(uid: i32, user: &str, mem: u64) -> ProcInfo {
        ProcInfo {
            pid: 100 + u32::try_from(uid).unwrap_or(0),
            uid: Some(uid),
            username: Some(user.into()),
            basename: Some("python".into()),
            mem: Some(mem),
            kind: ProcKind::Compute as i32,
            ..Default::default()
        }
    }

    fn idle_for(secs: u64, gpus: &[GpuInfo]) -> Recent {
        let mut r = Recent::new(Duration::from_secs(1));
        for t in 0..=secs {
            r.push(t * 1000, gpus, false);
        }
        r
    }

    #[test]
    fn each_reason_a_gpu_is_not_free() {
        let c = Criteria::default();
        let now = 60_000;
        let idle = gpu(0, 0, 0);
        let recent = idle_for(60, std::slice::from_ref(&idle));
        let state = |g: &GpuInfo, up: bool| judge(g, up, false, Some(&recent), now, &c).0;
        assert_eq!(state(&idle, true), State::Free);
        assert_eq!(state(&idle, false), State::Down);
        let mut lost = idle.clone();
        lost.err_kind = ErrorKind::Lost as i32;
        assert_eq!(state(&lost, true), State::Lost);
        let mut err = idle.clone();
        err.err_kind = ErrorKind::Unknown as i32;
        assert_eq!(state(&err, true), State::Error);
        assert_eq!(state(&gpu(0, 2 * GIB, 0), true), State::Busy);
        assert_eq!(state(&gpu(0, 0, 40), true), State::Busy);
        let mut used = idle.clone();
        used.procs.push(proc_of(1000, "alice", 100 << 20));
        let (s, why) = judge(&used, true, false, Some(&recent), now, &c);
        assert_eq!(s, State::Busy);
        assert!(why.contains("alice"), "{why}");
        let mut held = idle.clone();
        held.hold = Some(GpuHold {
            uid: 1000,
            username: "alice".into(),
            since_ms: 0,
            until_ms: now + 240_000,
        });
        let (s, why) = judge(&held, true, false, Some(&recent), now, &c);
        assert_eq!(
            (s, why.as_str()),
            (State::Held, "held by alice for 4 more min")
        );
        // An expired hold holds nothing.
        if let Some(h) = held.hold.as_mut() {
            h.until_ms = now - 1;
        }
        assert_eq!(state(&held, true), State::Free);
        // The caller's own process and memory, with mine_ok.
        let mine = Criteria {
            caller: Some(1000),
            mine_ok: true,
            ..Criteria::default()
        };
        let mut own = gpu(0, 10 * GIB, 90);
        own.procs.push(proc_of(1000, "alice", 10 * GIB));
        assert_eq!(
            judge(&own, true, false, Some(&recent), now, &c).0,
            State::Busy
        );
        assert_eq!(
            judge(&own, true, false, Some(&recent), now, &mine).0,
            State::Free
        );
        let big = Criteria {
            min_mem: 90 * GIB,
            ..Criteria::default()
        };
        assert_eq!(
            judge(&idle, true, false, Some(&recent), now, &big).0,
            State::Unsuitable
        );
        let h100 = Criteria {
            model: Some("h100".into()),
            ..Criteria::default()
        };
        assert_eq!(
            judge(&idle, true, false, Some(&recent), now, &h100).0,
            State::Unsuitable
        );
        let a100 = Criteria {
            model: Some("a100".into()),
            ..Criteria::default()
        };
        assert_eq!(
            judge(&idle, true, false, Some(&recent), now, &a100).0,
            State::Free
        );
    }

    #[test]
    fn settle_is_judged_from_the_samples_held() {
        let c = Criteria::default();
        let mut r = Recent::new(Duration::from_secs(2));
        // Busy until 40 s, idle after: free once 30 s of idle samples are held.
        for t in (0..=100u64).step_by(2) {
            let util = if t <= 40 { 80 } else { 0 };
            r.push(t * 1000, &[gpu(0, 0, util)], false);
            let (s, _) = judge(&gpu(0, 0, util), true, false, Some(&r), t * 1000, &c);
            let expect = if t <= 40 {
                State::Busy
            } else if t < 72 {
                State::Settling
            } else {
                State::Free
            };
            assert_eq!(s, expect, "at {t} s");
        }
        // A fresh ring has not watched long enough; settle 0 needs no history.
        let fresh = idle_for(5, &[gpu(0, 0, 0)]);
        assert_eq!(
            judge(&gpu(0, 0, 0), true, false, Some(&fresh), 5000, &c).0,
            State::Settling
        );
        let now_only = Criteria {
            settle: Duration::ZERO,
            ..Criteria::default()
        };
        assert_eq!(
            judge(&gpu(0, 0, 0), true, false, None, 5000, &now_only).0,
            State::Free
        );
    }

    #[test]
    fn gaps_and_stale_samples_are_not_idle_time() {
        let c = Criteria::default();
        let idle = [gpu(0, 0, 0)];
        // Idle for 40 s, then nothing for 5 minutes (host down), then idle again: the settle
        // time starts over.
        let mut r = Recent::new(Duration::from_secs(2));
        for t in (0..=40u64).step_by(2) {
            r.push(t * 1000, &idle, false);
        }
        r.push(340_000, &idle, false);
        assert_eq!(
            judge(&idle[0], true, false, Some(&r), 340_000, &c).0,
            State::Settling
        );
        for t in (342..=372u64).step_by(2) {
            r.push(t * 1000, &idle, false);
        }
        assert_eq!(
            judge(&idle[0], true, false, Some(&r), 372_000, &c).0,
            State::Free
        );
        // A stale sample repeating "idle" is no evidence.
        r.push(374_000, &idle, true);
        assert_eq!(
            judge(&idle[0], true, false, Some(&r), 374_000, &c).0,
            State::Settling
        );
    }

    #[test]
    fn the_ring_is_bounded_whatever_the_interval() {
        let mut r = Recent::new(Duration::from_millis(100));
        for t in 0..100_000u64 {
            r.push(t * 100, &[gpu(0, 0, 0)], false);
        }
        assert!(r.starts.len() <= 6002, "{}", r.starts.len());
        assert_eq!(r.peaks.len(), r.starts.len());
    }

    #[test]
    fn queries_read_back_and_name_what_is_wrong() {
        let q = Query {
            criteria: Criteria {
                min_mem: 20 * GIB,
                max_util: 10,
                model: Some("A100 80GB".into()),
                settle: Duration::from_secs(5),
                ..Criteria::default()
            },
            free_only: true,
            host: Some("gpu-0".into()),
            user: None,
            count: 2,
            states: vec![State::Free, State::Held],
        };
        assert_eq!(Query::parse(&q.to_query_string()), Ok(q));
        for (bad, named) in [
            ("min_mem=lots", "lots"),
            ("max_util=101", "101"),
            ("settle=11m", "11m"),
            ("colour=red", "colour"),
            ("count=-1", "-1"),
            ("state=free,asleep", "asleep"),
        ] {
            let err = Query::parse(bad).expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
        }
        assert!(Query::parse(&"a".repeat(2000)).is_err());
    }
}
