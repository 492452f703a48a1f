//! The built stub driven through `nvml-wrapper` 0.13, the way the agent uses NVML.

mod common;

use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::{Clock, PerformanceState, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

fn init() -> Result<Nvml, NvmlError> {
    let path = common::stub_path();
    Nvml::builder().lib_path(path.as_os_str()).init()
}

fn nvml() -> Nvml {
    init().expect("init the stub through nvml-wrapper")
}

const TWO_GPUS: &str = r#"{
  "driver_version": "580.95.05",
  "cuda_version": 13000,
  "gpus": [
    {"name": "NVIDIA H200", "uuid": "GPU-aaaaaaaa-0000-4000-8000-000000000000",
     "pci_bus_id": "00000000:17:00.0", "serial": "1652324000001",
     "memory_total": 150754820096, "memory_used": 1073741824, "memory_reserved": 597688320,
     "utilization_gpu": 50, "utilization_memory": 20, "temperature": 41, "fan_speed": 30,
     "power_usage_mw": 300000, "power_limit_mw": 700000, "pstate": 2,
     "clock_sm_mhz": 1755, "clock_mem_mhz": 3201, "encoder_util": 3, "decoder_util": 4},
    {"name": "NVIDIA H100 80GB HBM3"}
  ]
}"#;

#[test]
fn system_identity_memory_and_readings() {
    let t = common::turn();
    t.write(TWO_GPUS);
    let nvml = nvml();
    assert_eq!(nvml.sys_driver_version().expect("driver"), "580.95.05");
    assert_eq!(nvml.sys_cuda_driver_version().expect("cuda"), 13000);
    assert_eq!(nvml.sys_nvml_version().expect("nvml"), "13.580.95.05");
    assert_eq!(nvml.device_count().expect("count"), 2);

    let d = nvml.device_by_index(0).expect("device 0");
    assert_eq!(d.index().expect("index"), 0);
    assert_eq!(d.name().expect("name"), "NVIDIA H200");
    assert_eq!(
        d.uuid().expect("uuid"),
        "GPU-aaaaaaaa-0000-4000-8000-000000000000"
    );
    assert_eq!(d.serial().expect("serial"), "1652324000001");
    let pci = d.pci_info().expect("pci");
    assert_eq!(pci.bus_id, "00000000:17:00.0");
    assert_eq!((pci.domain, pci.bus, pci.device), (0, 0x17, 0));
    assert!(pci.pci_sub_system_id.is_some());

    let m = d.memory_info().expect("memory v2");
    assert_eq!(m.total, 150_754_820_096);
    assert_eq!(m.used, 1_073_741_824);
    assert_eq!(m.reserved, 597_688_320);
    assert_eq!(m.free, 150_754_820_096 - 1_073_741_824 - 597_688_320);
    assert_eq!(m.version, 0x0200_0028);

    let u = d.utilization_rates().expect("utilization");
    assert_eq!((u.gpu, u.memory), (50, 20));
    assert_eq!(
        d.temperature(TemperatureSensor::Gpu).expect("temperature"),
        41
    );
    assert_eq!(d.num_fans().expect("fans"), 1);
    assert_eq!(d.fan_speed(0).expect("fan"), 30);
    assert!(matches!(d.fan_speed(1), Err(NvmlError::InvalidArg)));
    assert_eq!(d.power_usage().expect("power"), 300_000);
    assert_eq!(d.enforced_power_limit().expect("limit"), 700_000);
    assert_eq!(d.power_management_limit().expect("pm limit"), 700_000);
    assert_eq!(
        d.performance_state().expect("pstate"),
        PerformanceState::Two
    );
    assert_eq!(d.clock_info(Clock::SM).expect("sm"), 1755);
    assert_eq!(d.clock_info(Clock::Graphics).expect("graphics"), 1755);
    assert_eq!(d.clock_info(Clock::Memory).expect("mem"), 3201);
    assert!(d.max_clock_info(Clock::SM).expect("max sm") >= 1755);
    assert_eq!(d.max_clock_info(Clock::Memory).expect("max mem"), 3201);
    assert_eq!(d.encoder_utilization().expect("enc").utilization, 3);
    assert_eq!(d.decoder_utilization().expect("dec").utilization, 4);

    // The second GPU: only a name, every other value a default.
    let d1 = nvml.device_by_index(1).expect("device 1");
    assert_eq!(d1.index().expect("index"), 1);
    assert_eq!(d1.name().expect("name"), "NVIDIA H100 80GB HBM3");
    assert_eq!(
        d1.uuid().expect("uuid"),
        "GPU-00000001-0000-4000-8000-000000000001"
    );
    let m1 = d1.memory_info().expect("memory");
    assert_eq!(
        (m1.total, m1.used, m1.reserved, m1.free),
        (80 << 30, 0, 0, 80 << 30)
    );

    let by_uuid = nvml
        .device_by_uuid("GPU-00000001-0000-4000-8000-000000000001")
        .expect("by uuid");
    assert_eq!(by_uuid.index().expect("index"), 1);
    assert!(matches!(
        nvml.device_by_uuid("GPU-nope"),
        Err(NvmlError::NotFound)
    ));
    assert!(matches!(
        nvml.device_by_index(2),
        Err(NvmlError::InvalidArg)
    ));
}

#[test]
fn fanless_gpu_has_no_fans() {
    let t = common::turn();
    t.write(r#"{"gpus": [{"name": "NVIDIA H200"}]}"#);
    let nvml = nvml();
    let d = nvml.device_by_index(0).expect("device");
    assert_eq!(d.num_fans().expect("num fans"), 0);
    assert!(matches!(d.fan_speed(0), Err(NvmlError::NotSupported)));
}

#[test]
fn lost_gpu_fails_every_call_after_its_handle() {
    let t = common::turn();
    t.write(r#"{"gpus": [{"name": "A"}, {"name": "B", "lost": true}]}"#);
    let nvml = nvml();
    assert_eq!(nvml.device_count().expect("count"), 2);
    let lost = nvml
        .device_by_index(1)
        .expect("a lost GPU still has a handle");
    assert!(matches!(lost.name(), Err(NvmlError::GpuLost)));
    assert!(matches!(lost.memory_info(), Err(NvmlError::GpuLost)));
    assert!(matches!(
        lost.running_compute_processes(),
        Err(NvmlError::GpuLost)
    ));
    assert!(matches!(lost.index(), Err(NvmlError::GpuLost)));
    let fine = nvml.device_by_index(0).expect("device 0");
    assert_eq!(fine.name().expect("name"), "A");
}

#[test]
fn processes_through_the_two_call_protocol() {
    let t = common::turn();
    t.write(
        r#"{"gpus": [
          {"processes": [
            {"pid": 100, "used_memory": 1073741824},
            {"pid": 101, "used_memory": null, "type": "both"},
            {"pid": 102, "used_memory": 2048, "type": "graphics",
             "gpu_instance_id": 1, "compute_instance_id": 0}
          ]},
          {}
        ]}"#,
    );
    let nvml = nvml();
    let d = nvml.device_by_index(0).expect("device");
    assert_eq!(d.running_compute_processes_count().expect("count"), 2);
    let compute = d.running_compute_processes().expect("compute");
    assert_eq!(compute.len(), 2);
    assert_eq!(compute[0].pid, 100);
    assert_eq!(compute[0].used_gpu_memory, UsedGpuMemory::Used(1 << 30));
    assert_eq!(compute[0].gpu_instance_id, None);
    assert_eq!(compute[0].compute_instance_id, None);
    assert_eq!(compute[1].pid, 101);
    assert_eq!(compute[1].used_gpu_memory, UsedGpuMemory::Unavailable);

    let graphics = d.running_graphics_processes().expect("graphics");
    let pids: Vec<u32> = graphics.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [101, 102]);
    assert_eq!(graphics[1].used_gpu_memory, UsedGpuMemory::Used(2048));
    assert_eq!(graphics[1].gpu_instance_id, Some(1));
    assert_eq!(graphics[1].compute_instance_id, Some(0));

    let idle = nvml.device_by_index(1).expect("device 1");
    assert_eq!(idle.running_compute_processes_count().expect("count"), 0);
    assert!(idle.running_compute_processes().expect("none").is_empty());
    assert!(idle.running_graphics_processes().expect("none").is_empty());
}

#[test]
fn process_utilization_honours_last_seen() {
    let t = common::turn();
    t.write(
        r#"{"gpus": [
          {"processes": [
            {"pid": 200, "sm_util": 40, "mem_util": 10},
            {"pid": 201, "type": "both", "sm_util": 5, "mem_util": 1, "enc_util": 2, "dec_util": 3}
          ]},
          {}
        ]}"#,
    );
    let nvml = nvml();
    let d = nvml.device_by_index(0).expect("device");
    let first = d.process_utilization_stats(None).expect("all samples");
    assert_eq!(first.len(), 2, "one sample per pid: {first:?}");
    let s200 = first.iter().find(|s| s.pid == 200).expect("pid 200");
    assert_eq!((s200.sm_util, s200.mem_util), (40, 10));
    let s201 = first.iter().find(|s| s.pid == 201).expect("pid 201");
    assert_eq!(
        (s201.sm_util, s201.mem_util, s201.enc_util, s201.dec_util),
        (5, 1, 2, 3)
    );
    let newest = first.iter().map(|s| s.timestamp).max().expect("a sample");
    // Microseconds since the epoch: about now.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    assert!(
        newest <= now_us && now_us - newest < 10_000_000,
        "{newest} vs {now_us}"
    );

    std::thread::sleep(Duration::from_millis(2));
    let second = d.process_utilization_stats(newest).expect("newer samples");
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|s| s.timestamp > newest));

    // Nothing newer than a time in the future.
    assert!(matches!(
        d.process_utilization_stats(u64::MAX),
        Err(NvmlError::NotFound)
    ));
    // No process, no sample.
    let idle = nvml.device_by_index(1).expect("device 1");
    assert!(matches!(
        idle.process_utilization_stats(None),
        Err(NvmlError::NotFound)
    ));
}

#[test]
fn scenario_changes_are_seen_without_reinit() {
    let t = common::turn();
    t.write(r#"{"gpus": [{"name": "before", "memory_used": 1}]}"#);
    let nvml = nvml();
    let d = nvml.device_by_index(0).expect("device");
    assert_eq!(d.name().expect("name"), "before");
    assert_eq!(nvml.device_count().expect("count"), 1);

    t.write(
        r#"{"driver_version": "999.1", "gpus": [{"name": "after", "memory_used": 2}, {"name": "new"}]}"#,
    );
    assert_eq!(d.name().expect("name"), "after");
    assert_eq!(d.memory_info().expect("memory").used, 2);
    assert_eq!(nvml.device_count().expect("count"), 2);
    assert_eq!(nvml.sys_driver_version().expect("driver"), "999.1");

    // Rewritten in place, same length, within the same moment: still seen.
    t.overwrite_in_place(r#"{"gpus": [{"name": "aaaaa"}]}"#);
    assert_eq!(d.name().expect("name"), "aaaaa");
    t.overwrite_in_place(r#"{"gpus": [{"name": "bbbbb"}]}"#);
    assert_eq!(d.name().expect("name"), "bbbbb");
    assert_eq!(nvml.device_count().expect("count"), 1);

    // A file that does not parse (half-written, say) keeps the last good scenario for calls
    // after init; init itself fails.
    t.overwrite_in_place(r#"{"gpus": [{"name": "#);
    assert_eq!(d.name().expect("name"), "bbbbb");
    assert!(matches!(init(), Err(NvmlError::Unknown)));
    t.write(r#"{"gpus": [{"name": "fixed"}]}"#);
    assert_eq!(d.name().expect("name"), "fixed");

    // A GPU that goes away: its handle becomes invalid.
    t.write(r#"{"gpus": []}"#);
    assert!(matches!(d.name(), Err(NvmlError::InvalidArg)));
}

#[test]
fn no_driver_fails_init() {
    let t = common::turn();
    t.write(r#"{"no_driver": true, "gpus": [{}]}"#);
    assert!(matches!(init(), Err(NvmlError::DriverNotLoaded)));
}

#[test]
fn bad_scenario_fails_init_with_unknown() {
    let t = common::turn();
    t.write(r#"{"gpus": [{"nmae": "typo"}]}"#);
    assert!(matches!(init(), Err(NvmlError::Unknown)));
    t.write("{ not json");
    assert!(matches!(init(), Err(NvmlError::Unknown)));
    std::fs::remove_file(t.path).expect("remove");
    assert!(matches!(init(), Err(NvmlError::Unknown)));
    t.write("{}");
    let nvml = nvml();
    assert_eq!(nvml.device_count().expect("count"), 0);
}

#[test]
fn errors_and_delays_from_the_scenario() {
    let t = common::turn();
    t.write(
        r#"{
          "errors": {"nvmlDeviceGetPowerUsage": "NOT_SUPPORTED"},
          "delay_ms": {"nvmlDeviceGetUtilizationRates": 300},
          "gpus": [
            {"errors": {"nvmlDeviceGetTemperature": "UNKNOWN", "nvmlDeviceGetPowerUsage": "NO_PERMISSION"}},
            {"errors": {"nvmlDeviceGetMemoryInfo_v2": "TIMEOUT"}},
            {"errors": {"nvmlDeviceGetHandleByIndex_v2": "UNKNOWN"}}
          ]
        }"#,
    );
    let nvml = nvml();
    let d0 = nvml.device_by_index(0).expect("device 0");
    let d1 = nvml.device_by_index(1).expect("device 1");
    assert!(matches!(d0.power_usage(), Err(NvmlError::NoPermission)));
    assert!(matches!(d1.power_usage(), Err(NvmlError::NotSupported)));
    assert!(matches!(
        d0.temperature(TemperatureSensor::Gpu),
        Err(NvmlError::Unknown)
    ));
    assert_eq!(
        d1.temperature(TemperatureSensor::Gpu).expect("temperature"),
        30
    );
    assert!(matches!(d1.memory_info(), Err(NvmlError::Timeout)));
    assert!(d0.memory_info().is_ok());
    assert!(matches!(nvml.device_by_index(2), Err(NvmlError::Unknown)));

    let start = Instant::now();
    d0.utilization_rates().expect("utilization");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn init_twice_shutdown_twice() {
    let t = common::turn();
    t.write(r#"{"gpus": [{"name": "X"}]}"#);
    let a = nvml();
    let b = nvml();
    drop(a); // nvmlShutdown: the count goes from 2 to 1
    let d = b.device_by_index(0).expect("still initialised");
    assert_eq!(d.name().expect("name"), "X");
    b.shutdown().expect("the last shutdown succeeds");
}

/// Runs tests/gpustat-compat.sh (needs python3 and PyPI or an existing venv): `cargo test -p
/// hmonitor-nvml-stub -- --ignored`.
#[test]
#[ignore = "installs gpustat from PyPI into a venv; run with --ignored"]
fn gpustat_compat_script() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpustat-compat.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .env("HMON_STUB_LIB", common::stub_path())
        .status()
        .expect("run bash");
    assert!(status.success(), "gpustat-compat.sh failed: {status}");
}
