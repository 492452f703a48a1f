//! NVML return codes (`nvmlReturn_t`), their names as scenarios spell them and the
//! strings `nvmlErrorString` gives.

use std::ffi::CStr;

/// `nvmlReturn_t`: a C enum, passed as a 32-bit integer.
#[allow(non_camel_case_types)]
pub type nvmlReturn_t = u32;

pub const SUCCESS: nvmlReturn_t = 0;
pub const UNINITIALIZED: nvmlReturn_t = 1;
pub const INVALID_ARGUMENT: nvmlReturn_t = 2;
pub const NOT_SUPPORTED: nvmlReturn_t = 3;
pub const NO_PERMISSION: nvmlReturn_t = 4;
pub const NOT_FOUND: nvmlReturn_t = 6;
pub const INSUFFICIENT_SIZE: nvmlReturn_t = 7;
pub const DRIVER_NOT_LOADED: nvmlReturn_t = 9;
pub const TIMEOUT: nvmlReturn_t = 10;
pub const LIBRARY_NOT_FOUND: nvmlReturn_t = 12;
pub const GPU_IS_LOST: nvmlReturn_t = 15;
pub const ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;
pub const UNKNOWN: nvmlReturn_t = 999;

/// Every code of nvml.h (driver 580): (code, name without the `NVML_ERROR_` prefix, the
/// string `nvmlErrorString` returns).
pub const CODES: &[(nvmlReturn_t, &str, &CStr)] = &[
    (SUCCESS, "SUCCESS", c"Success"),
    (UNINITIALIZED, "UNINITIALIZED", c"Uninitialized"),
    (INVALID_ARGUMENT, "INVALID_ARGUMENT", c"Invalid Argument"),
    (NOT_SUPPORTED, "NOT_SUPPORTED", c"Not Supported"),
    (NO_PERMISSION, "NO_PERMISSION", c"Insufficient Permissions"),
    (5, "ALREADY_INITIALIZED", c"Already Initialized"),
    (NOT_FOUND, "NOT_FOUND", c"Not Found"),
    (INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", c"Insufficient Size"),
    (8, "INSUFFICIENT_POWER", c"Insufficient External Power"),
    (DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", c"Driver Not Loaded"),
    (TIMEOUT, "TIMEOUT", c"Timeout"),
    (11, "IRQ_ISSUE", c"Interrupt Request Issue"),
    (
        LIBRARY_NOT_FOUND,
        "LIBRARY_NOT_FOUND",
        c"NVML Shared Library Not Found",
    ),
    (13, "FUNCTION_NOT_FOUND", c"Function Not Found"),
    (14, "CORRUPTED_INFOROM", c"Corrupted infoROM"),
    (GPU_IS_LOST, "GPU_IS_LOST", c"GPU is lost"),
    (16, "RESET_REQUIRED", c"GPU requires restart"),
    (
        17,
        "OPERATING_SYSTEM",
        c"The operating system has blocked the request.",
    ),
    (
        18,
        "LIB_RM_VERSION_MISMATCH",
        c"RM has detected an NVML/RM version mismatch.",
    ),
    (19, "IN_USE", c"In use by another client"),
    (20, "MEMORY", c"Insufficient Memory"),
    (21, "NO_DATA", c"No data"),
    (
        22,
        "VGPU_ECC_NOT_SUPPORTED",
        c"The requested vgpu operation is not available on target device, because ECC is enabled",
    ),
    (
        23,
        "INSUFFICIENT_RESOURCES",
        c"Ran out of critical resources, other than memory",
    ),
    (
        24,
        "FREQ_NOT_SUPPORTED",
        c"The requested frequency is not supported",
    ),
    (
        ARGUMENT_VERSION_MISMATCH,
        "ARGUMENT_VERSION_MISMATCH",
        c"Argument version mismatch",
    ),
    (26, "DEPRECATED", c"Deprecated"),
    (27, "NOT_READY", c"Not Ready"),
    (28, "GPU_NOT_FOUND", c"GPU not found"),
    (29, "INVALID_STATE", c"Invalid state"),
    (UNKNOWN, "UNKNOWN", c"Unknown Error"),
];

/// The code for a name as a scenario writes it: `NOT_SUPPORTED`, `NVML_ERROR_NOT_SUPPORTED` or
/// `NVML_SUCCESS`, in any case.
pub fn code_by_name(name: &str) -> Option<nvmlReturn_t> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper
        .strip_prefix("NVML_ERROR_")
        .or_else(|| upper.strip_prefix("NVML_"))
        .unwrap_or(&upper);
    CODES
        .iter()
        .find(|(_, n, _)| *n == bare)
        .map(|(code, _, _)| *code)
}

/// The name (without prefix) of a code, `None` for codes nvml.h does not define.
pub fn name_of(code: nvmlReturn_t) -> Option<&'static str> {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, n, _)| *n)
}

/// What `nvmlErrorString` returns: a static NUL-terminated string, "Unknown Error" for codes
/// nvml.h does not define (as the real library does).
pub fn error_string(code: nvmlReturn_t) -> &'static CStr {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(c"Unknown Error", |(_, _, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_codes() {
        assert_eq!(code_by_name("NOT_SUPPORTED"), Some(3));
        assert_eq!(code_by_name("NVML_ERROR_GPU_IS_LOST"), Some(15));
        assert_eq!(code_by_name("gpu_is_lost"), Some(15));
        assert_eq!(code_by_name("UNKNOWN"), Some(999));
        assert_eq!(code_by_name("NO_PERMISSION"), Some(4));
        assert_eq!(code_by_name("TIMEOUT"), Some(10));
        assert_eq!(code_by_name("DRIVER_NOT_LOADED"), Some(9));
        assert_eq!(code_by_name("ARGUMENT_VERSION_MISMATCH"), Some(25));
        assert_eq!(code_by_name("NVML_SUCCESS"), Some(0));
        assert_eq!(code_by_name("NOT_SUPPORTD"), None);
        assert_eq!(code_by_name(""), None);
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        for (code, name, _) in CODES {
            assert_eq!(code_by_name(name), Some(*code), "{name}");
            assert_eq!(name_of(*code), Some(*name));
            assert_eq!(
                CODES.iter().filter(|(c, _, _)| c == code).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn error_strings() {
        assert_eq!(error_string(0), c"Success");
        assert_eq!(error_string(15), c"GPU is lost");
        assert_eq!(error_string(12345), c"Unknown Error");
    }
}
