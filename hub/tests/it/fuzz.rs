//! Property-based fuzzing (proptest) of the hub's untrusted inputs, bounded in cases and time:
//! agent frames through the real `/api/agent` handling path (an in-process hub on loopback, a
//! real WebSocket), and the configuration parsers (TOML and settings.py).
//!
//! PROPTEST_CASES raises the number of cases for a longer run; the default keeps CI quick.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmonitor_hub::config::{Args, HubConfig};
use hmonitor_hub::state::{valid_host_id, Hub};
use hmonitor_proto::{
    agent_message, AgentHello, AgentMessage, GpuInfo, HostInfo, PushProtocol, Snapshot,
};
use proptest::prelude::*;
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "fuzz-token";

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An in-process hub as `main` runs it (history attached, identity pins, every check), on
/// loopback.
fn start_hub(rt: &tokio::runtime::Runtime, data: &std::path::Path) -> (SocketAddr, Arc<Hub>) {
    let cfg = HubConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data.to_owned(),
        enrollment_token: Some(TOKEN.into()),
        admin_token: Some("fuzz-admin".into()),
        max_frame_bytes: 64 * 1024,
        interval: Duration::from_millis(500),
        ..Default::default()
    };
    let server = rt
        .block_on(hmonitor_hub::server::bind(cfg))
        .expect("hub binds");
    let (addr, hub) = (server.http_addr(), server.hub().clone());
    rt.spawn(server.run(std::future::pending()));
    (addr, hub)
}

/// Structured messages with hostile field values, and raw bytes.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        "[a-z0-9.-]{1,20}",
        ".{0,200}",
        Just(String::new()),
        Just("a/b".to_owned()),
        Just("x".repeat(300)),
    ];
    // Host keys: none, a proper one (one of a few, so some ids get pinned and then meet
    // another key), or one of the wrong length.
    let key = prop_oneof![
        Just(Vec::new()),
        (0u8..3).prop_map(|b| vec![b; 32]),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    let hello = (id.clone(), any::<u32>(), any::<u32>(), key).prop_map(
        |(host_id, v, interval_ms, host_key)| {
            AgentMessage {
                msg: Some(agent_message::Msg::Hello(AgentHello {
                    protocol_version: if v % 4 == 0 {
                        v
                    } else {
                        PushProtocol::V1 as u32
                    },
                    host_id,
                    interval_ms,
                    host_key,
                    ..Default::default()
                })),
            }
            .encode_to_vec()
        },
    );
    // Sample times: now-ish, an hour back (backfill), minutes to years off, anything.
    let now = hmonitor_proto::unix_ms(std::time::SystemTime::now());
    let sample_ms = prop_oneof![
        (0u64..2_000).prop_map(move |d| now - d),
        (0u64..3_600_000).prop_map(move |d| now - d),
        (-400_000_000_000i64..400_000_000_000).prop_map(move |d| now.saturating_add_signed(d)),
        any::<u64>(),
    ];
    let name = prop_oneof![
        4 => ".{0,30}",
        1 => Just("n".repeat(hmonitor_proto::limits::MAX_STRING_BYTES + 1)),
    ];
    let snapshot = (
        any::<u64>(),
        any::<bool>(),
        id,
        prop::collection::vec((any::<i32>(), name, any::<Option<i32>>()), 0..8),
        sample_ms,
    )
        .prop_map(|(seq, backfill, hid, gpus, sample_ms)| {
            AgentMessage {
                msg: Some(agent_message::Msg::Snapshot(Snapshot {
                    seq,
                    backfill,
                    sample_ms,
                    info: Some(HostInfo {
                        id: hid,
                        gpus: gpus
                            .into_iter()
                            .map(|(id, name, utilization)| GpuInfo {
                                id,
                                name,
                                utilization,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                })),
            }
            .encode_to_vec()
        });
    let raw = prop::collection::vec(any::<u8>(), 0..2048);
    let big = (70_000usize..80_000).prop_map(|n| vec![0x0a; n]);
    // Valid encodings with bytes flipped or cut: the parser's edge cases.
    let mutated = (snapshot.clone(), any::<u16>(), any::<u8>(), any::<bool>()).prop_map(
        |(mut b, at, x, cut)| {
            if !b.is_empty() {
                let i = usize::from(at) % b.len();
                if cut {
                    b.truncate(i);
                } else {
                    b[i] ^= x | 1;
                }
            }
            b
        },
    );
    prop_oneof![
        3 => hello,
        3 => snapshot,
        2 => raw,
        2 => mutated,
        1 => big,
    ]
}

#[test]
fn fuzz_agent_frames_through_the_hubs_agent_socket() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("tempdir");
    let (addr, hub) = start_hub(&rt, data.path());
    let url = format!("ws://{addr}/api/agent");
    let config = ProptestConfig {
        cases: cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(frames in prop::collection::vec(frame(), 1..6), text in any::<bool>())| {
        let code = rt.block_on(async {
            let mut req = url.as_str().into_client_request().expect("request");
            req.headers_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
            for f in frames {
                let msg = if text {
                    Message::Text(String::from_utf8_lossy(&f).into_owned().into())
                } else {
                    Message::Binary(f.into())
                };
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = ws.send(Message::Close(None)).await;
            // The hub answers with its own reason, or echoes our close; bounded either way.
            let mut code = None;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, ws.next()).await {
                match m {
                    Ok(Message::Close(Some(f))) => code = Some(u16::from(f.code)),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            code
        });
        // Only the protocol's close codes; 1011 (internal error) or a panic would show here.
        if let Some(c) = code {
            prop_assert!(
                [1000, 1002, 1007, 1008, 1009].contains(&c),
                "unexpected close code {c}"
            );
        }
    });
    // Whatever was sent, the hub holds only well-formed host ids and still serves.
    for h in hub.hosts() {
        assert!(valid_host_id(&h.id), "{:?}", h.id);
    }
    let ok = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(addr).await;
        s.is_ok()
    });
    assert!(ok, "the hub stopped accepting");
    // History took what it was given without failing, and the hub still answers.
    let health = hmonitor_testkit::http::get(addr, "/healthz", &[]);
    assert_eq!(health.status, 200, "{}", health.body);
    let h: serde_json::Value = serde_json::from_str(&health.body).expect("json");
    assert!(h["history"].is_object(), "{h}");
}

/// TOML-ish text: real keys with random values, random lines, random bytes.
fn toml_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("grpc_listen"),
        Just("interval"),
        Just("enrollment_token"),
        Just("viewer_allow"),
        Just("max_frame_bytes"),
        Just("browser_write_timeout"),
        Just("expected_hosts"),
        Just("max_conns_per_addr"),
        Just("max_agent_frames_per_sec"),
        Just("tls_cert"),
        Just("[hosts.a]\ntoken"),
        Just("[[pull]]\nid"),
        Just("addr"),
    ];
    let value = prop_oneof![
        "\"[ -~]{0,30}\"",
        "-?[0-9]{1,25}",
        Just("true".to_owned()),
        Just("[\"a\", \"a\", 3]".to_owned()),
        Just("\"127.0.0.1:0\"".to_owned()),
        Just("\"10s\"".to_owned()),
        Just("{ x = 1 }".to_owned()),
        ".{0,20}",
    ];
    let line = prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => ".{0,60}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

fn settings_py() -> impl Strategy<Value = String> {
    let entry = ("[ -~]{0,12}", "[ -~]{0,24}").prop_map(|(k, v)| format!("\"{k}\": \"{v}\""));
    prop_oneof![
        prop::collection::vec(entry, 0..6)
            .prop_map(|e| format!("servers = {{{}}}\n", e.join(", "))),
        ".{0,200}",
        "servers = [{}\\[\\]\"':, a-z0-9]{0,80}",
    ]
}

#[test]
fn fuzz_the_config_parsers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ProptestConfig {
        cases: cases(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(toml in toml_text(), py in settings_py(), which in any::<bool>())| {
        let toml_path = dir.path().join("hub.toml");
        let py_path = dir.path().join("settings.py");
        std::fs::write(&toml_path, &toml).expect("write");
        std::fs::write(&py_path, &py).expect("write");
        let args = Args {
            config: which.then(|| toml_path.clone()),
            settings_py: (!which).then(|| py_path.clone()),
            data_dir: Some(dir.path().join("data")),
            token: Some("t".into()),
            ..Default::default()
        };
        // Never a panic; an error names the file it is about.
        if let Err(e) = hmonitor_hub::config::load(&args, None) {
            let msg = e.to_string();
            let named = if which { "hub.toml" } else { "settings.py" };
            prop_assert!(
                msg.contains(named) || msg.contains("configured twice") || msg.starts_with("TLS"),
                "error does not name the file: {msg}"
            );
        }
    });
}
