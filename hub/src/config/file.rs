//! The TOML file (`--config`). Values are checked while deserializing, so a bad one is
//! reported by the toml crate with its position; only checks across entries (duplicates) are
//! done afterwards (in `resolve`), with the positions kept by `Spanned`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmonitor_common::allow::Allowlist;
use hmonitor_common::parse::parse_duration;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::values::{
    check_pull_addr, parse_frame_bytes, parse_host_name, parse_origin, parse_token,
};
use super::{ConfigError, MAX_CONFIG_BYTES};
use crate::state::valid_host_id;

/// A parsed TOML file, with its text kept for turning byte offsets into lines.
pub struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) file: FileConfig,
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
    pub(super) fn at(&self, offset: usize) -> String {
        let (line, column) = line_column(&self.text, offset);
        format!("{}:{line}:{column}", self.path.display())
    }

    /// A path written in the file, relative to the file's directory.
    pub(super) fn relative(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }
}

pub(super) fn invalid_at(path: &Path, text: &str, offset: usize, message: &str) -> ConfigError {
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

pub(super) fn read_bounded(path: &Path) -> Result<String, ConfigError> {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<SocketAddr>,
    pub(super) grpc_listen: Option<SocketAddr>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) interval: Option<DurationValue>,
    pub(super) enrollment_token: Option<Token>,
    pub(super) viewer_allow: Option<AllowValue>,
    pub(super) viewer_token: Option<Token>,
    pub(super) enrollment_token_file: Option<PathBuf>,
    pub(super) viewer_token_file: Option<PathBuf>,
    pub(super) admin_token: Option<Token>,
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) http_idle_timeout: Option<DurationValue>,
    pub(super) max_clock_skew: Option<DurationValue>,
    pub(super) free_settle: Option<SettleValue>,
    pub(super) allowed_origins: Option<Vec<Origin>>,
    pub(super) allowed_hosts: Option<Vec<HostName>>,
    pub(super) max_frame_bytes: Option<FrameBytes>,
    pub(super) max_hosts: Option<std::num::NonZeroUsize>,
    pub(super) browser_write_timeout: Option<DurationValue>,
    pub(super) http_head_timeout: Option<DurationValue>,
    pub(super) local_agent: Option<LocalAgentValue>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) max_conns_per_addr: Option<usize>,
    pub(super) max_agent_frames_per_sec: Option<std::num::NonZeroU32>,
    pub(super) history_raw: Option<DurationValue>,
    pub(super) history_1m: Option<DurationValue>,
    pub(super) history_1h: Option<DurationValue>,
    #[serde(default)]
    pub(super) hosts: BTreeMap<HostId, Spanned<HostEntry>>,
    /// Checked in `resolve`, not while deserializing: the toml crate places an error inside an
    /// array at the array's start, and the entry's own line is more useful.
    #[serde(default)]
    pub(super) expected_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) pull: Vec<Spanned<PullEntry>>,
    pub(super) settings_py: Option<PathBuf>,
    /// `[alerts]`: channels and rules, checked across entries in `resolve`.
    pub(super) alerts: Option<Spanned<crate::alerts::config::AlertsFile>>,
    /// `[users.NAME]`: how each lab member is told about their own processes.
    #[serde(default)]
    pub(super) users: BTreeMap<String, Spanned<crate::alerts::config::Contacts>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostEntry {
    pub(super) token: Token,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PullEntry {
    pub(super) id: HostId,
    pub(super) addr: PullAddr,
    pub(super) token: Option<Token>,
}

/// A host id that passed [`valid_host_id`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HostId(pub(super) String);

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

pub(super) fn bad_host_id(id: &str) -> String {
    format!("host id {id:?} is not valid: 1 to 128 printable characters without '/' or '\"'")
}

/// A token that passed [`parse_token`].
#[derive(Debug)]
pub(super) struct Token(pub(super) String);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_token(&s).map(Self).map_err(de::Error::custom)
    }
}

/// `host:port` of a pull target.
#[derive(Debug)]
pub(super) struct PullAddr(pub(super) String);

impl<'de> Deserialize<'de> for PullAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_pull_addr(&s).map_err(de::Error::custom)?;
        Ok(Self(s))
    }
}

/// "2s", "500ms", or a number of seconds.
#[derive(Debug)]
pub(super) struct DurationValue(pub(super) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration_with(d, parse_duration).map(DurationValue)
    }
}

/// A settle time (`free_settle`): like [`DurationValue`], and 0 is allowed.
#[derive(Debug)]
pub(super) struct SettleValue(pub(super) Duration);

impl<'de> Deserialize<'de> for SettleValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration_with(d, hmonitor_common::free::parse_settle).map(SettleValue)
    }
}

/// A duration as a string ("2s") or a number of seconds, read with `parse`.
fn duration_with<'de, D: Deserializer<'de>>(
    d: D,
    parse: fn(&str) -> Result<Duration, String>,
) -> Result<Duration, D::Error> {
    struct V(fn(&str) -> Result<Duration, String>);
    impl de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"2s\" or \"500ms\", or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            (self.0)(s).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
            self.visit_str(&n.to_string())
        }
    }
    d.deserialize_any(V(parse))
}

/// A byte count, as a number or a string with KiB/MiB.
#[derive(Debug)]
pub(super) struct FrameBytes(pub(super) usize);

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
pub(super) struct AllowValue(pub(super) Allowlist);

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

/// `local_agent = true`, or a `[local_agent]` table (which turns it on unless it says
/// `enabled = false`).
#[derive(Debug, Default)]
pub(super) struct LocalAgentValue(pub(super) LocalAgentTable);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalAgentTable {
    pub(super) enabled: Option<bool>,
    pub(super) id: Option<HostId>,
    pub(super) ip: Option<String>,
    pub(super) nvml_lib: Option<PathBuf>,
    pub(super) cmdline: Option<bool>,
}

impl<'de> Deserialize<'de> for LocalAgentValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = LocalAgentValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a [local_agent] table")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<LocalAgentValue, E> {
                Ok(LocalAgentValue(LocalAgentTable {
                    enabled: Some(on),
                    ..LocalAgentTable::default()
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<LocalAgentValue, A::Error> {
                let mut table =
                    LocalAgentTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.enabled.get_or_insert(true);
                Ok(LocalAgentValue(table))
            }
        }
        d.deserialize_any(V)
    }
}

/// An origin that passed [`parse_origin`].
#[derive(Debug, Clone)]
pub(super) struct Origin(pub(super) String);

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_origin(&s).map(Self).map_err(de::Error::custom)
    }
}

/// A host name that passed [`parse_host_name`].
#[derive(Debug, Clone)]
pub(super) struct HostName(pub(super) String);

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_host_name(&s).map(Self).map_err(de::Error::custom)
    }
}
