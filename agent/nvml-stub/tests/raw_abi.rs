//! The built stub called symbol by symbol: argument checks, the init count, v1 structs and the
//! string and list protocols that nvml-wrapper does not show.

mod common;

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::ptr::null_mut;

use libloading::{Library, Symbol};

type Device = *mut c_void;

const SUCCESS: u32 = 0;
const UNINITIALIZED: u32 = 1;
const INVALID_ARGUMENT: u32 = 2;
const NOT_SUPPORTED: u32 = 3;
const NOT_FOUND: u32 = 6;
const INSUFFICIENT_SIZE: u32 = 7;
const ARGUMENT_VERSION_MISMATCH: u32 = 25;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MemoryV2 {
    version: u32,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct ProcV1 {
    pid: u32,
    used: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct ProcV2 {
    pid: u32,
    used: u64,
    gi: u32,
    ci: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct UtilSample {
    pid: u32,
    ts: u64,
    sm: u32,
    mem: u32,
    enc: u32,
    dec: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: u32,
    bus: u32,
    device: u32,
    pci_device_id: u32,
    pci_subsystem_id: u32,
    bus_id: [c_char; 32],
}

fn lib() -> Library {
    // SAFETY: the stub's initialisers have no preconditions.
    unsafe { Library::new(common::stub_path()) }.expect("dlopen the stub")
}

macro_rules! sym {
    ($lib:expr, $name:literal, $ty:ty) => {{
        // SAFETY: the type is the prototype from nvml.h.
        let s: Symbol<$ty> = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.expect($name);
        s
    }};
}

type Init = unsafe extern "C" fn() -> u32;
type GetCount = unsafe extern "C" fn(*mut c_uint) -> u32;
type GetHandle = unsafe extern "C" fn(c_uint, *mut Device) -> u32;
type GetString = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> u32;
type SysString = unsafe extern "C" fn(*mut c_char, c_uint) -> u32;

const SCENARIO: &str = r#"{
  "gpus": [
    {"name": "NVIDIA H200", "memory_total": 1000, "memory_used": 100, "memory_reserved": 50,
     "pci_bus_id": "00000000:9A:00.0",
     "processes": [
       {"pid": 10, "used_memory": 64},
       {"pid": 11, "used_memory": 32, "type": "both"},
       {"pid": 12, "used_memory": 16, "type": "graphics"}
     ]},
    {}
  ]
}"#;

#[test]
fn every_listed_function_is_exported() {
    let _t = common::turn();
    let lib = lib();
    for name in nvidia_ml::EXPORTED_FUNCTIONS {
        let cname = format!("{name}\0");
        // SAFETY: only looked up, not called.
        let found: Result<Symbol<*const c_void>, _> = unsafe { lib.get(cname.as_bytes()) };
        assert!(found.is_ok(), "{name} not exported");
    }
}

#[test]
fn init_count_and_uninitialized_calls() {
    let t = common::turn();
    t.write(SCENARIO);
    let lib = lib();
    let init_v2 = sym!(lib, "nvmlInit_v2", Init);
    let init_flags = sym!(
        lib,
        "nvmlInitWithFlags",
        unsafe extern "C" fn(c_uint) -> u32
    );
    let shutdown = sym!(lib, "nvmlShutdown", Init);
    let count = sym!(lib, "nvmlDeviceGetCount_v2", GetCount);
    let mut n: c_uint = 0;
    unsafe {
        assert_eq!(count(&mut n), UNINITIALIZED);
        assert_eq!(shutdown(), UNINITIALIZED);
        assert_eq!(init_v2(), SUCCESS);
        assert_eq!(init_flags(0), SUCCESS);
        assert_eq!(count(&mut n), SUCCESS);
        assert_eq!(n, 2);
        assert_eq!(count(null_mut()), INVALID_ARGUMENT);
        assert_eq!(shutdown(), SUCCESS);
        assert_eq!(count(&mut n), SUCCESS, "one init left");
        assert_eq!(shutdown(), SUCCESS);
        assert_eq!(count(&mut n), UNINITIALIZED);
        assert_eq!(shutdown(), UNINITIALIZED);
    }
}

#[test]
fn without_the_variable_the_machine_is_empty() {
    let t = common::turn();
    t.write(SCENARIO);
    let lib = lib();
    let init = sym!(lib, "nvmlInit", Init);
    let shutdown = sym!(lib, "nvmlShutdown", Init);
    let count = sym!(lib, "nvmlDeviceGetCount", GetCount);
    let driver = sym!(lib, "nvmlSystemGetDriverVersion", SysString);
    // No other test runs (the turn), so the environment may change here.
    std::env::remove_var(common::SCENARIO_ENV);
    let mut n: c_uint = 9;
    let mut buf = [0 as c_char; 80];
    let results = unsafe {
        [
            init(),
            count(&mut n),
            driver(buf.as_mut_ptr(), buf.len() as c_uint),
            shutdown(),
        ]
    };
    std::env::set_var(common::SCENARIO_ENV, t.path);
    assert_eq!(results, [SUCCESS; 4]);
    assert_eq!(n, 0);
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
    assert_eq!(text.to_str().expect("utf-8"), "580.95.05");
}

#[test]
fn handles_strings_memory_and_lists() {
    let t = common::turn();
    t.write(SCENARIO);
    let lib = lib();
    let init = sym!(lib, "nvmlInit_v2", Init);
    let shutdown = sym!(lib, "nvmlShutdown", Init);
    let handle = sym!(lib, "nvmlDeviceGetHandleByIndex_v2", GetHandle);
    let name = sym!(lib, "nvmlDeviceGetName", GetString);
    let uuid = sym!(lib, "nvmlDeviceGetUUID", GetString);
    let driver = sym!(lib, "nvmlSystemGetDriverVersion", SysString);
    let cuda = sym!(
        lib,
        "nvmlSystemGetCudaDriverVersion",
        unsafe extern "C" fn(*mut c_int) -> u32
    );
    let mem_v1 = sym!(
        lib,
        "nvmlDeviceGetMemoryInfo",
        unsafe extern "C" fn(Device, *mut Memory) -> u32
    );
    let mem_v2 = sym!(
        lib,
        "nvmlDeviceGetMemoryInfo_v2",
        unsafe extern "C" fn(Device, *mut MemoryV2) -> u32
    );
    let pci = sym!(
        lib,
        "nvmlDeviceGetPciInfo_v3",
        unsafe extern "C" fn(Device, *mut PciInfo) -> u32
    );
    let temp = sym!(
        lib,
        "nvmlDeviceGetTemperature",
        unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> u32
    );
    let fan = sym!(
        lib,
        "nvmlDeviceGetFanSpeed",
        unsafe extern "C" fn(Device, *mut c_uint) -> u32
    );
    let clock = sym!(
        lib,
        "nvmlDeviceGetClockInfo",
        unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> u32
    );
    let procs_v1 = sym!(
        lib,
        "nvmlDeviceGetComputeRunningProcesses",
        unsafe extern "C" fn(Device, *mut c_uint, *mut ProcV1) -> u32
    );
    let procs_v2 = sym!(
        lib,
        "nvmlDeviceGetGraphicsRunningProcesses_v2",
        unsafe extern "C" fn(Device, *mut c_uint, *mut ProcV2) -> u32
    );
    let procs_v3 = sym!(
        lib,
        "nvmlDeviceGetComputeRunningProcesses_v3",
        unsafe extern "C" fn(Device, *mut c_uint, *mut ProcV2) -> u32
    );
    let util = sym!(
        lib,
        "nvmlDeviceGetProcessUtilization",
        unsafe extern "C" fn(Device, *mut UtilSample, *mut c_uint, c_ulonglong) -> u32
    );
    let error_string = sym!(
        lib,
        "nvmlErrorString",
        unsafe extern "C" fn(u32) -> *const c_char
    );

    unsafe {
        assert_eq!(
            CStr::from_ptr(error_string(15)).to_str().expect("utf-8"),
            "GPU is lost"
        );
        assert_eq!(
            CStr::from_ptr(error_string(7)).to_str().expect("utf-8"),
            "Insufficient Size"
        );
        assert_eq!(init(), SUCCESS);

        let mut d: Device = null_mut();
        assert_eq!(handle(0, null_mut()), INVALID_ARGUMENT);
        assert_eq!(handle(2, &mut d), INVALID_ARGUMENT);
        assert_eq!(handle(0, &mut d), SUCCESS);
        let mut d1: Device = null_mut();
        assert_eq!(handle(1, &mut d1), SUCCESS);
        assert_ne!(d, d1);

        // Strings: the caller's length counts the NUL.
        let mut buf = [0x55 as c_char; 64];
        assert_eq!(name(d, buf.as_mut_ptr(), 11), INSUFFICIENT_SIZE); // "NVIDIA H200" is 11
        assert_eq!(name(d, buf.as_mut_ptr(), 12), SUCCESS);
        assert_eq!(
            CStr::from_ptr(buf.as_ptr()).to_str().expect("utf-8"),
            "NVIDIA H200"
        );
        assert_eq!(name(d, null_mut(), 64), INVALID_ARGUMENT);
        assert_eq!(uuid(d1, buf.as_mut_ptr(), 64), SUCCESS);
        assert_eq!(
            CStr::from_ptr(buf.as_ptr()).to_str().expect("utf-8"),
            "GPU-00000001-0000-4000-8000-000000000001"
        );
        assert_eq!(driver(buf.as_mut_ptr(), 4), INSUFFICIENT_SIZE);
        let mut version: c_int = 0;
        assert_eq!(cuda(&mut version), SUCCESS);
        assert_eq!(version, 13000);

        // Handles the stub did not hand out.
        let bogus = (d as usize + 4096) as Device;
        assert_eq!(name(bogus, buf.as_mut_ptr(), 64), INVALID_ARGUMENT);
        assert_eq!(name(null_mut(), buf.as_mut_ptr(), 64), INVALID_ARGUMENT);

        // Memory: v1 counts reserved as used; v2 needs its version.
        let mut m = Memory::default();
        assert_eq!(mem_v1(d, &mut m), SUCCESS);
        assert_eq!((m.total, m.used, m.free), (1000, 150, 850));
        let mut m2 = MemoryV2::default();
        assert_eq!(mem_v2(d, &mut m2), ARGUMENT_VERSION_MISMATCH);
        m2.version = 0x0100_0028;
        assert_eq!(mem_v2(d, &mut m2), ARGUMENT_VERSION_MISMATCH);
        m2.version = 0x0200_0028;
        assert_eq!(mem_v2(d, &mut m2), SUCCESS);
        assert_eq!(
            (m2.total, m2.used, m2.reserved, m2.free),
            (1000, 100, 50, 850)
        );

        let mut p = PciInfo {
            bus_id_legacy: [1; 16],
            domain: 9,
            bus: 9,
            device: 9,
            pci_device_id: 0,
            pci_subsystem_id: 0,
            bus_id: [1; 32],
        };
        assert_eq!(pci(d, &mut p), SUCCESS);
        assert_eq!(
            CStr::from_ptr(p.bus_id.as_ptr()).to_str().expect("utf-8"),
            "00000000:9A:00.0"
        );
        assert_eq!(
            CStr::from_ptr(p.bus_id_legacy.as_ptr())
                .to_str()
                .expect("utf-8"),
            "0000:9A:00.0"
        );
        assert_eq!((p.domain, p.bus, p.device), (0, 0x9A, 0));
        assert_eq!(p.pci_device_id & 0xFFFF, 0x10DE);

        let mut v: c_uint = 0;
        assert_eq!(temp(d, 0, &mut v), SUCCESS);
        assert_eq!(temp(d, 1, &mut v), INVALID_ARGUMENT);
        assert_eq!(fan(d, &mut v), NOT_SUPPORTED);
        assert_eq!(clock(d, 3, &mut v), SUCCESS);
        assert_eq!(clock(d, 4, &mut v), INVALID_ARGUMENT);

        // v1 records (16 bytes): null buffer and 0 → INSUFFICIENT_SIZE and the count.
        let mut n: c_uint = 0;
        assert_eq!(procs_v1(d, &mut n, null_mut()), INSUFFICIENT_SIZE);
        assert_eq!(n, 2);
        let mut v1 = [ProcV1::default(); 2];
        n = 1;
        assert_eq!(procs_v1(d, &mut n, v1.as_mut_ptr()), INSUFFICIENT_SIZE);
        assert_eq!(n, 2);
        assert_eq!(procs_v1(d, &mut n, v1.as_mut_ptr()), SUCCESS);
        assert_eq!(
            v1,
            [ProcV1 { pid: 10, used: 64 }, ProcV1 { pid: 11, used: 32 }]
        );
        n = 5;
        assert_eq!(procs_v1(d, &mut n, null_mut()), INVALID_ARGUMENT);

        // v2 records (24 bytes), graphics: pids 11 and 12; room for more is fine.
        let mut v2 = [ProcV2::default(); 4];
        n = 4;
        assert_eq!(procs_v2(d, &mut n, v2.as_mut_ptr()), SUCCESS);
        assert_eq!(n, 2);
        assert_eq!(
            v2[0],
            ProcV2 {
                pid: 11,
                used: 32,
                gi: u32::MAX,
                ci: u32::MAX
            }
        );
        assert_eq!(v2[1].pid, 12);

        // No processes: SUCCESS and 0, even with a null buffer.
        n = 0;
        assert_eq!(procs_v3(d1, &mut n, null_mut()), SUCCESS);
        assert_eq!(n, 0);
        assert_eq!(procs_v3(d, null_mut(), null_mut()), INVALID_ARGUMENT);

        // Process utilization: count first, then fill; none newer → NOT_FOUND.
        n = 0;
        assert_eq!(util(d, null_mut(), &mut n, 0), INSUFFICIENT_SIZE);
        assert_eq!(n, 3);
        let mut samples = [UtilSample::default(); 3];
        assert_eq!(util(d, samples.as_mut_ptr(), &mut n, 0), SUCCESS);
        assert_eq!(n, 3);
        let pids: Vec<u32> = samples.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [10, 11, 12]);
        n = 3;
        assert_eq!(util(d, samples.as_mut_ptr(), &mut n, u64::MAX), NOT_FOUND);
        n = 0;
        assert_eq!(util(d1, null_mut(), &mut n, 0), NOT_FOUND);

        assert_eq!(shutdown(), SUCCESS);
        assert_eq!(name(d, buf.as_mut_ptr(), 64), UNINITIALIZED);
    }
}
