#!/usr/bin/env python3
"""Writes an NVML stand-in scenario of GPUS GPUs with PROCS live processes spread over them.

    bench-scenario.py OUT.json GPUS PID [PID ...]

The pids must be live processes on this host (gpustat drops pids that do not exist).
"""
import json
import sys

out, gpus, pids = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
scenario = {
    "driver_version": "580.95.05",
    "cuda_version": 13000,
    "gpus": [
        {
            "name": "NVIDIA H200",
            "uuid": f"GPU-{i:08x}-0000-4000-8000-000000000000",
            "pci_bus_id": f"00000000:{0x17 + i:02X}:00.0",
            "memory_total": 150754820096,
            "memory_used": 40 << 30,
            "memory_reserved": 600 << 20,
            "utilization_gpu": 87,
            "utilization_memory": 40,
            "temperature": 55,
            "fan_speed": None if i == 7 else 40,
            "power_usage_mw": 450000,
            "power_limit_mw": 700000,
            "processes": [
                {"pid": pid, "used_memory": 5 << 30, "type": "compute", "sm_util": 40, "mem_util": 10}
                for pid in pids[i::gpus]
            ],
        }
        for i in range(gpus)
    ],
}
json.dump(scenario, open(out, "w"), indent=1)
