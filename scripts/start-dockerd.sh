#!/bin/bash
# Start the Docker engine in the background unless one already answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
echo "start-dockerd: starting dockerd (log: /var/log/droot-dockerd.log)" >&2
nohup dockerd >/var/log/droot-dockerd.log 2>&1 &
for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
done
echo "start-dockerd: dockerd did not answer within 60 s; see /var/log/droot-dockerd.log" >&2
exit 1
