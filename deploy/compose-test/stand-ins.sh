#!/usr/bin/env bash
# Builds the local stand-ins of the images the compose file names, for an engine that reaches no
# image registry: `deploy/compose-test/stand-ins.sh [--rebuild]`. Each image is built only when
# missing (or every one with --rebuild), and kept by the engine for the next run.
#
#   local/debian:bookworm             Debian 12 (debootstrap minbase from the machine's mirror):
#                                     the runtime base of the project's image
#   local/rust:1.95.0-bookworm        that base, gcc, and this machine's Rust 1.95.0 toolchain:
#                                     the builder base of the project's image
#   local/rabbitmq:3.10-management    Debian's RabbitMQ 3.10   (compose pins rabbitmq:4.1.4-management)
#   local/postgres:15                 Debian's PostgreSQL 15   (compose pins postgres:16.10)
#   local/redis:7.0                   Debian's Redis 7.0       (compose pins redis:7.4.6)
#
# The versions are Debian 12's, not the pinned ones: the test proves the compose file, the
# project's Dockerfile and the services, not those exact server releases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

rebuild=false
[[ "${1:-}" == --rebuild ]] && rebuild=true

missing() { $rebuild || ! docker image inspect "$1" >/dev/null 2>&1; }
# The engine's own builder (no BuildKit, which would look for its frontend in a registry); its
# output only when it fails.
build() {
    DOCKER_BUILDKIT=0 docker build --network host "$@" >"$scratch/build.log" 2>&1 \
        || { tail -40 "$scratch/build.log" >&2; exit 1; }
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if missing local/debian:bookworm; then
    echo "stand-ins: local/debian:bookworm (debootstrap)"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    debootstrap --variant=minbase bookworm "$scratch/rootfs" "$mirror" >"$scratch/debootstrap.log" 2>&1 \
        || { tail -20 "$scratch/debootstrap.log" >&2; exit 1; }
    security=${mirror%/debian}/debian-security
    cat >"$scratch/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
    # Packages' maintainer scripts start no service inside an image.
    printf '#!/bin/sh\nexit 101\n' >"$scratch/rootfs/usr/sbin/policy-rc.d"
    chmod +x "$scratch/rootfs/usr/sbin/policy-rc.d"
    rm -rf "$scratch"/rootfs/var/cache/apt/archives/*.deb "$scratch"/rootfs/var/lib/apt/lists/*
    tar -C "$scratch/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - local/debian:bookworm >/dev/null
    rm -rf "$scratch/rootfs"
fi

if missing local/rust:1.95.0-bookworm; then
    echo "stand-ins: local/rust:1.95.0-bookworm (this machine's toolchain)"
    toolchain=${RUSTUP_HOME:-$HOME/.rustup}/toolchains/1.95.0-x86_64-unknown-linux-gnu
    if [[ ! -x "$toolchain/bin/cargo" ]]; then
        rustup toolchain install 1.95.0 --profile minimal
    fi
    mkdir "$scratch/rust"
    cp "$here/rust/Dockerfile" "$scratch/rust/"
    cp /etc/ssl/certs/ca-certificates.crt "$scratch/rust/"
    cp -a "$(readlink -f "$toolchain")" "$scratch/rust/toolchain"
    rm -rf "$scratch/rust/toolchain/share/doc"
    build -t local/rust:1.95.0-bookworm "$scratch/rust"
    rm -rf "$scratch/rust"
fi

for service in rabbitmq:3.10-management postgres:15 redis:7.0; do
    name=${service%%:*}
    if missing "local/$service"; then
        echo "stand-ins: local/$service (Debian's package)"
        build -t "local/$service" "$here/$name"
    fi
done
