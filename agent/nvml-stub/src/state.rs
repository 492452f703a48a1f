//! Process-wide state of the stand-in library: the init reference count, the scenario cache
//! (re-read when the file changes) and the device handles.

use std::ffi::{c_void, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::codes::{nvmlReturn_t, UNINITIALIZED};
use crate::scenario::{self, Scenario, MAX_GPUS};

/// The environment variable naming the scenario file.
pub const SCENARIO_ENV: &str = "HMON_STUB_SCENARIO";
/// Set to anything non-empty: one stderr line per NVML call (name and return code).
pub const TRACE_ENV: &str = "HMON_STUB_TRACE";

// ---------------------------------------------------------------------------------------------
// Init reference count
// ---------------------------------------------------------------------------------------------

static INIT_COUNT: AtomicU32 = AtomicU32::new(0);

pub fn init_acquire() {
    INIT_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// `nvmlShutdown`: UNINITIALIZED when the count is already 0.
pub fn init_release() -> Result<(), nvmlReturn_t> {
    INIT_COUNT
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
        .map(|_| ())
        .map_err(|_| UNINITIALIZED)
}

pub fn is_initialized() -> bool {
    INIT_COUNT.load(Ordering::SeqCst) > 0
}

// ---------------------------------------------------------------------------------------------
// Device handles: addresses of the slots of a static array
// ---------------------------------------------------------------------------------------------

/// `nvmlDevice_t`: a pointer to an opaque struct.
#[allow(non_camel_case_types)]
pub type nvmlDevice_t = *mut c_void;

static HANDLE_SLOTS: [u8; MAX_GPUS] = [0; MAX_GPUS];

/// The handle of GPU `index` (`index < MAX_GPUS`). Callers never dereference it.
pub fn handle_of(index: usize) -> nvmlDevice_t {
    HANDLE_SLOTS.as_ptr().wrapping_add(index).cast_mut().cast()
}

/// The GPU index a handle stands for, `None` for a pointer the stub did not hand out.
pub fn index_of(handle: nvmlDevice_t) -> Option<usize> {
    let offset = (handle as usize).wrapping_sub(HANDLE_SLOTS.as_ptr() as usize);
    (offset < MAX_GPUS).then_some(offset)
}

// ---------------------------------------------------------------------------------------------
// Scenario cache
// ---------------------------------------------------------------------------------------------

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

struct Cache {
    path: OsString,
    key: FileKey,
    bytes: Vec<u8>,
    result: Result<Arc<Scenario>, String>,
}

#[derive(Default)]
struct Loader {
    cache: Option<Cache>,
    /// The last scenario that parsed, served to calls other than init while the file is bad
    /// (half-written by a test, say).
    last_good: Option<Arc<Scenario>>,
    /// The last error printed, so that each is printed once.
    last_reported: Option<String>,
    /// When the file was last looked at. A client makes dozens of calls per pass; looking at
    /// the file once per `RECHECK` instead of once per call keeps the stand-in's own cost out
    /// of the agent's measured CPU time, and a change is still seen within a few milliseconds.
    checked: Option<Instant>,
}

const RECHECK: Duration = Duration::from_millis(5);

static LOADER: Mutex<Option<Loader>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn empty_scenario() -> Arc<Scenario> {
    static EMPTY: OnceLock<Arc<Scenario>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Scenario::empty())).clone()
}

/// A file changed this recently may change again within the file system's timestamp
/// granularity without its key changing, so its bytes are compared too.
const SETTLE: Duration = Duration::from_secs(2);

fn recently_modified(meta: &std::fs::Metadata) -> bool {
    match meta.modified() {
        Ok(mtime) => match SystemTime::now().duration_since(mtime) {
            Ok(age) => age < SETTLE,
            Err(_) => true, // in the future
        },
        Err(_) => true,
    }
}

impl Loader {
    fn report(&mut self, message: &str) {
        if self.last_reported.as_deref() != Some(message) {
            eprintln!("hmonitor-nvml-stub: {message}");
            self.last_reported = Some(message.to_owned());
        }
    }

    fn load(&mut self, path: OsString) -> Result<Arc<Scenario>, String> {
        if let (Some(cache), Some(at)) = (&self.cache, self.checked) {
            if cache.path == path && at.elapsed() < RECHECK {
                return cache.result.clone();
            }
        }
        self.checked = Some(Instant::now());
        let shown = Path::new(&path).display().to_string();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                let message = format!("cannot read scenario {shown} ({SCENARIO_ENV}): {e}");
                self.report(&message);
                return Err(message);
            }
        };
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let recent = recently_modified(&meta);
        if let Some(cache) = &self.cache {
            if cache.path == path && cache.key == key && !recent {
                return cache.result.clone();
            }
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("cannot read scenario {shown} ({SCENARIO_ENV}): {e}");
                self.report(&message);
                return Err(message);
            }
        };
        if let Some(cache) = &mut self.cache {
            if cache.path == path && cache.bytes == bytes {
                cache.key = key;
                return cache.result.clone();
            }
        }
        let result = match std::str::from_utf8(&bytes) {
            Ok(text) => scenario::parse(text).map(Arc::new),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|e| format!("cannot parse scenario {shown}: {e}"));
        match &result {
            Ok(s) => {
                self.last_good = Some(s.clone());
                self.last_reported = None;
            }
            Err(message) => self.report(message),
        }
        self.cache = Some(Cache {
            path,
            key,
            bytes,
            result: result.clone(),
        });
        result
    }
}

/// The scenario as the file now says, or why it cannot be had (already printed to stderr).
/// Without `HMON_STUB_SCENARIO` (or with it empty): an empty machine.
pub fn current_scenario() -> Result<Arc<Scenario>, String> {
    let Some(path) = std::env::var_os(SCENARIO_ENV).filter(|p| !p.is_empty()) else {
        return Ok(empty_scenario());
    };
    let mut guard = lock(&LOADER);
    guard.get_or_insert_with(Loader::default).load(path)
}

/// The scenario for a call after init: the current one, or the last good one while the file
/// does not parse.
pub fn scenario_for_call() -> Option<Arc<Scenario>> {
    match current_scenario() {
        Ok(s) => Some(s),
        Err(_) => lock(&LOADER).as_ref().and_then(|l| l.last_good.clone()),
    }
}

pub fn trace_enabled() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty()))
}

/// Microseconds since the Unix epoch (the unit of NVML sample timestamps).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        for i in [0, 1, 7, MAX_GPUS - 1] {
            assert_eq!(index_of(handle_of(i)), Some(i));
        }
        assert_eq!(index_of(std::ptr::null_mut()), None);
        assert_eq!(index_of(handle_of(0).wrapping_sub(1)), None);
        assert_eq!(index_of(handle_of(MAX_GPUS - 1).wrapping_add(1)), None);
    }
}
