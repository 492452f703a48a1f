//! `hmonitor-hub`: parses flags and configuration, then runs the hub until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use hmonitor_common::run::{self as cli, shutdown_signal};
use std::io::IsTerminal as _;

use hmonitor_hub::config::{self, Args, Command};
use hmonitor_hub::{admin_cli, server};

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(args.log.as_deref().unwrap_or("info"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    cli::run_main("hmonitor-hub", rt, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(command) = &args.command {
        // Read the configuration as the hub would, without making any token.
        let file = args
            .config
            .as_deref()
            .map(config::ConfigFile::read)
            .transpose()?;
        let mut cfg = config::resolve(&args, file.as_ref(), std::env::var_os("STATE_DIRECTORY"))?;
        config::read_token_files(&mut cfg)?;
        return match command {
            Command::EnrollLine => {
                println!("{}", admin_cli::enroll_line(&cfg)?);
                Ok(())
            }
            Command::Hosts { hub, action } => admin_cli::hosts(&cfg, hub.as_deref(), action).await,
            Command::Alerts { action } => alerts_command(&cfg, action).await,
        };
    }
    raise_fd_limit();
    let (cfg, generated) = config::load(&args, std::env::var_os("STATE_DIRECTORY"))?;
    let server = server::bind(cfg).await?;
    if let Some(g) = generated {
        if std::io::stdout().is_terminal() {
            // Only to a person at a terminal: the journal (systemd's stdout) never carries a
            // token.
            println!("{}", g.add_host_hint(server.http_addr()));
        } else {
            tracing::info!(
                "no token was configured: an enrollment token was generated and stored in {}; \
                 `hmonitor-hub enroll-line` prints the command that adds a host",
                g.path.display()
            );
        }
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

async fn alerts_command(
    cfg: &config::HubConfig,
    action: &config::AlertsAction,
) -> anyhow::Result<()> {
    let a = &cfg.alerts;
    match action {
        config::AlertsAction::Test { channel } => {
            hmonitor_hub::alerts::test_channel(a, channel).await?;
            println!("test message sent on {channel}: accepted");
        }
        config::AlertsAction::List => {
            if a.channels.is_empty() && a.rules.is_empty() {
                println!("no [alerts] configured (see --config)");
            }
            for c in &a.channels {
                println!("channel {} ({})", c.name, c.kind.as_str());
            }
            for r in &a.rules {
                let notify: Vec<&str> = r
                    .notify
                    .iter()
                    .filter_map(|&i| a.channels.get(i).map(|c| c.name.as_str()))
                    .collect();
                println!(
                    "rule {} ({}), for {}, notify {}",
                    r.name,
                    r.kind.as_str(),
                    humantime::format_duration(r.for_),
                    if notify.is_empty() {
                        "owners only".to_owned()
                    } else {
                        notify.join(", ")
                    }
                );
            }
        }
    }
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
