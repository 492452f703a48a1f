//! Alerts evaluated in the hub, so they work with no browser open: rules over the live map
//! ([`rules`]), the pending → firing → resolved state of each (rule, entity) ([`engine`]),
//! kept in SQLite ([`store`]) before any message goes out, routed to admins and owners
//! ([`route`]) and sent by one task per channel ([`channel`]). "GPUs are free" subscriptions
//! and silences live here too.

pub mod channel;
pub mod config;
pub mod engine;
pub mod message;
pub mod model;
pub mod route;
pub mod rules;
pub mod store;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hmonitor_common::free;
use hmonitor_proto::unix_ms;
use sha2::Digest as _;

use self::channel::worker::{self, Outbox};
use self::channel::Sender;
use self::config::AlertsConfig;
use self::engine::{Ctx, Engine};
use self::message::{Delivery, Item, Style};
use self::model::{Labels, Phase, Record, Silence, Subscription, Target};
use self::route::Batch;
use self::rules::Known;
use self::store::{LogEntry, Store};
use crate::state::Hub;

/// Subscriptions kept at most, and per target: one-shot and expiring, so a lab never needs
/// more; a page cannot fill the store.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
pub const MAX_SUBSCRIPTIONS_PER_TARGET: usize = 20;
/// The longest a subscription waits.
pub const MAX_SUBSCRIPTION_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_SILENCES: usize = 1000;
pub const MAX_SILENCE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("channel {0}: {1}")]
    Channel(String, channel::SendError),
    #[error("{0}")]
    Invalid(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("not yours to cancel: give its cancel token (or the admin token)")]
    Forbidden,
    #[error("{0}")]
    Full(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A request for a subscription, checked by [`Alerts::subscribe`].
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub count: u32,
    pub min_mem: u64,
    pub host: Option<String>,
    pub target: Target,
    pub expires: Duration,
    pub by: String,
}

/// What `/api/alerts` shows.
#[derive(Debug, serde::Serialize)]
pub struct Overview {
    /// The hub's clock when this was made (ages on the page are counted from it).
    pub generated_ms: u64,
    pub firing: Vec<AlertView>,
    pub pending: Vec<AlertView>,
    pub recent: Vec<LogEntry>,
    pub subscriptions: Vec<Subscription>,
    pub silences: Vec<Silence>,
    pub channels: Vec<ChannelView>,
    pub rules: Vec<RuleView>,
    /// Lab members with contacts (what the "notify me" form offers).
    pub users: Vec<String>,
}

/// An alert as `/api/alerts` lists it.
#[derive(Debug, serde::Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub record: Record,
    /// Until when a silence holds its messages back (the latest, when several match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_until_ms: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
pub struct ChannelView {
    pub name: String,
    pub kind: &'static str,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub digests: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

#[derive(Debug, serde::Serialize)]
pub struct RuleView {
    pub name: String,
    pub kind: &'static str,
    pub for_s: f64,
}

pub struct Alerts {
    cfg: Arc<AlertsConfig>,
    style: Style,
    tz: jiff::tz::TimeZone,
    store: Mutex<Store>,
    engine: Mutex<Engine>,
    known: Mutex<Known>,
    subs: RwLock<Vec<Subscription>>,
    silences: RwLock<Vec<Silence>>,
    outboxes: RwLock<Vec<Outbox>>,
    /// Firing alerts as of the last cycle (for `/metrics`, without taking the engine's lock).
    firing: RwLock<Vec<Record>>,
    started_ms: u64,
}

impl Alerts {
    /// Opens `alerts.db` in `dir` and resumes from it. Channels start with [`Alerts::run`].
    pub fn open(cfg: AlertsConfig, dir: &Path) -> Result<Arc<Self>, AlertsError> {
        let store = Store::open(dir)?;
        let (engine, gone) = Engine::new(store.records()?, &cfg.rules);
        let mut store = store;
        if !gone.is_empty() {
            tracing::info!(
                "alerts: {} stored alert(s) of rules no longer configured dropped",
                gone.len()
            );
            store.remove(&gone)?;
        }
        let known = Known::load(store.known_hosts()?);
        let subs = store.subscriptions()?;
        let silences = store.silences()?;
        let tz = match &cfg.timezone {
            Some(z) => jiff::tz::TimeZone::get(z).unwrap_or(jiff::tz::TimeZone::UTC),
            None => jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        };
        let style = Style {
            tz: tz.clone(),
            page_url: cfg.page_url.clone(),
        };
        let firing = engine
            .records()
            .filter(|r| r.phase == Phase::Firing)
            .cloned()
            .collect();
        Ok(Arc::new(Self {
            cfg: Arc::new(cfg),
            style,
            tz,
            store: Mutex::new(store),
            engine: Mutex::new(engine),
            known: Mutex::new(known),
            subs: RwLock::new(subs),
            silences: RwLock::new(silences),
            outboxes: RwLock::new(Vec::new()),
            firing: RwLock::new(firing),
            started_ms: now_ms(),
        }))
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.cfg
    }

    /// Evaluates every `interval` until `stop`, then lets the channels send what they hold
    /// (for a few seconds at most).
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, stop: impl std::future::Future<Output = ()>) {
        let mut tasks = Vec::new();
        {
            let mut outboxes = self
                .outboxes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for c in &self.cfg.channels {
                match Sender::new(c.clone(), self.style.clone()) {
                    Ok(s) => {
                        let (o, t) = worker::spawn(s);
                        outboxes.push(o);
                        tasks.push(t);
                    }
                    Err(e) => tracing::error!("alert channel {}: cannot start: {e}", c.name),
                }
            }
        }
        let mut said: Option<(String, std::time::Instant)> = None;
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            let (me, hub) = (self.clone(), hub.clone());
            let failed = match tokio::task::spawn_blocking(move || me.cycle(&hub)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("evaluation failed: {e}")),
            };
            // Said when it starts, changes or ends, and once a minute while it lasts: not
            // every second.
            match (failed, &said) {
                (Some(e), Some((last, at)))
                    if *last == e && at.elapsed() < Duration::from_secs(60) => {}
                (Some(e), _) => {
                    tracing::error!("alerts: {e}");
                    said = Some((e, std::time::Instant::now()));
                }
                (None, Some(_)) => {
                    tracing::info!("alerts: evaluating and storing again");
                    said = None;
                }
                (None, None) => {}
            }
        }
        self.outboxes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let drain = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("alerts: stopped with messages still unsent");
        }
    }

    /// One evaluation: rules, state, store, then messages.
    pub fn cycle(&self, hub: &Hub) -> Result<(), AlertsError> {
        let now = now_ms();
        let minute = {
            let z = jiff::Timestamp::from_millisecond(i64::try_from(now).unwrap_or(0))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_zoned(self.tz.clone());
            u16::try_from(z.hour()).unwrap_or(0) * 60 + u16::try_from(z.minute()).unwrap_or(0)
        };
        let cfg = &self.cfg;
        let tracked = lock(&self.engine).tracked(&cfg.rules);
        let (obs, new_hosts) = {
            let mut known = lock(&self.known);
            let obs = rules::evaluate(hub, &cfg.rules, &mut known, &tracked, now, self.started_ms);
            (obs, known.take_dirty())
        };
        let silences = self
            .silences
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let silenced = |r: &Record| silences.iter().any(|s| s.matches(r, now));
        let reachable = |u: &str| route::reachable(cfg, u);
        let ctx = Ctx {
            now_ms: now,
            minute,
            silenced: &silenced,
            reachable: &reachable,
        };
        let (step, firing) = {
            let mut engine = lock(&self.engine);
            let step = engine.step(
                &cfg.rules,
                obs,
                |rule, r| rules::judgeable(hub, rule, r),
                &ctx,
            );
            let firing: Option<Vec<Record>> = (!step.is_empty()).then(|| {
                engine
                    .records()
                    .filter(|r| r.phase == Phase::Firing)
                    .cloned()
                    .collect()
            });
            (step, firing)
        };
        let mut batch = Batch::default();
        let mut step = step;
        let done = self.check_subscriptions(hub, now, &mut batch, &mut step.log);
        // Stored before anything is sent: a crash now repeats nothing already sent. A store
        // that cannot write (disk full) does not silence the alerts: they are sent anyway
        // (what was told is known in memory; only a restart meanwhile could repeat one).
        let stored = (|| -> Result<(), AlertsError> {
            let mut store = lock(&self.store);
            if !step.is_empty() || !new_hosts.is_empty() {
                store.apply(&step, &new_hosts, now)?;
            }
            for id in &done {
                store.remove_subscription(*id)?;
            }
            if silences.iter().any(|s| s.until_ms <= now) {
                store.expire_silences(now)?;
                self.silences
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|s| s.until_ms > now);
            }
            Ok(())
        })();
        // Off the list once the log says it was told (a page asking in between sees it
        // waiting or told, never vanished), and whatever the store said: a subscription is
        // told once.
        if !done.is_empty() {
            self.subs
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|s| !done.contains(&s.id));
        }
        if let Some(f) = firing {
            *self.firing.write().unwrap_or_else(PoisonError::into_inner) = f;
        }
        batch.notices(cfg, step.notices);
        self.send(batch);
        stored
    }

    fn send(&self, batch: Batch) {
        let outboxes = self.outboxes.read().unwrap_or_else(PoisonError::into_inner);
        for (c, d) in batch.into_deliveries() {
            match outboxes.iter().find(|o| {
                Some(o.name.as_str()) == self.cfg.channels.get(c).map(|ch| ch.name.as_str())
            }) {
                Some(o) => {
                    o.push(d);
                }
                None => {
                    tracing::warn!("alerts: channel #{c} is not running; a message was not sent")
                }
            }
        }
    }

    /// Subscriptions whose GPUs are free now are told (into `batch`) and returned to be
    /// removed, as are expired ones.
    fn check_subscriptions(
        &self,
        hub: &Hub,
        now: u64,
        batch: &mut Batch,
        log: &mut Vec<Record>,
    ) -> Vec<u64> {
        let subs = self
            .subs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if subs.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        for s in &subs {
            if now >= s.expires_ms {
                tracing::info!("alerts: subscription {} ({}) expired", s.id, s.by);
                done.push(s.id);
                continue;
            }
            let q = free::Query {
                criteria: free::Criteria {
                    min_mem: s.min_mem,
                    ..hub.default_criteria()
                },
                free_only: true,
                count: s.count as usize,
                ..free::Query::default()
            };
            let pattern = s.host.as_ref().map(|h| wildmatch::WildMatch::new(h));
            let rows = hub.gpu_rows(&q);
            let Some(first) = rows
                .iter()
                .find(|r| pattern.as_ref().is_none_or(|p| p.matches(&r.host)))
            else {
                continue;
            };
            let host = first.host.clone();
            let on_host: Vec<&free::GpuRow> = rows
                .iter()
                .filter(|r| r.host == host)
                .take(s.count as usize)
                .collect();
            let uuids: Vec<&str> = on_host.iter().map(|r| r.uuid.as_str()).collect();
            let indices: Vec<String> = on_host.iter().map(|r| r.index.to_string()).collect();
            let summary = format!(
                "{} GPU(s) with at least {} free are free on {host}: {} (CUDA_VISIBLE_DEVICES={}); asked by {}",
                s.count,
                free::human_bytes(s.min_mem),
                indices.join(", "),
                uuids.join(","),
                s.by
            );
            let user = match &s.target {
                Target::User(u) => u.clone(),
                Target::Channel(_) => String::new(),
            };
            let item = Item {
                record: Record {
                    rule: "gpus_free".to_owned(),
                    kind: "gpus_free".to_owned(),
                    entity: format!("subscription/{}", s.id),
                    phase: Phase::Firing,
                    since_ms: s.created_ms,
                    fired_ms: now,
                    resolved_ms: 0,
                    labels: Labels {
                        host: host.clone(),
                        user: user.clone(),
                        ..Labels::default()
                    },
                    summary,
                    value: Some(f64::from(s.count)),
                    told: 0,
                    notified_ms: now,
                    stored: false,
                },
                phase: Phase::Firing,
                repeat: false,
            };
            match &s.target {
                Target::User(u) => {
                    for (c, to, mention) in route::contacts_of(&self.cfg, u, &[]) {
                        batch.add(c, to, mention, Some(item.clone()), None);
                    }
                }
                Target::Channel(name) => {
                    if let Some(c) = self.cfg.channel(name) {
                        batch.add(c, None, None, Some(item.clone()), None);
                    }
                }
            }
            tracing::info!(
                "alerts: subscription {} told: {}",
                s.id,
                item.record.summary
            );
            // In the log, so that "told" is told apart from "expired" or "cancelled".
            log.push(item.record);
            done.push(s.id);
        }
        done
    }

    /// An admin forgot `host`: its alerts go, untold.
    pub fn forget_host(&self, host: &str) {
        let gone = lock(&self.engine).forget_host(host);
        lock(&self.known).forget(host);
        if let Err(e) = lock(&self.store).forget_host(host) {
            tracing::error!("alerts: forgetting {host}: {e}");
        }
        if !gone.is_empty() {
            self.firing
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|r| r.labels.host != host);
        }
    }

    /// Alerts firing as of the last cycle.
    pub fn firing(&self) -> Vec<Record> {
        self.firing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where `user` is told, in words ("email owner@lab", "channel alice-bot").
    pub fn contact_names(&self, user: &str) -> Vec<String> {
        route::contacts_of(&self.cfg, user, &[])
            .into_iter()
            .filter_map(|(c, to, mention)| {
                let ch = self.cfg.channels.get(c)?;
                Some(match (to, mention) {
                    (Some(addr), _) => format!("{} {addr}", ch.kind.as_str()),
                    (None, Some(m)) => format!("{} @{m} on {}", ch.kind.as_str(), ch.name),
                    (None, None) => format!("channel {}", ch.name),
                })
            })
            .collect()
    }

    /// Channels whose last send failed, with the error.
    pub fn failing_channels(&self) -> Vec<(String, String)> {
        let outboxes = self.outboxes.read().unwrap_or_else(PoisonError::into_inner);
        outboxes
            .iter()
            .filter_map(|o| {
                let e = o
                    .counters
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                (!e.is_empty()).then(|| (o.name.clone(), e))
            })
            .collect()
    }

    /// (channel, sent, failed, retried, dropped) per running channel.
    pub fn channel_counters(&self) -> Vec<(String, u64, u64, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let outboxes = self.outboxes.read().unwrap_or_else(PoisonError::into_inner);
        outboxes
            .iter()
            .map(|o| {
                let c = &o.counters;
                (
                    o.name.clone(),
                    c.sent.load(Relaxed),
                    c.failed.load(Relaxed),
                    c.retried.load(Relaxed),
                    c.dropped.load(Relaxed),
                )
            })
            .collect()
    }

    pub fn overview(&self, recent: usize) -> Result<Overview, AlertsError> {
        let (mut firing, mut pending): (Vec<Record>, Vec<Record>) = {
            let engine = lock(&self.engine);
            engine
                .records()
                .filter(|r| r.phase != Phase::Resolved)
                .cloned()
                .partition(|r| r.phase == Phase::Firing)
        };
        firing.sort_by(|a, b| b.fired_ms.cmp(&a.fired_ms).then(a.entity.cmp(&b.entity)));
        pending.sort_by(|a, b| a.since_ms.cmp(&b.since_ms).then(a.entity.cmp(&b.entity)));
        let now = now_ms();
        let silences = self
            .silences
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let view = |record: Record| AlertView {
            silenced_until_ms: silences
                .iter()
                .filter(|s| s.matches(&record, now))
                .map(|s| s.until_ms)
                .max(),
            record,
        };
        let firing = firing.into_iter().map(view).collect();
        let pending = pending.into_iter().map(view).collect();
        let recent = lock(&self.store).log(recent)?;
        let outboxes = self.outboxes.read().unwrap_or_else(PoisonError::into_inner);
        let channels = self
            .cfg
            .channels
            .iter()
            .map(|c| {
                let o = outboxes.iter().find(|o| o.name == c.name);
                let n = |f: fn(&worker::Counters) -> &std::sync::atomic::AtomicU64| {
                    o.map_or(0, |o| {
                        f(&o.counters).load(std::sync::atomic::Ordering::Relaxed)
                    })
                };
                ChannelView {
                    name: c.name.clone(),
                    kind: c.kind.as_str(),
                    sent: n(|c| &c.sent),
                    failed: n(|c| &c.failed),
                    dropped: n(|c| &c.dropped),
                    digests: n(|c| &c.digests),
                    last_error: o
                        .map(|o| {
                            o.counters
                                .last_error
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .clone()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Overview {
            generated_ms: now,
            firing,
            pending,
            recent,
            subscriptions: self
                .subs
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            silences,
            channels,
            rules: self
                .cfg
                .rules
                .iter()
                .map(|r| RuleView {
                    name: r.name.clone(),
                    kind: r.kind.as_str(),
                    for_s: r.for_.as_secs_f64(),
                })
                .collect(),
            users: self
                .cfg
                .users
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(n, _)| n.clone())
                .collect(),
        })
    }

    /// Adds a subscription; returns it and the token that cancels it.
    pub fn subscribe(&self, s: NewSubscription) -> Result<(Subscription, String), AlertsError> {
        if s.count == 0 || s.count > 64 {
            return Err(AlertsError::Invalid("count: 1 to 64 GPUs".to_owned()));
        }
        if s.expires.is_zero() || s.expires > MAX_SUBSCRIPTION_LIFE {
            return Err(AlertsError::Invalid(
                "expires: above 0 and at most 7 days".to_owned(),
            ));
        }
        if let Some(h) = &s.host {
            if h.is_empty() || h.len() > 128 || h.chars().any(char::is_control) {
                return Err(AlertsError::Invalid(
                    "host: 1 to 128 printable characters".to_owned(),
                ));
            }
        }
        // Room for "user@<128-byte host id> (hmonitor wait --notify)".
        if s.by.len() > 256 || s.by.chars().any(char::is_control) {
            return Err(AlertsError::Invalid(
                "by: at most 256 printable characters".to_owned(),
            ));
        }
        match &s.target {
            Target::User(u) => {
                if !route::reachable(&self.cfg, u) {
                    return Err(AlertsError::Invalid(format!(
                        "user {u:?} has no contact in [users] (ask an admin to add one)"
                    )));
                }
            }
            Target::Channel(c) => {
                if self.cfg.channel(c).is_none() {
                    return Err(AlertsError::Invalid(format!("no channel {c:?}")));
                }
            }
        }
        let mut subs = self.subs.write().unwrap_or_else(PoisonError::into_inner);
        if subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(AlertsError::Full(format!(
                "{MAX_SUBSCRIPTIONS} subscriptions wait already"
            )));
        }
        if subs.iter().filter(|o| o.target == s.target).count() >= MAX_SUBSCRIPTIONS_PER_TARGET {
            return Err(AlertsError::Full(format!(
                "{MAX_SUBSCRIPTIONS_PER_TARGET} subscriptions wait for this contact already"
            )));
        }
        let token = hex(&rand::random::<[u8; 16]>());
        let now = now_ms();
        let mut sub = Subscription {
            id: 0,
            count: s.count,
            min_mem: s.min_mem,
            host: s.host,
            target: s.target,
            created_ms: now,
            expires_ms: now
                .saturating_add(u64::try_from(s.expires.as_millis()).unwrap_or(u64::MAX)),
            by: s.by,
            cancel_hash: hash(&token),
        };
        sub.id = lock(&self.store).add_subscription(&sub)?;
        subs.push(sub.clone());
        tracing::info!("alerts: subscription {} added by {}", sub.id, sub.by);
        Ok((sub, token))
    }

    /// Cancels subscription `id`: with its token, or as an admin.
    pub fn unsubscribe(
        &self,
        id: u64,
        token: Option<&str>,
        admin: bool,
    ) -> Result<(), AlertsError> {
        let mut subs = self.subs.write().unwrap_or_else(PoisonError::into_inner);
        let Some(pos) = subs.iter().position(|s| s.id == id) else {
            return Err(AlertsError::NotFound("subscription"));
        };
        let ok = admin
            || token.is_some_and(|t| {
                // Through the one auth module: constant time, as for every token.
                hmonitor_common::auth::token_matches(
                    hash(t).as_bytes(),
                    subs[pos].cancel_hash.as_bytes(),
                )
            });
        if !ok {
            return Err(AlertsError::Forbidden);
        }
        lock(&self.store).remove_subscription(id)?;
        subs.remove(pos);
        Ok(())
    }

    pub fn silence(&self, mut s: Silence, span: Duration) -> Result<u64, AlertsError> {
        if span.is_zero() || span > MAX_SILENCE {
            return Err(AlertsError::Invalid(
                "for: above 0 and at most 30 days".to_owned(),
            ));
        }
        if let Some(r) = &s.rule {
            if !self.cfg.rules.iter().any(|x| x.name == *r) {
                return Err(AlertsError::Invalid(format!("no rule {r:?}")));
            }
        }
        if s.comment.len() > 500 || s.host.as_ref().is_some_and(|h| h.len() > 128) {
            return Err(AlertsError::Invalid(
                "comment: at most 500 bytes; host: at most 128".to_owned(),
            ));
        }
        let mut silences = self
            .silences
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if silences.len() >= MAX_SILENCES {
            return Err(AlertsError::Full(format!(
                "{MAX_SILENCES} silences exist already"
            )));
        }
        let now = now_ms();
        s.created_ms = now;
        s.until_ms = now.saturating_add(u64::try_from(span.as_millis()).unwrap_or(u64::MAX));
        s.id = lock(&self.store).add_silence(&s)?;
        silences.push(s.clone());
        Ok(s.id)
    }

    pub fn unsilence(&self, id: u64) -> Result<(), AlertsError> {
        let mut silences = self
            .silences
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(pos) = silences.iter().position(|s| s.id == id) else {
            return Err(AlertsError::NotFound("silence"));
        };
        lock(&self.store).remove_silence(id)?;
        silences.remove(pos);
        Ok(())
    }
}

/// Sends a test message on the channel named `name` (`hmonitor-hub alerts test`), once,
/// without retries: the answer says whether the configuration works.
pub async fn test_channel(cfg: &AlertsConfig, name: &str) -> Result<(), AlertsError> {
    let Some(c) = cfg.channels.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = cfg.channels.iter().map(|c| c.name.as_str()).collect();
        return Err(AlertsError::Invalid(format!(
            "no channel {name:?} (configured: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let style = Style {
        tz: jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        page_url: cfg.page_url.clone(),
    };
    let sender = Sender::new(c.clone(), style.clone())
        .map_err(|e| AlertsError::Channel(name.to_owned(), e))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let d = Delivery {
        to: None,
        mentions: Vec::new(),
        items: Vec::new(),
        at_ms: now_ms(),
        text: Some((
            "[hmonitor] test message".to_owned(),
            format!(
                "A test of alert channel {name:?} ({}) from hmonitor-hub on {host}, {}.",
                c.kind.as_str(),
                style.time(now_ms())
            ),
        )),
    };
    sender
        .send(&d)
        .await
        .map_err(|e| AlertsError::Channel(name.to_owned(), e))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}
