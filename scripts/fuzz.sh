#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and encoders (fuzz/, cargo fuzz + libFuzzer).
#
# Usage: scripts/fuzz.sh smoke [seconds]      every target for a few seconds (default 5) on
#                                             its seeds; part of `make test`
#        scripts/fuzz.sh campaign [seconds]   every target in turn for `seconds` (default
#                                             600), corpus kept in fuzz/corpus/<target>
#        scripts/fuzz.sh list                 the targets
# FUZZ_TARGETS="a b" limits a run to those targets. Needs a nightly toolchain (libFuzzer's
# instrumentation); without one it says so loudly and exits 0. cargo-fuzz is installed
# (pinned, from crates.io) when missing.
#
# Built with `--sanitizer none --debug-assertions`: the code under test is safe Rust, so
# AddressSanitizer finds nothing a panic would not, and the build without it is quicker
# and runs faster on small machines; debug assertions turn integer overflow into a panic.
# Campaigns run one target at a time, under `nice -n 19`, one job each.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/fuzz"
mode=${1:-smoke}
CARGO_FUZZ_VERSION=0.13.1
BUILD_FLAGS=(--sanitizer none --debug-assertions)
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

log() { printf '[fuzz] %s\n' "$*"; }

targets() {
  if [ -n "${FUZZ_TARGETS:-}" ]; then
    echo "$FUZZ_TARGETS" | tr ' ' '\n'
  else
    sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' Cargo.toml | grep -v '^shopcue-fuzz$'
  fi
}

if [ "$mode" = list ]; then
  targets
  exit 0
fi

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "################################################################################"
  echo "FUZZ ${mode^^} SKIPPED: no nightly toolchain (rustup toolchain list shows none)"
  echo "################################################################################"
  exit 0
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

start=$(date +%s)
log "building the targets (nightly, ${BUILD_FLAGS[*]})"
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
log "built in $(( $(date +%s) - start )) s"
bin_dir="$here/fuzz/target/$TRIPLE/release"

case "$mode" in
  smoke)
    secs=${2:-5}
    failed=()
    for t in $(targets); do
      corpus=$(mktemp -d)
      mkdir -p "artifacts/$t"
      if "$bin_dir/$t" -seed=1 -runs=100000 -max_total_time="$secs" -print_final_stats=1 \
          -artifact_prefix="artifacts/$t/" "$corpus" "seeds/$t" >"$corpus.log" 2>&1; then
        log "$t: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$corpus.log" | grep -o '[0-9]*$') runs, ok"
      else
        tail -40 "$corpus.log"
        log "$t: FAILED (input in fuzz/artifacts/$t/)"
        failed+=("$t")
      fi
      rm -rf "$corpus" "$corpus.log"
    done
    log "smoke done in $(( $(date +%s) - start )) s"
    if [ ${#failed[@]} -gt 0 ]; then
      log "FAILED: ${failed[*]}"
      exit 1
    fi
    ;;
  campaign)
    secs=${2:-600}
    mkdir -p logs
    for t in $(targets); do
      mkdir -p "corpus/$t" "artifacts/$t"
      log "$t: ${secs} s (log: fuzz/logs/$t.log)"
      # -jobs=1 runs one worker whose output goes to fuzz-0.log in the current directory.
      work=$(mktemp -d)
      ( cd "$work" && nice -n 19 "$bin_dir/$t" -jobs=1 -max_total_time="$secs" \
          -print_final_stats=1 -artifact_prefix="$here/fuzz/artifacts/$t/" \
          "$here/fuzz/corpus/$t" "$here/fuzz/seeds/$t" ) || true
      cat "$work"/fuzz-*.log > "logs/$t.log" 2>/dev/null || true
      rm -rf "$work"
      grep -E '^#[0-9]+ +DONE|stat::|Test unit written|panicked' "logs/$t.log" | sed "s/^/[$t] /" || true
    done
    ;;
  *)
    echo "usage: $0 smoke|campaign|list [seconds]" >&2
    exit 2
    ;;
esac
