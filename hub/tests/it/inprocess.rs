//! The hub and the agent as libraries, in this process: `bind` on port 0, `run` until a stop,
//! and everything joined when `run` returns. The token has every character that needs
//! encoding in a query or a cookie, and each entry point must take it.

use std::net::SocketAddr;
use std::time::Duration;

use hmonitor_agent::push::PushConfig;
use hmonitor_agent::server::{AgentConfig, PullConfig};
use hmonitor_hub::config::{HubConfig, LocalAgent};
use hmonitor_proto::host_monitor_client::HostMonitorClient;
use hmonitor_proto::{HostStatus, RequestInfo};
use hmonitor_sampler::SamplerConfig;
use tokio::sync::oneshot;

use crate::harness::{eventually, stub_lib};
use crate::history::http_get;

/// Needs encoding in a query (`+ & = %`), a cookie (`;`) and a path (`/`).
const AWKWARD: &str = "a+b/c=d%e&f;g";

fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hub_config(data: &std::path::Path) -> HubConfig {
    HubConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: data.to_owned(),
        interval: Duration::from_millis(300),
        enrollment_token: Some(AWKWARD.into()),
        viewer_token: Some(AWKWARD.into()),
        ..HubConfig::default()
    }
}

/// A GET with extra headers: (status, body).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = hmonitor_testkit::http::get_async(addr, path, headers).await;
    (r.status, r.body)
}

async fn status_of(addr: SocketAddr, id: &str) -> Option<String> {
    let bearer = format!("Bearer {AWKWARD}");
    let (code, body) = get(addr, "/api/hosts", &[("Authorization", &bearer)]).await;
    assert_eq!(code, 200, "{body}");
    let hosts: serde_json::Value = serde_json::from_str(&body).expect("json");
    hosts
        .as_array()?
        .iter()
        .find(|h| h["id"] == id)
        .and_then(|h| h["status"].as_str().map(str::to_owned))
}

async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_agent_in_process_on_port_zero_with_an_awkward_token_then_both_stop_cleanly() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = hmonitor_hub::server::bind(hub_config(data.path()))
        .await
        .expect("hub binds");
    let http = server.http_addr();
    let grpc = server.grpc_addr().expect("gRPC on");
    assert_ne!(http.port(), 0);
    assert_ne!(grpc.port(), 0);
    let hub_state = server.hub().clone();
    let (stop_hub, hub_stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = hub_stopped.await;
    }));

    // An agent pushing with the awkward token as Bearer, and serving its pull API.
    let mut sampler = SamplerConfig::new(Duration::from_millis(300));
    sampler.id = Some("inproc".into());
    sampler.nvml_lib = Some(stub_lib().into_os_string());
    let agent = hmonitor_agent::server::bind(AgentConfig {
        sampler,
        pull: Some(PullConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow: "127.0.0.1/32".parse().expect("allowlist"),
            token: Some(AWKWARD.into()),
            tls: None,
        }),
        push: Some(PushConfig {
            hubs: vec![format!("ws://{http}").parse().expect("hub url")],
            token: Some(AWKWARD.into()),
            interval: Duration::from_millis(300),
            first_sample_within: Duration::from_secs(1),
            tls: Default::default(),
            backlog: Duration::from_secs(60),
            backlog_dir: None,
            host_key: None,
        }),
        socket: None,
    })
    .await
    .expect("agent binds");
    let pull = agent.pull_addr().expect("pull API on");
    assert_ne!(pull.port(), 0);
    let (stop_agent, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(agent.run(async {
        let _ = agent_stopped.await;
    }));

    until(
        Duration::from_secs(15),
        "the agent is up on the hub",
        async || status_of(http, "inproc").await.as_deref() == Some("HOST_STATUS_UP"),
    )
    .await;

    // Every way a viewer can present the token takes it; a wrong or missing one is refused.
    let q = format!("/api/hosts?token={}", encoded(AWKWARD));
    assert_eq!(get(http, &q, &[]).await.0, 200, "?token= percent-encoded");
    let cookie = format!("theme=dark; hmon_token={}", encoded(AWKWARD));
    let cookie = [("Cookie", cookie.as_str())];
    assert_eq!(get(http, "/api/hosts", &cookie).await.0, 200, "cookie");
    assert_eq!(get(http, "/api/hosts", &[]).await.0, 401, "no token");
    // Undecoded, the '%e' and '&' would cut it short: this is not the token.
    assert_eq!(
        get(http, &format!("/api/hosts?token={AWKWARD}"), &[])
            .await
            .0,
        401
    );
    let wrong = format!("hmon_token={}", encoded("a+b/c=d%e&f;h"));
    assert_eq!(
        get(http, "/api/hosts", &[("Cookie", &wrong)]).await.0,
        401,
        "wrong cookie"
    );

    // The gRPC facade (RequestInfo.token) and the agent's own pull API take it too.
    for (addr, id) in [(grpc, "inproc"), (pull, "")] {
        let mut c = HostMonitorClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let ok = c
            .get_info(RequestInfo {
                token: AWKWARD.into(),
                reqtype: id.into(),
            })
            .await
            .expect("GetInfo with the token");
        assert_eq!(ok.get_ref().id, "inproc");
        let refused = c
            .get_info(RequestInfo {
                token: "a+b".into(),
                reqtype: id.into(),
            })
            .await
            .expect_err("a wrong token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    // The agent stops: its run returns, the hub notices the clean close.
    let _ = stop_agent.send(());
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent's run returned")
        .expect("join")
        .expect("the agent stopped cleanly");
    eventually(Duration::from_secs(10), || {
        (hub_state.host("inproc")?.status == HostStatus::Down as i32).then_some(())
    });

    // The hub stops: run returns, every listener is closed, history was written and closed.
    let _ = stop_hub.send(());
    tokio::time::timeout(Duration::from_secs(15), hub)
        .await
        .expect("the hub's run returned")
        .expect("join")
        .expect("the hub stopped cleanly");
    for addr in [http, grpc, pull] {
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "{addr} still bound after run returned"
        );
    }
    let history = hub_state.history().expect("history");
    assert!(
        history.stats.json()["stored"].as_u64() > Some(0),
        "{}",
        history.stats.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_agent_reports_into_the_hub_it_runs_in_and_stops_with_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = hub_config(data.path());
    cfg.viewer_token = None;
    cfg.local_agent = LocalAgent {
        enabled: true,
        id: Some("hub-itself".into()),
        nvml_lib: Some(stub_lib()),
        ..LocalAgent::default()
    };
    let server = hmonitor_hub::server::bind(cfg).await.expect("hub binds");
    assert_eq!(server.local_agent_id(), Some("hub-itself"));
    let http = server.http_addr();
    let state = server.hub().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    until(
        Duration::from_secs(10),
        "the local agent's report",
        async || {
            let (code, _, body) = http_get(&format!("http://{http}/api/hosts")).await;
            code == 200 && body.contains("\"hub-itself\"") && body.contains("local")
        },
    )
    .await;
    let host = state.host("hub-itself").expect("known");
    assert_eq!(host.status, HostStatus::Up as i32);
    assert!(host.info.is_some_and(|i| i.id == "hub-itself"));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), hub)
        .await
        .expect("the hub's run returned")
        .expect("join")
        .expect("stopped cleanly");
    assert!(
        std::net::TcpListener::bind(http).is_ok(),
        "{http} still bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_page_cannot_read_the_feed_and_every_response_has_the_security_headers() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = hub_config(data.path());
    cfg.viewer_token = None; // the default: no token, so the origin check is all there is
    cfg.allowed_origins = vec!["https://grafana.lab".into()];
    let server = hmonitor_hub::server::bind(cfg).await.expect("hub binds");
    let http = server.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let own = format!("http://{http}");
    // A real WebSocket handshake with the Origin a browser would send: the status it gets.
    let live = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{http}/api/live")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("origin", origin.parse().expect("header"));
        async move {
            match tokio_tungstenite::connect_async(req).await {
                Ok((_ws, resp)) => resp.status().as_u16(),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
                Err(e) => panic!("handshake: {e}"),
            }
        }
    };
    assert_eq!(live("http://evil.example").await, 403, "a cross-site page");
    assert_eq!(live("null").await, 403, "an opaque origin");
    assert_eq!(live(&own).await, 101, "the hub's own page");
    assert_eq!(
        live("https://grafana.lab").await,
        101,
        "a configured origin"
    );
    let (code, _) = get(http, "/api/hosts", &[("Origin", "http://evil.example")]).await;
    assert_eq!(code, 403);
    let (code, _) = get(http, "/api/hosts", &[]).await;
    assert_eq!(code, 200, "no Origin: not a browser's cross-site request");

    for path in ["/", "/api/hosts", "/healthz", "/nonexistent"] {
        let r = hmonitor_testkit::http::get_async(http, path, &[]).await;
        let head = r.head.to_ascii_lowercase();
        for h in [
            "content-security-policy: default-src 'self'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(h), "{path}: no {h:?} in\n{}", r.head);
        }
    }
    let _ = stop.send(());
    hub.await.expect("join").expect("stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_host_allowlist_other_host_names_are_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = hub_config(data.path());
    cfg.viewer_token = None;
    cfg.allowed_hosts = vec!["hub.lab".into()];
    let server = hmonitor_hub::server::bind(cfg).await.expect("hub binds");
    let http = server.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let host = format!("hub.lab:{}", http.port());
    assert_eq!(get(http, "/api/hosts", &[("Host", &host)]).await.0, 200);
    // A rebinding attacker's name resolving to this hub's address.
    let evil = format!("evil.example:{}", http.port());
    assert_eq!(get(http, "/api/hosts", &[("Host", &evil)]).await.0, 421);
    assert_eq!(
        get(http, "/api/hosts", &[]).await.0,
        421,
        "the bare address is not listed"
    );
    let _ = stop.send(());
    hub.await.expect("join").expect("stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_silent_connections_are_closed_by_the_hub() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = hub_config(data.path());
    cfg.viewer_token = None;
    cfg.http_head_timeout = Duration::from_secs(1);
    cfg.http_idle_timeout = Duration::from_secs(3);
    let server = hmonitor_hub::server::bind(cfg).await.expect("hub binds");
    let http = server.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // 30 peers: 20 send half a request head, 10 connect and say nothing.
    let mut held = Vec::new();
    for i in 0..30 {
        let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
        if i < 20 {
            s.write_all(b"GET /api/hosts HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
        }
        held.push(s);
    }
    // A well-behaved client is served meanwhile.
    assert_eq!(get(http, "/api/hosts", &[]).await.0, 200);
    for (i, s) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        // Closed (EOF, or a 408 the hub may send first and then EOF) well within 10 s.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection {i} is still open");
    }
    // A keep-alive connection that goes quiet after a request is closed after the idle
    // timeout (3 s), not the head timeout (1 s).
    let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let asked = std::time::Instant::now();
    let mut got = Vec::new();
    let idle_closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let idle_for = asked.elapsed();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        idle_closed.is_ok(),
        "an idle keep-alive connection stayed open"
    );
    assert!(
        idle_for >= Duration::from_millis(2500),
        "closed after {idle_for:?}: the head timeout, not the idle one"
    );
    let _ = stop.send(());
    hub.await.expect("join").expect("stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_host_ids_past_max_hosts_are_refused_and_the_known_ones_keep_reporting() {
    use futures_util::{SinkExt, StreamExt};
    use hmonitor_proto::{
        agent_message, hub_message, AgentHello, AgentMessage, HubMessage, PushProtocol,
    };
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = hub_config(data.path());
    cfg.max_hosts = 50;
    cfg.expected_hosts = vec!["expected".into()];
    let server = hmonitor_hub::server::bind(cfg).await.expect("hub binds");
    let http = server.http_addr();
    let state = server.hub().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // What the hub answers a hello for `id`: Accepted (true) or a refusal's reason.
    let hello = |id: String| async move {
        let mut req = format!("ws://{http}/api/agent")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {AWKWARD}").parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let msg = AgentMessage {
            msg: Some(agent_message::Msg::Hello(AgentHello {
                protocol_version: PushProtocol::V1 as u32,
                host_id: id,
                interval_ms: 300,
                ..Default::default()
            })),
        };
        ws.send(Message::Binary(msg.encode_to_vec().into()))
            .await
            .expect("hello");
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    break HubMessage::decode(b.as_ref()).expect("decodes")
                }
                Some(Ok(_)) => continue,
                other => panic!("no reply: {other:?}"),
            }
        };
        let answer = match reply.msg {
            Some(hub_message::Msg::Accepted(_)) => Ok(()),
            Some(hub_message::Msg::Refused(r)) => Err(r.reason),
            other => panic!("unexpected {other:?}"),
        };
        (answer, ws)
    };
    let (first, _keep) = hello("good".into()).await;
    assert_eq!(first, Ok(()));
    let mut refused = 0;
    let mut held = Vec::new();
    for i in 0..300 {
        let (answer, ws) = hello(format!("made-up-{i}")).await;
        match answer {
            Ok(()) => held.push(ws),
            Err(reason) => {
                assert!(reason.contains("max_hosts"), "{reason}");
                refused += 1;
            }
        }
    }
    // The expected host and "good" count: 48 of the made-up ids fit.
    assert_eq!(state.hosts().len(), 50);
    assert_eq!(refused, 300 - 48);
    assert_eq!(held.len(), 48);
    // A known id still comes back after its connection ends: the limit is on ids, not on
    // connections.
    drop(held);
    let start = tokio::time::Instant::now();
    loop {
        // Until the hub has seen the old connection close, the id is still held by it.
        let (again, _ws) = hello("made-up-0".into()).await;
        match again {
            Ok(()) => break,
            Err(reason) => {
                assert!(!reason.contains("max_hosts"), "{reason}");
                assert!(start.elapsed() < Duration::from_secs(10), "{reason}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(state.hosts().len(), 50);
    let _ = stop.send(());
    hub.await.expect("join").expect("stopped cleanly");
}
