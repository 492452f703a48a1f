#!/usr/bin/env python3
"""How soon a job starts once a GPU frees: `hmonitor wait -- CMD` against a polling loop that
runs `gpustat --json` every 5 s (what the public "wait for a GPU" tools do), both started
before the NVML stand-in frees the GPU, in the same run.

    agent/scripts/bench-wait.py HMONITOR STUB_LIB GPUSTAT [TRIES]

The agent samples at its default interval (2 s); both judge the latest sample only
(`--settle 0`: the poller has no settle time either). Each try frees the GPU at a random
moment of the poller's 5 s period. Prints each side's median and p95 in seconds.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

hmonitor, stub, gpustat = sys.argv[1], sys.argv[2], sys.argv[3]
tries = int(sys.argv[4]) if len(sys.argv) > 4 else 20
work = tempfile.mkdtemp()
lib = os.path.join(work, "lib")
os.mkdir(lib)
os.symlink(os.path.abspath(stub), os.path.join(lib, "libnvidia-ml.so.1"))
scenario = os.path.join(work, "scenario.json")
sock = os.path.join(work, "agent.sock")
job = subprocess.Popen(["sleep", "3600"])


def write(busy):
    gpu = {
        "name": "NVIDIA H200",
        "uuid": "GPU-00000000-0000-4000-8000-000000000000",
        "pci_bus_id": "00000000:17:00.0",
        "memory_total": 150754820096,
        "memory_used": (20 << 30) if busy else (300 << 20),
        "utilization_gpu": 90 if busy else 0,
        "processes": [{"pid": job.pid, "used_memory": 20 << 30, "type": "compute"}] if busy else [],
    }
    tmp = scenario + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"driver_version": "580.95.05", "cuda_version": 13000, "gpus": [gpu]}, f)
    os.replace(tmp, scenario)


env = dict(os.environ, HMON_STUB_SCENARIO=scenario, LD_LIBRARY_PATH=lib,
           HMON_NVML_LIB=os.path.join(lib, "libnvidia-ml.so.1"))
write(True)
agent = subprocess.Popen([hmonitor, "--listen", "127.0.0.1:0", "--socket", sock],
                         env=env, stderr=subprocess.DEVNULL)


def gpustat_free():
    out = subprocess.run([gpustat, "--json"], env=env, capture_output=True, text=True).stdout
    g = json.loads(out)["gpus"][0]
    return g["memory.used"] < 1024 and g["utilization.gpu"] <= 5 and not g["processes"]


def poller(result):
    # Starts at a random phase of its period relative to the moment the GPU frees.
    while True:
        if gpustat_free():
            result.append(time.time())
            return
        time.sleep(5)


try:
    while not os.path.exists(sock):
        time.sleep(0.1)
    waits, polls = [], []
    for i in range(tries):
        write(True)
        time.sleep(4.5)  # two samples of the busy GPU, and the last hold (1 s) long over
        marker = os.path.join(work, f"ran-{i}")
        w = subprocess.Popen([hmonitor, "wait", "--socket", sock, "--settle", "0", "--hold", "1s",
                              "--", "sh", "-c", f"date +%s.%N > {marker}"],
                             env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        seen = []
        t = threading.Thread(target=poller, args=(seen,))
        t.start()
        time.sleep(random.uniform(0.5, 5.5))
        t0 = time.time()
        write(False)
        w.wait(timeout=60)
        t.join(timeout=60)
        with open(marker) as f:
            waits.append(float(f.read()) - t0)
        polls.append(seen[0] - t0)
        print(f"try {i + 1}: wait {waits[-1]:.2f} s, 5 s poller {polls[-1]:.2f} s", flush=True)

    def p95(xs):
        return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]

    print(f"hmonitor wait: median {statistics.median(waits):.2f} s, p95 {p95(waits):.2f} s")
    print(f"gpustat every 5 s: median {statistics.median(polls):.2f} s, p95 {p95(polls):.2f} s")
    print(f"ratio of medians (poller / wait): {statistics.median(polls) / statistics.median(waits):.1f}")
finally:
    agent.terminate()
    job.kill()
