//! Helpers of the agent's integration tests beyond the shared test kit: the `hmonitor` binary
//! with a clean environment, an eight-GPU scenario, a running agent's pull address.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

pub use hmonitor_testkit::{
    current_user, eventually, gpu, stub_lib, tempdir, write_scenario, Children, Proc,
};

/// Eight H200s, two live processes on each (16 in all), GPU 7 fanless.
pub fn eight_gpus(children: &Children) -> Value {
    let pids = children.pids();
    assert!(pids.len() >= 16, "need 16 children");
    let gpus: Vec<Value> = (0..8)
        .map(|i| {
            let procs = [
                (pids[2 * i], (i as u64 + 1) << 30),
                (pids[2 * i + 1], 256 << 20),
            ];
            let mut g = gpu("NVIDIA H200", i, &procs);
            if i == 7 {
                g["fan_speed"] = Value::Null;
            }
            g
        })
        .collect();
    json!({ "driver_version": "580.95.05", "cuda_version": 13000, "gpus": gpus })
}

/// `hmonitor` with a clean environment: none of the caller's GOHM_/HMON_ settings (nor systemd's
/// state directory, which would give the agent a host id of its own) leak in.
pub fn hmonitor() -> Command {
    hmonitor_testkit::clean(Command::new(env!("CARGO_BIN_EXE_hmonitor")))
}

/// `hmonitor` on the stand-in with `scenario`.
pub fn hmonitor_on(scenario: &Path) -> Command {
    let mut c = hmonitor();
    c.env("HMON_NVML_LIB", stub_lib())
        .env("HMON_STUB_SCENARIO", scenario);
    c
}

/// Runs `hmonitor --once --json` and parses the report; panics with stderr on failure.
pub fn once_json(mut cmd: Command) -> Value {
    let out = cmd
        .args(["--once", "--json"])
        .output()
        .expect("run hmonitor");
    assert!(
        out.status.success(),
        "hmonitor --once --json failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A running agent serving the pull API; killed on drop. Its stderr is collected.
pub struct Agent {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Agent {
    /// Starts `cmd` with GOHM_ADDR=127.0.0.1:0 and waits for its listening line.
    pub fn start(mut cmd: Command) -> Self {
        cmd.env("GOHM_ADDR", "127.0.0.1:0");
        let (proc, addr) = Proc::spawn_ready(cmd, "listening on ", Duration::from_secs(20));
        Self {
            proc,
            addr: addr.parse().expect("listen address"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.proc.lines(needle)
    }
}

/// A running agent without the pull API (pushing to hubs); killed on drop. Its stderr is
/// collected.
pub struct Pushing(pub Proc);

impl Pushing {
    /// Starts `cmd` as it is (no GOHM_ADDR); does not wait for anything.
    pub fn start(cmd: Command) -> Self {
        Self(Proc::start(cmd))
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.0.lines(needle)
    }
}

impl Deref for Pushing {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.0
    }
}

impl DerefMut for Pushing {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.0
    }
}
