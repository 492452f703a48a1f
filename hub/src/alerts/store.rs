//! The alerts' SQLite file (`alerts.db` in the data directory): live records, the log of
//! transitions, hosts seen, subscriptions and silences. Written once per cycle that changed
//! something, in one transaction, before any message about it is sent: a restart resumes
//! from exactly what was told.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::engine::Step;
use super::model::{Labels, Phase, Record, Silence, Subscription, Target};

/// Log entries kept (the oldest go first).
const LOG_KEEP: i64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("alerts database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("alerts database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Subscription and silence ids are never reused (AUTOINCREMENT): a page holding the cancel
/// token of a subscription long gone must not take a new one with the same id for its own.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    rule TEXT NOT NULL, entity TEXT NOT NULL, kind TEXT NOT NULL, phase TEXT NOT NULL,
    since_ms INTEGER NOT NULL, fired_ms INTEGER NOT NULL, resolved_ms INTEGER NOT NULL,
    host TEXT NOT NULL, gpu INTEGER, gpu_uuid TEXT NOT NULL, user TEXT NOT NULL,
    pid INTEGER, process TEXT NOT NULL, mount TEXT NOT NULL,
    summary TEXT NOT NULL, value REAL, told INTEGER NOT NULL, notified_ms INTEGER NOT NULL,
    PRIMARY KEY (rule, entity)
);
CREATE TABLE IF NOT EXISTS alert_log (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL,
    rule TEXT NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL, phase TEXT NOT NULL,
    since_ms INTEGER NOT NULL, host TEXT NOT NULL, gpu INTEGER, user TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS known_hosts (id TEXT PRIMARY KEY, last_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, count INTEGER NOT NULL, min_mem INTEGER NOT NULL, host TEXT,
    target_kind TEXT NOT NULL, target TEXT NOT NULL, created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, by TEXT NOT NULL, cancel_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, host TEXT, gpu INTEGER, until_ms INTEGER NOT NULL,
    comment TEXT NOT NULL, created_ms INTEGER NOT NULL
);
";

/// One line of the alert log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogEntry {
    pub at_ms: u64,
    pub rule: String,
    pub kind: String,
    pub entity: String,
    pub phase: Phase,
    pub since_ms: u64,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub summary: String,
}

pub struct Store {
    conn: Connection,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("alerts.db");
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        if let Err(source) = std::fs::create_dir_all(dir) {
            return Err(StoreError::Open {
                path,
                source: rusqlite::Error::InvalidPath(source.to_string().into()),
            });
        }
        let conn = open(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { conn })
    }

    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT rule, entity, kind, phase, since_ms, fired_ms, resolved_ms, host, gpu,
                    gpu_uuid, user, pid, process, mount, summary, value, told, notified_ms
             FROM alerts",
        )?;
        let rows = st.query_map([], |r| {
            let phase: String = r.get(3)?;
            Ok(Record {
                rule: r.get(0)?,
                entity: r.get(1)?,
                kind: r.get(2)?,
                phase: Phase::parse(&phase).unwrap_or(Phase::Pending),
                since_ms: u(r.get(4)?),
                fired_ms: u(r.get(5)?),
                resolved_ms: u(r.get(6)?),
                labels: Labels {
                    host: r.get(7)?,
                    gpu: r.get(8)?,
                    gpu_uuid: r.get(9)?,
                    user: r.get(10)?,
                    pid: r.get(11)?,
                    process: r.get(12)?,
                    mount: r.get(13)?,
                },
                summary: r.get(14)?,
                value: r.get(15)?,
                told: r.get(16)?,
                notified_ms: u(r.get(17)?),
                stored: true,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a cycle's changes, and hosts whose last report changed, in one transaction.
    pub fn apply(
        &mut self,
        step: &Step,
        hosts: &[(String, u64)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT OR REPLACE INTO alerts VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?;
            for r in &step.upsert {
                up.execute(params![
                    r.rule,
                    r.entity,
                    r.kind,
                    r.phase.as_str(),
                    i(r.since_ms),
                    i(r.fired_ms),
                    i(r.resolved_ms),
                    r.labels.host,
                    r.labels.gpu,
                    r.labels.gpu_uuid,
                    r.labels.user,
                    r.labels.pid,
                    r.labels.process,
                    r.labels.mount,
                    r.summary,
                    r.value,
                    r.told,
                    i(r.notified_ms),
                ])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND entity = ?2")?;
            for (rule, entity) in &step.remove {
                del.execute(params![rule, entity])?;
            }
            let mut log = tx.prepare_cached(
                "INSERT INTO alert_log (at_ms, rule, kind, entity, phase, since_ms, host, gpu, user, summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in &step.log {
                log.execute(params![
                    i(now_ms),
                    r.rule,
                    r.kind,
                    r.entity,
                    r.phase.as_str(),
                    i(r.since_ms),
                    r.labels.host,
                    r.labels.gpu,
                    r.labels.user,
                    r.summary
                ])?;
            }
            let mut known =
                tx.prepare_cached("INSERT OR REPLACE INTO known_hosts VALUES (?1, ?2)")?;
            for (id, seen) in hosts {
                known.execute(params![id, i(*seen)])?;
            }
            if !step.log.is_empty() {
                tx.execute(
                    "DELETE FROM alert_log WHERE id <= (SELECT MAX(id) FROM alert_log) - ?1",
                    [LOG_KEEP],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove(&mut self, keys: &[(String, String)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND entity = ?2")?;
            for (rule, entity) in keys {
                del.execute(params![rule, entity])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn forget_host(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM known_hosts WHERE id = ?1", [id])?;
        self.conn
            .execute("DELETE FROM alerts WHERE host = ?1", [id])?;
        Ok(())
    }

    pub fn known_hosts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, last_seen_ms FROM known_hosts")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, u(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest `limit` log entries, newest first.
    pub fn log(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms, rule, kind, entity, phase, since_ms, host, gpu, user, summary
             FROM alert_log ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            let phase: String = r.get(4)?;
            Ok(LogEntry {
                at_ms: u(r.get(0)?),
                rule: r.get(1)?,
                kind: r.get(2)?,
                entity: r.get(3)?,
                phase: Phase::parse(&phase).unwrap_or(Phase::Firing),
                since_ms: u(r.get(5)?),
                host: r.get(6)?,
                gpu: r.get(7)?,
                user: r.get(8)?,
                summary: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, count, min_mem, host, target_kind, target, created_ms, expires_ms, by, cancel_hash
             FROM subscriptions ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            let kind: String = r.get(4)?;
            let target: String = r.get(5)?;
            Ok(Subscription {
                id: u(r.get(0)?),
                count: r.get(1)?,
                min_mem: u(r.get(2)?),
                host: r.get(3)?,
                target: if kind == "user" {
                    Target::User(target)
                } else {
                    Target::Channel(target)
                },
                created_ms: u(r.get(6)?),
                expires_ms: u(r.get(7)?),
                by: r.get(8)?,
                cancel_hash: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a new subscription; returns its id.
    pub fn add_subscription(&mut self, s: &Subscription) -> Result<u64, StoreError> {
        let (kind, target) = match &s.target {
            Target::User(u) => ("user", u),
            Target::Channel(c) => ("channel", c),
        };
        self.conn.execute(
            "INSERT INTO subscriptions (count, min_mem, host, target_kind, target, created_ms, expires_ms, by, cancel_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![s.count, i(s.min_mem), s.host, kind, target, i(s.created_ms), i(s.expires_ms), s.by, s.cancel_hash],
        )?;
        Ok(u(self.conn.last_insert_rowid()))
    }

    pub fn remove_subscription(&mut self, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM subscriptions WHERE id = ?1", [i(id)])?
            > 0)
    }

    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, rule, host, gpu, until_ms, comment, created_ms FROM silences ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Silence {
                id: u(r.get(0)?),
                rule: r.get(1)?,
                host: r.get(2)?,
                gpu: r.get(3)?,
                until_ms: u(r.get(4)?),
                comment: r.get(5)?,
                created_ms: u(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn add_silence(&mut self, s: &Silence) -> Result<u64, StoreError> {
        self.conn.execute(
            "INSERT INTO silences (rule, host, gpu, until_ms, comment, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.rule, s.host, s.gpu, i(s.until_ms), s.comment, i(s.created_ms)],
        )?;
        Ok(u(self.conn.last_insert_rowid()))
    }

    pub fn remove_silence(&mut self, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM silences WHERE id = ?1", [i(id)])?
            > 0)
    }

    /// Drops silences that have ended.
    pub fn expire_silences(&mut self, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM silences WHERE until_ms <= ?1", [i(now_ms)])?;
        Ok(())
    }

    pub fn has_subscription(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM subscriptions WHERE id = ?1", [i(id)], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("opens");
        let r = Record {
            rule: "hot".into(),
            kind: "gpu_temp".into(),
            entity: "h1/gpu0".into(),
            phase: Phase::Firing,
            since_ms: 1,
            fired_ms: 2,
            resolved_ms: 0,
            labels: Labels {
                host: "h1".into(),
                gpu: Some(0),
                ..Labels::default()
            },
            summary: "GPU 0 is hot".into(),
            value: Some(91.0),
            told: 1,
            notified_ms: 2,
            stored: true,
        };
        let step = Step {
            upsert: vec![r.clone()],
            log: vec![r.clone()],
            ..Step::default()
        };
        s.apply(&step, &[("h1".into(), 5)], 3).expect("applies");
        drop(s);
        let s = Store::open(dir.path()).expect("reopens");
        assert_eq!(s.records().expect("reads"), vec![r]);
        assert_eq!(s.known_hosts().expect("reads"), vec![("h1".to_owned(), 5)]);
        let log = s.log(10).expect("reads");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].phase, Phase::Firing);
    }
}
