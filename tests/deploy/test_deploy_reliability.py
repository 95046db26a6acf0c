"""A failed or interrupted deploy leaves the root pointing at the same complete release,
and the next deploy cleans up what it left."""

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from conftest import DROOT
from deployhelp import app_archive, compress, current, deploy, release_names, releases_dir

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
    leftovers = [n for n in os.listdir(releases_dir(root)) if n.startswith(".tmp-")]
    assert leftovers == []
    assert not os.path.lexists(root.parent / f".{root.name}.switch")
    assert len(release_names(root)) <= 4


def test_wrong_checksum_keeps_the_current_release(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    good = current(root)
    result = deploy(root, app_archive(tmp_path, "bad"), "--sha256", "0" * 64)
    assert result.returncode == 1 and b"checksum mismatch" in result.stderr
    assert current(root) == good and release_names(root) == [good]
    assert [n for n in os.listdir(releases_dir(root)) if n.startswith(".tmp-")] == []


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
    assert [n for n in os.listdir(releases_dir(root)) if n.startswith(".tmp-")] == []
    # With the space back, the same deploy works.
    assert deploy(root, app_archive(tmp_path, "next")).returncode == 0
