#!/usr/bin/env bash
# Build the container image without a Docker engine or a registry, run it the way Kubernetes
# does (read-only root, no capabilities, non-root), and check it serves /-/healthy, /-/ready
# and /metrics. Then stop it and remove what it made.
#
#   bash deploy/build-image.sh            (as root, on Debian, from anywhere in the repository)
#
# About 3 minutes here, most of it debootstrap; under a minute with the base cached.
#
# Needs: apt-get install -y podman buildah debootstrap runc (the script installs them if
# missing), python3 with pip, and access to Debian's and PyPI's package mirrors as configured on
# the host. No registry: the base image is bootstrapped from Debian bookworm's packages
# (python3 3.11, as python:3.11-slim has), and the Python wheels are built on the host and
# handed to the build as a volume, so pip inside the build needs no network.
#
# Environment: VANTAGE_IMAGE (default localhost/vantage-exporter:ci),
#              VANTAGE_BASE_CACHE (default /tmp/vantage-base-bookworm.tar): the bootstrapped
#                base is kept there and reused for a week, which saves most of the time,
#              VANTAGE_KEEP_IMAGE=1 keeps the storage directory (images) for inspection.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${VANTAGE_IMAGE:-localhost/vantage-exporter:ci}
W=$(mktemp -d /tmp/vantage-image.XXXXXX)
CONTAINER=vantage-image-test-$$
BASE_CACHE=${VANTAGE_BASE_CACHE:-/tmp/vantage-base-bookworm.tar}
started=0

log() { printf 'build-image: %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    if [ "$started" = 1 ]; then
        podman logs "$CONTAINER" > "$W/container.log" 2>&1 || true
        podman rm --force --time 10 "$CONTAINER" > /dev/null 2>&1 || true
    fi
    if [ "$rc" != 0 ] && [ -s "$W/container.log" ]; then
        log "container log:"; tail -n 40 "$W/container.log" >&2
    fi
    if [ "${VANTAGE_KEEP_IMAGE:-0}" = 1 ]; then
        log "kept $W (CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf)"
    else
        # Storage holds overlay mounts: let podman unmount them before removing the tree.
        podman system reset --force > /dev/null 2>&1 || true
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT

need=()
for tool in podman buildah debootstrap runc; do
    command -v "$tool" > /dev/null || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc > /dev/null
fi

# Private storage and config: nothing of the host's podman setup is used or changed.
# crun fails on this kind of machine (hybrid cgroups, rlimits): use runc with explicit ulimits.
printf '[storage]\ndriver="overlay"\ngraphroot="%s/storage"\nrunroot="%s/run"\n' "$W" "$W" > "$W/storage.conf"
printf '[containers]\ndefault_ulimits=["nofile=20000:20000","nproc=32768:32768"]\n[engine]\nruntime="runc"\n' > "$W/containers.conf"
export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf

SECONDS=0
log "wheels for the project and its dependencies (on the host)"
python3 -m pip wheel --quiet --wheel-dir "$W/wheels" "$ROOT" hatchling > "$W/pip.log" 2>&1 \
    || { tail -n 20 "$W/pip.log" >&2; exit 1; }

if [ -n "$(find "$BASE_CACHE" -mtime -7 2>/dev/null)" ]; then
    log "base image from $BASE_CACHE"
else
    log "base image from Debian bookworm packages (debootstrap)"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$W/rootfs" ${mirror:+"$mirror"} > "$W/debootstrap.log" 2>&1 \
        || { tail -n 20 "$W/debootstrap.log" >&2; exit 1; }
    rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/*
    tar -C "$W/rootfs" -cf "$BASE_CACHE.part" . && mv "$BASE_CACHE.part" "$BASE_CACHE"
    rm -rf "$W/rootfs"
fi
podman import --quiet "$BASE_CACHE" localhost/vantage-base:bookworm > /dev/null
log "base ready after ${SECONDS}s"

log "podman build (docker format, so HEALTHCHECK is kept)"
podman build --quiet --format docker --network=host \
    --build-arg BASE=localhost/vantage-base:bookworm \
    --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
    -v "$W/wheels:/wheels:ro" \
    -t "$IMAGE" -f "$ROOT/deploy/Dockerfile" "$ROOT" > "$W/image-id"
log "built $IMAGE after ${SECONDS}s"

user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = "10001:10001" ] || { log "image user is '$user', want 10001:10001"; exit 1; }
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q '/-/healthy' \
    || { log "image has no HEALTHCHECK"; exit 1; }

# As Kubernetes runs it: read-only root, /tmp a tmpfs, no capabilities, no privilege gain, the
# image's default command and config. Its own network namespace with loopback only: no port
# clash with the host, no iptables rules left behind; the checks run inside it with podman
# exec (the image has python, not curl). Podman's healthcheck timers need systemd, which is
# not here: they are off, and the image's HEALTHCHECK command is run by hand below.
log "run: read-only, no capabilities, network none"
podman run -d --name "$CONTAINER" --network=none --read-only --tmpfs /tmp \
    --cap-drop=ALL --security-opt no-new-privileges --no-healthcheck \
    "$IMAGE" > /dev/null
started=1

get() {
    podman exec "$CONTAINER" python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9469" + sys.argv[1], timeout=3).read().decode())' "$1"
}

ok=0
for _ in $(seq 50); do
    if get /-/ready > /dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
done
[ "$ok" = 1 ] || { log "not ready after 10s"; exit 1; }
get /-/healthy > /dev/null
readarray -d '' healthcheck < <(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE" \
    | python3 -c 'import json, sys; test = json.load(sys.stdin); assert test[0] == "CMD"; sys.stdout.write("\0".join(test[1:]) + "\0")')
podman exec "$CONTAINER" "${healthcheck[@]}" || { log "HEALTHCHECK command failed"; exit 1; }
# The default config probes the exporter itself; its first run lands within one interval (15s).
ok=0
for _ in $(seq 40); do
    get /metrics > "$W/metrics.txt"
    if grep -q '^vantage_probes_total{.*outcome="success".*} [1-9]' "$W/metrics.txt"; then ok=1; break; fi
    sleep 0.5
done
[ "$ok" = 1 ] || { log "no successful probe in /metrics after 20s"; grep '^vantage_probe' "$W/metrics.txt" >&2; exit 1; }
grep -q '^vantage_build_info{' "$W/metrics.txt" || { log "/metrics has no vantage_build_info"; exit 1; }
uid=$(podman top "$CONTAINER" user | awk 'NR==2 {print $1}')
[ "$uid" = 10001 ] || { log "process runs as '$uid', want 10001"; exit 1; }

# SIGTERM must end it cleanly (exit 0) within the grace period.
podman stop --time 15 "$CONTAINER" > /dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || { log "exit code after SIGTERM: $code, want 0"; exit 1; }

log "OK: image $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes) built and ran read-only as 10001: /-/healthy, /-/ready, HEALTHCHECK ok, a successful self-probe in /metrics, exit 0 on SIGTERM, ${SECONDS}s"
