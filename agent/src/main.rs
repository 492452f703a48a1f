//! `hmonitor`: the agent binary. Parses flags, starts the sampler and serves readers: the pull
//! API, the push client, or both at once.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hmonitor_agent::config::Args;
use hmonitor_agent::pull::{self, PullService};
use hmonitor_agent::push::{PushConfig, Pusher};
use hmonitor_agent::report;
use hmonitor_agent::state_dir;
use hmonitor_common::allow::Allowlist;
use hmonitor_common::run::{self as cli, shutdown_signal};
use hmonitor_sampler::sampler::Sampler;
use tokio::sync::watch;

fn main() -> ExitCode {
    let args = Args::parse();
    // A one-shot report keeps stderr for what went wrong.
    let default_log = if args.once { "warn" } else { "info" };
    cli::init_logging(args.log.as_deref().unwrap_or(default_log));
    // One thread is plenty: the sampling threads do the blocking work, the runtime only
    // answers readers. It also keeps the agent's footprint small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    cli::run_main("hmonitor", rt, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let hubs = args.hubs();
    if !args.once && args.listen.is_none() && hubs.is_empty() {
        anyhow::bail!(
            "nothing to do: set GOHM_ADDR (or --listen) to serve the pull API, HMON_HUB (or \
             --hub) to push to a hub, or use --once"
        );
    }

    let state = args.state_dir(std::env::var_os("STATE_DIRECTORY"));
    let mut cfg = args.sampler_config();
    if cfg.id.is_none() {
        if let Some(dir) = &state {
            let hostname = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = state_dir::host_id(dir, &hostname)
                .context("cannot use the state directory (HMON_STATE_DIR)")?;
            cfg.id = Some(id);
        }
    }
    let stale_after = cfg.stale_after;
    let interval = cfg.interval;

    // Checked before anything starts, so a bad token or missing CA store stops the agent at
    // once with one clear line.
    let pusher = if hubs.is_empty() {
        None
    } else {
        let push = PushConfig {
            hubs,
            token: args.token.clone(),
            interval,
            first_sample_within: stale_after.max(Duration::from_secs(1)),
            tls: args.tls.client(),
            backlog: args.backlog,
            backlog_dir: state.clone(),
        };
        Some(Pusher::new(push).context("cannot push to the hub (HMON_HUB)")?)
    };

    let sampler = Sampler::start(cfg).context("cannot start the sampling threads")?;

    if args.once {
        // Wait for every source once; one that hangs is reported stale instead of blocking.
        sampler.ready(stale_after.max(Duration::from_secs(1))).await;
        let info = sampler.report();
        let text = if args.json {
            serde_json::to_string_pretty(&info).context("cannot encode the report")? + "\n"
        } else {
            report::table(&info)
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write the report")?;
        return Ok(());
    }

    // Pull readers should not get an empty report just because the first samples are still
    // on their way; a source that hangs shows up stale after this instead.
    if args.listen.is_some() {
        sampler.ready(stale_after).await;
    }
    let listener = match args.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (GOHM_ADDR)"))?;
            Some(listener)
        }
        None => None,
    };

    // One stop signal for everything: SIGINT/SIGTERM, or one of the servers failing. Each
    // server stops on it and finishes cleanly (the pull API drains, the push client sends
    // every hub a Close frame).
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let signal = async {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("stopping"),
            () = stopped(stop_rx.clone()) => {}
        }
        stop_tx.send_replace(true);
    };
    let pull = async {
        let Some(listener) = listener else {
            return Ok(());
        };
        let result = serve_pull(&args, listener, sampler.clone(), stopped(stop_rx.clone())).await;
        stop_tx.send_replace(true);
        result
    };
    let push = async {
        if let Some(pusher) = pusher {
            pusher.run(sampler.clone(), stopped(stop_rx.clone())).await;
            stop_tx.send_replace(true);
        }
    };
    let ((), pull_result, ()) = tokio::join!(signal, pull, push);
    pull_result?;
    tracing::info!("stopped");
    Ok(())
}

async fn serve_pull(
    args: &Args,
    listener: tokio::net::TcpListener,
    sampler: Sampler,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let allow = args.allow.clone().unwrap_or_else(Allowlist::loopback);
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(
        "pull API listening on {local}{}, allowing {allow}",
        if args.tls.tls_cert.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    let service = PullService::new(sampler, args.token.clone());
    let tls = args.tls.pull_server()?;
    pull::serve(listener, allow, service, tls, shutdown)
        .await
        .context("pull API failed")
}
