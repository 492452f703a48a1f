#!/usr/bin/env bash
# Builds the portable release archive: hmonitor and hmonitor-hub linked against glibc 2.17
# (cargo-zigbuild with zig from PyPI's `ziglang`), the systemd units, example configuration,
# README and LICENSE, as DIST_DIR/hmonitor-VERSION-x86_64-linux-gnu.tar.gz.
#
# Needs: python3 with venv. cargo-zigbuild and zig come from PyPI (`cargo-zigbuild`, `ziglang`:
# prebuilt, seconds to install, where `cargo install cargo-zigbuild` compiles for minutes) into
# target/venv-zig, unless both are already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC="${GLIBC:-2.17}"
TRIPLE=x86_64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-target}"
dist="${DIST_DIR:-$target_dir/dist}"
venv="${ZIG_VENV:-target/venv-zig}"

if ! command -v cargo-zigbuild >/dev/null || ! command -v zig >/dev/null; then
  if [[ ! -x "$venv/bin/cargo-zigbuild" ]] || ! "$venv/bin/python3" -c 'import ziglang' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q cargo-zigbuild ziglang
  fi
  # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH.
  export PATH="$PWD/$venv/bin:$PATH"
fi

# Only the two shipped binaries: a release build of the whole workspace (load generator, NVML
# stand-in, tests) would double the time.
cargo zigbuild --release --locked --target "$TRIPLE.$GLIBC" --bin hmonitor --bin hmonitor-hub

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
name="hmonitor-$version-x86_64-linux-gnu"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/bin" "$root/systemd" "$root/examples"
install -m 755 "$target_dir/$TRIPLE/release/hmonitor" "$target_dir/$TRIPLE/release/hmonitor-hub" "$root/bin/"
install -m 644 systemd/*.service "$root/systemd/"
install -m 644 systemd/agent.env.example systemd/hub.env.example hub/hub.example.toml "$root/examples/"
install -m 644 README.md LICENSE "$root/"
mkdir -p "$dist"
tar -C "$stage" -czf "$dist/$name.tar.gz" "$name"
echo "$dist/$name.tar.gz"
