//! History through the real hub: agents on the NVML stand-in push, the hub stores, the HTTP
//! API and the seed's gRPC `History` answer.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::harness::*;

const INTERVAL_S: &str = "200ms";
const INTERVAL_MS: f64 = 200.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A plain HTTP GET: (status, headers, body).
pub async fn http_get(url: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .expect("path");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let (status, _, body) = http_get(url).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, v)
}

/// A process owned by `user` (via setpriv, which execs: the pid is the sleeper's own).
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn as_user(user: Option<&str>) -> Self {
        let child = match user {
            None => Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn(),
            Some(u) => Command::new("setpriv")
                .args([
                    &format!("--reuid={u}"),
                    "--regid=65534",
                    "--clear-groups",
                    "sleep",
                    "600",
                ])
                .stdin(Stdio::null())
                .spawn(),
        }
        .expect("spawn sleeper");
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two GPUs: GPU 0 runs `pid` (holding `mem` bytes), GPU 1 is idle.
pub fn two_gpus(util0: u32, pid: u32, mem: u64) -> Value {
    json!({ "gpus": [
        { "name": "NVIDIA H200", "uuid": "GPU-00000000-0000-0000-0000-0000000000a0",
          "utilization_gpu": util0, "temperature": 55, "power_usage_mw": 350_500,
          "memory_total": 150_754_820_096u64, "memory_used": mem,
          "processes": [{ "pid": pid, "used_memory": mem, "type": "compute" }] },
        { "name": "NVIDIA H200", "uuid": "GPU-00000000-0000-0000-0000-0000000000a1",
          "utilization_gpu": 3, "temperature": 40, "power_usage_mw": 90_000,
          "memory_total": 150_754_820_096u64, "memory_used": 0 }
    ]})
}

pub fn url(hub: &Hub, path: &str) -> String {
    hub.http(path)
}

/// Polls `/api/history` until the series holds at least `n` points; returns the answer.
pub async fn wait_points(hub: &Hub, q: &str, n: usize, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = get_json(&url(hub, &format!("/api/history?{q}"))).await;
        if status == 200 && v["t"].as_array().map_or(0, Vec::len) >= n {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{q}: fewer than {n} points within {limit:?}: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_samples_are_served_by_id_uuid_and_metric_with_usage_and_clear_errors() {
    let hub = Hub::start_with(HubOpts {
        interval: INTERVAL_S,
        ..Default::default()
    });
    let sleeper = Sleeper::as_user(Some("nobody"));
    let mem = 8 * 1024 * 1024 * 1024u64;
    let s = Scenario::new(&two_gpus(61, sleeper.pid(), mem));
    let _a = agent("h1", &hub.agent_url(), &s, INTERVAL_S);

    let t0 = now_ms() - 60_000;
    let q = format!("id=h1/gpu0&metric=util&from={t0}");
    let v = wait_points(&hub, &q, 10, Duration::from_secs(20)).await;
    assert_eq!(v["id"], "h1/gpu0");
    assert_eq!(v["metric"], "util");
    assert_eq!(v["tier"], "raw");
    assert_eq!(v["step_ms"], 0);
    let t = v["t"].as_array().expect("t");
    assert!(
        t.windows(2).all(|w| w[0].as_i64() < w[1].as_i64()),
        "times increase"
    );
    assert!(v["mean"]
        .as_array()
        .expect("mean")
        .iter()
        .all(|m| m == 61.0));
    assert_eq!(v["mean"], v["max"], "raw: mean == max");

    // The same GPU by UUID; the other metrics in their units.
    let by_uuid = wait_points(
        &hub,
        &format!("id=GPU-00000000-0000-0000-0000-0000000000a0&metric=power&from={t0}"),
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(by_uuid["mean"]
        .as_array()
        .expect("mean")
        .iter()
        .all(|m| m == 350.5));
    let temp = wait_points(
        &hub,
        &format!("id=h1/gpu1&metric=temp&from={t0}"),
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(temp["mean"]
        .as_array()
        .expect("mean")
        .iter()
        .all(|m| m == 40.0));
    let mem_used = wait_points(
        &hub,
        &format!("id=h1/gpu0&metric=mem_used&from={t0}"),
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(mem_used["mean"]
        .as_array()
        .expect("mean")
        .iter()
        .all(|m| m.as_f64() == Some(mem as f64)));
    // Host series: readings are there (the agent's own machine), except cpu's very first.
    let host = wait_points(
        &hub,
        &format!("id=h1&metric=mem_used&from={t0}"),
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(host["mean"][0].as_f64().expect("mem") > 0.0);

    // What has history.
    let (status, ids) = get_json(&url(&hub, "/api/history/ids")).await;
    assert_eq!(status, 200);
    assert_eq!(ids["hosts"], json!(["h1"]));
    assert_eq!(ids["gpus"][0]["id"], "h1/gpu0");
    assert_eq!(
        ids["gpus"][0]["uuid"],
        "GPU-00000000-0000-0000-0000-0000000000a0"
    );
    assert_eq!(ids["gpus"][0]["name"], "NVIDIA H200");
    assert_eq!(ids["gpus"][1]["id"], "h1/gpu1");
    assert_eq!(ids["users"], json!(["nobody"]));

    // Usage over a closed span: nobody held 1 GPU and 8 GiB during every sample in it.
    let all = wait_points(
        &hub,
        &format!("id=h1&metric=mem_used&from={t0}"),
        25,
        Duration::from_secs(20),
    )
    .await;
    let ts = all["t"].as_array().expect("t");
    let from = ts[2].as_i64().expect("t");
    let to = ts[ts.len() - 1].as_i64().expect("t") + 1;
    let (status, u) = get_json(&url(&hub, &format!("/api/usage?from={from}&to={to}"))).await;
    assert_eq!(status, 200, "{u}");
    let host_pts = get_json(&url(
        &hub,
        &format!("/api/history?id=h1&metric=mem_used&from={from}&to={to}"),
    ))
    .await
    .1["t"]
        .as_array()
        .expect("t")
        .len();
    assert!(host_pts > 10, "{host_pts} samples");
    let users = u["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{u}");
    assert_eq!(users[0]["user"], "nobody");
    assert_eq!(users[0]["hosts"], json!(["h1"]));
    let want_h = host_pts as f64 * INTERVAL_MS / 3_600_000.0;
    let got_h = users[0]["gpu_hours"].as_f64().expect("gpu_hours");
    assert!(
        (got_h - want_h).abs() < 1e-9,
        "gpu_hours {got_h} vs {want_h}"
    );
    let got_m = users[0]["gpu_mem_gib_hours"].as_f64().expect("mem");
    assert!((got_m - want_h * mem as f64 / GIB).abs() < 1e-9, "{got_m}");
    assert_eq!(u["from"], from);
    assert_eq!(u["to"], to);

    let (status, head, body) = http_get(&url(
        &hub,
        &format!("/api/usage?from={from}&to={to}&format=csv"),
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/csv"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "attachment; filename=\"hmonitor-usage-{from}-{to}.csv\""
        )),
        "{head}"
    );
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "user,gpu_hours,gpu_mem_gib_hours,hosts");
    assert!(
        lines[1].starts_with("nobody,") && lines[1].ends_with(",h1"),
        "{body}"
    );
    assert_eq!(lines.len(), 2);

    // Bad requests, each refused with what is wrong.
    for (q, code, needle) in [
        ("id=nosuch&metric=cpu", 404, "nosuch"),
        ("id=h1/gpu7&metric=util", 404, "h1/gpu7"),
        ("id=h1/disk0&metric=util", 404, "gpu<index>"),
        ("id=user:nobodyelse&metric=gpus", 404, "nobodyelse"),
        ("id=h1&metric=util", 400, "cpu, mem_used, load1, disk_used"),
        ("id=h1/gpu0&metric=", 400, "metric is missing"),
        ("id=h1&metric=cpu&from=yesterday", 400, "yesterday"),
        ("id=h1&metric=cpu&from=2000&to=1000", 400, "before"),
        ("id=h1&metric=cpu&from=1000&to=1000", 400, "before"),
        ("metric=cpu", 400, "id is missing"),
    ] {
        let (status, v) = get_json(&url(&hub, &format!("/api/history?{q}"))).await;
        assert_eq!(status, code, "{q}: {v}");
        let msg = v["error"].as_str().expect("error message");
        assert!(msg.contains(needle), "{q}: {msg:?} should name {needle:?}");
    }
    let (status, v) = get_json(&url(&hub, "/api/usage?from=5&to=1")).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = get_json(&url(&hub, "/api/usage?format=xml")).await;
    assert_eq!(status, 400, "{v}");
}
