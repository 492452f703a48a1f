//! GPUs and their processes through NVML (`nvml-wrapper`, library loaded at run time).
//!
//! One [`GpuCollector`] owns the one `Nvml` handle of the process: NVML is initialised once and
//! kept, because each initialisation can cost over a second on hosts without persistence mode.
//! Every reading is taken on its own so that one failing reading (a fanless card, a call the
//! driver does not support) leaves the others intact; a GPU that is lost as a whole carries its
//! own error while the other GPUs report.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::SystemTime;

use hmonitor_proto::{ErrorKind, GpuInfo, ProcInfo, ProcKind};
use nvml_wrapper::enum_wrappers::device::{Clock, PerformanceState, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::procs::{ProcFacts, ProcReader};

/// The file name NVML is loaded from when no path is given (found through the loader path).
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// Why NVML could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No usable NVIDIA driver: the library is missing or the kernel driver is not loaded.
    #[error("{0}")]
    NoDriver(String),
    /// NVML is there but refused to start.
    #[error("NVML could not be initialised: {0}")]
    Failed(String),
}

impl InitError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InitError::NoDriver(_) => ErrorKind::NoDriver,
            InitError::Failed(_) => ErrorKind::Unknown,
        }
    }
}

/// What one pass over all GPUs found.
#[derive(Debug, Clone, Default)]
pub struct GpuSample {
    pub gpus: Vec<GpuInfo>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// A host-level GPU problem (e.g. the GPU count could not be read), in words.
    pub err: Option<(ErrorKind, String)>,
}

pub struct GpuCollector {
    nvml: Nvml,
    driver_version: Option<String>,
    cuda_version: Option<String>,
    /// Per GPU index, the newest process-utilization timestamp seen: passed back to NVML so it
    /// answers with samples since then (otherwise values lag).
    last_seen: HashMap<u32, u64>,
    procs: ProcReader,
}

impl GpuCollector {
    /// Loads NVML from `lib` (default [`DEFAULT_LIB`] through the loader path) and initialises it.
    pub fn open(lib: Option<&OsStr>, procs: ProcReader) -> Result<Self, InitError> {
        let lib_name = lib.unwrap_or_else(|| OsStr::new(DEFAULT_LIB));
        let nvml = Nvml::builder()
            .lib_path(lib_name)
            .init()
            .map_err(|e| init_error(lib_name, e))?;
        // The driver cannot change under a running NVML: read its versions once.
        let driver_version = nvml.sys_driver_version().ok();
        let cuda_version = nvml.sys_cuda_driver_version().ok().map(cuda_version_string);
        Ok(Self {
            nvml,
            driver_version,
            cuda_version,
            last_seen: HashMap::new(),
            procs,
        })
    }

    pub fn sample(&mut self) -> GpuSample {
        let mut out = GpuSample {
            driver_version: self.driver_version.clone(),
            cuda_version: self.cuda_version.clone(),
            ..Default::default()
        };
        let count = match self.nvml.device_count() {
            Ok(n) => n,
            Err(e) => {
                out.err = Some((error_kind(&e), format!("GPU count could not be read: {e}")));
                return out;
            }
        };
        let now = SystemTime::now();
        for index in 0..count {
            let gpu = match self.nvml.device_by_index(index) {
                Ok(device) => {
                    let last_seen = self.last_seen.get(&index).copied();
                    let (gpu, newest) = read_gpu(index, &device, last_seen);
                    if let Some(ts) = newest {
                        self.last_seen.insert(index, ts);
                    }
                    gpu
                }
                Err(e) => failed_gpu(index, &e),
            };
            out.gpus.push(gpu);
        }
        // One /proc pass for all GPUs: a process on several GPUs is read once.
        let pids: Vec<u32> = out
            .gpus
            .iter()
            .flat_map(|g| g.procs.iter().map(|p| p.pid))
            .collect();
        let facts = self.procs.read_all(&pids, now);
        for p in out.gpus.iter_mut().flat_map(|g| g.procs.iter_mut()) {
            if let Some(f) = facts.get(&p.pid) {
                fill_process(p, f.clone());
            }
        }
        out
    }
}

fn init_error(lib: &OsStr, e: NvmlError) -> InitError {
    match e {
        // libloading's message already names the file and the loader's reason.
        NvmlError::LibloadingError(inner) => InitError::NoDriver(format!(
            "NVIDIA driver library not found: {inner}; GPUs cannot be read, everything else is reported"
        )),
        NvmlError::DriverNotLoaded => InitError::NoDriver(
            "NVIDIA driver is not loaded (NVML: driver not loaded); GPUs cannot be read, everything else is reported"
                .to_owned(),
        ),
        NvmlError::LibraryNotFound => InitError::NoDriver(format!(
            "NVIDIA driver library not found ({}); GPUs cannot be read, everything else is reported",
            lib.to_string_lossy()
        )),
        other => InitError::Failed(other.to_string()),
    }
}

/// NVML gives the CUDA version as 1000 × major + 10 × minor (12040 → "12.4").
fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

pub fn error_kind(e: &NvmlError) -> ErrorKind {
    match e {
        NvmlError::GpuLost | NvmlError::ResetRequired => ErrorKind::Lost,
        NvmlError::NotSupported
        | NvmlError::FunctionNotFound
        | NvmlError::FailedToLoadSymbol(_) => ErrorKind::NotSupported,
        NvmlError::NoPermission => ErrorKind::NoPermission,
        NvmlError::Timeout => ErrorKind::Timeout,
        _ => ErrorKind::Unknown,
    }
}

fn describe(kind: ErrorKind, e: &NvmlError) -> String {
    match kind {
        ErrorKind::Lost => format!("GPU is lost (fallen off the bus or needs a reset): {e}"),
        _ => e.to_string(),
    }
}

fn failed_gpu(index: u32, e: &NvmlError) -> GpuInfo {
    let kind = error_kind(e);
    GpuInfo {
        id: index_i32(index),
        err_kind: kind as i32,
        err: describe(kind, e),
        ..Default::default()
    }
}

fn index_i32(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

fn percent(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Collects the readings of one GPU. A reading that fails is left unset; an unexpected failure
/// is named in `warnings`; "not supported" is the normal answer for absent features (a fanless
/// card) and is not a warning. Any reading that says the GPU is lost marks the whole GPU lost.
struct Readings<'a> {
    gpu: &'a mut GpuInfo,
    lost: Option<NvmlError>,
}

impl Readings<'_> {
    fn take<T>(&mut self, what: &str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                if error_kind(&e) == ErrorKind::Lost {
                    if self.lost.is_none() {
                        self.lost = Some(e);
                    }
                } else {
                    self.gpu.warnings.push(format!("{what}: {e}"));
                }
                None
            }
        }
    }
}

/// Reads one GPU; returns it and the newest process-utilization timestamp seen.
fn read_gpu(index: u32, device: &Device<'_>, last_seen: Option<u64>) -> (GpuInfo, Option<u64>) {
    let mut gpu = GpuInfo {
        id: index_i32(index),
        ..Default::default()
    };
    let mut r = Readings {
        gpu: &mut gpu,
        lost: None,
    };
    let name = r.take("name", device.name());
    let uuid = r.take("uuid", device.uuid());
    let pci = r.take("pci", device.pci_info());
    let mem = r.take("memory", device.memory_info());
    let util = r.take("utilization", device.utilization_rates());
    let temp = r.take("temperature", device.temperature(TemperatureSensor::Gpu));
    // Fanless cards report zero fans (or "not supported"): then there is no fan speed at all.
    let fan = match r.take("fans", device.num_fans()) {
        Some(0) => None,
        _ => r.take("fan", device.fan_speed(0)),
    };
    let power = r.take("power", device.power_usage());
    let limit = r.take("power limit", device.enforced_power_limit());
    let pstate = r.take("pstate", device.performance_state());
    let sm_clock = r.take("sm clock", device.clock_info(Clock::SM));
    let mem_clock = r.take("memory clock", device.clock_info(Clock::Memory));
    let compute = r.take("compute processes", device.running_compute_processes());
    let graphics = r.take("graphics processes", device.running_graphics_processes());
    let samples = match device.process_utilization_stats(last_seen) {
        Ok(s) => Some(s),
        // No sample newer than `last_seen`: every process was idle since the last pass.
        Err(NvmlError::NotFound) => Some(Vec::new()),
        Err(e) => {
            r.take::<()>("process utilization", Err(e));
            None
        }
    };
    if let Some(e) = r.lost.take() {
        let mut lost = failed_gpu(index, &e);
        // Keep what was read before the GPU went away: the page can still name it.
        lost.name = name.unwrap_or_default();
        lost.uuid = uuid.unwrap_or_default();
        return (lost, last_seen);
    }

    gpu.name = name.unwrap_or_default();
    gpu.uuid = uuid.unwrap_or_default();
    gpu.pci_bus_id = pci.map(|p| p.bus_id).unwrap_or_default();
    if let Some(m) = mem {
        gpu.mem_used = Some(m.used);
        gpu.mem_total = Some(m.total);
        gpu.mem_reserved = Some(m.reserved);
    }
    if let Some(u) = util {
        gpu.utilization = Some(percent(u.gpu));
        gpu.mem_utilization = Some(percent(u.memory));
    }
    gpu.temp = temp;
    gpu.fanspeed = fan;
    gpu.power_draw_mw = power;
    gpu.power_limit_mw = limit;
    gpu.pstate = pstate.and_then(pstate_number);
    gpu.clock_sm_mhz = sm_clock;
    gpu.clock_mem_mhz = mem_clock;

    let newest = samples
        .as_ref()
        .and_then(|s| s.iter().map(|x| x.timestamp).max())
        .or(last_seen);
    let util_by_pid = samples.map(|s| {
        // Several samples per pid can come back: keep the newest of each.
        let mut by_pid: HashMap<u32, (u64, u32, u32)> = HashMap::new();
        for x in s {
            let e = by_pid.entry(x.pid).or_insert((0, 0, 0));
            if x.timestamp >= e.0 {
                *e = (x.timestamp, x.sm_util, x.mem_util);
            }
        }
        by_pid
    });

    let mut by_pid: Vec<ProcInfo> = Vec::new();
    let lists = [
        (ProcKind::Compute, compute.unwrap_or_default()),
        (ProcKind::Graphics, graphics.unwrap_or_default()),
    ];
    for (kind, list) in lists {
        for p in list {
            let mem = match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            };
            // One entry per pid: a process NVML lists as compute and graphics is one process.
            if let Some(existing) = by_pid.iter_mut().find(|e| e.pid == p.pid) {
                existing.kind = ProcKind::ComputeGraphics as i32;
                existing.mem = match (existing.mem, mem) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                continue;
            }
            by_pid.push(ProcInfo {
                pid: p.pid,
                kind: kind as i32,
                mem,
                ..Default::default()
            });
        }
    }
    for p in &mut by_pid {
        // Utilization samples exist only for processes that were busy in the period, so a
        // process without one was idle (0%) — but only if the query itself worked.
        if let Some(map) = &util_by_pid {
            let (_, sm, mu) = map.get(&p.pid).copied().unwrap_or((0, 0, 0));
            p.utilization = Some(percent(sm));
            p.mem_utilization = Some(percent(mu));
        }
    }
    by_pid.sort_by_key(|p| p.pid);
    gpu.procs = by_pid;
    (gpu, newest)
}

/// Who and what a process is, from /proc.
fn fill_process(p: &mut ProcInfo, facts: ProcFacts) {
    p.uid = facts.uid.and_then(|u| i32::try_from(u).ok());
    p.username = facts.username;
    p.basename = facts.basename;
    p.expiration = facts.running_s;
    p.started_ms = facts.started_ms;
    p.cmdline = facts.cmdline;
    if let Some(c) = facts.container {
        p.container = Some(c.id);
        p.container_runtime = Some(c.runtime.to_owned());
    }
}

fn pstate_number(p: PerformanceState) -> Option<u32> {
    use PerformanceState::*;
    Some(match p {
        Zero => 0,
        One => 1,
        Two => 2,
        Three => 3,
        Four => 4,
        Five => 5,
        Six => 6,
        Seven => 7,
        Eight => 8,
        Nine => 9,
        Ten => 10,
        Eleven => 11,
        Twelve => 12,
        Thirteen => 13,
        Fourteen => 14,
        Fifteen => 15,
        Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_read_as_nvidia_smi_prints_them() {
        assert_eq!(cuda_version_string(12040), "12.4");
        assert_eq!(cuda_version_string(13000), "13.0");
        assert_eq!(cuda_version_string(11080), "11.8");
    }

    #[test]
    fn a_missing_library_is_reported_as_no_driver() {
        let procs = ProcReader::new(None);
        let err = GpuCollector::open(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")), procs)
            .err()
            .expect("must fail");
        assert_eq!(err.kind(), ErrorKind::NoDriver);
        assert!(
            err.to_string().contains("NVIDIA driver library not found"),
            "{err}"
        );
    }
}
