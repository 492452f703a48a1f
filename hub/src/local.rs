//! `[local_agent]`: an agent for this machine inside the hub, fed straight into the state map
//! (no socket, no token: it is the hub's own).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hmonitor_proto::HostSource;
use hmonitor_sampler::{Sampler, SamplerConfig};

use crate::state::{ClaimError, ConnId, Credential, Hub};

/// Why the local agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalAgentError {
    #[error("cannot start the sampling threads: {0}")]
    Sampler(#[from] std::io::Error),
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// The sampler, started, with its host id claimed in the state map.
pub struct LocalAgent {
    hub: Arc<Hub>,
    sampler: Sampler,
    id: String,
    conn: ConnId,
    interval: Duration,
}

impl LocalAgent {
    /// Starts the sampler threads and claims the host id (the hostname unless configured).
    pub fn start(hub: Arc<Hub>, cfg: SamplerConfig) -> Result<Self, LocalAgentError> {
        let interval = cfg.interval;
        let sampler = Sampler::start(cfg)?;
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
        Ok(Self {
            hub,
            sampler,
            id,
            conn,
            interval,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ingests each sample as it is taken, until `stop` completes (or another connection took
    /// the host id over); the sampler threads end with it.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut seq = 0;
        loop {
            seq += 1;
            let info = self.sampler.report();
            crate::history::record_unacked(self.hub.history(), &self.id, self.interval, &info);
            if !self.hub.ingest(&self.id, self.conn, seq, info) {
                tracing::warn!(
                    "local agent {}: the host id was taken over; stopping",
                    self.id
                );
                return;
            }
            tokio::select! {
                changed = self.sampler.changed() => if !changed { break },
                () = &mut stop => break,
            }
        }
        self.hub.release(&self.id, self.conn);
    }
}
