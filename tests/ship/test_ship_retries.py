"""pull --retries: a failure of the network or the store (5xx, a refused connection, a body
cut short, a stalled transfer) is tried again, one line per failed attempt, and gives up
with exit status 75; a permanent one (404, a checksum mismatch, a corrupt archive, a full
disk) fails at once with one line. Every failed attempt leaves the current release as it
was, and no staging directory. Against a real HTTP server whose answers the test scripts,
moto's S3 server, and a real tmpfs for the full disk."""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import droot
from tests.ship.conftest import app_tar, deploy_first, sha256

ATTEMPT_LINE = "droot: pull attempt "


@pytest.fixture
def flaky_server():
    """An HTTP server of one archive (`/app.tar.gz`) and its sidecar. Each GET of the
    archive takes the next answer from `script` ("503", "404", "cut": headers and half the
    body, then the connection closes; "stall": the same, then nothing until the test ends),
    then serves it whole. Yields a namespace: archive, script, requests (paths), url."""
    state = type("Flaky", (), {})()
    state.archive, state.script, state.requests = b"", [], []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(self.path)
            archive = state.archive
            if self.path.endswith(".sha256"):
                body = f"{sha256(archive)}  app.tar.gz\n".encode()
                answer = "ok"
            else:
                body = archive
                answer = state.script.pop(0) if state.script else "ok"
            if answer in ("503", "404"):
                self.send_error(int(answer))
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if answer == "ok":
                self.wfile.write(body)
                return
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if answer == "stall":
                release.wait(60)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/app.tar.gz"
    try:
        yield state
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def failure_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("droot: ") for line in lines), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return [line for line in lines if not line.startswith("droot: deployed ")]


def releases_of(root: Path) -> list[str]:
    """Every entry of ROOT.releases but the lock file and the deploy record: releases, and
    staging directories (.tmp-…) if a failed attempt left one."""
    return sorted(set(os.listdir(f"{root}.releases")) - {".lock", ".deployed"})


def current(root: Path) -> str:
    return os.path.basename(os.readlink(root))


def second_release(tmp_path, flaky_server):
    root, first = deploy_first(tmp_path)
    flaky_server.archive = app_tar(tmp_path, "second")
    return root, os.path.basename(first)


@pytest.mark.parametrize("script", [["503", "503"], ["cut"]])
def test_a_transient_failure_is_retried_one_line_each(tmp_path, flaky_server, script):
    root, first = second_release(tmp_path, flaky_server)
    flaky_server.script = list(script)
    result = droot("pull", flaky_server.url, "--root", root, "--retries", "3")
    assert result.returncode == 0, result.stderr
    assert (root / "MARKER").read_text() == "second"
    failures = failure_lines(result.stderr)
    assert len(failures) == len(script), result.stderr
    for number, line in enumerate(failures, 1):
        assert line.startswith(f"{ATTEMPT_LINE}{number}/4 failed: "), line
        assert "; retrying in " in line, line
    reason = "HTTP 503" if script[0] == "503" else "download cut off after "
    assert reason in failures[0]
    archive_gets = [path for path in flaky_server.requests if path == "/app.tar.gz"]
    assert len(archive_gets) == len(script) + 1
    assert releases_of(root) == sorted([first, current(root)])


def test_giving_up_keeps_the_release_and_says_75(tmp_path):
    root, first = deploy_first(tmp_path)
    first = os.path.basename(first)
    with socketpair_port() as port:  # a port nothing listens on: connection refused
        result = droot("pull", f"http://127.0.0.1:{port}/app.tar.gz", "--root", root,
                       "--retries", "2")
    assert result.returncode == 75, result.stderr
    failures = failure_lines(result.stderr)
    assert [line[:len(ATTEMPT_LINE) + 3] for line in failures[:2]] == [
        f"{ATTEMPT_LINE}1/3", f"{ATTEMPT_LINE}2/3"], result.stderr
    assert len(failures) == 3 and "Connection refused" in failures[2], result.stderr
    assert failures[2].endswith("(pull gave up after 3 attempts)"), result.stderr
    assert current(root) == first and releases_of(root) == [first]


def test_a_stalled_download_times_out_and_is_retried(tmp_path, flaky_server):
    root, first = second_release(tmp_path, flaky_server)
    flaky_server.script = ["stall", "stall"]
    result = droot("pull", flaky_server.url, "--root", root, "--retries", "1",
                   "--timeout", "1")
    assert result.returncode == 75, result.stderr
    failures = failure_lines(result.stderr)
    assert len(failures) == 2 and failures[0].startswith(f"{ATTEMPT_LINE}1/2"), result.stderr
    assert "timed out" in failures[0], result.stderr
    assert current(root) == first and releases_of(root) == [first]


@pytest.mark.parametrize("fault", ["404", "checksum", "corrupt"])
def test_a_permanent_failure_is_not_retried(tmp_path, flaky_server, fault):
    root, first = second_release(tmp_path, flaky_server)
    extra = []
    if fault == "404":
        flaky_server.script = ["404"]
    elif fault == "checksum":
        extra = ["--sha256", "0" * 64]
        flaky_server.script = []
    else:  # a gzip stream cut in the middle, served whole with its own checksum
        flaky_server.archive = flaky_server.archive[:len(flaky_server.archive) // 2]
    result = droot("pull", flaky_server.url, "--root", root, "--retries", "3", *extra)
    assert result.returncode == 1, result.stderr
    failures = failure_lines(result.stderr)
    assert len(failures) == 1 and ATTEMPT_LINE not in failures[0], result.stderr
    words = {"404": "HTTP 404", "checksum": "differs from the store's checksum",
             "corrupt": "corrupt or truncated"}[fault]
    assert words in failures[0], result.stderr
    assert [path for path in flaky_server.requests if path == "/app.tar.gz"] == ["/app.tar.gz"]
    assert current(root) == first and releases_of(root) == [first]


def test_a_missing_s3_object_is_not_retried(tmp_path, s3_bucket):
    root, first = deploy_first(tmp_path)
    first = os.path.basename(first)
    result = droot("pull", f"s3://{s3_bucket}/nothing.tar.gz", "--root", root)
    assert result.returncode == 1, result.stderr
    assert failure_lines(result.stderr) == [f"droot: s3://{s3_bucket}/nothing.tar.gz: "
                                            "no such object"]
    assert current(root) == first


def test_a_full_disk_fails_at_once_and_keeps_the_release(tmp_path, flaky_server):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "droot-test-full",
                    disk], check=True)
    try:
        root, first = deploy_first(disk)  # a busybox root: about 2 MB
        first = os.path.basename(first)
        # The second one holds 5 MiB of random data more: it cannot fit beside the first.
        source = tmp_path / "big"
        source.mkdir()
        (source / "MARKER").write_text("second")
        (source / "blob").write_bytes(os.urandom(5 << 20))
        flaky_server.archive = subprocess.run(
            ["tar", "--numeric-owner", "-C", source, "-czf", "-", "."],
            check=True, capture_output=True).stdout
        result = droot("pull", flaky_server.url, "--root", root, "--retries", "3")
        assert result.returncode == 1, result.stderr
        failures = failure_lines(result.stderr)
        assert len(failures) == 1 and failures[0].startswith("droot: the disk is full: "), \
            result.stderr
        assert "No space left on device" in failures[0], result.stderr
        assert current(root) == first and releases_of(root) == [first]
        assert (root / "MARKER").read_text() == "first"
    finally:
        subprocess.run(["umount", "-l", disk], check=True)


class socketpair_port:
    """A loopback port bound (so no one else takes it) but not listening."""

    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()
