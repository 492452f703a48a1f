//! The hub as a library: [`bind`] opens the history store and every listener (port 0 works;
//! the bound addresses are readable before anything is served), [`Server::run`] serves until
//! the stop and then joins every task it started: the sweeper, the pull pollers, the gRPC
//! facade, the local agent, the HTTP server with its agent and browser sessions, and the
//! history writer. `main` only parses its arguments and calls these two; tests call them on
//! port 0 in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hmonitor_common::auth::TokenGate;
use hmonitor_common::run::Stop;
use tokio::net::TcpListener;

use crate::agent_ws::AgentAuth;
use crate::config::HubConfig;
use crate::history::{History, StoreError};
use crate::identity::Identity;
use crate::limits::PerAddrListener;
use crate::local::LocalAgent;
use crate::state::Hub;
use crate::tls::{TlsError, TlsListener};
use crate::{grpc, http, pull, App};

/// How long a stopping hub waits for agent and browser sessions to say goodbye (each is sent
/// a close frame at once) before it returns regardless.
const SESSION_DRAIN: Duration = Duration::from_secs(5);

/// Why the hub could not start or stopped with an error. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Listen {
        addr: SocketAddr,
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("cannot open the history store: {0}")]
    History(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot open the alerts store: {0}")]
    Alerts(#[from] crate::alerts::AlertsError),
    #[error("cannot start the local agent: {0}")]
    LocalAgent(String),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("gRPC facade failed: {0}")]
    Grpc(tonic::transport::Error),
}

/// A hub whose listeners are bound and whose state is ready, not yet serving.
pub struct Server {
    app: App,
    http: TcpListener,
    http_addr: SocketAddr,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    grpc: Option<(TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    grpc_addr: Option<SocketAddr>,
    local: Option<LocalAgent>,
    pull_ca: Option<tonic::transport::Certificate>,
}

/// Opens the history store, checks the TLS files, binds the HTTP (and gRPC) listener and
/// starts the local agent's sampler. Nothing is served until [`Server::run`].
pub async fn bind(cfg: HubConfig) -> Result<Server, ServeError> {
    let cfg = Arc::new(cfg);
    let hub = Hub::new(cfg.interval, &cfg.expected_hosts);
    hub.set_max_hosts(cfg.max_hosts);
    hub.set_free_settle(cfg.free_settle);
    let history = History::open(&cfg.history_config())?;
    tracing::info!("history in {}", history.path().display());
    hub.set_history(history);
    let auth = Arc::new(AgentAuth {
        enrollment: cfg.enrollment_token.clone(),
        hosts: cfg
            .host_tokens
            .iter()
            .map(|(id, token)| (id.clone(), token.clone()))
            .collect(),
    });

    let http_tls = cfg.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let pull_ca = crate::tls::read_pull_ca(cfg.pull_ca.as_deref())?;
    let http = listen(cfg.listen, "--listen").await?;
    let http_addr = local_addr(&http, cfg.listen, "--listen")?;
    let grpc = match cfg.grpc_listen {
        Some(addr) => {
            let tls = cfg.tls.as_ref().map(|t| t.grpc_config()).transpose()?;
            Some((listen(addr, "--grpc-listen").await?, tls))
        }
        None => None,
    };
    let grpc_addr = match (&grpc, cfg.grpc_listen) {
        (Some((l, _)), Some(addr)) => Some(local_addr(l, addr, "--grpc-listen")?),
        _ => None,
    };

    let local = if cfg.local_agent.enabled {
        let sampler = cfg.local_agent.sampler_config(cfg.interval);
        let agent = LocalAgent::start(hub.clone(), sampler)
            .map_err(|e| ServeError::LocalAgent(e.to_string()))?;
        tracing::info!("local agent reporting as {}", agent.id());
        Some(agent)
    } else {
        None
    };

    // Ids the shared token may never report as: those with their own token, the pull
    // targets, and the hub's own local agent.
    let reserved: std::collections::BTreeSet<String> = cfg
        .host_tokens
        .keys()
        .cloned()
        .chain(cfg.pull_targets.iter().map(|t| t.id.clone()))
        .chain(local.as_ref().map(|l| l.id().to_owned()))
        .collect();
    let identity = Arc::new(Identity::open(&cfg.data_dir, reserved)?);
    let viewers = TokenGate::new(cfg.viewer_token.clone());
    let admins = TokenGate::new(cfg.admin_token.clone());
    let alerts = crate::alerts::Alerts::open(cfg.alerts.clone(), &cfg.data_dir)?;
    let app = App {
        hub,
        cfg,
        auth,
        viewers,
        stop: Stop::new(),
        identity,
        refusals: Arc::default(),
        admins,
        alerts,
    };
    Ok(Server {
        app,
        http,
        http_addr,
        http_tls,
        grpc,
        grpc_addr,
        local,
        pull_ca,
    })
}

async fn listen(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, flag, source })
}

fn local_addr(
    l: &TcpListener,
    addr: SocketAddr,
    flag: &'static str,
) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|source| ServeError::Listen { addr, flag, source })
}

impl Server {
    /// Where the page, the API and the agent and browser WebSockets are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the gRPC facade is served, when it is on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The live state: what tests and embedders read.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.app.hub
    }

    pub fn config(&self) -> &HubConfig {
        &self.app.cfg
    }

    /// The local agent's host id, when it runs.
    pub fn local_agent_id(&self) -> Option<&str> {
        self.local.as_ref().map(LocalAgent::id)
    }

    /// Serves until `shutdown` completes (or a server fails), then stops every task and waits
    /// for them: sessions are sent a close frame (1001), the history writer stores what it was
    /// given. Returns the first failure.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            app,
            http,
            http_addr,
            http_tls,
            grpc,
            grpc_addr,
            local,
            pull_ca,
        } = self;
        let cfg = app.cfg.clone();
        let hub = app.hub.clone();
        let stop = app.stop.clone();
        let signal = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown => stop.stop(),
                    () = stop.wait() => {}
                }
            })
        };

        tracing::info!(
            "hub listening on {http_addr}{}, config from {}",
            if http_tls.is_some() { " (TLS)" } else { "" },
            if cfg.sources.is_empty() {
                "defaults".to_owned()
            } else {
                cfg.sources.join(", ")
            }
        );

        // Hosts that fall silent are marked down by a sweep a few times per interval.
        let sweeper = {
            let (hub, stop) = (hub.clone(), stop.clone());
            let period =
                (cfg.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let stopping = stop.wait();
                tokio::pin!(stopping);
                loop {
                    tokio::select! {
                        _ = tick.tick() => hub.sweep(),
                        () = &mut stopping => return,
                    }
                }
            }
        };

        let pollers = pull::spawn_pollers(
            hub.clone(),
            cfg.pull_targets.clone(),
            cfg.interval,
            cfg.max_frame_bytes,
            pull_ca,
            stop.watch(),
        );
        let pollers = async move {
            for p in pollers {
                if let Err(e) = p.await {
                    tracing::error!("a pull poller failed: {e}");
                }
            }
        };

        let grpc = async {
            let Some((listener, tls)) = grpc else {
                return Ok(());
            };
            if let Some(addr) = grpc_addr {
                tracing::info!("gRPC listening on {addr}");
            }
            let serving = grpc::serve(
                listener,
                hub.clone(),
                cfg.viewer_allow.clone(),
                cfg.limits.conns_per_addr,
                cfg.viewer_token.clone(),
                tls,
                stop.wait(),
            );
            let result = serving.await.map_err(ServeError::Grpc);
            stop.stop();
            result
        };

        let alerting = app.alerts.clone().run(hub.clone(), stop.wait());

        let local = async {
            if let Some(agent) = local {
                agent.run(stop.wait()).await;
            }
        };

        let http = async {
            let listener = PerAddrListener::new(http, cfg.limits.conns_per_addr, hub.clone());
            let router = http::router(app.clone());
            let timeouts = crate::serve::Timeouts {
                head: cfg.http_head_timeout,
                idle: cfg.http_idle_timeout,
                drain: SESSION_DRAIN,
            };
            match http_tls {
                Some(tls) => {
                    let listener = TlsListener::new(listener, tls).map_err(ServeError::Http)?;
                    crate::serve::serve(listener, router, stop.clone(), timeouts).await;
                }
                None => {
                    crate::serve::serve(listener, router, stop.clone(), timeouts).await;
                }
            }
            stop.stop();
            // Upgraded connections outlive the HTTP server: wait for the sessions, which have
            // been told to close, to be gone.
            drain_sessions(&hub).await;
            Ok::<(), ServeError>(())
        };

        let ((), (), grpc_result, (), http_result, ()) =
            tokio::join!(sweeper, pollers, grpc, local, http, alerting);
        signal.abort();
        // Every sender of history records is done: store what is queued, then return.
        if let Some(history) = hub.history().cloned() {
            if let Err(e) = tokio::task::spawn_blocking(move || history.close()).await {
                tracing::error!("history writer: {e}");
            }
        }
        tracing::info!("stopped");
        http_result.and(grpc_result)
    }
}

async fn drain_sessions(hub: &Hub) {
    let open = || {
        hub.stats.agents_connected.load(Ordering::Relaxed)
            + hub.stats.browsers_connected.load(Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + SESSION_DRAIN;
    while open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if open() > 0 {
        tracing::warn!("stopped with {} sessions still closing", open());
    }
}
