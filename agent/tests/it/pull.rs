//! The seed's pull API over real gRPC on loopback: answers, allowlist, token, hung NVML.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpSocket;
use tonic::transport::{Channel, Endpoint};

use crate::harness::*;
use crate::seed::host_monitor_client::HostMonitorClient as SeedClient;
use crate::seed::RequestInfo as SeedRequest;
use hmonitor_proto::host_monitor_client::HostMonitorClient;
use hmonitor_proto::RequestInfo;

/// A channel whose connections leave from `source` (an address of the loopback range), so a
/// test can be a caller inside or outside an allowlist.
async fn channel_from(source: &str, to: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let source: SocketAddr = format!("{source}:0").parse().expect("source");
    Endpoint::from_shared(format!("http://{to}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| async move {
            let sock = TcpSocket::new_v4()?;
            sock.bind(source)?;
            let stream = sock.connect(to).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }))
        .await
}

async fn get_info(ch: Channel, token: &str) -> Result<hmonitor_proto::HostInfo, tonic::Status> {
    HostMonitorClient::new(ch)
        .get_info(RequestInfo {
            token: token.into(),
            reqtype: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_client_from_the_seed_proto_gets_every_gpu_and_process() {
    let dir = tempdir();
    let children = Children::spawn(16);
    let scenario = write_scenario(dir.path(), &eight_gpus(&children));
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("GOHM_ALLOW", "127.0.0.1/8");
    let agent = Agent::start(cmd);

    let mut client = SeedClient::connect(agent.url()).await.expect("connect");
    // The first report may still be on its way from the sampling threads.
    let info = loop {
        let info = client
            .get_info(SeedRequest::default())
            .await
            .expect("GetInfo")
            .into_inner();
        if info.gpus.len() == 8 {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (uid, user) = current_user();
    let pids = children.pids();
    assert!(!info.hostname.is_empty());
    assert!(!info.disks.is_empty());
    assert_eq!(info.err, "");
    for (i, g) in info.gpus.iter().enumerate() {
        assert_eq!(g.id, i as i32);
        assert_eq!(g.name, "NVIDIA H200");
        assert_eq!(g.mem_total, 150_754_820_096);
        assert_eq!(g.utilization, 10 * i as i32);
        assert_eq!(g.procs.len(), 2);
        for p in &g.procs {
            assert!(pids.contains(&p.pid));
            assert_eq!(p.uid, uid as i32);
            assert_eq!(p.username, user);
            assert_eq!(p.basename, "sleep");
            assert!(p.mem >= 256 << 20);
        }
    }
    // The seed's type has no notion of "absent": a fanless card decodes as 0 there.
    assert_eq!(info.gpus[7].fanspeed, 0);
}

#[tokio::test]
async fn a_client_from_the_seed_proto_gets_the_no_driver_error() {
    let mut cmd = hmonitor();
    cmd.env("HMON_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .env("GOHM_ALLOW", "127.0.0.1/8");
    let agent = Agent::start(cmd);
    let mut client = SeedClient::connect(agent.url()).await.expect("connect");
    let info = client
        .get_info(SeedRequest::default())
        .await
        .expect("GetInfo")
        .into_inner();
    assert!(
        info.err.contains("NVIDIA driver library not found"),
        "{}",
        info.err
    );
    assert!(info.gpus.is_empty());
    assert!(!info.disks.is_empty());
}

#[tokio::test]
async fn callers_outside_the_allowlist_get_nothing() {
    let dir = tempdir();
    let scenario = write_scenario(dir.path(), &json!({ "gpus": [gpu("NVIDIA H200", 0, &[])] }));
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("GOHM_ALLOW", "127.0.0.2/32");
    let agent = Agent::start(cmd);

    // From 127.0.0.1: the connection is closed before anything is read; no answer at all.
    for _ in 0..2 {
        let refused = match channel_from("127.0.0.1", agent.addr).await {
            Ok(ch) => get_info(ch, "")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(
            refused.is_err(),
            "a caller outside the allowlist was answered"
        );
    }
    // From 127.0.0.2, inside the range: answered.
    let ch = channel_from("127.0.0.2", agent.addr)
        .await
        .expect("connect");
    let info = get_info(ch, "").await.expect("allowed caller answered");
    assert!(!info.hostname.is_empty());

    // Refused peers are logged once, not once per attempt.
    let lines = eventually(Duration::from_secs(5), || {
        let l = agent.log_lines("refused pull connection from 127.0.0.1");
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[tokio::test]
async fn the_token_is_checked_when_set() {
    let dir = tempdir();
    let scenario = write_scenario(dir.path(), &json!({ "gpus": [] }));
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("HMON_TOKEN", "s3cret-token");
    let agent = Agent::start(cmd);
    let ch = Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let wrong = get_info(ch.clone(), "s3cret-tokem")
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let missing = get_info(ch.clone(), "").await.expect_err("no token");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let ok = get_info(ch, "s3cret-token").await.expect("right token");
    assert!(!ok.hostname.is_empty());
    // The secret never reaches the log.
    assert!(agent.log_lines("s3cret").is_empty());
}

#[tokio::test]
async fn a_hung_nvml_call_never_freezes_the_agent() {
    let dir = tempdir();
    let children = Children::spawn(16);
    let mut s = eight_gpus(&children);
    let scenario = write_scenario(dir.path(), &s);
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("HMON_INTERVAL", "200ms")
        .env("HMON_STALE_AFTER", "1s");
    let agent = Agent::start(cmd);
    let ch = Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let fresh = loop {
        let info = get_info(ch.clone(), "").await.expect("GetInfo");
        if info.gpus.len() == 8 {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!fresh.stale);

    // Now every utilization call hangs for a minute.
    s["delay_ms"] = json!({ "nvmlDeviceGetUtilizationRates": 60_000 });
    write_scenario(dir.path(), &s);
    let start = Instant::now();
    let stale = loop {
        let asked = Instant::now();
        let info = get_info(ch.clone(), "")
            .await
            .expect("GetInfo while NVML hangs");
        assert!(asked.elapsed() < Duration::from_secs(1), "GetInfo blocked");
        if info.stale {
            break info;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never marked stale"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The last GPU readings are kept, said to be old; host facts stay fresh.
    assert_eq!(stale.gpus.len(), 8);
    assert!(stale.err.contains("GPU readings are"), "{}", stale.err);
    assert_eq!(stale.err_kind, hmonitor_proto::ErrorKind::Timeout as i32);
    assert!(!stale.disks.is_empty());
    assert!(!stale.err.contains("disk readings"), "{}", stale.err);
}

#[tokio::test]
async fn a_scenario_change_reaches_readers_without_a_restart() {
    let dir = tempdir();
    let mut s = json!({ "gpus": [gpu("NVIDIA H200", 0, &[])] });
    let scenario = write_scenario(dir.path(), &s);
    let mut cmd = hmonitor_on(&scenario);
    cmd.env("HMON_INTERVAL", "200ms");
    let agent = Agent::start(cmd);
    let ch = Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    s["gpus"][0]["utilization_gpu"] = json!(97);
    write_scenario(dir.path(), &s);
    let start = Instant::now();
    loop {
        let info = get_info(ch.clone(), "").await.expect("GetInfo");
        if info.gpus.first().and_then(|g| g.utilization) == Some(97) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "change not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
