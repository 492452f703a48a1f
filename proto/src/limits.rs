//! The contract's limits: what a hub accepts in one frame. A frame over any of them is
//! refused whole, with a reason naming the limit, never cut silently; the agent reads the same
//! numbers, so a well-behaved agent never sends such a frame.
//!
//! The numbers leave room for the largest real hosts (16 GPUs, a few hundred mounts, MPS with
//! dozens of clients per GPU) many times over, while keeping what one frame can make the hub
//! store and index small.

use std::time::Duration;

use crate::{AgentHello, HostInfo};

/// GPUs in one report (or facts in one hello).
pub const MAX_GPUS: usize = 128;
/// Processes listed on one GPU.
pub const MAX_PROCS_PER_GPU: usize = 1024;
/// Filesystems in one report.
pub const MAX_DISKS: usize = 512;
/// Failed readings listed for one GPU.
pub const MAX_WARNINGS_PER_GPU: usize = 64;
/// Bytes in any one string of a frame (names, mount points, errors), command lines included
/// (the agent cuts those to 512 bytes).
pub const MAX_STRING_BYTES: usize = 4096;

/// Sampling intervals an agent may announce; the hub treats one outside as the nearest bound
/// (and an agent treats a hub's request the same way).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// `interval_ms` of a hello within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]; 0 (not said) stays 0.
pub fn clamp_interval(ms: u32) -> Duration {
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from(ms)).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

fn string(what: &dyn Fn() -> String, s: &str) -> Result<(), String> {
    if s.len() > MAX_STRING_BYTES {
        return Err(format!(
            "{} is {} bytes long (limit {MAX_STRING_BYTES})",
            what(),
            s.len()
        ));
    }
    Ok(())
}

fn count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{what}: {n} (limit {max})"));
    }
    Ok(())
}

/// `Err` names the first limit the hello is over.
pub fn check_hello(h: &AgentHello) -> Result<(), String> {
    count("GPUs in the hello", h.gpus.len(), MAX_GPUS)?;
    for (what, s) in [
        ("agent_version", &h.agent_version),
        ("host_id", &h.host_id),
        ("hostname", &h.hostname),
    ] {
        string(&|| format!("hello {what}"), s)?;
    }
    for (what, s) in [
        ("driver_version", &h.driver_version),
        ("cuda_version", &h.cuda_version),
    ] {
        string(
            &|| format!("hello {what}"),
            s.as_deref().unwrap_or_default(),
        )?;
    }
    for g in &h.gpus {
        for s in [&g.uuid, &g.name, &g.pci_bus_id] {
            string(&|| format!("a field of GPU {} in the hello", g.index), s)?;
        }
    }
    Ok(())
}

/// `Err` names the first limit the report is over.
pub fn check_host_info(info: &HostInfo) -> Result<(), String> {
    count("GPUs", info.gpus.len(), MAX_GPUS)?;
    count("disks", info.disks.len(), MAX_DISKS)?;
    for (what, s) in [
        ("ip", &info.ip),
        ("hostname", &info.hostname),
        ("err", &info.err),
        ("kernel", &info.kernel),
        ("agent_version", &info.agent_version),
        ("os", &info.os),
    ] {
        string(&|| format!("report field {what}"), s)?;
    }
    for (what, s) in [
        ("driver_version", &info.driver_version),
        ("cuda_version", &info.cuda_version),
    ] {
        string(
            &|| format!("report field {what}"),
            s.as_deref().unwrap_or_default(),
        )?;
    }
    for g in &info.gpus {
        let gpu = g.id;
        count(
            &format!("processes on GPU {gpu}"),
            g.procs.len(),
            MAX_PROCS_PER_GPU,
        )?;
        count(
            &format!("warnings of GPU {gpu}"),
            g.warnings.len(),
            MAX_WARNINGS_PER_GPU,
        )?;
        for s in [&g.name, &g.uuid, &g.pci_bus_id, &g.err] {
            string(&|| format!("a field of GPU {gpu}"), s)?;
        }
        if let Some(h) = &g.hold {
            string(&|| format!("the holder of GPU {gpu}"), &h.username)?;
        }
        for w in &g.warnings {
            string(&|| format!("a warning of GPU {gpu}"), w)?;
        }
        for p in &g.procs {
            for s in [
                &p.username,
                &p.basename,
                &p.container,
                &p.container_runtime,
                &p.cmdline,
            ] {
                string(
                    &|| format!("a field of process {} on GPU {gpu}", p.pid),
                    s.as_deref().unwrap_or_default(),
                )?;
            }
        }
    }
    for d in &info.disks {
        for s in [&d.device, &d.mount, &d.fstype] {
            string(&|| "a field of a disk".to_owned(), s)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiskInfo, GpuInfo, ProcInfo};

    #[test]
    fn each_cap_refuses_one_over_and_names_itself() {
        let ok = HostInfo {
            gpus: vec![GpuInfo::default(); MAX_GPUS],
            disks: vec![DiskInfo::default(); MAX_DISKS],
            ..Default::default()
        };
        assert_eq!(check_host_info(&ok), Ok(()));

        let mut gpus = ok.clone();
        gpus.gpus.push(GpuInfo::default());
        assert!(check_host_info(&gpus)
            .expect_err("over a cap")
            .contains("GPUs: 129 (limit 128)"));

        let mut disks = ok.clone();
        disks.disks.push(DiskInfo::default());
        assert!(check_host_info(&disks)
            .expect_err("over a cap")
            .contains("disks"));

        let mut procs = ok.clone();
        procs.gpus[3].id = 3;
        procs.gpus[3].procs = vec![ProcInfo::default(); MAX_PROCS_PER_GPU + 1];
        assert!(check_host_info(&procs)
            .expect_err("over a cap")
            .contains("processes on GPU 3"));

        let mut warned = ok.clone();
        warned.gpus[1].id = 1;
        warned.gpus[1].warnings = vec![String::new(); MAX_WARNINGS_PER_GPU + 1];
        assert!(check_host_info(&warned)
            .expect_err("over a cap")
            .contains("warnings of GPU 1"));

        let mut long = ok.clone();
        long.gpus[0].procs = vec![ProcInfo {
            pid: 42,
            cmdline: Some("x".repeat(MAX_STRING_BYTES + 1)),
            ..Default::default()
        }];
        let err = check_host_info(&long).expect_err("over a cap");
        assert!(err.contains("process 42") && err.contains("4097"), "{err}");

        let mut mount = ok;
        mount.disks[0].mount = "/".repeat(MAX_STRING_BYTES + 1);
        assert!(check_host_info(&mount).is_err());

        let hello = AgentHello {
            hostname: "h".repeat(MAX_STRING_BYTES + 1),
            ..Default::default()
        };
        assert!(check_hello(&hello)
            .expect_err("over a cap")
            .contains("hostname"));
    }

    #[test]
    fn intervals_are_clamped_and_zero_stays_unsaid() {
        assert_eq!(clamp_interval(0), Duration::ZERO);
        assert_eq!(clamp_interval(1), MIN_INTERVAL);
        assert_eq!(clamp_interval(1500), Duration::from_millis(1500));
        assert_eq!(clamp_interval(u32::MAX), MAX_INTERVAL);
    }
}
