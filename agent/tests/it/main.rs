//! The agent's integration tests: the real `hmonitor` binary on the NVML stand-in, real child
//! processes as GPU processes, real gRPC on loopback. One test binary (ripgrep's layout).

mod harness;
mod once;
mod pull;
mod push;

/// The client generated from the seed's original gpu.proto (agent/tests/seed/gpu.proto).
pub use hmonitor_testkit::seed;
