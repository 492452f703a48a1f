//! A few MiB held on the store's filesystem for the day it fills up. SQLite needs room to
//! delete (the deletion goes through the write-ahead log, and the checkpoint after it), so on a
//! disk that is full to the last byte even retention fails and history could never recover by
//! itself. The reserve is a plain file of zeros beside the database: when a write fails for a
//! full disk, the writer removes it, removes expired points into the room it made, and makes
//! the reserve again once the filesystem has room for it twice over.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Size of the reserve.
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// Name of the reserve file inside the data directory.
pub const RESERVE_FILE: &str = "history.reserve";

#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    held: bool,
}

impl Reserve {
    /// The reserve in `dir`, made now when there is room for it.
    pub fn new(dir: &Path) -> Self {
        let path = dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES);
        let mut r = Self { path, held };
        r.refill();
        r
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// Makes the reserve when it is missing and the filesystem has room for it twice over
    /// (making it must not be what fills the disk). Cheap while it is held.
    pub fn refill(&mut self) {
        if self.held {
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // The field types are u64 here and narrower on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let free = nix::sys::statvfs::statvfs(dir)
            .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
            .unwrap_or(0);
        if free < 2 * RESERVE_BYTES {
            return;
        }
        let made = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            // Written, not sparse: the blocks must really be taken.
            let chunk = vec![0u8; 1024 * 1024];
            for _ in 0..RESERVE_BYTES / chunk.len() as u64 {
                f.write_all(&chunk)?;
            }
            f.sync_all()
        })();
        match made {
            Ok(()) => self.held = true,
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                tracing::debug!("history: cannot make the disk reserve: {e}");
            }
        }
    }

    /// Gives the reserve back to the filesystem; `true` when there was one to give.
    pub fn release(&mut self) -> bool {
        if !self.held {
            return false;
        }
        self.held = false;
        std::fs::remove_file(&self.path).is_ok()
    }
}
