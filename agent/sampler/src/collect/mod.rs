//! Collectors: each reads one source (NVML, /proc, mounts) and returns wire types or plain facts.
//! None of them keeps global state; the sampler owns them.

pub mod disks;
pub mod gpu;
pub mod host;
pub mod procs;
pub mod redact;
