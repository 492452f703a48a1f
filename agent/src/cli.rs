//! What both binaries (`hmonitor` and `hmonitor-hub`) do before and around their real work:
//! logging to stderr, running one async entry point, and the stop signal.

use std::future::Future;
use std::process::ExitCode;

/// Logs to stderr with `filter` (`info`, `debug`, `hmonitor_hub=debug`, …); an unusable
/// filter falls back to `info` rather than silencing the program.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs `main` on `runtime`; an error becomes one line on stderr, `name: reason`, and a
/// failing exit status.
pub fn run_main<F>(
    name: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    main: F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let rt = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM (systemd's stop).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
