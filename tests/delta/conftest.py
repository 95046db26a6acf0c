"""Helpers of the delta tests: two versions of an image, the stores (a directory, a
prefix of a fresh bucket on the real S3 server), push, a release's tree, a pull's summary."""

import hashlib
import os
import re
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.conftest import DROOT, docker_archive, droot, make_busybox_root

MIB = 1 << 20


def random_file(path: Path, size: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


@pytest.fixture(scope="module")
def versions(docker_client, tmp_path_factory):
    """Two images as docker-archive files (the same export every time): v2 is v1 with one
    file rewritten, one added, one removed, one mode changed. Yields (v1, v2, changed
    bytes, {path: bytes} of v1's kept files)."""
    base = tmp_path_factory.mktemp("delta-images")
    sources = []
    rootfs = make_busybox_root(base / "context" / "rootfs")
    random_file(rootfs / "srv" / "keep.bin", 2 * MIB)
    random_file(rootfs / "srv" / "changes.bin", MIB)
    random_file(rootfs / "srv" / "gone.bin", 64 << 10)
    (rootfs / "srv" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (rootfs / "srv" / "tool").chmod(0o755)  # (the build's context drops setuid bits)
    kept = {"srv/keep.bin": (rootfs / "srv" / "keep.bin").read_bytes()}
    (base / "context" / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n"
                                                 'ENV PATH=/bin\n')
    for version in (1, 2):
        if version == 2:
            random_file(rootfs / "srv" / "changes.bin", MIB)
            random_file(rootfs / "srv" / "new.bin", 512 << 10)
            (rootfs / "srv" / "gone.bin").unlink()
            (rootfs / "srv" / "tool").chmod(0o750)
        sources.append(docker_archive(docker_client, base / "context",
                                      f"droot-test-delta/v{version}:{os.getpid()}",
                                      base / f"v{version}.tar"))
    yield sources[0], sources[1], MIB + (512 << 10), kept


def tree(root: Path) -> dict:
    """Every entry of a release: type, mode, owner, mtime, size, xattrs, content digest or
    link target (the path of the release itself left out)."""
    found = {}
    root = Path(os.path.realpath(root))
    for directory, names, files in os.walk(root):
        for name in [*names, *files, *([] if directory != str(root) else ["."])]:
            path = root if name == "." else Path(directory) / name
            info = os.lstat(path)
            # the release directory's time is its creation's when the image has no "./"
            entry = [info.st_mode, info.st_uid, info.st_gid,
                     None if path == root else info.st_mtime_ns]
            entry.append(sorted((attribute, os.getxattr(path, attribute, follow_symlinks=False))
                                for attribute in os.listxattr(path, follow_symlinks=False)))
            if path.is_symlink():
                entry.append(os.readlink(path))
            elif path.is_file():
                entry.append(info.st_size)
                entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
            found[str(path.relative_to(root))] = entry
    return found


def summary(stderr: str) -> tuple[int, int, int, int]:
    """(files reused, bytes reused, bytes downloaded, requests) of a delta pull."""
    match = re.search(r"delta: (\d+) files \((\d+) bytes\) reused from this host"
                      r"(?: \(\d+ hard-linked\))?, (\d+) bytes "
                      r"downloaded in (\d+) requests", stderr)
    assert match, stderr
    return tuple(map(int, match.groups()))


def full_deploy(source: str, root: Path, *options):
    export = subprocess.Popen([DROOT, "export", source], stdout=subprocess.PIPE)
    result = droot("deploy", "--root", root, *options, stdin=export.stdout)
    export.stdout.close()
    assert export.wait() == 0 and result.returncode == 0, result.stderr


@pytest.fixture(params=["path", "s3"])
def store(request, tmp_path):
    """Where the delta releases go: a directory, or a prefix of a fresh S3 bucket."""
    if request.param == "path":
        (tmp_path / "store").mkdir()
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/apps"


def push(source: str, dest: str, *options) -> str:
    result = droot("push", "--delta", source, dest, *options)
    assert result.returncode == 0, result.stderr
    return result.stderr


def s3_size(store: str, name: str) -> int:
    bucket, _, prefix = store[5:].partition("/")
    return boto3.client("s3").head_object(Bucket=bucket, Key=f"{prefix}/{name}")["ContentLength"]
