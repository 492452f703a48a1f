//! Hostile hosts, as an attacker holding the shared enrollment token would try them against
//! real hub and agent processes: taking over an offline host's id, stamping samples years
//! ahead, frames over the per-frame caps, connections that never speak.

use std::io::Read as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use futures_util::SinkExt;
use hmonitor_proto::{agent_message, AgentMessage, GpuInfo, HostInfo, HostStatus, Snapshot};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const INTERVAL_S: &str = "500ms";

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hub.toml");
    std::fs::write(&p, text).expect("write");
    let path = p.to_string_lossy().into_owned();
    (dir, path)
}

fn snapshot(seq: u64, sample_ms: u64, info: HostInfo) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(Snapshot {
            seq,
            sample_ms,
            info: Some(info),
            backfill: false,
        })),
    }
    .encode_to_vec()
}

fn now_ms() -> u64 {
    hmonitor_proto::unix_ms(SystemTime::now())
}

/// `hmonitor-hub hosts ...` against `hub`, with its data directory (where the admin token is).
fn hosts_cli(hub: &Hub, args: &[&str]) -> std::process::Output {
    clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")))
        .arg("--data-dir")
        .arg(hub.data.path())
        .args(["hosts", "--hub", &format!("http://{}", hub.addr)])
        .args(args)
        .output()
        .expect("run hmonitor-hub hosts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_token_cannot_report_as_a_per_host_id_while_its_owner_is_down() {
    let (_dir, config) = write_config("[hosts.owned]\ntoken = \"owner-token\"\n");
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        extra: vec!["--config".into(), config],
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA H200", 9));
    let mut owner = agent_with(
        "owned",
        &hub.agent_url(),
        &s,
        INTERVAL_S,
        "owner-token",
        &[],
    );
    browser
        .until(Duration::from_secs(15), "owned up", |b| {
            b.status("owned") == Some(HostStatus::Up)
        })
        .await;
    owner.kill();
    browser
        .until(Duration::from_secs(15), "owned down", |b| {
            b.status("owned") == Some(HostStatus::Down)
        })
        .await;
    // Offline now, and still not the impostor's to take.
    let mut thief = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    thief
        .send(Message::Binary(hello_with_key("owned", &[5; 32]).into()))
        .await
        .expect("hello");
    let reason = close_reason(&mut thief).await;
    assert!(reason.contains("reserved"), "{reason}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(browser.status("owned"), Some(HostStatus::Down));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_the_same_id_is_refused_until_an_admin_forgets_the_id() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA H200", 4));
    let first_state = tempfile::tempdir().expect("tempdir");
    let other_state = tempfile::tempdir().expect("tempdir");
    let state_env = |d: &tempfile::TempDir| d.path().to_string_lossy().into_owned();
    let first_dir = state_env(&first_state);
    // An agent for gpu-07 with the shared token, keeping its state (and host key) in `dir`.
    let gpu07 = |dir: &str| {
        agent_with(
            "gpu-07",
            &hub.agent_url(),
            &s,
            INTERVAL_S,
            TOKEN,
            &[("HMON_STATE_DIR", dir)],
        )
    };
    let mut first = gpu07(&first_dir);
    browser
        .until(Duration::from_secs(15), "gpu-07 up", |b| {
            b.status("gpu-07") == Some(HostStatus::Up)
        })
        .await;
    assert!(first_state.path().join("host-key").exists());
    first.kill();
    browser
        .until(Duration::from_secs(15), "gpu-07 down", |b| {
            b.status("gpu-07") == Some(HostStatus::Down)
        })
        .await;

    // Another machine with the shared token and the same id: refused, with one clear line.
    let other_dir = state_env(&other_state);
    let mut impostor = gpu07(&other_dir);
    eventually(Duration::from_secs(15), || {
        (!hub
            .proc
            .lines("pinned to another agent's host key")
            .is_empty())
        .then_some(())
    });
    let line = hub
        .proc
        .lines("pinned to another agent's host key")
        .join("\n");
    assert!(
        line.contains("\"gpu-07\"") && line.contains("hosts forget"),
        "{line}"
    );
    eventually(Duration::from_secs(15), || {
        (!impostor.lines("pinned to another agent").is_empty()).then_some(())
    });
    assert_eq!(browser.status("gpu-07"), Some(HostStatus::Down));
    // The impostor without any state directory is refused just the same.
    let mut keyless = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    keyless
        .send(Message::Binary(hello("gpu-07").into()))
        .await
        .expect("hello");
    let reason = close_reason(&mut keyless).await;
    assert!(reason.contains("pinned"), "{reason:?}");
    impostor.kill();

    // The real host comes back with its key: accepted at once.
    let mut first = gpu07(&first_dir);
    browser
        .until(Duration::from_secs(15), "gpu-07 back", |b| {
            b.status("gpu-07") == Some(HostStatus::Up)
        })
        .await;
    first.kill();

    // The admin lists and forgets the id: the other machine may take it now.
    let list = hosts_cli(&hub, &["list"]);
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(out.contains("gpu-07") && out.contains("127.0.0.1"), "{out}");
    let forget = hosts_cli(&hub, &["forget", "gpu-07"]);
    assert!(
        forget.status.success(),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );
    // A wrong admin token is refused.
    let wrong = clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")))
        .env("HMON_ADMIN_TOKEN", "not-the-admin-token")
        .args([
            "hosts",
            "--hub",
            &format!("http://{}", hub.addr),
            "forget",
            "x",
        ])
        .output()
        .expect("run");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));

    let _impostor = gpu07(&other_dir);
    browser
        .until(Duration::from_secs(15), "gpu-07 re-pinned", |b| {
            b.status("gpu-07") == Some(HostStatus::Up)
        })
        .await;
    // ...and the pin survives a hub restart: it is in the data directory.
    assert!(hub.data.path().join("hosts.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_state_directory_says_its_id_cannot_be_pinned() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let s = Scenario::new(&one_gpu("NVIDIA H200", 1));
    let agent = agent("loose", &hub.agent_url(), &s, INTERVAL_S);
    eventually(Duration::from_secs(10), || {
        (!agent.lines("cannot pin host id").is_empty()).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_ten_years_ahead_and_frames_over_a_cap_are_refused_with_the_reason() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let ten_years = 10 * 365 * 24 * 3600 * 1000;
    let mut future = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    future
        .send(Message::Binary(hello("future").into()))
        .await
        .expect("hello");
    future
        .send(Message::Binary(
            snapshot(1, now_ms() + ten_years, HostInfo::default()).into(),
        ))
        .await
        .expect("snapshot");
    let reason = close_reason(&mut future).await;
    assert!(reason.contains("ahead of the hub's clock"), "{reason}");
    // The skew is shown where admins look.
    let metrics = hmonitor_testkit::http::get(hub.addr, "/metrics", &[]).body;
    let skew: f64 = metrics
        .lines()
        .find(|l| l.starts_with("hmonitor_host_clock_skew_seconds{host=\"future\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no skew for future in /metrics:\n{metrics}"));
    assert!(skew > 9.0 * 365.0 * 24.0 * 3600.0, "{skew}");

    // Within the skew: accepted, and the host is up.
    let mut fine = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    fine.send(Message::Binary(hello("fine").into()))
        .await
        .expect("hello");
    fine.send(Message::Binary(
        snapshot(1, now_ms() + 2_000, HostInfo::default()).into(),
    ))
    .await
    .expect("snapshot");

    let over = [
        (
            HostInfo {
                gpus: vec![GpuInfo::default(); hmonitor_proto::limits::MAX_GPUS + 1],
                ..Default::default()
            },
            "GPUs: 129 (limit 128)",
        ),
        (
            HostInfo {
                gpus: vec![GpuInfo {
                    procs: vec![Default::default(); hmonitor_proto::limits::MAX_PROCS_PER_GPU + 1],
                    ..Default::default()
                }],
                ..Default::default()
            },
            "processes on GPU 0",
        ),
        (
            HostInfo {
                gpus: vec![GpuInfo {
                    id: 2,
                    warnings: vec![
                        "power: not supported".into();
                        hmonitor_proto::limits::MAX_WARNINGS_PER_GPU + 1
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            "warnings of GPU 2",
        ),
        (
            HostInfo {
                disks: vec![Default::default(); hmonitor_proto::limits::MAX_DISKS + 1],
                ..Default::default()
            },
            "disks",
        ),
        (
            HostInfo {
                hostname: "h".repeat(hmonitor_proto::limits::MAX_STRING_BYTES + 1),
                ..Default::default()
            },
            "hostname is 4097 bytes long",
        ),
    ];
    for (i, (info, expected)) in over.into_iter().enumerate() {
        let id = format!("over-{i}");
        let mut ws = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
        ws.send(Message::Binary(hello(&id).into()))
            .await
            .expect("hello");
        ws.send(Message::Binary(snapshot(1, now_ms(), info).into()))
            .await
            .expect("snapshot");
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains(expected), "{id}: {reason}");
    }
    let hosts: serde_json::Value =
        serde_json::from_str(&hmonitor_testkit::http::get(hub.addr, "/api/hosts", &[]).body)
            .expect("json");
    let up: Vec<&str> = hosts
        .as_array()
        .expect("array")
        .iter()
        .filter(|h| h["status"] == "HOST_STATUS_UP")
        .map(|h| h["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(up, vec!["fine"], "{hosts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_that_never_speaks_is_closed_within_the_handshake_timeout() {
    let hub = Hub::start_with(HubOpts::default());
    let grpc = hub.grpc.expect("gRPC on");
    let started = std::time::Instant::now();
    let mut silent = std::net::TcpStream::connect(grpc).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // Closed by the hub (0 bytes, or reset), not by our own 20 s read timeout.
    let n = silent.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(n, Ok(0))
            || n.as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "{n:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

/// The hub process's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A hello for `id` on a new connection; `Ok` when accepted, else the refusal's close reason.
async fn try_hello(hub: &Hub, id: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    use hmonitor_proto::{hub_message, HubMessage};
    let mut ws = raw_agent(hub, Some(TOKEN)).await.expect("connect");
    ws.send(Message::Binary(hello(id).into()))
        .await
        .expect("hello");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return match HubMessage::decode(b.as_ref()).expect("decodes").msg {
                    Some(hub_message::Msg::Accepted(_)) => Ok(()),
                    Some(hub_message::Msg::Refused(r)) => Err(r.reason),
                    other => Err(format!("unexpected {other:?}")),
                }
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("no reply: {other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_new_ids_against_max_hosts_50_leave_the_count_the_good_host_and_memory_alone() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        extra: vec!["--max-hosts".into(), "50".into()],
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA H200", 7));
    let _good = agent("good", &hub.agent_url(), &s, INTERVAL_S);
    browser
        .until(Duration::from_secs(15), "good up", |b| {
            b.status("good") == Some(HostStatus::Up)
        })
        .await;
    let pid = hub.proc.child.id();
    let mut refused = 0;
    let mut rss_after_100 = 0;
    for i in 0..1000 {
        // Each id reports once and goes away: what a script inventing ids does.
        if let Err(reason) = try_hello(&hub, &format!("made-up-{i}")).await {
            assert!(reason.contains("max_hosts"), "{reason}");
            refused += 1;
        }
        if i == 99 {
            rss_after_100 = rss_kib(pid);
        }
    }
    let rss_after_1000 = rss_kib(pid);
    assert_eq!(refused, 1000 - 49, "good and 49 made-up ids fit");
    let health: serde_json::Value =
        serde_json::from_str(&hmonitor_testkit::http::get(hub.addr, "/healthz", &[]).body)
            .expect("json");
    assert_eq!(health["hosts"], 50, "{health}");
    // The good host stayed fresh throughout.
    let before = browser.frames_of("good");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        browser.frames_of("good") >= before + 2,
        "the good host stalled"
    );
    assert_eq!(browser.status("good"), Some(HostStatus::Up));
    // 900 refused ids after the first 100 cost the hub (nearly) nothing: flat within 8 MiB.
    let grew = rss_after_1000.saturating_sub(rss_after_100);
    assert!(
        grew < 8 * 1024,
        "hub RSS grew {grew} KiB ({rss_after_100} -> {rss_after_1000} KiB)"
    );
    eprintln!("hub RSS after 100 ids {rss_after_100} KiB, after 1000 {rss_after_1000} KiB");

    // Forgetting one makes room for exactly one new id.
    let forget = hosts_cli(&hub, &["forget", "made-up-0"]);
    assert!(
        forget.status.success(),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );
    assert_eq!(try_hello(&hub, "newcomer").await, Ok(()));
    let again = try_hello(&hub, "one-too-many").await;
    assert!(
        again.as_ref().is_err_and(|r| r.contains("max_hosts")),
        "{again:?}"
    );
}
