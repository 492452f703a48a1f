//! The hub's integration tests: real `hmonitor-hub` and `hmonitor` processes on loopback, the
//! NVML stand-in behind the agents, browser-like WebSocket clients. One test binary.

mod harness;
mod history;
mod push;
