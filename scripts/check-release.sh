#!/usr/bin/env bash
# Checks a release archive: the expected files are in it, no symbol of either binary needs a
# glibc newer than MAX_GLIBC (objdump -T), and both binaries run (--version) from the
# unpacked archive.
#
# Usage: scripts/check-release.sh ARCHIVE.tar.gz
set -euo pipefail
archive="${1:?usage: check-release.sh ARCHIVE.tar.gz}"
max="${MAX_GLIBC:-2.17}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar -C "$tmp" -xzf "$archive"
root="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d)"
fail=0
for f in bin/hmonitor bin/hmonitor-hub systemd/hmonitor-agent.service systemd/hmonitor-hub.service \
         examples/agent.env.example examples/hub.env.example examples/hub.example.toml README.md LICENSE; do
  [[ -e "$root/$f" ]] || { echo "FAIL: $f missing from the archive"; fail=1; }
done
for b in hmonitor hmonitor-hub; do
  bin="$root/bin/$b"
  [[ -x "$bin" ]] || continue
  # Every versioned glibc symbol the binary imports, e.g. "GLIBC_2.14".
  versions="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V)"
  [[ -n "$versions" ]] || { echo "FAIL: $b: no GLIBC symbol versions found (not a dynamic glibc binary?)"; fail=1; continue; }
  newest="$(printf '%s\n' "$versions" | sed 's/GLIBC_//' | sort -V | tail -1)"
  if [[ "$(printf '%s\n%s\n' "$newest" "$max" | sort -V | tail -1)" != "$max" ]]; then
    echo "FAIL: $b needs glibc $newest (> $max):"
    objdump -T "$bin" | awk -v m="$max" 'match($0, /GLIBC_[0-9.]+/) {
      split(substr($0, RSTART + 6, RLENGTH - 6), v, "."); split(m, w, ".")
      if (v[1] + 0 > w[1] + 0 || (v[1] + 0 == w[1] + 0 && v[2] + 0 > w[2] + 0)) print }' | head -20
    fail=1
  else
    echo "ok: $b needs glibc $newest at most (limit $max)"
  fi
  out="$("$bin" --version 2>&1)" || { echo "FAIL: $b --version: $out"; fail=1; continue; }
  echo "ok: $out"
done
[[ $fail == 0 ]] && echo "PASS: release archive $(basename "$archive")"
exit $fail
