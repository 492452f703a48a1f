//! Who gets what: a cycle's notices become one delivery per (channel, recipient), the
//! admins on the rule's channels, an owner at each of their contacts. Grouping here is what
//! makes 200 hosts going down in one cycle one message per channel.

use std::collections::BTreeMap;

use super::config::{AlertsConfig, ChannelKind};
use super::engine::Notice;
use super::message::{Delivery, Item};
use super::model::{TOLD_ADMINS, TOLD_OWNER};

/// Where one lab member is reached: (channel index, recipient address, mention).
pub fn contacts_of(
    cfg: &AlertsConfig,
    user: &str,
    prefer: &[usize],
) -> Vec<(usize, Option<String>, Option<String>)> {
    let Some(c) = cfg.users.get(user) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for kind in [
        ChannelKind::Email,
        ChannelKind::Ntfy,
        ChannelKind::Feishu,
        ChannelKind::Dingtalk,
        ChannelKind::Wecom,
        ChannelKind::Slack,
    ] {
        let Some(addr) = c.on(kind) else { continue };
        // The rule's own channel of that kind if it has one, else the first one defined.
        let ch = prefer
            .iter()
            .copied()
            .find(|&i| cfg.channels.get(i).is_some_and(|ch| ch.kind == kind))
            .or_else(|| cfg.channels.iter().position(|ch| ch.kind == kind));
        let Some(ch) = ch else { continue };
        match kind {
            ChannelKind::Email | ChannelKind::Ntfy => out.push((ch, Some(addr.to_owned()), None)),
            _ => out.push((ch, None, Some(addr.to_owned()))),
        }
    }
    for name in &c.notify {
        if let Some(i) = cfg.channel(name) {
            out.push((i, None, None));
        }
    }
    out
}

/// Whether `user` has anywhere to be told.
pub fn reachable(cfg: &AlertsConfig, user: &str) -> bool {
    !contacts_of(cfg, user, &[]).is_empty()
}

/// Groups the deliveries of a cycle.
#[derive(Default)]
pub struct Batch {
    out: BTreeMap<(usize, Option<String>), Delivery>,
}

impl Batch {
    pub fn add(
        &mut self,
        channel: usize,
        to: Option<String>,
        mention: Option<String>,
        item: Option<Item>,
        text: Option<(String, String)>,
    ) {
        let d = self
            .out
            .entry((channel, to.clone()))
            .or_insert_with(|| Delivery {
                to,
                at_ms: hmonitor_proto::unix_ms(std::time::SystemTime::now()),
                ..Delivery::default()
            });
        if let Some(m) = mention {
            if !d.mentions.contains(&m) {
                d.mentions.push(m);
            }
        }
        if let Some(item) = item {
            let dup = d.items.iter().any(|i| {
                i.record.rule == item.record.rule
                    && i.record.entity == item.record.entity
                    && i.phase == item.phase
            });
            if !dup {
                d.items.push(item);
            }
        }
        if let Some(t) = text {
            d.merge(Delivery {
                text: Some(t),
                ..Delivery::default()
            });
        }
    }

    pub fn notices(&mut self, cfg: &AlertsConfig, notices: Vec<Notice>) {
        for n in notices {
            let Some(rule) = cfg.rules.iter().find(|r| r.name == n.record.rule) else {
                continue;
            };
            let item = Item {
                record: n.record.clone(),
                phase: n.phase,
                repeat: n.repeat,
            };
            if n.to & TOLD_ADMINS != 0 {
                for &c in &rule.notify {
                    self.add(c, None, None, Some(item.clone()), None);
                }
            }
            if n.to & TOLD_OWNER != 0 {
                for (c, to, mention) in contacts_of(cfg, &n.record.labels.user, &rule.notify) {
                    self.add(c, to, mention, Some(item.clone()), None);
                }
            }
        }
    }

    pub fn into_deliveries(self) -> Vec<(usize, Delivery)> {
        self.out.into_iter().map(|((c, _), d)| (c, d)).collect()
    }
}
