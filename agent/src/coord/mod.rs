//! The running agent coordinates its host's GPUs: it answers `hmonitor free`, queues
//! `hmonitor wait`s and keeps holds, so that two callers never get the same GPU. Callers come
//! through a Unix socket ([`socket`]) that tells the agent their uid; holds are advisory (they
//! travel in the reports and make free-GPU searches skip the GPU, nothing more).
//!
//! Waiters are served on the sample in which GPUs become free (the sampler's clock), first
//! come first served, under one lock: a GPU granted to one waiter is held before the next one
//! is judged.

pub mod socket;
pub mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hmonitor_common::free::{self, Criteria, GpuRow, Recent};
use hmonitor_proto::{GpuHold, HostInfo};
use hmonitor_sampler::Sampler;
use tokio::sync::oneshot;

/// The longest hold anyone may ask for.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
/// Waiters queued at once (each is a connection).
pub const MAX_WAITERS: usize = 256;
/// Waiters one uid may have queued: one user's scripts cannot fill the queue for everyone.
pub const MAX_WAITERS_PER_UID: usize = 32;

/// One hold on one GPU.
#[derive(Debug, Clone)]
struct Hold {
    gpu: i32,
    uuid: String,
    uid: i32,
    username: String,
    since_ms: u64,
    until_ms: u64,
    /// The `wait` connection that got it and has not started its command yet: its end
    /// releases the hold. `None`: standing (started, or held by hand).
    session: Option<u64>,
    /// The holder's processes on the GPU when the hold began: a new one means the job started.
    pids_before: Vec<u32>,
}

struct Waiter {
    id: u64,
    uid: i32,
    username: String,
    count: usize,
    criteria: Criteria,
    hold_ms: u64,
    grant: oneshot::Sender<Vec<GpuRow>>,
}

#[derive(Default)]
struct Inner {
    holds: Vec<Hold>,
    waiters: Vec<Waiter>,
    recent: Option<Recent>,
    next_id: u64,
}

/// Why a request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("this host has {have} GPUs; {asked} were asked for")]
    TooMany { asked: usize, have: usize },
    #[error("{0} callers are waiting already; try again later")]
    Busy(usize),
    #[error("you have {0} waits queued already (at most {MAX_WAITERS_PER_UID} per user)")]
    TooManyOwn(usize),
    #[error("no GPU {0:?} on this host (give an index or a UUID)")]
    NoSuchGpu(String),
    #[error("GPU {gpu} is not free: {why}")]
    NotFree { gpu: i32, why: String },
    #[error("only {free} of {asked} GPUs are free now")]
    NotEnough { free: usize, asked: usize },
    #[error("GPU {gpu} is held by {holder}, not by you")]
    NotYours { gpu: i32, holder: String },
}

/// Who asks: the uid from the socket, and its name.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: i32,
    pub name: String,
}

impl Caller {
    pub fn new(uid: i32, name: &str) -> Self {
        Self {
            uid,
            name: name.to_owned(),
        }
    }
}

/// A queued wait: the grant arrives on `granted`.
pub struct Ticket {
    pub id: u64,
    pub granted: oneshot::Receiver<Vec<GpuRow>>,
}

pub struct Coordinator {
    inner: Mutex<Inner>,
    host: String,
    interval: Duration,
}

fn now_ms() -> u64 {
    hmonitor_proto::unix_ms(std::time::SystemTime::now())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Coordinator {
    pub fn new(host: &str, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            host: host.to_owned(),
            interval,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts the holds into a report (what the sampler's annotate hook calls).
    pub fn annotate(&self, info: &mut HostInfo) {
        let inner = self.lock();
        put_holds(&inner.holds, info, now_ms());
    }

    /// Follows the sampler: one step per GPU sample, until the sampler stops.
    pub async fn follow(self: Arc<Self>, mut sampler: Sampler) {
        while sampler.changed().await {
            let info = sampler.report_raw();
            self.on_sample(&info, now_ms());
        }
    }

    /// One sample: remember its utilization, end holds that are over, serve waiters.
    pub fn on_sample(&self, info: &HostInfo, now: u64) {
        let mut inner = self.lock();
        let interval = self.interval;
        inner
            .recent
            .get_or_insert_with(|| Recent::new(interval))
            .push(now, &info.gpus, info.stale);
        inner.holds.retain(|h| {
            if h.until_ms <= now {
                tracing::info!("hold of {} on GPU {} expired", h.username, h.gpu);
                return false;
            }
            let started = info.gpus.iter().filter(|g| g.uuid == h.uuid).any(|g| {
                g.procs
                    .iter()
                    .any(|p| p.uid == Some(h.uid) && !h.pids_before.contains(&p.pid))
            });
            if started {
                tracing::info!(
                    "hold of {} on GPU {} ended: the job started",
                    h.username,
                    h.gpu
                );
            }
            !started
        });
        self.serve(&mut inner, info, now);
    }

    /// Grants what is free in `info` to the waiters, in the order they came.
    fn serve(&self, inner: &mut Inner, info: &HostInfo, now: u64) {
        let waiters = std::mem::take(&mut inner.waiters);
        // GPUs an earlier waiter could use but that are not yet enough for it: kept for it, so
        // a waiter for 4 GPUs is not starved by later waiters for 1.
        let mut reserved: Vec<String> = Vec::new();
        for w in waiters {
            if w.grant.is_closed() {
                continue;
            }
            let rows = self.judge(inner, info, &w.criteria, now);
            let free: Vec<GpuRow> = grantable(rows)
                .filter(|r| !reserved.contains(&r.uuid))
                .collect();
            if free.len() < w.count {
                reserved.extend(free.into_iter().map(|r| r.uuid));
                inner.waiters.push(w);
                continue;
            }
            let granted: Vec<GpuRow> = free.into_iter().take(w.count).collect();
            let mut holds: Vec<Hold> =
                make_holds(&granted, info, w.uid, &w.username, now, w.hold_ms)
                    .into_iter()
                    .map(|h| Hold {
                        session: Some(w.id),
                        ..h
                    })
                    .collect();
            let rows = with_holds(granted, &holds);
            if w.grant.send(rows).is_ok() {
                inner.holds.append(&mut holds);
            }
        }
    }

    /// This host's GPUs judged for `c`, holds included, best free first.
    fn judge(&self, inner: &Inner, info: &HostInfo, c: &Criteria, now: u64) -> Vec<GpuRow> {
        let mut view = info.clone();
        put_holds(&inner.holds, &mut view, now);
        let mut rows = free::rows(&self.host, &view, true, inner.recent.as_ref(), now, c);
        free::rank(&mut rows);
        rows.sort_by_key(|r| !r.is_free());
        rows
    }

    /// `hmonitor free`: every GPU of this host judged for the caller.
    pub fn free(&self, info: &HostInfo, c: &Criteria) -> Vec<GpuRow> {
        let inner = self.lock();
        self.judge(&inner, info, c, now_ms())
    }

    /// Queues a wait (granted at once when enough GPUs are free in `info`).
    pub fn wait(
        &self,
        info: &HostInfo,
        who: &Caller,
        count: usize,
        criteria: Criteria,
        hold: Duration,
    ) -> Result<Ticket, CoordError> {
        check_count(count, info)?;
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if inner.waiters.len() >= MAX_WAITERS {
            return Err(CoordError::Busy(inner.waiters.len()));
        }
        let (uid, username) = (who.uid, who.name.as_str());
        let own = inner.waiters.iter().filter(|w| w.uid == uid).count();
        if own >= MAX_WAITERS_PER_UID {
            return Err(CoordError::TooManyOwn(own));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.waiters.push(Waiter {
            id,
            uid,
            username: username.to_owned(),
            count,
            criteria,
            hold_ms: hold_ms(hold),
            grant: tx,
        });
        // The samples held already decide: a GPU free now is granted now, without waiting
        // for the next sample. Others queued before still go first.
        self.serve(&mut inner, info, now_ms());
        Ok(Ticket { id, granted: rx })
    }

    /// The wait's connection ended: drop it from the queue, and release what it was granted
    /// unless its command started.
    pub fn cancel(&self, id: u64) -> Vec<i32> {
        let mut inner = self.lock();
        inner.waiters.retain(|w| w.id != id);
        let released: Vec<i32> = inner
            .holds
            .iter()
            .filter(|h| h.session == Some(id))
            .map(|h| h.gpu)
            .collect();
        inner.holds.retain(|h| h.session != Some(id));
        released
    }

    /// The wait's command is starting: its holds stand until the job shows up or they expire.
    pub fn started(&self, id: u64) {
        for h in self.lock().holds.iter_mut() {
            if h.session == Some(id) {
                h.session = None;
            }
        }
    }

    /// `hmonitor hold`: the named GPUs, or the `count` best free ones, held now.
    pub fn hold(
        &self,
        info: &HostInfo,
        who: &Caller,
        named: &[String],
        count: usize,
        criteria: &Criteria,
        hold: Duration,
    ) -> Result<Vec<GpuRow>, CoordError> {
        let mut inner = self.lock();
        let now = now_ms();
        let rows = self.judge(&inner, info, criteria, now);
        let chosen: Vec<GpuRow> = if named.is_empty() {
            check_count(count, info)?;
            let free: Vec<GpuRow> = grantable(rows).collect();
            if free.len() < count {
                return Err(CoordError::NotEnough {
                    free: free.len(),
                    asked: count,
                });
            }
            free.into_iter().take(count).collect()
        } else {
            let mut out: Vec<GpuRow> = Vec::new();
            for name in named {
                let row = rows
                    .iter()
                    .find(|r| r.uuid == *name || r.index.to_string() == *name)
                    .ok_or_else(|| CoordError::NoSuchGpu(name.clone()))?;
                if out.iter().any(|o| o.uuid == row.uuid) {
                    continue;
                }
                if let Some(h) = &row.held_by {
                    return Err(CoordError::NotFree {
                        gpu: row.index,
                        why: format!("held by {} already", h.username),
                    });
                }
                if !row.is_free() {
                    return Err(CoordError::NotFree {
                        gpu: row.index,
                        why: row.reason.clone(),
                    });
                }
                out.push(row.clone());
            }
            out
        };
        let mut holds = make_holds(&chosen, info, who.uid, &who.name, now, hold_ms(hold));
        let rows = with_holds(chosen, &holds);
        inner.holds.append(&mut holds);
        Ok(rows)
    }

    /// `hmonitor release`: ends the caller's holds on the named GPUs (all of them when none
    /// is named). Only the holder (or root) may end a hold.
    pub fn release(
        &self,
        info: &HostInfo,
        uid: i32,
        named: &[String],
    ) -> Result<Vec<i32>, CoordError> {
        let mut inner = self.lock();
        let mut ids: Vec<i32> = Vec::new();
        for name in named {
            let gpu = info
                .gpus
                .iter()
                .find(|g| g.uuid == *name || g.id.to_string() == *name)
                .ok_or_else(|| CoordError::NoSuchGpu(name.clone()))?;
            ids.push(gpu.id);
        }
        for h in &inner.holds {
            let named_here = ids.is_empty() || ids.contains(&h.gpu);
            if named_here && !ids.is_empty() && h.uid != uid && uid != 0 {
                return Err(CoordError::NotYours {
                    gpu: h.gpu,
                    holder: format!("{} (uid {})", h.username, h.uid),
                });
            }
        }
        let mut released = Vec::new();
        inner.holds.retain(|h| {
            let mine = h.uid == uid || (uid == 0 && !ids.is_empty());
            let named_here = ids.is_empty() || ids.contains(&h.gpu);
            if mine && named_here {
                released.push(h.gpu);
                false
            } else {
                true
            }
        });
        Ok(released)
    }

    /// Holds standing now, as (GPU id, holder uid).
    pub fn holds(&self) -> Vec<(i32, i32)> {
        self.lock().holds.iter().map(|h| (h.gpu, h.uid)).collect()
    }
}

/// The free rows nobody holds: with `mine_ok` the caller's own holds count as free for
/// looking, never for granting (two waits of one user must not get the same GPU).
fn grantable(rows: Vec<GpuRow>) -> impl Iterator<Item = GpuRow> {
    rows.into_iter()
        .filter(|r| r.is_free() && r.held_by.is_none())
}

/// A hold is at least a second (shorter would end before anyone saw it) and at most
/// [`MAX_HOLD`].
fn hold_ms(hold: Duration) -> u64 {
    ms(hold.clamp(Duration::from_secs(1), MAX_HOLD))
}

fn check_count(count: usize, info: &HostInfo) -> Result<(), CoordError> {
    if count == 0 || count > info.gpus.len() {
        return Err(CoordError::TooMany {
            asked: count,
            have: info.gpus.len(),
        });
    }
    Ok(())
}

fn put_holds(holds: &[Hold], info: &mut HostInfo, now: u64) {
    for g in &mut info.gpus {
        g.hold = holds
            .iter()
            .find(|h| h.uuid == g.uuid && h.until_ms > now)
            .map(proto_hold);
    }
}

fn proto_hold(h: &Hold) -> GpuHold {
    GpuHold {
        uid: h.uid,
        username: h.username.clone(),
        since_ms: h.since_ms,
        until_ms: h.until_ms,
    }
}

fn make_holds(
    rows: &[GpuRow],
    info: &HostInfo,
    uid: i32,
    username: &str,
    now: u64,
    hold_ms: u64,
) -> Vec<Hold> {
    rows.iter()
        .map(|r| Hold {
            gpu: r.index,
            uuid: r.uuid.clone(),
            uid,
            username: username.to_owned(),
            since_ms: now,
            until_ms: now.saturating_add(hold_ms),
            session: None,
            pids_before: info
                .gpus
                .iter()
                .filter(|g| g.uuid == r.uuid)
                .flat_map(|g| &g.procs)
                .filter(|p| p.uid == Some(uid))
                .map(|p| p.pid)
                .collect(),
        })
        .collect()
}

fn with_holds(rows: Vec<GpuRow>, holds: &[Hold]) -> Vec<GpuRow> {
    rows.into_iter()
        .map(|mut r| {
            r.held_by = holds.iter().find(|h| h.uuid == r.uuid).map(proto_hold);
            r
        })
        .collect()
}

#[cfg(test)]
mod tests;
