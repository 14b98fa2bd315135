# One way to do each thing; the README and CI use these targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup demo test lint bench clips quantize fuzz docker-image docker-test

setup:
	scripts/setup.sh base

# The main job: set up, then run the demo (Ctrl-C stops it).
demo:
	scripts/setup.sh demo
	$(CARGO) run --release -- demo

# Every test: set up (with the test peers), lint, then the whole test suite.
test:
	scripts/setup.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	# A test whose peer (Chromium, node, ffmpeg, python3-yaml) is missing fails here.
	SHOPCUE_REQUIRE_PEERS=1 $(CARGO) test --all-targets -- --test-threads=2
	# Every fuzz target for a few seconds on its seeds (says loudly when there is no nightly).
	scripts/fuzz.sh smoke

# Coverage-guided fuzzing (fuzz/, docs/reliability.md): every target in turn for
# FUZZ_SECONDS, the corpus growing in fuzz/corpus/ (not committed). Needs a nightly toolchain.
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh campaign $(FUZZ_SECONDS)

# The benchmarks whose peers `scripts/setup.sh bench` installs, each printing its table
# beside its peer (there is no `bench all`); the longer ones (capacity, live-cues, glass,
# failover, soak, catalog-accuracy) are run by name: docs/BENCHMARKS.md has each command.
bench:
	scripts/setup.sh bench
	$(CARGO) build --release
	for b in manifest shots hls fanout catalog-speed; do target/release/shopcue bench $$b || exit 1; done

# Static int8 versions of the detector and the embedder (issue 14): models/*_int8.onnx,
# calibrated on the footage and the catalog images, their sha256 written to
# models/SHA256SUMS. About 3 minutes on 2 cores; skipped when they are up to date. Not part
# of test/demo: select them with inference.detector / inference.embedder (config/shopcue.toml).
quantize:
	scripts/setup.sh base
	python3 scripts/quantize.py

# The container image built here (docs/deploy.md): debootstrap + docker import base, the
# host's release binary, deploy/docker/Dockerfile.prebuilt. Starts dockerd when none runs.
docker-image:
	scripts/setup.sh base
	scripts/docker-image.sh build

# Builds the image, runs `shopcue demo` in it and checks that cues reach a WebSocket
# client (tests/docker.rs). Not part of `make test`: it installs docker.io and starts an engine.
docker-test:
	scripts/setup.sh test
	$(CARGO) test --test docker -- --ignored --nocapture
