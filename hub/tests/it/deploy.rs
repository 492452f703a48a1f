//! The deploy issue: /metrics read by promtool and a real Prometheus, TLS between agent and hub,
//! limits on untrusted peers, and no secret in any log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hmonitor_proto::{agent_message, AgentHello, AgentMessage, PushProtocol, Snapshot};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A blocking HTTP/1.1 GET: (status line and headers, body).
fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let r = hmonitor_testkit::http::get(addr, path, headers);
    (r.head, r.body)
}

/// [`http_get`], `None` when nothing listens (yet).
fn try_http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, String)> {
    hmonitor_testkit::http::try_get(addr, path, headers).map(|r| (r.head, r.body))
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_a_stub_gpu() {
    assert!(
        have("prometheus") && have("promtool"),
        "prometheus and promtool are needed (apt-get install prometheus; .ci/run does)"
    );
    const VIEWER: &str = "viewer-secret-for-prometheus";
    let hub = Hub::start_with(HubOpts {
        extra: vec!["--viewer-token".into(), VIEWER.into()],
        ..Default::default()
    });
    let s = Scenario::new(&one_gpu("NVIDIA H200", 37));
    let _agent = agent("prom-host", &hub.agent_url(), &s, "300ms");
    let auth = format!("Bearer {VIEWER}");

    // Behind the viewer gate, like /api/hosts.
    let (head, _) = http_get(hub.addr, "/metrics", &[]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let body = eventually(Duration::from_secs(20), || {
        let (head, body) = http_get(hub.addr, "/metrics", &[("Authorization", &auth)]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.lines()
            .any(|l| {
                l.starts_with("hmonitor_gpu_utilization_percent{")
                    && l.contains("host=\"prom-host\"")
                    && l.ends_with(" 37.0")
            })
            .then_some(body)
    });
    for needle in [
        "hmonitor_host_up{host=\"prom-host\"} 1",
        "hmonitor_hub_agents_connected 1",
        "hmonitor_hub_frames_received_total ",
        "gpu=\"0\"",
        "name=\"NVIDIA H200\"",
        "hmonitor_gpu_memory_total_bytes{",
    ] {
        assert!(body.contains(needle), "{needle} missing:\n{body}");
    }
    // The stub GPU has no fan: the reading is absent, not 0.
    assert!(
        !body.contains("hmonitor_gpu_fan_speed_percent{"),
        "a fanless GPU must have no fan reading:\n{body}"
    );

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scraping the hub every second, with the viewer token.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: hmonitor\n    \
             authorization:\n      credentials: {VIEWER}\n    static_configs:\n      - targets: ['{}']\n",
            hub.addr
        ),
    )
    .expect("config");
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn");
    let prom = Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let addr: SocketAddr = web.parse().expect("addr");
    let query = "/api/v1/query?query=hmonitor_gpu_utilization_percent%7Bhost%3D%22prom-host%22%7D";
    let value = eventually(Duration::from_secs(60), || {
        let (head, body) = try_http_get(addr, query, &[])?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let r = v["data"]["result"].as_array()?.first()?.clone();
        Some((r["metric"].clone(), r["value"][1].as_str()?.to_owned()))
    });
    drop(prom);
    assert_eq!(value.1, "37", "{value:?}");
    assert_eq!(value.0["name"], "NVIDIA H200", "{value:?}");
    assert_eq!(value.0["gpu"], "0", "{value:?}");
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn ca(&self, name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("hmonitor test {name}"));
        let ca = rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
        std::fs::write(self.path(&format!("{name}.pem")), ca.pem()).expect("write");
        ca
    }

    /// A server certificate for `names` signed by `ca`, written as NAME.crt and NAME.key.
    pub(crate) fn leaf(
        &self,
        name: &str,
        names: &[&str],
        ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, ca).expect("sign");
        let (c, k) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

fn tls_hub(cert: &Path, key: &Path) -> Hub {
    Hub::start_with(HubOpts {
        extra: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    })
}

/// Starts an agent for `url` with `env`; waits until its log has a line containing one of
/// `expect` (case-insensitive) and returns that line.
fn agent_outcome(id: &str, url: &str, env: &[(&str, &str)], expect: &[&str]) -> (Proc, String) {
    let s = Scenario::new(&one_gpu("NVIDIA H200", 5));
    let a = agent_with(id, url, &s, "300ms", TOKEN, env);
    let line = eventually(Duration::from_secs(20), || {
        a.log.lock().expect("log").iter().find_map(|l| {
            let low = l.to_lowercase();
            expect
                .iter()
                .any(|e| low.contains(&e.to_lowercase()))
                .then(|| l.clone())
        })
    });
    eprintln!("{id}: {line}");
    (a, line)
}

#[test]
fn tls_a_good_certificate_connects_and_a_wrong_ca_an_expired_one_or_a_wrong_name_are_refused() {
    let pki = Pki {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let ca = pki.ca("ca");
    let _other = pki.ca("other-ca");
    let ca_pem = pki.path("ca.pem").display().to_string();
    let other_pem = pki.path("other-ca.pem").display().to_string();

    let (c, k) = pki.leaf("good", &["localhost"], &ca, false);
    let good = tls_hub(&c, &k);
    let url = format!("wss://localhost:{}/api/agent", good.addr.port());

    // Signed by HMON_CA, valid, for the name dialled: connected.
    let (_a, line) = agent_outcome(
        "tls-good",
        &url,
        &[("HMON_CA", &ca_pem)],
        &["connected to hub", "cannot reach"],
    );
    assert!(line.contains("connected to hub"), "{line}");
    eventually(Duration::from_secs(10), || {
        (!good.proc.lines("agent tls-good connected").is_empty()).then_some(())
    });
    // The CLI asking the hub itself (no agent here) trusts the same HMON_CA, and names the
    // hub and the reason when it may not.
    let status = |env: &[(&str, &str)]| {
        let mut c = crate::harness::clean(std::process::Command::new(crate::harness::agent_bin()));
        c.args(["status", "--json", "--socket", "/nonexistent/agent.sock"])
            .env("HMON_HUB", &url);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run hmonitor status")
    };
    let o = eventually(Duration::from_secs(10), || {
        let o = status(&[("HMON_CA", &ca_pem)]);
        o.status.success().then_some(o)
    });
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(rows.is_array(), "{rows}");
    let o = status(&[("HMON_CA", &other_pem)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("https://localhost") && err.contains("TLS"),
        "{err}"
    );
    // A plain-HTTP client gets no answer from the TLS port.
    let (head, _) = http_get(good.addr, "/healthz", &[]);
    assert!(!head.contains("200 OK"), "{head}");

    // Another CA: refused, and the log says why.
    let (_a, line) = agent_outcome(
        "tls-wrong-ca",
        &url,
        &[("HMON_CA", &other_pem)],
        &["connected to hub", "cannot reach"],
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("set HMON_CA"), "no hint: {line}");
    // No HMON_CA: the system's store does not know the test CA either.
    let (_a, line) = agent_outcome(
        "tls-system-roots",
        &url,
        &[],
        &["connected to hub", "cannot reach", "no CA certificates"],
    );
    assert!(!line.contains("connected to hub"), "{line}");

    // Expired.
    let (c, k) = pki.leaf("expired", &["localhost"], &ca, true);
    let expired = tls_hub(&c, &k);
    let url_expired = format!("wss://localhost:{}/api/agent", expired.addr.port());
    let (_a, line) = agent_outcome(
        "tls-expired",
        &url_expired,
        &[("HMON_CA", &ca_pem)],
        &["connected to hub", "cannot reach"],
    );
    assert!(line.to_lowercase().contains("expired"), "{line}");

    // Valid, but for another name.
    let (c, k) = pki.leaf("other-name", &["hub.other.example"], &ca, false);
    let wrong = tls_hub(&c, &k);
    let url_wrong = format!("wss://localhost:{}/api/agent", wrong.addr.port());
    let (_a, line) = agent_outcome(
        "tls-wrong-name",
        &url_wrong,
        &[("HMON_CA", &ca_pem)],
        &["connected to hub", "cannot reach"],
    );
    assert!(line.contains("not valid for name"), "{line}");

    // The one way around verification, loudly logged: at start and on each connection.
    let (a, line) = agent_outcome(
        "tls-insecure",
        &url_wrong,
        &[("HMON_INSECURE_SKIP_VERIFY", "1")],
        &["connected to hub", "cannot reach"],
    );
    assert!(line.contains("connected to hub"), "{line}");
    let warnings = a.lines("NOT verified");
    assert!(warnings.len() >= 2, "{warnings:#?}");
    assert!(warnings.iter().all(|l| l.contains("WARN")), "{warnings:#?}");
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

fn snapshot(seq: u64) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(Snapshot {
            seq,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn hello(id: &str) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(AgentHello {
            protocol_version: PushProtocol::V1 as u32,
            host_id: id.into(),
            interval_ms: 300,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// Catching up after an outage sends many samples at once; they are paced by the agent's
/// window of unacknowledged frames and drawn from a larger budget than live frames, so a long
/// backlog is stored, not refused as a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_after_an_outage_is_not_taken_for_a_flood() {
    use futures_util::StreamExt;
    use hmonitor_proto::{hub_message, HubMessage};
    let hub = Hub::start_with(HubOpts {
        extra: vec!["--max-agent-frames-per-sec".into(), "5".into()],
        ..Default::default()
    });
    let mut req = hub.agent_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    ws.send(Message::Binary(hello("catching-up").into()))
        .await
        .expect("hello");
    // 300 samples of a 90 s outage at once: six times the live burst of 50.
    let start = hmonitor_proto::unix_ms(std::time::SystemTime::now()) as i64 - 90_000;
    for seq in 1..=300u64 {
        let frame = AgentMessage {
            msg: Some(agent_message::Msg::Snapshot(Snapshot {
                seq,
                sample_ms: (start + 300 * seq as i64) as u64,
                backfill: true,
                ..Default::default()
            })),
        }
        .encode_to_vec();
        ws.send(Message::Binary(frame.into())).await.expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < 300 {
        assert!(
            Instant::now() < deadline,
            "only {acked} of 300 acknowledged"
        );
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Ok(HubMessage {
                    msg: Some(hub_message::Msg::Ack(a)),
                }) = HubMessage::decode(b.as_ref())
                {
                    acked = a.seq;
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed while backfilling: {f:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no acknowledgement: {other:?}"),
        }
    }
    assert!(hub.proc.lines("too many").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_closed_with_1008_and_the_others_are_not() {
    let hub = Hub::start_with(HubOpts {
        extra: vec!["--max-agent-frames-per-sec".into(), "5".into()],
        ..Default::default()
    });
    let s = Scenario::new(&one_gpu("NVIDIA H200", 9));
    let _good = agent("steady", &hub.agent_url(), &s, "300ms");
    eventually(Duration::from_secs(20), || {
        (!hub.proc.lines("agent steady connected").is_empty()).then_some(())
    });

    let mut req = hub.agent_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    ws.send(Message::Binary(hello("flood").into()))
        .await
        .expect("hello");
    // 5/s with a burst of 50: 200 frames at once are far over.
    for seq in 1..=200u64 {
        if ws
            .send(Message::Binary(snapshot(seq).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = {
        use futures_util::StreamExt;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "the flooding agent was not closed"
            );
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => break (u16::from(f.code), f.reason),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    };
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too many frames"), "{reason}");
    // Logged before the close frame was sent, but read from the hub's stderr by another
    // thread: give that thread a moment.
    let logged = eventually(Duration::from_secs(5), || {
        let lines = hub.proc.lines("agent flood");
        lines
            .iter()
            .any(|l| l.contains("too many frames"))
            .then_some(lines)
    });
    assert!(!logged.is_empty());
    // The steady agent kept its connection and keeps reporting.
    let seq = |hosts: &serde_json::Value| {
        hosts
            .as_array()
            .and_then(|a| a.iter().find(|h| h["id"] == "steady"))
            .and_then(|h| h["seq"].as_u64())
            .unwrap_or(0)
    };
    let before = seq(&crate::push::reqwest_get(&hub.http("/api/hosts")).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = seq(&crate::push::reqwest_get(&hub.http("/api/hosts")).await);
    assert!(after >= before + 2, "steady stalled: {before} → {after}");
    assert!(hub.proc.lines("agent steady (").is_empty());
}

#[test]
fn connections_per_address_are_capped_and_header_sizes_bounded() {
    let hub = Hub::start_with(HubOpts {
        extra: vec!["--max-conns-per-addr".into(), "3".into()],
        ..Default::default()
    });
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(hub.addr).expect("connect"))
        .collect();
    // The fourth is closed at accept, before anything is read from it.
    let closed_at_once = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut b = [0u8; 64];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    };
    let mut fourth = TcpStream::connect(hub.addr).expect("connect");
    assert!(
        closed_at_once(&mut fourth),
        "a fourth connection was served"
    );
    eventually(Duration::from_secs(5), || {
        (!hub.proc.lines("(limit 3, --max-conns-per-addr)").is_empty()).then_some(())
    });
    // The gRPC listener counts its own: three held, the fourth closed at accept. An admitted
    // connection gets the server's HTTP/2 greeting (or its refusal of an HTTP/1 request);
    // a refused one gets nothing.
    let grpc = hub.grpc.expect("gRPC address");
    let held_grpc: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(grpc).expect("connect"))
        .collect();
    let mut fourth = TcpStream::connect(grpc).expect("connect");
    assert!(
        closed_at_once(&mut fourth),
        "a fourth gRPC connection was served"
    );
    drop(held_grpc);
    eventually(Duration::from_secs(5), || {
        let mut s = TcpStream::connect(grpc).expect("connect");
        (!closed_at_once(&mut s)).then_some(())
    });
    // Closing one makes room again.
    drop(held);
    let (head, body) = eventually(Duration::from_secs(5), || {
        let (h, b) = http_get(hub.addr, "/healthz", &[]);
        h.starts_with("HTTP/1.1 200").then_some((h, b))
    });
    let health: serde_json::Value = serde_json::from_str(&body).expect(&head);
    assert!(
        health["connections_refused"].as_u64() >= Some(2),
        "{health}"
    );

    // Headers: more than 100 of them, or a head over hyper's buffer (about 400 KiB), get 431.
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (head, _) = http_get(hub.addr, "/healthz", &many);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    let big = "x".repeat(512 * 1024);
    let (head, _) = http_get(hub.addr, "/healthz", &[("x-big", &big)]);
    assert!(
        head.starts_with("HTTP/1.1 431") || head.is_empty(),
        "{}",
        &head[..head.len().min(200)]
    );
    // And the hub still answers.
    let (head, _) = http_get(hub.addr, "/healthz", &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

// ---------------------------------------------------------------------------------------------
// No secret in any log
// ---------------------------------------------------------------------------------------------

#[test]
fn no_token_appears_in_the_logs_at_debug_level() {
    const ENROLL: &str = "enroll-SECRET-4f1d2a9c";
    const HOST_TOKEN: &str = "host-SECRET-77aa01be";
    const VIEWER: &str = "viewer-SECRET-0c9e33d1";
    const WRONG: &str = "wrong-SECRET-5b6c7d8e";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!("viewer_token = \"{VIEWER}\"\n[hosts.pinned]\ntoken = \"{HOST_TOKEN}\"\n"),
    )
    .expect("config");
    let mut hub = Hub::start_with(HubOpts {
        extra: vec![
            "--config".into(),
            config.display().to_string(),
            "--log".into(),
            "debug".into(),
            // Beats the harness's HMON_TOKEN.
            "--token".into(),
            ENROLL.into(),
        ],
        ..Default::default()
    });
    let s = Scenario::new(&one_gpu("NVIDIA H200", 1));
    let debug = [("HMON_LOG", "debug")];
    let mut agents = vec![
        agent_with("pinned", &hub.agent_url(), &s, "300ms", HOST_TOKEN, &debug),
        agent_with("enrolled", &hub.agent_url(), &s, "300ms", ENROLL, &debug),
        agent_with("wrong", &hub.agent_url(), &s, "300ms", WRONG, &debug),
        // The pinned host's id with the shared token: refused, the id is reserved.
        agent_with("pinned", &hub.agent_url(), &s, "300ms", ENROLL, &debug),
    ];
    eventually(Duration::from_secs(20), || {
        let ok = !hub.proc.lines("agent pinned connected").is_empty()
            && !hub.proc.lines("agent enrolled connected").is_empty()
            && !hub.proc.lines("refused: missing or wrong token").is_empty()
            && !hub
                .proc
                .lines("is reserved for its own per-host token")
                .is_empty();
        ok.then_some(())
    });
    // Viewers: with the token in each place a browser may put it, and a wrong one.
    let auth = format!("Bearer {VIEWER}");
    let cookie = format!("hmon_token={VIEWER}");
    let query = format!("/api/hosts?token={VIEWER}");
    for (path, headers) in [
        ("/api/hosts", vec![("Authorization", auth.as_str())]),
        ("/metrics", vec![("Cookie", cookie.as_str())]),
        (query.as_str(), vec![]),
        (
            "/api/hosts",
            vec![("Authorization", "Bearer wrong-SECRET-5b6c7d8e")],
        ),
    ] {
        http_get(hub.addr, path, &headers);
    }
    for a in &mut agents {
        a.kill();
    }
    hub.proc.kill();
    let mut logs: Vec<(String, Vec<String>)> =
        vec![("hub".into(), hub.proc.log.lock().expect("log").clone())];
    for (i, a) in agents.iter().enumerate() {
        logs.push((format!("agent {i}"), a.log.lock().expect("log").clone()));
    }
    let debug_lines: usize = logs
        .iter()
        .map(|(_, l)| l.iter().filter(|l| l.contains("DEBUG")).count())
        .sum();
    assert!(debug_lines > 0, "the processes did not log at debug level");
    for (who, lines) in &logs {
        for l in lines {
            for secret in [ENROLL, HOST_TOKEN, VIEWER, WRONG, "SECRET"] {
                assert!(!l.contains(secret), "{who} logged a token: {l}");
            }
        }
    }
}

async fn get_info_tls(
    addr: SocketAddr,
    ca_pem: &Path,
    reqtype: &str,
) -> Result<hmonitor_proto::HostInfo, String> {
    use hmonitor_proto::host_monitor_client::HostMonitorClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ca = std::fs::read(ca_pem).expect("ca");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("endpoint")
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    HostMonitorClient::new(channel)
        .get_info(hmonitor_proto::RequestInfo {
            token: String::new(),
            reqtype: reqtype.into(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_on_the_hubs_facade_and_the_agents_pull_api() {
    let pki = Pki {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let ca = pki.ca("ca");
    let _other = pki.ca("other-ca");
    let (cert, key) = pki.leaf("localhost", &["localhost"], &ca, false);

    // The hub's gRPC facade uses the same certificate as its HTTP side.
    let hub = tls_hub(&cert, &key);
    let grpc = hub.grpc.expect("grpc address");
    let (head, _) = http_get(grpc, "/", &[]);
    assert!(!head.contains("HTTP/1.1 200"), "{head}");
    let s = Scenario::new(&one_gpu("NVIDIA H200", 61));
    let url = format!("wss://localhost:{}/api/agent", hub.addr.port());
    let ca_pem = pki.path("ca.pem");
    let ca_env = ca_pem.display().to_string();
    let _a = agent_with(
        "grpc-tls",
        &url,
        &s,
        "300ms",
        TOKEN,
        &[("HMON_CA", &ca_env)],
    );
    let info = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match get_info_tls(grpc, &ca_pem, "grpc-tls").await {
                Ok(i) if i.gpus.first().and_then(|g| g.utilization) == Some(61) => break i,
                other => {
                    assert!(Instant::now() < deadline, "facade over TLS: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    assert_eq!(info.id, "grpc-tls");
    // A client trusting another CA is refused.
    let err = get_info_tls(grpc, &pki.path("other-ca.pem"), "grpc-tls")
        .await
        .expect_err("another CA must fail");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The agent's pull API with HMON_TLS_CERT/HMON_TLS_KEY.
    let mut cmd = Command::new(agent_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GOHM_") || k.starts_with("HMON_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GOHM_ADDR", "127.0.0.1:0")
        .env("HMON_ID", "pull-tls")
        .env("HMON_NVML_LIB", stub_lib())
        .env("HMON_STUB_SCENARIO", &s.path)
        .env("HMON_TLS_CERT", &cert)
        .env("HMON_TLS_KEY", &key);
    let (_agent, listening) = crate::harness::spawn(cmd, "pull API listening on ");
    let addr: SocketAddr = listening.parse().expect("pull address");
    let info = get_info_tls(addr, &ca_pem, "")
        .await
        .expect("pull API over TLS");
    assert_eq!(info.id, "pull-tls");
    assert_eq!(info.gpus[0].utilization, Some(61));
    // A hub polls that agent over TLS (https:// pull target, --pull-ca).
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[[pull]]\nid = \"pulled\"\naddr = \"https://localhost:{}\"\n",
            addr.port()
        ),
    )
    .expect("config");
    let poller = Hub::start_with(HubOpts {
        extra: vec![
            "--config".into(),
            config.display().to_string(),
            "--pull-ca".into(),
            ca_env.clone(),
        ],
        ..Default::default()
    });
    let pulled = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hosts = crate::push::reqwest_get(&poller.http("/api/hosts")).await;
            let h = hosts
                .as_array()
                .and_then(|a| a.iter().find(|h| h["id"] == "pulled"))
                .cloned();
            if let Some(h) = h.filter(|h| h["status"] == "HOST_STATUS_UP") {
                break h;
            }
            assert!(Instant::now() < deadline, "pull over TLS: {hosts}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(pulled["info"]["gpus"][0]["utilization"], 61, "{pulled}");
    // Plain HTTP/2 to the TLS port gets nothing.
    let plain =
        hmonitor_proto::host_monitor_client::HostMonitorClient::connect(format!("http://{addr}"))
            .await;
    if let Ok(mut c) = plain {
        let r = c.get_info(hmonitor_proto::RequestInfo::default()).await;
        assert!(r.is_err(), "plain gRPC answered on the TLS port");
    }
}
