#!/usr/bin/env bash
# One-shot benchmark: `hmonitor --once --json` against `gpustat --json`, both on the NVML
# stand-in with the same scenario (8 GPUs, 64 live processes), timed side by side by hyperfine.
#
#   cargo build --release --workspace && make target/venv-gpustat && agent/scripts/bench-once.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-target/venv-gpustat}
RUNS=${RUNS:-20}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 64); do sleep 600 & pids+=($!); done
python3 agent/scripts/bench-scenario.py "$work/scenario.json" 8 "${pids[@]}"
mkdir -p "$work/lib"
ln -s "$PWD/target/release/libnvidia_ml.so" "$work/lib/libnvidia-ml.so.1"
export HMON_STUB_SCENARIO="$work/scenario.json" LD_LIBRARY_PATH="$work/lib"
# Both read the same stand-in through the loader path.
"target/release/hmonitor" --once --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("hmonitor:", len(r["gpus"]), "GPUs,", sum(len(g["procs"]) for g in r["gpus"]), "processes")'
"$VENV/bin/gpustat" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("gpustat: ", len(r["gpus"]), "GPUs,", sum(len(g["processes"]) for g in r["gpus"]), "processes")'
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "${OUT:-$work}/once.json" \
  "target/release/hmonitor --once --json" "$VENV/bin/gpustat --json"
