#!/usr/bin/env python3
"""Time from an agent's death to the webhook's receipt (BENCHMARKS.md, "Alerts").

A release hub on loopback with one `host_down` rule (`for = "0s"`, alerts every 1 s, the
defaults otherwise) notifying a webhook receiver in this process; N real agents on the NVML
stand-in at 1 s. Each agent in turn is killed (SIGKILL) and the time to the webhook's POST naming
it is taken. Side by side, in the same run, the peer: the time until a client polling
`/api/hosts` every 20 ms sees the host down — what the live view knows, before any rule runs.
With `for = F` an alert comes F later (counted from the host's last report).

usage: hub/scripts/bench-alerts.py [AGENTS]       (needs: cargo build --release --workspace)
"""
import http.server
import json
import random
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
rel = os.path.join(target, "release")
hub_bin, agent_bin = os.path.join(rel, "hmonitor-hub"), os.path.join(rel, "hmonitor")
stub = os.path.join(rel, "libnvidia_ml.so")
for p in (hub_bin, agent_bin, stub):
    if not os.path.exists(p):
        sys.exit(f"{p} missing: cargo build --release --workspace")

received = {}
lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        now = time.monotonic()
        try:
            msg = json.loads(body)
            with lock:
                for a in msg.get("alerts", []):
                    if a.get("state") == "firing":
                        received.setdefault(a["host"], now)
        except ValueError:
            pass
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=srv.serve_forever, daemon=True).start()
work = tempfile.mkdtemp(prefix="hmon-bench-alerts-")
cfg = os.path.join(work, "hub.toml")
with open(cfg, "w") as f:
    f.write(
        f"""[alerts]
interval = "1s"
[[alerts.channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{srv.server_address[1]}/hook"
rate_limit = "1000/m"
[[alerts.rule]]
kind = "host_down"
for = "0s"
notify = ["hook"]
"""
    )
scenario = os.path.join(work, "scenario.json")
with open(scenario, "w") as f:
    json.dump({"gpus": [{"name": "NVIDIA H200", "utilization_gpu": 30}]}, f)

env = {k: v for k, v in os.environ.items() if not k.startswith("HMON_")}
hub_log = open(os.path.join(work, "hub.log"), "w+")
hub = subprocess.Popen(
    [hub_bin, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(work, "data"), "--token", "bench",
     "--config", cfg, "--interval", "1s"],
    env=env, stderr=hub_log, stdout=subprocess.DEVNULL)
addr = None
for _ in range(200):
    hub_log.seek(0)
    for line in hub_log:
        if "hub listening on " in line:
            addr = line.split("hub listening on ")[1].split()[0].rstrip(",")
    if addr:
        break
    time.sleep(0.05)
if not addr:
    hub.kill()
    sys.exit("hub did not start")

agents = {}
for i in range(N):
    e = dict(env, HMON_HUB=f"ws://{addr}/api/agent", HMON_TOKEN="bench", HMON_ID=f"b{i:02}",
             HMON_INTERVAL="1s", HMON_NVML_LIB=stub, HMON_STUB_SCENARIO=scenario, HMON_SOCKET="off",
             HMON_STATE_DIR=os.path.join(work, f"state{i}"))
    agents[f"b{i:02}"] = subprocess.Popen([agent_bin], env=e, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def hosts():
    with urllib.request.urlopen(f"http://{addr}/api/hosts", timeout=5) as r:
        return {h["id"]: h["status"] for h in json.load(r)}


deadline = time.time() + 60
while time.time() < deadline and sum(s == "HOST_STATUS_UP" for s in hosts().values()) < N:
    time.sleep(0.2)
time.sleep(2)

alert_ms, seen_ms = [], []
try:
    for host, p in agents.items():
        t0 = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait()
        seen = None
        while time.monotonic() - t0 < 30:
            now = time.monotonic()
            if seen is None and hosts().get(host) != "HOST_STATUS_UP":
                seen = now
            with lock:
                got = received.get(host)
            if got is not None and seen is not None:
                break
            time.sleep(0.02)
        if got is None or seen is None:
            print(f"{host}: no alert within 30 s", file=sys.stderr)
            continue
        alert_ms.append((got - t0) * 1000)
        seen_ms.append((seen - t0) * 1000)
        # Kills a cycle apart or more (each alert its own message), at random phases of the
        # 1 s evaluation cycle: a fixed spacing would always kill at the same phase.
        time.sleep(1.0 + random.random())
finally:
    for p in agents.values():
        p.kill()
    hub.send_signal(signal.SIGTERM)
    hub.wait()


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


print(f"{len(alert_ms)} kills; death -> webhook ms: median {statistics.median(alert_ms):.0f}, p95 {q(alert_ms, 0.95):.0f}, "
      f"max {max(alert_ms):.0f}; peer, death -> /api/hosts says down: median {statistics.median(seen_ms):.0f}, "
      f"p95 {q(seen_ms, 0.95):.0f}")
print(json.dumps({"kills": len(alert_ms), "alert_ms": alert_ms, "seen_ms": seen_ms}))
