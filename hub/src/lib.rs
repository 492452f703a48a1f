//! hmonitor-hub: accepts agents (WebSocket push, or the seed's pull), keeps each host's latest
//! frame in a concurrent map, fans frames out to browsers, and serves the API and gRPC facade.

pub mod agent_ws;
pub mod assets;
pub mod close;
pub mod config;
pub mod enrollment;
pub mod grpc;
pub mod guard;
pub mod history;
pub mod history_api;
pub mod http;
pub mod limits;
pub mod live;
pub mod local;
pub mod metrics;
pub mod pull;
pub mod serve;
pub mod server;
pub mod state;
pub mod tls;

use std::sync::Arc;

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    pub hub: Arc<state::Hub>,
    pub cfg: Arc<config::HubConfig>,
    pub auth: Arc<agent_ws::AgentAuth>,
    /// What viewers (page, API, live WebSocket) must present.
    pub viewers: hmonitor_common::auth::TokenGate,
    /// The hub's stop: sessions watch it to close with 1001 when the hub stops.
    pub stop: hmonitor_common::run::Stop,
}
