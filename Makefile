# One way to do each thing; the README and CI use these targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup demo test lint bench clips

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

bench:
	scripts/setup.sh bench
	$(CARGO) run --release -- bench all
