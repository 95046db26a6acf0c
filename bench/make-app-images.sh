#!/bin/bash
# Build the real-app images of bench/apps.py from Debian packages, into the Docker engine:
#   droot-bench/app-nginx     nginx-light serving a 1 KiB static page on :8080
#   droot-bench/app-nginx-filecache  the same with nginx's open_file_cache on, as tuned
#                             static servers run (no open(2) per request)
#   droot-bench/app-gunicorn  gunicorn (python3-gunicorn) serving a tiny WSGI app on :8080
# Each base root filesystem comes from debootstrap through make-debian-image.sh (cached
# under /var/tmp/droot-bench/ like the other benchmarks' roots), then one small layer adds
# the app's files (bench/app-images/NAME/). droot deploys what it exports from the same
# image, so every run of bench/apps.py uses the same bits.
#
# Usage: bench/make-app-images.sh        prints the two tags; idempotent (delete the
#                                        images, or the cached tar, to rebuild)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

build() {  # NAME BASE PACKAGES
    local name=$1 base=$2 packages=$3
    DROOT_BENCH_PACKAGES=$packages "$here/make-debian-image.sh" "droot-bench/$base-base:latest" >/dev/null
    if ! docker image inspect "droot-bench/app-$name:latest" >/dev/null 2>&1; then
        docker build -q -t "droot-bench/app-$name:latest" "$here/app-images/$name" >/dev/null
    fi
    echo "droot-bench/app-$name:latest"
}

build nginx nginx nginx-light
build nginx-filecache nginx nginx-light
build gunicorn gunicorn python3-gunicorn
