# The two commands of the README:
#   make run    build, then run the hub with an agent for this machine: http://127.0.0.1:5000
#   make test   build everything and run every test
CARGO ?= cargo
VENV  ?= target/venv-gpustat

.PHONY: run test test-rust test-gpustat test-history lint release bench-once bench-history

run:
	$(CARGO) build --release --workspace
	target/release/hmonitor-hub --listen $${HMON_HUB_LISTEN:-127.0.0.1:5000} --local-agent

test: test-rust test-gpustat test-history
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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

release:
	$(CARGO) build --release --workspace
