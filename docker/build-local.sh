#!/usr/bin/env bash
# Build posteval's images on a machine that cannot pull from an image registry (CI, air-gapped hosts):
#   1. a Debian base from Debian's own packages (debootstrap, then `docker import`), built once;
#   2. PostgreSQL on that base (docker/postgres), for compose's POSTGRES_IMAGE;
#   3. the posteval image from docker/Dockerfile on that base, with this machine's pip settings
#      (CA bundle, a folder of wheels such as the torch CPU wheel) passed as BuildKit secrets only.
# Usage (as root, from anywhere):  docker/build-local.sh [cpu|cuda]
# Then: POSTEVAL_BASE_IMAGE=... POSTGRES_IMAGE=... docker compose -f docker/compose.yaml up -d --no-build
# Settings (environment): POSTEVAL_BASE_IMAGE (posteval-base:bookworm), POSTGRES_IMAGE
# (posteval-postgres:bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian), PIP_BUILD_CA
# (/etc/ssl/certs/ca-certificates.crt), PIP_BUILD_WHEELS (/opt/wheels), PIP_BUILD_INDEX_URL
# (https://pypi.org/simple; with a wheel folder, also where torch's dependencies come from), DOCKER (a BuildKit-capable
# docker CLI; found on PATH when unset).
set -euo pipefail
variant=${1:-cpu}
case "$variant" in cpu | cuda) ;; *) echo "usage: $0 [cpu|cuda]" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
base=${POSTEVAL_BASE_IMAGE:-posteval-base:bookworm}
postgres=${POSTGRES_IMAGE:-posteval-postgres:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca=${PIP_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
wheels=${PIP_BUILD_WHEELS:-/opt/wheels}
index=${PIP_BUILD_INDEX_URL:-https://pypi.org/simple}
export DOCKER_BUILDKIT=1

# A docker CLI whose `build` has BuildKit (--secret): buildx, or a 20.10-style built-in one. A newer CLI
# without the buildx plugin only has the legacy builder, so look further along PATH.
find_docker() {
  local candidate
  for candidate in ${DOCKER:-} $(type -ap docker); do
    if "$candidate" build --help 2>/dev/null | grep -q -- '--secret'; then
      echo "$candidate"
      return 0
    fi
  done
  echo "no docker CLI with BuildKit (--secret) on PATH; install buildx or Debian's docker.io" >&2
  return 1
}
docker=$(find_docker)

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  echo "== base image $base (debootstrap, about a minute)"
  rootfs=$(mktemp -d /var/tmp/posteval-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$docker" import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
fi

echo "== $postgres"
"$docker" build --quiet --network host --build-arg BASE_IMAGE="$base" -t "$postgres" "$root/docker/postgres" >/dev/null

echo "== posteval:$variant"
secrets=$(mktemp -d)
wheel_server=""
cleanup() {
  [ -n "$wheel_server" ] && kill "$wheel_server" 2>/dev/null || true
  rm -rf "$secrets"
}
trap cleanup EXIT
{
  echo "[global]"
  echo "cert = /run/secrets/ca-bundle"
  echo "index-url = $index"
} >"$secrets/pip.conf"
if [ -d "$wheels" ]; then
  # the wheel folder is served to the build over the host network for the duration of the build
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  wheel_server=$!
  for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.1; done
  echo "find-links = http://127.0.0.1:$port/" >>"$secrets/pip.conf"
  # the CPU torch wheel is in that folder; its dependencies come from the index
  torch_index=(--build-arg TORCH_CPU_INDEX_URL="$index")
else
  torch_index=()  # PyTorch's CPU index, the Dockerfile's default
fi
"$docker" build --network host \
  --secret id=pip.conf,src="$secrets/pip.conf" --secret id=ca-bundle,src="$ca" \
  --build-arg BASE_IMAGE="$base" --build-arg TORCH_VARIANT="$variant" "${torch_index[@]}" \
  -f "$root/docker/Dockerfile" -t "posteval:$variant" "$root"
