//! The agent as a library: [`bind`] checks the push configuration, starts the sampler and
//! binds the pull API's listener (port 0 works; the bound address is readable), and
//! [`Server::run`] serves the pull API and pushes to every hub until the stop, then joins both
//! (the pull API drains, every hub is sent a Close frame, the backlog is saved). `main` only
//! parses its arguments and calls these two; tests call them in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hmonitor_common::allow::Allowlist;
use hmonitor_common::run::Stop;
use hmonitor_sampler::{Sampler, SamplerConfig};
use tokio::net::TcpListener;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::coord::{socket, Coordinator};
use crate::pull::{self, PullService};
use crate::push::{PushConfig, PushError, Pusher};

/// The pull API's settings (`GOHM_ADDR`, `GOHM_ALLOW`, `HMON_TOKEN`, `HMON_TLS_CERT`).
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub listen: SocketAddr,
    pub allow: Allowlist,
    /// `RequestInfo.token` must match it; none: no token needed.
    pub token: Option<String>,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Everything a running agent does: sample, serve the pull API, push to hubs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sampler: SamplerConfig,
    pub pull: Option<PullConfig>,
    pub push: Option<PushConfig>,
    /// The CLI's socket (`hmonitor free`, `wait`, `hold`); none: off.
    pub socket: Option<std::path::PathBuf>,
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "nothing to do: set GOHM_ADDR (or --listen) to serve the pull API, HMON_HUB (or --hub) \
         to push to a hub, or use --once"
    )]
    NothingToDo,
    #[error("cannot push to the hub (HMON_HUB): {0}")]
    Push(#[from] PushError),
    #[error("cannot start the sampling threads: {0}")]
    Sampler(std::io::Error),
    #[error("cannot listen on {addr} (GOHM_ADDR): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("pull API failed: {0}")]
    Pull(tonic::transport::Error),
}

/// An agent whose sampler runs and whose listener is bound, not yet serving.
pub struct Server {
    sampler: Sampler,
    pull: Option<(TcpListener, PullConfig)>,
    pull_addr: Option<SocketAddr>,
    pusher: Option<Pusher>,
    coord: Option<(Arc<Coordinator>, UnixListener, PathBuf)>,
}

/// Checks the push configuration first (a bad token or missing CA store stops the agent at
/// once with one clear line), starts the sampler, waits for its first samples when the pull
/// API is on (readers should not get an empty report just because they asked early; a hung
/// source shows up stale after `stale_after` instead), and binds the pull API.
pub async fn bind(cfg: AgentConfig) -> Result<Server, AgentError> {
    if cfg.pull.is_none() && cfg.push.is_none() {
        return Err(AgentError::NothingToDo);
    }
    let stale_after = cfg.sampler.stale_after;
    let pusher = cfg.push.map(Pusher::new).transpose()?;
    let interval = cfg.sampler.interval;
    let sampler = Sampler::start(cfg.sampler).map_err(AgentError::Sampler)?;
    let coord = cfg.socket.and_then(|path| match socket::bind(&path) {
        Ok(listener) => {
            let coord = Coordinator::new(&sampler.report_raw().id, interval);
            let c = coord.clone();
            sampler.set_annotate(Box::new(move |info| c.annotate(info)));
            Some((coord, listener, path))
        }
        Err(e) => {
            // The agent's reporting does not depend on it: say what is missing and go on.
            tracing::warn!(
                "{e}; `hmonitor free`/`wait` on this host will not be coordinated (set \
                 --socket/HMON_SOCKET to a writable path, or run under the systemd unit, \
                 whose RuntimeDirectory=hmonitor provides /run/hmonitor)"
            );
            None
        }
    });
    let (pull, pull_addr) = match cfg.pull {
        Some(p) => {
            sampler.ready(stale_after).await;
            let listener =
                TcpListener::bind(p.listen)
                    .await
                    .map_err(|source| AgentError::Listen {
                        addr: p.listen,
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| AgentError::Listen {
                addr: p.listen,
                source,
            })?;
            (Some((listener, p)), Some(addr))
        }
        None => (None, None),
    };
    Ok(Server {
        sampler,
        pull,
        pull_addr,
        pusher,
        coord,
    })
}

impl Server {
    /// Where the pull API is served, when it is on.
    pub fn pull_addr(&self) -> Option<SocketAddr> {
        self.pull_addr
    }

    /// The running sampler (what both readers answer from).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Serves until `shutdown` completes, or one of the servers fails; then stops both and
    /// waits for them. Returns the pull API's failure, if it failed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let Server {
            sampler,
            pull,
            pull_addr,
            pusher,
            coord,
        } = self;
        let stop = Stop::after(shutdown);
        let pull = async {
            let Some((listener, p)) = pull else {
                return Ok(());
            };
            tracing::info!(
                "pull API listening on {}{}, allowing {}",
                pull_addr.map_or_else(|| p.listen.to_string(), |a| a.to_string()),
                if p.tls.is_some() { " (TLS)" } else { "" },
                p.allow
            );
            let service = PullService::new(sampler.clone(), p.token);
            let result = pull::serve(listener, p.allow, service, p.tls, stop.wait())
                .await
                .map_err(AgentError::Pull);
            stop.stop();
            result
        };
        let relay = pusher.as_ref().map(Pusher::relay);
        let cli = async {
            let Some((coord, listener, path)) = coord else {
                return;
            };
            tracing::info!("CLI socket at {}", path.display());
            let ctx = socket::Ctx {
                coord: coord.clone(),
                sampler: sampler.clone(),
                relay,
            };
            tokio::select! {
                () = socket::serve(listener, path, ctx, stop.wait()) => {}
                () = coord.follow(sampler.clone()) => {}
            }
        };
        let push = async {
            if let Some(pusher) = pusher {
                pusher.run(sampler.clone(), stop.wait()).await;
                stop.stop();
            }
        };
        let (pull_result, (), ()) = tokio::join!(pull, push, cli);
        // Also ends the task `Stop::after` started, when the stop came from inside.
        stop.stop();
        tracing::info!("stopped");
        pull_result
    }
}

/// How long `--once` and the first snapshot wait for every source: the stale deadline, but at
/// least a second.
pub fn first_sample_within(stale_after: Duration) -> Duration {
    stale_after.max(Duration::from_secs(1))
}
