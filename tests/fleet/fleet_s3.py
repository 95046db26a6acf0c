"""moto's S3 server for the simulated fleet, run inside the fleet's S3 network namespace:

    python fleet_s3.py STORE ADDRESS PORT

STORE is a directory of buckets (STORE/BUCKET/KEY, files). Its objects are uploaded
through a first listener on the namespace's own loopback, which no host can reach; only
then does the server listen on ADDRESS:PORT, the address the hosts use, and print
"ready". Both listeners serve the one in-memory state of this process.

Why: moto keeps its objects in memory, and a real S3 endpoint's objects survive a
restart. Starting this again with the same STORE gives the hosts the same objects (the
same bytes, one PUT each: the same ETags) at the same address, never an empty bucket
in between. Request recording follows MOTO_RECORDER_FILEPATH, as for moto_server.
"""

import os
import signal
import socket
import sys
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer


def main():
    store, address, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        loader_port = probe.getsockname()[1]
    loader = ThreadedMotoServer(ip_address="127.0.0.1", port=loader_port, verbose=False)
    loader.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{loader_port}")
    for bucket in sorted(store.iterdir()):
        client.create_bucket(Bucket=bucket.name)
        for path in sorted(p for p in bucket.rglob("*") if p.is_file()):
            client.put_object(Bucket=bucket.name, Key=str(path.relative_to(bucket)),
                              Body=path.read_bytes())
    ThreadedMotoServer(ip_address=address, port=port, verbose=False).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)  # the servers' threads are not daemons


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
