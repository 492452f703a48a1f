//! What hmonitor's tests share, in one place: where cargo put the binaries and the NVML
//! stand-in ([`stub_lib`], [`bin`]), scenario files the stand-in reads ([`scenario`]), child
//! processes with a scrubbed environment and collected stderr, killed on drop ([`proc`]),
//! waiting for a condition ([`eventually`]), and the seed's gRPC client ([`seed`]).
//!
//! A dev-dependency only: nothing here is built into `hmonitor` or `hmonitor-hub`.

pub mod http;
pub mod proc;
pub mod scenario;
pub mod wait;

pub use proc::{clean, Proc};
pub use scenario::{gpu, write_scenario, Children, Scenario};
pub use wait::eventually;

use std::path::{Path, PathBuf};

/// A client generated from the seed's original gpu.proto (agent/tests/seed/gpu.proto).
pub mod seed {
    #![allow(clippy::all, dead_code, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/seed/gpu.rs"));
}

/// target/<profile>/, where cargo puts the workspace's binaries (a test binary lives in its
/// deps/ directory).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// A binary of the workspace (`hmonitor`, `hmonitor-hub`, `hmonitor-load`); panics with what to
/// build when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.exists(),
        "{} missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// The NVML stand-in, built as a cdylib (the test crates depend on it): next to the test
/// binary in deps/, or in the profile directory.
pub fn stub_lib() -> PathBuf {
    let dir = profile_dir();
    for p in [
        dir.join("deps/libnvidia_ml.so"),
        dir.join("libnvidia_ml.so"),
    ] {
        if p.exists() {
            return p;
        }
    }
    panic!(
        "libnvidia_ml.so (the NVML stand-in) not found under {}",
        dir.display()
    );
}

/// A fresh directory for one test; removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The uid and name of the user running the tests.
pub fn current_user() -> (u32, String) {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user name");
    (uid.as_raw(), name)
}
