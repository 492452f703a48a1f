#!/usr/bin/env bash
# gpustat against the stand-in NVML: does an unmodified third-party NVML client (PyPI
# nvidia-ml-py + gpustat 1.1.1) see the scenario faithfully?
#
# Run standalone from anywhere:  bash agent/nvml-stub/tests/gpustat-compat.sh
# (or `cargo test -p hmonitor-nvml-stub -- --ignored`, which runs this script).
#
# Last run with: gpustat 1.1.1, nvidia-ml-py 13.615.71 (pynvml), psutil 7.2.2, Python 3.12.
#
# Environment (all optional):
#   HMON_STUB_LIB   the built libnvidia_ml.so (default: build it with cargo, debug profile)
#   GPUSTAT_VENV    the venv to use/create (default: <target dir>/venv-gpustat)
#   NVML_PY_SPEC    pip spec of pynvml (default: nvidia-ml-py==13.615.71)
#
# What it does: builds a venv if missing; starts live `sleep` children (gpustat drops PIDs
# that do not exist on the host); writes an 8-GPU scenario from
# agent/tests/fixtures/scenarios/8gpu.json with those pids; runs `gpustat --json` and plain
# `gpustat` with LD_LIBRARY_PATH pointing at a `libnvidia-ml.so.1` symlink to the stub; checks
# GPU count, names, UUIDs, memory in MiB, power, fans, processes (pids, users, memory). Then a
# second scenario with a lost GPU and a failing one: gpustat must list them as invalid.
# Prints PASS or FAIL; exits non-zero on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
fixture="$repo/agent/tests/fixtures/scenarios/8gpu.json"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
venv="${GPUSTAT_VENV:-$target_dir/venv-gpustat}"
nvml_py_spec="${NVML_PY_SPEC:-nvidia-ml-py==13.615.71}"

fail() {
    echo "gpustat-compat: $*" >&2
    echo "FAIL"
    exit 1
}

# --- the stub -------------------------------------------------------------------------------
lib="${HMON_STUB_LIB:-}"
if [[ -z "$lib" ]]; then
    (cd "$repo" && cargo build --quiet -p hmonitor-nvml-stub) || fail "cargo build failed"
    lib="$target_dir/debug/libnvidia_ml.so"
fi
[[ -f "$lib" ]] || fail "no stub library at $lib"

# --- the client -------------------------------------------------------------------------------
if [[ ! -x "$venv/bin/gpustat" ]]; then
    python3 -m venv "$venv" || fail "cannot create venv $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "gpustat==1.1.1" "$nvml_py_spec" \
        || fail "pip install failed"
fi
py="$venv/bin/python"
echo "gpustat-compat: $("$py" -c 'import importlib.metadata as m; print("gpustat", m.version("gpustat"), "/ nvidia-ml-py", m.version("nvidia-ml-py"))')"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/lib"
ln -s "$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")" "$work/lib/libnvidia-ml.so.1"

# --- live processes and the scenario -----------------------------------------------------------
for _ in 1 2 3 4; do
    sleep 600 &
    pids+=("$!")
done

"$py" - "$fixture" "$work/scenario.json" "${pids[@]}" <<'EOF'
import json, sys
fixture, out, *pids = sys.argv[1:]
s = json.load(open(fixture))
# Give each distinct placeholder pid of the fixture a live pid, in order of appearance.
mapping = {}
for g in s["gpus"]:
    for p in g.get("processes", []):
        if p["pid"] not in mapping:
            mapping[p["pid"]] = int(pids[len(mapping)])
        p["pid"] = mapping[p["pid"]]
json.dump(s, open(out, "w"), indent=1)
EOF

export HMON_STUB_SCENARIO="$work/scenario.json"
export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# --- gpustat --json --------------------------------------------------------------------------
"$venv/bin/gpustat" --json >"$work/out.json" 2>"$work/err.txt" \
    || { cat "$work/err.txt" >&2; fail "gpustat --json exited non-zero"; }
echo "--- gpustat --json"
cat "$work/out.json"

"$py" - "$work/scenario.json" "$work/out.json" <<'EOF' || fail "gpustat --json does not match the scenario"
import getpass, json, sys
scenario = json.load(open(sys.argv[1]))
out = json.load(open(sys.argv[2]))
MiB = 1024 * 1024
user = getpass.getuser()
errors = []
def check(what, got, want):
    if got != want:
        errors.append(f"{what}: got {got!r}, want {want!r}")

check("driver_version", out["driver_version"], scenario["driver_version"])
check("gpu count", len(out["gpus"]), len(scenario["gpus"]))
for i, (g, o) in enumerate(zip(scenario["gpus"], out["gpus"])):
    check(f"gpu {i} index", o["index"], i)
    check(f"gpu {i} name", o["name"], g["name"])
    check(f"gpu {i} uuid", o["uuid"], g["uuid"])
    check(f"gpu {i} memory.total", o["memory.total"], g["memory_total"] // MiB)
    check(f"gpu {i} memory.used", o["memory.used"], g.get("memory_used", 0) // MiB)
    check(f"gpu {i} utilization.gpu", o["utilization.gpu"], g.get("utilization_gpu", 0))
    check(f"gpu {i} temperature.gpu", o["temperature.gpu"], g.get("temperature", 30))
    check(f"gpu {i} fan.speed", o["fan.speed"], g.get("fan_speed"))
    power = None if "nvmlDeviceGetPowerUsage" in g.get("errors", {}) else g["power_usage_mw"] // 1000
    check(f"gpu {i} power.draw", o["power.draw"], power)
    check(f"gpu {i} enforced.power.limit", o["enforced.power.limit"], g["power_limit_mw"] // 1000)
    want = []
    for p in g.get("processes", []):
        if p["pid"] not in [w[0] for w in want]:
            mem = p.get("used_memory", 0)
            want.append((p["pid"], user, mem // MiB if mem else None))
    got = [(p["pid"], p["username"], p["gpu_memory_usage"]) for p in o["processes"]]
    check(f"gpu {i} processes", sorted(got), sorted(want))
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"gpustat --json: {len(out['gpus'])} GPUs and "
      f"{sum(len(g['processes']) for g in out['gpus'])} processes as in the scenario")
EOF

# --- plain gpustat ---------------------------------------------------------------------------
"$venv/bin/gpustat" --no-color --show-pid --show-user >"$work/out.txt" 2>"$work/err.txt" \
    || { cat "$work/err.txt" >&2; fail "gpustat exited non-zero"; }
echo "--- gpustat --no-color --show-pid --show-user"
cat "$work/out.txt"
[[ "$(grep -c 'NVIDIA H200' "$work/out.txt")" == 8 ]] || fail "plain gpustat does not list 8 H200"
grep -q "/${pids[0]}(" "$work/out.txt" || fail "plain gpustat does not show pid ${pids[0]}"
grep -q "143771 MB" "$work/out.txt" || fail "plain gpustat does not show 143771 MB totals"

# --- a lost GPU and a failing one -----------------------------------------------------------------
cat >"$work/scenario.json.tmp" <<EOF
{"gpus": [
  {"name": "NVIDIA H200", "processes": [{"pid": ${pids[0]}, "used_memory": 1073741824}]},
  {"name": "NVIDIA H200", "lost": true},
  {"name": "NVIDIA H200", "errors": {"nvmlDeviceGetName": "UNKNOWN"}}
]}
EOF
mv "$work/scenario.json.tmp" "$work/scenario.json"
"$venv/bin/gpustat" --no-color >"$work/out.txt" 2>"$work/err.txt" \
    || { cat "$work/err.txt" >&2; fail "gpustat (faults) exited non-zero"; }
echo "--- gpustat --no-color (GPU 1 lost, GPU 2 failing)"
cat "$work/out.txt"
grep -q "GPU is lost" "$work/out.txt" || fail "gpustat does not show the lost GPU"
grep -q "Unknown Error" "$work/out.txt" || fail "gpustat does not show the failing GPU"

echo "PASS"
