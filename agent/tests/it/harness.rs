//! Helpers shared by the agent's integration tests: the NVML stand-in, scenario files, live child
//! processes for scenarios to name, and the `hmonitor` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The NVML stand-in, built as a cdylib next to the test binaries (it is a dev-dependency).
pub fn stub_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps, deps.parent().expect("profile dir")] {
        let p = dir.join("libnvidia_ml.so");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "libnvidia_ml.so (the NVML stand-in) not found next to {}",
        exe.display()
    );
}

/// A fresh directory for one test; removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Live processes that scenarios can name as GPU processes; killed on drop.
pub struct Children(pub Vec<Child>);

impl Children {
    pub fn spawn(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    Command::new("sleep")
                        .arg("300")
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("spawn sleep")
                })
                .collect(),
        )
    }

    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One GPU of a scenario, as the stand-in reads it.
pub fn gpu(name: &str, index: usize, procs: &[(u32, u64)]) -> Value {
    json!({
        "name": name,
        "uuid": format!("GPU-{index:08x}-1111-2222-3333-444455556666"),
        "pci_bus_id": format!("00000000:{:02X}:00.0", 0x17 + index),
        "memory_total": 150_754_820_096u64,
        "memory_used": procs.iter().map(|p| p.1).sum::<u64>() + 500 * 1024 * 1024,
        "memory_reserved": 600 * 1024 * 1024,
        "utilization_gpu": 10 * index,
        "utilization_memory": 5 * index,
        "temperature": 30 + index,
        "fan_speed": 20 + index,
        "power_usage_mw": 100_000 + 1000 * index,
        "power_limit_mw": 700_000,
        "pstate": 0,
        "clock_sm_mhz": 1980,
        "clock_mem_mhz": 3201,
        "processes": procs.iter().map(|(pid, mem)| json!({
            "pid": pid, "used_memory": mem, "type": "compute", "sm_util": 40, "mem_util": 10
        })).collect::<Vec<_>>(),
    })
}

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

/// Writes `scenario` to `dir/scenario.json` atomically (the stand-in re-reads it on change).
pub fn write_scenario(dir: &Path, scenario: &Value) -> PathBuf {
    let path = dir.join("scenario.json");
    let tmp = dir.join("scenario.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(scenario).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// `hmonitor` with a clean environment: none of the caller's GOHM_/HMON_ settings leak in.
pub fn hmonitor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hmonitor"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GOHM_") || k.starts_with("HMON_") {
            c.env_remove(k);
        }
    }
    // systemd's state directory would give the agent a host id of its own.
    c.env_remove("STATE_DIRECTORY");
    c.env("HMON_LOG", "info").stdin(Stdio::null());
    c
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
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `cmd` with GOHM_ADDR=127.0.0.1:0 unless set, and waits for its listening line.
    pub fn start(mut cmd: Command) -> Self {
        cmd.env("GOHM_ADDR", "127.0.0.1:0");
        let (tx, rx) = std::sync::mpsc::channel();
        let (child, log) = spawn_logged(cmd, move |line| {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split([',', ' ']).next().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("agent did not start: {:?}", log.lock().expect("log")));
        Self {
            child,
            addr: addr.parse().expect("listen address"),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        matching(&self.log, needle)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stderr collected line by line (each line also goes to `on_line`).
fn spawn_logged(
    mut cmd: Command,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hmonitor");
    let stderr = child.stderr.take().expect("stderr");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            on_line(&line);
            sink.lock().expect("log").push(line);
        }
    });
    (child, log)
}

fn matching(log: &Mutex<Vec<String>>, needle: &str) -> Vec<String> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// A running agent without the pull API (pushing to hubs); killed on drop. Its stderr is
/// collected.
pub struct Pushing {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Pushing {
    /// Starts `cmd` as it is (no GOHM_ADDR); does not wait for anything.
    pub fn start(cmd: Command) -> Self {
        let (child, log) = spawn_logged(cmd, |_| {});
        Self { child, log }
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        matching(&self.log, needle)
    }

    pub fn whole_log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// SIGTERM, as systemd stops a service; waits (bounded) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "agent did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pushing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn current_user() -> (u32, String) {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user name");
    (uid.as_raw(), name)
}
