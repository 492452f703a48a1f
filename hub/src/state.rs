//! Live state: host id → the latest frame, in a concurrent map, and the fan-out to browsers.
//!
//! Ingest writes one map entry per frame and never waits on a browser: each frame is encoded
//! once as a `LiveEvent` and handed to a bounded broadcast channel. A browser that falls behind
//! loses its place in the channel (`Lagged`) and is resynchronised from the map, where the
//! latest frame per host wins; memory is therefore bounded by the channel's capacity plus one
//! frame per host, whatever the browsers do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use hmonitor_common::free;
use hmonitor_proto::{
    live_event, unix_ms, HostInfo, HostSource, HostState, HostStatus, HostStatusChange, LiveEvent,
};
use prost::Message;
use tokio::sync::broadcast;

/// Events buffered for browsers. At 1,000 hosts × 1 frame/s this is about 4 s of frames; a
/// browser further behind is resynchronised from the map instead.
pub const LIVE_CAPACITY: usize = 4096;

/// Bytes the buffered events may hold at most (frames can be up to `max_frame_bytes` each, so
/// the count alone would allow gigabytes). Past it, a frame is buffered as a reference to its
/// host, and each browser takes the host's latest frame from the map when it gets there.
pub const LIVE_RING_BYTES: usize = 64 * 1024 * 1024;

/// One event for browsers, as buffered in the broadcast ring.
#[derive(Debug, Clone)]
pub enum LiveItem {
    /// An encoded `LiveEvent`, the same bytes for every browser.
    Event(Bytes),
    /// The latest frame of this host, to be read from the map (the ring is full in bytes).
    Latest(Arc<str>),
}

/// The sizes of the last [`LIVE_CAPACITY`] items sent: what the ring holds.
#[derive(Debug, Default)]
struct RingBytes {
    lens: std::collections::VecDeque<usize>,
    total: usize,
}

/// A host counts as down after this many of its intervals without a frame.
pub const DOWN_AFTER_INTERVALS: u32 = 3;

/// Identifies one agent connection (or one pull poller), so that a stale connection closing
/// late cannot mark down a host that has already reconnected.
pub type ConnId = u64;

/// Who proved the right to report as a host: the credential a connection presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token configured for this host alone.
    Host(String),
    /// The shared enrollment token, with the digest of the agent's host key (none: it has
    /// none). Two agents with different keys never take each other's id over.
    Enrollment(Option<hmonitor_common::auth::HostKeyDigest>),
    /// No token needed: a pull target or the hub's own local agent.
    Internal,
}

#[derive(Debug)]
struct Entry {
    state: HostState,
    /// `LiveEvent{host: state}`, encoded once, sent as is to every browser.
    frame: Bytes,
    owner: Option<(ConnId, Credential)>,
    last_frame: Option<Instant>,
    interval: Duration,
    /// Recent utilization per GPU, on the hub's clock: what settle times are judged from.
    recent: free::Recent,
}

/// Buckets a host's [`free::Recent`] ring has: coarse (a bucket spans about 9 s at most), so
/// 10,000 hosts keep it in a few KiB each. Judging from coarser buckets can only make a GPU
/// wait longer before it counts as free, never count too early.
const RECENT_BUCKETS: u32 = 64;

fn recent_for(interval: Duration) -> free::Recent {
    free::Recent::new(interval.max(free::MAX_SETTLE / RECENT_BUCKETS))
}

/// Counters for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_refused: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Browser resynchronisations after falling behind.
    pub browser_lagged: AtomicU64,
    /// Browsers dropped for not keeping up within the write deadline.
    pub browsers_dropped: AtomicU64,
    pub browsers_connected: AtomicU64,
    pub agents_connected: AtomicU64,
    /// Agent connections closed for exceeding the per-agent frame rate.
    pub frames_rate_limited: AtomicU64,
}

/// Why a connection may not report as a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("host id {0:?} is connected with another token")]
    Taken(String),
    #[error("host id must be 1 to 128 printable characters without '/'")]
    BadId,
    /// `max_hosts` ids are known already; a new one would be one more (an admin forgets
    /// hosts, or raises the limit).
    #[error("the hub knows {max} hosts already (max_hosts); a new host id is refused")]
    Full { max: usize },
}

pub struct Hub {
    hosts: DashMap<String, Entry>,
    live: broadcast::Sender<LiveItem>,
    ring: std::sync::Mutex<RingBytes>,
    next_conn: AtomicU64,
    default_interval: Duration,
    /// How many host ids may be known at once (each keeps its last frame in memory).
    max_hosts: std::sync::atomic::AtomicUsize,
    /// How many are: kept beside the map, so a full hub refuses exactly at the limit even when
    /// many new ids arrive at once.
    known: std::sync::atomic::AtomicUsize,
    pub stats: Stats,
    pub started: Instant,
    /// The history store, when the hub keeps one (set once at start).
    history: std::sync::OnceLock<Arc<crate::history::History>>,
    /// The settle time of the default free verdict (`HostState.free_gpus`), milliseconds.
    free_settle_ms: AtomicU64,
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn encode_event(event: live_event::Event) -> Bytes {
    Bytes::from(
        LiveEvent {
            event: Some(event),
            sent_ms: now_ms(),
        }
        .encode_to_vec(),
    )
}

/// `LiveEvent{host: state, sent_ms}` encoded straight from a borrowed state: the same bytes as
/// `encode_event(Host(state.clone()))` without the clone. A report holds a few hundred small
/// allocations (strings and vectors per GPU and process); copying it on every frame made the
/// allocator the largest part of the hub's CPU at 10,000 frames/s.
fn encode_host_event(state: &HostState, sent_ms: u64) -> Bytes {
    use prost::encoding::{encoded_len_varint, key_len, message, uint64};
    let len = state.encoded_len();
    let mut buf = Vec::with_capacity(
        key_len(1)
            + encoded_len_varint(len as u64)
            + len
            + key_len(4)
            + encoded_len_varint(sent_ms),
    );
    // In the order prost writes LiveEvent's fields: the `event` oneof (tag 1), then `sent_ms`
    // (tag 4), which proto3 leaves out when 0.
    message::encode(1, state, &mut buf);
    if sent_ms != 0 {
        uint64::encode(4, &sent_ms, &mut buf);
    }
    Bytes::from(buf)
}

/// Host ids appear in URLs, file names and metrics labels: keep them plain.
pub fn valid_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.contains('/')
        && id.chars().all(|c| !c.is_control() && c != '"')
}

impl Hub {
    /// `expected`: host ids named in the configuration, listed as never seen until they report.
    pub fn new(default_interval: Duration, expected: &[String]) -> Arc<Self> {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let hub = Self {
            hosts: DashMap::new(),
            live,
            ring: std::sync::Mutex::default(),
            next_conn: AtomicU64::new(1),
            default_interval,
            max_hosts: std::sync::atomic::AtomicUsize::new(usize::MAX),
            known: std::sync::atomic::AtomicUsize::new(0),
            stats: Stats::default(),
            started: Instant::now(),
            history: std::sync::OnceLock::new(),
            free_settle_ms: AtomicU64::new(
                u64::try_from(free::DEFAULT_SETTLE.as_millis()).unwrap_or(u64::MAX),
            ),
        };
        for id in expected.iter().filter(|id| valid_host_id(id)) {
            let state = HostState {
                id: id.clone(),
                status: HostStatus::NeverSeen as i32,
                ..Default::default()
            };
            let frame = encode_event(live_event::Event::Host(state.clone()));
            hub.hosts.insert(
                id.clone(),
                Entry {
                    state,
                    frame,
                    owner: None,
                    last_frame: None,
                    interval: default_interval,
                    recent: recent_for(default_interval),
                },
            );
        }
        hub.known.store(hub.hosts.len(), Ordering::SeqCst);
        Arc::new(hub)
    }

    /// At most `max` host ids known at once (`max_hosts`): a new id past it is refused.
    /// Expected hosts count, and are known from the start.
    pub fn set_max_hosts(&self, max: usize) {
        self.max_hosts.store(max, Ordering::Relaxed);
    }

    /// The settle time of the default free verdict the page shows (`free_settle`).
    pub fn set_free_settle(&self, settle: Duration) {
        let ms = u64::try_from(settle.as_millis()).unwrap_or(u64::MAX);
        self.free_settle_ms.store(ms, Ordering::Relaxed);
    }

    /// The default criteria: what the page counts as free.
    pub fn default_criteria(&self) -> free::Criteria {
        free::Criteria {
            settle: Duration::from_millis(self.free_settle_ms.load(Ordering::Relaxed)),
            ..free::Criteria::default()
        }
    }

    /// Every GPU of every reporting host judged for `q` (free ones best first when
    /// `q.free_only`; with `q.count`, only hosts with that many free GPUs).
    pub fn gpu_rows(&self, q: &free::Query) -> Vec<free::GpuRow> {
        let now = now_ms();
        let mut rows: Vec<free::GpuRow> = Vec::new();
        for e in &self.hosts {
            let Some(info) = &e.state.info else { continue };
            if q.host
                .as_ref()
                .is_some_and(|h| !e.state.id.contains(h.as_str()))
            {
                continue;
            }
            let up = e.state.status == HostStatus::Up as i32;
            let host = free::rows(&e.state.id, info, up, Some(&e.recent), now, &q.criteria);
            let kept: Vec<_> = host.into_iter().filter(|r| q.keeps(r)).collect();
            if q.free_only && kept.len() < q.count {
                continue;
            }
            rows.extend(kept);
        }
        if q.free_only {
            free::rank(&mut rows);
        } else {
            rows.sort_by(|a, b| a.host.cmp(&b.host).then(a.index.cmp(&b.index)));
        }
        rows
    }

    /// Calls `f` with every host's state, under the map's read locks: `f` must be short and
    /// must not touch the hub (the alert rules read the map this way, allocating nothing for
    /// a host that raises no alert).
    pub fn visit_hosts(&self, mut f: impl FnMut(&HostState)) {
        for e in &self.hosts {
            f(&e.state);
        }
    }

    /// `f` of one host's state, under its read lock.
    pub fn with_host<R>(&self, id: &str, f: impl FnOnce(&HostState) -> R) -> Option<R> {
        self.hosts.get(id).map(|e| f(&e.state))
    }

    /// Attaches the history store; a second call is ignored.
    pub fn set_history(&self, history: Arc<crate::history::History>) {
        let _ = self.history.set(history);
    }

    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.history.get()
    }

    /// The sampling interval a host announced (else the hub's default).
    pub fn interval_of(&self, id: &str) -> Duration {
        self.hosts
            .get(id)
            .map_or(self.default_interval, |e| e.interval)
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Lets connection `conn` report as `id`. A host already held by a live connection with
    /// the same credential is taken over (the agent reconnected before the old socket was
    /// noticed dead); with another credential it is refused.
    pub fn claim(
        &self,
        id: &str,
        conn: ConnId,
        credential: Credential,
        source: HostSource,
        addr: &str,
        interval: Duration,
    ) -> Result<(), ClaimError> {
        if !valid_host_id(id) {
            return Err(ClaimError::BadId);
        }
        let mut entry = match self.hosts.entry(id.to_owned()) {
            dashmap::mapref::entry::Entry::Occupied(o) => o.into_ref(),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                let max = self.max_hosts.load(Ordering::Relaxed);
                if self.known.fetch_add(1, Ordering::SeqCst) >= max {
                    self.known.fetch_sub(1, Ordering::SeqCst);
                    return Err(ClaimError::Full { max });
                }
                v.insert(Entry {
                    state: HostState {
                        id: id.to_owned(),
                        status: HostStatus::NeverSeen as i32,
                        ..Default::default()
                    },
                    frame: Bytes::new(),
                    owner: None,
                    last_frame: None,
                    interval,
                    recent: recent_for(interval),
                })
            }
        };
        if let Some((_, held_by)) = &entry.owner {
            if *held_by != credential {
                return Err(ClaimError::Taken(id.to_owned()));
            }
        }
        entry.owner = Some((conn, credential));
        entry.interval = if interval.is_zero() {
            self.default_interval
        } else {
            interval
        };
        entry.state.addr = addr.to_owned();
        entry.state.source = source as i32;
        entry.state.interval_ms = u32::try_from(entry.interval.as_millis()).unwrap_or(u32::MAX);
        Ok(())
    }

    /// The agent's clock minus the hub's, from its latest live sample; shown on the page and
    /// in `/metrics` (and kept when the sample itself is refused for it).
    pub fn note_clock_skew(&self, id: &str, skew_ms: i64) {
        if let Some(mut entry) = self.hosts.get_mut(id) {
            entry.state.clock_skew_ms = Some(skew_ms);
        }
    }

    /// Stores a report from connection `conn` and sends it to every browser. Returns false
    /// when `conn` no longer owns the host (another connection took it over).
    pub fn ingest(&self, id: &str, conn: ConnId, seq: u64, info: HostInfo) -> bool {
        let frame = {
            let Some(mut entry) = self.hosts.get_mut(id) else {
                return false;
            };
            if entry.owner.as_ref().map(|(c, _)| *c) != Some(conn) {
                return false;
            }
            let now = now_ms();
            entry.last_frame = Some(Instant::now());
            entry.state.status = HostStatus::Up as i32;
            entry.state.last_seen_ms = now;
            entry.state.seq = seq;
            entry.recent.push(now, &info.gpus, info.stale);
            let criteria = self.default_criteria();
            // Into the vectors of the last frame: no allocation per frame.
            let mut free_gpus = std::mem::take(&mut entry.state.free_gpus);
            let mut settling_gpus = std::mem::take(&mut entry.state.settling_gpus);
            free_gpus.clear();
            settling_gpus.clear();
            for g in &info.gpus {
                match free::verdict(g, true, info.stale, Some(&entry.recent), now, &criteria).0 {
                    free::State::Free => free_gpus.push(g.id),
                    free::State::Settling => settling_gpus.push(g.id),
                    _ => {}
                }
            }
            entry.state.free_gpus = free_gpus;
            entry.state.settling_gpus = settling_gpus;
            entry.state.info = Some(info);
            let frame = encode_host_event(&entry.state, now_ms());
            entry.frame = frame.clone();
            frame
        };
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.publish_frame(id, frame);
        true
    }

    /// Connection `conn` is gone: its host is down (unless another connection owns it now).
    pub fn release(&self, id: &str, conn: ConnId) {
        let event = {
            let Some(mut entry) = self.hosts.get_mut(id) else {
                return;
            };
            if entry.owner.as_ref().map(|(c, _)| *c) != Some(conn) {
                return;
            }
            entry.owner = None;
            mark_down(&mut entry)
        };
        if let Some(event) = event {
            self.publish(event);
        }
    }

    /// Marks down every host silent for [`DOWN_AFTER_INTERVALS`] of its intervals. Run
    /// periodically; cheap (one pass over the map, no allocation for healthy hosts).
    pub fn sweep(&self) {
        let mut events = Vec::new();
        for mut entry in self.hosts.iter_mut() {
            let silent = entry
                .last_frame
                .is_some_and(|t| t.elapsed() > entry.interval * DOWN_AFTER_INTERVALS);
            if silent && entry.state.status == HostStatus::Up as i32 {
                if let Some(e) = mark_down(&mut entry) {
                    events.push(e);
                }
            }
        }
        for e in events {
            self.publish(e);
        }
    }

    /// Removes `id` (an admin forgot it): browsers are told, its connection (if any) can no
    /// longer report, and it no longer counts against `max_hosts`. Returns whether it was known.
    pub fn forget(&self, id: &str) -> bool {
        if self.hosts.remove(id).is_none() {
            return false;
        }
        self.known.fetch_sub(1, Ordering::SeqCst);
        self.publish(encode_event(live_event::Event::Removed(id.to_owned())));
        true
    }

    /// Every host's latest frame: what a browser gets on connect or after falling behind.
    pub fn frames(&self) -> Vec<Bytes> {
        self.hosts
            .iter()
            .filter(|e| !e.frame.is_empty())
            .map(|e| e.frame.clone())
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveItem> {
        self.live.subscribe()
    }

    /// The bytes a browser sends for `item`: the event, or the host's latest frame (`None`
    /// when the host is gone).
    pub fn resolve(&self, item: LiveItem) -> Option<Bytes> {
        match item {
            LiveItem::Event(b) => Some(b),
            LiveItem::Latest(id) => self
                .hosts
                .get(&*id)
                .map(|e| e.frame.clone())
                .filter(|f| !f.is_empty()),
        }
    }

    /// Buffers a small event (status changes, removals) for browsers.
    fn publish(&self, event: Bytes) {
        self.account(event.len());
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(LiveItem::Event(event));
    }

    /// Buffers host `id`'s new frame, or a reference to it when the ring is full in bytes.
    fn publish_frame(&self, id: &str, frame: Bytes) {
        let item = if self.fits(frame.len()) {
            LiveItem::Event(frame)
        } else {
            self.account(id.len());
            LiveItem::Latest(Arc::from(id))
        };
        let _ = self.live.send(item);
    }

    /// Whether `len` more bytes fit the ring; if so they are counted in.
    fn fits(&self, len: usize) -> bool {
        let mut r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let leaving = if r.lens.len() >= LIVE_CAPACITY {
            r.lens.front().copied().unwrap_or(0)
        } else {
            0
        };
        if r.total - leaving + len > LIVE_RING_BYTES {
            return false;
        }
        push_len(&mut r, len);
        true
    }

    fn account(&self, len: usize) {
        let mut r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        push_len(&mut r, len);
    }

    /// Bytes the broadcast ring holds now (at most [`LIVE_RING_BYTES`] plus references).
    pub fn ring_bytes(&self) -> usize {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
    }

    /// Every host's state, sorted by id.
    pub fn hosts(&self) -> Vec<HostState> {
        let mut v: Vec<HostState> = self.hosts.iter().map(|e| e.state.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn host(&self, id: &str) -> Option<HostState> {
        self.hosts.get(id).map(|e| e.state.clone())
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts whose status is up.
    pub fn up_count(&self) -> usize {
        self.hosts
            .iter()
            .filter(|e| e.state.status == HostStatus::Up as i32)
            .count()
    }
}

/// Counts an item into the ring; the oldest leaves once it holds [`LIVE_CAPACITY`] (as the
/// broadcast channel's slots do).
fn push_len(r: &mut RingBytes, len: usize) {
    if r.lens.len() >= LIVE_CAPACITY {
        let old = r.lens.pop_front().unwrap_or(0);
        r.total -= old;
    }
    r.lens.push_back(len);
    r.total += len;
}

/// Sets the entry down; returns the status event to broadcast, if the status changed.
fn mark_down(entry: &mut Entry) -> Option<Bytes> {
    if entry.state.status == HostStatus::Down as i32 || entry.last_frame.is_none() {
        return None;
    }
    entry.state.status = HostStatus::Down as i32;
    // A host that does not report has no free GPU.
    entry.state.free_gpus.clear();
    entry.state.settling_gpus.clear();
    // Browsers connecting later get the host greyed, with its last report.
    entry.frame = encode_host_event(&entry.state, now_ms());
    Some(encode_event(live_event::Event::Status(HostStatusChange {
        id: entry.state.id.clone(),
        status: HostStatus::Down as i32,
        last_seen_ms: entry.state.last_seen_ms,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &Bytes) -> LiveEvent {
        LiveEvent::decode(b.as_ref()).expect("live event")
    }

    #[test]
    fn a_frame_reaches_subscribers_once_encoded_and_the_map_keeps_the_latest() {
        let hub = Hub::new(Duration::from_secs(1), &["never".to_owned()]);
        let mut rx = hub.subscribe();
        let c = hub.next_conn_id();
        hub.claim(
            "a",
            c,
            Credential::Enrollment(None),
            HostSource::Push,
            "127.0.0.1:1",
            Duration::from_secs(1),
        )
        .expect("claim");
        for seq in 1..=3 {
            assert!(hub.ingest(
                "a",
                c,
                seq,
                HostInfo {
                    id: "a".into(),
                    ..Default::default()
                }
            ));
        }
        for seq in 1..=3 {
            let item = hub.resolve(rx.try_recv().expect("event")).expect("bytes");
            match decode(&item).event {
                Some(live_event::Event::Host(h)) => assert_eq!(h.seq, seq),
                other => panic!("{other:?}"),
            }
        }
        let hosts = hub.hosts();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].id, "a");
        assert_eq!(hosts[0].seq, 3);
        assert_eq!(hosts[1].status, HostStatus::NeverSeen as i32);
    }

    #[test]
    fn another_credential_cannot_take_a_connected_host_but_the_same_one_can() {
        let hub = Hub::new(Duration::from_secs(1), &[]);
        let (c1, c2, c3) = (hub.next_conn_id(), hub.next_conn_id(), hub.next_conn_id());
        let i = Duration::from_secs(1);
        hub.claim(
            "a",
            c1,
            Credential::Host("t1".into()),
            HostSource::Push,
            "x",
            i,
        )
        .expect("first");
        assert_eq!(
            hub.claim(
                "a",
                c2,
                Credential::Enrollment(None),
                HostSource::Push,
                "y",
                i
            ),
            Err(ClaimError::Taken("a".into()))
        );
        hub.claim(
            "a",
            c3,
            Credential::Host("t1".into()),
            HostSource::Push,
            "z",
            i,
        )
        .expect("takeover");
        // The replaced connection can neither report nor mark the host down any more.
        assert!(!hub.ingest("a", c1, 1, HostInfo::default()));
        assert!(hub.ingest("a", c3, 1, HostInfo::default()));
        hub.release("a", c1);
        assert_eq!(hub.host("a").expect("a").status, HostStatus::Up as i32);
        hub.release("a", c3);
        assert_eq!(hub.host("a").expect("a").status, HostStatus::Down as i32);
    }

    #[test]
    fn silent_hosts_go_down_with_their_last_seen_time() {
        let hub = Hub::new(Duration::from_millis(10), &[]);
        let c = hub.next_conn_id();
        hub.claim(
            "a",
            c,
            Credential::Internal,
            HostSource::Pull,
            "x",
            Duration::from_millis(10),
        )
        .expect("claim");
        assert!(hub.ingest("a", c, 1, HostInfo::default()));
        let mut rx = hub.subscribe();
        std::thread::sleep(Duration::from_millis(50));
        hub.sweep();
        let state = hub.host("a").expect("a");
        assert_eq!(state.status, HostStatus::Down as i32);
        assert!(state.last_seen_ms > 0);
        let item = hub
            .resolve(rx.try_recv().expect("status event"))
            .expect("bytes");
        match decode(&item).event {
            Some(live_event::Event::Status(s)) => assert_eq!(s.status, HostStatus::Down as i32),
            other => panic!("{other:?}"),
        }
        // Only once.
        hub.sweep();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_host_event_encoded_from_a_borrow_is_the_live_event_encoding() {
        let state = HostState {
            id: "a".into(),
            status: HostStatus::Up as i32,
            seq: 7,
            info: Some(HostInfo {
                id: "a".into(),
                gpus: vec![Default::default(); 2],
                ..Default::default()
            }),
            ..Default::default()
        };
        for sent_ms in [0, 1_700_000_000_000] {
            let expected = LiveEvent {
                event: Some(live_event::Event::Host(state.clone())),
                sent_ms,
            }
            .encode_to_vec();
            assert_eq!(
                encode_host_event(&state, sent_ms).as_ref(),
                expected.as_slice()
            );
        }
    }

    #[test]
    fn the_broadcast_ring_is_bounded_in_bytes_and_big_frames_past_it_go_by_reference() {
        let hub = Hub::new(Duration::from_secs(1), &[]);
        let mut rx = hub.subscribe();
        let c = hub.next_conn_id();
        hub.claim(
            "big",
            c,
            Credential::Enrollment(None),
            HostSource::Push,
            "x",
            Duration::from_secs(1),
        )
        .expect("claim");
        // 100 frames of about 1 MiB each: 100 MiB by count, over the 64 MiB budget.
        let info = |n: u64| HostInfo {
            id: "big".into(),
            err: "e".repeat(1 << 20),
            uptime_s: Some(n),
            ..Default::default()
        };
        for seq in 1..=100 {
            assert!(hub.ingest("big", c, seq, info(seq)));
        }
        assert!(hub.ring_bytes() <= LIVE_RING_BYTES, "{}", hub.ring_bytes());
        let (mut events, mut refs) = (0, 0);
        while let Ok(item) = rx.try_recv() {
            match &item {
                LiveItem::Event(_) => events += 1,
                LiveItem::Latest(id) => {
                    assert_eq!(&**id, "big");
                    refs += 1;
                }
            }
            // Either way a browser gets a whole host event; a reference gives the latest.
            let bytes = hub.resolve(item).expect("host is known");
            match decode(&bytes).event {
                Some(live_event::Event::Host(h)) => assert!(h.seq >= 1),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(events + refs, 100);
        assert!((60..=64).contains(&events), "{events} frames kept whole");
        let latest = hub.resolve(LiveItem::Latest("big".into())).expect("latest");
        match decode(&latest).event {
            Some(live_event::Event::Host(h)) => assert_eq!(h.seq, 100),
            other => panic!("{other:?}"),
        }
        assert!(hub.resolve(LiveItem::Latest("gone".into())).is_none());
    }

    #[test]
    fn host_ids_are_plain() {
        assert!(valid_host_id("gpu-node-01.lab"));
        assert!(!valid_host_id(""));
        assert!(!valid_host_id("a/b"));
        assert!(!valid_host_id(&"x".repeat(129)));
        assert!(!valid_host_id("a\nb"));
    }
}
