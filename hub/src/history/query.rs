//! Reading history: which series an id names, which tier answers a span, the points, and the
//! per-user usage sums. Shared by the HTTP API and the gRPC `History` service.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::catalog::{Metric, SeriesKind};
use super::store::{StoreError, HOUR_MS, MINUTE_MS};
use super::Retention;

/// A tier is picked when it gives at least this many points over the span.
pub const ENOUGH_POINTS: i64 = 300;
/// Most points one answer holds (raw tier, short interval, long span); the rest is cut and the
/// answer says so (`truncated`).
pub const MAX_POINTS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Unknown id: 404 / NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// Bad metric, numbers or span: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sql(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Tier {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

impl Tier {
    pub fn step_ms(self) -> i64 {
        match self {
            Self::Raw => 0,
            Self::Minute => MINUTE_MS,
            Self::Hour => HOUR_MS,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Minute => "m1",
            Self::Hour => "h1",
        }
    }

    fn keep(self, r: &Retention) -> Duration {
        match self {
            Self::Raw => r.raw,
            Self::Minute => r.minute,
            Self::Hour => r.hour,
        }
    }
}

/// What an id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Host(i64),
    Gpu(i64),
    /// The user's series on every host.
    User(String),
    Cluster(i64),
}

impl Target {
    pub fn kind(&self) -> SeriesKind {
        match self {
            Self::Host(_) => SeriesKind::Host,
            Self::Gpu(_) => SeriesKind::Gpu,
            Self::User(_) => SeriesKind::User,
            Self::Cluster(_) => SeriesKind::Cluster,
        }
    }
}

/// Finds the series an id names: `cluster`, `user:<name>`, `GPU-<uuid>`, `<host>/gpu<N>` or
/// `<host>`.
pub fn resolve(conn: &Connection, id: &str) -> Result<Target, QueryError> {
    if id.is_empty() {
        return Err(QueryError::Invalid(
            "id is missing: name a host, host/gpuN, a GPU UUID, user:<name> or cluster".into(),
        ));
    }
    if id.len() > 512 {
        return Err(QueryError::Invalid("id is longer than 512 bytes".into()));
    }
    let one = |sql: &str, a: &str, b: Option<&str>| -> Result<Option<i64>, QueryError> {
        let r = match b {
            Some(b) => conn.query_row(sql, params![a, b], |r| r.get(0)),
            None => conn.query_row(sql, params![a], |r| r.get(0)),
        };
        Ok(r.optional()?)
    };
    let not_found = || QueryError::NotFound(format!("no history for id {id:?}"));
    if id == "cluster" {
        return one(
            "SELECT id FROM series WHERE kind = 3 AND name = ?1",
            "cluster",
            None,
        )?
        .map(Target::Cluster)
        .ok_or_else(not_found);
    }
    if let Some(user) = id.strip_prefix("user:") {
        return match one(
            "SELECT id FROM series WHERE kind = 2 AND name = ?1 LIMIT 1",
            user,
            None,
        )? {
            Some(_) => Ok(Target::User(user.to_owned())),
            None => Err(not_found()),
        };
    }
    if id.starts_with("GPU-") {
        // Newest series with this UUID (a GPU moved to another slot keeps its UUID).
        if let Some(sid) = one(
            "SELECT id FROM series WHERE uuid = ?1 AND kind = 1 ORDER BY id DESC LIMIT 1",
            id,
            None,
        )? {
            return Ok(Target::Gpu(sid));
        }
    }
    if let Some((host, gpu)) = id.split_once('/') {
        let valid = gpu
            .strip_prefix("gpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return Err(QueryError::NotFound(format!(
                "no history for id {id:?} (a GPU is named <host>/gpu<index>, e.g. node1/gpu0)"
            )));
        }
        return one(
            "SELECT id FROM series WHERE kind = 1 AND name = ?1 AND host = ?2",
            id,
            Some(host),
        )?
        .map(Target::Gpu)
        .ok_or_else(not_found);
    }
    one(
        "SELECT id FROM series WHERE kind = 0 AND name = ?1",
        id,
        None,
    )?
    .map(Target::Host)
    .ok_or_else(not_found)
}

/// The metric `metric` of this kind of id (its column, scale and unit: see the catalog).
pub fn metric_of(target: &Target, metric: &str) -> Result<&'static Metric, QueryError> {
    target.kind().metric(metric).map_err(QueryError::Invalid)
}

/// The coarsest tier that covers `from` and gives at least [`ENOUGH_POINTS`] points over the
/// span; else the finest tier that covers `from`; else the 1-hour tier. Users and the cluster
/// have no raw tier.
pub fn choose_tier(kind: SeriesKind, from: i64, to: i64, now: i64, r: &Retention) -> Tier {
    let span = to - from;
    let has_raw = kind.has_raw();
    let covers = |t: Tier| {
        let keep = i64::try_from(t.keep(r).as_millis()).unwrap_or(i64::MAX);
        from >= now.saturating_sub(keep)
    };
    for t in [Tier::Hour, Tier::Minute] {
        if covers(t) && span / t.step_ms() >= ENOUGH_POINTS {
            return t;
        }
    }
    if has_raw && covers(Tier::Raw) {
        return Tier::Raw;
    }
    if covers(Tier::Minute) {
        return Tier::Minute;
    }
    Tier::Hour
}

/// One series over a span, columnar.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub id: String,
    pub metric: String,
    pub tier: Tier,
    pub step_ms: i64,
    pub t: Vec<i64>,
    pub mean: Vec<Option<f64>>,
    pub max: Vec<Option<f64>>,
    /// Set when more than [`MAX_POINTS`] points fell in the span and the newest were cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Checks a span: `from < to`, both non-negative.
pub fn check_span(from: i64, to: i64) -> Result<(), QueryError> {
    if from < 0 || to < 0 {
        return Err(QueryError::Invalid(format!(
            "from ({from}) and to ({to}) must be Unix milliseconds, not negative"
        )));
    }
    if from >= to {
        return Err(QueryError::Invalid(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    Ok(())
}

/// The points of `metric` of `id` in `[from, to)`, from the tier that fits the span. A bucket
/// is included when it starts in the span or contains `from`.
pub fn series(
    conn: &Connection,
    id: &str,
    metric: &str,
    from: i64,
    to: i64,
    now: i64,
    retention: &Retention,
) -> Result<Series, QueryError> {
    check_span(from, to)?;
    let target = resolve(conn, id)?;
    let tier = choose_tier(target.kind(), from, to, now, retention);
    series_in_tier(conn, id, &target, metric, from, to, tier)
}

/// [`series`] from a tier given by the caller (benchmarks compare tiers with it).
pub fn series_in_tier(
    conn: &Connection,
    id: &str,
    target: &Target,
    metric: &str,
    from: i64,
    to: i64,
    tier: Tier,
) -> Result<Series, QueryError> {
    let m = metric_of(target, metric)?;
    let col = m.column;
    if tier == Tier::Raw && matches!(target, Target::User(_) | Target::Cluster(_)) {
        return Err(QueryError::Invalid(
            "users and the cluster have no raw tier (1-minute buckets at the finest)".into(),
        ));
    }
    let step = tier.step_ms();
    let start = if step > 0 {
        from - from.rem_euclid(step)
    } else {
        from
    };
    let mut out = Series {
        id: id.to_owned(),
        metric: metric.to_owned(),
        tier,
        step_ms: step,
        t: Vec::new(),
        mean: Vec::new(),
        max: Vec::new(),
        truncated: false,
    };
    let limit = MAX_POINTS as i64 + 1;
    let table = tier.table();
    let d = m.scale;
    let mut push = |t: i64, mean: Option<f64>, max: Option<f64>| {
        if out.t.len() == MAX_POINTS {
            out.truncated = true;
            return;
        }
        out.t.push(t);
        out.mean.push(mean.map(|v| v / d));
        out.max.push(max.map(|v| v / d));
    };
    match (target, tier) {
        (Target::Host(sid) | Target::Gpu(sid), Tier::Raw) => {
            let sql =
                format!("SELECT t, v{col} FROM raw WHERE sid = ?1 AND t >= ?2 AND t < ?3 ORDER BY t LIMIT ?4");
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(params![sid, start, to, limit])?;
            while let Some(r) = rows.next()? {
                let v: Option<f64> = r.get(1)?;
                push(r.get(0)?, v, v);
            }
        }
        (Target::Host(sid) | Target::Gpu(sid) | Target::Cluster(sid), _) => {
            let sql = format!(
                "SELECT t, a{col}, x{col} FROM {table} WHERE sid = ?1 AND t >= ?2 AND t < ?3 ORDER BY t LIMIT ?4"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(params![sid, start, to, limit])?;
            while let Some(r) = rows.next()? {
                push(r.get(0)?, r.get(1)?, r.get(2)?);
            }
        }
        (Target::User(name), _) => {
            // Σ over the user's hosts per bucket. The max is the sum of each host's maximum:
            // an upper bound of the user's true maximum within the bucket.
            let sql = format!(
                "SELECT t, total(a{col}), total(x{col}) FROM {table}
                 WHERE sid IN (SELECT id FROM series WHERE kind = 2 AND name = ?1)
                   AND t >= ?2 AND t < ?3 GROUP BY t ORDER BY t LIMIT ?4"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(params![name, start, to, limit])?;
            while let Some(r) = rows.next()? {
                push(r.get(0)?, r.get(1)?, r.get(2)?);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuId {
    pub id: String,
    pub uuid: Option<String>,
    pub name: Option<String>,
}

/// What has history.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Ids {
    pub hosts: Vec<String>,
    pub gpus: Vec<GpuId>,
    pub users: Vec<String>,
}

pub fn ids(conn: &Connection) -> Result<Ids, QueryError> {
    let mut out = Ids::default();
    let mut st = conn.prepare_cached(
        "SELECT kind, name, uuid, label FROM series WHERE kind IN (0, 1) ORDER BY kind, host, length(name), name",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let kind: SeriesKind = r.get(0)?;
        let name: String = r.get(1)?;
        if kind == SeriesKind::Host {
            out.hosts.push(name);
        } else {
            out.gpus.push(GpuId {
                id: name,
                uuid: r.get(2)?,
                name: r.get(3)?,
            });
        }
    }
    let mut st =
        conn.prepare_cached("SELECT DISTINCT name FROM series WHERE kind = 2 ORDER BY name")?;
    let users = st.query_map([], |r| r.get::<_, String>(0))?;
    for u in users {
        out.users.push(u?);
    }
    Ok(out)
}

/// One user's use of GPUs over a span.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserUsage {
    pub user: String,
    /// Σ over samples of (GPUs on which the user had a process × the sample's duration), hours.
    pub gpu_hours: f64,
    /// Σ over samples of (GPU memory of the user's processes in GiB × duration), GiB·hours.
    pub gpu_mem_gib_hours: f64,
    /// Of `gpu_hours`, those on GPUs at or under the idle threshold (5 % utilization).
    pub idle_gpu_hours: f64,
    /// Mean utilization (percent) of the GPUs the user held, over the time held; none when
    /// no GPU reported one.
    pub mean_util: Option<f64>,
    /// Energy drawn by the GPUs the user held, kWh (GPUs that report power); none when none
    /// did.
    pub energy_kwh: Option<f64>,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub from: i64,
    pub to: i64,
    /// The tier the sums come from: the finest that covers `from`.
    pub tier: Tier,
    pub users: Vec<UserUsage>,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const HOUR_F: f64 = 3_600_000.0;

/// Per-user GPU-hours and GPU-memory GiB-hours over `[from, to)`: from raw samples when the raw
/// tier still covers `from` (exact to the sample), else from 1-minute or 1-hour buckets that
/// start in the span (exact to the bucket).
pub fn usage(
    conn: &Connection,
    from: i64,
    to: i64,
    now: i64,
    retention: &Retention,
) -> Result<Usage, QueryError> {
    check_span(from, to)?;
    let covers = |keep: Duration| {
        from >= now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
    };
    let (tier, sql) = if covers(retention.raw) {
        (
            Tier::Raw,
            "SELECT s.name, s.host, total(r.v1 * r.v2), total(r.v0 * r.v2),
                    total(r.v3 * r.v2), sum(r.v4 * r.v2), sum(r.v5 * r.v2),
                    total(CASE WHEN r.v4 IS NULL THEN 0 ELSE r.v1 * r.v2 END)
             FROM series s JOIN raw r ON r.sid = s.id
             WHERE s.kind = 2 AND r.t >= ?1 AND r.t < ?2 GROUP BY s.id",
        )
    } else if covers(retention.minute) {
        (
            Tier::Minute,
            "SELECT s.name, s.host, total(r.a1) * 60000.0, total(r.a0) * 60000.0,
                    total(r.a3) * 60000.0, sum(r.a4) * 60000.0, sum(r.a5) * 60000.0,
                    total(CASE WHEN r.a4 IS NULL THEN 0 ELSE r.a1 END) * 60000.0
             FROM series s JOIN m1 r ON r.sid = s.id
             WHERE s.kind = 2 AND r.t >= ?1 AND r.t < ?2 GROUP BY s.id",
        )
    } else {
        (
            Tier::Hour,
            "SELECT s.name, s.host, total(r.a1) * 3600000.0, total(r.a0) * 3600000.0,
                    total(r.a3) * 3600000.0, sum(r.a4) * 3600000.0, sum(r.a5) * 3600000.0,
                    total(CASE WHEN r.a4 IS NULL THEN 0 ELSE r.a1 END) * 3600000.0
             FROM series s JOIN h1 r ON r.sid = s.id
             WHERE s.kind = 2 AND r.t >= ?1 AND r.t < ?2 GROUP BY s.id",
        )
    };
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query(params![from, to])?;
    let mut users: Vec<UserUsage> = Vec::new();
    // Per user: Σ util·ms and Σ GPU·ms of the samples with a utilization, for the mean.
    let mut sums: Vec<(f64, f64)> = Vec::new();
    while let Some(r) = rows.next()? {
        let user: String = r.get(0)?;
        let host: String = r.get(1)?;
        let gpu_ms: f64 = r.get(2)?;
        let mem_byte_ms: f64 = r.get(3)?;
        let idle_ms: f64 = r.get(4)?;
        let util_ms: Option<f64> = r.get(5)?;
        let watt_ms: Option<f64> = r.get(6)?;
        let util_gpu_ms: f64 = r.get(7)?;
        let i = match users.iter().position(|u| u.user == user) {
            Some(i) => i,
            None => {
                users.push(UserUsage {
                    user,
                    gpu_hours: 0.0,
                    gpu_mem_gib_hours: 0.0,
                    idle_gpu_hours: 0.0,
                    mean_util: None,
                    energy_kwh: None,
                    hosts: Vec::new(),
                });
                sums.push((0.0, 0.0));
                users.len() - 1
            }
        };
        let u = &mut users[i];
        u.gpu_hours += gpu_ms / HOUR_F;
        u.gpu_mem_gib_hours += mem_byte_ms / GIB / HOUR_F;
        u.idle_gpu_hours += idle_ms / HOUR_F;
        if let Some(w) = watt_ms {
            // W·ms → kWh.
            *u.energy_kwh.get_or_insert(0.0) += w / HOUR_F / 1000.0;
        }
        if let Some(util) = util_ms {
            sums[i].0 += util;
            sums[i].1 += util_gpu_ms;
        }
        if !u.hosts.contains(&host) {
            u.hosts.push(host);
        }
    }
    for (u, (util, gpu_ms)) in users.iter_mut().zip(&sums) {
        u.hosts.sort();
        u.mean_util = (*gpu_ms > 0.0).then(|| util / gpu_ms);
    }
    users.sort_by(|a, b| {
        b.gpu_hours
            .total_cmp(&a.gpu_hours)
            .then_with(|| a.user.cmp(&b.user))
    });
    Ok(Usage {
        from,
        to,
        tier,
        users,
    })
}

/// The usage as CSV: `user,gpu_hours,gpu_mem_gib_hours,idle_gpu_hours,mean_util_percent,
/// energy_kwh,hosts` (hosts joined with `;`; an unknown value left empty).
pub fn usage_csv(u: &Usage) -> String {
    let mut out = String::from(
        "user,gpu_hours,gpu_mem_gib_hours,idle_gpu_hours,mean_util_percent,energy_kwh,hosts\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in &u.users {
        out.push_str(&csv_field(&r.user));
        out.push_str(&format!(
            ",{:.6},{:.6},{:.6},{},{},",
            r.gpu_hours,
            r.gpu_mem_gib_hours,
            r.idle_gpu_hours,
            opt(r.mean_util),
            opt(r.energy_kwh)
        ));
        out.push_str(&csv_field(&r.hosts.join(";")));
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting, and a leading `'` for what a spreadsheet would run as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
