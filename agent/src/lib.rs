//! The hmonitor agent: samples GPUs (NVML), their processes, disks and host facts on threads of
//! their own, and serves the latest snapshot to readers (the pull API, the push client,
//! `--once`).

pub mod backlog;
pub mod cli;
pub mod config;
pub mod coord;
pub mod pull;
pub mod push;
pub mod report;
pub mod server;
pub mod state_dir;
pub mod tls;
