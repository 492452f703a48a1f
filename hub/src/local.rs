//! `--local-agent`: an agent for this machine inside the hub process, fed straight into the
//! state map (no socket, no token: it is the hub's own).

use std::sync::Arc;

use hmonitor_proto::HostSource;
use hmonitor_sampler::{Sampler, SamplerConfig};

use crate::state::{Credential, Hub};

/// Starts the sampler and a task that ingests each of its samples. Returns the host id.
pub fn spawn(hub: Arc<Hub>, cfg: SamplerConfig) -> anyhow::Result<String> {
    let interval = cfg.interval;
    let mut sampler = Sampler::start(cfg)?;
    let id = sampler.report().id;
    let conn = hub.next_conn_id();
    hub.claim(
        &id,
        conn,
        Credential::Internal,
        HostSource::Local,
        "local",
        interval,
    )?;
    let host_id = id.clone();
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            seq += 1;
            let info = sampler.report();
            crate::history::record_unacked(&hub, &host_id, interval, &info);
            if !hub.ingest(&host_id, conn, seq, info) {
                tracing::warn!("local agent {host_id}: the host id was taken over; stopping");
                return;
            }
            if !sampler.changed().await {
                return;
            }
        }
    });
    Ok(id)
}
