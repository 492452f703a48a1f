#!/usr/bin/env bash
# `hmonitor free` and `hmonitor status`, timed side by side by hyperfine (medians of 20):
#  1. `hmonitor free --json` asking the running agent, `hmonitor free --json` with no agent
#     (it reads NVML itself), and `gpustat --json`, all on the NVML stand-in with the same
#     scenario (8 GPUs, 64 live processes);
#  2. `hmonitor status --json` over 1,000 simulated hosts (hmonitor-load, 8 GPUs each), straight
#     from the hub and relayed by a local agent, beside `curl /api/hosts` (the hub's full JSON).
#  3. the wait latency (bench-wait.py): `hmonitor wait` against a 5 s gpustat poller.
#
#   cargo build --release --workspace && make target/venv-gpustat && agent/scripts/bench-free.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-target/venv-gpustat}
RUNS=${RUNS:-20}
rel=target/release
source agent/scripts/stub-scenario.sh

echo "== 1. hmonitor free against gpustat --json"
"$rel/hmonitor" --listen 127.0.0.1:0 --socket "$work/agent.sock" 2>/dev/null & pids+=($!)
for _ in $(seq 50); do [[ -S "$work/agent.sock" ]] && break; sleep 0.1; done
medians() { python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %8.1f ms  min %8.1f  max %8.1f  %s" % (r["median"]*1e3, r["min"]*1e3, r["max"]*1e3, r["command"]))' "$1"; }
hyperfine -N --warmup 3 --runs "$RUNS" -i --export-json "$work/free.json" \
  "$rel/hmonitor free --json --socket $work/agent.sock" \
  "$rel/hmonitor free --json --settle 0 --socket $work/none.sock" \
  "$VENV/bin/gpustat --json"
medians "$work/free.json"

echo "== 2. hmonitor status --json over 1,000 hosts"
"$rel/hmonitor-hub" --listen 127.0.0.1:5091 --data-dir "$work/hub" --token bench \
  --viewer-token view 2>/dev/null & pids+=($!)
sleep 1
"$rel/hmonitor-load" --hub ws://127.0.0.1:5091 --token bench --agents 1000 --rate 0.5 \
  --gpus 8 --procs 4 --ramp 5 --warmup 2 --duration 120 --source-addrs 4 >/dev/null 2>&1 & pids+=($!)
HMON_HUB=ws://127.0.0.1:5091 HMON_TOKEN=bench "$rel/hmonitor" --socket "$work/relay.sock" \
  --state-dir "$work/agent" 2>/dev/null & pids+=($!)
sleep 12
n=$(HMON_HUB=ws://127.0.0.1:5091 HMON_VIEWER_TOKEN=view "$rel/hmonitor" status --json \
      --socket "$work/none.sock" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "status --json lists $n GPUs"
# A pause before each run: the agent relays at most 4 questions a second for its host.
HMON_HUB=ws://127.0.0.1:5091 HMON_VIEWER_TOKEN=view hyperfine -N --warmup 3 --runs "$RUNS" \
  --prepare "sleep 0.3" --export-json "$work/status.json" \
  "$rel/hmonitor status --json --socket $work/none.sock" \
  "$rel/hmonitor status --json --socket $work/relay.sock" \
  "curl -s -H 'Authorization: Bearer view' http://127.0.0.1:5091/api/hosts -o /dev/null"
medians "$work/status.json"
[[ -n "${NO_WAIT:-}" ]] && exit 0

echo "== 3. hmonitor wait against a 5 s poller"
unset HMON_STUB_SCENARIO LD_LIBRARY_PATH
python3 agent/scripts/bench-wait.py "$rel/hmonitor" "$rel/libnvidia_ml.so" "$VENV/bin/gpustat" "${TRIES:-20}"
