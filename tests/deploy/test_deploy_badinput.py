"""Bad input to deploy and pull found by an operator's-eye review: each is one line and
a non-zero status, never an internal error."""

import os
import subprocess
import time

import pytest

from tests.conftest import DROOT, droot
from tests.deploy.conftest import (app_archive, current, deploy, hostile_tar, release_names,
                                   releases_dir)


def decoded(result):
    """A bytes CompletedProcess (deployhelp's deploy) as text."""
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def one_line_error(result, status, words):
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("droot: ") and result.stderr.count("\n") == 1
    assert words in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_closed_stdin(tmp_path):
    result = subprocess.run([DROOT, "deploy", "--root", str(tmp_path / "app")],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(0))
    one_line_error(result, 1, "stdin, which is closed")


def test_an_empty_root_is_refused(tmp_path):
    one_line_error(droot("deploy", "--root", "", input=""), 2, "--root is empty")
    one_line_error(droot("releases", "--root", ""), 2, "--root is empty")


def test_malformed_and_unsupported_sources(tmp_path):
    one_line_error(droot("pull", "http://[::1", "--root", tmp_path / "a"), 2, "malformed URL")
    one_line_error(droot("pull", "http:///x", "--root", tmp_path / "a"), 2, "malformed URL")
    one_line_error(droot("pull", "ftp://host/x", "--root", tmp_path / "a"), 2,
                   "unsupported store")
    assert not (tmp_path / "a").exists()


# --- archives with no regular file; what a failed first deploy leaves -------------------------

def empty_tar() -> bytes:
    """What `tar -c --files-from=/dev/null` writes: no member at all."""
    return subprocess.run(["tar", "-c", "--files-from=/dev/null"], check=True,
                          capture_output=True).stdout


def deployed(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    return root, current(root)


def assert_unchanged(root, good):
    assert current(root) == good and (root / "MARKER").read_text() == "good"
    assert release_names(root) == [good]
    assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock", good]  # no staging left


@pytest.mark.parametrize("archive", [
    "empty", "links and directories only"])
def test_an_archive_without_regular_files_is_not_made_a_release(tmp_path, archive):
    root, good = deployed(tmp_path)
    members = [] if archive == "empty" else [("etc", "dir", None), ("bin", "dir", None),
                                             ("bin/sh", "symlink", "busybox")]
    data = empty_tar() if archive == "empty" else hostile_tar(members)
    result = deploy(root, data)
    one_line_error(decoded(result), 1, "the archive has no regular files: refusing")
    assert_unchanged(root, good)
    # The refusal is about regular files: the same archive with one becomes a release.
    result = deploy(root, hostile_tar([*members, ("etc/hostname", "file", b"app\n")]))
    assert result.returncode == 0, result.stderr
    assert current(root) != good and (root / "etc" / "hostname").read_bytes() == b"app\n"


def test_a_failed_first_deploy_leaves_nothing(tmp_path):
    area = tmp_path / "area"
    area.mkdir()
    root = area / "new" / "deeper" / "app"  # its parents are created by a deploy
    for archive, flags, words in ((b"\x13" * 5000, [], "cannot extract"),
                                  (empty_tar(), [], "no regular files"),
                                  (app_archive(tmp_path, "x"), ["--sha256", "0" * 64],
                                   "checksum mismatch")):
        result = deploy(root, archive, *flags)
        one_line_error(decoded(result), 1, words)
        assert os.listdir(area) == []
    # It can fail: a deploy that succeeds does create the releases directory.
    assert deploy(root, app_archive(tmp_path, "y")).returncode == 0
    assert (root / "MARKER").read_text() == "y" and len(release_names(root)) == 1


def test_a_failed_deploy_keeps_a_releases_directory_that_has_releases(tmp_path):
    root, good = deployed(tmp_path)
    os.unlink(root)  # the root symlink removed by hand: the releases are still there
    result = deploy(root, empty_tar())
    one_line_error(decoded(result), 1, "no regular files")
    assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock", good]


def test_a_deploy_waiting_for_a_failing_first_deploy_succeeds(tmp_path):
    """The failing deploy removes the releases directory and its lock file while another
    deploy waits for that lock: the waiting one starts afresh and succeeds."""
    root = tmp_path / "app"
    good = app_archive(tmp_path, "good")
    failing = subprocess.Popen([DROOT, "deploy", "--root", str(root)], stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    waiting = None
    try:
        failing.stdin.write(good[:len(good) // 2])  # extraction starts, holding the lock
        failing.stdin.flush()
        wait_until(lambda: staging_dirs(root), "the first deploy's staging directory")
        waiting_log = tmp_path / "waiting.err"
        archive_file = tmp_path / "good.tar.gz"  # a file: it reads nothing until it locks
        archive_file.write_bytes(good)
        with open(waiting_log, "wb") as log, open(archive_file, "rb") as archive:
            waiting = subprocess.Popen([DROOT, "deploy", "--root", str(root)],
                                       stdin=archive, stderr=log)
        wait_until(lambda: b"waiting for another deploy" in waiting_log.read_bytes(),
                   "the second deploy to wait for the lock")
        failing.stdin.close()  # a truncated archive: the first deploy fails
        assert failing.wait(timeout=60) == 1
        assert b"truncated" in failing.stderr.read()
        assert waiting.wait(timeout=60) == 0, waiting_log.read_text()
    finally:
        for process in (failing, waiting):
            if process and process.poll() is None:
                process.kill()
                process.wait()
    assert (root / "MARKER").read_text() == "good"
    assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock", current(root)]


def staging_dirs(root) -> list[str]:
    try:
        return [name for name in os.listdir(releases_dir(root)) if name.startswith(".tmp-")]
    except FileNotFoundError:
        return []


def wait_until(condition, what: str, limit: float = 60):
    """Poll `condition` (a guard against a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


# --- droot releases on something that is not a deployed root ---------------------------------

def test_releases_on_a_file_or_a_dangling_symlink_says_what_is_wrong(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not an app\n")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    plain = tmp_path / "plain"
    plain.mkdir()
    before = sorted(os.listdir(tmp_path))
    one_line_error(droot("releases", "--root", regular), 1, "is a regular file, not an app")
    one_line_error(droot("releases", "--root", dangling), 1,
                   f"is a symlink to {tmp_path / 'missing'} (which is missing)")
    one_line_error(droot("releases", "--root", plain), 1, "was not deployed by droot")
    assert sorted(os.listdir(tmp_path)) == before
    # It can fail: on a deployed root the same command lists the current release.
    root, good = deployed(tmp_path)
    result = droot("releases", "--root", root)
    assert result.returncode == 0 and result.stdout == f"* {good}\n", result.stderr


def test_a_root_under_a_regular_file_is_one_line(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a directory\n")
    root = regular / "app"
    one_line_error(decoded(deploy(root, hostile_tar([("a", "file", b"a\n")]))), 1,
                   f"cannot create {regular}/app.releases: Not a directory")
    for command in ("releases", "rollback", "rm"):
        result = droot(command, "--root", root)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"droot: {root} ")
    assert regular.read_text() == "not a directory\n" and os.listdir(tmp_path) == ["file"]
