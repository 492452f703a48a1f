//! Alerts end to end: a real hub with a hub.toml, real agents on the NVML stand-in, and a
//! local webhook receiver that records every request. Each test counts exactly what arrives:
//! one firing, one resolved, nothing more.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::harness::{agent, agent_with, clean, eventually, one_gpu, Hub, HubOpts, Scenario};
use hmonitor_testkit::{current_user, Children};

const GIB: u64 = 1 << 30;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub query: String,
    pub body: Value,
    pub raw: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

/// A webhook receiver on loopback. `/slow…` answers after 3 s; `/fail…` answers 500;
/// `/feishu-bad` answers as Feishu does to a bad signature; anything else 200 `{"code":0}`.
#[derive(Clone, Default)]
pub struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    addr: Arc<Mutex<Option<std::net::SocketAddr>>>,
}

async fn record(
    State(r): State<Receiver>,
    uri: Uri,
    h: HeaderMap,
    body: String,
) -> axum::response::Response {
    let path = uri.path().trim_start_matches('/').to_owned();
    let hit = Hit {
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        raw: body,
        headers: h
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        at: Instant::now(),
    };
    r.hits.lock().expect("hits").push(hit);
    if path.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path == "redirect" {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, "/stolen")],
            "",
        )
            .into_response();
    }
    if path.starts_with("fail") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    if path == "feishu-bad" {
        return (
            StatusCode::OK,
            r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        )
            .into_response();
    }
    (StatusCode::OK, r#"{"code":0,"errcode":0}"#).into_response()
}

impl Receiver {
    pub async fn start() -> Self {
        let r = Receiver::default();
        let app = axum::Router::new()
            .fallback(axum::routing::any(record))
            .with_state(r.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        *r.addr.lock().expect("addr") = Some(l.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        let a = self.addr.lock().expect("addr").expect("started");
        format!("http://{a}/{path}")
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    /// Waits for at least `n` requests to `path`.
    pub async fn wait(&self, path: &str, n: usize, limit: Duration) -> Vec<Hit> {
        let start = Instant::now();
        loop {
            let h = self.hits(path);
            if h.len() >= n {
                return h;
            }
            assert!(
                start.elapsed() < limit,
                "{path}: {} request(s) within {limit:?}, wanted {n}: {h:?}",
                h.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("hub.toml");
    std::fs::write(&p, text).expect("write hub.toml");
    p
}

/// A hub running with `text` as its hub.toml (in a directory that lives as long as the third
/// value): what most tests here start with.
fn start(text: &str) -> (Hub, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), text);
    (hub_with(&cfg, None), cfg, dir)
}

fn hub_with(cfg: &Path, data: Option<tempfile::TempDir>) -> Hub {
    Hub::start_with(HubOpts {
        extra: vec![
            "--config".into(),
            cfg.to_str().expect("utf-8").into(),
            "--free-settle".into(),
            "0".into(),
        ],
        data,
        ..HubOpts::default()
    })
}

async fn get_json(url: &str) -> Value {
    let (status, v) = crate::history::get_json(url).await;
    assert_eq!(status, 200, "{url}: {v}");
    v
}

async fn get_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("body")
}

async fn host_up(hub: &Hub, id: &str) {
    let url = hub.http("/api/hosts");
    let start = Instant::now();
    loop {
        let hosts = get_json(&url).await;
        let up = hosts.as_array().is_some_and(|a| {
            a.iter()
                .any(|h| h["id"] == id && h["status"] == "HOST_STATUS_UP")
        });
        if up {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{id} never came up: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn host_down_config(
    rx: &Receiver,
    channels: &[(&str, &str)],
    notify: &[&str],
    for_: &str,
) -> String {
    let mut s = String::from("[alerts]\ninterval = \"200ms\"\n");
    for (name, path) in channels {
        s.push_str(&format!(
            "[[alerts.channel]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"500ms\"\nretries = 2\n",
            rx.url(path)
        ));
    }
    s.push_str(&format!(
        "[[alerts.rule]]\nkind = \"host_down\"\nfor = \"{for_}\"\nnotify = {}\n",
        serde_json::to_string(notify).expect("json")
    ));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_fires_once_after_for_and_resolves_once_when_back() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(&host_down_config(&rx, &[("lab", "lab")], &["lab"], "1s"));
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut a = agent("a1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "a1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.hits("lab").is_empty(), "nothing while it reports");

    let killed = Instant::now();
    a.kill();
    let hits = rx.wait("lab", 1, Duration::from_secs(10)).await;
    let fired = hits[0].at.duration_since(killed);
    let b = &hits[0].body;
    assert_eq!(b["rule"], "host_down", "{b}");
    assert_eq!(b["state"], "firing");
    assert_eq!(b["host"], "a1");
    assert!(
        b["summary"].as_str().is_some_and(|s| s.contains("a1")),
        "{b}"
    );
    assert!(b["started_ms"].as_u64().is_some_and(|t| t > 0));
    // `for` is counted from the last report, up to one interval before the kill.
    assert!(
        fired >= Duration::from_millis(650),
        "fired {fired:?} after the kill"
    );

    let alerts = get_json(&hub.http("/api/alerts")).await;
    assert_eq!(alerts["firing"][0]["host"], "a1", "{alerts}");
    let metrics = get_text(&hub.http("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hmonitor_alert_firing{") && l.contains("host=\"a1\"")),
        "{metrics}"
    );

    let _back = agent("a1", &hub.agent_url(), &scenario, "300ms");
    let hits = rx.wait("lab", 2, Duration::from_secs(15)).await;
    assert_eq!(hits[1].body["state"], "resolved", "{}", hits[1].body);
    assert_eq!(hits[1].body["host"], "a1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.hits("lab").len(),
        2,
        "exactly one firing and one resolved"
    );
    let alerts = get_json(&hub.http("/api/alerts")).await;
    assert_eq!(alerts["firing"], json!([]));
    let phases: Vec<&str> = alerts["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .filter_map(|e| e["phase"].as_str())
        .collect();
    assert_eq!(phases, ["resolved", "firing"], "{alerts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restart_while_an_alert_fires_neither_repeats_nor_loses_it() {
    let rx = Receiver::start().await;
    let (hub, cfg, _dir) = start(&host_down_config(&rx, &[("lab", "lab")], &["lab"], "1s"));
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut a = agent("r1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "r1").await;
    a.kill();
    rx.wait("lab", 1, Duration::from_secs(10)).await;

    let Hub { mut proc, data, .. } = hub;
    proc.terminate(Duration::from_secs(10));
    let hub = hub_with(&cfg, Some(data));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.hits("lab").len(), 1, "the restart repeated the message");
    let alerts = get_json(&hub.http("/api/alerts")).await;
    assert_eq!(
        alerts["firing"][0]["host"], "r1",
        "still firing after the restart: {alerts}"
    );

    let _back = agent("r1", &hub.agent_url(), &scenario, "300ms");
    let hits = rx.wait("lab", 2, Duration::from_secs(15)).await;
    assert_eq!(hits[1].body["state"], "resolved");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("lab").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_returns_after_a_restart_still_fires() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough that the first hub never fires.
    let cfg = write_config(
        dir.path(),
        &host_down_config(&rx, &[("lab", "lab")], &["lab"], "2s"),
    );
    let hub = hub_with(&cfg, None);
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut a = agent("gone", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "gone").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Hub { mut proc, data, .. } = hub;
    proc.terminate(Duration::from_secs(10));
    a.kill();
    let started = Instant::now();
    let _hub = hub_with(&cfg, Some(data));
    let hits = rx.wait("lab", 1, Duration::from_secs(15)).await;
    assert_eq!(hits[0].body["host"], "gone");
    assert_eq!(hits[0].body["state"], "firing");
    // It had `for` to come back after the restart.
    assert!(hits[0].at.duration_since(started) >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hosts_going_down_at_once_make_a_digest_per_channel() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(&host_down_config(
        &rx,
        &[("lab", "lab"), ("ops", "ops")],
        &["lab", "ops"],
        "1s",
    ));
    let mut conns = Vec::new();
    for h in 0..200 {
        let gpu = hmonitor_proto::GpuInfo {
            id: 0,
            uuid: format!("GPU-{h}"),
            utilization: Some(50),
            ..Default::default()
        };
        conns.push(crate::harness::raw_host(&hub, &format!("n{h:03}"), vec![gpu]).await);
    }
    eventually(Duration::from_secs(20), || {
        let hosts = hmonitor_testkit::http::get(hub.addr, "/api/hosts", &[]);
        let v: Value = serde_json::from_str(&hosts.body).ok()?;
        (v.as_array()?
            .iter()
            .filter(|h| h["status"] == "HOST_STATUS_UP")
            .count()
            == 200)
            .then_some(())
    });
    drop(conns);
    // Every host named, in as few messages as the cycles they fell into.
    for ch in ["lab", "ops"] {
        let start = Instant::now();
        loop {
            let named: std::collections::BTreeSet<String> = rx
                .hits(ch)
                .iter()
                .flat_map(|h| h.body["alerts"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["host"].as_str().map(str::to_owned))
                .collect();
            if named.len() == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{ch}: {} of 200 named",
                named.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ch in ["lab", "ops"] {
        let n = rx.hits(ch).len();
        assert!(n <= 3, "{ch}: {n} messages for 200 hosts");
        assert!(
            rx.hits(ch)
                .iter()
                .any(|h| h.body["count"].as_u64() > Some(50)),
            "a digest"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_times_out_is_retried_and_does_not_delay_the_other() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(&host_down_config(
        &rx,
        &[("slow", "slow"), ("fast", "fast")],
        &["slow", "fast"],
        "1s",
    ));
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut a = agent("t1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "t1").await;
    let killed = Instant::now();
    a.kill();
    let fast = rx.wait("fast", 1, Duration::from_secs(10)).await;
    let slow = rx.wait("slow", 3, Duration::from_secs(20)).await;
    assert!(
        fast[0].at.duration_since(killed) < Duration::from_secs(3),
        "the fast channel waited for the slow one"
    );
    // Three attempts (retries = 2), with a backoff between them.
    assert!(slow[1].at.duration_since(slow[0].at) >= Duration::from_millis(1400));
    assert_eq!(slow[0].body, slow[2].body, "the same message each time");
    let ch = eventually(Duration::from_secs(10), || {
        let a = hmonitor_testkit::http::get(hub.addr, "/api/alerts", &[]);
        let v: Value = serde_json::from_str(&a.body).ok()?;
        let c = v["channels"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "slow")?
            .clone();
        (c["failed"] == 1).then_some(c)
    });
    assert!(
        ch["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out") || e.contains("timeout")),
        "{ch}"
    );
    let metrics = get_text(&hub.http("/metrics")).await;
    assert!(
        metrics.contains("hmonitor_alert_messages_total{channel=\"slow\",result=\"retried\"} 2"),
        "{metrics}"
    );
    let health = get_json(&hub.http("/healthz")).await;
    assert_eq!(
        health["alerts"]["channels_failing"][0][0], "slow",
        "{health}"
    );
    assert_eq!(
        health["alerts"]["channels_failing"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "fast is fine: {health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_around_a_threshold_fires_once_and_resolves_once() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[alerts.rule]]\nkind = \"gpu_temp\"\nthreshold = 85\nclear = 5\nfor = \"0s\"\nnotify = [\"lab\"]\n",
        rx.url("lab")
    ),
    );
    let temp = |t: u32| json!({ "gpus": [{ "name": "NVIDIA A100", "utilization_gpu": 50, "temperature": t }] });
    let scenario = Scenario::new(&temp(60));
    let _a = agent("f1", &hub.agent_url(), &scenario, "200ms");
    host_up(&hub, "f1").await;
    for i in 0..16 {
        scenario.write(&temp(if i % 2 == 0 { 86 } else { 83 }));
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let hits = rx.wait("lab", 1, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 1, "flapped: {hits:?}");
    assert_eq!(hits[0].body["rule"], "gpu_temp");
    assert_eq!(hits[0].body["gpu"], 0);
    scenario.write(&temp(70));
    let hits = rx.wait("lab", 2, Duration::from_secs(10)).await;
    assert_eq!(hits[1].body["state"], "resolved");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("lab").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_hog_is_told_to_its_owner_first_and_to_the_admins_after_escalation() {
    let rx = Receiver::start().await;
    let (_, me) = current_user();
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n\
         [[alerts.channel]]\nname = \"admins\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[alerts.channel]]\nname = \"owner\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[alerts.rule]]\nkind = \"idle_hog\"\nmin_mem = \"10GiB\"\nmax_util = 5\nfor = \"1s\"\nescalate_after = \"3s\"\nnotify = [\"admins\"]\n\
         [users.\"{me}\"]\nnotify = [\"owner\"]\n",
        rx.url("admins"),
        rx.url("owner")
    ),
    );
    let job = Children::spawn(1);
    let pid = job.pids()[0];
    let hog = |procs: Value| {
        json!({ "gpus": [{ "name": "NVIDIA H200", "uuid": "GPU-hog", "memory_total": 150 * GIB,
                           "memory_used": 41 * GIB, "utilization_gpu": 0, "processes": procs }] })
    };
    let scenario = Scenario::new(&hog(
        json!([{ "pid": pid, "used_memory": 40 * GIB, "type": "compute" }]),
    ));
    let _a = agent("h1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "h1").await;
    let owner = rx.wait("owner", 1, Duration::from_secs(10)).await;
    let b = &owner[0].body;
    assert_eq!(b["rule"], "idle_hog", "{b}");
    assert_eq!(b["user"], me.as_str());
    assert_eq!(b["pid"], pid);
    assert_eq!(b["host"], "h1");
    assert_eq!(b["gpu"], 0);
    let summary = b["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("sleep") && summary.contains("40.0 GiB") && summary.contains(&me),
        "{summary}"
    );
    assert!(
        b["text"].as_str().is_some_and(|t| t.contains("for ")),
        "how long: {b}"
    );
    assert!(
        rx.hits("admins").is_empty(),
        "the admins heard before the owner had time"
    );
    let admins = rx.wait("admins", 1, Duration::from_secs(10)).await;
    let gap = admins[0].at.duration_since(owner[0].at);
    assert!(
        gap >= Duration::from_millis(2500),
        "escalated after {gap:?}"
    );
    assert_eq!(admins[0].body["user"], me.as_str());

    // The job frees its memory: both who were told hear it ended.
    scenario.write(&hog(json!([])));
    rx.wait("owner", 2, Duration::from_secs(10)).await;
    let admins = rx.wait("admins", 2, Duration::from_secs(10)).await;
    assert_eq!(admins[1].body["state"], "resolved");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((rx.hits("owner").len(), rx.hits("admins").len()), (2, 2));
    drop(job);
}

async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut r = c.post(url).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn delete(url: &str, headers: &[(&str, &str)]) -> u16 {
    let c = reqwest::Client::new();
    let mut r = c.delete(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("delete").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpus_free_subscription_fires_once_when_they_free_and_can_be_cancelled() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        rx.url("lab")
    ),
    );
    let gpus = |util: u32| {
        let list: Vec<Value> = [0, 1]
            .iter()
            .map(|i| {
                json!({ "name": "NVIDIA H200", "uuid": format!("GPU-sub-{i}"), "memory_total": 150 * GIB,
                        "memory_used": 300u64 << 20, "utilization_gpu": util })
            })
            .collect();
        json!({ "gpus": list })
    };
    let scenario = Scenario::new(&gpus(90));
    let _a = agent("s1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "s1").await;
    let (status, made) = post(
        &hub.http("/api/alerts/subscriptions"),
        &json!({ "count": 2, "min_mem": "100GiB", "host": "s*", "channel": "lab", "expires": "10m" }),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let listed = get_json(&hub.http("/api/alerts")).await;
    assert_eq!(listed["subscriptions"][0]["count"], 2, "{listed}");
    assert!(listed["subscriptions"][0].get("cancel_hash").is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.hits("lab").is_empty(), "told while busy");

    let freed = Instant::now();
    scenario.write(&gpus(0));
    let hits = rx.wait("lab", 1, Duration::from_secs(10)).await;
    let b = &hits[0].body;
    assert_eq!(b["rule"], "gpus_free", "{b}");
    assert_eq!(b["host"], "s1");
    assert!(
        b["summary"]
            .as_str()
            .is_some_and(|s| s.contains("GPU-sub-0") && s.contains("GPU-sub-1")),
        "{b}"
    );
    // Within one agent interval and one evaluation of the sample that freed them (+ slack).
    assert!(hits[0].at.duration_since(freed) < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.hits("lab").len(), 1, "one-shot");
    let after = get_json(&hub.http("/api/alerts")).await;
    assert_eq!(after["subscriptions"], json!([]));
    assert_eq!(
        after["recent"][0]["rule"], "gpus_free",
        "told, in the log: {after}"
    );
    assert!(after["generated_ms"].as_u64().is_some());

    // Another, cancelled: not with a wrong token, with its own.
    let (_, made) = post(
        &hub.http("/api/alerts/subscriptions"),
        &json!({ "count": 8, "channel": "lab" }),
        &[],
    )
    .await;
    let id = made["id"].as_u64().expect("id");
    let token = made["cancel_token"].as_str().expect("token").to_owned();
    let url = hub.http(&format!("/api/alerts/subscriptions/{id}"));
    assert_eq!(delete(&url, &[]).await, 403);
    assert_eq!(delete(&url, &[("X-Cancel-Token", "wrong")]).await, 403);
    assert_eq!(delete(&url, &[("X-Cancel-Token", &token)]).await, 200);
    assert_eq!(delete(&url, &[("X-Cancel-Token", &token)]).await, 404);

    // Bad requests say what is wrong.
    let (status, why) = post(
        &hub.http("/api/alerts/subscriptions"),
        &json!({ "count": 1, "channel": "nope" }),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(why.as_str().is_some_and(|w| w.contains("nope")), "{why}");
    let (status, _) = post(
        &hub.http("/api/alerts/subscriptions"),
        &json!({ "count": 1, "user": "x", "channel": "lab" }),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &hub.http("/api/alerts/subscriptions"),
        &json!({ "channel": "lab", "expires": "30d" }),
        &[],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_need_the_admin_token_and_hold_messages() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &host_down_config(&rx, &[("lab", "lab")], &["lab"], "1s"),
    );
    let hub = Hub::start_with(HubOpts {
        extra: vec![
            "--config".into(),
            cfg.to_str().expect("utf-8").into(),
            "--admin-token".into(),
            "adm-tok".into(),
        ],
        ..HubOpts::default()
    });
    let url = hub.http("/api/admin/alerts/silences");
    let (status, _) = post(&url, &json!({ "host": "q*", "for": "1h" }), &[]).await;
    assert_eq!(status, 401);
    let (status, made) = post(
        &url,
        &json!({ "host": "q*", "for": "1h", "comment": "maintenance" }),
        &[("Authorization", "Bearer adm-tok")],
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let (status, _) = post(
        &url,
        &json!({ "rule": "no_such_rule", "for": "1h" }),
        &[("Authorization", "Bearer adm-tok")],
    )
    .await;
    assert_eq!(status, 400);

    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut q = agent("q1", &hub.agent_url(), &scenario, "300ms");
    let mut other = agent("o1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "q1").await;
    host_up(&hub, "o1").await;
    q.kill();
    other.kill();
    let hits = rx.wait("lab", 1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].body["host"], "o1", "{}", hits[0].body);
    let alerts = get_json(&hub.http("/api/alerts")).await;
    let firing: Vec<&str> = alerts["firing"]
        .as_array()
        .expect("firing")
        .iter()
        .filter_map(|r| r["host"].as_str())
        .collect();
    assert_eq!(
        firing.len(),
        2,
        "silenced alerts still fire on the page: {alerts}"
    );
    let q1 = alerts["firing"]
        .as_array()
        .and_then(|f| f.iter().find(|r| r["host"] == "q1"))
        .expect("q1");
    assert!(q1["silenced_until_ms"].as_u64().is_some(), "{q1}");
    assert_eq!(alerts["silences"][0]["comment"], "maintenance");

    // Lifting the silence tells what it held.
    let id = made["id"].as_u64().expect("id");
    let del = hub.http(&format!("/api/admin/alerts/silences/{id}"));
    assert_eq!(delete(&del, &[]).await, 401);
    assert_eq!(
        delete(&del, &[("Authorization", "Bearer adm-tok")]).await,
        200
    );
    let hits = rx.wait("lab", 2, Duration::from_secs(10)).await;
    assert_eq!(hits[1].body["host"], "q1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_test_sends_a_message_and_reports_a_vendors_refusal() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             [[alerts.channel]]\nname = \"fs\"\nkind = \"feishu\"\nurl = \"{}\"\nsecret = \"demo\"\n\
             [[alerts.channel]]\nname = \"ding\"\nkind = \"dingtalk\"\nurl = \"{}?access_token=abc\"\nsecret = \"SEC1\"\n\
             [[alerts.channel]]\nname = \"moved\"\nkind = \"slack\"\nurl = \"{}\"\n",
            rx.url("lab"),
            rx.url("feishu-bad"),
            rx.url("ding"),
            rx.url("redirect")
        ),
    );
    let data = dir.path().to_owned();
    let run = move |args: &[&str]| {
        let mut c = clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")));
        c.arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args(args);
        c.output().expect("run hmonitor-hub")
    };
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["alerts", "test", "lab"])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits = rx.wait("lab", 1, Duration::from_secs(5)).await;
    assert!(
        hits[0].body["title"]
            .as_str()
            .is_some_and(|t| t.contains("test")),
        "{}",
        hits[0].raw
    );

    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["alerts", "test", "fs"])
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sign match fail"), "{err}");
    let fs = rx.hits("feishu-bad");
    let ts = fs[0].body["timestamp"]
        .as_str()
        .expect("timestamp")
        .parse::<u64>()
        .expect("seconds");
    assert_eq!(
        fs[0].body["sign"],
        hmonitor_hub::alerts::channel::sign::feishu(ts, "demo")
    );
    assert_eq!(fs[0].body["msg_type"], "text");

    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["alerts", "test", "ding"])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ding = rx.hits("ding");
    let q: std::collections::HashMap<String, String> = url_pairs(&ding[0].query);
    assert_eq!(q["access_token"], "abc");
    let ts: u64 = q["timestamp"].parse().expect("ms");
    assert_eq!(
        q["sign"],
        hmonitor_hub::alerts::channel::sign::dingtalk(ts, "SEC1")
    );
    assert_eq!(ding[0].body["msgtype"], "text");

    // A redirect is not followed: the message never reaches where it points.
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["alerts", "test", "moved"])
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("redirect to \"/stolen\" not followed"),
        "{err}"
    );
    assert_eq!(rx.hits("redirect").len(), 1);
    assert!(rx.hits("stolen").is_empty());

    let out = tokio::task::spawn_blocking(move || run(&["alerts", "test", "nope"]))
        .await
        .expect("join");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope") && err.contains("lab, fs, ding, moved"),
        "{err}"
    );
}

fn url_pairs(q: &str) -> std::collections::HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            (k.to_owned(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_a_bad_alerts_section_refuses_to_start_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\n[[alerts.rule]]\nkind = \"host_down\"\nnotify = [\"lab\", \"pager\"]\n",
    );
    let out = clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")))
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hub.toml:8:") && err.contains("unknown channel \"pager\""),
        "{err}"
    );
    let _ = agent_with;
}

/// The local SMTP server (PyPI aiosmtpd): STARTTLS required before AUTH; each message is
/// written to a file.
struct Smtp {
    proc: hmonitor_testkit::Proc,
    port: u16,
    out: tempfile::TempDir,
}

impl Smtp {
    fn start(cert: &Path, key: &Path) -> Self {
        let out = tempfile::tempdir().expect("tempdir");
        // It prints "ready PORT" on stdout, which a Proc does not watch: into a file.
        let ready = out.path().join("ready");
        let wrapped = format!(
            "exec python3 -u {} {} {} {} hm s3cret > {}",
            shell(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py")),
            shell(cert),
            shell(key),
            shell(&out.path().join("mail")),
            shell(&ready)
        );
        let proc = hmonitor_testkit::Proc::start({
            let mut c = Command::new("sh");
            c.args(["-c", &wrapped]);
            c
        });
        let port = eventually(Duration::from_secs(20), || {
            let s = std::fs::read_to_string(&ready).ok()?;
            s.trim().strip_prefix("ready ")?.parse().ok()
        });
        Self { proc, port, out }
    }

    fn mails(&self) -> Vec<String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out.path().join("mail"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v.iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

fn shell(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_starttls_with_a_password_from_a_file_to_admins_and_owners() {
    let pki = crate::deploy::Pki {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("smtp", &["localhost"], &ca, false);
    let smtp = Smtp::start(&cert, &key);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("smtp.pass"), "s3cret\n").expect("write");
    let (_, me) = current_user();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[alerts]\ninterval = \"200ms\"\n\
             [[alerts.channel]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"localhost:{}\"\ntls = \"starttls\"\n\
             username = \"hm\"\npassword_file = \"smtp.pass\"\nca_file = \"{}\"\n\
             from = \"hmonitor <hmonitor@lab.example>\"\nto = [\"admins@lab.example\"]\n\
             [[alerts.rule]]\nkind = \"host_down\"\nfor = \"1s\"\nnotify = [\"mail\"]\n\
             [[alerts.rule]]\nkind = \"idle_hog\"\nmin_mem = \"1GiB\"\nfor = \"1s\"\nescalate_after = \"1h\"\nnotify = [\"mail\"]\n\
             [users.\"{me}\"]\nemail = \"owner@lab.example\"\n",
            smtp.port,
            pki.path("ca.pem").display()
        ),
    );
    // The CLI's test message first: the configuration works end to end.
    let out = tokio::task::spawn_blocking({
        let (cfg, data) = (cfg.clone(), dir.path().to_owned());
        move || {
            clean(Command::new(env!("CARGO_BIN_EXE_hmonitor-hub")))
                .arg("--config")
                .arg(cfg)
                .arg("--data-dir")
                .arg(data)
                .args(["alerts", "test", "mail"])
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails = eventually(Duration::from_secs(10), || {
        let m = smtp.mails();
        (!m.is_empty()).then_some(m)
    });
    assert!(
        mails[0].contains("X-Tls: yes") && mails[0].contains("X-Auth: True"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("X-Envelope-To: admins@lab.example"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Subject: [hmonitor] test message"),
        "{}",
        mails[0]
    );

    let hub = hub_with(&cfg, None);
    let job = Children::spawn(1);
    let pid = job.pids()[0];
    let scenario = Scenario::new(
        &json!({ "gpus": [{ "name": "NVIDIA H200", "memory_total": 150 * GIB, "memory_used": 9 * GIB,
        "utilization_gpu": 0, "processes": [{ "pid": pid, "used_memory": 8 * GIB, "type": "compute" }] }] }),
    );
    let mut a = agent("m1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "m1").await;
    let mails = eventually(Duration::from_secs(15), || {
        let m = smtp.mails();
        (m.len() >= 2).then_some(m)
    });
    assert!(
        mails[1].contains("X-Envelope-To: owner@lab.example"),
        "the owner, not the admins: {}",
        mails[1]
    );
    assert!(mails[1].contains("idle_hog"), "{}", mails[1]);
    a.kill();
    let mails = eventually(Duration::from_secs(15), || {
        let m = smtp.mails();
        m.iter().any(|m| m.contains("host_down")).then_some(m)
    });
    let down = mails
        .iter()
        .find(|m| m.contains("host_down"))
        .expect("host_down mail");
    assert!(
        down.contains("X-Envelope-To: admins@lab.example") && down.contains("m1"),
        "{down}"
    );
    drop(job);
    drop(smtp.proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_notify_subscribes_the_caller_through_the_agent_and_tells_them_once() {
    let rx = Receiver::start().await;
    let (_, me) = current_user();
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n[[alerts.channel]]\nname = \"mine\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [users.\"{me}\"]\nnotify = [\"mine\"]\n",
        rx.url("mine")
    ),
    );
    let gpu = |util: u32| {
        json!({ "gpus": [{ "name": "NVIDIA H200", "uuid": "GPU-notify", "memory_total": 150 * GIB,
                           "memory_used": 300u64 << 20, "utilization_gpu": util }] })
    };
    let scenario = Scenario::new(&gpu(95));
    let a = crate::harness::agent_with_socket("w1", &hub.agent_url(), &scenario);
    let socket = a.socket.clone();
    host_up(&hub, "w1").await;
    let cli = move |args: &[&str]| {
        let mut c = clean(Command::new(crate::harness::agent_bin()));
        c.args(args).env("HMON_SOCKET", &socket);
        c.output().expect("run hmonitor")
    };
    let out = {
        let cli = cli.clone();
        eventually(Duration::from_secs(10), move || {
            let o = cli(&["wait", "--notify", "--min-mem", "100GiB", "--timeout", "1h"]);
            o.status.success().then_some(o)
        })
    };
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("You will be told once")
            && said.contains("on w1")
            && said.contains("channel mine"),
        "{said}"
    );
    let subs = get_json(&hub.http("/api/alerts")).await["subscriptions"].clone();
    assert_eq!(subs[0]["target"]["user"], me.as_str(), "{subs}");
    assert_eq!(subs[0]["host"], "w1");
    assert!(
        subs[0]["by"]
            .as_str()
            .is_some_and(|b| b.contains("hmonitor wait --notify")),
        "{subs}"
    );

    scenario.write(&gpu(0));
    let hits = rx.wait("mine", 1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].body["rule"], "gpus_free");
    assert_eq!(hits[0].body["user"], me.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("mine").len(), 1);

    // A command cannot go with --notify (nothing would run it).
    let o = cli(&["wait", "--notify", "--", "true"]);
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_channels_rate_limit_what_waits_goes_out_as_one_digest() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         rate_limit = \"1/6s\"\n[[alerts.rule]]\nkind = \"host_down\"\nfor = \"0s\"\nnotify = [\"lab\"]\n",
        rx.url("lab")
    ),
    );
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut agents: Vec<_> = ["d1", "d2", "d3"]
        .iter()
        .map(|id| agent(id, &hub.agent_url(), &scenario, "300ms"))
        .collect();
    for id in ["d1", "d2", "d3"] {
        host_up(&hub, id).await;
    }
    // Three hosts down in three different cycles: the first message goes at once, the other
    // two wait for the channel's next token and go together.
    for a in &mut agents {
        a.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let first = rx.wait("lab", 1, Duration::from_secs(5)).await;
    assert_eq!(first[0].body["count"], 1, "{}", first[0].body);
    let hits = rx.wait("lab", 2, Duration::from_secs(15)).await;
    let gap = hits[1].at.duration_since(hits[0].at);
    assert!(gap >= Duration::from_secs(5), "the limit held for {gap:?}");
    assert_eq!(hits[1].body["count"], 2, "{}", hits[1].body);
    let hosts: Vec<&str> = hits[1].body["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 2);
    assert!(!hosts.contains(&first[0].body["host"].as_str().unwrap_or_default()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("lab").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_is_mentioned_on_every_chat_channel_and_reached_on_ntfy_in_each_vendors_shape() {
    let rx = Receiver::start().await;
    let (_, me) = current_user();
    let (hub, _cfg, _dir) = start(
    &format!(
        "[alerts]\ninterval = \"200ms\"\n\
         [[alerts.channel]]\nname = \"fs\"\nkind = \"feishu\"\nurl = \"{}\"\nsecret = \"s1\"\n\
         [[alerts.channel]]\nname = \"ding\"\nkind = \"dingtalk\"\nurl = \"{}\"\n\
         [[alerts.channel]]\nname = \"wx\"\nkind = \"wecom\"\nurl = \"{}\"\n\
         [[alerts.channel]]\nname = \"sl\"\nkind = \"slack\"\nurl = \"{}\"\n\
         [[alerts.channel]]\nname = \"nt\"\nkind = \"ntfy\"\nurl = \"{}\"\ntoken = \"tk_abc\"\n\
         [[alerts.rule]]\nkind = \"idle_hog\"\nmin_mem = \"1GiB\"\nfor = \"0s\"\nescalate_after = \"1h\"\n\
         [users.\"{me}\"]\nfeishu = \"ou_me\"\ndingtalk = \"13800001111\"\nwecom = \"me_wx\"\nslack = \"U0ME\"\nntfy = \"my-gpus\"\n",
        rx.url("fs"),
        rx.url("ding"),
        rx.url("wx"),
        rx.url("sl"),
        rx.url("lab-topic")
    ),
    );
    let job = Children::spawn(1);
    let pid = job.pids()[0];
    let scenario = Scenario::new(
        &json!({ "gpus": [{ "name": "NVIDIA H200", "memory_total": 150 * GIB, "memory_used": 9 * GIB,
        "utilization_gpu": 0, "processes": [{ "pid": pid, "used_memory": 8 * GIB, "type": "compute" }] }] }),
    );
    let _a = agent("v1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "v1").await;
    let fs = rx.wait("fs", 1, Duration::from_secs(10)).await;
    let text = fs[0].body["content"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("<at user_id=\"ou_me\"></at>") && text.contains("idle_hog"),
        "{}",
        fs[0].raw
    );
    let ts: u64 = fs[0].body["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert_eq!(
        fs[0].body["sign"],
        hmonitor_hub::alerts::channel::sign::feishu(ts, "s1")
    );
    let ding = rx.wait("ding", 1, Duration::from_secs(10)).await;
    assert_eq!(
        ding[0].body["at"]["atMobiles"],
        json!(["13800001111"]),
        "{}",
        ding[0].raw
    );
    assert!(ding[0].body["text"]["content"]
        .as_str()
        .is_some_and(|t| t.contains("@13800001111")));
    let wx = rx.wait("wx", 1, Duration::from_secs(10)).await;
    assert_eq!(wx[0].body["msgtype"], "text");
    assert_eq!(
        wx[0].body["text"]["mentioned_list"],
        json!(["me_wx"]),
        "{}",
        wx[0].raw
    );
    let sl = rx.wait("sl", 1, Duration::from_secs(10)).await;
    assert!(
        sl[0].body["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("<@U0ME>")),
        "{}",
        sl[0].raw
    );
    // ntfy: the owner's own topic on the channel's server, with title, priority and token.
    let nt = rx.wait("my-gpus", 1, Duration::from_secs(10)).await;
    let header = |name: &str| {
        nt[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("title").contains("idle_hog"), "{:?}", nt[0].headers);
    assert_eq!(header("priority"), "high");
    assert_eq!(header("authorization"), "Bearer tk_abc");
    assert!(nt[0].raw.contains("sleep"), "{}", nt[0].raw);
    assert!(
        rx.hits("lab-topic").is_empty(),
        "the admins' topic heard nothing: no escalation yet"
    );
    drop(job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_does_not_silence_the_alerts() {
    let rx = Receiver::start().await;
    let (hub, _cfg, _dir) = start(&host_down_config(&rx, &[("lab", "lab")], &["lab"], "1s"));
    let scenario = Scenario::new(&one_gpu("NVIDIA A100", 0));
    let mut a = agent("x1", &hub.agent_url(), &scenario, "300ms");
    host_up(&hub, "x1").await;
    // Break the store under the running hub: every write of a transition now fails.
    let db = rusqlite::Connection::open(hub.data.path().join("alerts.db")).expect("open");
    db.execute_batch("DROP TABLE alert_log").expect("drop");
    drop(db);
    a.kill();
    let hits = rx.wait("lab", 1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].body["host"], "x1");
    assert_eq!(hits[0].body["state"], "firing");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rx.hits("lab").len(),
        1,
        "told once, not once per failed write"
    );
    assert!(
        !hub.proc.lines("alerts: alerts database").is_empty(),
        "the failure is logged: {}",
        hub.proc.whole_log()
    );
}
