//! The exported NVML C ABI.
//!
//! Every function follows the same order as the real library would be seen to: UNINITIALIZED
//! before init; INVALID_ARGUMENT for a handle the stub did not hand out (or for a GPU the
//! scenario no longer has); then the scenario's `delay_ms` (sleep), a lost GPU (GPU_IS_LOST),
//! the scenario's `errors`, and only then the arguments and the answer.
//!
//! The only unsafe code is reading and writing through the caller's pointers.
//!
//! # Safety
//!
//! Every exported function has the contract of its namesake in nvml.h: each pointer argument
//! is null (answered with INVALID_ARGUMENT) or valid for the reads and writes nvml.h describes
//! (a string buffer for `length` bytes, a list buffer for `*count` elements), aligned.

// The safety contract is nvml.h's, stated once above rather than on each function.
#![allow(non_snake_case, non_camel_case_types, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::codes::*;
use crate::scenario::{Gpu, Process, Scenario, CODEC_SAMPLING_PERIOD_US};
use crate::state::{self, nvmlDevice_t};

// ---------------------------------------------------------------------------------------------
// Structs, as in nvml.h
// ---------------------------------------------------------------------------------------------

const NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE: usize = 16;
const NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE: usize = 32;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfo_t {
    pub busIdLegacy: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
    pub busId: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `NVML_STRUCT_VERSION(Memory, 2)`: the size in the low bits, the version in the top byte.
pub const NVML_MEMORY_V2: c_uint = (std::mem::size_of::<nvmlMemory_v2_t>() as c_uint) | (2 << 24);

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessInfo_v1_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
}

/// Also `nvmlProcessInfo_t`, what the `_v3` functions fill.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessInfo_v2_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessUtilizationSample_t {
    pub pid: c_uint,
    pub timeStamp: c_ulonglong,
    pub smUtil: c_uint,
    pub memUtil: c_uint,
    pub encUtil: c_uint,
    pub decUtil: c_uint,
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<nvmlPciInfo_t>() == 68);
    assert!(size_of::<nvmlMemory_t>() == 24);
    assert!(size_of::<nvmlMemory_v2_t>() == 40);
    assert!(NVML_MEMORY_V2 == 0x0200_0028);
    assert!(size_of::<nvmlUtilization_t>() == 8);
    assert!(size_of::<nvmlProcessInfo_v1_t>() == 16);
    assert!(size_of::<nvmlProcessInfo_v2_t>() == 24);
    assert!(size_of::<nvmlProcessUtilizationSample_t>() == 32);
};

// Enum values from nvml.h.
const NVML_TEMPERATURE_GPU: c_uint = 0;
const NVML_CLOCK_GRAPHICS: c_uint = 0;
const NVML_CLOCK_SM: c_uint = 1;
const NVML_CLOCK_MEM: c_uint = 2;
const NVML_CLOCK_VIDEO: c_uint = 3;

// ---------------------------------------------------------------------------------------------
// The common frame of every call
// ---------------------------------------------------------------------------------------------

type CallResult = Result<(), nvmlReturn_t>;

/// Runs one call: a panic becomes UNKNOWN (it must not unwind into C), and with
/// `HMON_STUB_TRACE` set each call prints its name and code.
fn guarded(name: &str, f: impl FnOnce() -> CallResult) -> nvmlReturn_t {
    let code = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => UNKNOWN,
    };
    if state::trace_enabled() {
        eprintln!(
            "hmonitor-nvml-stub: {name} -> {code} {}",
            name_of(code).unwrap_or("?")
        );
    }
    code
}

/// The scenario's delay, then its error, for `name` (on `gpu`). An error rule of SUCCESS is
/// no rule.
fn apply_rules(name: &str, scenario: &Scenario, gpu: Option<&Gpu>) -> CallResult {
    if let Some(ms) = scenario.delay_for(name, gpu) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    match scenario.error_for(name, gpu) {
        Some(code) if code != SUCCESS => Err(code),
        _ => Ok(()),
    }
}

fn initialized_scenario() -> Result<std::sync::Arc<Scenario>, nvmlReturn_t> {
    if !state::is_initialized() {
        return Err(UNINITIALIZED);
    }
    state::scenario_for_call().ok_or(UNKNOWN)
}

/// A call about the system (needs init, no device).
fn system_call(name: &str, f: impl FnOnce(&Scenario) -> CallResult) -> nvmlReturn_t {
    guarded(name, || {
        let scenario = initialized_scenario()?;
        apply_rules(name, &scenario, None)?;
        f(&scenario)
    })
}

/// A call about one device.
fn device_call(
    name: &str,
    device: nvmlDevice_t,
    f: impl FnOnce(&Scenario, &Gpu) -> CallResult,
) -> nvmlReturn_t {
    guarded(name, || {
        let scenario = initialized_scenario()?;
        let gpu = state::index_of(device)
            .and_then(|i| scenario.gpus.get(i))
            .ok_or(INVALID_ARGUMENT)?;
        if let Some(ms) = scenario.delay_for(name, Some(gpu)) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if gpu.lost {
            return Err(GPU_IS_LOST);
        }
        match scenario.error_for(name, Some(gpu)) {
            Some(code) if code != SUCCESS => return Err(code),
            _ => {}
        }
        f(&scenario, gpu)
    })
}

// ---------------------------------------------------------------------------------------------
// Writing through the caller's pointers
// ---------------------------------------------------------------------------------------------

/// Writes `value` to `out`; INVALID_ARGUMENT for null.
///
/// # Safety
/// `out` is null or valid and aligned for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> CallResult {
    if out.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and valid by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies `text` and a NUL into the caller's buffer of `length` bytes: INVALID_ARGUMENT for
/// null, INSUFFICIENT_SIZE when it does not fit.
///
/// # Safety
/// `buffer` is null or valid for writes of `length` bytes.
unsafe fn put_str(buffer: *mut c_char, length: c_uint, text: &str) -> CallResult {
    if buffer.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if (length as usize) < bytes.len() + 1 {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: the caller's buffer holds `length` >= bytes.len() + 1 bytes.
    let dst = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), bytes.len() + 1) };
    dst[..bytes.len()].copy_from_slice(bytes);
    dst[bytes.len()] = 0;
    Ok(())
}

/// A fixed `char[N]` holding `text` and a NUL (texts were checked to fit when loading).
fn fixed_str<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (dst, src) in out.iter_mut().zip(text.bytes().take(N - 1)) {
        *dst = src as c_char;
    }
    out
}

fn count_of(n: usize) -> c_uint {
    c_uint::try_from(n).unwrap_or(c_uint::MAX)
}

/// The two-call protocol of the process lists: with room for fewer than `items`, set
/// `*count` to the number needed and return INSUFFICIENT_SIZE; with room, copy them and set
/// `*count`; with none, SUCCESS and 0.
///
/// # Safety
/// `count` is null or valid for read and write; `buffer` is null or valid for `*count` writes.
unsafe fn put_list<T: Copy>(count: *mut c_uint, buffer: *mut T, items: &[T]) -> CallResult {
    if count.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null, valid by contract.
    let room = unsafe { count.read() } as usize;
    if items.is_empty() {
        // SAFETY: as above.
        unsafe { count.write(0) };
        return Ok(());
    }
    if room < items.len() {
        // SAFETY: as above.
        unsafe { count.write(count_of(items.len())) };
        return Err(INSUFFICIENT_SIZE);
    }
    if buffer.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: the buffer holds `room` >= items.len() elements.
    unsafe {
        std::ptr::copy_nonoverlapping(items.as_ptr(), buffer, items.len());
        count.write(count_of(items.len()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Init, shutdown, errors
// ---------------------------------------------------------------------------------------------

fn init(name: &str) -> nvmlReturn_t {
    guarded(name, || {
        // A scenario that cannot be read or parsed fails init (the reason is on stderr).
        let scenario = state::current_scenario().map_err(|_| UNKNOWN)?;
        apply_rules(name, &scenario, None)?;
        if scenario.no_driver {
            return Err(DRIVER_NOT_LOADED);
        }
        state::init_acquire();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlInit() -> nvmlReturn_t {
    init("nvmlInit")
}

#[no_mangle]
pub unsafe extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    init("nvmlInit_v2")
}

/// The flags (NO_GPUS, NO_ATTACH) change nothing here: init never needs a GPU.
#[no_mangle]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    init("nvmlInitWithFlags")
}

#[no_mangle]
pub unsafe extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guarded("nvmlShutdown", || {
        if !state::is_initialized() {
            return Err(UNINITIALIZED);
        }
        if let Some(scenario) = state::scenario_for_call() {
            apply_rules("nvmlShutdown", &scenario, None)?;
        }
        state::init_release()
    })
}

/// Works without init, like the real one; the string is static.
#[no_mangle]
pub unsafe extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    error_string(result).as_ptr()
}

// ---------------------------------------------------------------------------------------------
// System queries
// ---------------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    system_call("nvmlSystemGetDriverVersion", |s| unsafe {
        put_str(version, length, &s.driver_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    system_call("nvmlSystemGetNVMLVersion", |s| unsafe {
        put_str(version, length, &s.nvml_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(
    cuda_driver_version: *mut c_int,
) -> nvmlReturn_t {
    system_call("nvmlSystemGetCudaDriverVersion", |s| unsafe {
        put(cuda_driver_version, s.cuda_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(
    cuda_driver_version: *mut c_int,
) -> nvmlReturn_t {
    system_call("nvmlSystemGetCudaDriverVersion_v2", |s| unsafe {
        put(cuda_driver_version, s.cuda_version)
    })
}

// ---------------------------------------------------------------------------------------------
// Device enumeration
// ---------------------------------------------------------------------------------------------

fn device_count(name: &str, count: *mut c_uint) -> nvmlReturn_t {
    system_call(name, |s| unsafe { put(count, count_of(s.gpus.len())) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(device_count: *mut c_uint) -> nvmlReturn_t {
    self::device_count("nvmlDeviceGetCount", device_count)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
    self::device_count("nvmlDeviceGetCount_v2", device_count)
}

/// A lost GPU still gets its handle (its calls then fail); the GPU's own `errors` apply.
fn handle_by_index(name: &str, index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guarded(name, || {
        let scenario = initialized_scenario()?;
        let i = index as usize;
        let gpu = scenario.gpus.get(i).ok_or(INVALID_ARGUMENT)?;
        apply_rules(name, &scenario, Some(gpu))?;
        // SAFETY: `device` is null or valid by the caller's contract.
        unsafe { put(device, state::handle_of(i)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    handle_by_index("nvmlDeviceGetHandleByIndex", index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    handle_by_index("nvmlDeviceGetHandleByIndex_v2", index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guarded("nvmlDeviceGetHandleByUUID", || {
        let scenario = initialized_scenario()?;
        apply_rules("nvmlDeviceGetHandleByUUID", &scenario, None)?;
        if uuid.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        // SAFETY: a non-null NUL-terminated string by the caller's contract.
        let wanted = unsafe { CStr::from_ptr(uuid) };
        let i = scenario
            .gpus
            .iter()
            .position(|g| g.uuid.as_bytes() == wanted.to_bytes())
            .ok_or(NOT_FOUND)?;
        // SAFETY: as above.
        unsafe { put(device, state::handle_of(i)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetIndex", device, |_, g| unsafe {
        put(index, g.index)
    })
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetName", device, |_, g| unsafe {
        put_str(name, length, &g.name)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetUUID", device, |_, g| unsafe {
        put_str(uuid, length, &g.uuid)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSerial(
    device: nvmlDevice_t,
    serial: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetSerial", device, |_, g| unsafe {
        put_str(serial, length, &g.serial)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetPciInfo_v3", device, |_, g| {
        let info = nvmlPciInfo_t {
            busIdLegacy: fixed_str(&g.pci.bus_id_legacy),
            domain: g.pci.domain,
            bus: g.pci.bus,
            device: g.pci.device,
            pciDeviceId: g.pci.pci_device_id,
            pciSubSystemId: g.pci.pci_subsystem_id,
            busId: fixed_str(&g.pci.bus_id),
        };
        unsafe { put(pci, info) }
    })
}

// ---------------------------------------------------------------------------------------------
// Memory and utilization
// ---------------------------------------------------------------------------------------------

/// v1: `used` counts the reserved memory too, as the real driver does.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetMemoryInfo", device, |_, g| {
        let used = g.memory_used + g.memory_reserved;
        let info = nvmlMemory_t {
            total: g.memory_total,
            free: g.memory_total - used,
            used,
        };
        unsafe { put(memory, info) }
    })
}

/// v2: the caller sets `version` to NVML_MEMORY_V2 (0x02000028), else
/// ARGUMENT_VERSION_MISMATCH; reserved memory is apart from `used`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetMemoryInfo_v2", device, |_, g| {
        if memory.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        // SAFETY: non-null, and valid for the struct by the caller's contract.
        let version = unsafe { std::ptr::addr_of!((*memory).version).read() };
        if version != NVML_MEMORY_V2 {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        let info = nvmlMemory_v2_t {
            version,
            total: g.memory_total,
            reserved: g.memory_reserved,
            free: g.memory_total - g.memory_used - g.memory_reserved,
            used: g.memory_used,
        };
        unsafe { put(memory, info) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetUtilizationRates", device, |_, g| {
        let rates = nvmlUtilization_t {
            gpu: g.utilization_gpu,
            memory: g.utilization_memory,
        };
        unsafe { put(utilization, rates) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEncoderUtilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetEncoderUtilization", device, |_, g| unsafe {
        if sampling_period_us.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        put(utilization, g.encoder_util)?;
        put(sampling_period_us, CODEC_SAMPLING_PERIOD_US)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDecoderUtilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetDecoderUtilization", device, |_, g| unsafe {
        if sampling_period_us.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        put(utilization, g.decoder_util)?;
        put(sampling_period_us, CODEC_SAMPLING_PERIOD_US)
    })
}

// ---------------------------------------------------------------------------------------------
// Thermals, fans, power, clocks
// ---------------------------------------------------------------------------------------------

/// Only the GPU sensor (0) exists.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor_type: c_uint,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetTemperature", device, |_, g| {
        if sensor_type != NVML_TEMPERATURE_GPU {
            return Err(INVALID_ARGUMENT);
        }
        unsafe { put(temp, g.temperature) }
    })
}

/// 0 fans (SUCCESS) for a fanless card.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNumFans(
    device: nvmlDevice_t,
    num_fans: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetNumFans", device, |_, g| unsafe {
        put(num_fans, g.num_fans)
    })
}

/// NOT_SUPPORTED for a fanless card.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed(
    device: nvmlDevice_t,
    speed: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetFanSpeed", device, |_, g| {
        let value = g.fan_speed.ok_or(NOT_SUPPORTED)?;
        unsafe { put(speed, value) }
    })
}

/// Every fan turns at `fan_speed`; NOT_SUPPORTED for a fanless card, INVALID_ARGUMENT for a fan
/// past `num_fans`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed_v2(
    device: nvmlDevice_t,
    fan: c_uint,
    speed: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetFanSpeed_v2", device, |_, g| {
        let value = g.fan_speed.ok_or(NOT_SUPPORTED)?;
        if fan >= g.num_fans {
            return Err(INVALID_ARGUMENT);
        }
        unsafe { put(speed, value) }
    })
}

/// Milliwatts.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: nvmlDevice_t,
    power: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetPowerUsage", device, |_, g| unsafe {
        put(power, g.power_usage_mw)
    })
}

/// Milliwatts.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetEnforcedPowerLimit", device, |_, g| unsafe {
        put(limit, g.power_limit_mw)
    })
}

/// Milliwatts; the same as the enforced limit.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetPowerManagementLimit", device, |_, g| unsafe {
        put(limit, g.power_limit_mw)
    })
}

/// `nvmlPstates_t`: 0 (P0, most performance) .. 15.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPerformanceState(
    device: nvmlDevice_t,
    p_state: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetPerformanceState", device, |_, g| unsafe {
        put(p_state, g.pstate)
    })
}

fn clock(g: &Gpu, clock_type: c_uint, max: bool) -> Result<c_uint, nvmlReturn_t> {
    Ok(match (clock_type, max) {
        (NVML_CLOCK_GRAPHICS, false) => g.clock_graphics_mhz,
        (NVML_CLOCK_SM, false) => g.clock_sm_mhz,
        (NVML_CLOCK_MEM, false) => g.clock_mem_mhz,
        (NVML_CLOCK_VIDEO, false) => g.clock_video_mhz,
        (NVML_CLOCK_GRAPHICS, true) => g.max_clock_graphics_mhz,
        (NVML_CLOCK_SM, true) => g.max_clock_sm_mhz,
        (NVML_CLOCK_MEM, true) => g.max_clock_mem_mhz,
        (NVML_CLOCK_VIDEO, true) => g.max_clock_video_mhz,
        _ => return Err(INVALID_ARGUMENT),
    })
}

/// MHz; graphics 0, SM 1, memory 2, video 3.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    clock_type: c_uint,
    mhz: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetClockInfo", device, |_, g| {
        let value = clock(g, clock_type, false)?;
        unsafe { put(mhz, value) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    clock_type: c_uint,
    mhz: *mut c_uint,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetMaxClockInfo", device, |_, g| {
        let value = clock(g, clock_type, true)?;
        unsafe { put(mhz, value) }
    })
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn v1_record(p: &Process) -> nvmlProcessInfo_v1_t {
    nvmlProcessInfo_v1_t {
        pid: p.pid,
        usedGpuMemory: p.used_memory,
    }
}

fn v2_record(p: &Process) -> nvmlProcessInfo_v2_t {
    nvmlProcessInfo_v2_t {
        pid: p.pid,
        usedGpuMemory: p.used_memory,
        gpuInstanceId: p.gpu_instance_id,
        computeInstanceId: p.compute_instance_id,
    }
}

/// # Safety
/// As `put_list`.
unsafe fn process_list<T: Copy>(
    name: &str,
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut T,
    graphics: bool,
    record: fn(&Process) -> T,
) -> nvmlReturn_t {
    device_call(name, device, |_, g| {
        let records: Vec<T> = g
            .processes
            .iter()
            .filter(|p| {
                if graphics {
                    p.kind.is_graphics()
                } else {
                    p.kind.is_compute()
                }
            })
            .map(record)
            .collect();
        // SAFETY: forwarded caller contract.
        unsafe { put_list(count, infos, &records) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v1_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetComputeRunningProcesses";
    unsafe { process_list(name, device, info_count, infos, false, v1_record) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetComputeRunningProcesses_v2";
    unsafe { process_list(name, device, info_count, infos, false, v2_record) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetComputeRunningProcesses_v3";
    unsafe { process_list(name, device, info_count, infos, false, v2_record) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v1_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetGraphicsRunningProcesses";
    unsafe { process_list(name, device, info_count, infos, true, v1_record) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v2(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetGraphicsRunningProcesses_v2";
    unsafe { process_list(name, device, info_count, infos, true, v2_record) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> nvmlReturn_t {
    let name = "nvmlDeviceGetGraphicsRunningProcesses_v3";
    unsafe { process_list(name, device, info_count, infos, true, v2_record) }
}

/// One sample per process on the GPU (a pid in both lists once), stamped with the time of the
/// call in microseconds. Samples not newer than `last_seen_time_stamp` are left out; none left:
/// NOT_FOUND. A null buffer (or one too small): INSUFFICIENT_SIZE and the count.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    device_call("nvmlDeviceGetProcessUtilization", device, |_, g| {
        if process_samples_count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let now = state::now_us();
        let mut samples: Vec<nvmlProcessUtilizationSample_t> = Vec::new();
        if now > last_seen_time_stamp {
            for p in &g.processes {
                if samples.iter().all(|s| s.pid != p.pid) {
                    samples.push(nvmlProcessUtilizationSample_t {
                        pid: p.pid,
                        timeStamp: now,
                        smUtil: p.sm_util,
                        memUtil: p.mem_util,
                        encUtil: p.enc_util,
                        decUtil: p.dec_util,
                    });
                }
            }
        }
        if samples.is_empty() {
            return Err(NOT_FOUND);
        }
        if utilization.is_null() {
            // SAFETY: non-null, valid by contract.
            unsafe { process_samples_count.write(count_of(samples.len())) };
            return Err(INSUFFICIENT_SIZE);
        }
        // SAFETY: forwarded caller contract.
        unsafe { put_list(process_samples_count, utilization, &samples) }
    })
}
