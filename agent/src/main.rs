//! `hmonitor`: the agent binary. Parses flags, then prints one report (`--once`) or runs the
//! agent library's server: the pull API, the push client, or both at once.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hmonitor_agent::config::Args;
use hmonitor_agent::report;
use hmonitor_agent::server::{self, first_sample_within};
use hmonitor_common::run::{self as cli, shutdown_signal};
use hmonitor_sampler::Sampler;

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: `hmonitor wait` exits 2 when it times out, and a
    // job script must be able to tell the two apart.
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A one-shot report and the CLI's subcommands keep stderr for what went wrong (the CLI
    // says in its own words what the sampler would warn about).
    let default_log = if args.command.is_some() {
        "error"
    } else if args.once {
        "warn"
    } else {
        "info"
    };
    cli::init_logging(args.log.as_deref().unwrap_or(default_log));
    // One thread is plenty: the sampling threads do the blocking work, the runtime only
    // answers readers. It also keeps the agent's footprint small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Some(cmd) = args.command.clone() {
        // A subcommand's exit code is its answer (1: nothing free, 2: a wait timed out).
        let rt = match rt {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("hmonitor: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(hmonitor_agent::cli::run(&args, &cmd)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hmonitor: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    cli::run_main("hmonitor", rt, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cfg = args.agent_config(std::env::var_os("STATE_DIRECTORY"), &hostname)?;
    if args.once {
        return once(&args, cfg.sampler).await;
    }
    let server = server::bind(cfg).await?;
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("stopping");
    };
    server.run(shutdown).await?;
    Ok(())
}

/// `--once`: wait for every source once (one that hangs is reported stale instead of
/// blocking), print the report, exit.
async fn once(args: &Args, cfg: hmonitor_sampler::SamplerConfig) -> anyhow::Result<()> {
    let within = first_sample_within(cfg.stale_after);
    let sampler = Sampler::start(cfg).context("cannot start the sampling threads")?;
    sampler.ready(within).await;
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
    Ok(())
}
