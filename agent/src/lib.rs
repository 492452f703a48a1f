//! The hmonitor agent: samples GPUs (NVML), their processes, disks and host facts, and serves
//! the latest snapshot to readers.

pub mod collect;
