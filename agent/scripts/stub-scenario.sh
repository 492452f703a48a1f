# Sourced by the benchmark scripts: a work directory with the NVML stand-in as
# libnvidia-ml.so.1 on the loader path and an 8-GPU scenario naming 64 live processes (real
# `sleep` children: gpustat drops pids that do not exist), all removed on exit.
# Sets: work, pids (append your own background pids to it).
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 64); do sleep 600 & pids+=($!); done
python3 agent/scripts/bench-scenario.py "$work/scenario.json" 8 "${pids[@]}"
mkdir -p "$work/lib"
ln -s "$PWD/target/release/libnvidia_ml.so" "$work/lib/libnvidia-ml.so.1"
export HMON_STUB_SCENARIO="$work/scenario.json" LD_LIBRARY_PATH="$work/lib"
