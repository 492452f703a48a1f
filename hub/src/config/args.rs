//! The hub's flags and environment variables (clap). Every field is an `Option` without a clap
//! default, so the file can fill what neither set; the defaults are applied in `resolve`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hmonitor_common::allow::Allowlist;
use hmonitor_common::parse::{parse_bool, parse_duration};

use super::redacted;
use super::values::{parse_flag_token, parse_frame_bytes, parse_host_name, parse_origin};

#[derive(Clone, Default, Parser)]
#[command(
    name = "hmonitor-hub",
    version,
    about = "hmonitor hub: accepts agents, keeps live state, fans out to browsers, serves API and gRPC",
    long_about = "hmonitor hub: agents dial in over WebSocket (or are polled with the seed's gRPC \
                  API), browsers watch every host live.\n\n\
                  Flags beat environment variables, which beat the --config file, which beats \
                  the defaults.\n\n\
                  Start:           hmonitor-hub            (prints how to add a host on first start)\n\
                  With a file:     hmonitor-hub --config /etc/hmonitor/hub.toml\n\
                  Seed settings:   hmonitor-hub --settings-py bin/settings.py"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file (see hub.example.toml).
    #[arg(long, global = true, env = "HMON_HUB_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address for HTTP: the page, the API, agent and browser WebSockets [default: 0.0.0.0:5000].
    #[arg(long, env = "HMON_HUB_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Address for the gRPC facade (HostMonitor.GetInfo by host id) [default: off].
    #[arg(long, env = "HMON_HUB_GRPC_LISTEN", value_name = "ADDR:PORT")]
    pub grpc_listen: Option<SocketAddr>,

    /// Directory for history and the generated enrollment token
    /// [default: $STATE_DIRECTORY (systemd), else ./data].
    #[arg(long, global = true, env = "HMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Interval assumed for agents that do not say theirs, and the poll interval of pull
    /// targets, e.g. 2s, 500ms [default: 2s].
    #[arg(long, env = "HMON_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Shared enrollment token agents present (the agent's HMON_TOKEN) [default: the one in
    /// <data-dir>/enrollment-token, generated on first start when no token is configured].
    #[arg(long, env = "HMON_TOKEN", hide_env_values = true, value_parser = parse_flag_token, value_name = "TOKEN")]
    pub token: Option<String>,

    /// File holding the shared enrollment token (instead of --token, so it never shows in
    /// `ps` or a unit file) [default: systemd credential `enrollment-token`, if loaded].
    #[arg(long, env = "HMON_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Who may open the page, the API and the gRPC facade: comma-separated CIDRs
    /// [default: everyone].
    #[arg(long, env = "HMON_VIEWER_ALLOW", value_name = "CIDRS")]
    pub viewer_allow: Option<Allowlist>,

    /// Token browsers and API clients must present [default: none needed].
    #[arg(long, env = "HMON_VIEWER_TOKEN", hide_env_values = true, value_parser = parse_flag_token, value_name = "TOKEN")]
    pub viewer_token: Option<String>,

    /// File holding the viewer token [default: systemd credential `viewer-token`, if loaded].
    #[arg(long, env = "HMON_VIEWER_TOKEN_FILE", value_name = "PATH")]
    pub viewer_token_file: Option<PathBuf>,

    /// Token for admin actions (forgetting a host) [default: the one in
    /// <data-dir>/admin-token, generated on first start].
    #[arg(long, env = "HMON_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_flag_token, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// File holding the admin token [default: systemd credential `admin-token`, if loaded].
    #[arg(long, env = "HMON_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// systemd's credentials directory (LoadCredential=), read from its environment.
    #[arg(long, env = "CREDENTIALS_DIRECTORY", hide = true, value_name = "DIR")]
    pub credentials_directory: Option<PathBuf>,

    /// Origins besides the hub's own whose pages may use the API and the live feed,
    /// comma-separated `scheme://host[:port]` [default: none; the hub's own origin always may].
    #[arg(long, env = "HMON_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin, value_name = "ORIGINS")]
    pub allowed_origins: Option<Vec<String>>,

    /// The only Host names requests may carry, comma-separated (against DNS rebinding)
    /// [default: any].
    #[arg(long, env = "HMON_ALLOWED_HOSTS", value_delimiter = ',', value_parser = parse_host_name, value_name = "HOSTS")]
    pub allowed_hosts: Option<Vec<String>>,

    /// An HTTP connection must send a request head within this (from its start, and while idle
    /// between requests), else it is closed, e.g. 30s [default: 30s].
    #[arg(long, env = "HMON_HTTP_HEAD_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub http_head_timeout: Option<Duration>,

    /// An idle keep-alive HTTP connection is closed after this, e.g. 60s [default: 60s].
    #[arg(long, env = "HMON_HTTP_IDLE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub http_idle_timeout: Option<Duration>,

    /// A sample stamped further than this from the hub's clock is refused, e.g. 5m
    /// [default: 5m].
    #[arg(long, env = "HMON_MAX_CLOCK_SKEW", value_parser = parse_duration, value_name = "DURATION")]
    pub max_clock_skew: Option<Duration>,

    /// How long a GPU's utilization must have stayed low before the page and `/api/gpus`
    /// call it free by default, e.g. 30s, 0 [default: 30s].
    #[arg(long, env = "HMON_FREE_SETTLE", value_parser = hmonitor_common::free::parse_settle, value_name = "DURATION")]
    pub free_settle: Option<Duration>,

    /// Most host ids the hub keeps at once; a new id past it is refused [default: 20000].
    #[arg(long, env = "HMON_MAX_HOSTS", value_name = "N")]
    pub max_hosts: Option<std::num::NonZeroUsize>,

    /// Largest agent frame accepted, in bytes (or with KiB/MiB), 1 KiB to 64 MiB [default: 1MiB].
    #[arg(long, env = "HMON_MAX_FRAME_BYTES", value_parser = parse_frame_bytes, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Also run an agent for this machine inside the hub [default: off].
    #[arg(
        long,
        env = "HMON_LOCAL_AGENT",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool,
        value_name = "BOOL"
    )]
    pub local_agent: Option<bool>,

    /// Host id of the local agent [default: the hostname].
    #[arg(long, env = "HMON_LOCAL_AGENT_ID", value_name = "ID")]
    pub local_agent_id: Option<String>,

    /// Primary IP the local agent reports [default: the interface of the default route].
    #[arg(long, env = "HMON_LOCAL_AGENT_IP", value_name = "IP")]
    pub local_agent_ip: Option<String>,

    /// NVML library of the local agent [default: libnvidia-ml.so.1 through the loader path].
    #[arg(long, env = "HMON_LOCAL_AGENT_NVML_LIB", value_name = "PATH")]
    pub local_agent_nvml_lib: Option<PathBuf>,

    /// Let the local agent report each GPU process's command line (can hold secrets)
    /// [default: off].
    #[arg(
        long,
        env = "HMON_LOCAL_AGENT_CMDLINE",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool,
        value_name = "BOOL"
    )]
    pub local_agent_cmdline: Option<bool>,

    /// The seed's settings.py (`servers = {"name": "host:port", ...}`): each entry becomes a
    /// pull target.
    #[arg(long, env = "HMON_SETTINGS_PY", value_name = "PATH")]
    pub settings_py: Option<PathBuf>,

    /// Log filter, e.g. info, debug, hmonitor_hub=debug [default: info].
    #[arg(long, env = "HMON_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    #[command(flatten)]
    pub deploy: crate::limits::DeployArgs,
    /// How long history keeps every sample, e.g. 24h (at least 5m) [default: 24h].
    #[arg(long, env = "HMON_HISTORY_RAW", value_parser = parse_duration, value_name = "DURATION")]
    pub history_raw: Option<Duration>,

    /// How long history keeps 1-minute means and maxima (at least 2h) [default: 30days].
    #[arg(long = "history-1m", env = "HMON_HISTORY_1M", value_parser = parse_duration, value_name = "DURATION")]
    pub history_1m: Option<Duration>,

    /// How long history keeps 1-hour means and maxima (at least 2days) [default: 365days].
    #[arg(long = "history-1h", env = "HMON_HISTORY_1H", value_parser = parse_duration, value_name = "DURATION")]
    pub history_1h: Option<Duration>,
}

/// What `hmonitor-hub` does besides running the hub.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Print the command that adds a host to this hub. It holds the enrollment token: meant
    /// for your terminal, never for a log.
    EnrollLine,
    /// List host ids, or forget one (admin; the admin token comes from --admin-token(-file),
    /// HMON_ADMIN_TOKEN(_FILE), or <data-dir>/admin-token).
    Hosts {
        /// The hub's URL [default: http(s)://127.0.0.1:<port of --listen>].
        #[arg(long, value_name = "URL")]
        hub: Option<String>,
        #[command(subcommand)]
        action: HostsAction,
    },
    /// Alert channels: send a test message to check one works.
    Alerts {
        #[command(subcommand)]
        action: AlertsAction,
    },
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum AlertsAction {
    /// Send a test message on the channel named CHANNEL (of `[[alerts.channel]]` in --config),
    /// once, and say whether it was accepted.
    Test {
        /// The channel's name.
        channel: String,
    },
    /// List the configured channels and rules.
    List,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum HostsAction {
    /// Every known or pinned host id, with its status and pin.
    List,
    /// Forget a host: release its pinned host key (the next agent with the shared token
    /// pins the id anew) and drop its live state. Its history is kept.
    Forget {
        /// The host id.
        id: String,
    },
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("command", &self.command)
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("data_dir", &self.data_dir)
            .field("interval", &self.interval)
            .field("token", &redacted(&self.token))
            .field("viewer_allow", &self.viewer_allow)
            .field("viewer_token", &redacted(&self.viewer_token))
            .field("token_file", &self.token_file)
            .field("viewer_token_file", &self.viewer_token_file)
            .field("admin_token", &redacted(&self.admin_token))
            .field("admin_token_file", &self.admin_token_file)
            .field("credentials_directory", &self.credentials_directory)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("free_settle", &self.free_settle)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("http_head_timeout", &self.http_head_timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_hosts", &self.max_hosts)
            .field("local_agent", &self.local_agent)
            .field("local_agent_id", &self.local_agent_id)
            .field("local_agent_ip", &self.local_agent_ip)
            .field("local_agent_nvml_lib", &self.local_agent_nvml_lib)
            .field("local_agent_cmdline", &self.local_agent_cmdline)
            .field("settings_py", &self.settings_py)
            .field("log", &self.log)
            .field("deploy", &self.deploy)
            .field("history_raw", &self.history_raw)
            .field("history_1m", &self.history_1m)
            .field("history_1h", &self.history_1h)
            .finish()
    }
}
