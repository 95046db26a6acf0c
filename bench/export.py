#!/usr/bin/env python3
"""How fast does `droot export` turn a large image into a stream, next to `docker export`?

Image: a debootstrap'd Debian (bench/make-debian-image.sh: ~500 MB, ~20,000 entries,
one layer, imported into the engine) and its `docker save` archive for the daemonless
source. Compared in one run, in interleaved rounds (the machine is shared and noisy):

  docker export > /dev/null            (docker create + export + rm, as droot does)
  docker export | gzip > /dev/null
  droot export IMAGE > /dev/null       (Docker engine source)
  droot export docker-archive:FILE     (daemonless flattening)
  droot export --compress zstd IMAGE

Reports medians of wall time, throughput (MB/s of uncompressed tar), ratios, and the
peak RSS of the largest process in each pipeline. Goals (issue 3): daemon >= 0.9x
docker export; docker-archive >= 1x; zstd >= 2x `docker export | gzip`.

Usage: .venv/bin/python bench/export.py [--rounds N] [--tag TAG]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DROOT = Path(sys.executable).parent / "droot"
CACHE = Path(os.environ.get("DROOT_BENCH_CACHE", "/var/tmp/droot-bench"))


def run(command: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process) of a shell pipeline."""
    start = time.perf_counter()
    process = subprocess.Popen(["/bin/bash", "-o", "pipefail", "-c", command])
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: failed: {command}")
    return elapsed, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tag", default="droot-bench/debian:latest")
    args = parser.parse_args()

    tag = subprocess.run([HERE / "make-debian-image.sh", args.tag], check=True,
                         capture_output=True, text=True).stdout.strip()
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], check=True,
                              capture_output=True, text=True).stdout.strip()
    archive = CACHE / f"docker-save-{image_id.split(':')[1][:12]}.tar"
    if not archive.exists():
        subprocess.run(["docker", "save", "-o", f"{archive}.tmp", tag], check=True)
        os.replace(f"{archive}.tmp", archive)
    size = int(subprocess.run(
        f"id=$(docker create {tag} x) && docker export $id | wc -c; docker rm $id >/dev/null",
        shell=True, check=True, capture_output=True, text=True).stdout.split()[0])
    entries = int(subprocess.run(f"tar -xOf {archive} --wildcards '*layer.tar' 2>/dev/null "
                                 f"| tar -t | wc -l", shell=True, capture_output=True,
                                 text=True).stdout.strip() or 0)

    docker_export = f"id=$(docker create {tag} x) && docker export $id"
    variants = {
        "docker export": f"{docker_export} > /dev/null; docker rm $id > /dev/null",
        "docker export | gzip": f"{docker_export} | gzip > /dev/null; docker rm $id > /dev/null",
        "droot export (daemon)": f"{DROOT} export {tag} > /dev/null",
        "droot export docker-archive:": f"{DROOT} export docker-archive:{archive} > /dev/null",
        "droot export --compress zstd": f"{DROOT} export --compress zstd {tag} > /dev/null",
    }
    results = {name: [] for name in variants}
    for round_number in range(1, args.rounds + 1):
        for name, command in variants.items():
            results[name].append(run(command))
        print(f"round {round_number}/{args.rounds}: " + ", ".join(
            f"{name} {results[name][-1][0]:.2f} s" for name in variants), file=sys.stderr)

    medians = {name: statistics.median(t for t, _ in runs) for name, runs in results.items()}
    peaks = {name: max(rss for _, rss in runs) for name, runs in results.items()}
    base, gzip_time = medians["docker export"], medians["docker export | gzip"]
    print(f"\nimage {tag}: {size / 1e6:.0f} MB uncompressed tar, {entries} entries, "
          f"{args.rounds} interleaved rounds, medians\n")
    print(f"| {'variant':<30} | {'time s':>7} | {'MB/s':>6} | {'x docker export':>15} "
          f"| {'x export|gzip':>13} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 8}|{'-' * 17}|{'-' * 15}|{'-' * 13}|")
    for name, seconds in medians.items():
        print(f"| {name:<30} | {seconds:7.2f} | {size / 1e6 / seconds:6.0f} | {base / seconds:15.2f} "
              f"| {gzip_time / seconds:13.2f} | {peaks[name]:11.0f} |")
    goals = [
        ("daemon >= 0.9x docker export", base / medians["droot export (daemon)"] >= 0.9),
        ("docker-archive >= 1x docker export", base / medians["droot export docker-archive:"] >= 1),
        ("zstd >= 2x docker export | gzip", gzip_time / medians["droot export --compress zstd"] >= 2),
    ]
    print()
    for goal, met in goals:
        print(f"{'met' if met else 'MISSED'}: {goal}")


if __name__ == "__main__":
    main()
