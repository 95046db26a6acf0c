"""Bad input and interruptions of push and pull found by an operator's-eye review: each is
one line on stderr and a non-zero status, and leaves nothing behind."""

import http.server
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest

from tests.conftest import DROOT, droot
from tests.ship.conftest import app_tar, deploy_first, sha256


def one_line(stderr: str, words: str):
    assert stderr.startswith("droot: ") and stderr.count("\n") == 1, stderr
    assert words in stderr, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr


# --- SIGINT during a long pull ----------------------------------------------------------------

@pytest.fixture
def stalling_server():
    """An HTTP server that sends an archive but for its last KiB, then stalls (as a slow
    network does) until the test ends. Yields (set_archive, URL, half_sent event)."""
    state = {"archive": b""}
    half_sent, release = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            archive = state["archive"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.send_header("x-amz-meta-sha256", sha256(archive))
            self.end_headers()
            self.wfile.write(archive[:-1024])  # all but its end: the rest never comes
            self.wfile.flush()
            half_sent.set()
            release.wait(120)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (lambda data: state.update(archive=data),
               f"http://127.0.0.1:{server.server_address[1]}/app.tar.gz", half_sent)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def staging_dirs(root: Path) -> list[Path]:
    releases = root.parent / f"{root.name}.releases"
    return [releases / name for name in os.listdir(releases) if name.startswith(".tmp-")]


def extracting(root: Path) -> bool:
    """The extraction child has started writing the release (its staging directory is
    made before the child is forked: that alone is not "mid-extraction")."""
    try:
        return any(os.listdir(staging) for staging in staging_dirs(root))
    except FileNotFoundError:  # removed meanwhile: the pull has failed (the caller says)
        return False


def running_in_session(sid: int) -> list[str]:
    """The processes of session `sid` that still run (a zombie has exited)."""
    found = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(sid)], capture_output=True,
                           text=True)
    return [line.split()[0] for line in found.stdout.splitlines()
            if not line.split()[1].startswith("Z")]


def test_ctrl_c_during_a_long_pull_keeps_the_current_release(tmp_path, stalling_server):
    set_archive, url, half_sent = stalling_server
    root, first = deploy_first(tmp_path)
    set_archive(app_tar(tmp_path, "second"))
    # Its own session, so that the signal goes to the whole process group, as Ctrl-C does.
    process = subprocess.Popen([DROOT, "pull", url, "--root", str(root)],
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
        while not (half_sent.is_set() and extracting(root)):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the pull never started extracting"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130
    assert stderr == "droot: interrupted\n"
    assert os.readlink(root) == first and (root / "MARKER").read_text() == "first"
    assert staging_dirs(root) == []
    assert running_in_session(process.pid) == []  # the extraction child is gone too
    # It can fail: the same pull, not interrupted, would have switched (the server sends
    # the whole archive to a plain pull from a file).
    archive = tmp_path / "second.tar.gz"
    archive.write_bytes(app_tar(tmp_path, "second"))
    result = droot("pull", archive, "--root", root, "--no-verify")
    assert result.returncode == 0 and (root / "MARKER").read_text() == "second"


# --- push to a store path that cannot be written ----------------------------------------------

@pytest.mark.parametrize("store, words", [
    ("read-only", "Read-only file system"),
    ("full", "cannot write the archive: No space left on device"),
])
def test_push_to_an_unwritable_path_leaves_no_partial_file(busybox_image, tmp_path, store,
                                                           words):
    """The store directory is a tmpfs mounted in a private mount namespace (gone with the
    command): read-only, or too small for the archive (the write fails half-way)."""
    directory = tmp_path / "store"
    directory.mkdir()
    options = "ro" if store == "read-only" else "size=64k"
    script = ('mount -t tmpfs -o "$1" ship-test "$2" && "$3" push "$4" "$2/app.tar.gz"; '
              'status=$?; ls -A "$2"; exit $status')  # push writes nothing on stdout
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script, "sh", options, str(directory), DROOT, busybox_image],
                            capture_output=True, text=True)
    left = result.stdout.split()
    assert result.returncode == 1, result.stderr
    one_line(result.stderr, words)
    assert "app.tar.gz" in result.stderr
    assert left == []  # no temporary file, no partial archive, no sidecar
    assert os.listdir(directory) == []  # and nothing on the host's side of the mount


def test_push_to_a_writable_path_store_works(busybox_image, tmp_path):
    """The counterpart of the test above: the same push into a tmpfs big enough."""
    directory = tmp_path / "store"
    directory.mkdir()
    script = ('mount -t tmpfs -o size=64m ship-test "$1" && "$2" push "$3" "$1/app.tar.gz" && '
              'ls -A "$1"')
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script, "sh", str(directory), DROOT, busybox_image],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["app.tar.gz", "app.tar.gz.sha256"]


# --- S3 without credentials -------------------------------------------------------------------

def test_s3_pull_without_credentials_names_the_archive(s3_bucket, tmp_path):
    archive = app_tar(tmp_path, "s3")
    client = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key="app.tar.gz", Body=archive)
    client.put_object(Bucket=s3_bucket, Key="app.tar.gz.sha256",
                      Body=f"{sha256(archive)}  app.tar.gz\n".encode())
    root = tmp_path / "app"
    anonymous = {key: value for key, value in os.environ.items()
                 if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                "AWS_PROFILE")}
    anonymous.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
                     AWS_CONFIG_FILE=str(tmp_path / "no-config"),
                     AWS_EC2_METADATA_DISABLED="true")
    source = f"s3://{s3_bucket}/app.tar.gz"
    result = droot("pull", source, "--root", root, env=anonymous)
    assert result.returncode == 1
    one_line(result.stderr, f"droot: {source}: no AWS credentials found")
    assert ".sha256" not in result.stderr
    assert not os.path.lexists(root) and not os.path.lexists(tmp_path / "app.releases")
    # It can fail: with the credentials the same pull deploys.
    result = droot("pull", source, "--root", root)
    assert result.returncode == 0, result.stderr
    assert (root / "MARKER").read_text() == "s3"
