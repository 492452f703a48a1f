//! What an alert is: the entity it is about, its phase, and who was told.

use serde::Serialize;

/// What an alert names, as in the messages and `/api/alerts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Labels {
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gpu_uuid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub process: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mount: String,
}

/// How far a condition holds this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Past the threshold: pending starts (or goes on), or the alert fires.
    Active,
    /// Between the clear level and the threshold: a firing alert keeps firing, a pending one
    /// starts over. This band is the hysteresis that keeps a value around a threshold from
    /// flapping.
    Band,
}

/// One entity a rule found worth tracking this cycle.
#[derive(Debug, Clone)]
pub struct Obs {
    /// Index of the rule in the configuration.
    pub rule: usize,
    /// Unique within the rule: "host", "host/gpu3", "host/disk:/data", "host/gpu3/pid123@ms".
    pub entity: String,
    pub level: Level,
    /// When the condition began, where the data says (a host's last report); else the first
    /// cycle that saw it.
    pub since_ms: Option<u64>,
    pub labels: Labels,
    pub summary: String,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
    Resolved,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "firing" => Some(Self::Firing),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// Who has been told an alert fires (bits), so a restart neither repeats nor forgets.
pub const TOLD_ADMINS: u8 = 1;
pub const TOLD_OWNER: u8 = 2;

/// The state of one (rule, entity), as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The rule's name.
    pub rule: String,
    pub kind: String,
    pub entity: String,
    pub phase: Phase,
    /// When the condition began.
    pub since_ms: u64,
    /// When it fired (0: not yet).
    pub fired_ms: u64,
    /// When it resolved (0: not yet).
    pub resolved_ms: u64,
    #[serde(flatten)]
    pub labels: Labels,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// [`TOLD_ADMINS`] | [`TOLD_OWNER`]: who was told it fires.
    #[serde(skip)]
    pub told: u8,
    /// When a message about it last went out (0: never).
    pub notified_ms: u64,
    /// In the store (a young pending record is not, see `engine::PERSIST_PENDING_AFTER`).
    #[serde(skip)]
    pub stored: bool,
}

impl Record {
    pub fn key(&self) -> (String, String) {
        (self.rule.clone(), self.entity.clone())
    }
}

/// Where a subscription's message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A lab member of `[users]`, at their contacts.
    User(String),
    /// A channel of `[[alerts.channel]]`.
    Channel(String),
}

/// "Tell me when `count` GPUs with `min_mem` free are free (on a host matching `host`)".
/// One-shot: it is gone once told, or when it expires.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    pub id: u64,
    pub count: u32,
    pub min_mem: u64,
    /// A host id pattern; none: any host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub target: Target,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Who asked ("page", "alice@gpu-01 (hmonitor wait)", "api").
    pub by: String,
    /// SHA-256 (hex) of the token that cancels it; never shown.
    #[serde(skip)]
    pub cancel_hash: String,
}

/// Messages about matching alerts are not sent until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: u64,
    /// A rule name; none: every rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A host pattern; none: every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<i32>,
    pub until_ms: u64,
    pub comment: String,
    pub created_ms: u64,
}

impl Silence {
    pub fn matches(&self, r: &Record, now_ms: u64) -> bool {
        now_ms < self.until_ms
            && self.rule.as_ref().is_none_or(|x| *x == r.rule)
            && self
                .host
                .as_ref()
                .is_none_or(|h| wildmatch::WildMatch::new(h).matches(&r.labels.host))
            && self.gpu.is_none_or(|g| r.labels.gpu == Some(g))
    }
}
