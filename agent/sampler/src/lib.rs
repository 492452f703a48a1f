//! What a host reports and how it is read: the collectors (NVML, the processes on the GPUs,
//! disks, host facts) and the [`Sampler`] that runs each on a thread of its own and hands out
//! the latest samples. Both programs use it as it is: the `hmonitor` agent, and the hub's
//! `[local_agent]`. It has a plain [`SamplerConfig`] and no networking, CLI or TLS.

pub mod collect;
pub mod sampler;

pub use sampler::{Sampler, SamplerConfig, CMDLINE_MAX};
