#!/usr/bin/env python3
"""Memory of a delta push and pull of an image of many small files (issue 14: "< 100 MB
of memory whatever the image's size"): what a delta pull keeps grows with the number of
files, not their size, so this image is the hard case.

Image v1: the tests' busybox root plus N files (default 100,000) of 100 to 3,000 random
bytes, two directories of 25 files for each of N/50 packages (a node_modules-like tree);
v2: 20 of them rewritten. Both pushed with `push --delta` to a path store, then pulled
into an empty root: v1 (a first pull), then v2 over it (every other file reused, through
the record), once into writable releases and once with --read-only (linked). With --s3
the store is a moto S3 server on loopback instead (botocore's client is then most of the
floor). Prints each command's peak RSS (of droot and its extraction child, the larger),
taken by GNU time around that command alone (see bench/delta.py's timed: wait4 here
would report this process's own).

Usage: sudo .venv/bin/python bench/manyfiles.py [--files N] [--s3]
"""

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.conftest
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delta import BIN, DROOT, sh, timed  # noqa: E402
from ship import start_moto  # noqa: E402


def build_images(files: int) -> tuple[str, str]:
    """droot-bench/many-N:v1 and :v2 (built once, then kept by docker)."""
    from tests.conftest import make_busybox_root
    tags = (f"droot-bench/many-{files}:v1", f"droot-bench/many-{files}:v2")
    if all(subprocess.run(["docker", "image", "inspect", tag],
                          capture_output=True).returncode == 0 for tag in tags):
        return tags
    chance = random.Random(1)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as context:
        root = make_busybox_root(Path(context) / "rootfs")
        paths = [root / f"app/node_modules/pkg{n // 50}/{('dist', 'lib')[n % 2]}/file{n}.js"
                 for n in range(files)]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(chance.randbytes(chance.randint(100, 3000)))
        (Path(context) / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
        sh(f"docker build -q -t {tags[0]} {context}")
        for path in paths[::max(1, files // 20)]:
            path.write_bytes(chance.randbytes(2000))
        sh(f"docker build -q -t {tags[1]} {context}")
    return tags


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--s3", action="store_true", help="push to and pull from moto S3")
    args = parser.parse_args()
    v1, v2 = build_images(args.files)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        moto = start_moto(Path(work)) if args.s3 else None
        try:
            if moto:
                sh(f"{BIN}/aws s3 mb s3://droot-bench-many")
            peaks = measure(v1, v2, "s3://droot-bench-many/store" if moto else
                            Path(work) / "store", Path(work))
        finally:
            if moto:
                moto.kill()
                moto.wait()
    where = "moto S3" if args.s3 else "a path store"
    print(f"Peak RSS, MB, image of {args.files:,} files + busybox, {where}:")
    for command, peak in peaks.items():
        print(f"  {command:<22} {peak:6.0f}")


def measure(v1: str, v2: str, store, work: Path) -> dict[str, float]:
    """Peak RSS of each push and pull, by command."""
    peaks = {}
    for name, tag in (("v1", v1), ("v2", v2)):
        peaks[f"push --delta {name}"] = timed(f"{DROOT} push --delta {tag} {store}/{name}")[1]
    for option in ("", " --read-only"):
        root = work / f"root{option.strip()}"
        for name in ("v1", "v2"):
            peaks[f"pull {name}{option}"] = timed(
                f"{DROOT} pull {store}/{name} --root {root}{option}")[1]
        sh(f"{DROOT} rm --root {root}")
    return peaks


if __name__ == "__main__":
    main()
