# The two commands of the README:
#   make run    build, then run the hub with an agent for this machine: http://127.0.0.1:5000
#   make test   build everything and run every test
CARGO ?= cargo
VENV  ?= target/venv-gpustat

.PHONY: run test test-rust test-gpustat test-deploy test-release test-history lint release bench-once bench-history

run:
	$(CARGO) build --release --workspace
	target/release/hmonitor-hub --listen $${HMON_HUB_LISTEN:-127.0.0.1:5000} --local-agent

# test-history is a subset of test-rust (for working on history alone), so `test` skips it.
test: test-rust test-gpustat test-deploy test-release
	@echo "all tests passed"

test-rust:
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

# History (issue 5): the store, the HTTP and gRPC APIs, the agent's backlog, an outage backfilled.
test-history:
	$(CARGO) build --workspace
	$(CARGO) test -p hmonitor-hub --lib history
	$(CARGO) test -p hmonitor-hub --test it history
	$(CARGO) test -p hmonitor-agent --lib backlog

# History store figures (BENCHMARKS.md, "History").
bench-history:
	$(CARGO) run --release -p hmonitor-hub --bin hmonitor-history-bench -- --dir target/history-bench

# An unmodified third-party NVML client (PyPI nvidia-ml-py + gpustat) on the NVML stand-in.
test-gpustat:
	$(CARGO) build -p hmonitor-nvml-stub
	GPUSTAT_VENV=$(VENV) bash agent/nvml-stub/tests/gpustat-compat.sh

# Deploy issue: the systemd units (systemd-analyze verify on the built binaries).
test-deploy:
	$(CARGO) build -p hmonitor-agent -p hmonitor-hub --bins
	bash systemd/tests/verify.sh $${CARGO_TARGET_DIR:-target}/debug

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The portable release archive (glibc >= 2.17): $(DIST)/hmonitor-VERSION-x86_64-linux-gnu.tar.gz.
# When the hub embeds the built page (frontend/dist), add the frontend build target as a
# prerequisite of `release` here.
DIST ?= $${CARGO_TARGET_DIR:-target}/dist
release:
	DIST_DIR=$(DIST) bash scripts/release.sh

# The archive's binaries need no glibc newer than 2.17 (objdump -T) and run (--version).
test-release: release
	bash scripts/check-release.sh $(DIST)/hmonitor-$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-x86_64-linux-gnu.tar.gz
