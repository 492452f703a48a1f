//! hmonitor-hub: accepts agents (WebSocket push, or the seed's pull), keeps each host's latest
//! frame in a concurrent map, fans frames out to browsers, and serves the API and gRPC facade.

pub mod admin;
pub mod admin_cli;
pub mod agent_ws;
pub mod alerts;
pub mod alerts_api;
pub mod assets;
pub mod close;
pub mod config;
pub mod enrollment;
pub mod gpus_api;
pub mod grpc;
pub mod guard;
pub mod history;
pub mod history_api;
pub mod http;
pub mod identity;
pub mod limits;
pub mod live;
pub mod local;
pub mod metrics;
pub mod pull;
pub mod refusal_log;
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
    /// Which agent may report as which host id (reserved ids, pinned host keys).
    pub identity: Arc<identity::Identity>,
    /// Refused connections, logged at a bounded rate.
    pub refusals: Arc<refusal_log::RefusalLog>,
    /// What admin actions (`/api/admin/…`) must present.
    pub admins: hmonitor_common::auth::TokenGate,
    /// Rules, their state, subscriptions and silences.
    pub alerts: Arc<alerts::Alerts>,
}
