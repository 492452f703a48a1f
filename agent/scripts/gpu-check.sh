#!/usr/bin/env bash
# GPU check for a real NVIDIA host: compares `hmonitor --once --json` with nvidia-smi's view of
# the same moment while a process holds (and uses) GPU memory. Prints PASS/FAIL per check and
# exits non-zero when any check fails.
#
#   agent/scripts/gpu-check.sh [path/to/hmonitor]      (default: target/release/hmonitor)
#
# Needs nvidia-smi and python3; with PyTorch the holder also computes, so utilization is
# checked too. Without PyTorch only the GPU inventory is compared.
set -u
BIN=${1:-target/release/hmonitor}
WORK=$(mktemp -d)
trap 'kill "${HOLDER:-0}" 2>/dev/null; rm -rf "$WORK"' EXIT

fail=0
say() { printf '%s\n' "$*"; }

command -v nvidia-smi >/dev/null || { say "FAIL nvidia-smi not found"; exit 1; }
[ -x "$BIN" ] || { say "FAIL $BIN is not an executable (build with cargo build --release)"; exit 1; }

HOLD_GIB=${HOLD_GIB:-4}
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 - "$WORK/ready" "$HOLD_GIB" <<'PY' &
import sys, time, torch
ready, gib = sys.argv[1], int(sys.argv[2])
hold = torch.empty(gib << 30, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
open(ready, "w").write("ok")
end = time.time() + 120
while time.time() < end:          # keep the SMs busy so utilization is non-zero
    for _ in range(20):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
PY
  HOLDER=$!
  for _ in $(seq 1 600); do [ -f "$WORK/ready" ] && break; sleep 0.1; done
  [ -f "$WORK/ready" ] || { say "FAIL the PyTorch holder did not start"; exit 1; }
  sleep 3   # let utilization samples accumulate
  say "holder: pid $HOLDER holds ${HOLD_GIB} GiB and computes"
else
  say "note: no PyTorch with CUDA here; only the GPU inventory is compared"
fi

# Two samples of hmonitor around one of nvidia-smi, so timing differences show up as a range.
"$BIN" --once --json >"$WORK/a.json" 2>"$WORK/a.err"; rc=$?
nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,pstate,clocks.sm,clocks.mem,fan.speed,driver_version \
  --format=csv,noheader,nounits >"$WORK/gpus.csv"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits >"$WORK/apps.csv"
"$BIN" --once --json >"$WORK/b.json" 2>>"$WORK/a.err"
[ $rc -eq 0 ] && say "PASS hmonitor --once --json exits 0" || { say "FAIL hmonitor exit $rc: $(cat "$WORK/a.err")"; fail=1; }

say "--- nvidia-smi --query-gpu"; cat "$WORK/gpus.csv"
say "--- nvidia-smi --query-compute-apps"; cat "$WORK/apps.csv"
say "--- hmonitor --once (table)"; "$BIN" --once

python3 - "$WORK" "${HOLDER:-}" <<'PY' || fail=1
import csv, json, os, pwd, sys
work, holder = sys.argv[1], sys.argv[2]
a = json.load(open(f"{work}/a.json")); b = json.load(open(f"{work}/b.json"))
rows = [[c.strip() for c in r] for r in csv.reader(open(f"{work}/gpus.csv")) if r]
apps = [[c.strip() for c in r] for r in csv.reader(open(f"{work}/apps.csv")) if r]
MIB = 1 << 20
bad = 0
def check(ok, what):
    global bad
    print(("PASS " if ok else "FAIL ") + what)
    bad += 0 if ok else 1
def num(s):
    try: return float(s)
    except ValueError: return None

check(a.get("err", "") == "", f"no host error (err={a.get('err')!r})")
check(len(a["gpus"]) == len(rows), f"GPU count: hmonitor {len(a['gpus'])}, nvidia-smi {len(rows)}")
check(a.get("driver_version") == rows[0][13] if rows else False,
      f"driver: hmonitor {a.get('driver_version')}, nvidia-smi {rows[0][13] if rows else None}")
for r in rows:
    idx = int(r[0])
    g = next((g for g in a["gpus"] if g["id"] == idx), None)
    if g is None:
        check(False, f"GPU {idx} listed"); continue
    gb = next((g for g in b["gpus"] if g["id"] == idx), g)
    check(g["name"] == r[2], f"GPU {idx} name: {g['name']!r} vs {r[2]!r}")
    check(g["uuid"] == r[1], f"GPU {idx} uuid: {g['uuid']} vs {r[1]}")
    total = float(r[3]) * MIB
    check(abs(g["mem_total"] - total) <= 0.01 * total, f"GPU {idx} memory total within 1%: {g['mem_total']/MIB:.0f} vs {r[3]} MiB")
    used = float(r[4]) * MIB
    lo, hi = sorted([g["mem_used"], gb["mem_used"]])
    close = lo - 0.01 * used - 2 * MIB <= used <= hi + 0.01 * used + 2 * MIB
    check(close, f"GPU {idx} memory used within 1%: {g['mem_used']/MIB:.0f}..{gb['mem_used']/MIB:.0f} vs {r[4]} MiB")
    t = num(r[6])
    check(g.get("temp") is not None and t is not None and abs(g["temp"] - t) <= 5, f"GPU {idx} temperature: {g.get('temp')} vs {r[6]} C")
    p = num(r[7])
    if p is not None:
        d = g.get("power_draw_mw")
        check(d is not None and abs(d / 1000 - p) <= max(0.25 * p, 30), f"GPU {idx} power draw: {None if d is None else d/1000} vs {p} W")
    fan = num(r[12])
    check((fan is None) == (g.get("fanspeed") is None), f"GPU {idx} fan: {g.get('fanspeed')} vs {r[12]!r} (absent when nvidia-smi says N/A)")
    if holder:
        u = num(r[5])
        ours = max(g.get("utilization") or 0, gb.get("utilization") or 0)
        check(ours > 0 and (u or 0) > 0, f"GPU {idx} utilization while computing: hmonitor {g.get('utilization')}/{gb.get('utilization')}%, nvidia-smi {r[5]}%")

for pid, uuid, mem, name in apps:
    g = next((g for g in a["gpus"] if g["uuid"] == uuid), None)
    procs = {p["pid"]: p for p in (g or {}).get("procs", [])}
    p = procs.get(int(pid))
    check(p is not None, f"process {pid} ({name}) on {uuid} listed")
    if p is None: continue
    want_mem = float(mem) * MIB
    check(p.get("mem") is not None and abs(p["mem"] - want_mem) <= 0.01 * want_mem + 2 * MIB,
          f"process {pid} memory within 1%: {(p.get('mem') or 0)/MIB:.0f} vs {mem} MiB")
    try:
        want_user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (KeyError, FileNotFoundError):
        want_user = None
    check(p.get("username") == want_user, f"process {pid} user: {p.get('username')} vs {want_user}")
    check(p.get("basename") is not None, f"process {pid} name: {p.get('basename')}")
    if holder and int(pid) == int(holder):
        check((p.get("utilization") or 0) > 0 or any((q.get("utilization") or 0) > 0 for g2 in b["gpus"] for q in g2["procs"] if q["pid"] == int(pid)),
              f"process {pid} SM utilization reported: {p.get('utilization')}")
if holder:
    check(any(str(holder) == r[0] for r in apps), f"the holder (pid {holder}) is in nvidia-smi's list")
print(f"{'ALL PASS' if bad == 0 else f'{bad} FAILED'}")
sys.exit(1 if bad else 0)
PY
say "--- hmonitor --once --json (first sample)"; cat "$WORK/a.json"
exit $fail
