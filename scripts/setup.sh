#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine: system packages, FAISS (C API,
# shared), the ONNX Runtime library from its PyPI wheel, redis-server, and the models and
# footage copied from ../shared. Each step checks whether it is already done.
#
# Usage: scripts/setup.sh [base|test|bench|demo]   (all install the same core; test and
# bench add the peers the tests and benchmarks compare against; test adds Chromium and
# web/node_modules for the browser tests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
what=${1:-base}
shared=${SHOPCUE_SHARED:-$here/../shared}
prefix=/usr/local
ORT_VERSION=1.31.1
FAISS_SYS_VERSION=0.7.0

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=(
  pkg-config cmake g++ libopenblas-dev libssl-dev unzip python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  redis-server ffmpeg
)
case "$what" in
  # The HTTP load generator and the static-file peer of `shopcue bench hls`.
  bench) apt_packages+=(nginx-light wrk) ;;
  # Headless Chromium for the browser tests (tests/web.rs, tests/dashboard.rs).
  test) apt_packages+=(chromium) ;;
esac

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# FAISS 1.12 with its C API as a shared library, from the source faiss-sys vendors.
if [ ! -f "$prefix/lib/libfaiss_c.so" ]; then
  log "FAISS: building the C API library (about 3 minutes)"
  cargo fetch --manifest-path "$here/Cargo.toml" >/dev/null
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/faiss-sys-$FAISS_SYS_VERSION/faiss | head -1)
  build=$(mktemp -d)
  # The generic library, compiled for this machine's vector units (faiss_c links it).
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFAISS_ENABLE_C_API=ON \
    -DBUILD_SHARED_LIBS=ON -DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF \
    -DBUILD_TESTING=OFF -DFAISS_OPT_LEVEL=generic -DCMAKE_CXX_FLAGS="-march=native" >/dev/null
  cmake --build "$build" -j"$(nproc)" --target faiss_c >/dev/null
  as_root install -m 0755 "$build"/faiss/libfaiss.so "$build"/c_api/libfaiss_c.so "$prefix/lib/"
  as_root ldconfig
  rm -rf "$build"
fi

# ONNX Runtime: the shared library out of the PyPI wheel (no other download source).
if [ ! -f "$prefix/lib/libonnxruntime.so.$ORT_VERSION" ]; then
  log "ONNX Runtime $ORT_VERSION: unpacking the library from the PyPI wheel"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: "onnxruntime==$ORT_VERSION" -d "$tmp"
  unzip -q -j -o "$tmp"/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$tmp"
  as_root install -m 0644 "$tmp/libonnxruntime.so.$ORT_VERSION" "$prefix/lib/"
  as_root ln -sf "libonnxruntime.so.$ORT_VERSION" "$prefix/lib/libonnxruntime.so"
  as_root ldconfig
  rm -rf "$tmp"
fi

# Models and footage: copied from ../shared, checksums verified (models/SHA256SUMS).
if [ -d "$shared/models" ]; then
  for f in "$shared"/models/*.onnx "$shared"/models/coco_classes.txt; do
    [ -f "models/$(basename "$f")" ] || cp "$f" models/
  done
  # The *_int8.onnx lines are for the models `make quantize` makes (scripts/quantize.py
  # checks those); setup checks the copied ones.
  (cd models && grep -v '_int8\.onnx$' SHA256SUMS | sha256sum --quiet -c -) || { echo "[setup] model checksum mismatch (models/SHA256SUMS)" >&2; exit 1; }
else
  log "no $shared/models: models must be placed in models/ by hand"
fi
if [ -d "$shared/data" ]; then
  mkdir -p data
  for d in footage grocery abo; do
    [ -e "data/$d" ] || cp -r "$shared/data/$d" "data/$d"
  done
fi

case "$what" in
  test|bench)
    # An independent SCTE-35 decoder, to check the SCTE35-CMD payloads we write.
    python3 -c "import threefive" 2>/dev/null || python3 -m pip install -q "threefive==3.1.5"
    # YAML syntax of deploy/ (tests/deploy.rs).
    python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q "PyYAML==6.0.2"
    ;;
esac
case "$what" in
  test)
    # hls.js and playwright-core, pinned by web/package-lock.json. playwright-core drives
    # Debian's /usr/bin/chromium and never downloads a browser.
    if ! command -v npm >/dev/null; then
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    if [ ! -f web/node_modules/.package-lock.json ] || ! cmp -s web/package-lock.json web/node_modules/.shopcue-installed-lock; then
      log "npm: installing web/ (hls.js, playwright-core)"
      PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix web --silent --no-audit --no-fund
      cp web/package-lock.json web/node_modules/.shopcue-installed-lock
    fi
    ;;
esac
case "$what" in
  bench)
    # PySceneDetect, the peer of `shopcue bench shots`.
    python3 -c "import scenedetect" 2>/dev/null || python3 -m pip install -q "scenedetect-headless==0.7.2"
    # The Node.js `ws` server that `shopcue bench fanout` compares against.
    if [ -f bench/node-ws/package.json ] && [ ! -d bench/node-ws/node_modules/ws ]; then (cd bench/node-ws && npm ci --silent --no-audit --no-fund); fi
    ;;
esac
log "ready ($what)"
