//! The `[alerts]` section and `[users.NAME]` contacts of hub.toml: what the file may say
//! (deserialized with values checked in place, so the toml crate reports a bad one at its
//! position) and what the hub runs with ([`AlertsConfig`]). Checks across entries (a rule
//! naming a channel that does not exist, two rules with one name) are done by [`check`], which
//! returns the byte offset of the entry at fault so the caller can say file:line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmonitor_common::parse::{parse_bytes, parse_span};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

/// Secret files (webhook URLs, keys, SMTP passwords) larger than this are refused.
const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Channels, rules and users a file may define: far more than a lab needs, few enough that a
/// mistaken generator cannot make the hub evaluate millions of rules.
pub const MAX_CHANNELS: usize = 64;
pub const MAX_RULES: usize = 256;
pub const MAX_USERS: usize = 10_000;

// ---------------------------------------------------------------------------------------
// What the hub runs with.

/// The alerting configuration; empty (no channel, no rule) when the file has no `[alerts]`.
#[derive(Clone)]
pub struct AlertsConfig {
    /// How often rules are evaluated (and messages grouped).
    pub interval: Duration,
    /// The page's address, linked from messages.
    pub page_url: Option<String>,
    /// The zone quiet hours are read in (`timezone`); none: the hub's.
    pub timezone: Option<String>,
    pub channels: Vec<ChannelConfig>,
    pub rules: Vec<Rule>,
    /// Who is told about their own processes and subscriptions.
    pub users: BTreeMap<String, Contacts>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            page_url: None,
            timezone: None,
            channels: Vec::new(),
            rules: Vec::new(),
            users: BTreeMap::new(),
        }
    }
}

impl AlertsConfig {
    pub fn channel(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.name == name)
    }

    /// Whether anything would ever be sent.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

impl fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("interval", &self.interval)
            .field(
                "channels",
                &self.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field("users", &self.users.len())
            .finish()
    }
}

/// Where messages go. Secrets (the URL of a keyed webhook, signing keys, passwords) are never
/// printed: `Debug` shows the name and kind only.
#[derive(Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// The webhook / robot / ntfy topic URL.
    pub url: String,
    /// Feishu's and DingTalk's signing secret.
    pub secret: Option<String>,
    /// ntfy's access token (sent as a bearer token).
    pub token: Option<String>,
    /// A minijinja template for a webhook's body.
    pub template: Option<String>,
    pub content_type: String,
    /// At most `rate.0` messages per `rate.1`; what comes past it waits and goes out as one
    /// digest.
    pub rate: (u32, Duration),
    pub timeout: Duration,
    pub retries: u32,
    pub email: Option<EmailConfig>,
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Slack,
    #[serde(alias = "lark")]
    Feishu,
    Dingtalk,
    Wecom,
    Email,
    Ntfy,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Feishu => "feishu",
            Self::Dingtalk => "dingtalk",
            Self::Wecom => "wecom",
            Self::Email => "email",
            Self::Ntfy => "ntfy",
        }
    }
}

#[derive(Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    /// The admins' addresses (owners' come from `[users]`).
    pub to: Vec<String>,
    /// Extra CA certificates (PEM) the server's certificate may chain to.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS (required; port 587 by default).
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (a relay on localhost; port 25 by default).
    None,
}

/// How to reach one lab member: each entry is used through the channel of that kind.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    /// An address, sent to through the (first) email channel.
    pub email: Option<String>,
    /// Ids mentioned in the messages the chat channels send (Feishu `open_id`/`user_id`,
    /// DingTalk user id or mobile, WeCom user id, Slack member id).
    pub feishu: Option<String>,
    pub dingtalk: Option<String>,
    pub wecom: Option<String>,
    pub slack: Option<String>,
    /// A topic on the ntfy channel's server.
    pub ntfy: Option<String>,
    /// Channels of this user's own (names of `[[alerts.channel]]`).
    #[serde(default)]
    pub notify: Vec<String>,
}

impl Contacts {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.feishu.is_none()
            && self.dingtalk.is_none()
            && self.wecom.is_none()
            && self.slack.is_none()
            && self.ntfy.is_none()
            && self.notify.is_empty()
    }

    /// This user's address on a channel of `kind`, if any.
    pub fn on(&self, kind: ChannelKind) -> Option<&str> {
        match kind {
            ChannelKind::Email => self.email.as_deref(),
            ChannelKind::Feishu => self.feishu.as_deref(),
            ChannelKind::Dingtalk => self.dingtalk.as_deref(),
            ChannelKind::Wecom => self.wecom.as_deref(),
            ChannelKind::Slack => self.slack.as_deref(),
            ChannelKind::Ntfy => self.ntfy.as_deref(),
            ChannelKind::Webhook => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    HostDown,
    GpuLost,
    GpuError,
    GpuTemp,
    DiskFull,
    AgentStale,
    IdleHog,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostDown => "host_down",
            Self::GpuLost => "gpu_lost",
            Self::GpuError => "gpu_error",
            Self::GpuTemp => "gpu_temp",
            Self::DiskFull => "disk_full",
            Self::AgentStale => "agent_stale",
            Self::IdleHog => "idle_hog",
        }
    }

    fn default_for(self) -> Duration {
        match self {
            Self::HostDown => Duration::from_secs(120),
            Self::IdleHog => Duration::from_secs(3600),
            Self::GpuTemp => Duration::from_secs(60),
            Self::DiskFull | Self::AgentStale => Duration::from_secs(60),
            Self::GpuLost | Self::GpuError => Duration::ZERO,
        }
    }
}

/// One rule, resolved.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique; the kind by default.
    pub name: String,
    pub kind: RuleKind,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// Tell again this often while it fires; never when `None`.
    pub repeat: Option<Duration>,
    /// Send a message when it resolves.
    pub resolved: bool,
    pub quiet: Option<QuietHours>,
    /// Channels (indices into [`AlertsConfig::channels`]) the admins are told on.
    pub notify: Vec<usize>,
    pub scope: Scope,
    /// gpu_temp: °C; disk_full: percent used.
    pub threshold: f64,
    /// How far below `threshold` the value must fall before a firing alert resolves.
    pub clear: f64,
    /// idle_hog: the least memory a process holds to count.
    pub min_mem: u64,
    /// idle_hog: the most utilization (percent) an idle GPU shows.
    pub max_util: f64,
    /// idle_hog: the owner is told at once, the admins only after this (none: together).
    pub escalate_after: Option<Duration>,
}

/// Which entities a rule looks at: shell patterns (`*`, `?`), a leading `!` excludes; an empty
/// list allows everything.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub hosts: Patterns,
    /// Matched against the GPU's index, UUID and name.
    pub gpus: Patterns,
    pub users: Patterns,
    pub mounts: Patterns,
}

#[derive(Debug, Clone, Default)]
pub struct Patterns {
    include: Vec<wildmatch::WildMatch>,
    exclude: Vec<wildmatch::WildMatch>,
}

impl Patterns {
    pub fn new(list: &[String]) -> Self {
        let mut p = Self::default();
        for s in list {
            match s.strip_prefix('!') {
                Some(rest) => p.exclude.push(wildmatch::WildMatch::new(rest)),
                None => p.include.push(wildmatch::WildMatch::new(s)),
            }
        }
        p
    }

    pub fn is_any(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether any of `names` is included and none is excluded.
    pub fn allows(&self, names: &[&str]) -> bool {
        if self.is_any() {
            return true;
        }
        let hit =
            |ps: &[wildmatch::WildMatch]| ps.iter().any(|p| names.iter().any(|n| p.matches(n)));
        (self.include.is_empty() || hit(&self.include)) && !hit(&self.exclude)
    }
}

/// A daily window in which messages wait ("22:00-08:00"); minutes of the day, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: u16,
    pub end: u16,
}

impl QuietHours {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("quiet_hours {s:?}: expected HH:MM-HH:MM, e.g. \"22:00-08:00\"");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("quiet_hours {s:?}: start and end are the same"));
        }
        Ok(Self { start, end })
    }

    /// Whether `minute` (of the day) is inside; the window may wrap past midnight.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the file says.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    interval: Option<Span>,
    page_url: Option<String>,
    timezone: Option<Zone>,
    #[serde(default)]
    channel: Vec<Spanned<ChannelFile>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    name: String,
    kind: ChannelKind,
    url: Option<String>,
    url_file: Option<PathBuf>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    template: Option<String>,
    template_file: Option<PathBuf>,
    content_type: Option<String>,
    rate_limit: Option<Rate>,
    timeout: Option<Span>,
    retries: Option<u32>,
    // e-mail
    smtp: Option<String>,
    tls: Option<EmailTls>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    kind: RuleKind,
    #[serde(rename = "for")]
    for_: Option<Span>,
    repeat: Option<Span>,
    resolved: Option<bool>,
    quiet_hours: Option<Quiet>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    gpus: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    mounts: Vec<String>,
    threshold: Option<f64>,
    clear: Option<f64>,
    min_mem: Option<Bytes>,
    max_util: Option<f64>,
    escalate_after: Option<Span>,
}

/// A duration as a string ("2m") or seconds; 0 allowed.
#[derive(Debug, Clone, Copy)]
struct Span(Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(
            d,
            "a duration such as \"2m\" or \"30s\", or a number of seconds",
            |s| parse_span(s).map(Span),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Bytes(u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a size such as \"20GiB\", or a number of bytes", |s| {
            parse_bytes(s).map(Bytes)
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Quiet(QuietHours);

impl<'de> Deserialize<'de> for Quiet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QuietHours::parse(&s).map(Quiet).map_err(de::Error::custom)
    }
}

/// `N/period`: "10/m", "30/1h", "5/10m".
#[derive(Debug, Clone, Copy)]
struct Rate(u32, Duration);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate(&s).map_err(de::Error::custom)
    }
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("rate_limit {s:?}: expected COUNT/PERIOD, e.g. \"10/m\" or \"30/1h\"");
    let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    let per = match per {
        "s" | "m" | "h" | "d" => format!("1{per}"),
        _ => per.to_owned(),
    };
    let period = parse_span(&per).map_err(|_| bad())?;
    if n == 0 || period.is_zero() {
        return Err(format!(
            "rate_limit {s:?}: count and period must be above zero"
        ));
    }
    Ok(Rate(n, period))
}

#[derive(Debug, Clone)]
struct Zone(String);

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        jiff::tz::TimeZone::get(&s)
            .map(|_| Zone(s.clone()))
            .map_err(|e| de::Error::custom(format!("timezone {s:?}: {e}")))
    }
}

fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<T>(&'static str, fn(&str) -> Result<T, String>);
    impl<T> de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.1)(s).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }
    }
    d.deserialize_any(V(expecting, parse))
}

/// A mistake in the alerting configuration, at byte `offset` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub offset: usize,
    pub message: String,
}

fn at(offset: usize, message: impl Into<String>) -> CheckError {
    CheckError {
        offset,
        message: message.into(),
    }
}

/// Resolves the file's `[alerts]` and `[users]`: names cross-checked, secrets read (paths
/// relative to `dir`), defaults applied.
pub fn check(
    file: &AlertsFile,
    users: &BTreeMap<String, Spanned<Contacts>>,
    dir: &Path,
) -> Result<AlertsConfig, CheckError> {
    if file.channel.len() > MAX_CHANNELS {
        return Err(at(
            0,
            format!("more than {MAX_CHANNELS} [[alerts.channel]] entries"),
        ));
    }
    if file.rule.len() > MAX_RULES {
        return Err(at(
            0,
            format!("more than {MAX_RULES} [[alerts.rule]] entries"),
        ));
    }
    if users.len() > MAX_USERS {
        return Err(at(0, format!("more than {MAX_USERS} [users] entries")));
    }
    let interval = file.interval.map_or(Duration::from_secs(1), |s| s.0);
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(300) {
        return Err(at(0, "alerts.interval must be between 100ms and 5m"));
    }
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for c in &file.channel {
        let off = c.span().start;
        let ch = channel(c.get_ref(), dir).map_err(|m| at(off, m))?;
        if channels.iter().any(|o| o.name == ch.name) {
            return Err(at(off, format!("channel {:?} is defined twice", ch.name)));
        }
        channels.push(ch);
    }
    let find = |name: &Spanned<String>| -> Result<usize, CheckError> {
        channels
            .iter()
            .position(|c| c.name == *name.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
                at(
                    name.span().start,
                    format!(
                        "unknown channel {:?} (channels: {})",
                        name.get_ref(),
                        if known.is_empty() {
                            "none defined".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
    };
    let mut rules: Vec<Rule> = Vec::new();
    for r in &file.rule {
        let off = r.span().start;
        let f = r.get_ref();
        let notify = f.notify.iter().map(find).collect::<Result<Vec<_>, _>>()?;
        let rule = rule(f, notify).map_err(|m| at(off, m))?;
        if rules.iter().any(|o| o.name == rule.name) {
            return Err(at(
                off,
                format!("rule {:?} is defined twice (give one a `name`)", rule.name),
            ));
        }
        rules.push(rule);
    }
    let mut out_users = BTreeMap::new();
    for (name, c) in users {
        let off = c.span().start;
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(at(off, format!("user name {name:?} is not valid")));
        }
        for n in &c.get_ref().notify {
            if !channels.iter().any(|ch| ch.name == *n) {
                return Err(at(off, format!("[users.{name}]: unknown channel {n:?}")));
            }
        }
        if c.get_ref().email.is_some() && !channels.iter().any(|ch| ch.kind == ChannelKind::Email) {
            return Err(at(
                off,
                format!("[users.{name}] has an email but no email channel is defined"),
            ));
        }
        out_users.insert(name.clone(), c.get_ref().clone());
    }
    if let Some(u) = &file.page_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(at(
                0,
                format!("alerts.page_url {u:?} must start with http:// or https://"),
            ));
        }
    }
    Ok(AlertsConfig {
        interval,
        page_url: file.page_url.clone(),
        timezone: file.timezone.as_ref().map(|z| z.0.clone()),
        channels,
        rules,
        users: out_users,
    })
}

fn secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
    dir: &Path,
) -> Result<Option<String>, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("give {what} or {what}_file, not both")),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(p)) => {
            let p = if p.is_relative() {
                dir.join(p)
            } else {
                p.clone()
            };
            read_secret(&p)
                .map(Some)
                .map_err(|e| format!("{what}_file {}: {e}", p.display()))
        }
        (None, None) => Ok(None),
    }
}

/// A secret file's content, trimmed (editors add a newline).
fn read_secret(p: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut s = String::new();
    f.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut s)
        .map_err(|e| e.to_string())?;
    if s.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!("larger than {MAX_SECRET_BYTES} bytes"));
    }
    let s = s.trim().to_owned();
    if s.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(s)
}

fn channel(f: &ChannelFile, dir: &Path) -> Result<ChannelConfig, String> {
    let name = f.name.trim();
    if name.is_empty()
        || name.len() > 64
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "channel name {:?}: 1 to 64 characters, no spaces",
            f.name
        ));
    }
    let ctx = |m: String| format!("channel {name:?}: {m}");
    let url = secret(&f.url, &f.url_file, "url", dir).map_err(ctx)?;
    let secret_v = secret(&f.secret, &f.secret_file, "secret", dir).map_err(ctx)?;
    let token = secret(&f.token, &f.token_file, "token", dir).map_err(ctx)?;
    let template = secret(&f.template, &f.template_file, "template", dir).map_err(ctx)?;
    let email = f.kind == ChannelKind::Email;
    let url = match (email, url) {
        (false, Some(u)) => {
            let parsed =
                reqwest::Url::parse(&u).map_err(|e| ctx(format!("url is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ctx("url must be http:// or https://".to_owned()));
            }
            u
        }
        (false, None) => return Err(ctx("needs a url (or url_file)".to_owned())),
        (true, Some(_)) => return Err(ctx("an email channel takes smtp, not url".to_owned())),
        (true, None) => String::new(),
    };
    if secret_v.is_some() && !matches!(f.kind, ChannelKind::Feishu | ChannelKind::Dingtalk) {
        return Err(ctx(
            "secret is for feishu and dingtalk (signed robots)".to_owned()
        ));
    }
    if template.is_some() && f.kind != ChannelKind::Webhook {
        return Err(ctx("template is for webhook channels".to_owned()));
    }
    if let Some(t) = &template {
        minijinja::Environment::new()
            .template_from_str(t)
            .map_err(|e| ctx(format!("template: {e}")))?;
    }
    let email_cfg = if email {
        Some(email_config(f, dir).map_err(ctx)?)
    } else {
        if f.smtp.is_some() || f.from.is_some() || !f.to.is_empty() || f.password.is_some() {
            return Err(ctx(
                "smtp, from, to and password are for email channels".to_owned()
            ));
        }
        None
    };
    let rate = f
        .rate_limit
        .map_or((20, Duration::from_secs(60)), |r| (r.0, r.1));
    let timeout = f.timeout.map_or(Duration::from_secs(10), |s| s.0);
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(120) {
        return Err(ctx("timeout must be between 100ms and 2m".to_owned()));
    }
    let retries = f.retries.unwrap_or(3);
    if retries > 10 {
        return Err(ctx("retries: at most 10".to_owned()));
    }
    Ok(ChannelConfig {
        name: name.to_owned(),
        kind: f.kind,
        url,
        secret: secret_v,
        token,
        template,
        content_type: f
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_owned()),
        rate,
        timeout,
        retries,
        email: email_cfg,
    })
}

fn email_config(f: &ChannelFile, dir: &Path) -> Result<EmailConfig, String> {
    let smtp = f.smtp.as_deref().ok_or("needs smtp = \"host[:port]\"")?;
    let tls = f.tls.unwrap_or(EmailTls::Starttls);
    let (host, port) = match smtp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("smtp {smtp:?}: bad port"))?,
        ),
        _ => (
            smtp.to_owned(),
            match tls {
                EmailTls::Starttls => 587,
                EmailTls::Tls => 465,
                EmailTls::None => 25,
            },
        ),
    };
    if host.is_empty() {
        return Err(format!("smtp {smtp:?}: no host"));
    }
    let from = f
        .from
        .clone()
        .ok_or("needs from = \"hmonitor <hmonitor@lab.example>\"")?;
    from.parse::<lettre::message::Mailbox>()
        .map_err(|e| format!("from {from:?}: {e}"))?;
    for to in &f.to {
        to.parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("to {to:?}: {e}"))?;
    }
    let password = secret(&f.password, &f.password_file, "password", dir)?;
    if password.is_some() && f.username.is_none() {
        return Err("password without username".to_owned());
    }
    if password.is_some() && tls == EmailTls::None && host != "localhost" && host != "127.0.0.1" {
        return Err(
            "a password is never sent unencrypted: use tls = \"starttls\" or \"tls\"".to_owned(),
        );
    }
    Ok(EmailConfig {
        host,
        port,
        tls,
        username: f.username.clone(),
        password,
        from,
        to: f.to.clone(),
        ca_file: f.ca_file.as_ref().map(|p| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.clone()
            }
        }),
    })
}

fn rule(f: &RuleFile, notify: Vec<usize>) -> Result<Rule, String> {
    let kind = f.kind;
    let name = f.name.clone().unwrap_or_else(|| kind.as_str().to_owned());
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(format!("rule name {name:?}: 1 to 64 characters"));
    }
    let ctx = |m: &str| format!("rule {name:?} ({}): {m}", kind.as_str());
    let threshold_kind = matches!(kind, RuleKind::GpuTemp | RuleKind::DiskFull);
    if !threshold_kind && (f.threshold.is_some() || f.clear.is_some()) {
        return Err(ctx("threshold and clear are for gpu_temp and disk_full"));
    }
    let hog = kind == RuleKind::IdleHog;
    if !hog && (f.min_mem.is_some() || f.max_util.is_some() || f.escalate_after.is_some()) {
        return Err(ctx("min_mem, max_util and escalate_after are for idle_hog"));
    }
    if !hog && !f.users.is_empty() {
        return Err(ctx(
            "users is for idle_hog (the rule about a process's owner)",
        ));
    }
    if kind != RuleKind::DiskFull && !f.mounts.is_empty() {
        return Err(ctx("mounts is for disk_full"));
    }
    if matches!(kind, RuleKind::HostDown | RuleKind::AgentStale) && !f.gpus.is_empty() {
        return Err(ctx("gpus does not apply to a host-wide rule"));
    }
    let (threshold, clear) = match kind {
        RuleKind::GpuTemp => (f.threshold.unwrap_or(85.0), f.clear.unwrap_or(5.0)),
        RuleKind::DiskFull => (f.threshold.unwrap_or(90.0), f.clear.unwrap_or(2.0)),
        _ => (0.0, 0.0),
    };
    if threshold_kind {
        let max = if kind == RuleKind::DiskFull {
            100.0
        } else {
            150.0
        };
        if !(threshold > 0.0 && threshold <= max) {
            return Err(ctx(&format!("threshold must be above 0 and at most {max}")));
        }
        if !(0.0..threshold).contains(&clear) {
            return Err(ctx("clear must be at least 0 and below threshold"));
        }
    }
    let max_util = f.max_util.unwrap_or(5.0);
    if !(0.0..=100.0).contains(&max_util) {
        return Err(ctx("max_util is a percentage, 0 to 100"));
    }
    let repeat = f.repeat.map(|s| s.0).filter(|d| !d.is_zero());
    if repeat.is_some_and(|r| r < Duration::from_secs(60)) {
        return Err(ctx("repeat: at least 1m"));
    }
    if notify.is_empty() && !hog {
        return Err(ctx("notify names no channel (e.g. notify = [\"lab\"])"));
    }
    Ok(Rule {
        name,
        kind,
        for_: f.for_.map_or(kind.default_for(), |s| s.0),
        repeat,
        resolved: f.resolved.unwrap_or(true),
        quiet: f.quiet_hours.map(|q| q.0),
        notify,
        scope: Scope {
            hosts: Patterns::new(&f.hosts),
            gpus: Patterns::new(&f.gpus),
            users: Patterns::new(&f.users),
            mounts: Patterns::new(&f.mounts),
        },
        threshold,
        clear,
        min_mem: f.min_mem.map_or(1 << 30, |b| b.0),
        max_util,
        escalate_after: f.escalate_after.map(|s| s.0).filter(|d| !d.is_zero()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let q = QuietHours::parse("22:00-08:00").expect("parses");
        assert!(q.contains(23 * 60));
        assert!(q.contains(0));
        assert!(q.contains(7 * 60 + 59));
        assert!(!q.contains(8 * 60));
        assert!(!q.contains(12 * 60));
        let day = QuietHours::parse("12:30-13:30").expect("parses");
        assert!(day.contains(12 * 60 + 30) && !day.contains(13 * 60 + 30));
        assert!(QuietHours::parse("25:00-01:00").is_err());
        assert!(QuietHours::parse("10:00-10:00").is_err());
    }

    #[test]
    fn rates_read_as_count_per_period() {
        let r = parse_rate("10/m").expect("parses");
        assert_eq!((r.0, r.1), (10, Duration::from_secs(60)));
        let r = parse_rate("30/2h").expect("parses");
        assert_eq!((r.0, r.1), (30, Duration::from_secs(7200)));
        assert!(parse_rate("0/m").is_err());
        assert!(parse_rate("ten").is_err());
    }

    #[test]
    fn patterns_include_and_exclude() {
        let p = Patterns::new(&["gpu*".into(), "!gpu-test*".into()]);
        assert!(p.allows(&["gpu-01"]));
        assert!(!p.allows(&["gpu-test1"]));
        assert!(!p.allows(&["cpu-01"]));
        let only_not = Patterns::new(&["!scratch".into()]);
        assert!(only_not.allows(&["a"]) && !only_not.allows(&["scratch"]));
        assert!(Patterns::default().allows(&["anything"]));
    }
}
