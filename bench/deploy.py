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
droot zstd >= 2x tar -xzf) and droot's peak RSS.

Every run extracts into a directory of its own and the trees are removed only at the end:
ext4 without a journal (this machine's root) skips inodes freed in the last one to six
minutes when it allocates new ones (ext4's recently_deleted()), so a tree removed between
runs, or by the previous bench, made file creation up to ten times slower, whichever
tool it was. `--fresh-ext4` avoids both that and a host's odd filesystem: it measures on
a new journaled ext4 (mkfs defaults, as on most servers) on a loop device with direct
I/O, so that syncing really writes to the disk; it is removed at the end.

Usage: sudo .venv/bin/python bench/deploy.py [--rounds N] [--dir DIR | --fresh-ext4] [--tag TAG]
"""

import argparse
import compileall
import contextlib
import tempfile
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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


MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"],             # journaled
        "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],  # shared extents (FICLONE)
        "btrfs": ["mkfs.btrfs", "-q", "-f"]}


@contextlib.contextmanager
def fresh_filesystem(size_gb: int, kind: str = "ext4"):
    """A new filesystem of `kind` (MKFS) mounted on a temporary directory (loop device,
    direct I/O); the image file is sparse."""
    CACHE.mkdir(parents=True, exist_ok=True)
    image = CACHE / f"{kind}-{os.getpid()}.img"
    mountpoint = Path(tempfile.mkdtemp(prefix=f"droot-bench-{kind}-"))
    device = None
    try:
        subprocess.run(["truncate", "-s", f"{size_gb}G", image], check=True)
        subprocess.run([*MKFS[kind], image], check=True)
        device = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", image],
                                check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", device, mountpoint], check=True)
        yield mountpoint
    finally:
        subprocess.run(["umount", mountpoint], capture_output=True)
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True)
        mountpoint.rmdir()
        image.unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=CACHE / "deploy",
                        help="where to extract (its filesystem is what is measured)")
    parser.add_argument("--fresh-ext4", action="store_true",
                        help="extract on a new journaled ext4 on a loop device instead")
    parser.add_argument("--tag", default="droot-bench/debian:latest")
    args = parser.parse_args()
    compileall.compile_dir(REPO / "src" / "droot", quiet=1)  # as pip install leaves it
    found = archives(args.tag, CACHE)
    if args.fresh_ext4:
        with fresh_filesystem(size_gb=3 * args.rounds + 2) as mountpoint:  # 4 trees a round
            measure(found, mountpoint, args.rounds)
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        measure(found, args.dir, args.rounds)


def measure(found: dict, directory: Path, rounds: int):
    entries = int(subprocess.run(f"zstd -dc {found['zstd']} | tar -t | wc -l", shell=True,
                                 capture_output=True, text=True, check=True).stdout)
    filesystem = subprocess.run(["stat", "-f", "-c", "%T", directory], capture_output=True,
                                text=True).stdout.strip()
    print(f"archive: {entries} entries; gzip {found['gzip'].stat().st_size / 1e6:.0f} MB, "
          f"zstd {found['zstd'].stat().st_size / 1e6:.0f} MB; extracting under {directory} "
          f"({filesystem})")

    cases = {
        "tar -xzf; sync": ("mkdir {target} && tar -xzf %s -C {target} && sync -f {target}"
                           % found["gzip"], None),
        "droot deploy (gzip)": (f"{DROOT} deploy --root {{target}} --keep 0", found["gzip"]),
        "tar --zstd -xf; sync": ("mkdir {target} && tar --zstd -xf %s -C {target} && "
                                 "sync -f {target}" % found["zstd"], None),
        "droot deploy (zstd)": (f"{DROOT} deploy --root {{target}} --keep 0", found["zstd"]),
    }
    times = {name: [] for name in cases}
    memory = {name: [] for name in cases}
    runs = directory / f"runs-{os.getpid()}"
    runs.mkdir()
    on_tmpfs = filesystem == "tmpfs"
    try:
        for round_number in range(rounds):
            for number, (name, (command, stdin_path)) in enumerate(cases.items()):
                target = runs / f"{round_number}-{number}"
                elapsed, rss = run(command.format(target=target), stdin_path)
                times[name].append(elapsed)
                memory[name].append(rss)
                print(f"round {round_number + 1}: {name}: {elapsed:.2f} s", flush=True)
                if on_tmpfs:  # memory, not inodes: give it back at once
                    shutil.rmtree(target.with_name(target.name + ".releases"),
                                  ignore_errors=True)
                    (target.unlink if target.is_symlink() else shutil.rmtree)(target)
    finally:
        shutil.rmtree(runs, ignore_errors=True)  # the droot roots' releases included

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
