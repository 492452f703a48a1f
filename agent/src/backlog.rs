//! The backlog: every sample one hub has not acknowledged yet, so that an outage of the hub (or
//! of the network) leaves no gap in its history.
//!
//! Each sample goes into the backlog of every hub when it is taken. A hub acknowledges a sample
//! once it has stored it (`Ack{seq}`); the acknowledged sample, and every sample sent before it
//! on the same connection, leave the backlog. After a reconnection the connection sends what is
//! still there, marked `backfill` (for history, not for live views), oldest first, alongside
//! the live samples.
//!
//! Bounded: samples older than the configured span (default 1 hour, `HMON_BACKLOG`) and, past
//! a byte budget, the oldest samples are dropped, with a warning saying how many. With a state
//! directory, the backlog is written there every few seconds and at shutdown, and read back at
//! start: a restart during an outage keeps it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hmonitor_proto::{agent_message, AgentMessage};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Bytes;

/// Default span kept per hub.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(3600);
/// Default byte budget per hub (frames are shared between hubs, so several hubs do not
/// multiply the memory).
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

const MAGIC: &[u8; 8] = b"HMBLOG1\n";
/// Largest frame read back from a backlog file; anything larger is not one the agent wrote.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// One sample, as encoded for live sending.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub sample_ms: u64,
    /// `AgentMessage{snapshot}` with `backfill` unset.
    pub frame: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Samples dropped because the backlog was full or they were too old.
    dropped: u64,
    /// Changed since the last save.
    dirty: bool,
}

#[derive(Debug)]
pub struct Backlog {
    keep: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
    file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error("backlog file {}: {err}", .path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("backlog file {} is not a backlog ({why})", .path.display())]
    Bad { path: PathBuf, why: String },
}

/// The file name for one hub's backlog: the URL, readable (everything but letters and digits
/// replaced, cut to 80), and a hash of the whole URL, so that two hubs never share a file
/// (`ws://a:1/x` and `ws://a/1x` read the same once replaced; two long URLs the same once cut).
pub fn file_name(hub: &str) -> String {
    format!(
        "backlog-{}-{:016x}.bin",
        readable(hub, 80),
        fnv1a(hub.as_bytes())
    )
}

/// The name versions before 0.1 used, without the hash: read once and renamed.
pub fn legacy_file_name(hub: &str) -> String {
    format!("backlog-{}.bin", readable(hub, 120))
}

fn readable(hub: &str, max: usize) -> String {
    let mut s: String = hub
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.truncate(max);
    s
}

/// FNV-1a, 64 bits: stable across versions and machines (std's hasher is not), which a file
/// name must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Backlog {
    /// `file`: where the backlog is kept across restarts (none: memory only).
    pub fn new(keep: Duration, max_bytes: usize, file: Option<PathBuf>) -> Self {
        Self {
            keep,
            max_bytes,
            inner: Mutex::new(Inner::default()),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a sample; drops what is now too old or over the budget. Returns how many samples
    /// were dropped by this call.
    pub fn push(&self, e: Entry) -> u64 {
        let mut g = self.lock();
        g.bytes += e.frame.len();
        let newest = e.sample_ms;
        g.entries.push_back(e);
        g.dirty = true;
        let keep_ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        let mut dropped = 0;
        while let Some(front) = g.entries.front() {
            let too_old = newest.saturating_sub(front.sample_ms) > keep_ms;
            if !too_old && g.bytes <= self.max_bytes {
                break;
            }
            if let Some(old) = g.entries.pop_front() {
                g.bytes -= old.frame.len();
                dropped += 1;
            }
        }
        g.dropped += dropped;
        dropped
    }

    /// Removes the samples with these sequence numbers (acknowledged by the hub).
    pub fn remove(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut g = self.lock();
        let before = g.entries.len();
        let mut freed = 0;
        g.entries.retain(|e| {
            let gone = seqs.binary_search(&e.seq).is_ok();
            if gone {
                freed += e.frame.len();
            }
            !gone
        });
        g.bytes -= freed;
        if g.entries.len() != before {
            g.dirty = true;
        }
    }

    /// Up to `limit` samples with `seq > after` and `seq < before`, oldest first.
    pub fn between(&self, after: u64, before: u64, limit: usize) -> Vec<Entry> {
        let g = self.lock();
        let start = g.entries.partition_point(|e| e.seq <= after);
        g.entries
            .iter()
            .skip(start)
            .take_while(|e| e.seq < before)
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Newest sequence number held, if any.
    pub fn newest_seq(&self) -> Option<u64> {
        self.lock().entries.back().map(|e| e.seq)
    }

    /// Writes the backlog to its file when it changed since the last save (atomically: a crash
    /// leaves the old file or the new one).
    pub fn save(&self) -> Result<(), BacklogError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let entries: Vec<Bytes> = {
            let mut g = self.lock();
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            g.entries.iter().map(|e| e.frame.clone()).collect()
        };
        let io = |err| BacklogError::Io {
            path: path.clone(),
            err,
        };
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let result = (|| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            for frame in &entries {
                f.write_all(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_le_bytes())?;
                f.write_all(frame)?;
            }
            let f = f
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            self.lock().dirty = true;
            return Err(io(e));
        }
        Ok(())
    }

    /// Reads the file back (at start). A missing file is an empty backlog.
    pub fn load(&self) -> Result<usize, BacklogError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let entries = match read_file(path) {
            Ok(e) => e,
            Err(BacklogError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(0)
            }
            Err(e) => return Err(e),
        };
        let n = entries.len();
        for e in entries {
            self.push(e);
        }
        self.lock().dirty = false;
        Ok(n)
    }
}

fn read_file(path: &Path) -> Result<Vec<Entry>, BacklogError> {
    let bad = |why: &str| BacklogError::Bad {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let mut f = std::fs::File::open(path).map_err(|err| BacklogError::Io {
        path: path.to_owned(),
        err,
    })?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|err| BacklogError::Io {
        path: path.to_owned(),
        err,
    })?;
    let rest = buf.strip_prefix(MAGIC).ok_or_else(|| bad("wrong header"))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < rest.len() {
        let len_bytes: [u8; 4] = rest
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("cut short"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_FRAME {
            return Err(bad("frame too large"));
        }
        let frame = rest
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| bad("cut short"))?;
        at += 4 + len;
        let msg = AgentMessage::decode(frame).map_err(|e| bad(&format!("frame: {e}")))?;
        let Some(agent_message::Msg::Snapshot(s)) = msg.msg else {
            return Err(bad("a frame is not a snapshot"));
        };
        out.push(Entry {
            seq: s.seq,
            sample_ms: s.sample_ms,
            frame: Bytes::copy_from_slice(frame),
        });
    }
    Ok(out)
}

/// The same snapshot marked `backfill`, for sending late.
pub fn as_backfill(frame: &Bytes) -> Option<Bytes> {
    let mut msg = AgentMessage::decode(frame.as_ref()).ok()?;
    match &mut msg.msg {
        Some(agent_message::Msg::Snapshot(s)) => s.backfill = true,
        _ => return None,
    }
    Some(Bytes::from(msg.encode_to_vec()))
}

/// A live snapshot without a report, as tests of the backlog and of backfill need one.
#[cfg(test)]
pub(crate) fn test_entry(seq: u64, sample_ms: u64) -> Entry {
    let msg = AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(hmonitor_proto::Snapshot {
            seq,
            sample_ms,
            info: None,
            backfill: false,
        })),
    };
    Entry {
        seq,
        sample_ms,
        frame: Bytes::from(msg.encode_to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubs_never_share_a_backlog_file() {
        let names = [
            "ws://a:1/x",
            "ws://a/1/x",
            "ws://a:1/x?y",
            &format!("ws://h/{}", "p".repeat(200)),
            &format!("ws://h/{}q", "p".repeat(200)),
        ];
        let files: std::collections::HashSet<String> = names.iter().map(|n| file_name(n)).collect();
        assert_eq!(files.len(), names.len(), "{files:?}");
        // What the old names could not tell apart.
        assert_eq!(
            legacy_file_name("ws://a:1/x"),
            legacy_file_name("ws://a/1/x")
        );
        // Stable: a restart finds its file again.
        assert_eq!(
            file_name("ws://hub:5000/api/agent"),
            "backlog-ws___hub_5000_api_agent-bd34b6afeb1ae0de.bin"
        );
    }

    fn entry(seq: u64, sample_ms: u64) -> Entry {
        test_entry(seq, sample_ms)
    }

    #[test]
    fn keeps_the_configured_span_and_counts_what_it_drops() {
        let b = Backlog::new(Duration::from_secs(10), usize::MAX, None);
        for i in 1..=30 {
            b.push(entry(i, i * 1000));
        }
        // 10 s back from the newest (30 s): samples 20..=30 stay.
        assert_eq!(b.len(), 11);
        assert_eq!(b.between(0, u64::MAX, 100)[0].seq, 20);
        assert_eq!(b.dropped(), 19);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest() {
        let size = entry(1, 1).frame.len();
        let b = Backlog::new(Duration::from_secs(3600), size * 5, None);
        for i in 1..=8 {
            b.push(entry(i, i));
        }
        let seqs: Vec<u64> = b.between(0, u64::MAX, 100).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5, 6, 7, 8]);
    }

    #[test]
    fn acknowledged_samples_leave_and_between_is_bounded_both_ways() {
        let b = Backlog::new(Duration::from_secs(3600), usize::MAX, None);
        for i in 1..=10 {
            b.push(entry(i, i));
        }
        b.remove(&[1, 2, 3, 7]);
        let seqs: Vec<u64> = b.between(3, 9, 100).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5, 6, 8]);
        let seqs: Vec<u64> = b.between(0, 100, 2).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(b.newest_seq(), Some(10));
    }

    #[test]
    fn a_saved_backlog_is_read_back_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name("ws://hub:5000/api/agent"));
        let b = Backlog::new(Duration::from_secs(3600), usize::MAX, Some(path.clone()));
        for i in 1..=5 {
            b.push(entry(i, 1000 + i));
        }
        b.remove(&[2]);
        b.save().expect("save");
        let again = Backlog::new(Duration::from_secs(3600), usize::MAX, Some(path.clone()));
        assert_eq!(again.load().expect("load"), 4);
        let seqs: Vec<(u64, u64)> = again
            .between(0, u64::MAX, 100)
            .iter()
            .map(|e| (e.seq, e.sample_ms))
            .collect();
        assert_eq!(seqs, [(1, 1001), (3, 1003), (4, 1004), (5, 1005)]);

        std::fs::write(&path, b"something else").expect("write");
        let e = again.load().expect_err("bad file");
        assert!(e.to_string().contains("wrong header"), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn backfill_marks_the_snapshot_and_keeps_the_rest() {
        let e = entry(7, 1234);
        let b = as_backfill(&e.frame).expect("snapshot");
        let Some(agent_message::Msg::Snapshot(s)) =
            AgentMessage::decode(b.as_ref()).expect("decode").msg
        else {
            panic!("not a snapshot");
        };
        assert!(s.backfill);
        assert_eq!((s.seq, s.sample_ms), (7, 1234));
    }
}
