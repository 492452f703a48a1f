//! Agents push to the hub; browsers see it live.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hmonitor_proto::host_monitor_client::HostMonitorClient;
use hmonitor_proto::{agent_message, AgentMessage, HostStatus, RequestInfo, Snapshot};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const INTERVAL: Duration = Duration::from_millis(500);
const INTERVAL_S: &str = "500ms";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_appear_and_a_scenario_change_reaches_the_browser_within_two_intervals() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let scenarios: Vec<Scenario> = (0..3)
        .map(|i| Scenario::new(&one_gpu("NVIDIA H200", i)))
        .collect();
    let _agents: Vec<Proc> = (0..3)
        .map(|i| {
            agent(
                &format!("node{i}"),
                &hub.agent_url(),
                &scenarios[i],
                INTERVAL_S,
            )
        })
        .collect();
    browser
        .until(Duration::from_secs(15), "3 hosts up", |b| {
            (0..3).all(|i| b.status(&format!("node{i}")) == Some(HostStatus::Up))
        })
        .await;
    // A browser that connects now gets every host at once, from the hub's map.
    let late = Browser::connect(&hub.live_url()).await;
    late.until(2 * INTERVAL, "all 3 hosts on connect", |b| {
        (0..3).all(|i| b.status(&format!("node{i}")) == Some(HostStatus::Up))
    })
    .await;

    // Change node1's stand-in: the browser shows it within 2 intervals of the write.
    scenarios[1].write(&one_gpu("NVIDIA H200", 77));
    let took = browser
        .until(4 * INTERVAL, "the new utilization", |b| {
            b.util("node1") == Some(77)
        })
        .await;
    assert!(
        took <= 2 * INTERVAL,
        "change took {took:?} (> 2 intervals of {INTERVAL:?})"
    );
    assert_eq!(browser.util("node0"), Some(0));
    assert_eq!(browser.util("node2"), Some(2));

    // /api/hosts has the same, with the address as the hub saw it.
    let hosts: serde_json::Value = reqwest_get(&hub.http("/api/hosts")).await;
    let ids: Vec<&str> = hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["node0", "node1", "node2"]);
    assert!(hosts[0]["addr"]
        .as_str()
        .expect("addr")
        .starts_with("127.0.0.1:"));
    assert_eq!(hosts[0]["status"], "HOST_STATUS_UP");
    assert_eq!(hosts[1]["info"]["gpus"][0]["utilization"], 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_browser_sees_the_same_events_in_a_few_messages() {
    let hub = Hub::start_with(HubOpts {
        interval: "200ms",
        ..Default::default()
    });
    let linger = Duration::from_millis(500);
    let batched =
        Browser::connect_batched(&format!("{}?batch={}", hub.live_url(), linger.as_millis())).await;
    let plain = Browser::connect(&hub.live_url()).await;
    let scenarios: Vec<Scenario> = (0..3)
        .map(|i| Scenario::new(&one_gpu("NVIDIA H200", i)))
        .collect();
    let _agents: Vec<Proc> = (0..3)
        .map(|i| agent(&format!("b{i}"), &hub.agent_url(), &scenarios[i], "200ms"))
        .collect();
    batched
        .until(Duration::from_secs(15), "3 hosts up", |b| {
            (0..3).all(|i| b.status(&format!("b{i}")) == Some(HostStatus::Up))
        })
        .await;
    let start = Instant::now();
    let before = batched.seen.lock().expect("seen").messages;
    scenarios[2].write(&one_gpu("NVIDIA H200", 55));
    let took = batched
        .until(Duration::from_secs(5), "the new utilization", |b| {
            b.util("b2") == Some(55)
        })
        .await;
    // An event waits for its batch at most `linger`, then one interval of the agent.
    assert!(
        took <= linger + 2 * Duration::from_millis(200),
        "change took {took:?}"
    );
    plain
        .until(Duration::from_secs(2), "the plain browser too", |b| {
            b.util("b2") == Some(55)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (messages, events) = {
        let s = batched.seen.lock().expect("seen");
        (s.messages - before, s.events.len())
    };
    let windows = (start.elapsed().as_millis() / linger.as_millis()) as usize;
    // Three agents at 5 frames/s: about 7 events per batch, one message per `linger`.
    assert!(
        messages <= windows + 1,
        "{messages} messages in {windows} windows"
    );
    assert!(
        events > 4 * messages,
        "{events} events in {messages} messages"
    );
    for i in 0..3 {
        let id = format!("b{i}");
        assert_eq!(batched.status(&id), plain.status(&id), "{id}");
    }

    // Longer than a second is refused, with the reason.
    let refused = tokio_tungstenite::connect_async(format!("{}?batch=5000", hub.live_url())).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 400);
            let body =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("at most 1000 ms"), "{body}");
        }
        other => panic!("batch=5000 accepted: {:?}", other.map(|_| ())),
    }
}

/// A plain HTTP GET of JSON that must answer 200 (the tests need nothing more).
pub async fn reqwest_get(url: &str) -> serde_json::Value {
    let (status, json) = crate::history::get_json(url).await;
    assert_eq!(status, 200, "{url}: {json}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_goes_down_within_three_intervals_and_comes_back_when_restarted() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA A100", 5));
    let mut a = agent("victim", &hub.agent_url(), &s, INTERVAL_S);
    let stopped = agent("frozen", &hub.agent_url(), &s, INTERVAL_S);
    browser
        .until(Duration::from_secs(15), "both up", |b| {
            b.status("victim") == Some(HostStatus::Up) && b.status("frozen") == Some(HostStatus::Up)
        })
        .await;

    // Killed: its socket closes.
    a.kill();
    let took = browser
        .until(6 * INTERVAL, "victim down", |b| {
            b.status("victim") == Some(HostStatus::Down)
        })
        .await;
    assert!(took <= 3 * INTERVAL, "down after {took:?}");
    // Frozen (SIGSTOP): the socket stays open but nothing comes; silence marks it down.
    stopped.signal(nix::sys::signal::Signal::SIGSTOP);
    let took = browser
        .until(8 * INTERVAL, "frozen down", |b| {
            b.status("frozen") == Some(HostStatus::Down)
        })
        .await;
    assert!(took <= 3 * INTERVAL + INTERVAL, "down after {took:?}");
    let last_seen = browser.seen.lock().expect("seen").hosts["victim"].last_seen_ms;
    assert!(last_seen > 0, "down hosts keep their last-seen time");

    // Restarted: up again, by itself.
    let _a = agent("victim", &hub.agent_url(), &s, INTERVAL_S);
    stopped.signal(nix::sys::signal::Signal::SIGCONT);
    browser
        .until(Duration::from_secs(15), "both up again", |b| {
            b.status("victim") == Some(HostStatus::Up) && b.status("frozen") == Some(HostStatus::Up)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_reconnects_by_itself_after_a_hub_restart() {
    let mut hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let port_addr = hub.addr.to_string();
    let s = Scenario::new(&one_gpu("NVIDIA H100", 1));
    let _agents: Vec<Proc> = (0..3)
        .map(|i| agent(&format!("r{i}"), &hub.agent_url(), &s, INTERVAL_S))
        .collect();
    let b = Browser::connect(&hub.live_url()).await;
    b.until(Duration::from_secs(15), "3 up", |b| {
        (0..3).all(|i| b.status(&format!("r{i}")) == Some(HostStatus::Up))
    })
    .await;
    drop(b);
    let data = std::mem::replace(&mut hub.data, tempfile::tempdir().expect("tempdir"));
    hub.proc.kill();
    drop(hub);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hub = Hub::start_with(HubOpts {
        listen: &port_addr,
        interval: INTERVAL_S,
        data: Some(data),
        ..Default::default()
    });
    let b = Browser::connect(&hub.live_url()).await;
    // Backoff is capped at 30 s, but after a one-second outage the agents are a few seconds away.
    b.until(Duration::from_secs(20), "3 up after restart", |b| {
        (0..3).all(|i| b.status(&format!("r{i}")) == Some(HostStatus::Up))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agents_are_refused_while_the_others_keep_streaming() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA H200", 3));
    let _good = agent("good", &hub.agent_url(), &s, INTERVAL_S);
    browser
        .until(Duration::from_secs(15), "good up", |b| {
            b.status("good") == Some(HostStatus::Up)
        })
        .await;

    // Wrong or missing token: 401 at the upgrade, no host created.
    for token in [None, Some("wrong-token")] {
        let err = raw_agent(&hub, token).await.expect_err("must be refused");
        assert!(err.to_string().contains("401"), "{err}");
    }
    // Oversized frame (2 MiB > the 1 MiB default): that connection is closed with a reason.
    let mut big = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    big.send(Message::Binary(hello("big").into()))
        .await
        .expect("hello");
    let _ = big.send(Message::Binary(vec![0u8; 2 << 20].into())).await;
    let reason = close_reason(&mut big).await;
    assert!(
        reason.contains("too large") || reason.is_empty(),
        "{reason}"
    );
    // Malformed protobuf.
    let mut bad = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    bad.send(Message::Binary(hello("bad").into()))
        .await
        .expect("hello");
    bad.send(Message::Binary(vec![0xff, 0xff, 0xff, 0xff, 0x0f].into()))
        .await
        .expect("send");
    let reason = close_reason(&mut bad).await;
    assert!(reason.contains("malformed"), "{reason}");
    // A snapshot first, without a hello.
    let mut nohello = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    let snap = AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(Snapshot::default())),
    }
    .encode_to_vec();
    nohello
        .send(Message::Binary(snap.into()))
        .await
        .expect("send");
    assert!(close_reason(&mut nohello).await.contains("hello"));

    // The good agent never stopped: frames kept arriving during all of this.
    let before = browser.frames_of("good");
    tokio::time::sleep(3 * INTERVAL).await;
    assert!(
        browser.frames_of("good") >= before + 2,
        "the good agent stalled"
    );
    let hosts: serde_json::Value = reqwest_get(&hub.http("/api/hosts")).await;
    let ids: Vec<&str> = hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_str().expect("id"))
        .collect();
    assert!(!ids.contains(&"wrong-token"));
    // Both refusals counted, logged once: the log is rate-bounded per address.
    assert_eq!(hub.proc.lines("refused: missing or wrong token").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_another_token_cannot_take_a_host_id() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        extra: vec![
            "--config".into(),
            write_config("[hosts.owned]\ntoken = \"owner-token\"\n"),
        ],
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let s = Scenario::new(&one_gpu("NVIDIA H200", 9));
    let _owner = agent_with(
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
    // The enrollment token is valid, but "owned" is connected with its own token.
    let mut thief = raw_agent(&hub, Some(TOKEN)).await.expect("connect");
    thief
        .send(Message::Binary(hello("owned").into()))
        .await
        .expect("hello");
    let reason = close_reason(&mut thief).await;
    assert!(reason.contains("owned"), "{reason}");
    let before = browser.frames_of("owned");
    tokio::time::sleep(3 * INTERVAL).await;
    assert!(
        browser.frames_of("owned") >= before + 2,
        "the owner was disturbed"
    );
}

fn write_config(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let p = dir.join("hub.toml");
    std::fs::write(&p, text).expect("write");
    p.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_browser_does_not_delay_a_healthy_one() {
    let hub = Hub::start_with(HubOpts {
        interval: "200ms",
        extra: vec![
            "--config".into(),
            write_config("browser_write_timeout = \"2s\"\n"),
        ],
        ..Default::default()
    });
    // The stalled browser: connects, never reads. Its socket buffers fill and stay full.
    let (stalled, _) = tokio_tungstenite::connect_async(hub.live_url())
        .await
        .expect("connect");
    let healthy = Browser::connect(&hub.live_url()).await;
    // Big frames fill the stalled browser's buffers quickly: 8 GPUs × many processes.
    let children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("sleep")
        })
        .collect();
    let procs: Vec<serde_json::Value> = children
        .iter()
        .map(|c| serde_json::json!({"pid": c.id(), "used_memory": 1u64 << 30}))
        .collect();
    let gpus: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"name": format!("GPU {i} {}", "x".repeat(60)), "processes": procs}))
        .collect();
    let s = Scenario::new(&serde_json::json!({ "gpus": gpus }));
    let _agents: Vec<Proc> = (0..6)
        .map(|i| agent(&format!("load{i}"), &hub.agent_url(), &s, "200ms"))
        .collect();
    healthy
        .until(Duration::from_secs(15), "6 hosts", |b| {
            (0..6).all(|i| b.status(&format!("load{i}")) == Some(HostStatus::Up))
        })
        .await;
    // Over the next seconds the healthy browser keeps getting every host's frames on time.
    let start_frames = healthy.frames_of("load0");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = healthy.frames_of("load0") - start_frames;
    assert!(
        got >= 14,
        "healthy browser got only {got} frames of load0 in 4 s (expected ~20)"
    );
    // Gaps between consecutive frames of one host stay near the interval.
    let seen = healthy.seen.lock().expect("seen");
    let times: Vec<Instant> = seen
        .events
        .iter()
        .filter(|e| e.0 == "load0")
        .map(|e| e.3)
        .collect();
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().expect("frames");
    assert!(
        worst < Duration::from_millis(1000),
        "a gap of {worst:?} in the healthy browser's feed"
    );
    drop(seen);
    drop(stalled);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_targets_appear_beside_pushing_agents_and_the_grpc_facade_answers() {
    // A seed-style agent serving the pull API only.
    let s = Scenario::new(&one_gpu("Tesla V100", 42));
    let mut cmd = std::process::Command::new(agent_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GOHM_") || k.starts_with("HMON_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GOHM_ADDR", "127.0.0.1:0")
        .env("GOHM_ALLOW", "127.0.0.1/32")
        .env("HMON_NVML_LIB", stub_lib())
        .env("HMON_STUB_SCENARIO", &s.path)
        .env("HMON_INTERVAL", INTERVAL_S);
    let (_puller, pull_addr) = crate::harness::spawn(cmd, "listening on ");
    let config = write_config(&format!(
        "[[pull]]\nid = \"old-node\"\naddr = \"{pull_addr}\"\n"
    ));
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        extra: vec!["--config".into(), config],
        ..Default::default()
    });
    let browser = Browser::connect(&hub.live_url()).await;
    let pushed = Scenario::new(&one_gpu("NVIDIA H200", 7));
    let _pusher = agent("new-node", &hub.agent_url(), &pushed, INTERVAL_S);
    browser
        .until(Duration::from_secs(15), "both hosts", |b| {
            b.util("old-node") == Some(42) && b.util("new-node") == Some(7)
        })
        .await;
    let hosts: serde_json::Value = reqwest_get(&hub.http("/api/hosts")).await;
    let sources: Vec<(&str, &str)> = hosts
        .as_array()
        .expect("array")
        .iter()
        .map(|h| {
            (
                h["id"].as_str().expect("id"),
                h["source"].as_str().expect("source"),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("new-node", "HOST_SOURCE_PUSH"),
            ("old-node", "HOST_SOURCE_PULL")
        ]
    );

    // The gRPC facade: the seed's GetInfo, asking by host id.
    let grpc = hub.grpc.expect("grpc address");
    let mut client = HostMonitorClient::connect(format!("http://{grpc}"))
        .await
        .expect("grpc connect");
    for (id, util) in [("new-node", 7), ("old-node", 42)] {
        let info = client
            .get_info(RequestInfo {
                token: String::new(),
                reqtype: id.into(),
            })
            .await
            .expect("GetInfo")
            .into_inner();
        assert_eq!(info.id, id);
        assert_eq!(info.gpus[0].utilization, Some(util));
    }
    let missing = client
        .get_info(RequestInfo {
            token: String::new(),
            reqtype: "nope".into(),
        })
        .await
        .expect_err("unknown host");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}
