//! What the CLI and the agent say over the agent's Unix socket: one JSON object per line each
//! way. The caller's identity is never part of it: the agent reads the uid from the socket
//! (`SO_PEERCRED`).

use hmonitor_common::free::GpuRow;
use serde::{Deserialize, Serialize};

/// The longest request line the agent reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The longest reply line the CLI reads (a relayed cluster answer can be a few MiB).
pub const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// This host's GPUs judged for the caller (`query` as `GET /api/gpus` reads it).
    Free {
        query: String,
        #[serde(default)]
        mine_ok: bool,
    },
    /// Wait until `count` GPUs are free, hold them for `hold_ms`, reply with them. The caller
    /// then sends `Started` (keep the hold until the job shows up) or closes the connection
    /// (release).
    Wait {
        query: String,
        #[serde(default)]
        mine_ok: bool,
        count: usize,
        hold_ms: u64,
    },
    Started,
    /// Hold now: the named GPUs (index or UUID), or else the `count` best free ones.
    Hold {
        query: String,
        #[serde(default)]
        mine_ok: bool,
        count: usize,
        #[serde(default)]
        gpus: Vec<String>,
        hold_ms: u64,
    },
    /// End the caller's holds on the named GPUs (all of the caller's when none is named).
    Release {
        #[serde(default)]
        gpus: Vec<String>,
    },
    /// Relay `GET /api/gpus?<params>` to the hub over the agent's connection.
    Cluster {
        params: String,
    },
    /// Ask the hub to tell the caller (at their contacts there) when GPUs are free: a
    /// gpus_free subscription, `params` = {count, min_mem, anywhere, expires_s}.
    Notify {
        params: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    pub ok: bool,
    /// Why not, in words, when `ok` is false.
    pub error: String,
    /// The wait ran out of time.
    pub timeout: bool,
    /// This host's id.
    pub host: String,
    /// The GPUs judged, held or granted.
    pub gpus: Vec<GpuRow>,
    /// GPU ids whose holds ended.
    pub released: Vec<i32>,
    /// A relayed cluster answer: the JSON body of `GET /api/gpus`.
    pub body: String,
    /// Why the host reports no GPU (the report's `err`), when it has none.
    pub note: String,
}

impl Reply {
    pub fn error(why: impl Into<String>) -> Self {
        Self {
            error: why.into(),
            ..Default::default()
        }
    }
}
