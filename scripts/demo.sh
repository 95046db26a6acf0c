#!/bin/bash
# droot's main job end to end, on a local default that needs no cloud account:
# build an app image with Docker, push it to a local store, pull it into a
# directory (an atomic release), and run the image's own command there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/start-dockerd.sh
droot=.venv/bin/droot
work=${DROOT_DEMO_DIR:-/var/tmp/droot-demo}
mkdir -p "$work/store"

# 1. Build: a small app image FROM scratch on Debian's static busybox (no registry needed).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/bin" "$context/rootfs/etc" "$context/rootfs/app"
cp /bin/busybox "$context/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$context/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n' >"$context/rootfs/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$context/rootfs/etc/group"
cat >"$context/rootfs/app/hello" <<'APP'
#!/bin/sh
echo "$GREETING"
echo "running as $(id -un) (pid $$) in $(pwd), root has: $(ls / | tr '\n' ' ')"
APP
chmod 755 "$context/rootfs/app/hello"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin GREETING="hello from an app shipped by droot"
USER app
WORKDIR /app
ENTRYPOINT ["/app/hello"]
DOCKERFILE
# (the engine's notice about its legacy builder is noise here; shown only if the build fails)
if ! build_output=$(docker build -q -t droot-demo/hello:latest "$context" 2>&1); then
    echo "$build_output" >&2
    exit 1
fi
echo "== built droot-demo/hello:latest"

# 2. Ship: export, compress and upload in one stream (here to a local path store;
#    `s3://bucket/key` works the same with the standard AWS configuration).
"$droot" push droot-demo/hello:latest "$work/store/hello.tar.gz"
echo "== pushed to $work/store/hello.tar.gz"

# 3. Deploy: download, verify and switch $work/app to the new release atomically.
"$droot" pull "$work/store/hello.tar.gz" --root "$work/app" --keep 3
echo "== deployed; releases:"
"$droot" releases --root "$work/app"

# 4. Run: chroot, mounts, dropped capabilities, exec of the image's entrypoint as its user.
echo "== droot run --root $work/app"
"$droot" run --root "$work/app"
