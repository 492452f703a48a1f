use std::time::Duration;

use hmonitor_common::free::Criteria;
use hmonitor_proto::{GpuInfo, HostInfo, ProcInfo, ProcKind};

use super::*;

fn host(gpus: &[(i32, bool)]) -> HostInfo {
    HostInfo {
        id: "h".into(),
        gpus: gpus
            .iter()
            .map(|&(id, busy)| GpuInfo {
                id,
                uuid: format!("GPU-{id}"),
                name: "NVIDIA H200".into(),
                mem_total: Some(80 << 30),
                mem_used: Some(if busy { 40 << 30 } else { 0 }),
                utilization: Some(if busy { 90 } else { 0 }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn now_only() -> Criteria {
    Criteria {
        settle: Duration::ZERO,
        ..Criteria::default()
    }
}

const TEN_MIN: Duration = Duration::from_secs(600);

#[test]
fn waiters_are_served_in_order_and_never_share_a_gpu() {
    let c = Coordinator::new("h", Duration::from_secs(1));
    let busy = host(&[(0, true), (1, true)]);
    let mut a = c
        .wait(&busy, &Caller::new(1000, "alice"), 1, now_only(), TEN_MIN)
        .expect("a");
    let mut b = c
        .wait(&busy, &Caller::new(1001, "bob"), 1, now_only(), TEN_MIN)
        .expect("b");
    assert!(a.granted.try_recv().is_err() && b.granted.try_recv().is_err());
    // One GPU frees: the first waiter gets it; the second still waits.
    c.on_sample(&host(&[(0, true), (1, false)]), now_ms());
    let got = a.granted.try_recv().expect("a granted");
    assert_eq!(got[0].uuid, "GPU-1");
    assert_eq!(got[0].held_by.as_ref().map(|h| h.uid), Some(1000));
    assert!(b.granted.try_recv().is_err());
    // Both free now, GPU 1 held by alice: bob gets GPU 0.
    c.on_sample(&host(&[(0, false), (1, false)]), now_ms());
    assert_eq!(b.granted.try_recv().expect("b granted")[0].uuid, "GPU-0");
}

#[test]
fn a_wait_that_goes_away_before_starting_releases_its_gpus() {
    let c = Coordinator::new("h", Duration::from_secs(1));
    let free = host(&[(0, false)]);
    let mut a = c
        .wait(&free, &Caller::new(1000, "alice"), 1, now_only(), TEN_MIN)
        .expect("a");
    assert!(a.granted.try_recv().is_ok());
    assert_eq!(c.holds(), [(0, 1000)]);
    assert_eq!(c.cancel(a.id), [0]);
    assert!(c.holds().is_empty());
    // Started: the hold stands after the connection ends.
    let mut b = c
        .wait(&free, &Caller::new(1000, "alice"), 1, now_only(), TEN_MIN)
        .expect("b");
    assert!(b.granted.try_recv().is_ok());
    c.started(b.id);
    assert!(c.cancel(b.id).is_empty());
    assert_eq!(c.holds(), [(0, 1000)]);
}

#[test]
fn only_the_holder_or_root_releases_and_a_new_process_ends_the_hold() {
    let c = Coordinator::new("h", Duration::from_secs(1));
    let mut info = host(&[(0, false), (1, false)]);
    c.hold(
        &info,
        &Caller::new(1000, "alice"),
        &["0".into()],
        1,
        &now_only(),
        TEN_MIN,
    )
    .expect("hold");
    let err = c.release(&info, 1001, &["0".into()]).expect_err("bob");
    assert_eq!(
        err.to_string(),
        "GPU 0 is held by alice (uid 1000), not by you"
    );
    assert_eq!(
        c.release(&info, 1001, &[]).expect("own: none"),
        Vec::<i32>::new()
    );
    assert_eq!(c.holds(), [(0, 1000)]);
    // A process alice already had on GPU 1 when she held it is not the job starting.
    info.gpus[1].procs.push(ProcInfo {
        pid: 7,
        uid: Some(1000),
        kind: ProcKind::Compute as i32,
        ..Default::default()
    });
    let mine = Criteria {
        caller: Some(1000),
        mine_ok: true,
        ..now_only()
    };
    c.hold(
        &info,
        &Caller::new(1000, "alice"),
        &["1".into()],
        1,
        &mine,
        TEN_MIN,
    )
    .expect("hold 1");
    c.on_sample(&info, now_ms());
    assert_eq!(c.holds().len(), 2);
    info.gpus[0].procs.push(ProcInfo {
        pid: 8,
        uid: Some(1000),
        kind: ProcKind::Compute as i32,
        ..Default::default()
    });
    c.on_sample(&info, now_ms());
    assert_eq!(c.holds(), [(1, 1000)], "the job on GPU 0 ended its hold");
    assert_eq!(c.release(&info, 0, &["1".into()]).expect("root"), [1]);
}

#[test]
fn one_user_cannot_fill_the_queue() {
    let c = Coordinator::new("h", Duration::from_secs(1));
    let busy = host(&[(0, true)]);
    let tickets: Vec<Ticket> = (0..MAX_WAITERS_PER_UID)
        .map(|_| {
            c.wait(&busy, &Caller::new(1000, "alice"), 1, now_only(), TEN_MIN)
                .expect("wait")
        })
        .collect();
    assert!(matches!(
        c.wait(&busy, &Caller::new(1000, "alice"), 1, now_only(), TEN_MIN),
        Err(CoordError::TooManyOwn(_))
    ));
    assert!(c
        .wait(&busy, &Caller::new(1001, "bob"), 1, now_only(), TEN_MIN)
        .is_ok());
    assert!(matches!(
        c.wait(&busy, &Caller::new(1001, "bob"), 3, now_only(), TEN_MIN),
        Err(CoordError::TooMany { asked: 3, have: 1 })
    ));
    drop(tickets);
}

#[test]
fn a_waiter_for_several_gpus_is_not_starved_and_one_user_never_gets_a_gpu_twice() {
    let c = Coordinator::new("h", Duration::from_secs(1));
    let busy = host(&[(0, true), (1, true)]);
    let mut big = c
        .wait(&busy, &Caller::new(1000, "alice"), 2, now_only(), TEN_MIN)
        .expect("big");
    let mut small = c
        .wait(&busy, &Caller::new(1001, "bob"), 1, now_only(), TEN_MIN)
        .expect("small");
    // GPU 0 frees: kept for the earlier waiter of 2, not given to the later waiter of 1.
    c.on_sample(&host(&[(0, false), (1, true)]), now_ms());
    assert!(big.granted.try_recv().is_err() && small.granted.try_recv().is_err());
    c.on_sample(&host(&[(0, false), (1, false)]), now_ms());
    assert_eq!(big.granted.try_recv().expect("big granted").len(), 2);
    assert!(small.granted.try_recv().is_err());

    // With --mine-ok a user's own holds look free, but are never granted again.
    let c = Coordinator::new("h", Duration::from_secs(1));
    let free = host(&[(0, false)]);
    let mine = Criteria {
        caller: Some(1000),
        mine_ok: true,
        ..now_only()
    };
    let who = Caller::new(1000, "alice");
    let mut a = c.wait(&free, &who, 1, mine.clone(), TEN_MIN).expect("a");
    let mut b = c.wait(&free, &who, 1, mine.clone(), TEN_MIN).expect("b");
    assert!(a.granted.try_recv().is_ok());
    assert!(b.granted.try_recv().is_err(), "the same GPU twice");
    assert!(c
        .hold(&free, &who, &["0".into(), "0".into()], 1, &mine, TEN_MIN)
        .is_err());
    assert_eq!(c.holds().len(), 1);
}
