//! Refusals logged at a bounded rate: an impostor or a flood retrying every second must not
//! fill the journal, yet the first refusal of each kind (and of each id) is always logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per key within this; the lines held back are counted into the next one.
pub const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// Keys remembered at most; past it the oldest half is forgotten (their next refusal is
/// logged again, which is harmless).
const MAX_KEYS: usize = 10_000;

/// Bytes of a key kept: keys hold what peers send (host ids), which must not make the map
/// large.
const MAX_KEY_BYTES: usize = 160;

/// Lines logged per second over all keys at most (many new keys at once: a flood of ids).
const MAX_LINES_PER_SEC: u32 = 20;

#[derive(Default)]
pub struct RefusalLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// key → (when last logged, refusals held back since)
    keys: HashMap<String, (Instant, u64)>,
    second: Option<Instant>,
    lines_this_second: u32,
    /// Lines held back by the per-second budget, reported with the next line.
    held_back: u64,
}

impl RefusalLog {
    /// Logs `line()` as a warning unless `key` was logged within [`REPEAT_AFTER`] or the
    /// per-second budget is spent; `line` is built only when it is logged.
    pub fn warn(&self, key: &str, line: impl FnOnce() -> String) {
        if let Some(note) = self.admit(key, Instant::now()) {
            tracing::warn!("{}{note}", line());
        }
    }

    /// `Some(suffix)` when a line for `key` may be logged now (the suffix counts the lines
    /// held back); `None` when it is held back.
    fn admit(&self, key: &str, now: Instant) -> Option<String> {
        let mut end = key.len().min(MAX_KEY_BYTES);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let key = &key[..end];
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *g;
        if let Some((last, held)) = inner.keys.get_mut(key) {
            if now.duration_since(*last) < REPEAT_AFTER {
                *held += 1;
                return None;
            }
        }
        if inner
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            inner.second = Some(now);
            inner.lines_this_second = 0;
        }
        if inner.lines_this_second >= MAX_LINES_PER_SEC {
            inner.held_back += 1;
            return None;
        }
        inner.lines_this_second += 1;
        if inner.keys.len() >= MAX_KEYS {
            let mut ages: Vec<Instant> = inner.keys.values().map(|(t, _)| *t).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            inner.keys.retain(|_, (t, _)| *t > cut);
        }
        let held = inner
            .keys
            .insert(key.to_owned(), (now, 0))
            .map_or(0, |(_, h)| h);
        let all = std::mem::take(&mut inner.held_back);
        Some(match (held, all) {
            (0, 0) => String::new(),
            (h, 0) => format!(" ({h} more like it in the last minute not logged)"),
            (h, a) => format!(" ({h} more like it, and {a} other refusals, not logged)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_logged_once_a_minute_and_a_flood_of_keys_is_capped() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit("id:a", t0).as_deref(), Some(""));
        for _ in 0..5 {
            assert_eq!(log.admit("id:a", t0 + Duration::from_secs(1)), None);
        }
        let later = log.admit("id:a", t0 + REPEAT_AFTER + Duration::from_secs(1));
        assert!(later.expect("logged again").contains("5 more"));

        let t1 = t0 + Duration::from_secs(600);
        let logged = (0..1000)
            .filter(|i| log.admit(&format!("id:{i}"), t1).is_some())
            .count();
        assert_eq!(logged, MAX_LINES_PER_SEC as usize);
        let next = log.admit("id:new", t1 + Duration::from_secs(2));
        assert!(next.expect("budget renewed").contains("other refusals"));
    }
}
