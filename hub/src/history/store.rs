//! The SQLite store: schema, batched inserts, roll-ups and retention. Only the writer thread
//! holds a [`Store`]; queries open their own read connections ([`open_reader`]).
//!
//! Layout, chosen for insert speed and size:
//! - `series`: one row per thing that has history (a host, a GPU, a user on a host, the
//!   cluster), with a small integer id. Every point refers to its series by that id.
//! - `raw`, `m1`, `h1`: `WITHOUT ROWID` tables clustered on `(sid, t)`, so one series' points
//!   over a span are one contiguous range of one B-tree, and no separate index exists. Five
//!   value columns per row (a GPU's four metrics and its "held" flag in one row rather than
//!   five rows). Value columns have no declared type: a whole reading is stored as a 0–6 byte
//!   integer, a fraction as an 8-byte float (a `REAL` column would store every value in 8 bytes
//!   with this SQLite: the raw tier took twice the space).
//! - `m1`/`h1` hold, per series and bucket: the number of raw points (`n`), the mean (`a0..a4`)
//!   and the maximum (`x0..x4`) of each column.
//!
//! What the five columns hold per kind:
//!
//! | kind      | v0          | v1            | v2         | v3           | v4          |
//! |-----------|-------------|---------------|------------|--------------|-------------|
//! | host      | cpu (0.01 %)| mem used (B)  | load1 ×100 | disk used (B)| —           |
//! | gpu       | util %      | mem used (B)  | temp (°C)  | power (mW)   | held (0/1)  |
//! | user@host | gpu mem (B) | GPUs held     | sample ms  | GPUs idle    | Σ util %    |
//!
//! User series have a sixth column, `v5` (`a5` in the roll-ups): Σ power draw (W) of the
//! user's GPUs; added to files of earlier versions on open.
//! | cluster   | util %      | GPUs busy     | mem used(B)| —            | —           |
//!
//! The mean of a host or GPU column is over the points that have a reading (NULL is "no
//! reading", never 0). A user's columns are time-weighted over the whole bucket, a user with no
//! process counting as holding nothing: mean GPUs held over a minute = Σ(GPUs × sample ms) /
//! 60,000. Summing the buckets' means × bucket length therefore gives exact GPU-hours from any
//! tier. The cluster exists only in the `m1` and `h1` tiers (hosts sample at different
//! instants; minutes line them up).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::catalog::SeriesKind;
use super::{Record, Retention};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// A minute is rolled up this long after it ends; samples that arrive later (backfill) roll it
/// up again.
const MINUTE_GRACE_MS: i64 = 5_000;
const HOUR_GRACE_MS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("history directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    id    INTEGER PRIMARY KEY,
    kind  INTEGER NOT NULL,
    name  TEXT NOT NULL,
    host  TEXT NOT NULL,
    uuid  TEXT,
    label TEXT,
    UNIQUE (kind, name, host)
);
CREATE INDEX IF NOT EXISTS series_uuid ON series (uuid) WHERE uuid IS NOT NULL;
CREATE TABLE IF NOT EXISTS raw (
    sid INTEGER NOT NULL, t INTEGER NOT NULL,
    v0, v1, v2, v3, v4, v5,
    PRIMARY KEY (sid, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS m1 (
    sid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
    a0, a1, a2, a3, a4,
    x0, x1, x2, x3, x4, a5,
    PRIMARY KEY (sid, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS h1 (
    sid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
    a0, a1, a2, a3, a4,
    x0, x1, x2, x3, x4, a5,
    PRIMARY KEY (sid, t)
) WITHOUT ROWID;
";

/// Columns added since the first layout: (table, column), added on open where missing.
const ADDED_COLUMNS: &[(&str, &str)] = &[("raw", "v5"), ("m1", "a5"), ("h1", "a5")];

/// Brings a file of an earlier version to the current layout.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column) in ADDED_COLUMNS {
        let has: bool = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column}"))?;
        }
    }
    Ok(())
}

fn pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the samples in it are acknowledged, so even a power
    // loss keeps every acknowledged sample (process crashes are covered by WAL alone).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// A read-only connection for queries.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

type SeriesKey = (SeriesKind, String, String);

/// Rows per multi-row INSERT (8 parameters each, well under SQLite's limit).
const ROWS_PER_INSERT: usize = 64;

fn multi_insert(rows: usize) -> String {
    let mut sql =
        String::from("INSERT OR IGNORE INTO raw (sid, t, v0, v1, v2, v3, v4, v5) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql
}

/// A reading as SQLite should store it: a whole number as an integer (0–6 bytes on disk in an
/// untyped column), anything else as a float (8 bytes). Halves the raw tier.
fn compact(v: Option<f64>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        None => Value::Null,
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::Integer(x as i64),
        Some(x) => Value::Real(x),
    }
}

pub struct Store {
    conn: Connection,
    retention: Retention,
    /// (kind, name, host) → series id
    ids: HashMap<SeriesKey, i64>,
    /// series id → (kind, uuid, label) as stored
    meta: HashMap<i64, (SeriesKind, Option<String>, Option<String>)>,
    /// Buckets that got points since they were last rolled up: (sid, minute start).
    dirty_minutes: HashSet<(i64, i64)>,
    /// (sid, hour start), including the cluster's.
    dirty_hours: HashSet<(i64, i64)>,
    cluster: Option<i64>,
    /// Series per host, against [`MAX_SERIES_PER_HOST`].
    per_host: HashMap<String, usize>,
    /// Hosts told (once) that they are over it.
    warned: HashSet<String>,
}

/// Series one host may have (its own, one per GPU index, one per user): room for 128 GPUs and
/// hundreds of users, while an agent inventing GPU indices or user names in every frame cannot
/// grow the store's catalog without end. Points of series past it are not kept.
pub const MAX_SERIES_PER_HOST: usize = 1024;

impl Store {
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        pragmas(&conn).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let mut ids = HashMap::new();
        let mut meta = HashMap::new();
        let mut cluster = None;
        {
            let mut st = conn.prepare("SELECT id, kind, name, host, uuid, label FROM series")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, SeriesKind>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            for row in rows {
                let (id, kind, name, host, uuid, label) = row?;
                if kind == SeriesKind::Cluster {
                    cluster = Some(id);
                }
                ids.insert((kind, name, host), id);
                meta.insert(id, (kind, uuid, label));
            }
        }
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for (_, _, host) in ids.keys() {
            *per_host.entry(host.clone()).or_default() += 1;
        }
        Ok(Self {
            conn,
            retention,
            ids,
            meta,
            dirty_minutes: HashSet::new(),
            dirty_hours: HashSet::new(),
            cluster,
            per_host,
            warned: HashSet::new(),
        })
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// After a restart: buckets with points newer than their tier's last roll-up are dirty.
    pub fn recover_dirty(&mut self) -> Result<(), StoreError> {
        let sids: Vec<(i64, SeriesKind)> = self.meta.iter().map(|(id, m)| (*id, m.0)).collect();
        let mut last_m1 = self.conn.prepare("SELECT max(t) FROM m1 WHERE sid = ?1")?;
        let mut last_h1 = self.conn.prepare("SELECT max(t) FROM h1 WHERE sid = ?1")?;
        let mut raw_after = self
            .conn
            .prepare("SELECT DISTINCT t / 60000 * 60000 FROM raw WHERE sid = ?1 AND t >= ?2")?;
        let mut m1_after = self
            .conn
            .prepare("SELECT DISTINCT t / 3600000 * 3600000 FROM m1 WHERE sid = ?1 AND t >= ?2")?;
        for (sid, kind) in sids {
            if kind != SeriesKind::Cluster {
                let from: Option<i64> = last_m1.query_row([sid], |r| r.get(0))?;
                let rows = raw_after.query_map(params![sid, from.unwrap_or(0)], |r| r.get(0))?;
                for m in rows {
                    self.dirty_minutes.insert((sid, m?));
                }
            }
            let from: Option<i64> = last_h1.query_row([sid], |r| r.get(0))?;
            let rows = m1_after.query_map(params![sid, from.unwrap_or(0)], |r| r.get(0))?;
            for h in rows {
                self.dirty_hours.insert((sid, h?));
            }
        }
        Ok(())
    }

    /// The series' id, made on first use; `None` when `host` has [`MAX_SERIES_PER_HOST`]
    /// series already (the cluster's own series is never refused).
    fn series(
        &mut self,
        kind: SeriesKind,
        name: &str,
        host: &str,
        uuid: Option<&str>,
        label: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let key = (kind, name.to_owned(), host.to_owned());
        if let Some(&id) = self.ids.get(&key) {
            // A GPU swapped in the same slot keeps the series (its place) but gets its new
            // UUID and model.
            let m = self.meta.get(&id);
            let changed = m.is_some_and(|m| {
                (uuid.is_some() && m.1.as_deref() != uuid)
                    || (label.is_some() && m.2.as_deref() != label)
            });
            if changed {
                self.conn.execute(
                    "UPDATE series SET uuid = coalesce(?2, uuid), label = coalesce(?3, label) WHERE id = ?1",
                    params![id, uuid, label],
                )?;
                self.meta.insert(
                    id,
                    (kind, uuid.map(str::to_owned), label.map(str::to_owned)),
                );
            }
            return Ok(Some(id));
        }
        let count = self.per_host.get(host).copied().unwrap_or(0);
        if kind != SeriesKind::Cluster && count >= MAX_SERIES_PER_HOST {
            if self.warned.insert(host.to_owned()) {
                tracing::warn!(
                    "history: host {host:?} has {MAX_SERIES_PER_HOST} series already; new GPU \
                     indices or users of it are not kept"
                );
            }
            return Ok(None);
        }
        self.conn.execute(
            "INSERT INTO series (kind, name, host, uuid, label) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind, name, host, uuid, label],
        )?;
        let id = self.conn.last_insert_rowid();
        self.ids.insert(key, id);
        self.meta.insert(
            id,
            (kind, uuid.map(str::to_owned), label.map(str::to_owned)),
        );
        if kind == SeriesKind::Cluster {
            self.cluster = Some(id);
        }
        *self.per_host.entry(host.to_owned()).or_default() += 1;
        Ok(Some(id))
    }

    /// Stores a batch in one transaction. A point already stored (same series and time: a
    /// sample sent again) is kept as it was.
    pub fn insert(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        match self.insert_inner(batch) {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn insert_inner(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        let mut points: Vec<(i64, i64, [Option<f64>; 6])> = Vec::with_capacity(batch.len() * 12);
        for r in batch {
            let Some(hid) = self.series(SeriesKind::Host, &r.host, &r.host, None, None)? else {
                continue;
            };
            let hv = r.host_vals;
            points.push((hid, r.t, [hv[0], hv[1], hv[2], hv[3], None, None]));
            for g in &r.gpus {
                let name = format!("{}/gpu{}", r.host, g.index);
                let uuid = (!g.uuid.is_empty()).then_some(g.uuid.as_str());
                let label = (!g.name.is_empty()).then_some(g.name.as_str());
                let Some(gid) = self.series(SeriesKind::Gpu, &name, &r.host, uuid, label)? else {
                    continue;
                };
                let v = g.vals;
                let held = Some(if g.held { 1.0 } else { 0.0 });
                points.push((gid, r.t, [v[0], v[1], v[2], v[3], held, None]));
            }
            for u in &r.users {
                let Some(uid) = self.series(SeriesKind::User, &u.user, &r.host, None, None)? else {
                    continue;
                };
                points.push((
                    uid,
                    r.t,
                    [
                        Some(u.gpu_mem as f64),
                        Some(f64::from(u.gpus)),
                        Some(r.dur_ms as f64),
                        Some(f64::from(u.idle_gpus)),
                        u.util_sum,
                        u.power_w,
                    ],
                ));
            }
        }
        // Many rows per statement: one statement run per row spent most of the time in
        // statement overhead rather than in the B-tree.
        let mut chunks = points.chunks_exact(ROWS_PER_INSERT);
        {
            let mut st = self.conn.prepare_cached(&multi_insert(ROWS_PER_INSERT))?;
            let mut args: Vec<rusqlite::types::Value> = Vec::with_capacity(ROWS_PER_INSERT * 8);
            for chunk in &mut chunks {
                args.clear();
                for (sid, t, v) in chunk {
                    args.push((*sid).into());
                    args.push((*t).into());
                    args.extend(v.map(compact));
                }
                st.execute(rusqlite::params_from_iter(args.iter()))?;
            }
        }
        let mut st = self.conn.prepare_cached(&multi_insert(1))?;
        for (sid, t, v) in chunks.remainder() {
            let [a, b, c, d, e, f] = v.map(compact);
            st.execute(params![sid, t, a, b, c, d, e, f])?;
        }
        for (sid, t, _) in &points {
            self.dirty_minutes
                .insert((*sid, t.div_euclid(MINUTE_MS) * MINUTE_MS));
        }
        Ok(())
    }

    /// Rolls up every dirty minute that ended at least a few seconds before `now` (Unix ms),
    /// then the cluster's minutes, then every dirty hour likewise. Idempotent.
    pub fn rollup(&mut self, now: i64) -> Result<(), StoreError> {
        let ready: Vec<(i64, i64)> = self
            .dirty_minutes
            .iter()
            .filter(|(_, m)| m + MINUTE_MS + MINUTE_GRACE_MS <= now)
            .copied()
            .collect();
        let cluster = if ready.is_empty() {
            None
        } else {
            self.series(SeriesKind::Cluster, "cluster", "", None, None)?
        };
        self.conn.execute_batch("BEGIN")?;
        let r = self.rollup_inner(now, &ready, cluster);
        match r {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn rollup_inner(
        &mut self,
        now: i64,
        ready: &[(i64, i64)],
        cluster: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut gpu_minutes: BTreeSet<i64> = BTreeSet::new();
        {
            let mut plain = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO m1 SELECT ?1, ?2, count(*),
                    avg(v0), avg(v1), avg(v2), avg(v3), avg(v4),
                    max(v0), max(v1), max(v2), max(v3), max(v4), NULL
                 FROM raw WHERE sid = ?1 AND t >= ?2 AND t < ?2 + 60000 HAVING count(*) > 0",
            )?;
            // A user's columns: time-weighted over the whole minute (no process = nothing
            // held); a2 keeps the milliseconds covered.
            let mut weighted = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO m1 SELECT ?1, ?2, count(*),
                    total(v0 * v2) / 60000.0, total(v1 * v2) / 60000.0, total(v2),
                    total(v3 * v2) / 60000.0, sum(v4 * v2) / 60000.0,
                    max(v0), max(v1), max(v2), max(v3), max(v4),
                    sum(v5 * v2) / 60000.0
                 FROM raw WHERE sid = ?1 AND t >= ?2 AND t < ?2 + 60000 HAVING count(*) > 0",
            )?;
            for &(sid, m) in ready {
                let kind = self.meta.get(&sid).map_or(SeriesKind::Host, |m| m.0);
                if kind == SeriesKind::User {
                    weighted.execute(params![sid, m])?;
                } else {
                    plain.execute(params![sid, m])?;
                }
                if kind == SeriesKind::Gpu {
                    gpu_minutes.insert(m);
                }
                self.dirty_hours
                    .insert((sid, m.div_euclid(HOUR_MS) * HOUR_MS));
            }
        }
        for &(sid, m) in ready {
            self.dirty_minutes.remove(&(sid, m));
        }
        if let Some(cid) = cluster {
            // The cluster per minute from its GPUs' minutes: mean utilization over the GPUs
            // that reported, GPUs busy = Σ fraction of the minute each was held, memory = Σ.
            let mut st = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO m1 SELECT ?1, ?2, count(*),
                    avg(a0), total(a4), total(a1), NULL, NULL,
                    max(x0), total(x4), total(x1), NULL, NULL, NULL
                 FROM m1 WHERE t = ?2 AND sid IN (SELECT id FROM series WHERE kind = 1)
                 HAVING count(*) > 0",
            )?;
            for &m in &gpu_minutes {
                st.execute(params![cid, m])?;
                self.dirty_hours
                    .insert((cid, m.div_euclid(HOUR_MS) * HOUR_MS));
            }
        }
        let hours: Vec<(i64, i64)> = self
            .dirty_hours
            .iter()
            .filter(|(_, h)| h + HOUR_MS + HOUR_GRACE_MS <= now)
            .copied()
            .collect();
        {
            // Means weighted by the points behind each minute (NULL columns do not count).
            let mut plain = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO h1 SELECT ?1, ?2, total(n),
                    total(a0 * n) / nullif(total(CASE WHEN a0 IS NULL THEN 0 ELSE n END), 0),
                    total(a1 * n) / nullif(total(CASE WHEN a1 IS NULL THEN 0 ELSE n END), 0),
                    total(a2 * n) / nullif(total(CASE WHEN a2 IS NULL THEN 0 ELSE n END), 0),
                    total(a3 * n) / nullif(total(CASE WHEN a3 IS NULL THEN 0 ELSE n END), 0),
                    total(a4 * n) / nullif(total(CASE WHEN a4 IS NULL THEN 0 ELSE n END), 0),
                    max(x0), max(x1), max(x2), max(x3), max(x4), NULL
                 FROM m1 WHERE sid = ?1 AND t >= ?2 AND t < ?2 + 3600000 HAVING count(*) > 0",
            )?;
            // A user: a minute without points held nothing, so the hour's mean is Σ / 60.
            let mut weighted = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO h1 SELECT ?1, ?2, total(n),
                    total(a0) / 60.0, total(a1) / 60.0, total(a2), total(a3) / 60.0, sum(a4) / 60.0,
                    max(x0), max(x1), max(x2), max(x3), max(x4), sum(a5) / 60.0
                 FROM m1 WHERE sid = ?1 AND t >= ?2 AND t < ?2 + 3600000 HAVING count(*) > 0",
            )?;
            // The cluster: the mean of the minutes it has.
            let mut cluster_h = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO h1 SELECT ?1, ?2, total(n),
                    avg(a0), avg(a1), avg(a2), NULL, NULL,
                    max(x0), max(x1), max(x2), NULL, NULL, NULL
                 FROM m1 WHERE sid = ?1 AND t >= ?2 AND t < ?2 + 3600000 HAVING count(*) > 0",
            )?;
            for &(sid, h) in &hours {
                let kind = self.meta.get(&sid).map_or(SeriesKind::Host, |m| m.0);
                match kind {
                    SeriesKind::User => weighted.execute(params![sid, h])?,
                    SeriesKind::Cluster => cluster_h.execute(params![sid, h])?,
                    _ => plain.execute(params![sid, h])?,
                };
            }
        }
        for k in &hours {
            self.dirty_hours.remove(k);
        }
        Ok(())
    }

    /// Deletes points older than each tier keeps. Returns how many went.
    pub fn enforce_retention(&mut self, now: i64) -> Result<usize, StoreError> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let cuts = [
            ("raw", now.saturating_sub(ms(self.retention.raw))),
            ("m1", now.saturating_sub(ms(self.retention.minute))),
            ("h1", now.saturating_sub(ms(self.retention.hour))),
        ];
        let sids: Vec<i64> = self.meta.keys().copied().collect();
        self.conn.execute_batch("BEGIN")?;
        let mut removed = 0;
        let r = (|| -> Result<(), StoreError> {
            for (table, cut) in cuts {
                // Per series: each delete is one range at the start of the series' B-tree
                // range, never a scan of the table.
                let mut st = self
                    .conn
                    .prepare_cached(&format!("DELETE FROM {table} WHERE sid = ?1 AND t < ?2"))?;
                for sid in &sids {
                    removed += st.execute(params![sid, cut])?;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(removed)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Number of buckets waiting for a roll-up (for tests).
    pub fn pending(&self) -> (usize, usize) {
        (self.dirty_minutes.len(), self.dirty_hours.len())
    }

    /// The series id of a GPU by its `host/gpuN` name (for tests and benchmarks).
    pub fn sid(&self, kind: SeriesKind, name: &str, host: &str) -> Option<i64> {
        self.ids
            .get(&(kind, name.to_owned(), host.to_owned()))
            .copied()
    }

    /// The newest point of a series in the raw tier (for tests).
    pub fn last_raw(&self, sid: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT max(t) FROM raw WHERE sid = ?1", [sid], |r| r.get(0))
            .optional()?
            .flatten())
    }
}
