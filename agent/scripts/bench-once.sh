#!/usr/bin/env bash
# One-shot benchmark: `hmonitor --once --json` against `gpustat --json`, both on the NVML
# stand-in with the same scenario (8 GPUs, 64 live processes), timed side by side by hyperfine.
#
#   cargo build --release --workspace && make target/venv-gpustat && agent/scripts/bench-once.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-target/venv-gpustat}
RUNS=${RUNS:-20}
source agent/scripts/stub-scenario.sh
# Both read the same stand-in through the loader path.
"target/release/hmonitor" --once --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("hmonitor:", len(r["gpus"]), "GPUs,", sum(len(g["procs"]) for g in r["gpus"]), "processes")'
"$VENV/bin/gpustat" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("gpustat: ", len(r["gpus"]), "GPUs,", sum(len(g["processes"]) for g in r["gpus"]), "processes")'
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "${OUT:-$work}/once.json" \
  "target/release/hmonitor --once --json" "$VENV/bin/gpustat --json"
