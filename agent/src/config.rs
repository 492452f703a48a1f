//! Command-line flags and environment variables. Flags beat the environment, which beats the
//! defaults (clap's `env` fallback); `--help` names the variable behind each flag.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::push::{HubList, HubUrl, PushConfig};
use crate::server::{first_sample_within, AgentConfig, PullConfig};
use crate::state_dir::StateError;
use crate::tls::TlsError;

/// Why the flags do not make a configuration the agent can run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot use the state directory (HMON_STATE_DIR): {0}")]
    StateDir(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("token file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },
}

/// Where the agent's CLI socket is unless told otherwise (the unit's RuntimeDirectory).
pub const DEFAULT_SOCKET: &str = "/run/hmonitor/agent.sock";

/// Name of the systemd credential the agent reads its token from (`LoadCredential=token:…`).
pub const TOKEN_CREDENTIAL: &str = "token";
use hmonitor_common::allow::Allowlist;
use hmonitor_common::parse::{parse_bool, parse_duration};
use hmonitor_common::run::systemd_state_dir;
use hmonitor_sampler::{SamplerConfig, CMDLINE_MAX};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "hmonitor",
    version,
    about = "hmonitor agent: reports this host's GPUs, their processes, disks and host facts",
    long_about = "hmonitor agent: reports this host's GPUs (through NVML), the processes on them, \
                  disks and host facts. Runs as an ordinary user.\n\n\
                  Print one report:      hmonitor --once [--json]\n\
                  Serve the pull API:    GOHM_ADDR=0.0.0.0:9203 GOHM_ALLOW=10.1.2.3/32 hmonitor\n\
                  Push to a hub:         HMON_HUB=ws://hub:5000 HMON_TOKEN=... HMON_STATE_DIR=/var/lib/hmonitor hmonitor\n\n\
                  The pull API and pushing can run together."
)]
pub struct Args {
    /// Address for the pull API (gRPC HostMonitor.GetInfo), e.g. 0.0.0.0:9203.
    #[arg(long, env = "GOHM_ADDR", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Who may call the pull API: comma-separated CIDRs, e.g. 10.1.2.3/32. Checked when a
    /// connection is accepted, before anything is read from it. Default: loopback only.
    #[arg(long, env = "GOHM_ALLOW", value_name = "CIDRS")]
    pub allow: Option<Allowlist>,

    /// Hubs to push to: comma-separated ws:// or wss:// URLs, e.g. ws://hub:5000/api/agent (a URL
    /// without a path gets /api/agent). Each hub gets its own connection and retries.
    #[arg(long, env = "HMON_HUB", value_name = "URLS")]
    pub hub: Option<HubList>,

    /// Token: RequestInfo.token must match it on the pull API, and it is sent to hubs as
    /// `Authorization: Bearer <token>`; unset = no token.
    #[arg(long, env = "HMON_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// File holding the token (instead of --token, so it never shows in `ps` or a unit file)
    /// [default: the systemd credential `token`, when the unit loads one].
    #[arg(long, env = "HMON_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The socket `hmonitor free`, `wait`, `hold` and `status` talk to the running agent
    /// through; `off` = none [default: $RUNTIME_DIRECTORY/agent.sock under systemd, else
    /// /run/hmonitor/agent.sock].
    #[arg(long, env = "HMON_SOCKET", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// systemd's runtime directory (RuntimeDirectory=), read from its environment.
    #[arg(long, env = "RUNTIME_DIRECTORY", hide = true, value_name = "DIR")]
    pub runtime_directory: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,

    /// systemd's credentials directory (LoadCredential=), read from its environment.
    #[arg(long, env = "CREDENTIALS_DIRECTORY", hide = true, value_name = "DIR")]
    pub credentials_directory: Option<PathBuf>,

    /// Host id reported to readers and hubs [default: the id kept in the state directory, else
    /// the hostname].
    #[arg(long, env = "HMON_ID", value_name = "ID")]
    pub id: Option<String>,

    /// Directory for what survives restarts: the host id (file `host-id`, created from the
    /// hostname on first start), so a renamed machine stays the same host [default:
    /// $STATE_DIRECTORY, which systemd sets for StateDirectory=].
    #[arg(long, env = "HMON_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Primary IP to report [default: the address of the interface holding the default route].
    #[arg(long, env = "HMON_IP", value_name = "IP")]
    pub ip: Option<String>,

    /// How long samples a hub has not acknowledged are kept for it, to be sent as backfill when
    /// it is back (kept in the state directory across restarts), e.g. 1h, 30m; 0 = off.
    #[arg(long, env = "HMON_BACKLOG", default_value = "1h", value_parser = parse_backlog, value_name = "DURATION")]
    pub backlog: Duration,

    /// Sampling interval, e.g. 2s, 500ms, 1m.
    #[arg(long, env = "HMON_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,

    /// A sample older than this is reported stale [default: 3 × interval].
    #[arg(long, env = "HMON_STALE_AFTER", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,

    /// NVML library to load [default: libnvidia-ml.so.1 through the loader path].
    #[arg(long, env = "HMON_NVML_LIB", value_name = "PATH")]
    pub nvml_lib: Option<OsString>,

    /// Report each GPU process's command line (can hold secrets; off by default).
    #[arg(
        long,
        env = "HMON_CMDLINE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub cmdline: bool,

    /// More name parts whose values are masked in command lines, comma-separated (besides the
    /// built-in password, passwd, passphrase, secret, token, api_key, apikey, access_key,
    /// private_key, auth_key, credential, wandb_key, hf_hub_token).
    #[arg(long, env = "HMON_REDACT", value_delimiter = ',', value_name = "NAMES")]
    pub redact: Vec<String>,

    /// Print one report and exit.
    #[arg(long)]
    pub once: bool,

    /// With --once: print the report as JSON (field names from the proto).
    #[arg(long, requires = "once")]
    pub json: bool,

    /// Log filter, e.g. info, debug, hmonitor_agent=debug [default: info; warn with --once].
    #[arg(long, env = "HMON_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl Args {
    pub fn sampler_config(&self) -> SamplerConfig {
        let mut cfg = SamplerConfig::new(self.interval);
        cfg.id = self.id.clone().filter(|s| !s.is_empty());
        cfg.ip = self.ip.clone().filter(|s| !s.is_empty());
        cfg.stale_after = self.stale_after.unwrap_or(self.interval * 3);
        cfg.nvml_lib = self.nvml_lib.clone().filter(|s| !s.is_empty());
        cfg.cmdline_max = self.cmdline.then_some(CMDLINE_MAX);
        cfg.redact = self.redact.clone();
        cfg
    }

    /// What the agent library runs: the sampler, the pull API when `--listen` is set, the push
    /// client when hubs are. `systemd` is `$STATE_DIRECTORY` and `hostname` this machine's
    /// name (both read by `main`): with a state directory and no `--id`, the host id kept
    /// there (created from the hostname on first start).
    pub fn agent_config(
        &self,
        systemd: Option<OsString>,
        hostname: &str,
    ) -> Result<AgentConfig, ConfigError> {
        let state = self.state_dir(systemd);
        let token = self.token()?;
        let mut sampler = self.sampler_config();
        if sampler.id.is_none() {
            if let Some(dir) = &state {
                sampler.id = Some(crate::state_dir::host_id(dir, hostname)?);
            }
        }
        let hubs = self.hubs();
        let host_key = match (&state, hubs.is_empty()) {
            (Some(dir), false) => Some(crate::state_dir::host_key(dir)?),
            (None, false) => {
                tracing::warn!(
                    "no state directory (--state-dir, HMON_STATE_DIR or systemd's StateDirectory): \
                     this agent has no host key, so the hub cannot pin host id {:?} to it; any \
                     host with the shared token may report under this id",
                    sampler.id.as_deref().unwrap_or(hostname)
                );
                None
            }
            (_, true) => None,
        };
        let push = (!hubs.is_empty()).then(|| PushConfig {
            hubs,
            token: token.clone(),
            interval: sampler.interval,
            first_sample_within: first_sample_within(sampler.stale_after),
            tls: self.tls.client(),
            backlog: self.backlog,
            backlog_dir: state.clone(),
            host_key,
        });
        let pull = match self.listen {
            Some(listen) => Some(PullConfig {
                listen,
                allow: self.allow.clone().unwrap_or_else(Allowlist::loopback),
                token: token.clone(),
                tls: self.tls.pull_server()?,
            }),
            None => None,
        };
        Ok(AgentConfig {
            sampler,
            pull,
            push,
            socket: self.agent_socket(),
        })
    }

    /// Where the running agent listens for the CLI: `--socket` (`off` or empty: nowhere),
    /// else systemd's runtime directory, else [`DEFAULT_SOCKET`].
    pub fn agent_socket(&self) -> Option<PathBuf> {
        match &self.socket {
            Some(p) if p.as_os_str().is_empty() || p.as_os_str() == "off" => None,
            Some(p) => Some(p.clone()),
            None => Some(
                self.runtime_directory
                    .as_ref()
                    .and_then(|d| systemd_state_dir(Some(d.clone().into_os_string())))
                    .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), |d| d.join("agent.sock")),
            ),
        }
    }

    /// Where the CLI finds the running agent: `--socket`, else [`DEFAULT_SOCKET`].
    pub fn cli_socket(&self) -> PathBuf {
        self.socket
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The token: `--token`/`HMON_TOKEN`, else the `--token-file`/`HMON_TOKEN_FILE` (which must
    /// exist), else the systemd credential `token` when there is one.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = self.token.clone().filter(|t| !t.is_empty()) {
            return Ok(Some(t));
        }
        let named = self
            .token_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let (path, required) = match (named, &self.credentials_directory) {
            (Some(p), _) => (p, true),
            (None, Some(dir)) if !dir.as_os_str().is_empty() => (dir.join(TOKEN_CREDENTIAL), false),
            _ => return Ok(None),
        };
        let fail = |reason: String| ConfigError::TokenFile {
            path: path.clone(),
            reason,
        };
        match hmonitor_common::auth::read_token_file(&path).map_err(fail)? {
            Some(t) => Ok(Some(t)),
            None if required => Err(fail("no such file".to_owned())),
            None => Ok(None),
        }
    }

    /// The hubs to push to; empty = do not push.
    pub fn hubs(&self) -> Vec<HubUrl> {
        self.hub.clone().map(|l| l.0).unwrap_or_default()
    }

    /// The state directory: `--state-dir`/HMON_STATE_DIR, else systemd's `$STATE_DIRECTORY`
    /// (`systemd`, which `main` reads: nothing below it reads the environment).
    pub fn state_dir(&self, systemd: Option<OsString>) -> Option<PathBuf> {
        self.state_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(|| systemd_state_dir(systemd))
    }
}

/// A backlog span: a duration, or 0 / off for none; at most a week (memory).
pub fn parse_backlog(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(t)?;
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("{s:?} is too long: at most 7 days"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// Flags as given, with the environment ignored: the shell's `HMON_*` must not change what
    /// a test sees.
    fn parse<const N: usize>(argv: [&str; N]) -> Result<Args, clap::Error> {
        let cmd = Args::command().mut_args(|a| a.env(None::<&str>));
        cmd.try_get_matches_from(argv)
            .and_then(|m| Args::from_arg_matches(&m))
    }

    #[test]
    fn flags_beat_defaults_and_cmdline_is_off_unless_asked() {
        let a = parse(["hmonitor", "--interval", "1s", "--cmdline"]).expect("parse");
        assert_eq!(a.interval, Duration::from_secs(1));
        assert!(a.cmdline);
        assert_eq!(a.sampler_config().stale_after, Duration::from_secs(3));
        let b = parse(["hmonitor"]).expect("parse");
        assert!(!b.cmdline);
    }

    #[test]
    fn the_token_comes_from_the_flag_a_file_or_a_systemd_credential() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let f = file.to_str().expect("utf-8");
        let d = dir.path().to_str().expect("utf-8");
        let token = |argv: &[&str]| {
            let mut full = vec!["hmonitor"];
            full.extend_from_slice(argv);
            let cmd = Args::command().mut_args(|a| a.env(None::<&str>));
            let a = cmd
                .try_get_matches_from(full)
                .and_then(|m| Args::from_arg_matches(&m))
                .expect("parse");
            a.token()
        };
        assert_eq!(
            token(&["--token-file", f]).expect("file"),
            Some("from-file".into())
        );
        assert_eq!(
            token(&["--token", "flag", "--token-file", f]).expect("flag wins"),
            Some("flag".into())
        );
        // systemd's LoadCredential=token:/etc/hmonitor/token puts it in the directory.
        assert_eq!(
            token(&["--credentials-directory", d]).expect("credential"),
            Some("from-file".into())
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            token(&[
                "--credentials-directory",
                empty.path().to_str().expect("utf-8")
            ])
            .expect("no credential is fine"),
            None
        );
        let missing = dir.path().join("nope");
        let err = token(&["--token-file", missing.to_str().expect("utf-8")])
            .expect_err("a named file must exist")
            .to_string();
        assert!(
            err.contains("nope") && err.contains("no such file"),
            "{err}"
        );
        std::fs::write(&file, "two words").expect("write");
        let err = token(&["--token-file", f])
            .expect_err("bad token")
            .to_string();
        assert!(
            !err.contains("two words") && err.contains("printable"),
            "{err}"
        );
    }

    #[test]
    fn hubs_and_the_state_dir() {
        let a = parse([
            "hmonitor",
            "--hub",
            "ws://a:1,wss://b",
            "--state-dir",
            "/var/lib/hmonitor",
        ])
        .expect("parse");
        let hubs: Vec<String> = a.hubs().iter().map(ToString::to_string).collect();
        assert_eq!(hubs, ["ws://a:1/api/agent", "wss://b/api/agent"]);
        assert_eq!(
            a.state_dir(Some("/elsewhere".into())),
            Some(PathBuf::from("/var/lib/hmonitor"))
        );
        let b = parse(["hmonitor"]).expect("parse");
        assert_eq!(
            b.state_dir(Some("/var/lib/hmonitor:/var/lib/other".into())),
            Some(PathBuf::from("/var/lib/hmonitor"))
        );
        let err = parse(["hmonitor", "--hub", "ws://a:1,http://b"])
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("http://b"), "{err}");
    }

    #[test]
    fn a_bad_allowlist_is_refused_with_the_bad_part_named() {
        let err = parse(["hmonitor", "--allow", "10.0.0.0/8,nonsense"])
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("nonsense"), "{err}");
    }
}
