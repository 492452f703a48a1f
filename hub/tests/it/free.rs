//! `hmonitor free | wait | hold | release | status` against real agents on the NVML stand-in
//! and a real hub: which GPUs are free, waits served on the sample that frees GPUs, holds that
//! two callers never share, expire, end when the holder's job appears, and that another uid
//! cannot end; the cluster view through the agent's relay and straight from the hub.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{agent_bin, clean, eventually, Hub, HubOpts, Scenario};
use hmonitor_testkit::Children;

const GIB: u64 = 1 << 30;

fn uuid(i: usize) -> String {
    format!("GPU-{i:08x}-aaaa-bbbb-cccc-ddddeeeeffff")
}

/// An idle GPU (util 0, 300 MiB in use) that `f` may change.
fn gpu(i: usize, f: impl FnOnce(&mut Value)) -> Value {
    let mut g = json!({
        "name": "NVIDIA H200",
        "uuid": uuid(i),
        "pci_bus_id": format!("00000000:{:02X}:00.0", 0x17 + i),
        "memory_total": 150 * GIB,
        "memory_used": 300u64 << 20,
        "utilization_gpu": 0,
        "temperature": 30,
    });
    f(&mut g);
    g
}

fn busy(g: &mut Value) {
    g["utilization_gpu"] = json!(80);
}

fn with_proc(pid: u32) -> impl FnOnce(&mut Value) {
    move |g: &mut Value| {
        g["memory_used"] = json!(8 * GIB + (300 << 20));
        g["processes"] = json!([{ "pid": pid, "used_memory": 8 * GIB, "type": "compute" }]);
    }
}

fn scenario(gpus: Vec<Value>) -> Value {
    json!({ "driver_version": "580.95.05", "cuda_version": 13000, "gpus": gpus })
}

/// A hub (free verdicts without settle time) and one agent with its CLI socket.
struct Host {
    hub: Hub,
    agent: crate::harness::SocketAgent,
    scenario: Scenario,
}

impl Host {
    fn start(id: &str, s: &Value) -> Self {
        let hub = Hub::start_with(HubOpts {
            extra: vec!["--free-settle".into(), "0".into()],
            ..HubOpts::default()
        });
        let scenario = Scenario::new(s);
        let agent = crate::harness::agent_with_socket(id, &hub.agent_url(), &scenario);
        let host = Self {
            hub,
            agent,
            scenario,
        };
        // Ready once the agent's socket is there and the hub has its first report.
        let n = s["gpus"].as_array().map_or(0, Vec::len);
        eventually(Duration::from_secs(20), || {
            (host.socket().exists() && host.hub_rows(&format!("host={id}")).len() == n)
                .then_some(())
        });
        host
    }

    fn socket(&self) -> PathBuf {
        self.agent.socket.clone()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = clean(Command::new(agent_bin()));
        c.args(args).env("HMON_SOCKET", self.socket());
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hmonitor")
    }

    /// The UUIDs `hmonitor free --json --settle 0 <more>` lists, in its order.
    fn free(&self, more: &[&str]) -> Vec<String> {
        let mut args = vec!["free", "--json", "--settle", "0"];
        args.extend_from_slice(more);
        let out = self.cli(&args);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("free --json: {e}: {}", String::from_utf8_lossy(&out.stderr))
        });
        rows.iter()
            .map(|r| r["uuid"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every GPU of host `id` as the hub's `/api/gpus` has it.
    fn hub_rows(&self, query: &str) -> Vec<Value> {
        let (addr, path) =
            hmonitor_testkit::http::split_url(&self.hub.http(&format!("/api/gpus?{query}")));
        let reply = hmonitor_testkit::http::get(addr, &path, &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let v: Value = serde_json::from_str(&reply.body).expect("json");
        v["gpus"].as_array().cloned().unwrap_or_default()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn free_lists_exactly_the_free_gpus_and_mine_ok_adds_the_callers() {
    let mine = Children::spawn(1);
    let gpus = vec![
        gpu(0, |_| {}),
        gpu(1, with_proc(mine.pids()[0])),
        gpu(2, |g| g["memory_used"] = json!(3 * GIB)),
        gpu(3, busy),
        gpu(4, |g| g["lost"] = json!(true)),
        gpu(5, |g| {
            g["errors"] = json!({ "nvmlDeviceGetHandleByIndex_v2": "UNKNOWN",
                                  "nvmlDeviceGetHandleByIndex": "UNKNOWN" })
        }),
        gpu(6, |_| {}),
    ];
    let host = Host::start("free-a", &scenario(gpus));
    let held = host.cli(&["hold", "--settle", "0", "6"]);
    assert!(held.status.success(), "{}", stderr(&held));

    assert_eq!(host.free(&[]), [uuid(0)], "only GPU 0 is free");
    // The caller's own process does not make GPU 1 busy with --mine-ok (nor their hold on 6).
    let mut with_mine = host.free(&["--mine-ok"]);
    with_mine.sort();
    assert_eq!(with_mine, [uuid(0), uuid(1), uuid(6)]);

    // The table ends with the ready line.
    let out = host.cli(&["free", "--settle", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("CUDA_VISIBLE_DEVICES={}", uuid(0))),
        "{text}"
    );
    // The default settle time (30 s) has not passed on a fresh agent: nothing free, and why.
    let out = host.cli(&["free"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("settle"), "{}", stderr(&out));

    // The hub judges the same way (its --free-settle 0), and shows the hold once the next
    // report carries it.
    eventually(Duration::from_secs(10), || {
        let rows = host.hub_rows("free=1");
        let free: Vec<&str> = rows.iter().filter_map(|r| r["uuid"].as_str()).collect();
        (free == [uuid(0).as_str()]).then_some(())
    });
    let all = host.hub_rows("host=free-a");
    let states: Vec<(i64, &str)> = all
        .iter()
        .map(|r| {
            (
                r["index"].as_i64().unwrap_or(-1),
                r["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let expect = [
        (0, "free"),
        (1, "busy"),
        (2, "busy"),
        (3, "busy"),
        (4, "lost"),
        (5, "error"),
        (6, "held"),
    ];
    assert_eq!(states, expect);

    // `status` through the agent's connection to the hub: no token of the user's own.
    let out = host.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.len(), 7);
    let held_row = rows.iter().find(|r| r["index"] == 6).expect("GPU 6");
    assert_eq!(
        held_row["held_by"]["uid"],
        json!(nix::unistd::getuid().as_raw())
    );
    // `free --anywhere` asks the hub the same way.
    let out = host.cli(&["free", "--anywhere", "--settle", "0", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["host"], "free-a");
}

#[test]
fn wait_runs_its_command_on_the_gpus_that_become_free() {
    let host = Host::start("wait-a", &scenario(vec![gpu(0, busy), gpu(1, busy)]));
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("ran");
    let script = format!(
        "echo \"$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER\" > {}",
        out.display()
    );
    let mut wait = host
        .cmd(&["wait", "--settle", "0", "--", "sh", "-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wait");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        wait.try_wait().expect("try_wait").is_none(),
        "nothing is free yet"
    );
    assert!(!out.exists());
    let freed = Instant::now();
    host.scenario
        .write(&scenario(vec![gpu(0, busy), gpu(1, |_| {})]));
    let status = wait_exit(&mut wait, Duration::from_secs(10)).expect("wait ends");
    eprintln!(
        "wait's command ran {:?} after the GPU was freed",
        freed.elapsed()
    );
    assert!(status.success());
    let ran = std::fs::read_to_string(&out).expect("the command ran");
    assert_eq!(ran.trim(), format!("{} PCI_BUS_ID", uuid(1)));
    // Its hold stands until the job shows up: GPU 1 is not free for anyone else.
    assert!(host.free(&[]).is_empty());

    // A timeout exits 2 and says so.
    let o = host.cli(&["wait", "--settle", "0", "--count", "2", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
}

fn wait_line(host: &Host) -> Child {
    host.cmd(&["wait", "--settle", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wait")
}

fn line_of(child: Child) -> String {
    let out = child.wait_with_output().expect("wait output");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn two_waits_never_get_the_same_gpu() {
    let host = Host::start("two-a", &scenario(vec![gpu(0, |_| {}), gpu(1, |_| {})]));
    let (a, b) = (wait_line(&host), wait_line(&host));
    let (a, b) = (line_of(a), line_of(b));
    assert!(a.starts_with("CUDA_VISIBLE_DEVICES=GPU-"), "{a}");
    assert_ne!(a, b, "two waits got the same GPU");
    host.cli(&["release"]);

    // One free GPU, two waits: one gets it, the other waits for the next.
    host.scenario
        .write(&scenario(vec![gpu(0, |_| {}), gpu(1, busy)]));
    eventually(Duration::from_secs(10), || {
        (host.free(&[]) == [uuid(0)]).then_some(())
    });
    let (mut a, mut b) = (wait_line(&host), wait_line(&host));
    let first = eventually(Duration::from_secs(10), || {
        if a.try_wait().expect("try_wait").is_some() {
            Some(true)
        } else if b.try_wait().expect("try_wait").is_some() {
            Some(false)
        } else {
            None
        }
    });
    let (done, mut waiting) = if first { (a, b) } else { (b, a) };
    assert_eq!(line_of(done), format!("CUDA_VISIBLE_DEVICES={}", uuid(0)));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        waiting.try_wait().expect("try_wait").is_none(),
        "the second waits"
    );
    host.scenario
        .write(&scenario(vec![gpu(0, |_| {}), gpu(1, |_| {})]));
    assert!(wait_exit(&mut waiting, Duration::from_secs(10)).is_some());
    assert_eq!(
        line_of(waiting),
        format!("CUDA_VISIBLE_DEVICES={}", uuid(1))
    );
}

#[test]
fn a_hold_expires_and_ends_when_the_holders_job_appears() {
    let host = Host::start("hold-a", &scenario(vec![gpu(0, |_| {}), gpu(1, |_| {})]));
    let o = host.cli(&["hold", "--settle", "0", "--hold", "1s", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(host.free(&[]), [uuid(1)]);
    eventually(Duration::from_secs(10), || {
        (host.free(&[]).len() == 2).then_some(())
    });

    let o = host.cli(&["hold", "--settle", "0", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let held = |host: &Host| {
        host.hub_rows("host=hold-a")
            .iter()
            .any(|r| r["index"] == 1 && !r["held_by"].is_null())
    };
    eventually(Duration::from_secs(10), || held(&host).then_some(()));
    // The holder's job starts on GPU 1: the hold has done its work.
    let job = Children::spawn(1);
    host.scenario.write(&scenario(vec![
        gpu(0, |_| {}),
        gpu(1, with_proc(job.pids()[0])),
    ]));
    eventually(Duration::from_secs(10), || (!held(&host)).then_some(()));
}

/// `hmonitor` copied where any user may run it (the build tree may sit under a private home).
fn public_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("hmonitor");
    std::fs::copy(agent_bin(), &bin).expect("copy hmonitor");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[test]
fn another_user_cannot_release_a_hold_nor_use_a_closed_socket() {
    if !nix::unistd::getuid().is_root() || Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("skipped: needs root and setpriv to run the CLI as another uid");
        return;
    }
    let host = Host::start("perm-a", &scenario(vec![gpu(0, |_| {})]));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        host.agent.socket.parent().expect("socket dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let o = host.cli(&["hold", "--settle", "0", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bin_dir = tempfile::tempdir().expect("tempdir");
    let bin = public_binary(bin_dir.path());
    let as_nobody = |args: &[&str]| {
        clean(Command::new("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .env("HMON_SOCKET", host.socket())
            .output()
            .expect("setpriv")
    };
    let o = as_nobody(&["release", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("held by root (uid 0), not by you"),
        "{}",
        stderr(&o)
    );
    assert!(host.free(&[]).is_empty(), "the hold stands");
    // Releasing nothing of one's own is no error, and ends nobody else's hold.
    let o = as_nobody(&["release"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(host.free(&[]).is_empty());

    // A socket the caller may not open: told so, with the path.
    std::fs::set_permissions(
        host.agent.socket.parent().expect("socket dir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    let o = as_nobody(&["hold", "0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("permission denied") && err.contains("agent.sock"),
        "{err}"
    );
}

#[test]
fn ctrl_c_ends_a_wait_and_holds_nothing() {
    let host = Host::start("intr-a", &scenario(vec![gpu(0, busy)]));
    let wait = host
        .cmd(&["wait", "--settle", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(wait.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let mut wait = wait;
    assert!(
        wait_exit(&mut wait, Duration::from_secs(5)).is_some(),
        "Ctrl-C ends wait"
    );
    host.scenario.write(&scenario(vec![gpu(0, |_| {})]));
    // Freed after the wait was gone: free, held by nobody, on the agent and on the hub.
    eventually(Duration::from_secs(10), || {
        (host.free(&[]) == [uuid(0)]).then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(host.free(&[]), [uuid(0)]);
    let rows = host.hub_rows("host=intr-a");
    assert!(rows[0]["held_by"].is_null(), "{rows:?}");
}

#[test]
fn bad_input_and_unreachable_parts_are_named() {
    let host = Host::start("err-a", &scenario(vec![gpu(0, |_| {})]));
    let o = host.cli(&["free", "--min-mem", "lots"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"lots\""), "{}", stderr(&o));
    let o = host.cli(&["wait", "--timeout", "soon"]);
    assert!(stderr(&o).contains("\"soon\""), "{}", stderr(&o));
    let o = host.cli(&["wait", "--count", "3", "--timeout", "1m"]);
    assert_eq!(o.status.code(), Some(1), "fails at once, does not wait");
    assert!(
        stderr(&o).contains("1 GPUs; 3 were asked for"),
        "{}",
        stderr(&o)
    );
    let o = host.cli(&["free", "--count", "3", "--settle", "0"]);
    assert!(
        stderr(&o).contains("--count 3 can never be met"),
        "{}",
        stderr(&o)
    );

    // No agent at the socket: holds need one, and the path is named.
    let o = clean(Command::new(agent_bin()))
        .args(["hold", "--socket", "/nonexistent/agent.sock", "0"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/agent.sock"),
        "{}",
        stderr(&o)
    );
    // A hub that does not answer: its URL and why.
    let o = clean(Command::new(agent_bin()))
        .args(["status", "--socket", "/nonexistent/agent.sock"])
        .env("HMON_HUB", "ws://127.0.0.1:9")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("http://127.0.0.1:9") && err.contains("refused"),
        "{err}"
    );
}

/// 60 hosts of 8 GPUs each, sent by raw agents: `hmonitor status --json` straight from the
/// hub (no agent on this host) lists all 480 GPUs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_covers_sixty_hosts() {
    use hmonitor_proto::GpuInfo;

    let hub = Hub::start_with(HubOpts {
        extra: vec!["--viewer-token".into(), "view-tok".into()],
        ..HubOpts::default()
    });
    let mut conns = Vec::new();
    for h in 0..60 {
        let id = format!("node-{h:02}");
        let gpus = (0..8)
            .map(|i| GpuInfo {
                id: i,
                uuid: format!("GPU-{h:02}-{i}"),
                name: "NVIDIA H200".into(),
                mem_total: Some(150 * GIB),
                mem_used: Some(if i % 2 == 0 { 0 } else { 40 * GIB }),
                utilization: Some(if i % 2 == 0 { 0 } else { 90 }),
                ..Default::default()
            })
            .collect();
        conns.push(crate::harness::raw_host(&hub, &id, gpus).await);
    }
    let hub_url = hub.agent_url();
    let out = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || {
            let o = clean(Command::new(agent_bin()))
                .args(["status", "--json", "--socket", "/nonexistent/agent.sock"])
                .env("HMON_HUB", &hub_url)
                .env("HMON_VIEWER_TOKEN", "view-tok")
                .output()
                .expect("run");
            let rows: Vec<Value> = serde_json::from_slice(&o.stdout).ok()?;
            (rows.len() == 480).then_some(rows)
        })
    })
    .await
    .expect("join");
    let hosts: std::collections::BTreeSet<&str> =
        out.iter().filter_map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts.len(), 60);
    let busy = out.iter().filter(|r| r["state"] == "busy").count();
    assert_eq!(busy, 240, "the odd GPUs of each host are busy");
    drop(conns);
}
