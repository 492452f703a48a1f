//! History: every sample of every host, GPU and user in an embedded SQLite database in the
//! hub's data directory, rolled up into 1-minute and 1-hour tiers.
//!
//! - Socket tasks turn a report into a small [`Record`] (numbers only) and hand it to a bounded
//!   queue with `try_send`: they never wait on the disk. One writer thread drains the queue and
//!   stores each batch in one transaction ([`store`]).
//! - A pushed sample is acknowledged to its agent (`Ack{seq}`) only once its transaction has
//!   committed (WAL, `synchronous=FULL`): a hub killed at any moment has every acknowledged
//!   sample on disk, and the agent resends the rest (marked backfill) when it reconnects.
//! - When the queue is full the sample is not queued and not acknowledged; the agent's
//!   connection is closed with "try again later" so that the agent resends it: nothing is
//!   dropped silently and no socket waits.
//!
//! Series, their ids and metrics are described in README.md ("History").

pub mod catalog;
pub mod grpc;
pub mod query;
pub mod reserve;
pub mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hmonitor_proto::{unix_ms, HostInfo};
use tokio::sync::watch;

pub use store::{Store, StoreError};

/// How long each tier keeps its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: Duration::from_secs(24 * 3600),
            minute: Duration::from_secs(30 * 24 * 3600),
            hour: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Shortest retention per tier: a tier must outlive the roll-up that reads it (a minute is
/// rolled up about a minute after it ends, an hour about an hour after).
pub const MIN_RAW: Duration = Duration::from_secs(5 * 60);
pub const MIN_MINUTE: Duration = Duration::from_secs(2 * 3600);
pub const MIN_HOUR: Duration = Duration::from_secs(2 * 24 * 3600);

impl Retention {
    /// Checks the minimums and the order (a coarser tier keeps at least as long).
    pub fn check(&self) -> Result<(), String> {
        let h = |d: Duration| humantime::format_duration(d).to_string();
        if self.raw < MIN_RAW {
            return Err(format!(
                "history_raw {} is below the minimum {}",
                h(self.raw),
                h(MIN_RAW)
            ));
        }
        if self.minute < MIN_MINUTE || self.minute < self.raw {
            return Err(format!(
                "history_1m {} must be at least {} and at least history_raw",
                h(self.minute),
                h(MIN_MINUTE)
            ));
        }
        if self.hour < MIN_HOUR || self.hour < self.minute {
            return Err(format!(
                "history_1h {} must be at least {} and at least history_1m",
                h(self.hour),
                h(MIN_HOUR)
            ));
        }
        Ok(())
    }
}

/// One GPU's readings in a sample. `None` = could not be read (stored as NULL, never 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuRec {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// util %, memory used (bytes), temperature (°C), power (mW)
    pub vals: [Option<f64>; 4],
    /// At least one process holds it.
    pub held: bool,
}

/// What one user holds on one host in a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRec {
    pub user: String,
    /// GPUs on which the user has at least one process.
    pub gpus: u32,
    /// GPU memory of the user's processes (bytes), as NVML reports it.
    pub gpu_mem: u64,
    /// Of `gpus`, those at or under [`IDLE_UTIL`] percent utilization (held idle).
    pub idle_gpus: u32,
    /// Σ utilization (percent) of the user's GPUs that report one.
    pub util_sum: Option<f64>,
    /// Σ power draw (W) of the user's GPUs that report one: energy, once weighted by time.
    pub power_w: Option<f64>,
}

/// A GPU held at or under this utilization (percent) is held idle in the usage report: the
/// free-GPU default, so "idle" means the same everywhere.
pub const IDLE_UTIL: i32 = hmonitor_common::free::DEFAULT_MAX_UTIL as i32;

/// A connection's acknowledgement state, raised by the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// The seq of the latest sample stored (every sample sent before it on the connection is
    /// stored too).
    pub seq: u64,
    /// A sample of the connection could not be stored: acknowledge nothing more.
    pub failed: bool,
}

/// Confirms a stored sample to the connection that sent it: the writer raises the
/// connection's watermark to `seq` after the commit.
#[derive(Debug, Clone)]
pub struct Acker {
    pub committed: Arc<watch::Sender<Committed>>,
    pub seq: u64,
}

impl Acker {
    /// The sample is committed, and with it every earlier sample of its connection (one queue,
    /// one writer, batches in order): acknowledge this one, whatever its number (backfill
    /// interleaves older numbers with live ones).
    fn stored(&self) {
        self.committed.send_if_modified(|c| {
            if c.failed {
                return false;
            }
            c.seq = self.seq;
            true
        });
    }

    fn failed(&self) {
        self.committed.send_if_modified(|c| {
            let first = !c.failed;
            c.failed = true;
            first
        });
    }
}

/// Queues a pushed sample for history, to be acknowledged once stored. Returns why the
/// connection must close when it cannot be queued (the agent then resends it).
pub fn record_pushed(
    history: Option<&Arc<History>>,
    id: &str,
    seq: u64,
    sample_ms: u64,
    interval: Duration,
    info: &HostInfo,
    committed: &Arc<watch::Sender<Committed>>,
) -> Option<String> {
    let ack = Acker {
        committed: committed.clone(),
        seq,
    };
    let Some(history) = history else {
        // No history kept: nothing to wait for.
        ack.stored();
        return None;
    };
    // Every queued sample of this connection holds a clone of `committed` until the writer is
    // done with it: the count is the connection's place in the queue. Past its share, it
    // waits (and resends), so one agent cannot fill the queue and stop the others' acks.
    let waiting = Arc::strong_count(committed).saturating_sub(2);
    if waiting >= history.agent_share {
        history.stats.busy.fetch_add(1, Ordering::Relaxed);
        return Some(format!(
            "this agent has {waiting} samples waiting for the history store already (its \
             share of the queue); send again later"
        ));
    }
    let mut rec = Record::from_info(id, sample_ms, interval, info);
    rec.ack = Some(ack);
    match history.try_record(rec) {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!("agent {id}: sample {seq} not queued ({e}); asking the agent to resend");
            Some(format!("{e}; send again later"))
        }
    }
}

/// Queues a sample that needs no acknowledgement (pull targets, the local agent). A full queue
/// loses it: those sources keep no backlog.
pub fn record_unacked(
    history: Option<&Arc<History>>,
    id: &str,
    interval: Duration,
    info: &HostInfo,
) {
    if let Some(history) = history {
        if let Err(e) = history.try_record(Record::from_info(id, 0, interval, info)) {
            tracing::debug!("host {id}: sample not kept in history: {e}");
        }
    }
}

/// One host sample, reduced to the numbers history keeps.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub host: String,
    /// When it was sampled, Unix ms.
    pub t: i64,
    /// The time one sample stands for (the host's sampling interval), ms: the weight of the
    /// sample in per-user accounting.
    pub dur_ms: i64,
    /// cpu (hundredths of %), memory used (bytes), load1 (hundredths), disk used (bytes, all
    /// filesystems)
    pub host_vals: [Option<f64>; 4],
    pub gpus: Vec<GpuRec>,
    pub users: Vec<UserRec>,
    pub ack: Option<Acker>,
}

impl Record {
    /// Extracts the numbers from a report. `t_ms` is the sample time (the snapshot's
    /// `sample_ms`, else the report's timestamp, else now).
    pub fn from_info(host: &str, t_ms: u64, interval: Duration, info: &HostInfo) -> Self {
        let t = if t_ms != 0 {
            t_ms
        } else if info.timestamp_ms != 0 {
            info.timestamp_ms
        } else {
            unix_ms(SystemTime::now())
        };
        let disks_used = if info.disks.is_empty() {
            None
        } else {
            Some(info.disks.iter().map(|d| d.used as f64).sum())
        };
        // Stored in whole units where that keeps precision (hundredths of a percent, of a load
        // point; milliwatts): whole numbers are stored as 0–6 byte integers.
        let host_vals = [
            info.cpu_util.map(|c| (c * 100.0).round()),
            info.mem_used.map(|v| v as f64),
            info.load.as_ref().map(|l| (l.one * 100.0).round()),
            disks_used,
        ];
        let mut users: Vec<UserRec> = Vec::new();
        let mut gpus = Vec::with_capacity(info.gpus.len());
        for g in &info.gpus {
            let failed = g.err_kind != 0 && g.utilization.is_none() && g.mem_used.is_none();
            gpus.push(GpuRec {
                index: u32::try_from(g.id).unwrap_or_default(),
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                vals: if failed {
                    [None; 4]
                } else {
                    [
                        g.utilization.map(f64::from),
                        g.mem_used.map(|v| v as f64),
                        g.temp.map(f64::from),
                        g.power_draw_mw.map(f64::from),
                    ]
                },
                held: !g.procs.is_empty(),
            });
            // Per user: the GPU counts once however many processes they have on it.
            let mut on_this: Vec<usize> = Vec::new();
            for p in &g.procs {
                let Some(user) = proc_user(p) else { continue };
                let idx = match users.iter().position(|u| u.user == user) {
                    Some(i) => i,
                    None => {
                        users.push(UserRec {
                            user: user.clone(),
                            ..Default::default()
                        });
                        users.len() - 1
                    }
                };
                let u = &mut users[idx];
                u.gpu_mem += p.mem.unwrap_or(0);
                if !on_this.contains(&idx) {
                    u.gpus += 1;
                    if let Some(util) = g.utilization {
                        *u.util_sum.get_or_insert(0.0) += f64::from(util);
                        if util <= IDLE_UTIL {
                            u.idle_gpus += 1;
                        }
                    }
                    if let Some(mw) = g.power_draw_mw {
                        *u.power_w.get_or_insert(0.0) += f64::from(mw) / 1000.0;
                    }
                    on_this.push(idx);
                }
            }
        }
        Self {
            host: host.to_owned(),
            t: i64::try_from(t).unwrap_or(i64::MAX),
            dur_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            host_vals,
            gpus,
            users,
            ack: None,
        }
    }
}

/// The user a process counts for: its user name, else `uid:<n>`; none when /proc could not
/// say (the process had exited).
fn proc_user(p: &hmonitor_proto::ProcInfo) -> Option<String> {
    match (&p.username, p.uid) {
        (Some(name), _) if !name.is_empty() => Some(name.clone()),
        (_, Some(uid)) => Some(format!("uid:{uid}")),
        _ => None,
    }
}

/// Why a record was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the history queue is full: the disk is not keeping up")]
    Full,
    #[error("the history writer has stopped")]
    Stopped,
}

/// Counters for logs and `/healthz`.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub stored: AtomicU64,
    pub batches: AtomicU64,
    /// Samples refused because the queue was full (the agent resends them).
    pub busy: AtomicU64,
    pub write_errors: AtomicU64,
    /// Why the store cannot write now (disk full, read-only, corrupt); `None` while it can.
    unavailable: Mutex<Option<String>>,
    /// How many times the store wrote again after failing: a connection that saw a failure
    /// reconnects its agent once this moves, so the agent sends its backlog again.
    pub recoveries: AtomicU64,
}

impl HistoryStats {
    /// For `/healthz`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "stored": self.stored.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "busy": self.busy.load(Ordering::Relaxed),
            "write_errors": self.write_errors.load(Ordering::Relaxed),
            "unavailable": self.unavailable(),
        })
    }

    /// Why history cannot be written now, or `None`.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_unavailable(&self, why: Option<String>) {
        let mut u = self
            .unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*u, &why) {
            (None, Some(w)) => tracing::error!(
                "history unavailable: {w}; live monitoring goes on, agents keep their samples \
                 until the store writes again"
            ),
            (Some(_), None) => {
                self.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::info!("history is writing again; agents send what they kept");
            }
            _ => {}
        }
        *u = why;
    }
}

/// Settings of the history store.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    pub dir: PathBuf,
    pub retention: Retention,
    /// Records the queue holds before refusing more.
    pub queue: usize,
}

/// The database file inside the data directory.
pub const DB_FILE: &str = "history.sqlite";

/// The handle everyone shares: the queue into the writer thread and readers for queries.
pub struct History {
    /// `None` asks the writer to store what it holds and stop.
    tx: SyncSender<Option<Record>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    path: PathBuf,
    pub retention: Retention,
    pub stats: Arc<HistoryStats>,
    /// Samples one agent connection may have waiting in the queue at once.
    pub agent_share: usize,
}

/// An agent connection's share of the history queue at most (a quarter of it when the queue
/// is smaller): an honest agent has at most its backfill window (512) and a few live samples
/// waiting.
pub const MAX_AGENT_SHARE: usize = 1024;

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

/// Largest batch stored in one transaction.
const BATCH: usize = 4096;
/// How often completed minutes and hours are rolled up.
const ROLLUP_EVERY: Duration = Duration::from_secs(2);

impl History {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(cfg: &HistoryConfig) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| StoreError::Dir {
            path: cfg.dir.clone(),
            source,
        })?;
        let path = cfg.dir.join(DB_FILE);
        let store = match open_store(&path, cfg.retention) {
            Err(e) if is_corrupt(&e) => {
                // Keep what can be kept: the damaged file is moved aside (for an admin to
                // inspect or recover with `sqlite3 .recover`), and history starts afresh, so a
                // corrupt file never keeps the hub from monitoring.
                let aside =
                    path.with_extension(format!("sqlite.corrupt-{}", unix_ms(SystemTime::now())));
                tracing::error!(
                    "history database {} is damaged ({e}); moved aside to {} and starting a \
                     new one",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(&path, &aside).map_err(|source| StoreError::Dir {
                    path: path.clone(),
                    source,
                })?;
                for ext in ["sqlite-wal", "sqlite-shm"] {
                    let _ = std::fs::rename(
                        path.with_extension(ext),
                        aside.with_extension(format!(
                            "{}-{ext}",
                            aside
                                .extension()
                                .map_or_else(String::new, |x| x.to_string_lossy().into_owned())
                        )),
                    );
                }
                open_store(&path, cfg.retention)?
            }
            other => other?,
        };
        let reserve = reserve::Reserve::new(&cfg.dir);
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let stats = Arc::new(HistoryStats::default());
        let writer_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer(store, reserve, rx, &writer_stats))
            .map_err(|source| StoreError::Dir {
                path: cfg.dir.clone(),
                source,
            })?;
        Ok(Arc::new(Self {
            tx,
            writer: Mutex::new(Some(handle)),
            readers: Mutex::new(Vec::new()),
            path,
            retention: cfg.retention,
            stats,
            agent_share: (cfg.queue / 4).clamp(1, MAX_AGENT_SHARE),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores what was queued and stops the writer; records offered later are refused
    /// (`QueueError::Stopped`), and their agents, never acknowledged, send them again to the
    /// next hub. Blocking: call it from `spawn_blocking`. A second call does nothing.
    pub fn close(&self) {
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        let Some(handle) = handle else { return };
        // A full queue makes this wait for the writer, which is what closing means.
        if self.tx.send(None).is_ok() && handle.join().is_err() {
            tracing::error!("history writer panicked");
        }
    }

    /// Queues a record without waiting.
    pub fn try_record(&self, rec: Record) -> Result<(), QueueError> {
        match self.tx.try_send(Some(rec)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                Err(QueueError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(QueueError::Stopped),
        }
    }

    /// Runs `f` with a read connection (WAL: readers never wait for the writer). Blocking:
    /// call it from `spawn_blocking`.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => store::open_reader(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut v) = self.readers.lock() {
            if v.len() < 8 {
                v.push(conn);
            }
        }
        out
    }
}

fn open_store(path: &Path, retention: Retention) -> Result<Store, StoreError> {
    let mut store = Store::open(path, retention)?;
    store.recover_dirty()?;
    Ok(store)
}

fn sqlite_code(e: &StoreError) -> Option<rusqlite::ErrorCode> {
    match e {
        StoreError::Open { source, .. } | StoreError::Sql(source) => source.sqlite_error_code(),
        StoreError::Dir { .. } => None,
    }
}

/// SQLite says the file is not a database, or a damaged one.
fn is_corrupt(e: &StoreError) -> bool {
    matches!(
        sqlite_code(e),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn is_disk_full(e: &StoreError) -> bool {
    sqlite_code(e) == Some(rusqlite::ErrorCode::DiskFull)
}

/// The writer thread: batches, roll-ups, retention. Ends when every sender is gone.
fn writer(
    mut store: Store,
    mut reserve: reserve::Reserve,
    rx: Receiver<Option<Record>>,
    stats: &HistoryStats,
) {
    let mut last_rollup = Instant::now();
    let mut last_retention: Option<Instant> = None;
    let retention_every =
        (store.retention().raw / 20).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut stopping = false;
    while !stopping {
        match rx.recv_timeout(ROLLUP_EVERY) {
            Ok(Some(r)) => batch.push(r),
            Ok(None) => stopping = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                tracing::debug!("history writer stopping");
                return;
            }
        }
        while !stopping && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Some(r)) => batch.push(r),
                Ok(None) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            match store.insert(&batch) {
                Ok(()) => {
                    stats.set_unavailable(None);
                    reserve.refill();
                    stats
                        .stored
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    // Committed: now, and only now, the agents may forget these samples.
                    for a in batch.iter().filter_map(|r| r.ack.as_ref()) {
                        a.stored();
                    }
                }
                Err(e) => {
                    // Not acknowledged: the agents keep these samples and send them again.
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    for a in batch.iter().filter_map(|r| r.ack.as_ref()) {
                        a.failed();
                    }
                    tracing::debug!("history: cannot store {} samples: {e}", batch.len());
                    stats.set_unavailable(Some(e.to_string()));
                    if is_disk_full(&e) && reserve.release() {
                        // Room to delete in: expired points go now, not at the next round.
                        let now = unix_ms(SystemTime::now()) as i64;
                        match store.enforce_retention(now) {
                            Ok(n) => tracing::warn!(
                                "history: the disk is full; released the {} MiB reserve and \
                                 removed {n} expired points",
                                reserve::RESERVE_BYTES >> 20
                            ),
                            Err(e) => tracing::error!(
                                "history: the disk is full; released the reserve, and retention \
                                 still failed: {e}"
                            ),
                        }
                        last_retention = Some(Instant::now());
                    }
                }
            }
            batch.clear();
        }
        let now = unix_ms(SystemTime::now()) as i64;
        if last_rollup.elapsed() >= ROLLUP_EVERY {
            last_rollup = Instant::now();
            if let Err(e) = store.rollup(now) {
                tracing::error!("history: roll-up failed: {e}");
            }
        }
        if last_retention.is_none_or(|t| t.elapsed() >= retention_every) {
            last_retention = Some(Instant::now());
            match store.enforce_retention(now) {
                Ok(n) if n > 0 => tracing::debug!("history: {n} expired points removed"),
                Ok(_) => {}
                Err(e) => tracing::error!("history: retention failed: {e}"),
            }
        }
    }
}
