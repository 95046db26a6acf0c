"""droot.core.atomicfile, droot's one temporary-file-fsync-rename (in-process)."""

import os
import stat

import pytest

from droot.core.atomicfile import AtomicFile, default_file_mode, open_directory


@pytest.fixture
def directory(tmp_path):
    descriptor = open_directory(str(tmp_path))
    yield tmp_path, descriptor
    os.close(descriptor)


def leftovers(path):
    return sorted(name for name in os.listdir(path) if name.startswith("."))


def test_the_old_file_stays_until_commit(directory):
    path, descriptor = directory
    (path / "app.conf").write_bytes(b"old")
    output = AtomicFile(descriptor, "app.conf", 0o640)
    output.file.write(b"new")
    output.file.flush()
    assert (path / "app.conf").read_bytes() == b"old"
    temporary, = leftovers(path)
    assert stat.S_IMODE(os.stat(path / temporary).st_mode) == 0o600  # no one else opens it
    output.commit()
    assert (path / "app.conf").read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path / "app.conf").st_mode) == 0o640
    assert leftovers(path) == []


def test_a_failed_block_keeps_the_old_file_and_leaves_nothing(directory):
    path, descriptor = directory
    (path / "app.conf").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with AtomicFile(descriptor, "app.conf", 0o644) as file:
            file.write(b"half")
            raise RuntimeError("export failed")
    assert (path / "app.conf").read_bytes() == b"old"
    assert leftovers(path) == []


def test_a_symlink_at_the_name_is_replaced_not_followed(directory, tmp_path_factory):
    path, descriptor = directory
    victim = tmp_path_factory.mktemp("elsewhere") / "victim"
    victim.write_bytes(b"untouched")
    os.symlink(victim, path / "app.conf")
    with AtomicFile(descriptor, "app.conf", 0o644) as file:
        file.write(b"new")
    assert victim.read_bytes() == b"untouched"
    assert not os.path.islink(path / "app.conf")
    assert (path / "app.conf").read_bytes() == b"new"


def test_mode_and_owner_are_exact_whatever_the_umask(directory):
    path, descriptor = directory
    old_mask = os.umask(0o077)
    try:
        with AtomicFile(descriptor, "tool", 0o4755, owner=1234, group=5678) as file:
            file.write(b"#!/bin/sh\n")
    finally:
        os.umask(old_mask)
    status = os.stat(path / "tool")
    assert (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid) == (0o4755, 1234, 5678)


def test_default_file_mode_follows_the_umask():
    old_mask = os.umask(0o027)
    try:
        assert default_file_mode() == 0o640
    finally:
        os.umask(old_mask)


def test_an_abort_after_commit_removes_nothing(directory):
    """push aborts on any failure after the archive was committed (its sidecar failing)."""
    path, descriptor = directory
    output = AtomicFile(descriptor, "app.tar", 0o644)
    output.file.write(b"archive")
    output.commit()
    output.abort()
    assert (path / "app.tar").read_bytes() == b"archive"
