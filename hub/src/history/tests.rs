//! The store on its own, with synthetic time: roll-ups against the raw data, retention, tier
//! choice at its boundaries, per-user sums from every tier, recovery after a restart.

use std::time::Duration;

use rusqlite::params;

use super::catalog::SeriesKind;
use super::query::{self, Tier};
use super::store::{Store, HOUR_MS, MINUTE_MS};
use super::{GpuRec, History, HistoryConfig, Record, Retention, UserRec, DB_FILE};

/// 2026-11-01 00:00:00 UTC: hour-aligned, so buckets are easy to name.
const T0: i64 = 1_793_491_200_000;
const STEP: i64 = 10_000;
const GIB: u64 = 1 << 30;

/// A deterministic, irregular reading.
fn wave(i: i64, k: i64) -> f64 {
    ((i * 37 + k * 11) % 101) as f64
}

/// Sample `i` of host `h`: 2 GPUs; GPU 1 has no utilization reading in minutes 10–14 of
/// every hour; alice holds both GPUs (4 GiB each) for the first 90 minutes, one of them idle,
/// at 40 % utilization and 500 W between them; bob GPU 1 (1 GiB) from minute 30 to 59, with no
/// utilization or power reading.
fn sample(i: i64) -> Record {
    let t = T0 + i * STEP;
    let minute = (i * STEP / MINUTE_MS) % 60;
    let elapsed_min = i * STEP / MINUTE_MS;
    let mut users = Vec::new();
    if elapsed_min < 90 {
        users.push(UserRec {
            user: "alice".into(),
            gpus: 2,
            gpu_mem: 8 * GIB,
            idle_gpus: 1,
            util_sum: Some(40.0),
            power_w: Some(500.0),
        });
    }
    if (30..60).contains(&elapsed_min) {
        users.push(UserRec {
            user: "bob".into(),
            gpus: 1,
            gpu_mem: GIB,
            ..Default::default()
        });
    }
    Record {
        host: "h".into(),
        t,
        dur_ms: STEP,
        host_vals: [
            Some(wave(i, 1) / 2.0),
            Some(1e9 + wave(i, 2)),
            Some(0.5),
            Some(7e9),
        ],
        gpus: (0..2)
            .map(|g| GpuRec {
                index: g,
                uuid: format!("GPU-{g}"),
                name: "NVIDIA H200".into(),
                vals: [
                    if g == 1 && (10..15).contains(&minute) {
                        None
                    } else {
                        Some(wave(i, i64::from(g)))
                    },
                    Some(1e10 + wave(i, 5) * 1e6),
                    Some(40.0 + wave(i, 6) / 10.0),
                    Some(300.0 + wave(i, 7)),
                ],
                held: elapsed_min < 90,
            })
            .collect(),
        users,
        ack: None,
    }
}

const HOURS: i64 = 3;
fn samples() -> Vec<Record> {
    (0..HOURS * 3600 * 1000 / STEP).map(sample).collect()
}

fn store(dir: &tempfile::TempDir, retention: Retention) -> Store {
    Store::open(&dir.path().join("h.sqlite"), retention).expect("open")
}

fn long() -> Retention {
    Retention {
        raw: Duration::from_secs(365 * 86400),
        minute: Duration::from_secs(365 * 86400),
        hour: Duration::from_secs(3 * 365 * 86400),
    }
}

/// mean and max of the readings in `[from, to)` of GPU `g`, column `c`.
fn expect(all: &[Record], g: usize, c: usize, from: i64, to: i64) -> (Option<f64>, Option<f64>) {
    let vals: Vec<f64> = all
        .iter()
        .filter(|r| r.t >= from && r.t < to)
        .filter_map(|r| r.gpus[g].vals[c])
        .collect();
    if vals.is_empty() {
        return (None, None);
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    (Some(mean), vals.iter().copied().reduce(f64::max))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn minute_and_hour_rollups_equal_the_mean_and_max_of_the_raw_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = store(&dir, long());
    let all = samples();
    for chunk in all.chunks(500) {
        st.insert(chunk).expect("insert");
    }
    let end = T0 + HOURS * HOUR_MS;
    // Not yet: the last minute is still within its grace.
    st.rollup(end).expect("rollup");
    assert!(st.pending().0 > 0, "the open minute waits");
    st.rollup(end + HOUR_MS).expect("rollup");
    assert_eq!(st.pending(), (0, 0));

    let sid = st.sid(SeriesKind::Gpu, "h/gpu1", "h").expect("gpu1");
    for (table, step) in [("m1", MINUTE_MS), ("h1", HOUR_MS)] {
        let mut q = st
            .conn()
            .prepare(&format!(
                "SELECT t, a0, x0, a1, x1, a2, x2, a3, x3 FROM {table} WHERE sid = ?1 ORDER BY t"
            ))
            .expect("prepare");
        let rows: Vec<(i64, [Option<f64>; 8])> = q
            .query_map([sid], |r| {
                let mut v = [None; 8];
                for (k, x) in v.iter_mut().enumerate() {
                    *x = r.get(k + 1)?;
                }
                Ok((r.get(0)?, v))
            })
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(rows.len() as i64, HOURS * HOUR_MS / step, "{table}");
        for (t, v) in rows {
            for c in 0..4 {
                let (mean, max) = expect(&all, 1, c, t, t + step);
                assert!(
                    close(v[2 * c], mean),
                    "{table} t={t} col {c}: {:?} vs {mean:?}",
                    v[2 * c]
                );
                assert!(close(v[2 * c + 1], max), "{table} t={t} col {c} max");
            }
        }
    }
    // A minute with no utilization reading says so (NULL), it is not 0.
    let none: Option<f64> = st
        .conn()
        .query_row(
            "SELECT a0 FROM m1 WHERE sid = ?1 AND t = ?2",
            params![sid, T0 + 12 * MINUTE_MS],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(none, None);

    // The cluster per minute: mean utilization over its GPUs, GPUs busy, memory summed.
    let reader = super::store::open_reader(&dir.path().join("h.sqlite")).expect("reader");
    let now = end + HOUR_MS;
    let r = long();
    let c = query::series(&reader, "cluster", "util", T0, T0 + 2 * MINUTE_MS, now, &r)
        .expect("cluster");
    assert_eq!(c.tier, Tier::Minute);
    let (m0, _) = expect(&all, 0, 0, T0, T0 + MINUTE_MS);
    let (m1, _) = expect(&all, 1, 0, T0, T0 + MINUTE_MS);
    assert!(close(
        c.mean[0],
        Some((m0.expect("m0") + m1.expect("m1")) / 2.0)
    ));
    let busy = query::series(
        &reader,
        "cluster",
        "gpus_busy",
        T0,
        T0 + HOUR_MS * 2,
        now,
        &r,
    )
    .expect("busy");
    assert_eq!(busy.mean[0], Some(2.0));
    assert_eq!(busy.mean[100], Some(0.0), "nothing held after 90 minutes");
}

#[test]
fn user_sums_are_the_same_from_every_tier_and_match_the_scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = store(&dir, long());
    st.insert(&samples()).expect("insert");
    let end = T0 + HOURS * HOUR_MS;
    st.rollup(end + HOUR_MS).expect("rollup");
    let reader = super::store::open_reader(&dir.path().join("h.sqlite")).expect("reader");
    // Known answer: alice 2 GPUs × 1.5 h = 3 GPU-hours, 8 GiB × 1.5 h = 12 GiB-hours; bob
    // 1 GPU × 0.5 h, 1 GiB × 0.5 h.
    let want = [("alice", 3.0, 12.0), ("bob", 0.5, 0.5)];
    let now = end + HOUR_MS;
    let tiers = [
        (long(), Tier::Raw),
        (
            Retention {
                raw: Duration::from_secs(3600),
                ..long()
            },
            Tier::Minute,
        ),
        (
            Retention {
                raw: Duration::from_secs(3600),
                minute: Duration::from_secs(3600),
                ..long()
            },
            Tier::Hour,
        ),
    ];
    for (r, tier) in tiers {
        let u = query::usage(&reader, T0, end, now, &r).expect("usage");
        assert_eq!(u.tier, tier);
        assert_eq!(u.users.len(), 2);
        for (got, (user, h, gib_h)) in u.users.iter().zip(want) {
            assert_eq!(got.user, user, "{tier:?}: sorted by GPU-hours");
            assert!(
                (got.gpu_hours - h).abs() < 1e-9,
                "{tier:?} {user}: {}",
                got.gpu_hours
            );
            assert!(
                (got.gpu_mem_gib_hours - gib_h).abs() < 1e-9,
                "{tier:?} {user}: {}",
                got.gpu_mem_gib_hours
            );
            assert_eq!(got.hosts, ["h"]);
        }
        // Efficiency, exact from every tier: alice held one GPU idle for 1.5 h, the two at
        // 20 % on average, drawing 500 W for 1.5 h; bob's GPU said nothing (absent, not 0).
        let alice = &u.users[0];
        assert!(
            (alice.idle_gpu_hours - 1.5).abs() < 1e-9,
            "{tier:?}: {}",
            alice.idle_gpu_hours
        );
        assert!(
            alice.mean_util.is_some_and(|m| (m - 20.0).abs() < 1e-9),
            "{tier:?}: {:?}",
            alice.mean_util
        );
        assert!(
            alice.energy_kwh.is_some_and(|e| (e - 0.75).abs() < 1e-9),
            "{tier:?}: {:?}",
            alice.energy_kwh
        );
        let bob = &u.users[1];
        assert_eq!(
            (bob.idle_gpu_hours, bob.mean_util, bob.energy_kwh),
            (0.0, None, None),
            "{tier:?}"
        );
    }
    // The user's series: 2 GPUs held per minute while alice ran, then 0 (no point).
    let s = query::series(
        &reader,
        "user:alice",
        "gpus",
        T0,
        T0 + 2 * HOUR_MS,
        now,
        &long(),
    )
    .expect("alice");
    assert_eq!(s.tier, Tier::Minute);
    assert_eq!(s.t.len(), 90);
    assert!(s.mean.iter().all(|m| *m == Some(2.0)));
    let csv = query::usage_csv(&query::usage(&reader, T0, end, now, &long()).expect("usage"));
    assert_eq!(
        csv,
        "user,gpu_hours,gpu_mem_gib_hours,idle_gpu_hours,mean_util_percent,energy_kwh,hosts\n\
         alice,3.000000,12.000000,1.500000,20.000000,0.750000,h\nbob,0.500000,0.500000,0.000000,,,h\n"
    );
}

#[test]
fn retention_removes_only_what_each_tier_no_longer_keeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Retention {
        raw: Duration::from_secs(3600),
        minute: Duration::from_secs(2 * 3600),
        hour: Duration::from_secs(3 * 3600),
    };
    let mut st = store(&dir, r);
    st.insert(&samples()).expect("insert");
    let end = T0 + HOURS * HOUR_MS;
    st.rollup(end + HOUR_MS).expect("rollup");
    let count = |st: &Store, table: &str| -> i64 {
        st.conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    let (raw, m1, h1) = (count(&st, "raw"), count(&st, "m1"), count(&st, "h1"));
    // Now = the end: raw keeps the last hour, m1 the last 2, h1 all 3.
    st.enforce_retention(end).expect("retention");
    // The last hour: 360 samples × (the host and its 2 GPUs); no user held anything then.
    assert_eq!(count(&st, "raw"), 360 * 3, "raw: the last hour (of {raw})");
    // The last 2 hours of minutes: host, 2 GPUs and the cluster, and alice's 30 minutes.
    assert_eq!(
        count(&st, "m1"),
        120 * 4 + 30,
        "m1: the last 2 hours (of {m1})"
    );
    assert_eq!(count(&st, "h1"), h1);
    let sid = st.sid(SeriesKind::Host, "h", "h").expect("host");
    let oldest: i64 = st
        .conn()
        .query_row("SELECT min(t) FROM raw WHERE sid = ?1", [sid], |r| r.get(0))
        .expect("min");
    assert_eq!(oldest, end - HOUR_MS);
    // A day later nothing is left.
    st.enforce_retention(end + 86_400_000).expect("retention");
    assert_eq!(count(&st, "raw") + count(&st, "m1") + count(&st, "h1"), 0);
}

#[test]
fn the_tier_is_the_coarsest_with_enough_points_that_covers_from() {
    let r = Retention::default();
    let now = T0 + 400 * 86_400_000;
    let min = MINUTE_MS;
    let pick = |kind, span: i64, from_age: i64| {
        query::choose_tier(kind, now - from_age, now - from_age + span, now, &r)
    };
    // 300 minutes is the least span the 1-minute tier serves with 300 points.
    assert_eq!(pick(SeriesKind::Gpu, 299 * min, 299 * min), Tier::Raw);
    assert_eq!(pick(SeriesKind::Gpu, 300 * min, 300 * min), Tier::Minute);
    assert_eq!(pick(SeriesKind::Gpu, 3600 * 1000, 3600 * 1000), Tier::Raw);
    assert_eq!(pick(SeriesKind::Gpu, 86_400_000, 86_400_000), Tier::Minute);
    assert_eq!(
        pick(SeriesKind::Gpu, 7 * 86_400_000, 7 * 86_400_000),
        Tier::Minute
    );
    // 300 hours (12.5 days) is where the hour tier takes over.
    assert_eq!(
        pick(SeriesKind::Gpu, 299 * HOUR_MS, 299 * HOUR_MS),
        Tier::Minute
    );
    assert_eq!(
        pick(SeriesKind::Gpu, 300 * HOUR_MS, 300 * HOUR_MS),
        Tier::Hour
    );
    assert_eq!(
        pick(SeriesKind::Gpu, 30 * 86_400_000, 30 * 86_400_000),
        Tier::Hour
    );
    // Coverage: raw keeps 24 h; one millisecond older and the 1-minute tier answers.
    assert_eq!(pick(SeriesKind::Gpu, HOUR_MS, 86_400_000), Tier::Raw);
    assert_eq!(pick(SeriesKind::Gpu, HOUR_MS, 86_400_000 + 1), Tier::Minute);
    assert_eq!(
        pick(SeriesKind::Gpu, HOUR_MS, 30 * 86_400_000 + 1),
        Tier::Hour
    );
    // Users and the cluster have no raw tier.
    assert_eq!(pick(SeriesKind::User, HOUR_MS, HOUR_MS), Tier::Minute);
    assert_eq!(pick(SeriesKind::Cluster, HOUR_MS, HOUR_MS), Tier::Minute);
}

#[test]
fn bucket_edges_include_the_bucket_holding_from_and_exclude_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = store(&dir, long());
    st.insert(&samples()).expect("insert");
    let now = T0 + (HOURS + 1) * HOUR_MS;
    st.rollup(now).expect("rollup");
    let reader = super::store::open_reader(&dir.path().join("h.sqlite")).expect("reader");
    let r = long();
    // Raw: [from, to) exactly.
    let s =
        query::series(&reader, "h/gpu0", "util", T0 + STEP, T0 + 4 * STEP, now, &r).expect("raw");
    assert_eq!(s.tier, Tier::Raw);
    assert_eq!(s.t, [T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP]);
    // 1 minute, 300 minutes from the middle of a minute: that minute is included, the one
    // starting at `to` is not.
    let from = T0 + 30_000;
    let s = query::series(
        &reader,
        "GPU-0",
        "util",
        from,
        from + 300 * MINUTE_MS,
        now,
        &r,
    )
    .expect("m1");
    assert_eq!(s.tier, Tier::Minute);
    assert_eq!(s.step_ms, MINUTE_MS);
    assert_eq!(s.t.first(), Some(&T0));
    assert_eq!(s.t.len(), 180, "3 hours of data");
    let s =
        query::series(&reader, "h/gpu0", "util", T0, T0 + MINUTE_MS * 300, now, &r).expect("m1");
    assert!(s.t.iter().all(|t| *t < T0 + MINUTE_MS * 300));
}

#[test]
fn bad_ids_and_metrics_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut st = store(&dir, long());
    st.insert(&samples()[..10]).expect("insert");
    let reader = super::store::open_reader(&dir.path().join("h.sqlite")).expect("reader");
    let r = long();
    let now = T0 + HOUR_MS;
    let err = |id: &str, m: &str, from: i64, to: i64| {
        query::series(&reader, id, m, from, to, now, &r)
            .expect_err("must fail")
            .to_string()
    };
    assert!(err("nosuch", "cpu", T0, now).contains("\"nosuch\""));
    assert!(err("h", "util", T0, now).contains("cpu, mem_used, load1, disk_used"));
    assert!(err("h/gpu0", "cpu", T0, now).contains("util, mem_used, temp, power"));
    assert!(
        err("cluster", "util", T0, now).contains("cluster"),
        "no roll-up yet: no cluster"
    );
    assert!(err("h", "cpu", now, T0).contains("before"));
    assert!(err("", "cpu", T0, now).contains("missing"));
    assert!(matches!(
        query::series(&reader, "h/gpu9", "util", T0, now, now, &r),
        Err(query::QueryError::NotFound(_))
    ));
    assert!(matches!(
        query::series(&reader, "h", "fan", T0, now, now, &r),
        Err(query::QueryError::Invalid(_))
    ));
}

#[test]
fn a_reopened_store_rolls_up_what_it_had_not_rolled_up_and_resent_samples_are_kept_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = samples();
    {
        let mut st = store(&dir, long());
        st.insert(&all[..720]).expect("insert"); // 2 hours
        st.rollup(T0 + HOUR_MS + 30_000).expect("rollup"); // the first hour's minutes only
    }
    let mut st = store(&dir, long());
    st.recover_dirty().expect("recover");
    assert!(
        st.pending().0 >= 60,
        "the second hour's minutes are pending: {:?}",
        st.pending()
    );
    // A resent sample (same host, same time) changes nothing.
    st.insert(&all[100..110]).expect("insert again");
    st.rollup(T0 + 3 * HOUR_MS).expect("rollup");
    let n: i64 = st
        .conn()
        .query_row(
            "SELECT count(*) FROM m1 WHERE sid = ?1",
            [st.sid(SeriesKind::Gpu, "h/gpu0", "h").expect("sid")],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 120);
    let raw: i64 = st
        .conn()
        .query_row(
            "SELECT count(*) FROM raw WHERE sid = ?1",
            [st.sid(SeriesKind::Host, "h", "h").expect("sid")],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(raw, 720);
    let h1: i64 = st
        .conn()
        .query_row(
            "SELECT count(*) FROM h1 WHERE sid = ?1",
            [st.sid(SeriesKind::Host, "h", "h").expect("sid")],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(h1, 2);
}

#[test]
fn a_corrupt_file_at_start_is_moved_aside_and_a_fresh_store_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB_FILE);
    let garbage =
        b"this is not an SQLite database, just bytes that look nothing like one".repeat(100);
    std::fs::write(&path, &garbage).expect("write");
    let cfg = HistoryConfig {
        dir: dir.path().to_owned(),
        retention: Retention::default(),
        queue: 16,
    };
    let history = History::open(&cfg).expect("a damaged file does not stop the hub");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // Kept as it was, for an admin to look at.
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).expect("read"),
        garbage
    );
    // And the new store works.
    history
        .try_record(Record {
            host: "h".into(),
            t: 1_700_000_000_000,
            dur_ms: 1000,
            ..Default::default()
        })
        .expect("queued");
    history.close();
    assert!(
        history
            .stats
            .stored
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn a_host_inventing_gpus_and_users_stops_at_its_series_bound_and_others_are_unaffected() {
    use super::store::MAX_SERIES_PER_HOST;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = store(&dir, long());
    // Every frame a new GPU index and a new user: 2 new series a frame.
    let batch: Vec<Record> = (0..1000)
        .map(|i| {
            let mut r = sample(i);
            r.host = "inventor".into();
            r.gpus = vec![GpuRec {
                index: 1000 + u32::try_from(i).expect("small"),
                ..r.gpus[0].clone()
            }];
            r.users = vec![UserRec {
                user: format!("user{i}"),
                gpus: 1,
                gpu_mem: GIB,
                ..Default::default()
            }];
            r
        })
        .collect();
    s.insert(&batch).expect("insert");
    let mut honest = sample(0);
    honest.host = "honest".into();
    s.insert(&[honest]).expect("insert");
    let count = |host: &str| -> usize {
        s.conn()
            .query_row("SELECT count(*) FROM series WHERE host = ?1", [host], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .expect("count")
    };
    assert_eq!(count("inventor"), MAX_SERIES_PER_HOST);
    // One host, two GPUs, alice: all kept.
    assert_eq!(count("honest"), 4);
    drop(s);
    // The bound holds across a restart (counted from the catalog).
    let mut s = store(&dir, long());
    let mut more = sample(5000);
    more.host = "inventor".into();
    more.users = vec![UserRec {
        user: "late".into(),
        gpus: 1,
        gpu_mem: GIB,
        ..Default::default()
    }];
    more.gpus.clear();
    s.insert(&[more]).expect("insert");
    let n: i64 = s
        .conn()
        .query_row(
            "SELECT count(*) FROM series WHERE host = 'inventor'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(usize::try_from(n).expect("count"), MAX_SERIES_PER_HOST);
}

#[test]
fn an_agent_past_its_share_of_the_queue_waits_while_another_is_still_queued_and_acked() {
    use std::sync::Arc;
    use tokio::sync::watch;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = HistoryConfig {
        dir: dir.path().to_owned(),
        retention: Retention::default(),
        queue: 64,
    };
    let history = History::open(&cfg).expect("open");
    assert_eq!(history.agent_share, 16);
    let (a, _a_acks) = watch::channel(super::Committed::default());
    let (b, b_acks) = watch::channel(super::Committed::default());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let info = hmonitor_proto::HostInfo {
        gpus: vec![hmonitor_proto::GpuInfo {
            utilization: Some(5),
            ..Default::default()
        }],
        ..Default::default()
    };
    let now = hmonitor_proto::unix_ms(std::time::SystemTime::now());
    let interval = Duration::from_secs(1);
    // Agent a floods (a backfill as fast as the socket goes): it meets its share, not the
    // queue's end.
    let refused = (1..=200_000u64).find_map(|seq| {
        super::record_pushed(Some(&history), "a", seq, now - seq, interval, &info, &a)
    });
    let refused = refused.expect("a flooding agent is held back");
    assert!(refused.contains("share"), "{refused}");
    // Agent b still gets in, and is acknowledged.
    assert_eq!(
        super::record_pushed(Some(&history), "b", 1, now, interval, &info, &b),
        None
    );
    let t0 = std::time::Instant::now();
    while b_acks.borrow().seq != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "b was never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    history.close();
}

#[test]
fn a_file_of_the_first_layout_gains_the_new_columns_and_keeps_its_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.sqlite");
    {
        // The layout before user power (v5/a5) existed, with one GPU point in it.
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE series (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, name TEXT NOT NULL,
                host TEXT NOT NULL, uuid TEXT, label TEXT, UNIQUE (kind, name, host));
             CREATE TABLE raw (sid INTEGER NOT NULL, t INTEGER NOT NULL, v0, v1, v2, v3, v4,
                PRIMARY KEY (sid, t)) WITHOUT ROWID;
             CREATE TABLE m1 (sid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
                a0, a1, a2, a3, a4, x0, x1, x2, x3, x4, PRIMARY KEY (sid, t)) WITHOUT ROWID;
             CREATE TABLE h1 (sid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
                a0, a1, a2, a3, a4, x0, x1, x2, x3, x4, PRIMARY KEY (sid, t)) WITHOUT ROWID;
             INSERT INTO series VALUES (1, 1, 'h/gpu0', 'h', 'GPU-0', 'NVIDIA H200');",
        )
        .expect("old layout");
        c.execute(
            "INSERT INTO raw VALUES (1, ?1, 77, 1, 40, 300, 1)",
            [T0 - STEP],
        )
        .expect("old point");
    }
    let mut s = Store::open(&path, long()).expect("migrates");
    s.insert(&samples()[..360]).expect("insert");
    s.rollup(T0 + 2 * HOUR_MS).expect("rollup");
    let old: f64 = s
        .conn()
        .query_row(
            "SELECT v0 FROM raw WHERE sid = 1 AND t = ?1",
            [T0 - STEP],
            |r| r.get(0),
        )
        .expect("old point kept");
    assert_eq!(old, 77.0);
    let u = query::usage(s.conn(), T0, T0 + HOUR_MS, T0 + HOUR_MS, &long()).expect("usage");
    assert!(
        u.users[0].energy_kwh.is_some_and(|e| e > 0.0),
        "{:?}",
        u.users[0]
    );
    drop(s);
    // Opening again changes nothing.
    Store::open(&path, long()).expect("reopens");
}
