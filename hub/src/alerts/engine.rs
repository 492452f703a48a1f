//! The state machine of every (rule, entity): pending → firing → resolved, and who is told
//! when. Pure: time, quiet hours and silences come in through [`Ctx`], so it is tested
//! without clocks or a hub; the runner persists what [`Step`] says changed before anything is
//! sent.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::config::{Rule, RuleKind};
use super::model::{Level, Obs, Phase, Record, TOLD_ADMINS, TOLD_OWNER};

/// What a cycle needs to know besides the observations.
pub struct Ctx<'a> {
    pub now_ms: u64,
    /// Minute of the day in the quiet-hours time zone.
    pub minute: u16,
    pub silenced: &'a dyn Fn(&Record) -> bool,
    /// Whether a user has a contact to be told at (else the admins are told at once).
    pub reachable: &'a dyn Fn(&str) -> bool,
}

/// A message to send about one alert.
#[derive(Debug, Clone)]
pub struct Notice {
    pub record: Record,
    /// Firing or resolved.
    pub phase: Phase,
    /// [`TOLD_ADMINS`] | [`TOLD_OWNER`]: who this message is for.
    pub to: u8,
    /// A reminder of an alert already told.
    pub repeat: bool,
}

/// What one cycle changed.
#[derive(Debug, Default)]
pub struct Step {
    /// Records to write (new, or phase or told changed).
    pub upsert: Vec<Record>,
    /// (rule, entity) of records to delete.
    pub remove: Vec<(String, String)>,
    /// Transitions for the alert log (fired, resolved).
    pub log: Vec<Record>,
    pub notices: Vec<Notice>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty() && self.log.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Engine {
    /// rule name → entity → record.
    records: HashMap<String, HashMap<String, Record>>,
}

/// A pending record is written to the store once it has been pending this long: a restart
/// then resumes its `for` (an idle hog's hour), while values that only touch a threshold for
/// a moment, as most do, never cost a write.
pub const PERSIST_PENDING_AFTER: Duration = Duration::from_secs(60);

/// Marks `r` stored and queues it for the store.
fn save(step: &mut Step, r: &mut Record) {
    r.stored = true;
    step.upsert.push(r.clone());
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Engine {
    /// Starts from the stored records; those of rules no longer configured are returned, to be
    /// deleted.
    pub fn new(stored: Vec<Record>, rules: &[Rule]) -> (Self, Vec<(String, String)>) {
        let mut e = Self::default();
        let mut gone = Vec::new();
        for r in stored {
            if rules
                .iter()
                .any(|rule| rule.name == r.rule && rule.kind.as_str() == r.kind)
            {
                e.records
                    .entry(r.rule.clone())
                    .or_default()
                    .insert(r.entity.clone(), r);
            } else {
                gone.push(r.key());
            }
        }
        (e, gone)
    }

    /// Every record (pending, firing, and resolved ones waiting to be told).
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().flat_map(HashMap::values)
    }

    pub fn len(&self) -> usize {
        self.records.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Host → indices of the rules with a record on it (what [`super::rules::evaluate`] needs
    /// hysteresis values for).
    pub fn tracked(&self, rules: &[Rule]) -> HashMap<String, Vec<usize>> {
        let mut out: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            for r in self
                .records
                .get(&rule.name)
                .into_iter()
                .flat_map(HashMap::values)
            {
                let v = out.entry(r.labels.host.clone()).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        out
    }

    /// Drops every record of `host` (an admin forgot it): nobody is told.
    pub fn forget_host(&mut self, host: &str) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for m in self.records.values_mut() {
            m.retain(|_, r| {
                let keep = r.labels.host != host;
                if !keep {
                    gone.push(r.key());
                }
                keep
            });
        }
        gone
    }

    /// One cycle: the observations move records through their phases; records not observed
    /// end where `judge` says their condition can be judged; then who is due a message.
    pub fn step(
        &mut self,
        rules: &[Rule],
        obs: Vec<Obs>,
        judge: impl Fn(&Rule, &Record) -> bool,
        ctx: &Ctx<'_>,
    ) -> Step {
        let now = ctx.now_ms;
        let mut step = Step::default();
        let mut seen: HashSet<(usize, String)> = HashSet::new();
        for o in obs {
            let Some(rule) = rules.get(o.rule) else {
                continue;
            };
            let m = self.records.entry(rule.name.clone()).or_default();
            match m.get_mut(&o.entity) {
                None => {
                    if o.level != Level::Active {
                        continue;
                    }
                    let since = o.since_ms.unwrap_or(now).min(now);
                    let mut r = Record {
                        rule: rule.name.clone(),
                        kind: rule.kind.as_str().to_owned(),
                        entity: o.entity.clone(),
                        phase: Phase::Pending,
                        since_ms: since,
                        fired_ms: 0,
                        resolved_ms: 0,
                        labels: o.labels,
                        summary: o.summary,
                        value: o.value,
                        told: 0,
                        notified_ms: 0,
                        stored: false,
                    };
                    if now.saturating_sub(since) >= ms(rule.for_) {
                        r.phase = Phase::Firing;
                        r.fired_ms = now;
                        step.log.push(r.clone());
                    }
                    if r.phase == Phase::Firing {
                        save(&mut step, &mut r);
                    }
                    m.insert(o.entity.clone(), r);
                }
                Some(r) => {
                    r.summary = o.summary;
                    r.value = o.value;
                    r.labels = o.labels;
                    match (r.phase, o.level) {
                        (Phase::Pending, Level::Active) => {
                            if now.saturating_sub(r.since_ms) >= ms(rule.for_) {
                                r.phase = Phase::Firing;
                                r.fired_ms = now;
                                step.log.push(r.clone());
                                save(&mut step, r);
                            }
                        }
                        // Below the threshold: pending starts over.
                        (Phase::Pending, Level::Band) => {
                            if r.stored {
                                step.remove.push(r.key());
                            }
                            m.remove(&o.entity);
                            continue;
                        }
                        (Phase::Firing, _) | (Phase::Resolved, Level::Band) => {}
                        // It resolved but was not told yet (quiet hours) and is back: it is
                        // the same alert, still firing.
                        (Phase::Resolved, Level::Active) => {
                            r.phase = Phase::Firing;
                            r.resolved_ms = 0;
                            save(&mut step, r);
                        }
                    }
                }
            }
            seen.insert((o.rule, o.entity));
        }

        for (i, rule) in rules.iter().enumerate() {
            let Some(m) = self.records.get_mut(&rule.name) else {
                continue;
            };
            let mut drop = Vec::new();
            for (entity, r) in m.iter_mut() {
                if !seen.contains(&(i, entity.clone()))
                    && r.phase != Phase::Resolved
                    && judge(rule, r)
                {
                    match r.phase {
                        Phase::Pending => {
                            drop.push(entity.clone());
                            continue;
                        }
                        Phase::Firing => {
                            r.phase = Phase::Resolved;
                            r.resolved_ms = now;
                            step.log.push(r.clone());
                            save(&mut step, r);
                        }
                        Phase::Resolved => {}
                    }
                }
                if due(rule, r, ctx, &mut step) {
                    drop.push(entity.clone());
                }
            }
            for entity in drop {
                if let Some(r) = m.remove(&entity).filter(|r| r.stored) {
                    step.remove.push(r.key());
                }
            }
        }
        step
    }
}

/// Who is due a message about `r` now; records it in `r` and `step`. Returns true when the
/// record is done with (resolved and told, or nobody to tell).
fn due(rule: &Rule, r: &mut Record, ctx: &Ctx<'_>, step: &mut Step) -> bool {
    let now = ctx.now_ms;
    let quiet = rule.quiet.is_some_and(|q| q.contains(ctx.minute));
    match r.phase {
        Phase::Pending => {
            if !r.stored && now.saturating_sub(r.since_ms) >= ms(PERSIST_PENDING_AFTER) {
                save(step, r);
            }
            false
        }
        Phase::Firing => {
            if quiet || (ctx.silenced)(r) {
                return false;
            }
            let owner_first = rule.kind == RuleKind::IdleHog
                && !r.labels.user.is_empty()
                && (ctx.reachable)(&r.labels.user);
            let mut to = 0;
            if owner_first {
                if r.told & TOLD_OWNER == 0 {
                    to |= TOLD_OWNER;
                }
                let escalate = rule
                    .escalate_after
                    .is_none_or(|e| now >= r.fired_ms.saturating_add(ms(e)));
                if r.told & TOLD_ADMINS == 0 && escalate {
                    to |= TOLD_ADMINS;
                }
            } else if r.told & TOLD_ADMINS == 0 {
                to |= TOLD_ADMINS;
            }
            let mut repeat = false;
            if to == 0 {
                if let Some(every) = rule.repeat {
                    if r.told != 0 && now >= r.notified_ms.saturating_add(ms(every)) {
                        to = r.told;
                        repeat = true;
                    }
                }
            }
            if to != 0 {
                r.told |= to;
                r.notified_ms = now;
                save(step, r);
                step.notices.push(Notice {
                    record: r.clone(),
                    phase: Phase::Firing,
                    to,
                    repeat,
                });
            }
            false
        }
        Phase::Resolved => {
            if r.told == 0 || !rule.resolved || (ctx.silenced)(r) {
                return true;
            }
            if quiet {
                return false;
            }
            step.notices.push(Notice {
                record: r.clone(),
                phase: Phase::Resolved,
                to: r.told,
                repeat: false,
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{QuietHours, Scope};
    use crate::alerts::model::Labels;

    fn rule(kind: RuleKind, for_s: u64) -> Rule {
        Rule {
            name: kind.as_str().to_owned(),
            kind,
            for_: Duration::from_secs(for_s),
            repeat: None,
            resolved: true,
            quiet: None,
            notify: vec![0],
            scope: Scope::default(),
            threshold: 85.0,
            clear: 5.0,
            min_mem: 1 << 30,
            max_util: 5.0,
            escalate_after: None,
        }
    }

    fn obs(level: Level, user: &str) -> Obs {
        Obs {
            rule: 0,
            entity: "h1/gpu0".to_owned(),
            level,
            since_ms: None,
            labels: Labels {
                host: "h1".to_owned(),
                gpu: Some(0),
                user: user.to_owned(),
                ..Labels::default()
            },
            summary: "hot".to_owned(),
            value: Some(90.0),
        }
    }

    fn ctx(now_ms: u64) -> Ctx<'static> {
        Ctx {
            now_ms,
            minute: 12 * 60,
            silenced: &|_| false,
            reachable: &|u| u == "alice",
        }
    }

    /// Runs one cycle at `t` seconds with the condition at `level` (None: not found, judgeable).
    fn cycle(e: &mut Engine, rules: &[Rule], t: u64, level: Option<Level>) -> Step {
        let o = level.map(|l| vec![obs(l, "alice")]).unwrap_or_default();
        e.step(rules, o, |_, _| true, &ctx(t * 1000))
    }

    fn phases(s: &Step) -> Vec<&'static str> {
        s.notices.iter().map(|n| n.phase.as_str()).collect()
    }

    #[test]
    fn an_alert_fires_after_for_and_resolves_once() {
        let rules = [rule(RuleKind::GpuTemp, 10)];
        let mut e = Engine::default();
        assert!(phases(&cycle(&mut e, &rules, 0, Some(Level::Active))).is_empty());
        assert!(phases(&cycle(&mut e, &rules, 9, Some(Level::Active))).is_empty());
        assert_eq!(
            phases(&cycle(&mut e, &rules, 10, Some(Level::Active))),
            ["firing"]
        );
        assert!(phases(&cycle(&mut e, &rules, 11, Some(Level::Active))).is_empty());
        assert_eq!(phases(&cycle(&mut e, &rules, 12, None)), ["resolved"]);
        assert!(e.is_empty());
        assert!(phases(&cycle(&mut e, &rules, 13, None)).is_empty());
    }

    #[test]
    fn a_value_around_the_threshold_does_not_flap() {
        let rules = [rule(RuleKind::GpuTemp, 0)];
        let mut e = Engine::default();
        let mut told = Vec::new();
        for t in 0..100 {
            // 86, 84, 86, 84 …: over the threshold, then in the band below it.
            let level = if t % 2 == 0 {
                Level::Active
            } else {
                Level::Band
            };
            told.extend(phases(&cycle(&mut e, &rules, t, Some(level))));
        }
        assert_eq!(told, ["firing"]);
        assert_eq!(phases(&cycle(&mut e, &rules, 100, None)), ["resolved"]);
    }

    #[test]
    fn a_blip_below_the_threshold_restarts_pending() {
        let rules = [rule(RuleKind::GpuTemp, 10)];
        let mut e = Engine::default();
        let mut told = Vec::new();
        for t in 0..60 {
            let level = if t % 5 == 4 {
                Level::Band
            } else {
                Level::Active
            };
            told.extend(phases(&cycle(&mut e, &rules, t, Some(level))));
        }
        assert!(told.is_empty(), "never 10 s above: {told:?}");
    }

    #[test]
    fn unjudgeable_entities_neither_fire_nor_resolve() {
        let rules = [rule(RuleKind::GpuTemp, 0)];
        let mut e = Engine::default();
        assert_eq!(
            phases(&cycle(&mut e, &rules, 0, Some(Level::Active))),
            ["firing"]
        );
        let s = e.step(&rules, Vec::new(), |_, _| false, &ctx(5_000));
        assert!(s.notices.is_empty() && s.upsert.is_empty());
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn the_owner_is_told_first_and_the_admins_after_escalation() {
        let mut r = rule(RuleKind::IdleHog, 0);
        r.escalate_after = Some(Duration::from_secs(60));
        let rules = [r];
        let mut e = Engine::default();
        let s = cycle(&mut e, &rules, 0, Some(Level::Active));
        assert_eq!(
            s.notices.iter().map(|n| n.to).collect::<Vec<_>>(),
            [TOLD_OWNER]
        );
        assert!(cycle(&mut e, &rules, 59, Some(Level::Active))
            .notices
            .is_empty());
        let s = cycle(&mut e, &rules, 60, Some(Level::Active));
        assert_eq!(
            s.notices.iter().map(|n| n.to).collect::<Vec<_>>(),
            [TOLD_ADMINS]
        );
        let s = cycle(&mut e, &rules, 61, None);
        assert_eq!(
            s.notices.iter().map(|n| n.to).collect::<Vec<_>>(),
            [TOLD_ADMINS | TOLD_OWNER]
        );
    }

    #[test]
    fn an_owner_without_a_contact_goes_straight_to_the_admins() {
        let mut r = rule(RuleKind::IdleHog, 0);
        r.escalate_after = Some(Duration::from_secs(3600));
        let rules = [r];
        let mut e = Engine::default();
        let s = e.step(
            &rules,
            vec![obs(Level::Active, "bob")],
            |_, _| true,
            &ctx(0),
        );
        assert_eq!(
            s.notices.iter().map(|n| n.to).collect::<Vec<_>>(),
            [TOLD_ADMINS]
        );
    }

    #[test]
    fn quiet_hours_hold_messages_until_they_end() {
        let mut r = rule(RuleKind::GpuTemp, 0);
        r.quiet = Some(QuietHours::parse("22:00-08:00").expect("parses"));
        let rules = [r];
        let mut e = Engine::default();
        let night = |t: u64| Ctx {
            minute: 23 * 60,
            ..ctx(t)
        };
        let s = e.step(&rules, vec![obs(Level::Active, "")], |_, _| true, &night(0));
        assert!(s.notices.is_empty());
        let s = e.step(
            &rules,
            vec![obs(Level::Active, "")],
            |_, _| true,
            &ctx(1000),
        );
        assert_eq!(phases(&s), ["firing"]);
        // Fired and resolved within one night: nobody woken, nothing left.
        let mut e = Engine::default();
        e.step(&rules, vec![obs(Level::Active, "")], |_, _| true, &night(0));
        let s = e.step(&rules, Vec::new(), |_, _| true, &night(1000));
        assert!(s.notices.is_empty());
        assert!(e.is_empty());
    }

    #[test]
    fn a_restart_from_stored_records_repeats_nothing() {
        let rules = [rule(RuleKind::GpuTemp, 0)];
        let mut e = Engine::default();
        let s = cycle(&mut e, &rules, 0, Some(Level::Active));
        let stored: Vec<Record> = s.upsert.last().cloned().into_iter().collect();
        let (mut again, gone) = Engine::new(stored, &rules);
        assert!(gone.is_empty());
        assert!(cycle(&mut again, &rules, 5, Some(Level::Active))
            .notices
            .is_empty());
        assert_eq!(phases(&cycle(&mut again, &rules, 6, None)), ["resolved"]);
    }

    #[test]
    fn repeats_come_at_the_interval() {
        let mut r = rule(RuleKind::GpuTemp, 0);
        r.repeat = Some(Duration::from_secs(3600));
        let rules = [r];
        let mut e = Engine::default();
        let mut n = 0;
        for t in (0..=7200).step_by(60) {
            n += cycle(&mut e, &rules, t, Some(Level::Active)).notices.len();
        }
        assert_eq!(n, 3, "at 0, 1 h and 2 h");
    }

    #[test]
    fn brief_pendings_cost_no_write_and_long_ones_are_kept() {
        let rules = [rule(RuleKind::GpuTemp, 3600)];
        let mut e = Engine::default();
        for t in 0..30 {
            let level = if t % 2 == 0 {
                Some(Level::Active)
            } else {
                None
            };
            let s = cycle(&mut e, &rules, t, level);
            assert!(s.upsert.is_empty() && s.remove.is_empty(), "t={t}: {s:?}");
        }
        assert!(cycle(&mut e, &rules, 100, Some(Level::Active))
            .upsert
            .is_empty());
        let s = cycle(&mut e, &rules, 160, Some(Level::Active));
        assert_eq!(s.upsert.len(), 1, "pending for a minute: stored");
        assert!(cycle(&mut e, &rules, 161, Some(Level::Active))
            .upsert
            .is_empty());
        let s = cycle(&mut e, &rules, 162, None);
        assert_eq!(
            s.remove.len(),
            1,
            "a stored pending is removed from the store"
        );
    }
}
