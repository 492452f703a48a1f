//! Sending one message on one channel: the vendor's body, its signature, its idea of
//! success. Redirects are never followed (a webhook that answers 3xx is an error, so a
//! configured URL cannot be bounced to another host), every request has the channel's
//! timeout, and a vendor's error ("sign match fail") comes back in its own words.

mod email;
pub mod sign;
pub mod worker;

use std::time::{Duration, SystemTime};

use hmonitor_proto::unix_ms;
use serde_json::{json, Value};

use super::config::{ChannelConfig, ChannelKind};
use super::message::{self, Delivery, Style};

/// A vendor's answer is read up to this much (enough for any error message).
const MAX_ANSWER: usize = 64 * 1024;
/// WeCom refuses text over 2,048 bytes; DingTalk and Feishu allow more, but a chat message
/// longer than this is not read anyway.
const MAX_CHAT_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Http(String),
    #[error("HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: u16, body: String },
    #[error("redirect to {0:?} not followed (configure the final URL)")]
    Redirect(String),
    #[error("the service refused the message: {0}")]
    Vendor(String),
    #[error("template: {0}")]
    Template(String),
    #[error("e-mail: {0}")]
    Email(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// One channel's sender: its configuration and its HTTP client (or SMTP transport).
pub struct Sender {
    cfg: ChannelConfig,
    http: reqwest::Client,
    mail: Option<email::Mailer>,
    style: Style,
}

impl Sender {
    pub fn new(cfg: ChannelConfig, style: Style) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("hmonitor-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::Http(chain(&e)))?;
        let mail = match &cfg.email {
            Some(e) => Some(email::Mailer::new(e, cfg.timeout)?),
            None => None,
        };
        Ok(Self {
            cfg,
            http,
            mail,
            style,
        })
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Sends `d` once (the worker retries).
    pub async fn send(&self, d: &Delivery) -> Result<(), SendError> {
        let now = unix_ms(SystemTime::now());
        let (title, body) = message::text(d, &self.style, now);
        let firing = d
            .items
            .iter()
            .any(|i| i.phase != super::model::Phase::Resolved);
        let c = &self.cfg;
        match c.kind {
            ChannelKind::Email => {
                let Some(mail) = &self.mail else {
                    return Err(SendError::Email("no SMTP transport".to_owned()));
                };
                let to: Vec<String> = match &d.to {
                    Some(a) => vec![a.clone()],
                    None => c.email.as_ref().map(|e| e.to.clone()).unwrap_or_default(),
                };
                if to.is_empty() {
                    return Err(SendError::Email("no recipient (set `to`)".to_owned()));
                }
                let deadline = c.timeout * 2;
                tokio::time::timeout(deadline, mail.send(&to, &title, &body))
                    .await
                    .map_err(|_| SendError::Timeout(deadline))?
            }
            ChannelKind::Webhook => {
                let ctx = message::webhook_json(d, &self.style, now);
                let payload = match &c.template {
                    Some(t) => render(t, &ctx)?,
                    None => ctx.to_string(),
                };
                let req = self
                    .http
                    .post(&c.url)
                    .header(reqwest::header::CONTENT_TYPE, &c.content_type)
                    .body(payload);
                self.finish(req, Check::Status).await
            }
            ChannelKind::Slack => {
                let mentions: String = d.mentions.iter().map(|m| format!("<@{m}> ")).collect();
                let text = format!(
                    "{mentions}*{}*\n{}",
                    slack_escape(&title),
                    slack_escape(&body)
                );
                let req = self.http.post(&c.url).json(&json!({ "text": text }));
                self.finish(req, Check::Status).await
            }
            ChannelKind::Feishu => {
                let mentions: String = d
                    .mentions
                    .iter()
                    .map(|m| format!("<at user_id=\"{}\"></at> ", m.replace('"', "")))
                    .collect();
                let text = truncate(&format!("{mentions}{title}\n{body}"), MAX_CHAT_BYTES);
                let mut v = json!({ "msg_type": "text", "content": { "text": text } });
                if let Some(secret) = &c.secret {
                    let ts = now / 1000;
                    v["timestamp"] = json!(ts.to_string());
                    v["sign"] = json!(sign::feishu(ts, secret));
                }
                let req = self.http.post(&c.url).json(&v);
                self.finish(req, Check::Code("code")).await
            }
            ChannelKind::Dingtalk => {
                let (mobiles, ids): (Vec<&String>, Vec<&String>) = d
                    .mentions
                    .iter()
                    .partition(|m| m.chars().all(|ch| ch.is_ascii_digit() || ch == '+'));
                // DingTalk only highlights a mention that also appears in the text.
                let tags: String = d.mentions.iter().map(|m| format!(" @{m}")).collect();
                let text = truncate(&format!("{title}\n{body}{tags}"), MAX_CHAT_BYTES);
                let v = json!({
                    "msgtype": "text",
                    "text": { "content": text },
                    "at": { "atMobiles": mobiles, "atUserIds": ids, "isAtAll": false },
                });
                let mut url =
                    reqwest::Url::parse(&c.url).map_err(|e| SendError::Vendor(e.to_string()))?;
                if let Some(secret) = &c.secret {
                    url.query_pairs_mut()
                        .append_pair("timestamp", &now.to_string())
                        .append_pair("sign", &sign::dingtalk(now, secret));
                }
                let req = self.http.post(url).json(&v);
                self.finish(req, Check::Code("errcode")).await
            }
            ChannelKind::Wecom => {
                let (mobiles, ids): (Vec<&String>, Vec<&String>) = d
                    .mentions
                    .iter()
                    .partition(|m| m.chars().all(|ch| ch.is_ascii_digit()));
                let text = truncate(&format!("{title}\n{body}"), MAX_CHAT_BYTES);
                let v = json!({
                    "msgtype": "text",
                    "text": { "content": text, "mentioned_list": ids, "mentioned_mobile_list": mobiles },
                });
                let req = self.http.post(&c.url).json(&v);
                self.finish(req, Check::Code("errcode")).await
            }
            ChannelKind::Ntfy => {
                let url = match &d.to {
                    Some(topic) => ntfy_topic_url(&c.url, topic)?,
                    None => c.url.clone(),
                };
                let mut req = self
                    .http
                    .post(url)
                    .header("Title", header_safe(&title))
                    .header("Priority", if firing { "high" } else { "default" })
                    .header(
                        "Tags",
                        if firing {
                            "warning"
                        } else {
                            "white_check_mark"
                        },
                    )
                    .body(body);
                if let Some(t) = &c.token {
                    req = req.bearer_auth(t);
                }
                self.finish(req, Check::Status).await
            }
        }
    }

    async fn finish(&self, req: reqwest::RequestBuilder, check: Check) -> Result<(), SendError> {
        let timeout = self.cfg.timeout;
        let http = |e: reqwest::Error| {
            if e.is_timeout() {
                SendError::Timeout(timeout)
            } else {
                SendError::Http(chain(&e))
            }
        };
        let mut resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            return Err(SendError::Redirect(to));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            let room = MAX_ANSWER.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(SendError::Status {
                status: status.as_u16(),
                body: truncate(text.trim(), 300),
            });
        }
        if let Check::Code(field) = check {
            // The chat vendors answer 200 with an error code in the body.
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                let code = v
                    .get(field)
                    .or_else(|| v.get("StatusCode"))
                    .and_then(Value::as_i64);
                if let Some(code) = code.filter(|c| *c != 0) {
                    let msg = ["msg", "errmsg", "StatusMessage"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(Value::as_str))
                        .unwrap_or("");
                    return Err(SendError::Vendor(format!("{field} {code}: {msg}")));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Check {
    /// A 2xx status is success.
    Status,
    /// And the body's JSON field (errcode, code) is 0.
    Code(&'static str),
}

/// An error with its causes ("error sending request: connection refused"): reqwest's own
/// message alone does not say what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn render(template: &str, ctx: &Value) -> Result<String, SendError> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Json);
    env.render_str(template, ctx)
        .map_err(|e| SendError::Template(e.to_string()))
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` bytes, cut at a character boundary, "…" marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// HTTP header values are ASCII-safe text: other characters would make the request fail.
fn header_safe(s: &str) -> String {
    let ascii: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    truncate(&ascii, 250)
}

/// A user's ntfy topic on the channel's server: the channel URL's last path segment replaced.
fn ntfy_topic_url(base: &str, topic: &str) -> Result<String, SendError> {
    if topic.is_empty()
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SendError::Vendor(format!(
            "ntfy topic {topic:?} is not valid"
        )));
    }
    let mut url = reqwest::Url::parse(base).map_err(|e| SendError::Vendor(e.to_string()))?;
    {
        let mut seg = url
            .path_segments_mut()
            .map_err(|()| SendError::Vendor("ntfy url has no path".to_owned()))?;
        seg.pop_if_empty().pop().push(topic);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        let s = "温度".repeat(1000);
        let t = truncate(&s, 2048);
        assert!(t.len() <= 2048);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn ntfy_topics_replace_the_last_segment() {
        assert_eq!(
            ntfy_topic_url("https://ntfy.sh/lab-alerts", "alice-gpus").expect("valid"),
            "https://ntfy.sh/alice-gpus"
        );
        assert!(ntfy_topic_url("https://ntfy.sh/lab", "../x").is_err());
    }
}
