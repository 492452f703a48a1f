//! What both binaries (`hmonitor` and `hmonitor-hub`) do before and around their real work:
//! logging to stderr, running one async entry point, and the stop signal that every task of a
//! server watches.

use std::future::Future;
use std::process::ExitCode;

use tokio::sync::watch;

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

/// systemd's `$STATE_DIRECTORY` (given by `main`, which reads the environment): a
/// colon-separated list when the unit names several directories; the first one is ours.
pub fn systemd_state_dir(value: Option<std::ffi::OsString>) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let value = value?;
    let first = value.to_str().map_or_else(
        || PathBuf::from(&value),
        |s| PathBuf::from(s.split(':').next().unwrap_or_default()),
    );
    (!first.as_os_str().is_empty()).then_some(first)
}

/// One stop for every task of a server: cheap to clone, each clone can trigger it and wait for
/// it. A server's `run` takes a future (a signal in `main`, a test's own trigger) and turns it
/// into one of these, so tasks need not share the future itself.
#[derive(Clone, Debug)]
pub struct Stop {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// A stop that triggers itself when `cause` completes (the task ends with the stop, so
    /// nothing is left running once a server has stopped for another reason).
    pub fn after(cause: impl Future<Output = ()> + Send + 'static) -> Self {
        let stop = Self::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cause => trigger.stop(),
                () = trigger.wait() => {}
            }
        });
        stop
    }

    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// The flag itself, for code that selects on a `watch` channel.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once [`Self::stop`] was called, by any clone.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // The sender lives as long as any clone, so an error cannot happen while we wait.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_state_directory_is_ours() {
        use std::path::PathBuf;
        assert_eq!(
            systemd_state_dir(Some("/var/lib/hmonitor:/var/lib/other".into())),
            Some(PathBuf::from("/var/lib/hmonitor"))
        );
        assert_eq!(systemd_state_dir(Some("".into())), None);
        assert_eq!(systemd_state_dir(None), None);
    }

    #[tokio::test]
    async fn a_stop_reaches_every_clone_and_its_cause_triggers_it() {
        let stop = Stop::new();
        let other = stop.clone();
        let waiting = tokio::spawn(other.wait());
        assert!(!stop.is_stopped());
        stop.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter woke")
            .expect("join");
        assert!(other.is_stopped());

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let caused = Stop::after(async move {
            let _ = rx.await;
        });
        assert!(!caused.is_stopped());
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), caused.wait())
            .await
            .expect("the cause stopped it");
    }
}
