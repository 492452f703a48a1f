//! The hub's configuration: TOML file (`--config`), environment, flags (flags beat the
//! environment, which beats the file, which beats the defaults).
//!
//! clap resolves flag-over-environment; every clap field is an `Option` without a clap default,
//! so that the file can fill what neither set, and the defaults are applied here, last.
//!
//! Tokens never reach a log: `HubConfig`, `PullTarget`, `Args` and `GeneratedToken` print them
//! redacted under `{:?}`. The one place a token is shown is the first-start instruction that
//! `main` prints to stdout from [`GeneratedToken::add_host_hint`].

mod args;
mod file;
mod resolve;
mod settings_py;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hmonitor_common::allow::Allowlist;
use hmonitor_sampler::{SamplerConfig, CMDLINE_MAX};

use crate::enrollment::{self, EnrollmentError, GeneratedToken, StoredToken};

pub use args::{AlertsAction, Args, Command, HostsAction};
pub use file::ConfigFile;
pub use resolve::resolve;
pub use settings_py::{parse_settings_py, SettingsPyEntry, SettingsPyError};
pub use values::{check_pull_addr, parse_frame_bytes, parse_token};

/// Host ids kept at most, by default: room for a 20,000-host cluster.
pub const DEFAULT_MAX_HOSTS: usize = 20_000;

/// Largest agent frame accepted by default.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Bounds of `max_frame_bytes`: below 1 KiB no real report fits; above 64 MiB one agent could
/// hold a large share of the hub's memory with a single frame.
pub const MIN_MAX_FRAME: usize = 1024;
pub const MAX_MAX_FRAME: usize = 64 * 1024 * 1024;

/// A configuration file (TOML or settings.py) larger than this is refused unread: it is surely
/// not a configuration file, and parsing it would only cost memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A host the hub polls with the seed's `HostMonitor.GetInfo`.
#[derive(Clone, PartialEq, Eq)]
pub struct PullTarget {
    /// Host id shown for it.
    pub id: String,
    /// `host:port` of the agent's pull API.
    pub addr: String,
    /// Sent as `RequestInfo.token`.
    pub token: Option<String>,
}

impl fmt::Debug for PullTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullTarget")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("token", &redacted(&self.token))
            .finish()
    }
}

#[derive(Clone)]
pub struct HubConfig {
    /// HTTP: page, API, agent and browser WebSockets.
    pub listen: SocketAddr,
    /// gRPC facade (HostMonitor.GetInfo by host id); off when `None`.
    pub grpc_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Interval assumed for hosts that do not say theirs, and the pull targets' poll interval.
    pub interval: Duration,
    /// Shared enrollment token: any host presenting it may report (under any free id).
    pub enrollment_token: Option<String>,
    /// Per-host tokens: host id → token; such a token lets only that host id report.
    pub host_tokens: BTreeMap<String, String>,
    /// Host ids expected to report; listed as never seen until they do. Holds the ids of
    /// `expected_hosts`, of `[hosts]` and of the pull targets, each once, sorted.
    pub expected_hosts: Vec<String>,
    pub pull_targets: Vec<PullTarget>,
    /// Who may open the page and API.
    pub viewer_allow: Allowlist,
    /// When set, browsers and API clients must present it.
    pub viewer_token: Option<String>,
    /// Admin actions (forgetting a host) need it; `load` makes sure there is one.
    pub admin_token: Option<String>,
    /// Where tokens not given as values are read from (`load` reads them).
    pub token_files: TokenFiles,
    /// Origins besides the hub's own whose pages may use the API and the live feed
    /// (`scheme://host[:port]`); any other cross-site `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// When not empty, the only `Host` names requests may carry (against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    pub max_frame_bytes: usize,
    /// Most host ids the hub keeps at once (each holds its last frame in memory).
    pub max_hosts: usize,
    /// A browser that cannot take a frame within this is dropped (it may reconnect).
    pub browser_write_timeout: Duration,
    /// An HTTP connection must send a request head within this, from its start and while it
    /// waits idle between requests; else it is closed.
    pub http_head_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub http_idle_timeout: Duration,
    /// A sample stamped further than this from the hub's clock is refused.
    pub max_clock_skew: Duration,
    /// The settle time of the hub's default free-GPU verdict (`HostState.free_gpus`).
    pub free_settle: Duration,
    /// An agent for this machine inside the hub (`[local_agent]`).
    pub local_agent: LocalAgent,
    /// Per-address connections, per-agent frame rate.
    pub limits: crate::limits::Limits,
    /// CA certificate(s) that https:// pull targets must chain to (`--pull-ca`); none: the
    /// system's store.
    pub pull_ca: Option<PathBuf>,
    /// Serve HTTPS/WSS and TLS gRPC from this certificate chain and key (PEM).
    pub tls: Option<crate::tls::TlsFiles>,
    /// How long each history tier keeps its points.
    pub history: crate::history::Retention,
    /// Where the configuration came from, for the start-up log (never holds a token).
    pub sources: Vec<String>,
    /// Alert channels, rules and contacts (`[alerts]`, `[users]`).
    pub alerts: crate::alerts::config::AlertsConfig,
}

impl HubConfig {
    /// Where and how the history store runs.
    pub fn history_config(&self) -> crate::history::HistoryConfig {
        crate::history::HistoryConfig {
            dir: self.data_dir.clone(),
            retention: self.history,
            // About 6 s of samples from 10,000 agents at 1 s; memory stays in the tens of MiB.
            queue: 65_536,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5000)),
            grpc_listen: None,
            data_dir: PathBuf::from("data"),
            interval: Duration::from_secs(2),
            enrollment_token: None,
            host_tokens: BTreeMap::new(),
            expected_hosts: Vec::new(),
            pull_targets: Vec::new(),
            viewer_allow: Allowlist::everyone(),
            viewer_token: None,
            admin_token: None,
            token_files: TokenFiles::default(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_hosts: DEFAULT_MAX_HOSTS,
            browser_write_timeout: Duration::from_secs(5),
            http_head_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(300),
            free_settle: hmonitor_common::free::DEFAULT_SETTLE,
            local_agent: LocalAgent::default(),
            limits: crate::limits::Limits::default(),
            pull_ca: None,
            tls: None,
            history: crate::history::Retention::default(),
            sources: Vec::new(),
            alerts: crate::alerts::config::AlertsConfig::default(),
        }
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host_tokens: Vec<&String> = self.host_tokens.keys().collect();
        f.debug_struct("HubConfig")
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("data_dir", &self.data_dir)
            .field("interval", &self.interval)
            .field("enrollment_token", &redacted(&self.enrollment_token))
            .field("host_tokens (ids)", &host_tokens)
            .field("expected_hosts", &self.expected_hosts)
            .field("pull_targets", &self.pull_targets)
            .field("viewer_allow", &self.viewer_allow.to_string())
            .field("viewer_token", &redacted(&self.viewer_token))
            .field("admin_token", &redacted(&self.admin_token))
            .field("token_files", &self.token_files)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_hosts", &self.max_hosts)
            .field("browser_write_timeout", &self.browser_write_timeout)
            .field("http_head_timeout", &self.http_head_timeout)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("free_settle", &self.free_settle)
            .field("local_agent", &self.local_agent)
            .field("limits", &self.limits)
            .field("pull_ca", &self.pull_ca)
            .field("tls", &self.tls)
            .field("history", &self.history)
            .field("sources", &self.sources)
            .field("alerts", &self.alerts)
            .finish()
    }
}

/// Files tokens are read from when no value is given: `--*-token-file`, `*_TOKEN_FILE`, the
/// file's `*_token_file` keys, else systemd credentials (`LoadCredential=enrollment-token:…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFiles {
    pub enrollment: Option<PathBuf>,
    pub viewer: Option<PathBuf>,
    pub admin: Option<PathBuf>,
    /// systemd's `$CREDENTIALS_DIRECTORY`.
    pub credentials: Option<PathBuf>,
}

/// Names of the systemd credentials the hub reads tokens from.
pub const CREDENTIAL_ENROLLMENT: &str = "enrollment-token";
pub const CREDENTIAL_VIEWER: &str = "viewer-token";
pub const CREDENTIAL_ADMIN: &str = "admin-token";

/// `[local_agent]` / `--local-agent*`: an agent for this machine inside the hub. Its own
/// settings, never the agent's `HMON_*` variables (those would mean one thing to the hub and
/// another to its agent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAgent {
    pub enabled: bool,
    /// Host id [default: the hostname].
    pub id: Option<String>,
    /// Primary address to report [default: the interface of the default route].
    pub ip: Option<String>,
    /// NVML library [default: libnvidia-ml.so.1 through the loader path].
    pub nvml_lib: Option<PathBuf>,
    /// Report command lines.
    pub cmdline: bool,
}

impl LocalAgent {
    /// What the sampler needs: the hub's interval, and a sample older than three of them is
    /// stale (as for an agent).
    pub fn sampler_config(&self, interval: Duration) -> SamplerConfig {
        let mut cfg = SamplerConfig::new(interval);
        cfg.id = self.id.clone();
        cfg.ip = self.ip.clone();
        cfg.nvml_lib = self.nvml_lib.clone().map(PathBuf::into_os_string);
        cfg.cmdline_max = self.cmdline.then_some(CMDLINE_MAX);
        cfg
    }
}

fn redacted(token: &Option<String>) -> &'static str {
    match token {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

/// Why the configuration was refused. Each message names the file (and line) or the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: larger than {max} bytes; not a configuration file?", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// A syntax or value error at a place in a file.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The same host id configured twice where it must be once (`first`, `second`: where).
    #[error("host id {id:?} is configured twice: at {first} and at {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Enrollment(#[from] EnrollmentError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("history retention: {0}")]
    History(String),
    #[error("{what} file {}: {reason}", path.display())]
    TokenFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// Loads the configuration: `args` (flags and environment), the `--config` file, the seed's
/// settings.py, the defaults; then makes sure agents have a token to present. Returns the
/// token generated on this start, if one was, so `main` can print how to add a host.
/// `state_directory` is systemd's `$STATE_DIRECTORY`, which `main` reads (nothing below it
/// reads the environment).
pub fn load(
    args: &Args,
    state_directory: Option<OsString>,
) -> Result<(HubConfig, Option<GeneratedToken>), ConfigError> {
    let file = match &args.config {
        Some(path) => Some(ConfigFile::read(path)?),
        None => None,
    };
    let mut cfg = resolve(args, file.as_ref(), state_directory)?;
    read_token_files(&mut cfg)?;
    let generated = ensure_enrollment_token(&mut cfg)?;
    ensure_admin_token(&mut cfg)?;
    Ok((cfg, generated))
}

/// Fills each token not given as a value from its file, else from its systemd credential.
/// A named file must exist; a credential need not.
pub fn read_token_files(cfg: &mut HubConfig) -> Result<(), ConfigError> {
    let files = cfg.token_files.clone();
    let slots: [(&'static str, &mut Option<String>, Option<PathBuf>, &str); 3] = [
        (
            "enrollment token",
            &mut cfg.enrollment_token,
            files.enrollment,
            CREDENTIAL_ENROLLMENT,
        ),
        (
            "viewer token",
            &mut cfg.viewer_token,
            files.viewer,
            CREDENTIAL_VIEWER,
        ),
        (
            "admin token",
            &mut cfg.admin_token,
            files.admin,
            CREDENTIAL_ADMIN,
        ),
    ];
    for (what, slot, named, credential) in slots {
        if slot.is_some() {
            continue;
        }
        let (path, required) = match (named, &files.credentials) {
            (Some(p), _) => (p, true),
            (None, Some(dir)) => (dir.join(credential), false),
            (None, None) => continue,
        };
        let fail = |reason: String| ConfigError::TokenFile {
            what,
            path: path.clone(),
            reason,
        };
        match hmonitor_common::auth::read_token_file(&path).map_err(fail)? {
            Some(token) => {
                *slot = Some(token);
                cfg.sources.push(format!("{what}: {}", path.display()));
            }
            None if required => return Err(fail("no such file".to_owned())),
            None => {}
        }
    }
    Ok(())
}

/// Admin actions always need a token: when none is configured, the one stored in
/// `<data_dir>/admin-token`, generated (mode 0600) on first start and never printed.
pub fn ensure_admin_token(cfg: &mut HubConfig) -> Result<(), ConfigError> {
    if cfg.admin_token.is_some() {
        return Ok(());
    }
    let stored = enrollment::ensure_named(&cfg.data_dir, enrollment::ADMIN_TOKEN_FILE)?;
    cfg.sources
        .push(format!("admin token: {}", stored.path().display()));
    cfg.admin_token = Some(stored.token().to_owned());
    Ok(())
}

/// Agents must authenticate (secure by default): when no token of any kind is configured, use
/// the one stored in the data directory, or generate and store one. Returns the token when it
/// was generated now.
pub fn ensure_enrollment_token(cfg: &mut HubConfig) -> Result<Option<GeneratedToken>, ConfigError> {
    if cfg.enrollment_token.is_some() || !cfg.host_tokens.is_empty() {
        return Ok(None);
    }
    let stored = enrollment::ensure(&cfg.data_dir)?;
    cfg.enrollment_token = Some(stored.token().to_owned());
    Ok(match stored {
        StoredToken::Read { path, .. } => {
            cfg.sources
                .push(format!("enrollment token: {}", path.display()));
            None
        }
        StoredToken::Generated(g) => {
            cfg.sources.push(format!(
                "enrollment token: generated now, stored in {}",
                g.path.display()
            ));
            Some(g)
        }
    })
}
