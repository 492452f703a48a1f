//! What a hub connection logs: each change once, repeated failures thinned out, refusals
//! once per reason.

use std::collections::HashSet;
use std::time::Duration;

use super::conn::{ConnError, Stats};

/// While a hub stays unreachable, every this-many failed attempt is logged...
pub(super) const LOG_EVERY_NTH_FAILURE: u32 = 10;
/// ...or the next one after this long, whichever comes first.
pub(super) const LOG_FAILURE_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// Distinct refusal reasons remembered for "log once" per hub; a hub inventing a new reason
/// each time must not grow memory.
pub(super) const REFUSALS_REMEMBERED: usize = 16;

/// A delay as a person reads it: "250 ms", "18 s".
pub(super) fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Logging for one hub: one line per state change, and no flood while it stays down.
pub(super) struct HubLog {
    pub(super) hub: String,
    /// Failed attempts since the last accepted connection.
    pub(super) failures: u32,
    pub(super) last_failure_logged: Option<std::time::Instant>,
    pub(super) refusals: HashSet<String>,
}

impl HubLog {
    pub(super) fn new(hub: String) -> Self {
        Self {
            hub,
            failures: 0,
            last_failure_logged: None,
            refusals: HashSet::new(),
        }
    }

    pub(super) fn accepted(&mut self, a: &hmonitor_proto::Accepted, interval: Duration) {
        let after = match self.failures {
            0 => String::new(),
            1 => " after 1 failed attempt".to_owned(),
            n => format!(" after {n} failed attempts"),
        };
        tracing::info!(
            "connected to hub {} (hub {}, host id {:?}, a snapshot every {} ms){after}",
            self.hub,
            if a.hub_version.is_empty() {
                "version unknown"
            } else {
                &a.hub_version
            },
            a.host_id,
            interval.as_millis()
        );
        self.failures = 0;
        self.last_failure_logged = None;
        self.refusals.clear();
    }

    pub(super) fn lost(
        &mut self,
        accepted_for: Duration,
        why: &ConnError,
        stats: Stats,
        delay: Duration,
    ) {
        tracing::info!(
            "disconnected from hub {} after {} s: {why} ({} snapshots sent, {} dropped); \
             reconnecting in {}",
            self.hub,
            accepted_for.as_secs(),
            stats.sent,
            stats.dropped,
            human(delay)
        );
    }

    pub(super) fn failed(&mut self, why: &ConnError, delay: Duration) {
        self.failures += 1;
        let due = self.failures == 1
            || self.failures.is_multiple_of(LOG_EVERY_NTH_FAILURE)
            || self
                .last_failure_logged
                .is_none_or(|t| t.elapsed() >= LOG_FAILURE_AT_LEAST_EVERY);
        if due {
            tracing::warn!(
                "cannot reach hub {}: {why} (attempt {}; retrying in {})",
                self.hub,
                self.failures,
                human(delay)
            );
            self.last_failure_logged = Some(std::time::Instant::now());
        } else {
            tracing::debug!("cannot reach hub {}: {why}", self.hub);
        }
    }

    pub(super) fn refused(&mut self, reason: &str, retry: bool, delay: Duration) {
        self.failures += 1;
        let new = self.refusals.len() < REFUSALS_REMEMBERED && self.refusals.insert(reason.into());
        if new {
            let hint = if retry {
                ""
            } else {
                "; retrying will not help until a configuration changes"
            };
            tracing::warn!(
                "hub {} refused this agent: {reason}{hint} (next attempt in {})",
                self.hub,
                human(delay)
            );
        } else {
            tracing::debug!("hub {} refused this agent again: {reason}", self.hub);
        }
    }
}
