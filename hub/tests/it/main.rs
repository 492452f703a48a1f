//! The hub's integration tests: real `hmonitor-hub` and `hmonitor` processes on loopback, the
//! NVML stand-in behind the agents, browser-like WebSocket clients. One test binary.

mod harness;
mod history;
mod push;

/// A client generated from the seed's original gpu.proto (agent/tests/seed/gpu.proto).
pub mod seed {
    #![allow(clippy::all, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/seed/gpu.rs"));
}
