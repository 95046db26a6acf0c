"""A failed or interrupted deploy leaves the root pointing at the same complete release,
and the next deploy cleans up what it left."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import DROOT
from tests.deploy.conftest import (app_archive, compress, current, deploy, leftovers,
                                   release_names)

FILES = 1500


def feed(process, archive):
    try:
        process.stdin.write(archive)
        process.stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def check_complete(root):
    """The root is a whole release: its marker and all its files."""
    marker = (root / "MARKER").read_text()
    files = os.listdir(root / "data")
    assert len(files) == FILES, f"release {current(root)} is incomplete"
    assert (root / "data" / f"f{FILES - 1}").read_text().startswith(marker)


def test_sigkill_at_random_moments_never_breaks_the_root(tmp_path):
    root = tmp_path / "app"
    archives = [app_archive(tmp_path, f"v{n}", "zstd", extra_files=FILES) for n in range(3)]
    assert deploy(root, archives[0]).returncode == 0
    started = time.monotonic()
    timed = []
    rng = random.Random(4)
    for iteration in range(30):
        if time.monotonic() - started > 50:
            break
        process = subprocess.Popen([DROOT, "deploy", "--root", str(root), "--keep", "3"],
                                   stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        # Kill at a random moment: from before droot has read anything to after the
        # deploy had time to finish.
        writer = threading.Thread(target=feed, args=(process, archives[iteration % 3]))
        writer.start()
        t0 = time.monotonic()
        time.sleep(rng.uniform(0, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        writer.join()
        timed.append(time.monotonic() - t0)
        check_complete(root)
    assert len(timed) >= 15
    # The next deploy waits for the killed one's extraction child (it holds the lock),
    # removes the leftovers, and succeeds.
    result = deploy(root, archives[1], "--keep", "3")
    assert result.returncode == 0, result.stderr
    check_complete(root)
    assert (root / "MARKER").read_text() == "v1"
    assert leftovers(root) == []
    assert not os.path.lexists(root.parent / f".{root.name}.switch")
    assert len(release_names(root)) <= 4


def test_ctrl_c_at_random_moments_is_one_line_and_leaves_nothing(tmp_path):
    """SIGINT, unlike SIGKILL, lets droot clean up: wherever it lands, one line, no
    traceback, no staging directory. (Random moments rarely hit the fork of the
    extraction child: the next test aims at it.)"""
    root = tmp_path / "app"
    archives = [app_archive(tmp_path, f"v{n}", "zstd", extra_files=FILES) for n in range(2)]
    assert deploy(root, archives[0]).returncode == 0
    started = time.monotonic()
    outcomes = set()
    rng = random.Random(7)
    for iteration in range(40):
        if time.monotonic() - started > 40:
            break
        process = subprocess.Popen([DROOT, "deploy", "--root", str(root)],
                                   stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        writer = threading.Thread(target=feed, args=(process, archives[iteration % 2]))
        writer.start()
        time.sleep(rng.uniform(0.05, 0.8))
        process.send_signal(signal.SIGINT)
        stderr = process.stderr.read().decode()  # a line at most: it cannot fill the pipe
        process.wait()
        writer.join()
        outcomes.add(process.returncode)
        if process.returncode == 130:
            assert stderr == "droot: interrupted\n"
        else:
            assert process.returncode == 0 and stderr.startswith("droot: deployed "), stderr
            assert stderr.count("\n") == 1, stderr
        check_complete(root)
        assert leftovers(root) == []
    assert 130 in outcomes  # some of the signals did interrupt a deploy


# droot with a pause on both sides of every fork, announced in a file: a signal can then
# be sent exactly while the extraction child is being made.
SLOW_FORK = """
import os, sys, time
from droot.cli import main
def pause(side):
    with open(os.environ["FORK_LOG"], "a") as log:
        log.write(side + "\\n")
    time.sleep(1)
os.register_at_fork(after_in_parent=lambda: pause("parent"),
                    after_in_child=lambda: pause("child"))
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_extraction_child_is_forked(tmp_path):
    root = tmp_path / "app"
    archive = app_archive(tmp_path, "second", "zstd")
    assert deploy(root, app_archive(tmp_path, "first")).returncode == 0
    first = current(root)
    fork_log = tmp_path / "forks"
    process = subprocess.Popen([sys.executable, "-c", SLOW_FORK, "deploy", "--root", str(root)],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "FORK_LOG": str(fork_log)},
                               start_new_session=True)
    try:
        writer = threading.Thread(target=feed, args=(process, archive))
        writer.start()
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
        while not (fork_log.exists() and len(fork_log.read_text().split()) == 2):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "droot never forked"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: parent and child alike
        stderr = process.stderr.read().decode()
        process.wait(timeout=60)
        writer.join()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130
    assert stderr == "droot: interrupted\n"  # the child did not report it as well
    assert current(root) == first and release_names(root) == [first]
    assert leftovers(root) == []


def test_wrong_checksum_keeps_the_current_release(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    good = current(root)
    result = deploy(root, app_archive(tmp_path, "bad"), "--sha256", "0" * 64)
    assert result.returncode == 1 and b"checksum mismatch" in result.stderr
    assert current(root) == good and release_names(root) == [good]
    assert leftovers(root) == []


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_truncated_archive_keeps_the_current_release(tmp_path, compression):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    good = current(root)
    archive = app_archive(tmp_path, "cut", compression, extra_files=50)
    for cut in (len(archive) // 3, 2 * len(archive) // 3):
        result = deploy(root, archive[:cut])
        assert result.returncode == 1, f"accepted an archive cut at {cut}"
        assert b"truncated" in result.stderr or b"corrupt" in result.stderr
        assert current(root) == good and release_names(root) == [good]


@pytest.fixture
def small_filesystem(tmp_path):
    """A 16 MB tmpfs under the test's temp dir, always unmounted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "droot-test-deploy", str(mount_point)],
                   check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_keeps_the_current_release(tmp_path, small_filesystem):
    root = small_filesystem / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    good = current(root)
    big = tmp_path / "big"
    big.mkdir()
    (big / "MARKER").write_text("big")
    (big / "blob").write_bytes(os.urandom(20 << 20))
    result = deploy(root, compress(subprocess.run(["tar", "-C", str(big), "-cf", "-", "."],
                                                  capture_output=True, check=True).stdout,
                                   "zstd"))
    assert result.returncode == 1 and b"No space left on device" in result.stderr
    assert current(root) == good and (root / "MARKER").read_text() == "good"
    assert leftovers(root) == []
    # With the space back, the same deploy works.
    assert deploy(root, app_archive(tmp_path, "next")).returncode == 0


def test_failed_first_rsync_deploy_leaves_nothing(tmp_path, small_filesystem):
    """rsync mode is not atomic, but a first deploy that fails half-way does not leave a
    half-synced directory that looks like a release."""
    root = small_filesystem / "app"
    big = tmp_path / "big"
    big.mkdir()
    (big / "MARKER").write_text("big")
    (big / "blob").write_bytes(os.urandom(10 << 20))  # extracts, but not twice in 16 MB
    archive = compress(subprocess.run(["tar", "-C", str(big), "-cf", "-", "."],
                                      capture_output=True, check=True).stdout, "zstd")
    result = deploy(root, archive, "--mode", "rsync")
    assert result.returncode == 1 and b"rsync into" in result.stderr, result.stderr
    assert os.listdir(small_filesystem) == []
    # With room for it, the same layout deploys.
    assert deploy(root, app_archive(tmp_path, "next"), "--mode", "rsync").returncode == 0
    assert (root / "MARKER").read_text() == "next"
