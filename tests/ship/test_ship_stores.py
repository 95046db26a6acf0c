"""push and pull through the stores: a real S3-compatible server (moto, its own process over
HTTP) via boto3 and via the aws CLI pipe form, presigned and plain http(s) URLs, local
paths; checksums verified; interrupted pushes leave nothing."""

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest

from tests.conftest import DROOT, VENV_BIN, busybox_image_with_blob, droot, droot_on_terminal
from tests.deploy.conftest import leftovers


def s3():
    return boto3.client("s3")


def object_bytes(bucket, key) -> bytes:
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def check_app(root: Path):
    assert (root / "bin" / "busybox").is_file()
    assert "GREETING=hello from droot" in (root / ".drootenv").read_text()
    assert (root / ".droot.json").is_file()


@pytest.fixture(scope="module")
def big_image(docker_client, tmp_path_factory):
    """An image whose archive needs several multipart parts."""
    with busybox_image_with_blob(docker_client, tmp_path_factory.mktemp("ship-big-image"),
                                 "big", 40) as tag:
        yield tag


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_push_then_pull_through_s3(busybox_image, s3_bucket, tmp_path, compression):
    dest = f"s3://{s3_bucket}/apps/hello.tar"
    result = droot("push", busybox_image, dest, "--compress", compression)
    assert result.returncode == 0, result.stderr
    archive = object_bytes(s3_bucket, "apps/hello.tar")
    digest = hashlib.sha256(archive).hexdigest()
    assert object_bytes(s3_bucket, "apps/hello.tar.sha256").decode() == f"{digest}  hello.tar\n"
    magic = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b\x08"}[compression]
    assert archive.startswith(magic)
    root = tmp_path / "app"
    result = droot("pull", dest, "--root", root)
    assert result.returncode == 0, result.stderr
    check_app(root)
    assert digest[:12] in os.readlink(root)
    # The original's flags.
    result = droot("pull", "--src", dest, "--dest", root, "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert len([n for n in os.listdir(tmp_path / "app.releases") if n[0] != "."]) == 2


def test_multipart_push_of_a_large_image_and_the_aws_cli_pipe_form(big_image, s3_bucket,
                                                                    tmp_path):
    dest = f"s3://{s3_bucket}/big.tar.gz"
    result = droot("push", big_image, dest)
    assert result.returncode == 0, result.stderr
    head = s3().head_object(Bucket=s3_bucket, Key="big.tar.gz", PartNumber=1)
    assert head.get("PartsCount", 1) >= 5  # several 5 MiB parts
    # The pipe form the original's users run, with the aws CLI reading the same
    # standard configuration (AWS_ENDPOINT_URL included).
    root = tmp_path / "app"
    pipeline = (f"{VENV_BIN}/aws s3 cp {dest} - | {DROOT} deploy --root {root} "
                f"--sha256 $({VENV_BIN}/aws s3 cp {dest}.sha256 - | cut -c1-64)")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (root / "blob").stat().st_size == 40 << 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_push_leaves_no_object_and_no_pending_upload(big_image, s3_bucket, signum):
    key = "interrupted.tar.gz"
    process = subprocess.Popen([DROOT, "push", big_image, f"s3://{s3_bucket}/{key}",
                                "--compress", "none"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not s3().list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
            assert process.poll() is None, "push ended before the test could interrupt it"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "interrupted" in stderr or "terminated" in stderr
    assert s3().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not s3().list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_failed_push_leaves_nothing(s3_bucket, tmp_path):
    result = droot("push", "droot-test-ship/no-such-image:latest", f"s3://{s3_bucket}/x.tar.gz")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert s3().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    result = droot("push", "droot-test-ship/no-such-image:latest", tmp_path / "x.tar.gz")
    assert result.returncode == 1 and os.listdir(tmp_path) == []


def test_pull_errors_are_one_line(s3_server, s3_bucket, tmp_path):
    root = tmp_path / "app"
    cases = [
        (f"s3://{s3_bucket}/missing.tar.gz", "no such object"),
        ("s3://droot-test-no-such-bucket/x.tar.gz", "no such bucket"),
        (str(tmp_path / "missing.tar.gz"), "No such file"),
        ("s3://bucket-only", "expected s3://BUCKET/KEY"),
        (f"{s3_server}/{s3_bucket}/missing", "HTTP 404"),
    ]
    for src, message in cases:
        result = droot("pull", src, "--root", root)
        assert result.returncode != 0, src
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("droot: ") and message in lines[0], lines
    assert not os.path.lexists(root)


def test_presigned_url_pull_verifies_when_a_checksum_is_known(busybox_image, s3_bucket,
                                                             tmp_path):
    assert droot("push", busybox_image, f"s3://{s3_bucket}/app.tar.gz").returncode == 0
    client = s3()
    url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket,
                                                              "Key": "app.tar.gz"})
    digest = object_bytes(s3_bucket, "app.tar.gz.sha256").decode()[:64]
    root = tmp_path / "app"
    result = droot("pull", url, "--root", root)
    assert result.returncode == 1 and "no checksum found" in result.stderr
    assert "Signature=" in url and "Signature" not in result.stderr  # kept out of messages
    assert droot("pull", url, "--root", root, "--sha256", "1" * 64).returncode == 1
    assert not os.path.lexists(root)
    result = droot("pull", url, "--root", root, "--sha256", digest)
    assert result.returncode == 0, result.stderr
    check_app(root)
    # An object uploaded by another tool with x-amz-meta-sha256 needs no flag.
    archive = object_bytes(s3_bucket, "app.tar.gz")
    client.put_object(Bucket=s3_bucket, Key="other.tar.gz", Body=archive,
                      Metadata={"sha256": hashlib.sha256(archive).hexdigest()})
    url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket,
                                                              "Key": "other.tar.gz"})
    result = droot("pull", url, "--root", root)
    assert result.returncode == 0, result.stderr
    # And with --no-verify an archive without any checksum is deployed.
    client.put_object(Bucket=s3_bucket, Key="bare.tar.gz", Body=archive)
    url = client.generate_presigned_url("get_object", Params={"Bucket": s3_bucket,
                                                              "Key": "bare.tar.gz"})
    assert droot("pull", url, "--root", root, "--no-verify").returncode == 0


def test_path_and_http_stores_with_sidecar(busybox_image, tmp_path, http_store):
    store, base = http_store
    result = droot("push", busybox_image, f"file://{store}/app.tar.gz")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(store)) == ["app.tar.gz", "app.tar.gz.sha256"]
    assert subprocess.run(["sha256sum", "-c", "app.tar.gz.sha256"], cwd=store).returncode == 0
    root = tmp_path / "app"
    result = droot("pull", f"{base}/app.tar.gz", "--root", root)
    assert result.returncode == 0, result.stderr
    check_app(root)
    # A checksum that does not match: nothing switched, nothing left.
    good = os.readlink(root)
    (store / "app.tar.gz.sha256").write_text("f" * 64 + "  app.tar.gz\n")
    for src in (f"{base}/app.tar.gz", str(store / "app.tar.gz")):
        result = droot("pull", src, "--root", root)
        assert result.returncode == 1 and "checksum mismatch" in result.stderr
        assert os.readlink(root) == good
    assert leftovers(root) == []


def test_push_to_stdout_and_pull_from_stdin(busybox_image, tmp_path):
    pushed = subprocess.run([DROOT, "push", busybox_image, "-", "--zstd"], capture_output=True,
                            timeout=120)
    assert pushed.returncode == 0 and pushed.stdout[:4] == b"\x28\xb5\x2f\xfd"
    digest = hashlib.sha256(pushed.stdout).hexdigest()
    assert f"sha256 {digest}".encode() in pushed.stderr
    root = tmp_path / "app"
    pulled = subprocess.run([DROOT, "pull", "-", "--root", str(root), "--sha256", digest],
                            input=pushed.stdout, capture_output=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    check_app(root)


def test_progress_on_a_terminal_only(big_image, s3_bucket, tmp_path):
    dest = f"s3://{s3_bucket}/progress.tar.gz"
    drawn = droot_on_terminal("push", big_image, dest)
    assert f"push {dest}:" in drawn and "MB/s" in drawn
    drawn = droot_on_terminal("pull", dest, "--root", tmp_path / "app")
    assert f"pull {dest}:" in drawn and "MB" in drawn and "%" in drawn
    quiet = droot("pull", dest, "--root", tmp_path / "app")
    assert quiet.returncode == 0 and "MB/s" not in quiet.stderr and "\r" not in quiet.stderr


def test_demo_flow_local_store(busybox_image, tmp_path):
    """What scripts/demo.sh runs: push to a local path, pull --keep 3, releases."""
    store = tmp_path / "store"
    store.mkdir()
    archive = store / "hello.tar.gz"
    assert droot("push", busybox_image, archive).returncode == 0
    for _ in range(4):
        result = droot("pull", archive, "--root", tmp_path / "app", "--keep", "3")
        assert result.returncode == 0, result.stderr
    listing = droot("releases", "--root", tmp_path / "app").stdout.splitlines()
    assert len(listing) == 3 and listing[-1].startswith("* ")
    assert shutil.which("chroot")
    ran = subprocess.run(["chroot", str(tmp_path / "app"), "/bin/sh", "-c", "echo ok"],
                         capture_output=True, text=True)
    assert ran.stdout == "ok\n"


class CuttingProxy:
    """A TCP proxy to the S3 server that breaks the connection in the middle of the first
    download of `path`, and records the requests it saw."""

    def __init__(self, upstream_port: int, path: str, cut_after: int):
        import socket
        self.upstream_port = upstream_port
        self.request_line = f"GET {path} ".encode()
        self.cut_after = cut_after
        self.cut = False
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"countdown": None}
            threading.Thread(target=self._requests, args=(client, upstream, state),
                             daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, state),
                             daemon=True).start()

    def _requests(self, client, upstream, state):
        try:
            while data := client.recv(65536):
                self.requests.append(data)
                if not self.cut and data.startswith(self.request_line):
                    state["countdown"] = self.cut_after
                upstream.sendall(data)
        except OSError:
            pass

    def _responses(self, upstream, client, state):
        import socket
        try:
            while data := upstream.recv(65536):
                countdown = state["countdown"]
                if countdown is not None and not self.cut and len(data) >= countdown:
                    client.sendall(data[:countdown])
                    self.cut = True
                    break
                if countdown is not None:
                    state["countdown"] = countdown - len(data)
                client.sendall(data)
        except OSError:
            pass
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.server.close()


def test_s3_pull_fetches_a_broken_range_again(busybox_image, s3_server, s3_bucket, tmp_path):
    assert droot("push", busybox_image, f"s3://{s3_bucket}/resume.tar.gz").returncode == 0
    size = s3().head_object(Bucket=s3_bucket, Key="resume.tar.gz")["ContentLength"]
    proxy = CuttingProxy(int(s3_server.rsplit(":", 1)[1]), f"/{s3_bucket}/resume.tar.gz",
                         cut_after=size // 2)
    try:
        environment = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        result = droot("pull", f"s3://{s3_bucket}/resume.tar.gz", "--root", tmp_path / "app",
                       env=environment)
    finally:
        proxy.close()
    assert proxy.cut, "the proxy never broke a download: the test tests nothing"
    assert result.returncode == 0, result.stderr
    # The broken range was asked for again.
    gets = [r for r in proxy.requests if r.startswith(f"GET /{s3_bucket}/resume.tar.gz ".encode())]
    assert len(gets) >= 2 and all(b"range: bytes=0-" in r.lower() for r in gets)
    check_app(tmp_path / "app")
