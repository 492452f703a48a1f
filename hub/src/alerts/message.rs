//! What a message says: one alert, or a digest of several, as text (chat, e-mail, ntfy) and as
//! the webhook's JSON. One wording for every channel.

use std::time::Duration;

use serde_json::{json, Value};

use super::model::{Phase, Record};

/// Lines a digest lists before "… and N more": a chat message stays readable, and every
/// vendor's size limit (WeCom: 2,048 bytes) is kept by truncation after this.
const DIGEST_LINES: usize = 30;

/// One alert in a message.
#[derive(Debug, Clone)]
pub struct Item {
    pub record: Record,
    /// Firing or resolved.
    pub phase: Phase,
    pub repeat: bool,
}

/// One message for one channel: its items, and who on the channel it is for.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// An e-mail address or an ntfy topic (none: the channel's own).
    pub to: Option<String>,
    /// Ids the chat channels mention (owners).
    pub mentions: Vec<String>,
    pub items: Vec<Item>,
    /// A free-text message (the `alerts test` command), instead of items.
    pub text: Option<(String, String)>,
    /// When it was made (Unix ms): "for 5m" is counted to here, so every retry of a message
    /// says the same.
    pub at_ms: u64,
}

impl Delivery {
    /// Adds `other`'s items and mentions (same recipient): how a backlog becomes a digest.
    pub fn merge(&mut self, other: Delivery) {
        self.items.extend(other.items);
        self.at_ms = self.at_ms.max(other.at_ms);
        for m in other.mentions {
            if !self.mentions.contains(&m) {
                self.mentions.push(m);
            }
        }
        match (&mut self.text, other.text) {
            (Some((title, body)), Some((t2, b2))) => {
                *title = format!("hmonitor: {} messages", 2);
                body.push_str("\n\n");
                body.push_str(&t2);
                body.push('\n');
                body.push_str(&b2);
            }
            (slot @ None, Some(t)) => *slot = Some(t),
            _ => {}
        }
    }

    pub fn len(&self) -> usize {
        self.items.len() + usize::from(self.text.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How messages show times.
#[derive(Debug, Clone)]
pub struct Style {
    pub tz: jiff::tz::TimeZone,
    pub page_url: Option<String>,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            tz: jiff::tz::TimeZone::UTC,
            page_url: None,
        }
    }
}

impl Style {
    pub fn time(&self, ms: u64) -> String {
        let Ok(ts) = jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(0)) else {
            return ms.to_string();
        };
        ts.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }
}

fn span(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

fn word(phase: Phase, repeat: bool) -> &'static str {
    match (phase, repeat) {
        (Phase::Resolved, _) => "RESOLVED",
        (_, true) => "STILL FIRING",
        _ => "FIRING",
    }
}

/// "FIRING gpu_temp: GPU 3 (A100) of gpu-07 is at or above 85 °C (91) — for 5m 2s".
pub fn line(item: &Item, now_ms: u64) -> String {
    let r = &item.record;
    let value = match (r.kind.as_str(), r.value) {
        ("gpu_temp", Some(v)) => format!(" (now {v} °C)"),
        ("disk_full", Some(v)) => format!(" (now {v}%)"),
        _ => String::new(),
    };
    if r.kind == "gpus_free" {
        return format!("FREE: {}", r.summary);
    }
    let when = match item.phase {
        Phase::Resolved => format!(
            " — lasted {}",
            span(r.resolved_ms.max(r.since_ms).saturating_sub(r.since_ms))
        ),
        _ => format!(" — for {}", span(now_ms.saturating_sub(r.since_ms))),
    };
    format!(
        "{} {}: {}{value}{when}",
        word(item.phase, item.repeat),
        r.rule,
        r.summary
    )
}

/// The title and body of a message.
pub fn text(d: &Delivery, style: &Style, now_ms: u64) -> (String, String) {
    let now_ms = if d.at_ms > 0 { d.at_ms } else { now_ms };
    if let Some((title, body)) = &d.text {
        return (title.clone(), body.clone());
    }
    let mut body = String::new();
    let title = match d.items.as_slice() {
        [one] => {
            let r = &one.record;
            body.push_str(&line(one, now_ms));
            body.push_str(&format!("\nsince {}", style.time(r.since_ms)));
            if r.kind == "gpus_free" {
                format!("[hmonitor] GPUs free on {}", r.labels.host)
            } else {
                format!(
                    "[{}] {} · {}",
                    word(one.phase, one.repeat),
                    r.rule,
                    r.labels.host
                )
            }
        }
        items => {
            let firing = items.iter().filter(|i| i.phase != Phase::Resolved).count();
            let resolved = items.len() - firing;
            for (n, item) in items.iter().enumerate() {
                if n == DIGEST_LINES {
                    body.push_str(&format!("… and {} more", items.len() - n));
                    break;
                }
                body.push_str(&line(item, now_ms));
                body.push('\n');
            }
            format!(
                "[hmonitor] {} alerts: {firing} firing, {resolved} resolved",
                items.len()
            )
        }
    };
    if let Some(url) = &style.page_url {
        body.push_str(&format!("\n{url}"));
    }
    (title, body.trim_end().to_owned())
}

fn item_json(item: &Item) -> Value {
    let r = &item.record;
    json!({
        "rule": r.rule,
        "kind": r.kind,
        "state": item.phase.as_str(),
        "repeat": item.repeat,
        "entity": r.entity,
        "host": r.labels.host,
        "gpu": r.labels.gpu,
        "gpu_uuid": r.labels.gpu_uuid,
        "user": r.labels.user,
        "pid": r.labels.pid,
        "process": r.labels.process,
        "mount": r.labels.mount,
        "summary": r.summary,
        "value": r.value,
        "started_ms": r.since_ms,
        "fired_ms": r.fired_ms,
        "ended_ms": if item.phase == Phase::Resolved { Some(r.resolved_ms) } else { None },
    })
}

/// The webhook's body (and a template's context): the alert's fields at the top when there is
/// one, the fields every alert shares (else empty, state "mixed") when there are several;
/// `alerts` always lists them all.
pub fn webhook_json(d: &Delivery, style: &Style, now_ms: u64) -> Value {
    let (title, body) = text(d, style, now_ms);
    let alerts: Vec<Value> = d.items.iter().map(item_json).collect();
    let common = |key: &str, empty: Value| -> Value {
        let mut vals = alerts.iter().map(|a| &a[key]);
        match vals.next() {
            Some(first) if vals.all(|v| v == first) => first.clone(),
            _ => empty,
        }
    };
    let mut v = if let [one] = alerts.as_slice() {
        one.clone()
    } else {
        json!({
            "rule": common("rule", json!("")),
            "kind": common("kind", json!("")),
            "state": common("state", json!(if alerts.is_empty() { "test" } else { "mixed" })),
            "host": common("host", json!("")),
            "gpu": common("gpu", Value::Null),
            "user": common("user", json!("")),
            "summary": title.clone(),
            "started_ms": d.items.iter().map(|i| i.record.since_ms).min(),
        })
    };
    v["title"] = json!(title);
    v["text"] = json!(body);
    v["count"] = json!(alerts.len());
    v["alerts"] = Value::Array(alerts);
    v["users"] = json!(d.mentions);
    if let Some(url) = &style.page_url {
        v["url"] = json!(url);
    }
    v
}
