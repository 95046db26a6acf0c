"""The `.content` record a delta pull leaves (droot.deploy.reuse): the next pull reuses a
recorded file of the current release without reading it, and any change to that file's
bytes, even one that puts its mtime back, makes the pull read it (and download it)."""

import mmap
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import OpenWatch, droot
from tests.delta.conftest import push, summary, tree
from tests.deploy.conftest import releases_dir

KEEP = "srv/keep.bin"


@pytest.fixture
def store(versions, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    push(versions[0], store / "v1")
    push(versions[1], store / "v2")
    return store


def pulled_v1(store, root: Path) -> Path:
    """`root` deployed from v1 by a delta pull; returns v1's release directory."""
    result = droot("pull", store / "v1", "--root", root)
    assert result.returncode == 0, result.stderr
    return Path(os.path.realpath(root))


def record_of(root: Path) -> tuple[os.stat_result, bytes]:
    path = releases_dir(root) / ".content"
    return path.stat(), path.read_bytes()


def test_a_recorded_file_is_reused_without_being_read(versions, store, tmp_path):
    recorded, unrecorded = tmp_path / "recorded", tmp_path / "unrecorded"
    sources = [pulled_v1(store, root) / KEEP for root in (recorded, unrecorded)]
    info, record = record_of(recorded)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert record.startswith(f"droot-content 1 {os.path.basename(os.readlink(recorded))}\n"
                             .encode()) and f" {KEEP}\0".encode() in record
    (releases_dir(unrecorded) / ".content").unlink()  # the control: a pull that must read

    watch = OpenWatch(sources)
    try:
        for root in (recorded, unrecorded):
            result = droot("pull", store / "v2", "--root", root)
            assert result.returncode == 0, result.stderr
            assert summary(result.stderr)[1] >= len(versions[3][KEEP])  # reused
        # Opened once to be copied; the control also once before, to be hashed.
        assert watch.opens() == {sources[0]: 1, sources[1]: 2}
    finally:
        watch.close()
    assert tree(recorded) == tree(unrecorded)
    assert (recorded / KEEP).read_bytes() == versions[3][KEEP]
    # The record now describes v2's release, and `droot rm` takes it away with the rest.
    assert record_of(recorded)[1].startswith(
        f"droot-content 1 {os.path.basename(os.readlink(recorded))}\n".encode())
    result = droot("rm", "--root", recorded)
    assert result.returncode == 0, result.stderr
    assert not releases_dir(recorded).exists()


# Each flips the first byte: a fixed byte would leave a random file whose first byte it
# already is unchanged (one session in 256).
def _write_in_place(path: Path):
    with open(path, "r+b") as app_file:
        first = app_file.read(1)[0]
        app_file.seek(0)
        app_file.write(bytes([first ^ 0xFF]))


def _write_through_a_mapping(path: Path):
    with open(path, "r+b") as app_file, mmap.mmap(app_file.fileno(), 4096) as mapping:
        mapping[0] ^= 0xFF
        mapping.flush()


@pytest.mark.parametrize("change", [_write_in_place, _write_through_a_mapping],
                         ids=["write", "mmap"])
def test_a_recorded_file_changed_with_its_mtime_put_back_is_downloaded(
        versions, store, tmp_path, change):
    """What an app that wants its change reused would do: same size, same mtime. The
    ctime moves all the same, so the pull does not trust the record for that file."""
    root = tmp_path / "app"
    source = pulled_v1(store, root) / KEEP
    before = source.stat()
    change(source)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = source.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert source.read_bytes() != versions[3][KEEP]

    result = droot("pull", store / "v2", "--root", root)
    assert result.returncode == 0, result.stderr
    assert (root / KEEP).read_bytes() == versions[3][KEEP]
    assert summary(result.stderr)[2] > len(versions[3][KEEP]) // 2  # downloaded


def test_a_record_others_could_write_is_not_trusted(store, tmp_path):
    root = tmp_path / "app"
    source = pulled_v1(store, root) / KEEP
    os.chmod(releases_dir(root) / ".content", 0o666)
    watch = OpenWatch([source])
    try:
        result = droot("pull", store / "v2", "--root", root)
        assert result.returncode == 0, result.stderr
        assert watch.opens() == {source: 2}  # hashed first, as without a record
    finally:
        watch.close()
