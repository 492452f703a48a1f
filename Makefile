# The two commands of the README:
#   make run    build, then run the hub with an agent for this machine: http://127.0.0.1:5000
#   make test   build everything and run every test
CARGO ?= cargo
VENV  ?= target/venv-gpustat

.PHONY: run test test-rust test-gpustat test-deploy test-release test-history test-page frontend lint release bench-once bench-history

run: frontend
	$(CARGO) build --release -p hmonitor-hub -p hmonitor-agent
	target/release/hmonitor-hub --listen $${HMON_HUB_LISTEN:-127.0.0.1:5000} --local-agent

# test-history is a subset of test-rust (for working on history alone), so `test` skips it.
# frontend first: the hub embeds the page, so building it once with the page saves a rebuild.
test: frontend test-rust test-gpustat test-page test-deploy test-release
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
	$(CARGO) run --release -p hmonitor-bench --bin hmonitor-history-bench -- --dir target/history-bench

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

# The portable release archive (glibc >= 2.17): $(DIST)/hmonitor-VERSION-x86_64-linux-gnu.tar.gz,
# with the page embedded in the hub.
DIST ?= $${CARGO_TARGET_DIR:-target}/dist
release: frontend
	DIST_DIR=$(DIST) bash scripts/release.sh

# The archive's binaries need no glibc newer than 2.17 (objdump -T) and run (--version).
test-release: release
	bash scripts/check-release.sh $(DIST)/hmonitor-$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-x86_64-linux-gnu.tar.gz

# The live page (frontend/): npm ci when the lock file changed, then the Vite build into
# frontend/dist, which the hub embeds (hub/src/assets.rs).
frontend: frontend/node_modules/.package-lock.json
	cd frontend && npm run build

frontend/node_modules/.package-lock.json: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

# The live page in Debian's Chromium against a real hub and real agents on the NVML stand-in.
test-page: frontend
	$(CARGO) build -p hmonitor-hub -p hmonitor-agent -p hmonitor-nvml-stub -p hmonitor-bench
	cd frontend && npm test
