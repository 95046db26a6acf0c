#!/bin/bash
# Install what droot, its tests and its benchmarks need on a fresh Debian machine
# (as root), and the project itself into ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# docker.io: build test images, the `NAME[:TAG]` source; docker-registry: the `docker://`
# source; busybox-static: test images without internet; rsync: --mode rsync; runit:
# a real supervisor for the run tests; libserver-starter-perl (start_server) and systemd
# (systemd-socket-activate, systemd-analyze verify; neither needs systemd as PID 1): the
# socket-passing supervisors and unit checks of the run, unit, restart and zero-downtime
# tests; openssh-client: ssh-keygen signs and verifies releases; strace: a test counts the
# files a pull opens; gcc, libc6-dev: the tests compile their attack programs and test app
# static; the rest are the peers and tools of bench/ (wrk: the load of bench/apps.py;
# python3-matplotlib: its pictures, never a dependency of droot itself).
PACKAGES=(docker.io docker-registry busybox-static rsync zstd pigz libarchive-tools runit
          libserver-starter-perl systemd iproute2 gcc libc6-dev bubblewrap runc crun
          systemd-container hyperfine debootstrap openssh-client strace wrk python3-matplotlib)

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
