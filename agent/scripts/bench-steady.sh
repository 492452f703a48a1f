#!/usr/bin/env bash
# Steady state of the agent at a 1 s interval over 60 s on the NVML stand-in (8 GPUs, 64 live
# processes): resident memory (VmRSS, sampled every second) and CPU time (utime + stime from
# /proc/PID/stat, after a 5 s warm-up), as a share of one core.
#
#   cargo build --release --workspace && agent/scripts/bench-steady.sh [SECONDS]
# AGENT_BIN=path measures another build of the agent (a peer) on the same scenario.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" "${agent:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 64); do sleep 600 & pids+=($!); done
python3 agent/scripts/bench-scenario.py "$work/scenario.json" 8 "${pids[@]}"
HMON_STUB_SCENARIO="$work/scenario.json" HMON_NVML_LIB="$PWD/target/release/libnvidia_ml.so" \
  HMON_INTERVAL=1s GOHM_ADDR=127.0.0.1:0 "${AGENT_BIN:-target/release/hmonitor}" 2>"$work/log" &
agent=$!
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
: >"$work/rss"
for _ in $(seq "$SECS"); do
  awk '/^VmRSS/ {print $2}' "/proc/$agent/status" >>"$work/rss"
  sleep 1
done
t1=$(ticks); s1=$(date +%s.%N)
python3 - "$work/rss" "$t0" "$t1" "$s0" "$s1" "$hz" <<'PY'
import statistics, sys
rss = [int(x) for x in open(sys.argv[1]) if x.strip()]
t0, t1, s0, s1, hz = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
cpu = (t1 - t0) / hz / (s1 - s0) * 100
print(f"samples: {len(rss)} over {s1 - s0:.1f} s")
print(f"RSS KiB: median {statistics.median(rss):.0f}, max {max(rss)}, min {min(rss)}")
print(f"CPU: {cpu:.3f}% of one core ({t1 - t0} ticks at {hz}/s)")
PY
