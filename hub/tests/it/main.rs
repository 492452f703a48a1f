//! The hub's integration tests: real `hmonitor-hub` and `hmonitor` processes on loopback, the
//! NVML stand-in behind the agents, browser-like WebSocket clients. One test binary.

mod alerts;
mod deploy;
mod free;
mod fuzz;
mod harness;
mod history;
mod identity;
mod inprocess;
mod push;

pub use hmonitor_testkit::seed;
