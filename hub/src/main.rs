//! `hmonitor-hub`: parses flags and configuration, then runs the hub until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use hmonitor_common::run::{self as cli, shutdown_signal};
use hmonitor_hub::agent_ws::AgentAuth;
use hmonitor_hub::config::{self, Args};
use hmonitor_hub::history::History;
use hmonitor_hub::limits::PerAddrListener;
use hmonitor_hub::state::Hub;
use hmonitor_hub::tls::TlsListener;
use hmonitor_hub::{grpc, http, local, pull, App};
use tokio::sync::watch;

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(args.log.as_deref().unwrap_or("info"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    cli::run_main("hmonitor-hub", rt, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    raise_fd_limit();
    let (cfg, generated) = config::load(&args, std::env::var_os("STATE_DIRECTORY"))?;
    hmonitor_hub::tls::init_pull_ca(args.deploy.pull_ca.as_deref())?;
    let cfg = Arc::new(cfg);
    let hub = Hub::new(cfg.interval, &cfg.expected_hosts);
    let history = History::open(&cfg.history_config()).context("cannot open the history store")?;
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
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // Hosts that fall silent are marked down by a sweep a few times per interval.
    let sweeper = hub.clone();
    let period = (cfg.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweeper.sweep();
        }
    });

    pull::spawn_pollers(
        hub.clone(),
        cfg.pull_targets.clone(),
        cfg.interval,
        cfg.max_frame_bytes,
        stop_rx.clone(),
    );

    if let Some(addr) = cfg.grpc_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--grpc-listen)"))?;
        tracing::info!("gRPC listening on {}", listener.local_addr()?);
        let (hub, token, stop) = (hub.clone(), cfg.viewer_token.clone(), stop_rx.clone());
        let allow = cfg.viewer_allow.clone();
        let conns = cfg.limits.conns_per_addr;
        let tls = cfg.tls.as_ref().map(|t| t.grpc_config()).transpose()?;
        tokio::spawn(async move {
            let serving = grpc::serve(listener, hub, allow, conns, token, tls, wait_for(stop));
            if let Err(e) = serving.await {
                tracing::error!("gRPC facade failed: {e}");
            }
        });
    }

    if cfg.local_agent.enabled {
        let sampler = cfg.local_agent.sampler_config(cfg.interval);
        let id = local::spawn(hub.clone(), sampler).context("cannot start the local agent")?;
        tracing::info!("local agent reporting as {id}");
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", cfg.listen))?;
    let bound = listener.local_addr()?;
    if let Some(g) = generated {
        // Deliberately on stdout and only once: the log never carries a token.
        println!("{}", g.add_host_hint(bound));
    }
    tracing::info!(
        "hub listening on {bound}{}, config from {}",
        if cfg.tls.is_some() { " (TLS)" } else { "" },
        if cfg.sources.is_empty() {
            "defaults".to_owned()
        } else {
            cfg.sources.join(", ")
        }
    );
    let listener = PerAddrListener::new(listener, cfg.limits.conns_per_addr, hub.clone());
    let tls = cfg.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let viewers = hmonitor_common::auth::TokenGate::new(cfg.viewer_token.clone());
    let app = App {
        hub,
        cfg,
        auth,
        viewers,
    };
    let service = http::router(app).into_make_service_with_connect_info::<SocketAddr>();
    // tap_io: axum's ConnectInfo<SocketAddr> is implemented for tapped listeners of any kind.
    match tls {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?.tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(wait_for(stop_rx))
                .await
        }
        None => {
            axum::serve(listener.tap_io(|_| {}), service)
                .with_graceful_shutdown(wait_for(stop_rx))
                .await
        }
    }
    .context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Every agent and browser holds a socket: lift the soft open-files limit to the hard one
/// (systemd's default soft limit of 1024 would cap a hub at about a thousand agents).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open-files limit raised from {soft} to {hard}"),
            Err(e) => tracing::warn!("cannot raise the open-files limit from {soft}: {e}"),
        },
        Ok((soft, _)) => tracing::debug!("open-files limit {soft}"),
        Err(e) => tracing::warn!("cannot read the open-files limit: {e}"),
    }
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
