//! Who may report as which host id.
//!
//! A per-host token proves its host by itself. The shared enrollment token proves only that a
//! machine was enrolled, so with it:
//! - an id that has its own per-host token, or that is a pull target, is never accepted (it is
//!   reserved for its owner, also while the owner is offline);
//! - an id is pinned to the host key of the first agent that reports it (trust on first use):
//!   the hub keeps the key's digest in `<data_dir>/hosts.sqlite`, and refuses the id to any
//!   other key, or to an agent without one, until an admin forgets it.
//!
//! The pins live in memory (checked on every connection, never on a frame) and in SQLite
//! (written when an id is first pinned and when it is forgotten: rare, small writes).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmonitor_common::auth::{host_key_digest, host_key_matches, HostKeyDigest};
use rusqlite::{params, Connection};

/// Name of the pin store inside the data directory.
pub const PINS_FILE: &str = "hosts.sqlite";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "host id {0:?} is reserved for its own per-host token or pull target; the shared \
         enrollment token cannot report as it"
    )]
    Reserved(String),
    #[error(
        "host id {0:?} is pinned to another agent's host key (trust on first use); if this \
         machine really is that host, an admin releases the id with `hmonitor-hub hosts forget \
         {0}`"
    )]
    Pinned(String),
    #[error("bad host key in the hello: {0}")]
    BadKey(String),
    #[error("host pin store {}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },
}

/// What the hub knows of one pinned id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PinInfo {
    pub id: String,
    /// When the id was pinned, Unix milliseconds.
    pub pinned_ms: u64,
    /// The address the first agent connected from.
    pub first_addr: String,
}

#[derive(Debug, Clone)]
struct Pin {
    digest: HostKeyDigest,
    pinned_ms: u64,
    first_addr: String,
}

/// What [`Identity::check`] found: the id may be claimed; once claimed, [`Identity::pin`] it
/// when this is [`Verdict::New`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to pin: a per-host token, an internal source, or the id is pinned to this key.
    Known,
    /// The agent has no host key and the id is not pinned: accepted, unpinned.
    Unpinned,
    /// Pin the id to this digest once the claim succeeds.
    New(HostKeyDigest),
}

pub struct Identity {
    reserved: BTreeSet<String>,
    pins: Mutex<HashMap<String, Pin>>,
    db: Option<(PathBuf, Mutex<Connection>)>,
}

impl Identity {
    /// Pins kept in memory only (tests; a hub always has a data directory).
    pub fn in_memory(reserved: BTreeSet<String>) -> Self {
        Self {
            reserved,
            pins: Mutex::new(HashMap::new()),
            db: None,
        }
    }

    /// Opens (or creates) `<dir>/hosts.sqlite` and reads every pin.
    pub fn open(dir: &Path, reserved: BTreeSet<String>) -> Result<Self, IdentityError> {
        let path = dir.join(PINS_FILE);
        let fail = |e: rusqlite::Error| IdentityError::Store {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| IdentityError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let db = Connection::open(&path).map_err(fail)?;
        db.execute_batch(
            // NORMAL in WAL mode: a power cut may lose the last pins, never corrupt the file,
            // and a fleet connecting for the first time does not wait on one fsync per host.
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 2000;
             CREATE TABLE IF NOT EXISTS pins (
                 id TEXT PRIMARY KEY,
                 key_sha256 BLOB NOT NULL,
                 pinned_ms INTEGER NOT NULL,
                 first_addr TEXT NOT NULL
             );",
        )
        .map_err(fail)?;
        let mut pins = HashMap::new();
        {
            let mut stmt = db
                .prepare("SELECT id, key_sha256, pinned_ms, first_addr FROM pins")
                .map_err(fail)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(fail)?;
            for row in rows {
                let (id, key, pinned_ms, first_addr) = row.map_err(fail)?;
                let Ok(digest) = HostKeyDigest::try_from(key.as_slice()) else {
                    tracing::warn!("{}: pin of {id:?} is damaged; ignored", path.display());
                    continue;
                };
                pins.insert(
                    id,
                    Pin {
                        digest,
                        pinned_ms: u64::try_from(pinned_ms).unwrap_or_default(),
                        first_addr,
                    },
                );
            }
        }
        Ok(Self {
            reserved,
            pins: Mutex::new(pins),
            db: Some((path, Mutex::new(db))),
        })
    }

    /// The digest of a hello's host key (empty: none).
    pub fn digest(key: &[u8]) -> Result<Option<HostKeyDigest>, IdentityError> {
        if key.is_empty() {
            return Ok(None);
        }
        host_key_digest(key)
            .map(Some)
            .map_err(IdentityError::BadKey)
    }

    /// Whether an agent with host key `digest` (none: it has no key) and the shared
    /// enrollment token may report as `id`.
    pub fn check_enrolled(
        &self,
        id: &str,
        digest: Option<HostKeyDigest>,
    ) -> Result<Verdict, IdentityError> {
        if self.reserved.contains(id) {
            return Err(IdentityError::Reserved(id.to_owned()));
        }
        let pins = self.lock();
        match (pins.get(id), digest) {
            (Some(pin), Some(d)) if host_key_matches(&pin.digest, &d) => Ok(Verdict::Known),
            (Some(_), _) => Err(IdentityError::Pinned(id.to_owned())),
            (None, Some(d)) => Ok(Verdict::New(d)),
            (None, None) => Ok(Verdict::Unpinned),
        }
    }

    /// Pins `id` to `digest` (after [`Identity::check_enrolled`] said [`Verdict::New`] and the
    /// claim succeeded). Refused when another key pinned it meanwhile.
    pub fn pin(&self, id: &str, digest: HostKeyDigest, addr: &str) -> Result<(), IdentityError> {
        let mut pins = self.lock();
        if let Some(pin) = pins.get(id) {
            return if host_key_matches(&pin.digest, &digest) {
                Ok(())
            } else {
                Err(IdentityError::Pinned(id.to_owned()))
            };
        }
        let pin = Pin {
            digest,
            pinned_ms: hmonitor_proto::unix_ms(std::time::SystemTime::now()),
            first_addr: addr.to_owned(),
        };
        if let Some((path, db)) = &self.db {
            let db = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            db.execute(
                "INSERT OR REPLACE INTO pins (id, key_sha256, pinned_ms, first_addr)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    id,
                    &pin.digest[..],
                    i64::try_from(pin.pinned_ms).unwrap_or(i64::MAX),
                    addr
                ],
            )
            .map_err(|e| IdentityError::Store {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        pins.insert(id.to_owned(), pin);
        tracing::info!("host id {id:?} pinned to the host key of its agent at {addr}");
        Ok(())
    }

    /// Releases `id`: the next agent with the shared token pins it anew. Returns whether it
    /// was pinned.
    pub fn forget(&self, id: &str) -> Result<bool, IdentityError> {
        let mut pins = self.lock();
        if let Some((path, db)) = &self.db {
            let db = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            db.execute("DELETE FROM pins WHERE id = ?1", params![id])
                .map_err(|e| IdentityError::Store {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(pins.remove(id).is_some())
    }

    /// Every pinned id, sorted.
    pub fn pins(&self) -> Vec<PinInfo> {
        let mut v: Vec<PinInfo> = self
            .lock()
            .iter()
            .map(|(id, p)| PinInfo {
                id: id.clone(),
                pinned_ms: p.pinned_ms,
                first_addr: p.first_addr.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn is_reserved(&self, id: &str) -> bool {
        self.reserved.contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pin>> {
        // A panic while holding the map leaves it consistent (each change is one insert or
        // remove), so a poisoned lock is still usable.
        self.pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Option<HostKeyDigest> {
        Identity::digest(&[b; hmonitor_common::auth::HOST_KEY_LEN]).expect("digest")
    }

    #[test]
    fn the_first_key_pins_an_id_and_survives_a_restart_until_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reserved = BTreeSet::from(["owned".to_owned()]);
        let ids = Identity::open(dir.path(), reserved.clone()).expect("open");
        let Verdict::New(d) = ids.check_enrolled("a", key(1)).expect("new") else {
            panic!("not new");
        };
        ids.pin("a", d, "10.0.0.1:5").expect("pin");
        assert_eq!(ids.check_enrolled("a", key(1)), Ok(Verdict::Known));
        assert_eq!(
            ids.check_enrolled("a", key(2)),
            Err(IdentityError::Pinned("a".into()))
        );
        // No key at all cannot take a pinned id either.
        assert_eq!(
            ids.check_enrolled("a", None),
            Err(IdentityError::Pinned("a".into()))
        );
        assert_eq!(
            ids.check_enrolled("owned", key(1)),
            Err(IdentityError::Reserved("owned".into()))
        );
        assert!(matches!(
            Identity::digest(&[1, 2, 3]),
            Err(IdentityError::BadKey(_))
        ));
        drop(ids);

        let ids = Identity::open(dir.path(), reserved).expect("reopen");
        assert_eq!(ids.pins().len(), 1);
        assert_eq!(ids.pins()[0].first_addr, "10.0.0.1:5");
        assert_eq!(
            ids.check_enrolled("a", key(2)),
            Err(IdentityError::Pinned("a".into()))
        );
        assert_eq!(ids.forget("a"), Ok(true));
        assert_eq!(ids.forget("a"), Ok(false));
        assert!(matches!(
            ids.check_enrolled("a", key(2)),
            Ok(Verdict::New(_))
        ));
        drop(ids);
        let ids = Identity::open(dir.path(), BTreeSet::new()).expect("reopen");
        assert!(ids.pins().is_empty());
    }

    #[test]
    fn a_pin_raced_by_another_key_is_refused() {
        let ids = Identity::in_memory(BTreeSet::new());
        let Ok(Verdict::New(d1)) = ids.check_enrolled("a", key(1)) else {
            panic!("new")
        };
        let Ok(Verdict::New(d2)) = ids.check_enrolled("a", key(2)) else {
            panic!("new")
        };
        ids.pin("a", d1, "x").expect("first");
        assert_eq!(
            ids.pin("a", d2, "y"),
            Err(IdentityError::Pinned("a".into()))
        );
        assert_eq!(
            ids.check_enrolled("a", None).err(),
            Some(IdentityError::Pinned("a".into()))
        );
    }
}
