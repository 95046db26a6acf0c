#!/usr/bin/env python3
"""The whole ship path through S3: `droot push` + `droot pull` next to the shell pipelines
the original's users run.

Image: bench/make-debian-image.sh's Debian (~500 MB, ~20,000 entries). S3: a moto server
started here on loopback (the same endpoint for every case). In interleaved rounds:

  push  droot push IMAGE s3://B/droot.tar.gz               (gzip; and --zstd)
        docker export $(docker create IMAGE) | gzip | aws s3 cp - s3://B/peer.tar.gz
  pull  droot pull s3://B/droot.tar.gz --root R            (verify + deploy, syncfs)
        aws s3 cp s3://B/peer.tar.gz - | tar -xzf - -C DIR; sync

Reports medians, push+pull totals, ratios, and the peak RSS of droot's push and pull (the
largest process of each; goal < 100 MB whatever the image size). Every pull goes to a
directory of its own, all removed at the end: on an ext4 without a journal (this host's
root) a tree removed between runs makes the next one's file creation several times slower
(bench/deploy.py says why).

Usage: sudo .venv/bin/python bench/ship.py [--rounds N] [--dir DIR] [--tag TAG]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DROOT = BIN / "droot"
CACHE = Path(os.environ.get("DROOT_BENCH_CACHE", "/var/tmp/droot-bench"))
BUCKET = "droot-bench-ship"


def run(command: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process) of a shell pipeline."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    process = subprocess.Popen(["/bin/bash", "-o", "pipefail", "-c", command],
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: failed: {command}")
    return elapsed, usage.ru_maxrss / 1024


def start_moto(log_dir: Path) -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(log_dir / "moto.log", "w")
    process = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("bench: moto_server did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=CACHE / "ship")
    parser.add_argument("--tag", default="droot-bench/debian:latest")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tag = subprocess.run([HERE / "make-debian-image.sh", args.tag], check=True,
                         capture_output=True, text=True).stdout.strip()
    moto = start_moto(args.dir)
    runs = args.dir / f"runs-{os.getpid()}"
    runs.mkdir()
    s3 = f"s3://{BUCKET}"
    aws = BIN / "aws"
    cases = {
        "push: docker export | gzip | aws s3 cp -":
            f"id=$(docker create {tag} x) && docker export $id | gzip | "
            f"{aws} s3 cp - {s3}/peer.tar.gz; status=$?; docker rm $id >/dev/null; exit $status",
        "push: droot push (gzip)": f"{DROOT} push {tag} {s3}/droot.tar.gz",
        "push: droot push --zstd": f"{DROOT} push --zstd {tag} {s3}/droot.tar.zst",
        "pull: aws s3 cp - | tar -xzf; sync":
            f"mkdir {{target}} && {aws} s3 cp {s3}/peer.tar.gz - | tar -xzf - -C {{target}} && "
            "sync",
        "pull: droot pull (gzip)": f"{DROOT} pull {s3}/droot.tar.gz --root {{target}} --keep 0",
        "pull: droot pull (zstd)": f"{DROOT} pull {s3}/droot.tar.zst --root {{target}} --keep 0",
    }
    times = {name: [] for name in cases}
    memory = {name: [] for name in cases}
    try:
        subprocess.run([aws, "s3", "mb", s3], check=True, capture_output=True)
        for round_number in range(args.rounds):
            for number, (name, command) in enumerate(cases.items()):
                elapsed, rss = run(command.format(target=runs / f"{round_number}-{number}"))
                times[name].append(elapsed)
                memory[name].append(rss)
                print(f"round {round_number + 1}: {name}: {elapsed:.2f} s, {rss:.0f} MB",
                      flush=True)
        sizes = subprocess.run([aws, "s3", "ls", s3], capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(runs, ignore_errors=True)  # the droot roots' releases included
        moto.terminate()
        moto.wait()

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nobjects:\n{sizes}")
    print("| case | median s | peak RSS MB |\n|---|---|---|")
    for name in cases:
        print(f"| {name} | {median[name]:.2f} | {max(memory[name]):.0f} |")
    peer = median["push: docker export | gzip | aws s3 cp -"] + \
        median["pull: aws s3 cp - | tar -xzf; sync"]
    print("\n| push + pull | total s | ratio (peer / droot) |\n|---|---|---|")
    print(f"| docker export, gzip, aws, tar | {peer:.2f} | 1.00x |")
    for label, push, pull in (("droot gzip", "push: droot push (gzip)", "pull: droot pull (gzip)"),
                              ("droot zstd", "push: droot push --zstd", "pull: droot pull (zstd)")):
        total = median[push] + median[pull]
        print(f"| {label} | {total:.2f} | {peer / total:.2f}x |")


if __name__ == "__main__":
    main()
