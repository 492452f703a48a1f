//! Shared by the integration tests: where the built stub is, and one scenario file per test
//! process, rewritten by each test while it holds the lock (the library's state, the init
//! count and the environment are process-wide, so the tests take turns).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const SCENARIO_ENV: &str = "HMON_STUB_SCENARIO";

/// `libnvidia_ml.so` as cargo built it for this test (the shared test kit knows where).
pub fn stub_path() -> PathBuf {
    hmonitor_testkit::stub_lib()
}

pub struct Turn {
    _guard: MutexGuard<'static, ()>,
    pub path: &'static Path,
}

fn scenario_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvml-stub-tests");
        std::fs::create_dir_all(&dir).expect("create tmp dir");
        dir.join(format!("scenario-{}.json", std::process::id()))
    })
}

/// Takes this test's turn and points the stub at the shared scenario file (set once, while no
/// other test runs).
pub fn turn() -> Turn {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let path = scenario_path();
    static ENV: OnceLock<()> = OnceLock::new();
    ENV.get_or_init(|| std::env::set_var(SCENARIO_ENV, path));
    Turn {
        _guard: guard,
        path,
    }
}

impl Turn {
    /// Replaces the scenario atomically (a new file renamed over the old one), as tests should.
    pub fn write(&self, json: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, json).expect("write scenario");
        std::fs::rename(&tmp, self.path).expect("rename scenario");
        settle();
    }

    /// Overwrites in place (truncate + write), as a careless test would.
    pub fn overwrite_in_place(&self, json: &str) {
        std::fs::write(self.path, json).expect("write scenario");
        settle();
    }
}

/// The stand-in looks at its scenario file at most every 5 ms (see `RECHECK` in state.rs):
/// wait that out so the next call sees the change.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(10));
}
