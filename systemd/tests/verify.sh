#!/usr/bin/env bash
# Checks the unit files: `systemd-analyze verify` finds no error or warning, and the hardening
# the deploy issue asks for is there (and what would blind the agent is not).
#
# verify insists that ExecStart= names an existing executable, so it runs on copies whose
# ExecStart= (and EnvironmentFile=) point at the binaries just built and the example files;
# everything else in the copies is byte for byte the shipped unit.
#
# Usage: systemd/tests/verify.sh BIN_DIR   (the directory holding hmonitor and hmonitor-hub)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(cd "${1:?usage: verify.sh BIN_DIR}" && pwd)"
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze not found (apt-get install systemd)"; exit 1; }
for b in hmonitor hmonitor-hub; do
  [[ -x "$bin/$b" ]] || { echo "FAIL: $bin/$b missing: build first"; exit 1; }
done

fail=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The shipped units name /usr/local/bin and /etc/hmonitor.
grep -qx 'ExecStart=/usr/local/bin/hmonitor' "$here/hmonitor-agent.service" || { echo "FAIL: agent ExecStart"; fail=1; }
grep -qx 'ExecStart=/usr/local/bin/hmonitor-hub' "$here/hmonitor-hub.service" || { echo "FAIL: hub ExecStart"; fail=1; }

sed -e "s|^ExecStart=/usr/local/bin/hmonitor\$|ExecStart=$bin/hmonitor|" \
    -e "s|^EnvironmentFile=/etc/hmonitor/agent.env\$|EnvironmentFile=$here/agent.env.example|" \
    "$here/hmonitor-agent.service" >"$tmp/hmonitor-agent.service"
sed -e "s|^ExecStart=/usr/local/bin/hmonitor-hub\$|ExecStart=$bin/hmonitor-hub|" \
    -e "s|^EnvironmentFile=-/etc/hmonitor/hub.env\$|EnvironmentFile=-$here/hub.env.example|" \
    "$here/hmonitor-hub.service" >"$tmp/hmonitor-hub.service"
# Only those two lines may differ.
for u in hmonitor-agent hmonitor-hub; do
  n="$(diff "$here/$u.service" "$tmp/$u.service" | grep -c '^<' || true)"
  [[ "$n" == 2 ]] || { echo "FAIL: $u.service: expected 2 rewritten lines, got $n"; fail=1; }
done

# Any message is a finding: verify exits 0 on unknown keys and bad values, printing a warning.
out="$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no ./hmonitor-agent.service ./hmonitor-hub.service 2>&1)" || {
  echo "FAIL: systemd-analyze verify:"; echo "$out"; fail=1; }
if [[ -n "$out" ]]; then echo "FAIL: systemd-analyze verify printed:"; echo "$out"; fail=1; fi

need() { # unit key=value…: each line must be present exactly
  local unit="$1"; shift
  for l in "$@"; do
    grep -qxF "$l" "$here/$unit" || { echo "FAIL: $unit lacks '$l'"; fail=1; }
  done
}
never() { # unit key…: no line may set the key
  local unit="$1"; shift
  for k in "$@"; do
    if grep -q "^$k=" "$here/$unit"; then echo "FAIL: $unit must not set $k="; fail=1; fi
  done
}
common=(NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes Restart=on-failure)
need hmonitor-agent.service "${common[@]}" User=hmonitor ProtectHome=read-only \
  StateDirectory=hmonitor-agent EnvironmentFile=/etc/hmonitor/agent.env \
  RuntimeDirectory=hmonitor RuntimeDirectoryMode=0755 \
  'DeviceAllow=/dev/nvidiactl rw' 'DeviceAllow=/dev/nvidia-uvm rw' 'DeviceAllow=char-nvidia* rw' \
  UMask=0077 MemoryDenyWriteExecute=yes SystemCallFilter=@system-service
never hmonitor-agent.service PrivateDevices ProtectProc DynamicUser
if grep -q '^User=root' "$here/hmonitor-agent.service"; then echo "FAIL: agent runs as root"; fail=1; fi
need hmonitor-hub.service "${common[@]}" DynamicUser=yes StateDirectory=hmonitor-hub ProtectHome=yes \
  UMask=0077 MemoryMax=4G TasksMax=1024 MemoryDenyWriteExecute=yes SystemCallFilter=@system-service

# A deliberately broken copy must be caught, or the check above proves nothing.
sed 's/^NoNewPrivileges=yes$/NoNewPrivilegez=yes/' "$tmp/hmonitor-hub.service" >"$tmp/broken.service"
bad="$(cd "$tmp" && systemd-analyze verify --man=no ./broken.service 2>&1 || true)"
[[ "$bad" == *NoNewPrivilegez* ]] || { echo "FAIL: verify did not notice an unknown key: $bad"; fail=1; }

if [[ $fail == 0 ]]; then echo "PASS: systemd units verified (systemd $(systemd-analyze --version | head -1 | awk '{print $2}'))"; fi
exit $fail
