#!/usr/bin/env python3
"""How fast does `droot deploy` make an archive a release, next to GNU tar?

Archive: the debootstrap'd Debian of bench/make-debian-image.sh (~500 MB, ~20,000
entries), exported once with `droot export` (gzip and zstd, as `droot push` compresses).
Compared in one run, in interleaved rounds, on the same filesystem (ext4 by default, under
the cache dir), each into a fresh directory, each made durable:

  tar -xzf A.tar.gz; sync -f D           droot deploy --root R < A.tar.gz   (its syncfs)
  tar --zstd -xf A.tar.zst; sync -f D    droot deploy --root R < A.tar.zst

(`sync -f` is syncfs(2) of the target's filesystem, what droot does: a plain `sync` would
also flush what other processes wrote to other filesystems.)

Reports medians of wall time, ratios (goals: droot >= 1.0x tar on the same compression;
droot zstd >= 2x tar -xzf) and droot's peak RSS. Removal of the trees is not timed.

Usage: sudo .venv/bin/python bench/deploy.py [--rounds N] [--dir DIR] [--tag TAG]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DROOT = Path(sys.executable).parent / "droot"
CACHE = Path(os.environ.get("DROOT_BENCH_CACHE", "/var/tmp/droot-bench"))


def run(command: str, stdin_path: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process) of a shell command."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    subprocess.run(["sync"], check=True)  # earlier rounds' writeback is not ours to pay
    start = time.perf_counter()
    process = subprocess.Popen(["/bin/bash", "-o", "pipefail", "-c", command], stdin=stdin,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if stdin_path:
        stdin.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: failed: {command}")
    return elapsed, usage.ru_maxrss / 1024


def archives(tag: str, directory: Path) -> dict:
    subprocess.run([HERE / "make-debian-image.sh", tag], check=True, stdout=subprocess.DEVNULL)
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], check=True,
                              capture_output=True, text=True).stdout.strip().split(":")[1][:12]
    found = {}
    for kind, suffix in (("gzip", "tar.gz"), ("zstd", "tar.zst")):
        path = directory / f"debian-{image_id}.{suffix}"
        if not path.exists():
            subprocess.run([DROOT, "export", tag, "--compress", kind, "-o", f"{path}.tmp"],
                           check=True)
            os.replace(f"{path}.tmp", path)
        found[kind] = path
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=CACHE / "deploy",
                        help="where to extract (its filesystem is what is measured)")
    parser.add_argument("--tag", default="droot-bench/debian:latest")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    found = archives(args.tag, CACHE)
    entries = int(subprocess.run(f"zstd -dc {found['zstd']} | tar -t | wc -l", shell=True,
                                 capture_output=True, text=True, check=True).stdout)
    print(f"archive: {entries} entries; gzip {found['gzip'].stat().st_size / 1e6:.0f} MB, "
          f"zstd {found['zstd'].stat().st_size / 1e6:.0f} MB; extracting under {args.dir} "
          f"({subprocess.run(['stat', '-f', '-c', '%T', args.dir], capture_output=True, text=True).stdout.strip()})")

    target = args.dir / "target"
    root = args.dir / "app"
    cases = {
        "tar -xzf; sync": (f"mkdir {target} && tar -xzf {found['gzip']} -C {target} && "
                           f"sync -f {target}", None),
        "droot deploy (gzip)": (f"{DROOT} deploy --root {root} --keep 0", found["gzip"]),
        "tar --zstd -xf; sync": (f"mkdir {target} && tar --zstd -xf {found['zstd']} -C {target}"
                                 f" && sync -f {target}", None),
        "droot deploy (zstd)": (f"{DROOT} deploy --root {root} --keep 0", found["zstd"]),
    }
    times = {name: [] for name in cases}
    memory = {name: [] for name in cases}
    try:
        for round_number in range(args.rounds):
            for name, (command, stdin_path) in cases.items():
                elapsed, rss = run(command, stdin_path)
                times[name].append(elapsed)
                memory[name].append(rss)
                print(f"round {round_number + 1}: {name}: {elapsed:.2f} s", flush=True)
                shutil.rmtree(target, ignore_errors=True)
                subprocess.run([DROOT, "rm", "--root", root], capture_output=True)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([DROOT, "rm", "--root", root], capture_output=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n| case | median s | peak RSS MB |\n|---|---|---|")
    for name in cases:
        print(f"| {name} | {median[name]:.2f} | {max(memory[name]):.0f} |")
    print("\n| ratio (higher: droot faster) | value | goal |\n|---|---|---|")
    for label, peer, ours, goal in (
            ("tar -xzf / droot gzip", "tar -xzf; sync", "droot deploy (gzip)", 1.0),
            ("tar --zstd / droot zstd", "tar --zstd -xf; sync", "droot deploy (zstd)", 1.0),
            ("tar -xzf / droot zstd", "tar -xzf; sync", "droot deploy (zstd)", 2.0)):
        print(f"| {label} | {median[peer] / median[ours]:.2f}x | >= {goal:.1f}x |")


if __name__ == "__main__":
    main()
