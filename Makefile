# The two commands of the README:
#   make run    build and run hmonitor on this machine
#   make test   build everything and run every test
CARGO ?= cargo
VENV  ?= target/venv-gpustat

.PHONY: run test test-rust test-gpustat lint release bench-once

run:
	$(CARGO) build --release --workspace
	GOHM_ADDR=$${GOHM_ADDR:-127.0.0.1:9203} GOHM_ALLOW=$${GOHM_ALLOW:-127.0.0.1/8} target/release/hmonitor

test: test-rust test-gpustat
	@echo "all tests passed"

test-rust:
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

# An unmodified third-party NVML client (PyPI nvidia-ml-py + gpustat) on the NVML stand-in.
test-gpustat:
	$(CARGO) build -p hmonitor-nvml-stub
	GPUSTAT_VENV=$(VENV) bash agent/nvml-stub/tests/gpustat-compat.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

release:
	$(CARGO) build --release --workspace
