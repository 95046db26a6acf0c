#!/usr/bin/env python3
"""Delta releases: which layout, and what `push --delta` / a delta `pull` cost.

Image v1: bench/make-debian-image.sh's Debian (~500 MB, ~20,000 entries). v2 = v1 plus one
layer (docker commit of a container that ran CHANGE below): 12 shared libraries of
/usr/lib/x86_64-linux-gnu (100-400 KB each, picked by a fixed stride) rewritten with other
bytes of the same size, a new 5 MB file, the mtimes of 300 files of /usr/share/doc
touched, 50 man pages deleted.

1. Layouts, from the two exports (`droot export`), by bytes a host downloads for v2 given
   v1, requests, and build (push) time:
   (a) per-file content-addressed objects (OSTree-like): one zstd object per new digest;
   (b) packs of per-file zstd frames + a manifest, ranged GETs (zstd:chunked-like): the
       same frames, so the same bytes; requests = the ranged GETs the real pull makes;
   (c) content-defined chunks: casync (Debian's, the maintained chunker) on the tar blob,
       64 KB average chunks, store seeded with v1.
2. Figures of the real commands on a fresh filesystem (bench/deploy.py's
   fresh_filesystem: a journaled ext4, or with --fs xfs or btrfs one with shared extents,
   where a reused file is a reflink instead of a copy) and a moto S3 server on loopback,
   interleaved rounds, medians:
   full pull of v2's zstd archive into a root holding v1 vs delta pull of v2 there, and
   the same into read-only releases (`--read-only`: unchanged files hard-linked);
   first deploy: delta pull of v1 into an empty root vs full pull of v1's archive;
   bytes downloaded and requests (droot's own summary line), peak RSS of push and pull.

The machine is shared and noisy: compare the ratios of one run.
Usage: sudo .venv/bin/python bench/delta.py [--rounds N] [--fs ext4|xfs|btrfs]
"""

import argparse
import compileall
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import MKFS, fresh_filesystem  # noqa: E402
from ship import start_moto  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DROOT = BIN / "droot"
CACHE = Path(os.environ.get("DROOT_BENCH_CACHE", "/var/tmp/droot-bench"))
V1 = "droot-bench/debian:latest"
V2 = "droot-bench/debian:delta-v2"
CHANGE = r"""
import os
lib = '/usr/lib/x86_64-linux-gnu'
names = sorted(n for n in os.listdir(lib) if os.path.isfile(os.path.join(lib, n))
               and not os.path.islink(os.path.join(lib, n))
               and 100_000 < os.path.getsize(os.path.join(lib, n)) < 400_000)
changed = 0
for name in names[::max(1, len(names) // 12)][:12]:
    path = os.path.join(lib, name)
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.write(os.urandom(size))
    changed += size
os.makedirs('/opt/app', exist_ok=True)
with open('/opt/app/data.bin', 'wb') as f:
    f.write(os.urandom(5 << 20))
changed += 5 << 20
docs = sorted(os.path.join(d, n) for d, _, ns in os.walk('/usr/share/doc') for n in ns)
for path in docs[:300]:
    os.utime(path, (1e9, 1e9), follow_symlinks=False)
man = sorted(os.path.join(d, n) for d, _, ns in os.walk('/usr/share/man/man1') for n in ns)
for path in man[:50]:
    os.unlink(path)
print(changed)
"""


def sh(command, **kwargs):
    return subprocess.run(command, shell=True, check=True, capture_output=True, text=True,
                          **kwargs).stdout


def timed(command: str) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, stderr) of a shell command. The peak comes from GNU time
    started afresh: a child's ru_maxrss starts at its parent's when it forks (and keeps
    it across exec), so wait4 here would report this big benchmark process's own."""
    subprocess.run(["sync"], check=True)
    with tempfile.NamedTemporaryFile(mode="r") as report:
        start = time.perf_counter()
        process = subprocess.run(["/usr/bin/time", "-q", "-f", "%M", "-o", report.name,
                                  "/bin/bash", "-o", "pipefail", "-c", command],
                                 stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        stderr = process.stderr.decode(errors="replace")
        if process.returncode != 0:
            raise SystemExit(f"bench: failed: {command}\n{stderr}")
        return elapsed, int(report.read().split()[-1]) / 1024, stderr


def make_v2() -> int:
    """Build V2 from V1 (once); return the changed content bytes."""
    subprocess.run([HERE / "make-debian-image.sh", V1], check=True, stdout=subprocess.DEVNULL)
    marker = CACHE / "delta-v2-changed"
    if subprocess.run(["docker", "image", "inspect", V2], capture_output=True).returncode \
            or not marker.exists():
        name = f"droot-bench-delta-{os.getpid()}"
        changed = sh(f"docker run --name {name} {V1} python3 -c \"$CHANGE\"",
                     env={**os.environ, "CHANGE": CHANGE}).strip()
        sh(f"docker commit {name} {V2} && docker rm {name}")
        marker.write_text(changed)
    return int(marker.read_text())


def file_digests(tar_path: Path, compressor, known=()) -> dict:
    """digest -> (size, zstd frame size) of the regular files of an uncompressed tar
    (frame sizes only for digests not in `known`)."""
    import tarfile
    found = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if member.isreg() and member.size:
                data = tar.extractfile(member).read()
                digest = hashlib.sha256(data).digest()
                if digest not in found:
                    frame = 0 if digest in known else len(compressor.compress(data))
                    found[digest] = (member.size, frame)
    return found


def layouts(work: Path, changed: int) -> None:
    import zstandard
    tars = {}
    for version, tag in (("v1", V1), ("v2", V2)):
        tars[version] = work / f"{version}.tar"
        sh(f"{DROOT} export {tag} --compress none -o {tars[version]}")
    compressor = zstandard.ZstdCompressor(level=3)
    start = time.perf_counter()
    v1 = file_digests(tars["v1"], compressor)
    v1_compressed = sum(frame for _, frame in v1.values())
    per_file_build = time.perf_counter() - start
    v2 = file_digests(tars["v2"], compressor, v1)
    new = [value for digest, value in v2.items() if digest not in v1]
    new_compressed = sum(frame for _, frame in new)
    print(f"\nchanged content: {changed / 1e6:.2f} MB; v2 files with new digests: {len(new)} "
          f"({sum(size for size, _ in new) / 1e6:.2f} MB raw, {new_compressed / 1e6:.2f} MB "
          f"zstd = (a)'s and (b)'s bytes, (a) {len(new)} GETs + manifest); v1: "
          f"{len(v1)} distinct contents, {v1_compressed / 1e6:.0f} MB as per-file frames, "
          f"compressed in {per_file_build:.1f} s")
    del v1, v2, new
    store = work / "casync-store"
    results = {}
    for version in ("v1", "v2"):
        before = sum(f.stat().st_size for f in store.rglob("*.cacnk")) if store.exists() else 0
        count = len(list(store.rglob("*.cacnk"))) if store.exists() else 0
        elapsed, rss, _ = timed(f"casync make --store={store} {work}/{version}.caibx "
                                f"{tars[version]}")
        after = sum(f.stat().st_size for f in store.rglob("*.cacnk"))
        results[version] = (elapsed, rss, after - before,
                            len(list(store.rglob("*.cacnk"))) - count,
                            (work / f"{version}.caibx").stat().st_size)
    elapsed, rss, new_bytes, new_chunks, index = results["v2"]
    print(f"(c) casync, 64 KB chunks: v1 make {results['v1'][0]:.1f} s; v2 make {elapsed:.1f} s, "
          f"{rss:.0f} MB; v2 new chunks {new_chunks} ({new_bytes / 1e6:.2f} MB) + index "
          f"{index / 1e6:.2f} MB = {(new_bytes + index) / 1e6:.2f} MB, {new_chunks + 1} GETs")
    for version in ("v1", "v2"):
        tars[version].unlink()


def figures(rounds: int, changed: int, filesystem: str) -> None:
    moto = start_moto(Path(tempfile.mkdtemp(prefix="droot-bench-delta-")))
    s3 = "s3://droot-bench-delta"
    try:
        sh(f"{BIN}/aws s3 mb {s3}")
        pushes = {}
        for name, command in (
                ("push v1 --zstd (archive)", f"{DROOT} push --zstd {V1} {s3}/v1.tar.zst"),
                ("push v2 --zstd (archive)", f"{DROOT} push --zstd {V2} {s3}/v2.tar.zst"),
                ("push v1 --delta (first)", f"{DROOT} push --delta {V1} {s3}/d/v1"),
                ("push v2 --delta", f"{DROOT} push --delta {V2} {s3}/d/v2")):
            elapsed, rss, stderr = timed(command)
            pushes[name] = elapsed
            print(f"{name}: {elapsed:.1f} s, peak RSS {rss:.0f} MB; {stderr.strip()}")
        print(f"deploys on a fresh {filesystem}")
        with fresh_filesystem(size_gb=4 * rounds + 4, kind=filesystem) as disk:
            times = {key: [] for key in ("full v1", "delta v1 (first)", "full v2 over v1",
                                          "delta v2 over v1", "delta v1 --read-only (first)",
                                          "delta v2 over v1 --read-only")}
            rss_pull, downloaded, requests = [], [], []
            for number in range(rounds):
                full, delta = disk / f"full{number}", disk / f"delta{number}"
                linked = disk / f"read-only{number}"
                for key, command in (
                        ("full v1", f"{DROOT} pull {s3}/v1.tar.zst --root {full}"),
                        ("delta v1 (first)", f"{DROOT} pull {s3}/d/v1 --root {delta}"),
                        ("full v2 over v1", f"{DROOT} pull {s3}/v2.tar.zst --root {full}"),
                        ("delta v2 over v1", f"{DROOT} pull {s3}/d/v2 --root {delta}"),
                        ("delta v1 --read-only (first)",
                         f"{DROOT} pull {s3}/d/v1 --root {linked} --read-only"),
                        ("delta v2 over v1 --read-only",
                         f"{DROOT} pull {s3}/d/v2 --root {linked} --read-only")):
                    elapsed, rss, stderr = timed(command)
                    times[key].append(elapsed)
                    print(f"round {number + 1}: {key}: {elapsed:.2f} s, {rss:.0f} MB", flush=True)
                    if key.startswith("delta"):
                        rss_pull.append(rss)
                    if key == "delta v2 over v1":
                        match = re.search(r"(\d+) bytes downloaded in (\d+) requests", stderr)
                        downloaded.append(int(match[1]))
                        requests.append(int(match[2]))
        median = {key: statistics.median(values) for key, values in times.items()}
        print("\n| case | median s |\n|---|---|")
        for key, value in median.items():
            print(f"| {key} | {value:.2f} |")
        print(f"\nv2 delta pull downloaded {downloaded[0] / 1e6:.2f} MB in {requests[0]} "
              f"requests; changed {changed / 1e6:.2f} MB: ratio "
              f"{downloaded[0] / changed:.2f}x (goal <= 2x + manifest)")
        print(f"deploy of v2: delta / full = "
              f"{median['delta v2 over v1'] / median['full v2 over v1']:.2f}x (goal <= 0.25x)")
        print(f"deploy of v2 into read-only releases (hard links): delta / full = "
              f"{median['delta v2 over v1 --read-only'] / median['full v2 over v1']:.2f}x "
              "(goal <= 0.25x)")
        print(f"first deploy: delta / full = "
              f"{median['delta v1 (first)'] / median['full v1']:.2f}x (goal <= 1.0x)")
        print(f"peak RSS of delta pulls: {max(rss_pull):.0f} MB (goal < 100 MB)")
    finally:
        moto.terminate()
        moto.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-layouts", action="store_true")
    parser.add_argument("--fs", choices=sorted(MKFS), default="ext4",
                        help="the filesystem the pulls deploy to (default: ext4)")
    args = parser.parse_args()
    compileall.compile_dir(HERE.parent / "src" / "droot", quiet=1)  # as pip install leaves it
    changed = make_v2()
    if not args.skip_layouts:
        with tempfile.TemporaryDirectory(dir=CACHE) as work:
            layouts(Path(work), changed)
    figures(args.rounds, changed, args.fs)


if __name__ == "__main__":
    main()
