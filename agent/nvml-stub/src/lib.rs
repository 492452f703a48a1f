//! A stand-in for the NVIDIA Management Library (`libnvidia-ml.so.1`) for tests.
//!
//! Built as a cdylib (`libnvidia_ml.so`, soname `libnvidia-ml.so.1`) that exports part of the
//! real NVML C ABI: the functions `nvml-wrapper` 0.13 (the agent) and `pynvml` + `gpustat`
//! call. What it reports comes from a JSON scenario file named by the environment variable
//! [`SCENARIO_ENV`] (`HMON_STUB_SCENARIO`), read again whenever the file changes, so a test
//! can change the machine under a running client. Without the variable: a machine with the
//! driver loaded and no GPU. See [`scenario`] for the schema.
//!
//! Use it from a test:
//! - Rust: `Nvml::builder().lib_path(path_to_libnvidia_ml_so).init()`; the .so lies in
//!   `target/<profile>/` and `target/<profile>/deps/` once the crate is built.
//! - Anything that loads `libnvidia-ml.so.1` by name: a directory holding a symlink
//!   `libnvidia-ml.so.1 -> .../libnvidia_ml.so`, on `LD_LIBRARY_PATH`.
//!
//! With `HMON_STUB_TRACE=1` every call prints its name and return code on stderr.

pub mod codes;
pub mod ffi;
pub mod scenario;
pub mod state;

pub use state::{SCENARIO_ENV, TRACE_ENV};

/// Every function the library exports, in the order of `ffi.rs`. The names that a scenario's
/// `errors` and `delay_ms` accept.
pub const EXPORTED_FUNCTIONS: &[&str] = &[
    "nvmlInit",
    "nvmlInit_v2",
    "nvmlInitWithFlags",
    "nvmlShutdown",
    "nvmlErrorString",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetNVMLVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetSerial",
    "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetEncoderUtilization",
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetNumFans",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetFanSpeed_v2",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetProcessUtilization",
];

#[cfg(test)]
mod tests {
    /// The list above and the `extern "C"` functions of ffi.rs are the same, in order.
    #[test]
    fn exported_list_matches_the_source() {
        let source = include_str!("ffi.rs");
        let marker = "pub unsafe extern \"C\" fn ";
        let defined: Vec<&str> = source
            .match_indices(marker)
            .map(|(at, _)| {
                let rest = &source[at + marker.len()..];
                &rest[..rest.find('(').expect("a parameter list")]
            })
            .collect();
        assert_eq!(defined, super::EXPORTED_FUNCTIONS);
    }
}
