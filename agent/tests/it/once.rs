//! `hmonitor --once`: the report's shape and content on stand-in scenarios.

use std::os::unix::process::CommandExt;

use serde_json::{json, Value};

use crate::harness::*;

fn gpus(report: &Value) -> &Vec<Value> {
    report["gpus"].as_array().expect("gpus array")
}

#[test]
fn eight_gpus_with_live_processes_are_all_reported() {
    let dir = tempdir();
    let children = Children::spawn(16);
    let scenario = write_scenario(dir.path(), &eight_gpus(&children));
    let report = once_json(hmonitor_on(&scenario));
    let (uid, user) = current_user();

    assert_eq!(report["err"], "", "{report:#}");
    assert_eq!(report["driver_version"], "580.95.05");
    assert_eq!(report["cuda_version"], "13.0");
    assert_eq!(gpus(&report).len(), 8);
    let pids = children.pids();
    for (i, g) in gpus(&report).iter().enumerate() {
        assert_eq!(g["id"], i as u64);
        assert_eq!(g["name"], "NVIDIA H200");
        assert_eq!(
            g["uuid"],
            format!("GPU-{i:08x}-1111-2222-3333-444455556666")
        );
        assert_eq!(g["mem_total"], 150_754_820_096u64);
        assert_eq!(g["mem_reserved"], 600u64 * 1024 * 1024);
        assert_eq!(g["utilization"], 10 * i as u64);
        assert_eq!(g["temp"], 30 + i as u64);
        assert_eq!(g["power_limit_mw"], 700_000);
        assert_eq!(g["err_kind"], "ERROR_KIND_NONE");
        let procs = g["procs"].as_array().expect("procs");
        assert_eq!(procs.len(), 2, "gpu {i}: {procs:#?}");
        for p in procs {
            let pid = p["pid"].as_u64().expect("pid") as u32;
            assert!(
                pid == pids[2 * i] || pid == pids[2 * i + 1],
                "unexpected pid {pid}"
            );
            assert_eq!(p["uid"], uid);
            assert_eq!(p["username"], user.as_str());
            assert_eq!(p["basename"], "sleep");
            assert!(p["expiration"].as_u64().expect("running time") < 120);
            assert_eq!(p["kind"], "PROC_KIND_COMPUTE");
            assert!(p["mem"].as_u64().expect("mem") >= 256 << 20);
            // Command lines are off unless HMON_CMDLINE=1.
            assert_eq!(p["cmdline"], Value::Null);
        }
    }
    // The fanless card has no fan speed at all, not a speed of 0.
    assert_eq!(gpus(&report)[7]["fanspeed"], Value::Null);
    assert_eq!(gpus(&report)[6]["fanspeed"], 26);
    // Host facts and disks come along.
    assert!(!report["hostname"].as_str().expect("hostname").is_empty());
    assert!(!report["disks"].as_array().expect("disks").is_empty());
    assert!(report["mem_total"].as_u64().expect("mem_total") > 0);
    assert!(report["timestamp_ms"].as_u64().expect("timestamp") > 1_700_000_000_000);
}

#[test]
fn a_lost_gpu_carries_its_own_error_while_the_others_report() {
    let dir = tempdir();
    let children = Children::spawn(16);
    let mut s = eight_gpus(&children);
    s["gpus"][3]["lost"] = json!(true);
    let report = once_json(hmonitor_on(&write_scenario(dir.path(), &s)));
    let g = gpus(&report);
    assert_eq!(g.len(), 8);
    assert_eq!(g[3]["err_kind"], "ERROR_KIND_LOST");
    assert!(
        g[3]["err"].as_str().expect("err").contains("lost"),
        "{:#}",
        g[3]
    );
    assert_eq!(g[3]["mem_used"], Value::Null);
    for (i, other) in g.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(other["err_kind"], "ERROR_KIND_NONE", "gpu {i}");
        assert_eq!(other["procs"].as_array().expect("procs").len(), 2);
    }
    assert_eq!(report["err"], "");
}

#[test]
fn an_unsupported_reading_is_absent_not_zero() {
    let dir = tempdir();
    let mut s = json!({ "gpus": [gpu("Tesla T4", 0, &[])] });
    s["gpus"][0]["errors"] = json!({ "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED" });
    let report = once_json(hmonitor_on(&write_scenario(dir.path(), &s)));
    let g = &gpus(&report)[0];
    assert_eq!(g["power_draw_mw"], Value::Null);
    assert_eq!(g["power_limit_mw"], 700_000);
    assert_eq!(g["warnings"], json!([]));
}

#[test]
fn no_driver_library_says_so_and_still_reports_the_host() {
    let mut cmd = hmonitor();
    cmd.env("HMON_NVML_LIB", "/nonexistent/libnvidia-ml.so.1");
    let report = once_json(cmd);
    assert!(
        report["err"]
            .as_str()
            .expect("err")
            .contains("NVIDIA driver library not found"),
        "{report:#}"
    );
    assert_eq!(report["err_kind"], "ERROR_KIND_NO_DRIVER");
    assert_eq!(gpus(&report).len(), 0);
    assert!(!report["disks"].as_array().expect("disks").is_empty());
    assert!(!report["hostname"].as_str().expect("hostname").is_empty());
    assert_eq!(report["driver_version"], Value::Null);
}

#[test]
fn a_driver_that_is_not_loaded_is_reported_as_no_driver() {
    let dir = tempdir();
    let s = json!({ "no_driver": true });
    let report = once_json(hmonitor_on(&write_scenario(dir.path(), &s)));
    assert_eq!(report["err_kind"], "ERROR_KIND_NO_DRIVER");
    assert!(
        report["err"].as_str().expect("err").contains("not loaded"),
        "{report:#}"
    );
}

#[test]
fn a_host_without_gpus_reports_none_and_exits_zero() {
    let dir = tempdir();
    let report = once_json(hmonitor_on(&write_scenario(
        dir.path(),
        &json!({ "gpus": [] }),
    )));
    assert_eq!(gpus(&report).len(), 0);
    assert_eq!(report["err"], "");
}

#[test]
fn command_lines_only_when_enabled_and_bounded() {
    let dir = tempdir();
    let long_arg = "x".repeat(5000);
    // A 5000-byte argv[0]: sleep takes no extra arguments, but its name can be anything.
    let child = std::process::Command::new("sleep")
        .arg0(&long_arg)
        .arg("300")
        .spawn()
        .expect("spawn");
    // Right after fork the child's command line is still being replaced by exec.
    let proc_cmdline = format!("/proc/{}/cmdline", child.id());
    eventually(std::time::Duration::from_secs(5), || {
        std::fs::read(&proc_cmdline)
            .ok()
            .filter(|b| b.starts_with(b"xxx"))
    });
    let cmdline = reported_cmdline(&dir, child, &[]);
    assert!(cmdline.starts_with("xxxxxxxx"), "{cmdline}");
    assert!(
        cmdline.ends_with('…'),
        "a cut command line ends with an ellipsis: {cmdline}"
    );
    assert!(cmdline.len() <= 520, "not bounded: {} bytes", cmdline.len());
}

#[test]
fn plain_once_prints_a_readable_table() {
    let dir = tempdir();
    let children = Children::spawn(16);
    let scenario = write_scenario(dir.path(), &eight_gpus(&children));
    let out = hmonitor_on(&scenario).arg("--once").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("NVIDIA H200").count(), 8, "{text}");
    assert!(
        text.contains(&format!("pid {:<8}", children.pids()[0])),
        "{text}"
    );
    assert!(text.contains("DISK"), "{text}");
}

#[test]
fn help_names_every_environment_variable() {
    let out = hmonitor().arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "GOHM_ADDR",
        "GOHM_ALLOW",
        "HMON_TOKEN",
        "HMON_ID",
        "HMON_IP",
        "HMON_INTERVAL",
        "HMON_STALE_AFTER",
        "HMON_NVML_LIB",
        "HMON_CMDLINE",
        "HMON_LOG",
    ] {
        assert!(text.contains(var), "--help does not name {var}:\n{text}");
    }
}

#[test]
fn flags_beat_the_environment() {
    let mut cmd = hmonitor();
    cmd.env("HMON_NVML_LIB", "/nonexistent/x.so")
        .env("HMON_ID", "from-env")
        .args(["--id", "from-flag", "--ip", "192.0.2.7"]);
    let report = once_json(cmd);
    assert_eq!(report["id"], "from-flag");
    assert_eq!(report["ip"], "192.0.2.7");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let out = hmonitor()
        .env("GOHM_ALLOW", "10.0.0.0/8,not-a-net")
        .arg("--once")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-net"), "{err}");
}

#[test]
fn secrets_in_command_lines_are_masked_on_the_host() {
    let dir = tempdir();
    // sh stays the process (the command does not end with the sleep), with these arguments.
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            "sleep 300; :",
            "train",
            "--password=hunter2",
            "--token",
            "tok-123",
            "postgres://me:pw-456@db/x",
            "--slurm-cred=cred-789",
            "--lr=3e-4",
        ])
        .spawn()
        .expect("spawn");
    let proc_cmdline = format!("/proc/{}/cmdline", child.id());
    eventually(std::time::Duration::from_secs(5), || {
        std::fs::read(&proc_cmdline)
            .ok()
            .filter(|b| b.windows(8).any(|w| w == b"hunter2\0"))
    });
    let cmdline = reported_cmdline(&dir, child, &[("HMON_REDACT", "slurm-cred")]);
    for secret in ["hunter2", "tok-123", "pw-456", "cred-789"] {
        assert!(!cmdline.contains(secret), "{secret} left in {cmdline}");
    }
    assert!(
        cmdline.contains(
            "--password=*** --token *** postgres://me:***@db/x --slurm-cred=*** --lr=3e-4"
        ),
        "{cmdline}"
    );
}

/// The command line `hmonitor --once` reports, with command lines on (and `env`), for `child`
/// as the one process on a GPU; the child is killed afterwards.
fn reported_cmdline(
    dir: &tempfile::TempDir,
    mut child: std::process::Child,
    env: &[(&str, &str)],
) -> String {
    let s = json!({ "gpus": [gpu("NVIDIA A100", 0, &[(child.id(), 1 << 30)])] });
    let scenario = write_scenario(dir.path(), &s);
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("HMON_CMDLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let report = once_json(cmd);
    let _ = child.kill();
    let _ = child.wait();
    report["gpus"][0]["procs"][0]["cmdline"]
        .as_str()
        .expect("cmdline present")
        .to_owned()
}
