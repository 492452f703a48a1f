//! Scenario files for the NVML stand-in (re-read whenever they change), and live processes for
//! scenarios to name as GPU processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// Writes `scenario` to `dir/scenario.json` atomically (the stand-in re-reads it on change).
pub fn write_scenario(dir: &Path, scenario: &Value) -> PathBuf {
    let path = dir.join("scenario.json");
    let tmp = dir.join("scenario.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(scenario).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// A scenario file in a directory of its own (removed on drop).
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Scenario {
    pub fn new(value: &Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_scenario(dir.path(), value);
        Self { dir, path }
    }

    /// Replaces the scenario; agents on it see the change at their next sample.
    pub fn write(&self, value: &Value) {
        write_scenario(self.dir.path(), value);
    }
}

/// One GPU of a scenario, as the stand-in reads it: `index` makes its identity and readings
/// distinct; `procs` are (pid, bytes) on it.
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
