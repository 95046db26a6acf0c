"""Helpers of the ship tests: a small app archive, a root with a first release, a store
(S3 or a directory) as its writer sees it, and a plain HTTP server over a directory."""

import gzip
import hashlib
import http.server
import os
import subprocess
import threading
from pathlib import Path

import boto3
import pytest

from tests.conftest import droot, make_busybox_root


def app_tar(tmp_path: Path, marker: str) -> bytes:
    """A gzip'd busybox root with /MARKER holding `marker`."""
    root = make_busybox_root(tmp_path / f"ship-src-{marker}")
    (root / "MARKER").write_text(marker)
    plain = subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", "-", "."],
                           check=True, capture_output=True).stdout
    return gzip.compress(plain, 1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deploy_first(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "app"
    archive = tmp_path / "first.tar.gz"
    archive.write_bytes(app_tar(tmp_path, "first"))
    result = droot("pull", archive, "--root", root, "--no-verify")
    assert result.returncode == 0, result.stderr
    return root, os.readlink(root)


@pytest.fixture
def http_store(tmp_path):
    """A plain HTTP server on loopback serving tmp_path/store."""
    store = tmp_path / "store"
    store.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(store), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield store, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Store:
    """An s3://BUCKET or a directory, written to as an attacker with write access would."""

    def __init__(self, kind: str, tmp_path: Path, bucket: str | None):
        self.kind, self.bucket = kind, bucket
        self.directory = tmp_path / "store"
        self.directory.mkdir()

    def src(self, name: str) -> str:
        return f"s3://{self.bucket}/apps/{name}" if self.kind == "s3" else str(self.directory / name)

    def get(self, name: str) -> bytes | None:
        if self.kind == "s3":
            try:
                return boto3.client("s3").get_object(Bucket=self.bucket,
                                                     Key=f"apps/{name}")["Body"].read()
            except boto3.client("s3").exceptions.NoSuchKey:
                return None
        path = self.directory / name
        return path.read_bytes() if path.exists() else None

    def put(self, name: str, data: bytes):
        if self.kind == "s3":
            boto3.client("s3").put_object(Bucket=self.bucket, Key=f"apps/{name}", Body=data)
        else:
            (self.directory / name).write_bytes(data)


@pytest.fixture(params=["s3", "path"])
def store(request, tmp_path):
    bucket = request.getfixturevalue("s3_bucket") if request.param == "s3" else None
    return Store(request.param, tmp_path, bucket)
