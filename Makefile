# The README's commands. `make` alone lists them.
SHELL := /usr/bin/env bash
CRD_YAML := charts/tollgate/crds/tollgate.dev.yaml

.PHONY: help demo demo-cluster test crds lint bench fuzz

help:
	@echo "make demo   build and start Tollgate with the YourWeather example, walk through it (scripts/demo.sh)"
	@echo "make demo-cluster  the same on a local kube-apiserver with the operator: kubectl apply, suspend, rotate (scripts/demo-cluster.sh)"
	@echo "make test   everything CI runs: fmt, clippy, all tests, the demo as a smoke test (scripts/test.sh)"
	@echo "make crds   regenerate $(CRD_YAML) from the Rust types"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make fuzz   each cargo-fuzz target for FUZZ_SECONDS (default 60), nightly (scripts/fuzz.sh)"
	@echo "make bench  backend, nginx and HAProxy (plain and same policy), tollgate-proxy under the same load (bench/run.sh)"

demo:
	scripts/demo.sh

demo-cluster:
	scripts/demo-cluster.sh

test:
	scripts/test.sh

# Written to a temporary file first so a failed run never leaves a truncated CRD file.
crds:
	@mkdir -p $(dir $(CRD_YAML))
	cargo run -q -p tollgate-crds --bin crdgen > $(CRD_YAML).tmp
	mv $(CRD_YAML).tmp $(CRD_YAML)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	bench/run.sh

FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh
