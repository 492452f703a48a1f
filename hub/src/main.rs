//! `hmonitor-hub`: parses flags and configuration, then runs the hub until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use hmonitor_common::run::{self as cli, shutdown_signal};
use hmonitor_hub::config::{self, Args};
use hmonitor_hub::server;

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
    let server = server::bind(cfg).await?;
    if let Some(g) = generated {
        // Deliberately on stdout and only once: the log never carries a token.
        println!("{}", g.add_host_hint(server.http_addr()));
    }
    server.run(shutdown_signal()).await?;
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
