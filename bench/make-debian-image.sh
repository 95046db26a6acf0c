#!/bin/bash
# Build a large, realistic test image for the benchmarks: a Debian root filesystem
# (debootstrap --variant=minbase plus python3, perl, git and a few more packages, from the
# Debian mirror this machine's apt uses: about 500 MB and 20,000 entries), imported into
# the Docker engine as one layer.
#
# Usage: bench/make-debian-image.sh [TAG]        (default TAG: droot-bench/debian:latest)
#   Prints the tag on stdout when done. Idempotent: the root filesystem is cached as
#   /var/tmp/droot-bench/debian-rootfs-SUITE-HASH.tar (built once per suite and package
#   list; delete it to rebuild), and the
#   image is only imported when the engine does not have TAG yet.
#   Env: DROOT_BENCH_CACHE (cache dir), DROOT_BENCH_SUITE (default bookworm),
#        DROOT_BENCH_MIRROR (default: the first deb URI of /etc/apt's sources),
#        DROOT_BENCH_PACKAGES (comma-separated extra packages).
set -euo pipefail

tag=${1:-droot-bench/debian:latest}
cache=${DROOT_BENCH_CACHE:-/var/tmp/droot-bench}
suite=${DROOT_BENCH_SUITE:-bookworm}
packages=${DROOT_BENCH_PACKAGES:-python3,python3-pip,perl,perl-doc,git,openssh-client,curl,locales,iproute2,vim-tiny,less,manpages,manpages-dev}
rootfs_tar=$cache/debian-rootfs-$suite-$(echo "$packages" | md5sum | cut -c1-8).tar

mirror() {
    if [ -n "${DROOT_BENCH_MIRROR:-}" ]; then echo "$DROOT_BENCH_MIRROR"; return; fi
    # deb822 sources (URIs: …) first, then the one-line format (deb URI suite …).
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
          awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/) {print $i; break}}'
    } | grep -v -- '-security' | head -n 1 || true
}

mkdir -p "$cache"
if [ ! -s "$rootfs_tar" ]; then
    url=$(mirror)
    [ -n "$url" ] || { echo "make-debian-image: no Debian mirror found in /etc/apt" >&2; exit 1; }
    work=$(mktemp -d "$cache/debootstrap.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "make-debian-image: debootstrap $suite from $url (a few minutes)" >&2
    debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$url" >&2
    # Pack it once so the engine import is repeatable without debootstrap again.
    tar --numeric-owner --xattrs -C "$work/root" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$work"
    trap - EXIT
fi

if ! docker image inspect "$tag" >/dev/null 2>&1; then
    echo "make-debian-image: docker import as $tag" >&2
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' "$rootfs_tar" "$tag" >/dev/null
fi
echo "$tag"
