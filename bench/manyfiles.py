#!/usr/bin/env python3
"""Memory of a delta push and pull of an image of many small files (issue 14: "< 100 MB
of memory whatever the image's size"): what a delta pull keeps grows with the number of
files, not their size, so this image is the hard case.

Image v1: N files (default 100,000) of 100 to 3,000 random bytes, two directories of 25
files for each of N/50 packages (a node_modules-like tree); v2: 20 of them rewritten. Each
is an OCI image layout of one uncompressed layer, written here (a `docker build` of
300,000 files took over 50 minutes on this machine) and kept in $DROOT_BENCH_CACHE (else
/var/tmp/droot-bench). Both pushed with `push --delta` to a path store, then pulled into
an empty root: v1 (a first pull), then v2 over it (every other file reused, through the
record), once into writable releases and once with --read-only (linked). With --s3 the
store is a moto S3 server on loopback instead (botocore's client is then most of the
floor). Prints each command's peak RSS (of droot and its extraction child, the larger),
taken by GNU time around that command alone (see bench/delta.py's timed: wait4 here
would report this process's own).

Usage: sudo .venv/bin/python bench/manyfiles.py [--files N] [--s3]
"""

import argparse
import io
import random
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.image.conftest
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delta import BIN, CACHE, DROOT, sh, timed  # noqa: E402
from ship import start_moto  # noqa: E402


def build_images(files: int) -> tuple[str, str]:
    """The sources of v1 and v2 (oci:PATH), written once, then kept in CACHE."""
    layouts = [CACHE / f"many-{files}-{version}" for version in ("v1", "v2")]
    for changed, layout in enumerate(layouts):
        if not (layout / "index.json").exists():
            write_layout(layout, files, changed=bool(changed))
    return tuple(f"oci:{layout}" for layout in layouts)


def write_layout(layout: Path, files: int, changed: bool):
    """An OCI image layout of one layer holding the image's files (see the module)."""
    from tests.image.conftest import write_oci_layout
    chance = random.Random(1)
    directories = set()
    layer = io.BytesIO()  # held whole: ~1 GB for 600,000 files
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(files):
            directory = f"app/node_modules/pkg{n // 50}/{('dist', 'lib')[n % 2]}"
            parts = directory.split("/")
            for depth in range(1, len(parts) + 1):
                if (name := "/".join(parts[:depth])) not in directories:
                    directories.add(name)
                    entry = tarfile.TarInfo(name)
                    entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, 0o755, 1
                    tar.addfile(entry)
            data = chance.randbytes(chance.randint(100, 3000))
            if changed and n % max(1, files // 20) == 0:
                data = random.Random(n).randbytes(2000)
            entry = tarfile.TarInfo(f"{directory}/file{n}.js")
            entry.size, entry.mode, entry.mtime = len(data), 0o644, 1
            tar.addfile(entry, io.BytesIO(data))
    write_oci_layout(layout, [layer.getvalue()])


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
    print(f"Peak RSS, MB, image of {args.files:,} files, {where}:")
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
