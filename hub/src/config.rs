//! The hub's configuration: TOML file (`--config`), environment, flags (flags beat the
//! environment, which beats the file, which beats the defaults).
//!
//! clap resolves flag-over-environment; every clap field is an `Option` without a clap default,
//! so that the file can fill what neither set, and the defaults are applied here, last.
//!
//! Tokens never reach a log: `HubConfig`, `PullTarget`, `Args` and `GeneratedToken` print them
//! redacted under `{:?}`. The one place a token is shown is the first-start instruction that
//! `main` prints to stdout from [`GeneratedToken::add_host_hint`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hmonitor_agent::allow::Allowlist;
use hmonitor_agent::config::{parse_bool, parse_duration};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::state::valid_host_id;

/// Largest agent frame accepted by default.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Bounds of `max_frame_bytes`: below 1 KiB no real report fits; above 64 MiB one agent could
/// hold a large share of the hub's memory with a single frame.
pub const MIN_MAX_FRAME: usize = 1024;
pub const MAX_MAX_FRAME: usize = 64 * 1024 * 1024;

/// A configuration file (TOML or settings.py) larger than this is refused unread: it is surely
/// not a configuration file, and parsing it would only cost memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Name of the generated enrollment token's file inside the data directory.
pub const TOKEN_FILE: &str = "enrollment-token";

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// A token file is a few dozen bytes; anything longer is not one of ours.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

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
    pub max_frame_bytes: usize,
    /// A browser that cannot take a frame within this is dropped (it may reconnect).
    pub browser_write_timeout: Duration,
    /// Also run an agent for this machine inside the hub.
    pub local_agent: bool,
    /// How long each history tier keeps its points.
    pub history: crate::history::Retention,
    /// Where the configuration came from, for the start-up log (never holds a token).
    pub sources: Vec<String>,
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
            max_frame_bytes: DEFAULT_MAX_FRAME,
            browser_write_timeout: Duration::from_secs(5),
            local_agent: false,
            history: crate::history::Retention::default(),
            sources: Vec::new(),
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
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("browser_write_timeout", &self.browser_write_timeout)
            .field("local_agent", &self.local_agent)
            .field("history", &self.history)
            .field("sources", &self.sources)
            .finish()
    }
}

fn redacted(token: &Option<String>) -> &'static str {
    match token {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

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
    /// TOML configuration file (see hub.example.toml).
    #[arg(long, env = "HMON_HUB_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address for HTTP: the page, the API, agent and browser WebSockets [default: 0.0.0.0:5000].
    #[arg(long, env = "HMON_HUB_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Address for the gRPC facade (HostMonitor.GetInfo by host id) [default: off].
    #[arg(long, env = "HMON_HUB_GRPC_LISTEN", value_name = "ADDR:PORT")]
    pub grpc_listen: Option<SocketAddr>,

    /// Directory for history and the generated enrollment token
    /// [default: $STATE_DIRECTORY (systemd), else ./data].
    #[arg(long, env = "HMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Interval assumed for agents that do not say theirs, and the poll interval of pull
    /// targets, e.g. 2s, 500ms [default: 2s].
    #[arg(long, env = "HMON_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Shared enrollment token agents present (the agent's HMON_TOKEN) [default: the one in
    /// <data-dir>/enrollment-token, generated on first start when no token is configured].
    #[arg(long, env = "HMON_TOKEN", hide_env_values = true, value_parser = parse_flag_token, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Who may open the page, the API and the gRPC facade: comma-separated CIDRs
    /// [default: everyone].
    #[arg(long, env = "HMON_VIEWER_ALLOW", value_name = "CIDRS")]
    pub viewer_allow: Option<Allowlist>,

    /// Token browsers and API clients must present [default: none needed].
    #[arg(long, env = "HMON_VIEWER_TOKEN", hide_env_values = true, value_parser = parse_flag_token, value_name = "TOKEN")]
    pub viewer_token: Option<String>,

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

    /// The seed's settings.py (`servers = {"name": "host:port", ...}`): each entry becomes a
    /// pull target.
    #[arg(long, env = "HMON_SETTINGS_PY", value_name = "PATH")]
    pub settings_py: Option<PathBuf>,

    /// Log filter, e.g. info, debug, hmonitor_hub=debug [default: info].
    #[arg(long, env = "HMON_LOG", value_name = "FILTER")]
    pub log: Option<String>,

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

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("data_dir", &self.data_dir)
            .field("interval", &self.interval)
            .field("token", &redacted(&self.token))
            .field("viewer_allow", &self.viewer_allow)
            .field("viewer_token", &redacted(&self.viewer_token))
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("local_agent", &self.local_agent)
            .field("settings_py", &self.settings_py)
            .field("log", &self.log)
            .field("history_raw", &self.history_raw)
            .field("history_1m", &self.history_1m)
            .field("history_1h", &self.history_1h)
            .finish()
    }
}

/// An enrollment token generated on this start (none was configured and none was stored).
pub struct GeneratedToken {
    pub token: String,
    /// Where it was stored (`<data_dir>/enrollment-token`, mode 0600).
    pub path: PathBuf,
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedToken")
            .field("token", &"<redacted>")
            .field("path", &self.path)
            .finish()
    }
}

impl GeneratedToken {
    /// The first-start instruction: how to point an agent at this hub. Holds the token; meant
    /// for stdout once, never for the log.
    pub fn add_host_hint(&self, listen: SocketAddr) -> String {
        let host = if listen.ip().is_unspecified() {
            "<this host>".to_owned()
        } else if listen.is_ipv6() {
            format!("[{}]", listen.ip())
        } else {
            listen.ip().to_string()
        };
        format!(
            "No token was configured, so an enrollment token was generated and stored in {}.\n\
             To add a host, run on it:\n\n    \
             HMON_HUB=ws://{host}:{port}/api/agent HMON_TOKEN={token} hmonitor\n",
            self.path.display(),
            port = listen.port(),
            token = self.token,
        )
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
    #[error("data directory {}: {source}", path.display())]
    DataDir { path: PathBuf, source: io::Error },
    #[error("enrollment token file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error("history retention: {0}")]
    History(String),
}

/// Loads the configuration: `args` (flags and environment), the `--config` file, the seed's
/// settings.py, the defaults; then makes sure agents have a token to present. Returns the
/// token generated on this start, if one was, so `main` can print how to add a host.
pub fn load(args: &Args) -> Result<(HubConfig, Option<GeneratedToken>), ConfigError> {
    // Read here, at the edge, rather than in `resolve`, so tests can pass it explicitly.
    load_with(args, std::env::var_os("STATE_DIRECTORY"))
}

/// [`load`] with systemd's `$STATE_DIRECTORY` given explicitly.
pub fn load_with(
    args: &Args,
    state_directory: Option<OsString>,
) -> Result<(HubConfig, Option<GeneratedToken>), ConfigError> {
    let file = match &args.config {
        Some(path) => Some(ConfigFile::read(path)?),
        None => None,
    };
    let mut cfg = resolve(args, file.as_ref(), state_directory)?;
    let generated = ensure_enrollment_token(&mut cfg)?;
    Ok((cfg, generated))
}

/// A parsed TOML file, with its text kept for turning byte offsets into lines.
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    file: FileConfig,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path)?;
        Self::parse(path, text)
    }

    /// Parses `text` as if read from `path` (which names it in errors and anchors relative
    /// paths in it).
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        match toml::from_str::<FileConfig>(&text) {
            Ok(file) => Ok(Self {
                path: path.to_owned(),
                text,
                file,
            }),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                Err(invalid_at(path, &text, offset, e.message().trim_end()))
            }
        }
    }

    /// "path:line:column" of a byte offset.
    fn at(&self, offset: usize) -> String {
        let (line, column) = line_column(&self.text, offset);
        format!("{}:{line}:{column}", self.path.display())
    }

    /// A path written in the file, relative to the file's directory.
    fn relative(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }
}

fn invalid_at(path: &Path, text: &str, offset: usize, message: &str) -> ConfigError {
    let (line, column) = line_column(text, offset);
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message: message.to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Read one byte past the limit instead of trusting metadata (a pipe or /proc file has none).
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            max: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(buf).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
        invalid_at(path, &text, offset, "not valid UTF-8")
    })
}

// ---------------------------------------------------------------------------------------------
// The TOML file. Values are checked while deserializing, so a bad one is reported by the toml
// crate with its position; only checks across entries (duplicates) are done afterwards, with
// the positions kept by `Spanned`.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    interval: Option<DurationValue>,
    enrollment_token: Option<Token>,
    viewer_allow: Option<AllowValue>,
    viewer_token: Option<Token>,
    max_frame_bytes: Option<FrameBytes>,
    browser_write_timeout: Option<DurationValue>,
    local_agent: Option<bool>,
    history_raw: Option<DurationValue>,
    history_1m: Option<DurationValue>,
    history_1h: Option<DurationValue>,
    #[serde(default)]
    hosts: BTreeMap<HostId, Spanned<HostEntry>>,
    /// Checked in `resolve`, not while deserializing: the toml crate places an error inside an
    /// array at the array's start, and the entry's own line is more useful.
    #[serde(default)]
    expected_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pull: Vec<Spanned<PullEntry>>,
    settings_py: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    token: Token,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullEntry {
    id: HostId,
    addr: PullAddr,
    token: Option<Token>,
}

/// A host id that passed [`valid_host_id`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HostId(String);

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = String::deserialize(d)?;
        if valid_host_id(&id) {
            Ok(Self(id))
        } else {
            Err(de::Error::custom(bad_host_id(&id)))
        }
    }
}

fn bad_host_id(id: &str) -> String {
    format!("host id {id:?} is not valid: 1 to 128 printable characters without '/' or '\"'")
}

/// A token that passed [`parse_token`].
#[derive(Debug)]
struct Token(String);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_token(&s).map(Self).map_err(de::Error::custom)
    }
}

/// `host:port` of a pull target.
#[derive(Debug)]
struct PullAddr(String);

impl<'de> Deserialize<'de> for PullAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_pull_addr(&s).map_err(de::Error::custom)?;
        Ok(Self(s))
    }
}

/// "2s", "500ms", or a number of seconds.
#[derive(Debug)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"2s\" or \"500ms\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationValue, E> {
                parse_duration(s).map(DurationValue).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DurationValue, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DurationValue, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<DurationValue, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte count, as a number or a string with KiB/MiB.
#[derive(Debug)]
struct FrameBytes(usize);

impl<'de> Deserialize<'de> for FrameBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = FrameBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, or a size such as \"1MiB\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FrameBytes, E> {
                parse_frame_bytes(s).map(FrameBytes).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FrameBytes, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FrameBytes, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// One CIDR string ("10.0.0.0/8, 192.168.1.0/24" also works) or an array of them.
#[derive(Debug)]
struct AllowValue(Allowlist);

impl<'de> Deserialize<'de> for AllowValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = AllowValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR string or an array of CIDR strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AllowValue, E> {
                s.parse::<Allowlist>()
                    .map(AllowValue)
                    .map_err(|e| E::custom(e.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AllowValue, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<String>()? {
                    parts.push(part);
                }
                self.visit_str(&parts.join(","))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers shared by flags, environment and file.
// ---------------------------------------------------------------------------------------------

/// Tokens travel in an `Authorization` header: printable ASCII without spaces, not empty.
pub fn parse_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a token may not be empty".to_owned());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        // Do not echo the value: it is a secret, maybe mistyped by one character.
        return Err("a token must be printable ASCII without spaces".to_owned());
    }
    Ok(s.to_owned())
}

/// [`parse_token`], except that an empty value means "not set" (as the agent reads an empty
/// HMON_TOKEN): environment files often carry `HMON_TOKEN=` as a placeholder.
fn parse_flag_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        parse_token(s)
    }
}

/// "1048576", "512KiB", "1MiB" (also "K"/"KB"/"M"/"MB", binary as well), within
/// [`MIN_MAX_FRAME`]..=[`MAX_MAX_FRAME`].
pub fn parse_frame_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?} is not a size (e.g. 1048576, 512KiB, 1MiB)")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512KiB, 1MiB)"))?;
    let bytes = n.saturating_mul(mult);
    if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&bytes) {
        return Err(format!(
            "max_frame_bytes {s:?} is out of range: 1 KiB to 64 MiB"
        ));
    }
    Ok(bytes)
}

/// `host:port` (a name, an IPv4 address or a bracketed IPv6 address, and a port). Names are
/// not resolved here: a target whose name does not resolve yet is shown down, not refused.
pub fn check_pull_addr(addr: &str) -> Result<(), String> {
    let bad = || format!("{addr:?} is not host:port (e.g. 10.0.0.7:9203)");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

// ---------------------------------------------------------------------------------------------
// The seed's settings.py.
// ---------------------------------------------------------------------------------------------

/// A settings.py that does not have the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct SettingsPyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One `"name": "host:port"` entry of settings.py, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsPyEntry {
    pub target: PullTarget,
    pub line: usize,
}

/// Parses the seed's `settings.py`: blank lines, `#` comments and exactly one assignment
/// `servers = {"name": "host:port", ...}` (single or double quotes, over several lines,
/// trailing comma allowed). Nothing is executed; anything else is refused with its line, so a
/// file that relies on Python (variables, f-strings, imports) fails loudly instead of being
/// half-read.
pub fn parse_settings_py(text: &str) -> Result<Vec<SettingsPyEntry>, SettingsPyError> {
    let tokens = py_tokens(text)?;
    let mut it = tokens.into_iter().peekable();
    let mut expect = |want: &PyTok, what: &str| -> Result<(), SettingsPyError> {
        match it.next() {
            Some(t) if t.tok == *want => Ok(()),
            Some(t) => Err(t.err(format!("expected {what}, found {}", t.tok))),
            None => Err(SettingsPyError {
                line: text.lines().count().max(1),
                column: 1,
                message: format!("expected {what}, found the end of the file"),
            }),
        }
    };
    expect(
        &PyTok::Ident("servers".into()),
        "`servers = {...}` (the only statement understood)",
    )?;
    expect(&PyTok::Eq, "`=`")?;
    expect(&PyTok::Open, "`{`")?;

    let mut entries: Vec<SettingsPyEntry> = Vec::new();
    let eof = |message: &str| SettingsPyError {
        line: text.lines().count().max(1),
        column: 1,
        message: message.to_owned(),
    };
    loop {
        let t = it
            .next()
            .ok_or_else(|| eof("the `servers` dict is not closed with `}`"))?;
        let (name, line, column) = match t.tok {
            PyTok::Close => break,
            PyTok::Str(s) => (s, t.line, t.column),
            other => {
                return Err(t_err(
                    t.line,
                    t.column,
                    format!("expected a quoted host name or `}}`, found {other}"),
                ))
            }
        };
        let colon = it
            .next()
            .ok_or_else(|| eof("expected `:`, found the end of the file"))?;
        if colon.tok != PyTok::Colon {
            return Err(colon.err(format!("expected `:`, found {}", colon.tok)));
        }
        let v = it
            .next()
            .ok_or_else(|| eof("expected an address, found the end of the file"))?;
        let addr = match v.tok {
            PyTok::Str(s) => s,
            other => {
                return Err(t_err(
                    v.line,
                    v.column,
                    format!("expected a quoted \"host:port\", found {other}"),
                ))
            }
        };
        if !valid_host_id(&name) {
            return Err(t_err(line, column, bad_host_id(&name)));
        }
        check_pull_addr(&addr).map_err(|m| t_err(v.line, v.column, m))?;
        if let Some(first) = entries.iter().find(|e| e.target.id == name) {
            return Err(t_err(
                line,
                column,
                format!(
                    "host name {name:?} is listed twice (first on line {})",
                    first.line
                ),
            ));
        }
        entries.push(SettingsPyEntry {
            target: PullTarget {
                id: name,
                addr,
                token: None,
            },
            line,
        });
        let sep = it
            .next()
            .ok_or_else(|| eof("the `servers` dict is not closed with `}`"))?;
        match &sep.tok {
            PyTok::Comma => {}
            PyTok::Close => break,
            other => return Err(sep.err(format!("expected `,` or `}}`, found {other}"))),
        }
    }
    if let Some(t) = it.next() {
        return Err(t.err(format!(
            "unexpected {} after the `servers` dict (only `servers = {{...}}` is understood)",
            t.tok
        )));
    }
    Ok(entries)
}

fn t_err(line: usize, column: usize, message: String) -> SettingsPyError {
    SettingsPyError {
        line,
        column,
        message,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PyTok {
    Ident(String),
    Str(String),
    Eq,
    Open,
    Close,
    Colon,
    Comma,
    /// Anything else (a number, a bracket, an operator): always an error, reported by the parser
    /// where it knows what was expected instead.
    Other(String),
}

impl fmt::Display for PyTok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyTok::Ident(s) => write!(f, "`{s}`"),
            PyTok::Str(s) => write!(f, "the string {s:?}"),
            PyTok::Eq => f.write_str("`=`"),
            PyTok::Open => f.write_str("`{`"),
            PyTok::Close => f.write_str("`}`"),
            PyTok::Colon => f.write_str("`:`"),
            PyTok::Comma => f.write_str("`,`"),
            PyTok::Other(s) => write!(f, "`{s}`"),
        }
    }
}

struct PyToken {
    tok: PyTok,
    line: usize,
    column: usize,
}

impl PyToken {
    fn err(&self, message: String) -> SettingsPyError {
        t_err(self.line, self.column, message)
    }
}

fn py_tokens(text: &str) -> Result<Vec<PyToken>, SettingsPyError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1usize, 1usize);
    while let Some(c) = chars.next() {
        let (tl, tc) = (line, column);
        column += 1;
        let simple = match c {
            '\n' => {
                line += 1;
                column = 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
                continue;
            }
            '=' => PyTok::Eq,
            '{' => PyTok::Open,
            '}' => PyTok::Close,
            ':' => PyTok::Colon,
            ',' => PyTok::Comma,
            '"' | '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => {
                            column += 1;
                            break;
                        }
                        Some('\\') => {
                            return Err(t_err(
                                line,
                                column,
                                "backslash escapes are not supported in settings.py strings".into(),
                            ))
                        }
                        Some('\n') | None => {
                            return Err(t_err(tl, tc, "string not closed on its line".into()))
                        }
                        Some(ch) => {
                            column += 1;
                            s.push(ch);
                        }
                    }
                }
                if s.is_empty() && chars.peek() == Some(&c) {
                    return Err(t_err(
                        tl,
                        tc,
                        "triple-quoted strings are not supported".into(),
                    ));
                }
                PyTok::Str(s)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        s.push(n);
                        chars.next();
                        column += 1;
                    } else {
                        break;
                    }
                }
                PyTok::Ident(s)
            }
            c if c.is_ascii_alphanumeric() || c == '.' => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '.' || n == '_' {
                        s.push(n);
                        chars.next();
                        column += 1;
                    } else {
                        break;
                    }
                }
                PyTok::Other(s)
            }
            other => PyTok::Other(other.to_string()),
        };
        out.push(PyToken {
            tok: simple,
            line: tl,
            column: tc,
        });
    }
    Ok(out)
}

fn read_settings_py(path: &Path) -> Result<Vec<SettingsPyEntry>, ConfigError> {
    let text = read_bounded(path)?;
    parse_settings_py(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

// ---------------------------------------------------------------------------------------------
// Merging.
// ---------------------------------------------------------------------------------------------

/// Merges flags/environment (`args`), the file and the defaults; reads settings.py. Touches no
/// token file (see [`ensure_enrollment_token`]).
pub fn resolve(
    args: &Args,
    file: Option<&ConfigFile>,
    state_directory: Option<OsString>,
) -> Result<HubConfig, ConfigError> {
    let empty = FileConfig::default();
    let f = file.map_or(&empty, |c| &c.file);
    let d = HubConfig::default();
    let mut sources = Vec::new();
    if let Some(c) = file {
        sources.push(format!("config file {}", c.path.display()));
    }

    // systemd's StateDirectory= may list several directories, separated by ':'.
    let state_dir = state_directory
        .and_then(|s| {
            s.to_str()
                .map(|s| s.split(':').next().unwrap_or_default().to_owned())
        })
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.and_then(|c| f.data_dir.as_deref().map(|p| c.relative(p))))
        .or(state_dir)
        .unwrap_or(d.data_dir);

    let flag_token = args.token.clone().filter(|t| !t.is_empty());
    let enrollment_token = flag_token
        .clone()
        .or_else(|| f.enrollment_token.as_ref().map(|t| t.0.clone()));
    if flag_token.is_some() {
        sources.push("enrollment token: --token / HMON_TOKEN".to_owned());
    } else if enrollment_token.is_some() {
        sources.push("enrollment token: config file".to_owned());
    }

    // Host ids, each with where it was configured, to refuse an id that two sources would
    // fight over.
    let host_tokens: BTreeMap<String, String> = f
        .hosts
        .iter()
        .map(|(id, e)| (id.0.clone(), e.get_ref().token.0.clone()))
        .collect();
    let mut pushed_at: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = file {
        for (id, e) in &f.hosts {
            pushed_at.insert(id.0.clone(), c.at(e.span().start));
        }
    }

    let mut expected: BTreeSet<String> = host_tokens.keys().cloned().collect();
    if let Some(c) = file {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &f.expected_hosts {
            let name = id.get_ref().as_str();
            if !valid_host_id(name) {
                return Err(invalid_at(
                    &c.path,
                    &c.text,
                    id.span().start,
                    &bad_host_id(name),
                ));
            }
            if let Some(first) = seen.insert(name, id.span().start) {
                return Err(ConfigError::Duplicate {
                    id: name.to_owned(),
                    first: c.at(first),
                    second: c.at(id.span().start),
                });
            }
            expected.insert(name.to_owned());
        }
    }

    // Pull targets: [[pull]] entries, then settings.py's.
    let mut pull_targets: Vec<PullTarget> = Vec::new();
    let mut pulled_at: BTreeMap<String, String> = BTreeMap::new();
    let mut add_pull = |target: PullTarget, at: String| -> Result<(), ConfigError> {
        if let Some(first) = pulled_at
            .get(&target.id)
            .or_else(|| pushed_at.get(&target.id))
        {
            return Err(ConfigError::Duplicate {
                id: target.id,
                first: first.clone(),
                second: at,
            });
        }
        pulled_at.insert(target.id.clone(), at);
        pull_targets.push(target);
        Ok(())
    };
    if let Some(c) = file {
        for p in &f.pull {
            let e = p.get_ref();
            add_pull(
                PullTarget {
                    id: e.id.0.clone(),
                    addr: e.addr.0.clone(),
                    token: e.token.as_ref().map(|t| t.0.clone()),
                },
                c.at(p.span().start),
            )?;
        }
    }
    let settings_py = args
        .settings_py
        .clone()
        .or_else(|| file.and_then(|c| f.settings_py.as_deref().map(|p| c.relative(p))));
    if let Some(path) = settings_py {
        let entries = read_settings_py(&path)?;
        sources.push(format!(
            "settings.py {} ({} pull target{})",
            path.display(),
            entries.len(),
            if entries.len() == 1 { "" } else { "s" }
        ));
        for e in entries {
            let at = format!("{}:{}", path.display(), e.line);
            add_pull(e.target, at)?;
        }
    }
    expected.extend(pull_targets.iter().map(|t| t.id.clone()));

    let history = crate::history::Retention {
        raw: args
            .history_raw
            .or(f.history_raw.as_ref().map(|v| v.0))
            .unwrap_or(d.history.raw),
        minute: args
            .history_1m
            .or(f.history_1m.as_ref().map(|v| v.0))
            .unwrap_or(d.history.minute),
        hour: args
            .history_1h
            .or(f.history_1h.as_ref().map(|v| v.0))
            .unwrap_or(d.history.hour),
    };
    history.check().map_err(ConfigError::History)?;

    Ok(HubConfig {
        listen: args.listen.or(f.listen).unwrap_or(d.listen),
        grpc_listen: args.grpc_listen.or(f.grpc_listen),
        data_dir,
        interval: args
            .interval
            .or(f.interval.as_ref().map(|v| v.0))
            .unwrap_or(d.interval),
        enrollment_token,
        host_tokens,
        expected_hosts: expected.into_iter().collect(),
        pull_targets,
        viewer_allow: args
            .viewer_allow
            .clone()
            .or_else(|| f.viewer_allow.as_ref().map(|a| a.0.clone()))
            .unwrap_or(d.viewer_allow),
        viewer_token: args
            .viewer_token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| f.viewer_token.as_ref().map(|t| t.0.clone())),
        max_frame_bytes: args
            .max_frame_bytes
            .or(f.max_frame_bytes.as_ref().map(|b| b.0))
            .unwrap_or(d.max_frame_bytes),
        browser_write_timeout: f
            .browser_write_timeout
            .as_ref()
            .map_or(d.browser_write_timeout, |v| v.0),
        local_agent: args.local_agent.or(f.local_agent).unwrap_or(d.local_agent),
        history,
        sources,
    })
}

// ---------------------------------------------------------------------------------------------
// The generated enrollment token.
// ---------------------------------------------------------------------------------------------

/// Agents must authenticate (secure by default): when no token of any kind is configured, use
/// the one stored in `<data_dir>/enrollment-token`, or generate and store one. Returns the
/// token when it was generated now.
pub fn ensure_enrollment_token(cfg: &mut HubConfig) -> Result<Option<GeneratedToken>, ConfigError> {
    if cfg.enrollment_token.is_some() || !cfg.host_tokens.is_empty() {
        return Ok(None);
    }
    let path = cfg.data_dir.join(TOKEN_FILE);
    if let Some(token) = read_token_file(&path)? {
        cfg.enrollment_token = Some(token);
        cfg.sources
            .push(format!("enrollment token: {}", path.display()));
        return Ok(None);
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ConfigError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let token = random_token()?;
    let file_err = |e: io::Error| ConfigError::TokenFile {
        path: path.clone(),
        reason: e.to_string(),
    };
    // create_new: two hubs started at once on one data directory must not each write a token;
    // the loser reads the winner's.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return match read_token_file(&path)? {
                Some(t) => {
                    cfg.enrollment_token = Some(t);
                    cfg.sources
                        .push(format!("enrollment token: {}", path.display()));
                    Ok(None)
                }
                None => Err(ConfigError::TokenFile {
                    path,
                    reason: "vanished while being read".into(),
                }),
            };
        }
        Err(e) => return Err(file_err(e)),
    };
    if let Err(e) = file
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
    {
        // A half-written token file would be reused on the next start: remove it.
        let _ = std::fs::remove_file(&path);
        return Err(file_err(e));
    }
    cfg.enrollment_token = Some(token.clone());
    cfg.sources.push(format!(
        "enrollment token: generated now, stored in {}",
        path.display()
    ));
    Ok(Some(GeneratedToken { token, path }))
}

/// The stored token; `None` when there is no file.
fn read_token_file(path: &Path) -> Result<Option<String>, ConfigError> {
    let fail = |reason: String| ConfigError::TokenFile {
        path: path.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let mode = file
        .metadata()
        .map_err(|e| fail(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} is readable or writable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let mut buf = String::new();
    file.take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut buf)
        .map_err(|e| fail(e.to_string()))?;
    let token = buf.trim();
    if token.is_empty() {
        return Err(fail(
            "is empty; delete it to have a new token generated".into(),
        ));
    }
    parse_token(token).map(Some).map_err(fail)
}

fn random_token() -> Result<String, ConfigError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ConfigError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("/etc/hmonitor/hub.toml"), text.to_owned()).expect("parses")
    }

    fn file_err(text: &str) -> (usize, String) {
        match ConfigFile::parse(Path::new("hub.toml"), text.to_owned()) {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    fn args(argv: &[&str]) -> Args {
        let mut full = vec!["hmonitor-hub"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).expect("flags parse")
    }

    const FULL: &str = r#"
listen = "127.0.0.1:5001"
grpc_listen = "127.0.0.1:5002"
data_dir = "state"
interval = "500ms"
enrollment_token = "enroll-1"
viewer_allow = ["10.0.0.0/8", "192.168.1.7"]
viewer_token = "view-1"
max_frame_bytes = "2MiB"
browser_write_timeout = "7s"
local_agent = true
history_raw = "2h"
history_1m = "10days"
history_1h = "400days"
expected_hosts = ["gpu1", "gpu2"]
settings_py = "settings.py"

[hosts.gpu1]
token = "tok-gpu1"

[hosts."gpu3.lab"]
token = "tok-gpu3"

[[pull]]
id = "node7"
addr = "10.0.0.7:9203"
token = "pull-7"

[[pull]]
id = "node8"
addr = "[::1]:9203"
"#;

    #[test]
    fn history_retention_comes_from_flags_or_file_and_bad_spans_are_refused() {
        let d = resolve(&Args::default(), None, None).expect("defaults");
        assert_eq!(d.history, crate::history::Retention::default());
        let a = args(&["--history-raw", "6h", "--history-1m", "7days"]);
        let cfg = resolve(&a, Some(&file("history_raw = \"1h\"\n")), None).expect("ok");
        assert_eq!(cfg.history.raw, Duration::from_secs(6 * 3600));
        assert_eq!(cfg.history.minute, Duration::from_secs(7 * 86400));
        let e = resolve(&args(&["--history-raw", "1m"]), None, None)
            .expect_err("too short")
            .to_string();
        assert!(e.contains("history_raw") && e.contains("5m"), "{e}");
        let e = resolve(
            &args(&["--history-1h", "3days", "--history-1m", "5days"]),
            None,
            None,
        )
        .expect_err("coarser shorter")
        .to_string();
        assert!(e.contains("history_1h"), "{e}");
        let (line, msg) = file_err("history_raw = \"soon\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("soon"), "{msg}");
    }

    #[test]
    fn every_toml_key_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("settings.py"),
            "servers = {'seed1': '127.0.0.1:9203'}\n",
        )
        .expect("write");
        let path = dir.path().join("hub.toml");
        let c = ConfigFile::parse(&path, FULL.to_owned()).expect("parses");
        let cfg = resolve(&Args::default(), Some(&c), None).expect("resolves");
        assert_eq!(cfg.listen, "127.0.0.1:5001".parse().expect("addr"));
        assert_eq!(
            cfg.grpc_listen,
            Some("127.0.0.1:5002".parse().expect("addr"))
        );
        // Relative paths in the file are relative to the file.
        assert_eq!(cfg.data_dir, dir.path().join("state"));
        assert_eq!(cfg.interval, Duration::from_millis(500));
        assert_eq!(cfg.enrollment_token.as_deref(), Some("enroll-1"));
        assert_eq!(cfg.viewer_allow.to_string(), "10.0.0.0/8,192.168.1.7/32");
        assert_eq!(cfg.viewer_token.as_deref(), Some("view-1"));
        assert_eq!(cfg.max_frame_bytes, 2 * 1024 * 1024);
        assert_eq!(cfg.browser_write_timeout, Duration::from_secs(7));
        assert!(cfg.local_agent);
        assert_eq!(
            cfg.history,
            crate::history::Retention {
                raw: Duration::from_secs(2 * 3600),
                minute: Duration::from_secs(10 * 86400),
                hour: Duration::from_secs(400 * 86400),
            }
        );
        assert_eq!(
            cfg.host_tokens.get("gpu1").map(String::as_str),
            Some("tok-gpu1")
        );
        assert_eq!(
            cfg.host_tokens.get("gpu3.lab").map(String::as_str),
            Some("tok-gpu3")
        );
        assert_eq!(
            cfg.pull_targets,
            vec![
                PullTarget {
                    id: "node7".into(),
                    addr: "10.0.0.7:9203".into(),
                    token: Some("pull-7".into())
                },
                PullTarget {
                    id: "node8".into(),
                    addr: "[::1]:9203".into(),
                    token: None
                },
                PullTarget {
                    id: "seed1".into(),
                    addr: "127.0.0.1:9203".into(),
                    token: None
                },
            ]
        );
        // Every host in [hosts] and every pull target is expected, each once.
        assert_eq!(
            cfg.expected_hosts,
            ["gpu1", "gpu2", "gpu3.lab", "node7", "node8", "seed1"]
        );
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let c = file("listen = \"127.0.0.1:6000\"\ninterval = 3\nlocal_agent = true\nmax_frame_bytes = 4096\n");
        let flagged = args(&[
            "--listen",
            "127.0.0.1:7000",
            "--interval",
            "1s",
            "--local-agent",
            "false",
            "--max-frame-bytes",
            "8KiB",
        ]);
        let cfg = resolve(&flagged, Some(&c), None).expect("resolves");
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.interval, Duration::from_secs(1));
        assert!(!cfg.local_agent);
        assert_eq!(cfg.max_frame_bytes, 8192);

        let cfg = resolve(&Args::default(), Some(&c), None).expect("resolves");
        assert_eq!(cfg.listen.port(), 6000);
        assert_eq!(cfg.interval, Duration::from_secs(3));
        assert!(cfg.local_agent);
        assert_eq!(cfg.max_frame_bytes, 4096);

        let cfg = resolve(&Args::default(), None, None).expect("resolves");
        let d = HubConfig::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.interval, Duration::from_secs(2));
        assert_eq!(cfg.max_frame_bytes, DEFAULT_MAX_FRAME);
        assert_eq!(cfg.viewer_allow, Allowlist::everyone());
        assert_eq!(cfg.grpc_listen, None);
        assert_eq!(cfg.data_dir, PathBuf::from("data"));
        assert!(!cfg.local_agent);
    }

    #[test]
    fn an_empty_token_flag_means_unset() {
        let a = args(&["--token", "", "--viewer-token", ""]);
        let c = file("enrollment_token = \"from-file\"\n");
        let cfg = resolve(&a, Some(&c), None).expect("resolves");
        assert_eq!(cfg.enrollment_token.as_deref(), Some("from-file"));
        assert_eq!(cfg.viewer_token, None);
        assert!(Args::try_parse_from(["hmonitor-hub", "--token", "a b"]).is_err());
    }

    #[test]
    fn a_bare_flag_turns_the_local_agent_on() {
        assert_eq!(args(&["--local-agent"]).local_agent, Some(true));
        assert_eq!(args(&["--local-agent", "0"]).local_agent, Some(false));
    }

    #[test]
    fn data_dir_is_flag_then_file_then_state_directory_then_data() {
        let state = Some(OsString::from("/var/lib/hmonitor-hub:/var/lib/other"));
        let c = file("data_dir = \"/srv/hub\"\n");
        let flagged = args(&["--data-dir", "/tmp/x"]);
        assert_eq!(
            resolve(&flagged, Some(&c), state.clone())
                .expect("ok")
                .data_dir,
            PathBuf::from("/tmp/x")
        );
        assert_eq!(
            resolve(&Args::default(), Some(&c), state.clone())
                .expect("ok")
                .data_dir,
            PathBuf::from("/srv/hub")
        );
        assert_eq!(
            resolve(&Args::default(), None, state).expect("ok").data_dir,
            PathBuf::from("/var/lib/hmonitor-hub")
        );
    }

    #[test]
    fn help_names_every_environment_variable() {
        let help = Args::command().render_long_help().to_string();
        for var in [
            "HMON_HUB_CONFIG",
            "HMON_HUB_LISTEN",
            "HMON_HUB_GRPC_LISTEN",
            "HMON_DATA_DIR",
            "HMON_INTERVAL",
            "HMON_TOKEN",
            "HMON_VIEWER_ALLOW",
            "HMON_VIEWER_TOKEN",
            "HMON_MAX_FRAME_BYTES",
            "HMON_LOCAL_AGENT",
            "HMON_SETTINGS_PY",
            "HMON_LOG",
            "HMON_HISTORY_RAW",
            "HMON_HISTORY_1M",
            "HMON_HISTORY_1H",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
        Args::command().debug_assert();
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let (line, msg) =
            file_err("listen = \"0.0.0.0:5000\"\n\n# typo below\nintervall = \"2s\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("intervall"), "{msg}");
        let (line, msg) = file_err("[[pull]]\nid = \"a\"\naddr = \"h:1\"\nport = 3\n");
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("port"), "{msg}");
        // The whole error reads file:line:column: reason.
        let err = ConfigFile::parse(Path::new("hub.toml"), "x = 1\n".into())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("hub.toml:1:1: unknown field"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line_and_the_value() {
        let (line, msg) =
            file_err("listen = \"0.0.0.0:5000\"\nviewer_allow = [\"10.0.0.0/8\", \"10.0.0/33\"]\n");
        assert_eq!(line, 2);
        assert!(msg.contains("10.0.0/33"), "{msg}");
        let (line, msg) = file_err("\nviewer_allow = \"bogus\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("bogus"), "{msg}");
        let (line, msg) = file_err("\n\nmax_frame_bytes = 100\n");
        assert_eq!(line, 3);
        assert!(msg.contains("1 KiB to 64 MiB"), "{msg}");
        let (line, msg) = file_err("max_frame_bytes = \"65MiB\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("out of range"), "{msg}");
        let (line, msg) = file_err("interval = \"fast\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("fast"), "{msg}");
        let bad_id = file("expected_hosts = [\"ok\",\n \"a/b\"]\n");
        match resolve(&Args::default(), Some(&bad_id), None) {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 2);
                assert!(message.contains("a/b"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let (line, _) = file_err("[[pull]]\nid = \"n\"\naddr = \"no-port\"\n");
        assert_eq!(line, 3);
        let (line, _) = file_err("[hosts.a]\ntoken = \"has space\"\n");
        assert_eq!(line, 2);
        let (line, msg) = file_err("[hosts.\"a/b\"]\ntoken = \"t\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("a/b"), "{msg}");
        let (line, _) = file_err("listen = \"nonsense\"\n");
        assert_eq!(line, 1);
        let (line, _) = file_err("enrollment_token = \"\"\n");
        assert_eq!(line, 1);
    }

    #[test]
    fn a_bad_flag_value_names_the_value() {
        let err = Args::try_parse_from(["hmonitor-hub", "--viewer-allow", "10.0.0.0/8,nope"])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err = Args::try_parse_from(["hmonitor-hub", "--max-frame-bytes", "10"])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("1 KiB to 64 MiB"), "{err}");
    }

    #[test]
    fn one_host_id_configured_twice_is_refused_naming_both_places() {
        let c = file("[hosts.a]\ntoken = \"t\"\n\n[[pull]]\nid = \"a\"\naddr = \"h:1\"\n");
        match resolve(&Args::default(), Some(&c), None) {
            Err(ConfigError::Duplicate { id, first, second }) => {
                assert_eq!(id, "a");
                assert!(first.contains("hub.toml:"), "{first}");
                assert!(second.contains("hub.toml:4"), "{second}");
            }
            other => panic!("{other:?}"),
        }
        let c =
            file("[[pull]]\nid = \"a\"\naddr = \"h:1\"\n[[pull]]\nid = \"a\"\naddr = \"h:2\"\n");
        assert!(matches!(
            resolve(&Args::default(), Some(&c), None),
            Err(ConfigError::Duplicate { .. })
        ));
        let c = file("expected_hosts = [\"a\", \"b\", \"a\"]\n");
        assert!(matches!(
            resolve(&Args::default(), Some(&c), None),
            Err(ConfigError::Duplicate { .. })
        ));
        // settings.py against [[pull]].
        let dir = tempfile::tempdir().expect("tempdir");
        let py = dir.path().join("settings.py");
        std::fs::write(&py, "servers = {\n  'x': 'h:1',\n  'a': 'h:2',\n}\n").expect("write");
        let c = file("[[pull]]\nid = \"a\"\naddr = \"h:1\"\n");
        let flagged = Args {
            settings_py: Some(py.clone()),
            ..Default::default()
        };
        match resolve(&flagged, Some(&c), None) {
            Err(ConfigError::Duplicate { second, .. }) => {
                assert_eq!(second, format!("{}:3", py.display()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_py_the_seeds_own_example() {
        let e = parse_settings_py("servers = {\"local\": \"127.0.0.1:9203\"}\n").expect("parses");
        assert_eq!(
            e,
            vec![SettingsPyEntry {
                target: PullTarget {
                    id: "local".into(),
                    addr: "127.0.0.1:9203".into(),
                    token: None
                },
                line: 1
            }]
        );
    }

    #[test]
    fn settings_py_over_several_lines_with_comments_and_both_quotes() {
        let text = "# lab servers\n\
                    servers = {  # all of them\n\
                    \x20   'gpu1': '10.0.0.1:9203',   # rack A\n\
                    \n\
                    \x20   \"gpu2\" : \"gpu2.lab:9203\",\n\
                    \x20   # 'gpu3': '10.0.0.3:9203',\n\
                    \x20   'v6': '[::1]:9203',\n\
                    }\n\
                    # end\n";
        let e = parse_settings_py(text).expect("parses");
        let got: Vec<(&str, &str, usize)> = e
            .iter()
            .map(|e| (e.target.id.as_str(), e.target.addr.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("gpu1", "10.0.0.1:9203", 3),
                ("gpu2", "gpu2.lab:9203", 5),
                ("v6", "[::1]:9203", 7)
            ]
        );
        assert_eq!(parse_settings_py("servers = {}").expect("empty").len(), 0);
    }

    #[test]
    fn settings_py_refuses_anything_else_naming_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "servers = {\n  'a': '10.0.0.1:9203',\n  'b': 10.0.0.2,\n}\n",
                3,
                "found `10.0.0.2`",
            ),
            ("import os\nservers = {}\n", 1, "servers"),
            (
                "servers = {'a': 'h:1'}\nport = 5000\n",
                2,
                "after the `servers` dict",
            ),
            ("servers = {\n'a': 'h:1'\n'b': 'h:2'}\n", 3, "expected `,`"),
            ("servers = {\n'a': 'nohostport'}\n", 2, "host:port"),
            ("servers = {\n'a': 'h:1',\n'a': 'h:2'}\n", 3, "twice"),
            ("servers = {\n'a/b': 'h:1'}\n", 2, "not valid"),
            ("servers = {\n'a': 'h:1\n}\n", 2, "not closed"),
            ("servers = {\n'a': \"h:1\\n\"}\n", 2, "backslash"),
            ("servers = {\n'a': 'h:1',\n", 2, "not closed"),
            ("servers = dict(a='h:1')\n", 1, "`{`"),
            ("servers = {f'a': 'h:1'}\n", 1, "expected a quoted"),
        ];
        for (text, line, needle) in cases {
            let err = parse_settings_py(text).expect_err(text);
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_bad_settings_py_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let py = dir.path().join("settings.py");
        std::fs::write(&py, "servers = {\n  'a': 'h:1',\n  oops\n}\n").expect("write");
        let a = Args {
            settings_py: Some(py.clone()),
            ..Default::default()
        };
        let err = resolve(&a, None, None).expect_err("refused").to_string();
        assert!(err.starts_with(&format!("{}:3:3:", py.display())), "{err}");
    }

    #[test]
    fn an_oversized_file_is_refused_unparsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("hub.toml");
        std::fs::write(&p, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).expect("write");
        assert!(matches!(
            ConfigFile::read(&p),
            Err(ConfigError::TooLarge { .. })
        ));
        let missing = ConfigFile::read(&dir.path().join("nope.toml"))
            .err()
            .expect("missing")
            .to_string();
        assert!(missing.contains("nope.toml"), "{missing}");
    }

    #[test]
    fn a_token_is_generated_once_stored_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Args {
            data_dir: Some(dir.path().join("sub")),
            ..Default::default()
        };
        let (cfg, generated) = load_with(&a, None).expect("first start");
        let generated = generated.expect("generated on first start");
        assert_eq!(generated.token.len(), 2 * TOKEN_BYTES);
        assert!(generated.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            cfg.enrollment_token.as_deref(),
            Some(generated.token.as_str())
        );
        let path = dir.path().join("sub").join(TOKEN_FILE);
        assert_eq!(generated.path, path);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let hint = generated.add_host_hint("0.0.0.0:5000".parse().expect("addr"));
        assert!(
            hint.contains(&format!(
                "HMON_HUB=ws://<this host>:5000/api/agent HMON_TOKEN={} hmonitor",
                generated.token
            )),
            "{hint}"
        );
        // Nothing prints the token by accident.
        assert!(!format!("{cfg:?} {generated:?}").contains(&generated.token));
        assert!(!cfg.sources.join(" ").contains(&generated.token));

        let (again, none) = load_with(&a, None).expect("second start");
        assert!(none.is_none());
        assert_eq!(again.enrollment_token, cfg.enrollment_token);

        // Too open: still used (a warning is logged).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (open, none) = load_with(&a, None).expect("third start");
        assert!(none.is_none());
        assert_eq!(open.enrollment_token, cfg.enrollment_token);

        // An empty file is an error, not a silently regenerated token.
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            load_with(&a, None),
            Err(ConfigError::TokenFile { .. })
        ));
    }

    #[test]
    fn no_token_is_generated_when_one_is_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with_enrollment = Args {
            data_dir: Some(dir.path().to_owned()),
            token: Some("configured".into()),
            ..Default::default()
        };
        let (cfg, g) = load_with(&with_enrollment, None).expect("loads");
        assert!(g.is_none());
        assert_eq!(cfg.enrollment_token.as_deref(), Some("configured"));
        assert!(!dir.path().join(TOKEN_FILE).exists());

        let toml = dir.path().join("hub.toml");
        std::fs::write(&toml, "[hosts.a]\ntoken = \"only-a\"\n").expect("write");
        let with_host = Args {
            data_dir: Some(dir.path().to_owned()),
            config: Some(toml),
            ..Default::default()
        };
        let (cfg, g) = load_with(&with_host, None).expect("loads");
        assert!(g.is_none());
        assert_eq!(cfg.enrollment_token, None);
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let a = args(&["--token", "sekrit-enroll", "--viewer-token", "sekrit-view"]);
        assert!(!format!("{a:?}").contains("sekrit"));
        let c = file("[hosts.a]\ntoken = \"sekrit-a\"\n[[pull]]\nid = \"p\"\naddr = \"h:1\"\ntoken = \"sekrit-p\"\n");
        let cfg = resolve(&a, Some(&c), None).expect("resolves");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("\"a\""), "{shown}");
    }

    #[test]
    fn the_example_file_parses_as_is_and_with_every_setting_uncommented() {
        let text = include_str!("../hub.example.toml");
        let c = ConfigFile::parse(Path::new("/etc/hmonitor/hub.toml"), text.to_owned())
            .expect("example parses");
        resolve(&Args::default(), Some(&c), None).expect("example resolves");
        // Uncomment the commented-out settings (not the prose): `# key = ...` and `# [table]`.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = ConfigFile::parse(Path::new("/nonexistent/hub.toml"), uncommented)
            .expect("uncommented example parses");
        assert!(c.file.settings_py.is_some());
        assert_eq!(c.file.pull.len(), 1);
        assert_eq!(c.file.hosts.len(), 1);
        assert!(c.file.enrollment_token.is_some() && c.file.viewer_token.is_some());
        assert!(c.file.grpc_listen.is_some() && c.file.data_dir.is_some());
        assert_eq!(c.file.expected_hosts.len(), 2);
    }

    #[test]
    fn sizes_and_addresses() {
        assert_eq!(parse_frame_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_frame_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_frame_bytes("64 MiB"), Ok(64 << 20));
        assert!(parse_frame_bytes("1023").is_err());
        assert!(parse_frame_bytes("1GiB").is_err());
        assert!(parse_frame_bytes("lots").is_err());
        assert!(check_pull_addr("10.0.0.7:9203").is_ok());
        assert!(check_pull_addr("node-7.lab:9203").is_ok());
        assert!(check_pull_addr("[fe80::1]:9203").is_ok());
        assert!(check_pull_addr("10.0.0.7").is_err());
        assert!(check_pull_addr(":9203").is_err());
        assert!(check_pull_addr("h:0").is_err());
        assert!(check_pull_addr("h:99999").is_err());
        assert!(check_pull_addr("http://h:1").is_err());
    }
}
