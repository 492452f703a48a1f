//! The scenario file: what the stand-in NVML reports.
//!
//! Parsed with serde from JSON. Every field is optional; unknown fields are errors (so a typo in
//! a test's scenario fails loudly instead of silently giving a default). The file as written
//! ([`ScenarioFile`], [`GpuFile`], [`ProcessFile`]) is resolved into [`Scenario`], where every
//! default is filled in and every value checked.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::codes::{self, nvmlReturn_t};
use crate::EXPORTED_FUNCTIONS;

/// Most GPUs a scenario may hold (device handles are slots of a fixed static array).
pub const MAX_GPUS: usize = 64;

pub const DEFAULT_DRIVER_VERSION: &str = "580.95.05";
pub const DEFAULT_CUDA_VERSION: i32 = 13000;
pub const DEFAULT_GPU_NAME: &str = "NVIDIA H100 80GB HBM3";
/// 80 GiB.
pub const DEFAULT_MEMORY_TOTAL: u64 = 80 * 1024 * 1024 * 1024;
/// H100 SXM: device 0x2330, vendor 0x10de, as NVML packs them (`device << 16 | vendor`).
pub const DEFAULT_PCI_DEVICE_ID: u32 = 0x2330_10DE;
pub const DEFAULT_PCI_SUBSYSTEM_ID: u32 = 0x16C1_10DE;
/// What the real driver returns as the sampling period of encoder/decoder utilization (µs).
pub const CODEC_SAMPLING_PERIOD_US: u32 = 167_000;
/// `NVML_VALUE_NOT_AVAILABLE` as an unsigned long long.
pub const VALUE_NOT_AVAILABLE: u64 = u64::MAX;
/// `gpuInstanceId` / `computeInstanceId` when MIG is off.
pub const NO_INSTANCE_ID: u32 = 0xFFFF_FFFF;

// Buffer sizes from nvml.h: a value must fit with its NUL.
const NAME_BUFFER: usize = 96; // NVML_DEVICE_NAME_V2_BUFFER_SIZE
const UUID_BUFFER: usize = 80; // NVML_DEVICE_UUID_V2_BUFFER_SIZE
const SERIAL_BUFFER: usize = 30; // NVML_DEVICE_SERIAL_BUFFER_SIZE
const VERSION_BUFFER: usize = 80; // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE / NVML_VERSION

// ---------------------------------------------------------------------------------------------
// The file as written
// ---------------------------------------------------------------------------------------------

/// The top level of a scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// `nvmlSystemGetDriverVersion`; default "580.95.05".
    pub driver_version: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion[_v2]`, as NVML gives it (13000 = 13.0); default 13000.
    pub cuda_version: Option<i32>,
    /// `nvmlSystemGetNVMLVersion`; default "<cuda major>.<driver_version>", e.g. "13.580.95.05".
    pub nvml_version: Option<String>,
    /// `nvmlInit*` fail with DRIVER_NOT_LOADED.
    #[serde(default)]
    pub no_driver: bool,
    /// Function name → return code, for every GPU (and for system functions).
    #[serde(default)]
    pub errors: BTreeMap<FunctionName, ErrorCode>,
    /// Function name → milliseconds to sleep before answering, for every GPU.
    #[serde(default)]
    pub delay_ms: BTreeMap<FunctionName, u64>,
    #[serde(default)]
    pub gpus: Vec<GpuFile>,
}

/// One GPU as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFile {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// "00000000:17:00.0" (domain:bus:device.function, hex).
    pub pci_bus_id: Option<String>,
    pub pci_device_id: Option<u32>,
    pub pci_subsystem_id: Option<u32>,
    pub serial: Option<String>,
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub memory_reserved: Option<u64>,
    pub utilization_gpu: Option<u32>,
    pub utilization_memory: Option<u32>,
    pub temperature: Option<u32>,
    /// Percent; absent or null: a fanless card.
    pub fan_speed: Option<u32>,
    /// Number of fans; default 1 with a `fan_speed`, 0 without.
    pub num_fans: Option<u32>,
    pub power_usage_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    pub pstate: Option<u32>,
    pub clock_sm_mhz: Option<u32>,
    /// Default: `clock_sm_mhz`.
    pub clock_graphics_mhz: Option<u32>,
    pub clock_mem_mhz: Option<u32>,
    pub clock_video_mhz: Option<u32>,
    pub max_clock_sm_mhz: Option<u32>,
    pub max_clock_graphics_mhz: Option<u32>,
    pub max_clock_mem_mhz: Option<u32>,
    pub max_clock_video_mhz: Option<u32>,
    pub encoder_util: Option<u32>,
    pub decoder_util: Option<u32>,
    #[serde(default)]
    pub lost: bool,
    #[serde(default)]
    pub errors: BTreeMap<FunctionName, ErrorCode>,
    #[serde(default)]
    pub delay_ms: BTreeMap<FunctionName, u64>,
    #[serde(default)]
    pub processes: Vec<ProcessFile>,
}

/// One process on a GPU as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFile {
    pub pid: u32,
    /// Bytes. Absent: 0; `null`: NVML_VALUE_NOT_AVAILABLE (as drivers report inside containers).
    #[serde(default = "zero_memory", deserialize_with = "nullable_u64")]
    pub used_memory: Option<u64>,
    #[serde(rename = "type", default)]
    pub kind: ProcessKind,
    pub sm_util: Option<u32>,
    pub mem_util: Option<u32>,
    pub enc_util: Option<u32>,
    pub dec_util: Option<u32>,
    /// MIG instance ids; absent: 0xFFFFFFFF (no MIG), like the real driver.
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
}

fn zero_memory() -> Option<u64> {
    Some(0)
}

fn nullable_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

/// Which process lists a process appears in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    #[default]
    Compute,
    Graphics,
    Both,
}

impl ProcessKind {
    pub fn is_compute(self) -> bool {
        matches!(self, Self::Compute | Self::Both)
    }
    pub fn is_graphics(self) -> bool {
        matches!(self, Self::Graphics | Self::Both)
    }
}

/// A key of `errors` / `delay_ms`: the name of a function the stub exports (checked, so that a
/// misspelt name is an error rather than a rule that never fires).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionName(pub String);

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if EXPORTED_FUNCTIONS.contains(&name.as_str()) {
            Ok(Self(name))
        } else {
            Err(de::Error::custom(format_args!(
                "unknown NVML function `{name}` (not one the stub exports; see EXPORTED_FUNCTIONS)"
            )))
        }
    }
}

/// A value of `errors`: an NVML return code by name ("NOT_SUPPORTED", "NVML_ERROR_GPU_IS_LOST")
/// or by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub nvmlReturn_t);

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ErrorCode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an NVML error name such as \"NOT_SUPPORTED\" or a return code")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ErrorCode, E> {
                codes::code_by_name(v).map(ErrorCode).ok_or_else(|| {
                    E::custom(format_args!(
                        "unknown NVML error name `{v}` (expected e.g. NOT_SUPPORTED, GPU_IS_LOST, \
                         UNKNOWN, NO_PERMISSION, TIMEOUT)"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ErrorCode, E> {
                u32::try_from(v)
                    .map(ErrorCode)
                    .map_err(|_| E::custom(format_args!("return code {v} out of range")))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// The resolved scenario
// ---------------------------------------------------------------------------------------------

/// A scenario with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub driver_version: String,
    pub cuda_version: i32,
    pub nvml_version: String,
    pub no_driver: bool,
    pub errors: BTreeMap<String, nvmlReturn_t>,
    pub delay_ms: BTreeMap<String, u64>,
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub pci: Pci,
    pub serial: String,
    pub memory_total: u64,
    pub memory_used: u64,
    pub memory_reserved: u64,
    pub utilization_gpu: u32,
    pub utilization_memory: u32,
    pub temperature: u32,
    /// `None`: fanless.
    pub fan_speed: Option<u32>,
    pub num_fans: u32,
    pub power_usage_mw: u32,
    pub power_limit_mw: u32,
    pub pstate: u32,
    pub clock_graphics_mhz: u32,
    pub clock_sm_mhz: u32,
    pub clock_mem_mhz: u32,
    pub clock_video_mhz: u32,
    pub max_clock_graphics_mhz: u32,
    pub max_clock_sm_mhz: u32,
    pub max_clock_mem_mhz: u32,
    pub max_clock_video_mhz: u32,
    pub encoder_util: u32,
    pub decoder_util: u32,
    pub lost: bool,
    pub errors: BTreeMap<String, nvmlReturn_t>,
    pub delay_ms: BTreeMap<String, u64>,
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pci {
    /// "00000000:17:00.0"
    pub bus_id: String,
    /// "0000:17:00.0"
    pub bus_id_legacy: String,
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    pub pci_device_id: u32,
    pub pci_subsystem_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Bytes; `VALUE_NOT_AVAILABLE` when the scenario says null.
    pub used_memory: u64,
    pub kind: ProcessKind,
    pub sm_util: u32,
    pub mem_util: u32,
    pub enc_util: u32,
    pub dec_util: u32,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
}

impl Scenario {
    /// No file: a machine with the driver loaded and no GPU.
    pub fn empty() -> Self {
        resolve(ScenarioFile::default()).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }

    /// The code `errors` sets for `function` on `gpu` (the GPU's own entry first).
    pub fn error_for(&self, function: &str, gpu: Option<&Gpu>) -> Option<nvmlReturn_t> {
        gpu.and_then(|g| g.errors.get(function))
            .or_else(|| self.errors.get(function))
            .copied()
    }

    /// The delay `delay_ms` sets for `function` on `gpu` (the GPU's own entry first).
    pub fn delay_for(&self, function: &str, gpu: Option<&Gpu>) -> Option<u64> {
        gpu.and_then(|g| g.delay_ms.get(function))
            .or_else(|| self.delay_ms.get(function))
            .copied()
    }
}

/// Parses and resolves a scenario; the error is one line (serde's message carries line and
/// column).
pub fn parse(text: &str) -> Result<Scenario, String> {
    let file: ScenarioFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    resolve(file)
}

/// The UUID a GPU gets when the scenario gives none: "GPU-<index as 8 hex digits>-…".
pub fn default_uuid(index: usize) -> String {
    format!("GPU-{index:08x}-0000-4000-8000-{index:012x}")
}

/// The PCI bus id a GPU gets when the scenario gives none: bus = index + 1.
pub fn default_pci_bus_id(index: usize) -> String {
    format!("00000000:{:02X}:00.0", index + 1)
}

pub fn default_serial(index: usize) -> String {
    format!("1650{index:09}")
}

fn check_len(what: &str, value: &str, buffer: usize) -> Result<(), String> {
    if value.len() >= buffer {
        return Err(format!(
            "{what} `{value}` is {} bytes; NVML's buffer holds {} (with its NUL)",
            value.len(),
            buffer
        ));
    }
    if value.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

fn check_percent(what: &str, value: u32) -> Result<u32, String> {
    if value > 100 {
        return Err(format!("{what} is {value}; a percentage is 0..=100"));
    }
    Ok(value)
}

fn parse_bus_id(text: &str) -> Option<(u32, u32, u32, u32)> {
    // DDDDDDDD:BB:DD.F, the domain with 4 or 8 hex digits.
    let (domain, rest) = text.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |s: &str, max_len: usize| -> Option<u32> {
        if s.is_empty() || s.len() > max_len || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    };
    Some((
        hex(domain, 8)?,
        hex(bus, 2)?,
        hex(device, 2)?,
        hex(function, 1)?,
    ))
}

fn names(map: BTreeMap<FunctionName, ErrorCode>) -> BTreeMap<String, nvmlReturn_t> {
    map.into_iter().map(|(k, v)| (k.0, v.0)).collect()
}

fn delays(map: BTreeMap<FunctionName, u64>) -> BTreeMap<String, u64> {
    map.into_iter().map(|(k, v)| (k.0, v)).collect()
}

/// Fills in the defaults and checks the values.
pub fn resolve(file: ScenarioFile) -> Result<Scenario, String> {
    let driver_version = file
        .driver_version
        .unwrap_or_else(|| DEFAULT_DRIVER_VERSION.to_owned());
    check_len("driver_version", &driver_version, VERSION_BUFFER)?;
    let cuda_version = file.cuda_version.unwrap_or(DEFAULT_CUDA_VERSION);
    let nvml_version = file
        .nvml_version
        .unwrap_or_else(|| format!("{}.{}", cuda_version / 1000, driver_version));
    check_len("nvml_version", &nvml_version, VERSION_BUFFER)?;
    if file.gpus.len() > MAX_GPUS {
        return Err(format!(
            "{} GPUs; the stub hands out at most {MAX_GPUS} handles",
            file.gpus.len()
        ));
    }
    let gpus = file
        .gpus
        .into_iter()
        .enumerate()
        .map(|(i, g)| resolve_gpu(i, g).map_err(|e| format!("gpus[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scenario {
        driver_version,
        cuda_version,
        nvml_version,
        no_driver: file.no_driver,
        errors: names(file.errors),
        delay_ms: delays(file.delay_ms),
        gpus,
    })
}

fn resolve_gpu(index: usize, g: GpuFile) -> Result<Gpu, String> {
    let name = g.name.unwrap_or_else(|| DEFAULT_GPU_NAME.to_owned());
    check_len("name", &name, NAME_BUFFER)?;
    let uuid = g.uuid.unwrap_or_else(|| default_uuid(index));
    check_len("uuid", &uuid, UUID_BUFFER)?;
    let serial = g.serial.unwrap_or_else(|| default_serial(index));
    check_len("serial", &serial, SERIAL_BUFFER)?;

    let bus_text = g.pci_bus_id.unwrap_or_else(|| default_pci_bus_id(index));
    let (domain, bus, device, function) = parse_bus_id(&bus_text).ok_or_else(|| {
        format!("pci_bus_id `{bus_text}` is not of the form 00000000:17:00.0 (hex)")
    })?;
    let pci = Pci {
        bus_id: format!("{domain:08X}:{bus:02X}:{device:02X}.{function:X}"),
        bus_id_legacy: format!(
            "{:04X}:{bus:02X}:{device:02X}.{function:X}",
            domain & 0xFFFF
        ),
        domain,
        bus,
        device,
        pci_device_id: g.pci_device_id.unwrap_or(DEFAULT_PCI_DEVICE_ID),
        pci_subsystem_id: g.pci_subsystem_id.unwrap_or(DEFAULT_PCI_SUBSYSTEM_ID),
    };

    let memory_total = g.memory_total.unwrap_or(DEFAULT_MEMORY_TOTAL);
    let memory_used = g.memory_used.unwrap_or(0);
    let memory_reserved = g.memory_reserved.unwrap_or(0);
    if memory_used.saturating_add(memory_reserved) > memory_total {
        return Err(format!(
            "memory_used ({memory_used}) + memory_reserved ({memory_reserved}) exceed \
             memory_total ({memory_total})"
        ));
    }

    let pstate = g.pstate.unwrap_or(0);
    if pstate > 15 {
        return Err(format!("pstate is {pstate}; NVML knows P0..P15"));
    }
    let fan_speed = g
        .fan_speed
        .map(|f| check_percent("fan_speed", f))
        .transpose()?;
    let num_fans = g.num_fans.unwrap_or(u32::from(fan_speed.is_some()));
    if fan_speed.is_some() != (num_fans > 0) {
        return Err(format!(
            "num_fans is {num_fans} but fan_speed is {}",
            if fan_speed.is_some() { "set" } else { "absent" }
        ));
    }

    let clock_sm_mhz = g.clock_sm_mhz.unwrap_or(1980);
    let clock_graphics_mhz = g.clock_graphics_mhz.unwrap_or(clock_sm_mhz);
    let clock_mem_mhz = g.clock_mem_mhz.unwrap_or(2619);
    let clock_video_mhz = g.clock_video_mhz.unwrap_or(1545);
    let max_clock_sm_mhz = g.max_clock_sm_mhz.unwrap_or(clock_sm_mhz.max(1980));
    let max_clock_graphics_mhz = g.max_clock_graphics_mhz.unwrap_or(max_clock_sm_mhz);
    let max_clock_mem_mhz = g.max_clock_mem_mhz.unwrap_or(clock_mem_mhz);
    let max_clock_video_mhz = g.max_clock_video_mhz.unwrap_or(clock_video_mhz.max(1980));

    let processes = g
        .processes
        .into_iter()
        .enumerate()
        .map(|(j, p)| resolve_process(p).map_err(|e| format!("processes[{j}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Gpu {
        index: u32::try_from(index).map_err(|_| "too many GPUs".to_owned())?,
        name,
        uuid,
        pci,
        serial,
        memory_total,
        memory_used,
        memory_reserved,
        utilization_gpu: check_percent("utilization_gpu", g.utilization_gpu.unwrap_or(0))?,
        utilization_memory: check_percent("utilization_memory", g.utilization_memory.unwrap_or(0))?,
        temperature: g.temperature.unwrap_or(30),
        fan_speed,
        num_fans,
        power_usage_mw: g.power_usage_mw.unwrap_or(70_000),
        power_limit_mw: g.power_limit_mw.unwrap_or(700_000),
        pstate,
        clock_graphics_mhz,
        clock_sm_mhz,
        clock_mem_mhz,
        clock_video_mhz,
        max_clock_graphics_mhz,
        max_clock_sm_mhz,
        max_clock_mem_mhz,
        max_clock_video_mhz,
        encoder_util: check_percent("encoder_util", g.encoder_util.unwrap_or(0))?,
        decoder_util: check_percent("decoder_util", g.decoder_util.unwrap_or(0))?,
        lost: g.lost,
        errors: names(g.errors),
        delay_ms: delays(g.delay_ms),
        processes,
    })
}

fn resolve_process(p: ProcessFile) -> Result<Process, String> {
    Ok(Process {
        pid: p.pid,
        used_memory: p.used_memory.unwrap_or(VALUE_NOT_AVAILABLE),
        kind: p.kind,
        sm_util: check_percent("sm_util", p.sm_util.unwrap_or(0))?,
        mem_util: check_percent("mem_util", p.mem_util.unwrap_or(0))?,
        enc_util: check_percent("enc_util", p.enc_util.unwrap_or(0))?,
        dec_util: check_percent("dec_util", p.dec_util.unwrap_or(0))?,
        gpu_instance_id: p.gpu_instance_id.unwrap_or(NO_INSTANCE_ID),
        compute_instance_id: p.compute_instance_id.unwrap_or(NO_INSTANCE_ID),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_an_empty_machine() {
        let s = parse("{}").expect("parses");
        assert_eq!(s.driver_version, "580.95.05");
        assert_eq!(s.cuda_version, 13000);
        assert_eq!(s.nvml_version, "13.580.95.05");
        assert!(!s.no_driver);
        assert!(s.gpus.is_empty());
        assert!(s.errors.is_empty() && s.delay_ms.is_empty());
        assert_eq!(s, Scenario::empty());
    }

    #[test]
    fn nvml_version_follows_cuda_and_driver() {
        let s = parse(r#"{"driver_version": "550.54.15", "cuda_version": 12040}"#).expect("parses");
        assert_eq!(s.nvml_version, "12.550.54.15");
    }

    #[test]
    fn gpu_with_only_a_name_is_a_plausible_idle_card() {
        let s = parse(r#"{"gpus": [{"name": "NVIDIA H200"}, {}]}"#).expect("parses");
        let g = &s.gpus[0];
        assert_eq!(g.index, 0);
        assert_eq!(g.name, "NVIDIA H200");
        assert_eq!(g.uuid, "GPU-00000000-0000-4000-8000-000000000000");
        assert_eq!(g.memory_total, 80 << 30);
        assert_eq!((g.memory_used, g.memory_reserved), (0, 0));
        assert_eq!(g.fan_speed, None);
        assert_eq!(g.num_fans, 0);
        assert_eq!(g.pci.bus_id, "00000000:01:00.0");
        assert_eq!(g.pci.bus_id_legacy, "0000:01:00.0");
        assert_eq!((g.pci.domain, g.pci.bus, g.pci.device), (0, 1, 0));
        assert!(g.power_usage_mw < g.power_limit_mw);
        assert_eq!(g.clock_graphics_mhz, g.clock_sm_mhz);
        assert!(g.max_clock_sm_mhz >= g.clock_sm_mhz);
        assert!(!g.lost);
        let g1 = &s.gpus[1];
        assert_eq!(g1.name, DEFAULT_GPU_NAME);
        assert_eq!(g1.uuid, "GPU-00000001-0000-4000-8000-000000000001");
        assert_eq!(g1.pci.bus_id, "00000000:02:00.0");
        assert_ne!(g.serial, g1.serial);
    }

    #[test]
    fn fans_and_processes() {
        let s = parse(
            r#"{"gpus": [{"fan_speed": 30, "pci_bus_id": "0000:af:00.0", "processes": [
                {"pid": 7},
                {"pid": 8, "used_memory": null, "type": "both", "sm_util": 40},
                {"pid": 9, "used_memory": 1024, "type": "graphics"}
            ]}]}"#,
        )
        .expect("parses");
        let g = &s.gpus[0];
        assert_eq!((g.fan_speed, g.num_fans), (Some(30), 1));
        assert_eq!(g.pci.bus_id, "00000000:AF:00.0");
        assert_eq!(g.pci.bus, 0xAF);
        let p = &g.processes;
        assert_eq!(
            (p[0].pid, p[0].used_memory, p[0].kind),
            (7, 0, ProcessKind::Compute)
        );
        assert_eq!(p[0].gpu_instance_id, NO_INSTANCE_ID);
        assert_eq!(
            (p[1].used_memory, p[1].kind, p[1].sm_util),
            (u64::MAX, ProcessKind::Both, 40)
        );
        assert_eq!((p[2].used_memory, p[2].kind), (1024, ProcessKind::Graphics));
    }

    #[test]
    fn errors_and_delays_by_name() {
        let s = parse(
            r#"{"errors": {"nvmlDeviceGetPowerUsage": "NOT_SUPPORTED"},
                "delay_ms": {"nvmlDeviceGetUtilizationRates": 5000},
                "gpus": [{"errors": {"nvmlDeviceGetPowerUsage": "NVML_ERROR_GPU_IS_LOST",
                                     "nvmlDeviceGetTemperature": 999}}, {}]}"#,
        )
        .expect("parses");
        assert_eq!(
            s.error_for("nvmlDeviceGetPowerUsage", Some(&s.gpus[0])),
            Some(15)
        );
        assert_eq!(
            s.error_for("nvmlDeviceGetPowerUsage", Some(&s.gpus[1])),
            Some(3)
        );
        assert_eq!(
            s.error_for("nvmlDeviceGetTemperature", Some(&s.gpus[0])),
            Some(999)
        );
        assert_eq!(
            s.error_for("nvmlDeviceGetTemperature", Some(&s.gpus[1])),
            None
        );
        assert_eq!(
            s.delay_for("nvmlDeviceGetUtilizationRates", None),
            Some(5000)
        );
    }

    #[test]
    fn unknown_field_is_an_error_with_its_position() {
        let err = parse("{\n  \"gpus\": [{\"nmae\": \"x\"}]\n}").expect_err("typo");
        assert!(err.contains("unknown field `nmae`"), "{err}");
        assert!(err.contains("line 2 column"), "{err}");
        let err = parse(r#"{"driver": "1"}"#).expect_err("typo");
        assert!(err.contains("unknown field `driver`"), "{err}");
        let err = parse(r#"{"gpus": [{"processes": [{"pid": 1, "mem": 2}]}]}"#).expect_err("typo");
        assert!(err.contains("unknown field `mem`"), "{err}");
    }

    #[test]
    fn unknown_function_or_error_name_is_an_error() {
        let err =
            parse(r#"{"errors": {"nvmlDeviceGetPowerUsag": "NOT_SUPPORTED"}}"#).expect_err("typo");
        assert!(
            err.contains("unknown NVML function `nvmlDeviceGetPowerUsag`"),
            "{err}"
        );
        assert!(err.contains("line 1 column"), "{err}");
        let err =
            parse(r#"{"errors": {"nvmlDeviceGetPowerUsage": "NOT_SUPORTED"}}"#).expect_err("typo");
        assert!(
            err.contains("unknown NVML error name `NOT_SUPORTED`"),
            "{err}"
        );
        let err = parse(r#"{"delay_ms": {"nvmlFoo": 1}}"#).expect_err("typo");
        assert!(err.contains("nvmlFoo"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        for (text, needle) in [
            (
                r#"{"gpus": [{"memory_total": 10, "memory_used": 8, "memory_reserved": 3}]}"#,
                "exceed",
            ),
            (r#"{"gpus": [{"pstate": 16}]}"#, "pstate"),
            (r#"{"gpus": [{"pci_bus_id": "17:00.0"}]}"#, "pci_bus_id"),
            (r#"{"gpus": [{"utilization_gpu": 101}]}"#, "utilization_gpu"),
            (r#"{"gpus": [{"num_fans": 2}]}"#, "num_fans"),
            (
                r#"{"gpus": [{"processes": [{"pid": 1, "type": "mps"}]}]}"#,
                "unknown variant",
            ),
            (
                r#"{"gpus": [{"processes": [{"used_memory": 1}]}]}"#,
                "missing field `pid`",
            ),
            (r#"{"gpus": [{"name": 5}]}"#, "invalid type"),
            (
                r#"{"gpus": [{}, {"processes": [{"pid": 1, "sm_util": 200}]}]}"#,
                "gpus[1]: processes[0]",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        let long = format!(r#"{{"gpus": [{{"name": "{}"}}]}}"#, "x".repeat(96));
        assert!(parse(&long).expect_err("too long").contains("buffer"));
        let many = format!(r#"{{"gpus": [{}{{}}]}}"#, "{},".repeat(MAX_GPUS));
        assert!(parse(&many).expect_err("too many").contains("at most 64"));
    }

    #[test]
    fn fixture_scenarios_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/scenarios");
        for name in ["8gpu.json", "1gpu-minimal.json", "faults.json"] {
            let path = std::path::Path::new(dir).join(name);
            let text = std::fs::read_to_string(&path).expect("read fixture");
            parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
