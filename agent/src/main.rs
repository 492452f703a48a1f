//! `hmonitor`: the agent binary. Parses flags, starts the sampler and serves readers.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hmonitor_agent::allow::Allowlist;
use hmonitor_agent::config::Args;
use hmonitor_agent::pull::{self, PullService};
use hmonitor_agent::report;
use hmonitor_agent::sampler::Sampler;

fn main() -> ExitCode {
    let args = Args::parse();
    // A one-shot report keeps stderr for what went wrong.
    let default_log = if args.once { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_new(args.log.as_deref().unwrap_or(default_log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    // One thread is plenty: the sampling threads do the blocking work, the runtime only
    // answers readers. It also keeps the agent's footprint small.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hmonitor: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmonitor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.sampler_config();
    let stale_after = cfg.stale_after;
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

    let Some(addr) = args.listen else {
        anyhow::bail!(
            "nothing to do: set GOHM_ADDR (or --listen) to serve the pull API, or use --once"
        );
    };
    let allow = args.allow.clone().unwrap_or_else(Allowlist::loopback);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (GOHM_ADDR)"))?;
    let local = listener.local_addr().context("listener address")?;
    tracing::info!("pull API listening on {local}, allowing {allow}");
    let service = PullService::new(sampler, args.token.clone());
    pull::serve(listener, allow, service, shutdown_signal())
        .await
        .context("pull API failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
