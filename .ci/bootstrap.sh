#!/usr/bin/env bash
# Installs prefrun's build dependencies when missing (idempotent), then
# configures and builds BUILD_DIR (default: build). Sourced by the README's
# commands (examples/prefrun, tests/run.sh) and by CI.
#   BUILD_DIR=build-asan MESON_ARGS="-Db_sanitize=address,undefined" bash .ci/bootstrap.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
packages="build-essential pkg-config meson ninja-build liblua5.4-dev libopenblas-dev libyaml-dev
          libjansson-dev libcurl4-openssl-dev libutf8proc-dev libpcre2-dev python3 python3-torch
          libopenmpi-dev openmpi-bin"
missing=""
for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "prefrun: installing$missing" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >&2
fi
build="${BUILD_DIR:-build}"
cd "$root"
if [ ! -f "$build/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$build" ${MESON_ARGS:-} >&2
fi
ninja -C "$build" >&2
