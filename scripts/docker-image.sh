#!/usr/bin/env bash
# Builds shopcue's container image here, with no registry and no internet inside the
# build (docs/deploy.md, "Build the image on this machine"):
#   1. Debian's docker.io and debootstrap, installed when missing;
#   2. a Docker engine, started when none answers: `dockerd --bridge=none
#      --iptables=false` (containers then run with `--network host`); stopped again by
#      `scripts/docker-image.sh stop-engine`;
#   3. the base image `shopcue-base:bookworm`, made once: debootstrap of Debian 12 minbase
#      with the runtime packages, then `docker import`;
#   4. `cargo build --release` on this host (Debian 12, so the binary fits the base);
#   5. `docker build -f deploy/docker/Dockerfile.prebuilt -t shopcue:local`.
# Idempotent: each step checks whether it is already done. Prints the image id.
#
# Usage: scripts/docker-image.sh [build|stop-engine]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
work=${SHOPCUE_DOCKER_WORK:-/var/tmp/shopcue-docker}
base=shopcue-base:bookworm
image=${SHOPCUE_IMAGE:-shopcue:local}
ORT_VERSION=$(sed -n 's/^ORT_VERSION=//p' scripts/setup.sh)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The runtime stage of deploy/docker/Dockerfile installs the same packages.
runtime_packages=ca-certificates,curl,libssl3,libstdc++6,libgomp1,libopenblas0-pthread,libgstreamer1.0-0,gstreamer1.0-plugins-base,gstreamer1.0-plugins-good,gstreamer1.0-plugins-bad,gstreamer1.0-plugins-ugly,gstreamer1.0-libav

log() { printf '[docker-image] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
docker_() { as_root docker "$@"; }

engine_answers() { docker_ info >/dev/null 2>&1; }

start_engine() {
  engine_answers && return 0
  log "starting dockerd (--bridge=none --iptables=false; containers use --network host)"
  mkdir -p "$work"
  as_root sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false \
    --pidfile '$work/dockerd.pid' >'$work/dockerd.log' 2>&1 &"
  for _ in $(seq 100); do engine_answers && return 0; sleep 0.2; done
  echo "[docker-image] dockerd did not answer; its log: $work/dockerd.log" >&2
  tail -20 "$work/dockerd.log" >&2
  exit 1
}

stop_engine() {
  [ -f "$work/dockerd.pid" ] || { log "no dockerd started by this script"; return 0; }
  as_root kill "$(cat "$work/dockerd.pid")" 2>/dev/null || true
  log "dockerd stopped"
}

install_tools() {
  local missing=()
  for p in docker.io debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

base_image() {
  docker_ image inspect "$base" >/dev/null 2>&1 && return 0
  local rootfs="$work/rootfs"
  if [ ! -f "$rootfs/.complete" ]; then
    # debootstrap's own resolver does not follow virtual packages (dbus-session-bus, which
    # GStreamer's plugins pull in), so the runtime packages come from apt in the chroot.
    log "debootstrap: Debian 12 minbase, then the runtime packages with apt (a few minutes)"
    as_root rm -rf "$rootfs"
    as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log"
    as_root chroot "$rootfs" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root chroot "$rootfs" apt-get install -y -qq \
      --no-install-recommends ${runtime_packages//,/ } >>"$work/debootstrap.log"
    as_root touch "$rootfs/.complete"
  fi
  log "docker import -> $base"
  as_root rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
  as_root tar -C "$rootfs" --exclude=./.complete -c . | docker_ import - "$base" >/dev/null
}

stage_context() {
  local ctx="$work/context"
  rm -rf "$ctx" && mkdir -p "$ctx/lib"
  cp target/release/shopcue "$ctx/shopcue" && strip "$ctx/shopcue"
  cp /usr/local/lib/libfaiss.so /usr/local/lib/libfaiss_c.so "/usr/local/lib/libonnxruntime.so.$ORT_VERSION" "$ctx/lib/"
  cp -r config pipelines "$ctx/"
  cp deploy/docker/Dockerfile.prebuilt "$ctx/Dockerfile"
  echo "$ctx"
}

build() {
  install_tools
  mkdir -p "$work"
  start_engine
  base_image
  scripts/setup.sh base
  log "cargo build --release"
  cargo build --release --locked --bin shopcue
  local ctx
  ctx=$(stage_context)
  log "docker build -> $image"
  docker_ build --network host --build-arg "ORT_VERSION=$ORT_VERSION" -t "$image" "$ctx" >"$work/build.log" \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  docker_ image inspect -f '{{.Id}}' "$image"
}

case "${1:-build}" in
  build) build ;;
  stop-engine) stop_engine ;;
  *) echo "usage: $0 [build|stop-engine]" >&2; exit 2 ;;
esac
